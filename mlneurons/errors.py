"""The one exception class for user mistakes, and checks shared by the library and the CLI.

A :class:`UserError` says what the user gave and what would have been valid. The
command line prints it as one line and exits with status 2; every other exception
is a bug (or an environment failure) and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any


class FastPathMismatch(RuntimeError):
    """A fast path gave other numbers than the exact path it re-implements (a canary,
    :mod:`mlneurons.models.canary`): not the user's mistake, but the installed libraries'."""


class UserError(ValueError):
    """A mistake in what the user gave: a value, a file, a combination of options.

    It subclasses ``ValueError`` so that code catching ``ValueError`` keeps working.
    """


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """``" did you mean 'x'?"`` for the closest of ``choices``, or ``""`` when none is close."""
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.75)
    return f" did you mean {close[0]!r}?" if close else ""


def check_device(device: Any) -> str:
    """The torch device ``device`` names (default: CUDA when available, else CPU), checked.

    Raises:
        UserError: a device this machine does not have, naming the ones it has.
    """
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    valid = ["cpu"]
    if torch.cuda.is_available():
        valid += ["cuda", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]
    if torch.backends.mps.is_available():
        valid += ["mps"]
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        parsed = None
    if parsed is None or (parsed.type != "cpu" and str(parsed) not in valid):
        raise UserError(f"device {str(device)!r} is not available here; valid: {', '.join(valid)}")
    return str(device)


__all__ = ["FastPathMismatch", "UserError", "check_device", "did_you_mean"]
