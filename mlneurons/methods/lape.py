"""LAPE: language activation probability entropy (Tang et al., ACL 2024).

:func:`select` follows the selection script published with the paper step by step
(each constant and pitfall is named where it is used); :class:`LanguageNeurons` holds the
result, per language a list of (layer, neuron) pairs, and reads and writes the
mask format published with the paper.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, cast

import numpy as np
import torch
from jaxtyping import Bool, Float, Int

from mlneurons.config import rate
from mlneurons.data.builtin_text import normalize_language
from mlneurons.errors import UserError
from mlneurons.evaluation.uncertainty import (
    ChanceLevel,
    Estimate,
    Uncertainty,
    holm,
    overlap_null,
    percentile,
)
from mlneurons.models.bridge import TransformerBridge
from mlneurons.models.dictionary import check_units
from mlneurons.models.fingerprint import check_same_model, fingerprint
from mlneurons.results import Result
from mlneurons.stats.activation import STATS_FILE, ActivationStats, BlockStats

NEURONS_FILE = "neurons.json"
NEURONS_META_FILE = "neurons_meta.json"
SUMMARY_FILE = "summary.json"


@dataclass
class LanguageNeurons(Result):
    """Language-specific neurons: per language, its (layer, neuron) pairs.

    A neuron may belong to several languages (LAPE assigns a kept neuron to every
    language whose activation probability passes the bar).

    The units may also be dictionary features (:mod:`mlneurons.models.dictionary`): then
    ``model["units"]`` names their dictionaries, a "layer" is the index of a feature hook
    point in :attr:`feature_points` and ``d_mlp`` the features per point.

    Attributes:
        neurons: language -> ``[k, 2]`` LongTensor of (layer, neuron) pairs, sorted.
        n_layers: layers of the model the neurons belong to.
        d_mlp: neurons per layer.
        model: fingerprint of that model, when known.
        constants: the selection constants (``top_rate``, ``filter_rate``, ...).
    """

    neurons: Mapping[str, Int[torch.Tensor, "k 2"] | Sequence[Sequence[int]]]
    n_layers: int
    d_mlp: int
    model: dict[str, Any] = field(default_factory=dict)
    constants: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.neurons = dict(self.neurons)
        for lang, pairs in self.neurons.items():
            pairs = torch.as_tensor(pairs, dtype=torch.long).reshape(-1, 2)
            bad = (
                (pairs[:, 0] < 0)
                | (pairs[:, 0] >= self.n_layers)
                | (pairs[:, 1] < 0)
                | (pairs[:, 1] >= self.d_mlp)
            )
            if bad.any():
                layer, neuron = pairs[bad][0].tolist()
                raise UserError(
                    f"neuron (layer {layer}, index {neuron}) of {lang!r} does not fit a model "
                    f"with {self.n_layers} layers of {self.d_mlp} neurons"
                )
            self.neurons[lang] = torch.unique(pairs, dim=0) if len(pairs) else pairs

    def _tensors(self) -> dict[str, torch.Tensor]:
        """:attr:`neurons` as ``__post_init__`` leaves it: a dict of ``[k, 2]`` LongTensors."""
        return cast(dict[str, torch.Tensor], self.neurons)

    @property
    def languages(self) -> list[str]:
        return list(self.neurons)

    def __getitem__(self, language: str) -> Int[torch.Tensor, "k 2"]:
        """The (layer, neuron) pairs of ``language`` (normalised: ``"FR"`` is ``"fr"``)."""
        try:
            return self._tensors()[normalize_language(language, self.languages)]
        except UserError:
            raise UserError(
                f"unknown language {language!r}; these neurons have {self.languages}"
            ) from None

    @property
    def feature_points(self) -> list[str]:
        """The feature hook point of each "layer" when the units are dictionary features;
        empty for MLP neurons."""
        points: list[str] = self.model.get("units", {}).get("points", [])
        return list(points)

    def check_fits(self, model: TransformerBridge) -> None:
        """Raise if these neurons were selected on another model (shape or fingerprint), or
        if they are dictionary features and ``model`` lacks those dictionaries."""
        if self.feature_points:
            check_units(model, self.model["units"], self.d_mlp)
            check_same_model(self.model, model, what="these features", verb="selected")
            return
        fp = fingerprint(model)
        if (self.n_layers, self.d_mlp) != (fp["n_layers"], fp["d_mlp"]):
            raise UserError(
                f"neurons are for {self.n_layers} layers x {self.d_mlp} neurons, but "
                f"model {fp['name']!r} has {fp['n_layers']} x {fp['d_mlp']}"
            )
        check_same_model(self.model, model, what="this neuron set", verb="selected")

    def only(self, *languages: str) -> LanguageNeurons:
        """The neurons of ``languages`` only, with the same model fingerprint and constants."""
        chosen = {normalize_language(code, self.languages): None for code in languages}
        if not chosen:
            raise UserError(f"name at least one language; these neurons have {self.languages}")
        return LanguageNeurons(
            {lang: self.neurons[lang] for lang in chosen},
            self.n_layers,
            self.d_mlp,
            dict(self.model),
            dict(self.constants),
        )

    def difference(self, language: str, other: str) -> Int[torch.Tensor, "k 2"]:
        """The neurons of ``language`` that ``other`` does not have."""
        theirs = {tuple(p) for p in self[other].tolist()}
        mine = [p for p in self[language].tolist() if tuple(p) not in theirs]
        return torch.tensor(mine, dtype=torch.long).reshape(-1, 2)

    def counts(self) -> dict[str, int]:
        """Number of neurons per language."""
        return {lang: len(pairs) for lang, pairs in self.neurons.items()}

    def masks(self) -> Bool[torch.Tensor, "language layer neuron"]:
        """Boolean masks, one per language."""
        mask = torch.zeros(len(self.neurons), self.n_layers, self.d_mlp, dtype=torch.bool)
        for i, pairs in enumerate(self._tensors().values()):
            mask[i, pairs[:, 0], pairs[:, 1]] = True
        return mask

    def counts_per_layer(self) -> Int[torch.Tensor, "language layer"]:
        """Neurons per language and layer (the paper's layer-distribution figure)."""
        return self.masks().sum(-1)

    def overlap(self) -> Int[torch.Tensor, "language language"]:
        """Neurons shared by each pair of languages (diagonal: each language's count)."""
        flat = self.masks().flatten(1).float()
        return (flat @ flat.T).long()

    def overlap_chance(self) -> OverlapChance:
        """Each pair's shared neurons against chance (:class:`OverlapChance`): per layer the
        hypergeometric overlap of random sets as large as the two languages' sets there."""
        return overlap_chance(self)

    FILE: ClassVar[str] = NEURONS_FILE

    @classmethod
    def files(cls) -> tuple[str, ...]:
        return (NEURONS_FILE, NEURONS_META_FILE)

    def save(self, directory: str | Path, *, config: Any = None) -> Path:
        """Write ``neurons.json`` (language -> list of [layer, neuron]) and ``neurons_meta.json``
        (and ``cfg.json`` with ``config``).

        Returns:
            The path of ``neurons.json``.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if config is not None:
            config.save(directory)
        neurons = {lang: pairs.tolist() for lang, pairs in self._tensors().items()}
        meta = {
            "n_layers": self.n_layers,
            "d_mlp": self.d_mlp,
            "model": self.model,
            "constants": self.constants,
            "counts": self.counts(),
        }
        (directory / NEURONS_META_FILE).write_text(json.dumps(meta, indent=1))
        path = directory / NEURONS_FILE
        path.write_text(json.dumps(neurons))
        return path

    @classmethod
    def load(cls, directory: str | Path) -> LanguageNeurons:
        """Read what :meth:`save` wrote into ``directory``."""
        directory = Path(directory)
        if directory.name == NEURONS_FILE:
            directory = directory.parent
        paths = [directory / NEURONS_FILE, directory / NEURONS_META_FILE]
        for path in paths:
            if not path.exists():
                raise FileNotFoundError(
                    f"no {path.name} in {str(directory)!r}; write it with LanguageNeurons.save"
                )
        data, meta = (json.loads(path.read_text()) for path in paths)
        neurons = {
            lang: torch.tensor(pairs, dtype=torch.long).reshape(-1, 2)
            for lang, pairs in data.items()
        }
        return cls(
            neurons,
            meta["n_layers"],
            meta["d_mlp"],
            meta.get("model", {}),
            meta.get("constants", {}),
        )

    @classmethod
    def from_reference_mask(
        cls,
        path: str | Path,
        languages: Sequence[str],
        *,
        d_mlp: int | None = None,
        model: TransformerBridge | None = None,
    ) -> LanguageNeurons:
        """Read a mask published with the LAPE paper (``*.neuron.pth``).

        The file is a list over languages of a list over layers of LongTensors of
        neuron indices. Give the languages in the file's order (for the released
        LLaMA-2 masks: en, zh, fr, es, vi, id, ja).

        Args:
            path: the ``.pth`` file.
            languages: names of the file's languages, in order.
            d_mlp: neurons per layer; taken from ``model`` when given, else the largest
                index + 1 (which cannot check the indices).
            model: a TransformerBridge the mask must fit (layers and indices).
        """
        data = torch.load(str(path), map_location="cpu", weights_only=True)
        if not isinstance(data, (list, tuple)) or not all(
            isinstance(x, (list, tuple)) for x in data
        ):
            raise UserError(
                f"{str(path)!r} is not a LAPE mask: expected a list over languages of lists over layers"
            )
        if len(data) != len(languages):
            raise UserError(
                f"{str(path)!r} holds {len(data)} languages but {len(languages)} names were given: "
                f"{list(languages)}"
            )
        n_layers = len(data[0])
        if any(len(layers) != n_layers for layers in data):
            raise UserError(f"{str(path)!r}: languages have different numbers of layers")
        fp: dict[str, Any] = {}
        if model is not None:
            fp = fingerprint(model)
            if n_layers != fp["n_layers"]:
                raise UserError(
                    f"mask {str(path)!r} has {n_layers} layers but the model has {fp['n_layers']}"
                )
            d_mlp = fp["d_mlp"]
        if d_mlp is None:
            d_mlp = 1 + max((int(t.max()) for layers in data for t in layers if len(t)), default=0)
        neurons = {}
        for lang, layers in zip(languages, data):
            pairs = [
                torch.stack([torch.full_like(idx.long(), layer), idx.long()], dim=1)
                for layer, idx in enumerate(layers)
            ]
            neurons[lang] = torch.cat(pairs) if pairs else torch.empty(0, 2, dtype=torch.long)
        return cls(neurons, n_layers, d_mlp, fp, {"source": str(path)})

    def to_reference_mask(self, path: str | Path) -> Path:
        """Write the mask format of the LAPE paper: a list over languages of lists over layers."""
        data = [
            [pairs[pairs[:, 0] == layer, 1].clone() for layer in range(self.n_layers)]
            for pairs in self._tensors().values()
        ]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(data, str(path))
        return path


OVERLAP_METHOD = "hypergeometric per layer, summed over layers"


def hypergeometric_pmf(population: int, a: int, b: int) -> np.ndarray:
    """``P(X = i)`` for ``i = 0 .. min(a, b)``: the overlap ``X`` of a random ``a``-set and
    ``b``-set of ``population`` units (exact integer ratios, each rounded once)."""
    total = math.comb(population, a)
    top = min(a, b)
    return np.array(
        [math.comb(b, i) * math.comb(population - b, a - i) / total for i in range(top + 1)]
    )


def layered_overlap_null(observed: int, strata: Sequence[tuple[int, int, int]]) -> ChanceLevel:
    """The overlap of two unit sets drawn at random within strata (layers), against chance.

    In each stratum ``(population, a, b)`` a random ``a``-set and ``b``-set share a
    hypergeometric number of units; the strata are independent, so the total's
    distribution is the convolution of theirs. Returns the observed total, its
    expectation ``sum a·b / population`` and the exact chance of a total at least as large
    (one stratum: :func:`~mlneurons.evaluation.uncertainty.overlap_null`).
    """
    pmf = np.ones(1)
    for population, a, b in strata:
        if not (0 <= a <= population and 0 <= b <= population):
            raise ValueError(f"no {a}- and {b}-set among {population} units")
        pmf = np.convolve(pmf, hypergeometric_pmf(population, a, b))
    if not 0 <= observed < len(pmf):
        raise ValueError(f"an overlap of {observed} is impossible in these strata")
    expected = sum(a * b / population for population, a, b in strata if population)
    p = min(1.0, float(pmf[observed:].sum()))
    return ChanceLevel(float(observed), expected, p, OVERLAP_METHOD)


@dataclass(frozen=True)
class OverlapChance:
    """The neurons each pair of languages shares, against chance.

    Random sets as large as the two languages' sets in each layer would share, in layer
    ``l``, a hypergeometric number of neurons with mean ``a_l · b_l / d_mlp``. LAPE sets
    crowd into the first and last layers, so chance keeps each layer's counts: the pair's
    total is compared with the sum over layers (:func:`layered_overlap_null`), and each
    layer on its own with its hypergeometric (``layers``). p-values are one-sided (at least
    as many shared); the pairs' totals are Holm-adjusted over the pairs (:attr:`p_holm`).

    Attributes:
        pairs: the language pairs, each once.
        overall: per pair, the total shared against the sum of the layers' chances.
        layers: per pair, each layer's shared neurons against its hypergeometric.
        population: neurons per layer.
    """

    pairs: list[tuple[str, str]]
    overall: list[ChanceLevel]
    layers: list[list[ChanceLevel]]
    population: int
    correction: str = "Holm"

    @property
    def p_holm(self) -> list[float]:
        """The pairs' p-values, Holm-adjusted over the pairs."""
        return holm([chance.p_value for chance in self.overall])

    def significant(self, alpha: float = 0.05) -> list[bool]:
        """Per pair: more neurons shared than chance at ``alpha`` (Holm-adjusted)."""
        return [p < alpha for p in self.p_holm]

    def expected(self) -> dict[tuple[str, str], float]:
        """The chance expectation of each pair's shared neurons, both orders."""
        both = {}
        for (a, b), chance in zip(self.pairs, self.overall):
            both[a, b] = both[b, a] = chance.expected
        return both

    def to_json(self) -> dict[str, Any]:
        return {
            "method": OVERLAP_METHOD,
            "population": self.population,
            "correction": self.correction,
            "pairs": [
                {
                    "languages": list(pair),
                    "observed": int(chance.observed),
                    "expected": chance.expected,
                    "p_value": chance.p_value,
                    "p_holm": p_holm,
                    "layers": {
                        "observed": [int(c.observed) for c in layers],
                        "expected": [c.expected for c in layers],
                        "p_value": [c.p_value for c in layers],
                    },
                }
                for pair, chance, p_holm, layers in zip(
                    self.pairs, self.overall, self.p_holm, self.layers
                )
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OverlapChance:
        pairs, overall, layers = [], [], []
        for item in data["pairs"]:
            pairs.append((item["languages"][0], item["languages"][1]))
            overall.append(
                ChanceLevel(item["observed"], item["expected"], item["p_value"], OVERLAP_METHOD)
            )
            per = item["layers"]
            layers.append(
                [
                    ChanceLevel(o, e, p, "hypergeometric")
                    for o, e, p in zip(per["observed"], per["expected"], per["p_value"])
                ]
            )
        return cls(pairs, overall, layers, data["population"], data.get("correction", "Holm"))


def overlap_chance(neurons: LanguageNeurons) -> OverlapChance:
    """Each pair of languages' shared neurons against chance (see :class:`OverlapChance`)."""
    masks = neurons.masks()
    sizes = masks.sum(-1).tolist()  # [language][layer]
    shared = torch.einsum("ald,bld->abl", masks.double(), masks.double()).long().tolist()
    languages = neurons.languages
    pairs, overall, layers = [], [], []
    for i in range(len(languages)):
        for j in range(i + 1, len(languages)):
            strata = [(neurons.d_mlp, a, b) for a, b in zip(sizes[i], sizes[j])]
            pairs.append((languages[i], languages[j]))
            overall.append(layered_overlap_null(sum(shared[i][j]), strata))
            layers.append(
                [
                    overlap_null(k, population, a, b)
                    for k, (population, a, b) in zip(shared[i][j], strata)
                ]
            )
    return OverlapChance(pairs, overall, layers, neurons.d_mlp)


@dataclass
class LapeSummary(Result):
    """What a LAPE run found, in numbers: ``summary.json``.

    Attributes:
        model: fingerprint of the model.
        languages: the languages compared.
        tokens_per_language: tokens counted per language.
        corpus: description of the corpus.
        constants: the selection constants.
        neurons_per_language: number of language-specific neurons per language.
        neurons_per_layer: per language, its neurons in each layer.
        wall_time_s: seconds the run took (statistics and selection).
        stats: the statistics file re-used (None when they were collected).
        overlap: each pair's shared neurons against chance (:meth:`OverlapChance.to_json`);
            absent in summaries written before it.
        stability: the selection's stability under resampled corpus rows
            (:meth:`SelectionStability.to_json`), when it was measured.
        uncertainty: the settings of the intervals and tests (:class:`Uncertainty`).
    """

    FILE: ClassVar[str] = SUMMARY_FILE

    model: dict[str, Any]
    languages: list[str]
    tokens_per_language: dict[str, int]
    corpus: dict[str, Any]
    constants: dict[str, Any]
    neurons_per_language: dict[str, int]
    neurons_per_layer: dict[str, list[int]]
    wall_time_s: float | None = None
    stats: str | None = None
    overlap: dict[str, Any] | None = None
    stability: dict[str, Any] | None = None
    uncertainty: dict[str, Any] | None = None


def summarize(
    stats: ActivationStats,
    neurons: LanguageNeurons,
    *,
    wall_time_s: float | None = None,
    stats_path: str | None = None,
    stability: SelectionStability | None = None,
    uncertainty: Uncertainty = Uncertainty(),
) -> LapeSummary:
    """The :class:`LapeSummary` of neurons selected from ``stats``, with each pair's shared
    neurons against chance and, when measured, the selection's ``stability``."""
    per_layer = neurons.counts_per_layer()
    return LapeSummary(
        model=stats.model,
        languages=list(stats.languages),
        tokens_per_language=dict(zip(stats.languages, stats.token_counts.tolist())),
        corpus=stats.corpus,
        constants=neurons.constants,
        neurons_per_language=neurons.counts(),
        neurons_per_layer={lang: per_layer[i].tolist() for i, lang in enumerate(neurons.languages)},
        wall_time_s=None if wall_time_s is None else round(wall_time_s, 1),
        stats=stats_path,
        overlap=neurons.overlap_chance().to_json() if len(neurons.languages) > 1 else None,
        stability=None if stability is None else stability.to_json(),
        uncertainty=uncertainty.to_json(),
    )


@dataclass
class LapeResult(Result):
    """Everything a LAPE run writes: statistics, neurons and summary (one directory)."""

    FILE: ClassVar[str] = SUMMARY_FILE

    stats: ActivationStats
    neurons: LanguageNeurons
    summary: LapeSummary

    @classmethod
    def files(cls) -> tuple[str, ...]:
        return (STATS_FILE, *LanguageNeurons.files(), SUMMARY_FILE)

    def save(self, directory: str | Path, *, config: Any = None) -> Path:
        """Write the three into ``directory``; statistics re-used from that very file stay."""
        directory = Path(directory)
        source = Path(self.summary.stats) if self.summary.stats else None
        if source is not None and source.suffix != ".safetensors":
            source = source / STATS_FILE
        if source is None or source.resolve() != (directory / STATS_FILE).resolve():
            self.stats.save(directory / STATS_FILE)
        self.neurons.save(directory)
        return self.summary.save(directory, config=config)

    @property
    def uncertainty(self) -> Uncertainty:
        """The settings the run recorded (the defaults for runs made before them)."""
        return Uncertainty(**(self.summary.uncertainty or {}))

    def overlap_chance(self) -> OverlapChance:
        """Each pair's shared neurons against chance (as saved, else from the neurons)."""
        if self.summary.overlap is not None:
            return OverlapChance.from_json(self.summary.overlap)
        return self.neurons.overlap_chance()

    def selection_stability(self) -> SelectionStability | None:
        """The stability of the selection, when the run measured it (``--stability``)."""
        saved = self.summary.stability
        return None if saved is None else SelectionStability.from_json(saved)

    @classmethod
    def load(cls, path: str | Path) -> LapeResult:
        directory = Path(path)
        directory = directory.parent if directory.is_file() else directory
        return cls(
            ActivationStats.load(directory),
            LanguageNeurons.load(directory),
            LapeSummary.load(directory),
        )


def lape_entropy(
    activation_probs: Float[torch.Tensor, "language layer neuron"],
) -> Float[torch.Tensor, "layer neuron"]:
    """LAPE score: entropy (natural log) of the probabilities normalised across languages."""
    normed = activation_probs / activation_probs.sum(0, keepdim=True)
    normed = torch.nan_to_num(normed, nan=0.0)
    log = torch.where(normed > 0, normed.log(), torch.zeros_like(normed))
    return -(normed * log).sum(0)


def select(
    stats: ActivationStats | Float[torch.Tensor, "language layer neuron"],
    languages: Sequence[str] | None = None,
    *,
    top_rate: float = 0.01,
    filter_rate: float = 0.95,
    activation_bar_ratio: float = 0.95,
    model: dict[str, Any] | None = None,
) -> LanguageNeurons:
    """Select language-specific neurons by LAPE, exactly as the paper's published selection script.

    1. LAPE = entropy of the activation probabilities normalised across languages.
    2. τ = the ``filter_rate`` quantile (``kthvalue(round(filter_rate·N))``) of all
       probabilities; neurons with no language above τ are excluded.
    3. The ``round(top_rate·layers·neurons)`` lowest-LAPE neurons are kept.
    4. Each kept neuron goes to every language whose probability exceeds the
       ``activation_bar_ratio`` quantile (so a neuron may belong to several).

    Unlike the reference, excluded neurons are never kept even when fewer than the
    budget remain, and a language with no neurons gets an empty list.

    Args:
        stats: :class:`ActivationStats` (they carry the languages and the model's
            fingerprint), or the ``[language, layer, neuron]`` activation probabilities.
        languages: with statistics, only these languages (default: all); with
            probabilities, the names of the first axis (required).
        model: fingerprint recorded in the result (default: that of the statistics).
    """
    if isinstance(stats, ActivationStats):
        if languages is not None:
            stats = stats.select([normalize_language(c, stats.languages) for c in languages])
        probs, languages, model = stats.activation_probs, stats.languages, model or stats.model
    else:
        probs = stats
        if languages is None:
            raise UserError("lape.select of a probability tensor needs the languages= of its rows")
    probs = torch.as_tensor(probs).double()
    if probs.dim() != 3:
        raise UserError(
            f"activation_probs must be [language, layer, neuron], got shape {tuple(probs.shape)}"
        )
    if probs.shape[0] != len(languages):
        raise UserError(
            f"activation_probs has {probs.shape[0]} languages but {len(languages)} names were given"
        )
    if probs.shape[0] < 2:
        raise UserError("LAPE needs at least two languages")
    if torch.isnan(probs).any() or (probs < 0).any() or (probs > 1).any():
        raise UserError("activation_probs must be probabilities in [0, 1] without NaN")
    return select_by_entropy(
        probs,
        languages,
        top_rate=top_rate,
        filter_rate=filter_rate,
        activation_bar_ratio=activation_bar_ratio,
        model=model,
    )


def select_by_entropy(
    scores: Float[torch.Tensor, "language layer neuron"],
    languages: Sequence[str],
    *,
    top_rate: float = 0.01,
    filter_rate: float = 0.95,
    activation_bar_ratio: float = 0.95,
    model: dict[str, Any] | None = None,
    method: str = "lape",
) -> LanguageNeurons:
    """LAPE's procedure (steps 1-4 of :func:`select`) on any non-negative per-language scores.

    LAPE passes activation probabilities; LAVE (:func:`mlneurons.methods.baselines.lave`)
    passes mean activation values. ``method`` is recorded in the result's constants.
    """
    rate("top_rate", top_rate)
    rate("filter_rate", filter_rate)
    rate("activation_bar_ratio", activation_bar_ratio)
    scores = torch.as_tensor(scores).double()
    if torch.isnan(scores).any() or (scores < 0).any():
        raise UserError(f"{method} scores must be non-negative without NaN")
    _, n_layers, d_mlp = scores.shape
    entropy = lape_entropy(scores)
    flat = scores.flatten()
    tau = flat.kthvalue(max(1, round(len(flat) * filter_rate))).values
    entropy[(scores > tau).sum(0) == 0] = torch.inf
    budget = round(entropy.numel() * top_rate)
    eligible = int(torch.isfinite(entropy).sum())
    _, order = entropy.flatten().topk(min(budget, eligible), largest=False)
    layer_idx, neuron_idx = order // d_mlp, order % d_mlp
    bar = flat.kthvalue(max(1, round(len(flat) * activation_bar_ratio))).values
    above = scores[:, layer_idx, neuron_idx] > bar  # [language, kept]
    pairs = torch.stack([layer_idx, neuron_idx], dim=1)
    neurons = {lang: pairs[above[i]] for i, lang in enumerate(languages)}
    constants = {
        "method": method,
        "top_rate": top_rate,
        "filter_rate": filter_rate,
        "activation_bar_ratio": activation_bar_ratio,
        "threshold": float(tau),
        "activation_bar": float(bar),
        "kept": len(order),
    }
    return LanguageNeurons(neurons, n_layers, d_mlp, dict(model or {}), constants)


STABLE = 0.9
"""A neuron is stable when at least this share of the resamples selects it."""


@dataclass(frozen=True)
class SelectionStability:
    """How stable each language's LAPE set is when the corpus rows are resampled.

    Méloux et al. (2025) ask for a selection's stability by bootstrap: each of
    ``resamples`` resamples draws every language's blocks of rows with replacement
    (:func:`block_weights`) and selects again with the same constants
    (:func:`stability`).

    Attributes:
        resamples: bootstrap resamples.
        rows_per_block: consecutive corpus rows per block (the resampled unit).
        blocks: per language, its blocks.
        jaccard: per language, the mean over resamples of the Jaccard of the resample's set
            with the full set (1 when both are empty), with the percentile interval of the
            resamples' Jaccards at the recorded confidence.
        draws: per language, each resample's Jaccard.
        frequency: per language, for each neuron of the full set (in the order of
            ``LanguageNeurons[language]``) the share of resamples that select it for that
            language.
        stable: the share of resamples a stable neuron is selected in.
    """

    resamples: int
    rows_per_block: int
    blocks: dict[str, int]
    jaccard: dict[str, Estimate]
    draws: dict[str, list[float]]
    frequency: dict[str, list[float]]
    stable: float = STABLE

    def share_stable(self) -> dict[str, float | None]:
        """Per language, the share of its full set selected in at least :attr:`stable` of
        the resamples (None for a language without neurons)."""
        return {
            lang: sum(f >= self.stable for f in freq) / len(freq) if freq else None
            for lang, freq in self.frequency.items()
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "resamples": self.resamples,
            "rows_per_block": self.rows_per_block,
            "blocks": dict(self.blocks),
            "stable": self.stable,
            "jaccard": {lang: e.to_json() for lang, e in self.jaccard.items()},
            "share_stable": self.share_stable(),
            "draws": {lang: list(d) for lang, d in self.draws.items()},
            "frequency": {lang: list(f) for lang, f in self.frequency.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SelectionStability:
        return cls(
            data["resamples"],
            data["rows_per_block"],
            dict(data["blocks"]),
            {lang: Estimate.from_json(e) for lang, e in data["jaccard"].items()},
            {lang: list(d) for lang, d in data["draws"].items()},
            {lang: list(f) for lang, f in data["frequency"].items()},
            data.get("stable", STABLE),
        )


def block_weights(blocks: BlockStats, resamples: int, seed: int) -> list[np.ndarray]:
    """Per language, ``[resamples, k]`` bootstrap counts of its ``k`` blocks (each row sums
    to ``k``): one generator seeded with ``seed`` draws language after language."""
    rng = np.random.default_rng(seed)
    drawn = []
    for lang in blocks.languages:
        k = len(blocks.blocks(lang))
        drawn.append(rng.multinomial(k, np.full(k, 1.0 / k), size=resamples).astype(np.float64))
    return drawn


def resampled_probs(
    blocks: BlockStats, weights: Sequence[np.ndarray]
) -> Float[torch.Tensor, "resample language layer neuron"]:
    """Activation probabilities of weighted blocks: per language ``(w @ fire counts) /
    (w @ token counts)`` over its blocks, as matrix products.

    The weighted sums of integer counts are exact in float64 and the ratio is rounded
    as :attr:`ActivationStats.activation_probs` rounds it, so all-ones weights give the
    full statistics' probabilities bit for bit.
    """
    n_layers, d_mlp = blocks.fire_counts.shape[1:]
    per_language = []
    for lang, w in zip(blocks.languages, weights):
        idx = blocks.blocks(lang)
        drawn = torch.as_tensor(w, dtype=torch.float64)
        fires = drawn @ blocks.fire_counts[idx].flatten(1).double()
        tokens = drawn @ blocks.token_counts[idx].double()
        per_language.append((fires / tokens[:, None]).float().view(-1, n_layers, d_mlp))
    return torch.stack(per_language, dim=1)


def stability(
    blocks: BlockStats,
    resamples: int,
    *,
    top_rate: float = 0.01,
    filter_rate: float = 0.95,
    activation_bar_ratio: float = 0.95,
    uncertainty: Uncertainty = Uncertainty(),
    stable: float = STABLE,
) -> SelectionStability:
    """The stability of a LAPE selection under bootstrap resamples of the corpus rows.

    Every resample draws each language's blocks of rows with replacement (seeded with
    ``uncertainty.seed``), recomputes the activation probabilities from the blocks' counts
    (:func:`resampled_probs`: no forward pass) and runs the same :func:`select`. Reported
    per language: the Jaccard of each resample's set with the full set (mean and the
    percentile interval at ``uncertainty.confidence``) and how often each neuron of the
    full set is selected again (:class:`SelectionStability`).

    Memory: the probabilities of a chunk of resamples at a time (about 128 MiB).
    """
    if resamples < 1:
        raise UserError(f"stability needs at least one resample, got {resamples}")
    constants: dict[str, Any] = dict(
        top_rate=top_rate, filter_rate=filter_rate, activation_bar_ratio=activation_bar_ratio
    )
    languages = blocks.languages
    full = select(blocks.total(), **constants).masks()
    weights = block_weights(blocks, resamples, uncertainty.seed)
    selected = torch.zeros(full.shape, dtype=torch.int64)
    jaccards = torch.zeros(len(languages), resamples, dtype=torch.float64)
    chunk = max(1, 2**25 // full.numel())
    for start in range(0, resamples, chunk):
        probs = resampled_probs(blocks, [w[start : start + chunk] for w in weights])
        for b, p in enumerate(probs, start=start):
            masks = select(p, languages, **constants).masks()
            selected += masks
            both = (masks & full).flatten(1).sum(1).double()
            either = (masks | full).flatten(1).sum(1).double()
            jaccards[:, b] = torch.where(either > 0, both / either.clamp(min=1), 1.0)
    how = Uncertainty(uncertainty.confidence, resamples, uncertainty.seed)
    estimates, frequency, n_blocks = {}, {}, {}
    for i, lang in enumerate(languages):
        n_blocks[lang] = len(blocks.blocks(lang))
        draws = jaccards[i].numpy()
        method = (
            f"percentile over {resamples} bootstrap resamples of {n_blocks[lang]} blocks of rows"
        )
        estimates[lang] = percentile(float(draws.mean()), draws, n_blocks[lang], method, how)
        layer, neuron = full[i].nonzero().unbind(1)
        frequency[lang] = (selected[i, layer, neuron].double() / resamples).tolist()
    return SelectionStability(
        resamples,
        blocks.rows_per_block,
        n_blocks,
        estimates,
        {lang: jaccards[i].tolist() for i, lang in enumerate(languages)},
        frequency,
        stable,
    )


def as_pairs(neurons: LanguageNeurons | Iterable[Any] | torch.Tensor) -> Int[torch.Tensor, "k 2"]:
    """Normalise a neuron spec to a ``[k, 2]`` LongTensor of (layer, neuron) pairs.

    Accepts (layer, neuron) pairs, a ``[layer, neuron]`` boolean mask, or a
    ``LanguageNeurons`` with a single language.
    """
    if isinstance(neurons, LanguageNeurons):
        if len(neurons.languages) != 1:
            raise UserError(
                f"pick one language of {neurons.languages}, e.g. neurons[{neurons.languages[0]!r}]"
            )
        return neurons[neurons.languages[0]]
    tensor = torch.as_tensor(neurons if isinstance(neurons, torch.Tensor) else list(neurons))
    if tensor.dtype == torch.bool:
        if tensor.dim() != 2:
            raise UserError(
                f"a neuron mask must be [layer, neuron], got shape {tuple(tensor.shape)}"
            )
        return tensor.nonzero()
    if tensor.numel() == 0:
        return torch.empty(0, 2, dtype=torch.long)
    if tensor.dim() != 2 or tensor.shape[1] != 2:
        raise UserError(f"neurons must be (layer, neuron) pairs, got shape {tuple(tensor.shape)}")
    return tensor.long()


__all__ = [
    "LanguageNeurons",
    "OverlapChance",
    "SelectionStability",
    "block_weights",
    "hypergeometric_pmf",
    "layered_overlap_null",
    "overlap_chance",
    "resampled_probs",
    "stability",
    "LapeResult",
    "LapeSummary",
    "NEURONS_FILE",
    "SUMMARY_FILE",
    "summarize",
    "as_pairs",
    "lape_entropy",
    "select",
    "select_by_entropy",
]
