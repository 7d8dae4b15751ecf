"""Perplexity: exp(mean next-token NLL) on held-out text, per language, under hooks.

:func:`masked_perplexities` measures many conditions (each a mask of MLP neurons set
to 0) in shared forward passes; the deactivation experiments
(:mod:`mlneurons.methods.deactivation`) are built on it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from tqdm.auto import tqdm

from mlneurons.data.corpus import MultilingualCorpus
from mlneurons.models.bridge import TransformerBridge
from mlneurons.models.forward import model_device
from mlneurons.models.scoring import token_logprobs
from mlneurons.stats.distributed import all_reduce_sum
from mlneurons.world import World


def sequence_nll(
    model: TransformerBridge, tokens: Int[torch.Tensor, "batch seq"], *, chunk_tokens: int = 512
) -> Float[torch.Tensor, " batch"]:
    """Summed next-token negative log-likelihood of each row (natural log).

    Every token after the first is predicted from its prefix
    (:func:`~mlneurons.models.scoring.token_logprobs`); logits are made ``chunk_tokens``
    positions at a time. Hooks attached to ``model`` apply. Float64 sums.
    """
    scores = token_logprobs(model, tokens, batch_size=len(tokens), unembed_rows=chunk_tokens)
    return -torch.stack([values.double().sum() for values in scores.logprobs])


def perplexity(
    model: TransformerBridge,
    corpus: MultilingualCorpus,
    *,
    interventions: Sequence[tuple[str, Any]] = (),
    batch_size: int = 8,
    progress: bool = True,
) -> dict[str, float]:
    """Perplexity, exp(mean NLL over every predicted token), per language of ``corpus``."""
    result = {}
    with torch.inference_mode(), model.hooks(fwd_hooks=list(interventions)):
        for lang in corpus.languages:
            total, count = 0.0, 0
            for batch in tqdm(
                list(corpus.rows(lang, model.tokenizer, batch_size=batch_size)),
                desc=f"ppl {lang}",
                disable=not progress,
            ):
                total += float(sequence_nll(model, batch).double().sum())
                count += batch[:, 1:].numel()
            result[lang] = math.exp(total / count)
    return result


def masked_perplexities(
    model: TransformerBridge,
    corpus: MultilingualCorpus,
    masks: Bool[torch.Tensor, "condition layer neuron"],
    *,
    batch_size: int = 8,
    world: World | None = None,
    progress: bool = True,
    points: Sequence[str] | None = None,
) -> tuple[Float[torch.Tensor, "condition language"], list[int]]:
    """Perplexity of every language of ``corpus`` with each condition's neurons set to 0.

    All conditions of a held-out row run in shared forward passes: a row is repeated
    once per condition and a per-row mask zeroes that condition's neurons, so a batch of
    ``batch_size`` forward rows mixes conditions freely. An all-False mask is the
    baseline.

    Args:
        world: under ``torchrun`` (:meth:`World.from_env`), rank r runs every W-th batch
            from the r-th and the summed NLLs are added over the ranks.
        points: the hook point of each "layer" of the masks when the units are not MLP
            neurons (the feature hook points of spliced dictionaries).

    Returns:
        The ``[condition, language]`` perplexities and the predicted tokens per language.
    """
    world = world or World()
    keep = (~masks).float()
    keep_on_device = keep.to(model_device(model))
    layers = (keep < 1).any(-1).any(0).nonzero().flatten().tolist()
    state: dict[str, Any] = {}
    hooks = [
        (
            points[layer] if points else f"blocks.{layer}.mlp.hook_post",
            functools.partial(_masked_post, layer=layer, state=state),
        )
        for layer in layers
    ]
    languages = corpus.languages
    nll = torch.zeros(len(masks), len(languages), dtype=torch.float64)
    counts = [0] * len(languages)
    with torch.inference_mode(), model.hooks(fwd_hooks=hooks):
        for li, lang in enumerate(languages):
            rows = torch.cat(list(corpus.rows(lang, model.tokenizer, batch_size=64)))
            counts[li] = rows[:, 1:].numel()
            work = [(c, r) for r in range(len(rows)) for c in range(len(masks))]
            starts = list(range(0, len(work), batch_size))[world.rank :: world.size]
            for start in tqdm(starts, desc=f"ppl matrix: {lang}", disable=not progress):
                chunk = work[start : start + batch_size]
                cond = torch.tensor([c for c, _ in chunk])
                state["keep"] = keep_on_device[cond.to(keep_on_device.device)]
                per_row = sequence_nll(model, rows[[r for _, r in chunk]])
                nll[:, li].index_add_(0, cond, per_row.double().cpu())
    all_reduce_sum(nll, world)
    return torch.exp(nll / torch.tensor(counts, dtype=torch.float64)), counts


def _masked_post(
    act: torch.Tensor, *, hook: Any, layer: int, state: dict[str, Any]
) -> torch.Tensor:
    """Multiply ``hook_post`` by each row's keep-mask (0 = deactivated)."""
    keep: torch.Tensor = state["keep"]
    return act * keep[:, layer, None, :].to(act.device, act.dtype)


__all__ = ["masked_perplexities", "perplexity", "sequence_nll"]
