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

import math
import re
import time
import unicodedata
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from jaxtyping import Float, Int
from tqdm.auto import tqdm

from mlneurons.config import rate
from mlneurons.data.builtin_text import normalize_language
from mlneurons.errors import UserError
from mlneurons.evaluation.langid import UNKNOWN, identify_many, supported_languages
from mlneurons.methods.interventions import (
    Hooks,
    activate,
    check_intervention,
    deactivate,
    intervene,
    scale,
)
from mlneurons.methods.lape import LanguageNeurons, lape_entropy, select
from mlneurons.models.canary import canary_ids, verify
from mlneurons.models.fingerprint import check_same_model, fingerprint
from mlneurons.models.forward import (
    honour_cache_keyword,
    log_likelihood_sums,
    model_device,
    pad_right,
)
from mlneurons.results import Result
from mlneurons.stats.activation import ActivationStats

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


REPETITION_PENALTY = 1.1
"""Greedy decoding's repetition penalty: without it a 270M model loops on short answers."""


def generation_settings(template: str, max_new_tokens: int) -> dict[str, Any]:
    """How answers were generated, as every steering result records it."""
    return {
        "template": template,
        "max_new_tokens": max_new_tokens,
        "greedy": True,
        "repetition_penalty": REPETITION_PENALTY,
    }


def check_cached_generation(model: Any) -> None:
    """Canary: batched, left-padded greedy generation with the key/value cache gives the
    tokens of one prompt at a time without any cache (once per model)."""
    honour_cache_keyword()
    pad = getattr(model.tokenizer, "pad_token_id", None)
    if pad is None:
        return  # one prompt at a time only (generate_answers refuses batches)
    prompts = [canary_ids(model, 4), canary_ids(model, 7, offset=1)]
    options = {
        "max_new_tokens": 2,
        "do_sample": False,
        "stop_at_eos": False,
        "verbose": False,
        "return_type": "tokens",
        "repetition_penalty": REPETITION_PENALTY,
    }

    def compare() -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(p) for p in prompts)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
        mask = (torch.arange(width) >= torch.tensor([[width - len(p)] for p in prompts])).long()
        device = model_device(model)
        out = model.generate(ids.to(device), attention_mask=mask.to(device), **options)
        alone = [
            model.generate(torch.tensor([p], device=device), use_past_kv_cache=False, **options)
            for p in prompts
        ]
        return out[:, width:], torch.cat([a[:, len(p) :] for a, p in zip(alone, prompts)])

    verify(model, "cached batched generation", compare, rtol=0.0, atol=0.0)


def generate_answers(
    model: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 32,
    batch_size: int = 8,
    repetition_penalty: float = REPETITION_PENALTY,
    progress: bool = True,
) -> list[str]:
    """Greedy continuations of ``prompts`` (left-padded batches), first line or paragraph only.

    Raises:
        UserError: ``batch_size`` or ``max_new_tokens`` below 1, or batches of several
            prompts with a tokenizer that has no pad token.
    """
    for name, value in (("batch_size", batch_size), ("max_new_tokens", max_new_tokens)):
        if value < 1:
            raise UserError(f"{name} must be at least 1, got {value}")
    answers: list[str] = []
    tokenizer = model.tokenizer
    if tokenizer.pad_token_id is None and batch_size > 1 and len(prompts) > 1:
        raise UserError(
            f"the tokenizer of {fingerprint(model)['name']!r} has no pad token, which batches of "
            f"{batch_size} prompts need; use batch size 1 (--batch-size 1) or set "
            "tokenizer.pad_token"
        )
    check_cached_generation(model)
    for start in tqdm(range(0, len(prompts), batch_size), desc="generate", disable=not progress):
        batch = list(prompts[start : start + batch_size])
        padding = len(batch) > 1
        inputs = tokenizer(batch, padding=padding, padding_side="left", return_tensors="pt")
        width = inputs["input_ids"].shape[1]
        out = model.generate(
            inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            max_new_tokens=max_new_tokens,
            do_sample=False,
            verbose=False,
            repetition_penalty=repetition_penalty,
            return_type="tokens",
        )
        for row in out:
            text = tokenizer.decode(row[width:], skip_special_tokens=True)
            first = text.strip().split("\n\n")[0]
            answers.append(re.split(r"\nQ[:：]", first)[0].strip())  # ASCII or full-width colon
    return answers


def steer(
    model: Any,
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
    progress: bool = True,
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
    """
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
    options = dict(max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress)
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
        },
    )


STEERING_MODES: tuple[str, ...] = ("replace", "add", "diffmean", "scale")
"""The steering modes on the act_fn output ``a`` of the target language's neurons, with
μ_t the target language's mean activation (:meth:`ActivationStats.mean_activation`):

* ``replace``: a ← α·μ_t (α = 1 is the replacement of Tang et al. 2024);
* ``add``: a ← a + α·μ_t (the additive "language arithmetics" of Gurgurov et al. 2025);
* ``diffmean``: a ← a + α·(μ_t − mean of μ over the statistics' other languages);
* ``scale``: a ← α·a (multiplicative language arithmetics).
"""

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
FALLBACK_ORDERS: tuple[str, ...] = ("lape", "probability", "random")
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
    model: Any,
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
    if mode == "scale":
        hooks = scale(neurons[target], alpha, model=model)
    else:
        values = alpha * steering_values(stats, target, mode)
        hooks = activate(neurons[target], values, model=model, add=mode != "replace")
    if source_value is not None:
        own = neurons.difference(source, target)
        if source_value == 0:
            hooks = hooks + deactivate(own, model=model)
        else:
            hooks = hooks + activate(own, float(source_value), model=model)
    return hooks


def answer_ids(tokenizer: Any, answer: str) -> list[int]:
    """The tokens of an answer as continuation of its prompt: ``" " + answer``, no specials."""
    if not answer:
        return []
    return list(tokenizer(" " + answer, add_special_tokens=False)["input_ids"])


def answer_nll(
    model: Any,
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
    tokenizer, hf = model.tokenizer, model.original_model
    rows, starts = [], []
    for prompt, answer in zip(prompts, answers):
        ids = list(tokenizer(prompt)["input_ids"])
        if not ids:
            raise UserError(f"prompt {prompt!r} has no tokens to condition the answer on")
        rows.append(ids + answer_ids(tokenizer, answer))
        starts.append(len(ids))
    nll = torch.zeros(len(rows), dtype=torch.float64)
    counts = torch.tensor([len(r) - s for r, s in zip(rows, starts)], dtype=torch.long)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = model_device(model)
    scored = [k for k in range(len(rows)) if counts[k] > 0]
    with torch.inference_mode():
        for begin in range(0, len(scored), batch_size):
            chunk = scored[begin : begin + batch_size]
            ids, mask = pad_right([rows[k] for k in chunk], pad, device=device)
            hidden = hf.base_model(input_ids=ids, attention_mask=mask, use_cache=False)
            hidden = hidden.last_hidden_state
            states, targets, owners = [], [], []
            for j, k in enumerate(chunk):
                start, end = starts[k], len(rows[k])
                states.append(hidden[j, start - 1 : end - 1])
                targets.append(ids[j, start:end])
                owners.append(torch.full((end - start,), j))
            sums = log_likelihood_sums(
                model, torch.cat(states), torch.cat(targets), torch.cat(owners), len(chunk)
            )
            nll[chunk] = -sums.double()
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
    model: Any,
    answers: list[str],
    identify: Callable[[list[str]], list[str]],
) -> tuple[list[str], list[bool]]:
    """Identified language and degeneracy of each answer."""
    langs = list(identify(list(answers)))
    degenerate = [is_degenerate(a, answer_ids(model.tokenizer, a)) for a in answers]
    return langs, degenerate


def _measure(
    model: Any,
    prompts: list[str],
    answers: list[str],
    *,
    source: str,
    target: str,
    identify: Callable[[list[str]], list[str]],
    batch_size: int,
    n_samples: int,
) -> dict[str, Any]:
    """The sweep's numbers for one set of answers (scored under ``model`` as it is hooked)."""
    langs, degenerate = _judge(model, answers, identify)
    nll, counts = answer_nll(model, prompts, answers, batch_size=batch_size)
    n = len(answers)
    return {
        "target_rate": sum(lang == target and not d for lang, d in zip(langs, degenerate)) / n,
        "source_rate": sum(lang == source and not d for lang, d in zip(langs, degenerate)) / n,
        "degenerate_rate": sum(degenerate) / n,
        "empty_rate": sum(not a.strip() for a in answers) / n,
        "fluency_ppl": _fluency(nll, counts),
        "answer_tokens": int(counts.sum()),
        "samples": [
            {"prompt": p, "answer": a, "lang": lang, "degenerate": d}
            for p, a, lang, d in list(zip(prompts, answers, langs, degenerate))[:n_samples]
        ],
    }


@dataclass
class SteeringSweep(Result):
    """A grid of steering settings (mode, α, LAPE top rate), each measured on the same questions.

    Rates are shares of all answers: ``target_rate`` counts answers identified as the
    target language that are not degenerate (:func:`is_degenerate`), likewise
    ``source_rate``. ``fluency_ppl`` is the perplexity of the answers' tokens under the
    unsteered model given the prompt (lower: more fluent; repetitive text scores low
    too, hence ``degenerate_rate``).

    Attributes:
        source: language of the questions.
        target: language steered to.
        languages: candidate languages of the language identifier.
        baseline: the unsteered answers' ``target_rate``, ``source_rate``,
            ``degenerate_rate``, ``empty_rate``, ``fluency_ppl``, ``answer_tokens``,
            ``seconds`` and ``samples``.
        points: one dict per setting: ``mode``, ``alpha``, ``top_rate``, ``n_neurons``
            (target neurons steered), ``n_source_neurons`` (source neurons set to
            ``source_value``), the numbers of ``baseline`` and ``samples`` (a few
            ``{"prompt", "answer", "lang", "degenerate"}``).
        model: fingerprint of the model.
        settings: generation settings, ``source_value``, number of questions.
    """

    FILE: ClassVar[str] = SWEEP_FILE

    source: str
    target: str
    languages: list[str]
    baseline: dict[str, Any]
    points: list[dict[str, Any]]
    model: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def modes(self) -> list[str]:
        """The modes of the sweep, in order."""
        return list(dict.fromkeys(p["mode"] for p in self.points))

    def best(self, mode: str, *, max_degenerate: float = 0.5) -> dict[str, Any] | None:
        """The setting of ``mode`` with the highest target rate, ties broken by lower
        fluency perplexity, then by smaller α; settings where more than ``max_degenerate``
        of the answers are degenerate are excluded. None when no setting qualifies."""
        check_mode(mode)
        candidates = [
            p for p in self.points if p["mode"] == mode and p["degenerate_rate"] <= max_degenerate
        ]
        if not candidates:
            return None
        return min(
            candidates,
            key=lambda p: (
                -p["target_rate"],
                math.inf if p["fluency_ppl"] is None else p["fluency_ppl"],
                p["alpha"],
            ),
        )

    def summary(self) -> str:
        """One line per setting (and the baseline): rates in %, fluency, neurons, seconds."""

        def line(name: str, p: dict[str, Any]) -> str:
            ppl = "-" if p["fluency_ppl"] is None else f"{p['fluency_ppl']:.1f}"
            return (
                f"{name:<28} {self.target} {p['target_rate']:>4.0%}  {self.source} "
                f"{p['source_rate']:>4.0%}  degenerate {p['degenerate_rate']:>4.0%}  "
                f"ppl {ppl:>7}  {p.get('seconds', 0):.1f}s"
            )

        lines = [line("unsteered", self.baseline)]
        for p in self.points:
            name = f"{p['mode']} a={p['alpha']:g} top={p['top_rate']:g} n={p['n_neurons']}"
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
    model: Any,
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
        neurons = select(stats, top_rate=top_rate, **dict(selection or {}))
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
                point = {
                    "mode": mode,
                    "alpha": alpha,
                    "top_rate": float(top_rate),
                    "n_neurons": len(neurons[target]),
                    "n_source_neurons": n_source,
                }
                settings.append((point, hooks))
    options = dict(max_new_tokens=max_new_tokens, batch_size=batch_size, progress=False)
    measure = dict(
        source=source, target=target, identify=identify, batch_size=batch_size, n_samples=n_samples
    )
    with torch.inference_mode():
        began = time.perf_counter()
        answers = generate_answers(model, prompts, **options)
        baseline = _measure(model, prompts, answers, **measure)
        baseline["seconds"] = time.perf_counter() - began
        points = []
        for point, hooks in tqdm(settings, desc="steering sweep", disable=not progress):
            began = time.perf_counter()
            with intervene(model, hooks):
                answers = generate_answers(model, prompts, **options)
            points.append({**point, **_measure(model, prompts, answers, **measure)})
            points[-1]["seconds"] = time.perf_counter() - began
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


@dataclass
class FallbackCurve(Result):
    """Which language a model answers in as growing shares of one language's neurons are
    deactivated (the "fallback" of Gurgurov et al. 2025).

    Attributes:
        language: the language of the questions and of the deactivated neurons.
        order: how the neurons were ranked (:func:`fallback_order`).
        categories: the keys of every distribution, in plotting order: ``language``,
            the identifier's other languages, ``"unknown"``, ``"degenerate"``.
        points: per share ``{"share", "n_deactivated", "distribution", "degenerate_rate",
            "seconds", "samples"}``; ``distribution`` maps each category to its share of
            the answers, a degenerate answer (:func:`is_degenerate`) counting as
            ``"degenerate"`` whatever its identified language.
        model: fingerprint of the model.
        settings: generation settings, number of neurons and questions, seed.
    """

    FILE: ClassVar[str] = FALLBACK_FILE

    language: str
    order: str
    categories: list[str]
    points: list[dict[str, Any]]
    model: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def dominant(self) -> list[str]:
        """Per share, the most frequent category of answers."""
        return [max(self.categories, key=lambda c: p["distribution"][c]) for p in self.points]


def fallback_curve(
    model: Any,
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
    options = dict(max_new_tokens=max_new_tokens, batch_size=batch_size, progress=False)
    points = []
    with torch.inference_mode():
        for share in tqdm(list(shares), desc=f"fallback {language}", disable=not progress):
            began = time.perf_counter()
            k = round(float(share) * len(ranked))
            with intervene(model, deactivate(ranked[:k], model=model)):
                answers = generate_answers(model, prompts, **options)
            found, degenerate = _judge(model, answers, identify)
            labels = [DEGENERATE if d else lang for lang, d in zip(found, degenerate)]
            for label in labels:
                if label not in categories:
                    categories.insert(-2, label)
            counts = Counter(labels)
            points.append(
                {
                    "share": float(share),
                    "n_deactivated": k,
                    "degenerate_rate": sum(degenerate) / len(answers),
                    "samples": [
                        {"prompt": p, "answer": a, "lang": lang, "degenerate": d}
                        for p, a, lang, d in list(zip(prompts, answers, found, degenerate))[
                            :n_samples
                        ]
                    ],
                    "seconds": time.perf_counter() - began,
                    "counts": dict(counts),
                }
            )
    for point in points:
        counts = point.pop("counts")
        point["distribution"] = {c: counts.get(c, 0) / len(prompts) for c in categories}
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
    "FallbackCurve",
    "SteeringResult",
    "SteeringSweep",
    "answer_nll",
    "fallback_curve",
    "fallback_order",
    "generate_answers",
    "is_degenerate",
    "steer",
    "steering_intervention",
    "steering_sweep",
    "steering_values",
]
