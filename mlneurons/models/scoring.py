"""Per-token scoring: the next-token log-probabilities of token rows.

The one forward behind perplexity, the fluency of steered answers and the app's token
losses and next-token tables: the body runs once per batch of right-padded rows
(:func:`~mlneurons.models.forward.run_body`), and only the states that predict a scored
token are unembedded, a few hundred at a time
(:func:`~mlneurons.models.forward.target_logprobs`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float

from mlneurons.errors import UserError
from mlneurons.models.bridge import TransformerBridge
from mlneurons.models.forward import (
    UNEMBED_ROWS,
    model_device,
    pad_right,
    run_body,
    target_logprobs,
    unembed,
)
from mlneurons.models.hooks import is_masked_lm


@dataclass(frozen=True)
class TokenScores:
    """Next-token log-probabilities (natural log) of token rows.

    Attributes:
        logprobs: per row, ``log p(row[i] | row[:i])`` for every scored token ``i``
            (from ``score_from``, by default 1, to the row's end); float32, CPU.
        last: per row, the log-probabilities of the whole vocabulary after its last
            token (``[row, vocab]``, float32, CPU); None unless asked for.
    """

    logprobs: list[Float[torch.Tensor, " _tokens"]]
    last: Float[torch.Tensor, "row vocab"] | None = None


def check_causal_lm(model: TransformerBridge) -> None:
    """Raise unless ``model`` is a causal LM booted from Hugging Face (it can be scored)."""
    hf = getattr(model, "original_model", None)
    if hf is None or hf.get_output_embeddings() is None:
        raise ValueError("scoring tokens needs a causal language model booted from Hugging Face")
    if is_masked_lm(model):
        raise ValueError(f"scoring tokens needs a causal LM; {type(hf).__name__} is a masked LM")


def token_logprobs(
    model: TransformerBridge,
    rows: Sequence[Sequence[int]] | torch.Tensor,
    *,
    hooks: Sequence[tuple[str, Any]] = (),
    batch_size: int = 8,
    score_from: Sequence[int] | None = None,
    last: bool = False,
    unembed_rows: int = UNEMBED_ROWS,
) -> TokenScores:
    """The next-token log-probability of every token of every row after its first.

    Rows of a batch are right-padded (the attention mask is passed only when a batch
    has padding); hooks attached to ``model`` apply, and so do ``hooks`` (attached for
    this call only).

    Args:
        model: a causal TransformerBridge.
        rows: token ids (BOS included where the model wants one), or a ``[row, seq]``
            tensor.
        hooks: forward hooks ``(name, fn)`` to attach while scoring.
        batch_size: rows per forward pass.
        score_from: per row the index of its first scored token (at least 1); the
            tokens before it only condition. Default: 1 for every row.
        last: also return each row's full next-token distribution after its last token.
        unembed_rows: states unembedded per matmul.

    Raises:
        UserError: an empty row, ``batch_size`` below 1 or a bad ``score_from``.
    """
    check_causal_lm(model)
    if batch_size < 1:
        raise UserError(f"batch_size must be at least 1, got {batch_size}")
    if isinstance(rows, torch.Tensor):
        rows = rows.tolist()
    lengths = [len(row) for row in rows]
    starts = [1] * len(lengths) if score_from is None else [int(s) for s in score_from]
    if len(starts) != len(lengths):
        raise UserError(f"{len(lengths)} rows but {len(starts)} values of score_from")
    for k, (start, length) in enumerate(zip(starts, lengths)):
        if length < 1 or not 1 <= start <= length:
            raise UserError(f"row {k} has {length} tokens; cannot score from token {start}")
    pad = getattr(model.tokenizer, "pad_token_id", None)
    device = model_device(model)
    logprobs: list[torch.Tensor] = []
    finals: list[torch.Tensor] = []
    attached = model.hooks(fwd_hooks=list(hooks)) if hooks else contextlib.nullcontext()
    with torch.inference_mode(), attached:
        for begin in range(0, len(lengths), batch_size):
            batch = range(begin, min(begin + batch_size, len(lengths)))
            ids, mask = pad_right([rows[k] for k in batch], pad or 0, device=device)
            padded = any(lengths[k] < ids.shape[1] for k in batch)
            hidden = run_body(model, ids, attention_mask=mask if padded else None)
            spans = [(j, starts[k], lengths[k]) for j, k in enumerate(batch)]
            states = torch.cat([hidden[j, s - 1 : n - 1] for j, s, n in spans])
            targets = torch.cat([ids[j, s:n] for j, s, n in spans])
            values = target_logprobs(model, states, targets, rows=unembed_rows)
            logprobs += list(values.split([n - s for _, s, n in spans]))
            if last:
                at_end = hidden[torch.arange(len(spans)), [n - 1 for _, _, n in spans]]
                finals.append(torch.log_softmax(unembed(model, at_end).float(), -1).cpu())
    return TokenScores(logprobs, torch.cat(finals) if last and finals else None)


__all__ = ["TokenScores", "check_causal_lm", "token_logprobs"]
