"""Zhao et al.'s factors of multilingual factual knowledge (Zhao, Zhang, Xu & Pavlick, 2024):
what P@1 depends on.

* **object token count**: P@1 of the facts whose gold object takes one token of the model's
  tokenizer against those whose object takes several (Wilson intervals, per language and
  over all languages). The count is the tokens the filled sentence spends on the object:
  the sentence cut after the object, less the longest prefix it shares with the sentence
  cut before it (so a word the tokenizer merges with the text before it counts whole).
* **training-text size**: Spearman's rank correlation, over languages, of each language's
  P@1 (micro: all its facts) with the size of its training text, given by the user or
  counted in a corpus folder (UTF-8 bytes of its ``.txt`` files). Ties get average ranks.
  Its interval is the percentile bootstrap over languages (none under
  :data:`~mlneurons.evaluation.uncertainty.MIN_RESAMPLED` languages), and its p-value the
  two-sided permutation test of the languages' sizes (exact: every permutation up to 8
  languages; else ``samples`` random permutations).

The clustering of languages (Zhao et al.'s third factor) lives elsewhere.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from mlneurons.errors import UserError
from mlneurons.evaluation.uncertainty import (
    MIN_RESAMPLED,
    Estimate,
    Uncertainty,
    percentile,
    weights,
    wilson,
)
from mlneurons.methods.probing.result import ProbeResult
from mlneurons.results import Result

if TYPE_CHECKING:
    from mlneurons.data.facts import FactSet

FACTORS_FILE = "factors.json"
ONE, SEVERAL = "one token", "several tokens"
EXACT_PERMUTATIONS = 8
"""Up to this many languages the permutation test enumerates every permutation."""


def object_token_counts(tokenizer: Any, facts: FactSet) -> dict[tuple[str, str], int]:
    """``(uuid, lang) -> tokens of the gold object`` in its filled sentence: the tokens of the
    sentence cut after the object beyond the longest prefix it shares with the sentence cut
    before it (at least 1)."""
    from mlneurons.methods.probing.causal import common_prefix_length
    from mlneurons.models.tokens import sentence_ids

    counts = {}
    for fact in facts.facts:
        head = facts.templates[(fact.lang, fact.relation)].split("[Y]")[0]
        head = head.replace("[X]", fact.subject)
        with_object = sentence_ids(tokenizer, head + fact.object)
        without = sentence_ids(tokenizer, head.rstrip())
        shared = common_prefix_length([with_object, without])
        counts[(fact.uuid, fact.lang)] = max(len(with_object) - shared, 1)
    return counts


def token_split(
    probing: ProbeResult,
    counts: Mapping[tuple[str, str], int],
    how: Uncertainty = Uncertainty(),
) -> dict[str, dict[str, Estimate]]:
    """Per language (and ``all``), P@1 of the facts with a one-token object and of those with
    a longer one (Wilson intervals); a group without facts is left out.

    Raises:
        UserError: a prediction whose object has no count (counted on other facts).
    """
    missing = [f"{p['lang']}:{p['uuid']}" for p in probing.predictions
               if (p["uuid"], p["lang"]) not in counts]  # fmt: skip
    if missing:
        raise UserError(
            f"no object token count for {len(missing)} probed facts (e.g. {missing[0]}): "
            "count them on the fact set that was probed"
        )
    hits: dict[str, dict[str, list[bool]]] = {}
    for p in probing.predictions:
        group = ONE if counts[(p["uuid"], p["lang"])] == 1 else SEVERAL
        for lang in (p["lang"], "all"):
            hits.setdefault(lang, {}).setdefault(group, []).append(bool(p["correct"]))
    order = [*[lang for lang in probing.languages if lang in hits], "all"]
    return {
        lang: {
            group: wilson(sum(hits[lang][group]), len(hits[lang][group]), how.confidence)
            for group in (ONE, SEVERAL)
            if group in hits[lang]
        }
        for lang in order
        if lang in hits
    }


def parse_text_sizes(text: str) -> dict[str, float]:
    """``"en=3e9,de=1.2e9"`` -> ``{"en": 3e9, "de": 1.2e9}``.

    Raises:
        UserError: an item without ``=``, a size that is not a number >= 0, a repeated language.
    """
    sizes: dict[str, float] = {}
    for item in (part.strip() for part in text.split(",")):
        lang, sep, value = item.partition("=")
        try:
            size = float(value) if sep and lang.strip() else math.nan
        except ValueError:
            size = math.nan
        if not size >= 0 or math.isinf(size):
            raise UserError(
                f"text size {item!r} is not valid; give lang=SIZE pairs, e.g. en=3e9,de=1.2e9"
            )
        if lang.strip() in sizes:
            raise UserError(f"text size of {lang.strip()!r} is given twice")
        sizes[lang.strip()] = size
    return sizes


def corpus_text_sizes(folder: str | Path) -> dict[str, int]:
    """UTF-8 bytes of each language's text in a corpus folder of ``{lang}.txt`` files or
    ``{lang}/`` folders of ``*.txt`` (the layout of ``--corpus DIR``), from the file sizes."""
    from mlneurons.data.corpus import MultilingualCorpus

    files = MultilingualCorpus.from_files(folder).description["files"]
    return {lang: sum(int(size) for _, size, _ in entries) for lang, entries in files.items()}


def ranks(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Ranks 1..n, tied values sharing the mean of their ranks."""
    x = np.asarray(values, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    out = np.empty(len(x))
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and x[order[j + 1]] == x[order[i]]:
            j += 1
        out[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Spearman's rho: the Pearson correlation of the ranks (average ranks for ties); nan
    when either side has no spread."""
    rx, ry = ranks(x), ranks(y)
    dx, dy = rx - rx.mean(), ry - ry.mean()
    denominator = math.sqrt(float(dx @ dx) * float(dy @ dy))
    return float(dx @ dy) / denominator if denominator else math.nan


def permutation_p(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    how: Uncertainty = Uncertainty(),
) -> float:
    """Two-sided permutation p-value of Spearman's rho: the share of orderings of ``y`` with
    |rho| at least the observed (every ordering up to :data:`EXACT_PERMUTATIONS` items, else
    ``how.samples`` random ones and the observed one); nan without spread."""
    observed = spearman(x, y)
    if math.isnan(observed):
        return math.nan
    values = np.asarray(y, dtype=np.float64)
    if len(values) <= EXACT_PERMUTATIONS:
        orders: Any = itertools.permutations(range(len(values)))
    else:
        rng = np.random.default_rng(how.seed)
        orders = [rng.permutation(len(values)) for _ in range(how.samples)]
    rhos = [abs(spearman(x, values[list(order)])) for order in orders]
    extreme = sum(r >= abs(observed) - 1e-12 for r in rhos)
    if len(values) > EXACT_PERMUTATIONS:
        return (extreme + 1) / (len(rhos) + 1)
    return extreme / len(rhos)


def spearman_estimate(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    how: Uncertainty = Uncertainty(),
) -> Estimate:
    """Spearman's rho with the percentile bootstrap over the pairs (resampled pairs re-ranked;
    resamples without spread left out); no interval under MIN_RESAMPLED pairs."""
    value = spearman(x, y)
    n = len(x)
    if n < MIN_RESAMPLED:
        return Estimate(value, math.nan, math.nan, n, "bootstrap: too few items", how.confidence)
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    draws = []
    for row in weights(n, how.samples, how.seed).astype(int):
        picked = np.repeat(np.arange(n), row)
        draws.append(spearman(xs[picked], ys[picked]))
    return percentile(value, np.array(draws), n, f"bootstrap ({how.samples} resamples)", how)


@dataclass
class Factors(Result):
    """P@1 by Zhao et al.'s factors.

    Attributes:
        languages: the probed languages.
        counts: ``"lang:uuid"`` -> tokens of the gold object.
        correct: ``"lang:uuid"`` -> whether the probe got it right.
        sizes: language -> training-text size (empty without sizes).
        size_source: where the sizes came from (``--text-sizes``, a corpus folder), or "".
        model: fingerprint of the model whose tokenizer counted.
        settings: how the counts and the correlation were made, the uncertainty settings.
    """

    FILE: ClassVar[str] = FACTORS_FILE

    languages: list[str]
    counts: dict[str, int]
    correct: dict[str, bool]
    sizes: dict[str, float] = field(default_factory=dict)
    size_source: str = ""
    model: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def uncertainty(self) -> Uncertainty:
        return Uncertainty.of(self.settings)

    def _probing(self) -> tuple[ProbeResult, dict[tuple[str, str], int]]:
        rows: list[dict[str, Any]] = [
            {"lang": key.split(":", 1)[0], "uuid": key.split(":", 1)[1], "correct": ok}
            for key, ok in self.correct.items()
        ]
        counts = {(r["uuid"], r["lang"]): self.counts[f"{r['lang']}:{r['uuid']}"] for r in rows}
        return ProbeResult(self.languages, [], rows), counts

    def split(self) -> dict[str, dict[str, Estimate]]:
        """:func:`token_split` of the saved outcomes."""
        probing, counts = self._probing()
        return token_split(probing, counts, self.uncertainty())

    def p_at_1(self) -> dict[str, Estimate]:
        """Micro P@1 per language (Wilson)."""
        out = {}
        for lang in self.languages:
            got = [ok for key, ok in self.correct.items() if key.split(":", 1)[0] == lang]
            if got:
                out[lang] = wilson(sum(got), len(got), self.uncertainty().confidence)
        return out

    def correlated(self) -> list[str]:
        """The languages with both a P@1 and a size, in probing order."""
        have = self.p_at_1()
        return [lang for lang in self.languages if lang in have and lang in self.sizes]

    def correlation(self) -> tuple[Estimate, float] | None:
        """Spearman's rho of P@1 with text size over :meth:`correlated` (bootstrap interval)
        and its permutation p-value; None without sizes for two languages."""
        langs = self.correlated()
        if len(langs) < 2:
            return None
        p_at_1 = self.p_at_1()
        x = [p_at_1[lang].value for lang in langs]
        y = [float(self.sizes[lang]) for lang in langs]
        how = self.uncertainty()
        return spearman_estimate(x, y, how), permutation_p(x, y, how)

    def to_json(self) -> dict[str, Any]:
        """The fields, with the split and the correlation for readers of the file."""
        found = self.correlation()
        return {
            **super().to_json(),
            "split": {
                lang: {group: e.to_json() for group, e in row.items()}
                for lang, row in self.split().items()
            },
            "spearman": None
            if found is None
            else {**found[0].to_json(), "p_permutation": found[1], "languages": self.correlated()},
        }


def factors(
    probing: ProbeResult,
    counts: Mapping[tuple[str, str], int],
    *,
    sizes: Mapping[str, float] | None = None,
    size_source: str = "",
    model: Mapping[str, Any] | None = None,
    uncertainty: Uncertainty = Uncertainty(),
) -> Factors:
    """Zhao et al.'s first two factors of a probing result: P@1 by the object's token count
    (``counts``, e.g. :func:`object_token_counts`) and its rank correlation with the
    languages' training-text ``sizes`` (see the module's docstring).

    Raises:
        UserError: a probed fact without a count; sizes for none of the probed languages.
    """
    token_split(probing, counts, uncertainty)  # checks every fact has its count
    sizes = dict(sizes or {})
    if sizes and not set(sizes) & set(probing.languages):
        raise UserError(
            f"text sizes are for {', '.join(sizes)}; the probed languages are "
            f"{', '.join(probing.languages)}"
        )
    return Factors(
        languages=list(probing.languages),
        counts={
            f"{p['lang']}:{p['uuid']}": int(counts[(p["uuid"], p["lang"])])
            for p in probing.predictions
        },  # fmt: skip
        correct={f"{p['lang']}:{p['uuid']}": bool(p["correct"]) for p in probing.predictions},
        sizes={lang: float(v) for lang, v in sizes.items() if lang in probing.languages},
        size_source=size_source,
        model=dict(model or {}),
        settings={
            "token_count": "tokens of the sentence cut after the object beyond the prefix it "
            "shares with the sentence cut before it",
            "p_at_1": "micro (all facts of the language)",
            "correlation": "Spearman (average ranks for ties), percentile bootstrap over "
            f"languages (none under {MIN_RESAMPLED}), two-sided permutation p",
            "uncertainty": uncertainty.to_json(),
        },
    )


__all__ = [
    "FACTORS_FILE",
    "ONE",
    "SEVERAL",
    "Factors",
    "corpus_text_sizes",
    "factors",
    "object_token_counts",
    "parse_text_sizes",
    "permutation_p",
    "ranks",
    "spearman",
    "spearman_estimate",
    "token_split",
]
