"""Model fingerprints: which weights a result was computed on (config + checkpoint identity)."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any, cast

import torch

from mlneurons.cache import cache_dir
from mlneurons.models.bridge import TransformerBridge
from mlneurons.provenance import provenance

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
    known: dict[str, str] = json.loads(store.read_text()) if store.exists() else {}
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


def weights_state(model: TransformerBridge) -> tuple[int, int]:
    """Changes whenever a parameter is edited in place (its version counter) or replaced
    by another tensor object; moving the model to another device changes neither."""
    params = list(model.parameters())
    return sum(p._version for p in params), hash(tuple(id(p) for p in params))


def _values_hash(model: TransformerBridge) -> str:
    """sha256 over every parameter's values (as float32): the identity of edited weights."""
    digest = hashlib.sha256()
    for name, param in sorted(model.named_parameters()):
        digest.update(name.encode())
        digest.update(param.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def checkpoint_identity(model: TransformerBridge, name_or_path: str, path: str) -> str:
    """What the weights were loaded from, independent of dtype: a local checkpoint's file
    hash, a hub snapshot's commit, else the parameter values."""
    if Path(path).is_dir():
        return "files:" + checkpoint_hash(path)
    commit = getattr(getattr(model.original_model, "config", None), "_commit_hash", None)
    if commit:
        return f"hub:{name_or_path}@{commit}"
    return "values:" + _values_hash(model)


def fingerprint(model: TransformerBridge) -> dict[str, Any]:
    """A model fingerprint recorded in every saved result.

    ``hash`` is a sha256 over the HF config and the identity of the checkpoint the weights
    came from (its files' hash, or a hub commit), so it does not change with the dtype the
    model was loaded in. Weights edited in place since loading are hashed by value instead
    (``edited`` is then True). ``dtype`` says what the model computed in, and
    ``provenance`` the library versions and lock file hash of this process.

    Returns:
        ``{"name", "n_layers", "d_mlp", "d_model", "hash", "dtype", "edited", "provenance"}``.
    """
    state = weights_state(model)
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
        "d_mlp": int(cast(int, model.cfg.d_mlp)),  # set for every model with MLP blocks
        "d_model": int(model.cfg.d_model),
        "hash": digest.hexdigest()[:16],
        "dtype": str(dtype).removeprefix("torch."),
        "edited": edited,
        "provenance": provenance(),
    }
    model._mlneurons_fingerprint = (state, result)
    return copy.deepcopy(result)


def check_same_model(
    recorded: dict[str, Any] | None, model: TransformerBridge, *, what: str, verb: str = "computed"
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
