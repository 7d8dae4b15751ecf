"""Per-layer readouts of "which language is the model in".

* Sentence-embedding similarity (SES, Tang et al. 2024, ACL, "Language-Specific
  Neurons"): the cosine between mean-pooled residual streams of parallel sentences,
  per layer and pair of languages. High similarity in the middle layers is the shared,
  language-agnostic space; its drop at the top is where language-specific neurons act.
* Logit lens on the latent language (Wendler et al. 2024, "Do Llamas Work in
  English?"): the final norm and unembedding applied to the residual stream at the
  last position of few-shot translation prompts; per layer, the probability of the
  answer in the target language against that of its English equivalent.

Layers are the residual stream after each block (``blocks.{l}.hook_resid_post``,
``l = 0 .. n_layers-1``): the embeddings are left out, so the layer axis lines up
with the per-layer counts of language neurons (LAPE), and the last layer is the one
the model's own output reads.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from jaxtyping import Float
from tqdm.auto import tqdm

from mlneurons.data import parallel
from mlneurons.data.builtin_text import normalize_language
from mlneurons.data.facts import BUILTIN_LANGUAGES
from mlneurons.data.parallel import ENGLISH
from mlneurons.errors import UserError
from mlneurons.evaluation.uncertainty import Estimate, Uncertainty, percentile, weights
from mlneurons.models.bridge import TransformerBridge
from mlneurons.models.fingerprint import fingerprint
from mlneurons.models.forward import model_device, pad_right, run_body, unembed
from mlneurons.results import Result

SES_FILE = "sentence_similarity.safetensors"
LATENT_FILE = "latent_language.safetensors"

LANGUAGE_NAMES: dict[str, str] = {
    "ar": "العربية",
    "de": "Deutsch",
    "en": "English",
    "es": "Español",
    "fr": "Français",
    "hi": "हिन्दी",
    "id": "Bahasa Indonesia",
    "it": "Italiano",
    "ja": "日本語",
    "ko": "한국어",
    "nl": "Nederlands",
    "pl": "Polski",
    "pt": "Português",
    "ru": "Русский",
    "tr": "Türkçe",
    "vi": "Tiếng Việt",
    "zh": "中文",
}
"""Each language's name in itself, as the translation prompts name it."""


def _bos(tokenizer: Any) -> list[int]:
    bos = getattr(tokenizer, "bos_token_id", None)
    return [] if bos is None else [int(bos)]


def _token_ids(tokenizer: Any, text: str) -> list[int]:
    """``[BOS, *ids]`` of a text (BOS only when the tokenizer has one)."""
    return _bos(tokenizer) + list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _layer_names(model: TransformerBridge) -> list[str]:
    return [f"blocks.{layer}.hook_resid_post" for layer in range(int(model.cfg.n_layers))]


def _check_positive(name: str, value: int) -> None:
    if value < 1:
        raise UserError(f"{name} must be at least 1, got {value}")


def _resampled_means(
    items: Float[np.ndarray, "item column"], how: Uncertainty
) -> Float[np.ndarray, "sample column"]:
    """Per bootstrap resample of the items (the rows), the mean of every column: one
    weights matrix product, the same resamples for every column."""
    w = weights(items.shape[0], how.samples, how.seed)
    means: np.ndarray = (w @ items) / w.sum(-1, keepdims=True)
    return means


def _column_intervals(
    items: Float[np.ndarray, "item column"], how: Uncertainty, what: str
) -> list[Estimate]:
    """Per column, the mean over the items with its percentile bootstrap interval over them."""
    draws = _resampled_means(items, how)
    method = f"bootstrap over {what} ({how.samples} resamples)"
    n = items.shape[0]
    return [
        percentile(float(value), draws[:, j], n, method, how)
        for j, value in enumerate(items.mean(0))
    ]


# --------------------------------------------------------------------------------------
# Sentence-embedding similarity (Tang et al. 2024)


@dataclass
class SentenceSimilarity(Result):
    """Layer-wise sentence-embedding similarity (SES) of parallel sentences (Tang et al. 2024).

    Attributes:
        languages: order of both language axes.
        similarity: ``[layer, language, language]``: mean over items of the cosine
            between the mean-pooled ``hook_resid_post`` of parallel sentences.
        n_sentences: parallel items averaged.
        model: fingerprint of the model.
        settings: how sentences were pooled; ``uncertainty``: how intervals are computed.
        item_similarity: ``[item, layer, language, language]``: each item's cosines, the
            items the intervals resample (None in files saved before intervals).
    """

    TENSOR_FILE: ClassVar[str] = SES_FILE

    languages: list[str]
    similarity: Float[torch.Tensor, "layer language language"]
    n_sentences: int
    model: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    item_similarity: Float[torch.Tensor, "item layer language language"] | None = None

    def to_json(self) -> dict[str, Any]:
        """The fields and, with per-item cosines, ``intervals``: per layer the mean SES over
        pairs with its bootstrap interval over the sentences, and the peak layer with the
        layers not distinguishable from it."""
        data: dict[str, Any] = {
            "languages": self.languages,
            "n_sentences": self.n_sentences,
            "model": self.model,
            "settings": self.settings,
        }
        found = self.mean_offdiagonal_intervals()
        if found is not None:
            peak, ties = self.peak()
            data["intervals"] = {
                "mean_offdiagonal": [e.to_json() for e in found],
                "peak": peak,
                "peak_ties": ties,
            }
        return data

    def to_tensors(self) -> dict[str, Any]:
        tensors = {"similarity": self.similarity}
        if self.item_similarity is not None:
            tensors["item_similarity"] = self.item_similarity
        return tensors

    @property
    def uncertainty(self) -> Uncertainty:
        """The interval settings recorded (the defaults for results saved before them)."""
        return Uncertainty.of(self.settings)

    def item_offdiagonal(self) -> Float[torch.Tensor, "item layer"] | None:
        """Per item and layer, the mean cosine over pairs of different languages (None
        without per-item cosines)."""
        if self.item_similarity is None:
            return None
        n = len(self.languages)
        off = ~torch.eye(n, dtype=torch.bool)
        return self.item_similarity[:, :, off].double().mean(-1)

    def mean_offdiagonal_intervals(self) -> list[Estimate] | None:
        """Per layer, :meth:`mean_offdiagonal` with its percentile bootstrap interval over
        the parallel sentences (None in files saved without per-item cosines)."""
        items = self.item_offdiagonal()
        if items is None:
            return None
        return _column_intervals(items.numpy(), self.uncertainty, "sentences")

    def peak(self) -> tuple[int, list[int]]:
        """The layer of the highest mean SES over pairs and the other layers whose paired
        bootstrap interval (over sentences) of their difference to it holds 0: the layers
        the data cannot tell from the peak (none without per-item cosines)."""
        mean = self.mean_offdiagonal()
        top = int(mean.argmax())
        items = self.item_offdiagonal()
        if items is None:
            return top, []
        gaps = (items[:, top : top + 1] - items).numpy()  # [item, layer], >= 0 on average
        draws = _resampled_means(gaps, self.uncertainty)
        tail = (1 - self.uncertainty.confidence) / 2 * 100
        lower = np.percentile(draws, tail, axis=0)
        return top, [layer for layer in range(self.n_layers) if layer != top and lower[layer] <= 0]

    @property
    def n_layers(self) -> int:
        return int(self.similarity.shape[0])

    def mean_offdiagonal(self) -> Float[torch.Tensor, " layer"]:
        """Per layer, the mean SES over pairs of different languages."""
        n = len(self.languages)
        off = ~torch.eye(n, dtype=torch.bool)
        return self.similarity[:, off].mean(-1)

    def pair(self, a: str, b: str) -> Float[torch.Tensor, " layer"]:
        """SES of one pair of languages per layer."""
        for lang in (a, b):
            if lang not in self.languages:
                raise UserError(f"no language {lang!r} in this result; it has {self.languages}")
        return self.similarity[:, self.languages.index(a), self.languages.index(b)]


def _keep(act: torch.Tensor, *, hook: Any, name: str, store: dict[str, torch.Tensor]) -> None:
    store[name] = act


def _residual_batches(
    model: TransformerBridge, rows: list[list[int]], batch_size: int, *, desc: str, progress: bool
) -> Iterator[tuple[int, torch.Tensor, Float[torch.Tensor, "layer batch pos d_model"]]]:
    """Right-padded batches of ``rows`` through the model: per batch its first row's index,
    its attention mask and every layer's ``hook_resid_post``."""
    names = _layer_names(model)
    device = model_device(model)
    for start in tqdm(range(0, len(rows), batch_size), desc=desc, disable=not progress):
        tokens, mask = pad_right(rows[start : start + batch_size], device=device)
        store: dict[str, torch.Tensor] = {}
        hooks = [(name, functools.partial(_keep, name=name, store=store)) for name in names]
        with model.hooks(fwd_hooks=hooks):
            run_body(model, tokens, attention_mask=mask)
        yield start, mask, torch.stack([store[name] for name in names])


@torch.inference_mode()
def _pooled(
    model: TransformerBridge, rows: list[list[int]], skip: int, batch_size: int
) -> Float[torch.Tensor, "layer sentence d_model"]:
    """Per layer, each row's ``hook_resid_post`` averaged over its positions from ``skip``
    on (right-padded batches; pads weigh 0), in float32 on the CPU."""
    out: list[torch.Tensor] = []
    for _, mask, states in _residual_batches(model, rows, batch_size, desc="SES", progress=False):
        weights = mask.float()
        weights[:, :skip] = 0.0
        weights /= weights.sum(1, keepdim=True)
        out.append(torch.einsum("bp,lbpd->lbd", weights, states.float()).cpu())
    return torch.cat(out, 1)


def sentence_similarity(
    model: TransformerBridge,
    sentences: Mapping[str, Sequence[str]],
    *,
    center: bool = False,
    batch_size: int = 8,
    progress: bool = True,
    uncertainty: Uncertainty = Uncertainty(),
) -> SentenceSimilarity:
    """Layer-wise sentence-embedding similarity (SES) of parallel sentences (Tang et al. 2024).

    Each sentence is tokenized as ``[BOS, *tokens]``; its embedding at layer l is the
    mean of ``blocks.{l}.hook_resid_post`` over its tokens, BOS excluded (Gemma's BOS
    residual has a norm ~10x the others' and would make every pair of sentences alike).
    Batches are right-padded with an attention mask; pads are not pooled. Then
    ``SES[l, a, b]`` = mean over items i of cos(embedding of a_i, embedding of b_i).
    Tang et al. take plain cosines; ``center=True`` first subtracts each layer's mean
    embedding over all sentences of all languages (the residual stream's common
    direction, which keeps plain cosines near 1 in every layer of Gemma 3).

    Args:
        model: a TransformerBridge.
        sentences: language -> sentences; item i of every language is the same sentence.
        center: subtract the mean embedding of each layer before the cosines.
        batch_size: sentences per forward pass.
        progress: show a progress bar per language.
        uncertainty: the level and bootstrap of the intervals over sentences (each
            item's cosines are kept for them), recorded in ``settings``.

    Raises:
        UserError: fewer than 2 languages, lists of different lengths or empty, a
            sentence without tokens, or ``batch_size`` below 1.
    """
    _check_positive("batch_size", batch_size)
    languages = list(sentences)
    if len(languages) < 2:
        raise UserError(f"SES needs at least 2 languages, got {languages}")
    lengths = {lang: len(sentences[lang]) for lang in languages}
    if len(set(lengths.values())) != 1:
        raise UserError(f"parallel sentences need the same number per language, got {lengths}")
    n = lengths[languages[0]]
    if n == 0:
        raise UserError(f"no sentences given for languages {languages}")
    tokenizer = model.tokenizer
    skip = len(_bos(tokenizer))
    rows: dict[str, list[list[int]]] = {}
    for lang in languages:
        rows[lang] = [_token_ids(tokenizer, str(s)) for s in sentences[lang]]
        for i, row in enumerate(rows[lang]):
            if len(row) <= skip:
                raise UserError(f"sentence {i} of {lang!r} has no tokens: {sentences[lang][i]!r}")
    pooled = []
    for lang in tqdm(languages, desc="SES", disable=not progress):
        pooled.append(_pooled(model, rows[lang], skip, batch_size))
    embeddings = torch.stack(pooled, 1).double()  # [layer, language, item, d_model]
    if center:
        embeddings = embeddings - embeddings.mean((1, 2), keepdim=True)
    units = torch.nn.functional.normalize(embeddings, dim=-1)
    items = torch.einsum("laid,lbid->ilab", units, units)  # [item, layer, lang, lang]
    return SentenceSimilarity(
        languages=languages,
        similarity=items.mean(0).float(),
        n_sentences=n,
        model=fingerprint(model),
        settings={
            "hook": "blocks.{layer}.hook_resid_post",
            "pooling": "mean over tokens, BOS excluded",
            "center": center,
            "batch_size": batch_size,
            "uncertainty": uncertainty.to_json(),
        },
        item_similarity=items.float(),
    )


# --------------------------------------------------------------------------------------
# Logit lens on the latent language (Wendler et al. 2024)


@dataclass
class LatentLanguage(Result):
    """Logit-lens probabilities of the answer in the target language and in English, per
    layer, at the last position of few-shot translation prompts (Wendler et al. 2024).

    Attributes:
        source: language of the word to translate.
        target: language of the answer.
        item_p_target: ``[item, layer]``: probability summed over the target word's
            prefix tokens.
        item_p_english: ``[item, layer]``: the same for the English word.
        words: per kept item ``{"source", "target", "en"}``.
        n_dropped: items dropped because the target and English token sets overlap (or
            one is empty).
        n_copies: items dropped because the source and English token sets overlap (the
            source word, e.g. fr "Paris", is then readable as English by copying it);
            0 when ``drop_copies`` was off or the source is English.
        n_shots: translation examples before the query.
        seed: seed of the examples' choice.
        model: fingerprint of the model.
        settings: ``uncertainty``: how the intervals over items are computed.
    """

    TENSOR_FILE: ClassVar[str] = LATENT_FILE

    source: str
    target: str
    item_p_target: Float[torch.Tensor, "item layer"]
    item_p_english: Float[torch.Tensor, "item layer"]
    words: list[dict[str, str]]
    n_dropped: int
    n_copies: int = 0
    n_shots: int = 4
    seed: int = 0
    model: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The fields and ``intervals``: per layer P(target), P(en) and their difference with
        bootstrap intervals over the words, and the crossover layer's interval."""
        found = self.intervals()
        return {
            "source": self.source,
            "target": self.target,
            "words": self.words,
            "n_dropped": self.n_dropped,
            "n_copies": self.n_copies,
            "n_shots": self.n_shots,
            "seed": self.seed,
            "model": self.model,
            "settings": self.settings,
            "intervals": {
                **{key: [e.to_json() for e in column] for key, column in found.items()},
                "crossover": self.crossover_interval().to_json(),
            },
        }

    def to_tensors(self) -> dict[str, Any]:
        return {"item_p_target": self.item_p_target, "item_p_english": self.item_p_english}

    @property
    def n_items(self) -> int:
        return int(self.item_p_target.shape[0])

    @property
    def n_layers(self) -> int:
        return int(self.item_p_target.shape[1])

    @property
    def p_target(self) -> Float[torch.Tensor, " layer"]:
        """Mean over items of P(target word) per layer."""
        return self.item_p_target.mean(0)

    @property
    def p_english(self) -> Float[torch.Tensor, " layer"]:
        """Mean over items of P(English word) per layer."""
        return self.item_p_english.mean(0)

    def crossover_layer(self) -> int | None:
        """The first layer from which mean P(target) > mean P(English) in every later layer
        (None when not even the last layer has it)."""
        above = (self.p_target > self.p_english).tolist()
        layer = None
        for index in range(len(above) - 1, -1, -1):
            if not above[index]:
                break
            layer = index
        return layer

    @property
    def uncertainty(self) -> Uncertainty:
        """The interval settings recorded (the defaults for results saved before them)."""
        return Uncertainty.of(self.settings)

    def intervals(self) -> dict[str, list[Estimate]]:
        """Per layer, with percentile bootstrap intervals over the words: ``p_target``,
        ``p_english`` and ``difference`` (P(target) - P(en); where its interval holds 0 the
        words do not tell which language leads at that layer)."""
        target = self.item_p_target.double().numpy()
        english = self.item_p_english.double().numpy()
        how = self.uncertainty
        return {
            "p_target": _column_intervals(target, how, "words"),
            "p_english": _column_intervals(english, how, "words"),
            "difference": _column_intervals(target - english, how, "words"),
        }

    def crossover_interval(self) -> Estimate:
        """:meth:`crossover_layer` with its percentile bootstrap interval over the words
        (lower end rounded down, upper end up); ``n_layers`` stands for "never", in the
        value as in the ends."""
        how = self.uncertainty
        layer = self.crossover_layer()
        value = float(self.n_layers if layer is None else layer)
        target = _resampled_means(self.item_p_target.double().numpy(), how)
        english = _resampled_means(self.item_p_english.double().numpy(), how)
        above = target > english  # [sample, layer]
        tail = np.logical_and.accumulate(above[:, ::-1], axis=1)  # True on the above suffix
        draws = self.n_layers - tail.sum(1)
        method = f"bootstrap over words ({how.samples} resamples); {self.n_layers} = never"
        found = percentile(value, draws, self.n_items, method, how)
        return Estimate(
            value,
            math.floor(found.lo),
            math.ceil(found.hi),
            found.n,
            method,
            how.confidence,
            how.seed,
        )


_VOCABULARY: dict[int, tuple[Any, dict[str, list[int]]]] = {}


def vocabulary_strings(tokenizer: Any) -> dict[str, list[int]]:
    """Decoded string -> token ids, over the whole vocabulary, decoded once per tokenizer
    (Gemma 3's 262k tokens take about 3.5 s)."""
    cached = _VOCABULARY.get(id(tokenizer))
    if cached is None or cached[0] is not tokenizer:
        strings = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        index: dict[str, list[int]] = {}
        for token_id, text in enumerate(strings):
            index.setdefault(text, []).append(token_id)
        cached = (tokenizer, index)  # the tokenizer stays alive, so its id is not reused
        _VOCABULARY[id(tokenizer)] = cached
    return cached[1]


def prefix_token_ids(tokenizer: Any, word: str) -> list[int]:
    """Ids of the tokens whose decoded string is a non-empty prefix of ``word`` or of
    ``" " + word`` (Wendler et al.'s answer tokens); the whitespace-only prefix ``" "`` is
    left out. Sorted."""
    index = vocabulary_strings(tokenizer)
    word = word.strip()
    prefixes = {text[:k] for text in (word, " " + word) for k in range(1, len(text) + 1)}
    return sorted({i for p in prefixes if p.strip() for i in index.get(p, [])})


def translation_prompt(
    source: str, target: str, shots: Sequence[tuple[str, str]], word: str
) -> str:
    """Wendler et al.'s few-shot translation prompt, languages named in themselves:
    ``Français: "X1" - 中文: "Y1"\\n ... Français: "X" - 中文: "``."""
    src, tgt = LANGUAGE_NAMES.get(source, source), LANGUAGE_NAMES.get(target, target)
    lines = [f'{src}: "{x}" - {tgt}: "{y}"' for x, y in shots]
    return "\n".join([*lines, f'{src}: "{word}" - {tgt}: "'])


def final_norm(model: TransformerBridge) -> Any:
    """The model's final normalisation (the bridge's ``ln_final``: Llama/Gemma's
    ``model.norm``, GPT-2's ``ln_f``), which the logit lens applies before unembedding."""
    norm = getattr(model, "ln_final", None)
    if norm is None:
        raise ValueError(f"model {fingerprint(model)['name']!r} has no final norm (ln_final)")
    return norm


@torch.inference_mode()
def _last_position_lens(
    model: TransformerBridge,
    rows: list[list[int]],
    id_sets: list[list[int]],
    batch_size: int,
    progress: bool,
) -> Float[torch.Tensor, "set item layer"]:
    """Per row, layer and id set: the logit-lens probability summed over the set's ids, at
    the row's last position. ``id_sets`` holds, per set kind, one id list per row, laid out
    as ``[kind0 row0, kind0 row1, ..., kind1 row0, ...]``. Every layer of a batch is
    unembedded in one call (the vocabulary matrix is streamed once per batch, not per layer)."""
    norm = final_norm(model)
    n_rows, kinds = len(rows), len(id_sets) // len(rows)
    out = torch.zeros(kinds, n_rows, model.cfg.n_layers)
    batches = _residual_batches(model, rows, batch_size, desc="logit lens", progress=progress)
    for start, mask, states in batches:
        n_layers, batch = states.shape[:2]
        last = mask.sum(1) - 1  # right-padded: the last real position of each row
        at_last = states[:, torch.arange(batch, device=states.device), last]  # [layer, batch, d]
        probs = unembed(model, norm(at_last.flatten(0, 1))).float().softmax(-1)
        probs = probs.view(n_layers, batch, -1)
        for b in range(batch):
            for kind in range(kinds):
                ids = torch.tensor(id_sets[kind * n_rows + start + b], device=probs.device)
                out[kind, start + b] = probs[:, b, ids].sum(-1).cpu()
    return out


def latent_language(
    model: TransformerBridge,
    *,
    source: str,
    target: str,
    words: Mapping[str, Sequence[str]] | None = None,
    n_shots: int = 4,
    seed: int = 0,
    drop_copies: bool = True,
    batch_size: int = 8,
    progress: bool = True,
    uncertainty: Uncertainty = Uncertainty(),
) -> LatentLanguage:
    """Logit lens on the latent language of translation (Wendler et al. 2024).

    For each item (a word in ``source``, ``target`` and English), the prompt holds
    ``n_shots`` translations of other items (chosen with ``seed``) and then the item's
    source word (:func:`translation_prompt`). At its last position, for every layer,
    the final norm and unembedding are applied to ``blocks.{l}.hook_resid_post``
    (soft-capped as the model's own logits), and the softmax is summed over the ids of
    :func:`prefix_token_ids` of the target word and, separately, of the English word.
    Items whose two id sets share a token are dropped, as are items where either set is
    empty (no token is a prefix of the word); ``n_dropped`` counts both. With
    ``drop_copies``, items whose source word shares a prefix token with the English word
    (fr "Paris", de "Berlin") are dropped too and counted in ``n_copies``: copying the
    source word from the prompt would read as English.

    Args:
        model: a TransformerBridge.
        source: language of the words to translate (may be ``"en"``).
        target: language of the answer (not ``"en"``: it is compared with English).
        words: language -> parallel words (item i is the same word in every language);
            default :func:`~mlneurons.data.parallel.builtin_parallel_words`.
        n_shots: translation examples per prompt.
        seed: seed of the examples' choice.
        drop_copies: drop items whose source and English words share a token.
        batch_size: prompts per forward pass (right-padded).
        progress: show a progress bar.
        uncertainty: the level and bootstrap of the intervals over words
            (:meth:`LatentLanguage.intervals`), recorded in ``settings``.

    Raises:
        UserError: an unknown language, ``source == target``, target English, words of
            different lengths, too few words for ``n_shots``, or every item dropped.
    """
    _check_positive("batch_size", batch_size)
    if n_shots < 0:
        raise UserError(f"n_shots must be at least 0, got {n_shots}")
    if words is None:
        available = [lang for lang in BUILTIN_LANGUAGES if lang in LANGUAGE_NAMES]
    else:
        available = list(words)
        lengths = {lang: len(words[lang]) for lang in available}
        if len(set(lengths.values())) > 1:
            raise UserError(f"parallel words need the same number per language, got {lengths}")
    if ENGLISH not in available:
        raise UserError(
            f"the words have no English ({ENGLISH!r}), the latent language compared with; "
            f"they have {', '.join(available)}"
        )
    source = normalize_language(source, available)
    target = normalize_language(target, available)
    if source == target:
        raise UserError(f"source and target are both {source!r}; give two different languages")
    if target == ENGLISH:
        raise UserError(f"target {target!r} is the latent language compared with; choose another")
    langs = list(dict.fromkeys([source, target, ENGLISH]))
    if words is None:
        table = parallel.builtin_parallel_words(langs)
    else:
        table = {k: list(words[k]) for k in langs}
    n_words = len(table[source])
    if n_words < n_shots + 1:
        raise UserError(
            f"n_shots={n_shots} needs at least {n_shots + 1} words, but there are {n_words}; "
            f"give more words or valid n_shots 0..{max(n_words - 1, 0)}"
        )
    tokenizer = model.tokenizer
    target_ids = [prefix_token_ids(tokenizer, w) for w in table[target]]
    english_ids = [prefix_token_ids(tokenizer, w) for w in table[ENGLISH]]
    keep = [
        i
        for i in range(n_words)
        if target_ids[i] and english_ids[i] and not set(target_ids[i]) & set(english_ids[i])
    ]
    n_dropped = n_words - len(keep)
    if drop_copies and source != ENGLISH:
        source_ids = [prefix_token_ids(tokenizer, w) for w in table[source]]
        keep = [i for i in keep if not set(source_ids[i]) & set(english_ids[i])]
    if not keep:
        raise UserError(
            f"all {n_words} items were dropped: in every item the target ({target}) or the "
            "source word shares tokens with the English word (or has none)"
        )
    rows = []
    for i in keep:
        others = [j for j in range(n_words) if j != i]
        shots = random.Random(f"{seed}:{i}").sample(others, n_shots)
        pairs = [(table[source][j], table[target][j]) for j in shots]
        rows.append(
            _token_ids(tokenizer, translation_prompt(source, target, pairs, table[source][i]))
        )
    sets = [target_ids[i] for i in keep] + [english_ids[i] for i in keep]
    probs = _last_position_lens(model, rows, sets, batch_size, progress)
    return LatentLanguage(
        source=source,
        target=target,
        item_p_target=probs[0],
        item_p_english=probs[1],
        words=[
            {"source": table[source][i], "target": table[target][i], "en": table[ENGLISH][i]}
            for i in keep
        ],
        n_dropped=n_dropped,
        n_copies=n_words - n_dropped - len(keep),
        n_shots=n_shots,
        seed=seed,
        model=fingerprint(model),
        settings={"uncertainty": uncertainty.to_json()},
    )


__all__ = [
    "LANGUAGE_NAMES",
    "LatentLanguage",
    "SentenceSimilarity",
    "final_norm",
    "latent_language",
    "prefix_token_ids",
    "sentence_similarity",
    "translation_prompt",
    "vocabulary_strings",
]
