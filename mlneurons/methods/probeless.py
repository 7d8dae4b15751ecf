"""PROBELESS fact neurons (Antverg & Belinkov 2022, as adapted by Zhao et al. 2024).

Per fact, the MLP activations of all layers at the object position form one vector
(causal LMs: the position whose next token is the object's first token; masked LMs:
the mask positions, averaged). A fact's score per neuron is the mean absolute
difference from every other fact's vector, r(z) / (K - 1); the top-k neurons over
all layers are the fact's neurons. Languages are compared by the overlap of the
top-k sets of the facts both predict correctly, with a bootstrap interval over those
facts and the chance level of two random top-k sets (hypergeometric).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

import numpy as np
import torch
from jaxtyping import Float

from mlneurons.data.facts import FactSet
from mlneurons.evaluation.uncertainty import ChanceLevel, Estimate, Uncertainty, holm, mean
from mlneurons.methods.probing.causal import common_prefix_length
from mlneurons.methods.probing.masked import mask_activations
from mlneurons.models.bridge import TransformerBridge
from mlneurons.models.fingerprint import fingerprint
from mlneurons.models.forward import pad_right
from mlneurons.models.hooks import is_masked_lm
from mlneurons.models.tokens import sentence_ids
from mlneurons.results import Result
from mlneurons.stats.collector import HookStats, Labelled, collect
from mlneurons.stats.distributed import gather
from mlneurons.world import World

FACT_NEURONS_FILE = "fact_neurons.json"


def probeless_scores(
    vectors: Float[torch.Tensor, "fact neuron"],
) -> Float[torch.Tensor, "fact neuron"]:
    """Mean absolute difference of each fact's vector from every other fact's, per neuron.

    Computed with sorted prefix sums: O(K log K) per neuron instead of O(K^2).
    """
    k = vectors.shape[0]
    if k < 2:
        raise ValueError(f"PROBELESS needs at least two facts, got {k}")
    values, order = vectors.double().sort(0)
    prefix = values.cumsum(0)
    total = prefix[-1]
    rank = torch.arange(k, dtype=torch.float64)[:, None]
    below = values * rank - (prefix - values)  # sum over smaller values of (x - s)
    above = (total - prefix) - values * (k - 1 - rank)  # sum over larger values of (s - x)
    scores = torch.empty_like(values)
    scores.scatter_(0, order, (below + above) / (k - 1))
    return scores.float()


def position_batches(
    rows: list[list[int]], positions: list[int], batch_size: int
) -> Iterator[Labelled]:
    """Right-padded batches whose row ``i`` is label ``i`` and weighs 1 at ``positions[i]`` only."""
    for start in range(0, len(rows), batch_size):
        group = rows[start : start + batch_size]
        tokens, _ = pad_right(group)  # right padding: causal positions never see it
        weights = torch.zeros(tokens.shape)
        weights[torch.arange(len(group)), torch.tensor(positions[start : start + batch_size])] = 1.0
        yield Labelled(tokens, torch.arange(start, start + len(group)), weights=weights)


def per_label_vectors(collected: HookStats) -> Float[torch.Tensor, "label point neuron"]:
    """Each label's mean activation at every point (one position or pooled masks)."""
    sums = collected.stacked("sums")
    return (sums / collected.weights.to(sums.dtype)[:, None, None]).float()


@torch.inference_mode()
def object_position_activations(
    model: TransformerBridge,
    facts: FactSet,
    *,
    keys: list[tuple[str, str]] | None = None,
    interventions: Sequence[tuple[str, Any]] = (),
    batch_size: int = 16,
    world: World | None = None,
    progress: bool = True,
) -> dict[tuple[str, str], Float[torch.Tensor, "layer neuron"]]:
    """MLP activations of all layers at each fact's object position (PROBELESS features).

    Causal LMs: the position whose next token is the gold object's first token; masked
    LMs: the mask positions, averaged (:func:`mlneurons.methods.probing.masked.mask_activations`).
    A collector pass with one label per fact.

    Args:
        keys: ``(uuid, lang)`` of the facts to read (default: all).
        interventions: hooks applied during the pass (e.g. LRP2's projection).
        world: under ``torchrun``, every rank reads the facts ``[rank::size]`` and all
            ranks get every fact's vector (causal LMs).

    Returns:
        ``(uuid, lang) -> [layer, neuron]`` act_fn outputs.
    """
    n_layers = int(model.cfg.n_layers)
    if is_masked_lm(model):
        with model.hooks(fwd_hooks=list(interventions)):
            flat = mask_activations(model, facts, batch_size=batch_size, keys=keys)
        return {key: v.view(n_layers, -1) for key, v in flat.items()}
    wanted = set(keys) if keys is not None else None
    object_first = {key for key, t in facts.templates.items() if t.index("[Y]") < t.index("[X]")}
    if object_first:
        warnings.warn(
            f"templates {sorted(object_first)} put [Y] before [X]: the position before the object "
            "does not see the subject, so their facts are skipped",
            stacklevel=2,
        )
    chosen = [
        f
        for f in facts.facts
        if (wanted is None or (f.uuid, f.lang) in wanted)
        and (f.lang, f.relation) not in object_first
    ]
    world = world or World()
    chosen = chosen[world.rank :: world.size]
    if not chosen and world.size == 1:
        return {}
    tokenizer = model.tokenizer
    rows, positions = [], []
    for fact in chosen:
        gold = sentence_ids(tokenizer, facts.fill(fact))
        template = facts.templates[(fact.lang, fact.relation)]
        head = template.split("[Y]")[0].replace("[X]", fact.subject).rstrip()
        shared = common_prefix_length([gold, sentence_ids(tokenizer, head)])
        rows.append(gold[: max(shared, 1)])
        positions.append(max(shared, 1) - 1)
    mine: dict[tuple[str, str], torch.Tensor] = {}
    if chosen:
        with model.hooks(fwd_hooks=list(interventions)):
            collected = collect(
                model,
                position_batches(rows, positions, batch_size),
                labels=[f.label for f in chosen],
                dtype=torch.float32,  # each label is read once: nothing accumulates
                total=-(-len(rows) // batch_size),
                desc="fact activations",
                progress=progress,
            )
        vectors = per_label_vectors(collected)
        mine = {(f.uuid, f.lang): vectors[i] for i, f in enumerate(chosen)}
    return dict(gather(list(mine.items()), world))


@dataclass
class FactNeurons(Result):
    """Top-k PROBELESS neurons of each correctly predicted fact, per language.

    Attributes:
        languages: languages in order.
        k: neurons per fact.
        neurons: language -> uuid -> ``[k, 2]`` (layer, neuron) pairs, best first.
        model: fingerprint of the model.
        settings: ``uncertainty``: how intervals are computed (defaults when absent).
    """

    FILE: ClassVar[str] = FACT_NEURONS_FILE

    languages: list[str]
    k: int
    neurons: dict[str, dict[str, torch.Tensor]]
    n_layers: int
    d_mlp: int
    model: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def uncertainty(self) -> Uncertainty:
        """The interval settings this result recorded (the defaults for older results)."""
        return Uncertainty.of(self.settings)

    def shared_overlaps(self, a: str, b: str) -> list[tuple[int, int]]:
        """Per fact both languages have (sorted by uuid): ``(|A ∩ B|, |A ∪ B|)`` of their
        top-k sets."""
        sets = {
            lang: {
                u: {tuple(p) for p in self.neurons[lang][u].tolist()} for u in self.neurons[lang]
            }
            for lang in (a, b)
            if lang in self.neurons
        }
        if len(sets) < (1 if a == b else 2):
            return []
        shared = sorted(sets[a].keys() & sets[b].keys())  # a fixed order: same sum
        return [(len(sets[a][u] & sets[b][u]), len(sets[a][u] | sets[b][u])) for u in shared]

    def overlap(self) -> dict[str, dict[str, float | None]]:
        """Mean Jaccard of top-k sets over the facts both languages have (Zhao et al.'s similarity)."""
        table: dict[str, dict[str, float | None]] = {}
        for a in self.languages:
            table[a] = {}
            for b in self.languages:
                scores = [both / either for both, either in self.shared_overlaps(a, b)]
                table[a][b] = sum(scores) / len(scores) if scores else None
        return table

    def overlap_tests(self) -> dict[tuple[str, str], OverlapTest]:
        """Every pair of languages (in language order) with shared facts: the mean Jaccard
        with its bootstrap interval over the shared facts, against two random top-k sets
        per fact out of all ``n_layers * d_mlp`` neurons (hypergeometric: the null mean
        Jaccard and the exact chance of a total intersection at least as large), the
        p-value Holm-adjusted over the pairs."""
        how = self.uncertainty()
        population = self.n_layers * self.d_mlp
        found: dict[tuple[str, str], tuple[Estimate, ChanceLevel]] = {}
        for i, a in enumerate(self.languages):
            for b in self.languages[i + 1 :]:
                pairs = self.shared_overlaps(a, b)
                if pairs:
                    scores = [both / either for both, either in pairs]
                    intersection = sum(both for both, _ in pairs)
                    observed = sum(scores) / len(scores)
                    chance = topk_chance(observed, intersection, len(pairs), population, self.k)
                    found[(a, b)] = (mean(scores, how), chance)
        adjusted = holm([chance.p_value for _, chance in found.values()])
        return {
            pair: OverlapTest(pair, estimate, chance, p, len(found))
            for (pair, (estimate, chance)), p in zip(found.items(), adjusted)
        }

    def to_json(self) -> dict[str, Any]:
        """The fields (neuron pairs as lists), with the overlap table for readers of the file."""
        return {
            "languages": self.languages,
            "k": self.k,
            "n_layers": self.n_layers,
            "d_mlp": self.d_mlp,
            "overlap": self.overlap(),
            "overlap_tests": [test.to_json() for test in self.overlap_tests().values()],
            "model": self.model,
            "settings": self.settings,
            "neurons": {
                lang: {u: p.tolist() for u, p in per.items()} for lang, per in self.neurons.items()
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], tensors: dict[str, Any] | None = None) -> FactNeurons:
        neurons = {
            lang: {u: torch.tensor(p, dtype=torch.long).reshape(-1, 2) for u, p in per.items()}
            for lang, per in data["neurons"].items()
        }
        return cls(
            data["languages"],
            data["k"],
            neurons,
            data["n_layers"],
            data["d_mlp"],
            data["model"],
            data.get("settings", {}),
        )


@dataclass(frozen=True)
class OverlapTest:
    """The fact-neuron overlap of two languages against chance.

    Attributes:
        languages: the pair.
        overlap: the mean Jaccard of the top-k sets over the shared facts, with its
            percentile bootstrap interval over those facts.
        chance: two random top-k sets per fact (hypergeometric): the null mean Jaccard and
            the exact one-sided p-value of the total intersection over the shared facts.
        p_adjusted: ``chance.p_value`` Holm-adjusted over the ``family`` pairs.
        family: how many pairs were tested together.
    """

    languages: tuple[str, str]
    overlap: Estimate
    chance: ChanceLevel
    p_adjusted: float
    family: int

    def above_chance(self) -> bool:
        """Holm-adjusted ``p < 1 - confidence``."""
        return self.p_adjusted < 1 - self.overlap.confidence

    def to_json(self) -> dict[str, Any]:
        return {
            "languages": list(self.languages),
            "overlap": self.overlap.to_json(),
            "chance": self.chance.to_json(),
            "p_adjusted": self.p_adjusted,
            "adjustment": f"Holm over {self.family} pairs",
            "above_chance": self.above_chance(),
        }


def hypergeometric_pmf(population: int, k: int) -> np.ndarray:
    """``P(X = i)``, ``i = 0..k``, for the overlap ``X`` of two random ``k``-sets out of
    ``population`` (log-gamma, so it holds for any model size)."""

    def log_comb(n: int, r: int) -> float:
        return math.lgamma(n + 1) - math.lgamma(r + 1) - math.lgamma(n - r + 1)

    total = log_comb(population, k)
    low = max(0, 2 * k - population)
    logs = [
        log_comb(k, i) + log_comb(population - k, k - i) - total if i >= low else -math.inf
        for i in range(k + 1)
    ]
    pmf: np.ndarray = np.exp(np.array(logs))
    pmf /= pmf.sum()
    return pmf


def topk_chance(
    observed: float, intersection: int, facts: int, population: int, k: int
) -> ChanceLevel:
    """The mean top-k Jaccard of ``facts`` facts against random top-k sets: the null mean
    Jaccard ``E[X / (2k - X)]`` and ``P(X_1 + ... + X_facts >= intersection)`` (the
    hypergeometric overlaps of independent facts, convolved)."""
    pmf = hypergeometric_pmf(population, k)
    sizes = np.arange(k + 1)
    expected = float(pmf @ (sizes / (2 * k - sizes)))
    total = np.ones(1)  # P(sum = s) for s < intersection; the last bin holds P(sum >= it)
    for _ in range(facts if intersection > 0 else 0):
        total = np.convolve(total, pmf)
        total = np.append(total[:intersection], total[intersection:].sum())
    p = float(min(1.0, total[intersection])) if len(total) > intersection else 0.0
    return ChanceLevel(observed, expected, p, "hypergeometric (random top-k sets per fact)")


def fact_neurons(
    model: TransformerBridge,
    facts: FactSet,
    correct: dict[tuple[str, str], bool],
    *,
    k: int = 50,
    interventions: Sequence[tuple[str, Any]] = (),
    batch_size: int = 16,
    world: World | None = None,
    progress: bool = True,
    uncertainty: Uncertainty = Uncertainty(),
) -> FactNeurons:
    """PROBELESS fact neurons of the correctly predicted facts of each language.

    Args:
        correct: ``(uuid, lang) -> correct``, e.g. ``ProbeResult.correct_map()``; as in
            Zhao et al., only correct facts are used, one vector per fact.
        k: neurons per fact (Zhao et al.: 50).
        world: under ``torchrun``, the fact vectors are read data-parallel (see
            :func:`object_position_activations`); every rank gets the same result.
        uncertainty: how :meth:`FactNeurons.overlap_tests` computes its intervals (recorded
            in ``settings``).
    """
    keys = [key for key, ok in correct.items() if ok]
    vectors = object_position_activations(
        model,
        facts,
        keys=keys,
        interventions=interventions,
        batch_size=batch_size,
        world=world,
        progress=progress,
    )
    n_layers, d_mlp = int(model.cfg.n_layers), int(cast(int, model.cfg.d_mlp))
    if not 0 < k <= n_layers * d_mlp:
        raise ValueError(f"k must be in 1..{n_layers * d_mlp}, got {k}")
    neurons: dict[str, dict[str, torch.Tensor]] = {}
    for lang in facts.languages:
        uuids = [u for (u, lg) in keys if lg == lang and (u, lg) in vectors]
        if len(uuids) < 2:
            continue
        scores = probeless_scores(torch.stack([vectors[(u, lang)].flatten() for u in uuids]))
        top = scores.topk(k, dim=1).indices
        neurons[lang] = {
            u: torch.stack([top[i] // d_mlp, top[i] % d_mlp], 1) for i, u in enumerate(uuids)
        }
    if not neurons:
        raise ValueError("no language has two or more correctly predicted facts to compare")
    settings = {"uncertainty": uncertainty.to_json()}
    return FactNeurons(list(neurons), k, neurons, n_layers, d_mlp, fingerprint(model), settings)


__all__ = [
    "FACT_NEURONS_FILE",
    "FactNeurons",
    "fact_neurons",
    "object_position_activations",
    "probeless_scores",
]
