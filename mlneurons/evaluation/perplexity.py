"""Perplexity under neuron interventions: the deactivation matrix of Tang et al. (2024).

Rows of the matrix are the deactivated language, columns the evaluated one. Unlike
the reference ``ppl.py`` (which prints mean NLL), values here are perplexities,
exp(mean NLL), on held-out text, with the no-intervention baseline and a random
control per language: as many neurons, drawn from the same layers.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from jaxtyping import Bool, Float, Int
from tqdm.auto import tqdm

from mlneurons.data.corpus import MultilingualCorpus
from mlneurons.methods.lape import LanguageNeurons
from mlneurons.models.fingerprint import fingerprint
from mlneurons.models.forward import log_likelihood_sums, model_device
from mlneurons.models.hooks import is_masked_lm
from mlneurons.results import Result
from mlneurons.stats.distributed import all_reduce_sum
from mlneurons.world import World

PPL_FILE = "ppl_matrix.json"


def sequence_nll(
    model: Any, tokens: Int[torch.Tensor, "batch seq"], *, chunk_tokens: int = 512
) -> Float[torch.Tensor, " batch"]:
    """Summed next-token negative log-likelihood of each row (natural log).

    Every token after the first is predicted from its prefix. Logits are made
    ``chunk_tokens`` positions at a time, so the full-vocabulary log-probabilities of
    all positions never exist at once. Hooks attached to ``model`` apply.
    """
    hf = getattr(model, "original_model", None)
    if hf is None or hf.get_output_embeddings() is None:
        raise ValueError("perplexity needs a causal language model booted from Hugging Face")
    if is_masked_lm(model):
        raise ValueError(f"perplexity needs a causal LM; {type(hf).__name__} is a masked LM")
    tokens = tokens.to(model_device(model))
    hidden = hf.base_model(input_ids=tokens, use_cache=False).last_hidden_state[:, :-1]
    batch, positions, d_model = hidden.shape
    owners = torch.arange(batch).repeat_interleave(positions)
    return -log_likelihood_sums(
        model,
        hidden.reshape(-1, d_model),
        tokens[:, 1:].reshape(-1),
        owners,
        batch,
        rows=chunk_tokens,
    )


def perplexity(
    model: Any,
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


@dataclass
class PerplexityMatrix(Result):
    """Perplexities with each language's neurons deactivated, plus baseline and random controls.

    Attributes:
        languages: row and column order.
        baseline: evaluated language -> perplexity without intervention.
        deactivated: deactivated language -> evaluated language -> perplexity.
        random_control: deactivated language -> evaluated language -> perplexity with as
            many random neurons from the same layers deactivated.
        tokens_per_language: predicted tokens per evaluated language.
        model: fingerprint of the model.
        seed: seed of the random control (:func:`random_control_masks`).
    """

    FILE: ClassVar[str] = PPL_FILE

    languages: list[str]
    baseline: dict[str, float]
    deactivated: dict[str, dict[str, float]]
    random_control: dict[str, dict[str, float]]
    tokens_per_language: int
    model: dict[str, Any] = field(default_factory=dict)
    seed: int = 0

    def relative_change(self, which: str = "deactivated") -> Float[torch.Tensor, "row column"]:
        """(ppl - baseline) / baseline, rows = deactivated language, columns = evaluated."""
        table = {"deactivated": self.deactivated, "random_control": self.random_control}[which]
        return torch.tensor(
            [[table[r][c] / self.baseline[c] - 1 for c in self.languages] for r in self.languages]
        )

    def diagonal_dominance(self) -> dict[str, bool]:
        """Per deactivated language: is its own perplexity the one that rises most (relatively)?"""
        change = self.relative_change()
        return {lang: bool(change[i].argmax() == i) for i, lang in enumerate(self.languages)}


def random_control_masks(
    neurons: LanguageNeurons, *, seed: int = 0
) -> Bool[torch.Tensor, "language layer neuron"]:
    """Per language, as many random neurons per layer as it has, none of them a language neuron."""
    masks = neurons.masks()
    taken = masks.any(0)
    generator = torch.Generator().manual_seed(seed)
    control = torch.zeros_like(masks)
    free_per_layer = [(~taken[layer]).nonzero().flatten() for layer in range(masks.shape[1])]
    for i in range(len(neurons.languages)):
        for layer, n in enumerate(masks[i].sum(-1).tolist()):
            free = free_per_layer[layer]
            if n > len(free):
                raise ValueError(
                    f"layer {layer} has only {len(free)} free neurons for a control of {n}"
                )
            control[i, layer, free[torch.randperm(len(free), generator=generator)[:n]]] = True
    return control


def _masked_post(
    act: torch.Tensor, *, hook: Any, layer: int, state: dict[str, Any]
) -> torch.Tensor:
    """Multiply ``hook_post`` by each row's keep-mask (0 = deactivated)."""
    return act * state["keep"][:, layer, None, :].to(act.device, act.dtype)


def perplexity_matrix(
    model: Any,
    neurons: LanguageNeurons,
    corpus: MultilingualCorpus,
    *,
    random_control: bool = True,
    seed: int = 0,
    batch_size: int = 8,
    world: World | None = None,
    progress: bool = True,
) -> PerplexityMatrix:
    """The deactivation perplexity matrix of Tang et al. (2024), with controls.

    All conditions (baseline, each language deactivated, each random control) of a
    held-out row run in shared forward passes: a row is repeated once per condition
    and a per-row mask zeroes that condition's neurons, so a batch of
    ``batch_size`` forward rows mixes conditions freely.

    Args:
        model: the model ``neurons`` were selected on.
        neurons: LAPE neurons; ``corpus`` languages must be among its languages.
        corpus: held-out text (e.g. ``MultilingualCorpus.builtin(split="heldout")``).
        random_control: add the random-neuron control rows.
        seed: seed of the random control.
        batch_size: rows per forward pass.
        world: under ``torchrun`` (:meth:`World.from_env`), rank r runs every W-th batch
            from the r-th and the summed NLLs are added over the ranks.
    """
    world = world or World()
    neurons.check_fits(model)
    fp = fingerprint(model)
    missing = [lang for lang in corpus.languages if lang not in neurons.languages]
    if missing:
        raise ValueError(
            f"no neurons for languages {missing}; the neurons have {neurons.languages}"
        )
    languages = corpus.languages
    chosen = [neurons.languages.index(lang) for lang in languages]
    deact = neurons.masks()[chosen]
    conditions = [("baseline", None, torch.zeros_like(deact[0]))]
    conditions += [("deactivated", lang, deact[i]) for i, lang in enumerate(languages)]
    if random_control:  # as many neurons per layer, none of them any language's neuron
        control = random_control_masks(neurons, seed=seed)[chosen]
        conditions += [("random_control", lang, control[i]) for i, lang in enumerate(languages)]
    keep = torch.stack([~mask for _, _, mask in conditions]).float()  # [condition, layer, neuron]
    keep_on_device = keep.to(model_device(model))
    layers = (keep < 1).any(-1).any(0).nonzero().flatten().tolist()

    state: dict[str, Any] = {}
    hooks = [
        (f"blocks.{layer}.mlp.hook_post", functools.partial(_masked_post, layer=layer, state=state))
        for layer in layers
    ]
    nll = torch.zeros(len(conditions), len(languages), dtype=torch.float64)
    counts = [0] * len(languages)
    with torch.inference_mode(), model.hooks(fwd_hooks=hooks):
        for li, lang in enumerate(languages):
            rows = torch.cat(list(corpus.rows(lang, model.tokenizer, batch_size=64)))
            counts[li] = rows[:, 1:].numel()
            work = [(c, r) for r in range(len(rows)) for c in range(len(conditions))]
            starts = list(range(0, len(work), batch_size))[world.rank :: world.size]
            for start in tqdm(starts, desc=f"ppl matrix: {lang}", disable=not progress):
                chunk = work[start : start + batch_size]
                cond = torch.tensor([c for c, _ in chunk])
                state["keep"] = keep_on_device[cond.to(keep_on_device.device)]
                per_row = sequence_nll(model, rows[[r for _, r in chunk]])
                nll[:, li].index_add_(0, cond, per_row.double().cpu())
    all_reduce_sum(nll, world)
    ppl = torch.exp(nll / torch.tensor(counts, dtype=torch.float64))
    table: dict[str, dict[str, dict[str, float]]] = {"deactivated": {}, "random_control": {}}
    for ci, (kind, lang, _) in enumerate(conditions):
        if lang is not None:
            table[kind][lang] = dict(zip(languages, ppl[ci].tolist()))
    return PerplexityMatrix(
        languages=languages,
        baseline=dict(zip(languages, ppl[0].tolist())),
        deactivated=table["deactivated"],
        random_control=table["random_control"],
        tokens_per_language=min(counts),
        model=fp,
        seed=seed,
    )


__all__ = [
    "PPL_FILE",
    "PerplexityMatrix",
    "perplexity",
    "perplexity_matrix",
    "random_control_masks",
    "sequence_nll",
]
