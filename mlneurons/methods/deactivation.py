"""Deactivation experiments: the perplexity matrix of Tang et al. (2024) and the comparison
of neuron selectors.

Rows of the matrix are the deactivated language, columns the evaluated one. Unlike
the paper's published evaluation script (which prints mean NLL), values here are perplexities,
exp(mean NLL), on held-out text, with the no-intervention baseline and two controls
per language: as many random neurons from the same layers, and matched controls drawn
from the same layers and firing-probability bins.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from jaxtyping import Float

from mlneurons.data.corpus import MultilingualCorpus
from mlneurons.errors import UserError
from mlneurons.evaluation.perplexity import masked_perplexities
from mlneurons.methods.baselines import matched_control, probability_bins, random_selection
from mlneurons.methods.lape import LanguageNeurons
from mlneurons.models.bridge import TransformerBridge
from mlneurons.models.fingerprint import fingerprint
from mlneurons.results import Result
from mlneurons.stats.activation import ActivationStats
from mlneurons.world import World

PPL_FILE = "ppl_matrix.json"


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


def _check_languages(
    model: TransformerBridge, corpus: MultilingualCorpus, *selections: LanguageNeurons
) -> None:
    for neurons in selections:
        neurons.check_fits(model)
        missing = [lang for lang in corpus.languages if lang not in neurons.languages]
        if missing:
            raise UserError(
                f"no neurons for languages {missing}; the neurons have {neurons.languages}"
            )


def perplexity_matrix(
    model: TransformerBridge,
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
    if stats is not None:
        for draw in range(matched_draws):
            matched = matched_control(neurons, stats, bins=bins, seed=seed + draw)
            widened.append(matched.constants["widened"])
            conditions += [("matched_control", lang, matched) for lang in languages]
    empty = torch.zeros(neurons.n_layers, neurons.d_mlp, dtype=torch.bool)
    masks = torch.stack(
        [
            empty if sel is None or lang is None else sel.only(lang).masks()[0]
            for _, lang, sel in conditions
        ]
    )
    ppl, counts = masked_perplexities(
        model,
        corpus,
        masks,
        batch_size=batch_size,
        world=world,
        progress=progress,
        points=neurons.feature_points,
    )
    table: dict[str, dict[str, Any]] = {"deactivated": {}, "random_control": {}}
    matched_table: dict[str, dict[str, list[float]]] = {}
    for ci, (kind, lang, _) in enumerate(conditions):
        if lang is None:  # the baseline
            continue
        if kind == "matched_control":
            row = matched_table.setdefault(lang, {c: [] for c in languages})
            for c, value in zip(languages, ppl[ci].tolist()):
                row[c].append(value)
        else:
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
        constants: method -> the constants of its selection (which reading of a
            baseline ran: LAP's threshold kind and bar, RS's pool, PV's checkpoints).
    """

    FILE: ClassVar[str] = METHODS_FILE

    languages: list[str]
    methods: list[str]
    baseline: dict[str, float]
    deactivated: dict[str, dict[str, dict[str, float]]]
    counts: dict[str, dict[str, int]]
    tokens_per_language: int
    model: dict[str, Any] = field(default_factory=dict)
    constants: dict[str, dict[str, Any]] = field(default_factory=dict)

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

        This score is this project's summary, not Tang et al.'s: the paper compares the
        methods by their deactivation matrices (figures), with no single number.

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
    model: TransformerBridge,
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
    points = {tuple(sel.feature_points) for sel in selections.values()}
    if len(points) > 1:
        raise UserError("compare selections of one kind of unit: all neurons, or all features")
    languages = corpus.languages
    conditions = [(method, lang) for method in selections for lang in languages]
    first = next(iter(selections.values()))
    empty = torch.zeros(first.n_layers, first.d_mlp, dtype=torch.bool)
    masks = torch.stack(
        [empty] + [selections[method].only(lang).masks()[0] for method, lang in conditions]
    )
    ppl, counts = masked_perplexities(
        model,
        corpus,
        masks,
        batch_size=batch_size,
        world=world,
        progress=progress,
        points=first.feature_points,
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
        constants={m: dict(sel.constants) for m, sel in selections.items()},
    )


__all__ = [
    "METHODS_FILE",
    "PPL_FILE",
    "MethodComparison",
    "PerplexityMatrix",
    "compare_methods",
    "perplexity_matrix",
]
