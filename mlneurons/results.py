"""Saving and loading results: one base class, constant file names, atomic writes.

Every result of mlneurons is a :class:`Result`: its JSON fields go to one file with a
fixed name (``probe.json``, ``lrp2.json``, ...) and, for results made of tensors, the
tensors go to one safetensors file whose header holds the same JSON. A result saved
with a config (``save(dir, config=cfg)``) records it under ``"config"`` and writes
``cfg.json`` beside it; the model fingerprint in every result carries the library
versions and lock-file hash (provenance).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, ClassVar, TypeVar


def _atomic_write(path: Path, write: Any) -> Path:
    """Write through a temporary file in the same directory, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json(directory: str | Path, name: str, data: Any) -> Path:
    """Write ``data`` to ``directory/name`` atomically (UTF-8, indented); returns the path."""
    text = json.dumps(data, ensure_ascii=False, indent=1)
    return _atomic_write(Path(directory) / name, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _locate(path: str | Path, name: str) -> Path:
    """``path/name``, or ``path`` itself when it is a file; raises when neither exists."""
    path = Path(path)
    if path.is_dir():
        path = path / name
    if not path.exists():
        raise FileNotFoundError(f"no {name} at {str(path)!r}")
    return path


def read_json(path: str | Path, name: str) -> Any:
    """Read ``path/name``, or ``path`` itself when it is a file."""
    return json.loads(_locate(path, name).read_text(encoding="utf-8"))


def write_tensors(path: str | Path, tensors: dict[str, Any], meta: dict[str, Any]) -> Path:
    """Write ``tensors`` and JSON ``meta`` to one safetensors file, atomically; returns the path."""
    from safetensors.torch import save_file

    contiguous = {k: v.contiguous() for k, v in tensors.items()}
    header = {"mlneurons": json.dumps(meta)}
    return _atomic_write(Path(path), lambda tmp: save_file(contiguous, str(tmp), metadata=header))


def read_tensors(path: str | Path, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read ``(tensors, meta)`` from ``path/name``, or ``path`` itself when it is a file."""
    from safetensors import safe_open

    with safe_open(str(_locate(path, name)), "pt") as handle:
        meta = json.loads((handle.metadata() or {}).get("mlneurons", "{}"))
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    return tensors, meta


R = TypeVar("R", bound="Result")


class Result:
    """Base of every saved result (a dataclass).

    Subclasses name their file: ``FILE`` (JSON) or ``TENSOR_FILE`` (safetensors with the
    JSON in its header), and override :meth:`to_json`/:meth:`from_json` (and
    :meth:`to_tensors`) where their fields are not plain JSON.
    """

    FILE: ClassVar[str] = ""
    TENSOR_FILE: ClassVar[str] = ""

    def to_json(self) -> dict[str, Any]:
        """The JSON fields (default: every dataclass field)."""
        fields: dict[str, Any] = dataclasses.asdict(self)  # type: ignore[call-overload]
        return fields

    def to_tensors(self) -> dict[str, Any]:
        """The tensors of a ``TENSOR_FILE`` result."""
        return {}

    @classmethod
    def from_json(cls: type[R], data: dict[str, Any], tensors: dict[str, Any] | None = None) -> R:
        """The result of saved fields (keys that are not fields, such as ``config``, are skipped)."""
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in {**data, **(tensors or {})}.items() if k in names})

    def save(self, directory: str | Path, *, config: Any = None) -> Path:
        """Write the result into ``directory`` (and ``cfg.json`` with its config); returns the file."""
        record = self.to_json()
        if config is not None:
            record["config"] = config.to_dict()
            config.save(directory)
        if self.TENSOR_FILE:
            return write_tensors(Path(directory) / self.TENSOR_FILE, self.to_tensors(), record)
        return write_json(directory, self.FILE, record)

    @classmethod
    def files(cls) -> tuple[str, ...]:
        """The names of the files :meth:`save` writes (constant for each class)."""
        return tuple(name for name in (cls.FILE, cls.TENSOR_FILE) if name)

    @classmethod
    def load(cls: type[R], path: str | Path) -> R:
        """Read what :meth:`save` wrote (a directory, or the file itself)."""
        if cls.TENSOR_FILE:
            tensors, meta = read_tensors(path, cls.TENSOR_FILE)
            return cls.from_json(meta, tensors)
        return cls.from_json(read_json(path, cls.FILE))


__all__ = ["Result", "read_json", "read_tensors", "write_json", "write_tensors"]
