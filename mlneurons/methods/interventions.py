"""Neuron interventions as composable TransformerLens hooks (Tang et al. 2024).

Each factory returns a plain list of ``(hook_name, fn)`` pairs, so interventions
compose with ``+`` and work with ``model.hooks(fwd_hooks=...)``,
``run_with_hooks`` and ``generate``. :func:`intervene` is the context manager
that always removes what it added.

The intervened quantity is the MLP activation that LAPE counts: the act_fn
output that the MLP multiplies, ``act_fn(gate)`` in gated MLPs. Zeroing it is
zeroing ``mlp.hook_post`` (``act_fn(gate) * up`` is then 0); setting it to ``v``
in a gated MLP sets ``hook_post`` to ``v * up``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from jaxtyping import Float, Int

from mlneurons.errors import UserError
from mlneurons.methods.lape import LanguageNeurons, as_pairs
from mlneurons.models.fingerprint import fingerprint

Hooks = list[tuple[str, Any]]
"""A list of ``(hook_name, fn)`` pairs: what every intervention is."""


def _check_fits(pairs: Int[torch.Tensor, "k 2"], model: Any, neurons: Any) -> None:
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


def deactivate(neurons: Any, *, model: Any = None) -> Hooks:
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
) -> torch.Tensor:
    index, value = index.to(act.device), value.to(act.device, act.dtype)
    if store is not None:  # gated: hook_post = act_fn(gate) * up
        value = value * store.pop("up").index_select(-1, index)
    out = act.clone()
    out[..., index] = value
    return out


def activate(
    neurons: Any,
    values: float | Float[torch.Tensor, " k"] | Float[torch.Tensor, "layer neuron"],
    *,
    model: Any,
) -> Hooks:
    """Set the chosen neurons' activation to ``values`` at every position, decode steps included.

    Args:
        neurons: as for :func:`deactivate`.
        values: a scalar; one value per neuron, in the order of ``as_pairs(neurons)``;
            or a ``[layer, neuron]`` grid such as ``stats.mean_activation("zh")``
            (the per-language mean activation).
        model: the model the hooks are for (gated and plain MLPs differ).
    """
    pairs = as_pairs(neurons)
    _check_fits(pairs, model, neurons)
    fp = fingerprint(model)
    values = torch.as_tensor(values, dtype=torch.float32)
    if values.dim() == 0:
        per_neuron = values.expand(len(pairs))
    elif values.dim() == 1 and len(values) == len(pairs):
        per_neuron = values
    elif values.dim() == 2 and tuple(values.shape) == (fp["n_layers"], fp["d_mlp"]):
        per_neuron = values[pairs[:, 0], pairs[:, 1]]
    else:
        raise UserError(
            f"values must be a scalar, {len(pairs)} values (one per neuron) or a "
            f"[{fp['n_layers']}, {fp['d_mlp']}] grid; got shape {tuple(values.shape)}"
        )
    gated = bool(getattr(model.cfg, "gated_mlp", False))
    hooks: Hooks = []
    for layer in torch.unique(pairs[:, 0]).tolist():
        chosen = pairs[:, 0] == layer
        store: dict[str, torch.Tensor] | None = {} if gated else None
        if gated:
            hooks.append(
                (f"blocks.{layer}.mlp.in.hook_out", functools.partial(_stash, store=store))
            )
        hooks.append(
            (
                f"blocks.{layer}.mlp.hook_post",
                functools.partial(
                    _set, index=pairs[chosen, 1], value=per_neuron[chosen].clone(), store=store
                ),
            )
        )
    return hooks


@contextmanager
def intervene(model: Any, *interventions: Hooks) -> Iterator[Any]:
    """Apply interventions inside a ``with`` block; their hooks are removed on exit and on error.

    Example::

        with mlneurons.intervene(model, deactivate(neurons["fr"]), activate(...)):
            model.generate(...)
    """
    hooks: Hooks = [pair for intervention in interventions for pair in intervention]
    check_intervention(model, hooks)
    with model.hooks(fwd_hooks=hooks):
        yield model


def check_intervention(model: Any, hooks: Hooks) -> None:
    """Raise before any forward pass if a hook point or a neuron index does not fit ``model``.

    Catches what ``deactivate(neurons)`` without ``model=`` could not check when built;
    :func:`intervene` calls it.

    Raises:
        UserError: naming the hook point or neuron and the valid range.
    """
    d_mlp = int(model.cfg.d_mlp)
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


__all__ = ["Hooks", "activate", "check_intervention", "deactivate", "intervene"]
