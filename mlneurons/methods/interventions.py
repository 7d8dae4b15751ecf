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
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import torch
from jaxtyping import Float, Int

from mlneurons.errors import UserError
from mlneurons.methods.lape import LanguageNeurons, as_pairs
from mlneurons.models.bridge import TransformerBridge
from mlneurons.models.fingerprint import fingerprint

Hooks = list[tuple[str, Any]]
"""A list of ``(hook_name, fn)`` pairs: what every intervention is."""


def _check_fits(
    pairs: Int[torch.Tensor, "k 2"], model: TransformerBridge | None, neurons: Any
) -> None:
    """Raise if ``pairs`` (or the LanguageNeurons they came from) do not fit ``model``.

    Negative indices are refused even without a model.
    """
    if len(pairs) and pairs.min() < 0:
        layer, neuron = pairs[(pairs < 0).any(1)][0].tolist()
        raise UserError(f"neuron indices must be >= 0, got (layer {layer}, neuron {neuron})")
    if model is None:
        return
    if isinstance(neurons, LanguageNeurons):
        neurons.check_fits(model)
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


def deactivate(neurons: Any, *, model: TransformerBridge | None = None) -> Hooks:
    """Set the chosen neurons' activation to 0 at every position (LAPE deactivation).

    Args:
        neurons: ``neurons["fr"]`` of a :class:`LanguageNeurons`, a one-language
            ``LanguageNeurons``, a list of (layer, neuron) pairs, or a ``[layer, neuron]``
            boolean mask.
        model: when given, the neurons are checked to fit it.
    """
    pairs = as_pairs(neurons)
    _check_fits(pairs, model, neurons)
    return [
        (f"blocks.{layer}.mlp.hook_post", functools.partial(_zero, index=index))
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
    fp: dict[str, Any],
    what: str,
) -> Float[torch.Tensor, " k"]:
    """One value per pair from a scalar, a value per pair, or a ``[layer, neuron]`` grid."""
    values = torch.as_tensor(values, dtype=torch.float32)
    if values.dim() == 0:
        return values.expand(len(pairs))
    if values.dim() == 1 and len(values) == len(pairs):
        return values
    if values.dim() == 2 and tuple(values.shape) == (fp["n_layers"], fp["d_mlp"]):
        return values[pairs[:, 0], pairs[:, 1]]
    raise UserError(
        f"{what} must be a scalar, {len(pairs)} values (one per neuron) or a "
        f"[{fp['n_layers']}, {fp['d_mlp']}] grid; got shape {tuple(values.shape)}"
    )


def activate(
    neurons: Any,
    values: float | Float[torch.Tensor, " k"] | Float[torch.Tensor, "layer neuron"],
    *,
    model: TransformerBridge,
    add: bool = False,
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
    """
    pairs = as_pairs(neurons)
    _check_fits(pairs, model, neurons)
    per_neuron = _per_neuron(pairs, values, fingerprint(model), "values")
    gated = bool(getattr(model.cfg, "gated_mlp", False))
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
                f"blocks.{layer}.mlp.hook_post",
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
) -> Hooks:
    """Multiply the chosen neurons' activation by ``factor`` at every position (a ← α·a).

    The multiplicative intervention of language arithmetics (Gurgurov et al. 2025).
    In gated MLPs ``α·act_fn(gate)·up`` is ``α·hook_post``, so no up projection is needed.

    Args:
        neurons: as for :func:`deactivate`.
        factor: a scalar, one factor per neuron, or a ``[layer, neuron]`` grid.
        model: the model the hooks are for.
    """
    pairs = as_pairs(neurons)
    _check_fits(pairs, model, neurons)
    per_neuron = _per_neuron(pairs, factor, fingerprint(model), "factor")
    return [
        (
            f"blocks.{layer}.mlp.hook_post",
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
    for name, fn in hooks:
        if name not in model.hook_dict:
            raise UserError(
                f"hook point {name!r} does not exist in this model of {model.cfg.n_layers} layers"
            )
        index = getattr(fn, "keywords", {}).get("index")
        if name.endswith("mlp.hook_post") and index is not None and len(index):
            if int(index.max()) >= d_mlp:
                raise UserError(
                    f"neuron {int(index.max())} in {name} does not fit this model's "
                    f"{d_mlp} neurons per layer (valid: 0..{d_mlp - 1})"
                )


__all__ = ["Hooks", "activate", "check_intervention", "deactivate", "intervene", "scale"]
