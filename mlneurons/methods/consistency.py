"""Cross-lingual consistency of factual knowledge: RankC, COverlap, answer consistency, AC3,
transfer.

All are read from a probing result (:class:`~mlneurons.methods.probing.result.ProbeResult`)
whose predictions keep every candidate's score (``scores``, ``gold_index``,
``predicted_index``; :func:`~mlneurons.methods.probing.result.ranked_prediction`). A query is
one fact (relation, uuid) in one language; two languages are compared on the queries both
have.

- **RankC** (Qi et al., EMNLP 2023; the authors' ``RankC.py``): per query
  ``sum_j w_j |top_j(l) ∩ top_j(l')| / j`` over the ``N`` candidates, with ``w`` the softmax
  of ``[N, N-1, ..., 1]`` (``norm1``: proportional to ``N - j + 1``; ``norm2``: to its square),
  averaged over queries. The ``j = N`` term is always 1, so RankC is not 0 by chance: two
  independent random rankings overlap by ``j^2/N`` on average at depth ``j``, so the chance
  level of a query is ``sum_j w_j j / N`` (:func:`rankc_chance`: 0.158 for N = 10 with
  softmax). The chance-corrected value is ``(RankC - chance) / (1 - chance)``, with the chance
  level averaged over the same queries.
- **COverlap** (same paper): the share of correct facts common to both languages among those
  correct in either; with one gold per query it *is* the Jaccard of correctly predicted facts
  (:func:`~mlneurons.evaluation.uncertainty.jaccard`, as ``probe`` reports it).
- **Answer consistency** (SeaEval, Wang et al. 2024, ``consistency_m``): the share of
  queries whose chosen candidate is the same in every language of an m-language group, right
  or wrong, averaged over all groups of m languages; **AC3** is the harmonic mean of
  accuracy (mean P@1 over the languages) and that consistency. Computed on the queries that
  every language has.
- **Transfer** (ECLeKTic, 2502.21228): ``P(correct in l' | correct in l)``.

Candidates are compared across languages by their *position in the fact's candidate list*,
as the authors' code does: the built-in facts' candidate lists per relation are aligned by
position in every language (one object list, localised), BMLAMA's per-query lists are
translations in the same order, and mLAMA's ``TREx_multilingual_objects`` lists align only
where every language lists the same objects. A query whose languages have candidate lists of
different lengths, or the gold at different positions, is refused with one line.

Intervals: percentile bootstrap over queries (RankC, chance-corrected RankC, COverlap,
answer consistency, accuracy and AC3, each resampling queries jointly); Wilson for transfer.
Rankings sort the stored scores (4 decimals, below the tie tolerance) high to low, equal
scores in candidate order with the gold last (the tie rule of probing: ties never favour
the gold).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np

from mlneurons.errors import UserError
from mlneurons.evaluation.uncertainty import Estimate, Uncertainty, bootstrap, jaccard, wilson
from mlneurons.methods.probing.result import ProbeResult
from mlneurons.results import Result

Weighting = Literal["softmax", "norm1", "norm2"]
"""RankC's weights over depths j = 1..N: softmax of N..1 (the paper), linear, or squared."""

WEIGHTINGS: tuple[str, ...] = ("softmax", "norm1", "norm2")

CONSISTENCY_FILE = "consistency.json"

RECREATE = (
    "re-create it with `mlneurons probe --out DIR` (same --facts, --languages and "
    "--max-facts-per-relation), then `mlneurons consistency --probe DIR`"
)


def rankc_weights(n: int, weighting: Weighting = "softmax") -> np.ndarray:
    """RankC's weights ``w_1..w_n`` (depth 1 first): ``order = [n, n-1, ..., 1]``, then its
    softmax, ``order / sum`` (norm1) or ``order^2 / sum`` (norm2)."""
    if weighting not in WEIGHTINGS:
        raise UserError(
            f"weighting={weighting!r} is not valid; choose from {', '.join(WEIGHTINGS)}"
        )
    order = np.arange(n, 0, -1, dtype=np.float64)
    if weighting == "softmax":
        e = np.exp(order - order.max())
        weights: np.ndarray = e / e.sum()
        return weights
    power = order if weighting == "norm1" else order**2
    weights = power / power.sum()
    return weights


def ranking(scores: np.ndarray, gold: int | None = None) -> np.ndarray:
    """Candidate positions from the highest score to the lowest; equal scores in candidate
    order, the gold last among them."""
    scores = np.asarray(scores, dtype=np.float64)
    last = np.zeros(len(scores))
    if gold is not None:
        last[gold] = 1
    return np.lexsort((np.arange(len(scores)), last, -scores))


def rankc_query(first: np.ndarray, second: np.ndarray, weighting: Weighting = "softmax") -> float:
    """RankC of one query: ``sum_j w_j |top_j(first) ∩ top_j(second)| / j``, for two rankings
    of the same candidates (positions, best first)."""
    n = len(first)
    if n != len(second) or n == 0:
        raise ValueError(f"rankings of {n} and {len(second)} candidates")
    depth = np.empty((2, n), dtype=np.int64)
    depth[0, first] = np.arange(n)
    depth[1, second] = np.arange(n)
    both = np.bincount(depth.max(0), minlength=n).cumsum()  # |top_j ∩ top_j| for j = 1..n
    j = np.arange(1, n + 1)
    return float((rankc_weights(n, weighting) * both / j).sum())


def rankc_chance(n: int, weighting: Weighting = "softmax") -> float:
    """RankC of two independent uniformly random rankings of ``n`` candidates, in
    expectation: ``sum_j w_j j / n`` (the top-j sets share ``j^2/n`` candidates on average)."""
    j = np.arange(1, n + 1)
    return float((rankc_weights(n, weighting) * j / n).sum())


def harmonic_mean(a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray:
    """``2ab / (a + b)``, 0 where both are 0 (elementwise)."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    total = x + y
    mean: np.ndarray = np.where(total > 0, 2 * x * y / np.where(total > 0, total, 1), 0.0)
    return mean


@dataclass(frozen=True)
class _Query:
    scores: np.ndarray
    gold: int
    predicted: int
    correct: bool


def queries(result: ProbeResult) -> dict[str, dict[tuple[str, str], _Query]]:
    """language -> (relation, uuid) -> the query's scores and outcome.

    Raises:
        UserError: the result keeps no candidate scores (older, or ``--method zhao``).
    """
    found: dict[str, dict[tuple[str, str], _Query]] = {lang: {} for lang in result.languages}
    for p in result.predictions:
        if "scores" not in p:
            raise UserError(
                "this probing result keeps no candidate scores (saved before mlneurons kept "
                f"them, or by --method zhao); {RECREATE}"
            )
        found.setdefault(p["lang"], {})[(p["relation"], p["uuid"])] = _Query(
            np.asarray(p["scores"], dtype=np.float64),
            int(p["gold_index"]),
            int(p["predicted_index"]),
            bool(p["correct"]),
        )
    return found


def check_aligned(found: dict[str, dict[tuple[str, str], _Query]]) -> None:
    """Refuse (one line) a query whose candidate lists differ in length or gold position."""
    first: dict[tuple[str, str], tuple[str, int, int]] = {}
    for lang, per in found.items():
        for key, q in per.items():
            seen = first.setdefault(key, (lang, len(q.scores), q.gold))
            if (len(q.scores), q.gold) != seen[1:]:
                raise UserError(
                    f"the candidates of {key[0]} {key[1]} do not align across languages: "
                    f"{seen[0]} has {seen[1]} with the gold at {seen[2]}, {lang} has "
                    f"{len(q.scores)} with the gold at {q.gold}; RankC compares candidates by "
                    "their position in aligned lists (built-in facts, BMLAMA, mLAMA with the "
                    "same objects in every language)"
                )


@dataclass
class ConsistencyResult(Result):
    """Cross-lingual consistency of a probing result (see the module docstring).

    Attributes:
        languages: the languages, in the probing result's order.
        pairs: per pair of languages (in order): ``languages``, ``queries`` (shared),
            ``rankc``, ``rankc_corrected`` and ``coverlap`` (estimates as JSON), ``chance``
            (the mean chance level of RankC over the shared queries).
        transfer: per ordered pair: ``from``, ``to`` and ``transfer`` (Wilson, JSON), the share
            of the facts correct in ``from`` that are also correct in ``to``.
        answers: SeaEval's answer consistency: ``group_size``, ``groups``, ``queries`` and
            the estimates ``consistency``, ``accuracy`` and ``ac3``.
        orders: the clustered language order of each heatmap (``rankc``, ``coverlap`` and,
            with fact neurons, ``fact_neurons``; :func:`~mlneurons.evaluation.clustering.cluster_order`).
        fact_neuron_overlap: language -> language -> mean PROBELESS overlap, when given.
        model: the probing result's model fingerprint.
        settings: weighting, uncertainty, where the probing result came from.
    """

    FILE: ClassVar[str] = CONSISTENCY_FILE

    languages: list[str]
    pairs: list[dict[str, Any]]
    transfer: list[dict[str, Any]]
    answers: dict[str, Any]
    orders: dict[str, list[str]] = field(default_factory=dict)
    fact_neuron_overlap: dict[str, dict[str, float | None]] | None = None
    model: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def pair(self, a: str, b: str) -> dict[str, Any] | None:
        """The row of ``a`` and ``b`` in either order."""
        for row in self.pairs:
            if set(row["languages"]) == {a, b}:
                return row
        return None

    def estimate(self, a: str, b: str, key: str) -> Estimate | None:
        """``rankc``, ``rankc_corrected`` or ``coverlap`` of a pair, if it has one."""
        row = self.pair(a, b)
        return None if row is None or row.get(key) is None else Estimate.from_json(row[key])

    def matrix(self, key: str) -> dict[str, dict[str, float | None]]:
        """language -> language -> the value of ``key`` (1 on the diagonal)."""
        table: dict[str, dict[str, float | None]] = {
            a: {b: (1.0 if a == b else None) for b in self.languages} for a in self.languages
        }
        for row in self.pairs:
            a, b = row["languages"]
            value = None if row.get(key) is None else float(row[key]["value"])
            table[a][b] = table[b][a] = value
        return table

    def transfer_estimate(self, source: str, target: str) -> Estimate | None:
        """P(correct in ``target`` | correct in ``source``), if ``source`` got any right."""
        for row in self.transfer:
            if (row["from"], row["to"]) == (source, target):
                return Estimate.from_json(row["transfer"])
        return None

    def answer(self, key: str) -> Estimate:
        """``consistency``, ``accuracy`` or ``ac3``."""
        return Estimate.from_json(self.answers[key])

    def extremes(self) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The most and the least consistent pair by chance-corrected RankC."""
        rows = [r for r in self.pairs if r.get("rankc_corrected")]
        if not rows:
            return None

        def key(r: dict[str, Any]) -> float:
            return float(r["rankc_corrected"]["value"])

        return max(rows, key=key), min(rows, key=key)


def consistency(
    probing: ProbeResult,
    *,
    weighting: Weighting = "softmax",
    group_size: int | None = None,
    fact_neuron_overlap: dict[str, dict[str, float | None]] | None = None,
    uncertainty: Uncertainty = Uncertainty(),
) -> ConsistencyResult:
    """RankC, COverlap, answer consistency with AC3 and transfer between the languages of
    ``probing`` (Qi et al. 2023; SeaEval; ECLeKTic), with intervals.

    Args:
        probing: a probing result that keeps candidate scores (``mlneurons probe``).
        weighting: RankC's weights over depths (:data:`Weighting`).
        group_size: SeaEval's m, the languages per group of answer consistency, from 2 to
            the number of languages (default: 3, or all the languages when fewer).
        fact_neuron_overlap: a PROBELESS overlap table (``FactNeurons.overlap()``), kept and
            clustered like the others.
        uncertainty: the level, resamples and seed of the intervals.

    Raises:
        UserError: fewer than two languages, an unknown weighting, a group size outside
            ``2..languages``, no candidate scores, or candidates that do not align.
    """
    from mlneurons.evaluation.clustering import clustered_labels

    languages = list(probing.languages)
    if weighting not in WEIGHTINGS:
        raise UserError(
            f"weighting={weighting!r} is not valid; choose from {', '.join(WEIGHTINGS)}"
        )
    if len(languages) < 2:
        raise UserError(f"consistency compares languages; the probing result has {languages}")
    if group_size is None:
        group_size = min(3, len(languages))
    if not 2 <= group_size <= len(languages):
        raise UserError(
            f"group_size={group_size} is not valid; choose from 2 to {len(languages)} "
            f"(the probed languages: {', '.join(languages)})"
        )
    found = queries(probing)
    check_aligned(found)
    how = uncertainty

    pairs = []
    for a, b in itertools.combinations(languages, 2):
        keys = sorted(found[a].keys() & found[b].keys())
        if not keys:
            continue
        raw = np.array(
            [
                rankc_query(
                    ranking(found[a][k].scores, found[a][k].gold),
                    ranking(found[b][k].scores, found[b][k].gold),
                    weighting,
                )
                for k in keys
            ]
        )
        chance = np.array([rankc_chance(len(found[a][k].scores), weighting) for k in keys])
        x = [found[a][k].correct for k in keys]
        y = [found[b][k].correct for k in keys]

        def mean_of(values: np.ndarray) -> Any:
            return lambda w: (w @ values) / w.sum(-1)

        def corrected(w: np.ndarray, raw: np.ndarray = raw, chance: np.ndarray = chance) -> Any:
            r, c = (w @ raw) / w.sum(-1), (w @ chance) / w.sum(-1)
            return (r - c) / (1 - c)

        pairs.append(
            {
                "languages": [a, b],
                "queries": len(keys),
                "rankc": bootstrap(mean_of(raw), len(keys), how).to_json(),
                "chance": float(chance.mean()),
                "rankc_corrected": bootstrap(corrected, len(keys), how).to_json(),
                "coverlap": jaccard(x, y, how).to_json() if any(x) or any(y) else None,
            }
        )

    transfer = []
    for a, b in itertools.permutations(languages, 2):
        right = [k for k in found[a].keys() & found[b].keys() if found[a][k].correct]
        if right:
            both = sum(found[b][k].correct for k in right)
            transfer.append(
                {"from": a, "to": b, "transfer": wilson(both, len(right), how.confidence).to_json()}
            )

    answers = answer_consistency(found, languages, group_size, how)
    result = ConsistencyResult(
        languages,
        pairs,
        transfer,
        answers,
        model=dict(probing.model),
        fact_neuron_overlap=fact_neuron_overlap,
        settings={
            "weighting": weighting,
            "group_size": group_size,
            "uncertainty": how.to_json(),
            "candidate_identity": "position in the fact's candidate list (aligned lists)",
            "ties": "equal stored scores in candidate order, the gold last",
            "probing": {k: probing.settings.get(k) for k in ("scoring", "method", "facts")},
        },
    )
    result.orders = {
        "rankc": clustered_labels(languages, result.matrix("rankc_corrected")),
        "coverlap": clustered_labels(languages, result.matrix("coverlap")),
    }
    if fact_neuron_overlap is not None:
        result.orders["fact_neurons"] = clustered_labels(languages, fact_neuron_overlap)
    return result


def answer_consistency(
    found: dict[str, dict[tuple[str, str], _Query]],
    languages: list[str],
    group_size: int,
    how: Uncertainty = Uncertainty(),
) -> dict[str, Any]:
    """SeaEval's ``consistency_m`` over the queries every language has: per query the share
    of m-language groups that chose the same candidate in all their languages, averaged
    over queries (= the mean over groups of each group's share); accuracy = mean P@1 over
    the languages on the same queries; AC3 = their harmonic mean. One joint bootstrap over
    queries for all three."""
    keys = sorted(set.intersection(*(set(found[lang]) for lang in languages)))
    groups = list(itertools.combinations(languages, group_size))
    base: dict[str, Any] = {"group_size": group_size, "groups": len(groups), "queries": len(keys)}
    if not keys:
        nothing = Estimate(math.nan, math.nan, math.nan, 0, "no query in every language")
        return {**base, **{k: nothing.to_json() for k in ("consistency", "accuracy", "ac3")}}
    agree = np.array(
        [
            np.mean([len({found[lang][k].predicted for lang in g}) == 1 for g in groups])
            for k in keys
        ]
    )
    accuracy = np.array([np.mean([found[lang][k].correct for lang in languages]) for k in keys])

    def share(values: np.ndarray) -> Any:
        return lambda w: (w @ values) / w.sum(-1)

    def ac3(w: np.ndarray) -> Any:
        return harmonic_mean((w @ accuracy) / w.sum(-1), (w @ agree) / w.sum(-1))

    n = len(keys)
    return {
        **base,
        "consistency": bootstrap(share(agree), n, how).to_json(),
        "accuracy": bootstrap(share(accuracy), n, how).to_json(),
        "ac3": bootstrap(ac3, n, how).to_json(),
    }


__all__ = [
    "ConsistencyResult",
    "Weighting",
    "WEIGHTINGS",
    "answer_consistency",
    "check_aligned",
    "consistency",
    "harmonic_mean",
    "queries",
    "rankc_chance",
    "rankc_query",
    "rankc_weights",
    "ranking",
]
