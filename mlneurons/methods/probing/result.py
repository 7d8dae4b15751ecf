"""Factual probing results: one prediction per fact, P@1 per language and relation."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, ClassVar

from mlneurons.data.facts import Fact
from mlneurons.results import Result

PROBE_FILE = "probe.json"


@dataclass
class ProbeResult(Result):
    """Per-fact predictions with P@1 and Jaccard views.

    Attributes:
        languages: probed languages, in order.
        relations: probed relations, in order.
        predictions: ``{"uuid", "lang", "relation", "gold", "predicted", "correct"}`` per fact.
        model: fingerprint of the model.
        settings: how the facts were probed.
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
        """The fields, with P@1 and Jaccard computed for readers of the file."""
        return {
            "languages": self.languages,
            "relations": self.relations,
            "p_at_1": self.p_at_1(),
            "predictions": self.predictions,
            "jaccard": self.jaccard(),
            "model": self.model,
            "settings": self.settings,
        }


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
