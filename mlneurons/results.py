"""Reading and writing result files: one JSON file with a fixed name per result."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_json(directory: str | Path, name: str, data: Any) -> Path:
    """Write ``data`` to ``directory/name`` (UTF-8, readable indentation); returns the path."""
    path = Path(directory) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


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

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(
        {k: v.contiguous() for k, v in tensors.items()},
        str(tmp),
        metadata={"mlneurons": json.dumps(meta)},
    )
    tmp.replace(path)
    return path


def read_tensors(path: str | Path, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read ``(tensors, meta)`` from ``path/name``, or ``path`` itself when it is a file."""
    from safetensors import safe_open

    with safe_open(str(_locate(path, name)), "pt") as handle:
        meta = json.loads((handle.metadata() or {}).get("mlneurons", "{}"))
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    return tensors, meta
