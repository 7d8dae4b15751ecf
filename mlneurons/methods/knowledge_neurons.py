"""Language-independent knowledge neurons (LIKN; Chen et al., AAAI 2024, "Journey to the
Center of the Knowledge Neurons").

Chen et al. find each fact's knowledge neurons separately in English and Chinese and call
the neurons found in both the fact's *language-independent knowledge neurons*; their code
(``heng840/AMIG``, ``get_cross_language_neurons.py``) intersects the two sets per fact and
keeps the facts whose intersection is not empty. They then suppress each fact's LIKN
while the model answers *that* fact's prompts in each language, against unrelated neurons
(``get_cross_language_acc.py``).

Here the per-language sets are the PROBELESS fact neurons
(:func:`~mlneurons.methods.probeless.fact_neurons`), which exist exactly for the facts a
language answers correctly, and the rule extends from two languages to many:

* **the rule**: a fact's LIKN are the neurons in its top-k set in *every* language that
  answers it correctly (the languages whose fact neurons hold it), when at least
  ``min_languages`` (default 2) do; with more languages the intersection can only shrink.
  ``languages`` restricts the languages taken into account (Chen et al.: en and zh).
* **deactivation, per fact** (as the paper suppresses each fact's own neurons): the fact's
  LIKN are set to 0 at every position while the fact is probed in each language that
  defined them (where it was right before, by construction), and, separately, a control of
  as many neurons drawn from the same layers and firing-probability bins
  (:func:`~mlneurons.methods.baselines.matched_control`; the firing probability is measured
  at the prediction position of every probed fact, all languages pooled, where PROBELESS
  reads the neurons). Per language, P@1 after deactivation is compared with P@1 before
  and with the control's on the same facts (exact McNemar, Newcombe's interval, Holm over
  languages).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple, cast

import torch
from jaxtyping import Int
from tqdm.auto import tqdm

from mlneurons.data.facts import FactSet
from mlneurons.errors import UserError
from mlneurons.evaluation.uncertainty import PairedTest, Uncertainty, holm, paired_rates
from mlneurons.methods.baselines import matched_control
from mlneurons.methods.interventions import deactivate, intervene
from mlneurons.methods.lape import LanguageNeurons
from mlneurons.methods.probeless import FactNeurons, object_position_activations
from mlneurons.methods.probing import probe
from mlneurons.methods.probing.result import ProbeResult
from mlneurons.models.bridge import TransformerBridge
from mlneurons.models.fingerprint import fingerprint
from mlneurons.results import Result
from mlneurons.stats.activation import ActivationStats

KNOWLEDGE_NEURONS_FILE = "knowledge_neurons.json"
CONDITIONS = ("before", "likn", "control")
"""The outcomes of each deactivated fact: probed as it was, with its LIKN off, with the control off."""


class SharedNeurons(NamedTuple):
    """One fact's language-independent neurons: the languages intersected, the pairs shared."""

    sources: list[str]
    neurons: Int[torch.Tensor, "k 2"]


def language_independent(
    fact_neurons: FactNeurons,
    *,
    languages: Sequence[str] | None = None,
    min_languages: int = 2,
) -> dict[str, SharedNeurons]:
    """Chen et al.'s language-independent knowledge neurons from PROBELESS fact neurons.

    For each fact held by at least ``min_languages`` of ``languages`` (default: all of the
    fact neurons' languages; a language holds a fact when it answers it correctly), the
    (layer, neuron) pairs in its top-k set in every one of them, sorted. Facts with fewer
    languages are left out; a fact whose sets share nothing maps to an empty ``[0, 2]``.

    Raises:
        UserError: ``min_languages`` below 2, or a language the fact neurons do not have.
    """
    if min_languages < 2:
        raise UserError(f"min_languages={min_languages} is not valid: an intersection needs 2+")
    chosen = list(fact_neurons.languages if languages is None else languages)
    missing = [lang for lang in chosen if lang not in fact_neurons.neurons]
    if missing:
        raise UserError(
            f"no fact neurons for {', '.join(missing)}; these have "
            f"{', '.join(fact_neurons.neurons)} (a language needs two correct facts)"
        )
    uuids = dict.fromkeys(u for lang in chosen for u in fact_neurons.neurons[lang])
    out: dict[str, SharedNeurons] = {}
    for uuid in uuids:
        sources = [lang for lang in chosen if uuid in fact_neurons.neurons[lang]]
        if len(sources) < min_languages:
            continue
        sets = [{tuple(p) for p in fact_neurons.neurons[lang][uuid].tolist()} for lang in sources]
        shared = sorted(set.intersection(*sets))
        out[uuid] = SharedNeurons(sources, torch.tensor(shared, dtype=torch.long).reshape(-1, 2))
    return out


@dataclass
class KnowledgeNeurons(Result):
    """Language-independent knowledge neurons and what deactivating them does.

    Attributes:
        languages: the languages intersected.
        k: PROBELESS neurons per fact and language.
        neurons: uuid -> ``[m, 2]`` (layer, neuron) pairs, for every fact correct in at least
            ``settings["min_languages"]`` languages (``m`` may be 0).
        sources: uuid -> the languages intersected for it (those answering it correctly).
        control: uuid -> its matched control (as many pairs; only facts with LIKN).
        outcomes: one row per deactivated fact and source language: ``uuid``, ``lang``,
            ``relation`` and whether it was correct ``before``, with its ``likn`` off and
            with its ``control`` off.
        n_layers, d_mlp: the model's MLP shape.
        model: fingerprint of the model.
        settings: the rule's and the control's parameters, the uncertainty settings.
    """

    FILE: ClassVar[str] = KNOWLEDGE_NEURONS_FILE

    languages: list[str]
    k: int
    neurons: dict[str, torch.Tensor]
    sources: dict[str, list[str]]
    control: dict[str, torch.Tensor]
    outcomes: list[dict[str, Any]]
    n_layers: int
    d_mlp: int
    model: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def with_neurons(self) -> list[str]:
        """The facts whose LIKN are not empty."""
        return [u for u, pairs in self.neurons.items() if len(pairs)]

    def counts_per_layer(self, *, distinct: bool = False) -> list[int]:
        """LIKN per layer summed over facts (a neuron shared by two facts counts twice), or
        with ``distinct`` the number of different neurons per layer."""
        pairs = [p for p in self.neurons.values() if len(p)]
        if not pairs:
            return [0] * self.n_layers
        every = torch.cat(pairs)
        if distinct:
            every = torch.unique(every, dim=0)
        return torch.bincount(every[:, 0], minlength=self.n_layers).tolist()

    def effects(self) -> dict[str, dict[str, Any]]:
        """Per language, P@1 on its deactivated facts before, with LIKN off and with the
        control off: ``vs_before`` = paired test of LIKN-off against before, ``vs_control`` =
        LIKN-off against control-off (``difference`` = LIKN minus the other), each with its
        Holm-adjusted p-value over the languages (``p_holm``)."""
        how = Uncertainty.of(self.settings)
        rows: dict[str, list[dict[str, Any]]] = {}
        for row in self.outcomes:
            rows.setdefault(row["lang"], []).append(row)
        out: dict[str, dict[str, Any]] = {}
        for lang in [lang for lang in self.languages if lang in rows]:
            got = {c: [bool(r[c]) for r in rows[lang]] for c in CONDITIONS}
            out[lang] = {
                "n": len(rows[lang]),
                "vs_before": paired_rates(got["before"], got["likn"], how),
                "vs_control": paired_rates(got["control"], got["likn"], how),
            }
        for test in ("vs_before", "vs_control"):
            adjusted = holm([row[test].p_value for row in out.values()])
            for row, p in zip(out.values(), adjusted):
                row[f"{test}_p_holm"] = p
        return out

    def to_json(self) -> dict[str, Any]:
        """The fields (pairs as lists), with the counts and effects for readers of the file."""
        effects = {
            lang: {
                key: value.to_json() if isinstance(value, PairedTest) else value
                for key, value in row.items()
            }
            for lang, row in self.effects().items()
        }
        return {
            "languages": self.languages,
            "k": self.k,
            "n_layers": self.n_layers,
            "d_mlp": self.d_mlp,
            "counts_per_layer": self.counts_per_layer(),
            "effects": effects,
            "sources": self.sources,
            "neurons": {u: p.tolist() for u, p in self.neurons.items()},
            "control": {u: p.tolist() for u, p in self.control.items()},
            "outcomes": self.outcomes,
            "model": self.model,
            "settings": self.settings,
        }

    @classmethod
    def from_json(
        cls, data: dict[str, Any], tensors: dict[str, Any] | None = None
    ) -> KnowledgeNeurons:
        def pairs(table: dict[str, Any]) -> dict[str, torch.Tensor]:
            return {u: torch.tensor(p, dtype=torch.long).reshape(-1, 2) for u, p in table.items()}

        return cls(
            data["languages"],
            data["k"],
            pairs(data["neurons"]),
            data["sources"],
            pairs(data["control"]),
            data["outcomes"],
            data["n_layers"],
            data["d_mlp"],
            data.get("model", {}),
            data.get("settings", {}),
        )


def check_from_probing(fact_neurons: FactNeurons, probing: ProbeResult) -> None:
    """Raise unless every fact in ``fact_neurons`` is a fact ``probing`` found correct."""
    correct = probing.correct_map()
    wrong = [
        f"{lang}:{u}" for lang, per in fact_neurons.neurons.items() for u in per
        if not correct.get((u, lang))
    ]  # fmt: skip
    if wrong:
        raise UserError(
            f"the fact neurons hold {len(wrong)} facts that this probing result does not find "
            f"correct (e.g. {wrong[0]}): they come from another probing run"
        )


def firing_counts(
    model: TransformerBridge, facts: FactSet, keys: list[tuple[str, str]], batch_size: int
) -> tuple[torch.Tensor, int]:
    """``([layer, neuron] count of facts on which each neuron fires, facts read)`` at the
    prediction position (the position before the object) of the facts ``keys``."""
    vectors = object_position_activations(
        model, facts, keys=keys, batch_size=batch_size, progress=False
    )
    if not vectors:
        raise UserError("no fact could be read at its object position to measure firing")
    stacked = torch.stack(list(vectors.values()))
    return (stacked > 0).sum(0), len(vectors)


def matched_controls(
    neurons: dict[str, torch.Tensor],
    fires: torch.Tensor,
    n_read: int,
    *,
    bins: int = 20,
    seed: int = 0,
    model: dict[str, Any] | None = None,
) -> dict[str, torch.Tensor]:
    """Per fact, a firing-rate-matched control for its LIKN (:func:`matched_control`): per
    layer, a neuron from the same firing-probability bin for each of its neurons, drawn from
    the neurons that are no fact's LIKN. Every fact gets the same firing probabilities
    (``fires / n_read``); the facts stand in for :func:`matched_control`'s languages."""
    kept = {u: p for u, p in neurons.items() if len(p)}
    if not kept:
        return {}
    n_layers, d_mlp = fires.shape
    reference = LanguageNeurons(kept, n_layers, d_mlp, dict(model or {}))
    n = len(kept)
    stats = ActivationStats(
        list(kept),
        fires.long().expand(n, n_layers, d_mlp).clone(),
        torch.zeros(n, n_layers, d_mlp, dtype=torch.float64),
        torch.full((n,), n_read, dtype=torch.long),
    )
    drawn = matched_control(reference, stats, bins=bins, seed=seed)
    return {u: cast(torch.Tensor, drawn.neurons[u]) for u in kept}


def deactivated_outcomes(
    model: TransformerBridge,
    facts: FactSet,
    probing: ProbeResult,
    shared: dict[str, SharedNeurons],
    control: dict[str, torch.Tensor],
    *,
    batch_size: int = 32,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Each fact with LIKN, probed in its source languages with its LIKN off and with its
    control off (one fact at a time, its own neurons only); one row per fact and language."""
    correct = probing.correct_map()
    rows = []
    for uuid in tqdm(list(control), desc="LIKN deactivation", disable=not progress):
        sources = shared[uuid].sources
        part = FactSet(
            [f for f in facts.facts if f.uuid == uuid and f.lang in sources],
            facts.templates,
            facts.candidates,
            facts.description,
        )
        after = {}
        for condition, pairs in (("likn", shared[uuid].neurons), ("control", control[uuid])):
            with intervene(model, deactivate(pairs, model=model)):
                result = probe(model, part, batch_size=batch_size, progress=False)
            after[condition] = result.correct_map()
        for fact in part.facts:
            key = (uuid, fact.lang)
            rows.append(
                {
                    "uuid": uuid,
                    "lang": fact.lang,
                    "relation": fact.relation,
                    "before": bool(correct[key]),
                    "likn": after["likn"][key],
                    "control": after["control"][key],
                }
            )
    return rows


def knowledge_neurons(
    model: TransformerBridge,
    facts: FactSet,
    probing: ProbeResult,
    fact_neurons: FactNeurons,
    *,
    languages: Sequence[str] | None = None,
    min_languages: int = 2,
    bins: int = 20,
    seed: int = 0,
    batch_size: int = 32,
    uncertainty: Uncertainty = Uncertainty(),
    progress: bool = True,
) -> KnowledgeNeurons:
    """Chen et al.'s language-independent knowledge neurons, and their deactivation per fact
    against firing-rate-matched controls (see the module's docstring for the rule).

    Args:
        facts: the fact set ``probing`` probed (templates and candidates).
        probing: which facts each language gets right (``fact_neurons`` must come from it).
        fact_neurons: the PROBELESS top-k sets (:func:`~mlneurons.methods.probeless.fact_neurons`).
        languages: the languages intersected (default: all of the fact neurons').
        min_languages: the fewest correct languages a fact needs for an intersection.
        bins: firing-probability bins per layer of the matched control.
        seed: seed of the control's draw.
        uncertainty: the level of the paired tests' intervals (recorded).
    """
    if (fact_neurons.n_layers, fact_neurons.d_mlp) != (
        int(model.cfg.n_layers),
        int(model.cfg.d_mlp or 0),
    ):
        raise UserError(
            f"the fact neurons are for {fact_neurons.n_layers} x {fact_neurons.d_mlp} neurons, "
            f"the model has {model.cfg.n_layers} x {model.cfg.d_mlp}"
        )
    check_from_probing(fact_neurons, probing)
    shared = language_independent(fact_neurons, languages=languages, min_languages=min_languages)
    have = {(f.uuid, f.lang) for f in facts.facts}
    keys = [(p["uuid"], p["lang"]) for p in probing.predictions if (p["uuid"], p["lang"]) in have]
    control: dict[str, torch.Tensor] = {}
    n_read = 0
    if any(len(s.neurons) for s in shared.values()):
        fires, n_read = firing_counts(model, facts, keys, batch_size)
        neurons = {u: s.neurons for u, s in shared.items()}
        control = matched_controls(
            neurons, fires, n_read, bins=bins, seed=seed, model=fingerprint(model)
        )
    outcomes = deactivated_outcomes(
        model, facts, probing, shared, control, batch_size=batch_size, progress=progress
    )
    return KnowledgeNeurons(
        languages=list(fact_neurons.languages if languages is None else languages),
        k=fact_neurons.k,
        neurons={u: s.neurons for u, s in shared.items()},
        sources={u: s.sources for u, s in shared.items()},
        control=control,
        outcomes=outcomes,
        n_layers=fact_neurons.n_layers,
        d_mlp=fact_neurons.d_mlp,
        model=fingerprint(model),
        settings={
            "rule": "intersection of the PROBELESS top-k sets of every language answering "
            "the fact correctly",
            "min_languages": min_languages,
            "deactivation": "per fact: its own LIKN (or control) off at every position while "
            "it is probed in its source languages",
            "control": "matched_control: same layers, same firing-probability bins",
            "firing": "act_fn output > 0 at the prediction position of every probed fact, "
            "all languages pooled",
            "facts_read_for_firing": n_read,
            "bins": bins,
            "seed": seed,
            "uncertainty": uncertainty.to_json(),
            "facts": facts.description,
        },
    )


def mean_size(result: KnowledgeNeurons) -> float:
    """Mean number of LIKN per fact held by enough languages (nan when there is none)."""
    sizes = [len(p) for p in result.neurons.values()]
    return sum(sizes) / len(sizes) if sizes else math.nan


__all__ = [
    "CONDITIONS",
    "KNOWLEDGE_NEURONS_FILE",
    "KnowledgeNeurons",
    "SharedNeurons",
    "check_from_probing",
    "deactivated_outcomes",
    "firing_counts",
    "knowledge_neurons",
    "language_independent",
    "matched_controls",
    "mean_size",
]
