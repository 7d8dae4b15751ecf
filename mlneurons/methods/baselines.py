"""Tang et al.'s (2024) baselines to LAPE, and matched random controls.

Every selector returns :class:`~mlneurons.methods.lape.LanguageNeurons`, so its neurons
deactivate, steer and compare exactly like LAPE's (``mlneurons compare-methods``).

The paper's full text was not in the sources we could search; the definitions below
follow its description of the baselines as the field cites them, and each docstring
says what we chose where it is unclear.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, get_args

import torch
from jaxtyping import Bool, Int

from mlneurons.config import rate
from mlneurons.data.builtin_text import normalize_language
from mlneurons.errors import UserError
from mlneurons.methods.lape import LanguageNeurons, select, select_by_entropy
from mlneurons.stats.activation import ActivationStats

Selector = Literal["lape", "lap", "lave", "rs"]
"""The selectors of :func:`select_with`: LAPE and Tang et al.'s three baselines."""
METHODS: tuple[str, ...] = get_args(Selector)


def _languages(stats: ActivationStats, languages: Sequence[str] | None) -> ActivationStats:
    if languages is None:
        return stats
    return stats.select([normalize_language(code, stats.languages) for code in languages])


def lap(
    stats: ActivationStats,
    languages: Sequence[str] | None = None,
    *,
    threshold: float = 0.95,
) -> LanguageNeurons:
    """LAP (language activation probability): neuron i belongs to language k when
    P(neuron i fires | language k) > ``threshold``.

    No entropy and no budget: a neuron that fires on more than ``threshold`` of the
    tokens of several languages belongs to each of them, which is the weakness LAPE
    addresses. Chosen where the paper is unclear: the inequality is strict, and the
    threshold is a probability (0.95), not a quantile.
    """
    rate("threshold", threshold)
    stats = _languages(stats, languages)
    above = stats.activation_probs.double() > threshold  # [language, layer, neuron]
    neurons = {lang: above[i].nonzero() for i, lang in enumerate(stats.languages)}
    constants = {"method": "lap", "threshold": threshold}
    return LanguageNeurons(neurons, stats.n_layers, stats.d_mlp, dict(stats.model), constants)


def lave(
    stats: ActivationStats,
    languages: Sequence[str] | None = None,
    *,
    top_rate: float = 0.01,
    filter_rate: float = 0.95,
    activation_bar_ratio: float = 0.95,
) -> LanguageNeurons:
    """LAVE (language activation value entropy): LAPE's procedure with each language's
    mean activation value in place of its activation probability.

    The mean act_fn output can be negative (GELU and SiLU dip below 0), and an entropy
    needs non-negative weights; chosen here: negative means count as 0 (a neuron whose
    mean is negative in every language is excluded by the filter step). The filter
    and activation-bar quantiles are taken over the mean values, as LAPE takes them
    over the probabilities.
    """
    stats = _languages(stats, languages)
    if len(stats.languages) < 2:
        raise UserError("LAVE needs at least two languages")
    return select_by_entropy(
        stats.mean_activations.double().clamp(min=0),
        stats.languages,
        top_rate=top_rate,
        filter_rate=filter_rate,
        activation_bar_ratio=activation_bar_ratio,
        model=stats.model,
        method="lave",
    )


def _free(reference: LanguageNeurons) -> Bool[torch.Tensor, "layer neuron"]:
    """Neurons no language of ``reference`` has: the pool of every control."""
    return ~reference.masks().any(0)


def random_selection(reference: LanguageNeurons, *, seed: int = 0) -> LanguageNeurons:
    """RS (random selection): per language and layer, as many random neurons as
    ``reference`` (LAPE) chose there, drawn uniformly from the neurons no language of
    ``reference`` has (chosen: excluding them, so the control never deactivates a
    language neuron)."""
    masks, free = reference.masks(), _free(reference)
    generator = torch.Generator().manual_seed(seed)
    neurons = {}
    for i, lang in enumerate(reference.languages):
        picked = []
        for layer, n in enumerate(masks[i].sum(-1).tolist()):
            pool = free[layer].nonzero().flatten()
            if n > len(pool):
                raise UserError(
                    f"layer {layer} has only {len(pool)} free neurons for a control of {n}"
                )
            chosen = pool[torch.randperm(len(pool), generator=generator)[:n]]
            picked.append(torch.stack([torch.full_like(chosen, layer), chosen], 1))
        neurons[lang] = torch.cat(picked)
    constants = {"method": "rs", "seed": seed, "reference": dict(reference.constants)}
    return LanguageNeurons(
        neurons, reference.n_layers, reference.d_mlp, dict(reference.model), constants
    )


def probability_bins(
    stats: ActivationStats, language: str, *, bins: int = 20
) -> Int[torch.Tensor, "layer neuron"]:
    """Per layer, each neuron's firing-probability bin on ``language``: equal-count bins
    of the layer's neurons ranked by P(fire | language) (ties by index), 0 = lowest."""
    if isinstance(bins, bool) or not isinstance(bins, int) or not 1 <= bins <= stats.d_mlp:
        raise UserError(f"bins={bins!r} must be an integer in 1..{stats.d_mlp} (neurons per layer)")
    probs = stats.activation_probs[stats.index(language)].double()
    order = probs.argsort(dim=-1, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(stats.d_mlp).expand_as(order).contiguous())
    return ranks * bins // stats.d_mlp


def matched_control(
    reference: LanguageNeurons,
    stats: ActivationStats,
    *,
    bins: int = 20,
    seed: int = 0,
) -> LanguageNeurons:
    """A control matched to what it controls: for each language, per layer, one random
    neuron from the same firing-probability bin (on that language,
    :func:`probability_bins`) for each of its neurons, drawn without replacement from
    the neurons no language of ``reference`` has.

    When a bin has fewer free neurons than it needs, the rest come from the nearest
    bins of the same layer (below and above alternately); ``constants["widened"]``
    counts those neurons per language, so an unmatched control is never silent.
    """
    masks, free = reference.masks(), _free(reference)
    if (stats.n_layers, stats.d_mlp) != (reference.n_layers, reference.d_mlp):
        raise UserError(
            f"statistics are for {stats.n_layers} x {stats.d_mlp} neurons but the neurons "
            f"for {reference.n_layers} x {reference.d_mlp}"
        )
    generator = torch.Generator().manual_seed(seed)
    neurons, widened = {}, {}
    for i, lang in enumerate(reference.languages):
        bin_of = probability_bins(stats, lang, bins=bins)
        picked, widened[lang] = [], 0
        for layer in masks[i].any(-1).nonzero().flatten().tolist():
            available = free[layer].clone()
            needed = torch.bincount(bin_of[layer][masks[i, layer]], minlength=bins)
            for b in needed.nonzero().flatten().tolist():
                for distance in range(bins):
                    for near in dict.fromkeys((b - distance, b + distance)):
                        if not 0 <= near < bins or needed[b] == 0:
                            continue
                        pool = (available & (bin_of[layer] == near)).nonzero().flatten()
                        take = pool[torch.randperm(len(pool), generator=generator)][: needed[b]]
                        available[take] = False
                        needed[b] -= len(take)
                        widened[lang] += len(take) if distance else 0
                        picked.append(torch.stack([torch.full_like(take, layer), take], 1))
                if needed[b]:
                    raise UserError(
                        f"layer {layer} has too few free neurons for a control of {lang!r}"
                    )
        neurons[lang] = torch.cat(picked) if picked else torch.empty(0, 2, dtype=torch.long)
    constants = {"method": "matched", "seed": seed, "bins": bins, "widened": widened}
    return LanguageNeurons(
        neurons, reference.n_layers, reference.d_mlp, dict(reference.model), constants
    )


def select_with(
    method: str, stats: ActivationStats, *, reference: LanguageNeurons | None = None, **options: Any
) -> LanguageNeurons:
    """The neurons of one of :data:`METHODS` with that selector's own options (``lap``:
    ``threshold``; ``lape``, ``lave``: LAPE's constants; ``rs``: ``seed``, drawing as many
    as ``reference`` has, default: LAPE on ``stats`` with the other options)."""
    if method not in METHODS:
        raise UserError(f"method {method!r} is not valid; choose from {', '.join(METHODS)}")
    if method == "lap":
        return lap(stats, **options)
    if method == "lave":
        return lave(stats, **options)
    seed = options.pop("seed", 0)
    lape_neurons = select(stats, **options)
    if method == "lape":
        return lape_neurons
    return random_selection(reference or lape_neurons, seed=seed)


def select_methods(
    methods: Sequence[Selector],
    neurons: LanguageNeurons,
    stats: ActivationStats,
    *,
    languages: Sequence[str] | None = None,
    lap_threshold: float = 0.95,
    seed: int = 0,
) -> dict[str, LanguageNeurons]:
    """The neurons of each selector for a method comparison (``mlneurons compare-methods``).

    LAPE keeps the saved selection ``neurons``; LAP and LAVE select from ``stats`` (of the
    neurons' languages, as LAPE selected on; LAVE with LAPE's saved constants); RS draws
    as many neurons per layer as LAPE has. Each keeps only ``languages`` (default: all
    of the neurons').
    """
    chosen = [
        normalize_language(code, neurons.languages) for code in languages or neurons.languages
    ]
    stats = _languages(stats, neurons.languages)
    constants = {
        key: neurons.constants[key]
        for key in ("top_rate", "filter_rate", "activation_bar_ratio")
        if key in neurons.constants
    }
    makers = {
        "lape": lambda: neurons.only(*chosen),
        "lap": lambda: lap(stats, chosen, threshold=lap_threshold),
        "lave": lambda: lave(stats, **constants).only(*chosen),
        "rs": lambda: random_selection(neurons, seed=seed).only(*chosen),
    }
    for method in methods:
        if method not in makers:
            raise UserError(f"method {method!r} is not valid; choose from {', '.join(METHODS)}")
    return {method: makers[method]() for method in dict.fromkeys(methods)}


__all__ = [
    "METHODS",
    "Selector",
    "select_methods",
    "lap",
    "lave",
    "matched_control",
    "probability_bins",
    "random_selection",
    "select_with",
]
