"""Perplexity under neuron interventions: the deactivation matrix of Tang et al. (2024).

Rows of the matrix are the deactivated language, columns the evaluated one. Unlike
the reference ``ppl.py`` (which prints mean NLL), values here are perplexities,
exp(mean NLL), on held-out text, with the no-intervention baseline and two controls
per language: as many random neurons from the same layers, and matched controls drawn
from the same layers and firing-probability bins.
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
from mlneurons.errors import UserError
from mlneurons.methods.baselines import matched_control, probability_bins, random_selection
from mlneurons.methods.lape import LanguageNeurons
from mlneurons.models.fingerprint import fingerprint
from mlneurons.models.forward import log_likelihood_sums, model_device
from mlneurons.models.hooks import is_masked_lm
from mlneurons.results import Result
from mlneurons.stats.activation import ActivationStats
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


def _relative(
    table: dict[str, dict[str, float]], baseline: dict[str, float], languages: list[str]
) -> Float[torch.Tensor, "row column"]:
    return torch.tensor(
        [[table[r][c] / baseline[c] - 1 for c in languages] for r in languages], dtype=torch.float64
    )


@dataclass
class PerplexityMatrix(Result):
    """Perplexities with each language's neurons deactivated, plus baseline and controls.

    Attributes:
        languages: row and column order.
        baseline: evaluated language -> perplexity without intervention.
        deactivated: deactivated language -> evaluated language -> perplexity.
        random_control: deactivated language -> evaluated language -> perplexity with as
            many uniformly random neurons from the same layers deactivated
            (:func:`~mlneurons.methods.baselines.random_selection`).
        tokens_per_language: predicted tokens per evaluated language.
        model: fingerprint of the model.
        seed: seed of the controls (draw i of the matched control uses ``seed + i``).
        matched_control: deactivated language -> evaluated language -> one perplexity per
            draw of the matched control (:func:`~mlneurons.methods.baselines.matched_control`:
            same layers and same firing-probability bins); empty when not run.
        matched: how the matched controls were drawn (``draws``, ``bins``, and per draw
            the neurons that came from a neighbouring bin, ``widened``).
    """

    FILE: ClassVar[str] = PPL_FILE

    languages: list[str]
    baseline: dict[str, float]
    deactivated: dict[str, dict[str, float]]
    random_control: dict[str, dict[str, float]]
    tokens_per_language: int
    model: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    matched_control: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    matched: dict[str, Any] = field(default_factory=dict)

    def relative_change(self, which: str = "deactivated") -> Float[torch.Tensor, "row column"]:
        """(ppl - baseline) / baseline, rows = deactivated language, columns = evaluated.

        ``which``: ``deactivated``, ``random_control`` or ``matched_control`` (the mean
        over its draws).
        """
        if which == "matched_control":
            return self.matched_draws().mean(0)
        table = {"deactivated": self.deactivated, "random_control": self.random_control}[which]
        return _relative(table, self.baseline, self.languages)

    def matched_draws(self) -> Float[torch.Tensor, "draw row column"]:
        """Relative change of every draw of the matched control."""
        if not self.matched_control:
            raise UserError("this matrix has no matched controls (run it with stats and draws)")
        draws = len(next(iter(self.matched_control.values()))[self.languages[0]])
        return torch.stack(
            [
                _relative(
                    {
                        r: {c: v[d] for c, v in row.items()}
                        for r, row in self.matched_control.items()
                    },
                    self.baseline,
                    self.languages,
                )
                for d in range(draws)
            ]
        )

    def diagonal_dominance(self) -> dict[str, bool]:
        """Per deactivated language: is its own perplexity the one that rises most (relatively)?"""
        change = self.relative_change()
        return {lang: bool(change[i].argmax() == i) for i, lang in enumerate(self.languages)}


def masked_perplexities(
    model: Any,
    corpus: MultilingualCorpus,
    masks: Bool[torch.Tensor, "condition layer neuron"],
    *,
    batch_size: int = 8,
    world: World | None = None,
    progress: bool = True,
) -> tuple[Float[torch.Tensor, "condition language"], list[int]]:
    """Perplexity of every language of ``corpus`` with each condition's neurons set to 0.

    All conditions of a held-out row run in shared forward passes: a row is repeated
    once per condition and a per-row mask zeroes that condition's neurons, so a batch of
    ``batch_size`` forward rows mixes conditions freely. An all-False mask is the
    baseline.

    Args:
        world: under ``torchrun`` (:meth:`World.from_env`), rank r runs every W-th batch
            from the r-th and the summed NLLs are added over the ranks.

    Returns:
        The ``[condition, language]`` perplexities and the predicted tokens per language.
    """
    world = world or World()
    keep = (~masks).float()
    keep_on_device = keep.to(model_device(model))
    layers = (keep < 1).any(-1).any(0).nonzero().flatten().tolist()
    state: dict[str, Any] = {}
    hooks = [
        (f"blocks.{layer}.mlp.hook_post", functools.partial(_masked_post, layer=layer, state=state))
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
    return act * state["keep"][:, layer, None, :].to(act.device, act.dtype)


def _check_languages(model: Any, corpus: MultilingualCorpus, *selections: LanguageNeurons) -> None:
    for neurons in selections:
        neurons.check_fits(model)
        missing = [lang for lang in corpus.languages if lang not in neurons.languages]
        if missing:
            raise UserError(
                f"no neurons for languages {missing}; the neurons have {neurons.languages}"
            )


def perplexity_matrix(
    model: Any,
    neurons: LanguageNeurons,
    corpus: MultilingualCorpus,
    *,
    random_control: bool = True,
    stats: ActivationStats | None = None,
    matched_draws: int = 3,
    bins: int = 20,
    seed: int = 0,
    batch_size: int = 8,
    world: World | None = None,
    progress: bool = True,
) -> PerplexityMatrix:
    """The deactivation perplexity matrix of Tang et al. (2024), with controls.

    Args:
        model: the model ``neurons`` were selected on.
        neurons: LAPE neurons; ``corpus`` languages must be among its languages.
        corpus: held-out text (e.g. ``MultilingualCorpus.builtin(split="heldout")``).
        random_control: add the uniform random-neuron control (same layers).
        stats: the activation statistics of ``neurons``; with them, ``matched_draws``
            matched controls (same layers, same firing-probability bins) are added.
        matched_draws: draws of the matched control (seeds ``seed``, ``seed + 1``, ...).
        bins: firing-probability bins per layer of the matched control.
        seed: seed of the controls.
        batch_size: rows per forward pass.
        world: see :func:`masked_perplexities`.
    """
    _check_languages(model, corpus, neurons)
    if stats is not None and matched_draws > 0:  # fail before any forward pass
        probability_bins(stats, neurons.languages[0], bins=bins)
    languages = corpus.languages
    conditions: list[tuple[str, str | None, LanguageNeurons | None]] = [("baseline", None, None)]
    conditions += [("deactivated", lang, neurons) for lang in languages]
    if random_control:  # as many neurons per layer, none of them any language's neuron
        control = random_selection(neurons, seed=seed)
        conditions += [("random_control", lang, control) for lang in languages]
    widened = []
    for draw in range(matched_draws if stats is not None else 0):
        matched = matched_control(neurons, stats, bins=bins, seed=seed + draw)
        widened.append(matched.constants["widened"])
        conditions += [("matched_control", lang, matched) for lang in languages]
    empty = torch.zeros(neurons.n_layers, neurons.d_mlp, dtype=torch.bool)
    masks = torch.stack(
        [empty if sel is None else sel.only(lang).masks()[0] for _, lang, sel in conditions]
    )
    ppl, counts = masked_perplexities(
        model, corpus, masks, batch_size=batch_size, world=world, progress=progress
    )
    table: dict[str, dict[str, Any]] = {"deactivated": {}, "random_control": {}}
    matched_table: dict[str, dict[str, list[float]]] = {}
    for ci, (kind, lang, _) in enumerate(conditions):
        if kind == "matched_control":
            row = matched_table.setdefault(lang, {c: [] for c in languages})
            for c, value in zip(languages, ppl[ci].tolist()):
                row[c].append(value)
        elif lang is not None:
            table[kind][lang] = dict(zip(languages, ppl[ci].tolist()))
    return PerplexityMatrix(
        languages=languages,
        baseline=dict(zip(languages, ppl[0].tolist())),
        deactivated=table["deactivated"],
        random_control=table["random_control"],
        tokens_per_language=min(counts),
        model=fingerprint(model),
        seed=seed,
        matched_control=matched_table,
        matched={"draws": len(widened), "bins": bins, "widened": widened} if widened else {},
    )


METHODS_FILE = "methods.json"


@dataclass
class MethodComparison(Result):
    """The deactivation matrix of several neuron selectors on the same held-out text
    (the analogue of Tang et al.'s comparison of LAPE with LAP, LAVE and RS).

    Attributes:
        languages: row and column order.
        methods: the selectors, in order.
        baseline: evaluated language -> perplexity without intervention.
        deactivated: method -> deactivated language -> evaluated language -> perplexity.
        counts: method -> language -> number of neurons.
        tokens_per_language: predicted tokens per evaluated language.
        model: fingerprint of the model.
    """

    FILE: ClassVar[str] = METHODS_FILE

    languages: list[str]
    methods: list[str]
    baseline: dict[str, float]
    deactivated: dict[str, dict[str, dict[str, float]]]
    counts: dict[str, dict[str, int]]
    tokens_per_language: int
    model: dict[str, Any] = field(default_factory=dict)

    def relative_change(self, method: str) -> Float[torch.Tensor, "row column"]:
        """(ppl - baseline) / baseline of ``method``: rows deactivated, columns evaluated."""
        if method not in self.deactivated:
            raise UserError(f"method {method!r} is not in this comparison; it has {self.methods}")
        return _relative(self.deactivated[method], self.baseline, self.languages)

    def specificity(self) -> dict[str, dict[str, float | None]]:
        """Per method: ``own`` = mean relative perplexity increase of the deactivated
        language itself, ``others`` = mean relative increase of every other language, and
        ``score`` = own / (own + others) on log-perplexity increases (nats per token,
        a decrease counted as 0): 0.5 = every language is hurt alike, 1 = only the
        deactivated language is; ``None`` when nothing got worse.

        On logs, because relative increases span ten orders of magnitude when a method
        deactivates neurons every language needs (LAP), where a difference of
        percentages would only measure the damage."""
        scores: dict[str, dict[str, float | None]] = {}
        n = len(self.languages)
        off = ~torch.eye(n, dtype=torch.bool)
        for method in self.methods:
            change = self.relative_change(method)
            nats = torch.log1p(change).clamp(min=0)
            own, others = nats.diagonal().mean(), nats[off].mean() if n > 1 else nats.new_zeros(())
            total = float(own + others)
            scores[method] = {
                "own": float(change.diagonal().mean()),
                "others": float(change[off].mean()) if n > 1 else 0.0,
                "own_nats": float(own),
                "others_nats": float(others),
                "score": float(own) / total if total > 0 else None,
            }
        return scores


def compare_methods(
    model: Any,
    selections: dict[str, LanguageNeurons],
    corpus: MultilingualCorpus,
    *,
    batch_size: int = 8,
    world: World | None = None,
    progress: bool = True,
) -> MethodComparison:
    """Deactivate each language's neurons of every selector in ``selections`` (e.g. the
    output of :func:`~mlneurons.methods.baselines.select_with` per method) and measure
    every language's held-out perplexity, all conditions in shared forward passes."""
    if not selections:
        raise UserError("name at least one method to compare")
    _check_languages(model, corpus, *selections.values())
    languages = corpus.languages
    conditions = [(method, lang) for method in selections for lang in languages]
    empty = torch.zeros(model.cfg.n_layers, model.cfg.d_mlp, dtype=torch.bool)
    masks = torch.stack(
        [empty] + [selections[method].only(lang).masks()[0] for method, lang in conditions]
    )
    ppl, counts = masked_perplexities(
        model, corpus, masks, batch_size=batch_size, world=world, progress=progress
    )
    deactivated: dict[str, dict[str, dict[str, float]]] = {m: {} for m in selections}
    for ci, (method, lang) in enumerate(conditions, start=1):
        deactivated[method][lang] = dict(zip(languages, ppl[ci].tolist()))
    return MethodComparison(
        languages=languages,
        methods=list(selections),
        baseline=dict(zip(languages, ppl[0].tolist())),
        deactivated=deactivated,
        counts={
            m: {lang: n for lang, n in sel.counts().items() if lang in languages}
            for m, sel in selections.items()
        },
        tokens_per_language=min(counts),
        model=fingerprint(model),
    )


__all__ = [
    "PPL_FILE",
    "PerplexityMatrix",
    "perplexity",
    "perplexity_matrix",
    "METHODS_FILE",
    "MethodComparison",
    "compare_methods",
    "masked_perplexities",
    "sequence_nll",
]
