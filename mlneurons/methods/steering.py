"""Output-language steering with language neurons (Tang et al. 2024, section 5).

Ask questions in a source language, generate greedily with the target language's
neurons activated (and optionally the source language's deactivated), identify the
language of every answer offline, and compare how often the answer is in the
target language before and after.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from tqdm.auto import tqdm

from mlneurons.data.builtin_text import normalize_language
from mlneurons.errors import UserError
from mlneurons.evaluation.langid import identify_many, supported_languages
from mlneurons.methods.interventions import Hooks, check_intervention, intervene
from mlneurons.models.canary import canary_ids, verify
from mlneurons.models.fingerprint import fingerprint
from mlneurons.models.forward import honour_cache_keyword, model_device
from mlneurons.results import Result

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
            answers.append(text.strip().split("\n\n")[0].split("\nQ:")[0].strip())
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
            "template": template,
            "max_new_tokens": max_new_tokens,
            "greedy": True,
            "repetition_penalty": REPETITION_PENALTY,
            "languages": list(languages or []),
        },
    )


__all__ = ["PROMPT_TEMPLATE", "STEERING_FILE", "SteeringResult", "generate_answers", "steer"]
