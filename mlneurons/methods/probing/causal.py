"""Factual probing of causal LMs: whole-sentence log-likelihood over typed candidates (mLAMA, Zhao et al.), scored with a shared-prefix key/value cache."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import torch
from tqdm.auto import tqdm

from mlneurons.data.facts import Fact, FactSet
from mlneurons.methods.probing.result import ProbeResult, prediction
from mlneurons.models.bridge import TransformerBridge
from mlneurons.models.canary import canary_ids, verify
from mlneurons.models.fingerprint import fingerprint
from mlneurons.models.forward import (
    cached_body,
    honour_cache_keyword,
    log_likelihood_sums,
    model_device,
    pad_right,
    unembed,
)
from mlneurons.models.tokens import sentence_ids


def common_prefix_length(sequences: list[list[int]]) -> int:
    """How many leading tokens all ``sequences`` share."""
    n = min(len(s) for s in sequences)
    first = sequences[0]
    for i in range(n):
        if any(s[i] != first[i] for s in sequences):
            return i
    return n


@dataclass
class CandidateBatches:
    """Candidate sentences split into the prefix they all share and length-sorted suffix batches.

    Attributes:
        prefix: token ids (BOS first) that every sentence starts with.
        first_targets: per sentence, its first token after the prefix.
        batches: ``(members, suffix, lengths)``: sentence indices, right-padded suffix ids
            ``[len(members), max(lengths)]`` and suffix lengths; only batches with a suffix
            token beyond the first are kept.
    """

    prefix: list[int]
    first_targets: list[int]
    batches: list[tuple[list[int], torch.Tensor, list[int]]]


def candidate_batches(tokenizer: Any, sentences: list[str], batch_size: int) -> CandidateBatches:
    """Tokenise candidate sentences and batch their suffixes after the shared prefix."""
    return id_batches([sentence_ids(tokenizer, s) for s in sentences], batch_size)


def id_batches(ids: list[list[int]], batch_size: int) -> CandidateBatches:
    """Batch token-id sentences' suffixes after the prefix they all share."""
    shared = common_prefix_length(ids)
    if shared == 0:
        raise ValueError(
            "sentences share no first token and the tokenizer has no BOS to score from"
        )
    shared = min(shared, min(len(s) for s in ids) - 1)  # every sentence keeps one scored token
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # batches of similar length pad less
    batches = []
    for start in range(0, len(ids), batch_size):
        members = order[start : start + batch_size]
        lengths = [len(ids[i]) - shared for i in members]  # the first is scored from the prefix
        if max(lengths) == 1:
            continue
        suffix, _ = pad_right([ids[i][shared:] for i in members])
        batches.append((members, suffix, lengths))
    return CandidateBatches(ids[0][:shared], [s[shared] for s in ids], batches)


def scored_positions(
    hidden: torch.Tensor, suffix: torch.Tensor, lengths: list[int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The states that predict suffix tokens 1.., with those tokens and their rows.

    Returns ``(states [n, d_model], targets [n], rows [n])`` from the final (normed)
    hidden states of a suffix batch.
    """
    rows = torch.tensor([k for k, n in enumerate(lengths) for _ in range(n - 1)], dtype=torch.long)
    cols = torch.tensor([j for n in lengths for j in range(n - 1)], dtype=torch.long)
    return hidden[rows, cols], suffix[rows, cols + 1], rows


def first_token_log_likelihood(
    model: TransformerBridge, hidden: torch.Tensor, targets: list[int]
) -> torch.Tensor:
    """``[..., len(targets)]``: log-probability of each target after the prefix's last (normed) state."""
    logprobs = torch.log_softmax(unembed(model, hidden).float(), -1)
    return logprobs[..., targets].cpu()


def repeated_cache(cache: Any, rows: int) -> Any:
    """A copy of a one-row key/value cache, repeated for a batch of ``rows``."""
    cache = copy.deepcopy(cache)
    cache.batch_repeat_interleave(rows)
    return cache


@torch.inference_mode()
def candidate_scores(
    model: TransformerBridge, sentences: list[str], *, batch_size: int = 32
) -> torch.Tensor:
    """Log-likelihood of each sentence beyond the tokens that all of them share.

    The shared prefix runs once; its key/value cache is copied for each batch of
    candidates, and only the positions after it are unembedded. Differences between
    these scores equal differences between whole-sentence log-likelihoods (checked once
    per model against full forward passes: :func:`check_cached_scoring`).
    """
    check_cached_scoring(model)
    return batch_scores(model, candidate_batches(model.tokenizer, sentences, batch_size))


@torch.inference_mode()
def batch_scores(model: TransformerBridge, plan: CandidateBatches) -> torch.Tensor:
    """:func:`candidate_scores` of tokenised sentences, the fast path: shared prefix cached."""
    body = cast(torch.nn.Module, model.original_model.base_model)
    device = model_device(model)
    prefix, cache = cached_body(body, torch.tensor([plan.prefix], device=device))
    scores = first_token_log_likelihood(model, prefix[0, -1], plan.first_targets)
    states, targets, owners = [], [], []
    for members, suffix, lengths in plan.batches:
        hidden, _ = cached_body(body, suffix.to(device), repeated_cache(cache, len(members)))
        state, target, rows = scored_positions(hidden, suffix, lengths)
        states.append(state)
        targets.append(target)
        owners.append(torch.tensor(members)[rows])
    if states:
        scores += log_likelihood_sums(
            model, torch.cat(states), torch.cat(targets), torch.cat(owners), len(scores)
        )
    return scores


@torch.inference_mode()
def full_forward_scores(model: TransformerBridge, ids: list[list[int]], start: int) -> torch.Tensor:
    """The exact path: each sentence's log-likelihood from token ``start`` on, from one whole
    forward pass per sentence without any cache."""
    body = cast(torch.nn.Module, model.original_model.base_model)
    device = model_device(model)
    scores = []
    for row in ids:
        hidden = body(input_ids=torch.tensor([row], device=device), use_cache=False)
        states = hidden.last_hidden_state[0, start - 1 : -1]
        target = torch.tensor(row[start:])
        scores.append(log_likelihood_sums(model, states, target, torch.zeros_like(target), 1))
    return torch.cat(scores)


def canary_sentences(model: TransformerBridge) -> list[list[int]]:
    """Three token-id sentences sharing a 5-token prefix, with suffixes of 1, 3 and 4 tokens."""
    prefix = canary_ids(model, 5)
    return [prefix + canary_ids(model, n + 1, offset=n)[1:] for n in (1, 3, 4)]


def check_cached_scoring(model: TransformerBridge) -> None:
    """Canary: shared-prefix cached scoring equals full forward passes (once per model)."""
    honour_cache_keyword()

    def compare() -> tuple[torch.Tensor, torch.Tensor]:
        ids = canary_sentences(model)
        plan = id_batches(ids, batch_size=2)  # two batches, one of them padded
        return batch_scores(model, plan), full_forward_scores(model, ids, len(plan.prefix))

    verify(model, "shared-prefix cached candidate scoring", compare, rtol=1e-4, atol=1e-3)


def probe_causal(
    model: TransformerBridge,
    facts: FactSet,
    *,
    batch_size: int = 32,
    progress: bool = True,
) -> ProbeResult:
    """Probe every fact with a causal LM: rank its typed candidates by whole-sentence
    log-likelihood; P@1 = gold ranked first. :func:`mlneurons.probe` dispatches here."""
    predictions = [
        _predict(model, facts, fact, candidates, batch_size)
        for fact, candidates in facts_with_candidates(facts, progress=progress)
    ]
    return causal_result(model, facts, predictions)


def facts_with_candidates(
    facts: FactSet, *, progress: bool = True, desc: str = "probe"
) -> Iterator[tuple[Fact, list[str]]]:
    """Each fact with its relation's typed candidates, language by language, with a progress bar."""
    with tqdm(total=len(facts), desc=desc, unit="fact", disable=not progress) as bar:
        for key, group in facts.groups().items():
            for fact in group:
                yield fact, facts.candidates[key]
                bar.update()


def causal_result(
    model: TransformerBridge, facts: FactSet, predictions: list[dict[str, Any]]
) -> ProbeResult:
    """A ProbeResult of causal whole-sentence ranking."""
    return ProbeResult(
        facts.languages,
        facts.relations,
        predictions,
        fingerprint(model),
        {
            "method": "causal: whole-sentence log-likelihood over typed candidates",
            "facts": facts.description,
        },
    )


def _predict(
    model: TransformerBridge, facts: FactSet, fact: Fact, candidates: list[str], batch_size: int
) -> dict[str, Any]:
    scores = candidate_scores(
        model, [facts.fill(fact, c) for c in candidates], batch_size=batch_size
    )
    return prediction(fact, candidates[int(scores.argmax())])
