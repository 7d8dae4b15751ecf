"""Dictionary features: sparse autoencoders and transcoders spliced in as hook points.

A sparse autoencoder (SAE) reads an activation ``x`` at one hook point and writes it as a
sparse code over ``d_sae`` features, ``f = σ(x W_enc + b_enc)``, from which it decodes
``x̂ = f W_dec + b_dec``; a transcoder reads one point (the MLP's input) and decodes into
another (its output). :func:`load_dictionary` reads either from disk in the SAELens layout
(``cfg.json`` + ``sae_weights.safetensors``), directly with safetensors: SAELens itself
pins an older TransformerLens.

:func:`splice` puts dictionaries into a model for the length of a ``with`` block. At the
dictionary's hook point the features are computed and passed through a new hook point,
``{hook_name}.hook_sae_acts_post`` (SAELens' name), and then:

* when no hook changed them, the model's activation goes on exactly as it was: splicing
  alone never changes an output;
* when a hook edited them (``f → f'``), the activation becomes ``f' W_dec + b_dec +
  (x - x̂)``: the edited reconstruction plus the reconstruction error, so that only the
  edit changes the model (SAELens' ``use_error_term``).

Feature hook points then work wherever hook names do: the collector reads them (LAPE over
features: ``collect_activation_stats(model, corpus, points=points)``), and the neuron
interventions edit them given ``points`` (a feature set's :attr:`LanguageNeurons.feature_points`),
with the index of a point in ``points`` as the "layer" and the feature as the "neuron".
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float

from mlneurons.errors import UserError, did_you_mean
from mlneurons.models.bridge import TransformerBridge
from mlneurons.models.canary import canary_ids
from mlneurons.models.fingerprint import checkpoint_hash
from mlneurons.models.forward import model_device
from mlneurons.models.hooks import SPLICE_MARK

CONFIG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
FEATURE_HOOK = "hook_sae_acts_post"
"""The name of the feature hook point under the dictionary's hook point (as in SAELens)."""

ACTIVATIONS = ("relu", "jumprelu", "topk", "identity")
"""Activation functions σ: ReLU, JumpReLU (ReLU where the pre-activation exceeds a
per-feature ``threshold``), TopK (the ``k`` largest pre-activations, ReLU'd) and
``identity`` (no nonlinearity: an mlneurons extension, e.g. for the identity dictionary
that re-reads MLP neurons exactly)."""

_ARCHITECTURES = {  # SAELens architecture -> (activation, transcoder); None: from activation_fn
    "standard": (None, False),
    "jumprelu": ("jumprelu", False),
    "topk": ("topk", False),
    "transcoder": (None, True),
    "jumprelu_transcoder": ("jumprelu", True),
}


@dataclass(frozen=True, eq=False)
class Dictionary:
    """A sparse autoencoder (``hook_name_out`` None) or transcoder, ready to splice.

    Attributes:
        W_enc: ``[d_in, d_sae]`` encoder.
        b_enc: ``[d_sae]`` encoder bias.
        W_dec: ``[d_sae, d_out]`` decoder (``d_out = d_in`` for an SAE).
        b_dec: ``[d_out]`` decoder bias.
        hook_name: the hook point read (TransformerLens name, e.g. ``blocks.3.hook_resid_post``).
        activation: one of :data:`ACTIVATIONS`.
        threshold: ``[d_sae]`` JumpReLU thresholds.
        k: TopK's k.
        apply_b_dec_to_input: subtract ``b_dec`` from the input before encoding (SAEs only).
        hook_name_out: a transcoder's output hook point (e.g. ``blocks.3.hook_mlp_out``).
        source: the directory it was read from.
        hash: sha256 of its weight files (empty when made in memory).
    """

    W_enc: Float[torch.Tensor, "d_in d_sae"]
    b_enc: Float[torch.Tensor, " d_sae"]
    W_dec: Float[torch.Tensor, "d_sae d_out"]
    b_dec: Float[torch.Tensor, " d_out"]
    hook_name: str
    activation: str = "relu"
    threshold: Float[torch.Tensor, " d_sae"] | None = None
    k: int | None = None
    apply_b_dec_to_input: bool = False
    hook_name_out: str | None = None
    source: str = ""
    hash: str = ""

    def __post_init__(self) -> None:
        where = f"dictionary {self.source!r}" if self.source else "dictionary"
        if self.activation not in ACTIVATIONS:
            raise UserError(
                f"{where}: unknown activation function {self.activation!r}; "
                f"supported: {', '.join(ACTIVATIONS)}"
            )
        d_in, d_sae = self.W_enc.shape
        shapes = {name: tuple(getattr(self, name).shape) for name in ("b_enc", "W_dec", "b_dec")}
        want = {"b_enc": (d_sae,), "W_dec": (d_sae, self.d_out), "b_dec": (self.d_out,)}
        if self.W_dec.dim() != 2 or shapes != want:
            raise UserError(
                f"{where}: W_enc is [{d_in}, {d_sae}] but b_enc, W_dec, b_dec are "
                f"{shapes['b_enc']}, {shapes['W_dec']}, {shapes['b_dec']}"
            )
        if self.hook_name_out is None and self.d_out != d_in:
            raise UserError(
                f"{where}: an SAE decodes what it reads, but d_in {d_in} != d_out {self.d_out}"
            )
        if self.apply_b_dec_to_input and self.d_out != d_in:
            raise UserError(f"{where}: apply_b_dec_to_input needs d_in = d_out")
        if self.activation == "jumprelu" and (
            self.threshold is None or tuple(self.threshold.shape) != (d_sae,)
        ):
            got = None if self.threshold is None else tuple(self.threshold.shape)
            raise UserError(f"{where}: jumprelu needs a threshold of shape ({d_sae},), got {got}")
        if self.activation == "topk" and not (isinstance(self.k, int) and 0 < self.k <= d_sae):
            raise UserError(f"{where}: topk needs an integer k in 1..{d_sae}, got {self.k!r}")

    @property
    def d_in(self) -> int:
        return int(self.W_enc.shape[0])

    @property
    def d_sae(self) -> int:
        return int(self.W_enc.shape[1])

    @property
    def d_out(self) -> int:
        return int(self.W_dec.shape[-1])

    @property
    def point(self) -> str:
        """The hook point of its features in a model it is spliced into."""
        return f"{self.hook_name}.{FEATURE_HOOK}"

    def encode(self, x: Float[torch.Tensor, "... d_in"]) -> Float[torch.Tensor, "... d_sae"]:
        """The feature activations ``σ(x W_enc + b_enc)`` (in the dictionary's dtype)."""
        x = x.to(self.W_enc.dtype)
        if self.apply_b_dec_to_input:
            x = x - self.b_dec
        pre = x @ self.W_enc + self.b_enc
        if self.activation == "identity":
            return pre
        if self.activation == "relu":
            return pre.relu()
        if self.activation == "jumprelu":
            assert self.threshold is not None  # checked when built
            return pre.relu() * (pre > self.threshold)
        top = pre.topk(int(self.k or 0), dim=-1)
        return torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())

    def decode(self, f: Float[torch.Tensor, "... d_sae"]) -> Float[torch.Tensor, "... d_out"]:
        """The reconstruction ``f W_dec + b_dec``."""
        return f @ self.W_dec + self.b_dec

    def to(self, device: torch.device | str) -> Dictionary:
        """The same dictionary with its tensors on ``device``."""
        moved: dict[str, Any] = {
            name: value.to(device)
            for name, value in vars(self).items()
            if isinstance(value, torch.Tensor)
        }
        return dataclasses.replace(self, **moved)

    def describe(self) -> dict[str, Any]:
        """What a result records about it (JSON)."""
        return {
            "source": self.source,
            "hash": self.hash,
            "hook_name": self.hook_name,
            "hook_name_out": self.hook_name_out,
            "point": self.point,
            "d_in": self.d_in,
            "d_sae": self.d_sae,
            "activation": self.activation,
        }

    def save(self, directory: str | Path) -> Path:
        """Write ``cfg.json`` and ``sae_weights.safetensors`` (the layout :func:`load_dictionary`
        reads); returns the directory."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        transcoder = self.hook_name_out is not None
        architecture = {"jumprelu": "jumprelu", "topk": "topk"}.get(self.activation, "standard")
        if transcoder:
            architecture = "jumprelu_transcoder" if self.activation == "jumprelu" else "transcoder"
        cfg: dict[str, Any] = {
            "architecture": architecture,
            "d_in": self.d_in,
            "d_sae": self.d_sae,
            "dtype": str(self.W_enc.dtype).removeprefix("torch."),
            "apply_b_dec_to_input": self.apply_b_dec_to_input,
            "normalize_activations": "none",
            "activation_fn": "relu" if self.activation in ("jumprelu", "topk") else self.activation,
            "hook_name": self.hook_name,
            "metadata": {"hook_name": self.hook_name},
        }
        if self.k is not None:
            cfg["k"] = self.k
        if transcoder:
            cfg.update(d_out=self.d_out, hook_name_out=self.hook_name_out)
        tensors = {
            "W_enc": self.W_enc,
            "b_enc": self.b_enc,
            "W_dec": self.W_dec,
            "b_dec": self.b_dec,
        }
        if self.threshold is not None:
            tensors["threshold"] = self.threshold
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in tensors.items()},
            str(directory / WEIGHTS_FILE),
        )
        (directory / CONFIG_FILE).write_text(json.dumps(cfg, indent=1))
        return directory


def load_dictionary(directory: str | Path, *, dtype: torch.dtype = torch.float32) -> Dictionary:
    """Read a sparse autoencoder or transcoder saved in the SAELens layout.

    ``cfg.json`` gives ``hook_name`` (top level, or under ``metadata`` as SAELens 6 writes
    it; ``hook_point`` in old files), ``d_in``, ``d_sae``, ``architecture`` (``standard``,
    ``jumprelu``, ``topk``, ``transcoder``, ``jumprelu_transcoder``), ``activation_fn``
    (``relu``, ``topk``; ``identity`` is an mlneurons extension), ``k`` (or
    ``activation_fn_kwargs.k``), ``apply_b_dec_to_input`` (SAELens' default: true) and, for
    transcoders, ``hook_name_out`` and ``d_out``. ``sae_weights.safetensors`` holds
    ``W_enc [d_in, d_sae]``, ``b_enc``, ``W_dec [d_sae, d_out]``, ``b_dec`` and JumpReLU's
    ``threshold``. Activation normalisation, attention ``hook_z`` reshaping and per-head
    hook points are not supported (one-line errors).

    Raises:
        UserError: a missing file or tensor, shapes that disagree with ``cfg.json``, an
            unsupported architecture or activation function.
    """
    from safetensors.torch import load_file

    directory = Path(directory)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (directory / name).is_file():
            raise UserError(
                f"no {name} in {str(directory)!r}: a dictionary directory holds {CONFIG_FILE} "
                f"and {WEIGHTS_FILE} (the SAELens layout)"
            )
    where = f"dictionary {str(directory)!r}"
    try:
        cfg: dict[str, Any] = json.loads((directory / CONFIG_FILE).read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{where}: {CONFIG_FILE} is not JSON ({exc})") from None
    meta = cfg.get("metadata") or {}
    hook_name = cfg.get("hook_name") or cfg.get("hook_point") or meta.get("hook_name")
    if not hook_name:
        raise UserError(f"{where}: {CONFIG_FILE} names no hook_name (the hook point it reads)")
    architecture = cfg.get("architecture", "standard")
    if architecture not in _ARCHITECTURES:
        raise UserError(
            f"{where}: architecture {architecture!r} is not supported; "
            f"supported: {', '.join(_ARCHITECTURES)}"
        )
    activation, transcoder = _ARCHITECTURES[architecture]
    if activation is None:
        activation = str(cfg.get("activation_fn") or cfg.get("activation_fn_str") or "relu")
    if activation not in ACTIVATIONS:
        raise UserError(
            f"{where}: unknown activation function {activation!r}; "
            f"supported: {', '.join(ACTIVATIONS)}"
        )
    normalize = cfg.get("normalize_activations") or "none"
    unsupported = {
        "normalize_activations": normalize if normalize != "none" else None,
        "reshape_activations": (cfg.get("reshape_activations") or "none").replace("none", "")
        or None,
        "hook_head_index": cfg.get("hook_head_index", meta.get("hook_head_index")),
    }
    for key, value in unsupported.items():
        if value is not None:
            raise UserError(f"{where}: {key}={value!r} is not supported (fold it into the weights)")
    tensors = load_file(str(directory / WEIGHTS_FILE))
    needed = ["W_enc", "b_enc", "W_dec", "b_dec"] + (
        ["threshold"] if activation == "jumprelu" else []
    )
    missing = [name for name in needed if name not in tensors]
    if missing:
        raise UserError(
            f"{where}: {WEIGHTS_FILE} lacks {', '.join(missing)}; it holds {', '.join(sorted(tensors))}"
        )
    scale = tensors.get("scaling_factor", tensors.get("finetuning_scaling_factor"))
    if scale is not None and not bool((scale == 1).all()):
        raise UserError(f"{where}: a scaling_factor other than 1 is not supported")
    d_in, d_sae = tuple(tensors["W_enc"].shape)
    declared = {"d_in": cfg.get("d_in", d_in), "d_sae": cfg.get("d_sae", d_sae)}
    if declared != {"d_in": d_in, "d_sae": d_sae}:
        raise UserError(
            f"{where}: W_enc is [{d_in}, {d_sae}] but {CONFIG_FILE} says d_in={declared['d_in']}, "
            f"d_sae={declared['d_sae']}"
        )
    if transcoder and not cfg.get("hook_name_out"):
        raise UserError(f"{where}: a transcoder's {CONFIG_FILE} must name hook_name_out")
    k = cfg.get("k", (cfg.get("activation_fn_kwargs") or {}).get("k"))
    return Dictionary(
        W_enc=tensors["W_enc"].to(dtype),
        b_enc=tensors["b_enc"].to(dtype),
        W_dec=tensors["W_dec"].to(dtype),
        b_dec=tensors["b_dec"].to(dtype),
        hook_name=str(hook_name),
        activation=activation,
        threshold=tensors["threshold"].to(dtype) if activation == "jumprelu" else None,
        k=int(k) if activation == "topk" and k is not None else None,
        apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)) and not transcoder,
        hook_name_out=str(cfg["hook_name_out"]) if transcoder else None,
        source=str(directory),
        hash=checkpoint_hash(directory),
    )


# ----------------------------------------------------------------------------- splicing

SPLICED = "_mlneurons_dictionaries"
"""The attribute of a model holding its spliced dictionaries, by feature hook point."""


def spliced(model: TransformerBridge) -> dict[str, Dictionary]:
    """The dictionaries spliced into ``model`` now, by feature hook point."""
    found: dict[str, Dictionary] = model.__dict__.get(SPLICED, {})
    return dict(found)


def _edited(
    y: torch.Tensor, dictionary: Dictionary, clean: torch.Tensor, edited: torch.Tensor
) -> torch.Tensor:
    """``y`` with the decoded edit: ``dec(f') + (y - dec(f))`` (``y`` where ``f' = f``)."""
    error = y.to(clean.dtype) - dictionary.decode(clean)
    return (dictionary.decode(edited) + error).to(y.dtype)


def _read(
    x: torch.Tensor,
    *,
    hook: Any,
    dictionary: Dictionary,
    point: torch.nn.Module,
    state: dict[str, Any],
) -> torch.Tensor | None:
    """At the dictionary's hook point: encode, pass the features through their hook point,
    and (SAEs) put back the edit; a transcoder's edit waits in ``state`` for its output."""
    state.pop("edit", None)
    if x.device != dictionary.W_enc.device:  # a model spread over devices (device_map)
        if state.get("device") != x.device:
            state["device"], state["moved"] = x.device, dictionary.to(x.device)
        dictionary = state["moved"]
    if x.shape[-1] != dictionary.d_in:
        raise UserError(
            f"dictionary {dictionary.source!r} reads {dictionary.d_in} dims but "
            f"{dictionary.hook_name} carries {x.shape[-1]}"
        )
    clean = dictionary.encode(x)
    edited = point(clean)
    if edited is clean:
        return None  # nothing edited the features: the model goes on unchanged
    if dictionary.hook_name_out is not None:
        state["edit"] = (clean, edited)
        return None
    return _edited(x, dictionary, clean, edited)


def _write(
    y: torch.Tensor, *, hook: Any, dictionary: Dictionary, state: dict[str, Any]
) -> torch.Tensor | None:
    """At a transcoder's output hook point: add the decoded edit of its features, if any."""
    edit = state.pop("edit", None)
    if edit is None:
        return None
    clean, edited = (t.to(y.device) for t in edit)
    return _edited(y, dictionary.to(y.device), clean, edited)


def _probe(model: TransformerBridge, names: list[str]) -> dict[str, tuple[int, int]]:
    """Each hook point's (firing order, width) in one forward pass of a few tokens."""
    seen: dict[str, tuple[int, int]] = {}

    def record(x: torch.Tensor, *, hook: Any, name: str) -> None:
        seen.setdefault(name, (len(seen), int(x.shape[-1])))

    tokens = torch.tensor([canary_ids(model, 3)], device=model_device(model))
    hooks = [(name, functools.partial(record, name=name)) for name in dict.fromkeys(names)]
    with torch.inference_mode(), model.hooks(fwd_hooks=hooks):
        model(tokens)
    return seen


def _check(
    model: TransformerBridge, dictionaries: Sequence[Dictionary]
) -> dict[str, tuple[int, int]]:
    """Raise unless every dictionary fits a hook point of ``model`` with no other dictionary."""
    known = model.hook_dict
    names = [n for d in dictionaries for n in (d.hook_name, d.hook_name_out) if n is not None]
    for name in names:
        if name not in known:
            raise UserError(
                f"a dictionary reads hook point {name!r}, which this model lacks;"
                f"{did_you_mean(name, known)} e.g. {', '.join(list(known)[:3])}"
            )
    taken: dict[int, str] = {id(known[d.hook_name]): d.hook_name for d in spliced(model).values()}
    for d in dictionaries:
        if id(known[d.hook_name]) in taken:
            raise UserError(
                f"hook point {d.hook_name!r} has a dictionary already "
                f"({taken[id(known[d.hook_name])]!r}); splice one dictionary per hook point"
            )
        taken[id(known[d.hook_name])] = d.hook_name
    seen = _probe(model, names)
    for d in dictionaries:
        sites = [(d.hook_name, d.d_in)] + ([(d.hook_name_out, d.d_out)] if d.hook_name_out else [])
        for name, width in sites:
            if name not in seen:
                raise UserError(f"hook point {name!r} did not fire in a forward pass of this model")
            if seen[name][1] != width:
                raise UserError(
                    f"dictionary {d.source or d.hook_name!r} has {width} dims at {name}, but "
                    f"this model's {name} has {seen[name][1]}"
                )
        if d.hook_name_out is not None and seen[d.hook_name_out][0] <= seen[d.hook_name][0]:
            raise UserError(
                f"transcoder {d.source!r} writes {d.hook_name_out}, which comes before "
                f"{d.hook_name}, the point it reads"
            )
    return seen


@contextmanager
def splice(model: TransformerBridge, *dictionaries: Dictionary) -> Iterator[list[str]]:
    """Splice ``dictionaries`` into ``model`` inside a ``with`` block; yields their feature
    hook points in forward order.

    Each feature hook point (``{hook_name}.hook_sae_acts_post``) is a TransformerLens
    ``HookPoint`` in ``model.hook_dict``: ``model.hooks``, ``run_with_hooks``, the collector
    and the interventions reach it by name. Unless a hook edits the features, the model
    computes exactly what it computed before; an edit enters with the reconstruction
    error added back (module docstring). Everything is removed on exit, also on errors.
    No dictionaries: nothing is spliced and the list is empty.

    Raises:
        UserError: a hook point the model lacks, a width that does not fit it, two
            dictionaries at one hook point; checked before anything is attached.
    """
    from transformer_lens.hook_points import HookPoint

    if not dictionaries:  # nothing to splice: the MLP neurons stay the units
        yield []
        return
    order = _check(model, dictionaries)
    device = model_device(model)
    known = model.hook_dict
    registry: dict[str, Any] = model._hook_registry
    before = spliced(model)
    handles: list[tuple[Any, Any]] = []
    added: list[str] = []
    try:
        ordered = sorted(dictionaries, key=lambda d: order[d.hook_name][0])
        for dictionary in (d.to(device) for d in ordered):
            point = HookPoint()  # type: ignore[no-untyped-call]
            point.name = dictionary.point
            registry[dictionary.point] = point
            added.append(dictionary.point)
            state: dict[str, Any] = {}
            sites: list[tuple[str, Any]] = [
                (
                    dictionary.hook_name,
                    functools.partial(_read, point=point, dictionary=dictionary, state=state),
                )
            ]
            if dictionary.hook_name_out is not None:
                sites.append(
                    (
                        dictionary.hook_name_out,
                        functools.partial(_write, dictionary=dictionary, state=state),
                    )
                )
            for name, hook in sites:
                setattr(hook, SPLICE_MARK, True)
                hook_point = known[name]
                handles.append((hook_point, hook_point.add_hook(hook, is_permanent=True)))
            model.__dict__[SPLICED] = {**spliced(model), dictionary.point: dictionary}
        yield added
    finally:
        for hook_point, handle in reversed(handles):
            handle.hook.remove()
            hook_point.fwd_hooks[:] = [h for h in hook_point.fwd_hooks if h is not handle]
        for name in added:
            registry.pop(name, None)
        model.__dict__[SPLICED] = before


def units(model: TransformerBridge, points: Sequence[str]) -> dict[str, Any] | None:
    """What statistics at ``points`` hold when every point is a spliced dictionary's
    features (recorded as ``model["units"]`` of statistics and unit sets); else None."""
    found = spliced(model)
    if not points or any(p not in found for p in points):
        return None
    return {
        "kind": "dictionary features",
        "points": list(points),
        "dictionaries": [found[p].describe() for p in points],
    }


def check_units(model: TransformerBridge, recorded: dict[str, Any], width: int) -> None:
    """Raise unless ``model`` has the dictionaries of ``recorded`` (see :func:`units`) spliced,
    each ``width`` features wide.

    Raises:
        UserError: naming the dictionary missing, of another width or with other weights.
    """
    found = spliced(model)
    for described in recorded.get("dictionaries", []):
        point = described["point"]
        dictionary = found.get(point)
        if dictionary is None:
            raise UserError(
                f"these units are the features of dictionary {described.get('source')!r} at "
                f"{point}, which this model does not have: splice it first "
                "(with mlneurons.splice(model, mlneurons.load_dictionary(DIR)))"
            )
        if dictionary.d_sae != width:
            raise UserError(
                f"the units are {width} features per point but the dictionary spliced at "
                f"{point} has {dictionary.d_sae}"
            )
        if described.get("hash") and dictionary.hash and described["hash"] != dictionary.hash:
            raise UserError(
                f"the dictionary spliced at {point} ({dictionary.source!r}) is not the one these "
                f"units were selected with ({described.get('source')!r})"
            )


def feature_widths(model: TransformerBridge) -> dict[str, int]:
    """Features per feature hook point of the dictionaries spliced into ``model`` now."""
    return {point: d.d_sae for point, d in spliced(model).items()}


__all__ = [
    "ACTIVATIONS",
    "CONFIG_FILE",
    "Dictionary",
    "FEATURE_HOOK",
    "WEIGHTS_FILE",
    "check_units",
    "feature_widths",
    "load_dictionary",
    "splice",
    "spliced",
    "units",
]
