"""LAPE: language activation probability entropy (Tang et al., ACL 2024).

:func:`select` follows the selection script published with the paper step by step
(each constant and pitfall is named where it is used); :class:`LanguageNeurons` holds the
result, per language a list of (layer, neuron) pairs, and reads and writes the
mask format published with the paper.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, cast

import torch
from jaxtyping import Bool, Float, Int

from mlneurons.config import rate
from mlneurons.data.builtin_text import normalize_language
from mlneurons.errors import UserError
from mlneurons.models.bridge import TransformerBridge
from mlneurons.models.dictionary import check_units
from mlneurons.models.fingerprint import check_same_model, fingerprint
from mlneurons.results import Result
from mlneurons.stats.activation import STATS_FILE, ActivationStats

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


def summarize(
    stats: ActivationStats,
    neurons: LanguageNeurons,
    *,
    wall_time_s: float | None = None,
    stats_path: str | None = None,
) -> LapeSummary:
    """The :class:`LapeSummary` of neurons selected from ``stats``."""
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
