"""Factual probing results: one prediction per fact, P@1 per language and relation, with
their intervals (Wilson; cluster bootstrap for macro P@1) and the Jaccard of correct facts
between languages against chance (bootstrap interval, permutation null, Holm)."""

from __future__ import annotations

import functools
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from mlneurons.data.facts import Fact
from mlneurons.evaluation.uncertainty import (
    ChanceLevel,
    Estimate,
    Uncertainty,
    holm,
    jaccard,
    jaccard_null,
    macro_rate,
    wilson,
)
from mlneurons.results import Result

PROBE_FILE = "probe.json"

TIE_ATOL = 1e-4
TIE_RTOL = 1e-5
"""Scores within ``TIE_ATOL + TIE_RTOL * |top|`` of the top score are tied with it. On
Gemma 3 270M (float32, CPU) the same sentence scored in another batch row with other padding
differs by at most 8e-6, and the fast path from full forward passes by at most 2.3e-5, on
sentence scores of up to about 55 (docs/facts.md): the tolerance sits 30 to 100 times above
that noise, and far below the gaps between candidates that differ."""

TIE_RULE = (
    "ties never favour the gold: candidates within 1e-4 + 1e-5*|top| of the top score are "
    "tied, and the prediction is the first tied candidate in candidate order that is not "
    "the gold (a tie with the gold counts as wrong); 'tied' counts the tied candidates"
)
"""The tie rule, as recorded in probing results' settings."""


@dataclass
class ProbeResult(Result):
    """Per-fact predictions with P@1 and Jaccard views.

    Attributes:
        languages: probed languages, in order.
        relations: probed relations, in order.
        predictions: ``{"uuid", "lang", "relation", "gold", "predicted", "correct"}`` per fact;
            ranked candidates add ``tied``, how many candidates shared the top score
            (1: no tie; :func:`tie_break`), and ``scores``, ``gold_index`` and
            ``predicted_index`` (:func:`ranked_prediction`; absent in older results).
        model: fingerprint of the model.
        settings: how the facts were probed, and ``uncertainty``: how intervals are computed
            (:class:`~mlneurons.evaluation.uncertainty.Uncertainty`; defaults when absent).
    """

    FILE: ClassVar[str] = PROBE_FILE

    languages: list[str]
    relations: list[str]
    predictions: list[dict[str, Any]]
    model: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def p_at_1(self) -> dict[str, dict[str, float]]:
        """P@1 per language and relation, with ``macro`` (mean over relations) and ``micro``."""
        hits: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
        for p in self.predictions:
            hits[p["lang"]][p["relation"]].append(bool(p["correct"]))
        table: dict[str, dict[str, float]] = {}
        for lang in self.languages:
            per = {rel: sum(v) / len(v) for rel, v in hits[lang].items() if v}
            flat = [x for v in hits[lang].values() for x in v]
            table[lang] = {rel: per[rel] for rel in self.relations if rel in per}
            table[lang]["macro"] = sum(per.values()) / len(per) if per else 0.0
            table[lang]["micro"] = sum(flat) / len(flat) if flat else 0.0
        return table

    def ties(self) -> dict[str, int]:
        """Per language, how many predictions had their top score shared (:func:`tie_break`)."""
        counts = {lang: 0 for lang in self.languages}
        for p in self.predictions:
            if p.get("tied", 1) > 1:
                counts[p["lang"]] = counts.get(p["lang"], 0) + 1
        return counts

    def uncertainty(self) -> Uncertainty:
        """The interval settings this result recorded (the defaults for older results)."""
        return Uncertainty.of(self.settings)

    def outcomes(self) -> dict[str, dict[str, list[bool]]]:
        """language -> relation -> per-fact correctness, in prediction order."""
        hits: dict[str, dict[str, list[bool]]] = {lang: {} for lang in self.languages}
        for p in self.predictions:
            hits.setdefault(p["lang"], {}).setdefault(p["relation"], []).append(bool(p["correct"]))
        return hits

    def p_at_1_intervals(self) -> dict[str, dict[str, Estimate]]:
        """:meth:`p_at_1` with intervals: per relation and ``micro`` the Wilson score
        interval of ``correct / facts``; ``macro`` (the mean over relations) the cluster
        bootstrap, relations then facts within them. Languages without facts are left out."""
        how = self.uncertainty()
        table: dict[str, dict[str, Estimate]] = {}
        for lang, per in self.outcomes().items():
            groups = [per[rel] for rel in self.relations if per.get(rel)]
            groups += [v for rel, v in per.items() if rel not in self.relations and v]
            if not groups:
                continue
            row = {
                rel: wilson(sum(per[rel]), len(per[rel]), how.confidence)
                for rel in self.relations
                if per.get(rel)
            }
            flat = [x for g in groups for x in g]
            row["macro"] = macro_rate(groups, how)
            row["micro"] = wilson(sum(flat), len(flat), how.confidence)
            table[lang] = row
        return table

    def _snapshot(self) -> tuple[tuple[str, str, str, bool], ...]:
        """What the intervals depend on: ``(lang, relation, uuid, correct)`` per prediction."""
        return tuple(
            (p["lang"], p["relation"], p["uuid"], bool(p["correct"])) for p in self.predictions
        )

    def shared(self, a: str, b: str) -> tuple[list[bool], list[bool], list[str]]:
        """The facts both ``a`` and ``b`` were probed on (by relation and uuid, sorted): each
        language's correctness and the fact's relation, the items of :meth:`jaccard`."""
        return _shared(_by_language(self._snapshot()), a, b)

    def jaccard_tests(self) -> dict[tuple[str, str], JaccardTest]:
        """Every pair of languages (in language order) whose shared facts include a correct
        one: the Jaccard with its bootstrap interval over the shared facts, the permutation
        null within relations, and the p-value Holm-adjusted over all these pairs.

        Computed once per predictions, languages and settings (cached): the command's
        description, tables, figures and file all show them."""
        return dict(_jaccard_tests(self._snapshot(), tuple(self.languages), self.uncertainty()))

    def for_language(self, language: str) -> ProbeResult:
        """The predictions of one language only."""
        predictions = [p for p in self.predictions if p["lang"] == language]
        return ProbeResult([language], self.relations, predictions, self.model, self.settings)

    def correct_map(self) -> dict[tuple[str, str], bool]:
        """``(uuid, lang) -> correct``, the input of knowledge tracing."""
        return {(p["uuid"], p["lang"]): bool(p["correct"]) for p in self.predictions}

    def jaccard(self) -> dict[str, dict[str, float]]:
        """Jaccard of correctly predicted facts between languages (Zhao et al.; LRP2's Trans).

        Per relation only the uuids both languages have count; the correct sets are
        united over relations, and the score is ``|A ∩ B| / |A ∪ B|`` (0 when both are empty).
        """
        have: dict[str, set[tuple[str, str]]] = defaultdict(set)
        right: dict[str, set[tuple[str, str]]] = defaultdict(set)
        for p in self.predictions:
            key = (p["relation"], p["uuid"])
            have[p["lang"]].add(key)
            if p["correct"]:
                right[p["lang"]].add(key)
        table: dict[str, dict[str, float]] = {}
        for a in self.languages:
            table[a] = {}
            for b in self.languages:
                shared = have[a] & have[b]
                ra, rb = right[a] & shared, right[b] & shared
                union = ra | rb
                table[a][b] = len(ra & rb) / len(union) if union else 0.0
        return table

    def to_json(self) -> dict[str, Any]:
        """The fields, with P@1 and Jaccard (and their intervals and tests) computed for
        readers of the file."""
        intervals = {
            lang: {key: e.to_json() for key, e in row.items()}
            for lang, row in self.p_at_1_intervals().items()
        }
        return {
            "languages": self.languages,
            "relations": self.relations,
            "p_at_1": self.p_at_1(),
            "p_at_1_intervals": intervals,
            "predictions": self.predictions,
            "jaccard": self.jaccard(),
            "jaccard_tests": [test.to_json() for test in self.jaccard_tests().values()],
            "model": self.model,
            "settings": self.settings,
        }


def tie_break(candidates: Sequence[str], scores: Sequence[float], gold: str) -> tuple[str, int]:
    """The predicted candidate under the tie rule (:data:`TIE_RULE`), and how many are tied.

    Candidates whose score is within ``TIE_ATOL + TIE_RTOL * |top|`` of the top score are
    tied; the prediction is the first of them, in candidate order, that is not ``gold``.
    So a tie that includes the gold counts as wrong, whatever the order of the candidates
    (BMLAMA lists the gold last, where a stable sort of equal scores would decide).

    Raises:
        ValueError: no candidates, scores and candidates of different lengths, or a NaN score.
    """
    if not candidates or len(candidates) != len(scores):
        raise ValueError(f"{len(candidates)} candidates with {len(scores)} scores")
    if any(math.isnan(s) for s in scores):
        raise ValueError(f"a NaN score among the candidates {list(candidates)[:5]}")
    top = max(scores)
    tolerance = TIE_ATOL + TIE_RTOL * abs(top) if math.isfinite(top) else 0.0
    tied = [c for c, s in zip(candidates, scores) if s == top or top - s <= tolerance]
    wrong = [c for c in tied if c != gold]
    return (wrong[0] if wrong else tied[0]), len(tied)


SCORE_DECIMALS = 4
"""Decimals of the candidates' scores kept in ``predictions`` (below the tie tolerance)."""


def ranked_prediction(
    fact: Fact,
    candidates: Sequence[str],
    scores: Sequence[float],
    *,
    keep_scores: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    """One row of ``ProbeResult.predictions`` from the candidates' scores (:func:`tie_break`).

    With ``keep_scores`` the row also keeps what cross-lingual consistency (RankC) needs:
    ``scores``, every candidate's score in the order of the fact's candidate list (rounded
    to :data:`SCORE_DECIMALS`), and ``gold_index`` and ``predicted_index``, positions in that
    list. A candidate's position is its language-independent identity where the candidate
    lists of the languages are aligned (see :mod:`mlneurons.methods.consistency`)."""
    predicted, tied = tie_break(candidates, scores, fact.object)
    if keep_scores:
        extra = {
            **extra,
            "gold_index": list(candidates).index(fact.object),
            "predicted_index": list(candidates).index(predicted),
            "scores": [round(float(s), SCORE_DECIMALS) for s in scores],
        }
    return prediction(fact, predicted, tied=tied, **extra)


def _by_language(
    snapshot: tuple[tuple[str, str, str, bool], ...],
) -> dict[str, dict[tuple[str, str], bool]]:
    right: dict[str, dict[tuple[str, str], bool]] = defaultdict(dict)
    for lang, relation, uuid, correct in snapshot:
        right[lang][(relation, uuid)] = correct
    return right


def _shared(
    right: dict[str, dict[tuple[str, str], bool]], a: str, b: str
) -> tuple[list[bool], list[bool], list[str]]:
    keys = sorted(right[a].keys() & right[b].keys())
    return [right[a][k] for k in keys], [right[b][k] for k in keys], [k[0] for k in keys]


@functools.lru_cache(maxsize=8)
def _jaccard_tests(
    snapshot: tuple[tuple[str, str, str, bool], ...],
    languages: tuple[str, ...],
    how: Uncertainty,
) -> tuple[tuple[tuple[str, str], JaccardTest], ...]:
    right = _by_language(snapshot)
    found: dict[tuple[str, str], tuple[Estimate, ChanceLevel]] = {}
    for i, a in enumerate(languages):
        for b in languages[i + 1 :]:
            x, y, relations = _shared(right, a, b)
            if any(x) or any(y):
                found[(a, b)] = (jaccard(x, y, how), jaccard_null(x, y, relations, how))
    adjusted = holm([chance.p_value for _, chance in found.values()])
    return tuple(
        (pair, JaccardTest(pair, estimate, chance, p, len(found)))
        for (pair, (estimate, chance)), p in zip(found.items(), adjusted)
    )


@dataclass(frozen=True)
class JaccardTest:
    """The Jaccard of two languages' correct facts against chance.

    Attributes:
        languages: the pair.
        jaccard: the value with its percentile bootstrap interval over the shared facts.
        chance: the permutation null within relations (each language keeps its count of
            correct facts per relation): the null mean and the raw one-sided p-value.
        p_adjusted: ``chance.p_value`` Holm-adjusted over the ``family`` pairs tested together.
        family: how many pairs were tested together.
    """

    languages: tuple[str, str]
    jaccard: Estimate
    chance: ChanceLevel
    p_adjusted: float
    family: int

    def above_chance(self) -> bool:
        """Holm-adjusted ``p < 1 - confidence``."""
        return self.p_adjusted < 1 - self.jaccard.confidence

    def to_json(self) -> dict[str, Any]:
        return {
            "languages": list(self.languages),
            "jaccard": self.jaccard.to_json(),
            "chance": self.chance.to_json(),
            "p_adjusted": self.p_adjusted,
            "adjustment": f"Holm over {self.family} pairs",
            "above_chance": self.above_chance(),
        }


def pair_test(tests: dict[tuple[str, str], JaccardTest], a: str, b: str) -> JaccardTest | None:
    """The test of ``a`` and ``b`` in either order, if they were tested."""
    return tests.get((a, b)) or tests.get((b, a))


def p_value_text(p: float) -> str:
    """``p = 0.38``, ``p = 0.012``, ``p < 0.001``."""
    if p < 0.001:
        return "p < 0.001"
    return f"p = {p:.3f}" if p < 0.01 else f"p = {p:.2f}"


def prediction(fact: Fact, predicted: str, **extra: Any) -> dict[str, Any]:
    """One row of ``ProbeResult.predictions``."""
    return {
        "uuid": fact.uuid,
        "lang": fact.lang,
        "relation": fact.relation,
        "gold": fact.object,
        "predicted": predicted,
        "correct": predicted == fact.object,
        **extra,
    }
