"""Greedy generation of answers, with the canary of batched cached generation.

The decoding of the steering experiments (Tang et al. 2024, section 5): greedy, with a
repetition penalty, prompts left-padded into batches, each answer cut at its first
blank line or next question.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, cast

import torch
from tqdm.auto import tqdm

from mlneurons.errors import UserError
from mlneurons.models.bridge import TransformerBridge
from mlneurons.models.canary import canary_ids, verify
from mlneurons.models.fingerprint import fingerprint
from mlneurons.models.forward import honour_cache_keyword, model_device

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


def check_cached_generation(model: TransformerBridge) -> None:
    """Canary: batched, left-padded greedy generation with the key/value cache gives the
    tokens of one prompt at a time without any cache (once per model)."""
    honour_cache_keyword()
    pad = getattr(model.tokenizer, "pad_token_id", None)
    if pad is None:
        return  # one prompt at a time only (generate_answers refuses batches)
    prompts = [canary_ids(model, 4), canary_ids(model, 7, offset=1)]
    options: dict[str, Any] = {
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
        # return_type="tokens": token id tensors
        out = cast(
            torch.Tensor,
            model.generate(ids.to(device), attention_mask=mask.to(device), **options),
        )
        alone = [
            cast(
                torch.Tensor,
                model.generate(
                    torch.tensor([p], device=device), use_past_kv_cache=False, **options
                ),
            )
            for p in prompts
        ]
        return out[:, width:], torch.cat([a[:, len(p) :] for a, p in zip(alone, prompts)])

    verify(model, "cached batched generation", compare, rtol=0.0, atol=0.0)


def generate_answers(
    model: TransformerBridge,
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


__all__ = [
    "REPETITION_PENALTY",
    "check_cached_generation",
    "generate_answers",
    "generation_settings",
]
