"""Monolinguality ν (Deng et al., ACL 2025): how much more a unit fires on one language.

Deng et al. score each sparse-autoencoder feature s for a language L by

    ν_s(L) = μ_s(L) − γ_s(L),   γ_s(L) = mean over the other languages I ≠ L of μ_s(I),

where μ_s(I) is the feature's mean activation over the tokens of language I: each other
language counts once, whatever its token count. A feature specific to L has a large ν on L.
:func:`monolinguality` computes ν from :class:`ActivationStats` (of features, or of MLP
neurons alike) and :func:`select_monolingual` keeps, per language, the units with the
largest ν as a :class:`LanguageNeurons`, so that the interventions, the deactivation matrix
and steering take them as they take LAPE's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Float

from mlneurons.data.builtin_text import normalize_language
from mlneurons.errors import UserError
from mlneurons.methods.lape import LanguageNeurons
from mlneurons.stats.activation import ActivationStats


def monolinguality(stats: ActivationStats) -> Float[torch.Tensor, "language layer unit"]:
    """Deng et al.'s ν of every unit for every language of ``stats`` (float64).

    ``ν[L] = μ[L] − mean_{I ≠ L} μ[I]``, μ the mean activation per language (the sums of
    the act_fn output, or of the feature activations, over the counted tokens).
    """
    if len(stats.languages) < 2:
        raise UserError(f"ν compares languages: give at least two, got {stats.languages}")
    if bool((stats.token_counts == 0).any()):
        empty = [lang for lang, n in zip(stats.languages, stats.token_counts.tolist()) if n == 0]
        raise UserError(f"no tokens were counted for {empty}")
    means = stats.activation_sums.double() / stats.token_counts.double()[:, None, None]
    others = torch.stack(
        [torch.cat([means[:i], means[i + 1 :]]).mean(0) for i in range(len(means))]
    )
    return means - others


def select_monolingual(
    stats: ActivationStats,
    languages: Sequence[str] | None = None,
    *,
    top_k: int | None = 10,
    threshold: float = 0.0,
    model: dict[str, Any] | None = None,
) -> LanguageNeurons:
    """Per language, the units of highest monolinguality ν (Deng et al. 2025) as a selector.

    A unit goes to language L when ``ν(L) > threshold`` and it is among L's ``top_k`` units
    by ν (``top_k=None``: every unit above the threshold). Ties keep the lower (layer, unit).
    Unlike LAPE, the count per language is fixed (when enough units pass the threshold) and
    a unit may belong to several languages only when the threshold is negative.

    Args:
        stats: the statistics (of dictionary features or neurons; the units they record
            travel with the result).
        languages: only these languages, among which ν is computed (default: all).
        top_k: units kept per language (``None``: no cap).
        threshold: the ν a unit must exceed (default 0: more active on L than elsewhere).
        model: fingerprint recorded in the result (default: that of the statistics).
    """
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise UserError(f"top_k={top_k!r} is not an integer >= 1 (or None: no cap)")
    if languages is not None:
        stats = stats.select([normalize_language(code, stats.languages) for code in languages])
    nu = monolinguality(stats)
    _, n_layers, width = nu.shape
    selected = {}
    for i, lang in enumerate(stats.languages):
        flat = nu[i].flatten()
        order = torch.sort(-flat, stable=True).indices
        order = order[flat[order] > threshold][:top_k]
        selected[lang] = torch.stack([order // width, order % width], dim=1)
    constants = {"method": "monolinguality", "top_k": top_k, "threshold": threshold}
    return LanguageNeurons(selected, n_layers, width, dict(model or stats.model), constants)


__all__ = ["monolinguality", "select_monolingual"]
