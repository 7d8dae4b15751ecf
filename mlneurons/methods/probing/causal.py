"""Factual probing of causal LMs: each fact's candidates ranked by a score of the filled
sentence (:data:`~mlneurons.methods.probing.SCORINGS`), computed with a shared-prefix
key/value cache.

Every scoring mode is a function of the per-token log-probabilities of the filled
sentences: :func:`batch_token_logprobs` gives them from one run of the prefix the
candidates share and cached runs of their suffixes (the fast path);
:func:`full_forward_token_logprobs` from one uncached forward pass per sentence (the exact
path); :func:`check_cached_scoring` compares the two once per model, and
:func:`reduce_scores` turns them into the scores of a mode.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from tqdm.auto import tqdm

from mlneurons.data.facts import Fact, FactSet
from mlneurons.evaluation.uncertainty import Uncertainty
from mlneurons.methods.probing.result import TIE_RULE, ProbeResult, ranked_prediction
from mlneurons.methods.probing.scoring import SCORINGS, Scoring
from mlneurons.models.bridge import TransformerBridge
from mlneurons.models.canary import canary_ids, verify
from mlneurons.models.fingerprint import fingerprint
from mlneurons.models.forward import (
    cached_body,
    honour_cache_keyword,
    model_device,
    pad_right,
    target_logprobs,
    unembed,
)
from mlneurons.models.tokens import overlapping_tokens, sentence_ids


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
    model: TransformerBridge,
    sentences: list[str],
    *,
    batch_size: int = 32,
    scoring: Scoring = "sentence",
    spans: Sequence[Sequence[tuple[int, int]]] | None = None,
) -> torch.Tensor:
    """Each sentence's score under ``scoring`` (higher is better), float32 ``[len(sentences)]``.

    ``sentence`` (the default) gives the log-likelihood beyond the tokens all sentences
    share: differences between these scores equal differences between whole-sentence
    log-likelihoods. ``sum`` and ``mean`` need ``spans``, per sentence the character spans
    of the object (:meth:`~mlneurons.data.facts.FactSet.fill_spans`). The shared prefix
    runs once; its key/value cache is copied for each batch of candidates (checked once
    per model against full forward passes: :func:`check_cached_scoring`).
    """
    check_cached_scoring(model)
    plan = candidate_batches(model.tokenizer, sentences, batch_size)
    if scoring == "sentence":
        return batch_scores(model, plan)
    objects = None
    if scoring in ("sum", "mean"):
        if spans is None or len(spans) != len(sentences):
            raise ValueError(f"scoring {scoring!r} needs the object's spans in every sentence")
        objects = object_positions(model.tokenizer, sentences, spans)
    logprobs = batch_token_logprobs(model, plan)
    return reduce_scores(logprobs, scoring, start=len(plan.prefix), objects=objects)


def object_positions(
    tokenizer: Any, sentences: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]]
) -> list[list[int]]:
    """Per sentence, the positions of its object's tokens: those overlapping a span."""
    found = [overlapping_tokens(tokenizer, s, sp) for s, sp in zip(sentences, spans)]
    for sentence, positions in zip(sentences, found):
        if not positions:
            raise ValueError(f"no token of {sentence!r} overlaps the object")
    return found


def reduce_scores(
    logprobs: Sequence[torch.Tensor],
    scoring: Scoring,
    *,
    start: int = 1,
    objects: Sequence[Sequence[int]] | None = None,
) -> torch.Tensor:
    """Scores of a mode (:data:`~mlneurons.methods.probing.SCORINGS`) from per-token log-probabilities.

    Args:
        logprobs: per sentence, ``[len(ids) - 1]``: entry ``t - 1`` is the log-probability
            of token ``t`` (BOS is token 0) given the tokens before it.
        scoring: the mode.
        start: ``sentence`` sums tokens ``start..``, e.g. after the shared prefix.
        objects: ``sum``/``mean``: per sentence, the positions of the object's tokens.
    """
    if scoring == "sentence":
        return torch.stack([lp[start - 1 :].sum() for lp in logprobs])
    if scoring == "sentence-ce":
        return torch.stack([lp.mean() for lp in logprobs])
    if scoring not in ("sum", "mean") or objects is None:
        raise ValueError(f"scoring={scoring!r} needs objects; modes: {', '.join(SCORINGS)}")
    picked = [lp[torch.tensor(positions) - 1] for lp, positions in zip(logprobs, objects)]
    return torch.stack([p.sum() if scoring == "sum" else p.mean() for p in picked])


@torch.inference_mode()
def batch_scores(model: TransformerBridge, plan: CandidateBatches) -> torch.Tensor:
    """:func:`candidate_scores` (``sentence``) of tokenised sentences, from the fast path."""
    start = len(plan.prefix)
    return reduce_scores(batch_token_logprobs(model, plan), "sentence", start=start)


@torch.inference_mode()
def batch_token_logprobs(model: TransformerBridge, plan: CandidateBatches) -> list[torch.Tensor]:
    """Per sentence, the log-probability of each token after BOS given those before it
    (float32 CPU ``[len(ids) - 1]``), the fast path: the shared prefix runs once, its
    key/value cache serves every batch of suffixes, and the states of all batches are
    unembedded together."""
    body = cast(torch.nn.Module, model.original_model.base_model)
    device = model_device(model)
    prefix, cache = cached_body(body, torch.tensor([plan.prefix], device=device))
    logprobs = torch.log_softmax(unembed(model, prefix[0]).float(), -1).cpu()
    shared = logprobs[torch.arange(len(plan.prefix) - 1), torch.tensor(plan.prefix[1:])]
    first = logprobs[-1, plan.first_targets]
    rest = [torch.zeros(0) for _ in plan.first_targets]
    states, targets, owners = [], [], []
    for members, suffix, lengths in plan.batches:
        hidden, _ = cached_body(body, suffix.to(device), repeated_cache(cache, len(members)))
        state, target, rows = scored_positions(hidden, suffix, lengths)
        states.append(state)
        targets.append(target)
        owners.append(torch.tensor(members)[rows])
    if states:
        values = target_logprobs(model, torch.cat(states), torch.cat(targets))
        owner = torch.cat(owners)
        for i in owner.unique().tolist():
            rest[i] = values[owner == i]  # in position order: scored_positions keeps it
    return [torch.cat([shared, first[i : i + 1], rest[i]]) for i in range(len(rest))]


@torch.inference_mode()
def full_forward_token_logprobs(
    model: TransformerBridge, ids: list[list[int]]
) -> list[torch.Tensor]:
    """The exact path of :func:`batch_token_logprobs`: one whole forward pass per sentence,
    without any cache."""
    body = cast(torch.nn.Module, model.original_model.base_model)
    device = model_device(model)
    out = []
    for row in ids:
        hidden = body(input_ids=torch.tensor([row], device=device), use_cache=False)
        out.append(target_logprobs(model, hidden.last_hidden_state[0, :-1], torch.tensor(row[1:])))
    return out


@torch.inference_mode()
def full_forward_scores(model: TransformerBridge, ids: list[list[int]], start: int) -> torch.Tensor:
    """The exact path of :func:`batch_scores`: each sentence's log-likelihood from token
    ``start`` on, from one whole forward pass per sentence without any cache."""
    return reduce_scores(full_forward_token_logprobs(model, ids), "sentence", start=start)


def canary_sentences(model: TransformerBridge) -> list[list[int]]:
    """Three token-id sentences sharing a 5-token prefix, with suffixes of 1, 3 and 4 tokens."""
    prefix = canary_ids(model, 5)
    return [prefix + canary_ids(model, n + 1, offset=n)[1:] for n in (1, 3, 4)]


def check_cached_scoring(model: TransformerBridge) -> None:
    """Canary: shared-prefix cached scoring equals full forward passes (once per model):
    the ``sentence`` scores and every token's log-probability, from which all scoring
    modes are computed."""
    honour_cache_keyword()

    def compare() -> tuple[torch.Tensor, torch.Tensor]:
        ids = canary_sentences(model)
        plan = id_batches(ids, batch_size=2)  # two batches, one of them padded
        fast = [batch_scores(model, plan), *batch_token_logprobs(model, plan)]
        exact = [
            full_forward_scores(model, ids, len(plan.prefix)),
            *full_forward_token_logprobs(model, ids),
        ]
        return torch.cat(fast), torch.cat(exact)

    verify(model, "shared-prefix cached candidate scoring", compare, rtol=1e-4, atol=1e-3)


def probe_causal(
    model: TransformerBridge,
    facts: FactSet,
    *,
    scoring: Scoring = "sentence",
    batch_size: int = 32,
    progress: bool = True,
) -> ProbeResult:
    """Probe every fact with a causal LM: rank its candidates by ``scoring``
    (:data:`~mlneurons.methods.probing.SCORINGS`); P@1 = gold ranked first, ties broken
    against the gold (:func:`~mlneurons.methods.probing.result.tie_break`).
    :func:`mlneurons.probe` dispatches here."""
    if scoring not in SCORINGS:
        raise ValueError(f"scoring={scoring!r} is not valid; choose from {', '.join(SCORINGS)}")
    predictions = [
        _predict(model, facts, fact, candidates, batch_size, scoring)
        for fact, candidates in facts_with_candidates(facts, progress=progress)
    ]
    return causal_result(model, facts, predictions, scoring)


def probe_causal_scorings(
    model: TransformerBridge,
    facts: FactSet,
    scorings: Sequence[Scoring] = ("sentence", "sum", "mean", "sentence-ce"),
    *,
    batch_size: int = 32,
    progress: bool = True,
    uncertainty: Uncertainty = Uncertainty(),
) -> dict[str, ProbeResult]:
    """:func:`probe_causal` under several scoring modes at the cost of one: each fact's
    per-token log-probabilities are computed once and reduced for every mode. Each result
    records ``uncertainty`` as :func:`~mlneurons.methods.probing.probe` does, so its P@1
    carries the same Wilson and bootstrap intervals (``p_at_1_intervals``)."""
    unknown = [s for s in scorings if s not in SCORINGS]
    if unknown or not scorings:
        raise ValueError(f"scorings {list(scorings)}: choose from {', '.join(SCORINGS)}")
    check_cached_scoring(model)
    rows: dict[str, list[dict[str, Any]]] = {s: [] for s in scorings}
    for fact, candidates in facts_with_candidates(facts, progress=progress):
        filled = [facts.fill_spans(fact, c) for c in candidates]
        texts = [text for text, _ in filled]
        plan = candidate_batches(model.tokenizer, texts, batch_size)
        logprobs = batch_token_logprobs(model, plan)
        objects = object_positions(model.tokenizer, texts, [spans for _, spans in filled])
        for scoring in scorings:
            scores = reduce_scores(logprobs, scoring, start=len(plan.prefix), objects=objects)
            rows[scoring].append(ranked_prediction(fact, candidates, scores.tolist()))
    results: dict[str, ProbeResult] = {s: causal_result(model, facts, rows[s], s) for s in scorings}
    for result in results.values():
        result.settings["uncertainty"] = uncertainty.to_json()
    return results


def facts_with_candidates(
    facts: FactSet, *, progress: bool = True, desc: str = "probe"
) -> Iterator[tuple[Fact, list[str]]]:
    """Each fact with its candidates (its own, else its relation's), language by language,
    with a progress bar."""
    with tqdm(total=len(facts), desc=desc, unit="fact", disable=not progress) as bar:
        for group in facts.groups().values():
            for fact in group:
                yield fact, facts.candidates_for(fact)
                bar.update()


def causal_result(
    model: TransformerBridge,
    facts: FactSet,
    predictions: list[dict[str, Any]],
    scoring: Scoring = "sentence",
) -> ProbeResult:
    """A ProbeResult of causal candidate ranking."""
    return ProbeResult(
        facts.languages,
        facts.relations,
        predictions,
        fingerprint(model),
        {
            "method": "causal: ranking of each fact's candidates",
            "scoring": scoring,
            "scoring_rule": SCORINGS[scoring],
            "ties": TIE_RULE,
            "facts": facts.description,
        },
    )


def _predict(
    model: TransformerBridge,
    facts: FactSet,
    fact: Fact,
    candidates: list[str],
    batch_size: int,
    scoring: Scoring,
) -> dict[str, Any]:
    filled = [facts.fill_spans(fact, c) for c in candidates]
    scores = candidate_scores(
        model,
        [text for text, _ in filled],
        batch_size=batch_size,
        scoring=scoring,
        spans=[spans for _, spans in filled],
    )
    return ranked_prediction(fact, candidates, scores.tolist())
