"""Perplexity: exp(mean next-token NLL) on held-out text, per language, under hooks.

:func:`masked_perplexities` measures many conditions (each a mask of MLP neurons set
to 0) in shared forward passes; the deactivation experiments
(:mod:`mlneurons.methods.deactivation`) are built on it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from tqdm.auto import tqdm

from mlneurons.data.corpus import MultilingualCorpus
from mlneurons.evaluation.uncertainty import Uncertainty
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


@dataclass(frozen=True)
class RowLosses:
    """The summed next-token NLL of every held-out row under every condition.

    A row is one packed chunk of ``seq_len`` tokens (:meth:`MultilingualCorpus.rows`),
    the unit the intervals resample: never single tokens, whose losses share context.

    Attributes:
        nll: ``[condition, language, row]`` summed NLL in nats (float64); 0 past a
            language's last row.
        tokens: ``[language, row]`` predicted tokens of each row; 0 = no such row.
    """

    nll: Float[torch.Tensor, "condition language row"]
    tokens: Int[torch.Tensor, "language row"]

    def perplexities(self) -> Float[torch.Tensor, "condition language"]:
        """exp(summed NLL / predicted tokens) per condition and language; the rows are
        added one after the other, in order, as a single pass over them adds them."""
        total = torch.zeros(self.nll.shape[:2], dtype=torch.float64)
        for row in range(self.nll.shape[2]):
            total += self.nll[:, :, row]
        return torch.exp(total / self.tokens.sum(-1).double())

    def counts(self) -> list[int]:
        """Predicted tokens per language."""
        return [int(n) for n in self.tokens.sum(-1)]

    def rows(self) -> list[int]:
        """Held-out rows per language."""
        return [int(n) for n in (self.tokens > 0).sum(-1)]

    def resampled(self, how: Uncertainty) -> Float[np.ndarray, "sample condition language"]:
        """Mean NLL per token of every condition and language on ``how.samples`` bootstrap
        resamples of the rows: each language's rows are drawn with replacement, separately
        (a stratified bootstrap), and one draw serves every condition (paired), so a
        ratio of perplexities is resampled as a ratio of sums over the same rows."""
        rng = np.random.default_rng(how.seed)
        width = self.tokens.shape[1]
        weights = np.zeros((how.samples, len(self.tokens), width))
        for li, n in enumerate(self.rows()):
            drawn = (
                rng.integers(0, n, size=(how.samples, n)) + width * np.arange(how.samples)[:, None]
            )
            counts = np.bincount(drawn.ravel(), minlength=how.samples * width)
            weights[:, li] = counts.reshape(how.samples, width)
        by_language = weights.transpose(1, 0, 2)  # [language, sample, row]
        nll = np.matmul(by_language, self.nll.numpy().transpose(1, 2, 0)).transpose(1, 2, 0)
        tokens = np.einsum("slr,lr->sl", weights, self.tokens.double().numpy())
        mean: np.ndarray = nll / tokens[:, None, :]
        return mean


def masked_perplexities(
    model: TransformerBridge,
    corpus: MultilingualCorpus,
    masks: Bool[torch.Tensor, "condition layer neuron"],
    *,
    batch_size: int = 8,
    world: World | None = None,
    progress: bool = True,
    points: Sequence[str] | None = None,
) -> RowLosses:
    """Every held-out row's NLL for every language of ``corpus`` with each condition's
    neurons set to 0 (:meth:`RowLosses.perplexities`: the perplexities).

    All conditions of a held-out row run in shared forward passes: a row is repeated
    once per condition and a per-row mask zeroes that condition's neurons, so a batch of
    ``batch_size`` forward rows mixes conditions freely. An all-False mask is the
    baseline.

    Args:
        world: under ``torchrun`` (:meth:`World.from_env`), rank r runs every W-th batch
            from the r-th and the ranks exchange their rows' NLLs (each row is computed
            once, so the result does not depend on the number of ranks).
        points: the hook point of each "layer" of the masks when the units are not MLP
            neurons (the feature hook points of spliced dictionaries).
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
    per_language: list[torch.Tensor] = []
    lengths: list[torch.Tensor] = []
    with torch.inference_mode(), model.hooks(fwd_hooks=hooks):
        for lang in corpus.languages:
            rows = torch.cat(list(corpus.rows(lang, model.tokenizer, batch_size=64)))
            nll = torch.zeros(len(masks), len(rows), dtype=torch.float64)
            lengths.append(torch.full((len(rows),), rows.shape[1] - 1))
            work = [(c, r) for r in range(len(rows)) for c in range(len(masks))]
            starts = list(range(0, len(work), batch_size))[world.rank :: world.size]
            for start in tqdm(starts, desc=f"ppl matrix: {lang}", disable=not progress):
                chunk = work[start : start + batch_size]
                cond = torch.tensor([c for c, _ in chunk])
                state["keep"] = keep_on_device[cond.to(keep_on_device.device)]
                per_row = sequence_nll(model, rows[[r for _, r in chunk]])
                nll[cond, torch.tensor([r for _, r in chunk])] = per_row.double().cpu()
            per_language.append(nll)
    width = max(len(t) for t in lengths)
    losses = RowLosses(
        torch.stack([torch.nn.functional.pad(n, (0, width - n.shape[1])) for n in per_language], 1),
        torch.stack([torch.nn.functional.pad(t, (0, width - len(t))) for t in lengths]),
    )
    all_reduce_sum(losses.nll, world)  # every row was computed on one rank, 0 elsewhere: exact
    return losses


def _masked_post(
    act: torch.Tensor, *, hook: Any, layer: int, state: dict[str, Any]
) -> torch.Tensor:
    """Multiply ``hook_post`` by each row's keep-mask (0 = deactivated)."""
    keep: torch.Tensor = state["keep"]
    return act * keep[:, layer, None, :].to(act.device, act.dtype)


__all__ = ["RowLosses", "masked_perplexities", "perplexity", "sequence_nll"]
