"""Hook points: where MLP neuron activations live, and running without the bridge's wrappers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from mlneurons.models.bridge import TransformerBridge


def mlp_neuron_hook(
    model: TransformerBridge, layer: int
) -> tuple[str, Callable[[torch.Tensor], torch.Tensor]]:
    """The hook point that carries layer ``layer``'s MLP neuron activations.

    LAPE's "activation" is the act_fn output the MLP multiplies: ``act_fn(gate)`` in
    gated MLPs (Llama, Gemma, Qwen) and ``act_fn(pre)`` in plain ones (GPT-2, BLOOM,
    BERT). It fires (is > 0) exactly when ``mlp.hook_pre`` > 0 for SiLU/GELU/ReLU.

    Returns:
        ``(hook_name, to_activation)``: ``to_activation`` maps the hooked tensor to
        the act_fn output (identity for plain MLPs, whose ``hook_post`` is that output).
    """
    n_layers = int(model.cfg.n_layers)
    if not 0 <= layer < n_layers:
        raise ValueError(f"layer {layer} is out of range for a model with {n_layers} layers")
    blocks = getattr(model, "blocks", None)
    mlp = getattr(blocks[layer], "mlp", None) if blocks is not None else None
    if mlp is None or f"blocks.{layer}.mlp.hook_pre" not in model.hook_dict:
        raise ValueError(
            f"model {getattr(model.cfg, 'model_name', model)!r} has no MLP hook points "
            f"(blocks.{layer}.mlp.hook_pre); mlneurons needs a TransformerBridge with MLP blocks"
        )
    if getattr(model.cfg, "gated_mlp", False):
        act_fn = getattr(getattr(mlp, "original_component", None), "act_fn", None)
        if act_fn is None:
            raise ValueError(
                f"cannot find act_fn of the gated MLP in layer {layer} "
                f"({type(getattr(mlp, 'original_component', mlp)).__name__})"
            )
        return f"blocks.{layer}.mlp.hook_pre", act_fn
    return f"blocks.{layer}.mlp.hook_post", identity


def identity(x: torch.Tensor) -> torch.Tensor:
    """A hook point's value as it is (the ``to_activation`` of plain MLPs)."""
    return x


SPLICE_MARK = "_mlneurons_splice"
"""Set on the hooks that splice a dictionary in (:mod:`mlneurons.models.dictionary`)."""


def hooks_attached(model: TransformerBridge) -> bool:
    """Whether any TransformerLens forward hook is attached to ``model`` right now.

    Dictionary splices do not count: they change nothing until a hook edits their features,
    and such a hook is attached to a feature hook point, which counts.
    """
    return any(
        not getattr(handle.user_hook, SPLICE_MARK, False)
        for point in model.hook_dict.values()
        for handle in point.fwd_hooks
    )


@contextmanager
def unwrapped(model: TransformerBridge) -> Iterator[None]:
    """Run the plain Hugging Face modules inside the bridge, without its wrappers.

    The bridge swaps its components (which re-implement attention and normalisation so
    that their hook points fire) into the HF model. Inside this context every wrapper is
    swapped back to the HF module it wraps, so TransformerLens hooks do NOT fire; plain
    PyTorch hooks on HF modules still do. Used by statistics collection when no
    TransformerLens hook is attached.
    """
    from transformer_lens.model_bridge.generalized_components.base import GeneralizedComponent

    swapped = []
    try:
        for parent in list(model.original_model.modules()):
            if isinstance(parent, GeneralizedComponent):
                continue
            for name, child in list(parent._modules.items()):
                inner = getattr(child, "original_component", None)
                if isinstance(child, GeneralizedComponent) and isinstance(inner, torch.nn.Module):
                    parent._modules[name] = inner
                    swapped.append((parent, name, child))
        yield
    finally:
        for parent, name, child in reversed(swapped):
            parent._modules[name] = child


def is_masked_lm(model: TransformerBridge) -> bool:
    """Whether ``model`` wraps a masked LM (BERT, XLM-R) rather than a causal one."""
    hf = getattr(model, "original_model", None)
    return hf is not None and "MaskedLM" in type(hf).__name__
