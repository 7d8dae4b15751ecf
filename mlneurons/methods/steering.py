"""Output-language steering with language neurons (Tang et al. 2024, section 5).

Ask questions in a source language, generate greedily with the target language's
neurons activated (and optionally the source language's deactivated), identify the
language of every answer offline, and compare how often the answer is in the
target language before and after.

The steering modes of "language arithmetics" (Gurgurov et al. 2025) act on the
act_fn output ``a`` of the target language's neurons (:func:`steering_intervention`);
:func:`steering_sweep` runs a grid of modes, strengths and LAPE budgets in one call,
and :func:`fallback_curve` deactivates growing shares of one language's neurons to
see which language the model falls back to.
"""

from __future__ import annotations

import dataclasses
import math
import time
import unicodedata
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, get_args

import numpy as np
import torch
from jaxtyping import Float, Int
from tqdm.auto import tqdm

from mlneurons.config import rate
from mlneurons.data.builtin_text import normalize_language
from mlneurons.errors import UserError
from mlneurons.evaluation.langid import UNKNOWN, identify_many, supported_languages
from mlneurons.evaluation.langid import shares as language_shares
from mlneurons.evaluation.uncertainty import (
    CONFIDENCE,
    Estimate,
    PairedTest,
    Uncertainty,
    bootstrap,
    holm,
    paired_rates,
    wilson,
)
from mlneurons.methods.interventions import (
    Hooks,
    activate,
    check_intervention,
    deactivate,
    intervene,
    scale,
)
from mlneurons.methods.lape import LanguageNeurons, lape_entropy, select
from mlneurons.models.bridge import TransformerBridge
from mlneurons.models.fingerprint import check_same_model, fingerprint
from mlneurons.models.generation import generate_answers, generation_settings
from mlneurons.models.scoring import token_logprobs
from mlneurons.results import Result
from mlneurons.stats.activation import ActivationStats
from mlneurons.stats.distributed import gather
from mlneurons.world import World

STEERING_FILE = "steering.json"
PROMPT_TEMPLATE = "Q: {question}\nA:"
"""The question-answer format of the LAPE reference's generation script."""


@dataclass
class SteeringResult(Result):
    """Answers before and after an intervention, with their identified languages.

    Attributes:
        source: language of the questions.
        target: language the intervention steers towards.
        accuracy_before: share of answers in ``target`` without intervention.
        accuracy_after: share of answers in ``target`` with it.
        samples: per question ``{"prompt", "before", "after", "lang_before", "lang_after"}``.
        model: fingerprint of the model.
        settings: how the answers were generated and steered.
    """

    FILE: ClassVar[str] = STEERING_FILE

    source: str
    target: str
    accuracy_before: float
    accuracy_after: float
    samples: list[dict[str, str]]
    model: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_samples(
        cls,
        source: str,
        target: str,
        samples: list[dict[str, str]],
        *,
        model: dict[str, Any],
        settings: dict[str, Any],
    ) -> SteeringResult:
        """The result of answered samples: accuracy = share of answers identified as ``target``."""
        n = len(samples)
        return cls(
            source=source,
            target=target,
            accuracy_before=sum(s["lang_before"] == target for s in samples) / n,
            accuracy_after=sum(s["lang_after"] == target for s in samples) / n,
            samples=samples,
            model=model,
            settings=settings,
        )

    def source_rate(self, which: str = "after") -> float:
        """Share of answers still in the source language."""
        key = f"lang_{which}"
        return sum(s[key] == self.source for s in self.samples) / len(self.samples)

    @property
    def uncertainty(self) -> Uncertainty:
        """The interval settings recorded (the defaults for results saved before them)."""
        return Uncertainty.of(self.settings)

    def test(self, language: str | None = None) -> PairedTest:
        """Steering off vs on over the same questions for the share of answers in
        ``language`` (default: the target): Wilson intervals of both rates, the paired
        bootstrap interval of the difference and the exact McNemar test."""
        language = self.target if language is None else language
        before = [s["lang_before"] == language for s in self.samples]
        after = [s["lang_after"] == language for s in self.samples]
        return paired_rates(before, after, self.uncertainty)

    def shares(self, which: str = "after") -> dict[str, Estimate]:
        """Every identified language's share of the answers ``before`` or ``after``
        steering, with its Wilson interval."""
        labels = [s[f"lang_{which}"] for s in self.samples]
        return language_shares(labels, confidence=self.uncertainty.confidence)

    def to_json(self) -> dict[str, Any]:
        """The fields and, under ``intervals``, the paired tests of the target and the
        source rates (before, after, difference: value, lo, hi, n, method)."""
        tests = {"target": self.test(), "source": self.test(self.source)}
        return {
            **super().to_json(),
            "intervals": {key: test.to_json() for key, test in tests.items()},
        }


def steer(
    model: TransformerBridge,
    questions: Sequence[str],
    *,
    source: str,
    target: str,
    intervention: Hooks,
    languages: Sequence[str] | None = None,
    template: str = PROMPT_TEMPLATE,
    max_new_tokens: int = 32,
    batch_size: int = 8,
    identify: Callable[[list[str]], list[str]] | None = None,
    world: World | None = None,
    progress: bool = True,
    uncertainty: Uncertainty = Uncertainty(),
) -> SteeringResult:
    """Generate answers with and without ``intervention`` and measure the target-language rate.

    Args:
        model: a causal TransformerBridge.
        questions: questions in the ``source`` language.
        source: their language (ISO 639-1).
        target: the language to steer to.
        intervention: hooks, e.g. ``activate(neurons[target], stats.mean_activation(target),
            model=model) + deactivate(neurons[source])``.
        languages: candidate languages of the language identifier (default: all it knows).
        template: prompt format with a ``{question}`` slot.
        identify: maps answers to language codes (default: the offline identifier of
            :mod:`mlneurons.evaluation.langid`, restricted to ``languages``).
        world: under torchrun, each rank answers the questions ``[rank::size]`` and rank 0
            gets every answer, in the questions' order (the other ranks get their own).
        uncertainty: the level and bootstrap of the intervals and paired tests
            (:meth:`SteeringResult.test`), recorded in ``settings``.
    """
    if world is not None:
        mine = steer(
            model, questions[world.rank :: world.size], source=source, target=target,
            intervention=intervention, languages=languages, template=template,
            max_new_tokens=max_new_tokens, batch_size=batch_size, identify=identify,
            progress=progress, uncertainty=uncertainty,
        )  # fmt: skip
        parts = gather([mine.samples], world)
        if world.rank != 0:
            return mine
        samples = [parts[i % world.size][i // world.size] for i in range(len(questions))]
        return SteeringResult.from_samples(
            mine.source, mine.target, samples, model=mine.model, settings=mine.settings
        )
    if not questions:
        raise UserError(f"no questions given for source language {source!r}")
    if "{question}" not in template:
        raise UserError(f"template {template!r} has no {{question}} slot")
    check_intervention(model, intervention)
    if identify is None:  # unknown codes raise now, not after generating
        supported = supported_languages()
        if languages is not None:
            identify_many([], languages=languages)
            languages = [normalize_language(code, supported) for code in languages]
        source, target = (normalize_language(c, languages or supported) for c in (source, target))
    prompts = [template.format(question=q.strip()) for q in questions]
    options: dict[str, Any] = dict(
        max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress
    )
    with torch.inference_mode():
        before = generate_answers(model, prompts, **options)
        with intervene(model, intervention):
            after = generate_answers(model, prompts, **options)
    identify = identify or (lambda texts: identify_many(texts, languages=languages))
    lang_before, lang_after = identify(before), identify(after)
    samples = [
        {"prompt": p, "before": b, "after": a, "lang_before": lb, "lang_after": la}
        for p, b, a, lb, la in zip(prompts, before, after, lang_before, lang_after)
    ]
    return SteeringResult.from_samples(
        source,
        target,
        samples,
        model=fingerprint(model),
        settings={
            **generation_settings(template, max_new_tokens),
            "languages": list(languages or []),
            "uncertainty": uncertainty.to_json(),
        },
    )


SteeringMode = Literal["replace", "add", "diffmean", "scale"]
"""The steering modes on the act_fn output ``a`` of the target language's neurons, with
μ_t the target language's mean activation (:meth:`ActivationStats.mean_activation`):

* ``replace``: a ← α·μ_t (α = 1 is the replacement of Tang et al. 2024);
* ``add``: a ← a + α·μ_t (the additive "language arithmetics" of Gurgurov et al. 2025);
* ``diffmean``: a ← a + α·(μ_t − mean of μ over the statistics' other languages);
* ``scale``: a ← α·a (multiplicative language arithmetics).
"""
STEERING_MODES: tuple[str, ...] = get_args(SteeringMode)

DEFAULT_ALPHAS: dict[str, tuple[float, ...]] = {
    "replace": (0.5, 1.0),
    "add": (0.5, 1.0),
    "diffmean": (0.5, 1.0),
    "scale": (2.0, 5.0),
}
"""Strengths α a sweep tries per mode when none are given: on Gemma 3 270M (es→zh),
α = 3 made most answers degenerate for replace, add and diffmean; scaling by 2 did nothing."""

SWEEP_FILE = "steering_sweep.json"
FALLBACK_FILE = "fallback.json"
FallbackOrder = Literal["lape", "probability", "random"]
"""How a fallback curve ranks a language's neurons (:func:`fallback_order`)."""
FALLBACK_ORDERS: tuple[str, ...] = get_args(FallbackOrder)
DEGENERATE = "degenerate"
"""The category of degenerate answers in a fallback distribution (see :func:`is_degenerate`)."""


def check_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`STEERING_MODES`; else a UserError naming them."""
    if mode not in STEERING_MODES:
        raise UserError(f"unknown steering mode {mode!r}; valid modes: {', '.join(STEERING_MODES)}")
    return mode


def steering_values(
    stats: ActivationStats, target: str, mode: str = "replace"
) -> Float[torch.Tensor, "layer neuron"]:
    """The per-neuron steering vector before α: μ_target, or for ``diffmean``
    μ_target − the mean of μ over the statistics' other languages (``scale`` needs none
    and gets μ_target)."""
    check_mode(mode)
    target = normalize_language(target, stats.languages)
    means = stats.mean_activations
    i = stats.index(target)
    if mode != "diffmean":
        return means[i]
    if len(stats.languages) < 2:
        raise UserError(
            f"diffmean needs statistics of at least two languages; these have {stats.languages}"
        )
    others = torch.cat([means[:i], means[i + 1 :]]).mean(0)
    return means[i] - others


def steering_intervention(
    neurons: LanguageNeurons,
    stats: ActivationStats,
    *,
    source: str,
    target: str,
    mode: str = "replace",
    alpha: float = 1.0,
    source_value: float | None = None,
    model: TransformerBridge,
) -> Hooks:
    """The hooks of one steering setting (language arithmetics, Gurgurov et al. 2025).

    The target language's neurons are steered by ``mode`` (see :data:`STEERING_MODES`)
    with strength ``alpha``, at every position, decode steps included.

    Args:
        neurons: LAPE neurons with ``target`` (and ``source`` when ``source_value`` is set).
        stats: the statistics giving the mean activations μ.
        source: the language of the prompts.
        target: the language to steer to.
        mode: ``replace``, ``add``, ``diffmean`` or ``scale``.
        alpha: the strength α.
        source_value: when set, the source language's own neurons (those the target does
            not share) are set to this constant: 0 is LAPE deactivation.
        model: the model the hooks are for.

    Raises:
        UserError: an unknown mode or language, or neurons of another model.
    """
    check_mode(mode)
    neurons.check_fits(model)
    target = normalize_language(target, neurons.languages)
    normalize_language(target, stats.languages)
    points = neurons.feature_points  # dictionary features; empty for MLP neurons
    if mode == "scale":
        hooks = scale(neurons[target], alpha, model=model, points=points)
    else:
        values = alpha * steering_values(stats, target, mode)
        hooks = activate(neurons[target], values, model=model, add=mode != "replace", points=points)
    if source_value is not None:
        own = neurons.difference(source, target)
        if source_value == 0:
            hooks = hooks + deactivate(own, model=model, points=points)
        else:
            hooks = hooks + activate(own, float(source_value), model=model, points=points)
    return hooks


def answer_ids(tokenizer: Any, answer: str) -> list[int]:
    """The tokens of an answer as continuation of its prompt: ``" " + answer``, no specials."""
    if not answer:
        return []
    return list(tokenizer(" " + answer, add_special_tokens=False)["input_ids"])


def answer_nll(
    model: TransformerBridge,
    prompts: Sequence[str],
    answers: Sequence[str],
    *,
    batch_size: int = 8,
) -> tuple[Float[torch.Tensor, " n"], Int[torch.Tensor, " n"]]:
    """Summed negative log-likelihood (natural log) of each answer given its prompt.

    The prompt is tokenised as for generation (special tokens included), the answer
    by :func:`answer_ids`; only the answer's tokens are scored. Hooks attached to
    ``model`` apply, so call it outside interventions to score under the unsteered model.

    Returns:
        ``(nll, tokens)``: per answer the summed NLL and the number of scored tokens
        (0 and 0 for an empty answer).
    """
    if len(prompts) != len(answers):
        raise UserError(f"{len(prompts)} prompts but {len(answers)} answers")
    if batch_size < 1:
        raise UserError(f"batch_size must be at least 1, got {batch_size}")
    tokenizer = model.tokenizer
    rows, starts = [], []
    for prompt, answer in zip(prompts, answers):
        ids = list(tokenizer(prompt)["input_ids"])
        if not ids:
            raise UserError(f"prompt {prompt!r} has no tokens to condition the answer on")
        rows.append(ids + answer_ids(tokenizer, answer))
        starts.append(len(ids))
    nll = torch.zeros(len(rows), dtype=torch.float64)
    counts = torch.tensor([len(r) - s for r, s in zip(rows, starts)], dtype=torch.long)
    scored = [k for k in range(len(rows)) if counts[k] > 0]
    scores = token_logprobs(
        model,
        [rows[k] for k in scored],
        batch_size=batch_size,
        score_from=[starts[k] for k in scored],
    )
    for k, values in zip(scored, scores.logprobs):
        nll[k] = -values.double().sum()
    return nll, counts


def is_degenerate(text: str, ids: Sequence[int]) -> bool:
    """Whether an answer is degenerate: empty or without any letter, or one token makes
    up at least half of an answer of at least 4 tokens (``ids``, see :func:`answer_ids`)."""
    if not any(unicodedata.category(ch).startswith("L") for ch in text):
        return True
    return len(ids) >= 4 and 2 * max(Counter(ids).values()) >= len(ids)


def _fluency(nll: torch.Tensor, counts: torch.Tensor) -> float | None:
    """exp(total NLL / total tokens) over all scored answer tokens; None without tokens."""
    total = int(counts.sum())
    return math.exp(float(nll.sum()) / total) if total else None


def _judge(
    model: TransformerBridge,
    answers: list[str],
    identify: Callable[[list[str]], list[str]],
) -> tuple[list[str], list[bool]]:
    """Identified language and degeneracy of each answer."""
    langs = list(identify(list(answers)))
    degenerate = [is_degenerate(a, answer_ids(model.tokenizer, a)) for a in answers]
    return langs, degenerate


@dataclass(frozen=True)
class AnswerSample:
    """One generated answer as a sweep or fallback curve keeps it."""

    prompt: str
    answer: str
    lang: str
    degenerate: bool


def _samples(
    prompts: list[str], answers: list[str], langs: list[str], degenerate: list[bool], n: int
) -> tuple[AnswerSample, ...]:
    return tuple(AnswerSample(*sample) for sample in zip(prompts, answers, langs, degenerate))[:n]


@dataclass(frozen=True, kw_only=True)
class SweepPoint:
    """One steering setting of a sweep and its numbers (the unsteered baseline has no setting).

    Attributes:
        mode, alpha, top_rate: the setting (None on the baseline).
        n_neurons: target neurons steered; n_source_neurons: source neurons set to the
            sweep's ``source_value``.
        target_rate, source_rate: shares of answers in the target (source) language that
            are not degenerate (:func:`is_degenerate`).
        degenerate_rate, empty_rate: shares of degenerate and of empty answers.
        fluency_ppl: perplexity of the answers under the unsteered model given the
            prompt; None when no answer has a token.
        answer_tokens: answer tokens scored for ``fluency_ppl``.
        samples: the first few answers.
        seconds: time to generate and measure.
        counts: the raw counts of the rates: ``n`` answers, of which ``target``,
            ``source``, ``degenerate``, ``empty`` (empty in files saved before intervals).
        labels: per question, the answer's identified language or ``"degenerate"``
            (the outcomes paired tests compare; empty in older files).
        nll, tokens: per question, the answer's summed NLL under the unsteered model and
            its scored tokens (the items the fluency's bootstrap resamples).
    """

    SETTING: ClassVar[tuple[str, ...]] = (
        "mode",
        "alpha",
        "top_rate",
        "n_neurons",
        "n_source_neurons",
    )

    mode: str | None = None
    alpha: float | None = None
    top_rate: float | None = None
    n_neurons: int | None = None
    n_source_neurons: int | None = None
    target_rate: float
    source_rate: float
    degenerate_rate: float
    empty_rate: float
    fluency_ppl: float | None
    answer_tokens: int
    samples: tuple[AnswerSample, ...] = ()
    seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    labels: tuple[str, ...] = ()
    nll: tuple[float, ...] = ()
    tokens: tuple[int, ...] = ()

    RATES: ClassVar[dict[str, str]] = {
        "target_rate": "target",
        "source_rate": "source",
        "degenerate_rate": "degenerate",
        "empty_rate": "empty",
    }
    """Each rate and the key of its count in ``counts``."""

    def rate(self, measure: str, confidence: float = CONFIDENCE) -> Estimate | None:
        """A rate of :attr:`RATES` with its Wilson interval; None without raw counts."""
        if not self.counts.get("n"):
            return None
        return wilson(self.counts[self.RATES[measure]], self.counts["n"], confidence)

    def fluency(self, how: Uncertainty = Uncertainty()) -> Estimate | None:
        """``fluency_ppl`` with its bootstrap interval over the questions (the ratio of
        summed NLL to tokens resampled together); None without per-question data or tokens."""
        if not self.tokens or not sum(self.tokens):
            return None
        nll, tokens = np.asarray(self.nll), np.asarray(self.tokens, dtype=np.float64)
        return bootstrap(
            lambda w: np.exp((w @ nll) / (w @ tokens)),
            len(tokens),
            how,
            method="bootstrap over questions",
        )

    def intervals(self, how: Uncertainty = Uncertainty()) -> dict[str, Any]:
        """Every rate's and the fluency's interval as JSON (empty without raw counts)."""
        found: dict[str, Estimate | None] = {m: self.rate(m, how.confidence) for m in self.RATES}
        found["fluency_ppl"] = self.fluency(how)
        return {key: e.to_json() for key, e in found.items() if e is not None}

    def to_json(self) -> dict[str, Any]:
        """The saved dict; the baseline's has no setting keys."""
        data = dataclasses.asdict(self)
        if self.mode is None:
            for key in self.SETTING:
                del data[key]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SweepPoint:
        samples = tuple(AnswerSample(**sample) for sample in data.get("samples", ()))
        names = {f.name for f in dataclasses.fields(cls)} - {"samples"}
        kept = {k: v for k, v in data.items() if k in names}
        for key in ("labels", "nll", "tokens"):
            kept[key] = tuple(kept.get(key, ()))
        return cls(**kept, samples=samples)


def _measure(
    model: TransformerBridge,
    prompts: list[str],
    answers: list[str],
    *,
    source: str,
    target: str,
    identify: Callable[[list[str]], list[str]],
    batch_size: int,
    n_samples: int,
) -> SweepPoint:
    """The sweep's numbers for one set of answers (scored under ``model`` as it is hooked)."""
    langs, degenerate = _judge(model, answers, identify)
    nll, tokens = answer_nll(model, prompts, answers, batch_size=batch_size)
    labels = tuple(DEGENERATE if d else lang for lang, d in zip(langs, degenerate))
    n = len(answers)
    counts = {
        "n": n,
        "target": labels.count(target),
        "source": labels.count(source),
        "degenerate": sum(degenerate),
        "empty": sum(not a.strip() for a in answers),
    }
    return SweepPoint(
        target_rate=counts["target"] / n,
        source_rate=counts["source"] / n,
        degenerate_rate=counts["degenerate"] / n,
        empty_rate=counts["empty"] / n,
        fluency_ppl=_fluency(nll, tokens),
        answer_tokens=int(tokens.sum()),
        samples=_samples(prompts, answers, langs, degenerate, n_samples),
        counts=counts,
        labels=labels,
        nll=tuple(nll.tolist()),
        tokens=tuple(int(t) for t in tokens.tolist()),
    )


@dataclass
class SteeringSweep(Result):
    """A grid of steering settings (mode, α, LAPE top rate), each measured on the same questions.

    Attributes:
        source: language of the questions.
        target: language steered to.
        languages: candidate languages of the language identifier.
        baseline: the unsteered answers' numbers (a :class:`SweepPoint` without setting).
        points: one :class:`SweepPoint` per setting.
        model: fingerprint of the model.
        settings: generation settings, ``source_value``, number of questions.
    """

    FILE: ClassVar[str] = SWEEP_FILE

    source: str
    target: str
    languages: list[str]
    baseline: SweepPoint
    points: list[SweepPoint]
    model: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The fields; each point (and the baseline) with its ``intervals``: the rates'
        Wilson intervals, the fluency's bootstrap interval and, for a setting, the paired
        test against the unsteered answers (``versus_unsteered``, with ``holm_p`` over the
        sweep's settings) and the fluency change (``fluency_ratio``)."""
        how = self.uncertainty
        adjusted = self.adjusted_p_values()
        points = []
        for point, holm_p in zip(self.points, adjusted):
            intervals = point.intervals(how)
            test, ratio = self.test(point), self.fluency_change(point)
            if test is not None:
                intervals["versus_unsteered"] = {**test.to_json(), "holm_p": holm_p}
            if ratio is not None:
                intervals["fluency_ratio"] = ratio.to_json()
            points.append({**point.to_json(), "intervals": intervals})
        baseline = {**self.baseline.to_json(), "intervals": self.baseline.intervals(how)}
        return {**dataclasses.asdict(self), "baseline": baseline, "points": points}

    @property
    def uncertainty(self) -> Uncertainty:
        """The interval settings recorded (the defaults for results saved before them)."""
        return Uncertainty.of(self.settings)

    def hits(self, point: SweepPoint, language: str | None = None) -> list[bool] | None:
        """Per question, whether ``point``'s answer is in ``language`` (default: the
        target) and not degenerate; None in files saved without per-question labels."""
        language = self.target if language is None else language
        return [label == language for label in point.labels] if point.labels else None

    def test(self, point: SweepPoint, versus: SweepPoint | None = None) -> PairedTest | None:
        """``versus`` (default: the unsteered answers) against ``point`` on the same
        questions, for the target rate: exact McNemar and the paired bootstrap interval of
        the difference. None without per-question labels."""
        before, after = self.hits(versus or self.baseline), self.hits(point)
        if before is None or after is None or len(before) != len(after):
            return None
        return paired_rates(before, after, self.uncertainty)

    def adjusted_p_values(self) -> list[float | None]:
        """Per setting, the McNemar p-value of :meth:`test` Holm-adjusted over the sweep's
        settings (None where there is no test)."""
        tests = [self.test(p) for p in self.points]
        adjusted = iter(holm([t.p_value for t in tests if t is not None]))
        return [None if t is None else next(adjusted) for t in tests]

    def fluency_change(
        self, point: SweepPoint, versus: SweepPoint | None = None
    ) -> Estimate | None:
        """``point``'s fluency perplexity divided by that of ``versus`` (default: the
        unsteered answers), with the paired bootstrap interval over the questions; None
        without per-question data or without answer tokens."""
        base = versus or self.baseline
        if not (point.tokens and base.tokens and sum(point.tokens) and sum(base.tokens)):
            return None
        if len(point.tokens) != len(base.tokens):
            return None
        a_nll, a_tok = np.asarray(point.nll), np.asarray(point.tokens, dtype=np.float64)
        b_nll, b_tok = np.asarray(base.nll), np.asarray(base.tokens, dtype=np.float64)
        return bootstrap(
            lambda w: np.exp((w @ a_nll) / (w @ a_tok) - (w @ b_nll) / (w @ b_tok)),
            len(a_tok),
            self.uncertainty,
            method="paired bootstrap over questions",
        )

    @classmethod
    def from_json(
        cls, data: dict[str, Any], tensors: dict[str, Any] | None = None
    ) -> SteeringSweep:
        points = {
            "baseline": SweepPoint.from_json(data["baseline"]),
            "points": [SweepPoint.from_json(p) for p in data["points"]],
        }
        return super().from_json({**data, **points})

    @property
    def modes(self) -> list[str]:
        """The modes of the sweep, in order."""
        return list(dict.fromkeys(p.mode for p in self.points if p.mode is not None))

    def ranked(self, mode: str, *, max_degenerate: float = 0.5) -> list[SweepPoint]:
        """The settings of ``mode`` from best to worst: highest target rate, ties broken
        by lower fluency perplexity, then by smaller α; settings where more than
        ``max_degenerate`` of the answers are degenerate are left out."""
        check_mode(mode)
        candidates = [
            p for p in self.points if p.mode == mode and p.degenerate_rate <= max_degenerate
        ]
        return sorted(
            candidates,
            key=lambda p: (
                -p.target_rate,
                math.inf if p.fluency_ppl is None else p.fluency_ppl,
                p.alpha,
            ),
        )

    def best(self, mode: str, *, max_degenerate: float = 0.5) -> SweepPoint | None:
        """The first setting of :meth:`ranked`; None when no setting qualifies. Whether it
        is distinguishable from the next one is :meth:`versus_runner_up`'s question."""
        ranked = self.ranked(mode, max_degenerate=max_degenerate)
        return ranked[0] if ranked else None

    def versus_runner_up(
        self, mode: str, *, max_degenerate: float = 0.5
    ) -> tuple[SweepPoint, PairedTest] | None:
        """The second setting of :meth:`ranked` and the paired test of its target rate
        against the best's (runner-up before, best after): when the test is not
        significant, the sweep cannot tell the two apart. None with fewer than two
        settings or without per-question labels."""
        ranked = self.ranked(mode, max_degenerate=max_degenerate)
        if len(ranked) < 2:
            return None
        test = self.test(ranked[0], versus=ranked[1])
        return None if test is None else (ranked[1], test)

    def summary(self) -> str:
        """One line per setting (and the baseline): rates in %, fluency, neurons, seconds."""

        def line(name: str, p: SweepPoint) -> str:
            ppl = "-" if p.fluency_ppl is None else f"{p.fluency_ppl:.1f}"
            return (
                f"{name:<28} {self.target} {p.target_rate:>4.0%}  {self.source} "
                f"{p.source_rate:>4.0%}  degenerate {p.degenerate_rate:>4.0%}  "
                f"ppl {ppl:>7}  {p.seconds:.1f}s"
            )

        lines = [line("unsteered", self.baseline)]
        for p in self.points:
            name = f"{p.mode} a={p.alpha:g} top={p.top_rate:g} n={p.n_neurons}"
            lines.append(line(name, p))
        return "\n".join(lines)


def _alpha_grid(
    modes: Sequence[str], alphas: Sequence[float] | Mapping[str, Sequence[float]] | None
) -> dict[str, list[float]]:
    """Per mode its strengths: the defaults, one shared list, or a mode -> list mapping."""
    if isinstance(alphas, Mapping):
        for key in alphas:
            check_mode(key)
        extra = [key for key in alphas if key not in modes]
        if extra:
            raise UserError(f"alphas given for modes {extra} that are not swept: {list(modes)}")
        grid = {m: list(alphas.get(m, DEFAULT_ALPHAS[m])) for m in modes}
    elif alphas is None:
        grid = {m: list(DEFAULT_ALPHAS[m]) for m in modes}
    else:
        grid = {m: list(alphas) for m in modes}
    for mode, values in grid.items():
        if not values or not all(math.isfinite(float(v)) for v in values):
            raise UserError(f"alphas for mode {mode!r} must be finite numbers, got {values}")
    return {m: [float(v) for v in values] for m, values in grid.items()}


def _identifier(
    identify: Callable[[list[str]], list[str]] | None, languages: list[str]
) -> Callable[[list[str]], list[str]]:
    if identify is not None:
        return identify
    identify_many([], languages=languages)  # unsupported codes raise now
    return lambda texts: identify_many(texts, languages=languages)


def _prompts(questions: Sequence[str], template: str, language: str) -> list[str]:
    if not questions:
        raise UserError(f"no questions given for language {language!r}")
    if "{question}" not in template:
        raise UserError(f"template {template!r} has no {{question}} slot")
    return [template.format(question=q.strip()) for q in questions]


def _check_generation(max_new_tokens: int, batch_size: int, n_samples: int) -> None:
    for name, value, least in (
        ("max_new_tokens", max_new_tokens, 1),
        ("batch_size", batch_size, 1),
        ("n_samples", n_samples, 0),
    ):
        if value < least:
            raise UserError(f"{name} must be at least {least}, got {value}")


def steering_sweep(
    model: TransformerBridge,
    questions: Sequence[str],
    *,
    stats: ActivationStats,
    source: str,
    target: str,
    modes: Sequence[str] = STEERING_MODES,
    alphas: Sequence[float] | Mapping[str, Sequence[float]] | None = None,
    top_rates: Sequence[float] = (0.01,),
    selection: Mapping[str, float] | None = None,
    source_value: float | None = None,
    languages: Sequence[str] | None = None,
    template: str = PROMPT_TEMPLATE,
    max_new_tokens: int = 16,
    batch_size: int = 8,
    identify: Callable[[list[str]], list[str]] | None = None,
    n_samples: int = 3,
    progress: bool = True,
    uncertainty: Uncertainty = Uncertainty(),
) -> SteeringSweep:
    """Steer with every (mode, α, top rate) of a grid and measure each setting.

    For each top rate the LAPE neurons are selected anew from ``stats``
    (``lape.select(stats, top_rate=r)``); the unsteered answers are generated once.
    Every setting is measured by the target and source language rates, the share of
    degenerate answers (:func:`is_degenerate`) and the fluency: the perplexity of the
    steered answers under the unsteered model (:func:`answer_nll`).

    Args:
        model: a causal TransformerBridge, the one ``stats`` were collected on.
        questions: questions in the ``source`` language.
        stats: per-language activation statistics (LAPE selection and μ).
        source: the questions' language; target: the language to steer to (both among
            the statistics' languages).
        modes: steering modes (:data:`STEERING_MODES`).
        alphas: strengths: one list for every mode, a mode -> list mapping (missing modes
            get :data:`DEFAULT_ALPHAS`), or None for the defaults.
        top_rates: LAPE budgets, e.g. ``(0.01, 0.03)``.
        selection: LAPE's other constants (``filter_rate``, ``activation_bar_ratio``), e.g.
            those of the saved run (``neurons.constants``); default: LAPE's defaults.
        source_value: set the source language's own neurons to this (0 = deactivate).
        languages: candidates of the language identifier (default: the statistics' languages).
        identify: maps answers to language codes (default: the offline identifier).
        n_samples: answers kept per setting.
        uncertainty: the level and bootstrap of the intervals (Wilson for the rates,
            bootstrap over questions for fluency, exact McNemar against the unsteered
            answers), recorded in ``settings``.

    Raises:
        UserError: bad modes, strengths, rates or languages, before anything is generated.
    """
    modes = [check_mode(m) for m in modes]
    if not modes:
        raise UserError(f"name at least one mode of {', '.join(STEERING_MODES)}")
    grid = _alpha_grid(modes, alphas)
    if not top_rates:
        raise UserError("name at least one top rate, e.g. 0.01")
    for r in top_rates:
        rate("top_rate", r)
    source, target = (normalize_language(c, stats.languages) for c in (source, target))
    if source == target:
        raise UserError(f"source and target are both {source!r}; steer to another language")
    check_same_model(stats.model, model, what="the statistics")
    _check_generation(max_new_tokens, batch_size, n_samples)
    prompts = _prompts(questions, template, source)
    langs = list(languages) if languages is not None else list(stats.languages)
    identify = _identifier(identify, langs)
    settings = []
    for top_rate in top_rates:
        constants: dict[str, Any] = dict(selection or {})
        neurons = select(stats, top_rate=top_rate, **constants)
        for mode in modes:
            for alpha in grid[mode]:
                hooks = steering_intervention(
                    neurons,
                    stats,
                    source=source,
                    target=target,
                    mode=mode,
                    alpha=alpha,
                    source_value=source_value,
                    model=model,
                )
                check_intervention(model, hooks)
                n_source = 0 if source_value is None else len(neurons.difference(source, target))
                setting = dict(
                    mode=mode,
                    alpha=alpha,
                    top_rate=float(top_rate),
                    n_neurons=len(neurons[target]),
                    n_source_neurons=n_source,
                )
                settings.append((setting, hooks))
    options: dict[str, Any] = dict(
        max_new_tokens=max_new_tokens, batch_size=batch_size, progress=False
    )
    measure: dict[str, Any] = dict(
        source=source, target=target, identify=identify, batch_size=batch_size, n_samples=n_samples
    )
    with torch.inference_mode():
        began = time.perf_counter()
        answers = generate_answers(model, prompts, **options)
        baseline = _measure(model, prompts, answers, **measure)
        baseline = dataclasses.replace(baseline, seconds=time.perf_counter() - began)
        points = []
        for setting, hooks in tqdm(settings, desc="steering sweep", disable=not progress):
            began = time.perf_counter()
            with intervene(model, hooks):
                answers = generate_answers(model, prompts, **options)
            point = _measure(model, prompts, answers, **measure)
            seconds = time.perf_counter() - began
            points.append(dataclasses.replace(point, **setting, seconds=seconds))
    return SteeringSweep(
        source=source,
        target=target,
        languages=langs,
        baseline=baseline,
        points=points,
        model=fingerprint(model),
        settings={
            **generation_settings(template, max_new_tokens),
            "source_value": source_value,
            "n_questions": len(prompts),
            "modes": modes,
            "alphas": grid,
            "top_rates": [float(r) for r in top_rates],
            "uncertainty": uncertainty.to_json(),
        },
    )


def fallback_order(
    neurons: LanguageNeurons,
    stats: ActivationStats,
    language: str,
    *,
    order: str = "lape",
    seed: int = 0,
) -> Int[torch.Tensor, "k 2"]:
    """The neurons of ``language`` in the order a fallback curve deactivates them.

    * ``lape``: most language-specific first: ascending LAPE entropy over the
      statistics' languages, ties by descending firing probability on ``language``;
    * ``probability``: descending firing probability on ``language``;
    * ``random``: a random permutation drawn with ``seed`` (a control).
    """
    if order not in FALLBACK_ORDERS:
        raise UserError(f"unknown order {order!r}; valid orders: {', '.join(FALLBACK_ORDERS)}")
    language = normalize_language(language, neurons.languages)
    pairs = neurons[language]
    if order == "random":
        generator = torch.Generator().manual_seed(seed)
        return pairs[torch.randperm(len(pairs), generator=generator)]
    probs = stats.activation_probs
    index = (pairs[:, 0], pairs[:, 1])
    prob = probs[stats.index(normalize_language(language, stats.languages))][index]
    ranked = torch.sort(-prob, stable=True).indices
    if order == "lape":
        entropy = lape_entropy(probs)[index][ranked]
        ranked = ranked[torch.sort(entropy, stable=True).indices]
    return pairs[ranked]


@dataclass(frozen=True)
class FallbackPoint:
    """One share of a fallback curve.

    Attributes:
        share: the fraction of the language's neurons deactivated.
        n_deactivated: how many neurons that is.
        degenerate_rate: share of degenerate answers (:func:`is_degenerate`).
        samples: the first few answers.
        seconds: time to generate and judge.
        distribution: each category's share of the answers, a degenerate answer
            counting as ``"degenerate"`` whatever its identified language.
        counts: the raw counts behind ``distribution``: answers per category (empty in
            files saved before intervals); their sum is the number of questions.
        labels: per question, its answer's category (the outcomes paired tests compare).
    """

    share: float
    n_deactivated: int
    degenerate_rate: float
    samples: tuple[AnswerSample, ...]
    seconds: float
    distribution: dict[str, float]
    counts: dict[str, int] = field(default_factory=dict)
    labels: tuple[str, ...] = ()

    def interval(self, category: str, confidence: float = CONFIDENCE) -> Estimate | None:
        """The share of answers in ``category`` with its Wilson interval; None without
        raw counts."""
        n = sum(self.counts.values())
        return wilson(self.counts.get(category, 0), n, confidence) if n else None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FallbackPoint:
        names = {f.name for f in dataclasses.fields(cls)}
        kept = {k: v for k, v in data.items() if k in names}
        samples = tuple(AnswerSample(**sample) for sample in data["samples"])
        return cls(**{**kept, "samples": samples, "labels": tuple(kept.get("labels", ()))})


@dataclass
class FallbackCurve(Result):
    """Which language a model answers in as growing shares of one language's neurons are
    deactivated (the "fallback" of Gurgurov et al. 2025).

    Attributes:
        language: the language of the questions and of the deactivated neurons.
        order: how the neurons were ranked (:func:`fallback_order`).
        categories: the keys of every distribution, in plotting order: ``language``,
            the identifier's other languages, ``"unknown"``, ``"degenerate"``.
        points: one :class:`FallbackPoint` per share.
        model: fingerprint of the model.
        settings: generation settings, number of neurons and questions, seed.
    """

    FILE: ClassVar[str] = FALLBACK_FILE

    language: str
    order: str
    categories: list[str]
    points: list[FallbackPoint]
    model: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(
        cls, data: dict[str, Any], tensors: dict[str, Any] | None = None
    ) -> FallbackCurve:
        points = [FallbackPoint.from_json(p) for p in data["points"]]
        return super().from_json({**data, "points": points})

    def dominant(self) -> list[str]:
        """Per share, the most frequent category of answers."""
        return [max(self.categories, key=lambda c: p.distribution[c]) for p in self.points]

    @property
    def uncertainty(self) -> Uncertainty:
        """The interval settings recorded (the defaults for results saved before them)."""
        return Uncertainty.of(self.settings)

    @property
    def reference(self) -> FallbackPoint | None:
        """The point with no neuron deactivated (the first, when its share is 0), which
        :meth:`test` compares the others with; None when the curve has none."""
        first = self.points[0] if self.points else None
        return first if first is not None and first.n_deactivated == 0 else None

    def test(self, point: FallbackPoint, category: str | None = None) -> PairedTest | None:
        """The share of answers in ``category`` (default: the questions' language) with no
        neuron off against ``point``, on the same questions: exact McNemar and the paired
        bootstrap interval of the difference. None without a reference or per-question labels."""
        reference, category = self.reference, category or self.language
        if reference is None or point is reference or not (reference.labels and point.labels):
            return None
        before = [label == category for label in reference.labels]
        after = [label == category for label in point.labels]
        return paired_rates(before, after, self.uncertainty)

    def adjusted_p_values(self) -> list[float | None]:
        """Per point, the p-value of :meth:`test` Holm-adjusted over the curve's tests."""
        tests = [self.test(p) for p in self.points]
        adjusted = iter(holm([t.p_value for t in tests if t is not None]))
        return [None if t is None else next(adjusted) for t in tests]

    def to_json(self) -> dict[str, Any]:
        """The fields; each point with its ``intervals``: every category's Wilson interval
        and, against no neuron off, the paired test of the questions' language
        (``versus_none_off``, with ``holm_p`` over the shares)."""
        how = self.uncertainty
        points = []
        for point, holm_p in zip(self.points, self.adjusted_p_values()):
            found = {c: point.interval(c, how.confidence) for c in self.categories}
            intervals: dict[str, Any] = {c: e.to_json() for c, e in found.items() if e}
            test = self.test(point)
            if test is not None:
                intervals["versus_none_off"] = {**test.to_json(), "holm_p": holm_p}
            points.append({**dataclasses.asdict(point), "intervals": intervals})
        return {**dataclasses.asdict(self), "points": points}


def fallback_curve(
    model: TransformerBridge,
    questions: Sequence[str],
    *,
    neurons: LanguageNeurons,
    stats: ActivationStats,
    language: str,
    shares: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
    order: str = "lape",
    seed: int = 0,
    languages: Sequence[str] | None = None,
    template: str = PROMPT_TEMPLATE,
    max_new_tokens: int = 16,
    batch_size: int = 8,
    identify: Callable[[list[str]], list[str]] | None = None,
    n_samples: int = 3,
    progress: bool = True,
    uncertainty: Uncertainty = Uncertainty(),
) -> FallbackCurve:
    """Deactivate growing shares of ``language``'s neurons and record the answers' languages.

    The first ``round(share · k)`` of the ``k`` neurons in :func:`fallback_order` are
    set to 0, the questions (in ``language``) are answered greedily, and each answer's
    language is identified.

    Args:
        neurons: LAPE neurons with ``language``.
        stats: statistics for the order (firing probabilities, LAPE entropy).
        language: the questions' language, whose neurons are deactivated.
        shares: fractions in [0, 1] of its neurons to deactivate.
        order: ``lape``, ``probability`` or ``random`` (:func:`fallback_order`).
        languages: candidates of the language identifier (default: the statistics' languages).
        uncertainty: the level and bootstrap of the intervals (Wilson for every share,
            exact McNemar against no neuron off), recorded in ``settings``.
    """
    neurons.check_fits(model)
    ranked = fallback_order(neurons, stats, language, order=order, seed=seed)
    language = normalize_language(language, neurons.languages)
    if not len(ranked):  # an honest but flat curve: every point records 0 deactivated
        warnings.warn(f"{language!r} has no neurons to deactivate; the curve is flat", stacklevel=2)
    if not shares or not all(0 <= s <= 1 for s in shares):
        raise UserError(f"shares must be fractions in [0, 1], got {list(shares)}")
    _check_generation(max_new_tokens, batch_size, n_samples)
    prompts = _prompts(questions, template, language)
    langs = list(languages) if languages is not None else list(stats.languages)
    identify = _identifier(identify, langs)
    categories = [language, *[c for c in langs if c != language], UNKNOWN, DEGENERATE]
    options: dict[str, Any] = dict(
        max_new_tokens=max_new_tokens, batch_size=batch_size, progress=False
    )
    measured = []
    with torch.inference_mode():
        for share in tqdm(list(shares), desc=f"fallback {language}", disable=not progress):
            began = time.perf_counter()
            k = round(float(share) * len(ranked))
            hooks = deactivate(ranked[:k], model=model, points=neurons.feature_points)
            with intervene(model, hooks):
                answers = generate_answers(model, prompts, **options)
            found, degenerate = _judge(model, answers, identify)
            labels = [DEGENERATE if d else lang for lang, d in zip(found, degenerate)]
            for label in labels:
                if label not in categories:
                    categories.insert(-2, label)
            point: dict[str, Any] = dict(
                share=float(share),
                n_deactivated=k,
                degenerate_rate=sum(degenerate) / len(answers),
                samples=_samples(prompts, answers, found, degenerate, n_samples),
                seconds=time.perf_counter() - began,
            )
            measured.append((point, labels))
    points = []
    for point, labels in measured:
        counts = {c: labels.count(c) for c in categories}
        distribution = {c: k / len(prompts) for c, k in counts.items()}
        points.append(
            FallbackPoint(**point, distribution=distribution, counts=counts, labels=tuple(labels))
        )
    return FallbackCurve(
        language=language,
        order=order,
        categories=categories,
        points=points,
        model=fingerprint(model),
        settings={
            **generation_settings(template, max_new_tokens),
            "n_neurons": len(ranked),
            "n_questions": len(prompts),
            "seed": seed,
            "languages": langs,
            "uncertainty": uncertainty.to_json(),
        },
    )


__all__ = [
    "DEFAULT_ALPHAS",
    "FALLBACK_FILE",
    "FALLBACK_ORDERS",
    "PROMPT_TEMPLATE",
    "STEERING_FILE",
    "STEERING_MODES",
    "SWEEP_FILE",
    "AnswerSample",
    "FallbackCurve",
    "FallbackPoint",
    "SteeringResult",
    "SteeringSweep",
    "SweepPoint",
    "answer_nll",
    "fallback_curve",
    "fallback_order",
    "is_degenerate",
    "steer",
    "steering_intervention",
    "steering_sweep",
    "steering_values",
]
