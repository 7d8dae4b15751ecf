"""Live inspection of one model on short texts: what the app's views compute.

Neuron activations over a text, per-token losses and their change when neurons are
deactivated, the next-token table, and a neuron's direct logit effects (its ``W_out``
row read by the unembedding ``W_U``). Text is shown as display tokens
(:func:`~mlneurons.models.tokens.display_tokens`): BOS dropped, byte pieces of one
character merged. Each forward may hold a ``lock`` (the app's, as its model is shared
by all sessions).
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, NamedTuple

import torch
from jaxtyping import Float

from mlneurons.methods.interventions import deactivate
from mlneurons.models.bridge import TransformerBridge
from mlneurons.models.forward import model_device, pad_right, run_body
from mlneurons.models.hooks import mlp_neuron_hook
from mlneurons.models.scoring import token_logprobs
from mlneurons.models.tokens import bos_count, display_tokens, encode


class TokenValues(NamedTuple):
    """Display tokens of a text and a value (or a row of values) for each."""

    tokens: list[str]
    values: Float[torch.Tensor, " token *column"]


class LossChange(NamedTuple):
    """Display tokens of a text and each one's next-token loss before and after."""

    tokens: list[str]
    before: Float[torch.Tensor, " token"]
    after: Float[torch.Tensor, " token"]


class NextToken(NamedTuple):
    """A candidate next token and its probability."""

    id: int
    token: str
    probability: float


class TokenLogit(NamedTuple):
    """A token and the logit a neuron's output direction gives it."""

    id: int
    token: str
    logit: float


def _held(lock: AbstractContextManager[Any] | None) -> AbstractContextManager[Any]:
    return contextlib.nullcontext() if lock is None else lock


def _merged(tokenizer: Any, row: Sequence[int], values: torch.Tensor, merge: str) -> TokenValues:
    """``values`` per position of ``row`` as display tokens (BOS dropped); the values of
    merged byte pieces are combined by ``merge`` (``"max"`` or ``"sum"``)."""
    skip = bos_count(tokenizer, row)
    strings, groups = display_tokens(tokenizer, row[skip:])
    parts = [values[[skip + g for g in group]] for group in groups]
    combined = [p.amax(0) if merge == "max" else p.sum(0) for p in parts]
    return TokenValues(strings, torch.stack(combined) if combined else values[:0])


def _gather(
    act: torch.Tensor,
    *,
    hook: Any,
    layer: int,
    index: torch.Tensor,
    to_act: Any,
    store: dict[int, torch.Tensor],
) -> None:
    store[layer] = to_act(act[..., index.to(act.device)]).float().cpu()


def neuron_activations(
    model: TransformerBridge,
    texts: Sequence[str],
    pairs: Sequence[tuple[int, int]],
    *,
    max_tokens: int = 256,
    lock: AbstractContextManager[Any] | None = None,
) -> list[TokenValues]:
    """Per text: display tokens and the ``[token, neuron]`` activations of ``pairs``
    (``(layer, neuron)``, the act_fn output that LAPE counts).

    One batched forward without logits (right-padded); activations of byte pieces
    merged into one character are their maximum.
    """
    tokenizer = model.tokenizer
    rows = [encode(tokenizer, text, max_tokens) for text in texts]
    pairs = [(int(layer), int(neuron)) for layer, neuron in pairs]
    layers = sorted({layer for layer, _ in pairs})
    store: dict[int, torch.Tensor] = {}
    hooks = []
    for layer in layers:
        name, to_act = mlp_neuron_hook(model, layer)
        index = torch.tensor([n for lay, n in pairs if lay == layer])
        gather = functools.partial(_gather, layer=layer, index=index, to_act=to_act, store=store)
        hooks.append((name, gather))
    ids, mask = pad_right(rows, tokenizer.pad_token_id or 0, device=model_device(model))
    with _held(lock), torch.inference_mode(), model.hooks(fwd_hooks=hooks):
        run_body(model, ids, attention_mask=mask)
    columns = dict.fromkeys(layers, 0)
    acts = torch.zeros(len(rows), ids.shape[1], len(pairs))
    for k, (layer, _) in enumerate(pairs):
        acts[:, :, k] = store[layer][:, :, columns[layer]]
        columns[layer] += 1
    return [_merged(tokenizer, row, values, "max") for row, values in zip(rows, acts)]


def token_losses(
    model: TransformerBridge,
    text: str,
    *,
    hooks: Sequence[tuple[str, Any]] = (),
    max_tokens: int = 256,
    lock: AbstractContextManager[Any] | None = None,
) -> TokenValues:
    """Display tokens of ``text`` and each one's next-token loss (nats) under ``hooks``.

    The first token has no prediction (loss 0); merged byte pieces add their losses.
    """
    row = encode(model.tokenizer, text, max_tokens)
    with _held(lock):
        scores = token_logprobs(model, [row], hooks=hooks)
    loss = torch.cat([torch.zeros(1), -scores.logprobs[0]])
    return _merged(model.tokenizer, row, loss, "sum")


def loss_change(
    model: TransformerBridge,
    text: str,
    off: Sequence[tuple[int, int]],
    *,
    max_tokens: int = 256,
    lock: AbstractContextManager[Any] | None = None,
) -> LossChange:
    """Per display token of ``text``, its loss without and with the neurons ``off``
    (``(layer, neuron)`` pairs) deactivated (set to 0)."""
    tokens, before = token_losses(model, text, max_tokens=max_tokens, lock=lock)
    hooks = deactivate(list(off), model=model) if off else []
    _, after = token_losses(model, text, hooks=hooks, max_tokens=max_tokens, lock=lock)
    return LossChange(tokens, before, after)


def next_token_table(
    model: TransformerBridge,
    text: str,
    *,
    hooks: Sequence[tuple[str, Any]] = (),
    k: int = 10,
    max_tokens: int = 256,
    lock: AbstractContextManager[Any] | None = None,
) -> list[NextToken]:
    """The ``k`` most likely next tokens after ``text`` under ``hooks``, most likely first."""
    row = encode(model.tokenizer, text, max_tokens)
    with _held(lock):
        scores = token_logprobs(model, [row], hooks=hooks, last=True)
    assert scores.last is not None
    top = scores.last[0].exp().topk(k)
    decode = model.tokenizer.decode
    return [NextToken(int(i), decode([int(i)]), float(p)) for p, i in zip(top.values, top.indices)]


_SPECIAL = re.compile(r"<[^<>]*>")


def logit_effects(
    model: TransformerBridge, layer: int, neuron: int, *, k: int = 10
) -> tuple[list[TokenLogit], list[TokenLogit]]:
    """The tokens a neuron promotes and suppresses most: its ``W_out`` row times ``W_U``
    (direct logit effect, no forward pass; logit soft-capping not applied).

    Special and unused tokens (``<...>``), whitespace-only tokens and lone byte pieces
    are left out. Returns ``(promoted, suppressed)``, each at most ``k`` tokens.
    """
    with torch.inference_mode():
        w_out = model.blocks[layer].mlp.out.weight[:, neuron]  # [d_model]
        hf: Any = model.original_model  # a transformers model
        scores = (hf.get_output_embeddings().weight @ w_out).float().cpu()
    decode = model.tokenizer.decode

    def rows(values: torch.Tensor, idx: torch.Tensor) -> list[TokenLogit]:
        found = []
        for value, i in zip(values.tolist(), idx.tolist()):
            token = decode([i])
            if token.strip() and "\ufffd" not in token and not _SPECIAL.fullmatch(token):
                found.append(TokenLogit(i, token, value))
        return found[:k]

    n = min(20 * k, len(scores))
    top, bottom = scores.topk(n), scores.topk(n, largest=False)
    return rows(top.values, top.indices), rows(bottom.values, bottom.indices)


__all__ = [
    "LossChange",
    "NextToken",
    "TokenLogit",
    "TokenValues",
    "logit_effects",
    "loss_change",
    "neuron_activations",
    "next_token_table",
    "token_losses",
]
