"""Do language neurons follow the language or its script? (Verma et al., ACL 2026)

LAPE runs three times on the same text: as it is, romanised, and with the words of each
sentence shuffled (:mod:`mlneurons.data.controls`). Per language, the neuron sets of two
controls are compared by their overlap and Jaccard, against the overlap two random sets
of those sizes would have (hypergeometric over all MLP neurons of the model), with Holm's
adjustment across the languages of each pair of controls. Units that follow the script
overlap little between original and romanised text; units that follow the words' identity
rather than their order overlap a lot between original and shuffled text.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from mlneurons.data.controls import CONTROLS, controlled, is_romanised
from mlneurons.data.corpus import MultilingualCorpus
from mlneurons.errors import UserError
from mlneurons.evaluation.uncertainty import ChanceLevel, holm, overlap_null
from mlneurons.methods import lape
from mlneurons.models.bridge import TransformerBridge
from mlneurons.results import Result
from mlneurons.stats.activation import collect_activation_stats

SCRIPT_CONTROLS_FILE = "script_controls.json"


@dataclass
class ScriptControlsResult(Result):
    """LAPE neurons of each language under each control, and their overlaps.

    Attributes:
        languages: the languages compared (LAPE's entropy runs across them).
        controls: the controls run, ``original`` first.
        neurons: control -> language -> ``[[layer, neuron], ...]``.
        population: MLP neurons in the model (layers x d_mlp), the chance level's urn.
        romanised: the languages whose text romanisation changed (non-Latin scripts).
        model: fingerprint of the model.
        settings: corpus, LAPE constants, seed.
    """

    FILE: ClassVar[str] = SCRIPT_CONTROLS_FILE

    languages: list[str]
    controls: list[str]
    neurons: dict[str, dict[str, list[list[int]]]]
    population: int
    romanised: list[str] = field(default_factory=list)
    model: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def pairs(self) -> list[tuple[str, str]]:
        """The pairs of controls compared: ``original`` with each other one."""
        return [(a, b) for a, b in itertools.combinations(self.controls, 2) if a == "original"]

    def overlaps(self) -> dict[str, dict[str, dict[str, Any]]]:
        """``"original~romanised" -> language -> {"a", "b", "overlap", "jaccard",
        "chance" (ChanceLevel JSON), "p_holm"}``; Holm runs over the languages of a pair."""
        table: dict[str, dict[str, dict[str, Any]]] = {}
        for first, second in self.pairs():
            rows: dict[str, dict[str, Any]] = {}
            for lang in self.languages:
                a = {tuple(p) for p in self.neurons[first][lang]}
                b = {tuple(p) for p in self.neurons[second][lang]}
                both = len(a & b)
                chance: ChanceLevel = overlap_null(both, self.population, len(a), len(b))
                rows[lang] = {
                    "a": len(a),
                    "b": len(b),
                    "overlap": both,
                    "jaccard": both / len(a | b) if a | b else None,
                    "chance": chance.to_json(),
                }
            adjusted = holm([row["chance"]["p_value"] for row in rows.values()])
            for row, p in zip(rows.values(), adjusted):
                row["p_holm"] = p
            table[f"{first}~{second}"] = rows
        return table

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "overlaps": self.overlaps()}


def script_controls(
    model: TransformerBridge,
    corpus: MultilingualCorpus,
    *,
    controls: Sequence[str] = CONTROLS,
    seed: int = 0,
    batch_size: int = 8,
    top_rate: float = 0.01,
    filter_rate: float = 0.95,
    activation_bar_ratio: float = 0.95,
) -> ScriptControlsResult:
    """LAPE on ``corpus`` under each control (``original``, ``romanised``, ``shuffled``).

    Args:
        model: the model.
        corpus: the text (text sources, not token ids), at least two languages.
        controls: which controls to run; ``original`` always runs, first.
        seed: seed of the word shuffles.
        batch_size: rows per forward pass.
        top_rate, filter_rate, activation_bar_ratio: LAPE's constants.
    """
    if len(corpus.languages) < 2:
        raise UserError(f"LAPE compares languages: give at least two, got {corpus.languages}")
    for control in controls:
        if control not in CONTROLS:
            raise UserError(f"control={control!r} is not valid; choose from {', '.join(CONTROLS)}")
    order = ["original", *(c for c in CONTROLS if c in controls and c != "original")]
    texts = [controlled(corpus, control, seed=seed) for control in order]  # checked up front
    neurons: dict[str, dict[str, list[list[int]]]] = {}
    population = 0
    fingerprint: dict[str, Any] = {}
    chosen: dict[str, Any] = {}
    for control, text in zip(order, texts):
        stats = collect_activation_stats(model, text, batch_size=batch_size)
        assert stats is not None  # None only for a sharded pass
        selected = lape.select(
            stats,
            top_rate=top_rate,
            filter_rate=filter_rate,
            activation_bar_ratio=activation_bar_ratio,
        )
        neurons[control] = {lang: selected[lang].tolist() for lang in selected.languages}
        population = stats.n_layers * stats.d_mlp
        fingerprint, chosen = dict(stats.model), dict(selected.constants)
    return ScriptControlsResult(
        languages=list(corpus.languages),
        controls=order,
        neurons=neurons,
        population=population,
        romanised=[lang for lang in corpus.languages if is_romanised(lang)],
        model=fingerprint,
        settings={"corpus": corpus.to_dict(), "constants": chosen, "seed": seed},
    )


__all__ = ["SCRIPT_CONTROLS_FILE", "ScriptControlsResult", "script_controls"]
