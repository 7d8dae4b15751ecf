"""The base of every command's config: a frozen dataclass that round-trips to ``cfg.json``.

Each command declares its config once, in its module of :mod:`mlneurons.interfaces.commands`,
with :func:`option` fields: the help text and the checks (``minimum``, ``rate``) live in the
field's metadata and the choices in ``Literal`` types defined with the method. From that
declaration come the checks of :meth:`Config.__post_init__` (a bad value is a one-line
error before any model loads), the command line's flags and :meth:`Config.to_argv`, the
command line that reproduces a run. Every run directory holds the ``cfg.json`` of each
command that wrote into it (``Config.load(dir, method=...)``).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from mlneurons.errors import UserError
from mlneurons.results import read_json, write_json

CONFIG_FILE = "cfg.json"

DType = Literal["float32", "bfloat16", "float16"]
"""Parameter dtypes a model can be loaded in."""


def at_least(name: str, value: Any, minimum: int) -> None:
    """Raise unless ``value`` is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"{name}={value!r} is not an integer >= {minimum}")


def rate(name: str, value: Any) -> None:
    """Raise unless ``value`` is a fraction in (0, 1]."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise UserError(f"{name}={value!r} is not a rate in (0, 1], e.g. 0.01")


def one_of(name: str, value: Any, choices: Sequence[str]) -> None:
    """Raise unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise UserError(f"{name}={value!r} is not valid; choose from {', '.join(choices)}")


def option(
    default: Any,
    help: str,
    *,
    flag: str | None = None,
    minimum: int | None = None,
    rate: bool = False,
    required: bool = False,
) -> Any:
    """A config field: its default, its help text and its checks, declared once.

    Args:
        default: the default (immutable: tuples, not lists).
        help: the command line's help text (the default is added to it).
        flag: the command-line flag when it is not ``--field-name``.
        minimum: the value (each value of a sequence) must be an integer >= this.
        rate: the value (each value of a sequence) must be a fraction in (0, 1].
        required: the command line requires it (the default is a placeholder).
    """
    metadata = {"help": help, "flag": flag, "minimum": minimum, "rate": rate, "required": required}
    return dataclasses.field(default=default, metadata=metadata)


def flag_of(item: dataclasses.Field[Any]) -> str:
    """The command-line flag of a config field."""
    return item.metadata.get("flag") or "--" + item.name.replace("_", "-")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def unwrap(hint: Any) -> tuple[Any, bool]:
    """``(inner type, is a sequence)`` of a field's annotation, ``None`` dropped from unions."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, __import__("types").UnionType) and len(args) == 1:
        hint = args[0]
    if typing.get_origin(hint) in (Sequence, tuple, list):
        return typing.get_args(hint)[0], True
    return hint, False


def choices(hint: Any) -> tuple[str, ...] | None:
    """The values of a ``Literal`` annotation (also inside a sequence or an Optional)."""
    inner, _ = unwrap(hint)
    return typing.get_args(inner) if typing.get_origin(inner) is Literal else None


_KINDS: dict[str, type[Config]] = {}
"""method -> config class, filled as the command modules define them."""


@dataclass(frozen=True)
class Config:
    """Base of the command configs: checks, ``to_dict``/``from_dict``, ``cfg.json``, ``to_argv``."""

    method: ClassVar[str] = ""

    model: str | None = option(
        None, "built-in model name, a local Hugging Face directory, or a hub name"
    )
    device: str | None = option(None, "torch device (default: cuda if available, else cpu)")
    dtype: DType = option("float32", "parameter dtype")
    gpus_per_replica: int | None = option(
        None,
        "GPUs per model replica under torchrun: rank r of a node takes GPUs r*K..r*K+K-1 "
        "(device_map='balanced'), for models larger than one GPU",
        minimum=1,
    )
    confidence: float = option(0.95, "level of every interval and test, e.g. 0.9", rate=True)
    resamples: int = option(1000, "bootstrap resamples and permutations per interval", minimum=100)
    resample_seed: int = option(0, "seed of the bootstrap and permutation draws (recorded)")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("method"):
            _KINDS[cls.method] = cls

    def __post_init__(self) -> None:
        kind: type = type(self)  # a class is hashable (mypy checks Config's own __hash__)
        hints = _hints(kind)
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if isinstance(value, list):  # lists from JSON or argparse become tuples
                value = tuple(value)
                object.__setattr__(self, item.name, value)
            if value is None:
                continue
            allowed = choices(hints[item.name])
            for one in value if isinstance(value, tuple) else (value,):
                if isinstance(one, float) and not math.isfinite(one):
                    raise UserError(f"{item.name}={one!r} is not a finite number")
                if item.metadata.get("minimum") is not None:
                    at_least(item.name, one, item.metadata["minimum"])
                if item.metadata.get("rate"):
                    rate(item.name, one)
                if allowed is not None:
                    one_of(item.name, one, allowed)
        if self.confidence == 1:
            raise UserError("confidence=1 is not a level below 1, e.g. 0.95")
        self.check()

    def check(self) -> None:
        """Checks across fields (overridden by configs that have them)."""

    def to_dict(self) -> dict[str, Any]:
        """``{"method": ..., field: value, ...}``: plain JSON values."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {"method": self.method, **json.loads(json.dumps(values))}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        """The config of ``data`` (as :meth:`to_dict` writes it); unknown keys are refused."""
        data = dict(data)
        method = data.pop("method", cls.method)
        if cls is Config:
            one_of("method", method, tuple(sorted(_KINDS)))
            return _KINDS[method].from_dict(data)
        if method != cls.method:
            raise UserError(f"this is a {method!r} config, not a {cls.method!r} one")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = [key for key in data if key not in known]
        if unknown:
            raise UserError(
                f"unknown {cls.method} option {unknown[0]!r}; valid: {', '.join(known)}"
            )
        return cls(**data)

    @classmethod
    def from_args(cls, args: Any) -> Config:
        """The config of an argparse namespace (fields it lacks keep their defaults)."""
        names = [f.name for f in dataclasses.fields(cls)]
        return cls(**{name: getattr(args, name) for name in names if hasattr(args, name)})

    def replace(self, **changes: Any) -> Config:
        """A copy with ``changes`` (checked like a new config)."""
        return dataclasses.replace(self, **changes)

    def to_argv(self) -> list[str]:
        """The command line that reproduces this config: ``["steer", "--neurons", ...]``.

        Options at their default are left out; the model's options come last. The output
        directory (``--out``) is not part of a config: add it.
        """
        argv = [self.method]
        base = {f.name for f in dataclasses.fields(Config)}
        fields = dataclasses.fields(self)
        for item in [f for f in fields if f.name not in base] + [
            f for f in fields if f.name in base
        ]:
            value = getattr(self, item.name)
            if value == item.default and not item.metadata.get("required"):
                continue
            if isinstance(value, bool):
                argv += [flag_of(item)] if value else []
            else:
                argv += [flag_of(item), _text(value)]
        return argv

    def save(self, directory: str | Path) -> Path:
        """Record this config in ``directory/cfg.json`` under its method (a run directory of
        ``mlneurons report`` holds one per command); returns the file's path."""
        path = Path(directory) / CONFIG_FILE
        saved = read_json(path, CONFIG_FILE) if path.exists() else {}
        saved[self.method] = {k: v for k, v in self.to_dict().items() if k != "method"}
        return write_json(directory, CONFIG_FILE, saved)

    @classmethod
    def load(cls, directory: str | Path, method: str | None = None) -> Config:
        """Read a config from ``cfg.json`` in ``directory`` (or the file itself): this class's
        method, else ``method``, else the only one the file holds."""
        saved = read_json(directory, CONFIG_FILE)
        method = cls.method or method
        if method is None:
            if len(saved) != 1:
                raise UserError(
                    f"{str(directory)!r} holds the configs of {', '.join(saved)}; "
                    "pass method= to choose one"
                )
            method = next(iter(saved))
        if method not in saved:
            raise UserError(
                f"no {method!r} config in {str(directory)!r}; it holds {', '.join(saved) or 'none'}"
            )
        return Config.from_dict({"method": method, **saved[method]})


def _text(value: Any) -> str:
    """A value as the command line writes it: lists comma-separated, floats shortest."""
    if isinstance(value, tuple | list):
        return ",".join(_text(v) for v in value)
    if value is None:
        return "none"
    if isinstance(value, float):
        short = format(value, "g")
        return short if float(short) == value else repr(value)
    return str(value)


__all__ = ["CONFIG_FILE", "Config", "DType", "at_least", "flag_of", "one_of", "option", "rate"]
