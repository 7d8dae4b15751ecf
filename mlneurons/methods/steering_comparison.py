"""Residual directions against language neurons on the same questions (CLaS-Bench's scores).

Every method answers the same questions with known answers (:mod:`mlneurons.data.fact_questions`),
asked in the source language, greedily; each answer is judged three ways:

* **forcing**: it is in the target language (the offline identifier) and not degenerate
  (:func:`~mlneurons.methods.steering.is_degenerate`): CLaS-Bench's forcing rate;
* **relevance**: it names the gold object in the source or the target language
  (:func:`~mlneurons.data.fact_questions.relevant`): an offline stand-in for CLaS-Bench's
  judged relevance, stricter, since it asks for the right answer, not an answer on topic;
* **fluency**: the perplexity of the answer under the unsteered model given the prompt
  (:func:`~mlneurons.methods.steering.answer_nll`), over all answer tokens of a method.

A method's score is the harmonic mean of its forcing and relevance rates, ``2FR / (F + R)``
(0 when both are 0). Intervals: Wilson for the two rates, the percentile bootstrap over
questions for the harmonic mean and the perplexity. Every pair of methods is compared on
the same questions: forcing and relevance by the exact McNemar test with Newcombe's
paired interval, the harmonic mean and the log perplexity by a paired permutation test
(:func:`~mlneurons.evaluation.uncertainty.paired_permutation`, exact up to 14 questions)
with a bootstrap interval of the difference; Holm's adjustment across the pairs, per measure.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from numpy.typing import ArrayLike
from tqdm.auto import tqdm

from mlneurons.data.builtin_text import normalize_language
from mlneurons.data.fact_questions import FactQuestion, relevant
from mlneurons.errors import UserError
from mlneurons.evaluation.langid import identify_many
from mlneurons.evaluation.uncertainty import (
    Estimate,
    Uncertainty,
    bootstrap,
    holm,
    paired_permutation,
    paired_rates,
    wilson,
)
from mlneurons.methods.directions import LanguageDirections
from mlneurons.methods.interventions import Hooks, check_intervention, intervene
from mlneurons.methods.lape import LanguageNeurons
from mlneurons.methods.steering import (
    PROMPT_TEMPLATE,
    answer_ids,
    answer_nll,
    check_mode,
    is_degenerate,
    steering_intervention,
)
from mlneurons.models.bridge import TransformerBridge
from mlneurons.models.fingerprint import check_same_model, fingerprint
from mlneurons.models.generation import generate_answers, generation_settings
from mlneurons.results import Result
from mlneurons.stats.activation import ActivationStats

COMPARISON_FILE = "steer_compare.json"
UNSTEERED = "unsteered"
MEASURES: tuple[str, ...] = ("forcing", "relevance", "harmonic", "fluency")
"""The scores of each method, in the order of tables and plots."""
MEASURE_LABELS = {
    "forcing": "forcing rate",
    "relevance": "relevance",
    "harmonic": "harmonic mean",
    "fluency": "fluency ppl",
}


@dataclass(frozen=True)
class SteeringMethod:
    """One way of steering: a name, its family, its setting and its hooks."""

    name: str
    family: str
    """``direction``, ``neurons`` (or anything else a script names)."""
    setting: dict[str, Any]
    hooks: Hooks


@dataclass(frozen=True)
class MethodOutcome:
    """One method's answers to the questions, judged per question.

    Attributes:
        name, family, setting: the method (``unsteered`` has family ``none``).
        answers: the answers, in the questions' order.
        languages: the identified language of each.
        forced: in the target language and not degenerate.
        relevant: names the gold object in the source or target language.
        degenerate: :func:`~mlneurons.methods.steering.is_degenerate`.
        nll: summed negative log-likelihood of each answer under the unsteered model.
        tokens: its scored tokens.
        seconds: time to generate and judge.
    """

    name: str
    family: str
    setting: dict[str, Any]
    answers: list[str]
    languages: list[str]
    forced: list[bool]
    relevant: list[bool]
    degenerate: list[bool]
    nll: list[float]
    tokens: list[int]
    seconds: float = 0.0


def harmonic_mean(forcing: ArrayLike, relevance: ArrayLike) -> np.ndarray:
    """``2FR / (F + R)``, 0 where both are 0 (elementwise)."""
    f, r = np.asarray(forcing, dtype=np.float64), np.asarray(relevance, dtype=np.float64)
    total = f + r
    return np.divide(2 * f * r, total, out=np.zeros_like(total), where=total > 0)


def _columns(outcome: MethodOutcome) -> np.ndarray:
    """``[question, 4]``: forced, relevant, nll, tokens."""
    return np.column_stack([outcome.forced, outcome.relevant, outcome.nll, outcome.tokens]).astype(
        np.float64
    )


def _weighted(columns: np.ndarray, w: np.ndarray, measure: str) -> np.ndarray:
    """A measure of per-question ``columns`` under item weights ``w`` ``[..., n]``."""
    total = w.sum(-1)
    forcing = (w * columns[..., 0]).sum(-1) / total
    relevance = (w * columns[..., 1]).sum(-1) / total
    values: ArrayLike
    if measure == "forcing":
        values = forcing
    elif measure == "relevance":
        values = relevance
    elif measure == "harmonic":
        values = harmonic_mean(forcing, relevance)
    else:
        values = np.exp((w * columns[..., 2]).sum(-1) / (w * columns[..., 3]).sum(-1))
    return np.asarray(values)


def score(outcome: MethodOutcome, measure: str, how: Uncertainty = Uncertainty()) -> Estimate:
    """One measure of :data:`MEASURES` with its interval (Wilson, or bootstrap over questions)."""
    n = len(outcome.answers)
    if measure in ("forcing", "relevance"):
        hits = outcome.forced if measure == "forcing" else outcome.relevant
        return wilson(sum(hits), n, how.confidence)
    columns = _columns(outcome)
    if measure == "fluency" and not sum(outcome.tokens):
        return Estimate(math.nan, math.nan, math.nan, n, "no answer tokens", how.confidence)
    return bootstrap(lambda w: _weighted(columns, w, measure), n, how, method="bootstrap")


def compare_pair(
    a: MethodOutcome, b: MethodOutcome, measure: str, how: Uncertainty = Uncertainty()
) -> tuple[Estimate, float]:
    """``measure(a) − measure(b)`` on the same questions with its interval, and the p-value.

    Rates: Newcombe's paired interval and the exact McNemar test; the harmonic mean and the
    fluency (as the log of the perplexity ratio): the bootstrap over questions and the
    paired permutation test.
    """
    if len(a.answers) != len(b.answers):
        raise ValueError(f"{a.name} and {b.name} answered different numbers of questions")
    if measure in ("forcing", "relevance"):
        key = "forced" if measure == "forcing" else "relevant"
        test = paired_rates(getattr(b, key), getattr(a, key), how)
        return test.difference, test.p_value
    x, y = _columns(a), _columns(b)
    n = len(x)
    if measure == "fluency" and not (x[:, 3].sum() and y[:, 3].sum()):
        empty = Estimate(math.nan, math.nan, math.nan, n, "no answer tokens", how.confidence)
        return empty, 1.0  # nothing to compare: counts as no difference

    def stat(columns: np.ndarray, w: np.ndarray) -> np.ndarray:
        value = _weighted(columns, w, measure)
        return np.asarray(np.log(value) if measure == "fluency" else value)

    difference = bootstrap(lambda w: stat(x, w) - stat(y, w), n, how, method="paired bootstrap")
    ones = np.ones(n)
    p = paired_permutation(lambda c: stat(c, ones), x, y, how)
    return difference, p


@dataclass
class SteeringComparison(Result):
    """Steering methods on the same questions: per method forcing, relevance, their harmonic
    mean and fluency, with intervals, and every pair compared (Holm per measure).

    Attributes:
        source, target: the languages.
        questions: per question ``{"question", "answers", "uuid", "relation"}``.
        outcomes: one :class:`MethodOutcome` per method, the unsteered answers first.
        scores: method -> measure -> :class:`Estimate` JSON, and ``degenerate``.
        pairs: per pair ``{"a", "b", measure: {"difference", "p", "p_holm"}}``, the
            difference ``a − b`` (for fluency the log perplexity ratio).
        model: fingerprint of the model.
        settings: generation, uncertainty, the directions' layer and scale, the neurons.
    """

    FILE: ClassVar[str] = COMPARISON_FILE

    source: str
    target: str
    questions: list[dict[str, Any]]
    outcomes: list[MethodOutcome]
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)
    pairs: list[dict[str, Any]] = field(default_factory=list)
    model: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_outcomes(
        cls,
        source: str,
        target: str,
        questions: Sequence[FactQuestion],
        outcomes: list[MethodOutcome],
        *,
        how: Uncertainty = Uncertainty(),
        model: dict[str, Any] | None = None,
        settings: dict[str, Any] | None = None,
    ) -> SteeringComparison:
        """Score every method and compare every pair."""
        scores: dict[str, dict[str, Any]] = {}
        for outcome in outcomes:
            row: dict[str, Any] = {m: score(outcome, m, how).to_json() for m in MEASURES}
            row["degenerate"] = sum(outcome.degenerate) / len(outcome.degenerate)
            scores[outcome.name] = row
        pairs: list[dict[str, Any]] = [
            {"a": a.name, "b": b.name} for a, b in itertools.combinations(outcomes, 2)
        ]
        for measure in MEASURES:
            found = [
                compare_pair(a, b, measure, how) for a, b in itertools.combinations(outcomes, 2)
            ]
            adjusted = holm([p for _, p in found])
            for pair, (difference, p), p_holm in zip(pairs, found, adjusted):
                pair[measure] = {"difference": difference.to_json(), "p": p, "p_holm": p_holm}
        return cls(
            source=source,
            target=target,
            questions=[dataclasses.asdict(q) for q in questions],
            outcomes=outcomes,
            scores=scores,
            pairs=pairs,
            model=dict(model or {}),
            settings={**(settings or {}), "uncertainty": how.to_json()},
        )

    @classmethod
    def from_json(
        cls, data: dict[str, Any], tensors: dict[str, Any] | None = None
    ) -> SteeringComparison:
        outcomes = [MethodOutcome(**o) for o in data["outcomes"]]
        return super().from_json({**data, "outcomes": outcomes})

    @property
    def methods(self) -> list[str]:
        """The methods' names, the unsteered answers first."""
        return [o.name for o in self.outcomes]

    def outcome(self, name: str) -> MethodOutcome:
        for outcome in self.outcomes:
            if outcome.name == name:
                return outcome
        raise UserError(f"no method {name!r}; these are {', '.join(self.methods)}")

    def score(self, name: str, measure: str) -> Estimate:
        """The saved :class:`Estimate` of one method and measure."""
        self.outcome(name)
        return Estimate.from_json(self.scores[name][measure])

    def best(self, measure: str = "harmonic") -> str:
        """The steered method with the highest score (ties: the first), lowest for fluency."""
        steered = [o.name for o in self.outcomes if o.name != UNSTEERED] or self.methods
        sign = -1 if measure == "fluency" else 1
        values = {m: self.score(m, measure).value for m in steered}
        return max(
            steered, key=lambda m: sign * (values[m] if math.isfinite(values[m]) else -1e300)
        )

    def pair(self, a: str, b: str) -> dict[str, Any]:
        """The comparison of ``a`` and ``b`` (difference ``a − b``, whichever order was saved)."""
        for pair in self.pairs:
            if (pair["a"], pair["b"]) == (a, b):
                return pair
            if (pair["a"], pair["b"]) == (b, a):
                flipped: dict[str, Any] = {"a": a, "b": b}
                for measure in MEASURES:
                    d = Estimate.from_json(pair[measure]["difference"])
                    mirrored = dataclasses.replace(d, value=-d.value, lo=-d.hi, hi=-d.lo)
                    flipped[measure] = {**pair[measure], "difference": mirrored.to_json()}
                return flipped
        raise UserError(f"no comparison of {a!r} and {b!r}; methods: {', '.join(self.methods)}")

    def significant(self, measure: str, alpha: float | None = None) -> list[tuple[str, str]]:
        """The pairs whose ``measure`` differs at Holm-adjusted level ``alpha`` (default:
        1 − the intervals' confidence)."""
        level = 1 - Uncertainty.of(self.settings).confidence if alpha is None else alpha
        return [(p["a"], p["b"]) for p in self.pairs if p[measure]["p_holm"] < level]


def steering_methods(
    model: TransformerBridge,
    *,
    source: str,
    target: str,
    directions: LanguageDirections | None = None,
    direction_alpha: float = 1.0,
    neurons: LanguageNeurons | None = None,
    stats: ActivationStats | None = None,
    neuron_modes: Sequence[str] = ("replace", "add", "diffmean"),
    neuron_alpha: float = 1.0,
    source_value: float | None = 0.0,
) -> list[SteeringMethod]:
    """The methods to compare: each direction of ``directions`` added with ``direction_alpha``
    (:meth:`LanguageDirections.hooks`), and each neuron steering mode with ``neuron_alpha``
    (:func:`~mlneurons.methods.steering.steering_intervention`, the source language's own
    neurons set to ``source_value``; None leaves them).

    Raises:
        UserError: directions of other languages or another model, neuron modes without
            neurons and statistics, an unknown mode, or ``scale`` with α = 1 (no change).
    """
    methods: list[SteeringMethod] = []
    if directions is not None:
        if (directions.source, directions.target) != (source, target):
            raise UserError(
                f"the directions go from {directions.source!r} to {directions.target!r}, "
                f"not from {source!r} to {target!r}"
            )
        check_same_model(directions.model, model, what="the directions")
        for name in directions.methods:
            setting = {"alpha": float(direction_alpha), "point": directions.point}
            methods.append(
                SteeringMethod(name, "direction", setting, directions.hooks(name, direction_alpha))
            )
    modes = [check_mode(m) for m in dict.fromkeys(neuron_modes)]
    if modes and (neurons is None or stats is None):
        raise UserError("neuron steering modes need the LAPE neurons and their statistics")
    if "scale" in modes and neuron_alpha == 1:
        raise UserError("mode 'scale' with alpha 1 changes nothing; give another neuron alpha")
    for mode in modes:
        assert neurons is not None and stats is not None
        hooks = steering_intervention(
            neurons, stats, source=source, target=target, mode=mode, alpha=neuron_alpha,
            source_value=source_value, model=model,
        )  # fmt: skip
        setting = {
            "alpha": float(neuron_alpha),
            "n_neurons": len(neurons[target]),
            "source_value": source_value,
        }
        methods.append(SteeringMethod(f"neurons-{mode}", "neurons", setting, hooks))
    if not methods:
        raise UserError("nothing to compare: give directions or neuron modes")
    for method in methods:
        check_intervention(model, method.hooks)
    return methods


def compare_steering(
    model: TransformerBridge,
    questions: Sequence[FactQuestion],
    methods: Sequence[SteeringMethod],
    *,
    source: str,
    target: str,
    languages: Sequence[str] | None = None,
    template: str = PROMPT_TEMPLATE,
    max_new_tokens: int = 16,
    batch_size: int = 8,
    identify: Callable[[list[str]], list[str]] | None = None,
    how: Uncertainty = Uncertainty(),
    settings: dict[str, Any] | None = None,
    progress: bool = True,
) -> SteeringComparison:
    """Answer ``questions`` unsteered and with each method; score and compare them.

    Args:
        model: a causal TransformerBridge.
        questions: questions in ``source`` with their gold objects
            (:func:`~mlneurons.data.fact_questions.fact_questions`).
        methods: from :func:`steering_methods` (or any named hooks).
        source, target: the languages.
        languages: candidates of the language identifier (default: source and target).
        identify: maps answers to language codes (default: the offline identifier).
        how: the intervals' level, resamples and seed.
        settings: recorded with the result (e.g. the directions' layer).

    Raises:
        UserError: no questions, no methods, repeated names or bad generation options,
            before anything is generated.
    """
    if not questions:
        raise UserError(f"no questions given for source language {source!r}")
    if "{question}" not in template:
        raise UserError(f"template {template!r} has no {{question}} slot")
    names = [UNSTEERED, *(m.name for m in methods)]
    if len(set(names)) != len(names):
        raise UserError(f"method names must be unique (and not {UNSTEERED!r}): {names}")
    if not methods:
        raise UserError("nothing to compare: give at least one steering method")
    for name, value in (("max_new_tokens", max_new_tokens), ("batch_size", batch_size)):
        if value < 1:
            raise UserError(f"{name} must be at least 1, got {value}")
    for method in methods:
        check_intervention(model, method.hooks)
    langs = list(dict.fromkeys(languages if languages is not None else (source, target)))
    if identify is None:
        identify_many([], languages=langs)  # unsupported codes raise now
        langs = [normalize_language(c, langs) for c in langs]
        source, target = (normalize_language(c, langs) for c in (source, target))
        chosen = list(langs)

        def identify(texts: list[str]) -> list[str]:
            return identify_many(texts, languages=chosen)

    prompts = [template.format(question=q.question.strip()) for q in questions]
    options: dict[str, Any] = dict(
        max_new_tokens=max_new_tokens, batch_size=batch_size, progress=False
    )
    runs = [SteeringMethod(UNSTEERED, "none", {}, []), *methods]
    answered = []
    with torch.inference_mode():
        for method in tqdm(runs, desc="steer-compare", disable=not progress):
            began = time.perf_counter()
            with intervene(model, method.hooks):
                answers = generate_answers(model, prompts, **options)
            answered.append((method, answers, time.perf_counter() - began))
        outcomes = []
        for method, answers, seconds in answered:
            began = time.perf_counter()
            found = list(identify(list(answers)))
            degenerate = [is_degenerate(a, answer_ids(model.tokenizer, a)) for a in answers]
            nll, counts = answer_nll(model, prompts, answers, batch_size=batch_size)
            outcomes.append(
                MethodOutcome(
                    name=method.name,
                    family=method.family,
                    setting=dict(method.setting),
                    answers=list(answers),
                    languages=found,
                    forced=[lang == target and not d for lang, d in zip(found, degenerate)],
                    relevant=[relevant(a, q) for a, q in zip(answers, questions)],
                    degenerate=degenerate,
                    nll=[float(x) for x in nll.tolist()],
                    tokens=[int(x) for x in counts.tolist()],
                    seconds=seconds + time.perf_counter() - began,
                )
            )
    return SteeringComparison.from_outcomes(
        source,
        target,
        questions,
        outcomes,
        how=how,
        model=fingerprint(model),
        settings={
            **generation_settings(template, max_new_tokens),
            "languages": langs,
            "n_questions": len(questions),
            **(settings or {}),
        },
    )


__all__ = [
    "COMPARISON_FILE",
    "MEASURES",
    "MEASURE_LABELS",
    "UNSTEERED",
    "MethodOutcome",
    "SteeringComparison",
    "SteeringMethod",
    "compare_pair",
    "compare_steering",
    "harmonic_mean",
    "score",
    "steering_methods",
]
