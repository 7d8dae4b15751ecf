"""Factual probing of masked LMs (mBERT, XLM-R): mLAMA typed ranking and Zhao's matching.

Three entry points, all on a TransformerBridge whose ``original_model`` is a Hugging
Face ``*ForMaskedLM``:

* :func:`probe_masked`: mLAMA's typed querying (TyQ, Kassner et al., EACL 2021). For
  every (language, relation), with M the longest tokenized candidate, the template is
  filled with the subject and l = 1..M mask tokens; a candidate of l tokens is scored
  by the mean over its tokens of the log-softmax at its own mask positions (scoring
  ``mean``; ``sum`` sums them instead), and the prediction is the best-scoring of the
  fact's candidates, ties broken against the gold. The sentence-level modes of causal
  LMs (``sentence``, ``sentence-ce``) have no masked counterpart here.
  :func:`mlneurons.methods.probing.probe` calls it for masked LMs.
* :func:`zhao_match`: Zhao, Yoshinaga & Oba (EACL 2024), no candidates. For m = 1..M
  (M: the longest tokenized object among all objects of the (language, relation), its
  candidates, so M does not depend on which facts are probed) every mask takes
  its own greedy top-1 over the whole vocabulary. *Full match*: for some m the
  predicted ids are the gold ids; *partial match*: for some m every gold id is among
  the predicted ids. ``correct`` is the full match; :func:`partial_p_at_1` reads the
  partial one.
* :func:`mask_activations`: Zhao's PROBELESS features, the MLP neuron activations of
  every layer at the mask positions of the gold-length query, mean-pooled over them.

Queries are encoded as ``[CLS] text [SEP]`` (``<s> text </s>`` for XLM-R) from the
tokenizer's own ``cls_token``/``sep_token``: the bridge reloads tokenizers with
``add_bos_token=True``, which can drop a ``PreTrainedTokenizerFast``'s post-processor,
so the special tokens are not left to it. Objects are tokenized on their own, without
special tokens, and pieces that are a bare word-boundary marker (XLM-R's lone ``"▁"``,
id 6, which Zhao et al. strip) are dropped unless nothing else is left.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from mlneurons.data.facts import Fact, FactSet
from mlneurons.methods.probing.result import TIE_RULE, ProbeResult, ranked_prediction
from mlneurons.methods.probing.scoring import Scoring
from mlneurons.models.bridge import TransformerBridge
from mlneurons.models.fingerprint import fingerprint
from mlneurons.models.forward import model_device, pad_right
from mlneurons.models.hooks import is_masked_lm
from mlneurons.stats.collector import Labelled, collect

TYPED_RANKING = "masked: typed ranking (Kassner)"
"""``settings["method"]`` of :func:`probe_masked` results."""

ZHAO_MATCH = "masked: Zhao full/partial match"
"""``settings["method"]`` of :func:`zhao_match` results."""

_SPACE_MARKERS = "\u2581\u0120 \t\n"  # sentencepiece "▁", byte-level BPE "Ġ", whitespace


# ----------------------------------------------------------------------------- tokenizing


def _check_masked(model: TransformerBridge) -> Any:
    if not is_masked_lm(model):
        hf = getattr(model, "original_model", None)
        raise ValueError(
            f"masked-LM probing needs a TransformerBridge around a *ForMaskedLM model, "
            f"got {type(hf).__name__ if hf is not None else type(model).__name__}"
        )
    tokenizer = model.tokenizer
    if tokenizer is None or tokenizer.mask_token is None or tokenizer.mask_token_id is None:
        raise ValueError("masked-LM probing needs a tokenizer with a mask token")
    return tokenizer


def _encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of one sentence with the model's single-sequence special tokens."""
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    if cls_id is None or sep_id is None:
        return list(tokenizer(text)["input_ids"])
    return [cls_id, *tokenizer(text, add_special_tokens=False)["input_ids"], sep_id]


def object_ids(tokenizer: Any, obj: str) -> list[int]:
    """Token ids of an object label as it fills the ``[Y]`` slot.

    Pieces that are only a word-boundary marker (XLM-R's lone ``"▁"``) are dropped,
    as Zhao et al. strip them, unless the label has no other piece.
    """
    ids = list(tokenizer(obj, add_special_tokens=False)["input_ids"])
    tokens = tokenizer.convert_ids_to_tokens(ids)
    kept = [i for i, t in zip(ids, tokens) if t is None or t.strip(_SPACE_MARKERS)]
    return kept or ids


def _masked_query(facts: FactSet, fact: Fact, tokenizer: Any, n_masks: int) -> list[int]:
    """The fact's template with ``[X]`` -> subject and ``[Y]`` -> ``n_masks`` mask tokens."""
    text = facts.fill(fact, " ".join([tokenizer.mask_token] * n_masks))
    ids = _encode(tokenizer, text)
    found = sum(i == tokenizer.mask_token_id for i in ids)
    if found != n_masks:
        raise ValueError(
            f"query {text!r} encodes to {found} mask tokens instead of {n_masks} "
            f"(does the subject contain {tokenizer.mask_token!r}?)"
        )
    return ids


def _pad_id(tokenizer: Any) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


# ----------------------------------------------------------------------------- forward passes


def _mlm_head(hf: Any) -> Any | None:
    """The module that maps the body's hidden states to MLM logits, if it is one child."""
    body = hf.base_model
    heads = [m for _, m in hf.named_children() if m is not body]
    return heads[0] if len(heads) == 1 else None


@torch.inference_mode()
def mask_logits(model: TransformerBridge, rows: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    """MLM logits at the mask positions of each token row: ``[n_masks, vocab]`` per row.

    Rows are right-padded and run as one batch with their attention mask. Where the
    MLM head is a single module (``cls`` of BERT, ``lm_head`` of XLM-R) only the mask
    positions are unembedded; otherwise the full ``original_model`` forward is used.
    """
    tokenizer = model.tokenizer
    hf: Any = model.original_model  # a transformers model (methods per architecture)
    ids, attention = pad_right(rows, _pad_id(tokenizer), device=model_device(model))
    is_mask = (ids == tokenizer.mask_token_id) & attention.bool()
    head = _mlm_head(hf)
    logits = None
    if head is not None:
        hidden = hf.base_model(input_ids=ids, attention_mask=attention)[0]
        logits = head(hidden[is_mask])
        if logits.shape[-1] != hf.config.vocab_size:
            logits = None
    if logits is None:
        logits = hf(input_ids=ids, attention_mask=attention).logits[is_mask]
    counts = is_mask.sum(1).tolist()
    return list(logits.float().split(counts))


def _batched(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    if size < 1:
        raise ValueError(f"batch_size must be at least 1, got {size}")
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _groups(facts: FactSet) -> Iterable[tuple[str, str, list[Fact]]]:
    """``(lang, relation, facts)`` in the order of :func:`mlneurons.methods.probing.probe`."""
    for (lang, relation), group in facts.groups().items():
        yield lang, relation, group


# ----------------------------------------------------------------------------- typed ranking


@torch.inference_mode()
def typed_scores(
    model: TransformerBridge,
    facts: FactSet,
    lang: str,
    relation: str,
    *,
    batch_size: int = 32,
    progress: Any = None,
    scoring: Scoring = "mean",
) -> tuple[list[Fact], list[str], torch.Tensor]:
    """TyQ scores of one (language, relation): ``(facts, candidates, scores [F, C])``.

    ``scores[i, c]`` is the mean (``scoring="sum"``: the sum) over candidate ``c``'s
    tokens of the log-softmax at its own mask positions in fact ``i``'s query with
    ``len(tokens)`` masks. The candidates are the relation's (for BMLAMA the union of
    its facts' own).
    """
    if scoring not in ("mean", "sum"):
        raise ValueError(f"masked LMs score with 'mean' or 'sum', not {scoring!r}")
    tokenizer = _check_masked(model)
    group = facts.facts_for(lang, relation)
    candidates = facts.candidates[(lang, relation)]
    cand_ids = [object_ids(tokenizer, c) for c in candidates]
    scores = torch.full((len(group), len(candidates)), float("-inf"))
    for length in range(1, max(len(c) for c in cand_ids) + 1):
        which = [k for k, c in enumerate(cand_ids) if len(c) == length]
        if not which:  # no candidate of this length: its query would score nothing
            continue
        targets = torch.tensor([cand_ids[k] for k in which]).T  # [length, C_l]
        start = 0
        for batch in _batched(group, batch_size):
            rows = [_masked_query(facts, f, tokenizer, length) for f in batch]
            logprobs = torch.stack([x.log_softmax(-1) for x in mask_logits(model, rows)])
            index = targets.unsqueeze(0).expand(len(batch), -1, -1)  # [B, length, C_l]
            gathered = logprobs.gather(2, index.to(logprobs.device))  # [B, length, C_l]
            picked = (gathered.mean(1) if scoring == "mean" else gathered.sum(1)).cpu()
            scores[start : start + len(batch), which] = picked
            start += len(batch)
            if progress is not None:
                progress.update(len(batch))
    return group, candidates, scores


def probe_masked(
    model: TransformerBridge,
    facts: FactSet,
    *,
    scoring: Scoring = "mean",
    batch_size: int = 32,
    progress: bool = True,
) -> ProbeResult:
    """Probe a masked LM with mLAMA's typed ranking (TyQ, Kassner et al.); P@1 = gold first.

    Args:
        model: a TransformerBridge around a ``*ForMaskedLM`` model.
        facts: facts, templates and candidates; a fact's own candidates (BMLAMA) are
            ranked among themselves.
        scoring: ``mean`` (TyQ) or ``sum`` of the log-softmax at the candidate's masks.
        batch_size: queries (facts) per forward pass.

    Returns:
        A :class:`ProbeResult` whose predictions also carry ``gold_rank`` (how many
        candidates score strictly higher than the gold object) and ``tied``
        (:func:`~mlneurons.methods.probing.result.tie_break`).
    """
    _check_masked(model)
    predictions = []
    forwards = sum(
        len(group)
        * len({len(object_ids(model.tokenizer, c)) for c in facts.candidates[(lang, rel)]})
        for lang, rel, group in _groups(facts)
    )
    with tqdm(total=forwards, desc="probe (TyQ)", unit="query", disable=not progress) as bar:
        for lang, relation, _ in _groups(facts):
            group, candidates, scores = typed_scores(
                model, facts, lang, relation, batch_size=batch_size, progress=bar, scoring=scoring
            )
            column = {c: k for k, c in enumerate(candidates)}
            for i, fact in enumerate(group):
                own = facts.candidates_for(fact)
                row = scores[i, [column[c] for c in own]]
                gold_rank = int((row > scores[i, column[fact.object]]).sum())
                predictions.append(ranked_prediction(fact, own, row.tolist(), gold_rank=gold_rank))
    return ProbeResult(
        facts.languages,
        facts.relations,
        predictions,
        fingerprint(model),
        {
            "method": TYPED_RANKING,
            "scoring": scoring,
            "scoring_rule": f"{scoring} log-softmax of the candidate's tokens at its own masks",
            "ties": TIE_RULE,
            "facts": facts.description,
        },
    )


# ----------------------------------------------------------------------------- Zhao matching


def match(gold: Sequence[int], predictions: Iterable[Sequence[int]]) -> tuple[bool, bool]:
    """Zhao et al.'s ``(full, partial)`` match of gold ids against per-m predictions.

    Full: some prediction equals ``gold``. Partial: some prediction contains every
    gold id (so a full match is also a partial one).
    """
    gold = list(gold)
    full = partial = False
    for pred in predictions:
        pred = list(pred)
        full = full or pred == gold
        partial = partial or all(g in pred for g in gold)
    return full, partial


@torch.inference_mode()
def greedy_predictions(
    model: TransformerBridge,
    facts: FactSet,
    group: Sequence[Fact],
    n_masks: int,
    *,
    batch_size: int = 32,
) -> list[list[int]]:
    """Each fact's query with ``n_masks`` masks: the independent top-1 id of every mask."""
    tokenizer = _check_masked(model)
    out: list[list[int]] = []
    for batch in _batched(group, batch_size):
        rows = [_masked_query(facts, f, tokenizer, n_masks) for f in batch]
        out.extend(x.argmax(-1).tolist() for x in mask_logits(model, rows))
    return out


def zhao_match(
    model: TransformerBridge, facts: FactSet, *, batch_size: int = 32, progress: bool = True
) -> ProbeResult:
    """Probe a masked LM without candidates: Zhao et al.'s full and partial match.

    For m = 1..M, M the longest tokenized object among all objects (the candidates) of
    the (language, relation), whichever of its facts are probed, the masks are decoded
    independently (greedy top-1 over the full vocabulary). Bare word-boundary pieces are
    stripped from gold and predicted ids before matching.

    Returns:
        A :class:`ProbeResult`; ``correct`` is the full match. Each prediction also has
        ``partial`` (bool), ``gold_ids``, ``pred_ids`` (the ids for m = 1..M) and
        ``predicted``, the decoded prediction of the m equal to the gold length. Use
        :func:`partial_p_at_1` or :func:`partial_result` for the partial-match view.
    """
    tokenizer = _check_masked(model)
    predictions = []
    gold_of = {(f.lang, f.relation, f.object): object_ids(tokenizer, f.object) for f in facts.facts}
    longest_of = {
        key: max(len(object_ids(tokenizer, c)) for c in facts.candidates[key])
        for key in facts.groups()
    }
    forwards = sum(len(group) * longest_of[key] for key, group in facts.groups().items())
    with tqdm(total=forwards, desc="probe (Zhao)", unit="query", disable=not progress) as bar:
        for lang, relation, group in _groups(facts):
            golds = [gold_of[(lang, relation, f.object)] for f in group]
            longest = longest_of[(lang, relation)]
            by_m = []
            for m in range(1, longest + 1):
                by_m.append(greedy_predictions(model, facts, group, m, batch_size=batch_size))
                bar.update(len(group))
            for i, fact in enumerate(group):
                raw = [by_m[m][i] for m in range(longest)]
                preds = [_strip(tokenizer, p) for p in raw]
                full, partial = match(golds[i], preds)
                shown = raw[min(len(golds[i]), longest) - 1]  # m = gold length
                predictions.append(
                    {
                        "uuid": fact.uuid,
                        "lang": fact.lang,
                        "relation": fact.relation,
                        "gold": fact.object,
                        "predicted": tokenizer.decode(shown).strip(),
                        "correct": full,
                        "partial": partial,
                        "gold_ids": golds[i],
                        "pred_ids": raw,
                    }
                )
    return ProbeResult(
        facts.languages,
        facts.relations,
        predictions,
        fingerprint(model),
        {
            "method": ZHAO_MATCH,
            "correct": "full match: for some m in 1..M the m greedy mask ids equal the gold ids",
            "partial": "partial match: for some m every gold id is among the m greedy ids; "
            "see mlneurons.methods.probing.masked.partial_p_at_1",
            "facts": facts.description,
        },
    )


def _strip(tokenizer: Any, ids: Sequence[int]) -> list[int]:
    tokens = tokenizer.convert_ids_to_tokens(list(ids))
    return [i for i, t in zip(ids, tokens) if t is None or t.strip(_SPACE_MARKERS)]


def partial_result(result: ProbeResult) -> ProbeResult:
    """The partial-match view of a :func:`zhao_match` result: ``correct`` := ``partial``.

    Its ``p_at_1()`` is the partial-match P@1 and its ``jaccard()`` the partial-match
    Jaccard.
    """
    if any("partial" not in p for p in result.predictions):
        raise ValueError(
            "predictions have no 'partial' key: partial match needs a zhao_match result "
            f"(this one was made with {result.settings.get('method')!r})"
        )
    return ProbeResult(
        list(result.languages),
        list(result.relations),
        [dict(p, correct=bool(p["partial"])) for p in result.predictions],
        dict(result.model),
        dict(result.settings, correct=result.settings.get("partial", "partial match")),
    )


def partial_p_at_1(result: ProbeResult) -> dict[str, dict[str, float]]:
    """Partial-match P@1 of a :func:`zhao_match` result, in :meth:`ProbeResult.p_at_1`'s layout."""
    return partial_result(result).p_at_1()


# ----------------------------------------------------------------------------- activations


@torch.inference_mode()
def mask_activations(
    model: TransformerBridge,
    facts: FactSet,
    *,
    batch_size: int = 32,
    keys: Iterable[tuple[str, str]] | None = None,
    progress: bool = False,
) -> dict[tuple[str, str], torch.Tensor]:
    """MLP neuron activations at the masks of each fact's gold-length query (PROBELESS features).

    Zhao et al.'s adaptation of PROBELESS: the act_fn output of every layer's MLP
    (``blocks.{l}.mlp.hook_post`` on BERT/XLM-R), at the mask positions of the query
    with as many masks as the gold object has tokens, mean-pooled over the masks and
    flattened layer-major. A collector pass with one label per fact, each mask weighing 1.

    Args:
        model: a TransformerBridge around a ``*ForMaskedLM`` model.
        facts: the facts.
        batch_size: queries per forward pass (right-padded, with an attention mask).
        keys: only these ``(uuid, lang)`` (e.g. the full-match-correct facts).

    Returns:
        ``(uuid, lang) -> float32 CPU tensor [n_layers * d_mlp]``.
    """
    tokenizer = _check_masked(model)
    wanted = None if keys is None else set(keys)
    chosen = [f for f in facts.facts if wanted is None or (f.uuid, f.lang) in wanted]
    if not chosen:
        return {}

    def batches() -> Iterator[Labelled]:
        for start, batch in zip(range(0, len(chosen), batch_size), _batched(chosen, batch_size)):
            rows = [
                _masked_query(facts, f, tokenizer, len(object_ids(tokenizer, f.object)))
                for f in batch
            ]
            ids, attention = pad_right(rows, _pad_id(tokenizer))
            is_mask = (ids == tokenizer.mask_token_id) & attention.bool()
            labels = torch.arange(start, start + len(batch))
            yield Labelled(ids, labels, weights=is_mask.float(), attention_mask=attention)

    collected = collect(
        model,
        batches(),
        labels=[f.label for f in chosen],
        dtype=torch.float32,
        total=-(-len(chosen) // batch_size),
        desc="mask activations",
        progress=progress,
    )
    sums = collected.stacked("sums")  # [fact, layer, neuron]
    flat = sums.flatten(1) / collected.weights.float()[:, None]
    return {(f.uuid, f.lang): flat[i].clone() for i, f in enumerate(chosen)}


__all__ = [
    "TYPED_RANKING",
    "ZHAO_MATCH",
    "greedy_predictions",
    "mask_activations",
    "mask_logits",
    "match",
    "object_ids",
    "partial_p_at_1",
    "partial_result",
    "probe_masked",
    "typed_scores",
    "zhao_match",
]
