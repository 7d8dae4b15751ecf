"""What a result was computed with: library versions and the lock file's hash."""

from __future__ import annotations

import functools
import hashlib
from importlib import metadata
from pathlib import Path
from typing import Any

LIBRARIES = ("mlneurons", "torch", "transformers", "transformer-lens")
LOCK_FILE = Path(__file__).resolve().parents[1] / "requirements.lock"
"""The lock file of a source checkout (absent when mlneurons was installed from a wheel)."""


@functools.cache
def versions() -> dict[str, str | None]:
    """Installed versions of the libraries whose releases change numbers."""
    found: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def lock_hash() -> str | None:
    """sha256 (16 hex digits) of ``requirements.lock``, or None outside a source checkout."""
    if not LOCK_FILE.is_file():
        return None
    return hashlib.sha256(LOCK_FILE.read_bytes()).hexdigest()[:16]


def describe_versions() -> str:
    """``transformers 5.24.0, transformer-lens 4.3.0, ...`` for error messages."""
    return ", ".join(f"{name} {version}" for name, version in versions().items())


def provenance() -> dict[str, Any]:
    """``{"versions": {...}, "lock_hash": ...}``, recorded next to the model fingerprint."""
    return {"versions": versions(), "lock_hash": lock_hash()}


__all__ = ["LIBRARIES", "LOCK_FILE", "describe_versions", "lock_hash", "provenance", "versions"]
