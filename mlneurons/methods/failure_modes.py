"""Recall failures and translation failures (Lu, Zhang, Eickhoff & Pavlick, EMNLP 2025,
"Paths Not Taken").

Lu et al. find that a multilingual model answers a non-English factual query by recalling
the answer in English in its middle layers and translating it in its late layers, and split
the errors into **recall failures** (the English answer never comes up: the fact was not
recalled) and **translation failures** (the English answer comes up in the middle layers,
and the output language loses it).

For every fact answered correctly in the pivot language (English) and wrongly in language
l, the logit lens (final norm and unembedding on ``blocks.{layer}.hook_resid_post``) is read
at the prediction position of l's prompt: the position before the object, whose next token
is the object's first token (the position PROBELESS reads, in the candidate scoring's
sentence). Per layer it records the probability and the best vocabulary rank of

* the **English answer**: the first token of the English gold object, with and without a
  leading space, and its first token in the English sentence;
* **l's answer**: the same for l's gold object (its first token in l's sentence included).

A token that is only whitespace is skipped for the next. Facts whose two token sets share
a token cannot tell the languages apart and are set aside (``shared``).

**"Rises"**, exactly (this project's operational reading; Lu et al. inspect the lens): the
English answer rises when, in some layer of the middle band (layers ``floor(start·L)`` to
``ceil(end·L) - 1`` of ``L``; default the middle half, 0.25 to 0.75),

* ``criterion="rank"`` (default): its best token's rank among the whole vocabulary is below
  ``top_k`` (default 10; rank 0 = the most probable token; tokens tied with it do not count
  above it), or
* ``criterion="probability"``: its probability exceeds that of l's answer.

A translation failure is a failure whose English answer rises; a recall failure one where
it does not. The curves are kept, so the split can be redrawn with other parameters
(:meth:`FailureModes.modes`).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, get_args

import torch
from jaxtyping import Float, Int
from tqdm.auto import tqdm

from mlneurons.config import one_of
from mlneurons.data.facts import Fact, FactSet
from mlneurons.errors import UserError
from mlneurons.evaluation.uncertainty import Estimate, Uncertainty, wilson
from mlneurons.methods.probing.causal import common_prefix_length
from mlneurons.methods.probing.result import ProbeResult
from mlneurons.methods.readouts import final_norm
from mlneurons.models.bridge import TransformerBridge
from mlneurons.models.fingerprint import fingerprint
from mlneurons.models.forward import model_device, pad_right, run_body, unembed
from mlneurons.models.tokens import sentence_ids
from mlneurons.results import Result

FAILURE_MODES_FILE = "failure_modes.safetensors"

RiseCriterion = Literal["rank", "probability"]
"""When the English answer "rises" in a middle layer: its rank enters the top-k of the
vocabulary (``rank``), or its probability exceeds that of the language's answer
(``probability``)."""
RISE_CRITERIA: tuple[str, ...] = get_args(RiseCriterion)

TRANSLATION, RECALL = "translation", "recall"


def middle_band(n_layers: int, start: float, end: float) -> list[int]:
    """The layers ``floor(start·n_layers)`` .. ``ceil(end·n_layers) - 1`` (0 <= start < end <= 1).

    Raises:
        UserError: bounds outside [0, 1], not increasing, or a band without layers.
    """
    if not 0 <= start < end <= 1:
        raise UserError(
            f"the middle band ({start}, {end}) needs 0 <= start < end <= 1, e.g. (0.25, 0.75)"
        )
    layers = list(range(math.floor(start * n_layers), math.ceil(end * n_layers)))
    if not layers:
        raise UserError(f"the band ({start}, {end}) holds no layer of {n_layers}")
    return layers


def rises(
    rank_english: Sequence[int] | torch.Tensor,
    p_english: Sequence[float] | torch.Tensor,
    p_answer: Sequence[float] | torch.Tensor,
    band: Sequence[int],
    *,
    criterion: RiseCriterion = "rank",
    top_k: int = 10,
) -> bool:
    """Whether the English answer rises in a layer of ``band`` (one fact's per-layer curves):
    its best rank is below ``top_k`` (``rank``), or its probability exceeds the language's
    answer's (``probability``)."""
    one_of("criterion", criterion, RISE_CRITERIA)
    if criterion == "rank":
        return any(int(rank_english[layer]) < top_k for layer in band)
    return any(float(p_english[layer]) > float(p_answer[layer]) for layer in band)


def answer_tokens(tokenizer: Any, word: str, in_sentence: int | None = None) -> list[int]:
    """The first token of ``word`` and of ``" " + word`` (whitespace-only tokens skipped),
    with ``in_sentence``, its first token where a sentence writes it. Sorted."""
    ids = set() if in_sentence is None or not _visible(tokenizer, in_sentence) else {in_sentence}
    for text in (word.strip(), " " + word.strip()):
        for token in tokenizer(text, add_special_tokens=False)["input_ids"]:
            if _visible(tokenizer, int(token)):
                ids.add(int(token))
                break
    return sorted(ids)


def _visible(tokenizer: Any, token: int) -> bool:
    return bool(tokenizer.decode([token]).strip())


def prediction_prefix(tokenizer: Any, facts: FactSet, fact: Fact) -> tuple[list[int], int | None]:
    """The token ids of the fact's sentence up to its prediction position (the position
    whose next token is the object's first, as PROBELESS reads it), and that next token."""
    gold = sentence_ids(tokenizer, facts.fill(fact))
    template = facts.templates[(fact.lang, fact.relation)]
    head = template.split("[Y]")[0].replace("[X]", fact.subject).rstrip()
    shared = max(common_prefix_length([gold, sentence_ids(tokenizer, head)]), 1)
    return gold[:shared], gold[shared] if shared < len(gold) else None


def _keep(act: torch.Tensor, *, hook: Any, name: str, store: dict[str, torch.Tensor]) -> None:
    store[name] = act


@torch.inference_mode()
def prediction_lens(
    model: TransformerBridge,
    rows: list[list[int]],
    id_sets: list[list[list[int]]],
    *,
    batch_size: int = 8,
    unembed_rows: int = 128,
    progress: bool = True,
) -> tuple[Float[torch.Tensor, "set item layer"], Int[torch.Tensor, "set item layer"]]:
    """The logit lens at the last position of each row: per id set, item and layer the
    probability summed over the set's ids and the best rank among them (the number of
    vocabulary tokens with a strictly higher logit than the set's best). ``id_sets[s][i]`` is
    set ``s``'s ids for row ``i``. At the last layer this is the model's own next-token
    distribution."""
    n_layers, n_sets = int(model.cfg.n_layers), len(id_sets)
    names = [f"blocks.{layer}.hook_resid_post" for layer in range(n_layers)]
    probs = torch.zeros(n_sets, len(rows), n_layers)
    ranks = torch.zeros(n_sets, len(rows), n_layers, dtype=torch.long)
    norm, device = final_norm(model), model_device(model)
    for start in tqdm(range(0, len(rows), batch_size), desc="logit lens", disable=not progress):
        tokens, mask = pad_right(rows[start : start + batch_size], device=device)
        store: dict[str, torch.Tensor] = {}
        hooks = [(name, functools.partial(_keep, name=name, store=store)) for name in names]
        with model.hooks(fwd_hooks=hooks):
            run_body(model, tokens, attention_mask=mask)
        batch = len(tokens)
        last = mask.sum(1) - 1  # right-padded: each row's last real position
        states = torch.stack([store[name][torch.arange(batch), last] for name in names])
        flat = states.flatten(0, 1)  # [layer * batch, d_model], layer-major
        for lo in range(0, len(flat), unembed_rows):
            logits = unembed(model, norm(flat[lo : lo + unembed_rows])).float()
            total = logits.logsumexp(-1)
            for j in range(len(logits)):
                layer, b = divmod(lo + j, batch)
                for s in range(n_sets):
                    ids = torch.tensor(id_sets[s][start + b], device=logits.device)
                    chosen = logits[j, ids]
                    probs[s, start + b, layer] = float((chosen - total[j]).exp().sum())
                    ranks[s, start + b, layer] = int((logits[j] > chosen.max()).sum())
    return probs, ranks


@dataclass
class FailureModes(Result):
    """Per-fact logit-lens curves of the English answer and the language's answer at the
    prediction position of facts right in English and wrong in another language.

    Attributes:
        languages: the probed languages other than the pivot, in order.
        pivot: the language whose correct answers are the reference (English).
        items: per failure ``uuid``, ``lang``, ``relation``, ``subject``, ``gold``,
            ``predicted``, ``english`` (the pivot's gold) and the token strings compared
            (``english_tokens``, ``answer_tokens``).
        p_english, p_answer: ``[item, layer]`` logit-lens probabilities.
        rank_english, rank_answer: ``[item, layer]`` best vocabulary ranks (0 = top).
        shared: failures set aside because the two answers share a token.
        skipped: failures whose template puts the object before the subject.
        model: fingerprint of the model.
        settings: ``criterion``, ``top_k``, ``band`` (start, end), ``layers`` of the band,
            the uncertainty settings and the facts.
    """

    TENSOR_FILE: ClassVar[str] = FAILURE_MODES_FILE

    languages: list[str]
    pivot: str
    items: list[dict[str, Any]]
    p_english: Float[torch.Tensor, "item layer"]
    p_answer: Float[torch.Tensor, "item layer"]
    rank_english: Int[torch.Tensor, "item layer"]
    rank_answer: Int[torch.Tensor, "item layer"]
    shared: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0
    model: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "languages": self.languages,
            "pivot": self.pivot,
            "items": self.items,
            "modes": self.modes(),
            "shared": self.shared,
            "skipped": self.skipped,
            "model": self.model,
            "settings": self.settings,
        }

    def to_tensors(self) -> dict[str, Any]:
        tensors = {
            "p_english": self.p_english,
            "p_answer": self.p_answer,
            "rank_english": self.rank_english,
            "rank_answer": self.rank_answer,
        }
        return {name: t.clone() for name, t in tensors.items()}  # views of one tensor: copies

    @property
    def n_layers(self) -> int:
        return int(self.p_english.shape[1])

    def band(self) -> list[int]:
        """The layers of the middle band the settings name."""
        start, end = self.settings.get("band", (0.25, 0.75))
        return middle_band(self.n_layers, float(start), float(end))

    def modes(
        self,
        *,
        criterion: RiseCriterion | None = None,
        top_k: int | None = None,
        band: Sequence[int] | None = None,
    ) -> list[str]:
        """``"translation"`` or ``"recall"`` per item, by the recorded rule (or the one given)."""
        criterion = criterion or self.settings.get("criterion", "rank")
        top_k = top_k if top_k is not None else int(self.settings.get("top_k", 10))
        layers = list(band) if band is not None else self.band()
        return [
            TRANSLATION
            if rises(
                self.rank_english[i], self.p_english[i], self.p_answer[i], layers,
                criterion=criterion, top_k=top_k,
            )
            else RECALL
            for i in range(len(self.items))
        ]  # fmt: skip

    def shares(self) -> dict[str, dict[str, Any]]:
        """Per language: counts of translation and recall failures and of the failures set
        aside (``shared``), and the share of translation failures (Wilson interval)."""
        confidence = Uncertainty.of(self.settings).confidence
        modes = self.modes()
        out: dict[str, dict[str, Any]] = {}
        for lang in self.languages:
            mine = [m for item, m in zip(self.items, modes) if item["lang"] == lang]
            n_translation = mine.count(TRANSLATION)
            out[lang] = {
                TRANSLATION: n_translation,
                RECALL: len(mine) - n_translation,
                "shared": sum(1 for s in self.shared if s["lang"] == lang),
                "share": wilson(n_translation, len(mine), confidence) if mine else None,
            }
        return out

    def share_text(self, lang: str) -> str:
        """``"2 of 5: 40.0% [11.8%, 76.9%]"`` for one language."""
        row = self.shares()[lang]
        share: Estimate | None = row["share"]
        n = row[TRANSLATION] + row[RECALL]
        return f"{row[TRANSLATION]} of {n}: " + (share.text() if share else "–")


def failures(probing: ProbeResult, pivot: str) -> list[tuple[str, str]]:
    """``(uuid, lang)`` of the facts right in ``pivot`` and wrong in another language."""
    correct = probing.correct_map()
    right = {u for (u, lang), ok in correct.items() if lang == pivot and ok}
    return [
        (p["uuid"], p["lang"])
        for p in probing.predictions
        if p["lang"] != pivot and p["uuid"] in right and not p["correct"]
    ]


def failure_modes(
    model: TransformerBridge,
    facts: FactSet,
    probing: ProbeResult,
    *,
    pivot: str = "en",
    criterion: RiseCriterion = "rank",
    top_k: int = 10,
    band: tuple[float, float] = (0.25, 0.75),
    batch_size: int = 8,
    uncertainty: Uncertainty = Uncertainty(),
    progress: bool = True,
) -> FailureModes:
    """Recall vs translation failures (Lu et al. 2025) of the facts ``probing`` found right
    in ``pivot`` and wrong in another language; see the module's docstring for the rule.

    Raises:
        UserError: ``pivot`` not probed, ``top_k`` below 1, or a bad criterion or band.
    """
    one_of("criterion", criterion, RISE_CRITERIA)
    if top_k < 1:
        raise UserError(f"top_k={top_k} is not valid; give 1 or more")
    layers = middle_band(int(model.cfg.n_layers), *band)
    if pivot not in probing.languages:
        raise UserError(
            f"pivot {pivot!r} was not probed; the probing result has {', '.join(probing.languages)}"
        )
    found = {(f.uuid, f.lang): f for f in facts.facts}
    prediction = {(p["uuid"], p["lang"]): p["predicted"] for p in probing.predictions}
    object_first = {key for key, t in facts.templates.items() if t.index("[Y]") < t.index("[X]")}
    tokenizer = model.tokenizer
    english_of: dict[str, list[int]] = {}
    rows: list[list[int]] = []
    items: list[dict[str, Any]] = []
    shared: list[dict[str, Any]] = []
    sets: list[list[list[int]]] = [[], []]  # per failure: the English answer's ids, l's
    skipped = 0
    for uuid, lang in failures(probing, pivot):
        fact, english = found.get((uuid, lang)), found.get((uuid, pivot))
        if fact is None or english is None:
            continue
        if (lang, fact.relation) in object_first:
            skipped += 1
            continue
        if uuid not in english_of:
            _, first = prediction_prefix(tokenizer, facts, english)
            english_of[uuid] = answer_tokens(tokenizer, english.object, first)
        english_ids = english_of[uuid]
        prefix, first = prediction_prefix(tokenizer, facts, fact)
        answer_ids = answer_tokens(tokenizer, fact.object, first)
        item = {
            "uuid": uuid,
            "lang": lang,
            "relation": fact.relation,
            "subject": fact.subject,
            "gold": fact.object,
            "predicted": prediction[(uuid, lang)],
            "english": english.object,
            "english_tokens": [tokenizer.decode([i]) for i in english_ids],
            "answer_tokens": [tokenizer.decode([i]) for i in answer_ids],
        }
        if set(english_ids) & set(answer_ids) or not english_ids or not answer_ids:
            shared.append(item)
            continue
        rows.append(prefix)
        items.append(item)
        sets[0].append(english_ids)
        sets[1].append(answer_ids)
    if skipped:
        warnings.warn(
            f"{skipped} failures skipped: their templates put [Y] before [X]", stacklevel=2
        )
    n_layers = int(model.cfg.n_layers)
    probs = torch.zeros(2, 0, n_layers)
    ranks = torch.zeros(2, 0, n_layers, dtype=torch.long)
    if rows:
        probs, ranks = prediction_lens(model, rows, sets, batch_size=batch_size, progress=progress)
    languages = [lang for lang in probing.languages if lang != pivot]
    return FailureModes(
        languages=languages,
        pivot=pivot,
        items=items,
        p_english=probs[0],
        p_answer=probs[1],
        rank_english=ranks[0],
        rank_answer=ranks[1],
        shared=shared,
        skipped=skipped,
        model=fingerprint(model),
        settings={
            "criterion": criterion,
            "top_k": top_k,
            "band": list(band),
            "layers": layers,
            "position": "the prediction position (before the object) of the language's prompt",
            "uncertainty": uncertainty.to_json(),
            "facts": facts.description,
        },
    )


__all__ = [
    "FAILURE_MODES_FILE",
    "RECALL",
    "RISE_CRITERIA",
    "TRANSLATION",
    "FailureModes",
    "RiseCriterion",
    "answer_tokens",
    "failure_modes",
    "failures",
    "middle_band",
    "prediction_lens",
    "prediction_prefix",
    "rises",
]
