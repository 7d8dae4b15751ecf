"""Forward helpers: the body without logits, cached bodies, chunked unembedding, padding."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from mlneurons.models.bridge import TransformerBridge


def honour_cache_keyword() -> None:
    """Make the bridge's attention read the key/value cache under its new keyword ``cache``.

    transformers 5.24 renamed the ``past_key_values`` argument of decoder layers and
    attention modules to ``cache``; the TransformerLens 4.3 attention bridges that
    re-implement attention still read only ``past_key_values`` (or ``layer_past``), so a
    cached forward through the bridge silently attended to the new tokens alone. This
    patches ``AttentionBridge._update_kv_cache`` once per process to take either name.
    The canary of cached scoring (:mod:`mlneurons.models.canary`) checks the result.
    """
    from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge

    update = AttentionBridge._update_kv_cache
    if getattr(update, "_mlneurons_cache_keyword", False):
        return

    @functools.wraps(update)
    def update_kv_cache(self: Any, k: torch.Tensor, v: torch.Tensor, **kwargs: Any) -> Any:
        if kwargs.get("past_key_values") is None and kwargs.get("cache") is not None:
            kwargs["past_key_values"] = kwargs["cache"]
        return update(self, k, v, **kwargs)

    update_kv_cache._mlneurons_cache_keyword = True  # type: ignore[attr-defined]
    # a deliberate patch of the class's method, once per process
    AttentionBridge._update_kv_cache = update_kv_cache  # type: ignore[method-assign]


def run_body(
    model: TransformerBridge, tokens: torch.Tensor, *, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Run the transformer body without the unembedding; returns the final (normed) states.

    Statistics never need logits, and the 262k-vocabulary matmul dominates a Gemma
    forward. Hooks attached with ``model.hooks(...)`` fire as in a full forward.
    """
    body = getattr(getattr(model, "original_model", None), "base_model", None)
    if body is None:
        raise ValueError("run_body needs a TransformerBridge booted from a Hugging Face model")
    kwargs = {"attention_mask": attention_mask} if attention_mask is not None else {}
    states: torch.Tensor = body(input_ids=tokens, use_cache=False, **kwargs).last_hidden_state
    return states


def cached_body(
    body: torch.nn.Module, input_ids: torch.Tensor, cache: Any = None
) -> tuple[torch.Tensor, Any]:
    """Run an HF body with a key/value cache: ``(last_hidden_state, cache after the run)``.

    The cache goes in under the keyword this transformers release takes (``cache`` from
    5.24 on, ``past_key_values`` before), so no deprecated keyword is ever passed.
    """
    keyword = (
        "cache" if "cache" in inspect.signature(body.forward).parameters else "past_key_values"
    )
    kwargs = {} if cache is None else {keyword: cache}
    out = body(input_ids=input_ids, use_cache=True, **kwargs)
    returned = out.get("cache") if "cache" in out else out.get("past_key_values")
    return out.last_hidden_state, returned


def unembed(model: TransformerBridge, hidden: torch.Tensor) -> torch.Tensor:
    """Logits from final hidden states, with the model's logit soft-capping if it has one."""
    hf: Any = model.original_model  # a transformers model: its methods are not typed on nn.Module
    logits: torch.Tensor = hf.get_output_embeddings()(hidden)
    cap = getattr(hf.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


UNEMBED_ROWS = 256
"""States unembedded per matmul: the unembedding streams the whole vocabulary matrix
(670 MB for Gemma 3) once per call, so a few hundred rows at a time run about twice as
fast per row as a batch of 32."""


def target_logprobs(
    model: TransformerBridge,
    states: torch.Tensor,
    targets: torch.Tensor,
    *,
    rows: int = UNEMBED_ROWS,
) -> torch.Tensor:
    """The log-probability of each of ``targets`` given its final (normed) state.

    The unembedding runs ``rows`` states at a time, so full-vocabulary logits of all
    states never exist at once. Returns a float32 CPU tensor, one value per state.
    """
    parts = [torch.zeros(0)]
    for start in range(0, len(states), rows):
        part = slice(start, start + rows)
        logits = unembed(model, states[part]).float()
        nll = F.cross_entropy(logits, targets[part].to(logits.device), reduction="none")
        parts.append(-nll.cpu())
    return torch.cat(parts)


def log_likelihood_sums(
    model: TransformerBridge,
    states: torch.Tensor,
    targets: torch.Tensor,
    owners: torch.Tensor,
    n_owners: int,
    *,
    rows: int = UNEMBED_ROWS,
) -> torch.Tensor:
    """Per owner, the summed log-probability of ``targets`` given final (normed) ``states``
    (:func:`target_logprobs`). Returns a float32 CPU tensor of ``n_owners`` sums."""
    totals = torch.zeros(n_owners)
    totals.index_add_(0, owners.cpu(), target_logprobs(model, states, targets, rows=rows))
    return totals


def model_device(model: TransformerBridge) -> torch.device:
    """The device of the model's first parameter (where inputs go)."""
    return next(model.parameters()).device


def pad_right(
    rows: Sequence[Sequence[int]], pad_id: int = 0, *, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token rows: ``(input_ids, attention_mask)``, both long."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for k, row in enumerate(rows):
        ids[k, : len(row)] = torch.as_tensor(row, dtype=torch.long)
        mask[k, : len(row)] = 1
    return ids.to(device), mask.to(device)
