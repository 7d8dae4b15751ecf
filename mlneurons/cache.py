"""The user cache directory: de-quantised built-in weights, checkpoint digests."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The user cache directory of mlneurons (``$MLNEURONS_CACHE`` overrides it)."""
    from platformdirs import user_cache_dir

    return Path(os.environ.get("MLNEURONS_CACHE") or user_cache_dir("mlneurons"))
