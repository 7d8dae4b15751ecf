"""PROBELESS fact neurons (Antverg & Belinkov 2022, as adapted by Zhao et al. 2024).

Per fact, the MLP activations of all layers at the object position form one vector
(causal LMs: the position whose next token is the object's first token; masked LMs:
the mask positions, averaged). A fact's score per neuron is the mean absolute
difference from every other fact's vector, r(z) / (K - 1); the top-k neurons over
all layers are the fact's neurons. Languages are compared by the overlap of the
top-k sets of the facts both predict correctly.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

import torch
from jaxtyping import Float

from mlneurons.data.facts import FactSet
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
    """

    FILE: ClassVar[str] = FACT_NEURONS_FILE

    languages: list[str]
    k: int
    neurons: dict[str, dict[str, torch.Tensor]]
    n_layers: int
    d_mlp: int
    model: dict[str, Any] = field(default_factory=dict)

    def overlap(self) -> dict[str, dict[str, float | None]]:
        """Mean Jaccard of top-k sets over the facts both languages have (Zhao et al.'s similarity)."""
        sets = {
            lang: {u: {tuple(p) for p in pairs.tolist()} for u, pairs in per.items()}
            for lang, per in self.neurons.items()
        }
        table: dict[str, dict[str, float | None]] = {}
        for a in self.languages:
            table[a] = {}
            for b in self.languages:
                shared = sorted(sets[a].keys() & sets[b].keys())  # a fixed order: same sum
                scores = [
                    len(sets[a][u] & sets[b][u]) / len(sets[a][u] | sets[b][u]) for u in shared
                ]
                table[a][b] = sum(scores) / len(scores) if scores else None
        return table

    def to_json(self) -> dict[str, Any]:
        """The fields (neuron pairs as lists), with the overlap table for readers of the file."""
        return {
            "languages": self.languages,
            "k": self.k,
            "n_layers": self.n_layers,
            "d_mlp": self.d_mlp,
            "overlap": self.overlap(),
            "model": self.model,
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
            data["languages"], data["k"], neurons, data["n_layers"], data["d_mlp"], data["model"]
        )


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
) -> FactNeurons:
    """PROBELESS fact neurons of the correctly predicted facts of each language.

    Args:
        correct: ``(uuid, lang) -> correct``, e.g. ``ProbeResult.correct_map()``; as in
            Zhao et al., only correct facts are used, one vector per fact.
        k: neurons per fact (Zhao et al.: 50).
        world: under ``torchrun``, the fact vectors are read data-parallel (see
            :func:`object_position_activations`); every rank gets the same result.
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
    return FactNeurons(list(neurons), k, neurons, n_layers, d_mlp, fingerprint(model))


__all__ = [
    "FACT_NEURONS_FILE",
    "FactNeurons",
    "fact_neurons",
    "object_position_activations",
    "probeless_scores",
]
