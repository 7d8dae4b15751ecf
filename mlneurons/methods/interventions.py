"""Neuron interventions as composable TransformerLens hooks (Tang et al. 2024).

Each factory returns a plain list of ``(hook_name, fn)`` pairs, so interventions
compose with ``+`` and work with ``model.hooks(fwd_hooks=...)``,
``run_with_hooks`` and ``generate``. :func:`intervene` is the context manager
that always removes what it added.

The intervened quantity is the MLP activation that LAPE counts: the act_fn
output that the MLP multiplies, ``act_fn(gate)`` in gated MLPs. Zeroing it is
zeroing ``mlp.hook_post`` (``act_fn(gate) * up`` is then 0); setting it to ``v``
in a gated MLP sets ``hook_post`` to ``v * up``, adding ``v`` to it adds ``v * up``,
and scaling it by ``α`` scales ``hook_post`` by ``α``. These are the replacement,
additive and multiplicative interventions of "language arithmetics" (Gurgurov et
al. 2025).

The same factories edit dictionary features (:mod:`mlneurons.models.dictionary`): given
``points`` (or a feature set, whose :attr:`~LanguageNeurons.feature_points` they are), a
pair (i, j) is feature j at hook point ``points[i]``, set, added to or scaled directly.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

import torch
from jaxtyping import Float, Int

from mlneurons.errors import UserError
from mlneurons.methods.lape import LanguageNeurons, as_pairs
from mlneurons.models.bridge import TransformerBridge
from mlneurons.models.dictionary import feature_widths
from mlneurons.models.fingerprint import fingerprint

Hooks = list[tuple[str, Any]]
"""A list of ``(hook_name, fn)`` pairs: what every intervention is."""


def _points(neurons: Any, points: Sequence[str] | None) -> list[str]:
    """The hook point of each "layer" index: ``points``, else a feature set's feature
    points; empty for MLP neurons."""
    if points is not None:
        return list(points)
    return neurons.feature_points if isinstance(neurons, LanguageNeurons) else []


def _point(points: list[str], layer: int) -> str:
    """Where the units of ``layer`` are edited: its feature point, or the MLP's ``hook_post``."""
    return points[layer] if points else f"blocks.{layer}.mlp.hook_post"


def _shape(model: TransformerBridge, points: list[str]) -> tuple[int, int]:
    """(layers, units per layer) of the units: MLP neurons, or the features at ``points``."""
    if not points:
        fp = fingerprint(model)
        return int(fp["n_layers"]), int(fp["d_mlp"])
    widths = feature_widths(model)
    missing = [p for p in points if p not in widths]
    if missing:
        raise UserError(
            f"no dictionary is spliced at {missing[0]!r}; splice it first "
            "(mlneurons.splice(model, mlneurons.load_dictionary(DIR)))"
        )
    return len(points), max(widths[p] for p in points)


def _check_fits(
    pairs: Int[torch.Tensor, "k 2"],
    model: TransformerBridge | None,
    neurons: Any,
    points: list[str],
) -> None:
    """Raise if ``pairs`` (or the LanguageNeurons they came from) do not fit ``model``.

    Negative indices are refused even without a model, "layers" past ``points`` too.
    """
    if len(pairs) and pairs.min() < 0:
        layer, neuron = pairs[(pairs < 0).any(1)][0].tolist()
        raise UserError(f"neuron indices must be >= 0, got (layer {layer}, neuron {neuron})")
    if points and len(pairs) and int(pairs[:, 0].max()) >= len(points):
        raise UserError(
            f"feature pair (point {int(pairs[:, 0].max())}, ...) does not fit the "
            f"{len(points)} feature points given (valid: 0..{len(points) - 1})"
        )
    if model is None:
        return
    if isinstance(neurons, LanguageNeurons):
        neurons.check_fits(model)
    if points:
        widths = feature_widths(model)
        _shape(model, points)  # every point spliced
        for layer, feature in pairs.tolist():
            if feature >= widths[points[layer]]:
                raise UserError(
                    f"feature {feature} does not fit the {widths[points[layer]]} features "
                    f"at {points[layer]} (valid: 0..{widths[points[layer]] - 1})"
                )
        return
    fp = fingerprint(model)
    if len(pairs):
        layer, neuron = pairs.max(0).values.tolist()
        if layer >= fp["n_layers"] or neuron >= fp["d_mlp"]:
            raise UserError(
                f"neuron indices up to (layer {layer}, neuron {neuron}) do not fit model "
                f"{fp['name']!r} with {fp['n_layers']} layers of {fp['d_mlp']} neurons "
                f"(valid: layer 0..{fp['n_layers'] - 1}, neuron 0..{fp['d_mlp'] - 1})"
            )


def _by_layer(pairs: Int[torch.Tensor, "k 2"]) -> dict[int, Int[torch.Tensor, " n"]]:
    return {
        int(layer): pairs[pairs[:, 0] == layer, 1] for layer in torch.unique(pairs[:, 0]).tolist()
    }


def _zero(act: torch.Tensor, *, hook: Any, index: torch.Tensor) -> torch.Tensor:
    return act.index_fill(-1, index.to(act.device), 0.0)


def deactivate(
    neurons: Any, *, model: TransformerBridge | None = None, points: Sequence[str] | None = None
) -> Hooks:
    """Set the chosen neurons' activation to 0 at every position (LAPE deactivation).

    Args:
        neurons: ``neurons["fr"]`` of a :class:`LanguageNeurons`, a one-language
            ``LanguageNeurons``, a list of (layer, neuron) pairs, or a ``[layer, neuron]``
            boolean mask.
        model: when given, the neurons are checked to fit it.
        points: for dictionary features given as pairs (``feats["fr"]``), the feature hook
            point of each "layer" (``feats.feature_points``); a one-language feature set
            brings its own. Default: MLP neurons.
    """
    pairs = as_pairs(neurons)
    where = _points(neurons, points)
    _check_fits(pairs, model, neurons, where)
    return [
        (_point(where, layer), functools.partial(_zero, index=index))
        for layer, index in _by_layer(pairs).items()
    ]


def _stash(act: torch.Tensor, *, hook: Any, store: dict[str, torch.Tensor]) -> None:
    store["up"] = act


def _set(
    act: torch.Tensor,
    *,
    hook: Any,
    index: torch.Tensor,
    value: torch.Tensor,
    store: dict[str, torch.Tensor] | None,
    add: bool = False,
) -> torch.Tensor:
    index, value = index.to(act.device), value.to(act.device, act.dtype)
    if store is not None:  # gated: hook_post = act_fn(gate) * up
        value = value * store.pop("up").index_select(-1, index)
    out = act.clone()
    out[..., index] = act[..., index] + value if add else value
    return out


def _scale(
    act: torch.Tensor, *, hook: Any, index: torch.Tensor, factor: torch.Tensor
) -> torch.Tensor:
    index, factor = index.to(act.device), factor.to(act.device, act.dtype)
    out = act.clone()
    out[..., index] = act[..., index] * factor
    return out


def _per_neuron(
    pairs: Int[torch.Tensor, "k 2"],
    values: float | torch.Tensor,
    shape: tuple[int, int],
    what: str,
) -> Float[torch.Tensor, " k"]:
    """One value per pair from a scalar, a value per pair, or a ``[layer, neuron]`` grid."""
    values = torch.as_tensor(values, dtype=torch.float32)
    if values.dim() == 0:
        return values.expand(len(pairs))
    if values.dim() == 1 and len(values) == len(pairs):
        return values
    if values.dim() == 2 and tuple(values.shape) == shape:
        return values[pairs[:, 0], pairs[:, 1]]
    raise UserError(
        f"{what} must be a scalar, {len(pairs)} values (one per neuron) or a "
        f"[{shape[0]}, {shape[1]}] grid; got shape {tuple(values.shape)}"
    )


def activate(
    neurons: Any,
    values: float | Float[torch.Tensor, " k"] | Float[torch.Tensor, "layer neuron"],
    *,
    model: TransformerBridge,
    add: bool = False,
    points: Sequence[str] | None = None,
) -> Hooks:
    """Set the chosen neurons' activation to ``values`` at every position, decode steps included.

    With ``add=True`` the values are added instead (a ← a + v: the additive
    intervention of language arithmetics); the default replaces (a ← v: the
    replacement intervention of Tang et al. 2024).

    Args:
        neurons: as for :func:`deactivate`.
        values: a scalar; one value per neuron, in the order of ``as_pairs(neurons)``;
            or a ``[layer, neuron]`` grid such as ``stats.mean_activation("zh")``
            (the per-language mean activation).
        model: the model the hooks are for (gated and plain MLPs differ).
        add: add ``values`` to the activation instead of replacing it.
        points: as for :func:`deactivate` (features are set directly, never gated).
    """
    pairs = as_pairs(neurons)
    where = _points(neurons, points)
    _check_fits(pairs, model, neurons, where)
    per_neuron = _per_neuron(pairs, values, _shape(model, where), "values")
    gated = bool(getattr(model.cfg, "gated_mlp", False)) and not where
    hooks: Hooks = []
    for layer in torch.unique(pairs[:, 0]).tolist():
        chosen = pairs[:, 0] == layer
        store: dict[str, torch.Tensor] | None = None
        if gated:
            store = {}
            hooks.append(
                (f"blocks.{layer}.mlp.in.hook_out", functools.partial(_stash, store=store))
            )
        hooks.append(
            (
                _point(where, layer),
                functools.partial(
                    _set,
                    index=pairs[chosen, 1],
                    value=per_neuron[chosen].clone(),
                    store=store,
                    add=add,
                ),
            )
        )
    return hooks


def scale(
    neurons: Any,
    factor: float | Float[torch.Tensor, " k"] | Float[torch.Tensor, "layer neuron"],
    *,
    model: TransformerBridge,
    points: Sequence[str] | None = None,
) -> Hooks:
    """Multiply the chosen neurons' activation by ``factor`` at every position (a ← α·a).

    The multiplicative intervention of language arithmetics (Gurgurov et al. 2025).
    In gated MLPs ``α·act_fn(gate)·up`` is ``α·hook_post``, so no up projection is needed.

    Args:
        neurons: as for :func:`deactivate`.
        factor: a scalar, one factor per neuron, or a ``[layer, neuron]`` grid.
        model: the model the hooks are for.
        points: as for :func:`deactivate`.
    """
    pairs = as_pairs(neurons)
    where = _points(neurons, points)
    _check_fits(pairs, model, neurons, where)
    per_neuron = _per_neuron(pairs, factor, _shape(model, where), "factor")
    return [
        (
            _point(where, layer),
            functools.partial(
                _scale,
                index=pairs[pairs[:, 0] == layer, 1],
                factor=per_neuron[pairs[:, 0] == layer].clone(),
            ),
        )
        for layer in torch.unique(pairs[:, 0]).tolist()
    ]


@contextmanager
def intervene(model: TransformerBridge, *interventions: Hooks) -> Iterator[Any]:
    """Apply interventions inside a ``with`` block; their hooks are removed on exit and on error.

    Example::

        with mlneurons.intervene(model, deactivate(neurons["fr"]), activate(...)):
            model.generate(...)
    """
    hooks: Hooks = [pair for intervention in interventions for pair in intervention]
    check_intervention(model, hooks)
    with model.hooks(fwd_hooks=hooks):
        yield model


def check_intervention(model: TransformerBridge, hooks: Hooks) -> None:
    """Raise before any forward pass if a hook point or a neuron index does not fit ``model``.

    Catches what ``deactivate(neurons)`` without ``model=`` could not check when built;
    :func:`intervene` calls it.

    Raises:
        UserError: naming the hook point or neuron and the valid range.
    """
    d_mlp = int(cast(int, model.cfg.d_mlp))  # set for every model with MLP blocks
    widths = feature_widths(model)
    for name, fn in hooks:
        if name not in model.hook_dict:
            raise UserError(
                f"hook point {name!r} does not exist in this model of {model.cfg.n_layers} layers"
            )
        index = getattr(fn, "keywords", {}).get("index")
        width = widths.get(name, d_mlp if name.endswith("mlp.hook_post") else None)
        if width is not None and index is not None and len(index):
            if int(index.max()) >= width:
                unit = "feature" if name in widths else "neuron"
                raise UserError(
                    f"{unit} {int(index.max())} in {name} does not fit its "
                    f"{width} {unit}s (valid: 0..{width - 1})"
                )


__all__ = ["Hooks", "activate", "check_intervention", "deactivate", "intervene", "scale"]
