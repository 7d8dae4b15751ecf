"""Exactness canaries: every fast path checks itself against its exact slow path.

mlneurons re-implements parts of the forward pass for speed (the unwrapped statistics
pass, shared-prefix key/value-cache scoring, LRP2 block replay, cached batched
generation). Upstream releases can silently break such re-implementations
(transformers 5.24 did), so each fast path runs once per model and process on a tiny
input beside the exact path it replaces, and raises :class:`FastPathMismatch` when they
disagree, instead of returning different numbers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from mlneurons.errors import FastPathMismatch
from mlneurons.models.bridge import TransformerBridge
from mlneurons.provenance import describe_versions


def verify(
    model: TransformerBridge,
    path: str,
    compare: Callable[[], tuple[torch.Tensor, torch.Tensor]],
    *,
    rtol: float = 1e-4,
    atol: float = 1e-4,
) -> float:
    """Run the canary of ``path`` on ``model`` once: ``compare()`` gives (fast, exact) outputs.

    Returns the largest absolute difference seen (0.0 for later calls, which do not check
    again). Raises :class:`FastPathMismatch` naming the path, the difference and the
    installed library versions when ``|fast - exact| > atol + rtol * |exact|`` anywhere.
    """
    done: dict[str, float | None] = model.__dict__.setdefault("_mlneurons_canaries", {})
    if path in done:  # checked already, or being checked (the comparison calls the fast path)
        return 0.0
    done[path] = None
    try:
        with torch.inference_mode():
            fast, exact = compare()
        fast, exact = fast.detach().double().cpu(), exact.detach().double().cpu()
        if fast.shape != exact.shape:
            raise FastPathMismatch(
                f"{path}: the fast path gave shape {tuple(fast.shape)}, the exact path "
                f"{tuple(exact.shape)}; installed: {describe_versions()}"
            )
        diff = (fast - exact).abs()
        excess = diff - (atol + rtol * exact.abs())
        if excess.numel() and excess.max() > 0:
            raise FastPathMismatch(
                f"{path}: the fast path differs from the exact path by up to "
                f"{diff.max().item():.3g} (allowed {atol:g} + {rtol:g}*|exact|) on a tiny canary "
                f"input, so its results would be wrong; installed: {describe_versions()}. "
                "Install the versions of requirements.lock, or report this with that line"
            )
    except BaseException:
        del done[path]
        raise
    largest = float(diff.max()) if diff.numel() else 0.0
    done[path] = largest
    return largest


def canary_ids(model: TransformerBridge, length: int, *, offset: int = 0) -> list[int]:
    """``length`` ordinary token ids (BOS first when the tokenizer has one), the same every run.

    Ids come from the middle of the vocabulary, away from the special tokens at its start.
    """
    vocab = int(model.cfg.d_vocab)
    low, span = vocab // 4, max(vocab // 4, 1)
    ids = [low + (offset * 7919 + k * 104729) % span for k in range(length)]
    bos = getattr(getattr(model, "tokenizer", None), "bos_token_id", None)
    return [bos, *ids[1:]] if bos is not None else ids


__all__ = ["FastPathMismatch", "canary_ids", "verify"]
