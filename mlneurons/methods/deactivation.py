"""Deactivation experiments: the perplexity matrix of Tang et al. (2024) and the comparison
of neuron selectors.

Rows of the matrix are the deactivated language, columns the evaluated one. Unlike
the paper's published evaluation script (which prints mean NLL), values here are perplexities,
exp(mean NLL), on held-out text, with the no-intervention baseline and two controls
per language: as many random neurons from the same layers, and matched controls drawn
from the same layers and firing-probability bins.

Every number comes with its interval: the results keep each held-out row's NLL under
every condition, and a perplexity, a relative change (deactivated against baseline on
the same rows) or a specificity is resampled by the paired, stratified bootstrap over
rows (:meth:`~mlneurons.evaluation.perplexity.RowLosses.resampled`). A difference is
tested by its bootstrap p-value, Holm-adjusted across the languages (or methods) of a
table; the matched controls' draws stay the null of the deactivation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, cast

import numpy as np
import torch
from jaxtyping import Float

from mlneurons.data.corpus import MultilingualCorpus
from mlneurons.errors import UserError
from mlneurons.evaluation.perplexity import RowLosses, masked_perplexities
from mlneurons.evaluation.uncertainty import MIN_RESAMPLED, Estimate, Uncertainty, holm, percentile
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


ROWS_METHOD = "paired bootstrap over rows"


def bootstrap_p(draws: np.ndarray) -> float:
    """Two-sided bootstrap p-value of "the statistic is 0": twice the smaller share of
    the (finite) draws on either side of 0, ``(1 + k) / (1 + B)`` (1 when no draw is
    finite)."""
    draws = draws[np.isfinite(draws)]
    if not draws.size:
        return 1.0
    k = min(int((draws <= 0).sum()), int((draws >= 0).sum()))
    return min(1.0, 2 * (1 + k) / (1 + draws.size))


@dataclass(frozen=True)
class ChangeTest:
    """A difference (or a change) with its bootstrap interval over rows, its two-sided
    bootstrap p-value against 0 and the p-value Holm-adjusted across the table's family
    (its languages, or its methods)."""

    difference: Estimate
    p_value: float
    adjusted: float
    test: str = ROWS_METHOD

    def significant(self, alpha: float | None = None) -> bool:
        """Holm-adjusted ``p < alpha`` (default: 1 - the interval's confidence)."""
        return self.adjusted < (1 - self.difference.confidence if alpha is None else alpha)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ChangeTest:
        return cls(**{**data, "difference": Estimate.from_json(data["difference"])})


def _tests(family: list[tuple[Estimate, np.ndarray]]) -> list[ChangeTest]:
    """A :class:`ChangeTest` per (estimate, draws), Holm-adjusted across the family."""
    p = [bootstrap_p(draws) for _, draws in family]
    return [
        ChangeTest(estimate, pi, adjusted)
        for (estimate, _), pi, adjusted in zip(family, p, holm(p))
    ]


@dataclass(frozen=True)
class OwnChange:
    """One language's own perplexity change (its neurons off, evaluated on itself) with its
    controls, all relative changes on the same resampled rows.

    Attributes:
        own: the change, tested against 0 (Holm across the languages).
        uniform: the uniform random control's change (None when not run).
        matched: the mean change over the matched control's draws (None when not run).
        draws: matched draws; ``draws_as_large``: how many changed perplexity at least as
            much as the language's own neurons (the draws are the null).
        versus_uniform, versus_matched: own - control, tested against 0.
    """

    own: ChangeTest
    uniform: Estimate | None = None
    matched: Estimate | None = None
    draws: int = 0
    draws_as_large: int | None = None
    versus_uniform: ChangeTest | None = None
    versus_matched: ChangeTest | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class _Resampled:
    """The bootstrap draws of every condition's mean NLL per token ``[sample, condition,
    language]`` (condition 0: the baseline) from per-row losses, and the estimates made
    of them (the values themselves stay the results' exact ones)."""

    def __init__(self, losses: RowLosses, how: Uncertainty) -> None:
        self.how = how
        self.rows = losses.rows()
        self.n = sum(self.rows)
        self.nll = losses.resampled(how)
        self.method = f"{ROWS_METHOD} ({how.samples} resamples)"

    def estimate(self, value: float, draws: np.ndarray, n: int | None = None) -> Estimate:
        return percentile(value, draws, self.n if n is None else n, self.method, self.how)

    def change(self, conditions: list[int], language: int) -> np.ndarray:
        """Draws of ppl(condition) / ppl(baseline) - 1 in one evaluated language, the mean
        over ``conditions`` (the draws of a matched control; one for the others)."""
        nll = self.nll[:, conditions, language] - self.nll[:, None, 0, language]
        change: np.ndarray = np.expm1(nll).mean(-1)
        return change


def _losses(
    conditions: list[dict[str, list[float]]], tokens: dict[str, list[int]], languages: list[str]
) -> RowLosses:
    """Saved per-row losses (per condition: language -> rows) as a :class:`RowLosses`."""
    width = max(len(tokens[lang]) for lang in languages)
    nll = torch.zeros(len(conditions), len(languages), width, dtype=torch.float64)
    counts = torch.zeros(len(languages), width, dtype=torch.long)
    for li, lang in enumerate(languages):
        counts[li, : len(tokens[lang])] = torch.tensor(tokens[lang])
        for ci, rows in enumerate(conditions):
            nll[ci, li, : len(rows[lang])] = torch.tensor(rows[lang], dtype=torch.float64)
    return RowLosses(nll, counts)


def _row_lists(losses: RowLosses, languages: list[str]) -> list[dict[str, list[float]]]:
    """Per condition: language -> its rows' NLLs (the inverse of :func:`_losses`)."""
    rows = losses.rows()
    return [
        {lang: losses.nll[ci, li, : rows[li]].tolist() for li, lang in enumerate(languages)}
        for ci in range(len(losses.nll))
    ]


def _cells_json(cells: dict[str, dict[str, Estimate]]) -> dict[str, dict[str, Any]]:
    return {r: {c: e.to_json() for c, e in row.items()} for r, row in cells.items()}


def _resampled(
    conditions: list[dict[str, list[float]]],
    tokens: dict[str, list[int]],
    languages: list[str],
    settings: dict[str, Any],
) -> _Resampled | None:
    """The draws, or None without per-row losses (a result saved before them) or with a
    language of fewer than :data:`~mlneurons.evaluation.uncertainty.MIN_RESAMPLED` rows
    (the core's rule: a bootstrap over so few items covers too little)."""
    if not conditions or not tokens or min(len(tokens[lang]) for lang in languages) < MIN_RESAMPLED:
        return None
    return _Resampled(_losses(conditions, tokens, languages), Uncertainty.of(settings))


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
        row_nll: every held-out row's summed NLL, shaped like the perplexities (for
            ``matched_control`` one list of rows per draw): the data of the intervals;
            empty in results saved before them (no intervals).
        row_tokens: evaluated language -> predicted tokens of each of its rows.
        uncertainty: how the intervals are computed
            (:class:`~mlneurons.evaluation.uncertainty.Uncertainty`).
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
    row_nll: dict[str, Any] = field(default_factory=dict)
    row_tokens: dict[str, list[int]] = field(default_factory=dict)
    uncertainty: dict[str, Any] = field(default_factory=dict)

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

    def _conditions(self) -> list[tuple[str, str | None, int]]:
        """(kind, deactivated language, draw) of every condition, the baseline first."""
        found: list[tuple[str, str | None, int]] = [("baseline", None, 0)]
        found += [("deactivated", lang, 0) for lang in self.languages]
        if self.random_control:
            found += [("random_control", lang, 0) for lang in self.languages]
        draws = (
            len(next(iter(self.matched_control.values()))[self.languages[0]])
            if (self.matched_control)
            else 0
        )
        found += [("matched_control", lang, d) for d in range(draws) for lang in self.languages]
        return found

    def _resampled(self) -> tuple[_Resampled, dict[tuple[str, str | None, int], int]] | None:
        conditions = self._conditions()
        if not self.row_nll:
            return None
        rows = []
        for kind, lang, draw in conditions:
            if lang is None:
                rows.append(self.row_nll["baseline"])
            elif kind == "matched_control":
                rows.append({c: v[draw] for c, v in self.row_nll[kind][lang].items()})
            else:
                rows.append(self.row_nll[kind][lang])
        draws = _resampled(rows, self.row_tokens, self.languages, {"uncertainty": self.uncertainty})
        return None if draws is None else (draws, {key: i for i, key in enumerate(conditions)})

    def baseline_intervals(self) -> dict[str, Estimate] | None:
        """Each language's baseline perplexity with its bootstrap interval over its rows;
        None without per-row losses (results saved before them) or with fewer than MIN_RESAMPLED rows."""
        found = self._resampled()
        if found is None:
            return None
        draws, _ = found
        return {
            lang: draws.estimate(self.baseline[lang], np.exp(draws.nll[:, 0, li]), draws.rows[li])
            for li, lang in enumerate(self.languages)
        }

    def perplexity_intervals(
        self, which: str = "deactivated"
    ) -> dict[str, dict[str, Estimate]] | None:
        """Every perplexity of ``which`` (``deactivated`` or ``random_control``) with its
        bootstrap interval over the evaluated language's rows; None without per-row
        losses or with fewer than MIN_RESAMPLED rows."""
        found = self._resampled()
        if found is None:
            return None
        draws, index = found
        table = {"deactivated": self.deactivated, "random_control": self.random_control}[which]
        return {
            row: {
                column: draws.estimate(
                    table[row][column],
                    np.exp(draws.nll[:, index[(which, row, 0)], ci]),
                    draws.rows[ci],
                )
                for ci, column in enumerate(self.languages)
            }
            for row in self.languages
        }

    def change_intervals(self, which: str = "deactivated") -> dict[str, dict[str, Estimate]] | None:
        """Every cell of :meth:`relative_change` with its paired bootstrap interval over
        the evaluated language's rows (the same resampled rows for the condition and the
        baseline; ``matched_control``: the mean over the draws). None without per-row
        losses or with fewer than MIN_RESAMPLED rows."""
        found = self._resampled()
        if found is None:
            return None
        draws, index = found
        value = self.relative_change(which)
        n_draws = len(self.matched_draws()) if which == "matched_control" else 1
        cells: dict[str, dict[str, Estimate]] = {}
        for ri, row in enumerate(self.languages):
            cells[row] = {}
            for ci, column in enumerate(self.languages):
                resampled = draws.change([index[(which, row, d)] for d in range(n_draws)], ci)
                cells[row][column] = draws.estimate(float(value[ri, ci]), resampled, draws.rows[ci])
        return cells

    def own_changes(self) -> dict[str, OwnChange] | None:
        """Per language, its own perplexity change with the controls' (:class:`OwnChange`):
        the change and the differences own - control are tested against 0 by the paired
        bootstrap over rows, Holm-adjusted across the languages. None without per-row
        losses or with fewer than MIN_RESAMPLED rows."""
        found = self._resampled()
        if found is None:
            return None
        draws, index = found
        languages, rows = self.languages, draws.rows
        n_draws = len(self.matched_draws()) if self.matched_control else 0

        def diagonal(kind: str, count: int = 1) -> tuple[list[float], list[np.ndarray]]:
            """Each language's own change under ``kind``: the values and their draws."""
            values = self.relative_change(kind).diagonal().tolist()
            resampled = [
                draws.change([index[(kind, lang, d)] for d in range(count)], li)
                for li, lang in enumerate(languages)
            ]
            return values, resampled

        def tests(values: list[float], resampled: list[np.ndarray]) -> list[ChangeTest]:
            return _tests(
                [(draws.estimate(v, r, n), r) for v, r, n in zip(values, resampled, rows)]
            )

        own, own_draws = diagonal("deactivated")
        fields: list[dict[str, Any]] = [{"own": test} for test in tests(own, own_draws)]
        controls = [("uniform", "random_control", 1)] if self.random_control else []
        controls += [("matched", "matched_control", n_draws)] if n_draws else []
        for name, kind, count in controls:
            values, resampled = diagonal(kind, count)
            versus = tests(
                [o - v for o, v in zip(own, values)],
                [o - r for o, r in zip(own_draws, resampled)],
            )
            for li, field_of in enumerate(fields):
                field_of[name] = draws.estimate(values[li], resampled[li], rows[li])
                field_of[f"versus_{name}"] = versus[li]
        if n_draws:
            each = self.matched_draws().diagonal(dim1=1, dim2=2)  # [draw, language]
            for li, field_of in enumerate(fields):
                field_of["draws_as_large"] = int((each[:, li] >= own[li]).sum())
        return {
            lang: OwnChange(**field_of, draws=n_draws) for lang, field_of in zip(languages, fields)
        }

    def to_json(self) -> dict[str, Any]:
        """The fields and, with per-row losses, the intervals beside the values
        (``intervals``: ``baseline``, ``change`` per kind, ``own``)."""
        record = super().to_json()
        baseline = self.baseline_intervals()
        if baseline is None:
            return record
        kinds = ["deactivated"] + ["random_control"] * bool(self.random_control)
        kinds += ["matched_control"] * bool(self.matched_control)
        cells = {kind: self.change_intervals(kind) or {} for kind in kinds}
        ppl = {kind: self.perplexity_intervals(kind) or {} for kind in kinds[:2]}
        record["intervals"] = {
            "baseline": {lang: e.to_json() for lang, e in baseline.items()},
            "perplexity": {kind: _cells_json(table) for kind, table in ppl.items()},
            "change": {kind: _cells_json(table) for kind, table in cells.items()},
            "own": {lang: o.to_json() for lang, o in (self.own_changes() or {}).items()},
        }
        return record

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
    uncertainty: Uncertainty = Uncertainty(),
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
        uncertainty: the level, resamples and seed of the intervals (recorded; the
            per-row losses are kept, :meth:`PerplexityMatrix.own_changes`).
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
    losses = masked_perplexities(
        model,
        corpus,
        masks,
        batch_size=batch_size,
        world=world,
        progress=progress,
        points=neurons.feature_points,
    )
    ppl, rows = losses.perplexities(), _row_lists(losses, languages)
    table: dict[str, dict[str, Any]] = {"deactivated": {}, "random_control": {}}
    row_table: dict[str, Any] = {"baseline": rows[0], "deactivated": {}, "random_control": {}}
    matched_table: dict[str, dict[str, list[float]]] = {}
    for ci, (kind, lang, _) in enumerate(conditions):
        if lang is None:  # the baseline
            continue
        if kind == "matched_control":
            row = matched_table.setdefault(lang, {c: [] for c in languages})
            per_row = row_table.setdefault(kind, {}).setdefault(lang, {c: [] for c in languages})
            for c, value in zip(languages, ppl[ci].tolist()):
                row[c].append(value)
                per_row[c].append(rows[ci][c])
        else:
            table[kind][lang] = dict(zip(languages, ppl[ci].tolist()))
            row_table[kind][lang] = rows[ci]
    if not random_control:
        del row_table["random_control"]
    return PerplexityMatrix(
        languages=languages,
        baseline=dict(zip(languages, ppl[0].tolist())),
        deactivated=table["deactivated"],
        random_control=table["random_control"],
        tokens_per_language=min(losses.counts()),
        model=fingerprint(model),
        seed=seed,
        matched_control=matched_table,
        matched={"draws": len(widened), "bins": bins, "widened": widened} if widened else {},
        row_nll=row_table,
        row_tokens={
            lang: losses.tokens[li, :n].tolist()
            for li, (lang, n) in enumerate(zip(languages, losses.rows()))
        },
        uncertainty=uncertainty.to_json(),
    )


METHODS_FILE = "methods.json"


@dataclass(frozen=True)
class SpecificityInterval:
    """:meth:`MethodComparison.specificity` of one method with bootstrap intervals.

    Attributes:
        own, others: the mean relative increases of the deactivated language and of the
            others.
        score: the specificity (None when nothing got worse).
        versus_first: this score minus the first method's, tested against 0 (None for the
            first method and where a score is undefined).
    """

    own: Estimate
    others: Estimate
    score: Estimate | None
    versus_first: ChangeTest | None = None


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
        row_nll: every held-out row's summed NLL, shaped like the perplexities
            (``baseline``, ``deactivated``): the data of the intervals; empty in results
            saved before them (no intervals).
        row_tokens: evaluated language -> predicted tokens of each of its rows.
        uncertainty: how the intervals are computed
            (:class:`~mlneurons.evaluation.uncertainty.Uncertainty`).
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
    row_nll: dict[str, Any] = field(default_factory=dict)
    row_tokens: dict[str, list[int]] = field(default_factory=dict)
    uncertainty: dict[str, Any] = field(default_factory=dict)

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

    def _resampled(self) -> _Resampled | None:
        """The draws; conditions: the baseline, then each method's languages in order."""
        if not self.row_nll:
            return None
        rows = [self.row_nll["baseline"]] + [
            self.row_nll["deactivated"][method][lang]
            for method in self.methods
            for lang in self.languages
        ]
        return _resampled(rows, self.row_tokens, self.languages, {"uncertainty": self.uncertainty})

    def _nats(self, draws: _Resampled, method: str) -> np.ndarray:
        """``[sample, deactivated, evaluated]`` log-perplexity increases of ``method``."""
        first = 1 + self.methods.index(method) * len(self.languages)
        nats: np.ndarray = draws.nll[:, first : first + len(self.languages)] - draws.nll[:, None, 0]
        return nats

    def change_intervals(self, method: str) -> dict[str, dict[str, Estimate]] | None:
        """Every cell of :meth:`relative_change` with its paired bootstrap interval over the
        evaluated language's rows; None without per-row losses or with fewer than MIN_RESAMPLED rows."""
        value = self.relative_change(method)
        draws = self._resampled()
        if draws is None:
            return None
        change = np.expm1(self._nats(draws, method))
        return {
            row: {
                column: draws.estimate(float(value[ri, ci]), change[:, ri, ci], draws.rows[ci])
                for ci, column in enumerate(self.languages)
            }
            for ri, row in enumerate(self.languages)
        }

    def specificity_intervals(self) -> dict[str, SpecificityInterval] | None:
        """:meth:`specificity` with bootstrap intervals over the rows of every language
        (each language's rows resampled, the same draw for every method), and each
        method's score minus the first method's, tested against 0 (Holm across the
        methods). None without per-row losses or with fewer than MIN_RESAMPLED rows."""
        draws = self._resampled()
        if draws is None:
            return None
        n = len(self.languages)
        off = ~np.eye(n, dtype=bool)
        points = self.specificity()
        scores: dict[str, np.ndarray] = {}
        found: dict[str, tuple[Estimate, Estimate, Estimate | None]] = {}
        for method in self.methods:
            nats = self._nats(draws, method)
            change, gain = np.expm1(nats), np.clip(nats, 0, None)
            own_nats = np.diagonal(gain, axis1=1, axis2=2).mean(-1)
            others_nats = gain[:, off].mean(-1) if n > 1 else np.zeros(len(gain))
            with np.errstate(divide="ignore", invalid="ignore"):
                scores[method] = own_nats / (own_nats + others_nats)
            point = points[method]
            others = change[:, off].mean(-1) if n > 1 else np.zeros(len(gain))
            found[method] = (
                draws.estimate(cast(float, point["own"]), np.diagonal(change, 0, 1, 2).mean(-1)),
                draws.estimate(cast(float, point["others"]), others),
                None if point["score"] is None else draws.estimate(point["score"], scores[method]),
            )
        first = self.methods[0]
        compared = [
            m for m in self.methods[1:] if found[m][2] is not None and found[first][2] is not None
        ]
        family = []
        for method in compared:
            score, reference = found[method][2], found[first][2]
            assert score is not None and reference is not None  # compared only when defined
            difference = scores[method] - scores[first]
            family.append((draws.estimate(score.value - reference.value, difference), difference))
        tests = dict(zip(compared, _tests(family)))
        return {
            method: SpecificityInterval(*found[method], tests.get(method))
            for method in self.methods
        }

    def to_json(self) -> dict[str, Any]:
        """The fields and, with per-row losses, the intervals beside the values
        (``intervals``: ``change`` per method, ``specificity`` per method)."""
        record = super().to_json()
        specificity = self.specificity_intervals()
        if specificity is None:
            return record
        record["intervals"] = {
            "change": {m: _cells_json(self.change_intervals(m) or {}) for m in self.methods},
            "specificity": {method: asdict(s) for method, s in specificity.items()},
        }
        return record


def compare_methods(
    model: TransformerBridge,
    selections: dict[str, LanguageNeurons],
    corpus: MultilingualCorpus,
    *,
    batch_size: int = 8,
    world: World | None = None,
    progress: bool = True,
    uncertainty: Uncertainty = Uncertainty(),
) -> MethodComparison:
    """Deactivate each language's neurons of every selector in ``selections`` (e.g. the
    output of :func:`~mlneurons.methods.baselines.select_with` per method) and measure
    every language's held-out perplexity, all conditions in shared forward passes; the
    per-row losses are kept for the intervals (``uncertainty``: their settings,
    :meth:`MethodComparison.specificity_intervals`)."""
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
    losses = masked_perplexities(
        model,
        corpus,
        masks,
        batch_size=batch_size,
        world=world,
        progress=progress,
        points=first.feature_points,
    )
    ppl, rows = losses.perplexities(), _row_lists(losses, languages)
    deactivated: dict[str, dict[str, dict[str, float]]] = {m: {} for m in selections}
    row_table: dict[str, dict[str, Any]] = {m: {} for m in selections}
    for ci, (method, lang) in enumerate(conditions, start=1):
        deactivated[method][lang] = dict(zip(languages, ppl[ci].tolist()))
        row_table[method][lang] = rows[ci]
    return MethodComparison(
        languages=languages,
        methods=list(selections),
        baseline=dict(zip(languages, ppl[0].tolist())),
        deactivated=deactivated,
        counts={
            m: {lang: n for lang, n in sel.counts().items() if lang in languages}
            for m, sel in selections.items()
        },
        tokens_per_language=min(losses.counts()),
        model=fingerprint(model),
        constants={m: dict(sel.constants) for m, sel in selections.items()},
        row_nll={"baseline": rows[0], "deactivated": row_table},
        row_tokens={
            lang: losses.tokens[li, :n].tolist()
            for li, (lang, n) in enumerate(zip(languages, losses.rows()))
        },
        uncertainty=uncertainty.to_json(),
    )


__all__ = [
    "MIN_RESAMPLED",
    "METHODS_FILE",
    "PPL_FILE",
    "ChangeTest",
    "MethodComparison",
    "OwnChange",
    "PerplexityMatrix",
    "SpecificityInterval",
    "bootstrap_p",
    "compare_methods",
    "perplexity_matrix",
]
