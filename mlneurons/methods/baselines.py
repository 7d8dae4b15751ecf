"""Tang et al.'s (2024) baselines to LAPE, and matched random controls.

Every selector returns :class:`~mlneurons.methods.lape.LanguageNeurons`, so its neurons
deactivate, steer and compare exactly like LAPE's (``mlneurons compare-methods``).

The paper's full text was not in the sources we could search; the definitions below
follow its description of the baselines as the field cites them, and each docstring
says what we chose where it is unclear. Where a baseline has two readings (LAP's "95%"),
both are offered; what is this project's choice and not the paper's (RS's layer matching
and exclusion of language neurons, the neuron-level PV score) is labelled as such, in the
docstrings and in :func:`reading`, which the command prints.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, cast, get_args

import torch
from jaxtyping import Bool, Float, Int

from mlneurons.config import one_of, rate
from mlneurons.data.builtin_text import normalize_language
from mlneurons.errors import UserError
from mlneurons.methods.lape import LanguageNeurons, select, select_by_entropy
from mlneurons.models.bridge import TransformerBridge
from mlneurons.models.fingerprint import fingerprint
from mlneurons.stats.activation import ActivationStats

Selector = Literal["lape", "lap", "lap-capped", "lave", "rs", "pv"]
"""The selectors of a method comparison: LAPE, Tang et al.'s baselines LAP (also capped at
LAPE's count per language), LAVE and RS, and PV from fine-tuned checkpoints."""
METHODS: tuple[str, ...] = get_args(Selector)

LapThresholdKind = Literal["probability", "quantile"]
"""The two readings of LAP's "activation probability exceeds 95%" (:func:`lap`)."""
LAP_THRESHOLD_KINDS: tuple[str, ...] = get_args(LapThresholdKind)


def _languages(stats: ActivationStats, languages: Sequence[str] | None) -> ActivationStats:
    if languages is None:
        return stats
    return stats.select([normalize_language(code, stats.languages) for code in languages])


def lap(
    stats: ActivationStats,
    languages: Sequence[str] | None = None,
    *,
    threshold: float = 0.95,
    threshold_kind: LapThresholdKind = "probability",
    cap: Mapping[str, int] | None = None,
) -> LanguageNeurons:
    """LAP (language activation probability): neuron i belongs to language k when
    P(neuron i fires | language k) > the bar.

    "A neuron's activation probability exceeds 95%" has two readings (Tang et al.'s slides
    use "95%" both ways), chosen by ``threshold_kind``:

    * ``"probability"``: the bar is ``threshold`` itself, an absolute probability (0.95);
      this selects the neurons that are on for nearly every token.
    * ``"quantile"``: the bar is τ, the ``threshold`` quantile of all activation
      probabilities of the languages compared (language x layer x neuron, one τ for
      all languages: ``kthvalue(round(threshold·N))``), computed as LAPE's filter
      threshold is, so on the same statistics the two are the same probability (LAPE's
      rounded to float32, LAP's exact).

    No entropy and no budget: a neuron above the bar in several languages belongs to each
    of them, which is the weakness LAPE addresses. The inequality is strict (as LAPE's).

    ``cap`` (language -> count; e.g. LAPE's :meth:`~LanguageNeurons.counts`) gives the
    capped variant: each language keeps at most that many of its neurons, those with the
    highest probability on it (ties: the lower (layer, neuron) first).

    ``constants`` record the reading: ``threshold_kind``, ``threshold`` (the probability
    bar actually used), ``quantile`` (the quantile reading's level), and for the capped
    variant ``cap`` and ``uncapped`` (each language's count before the cap).
    """
    rate("threshold", threshold)
    one_of("threshold_kind", threshold_kind, LAP_THRESHOLD_KINDS)
    stats = _languages(stats, languages)
    # exact fractions (counts / tokens in float64), so that a probability on the bar is
    # never above it through rounding (activation_probs are float32)
    probs = stats.fire_counts.double() / stats._tokens()  # [language, layer, neuron]
    constants: dict[str, Any] = {"method": "lap", "threshold_kind": threshold_kind}
    if threshold_kind == "quantile":
        flat = probs.flatten()
        bar = float(flat.kthvalue(max(1, round(len(flat) * threshold))).values)
        constants.update(threshold=bar, quantile=threshold)
    else:
        bar = threshold
        constants["threshold"] = threshold
    above = probs > bar
    neurons = {lang: above[i].nonzero() for i, lang in enumerate(stats.languages)}
    if cap is not None:
        missing = [lang for lang in stats.languages if lang not in cap]
        if missing:
            raise UserError(f"cap names no count for {missing}; it has {sorted(cap)}")
        capped = {}
        for i, lang in enumerate(stats.languages):
            pairs = neurons[lang]
            order = probs[i, pairs[:, 0], pairs[:, 1]].argsort(descending=True, stable=True)
            capped[lang] = pairs[order[: max(0, int(cap[lang]))]]
        constants.update(
            method="lap-capped",
            cap={lang: int(cap[lang]) for lang in stats.languages},
            uncapped={lang: len(pairs) for lang, pairs in neurons.items()},
        )
        neurons = capped
    return LanguageNeurons(neurons, stats.n_layers, stats.d_mlp, dict(stats.model), constants)


def lave(
    stats: ActivationStats,
    languages: Sequence[str] | None = None,
    *,
    top_rate: float = 0.01,
    filter_rate: float = 0.95,
    activation_bar_ratio: float = 0.95,
) -> LanguageNeurons:
    """LAVE (language activation value entropy): LAPE's procedure with each language's
    mean activation value in place of its activation probability.

    The mean act_fn output can be negative (GELU and SiLU dip below 0), and an entropy
    needs non-negative weights; chosen here: negative means count as 0 (a neuron whose
    mean is negative in every language is excluded by the filter step). The filter
    and activation-bar quantiles are taken over the mean values, as LAPE takes them
    over the probabilities.
    """
    stats = _languages(stats, languages)
    if len(stats.languages) < 2:
        raise UserError("LAVE needs at least two languages")
    return select_by_entropy(
        stats.mean_activations.double().clamp(min=0),
        stats.languages,
        top_rate=top_rate,
        filter_rate=filter_rate,
        activation_bar_ratio=activation_bar_ratio,
        model=stats.model,
        method="lave",
    )


def _free(reference: LanguageNeurons) -> Bool[torch.Tensor, "layer neuron"]:
    """Neurons no language of ``reference`` has: the pool of every control."""
    return ~reference.masks().any(0)


def random_selection(
    reference: LanguageNeurons, *, seed: int = 0, exclude_language_neurons: bool = True
) -> LanguageNeurons:
    """RS (random selection): random neurons to deactivate in place of a language's.

    Tang et al. name it "random selection"; two refinements here are this project's
    choices, not the paper's: the draw is layer-matched (per language and layer, as many
    neurons as ``reference``, LAPE, chose there, drawn uniformly) and, with
    ``exclude_language_neurons`` (default), drawn only from the neurons no language of
    ``reference`` has, so the control never deactivates a language neuron. Without it,
    each layer's draw is from all its neurons. Both are recorded in ``constants``.
    """
    masks = reference.masks()
    free = _free(reference)
    if not exclude_language_neurons:
        free = torch.ones_like(free)
    generator = torch.Generator().manual_seed(seed)
    neurons = {}
    for i, lang in enumerate(reference.languages):
        picked = []
        for layer, n in enumerate(masks[i].sum(-1).tolist()):
            pool = free[layer].nonzero().flatten()
            if n > len(pool):
                raise UserError(
                    f"layer {layer} has only {len(pool)} free neurons for a control of {n}"
                )
            chosen = pool[torch.randperm(len(pool), generator=generator)[:n]]
            picked.append(torch.stack([torch.full_like(chosen, layer), chosen], 1))
        neurons[lang] = torch.cat(picked)
    constants = {
        "method": "rs",
        "seed": seed,
        "layer_matched": True,
        "exclude_language_neurons": exclude_language_neurons,
        "reference": dict(reference.constants),
    }
    return LanguageNeurons(
        neurons, reference.n_layers, reference.d_mlp, dict(reference.model), constants
    )


def probability_bins(
    stats: ActivationStats, language: str, *, bins: int = 20
) -> Int[torch.Tensor, "layer neuron"]:
    """Per layer, each neuron's firing-probability bin on ``language``: equal-count bins
    of the layer's neurons ranked by P(fire | language) (ties by index), 0 = lowest."""
    if isinstance(bins, bool) or not isinstance(bins, int) or not 1 <= bins <= stats.d_mlp:
        raise UserError(f"bins={bins!r} must be an integer in 1..{stats.d_mlp} (neurons per layer)")
    probs = stats.activation_probs[stats.index(language)].double()
    order = probs.argsort(dim=-1, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(stats.d_mlp).expand_as(order).contiguous())
    return ranks * bins // stats.d_mlp


def matched_control(
    reference: LanguageNeurons,
    stats: ActivationStats,
    *,
    bins: int = 20,
    seed: int = 0,
) -> LanguageNeurons:
    """A control matched to what it controls: for each language, per layer, one random
    neuron from the same firing-probability bin (on that language,
    :func:`probability_bins`) for each of its neurons, drawn without replacement from
    the neurons no language of ``reference`` has.

    When a bin has fewer free neurons than it needs, the rest come from the nearest
    bins of the same layer (below and above alternately); ``constants["widened"]``
    counts those neurons per language, so an unmatched control is never silent.
    """
    masks, free = reference.masks(), _free(reference)
    if (stats.n_layers, stats.d_mlp) != (reference.n_layers, reference.d_mlp):
        raise UserError(
            f"statistics are for {stats.n_layers} x {stats.d_mlp} neurons but the neurons "
            f"for {reference.n_layers} x {reference.d_mlp}"
        )
    generator = torch.Generator().manual_seed(seed)
    neurons, widened = {}, {}
    for i, lang in enumerate(reference.languages):
        bin_of = probability_bins(stats, lang, bins=bins)
        picked, widened[lang] = [], 0
        for layer in masks[i].any(-1).nonzero().flatten().tolist():
            available = free[layer].clone()
            needed = torch.bincount(bin_of[layer][masks[i, layer]], minlength=bins)
            for b in needed.nonzero().flatten().tolist():
                for distance in range(bins):
                    for near in dict.fromkeys((b - distance, b + distance)):
                        if not 0 <= near < bins or needed[b] == 0:
                            continue
                        pool = (available & (bin_of[layer] == near)).nonzero().flatten()
                        take = pool[torch.randperm(len(pool), generator=generator)][: needed[b]]
                        available[take] = False
                        needed[b] -= len(take)
                        widened[lang] += len(take) if distance else 0
                        picked.append(torch.stack([torch.full_like(take, layer), take], 1))
                if needed[b]:
                    raise UserError(
                        f"layer {layer} has too few free neurons for a control of {lang!r}"
                    )
        neurons[lang] = torch.cat(picked) if picked else torch.empty(0, 2, dtype=torch.long)
    constants = {"method": "matched", "seed": seed, "bins": bins, "widened": widened}
    return LanguageNeurons(
        neurons, reference.n_layers, reference.d_mlp, dict(reference.model), constants
    )


# ---- PV: parameter variation from fine-tuned checkpoints -------------------------------

Checkpoint = str | Path | Mapping[str, torch.Tensor]
"""A fine-tuned checkpoint: a Hugging Face model directory, a state-dict file
(``.safetensors``, ``.pt``, ``.pth``, ``.bin``) or a state dict in memory."""

_STATE_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def _plain(key: str) -> str:
    """A parameter name without the bridge's wrappers: the Hugging Face name."""
    return key.replace("._original_component", "").replace("_original_component.", "")


def _weights(checkpoint: Checkpoint, language: str) -> Callable[[str], torch.Tensor | None]:
    """Read parameters of ``checkpoint`` by their Hugging Face name (safetensors: one
    tensor at a time, as needed)."""
    from safetensors import safe_open

    if isinstance(checkpoint, Mapping):
        return {_plain(k): v for k, v in checkpoint.items()}.get
    path = Path(checkpoint)
    if path.is_dir():
        present = [path / name for name in _STATE_FILES if (path / name).exists()]
        if not present:
            raise UserError(
                f"checkpoint {language!r}: {str(path)!r} holds none of {', '.join(_STATE_FILES)}"
            )
        path = present[0]
    if not path.exists():
        raise UserError(f"checkpoint {language!r}: {str(path)!r} does not exist")
    if path.suffix in (".pt", ".pth", ".bin"):
        data = torch.load(str(path), map_location="cpu", weights_only=True)
        if not isinstance(data, Mapping):
            raise UserError(f"checkpoint {language!r}: {str(path)!r} is not a state dict")
        return _weights(data, language)
    if path.name.endswith(".index.json"):
        import json

        files = sorted(
            {path.parent / f for f in json.loads(path.read_text())["weight_map"].values()}
        )
    elif path.suffix == ".safetensors":
        files = [path]
    else:
        raise UserError(
            f"checkpoint {language!r}: {str(path)!r} is neither a model directory nor a "
            "state-dict file (.safetensors, .pt, .pth, .bin)"
        )
    where: dict[str, tuple[Path, str]] = {}
    for file in files:
        with safe_open(str(file), "pt") as handle:
            where.update({_plain(key): (file, key) for key in handle.keys()})

    def read(name: str) -> torch.Tensor | None:
        if name not in where:
            return None
        file, key = where[name]
        with safe_open(str(file), "pt") as handle:
            tensor: torch.Tensor = handle.get_tensor(key)
        return tensor

    return read


_Weights = list[list[tuple[list[str], torch.Tensor, int]]]
"""Per layer, each MLP weight matrix: (its Hugging Face names, its values, its neuron axis)."""


def _neuron_weights(model: TransformerBridge) -> _Weights:
    """Per layer, each MLP weight matrix (input, gate if any, output) as (its possible
    Hugging Face names, its values, the axis of its neurons)."""
    from transformers.pytorch_utils import Conv1D

    names: dict[int, list[str]] = {}
    for name, param in model.original_model.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), []).append(_plain(name))
    d_mlp, layers = model.cfg.d_mlp, []
    for layer, block in enumerate(model.blocks):
        weights = []
        for role in ("in", "gate", "out"):
            part = getattr(block.mlp, role, None)
            if part is None:
                continue
            module = part.original_component
            transposed = isinstance(module, Conv1D)  # GPT-2 stores [in, out]
            if not (transposed or isinstance(module, torch.nn.Linear)):
                raise UserError(f"PV cannot read the {type(module).__name__} MLP of layer {layer}")
            axis = int((role == "out") != transposed)  # nn.Linear stores [out, in]
            weight = module.weight
            if weight.shape[axis] != d_mlp:
                raise UserError(f"PV cannot find the {d_mlp} neurons of layer {layer}'s {role}")
            weights.append((list(dict.fromkeys(names[id(weight)])), weight.detach(), axis))
        layers.append(weights)
    return layers


def _changes(
    layers: _Weights, checkpoint: Checkpoint, language: str
) -> Float[torch.Tensor, "layer neuron"]:
    """:func:`relative_weight_change` on the weights of :func:`_neuron_weights`."""
    read = _weights(checkpoint, language)
    changed, base = [], []
    for weights in layers:
        changed.append(torch.zeros((), dtype=torch.float64))
        base.append(torch.zeros((), dtype=torch.float64))
        for keys, weight, axis in weights:
            tuned = next((t for t in map(read, keys) if t is not None), None)
            if tuned is None:
                raise UserError(
                    f"checkpoint {language!r} has no {keys[0]}: is it fine-tuned from the base model?"
                )
            if tuned.shape != weight.shape:
                raise UserError(
                    f"checkpoint {language!r} does not match the base model: {keys[0]} has "
                    f"shape {tuple(tuned.shape)}, the base model's {tuple(weight.shape)}"
                )
            w = weight.double().cpu()
            changed[-1] = changed[-1] + (tuned.double() - w).norm(dim=1 - axis)
            base[-1] = base[-1] + w.norm(dim=1 - axis)
    change, norm = torch.stack(changed), torch.stack(base)  # [layer, neuron]
    ratio = change / norm.where(norm > 0, 1.0)
    return ratio.where(norm > 0, torch.where(change > 0, torch.inf, 0.0))


def relative_weight_change(
    model: TransformerBridge, checkpoint: Checkpoint, *, language: str = "checkpoint"
) -> Float[torch.Tensor, "layer neuron"]:
    """Each MLP neuron's relative weight change from ``model`` (the base) to a fine-tuned
    ``checkpoint`` of it, the neuron-level form of Zhang et al.'s (ACL 2024) parameter
    variation |θ_tuned − θ_base| / |θ_base|:

        r_i = (‖ΔW_in[:, i]‖ + ‖ΔW_gate[:, i]‖ + ‖ΔW_out[i, :]‖)
              / (‖W_in[:, i]‖ + ‖W_gate[:, i]‖ + ‖W_out[i, :]‖)

    with Euclidean norms of the weights that read into neuron i and of those it writes
    with (the gate only where the MLP has one; biases left out). Summing over a neuron's
    weights is this project's choice: Zhang et al. score single parameters. A neuron whose
    base norms are all 0 scores ``inf`` when its weights changed, else 0.

    ``checkpoint``: a Hugging Face directory, a state-dict file or a state dict, with the
    base model's parameter names (the bridge's own names are accepted too); ``language``
    names it in errors.
    """
    return _changes(_neuron_weights(model), checkpoint, language)


def parameter_variation(
    model: TransformerBridge,
    checkpoints: Mapping[str, Checkpoint],
    *,
    top_rate: float = 0.01,
) -> LanguageNeurons:
    """PV (parameter variation; Zhang et al., ACL 2024, a baseline of Tang et al.): a
    language's neurons are those in the top ``top_rate`` of all neurons by
    :func:`relative_weight_change` towards that language's fine-tuned checkpoint, and in
    no other language's top ``top_rate``.

    Args:
        model: the base model the checkpoints were fine-tuned from.
        checkpoints: language -> its fine-tuned checkpoint (Hugging Face directory,
            state-dict file or state dict, with the base model's parameter names).
        top_rate: share of all neurons (layers x neurons) in each language's top
            (``round(top_rate·N)``, at least 1; ties: the lower (layer, neuron) first).

    ``constants`` record ``top_rate``, ``top_k``, each language's ``cutoff`` (the smallest
    score in its top), ``shared`` (its top neurons dropped for being in another's top) and
    the ``checkpoints``.
    """
    rate("top_rate", top_rate)
    if not checkpoints:
        raise UserError("PV needs at least one fine-tuned checkpoint (language -> path)")
    weights = _neuron_weights(model)
    n_layers, d_mlp = len(weights), cast(int, model.cfg.d_mlp)
    k = max(1, round(top_rate * n_layers * d_mlp))
    tops, cutoffs = {}, {}
    for lang, checkpoint in checkpoints.items():
        scores = _changes(weights, checkpoint, lang)
        ranked = scores.flatten().sort(descending=True, stable=True)
        top = torch.zeros(n_layers * d_mlp, dtype=torch.bool)
        top[ranked.indices[:k]] = True
        tops[lang], cutoffs[lang] = top.reshape(n_layers, d_mlp), float(ranked.values[k - 1])
    owners = torch.stack(list(tops.values())).sum(0)
    neurons = {lang: (top & (owners == 1)).nonzero() for lang, top in tops.items()}
    constants = {
        "method": "pv",
        "top_rate": top_rate,
        "top_k": k,
        "cutoff": cutoffs,
        "shared": {lang: int((top & (owners > 1)).sum()) for lang, top in tops.items()},
        "checkpoints": {
            lang: "(state dict)" if isinstance(c, Mapping) else str(c)
            for lang, c in checkpoints.items()
        },
    }
    return LanguageNeurons(neurons, n_layers, d_mlp, fingerprint(model), constants)


def checkpoint_paths(specs: Sequence[str], languages: Sequence[str]) -> dict[str, Path]:
    """``LANG=PATH`` items (``--pv-checkpoints``) as language -> path, checked before any
    model loads: each exists, no language twice, and every one of ``languages`` has one."""
    paths: dict[str, Path] = {}
    for spec in specs:
        code, _, path = spec.partition("=")
        lang = code.strip().lower()
        if lang in [c.lower() for c in languages]:
            lang = normalize_language(lang, languages)
        if not lang or not path.strip():
            raise UserError(f"pv checkpoint {spec!r} is not LANG=PATH, e.g. fr=runs/ft-fr")
        if lang in paths:
            raise UserError(f"pv checkpoint for {lang!r} given twice")
        paths[lang] = Path(path.strip()).expanduser()
        if not paths[lang].exists():
            raise UserError(f"pv checkpoint {lang}={str(paths[lang])!r} does not exist")
    missing = [lang for lang in languages if lang not in paths]
    if missing:
        raise UserError(
            f"no pv checkpoint for {missing}; give LANG=PATH for each, e.g. {missing[0]}=DIR"
        )
    return paths


def reading(constants: Mapping[str, Any]) -> str:
    """How a selection was made, in words, from its ``constants``: which reading of a
    baseline ran, and which parts are this project's choices."""
    method = constants.get("method", "")
    if method in ("lap", "lap-capped"):
        if constants.get("threshold_kind") == "quantile":
            text = (
                f"P(fire) > {constants['threshold']:.4g}, the {constants['quantile']:g} "
                "quantile of all probabilities (quantile reading)"
            )
        else:
            text = f"P(fire) > {constants['threshold']:g} (probability reading)"
        if method == "lap-capped":
            uncapped = ", ".join(f"{k} {v}" for k, v in constants["uncapped"].items())
            text += f", capped at LAPE's count per language (before the cap: {uncapped})"
        return text
    if method == "rs":
        pool = (
            "language neurons excluded"
            if constants.get("exclude_language_neurons", True)
            else "language neurons included"
        )
        return (
            f"random, as many per layer as LAPE, {pool} (layer matching and the exclusion "
            "are this project's choices, not the paper's)"
        )
    if method == "lave":
        return "LAPE's entropy on mean activation values (negative means as 0)"
    if method == "pv":
        return (
            f"top {constants['top_rate']:g} by relative weight change to a language's "
            "fine-tuned checkpoint and in no other's (per-neuron score: this project's "
            "choice)"
        )
    if method == "lape":
        return f"LAPE, top_rate {constants.get('top_rate', 0.01):g}"
    return str(method)


def select_with(
    method: str, stats: ActivationStats, *, reference: LanguageNeurons | None = None, **options: Any
) -> LanguageNeurons:
    """The neurons of one of :data:`METHODS` with that selector's own options (``lap``:
    ``threshold``, ``threshold_kind``; ``lape``, ``lave``: LAPE's constants; ``rs``:
    ``seed``, ``exclude_language_neurons``, drawing as many as ``reference`` has, default:
    LAPE on ``stats`` with the other options; ``lap-capped``: LAP's options, capped at
    ``reference``'s counts, default LAPE's on ``stats``). PV needs a model and checkpoints:
    :func:`parameter_variation`."""
    one_of("method", method, METHODS)
    if method == "pv":
        raise UserError("pv selects from fine-tuned checkpoints: call parameter_variation")
    if method == "lap":
        return lap(stats, **options)
    if method == "lave":
        return lave(stats, **options)
    lap_options = {k: options.pop(k) for k in ("threshold", "threshold_kind") if k in options}
    seed = options.pop("seed", 0)
    exclude = options.pop("exclude_language_neurons", True)
    if method == "lape":
        return select(stats, **options)
    reference = reference or select(stats, **options)
    if method == "lap-capped":
        return lap(stats, reference.languages, cap=reference.counts(), **lap_options)
    return random_selection(reference, seed=seed, exclude_language_neurons=exclude)


def select_methods(
    methods: Sequence[Selector],
    neurons: LanguageNeurons,
    stats: ActivationStats,
    *,
    languages: Sequence[str] | None = None,
    lap_threshold: float = 0.95,
    lap_threshold_kind: LapThresholdKind = "probability",
    rs_exclude_language_neurons: bool = True,
    seed: int = 0,
    pv: LanguageNeurons | None = None,
) -> dict[str, LanguageNeurons]:
    """The neurons of each selector for a method comparison (``mlneurons compare-methods``).

    LAPE keeps the saved selection ``neurons``; LAP and LAVE select from ``stats`` of the
    neurons' languages, as LAPE selected on (so LAP's quantile reading uses LAPE's τ;
    LAVE with LAPE's saved constants); LAP capped keeps at most LAPE's count per
    language; RS draws as many neurons per layer as LAPE has; PV is ``pv``
    (:func:`parameter_variation`, which needs the model). Each keeps only ``languages``
    (default: all of the neurons').
    """
    chosen = [
        normalize_language(code, neurons.languages) for code in languages or neurons.languages
    ]
    stats = _languages(stats, neurons.languages)
    constants = {
        key: neurons.constants[key]
        for key in ("top_rate", "filter_rate", "activation_bar_ratio")
        if key in neurons.constants
    }

    def lap_neurons(cap: Mapping[str, int] | None = None) -> LanguageNeurons:
        return lap(stats, threshold=lap_threshold, threshold_kind=lap_threshold_kind, cap=cap)

    def pv_neurons() -> LanguageNeurons:
        if pv is None:
            raise UserError("pv needs fine-tuned checkpoints: give --pv-checkpoints LANG=PATH,...")
        return pv.only(*chosen)

    makers = {
        "lape": lambda: neurons.only(*chosen),
        "lap": lambda: lap_neurons().only(*chosen),
        "lap-capped": lambda: lap_neurons(neurons.counts()).only(*chosen),
        "lave": lambda: lave(stats, **constants).only(*chosen),
        "rs": lambda: random_selection(
            neurons, seed=seed, exclude_language_neurons=rs_exclude_language_neurons
        ).only(*chosen),
        "pv": pv_neurons,
    }
    for method in methods:
        one_of("method", method, METHODS)
    return {method: makers[method]() for method in dict.fromkeys(methods)}


__all__ = [
    "LAP_THRESHOLD_KINDS",
    "METHODS",
    "Checkpoint",
    "LapThresholdKind",
    "Selector",
    "checkpoint_paths",
    "select_methods",
    "lap",
    "lave",
    "matched_control",
    "parameter_variation",
    "probability_bins",
    "random_selection",
    "reading",
    "relative_weight_change",
    "select_with",
]
