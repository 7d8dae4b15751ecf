"""Residual-stream language directions and steering with them (CLaS-Bench, Gurgurov et al. 2026).

A language direction at one layer is a unit vector ``d`` in the residual stream that
points from a source language's representations to a target language's. It is estimated
from per-sentence representations: each sentence (a document of the corpus, cut to
``max_tokens`` tokens) is the mean of its residual vectors at ``blocks.{layer}.hook_resid_post``
(or ``hook_resid_pre``), BOS and padding left out, as LRP2's language vectors pool them.
Four estimators, each unit-normalised and signed so that ``d · (μ_target − μ_source) > 0``:

* ``diffmean``: the difference of the two languages' means, ``μ_t − μ_s``;
* ``probe``: the weight vector of an L2-regularised logistic regression separating the two
  languages (full-batch L-BFGS in float64 from zeros: deterministic);
* ``lda``: Fisher's linear discriminant ``Σ⁻¹ (μ_t − μ_s)`` with the pooled within-language
  covariance ``Σ`` shrunk towards a multiple of the identity, ``(1 − γ) S + γ (tr S / p) I``,
  γ by Ledoit & Wolf (2004) (the ``shrinkage="auto"`` of scikit-learn's LDA): with fewer
  sentences than dimensions ``S`` alone is singular;
* ``pca``: the first principal component of the language contrast: the top right singular
  vector of both languages' sentences, each language weighted equally, centred at the
  midpoint of the two means (between-language variance counts, within-language variance
  competes: it can pick another axis when a language's own spread is larger).

Steering adds ``α · s · d`` to the residual at that hook point, at every position, prompt
and generated tokens alike, where the scale ``s = ‖μ_t − μ_s‖`` is the distance between the
two languages' mean sentence representations there: ``α = 1`` moves a representation as far
as the source language is from the target on average (for ``diffmean`` it adds exactly
``μ_t − μ_s``), and the same ``α`` is the same push for every method. The typical residual
norm (the root mean square of the per-token norms) is recorded beside it, but is no scale
for steering: in Gemma 3 a few massive dimensions dominate it (6,513 after block 9 of the
270M model), and a quarter of it, added along the LDA direction, made 7 of 8 answers
degenerate.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, get_args

import torch
from jaxtyping import Float

from mlneurons.data.builtin_text import normalize_language
from mlneurons.data.corpus import MultilingualCorpus
from mlneurons.errors import UserError
from mlneurons.methods.interventions import Hooks
from mlneurons.methods.lrp2 import sentence_batches
from mlneurons.models.bridge import TransformerBridge
from mlneurons.models.fingerprint import fingerprint
from mlneurons.results import Result
from mlneurons.stats.collector import collect

DirectionMethod = Literal["diffmean", "probe", "lda", "pca"]
"""How a language direction is estimated (see the module's docstring)."""
DIRECTION_METHODS: tuple[str, ...] = get_args(DirectionMethod)
ResidualPoint = Literal["post", "pre"]
"""Where in the block the direction lives and is added: ``blocks.{layer}.hook_resid_{point}``."""
RESIDUAL_POINTS: tuple[str, ...] = get_args(ResidualPoint)
DIRECTIONS_FILE = "language_directions.safetensors"
PROBE_L2 = 1e-2
"""The logistic probe's L2 penalty on features scaled to unit RMS: the two languages are
often separable, where an unpenalised probe's weights grow without bound."""


def check_method(method: str) -> str:
    """``method`` if it is one of :data:`DIRECTION_METHODS`; else a UserError naming them."""
    if method not in DIRECTION_METHODS:
        raise UserError(
            f"unknown direction method {method!r}; valid methods: {', '.join(DIRECTION_METHODS)}"
        )
    return method


def residual_point(model: TransformerBridge, layer: int, point: str = "post") -> str:
    """The hook name ``blocks.{layer}.hook_resid_{point}``, checked against ``model``."""
    if point not in RESIDUAL_POINTS:
        raise UserError(f"point={point!r} is not valid; choose from {', '.join(RESIDUAL_POINTS)}")
    n_layers = int(model.cfg.n_layers)
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n_layers:
        raise UserError(f"layer={layer!r} is out of range: the model has blocks 0..{n_layers - 1}")
    return f"blocks.{layer}.hook_resid_{point}"


# ----------------------------------------------------------------------------- estimators


def _classes(
    source: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Both samples in float64 and the difference of their means, checked."""
    if source.dim() != 2 or target.dim() != 2 or source.shape[1] != target.shape[1]:
        raise ValueError(
            f"samples must be [n, d] of the same d, got {tuple(source.shape)} and "
            f"{tuple(target.shape)}"
        )
    if len(source) < 2 or len(target) < 2:
        raise UserError(
            f"a direction needs at least 2 sentences per language, got {len(source)} and "
            f"{len(target)}"
        )
    s, t = source.double(), target.double()
    return s, t, t.mean(0) - s.mean(0)


def _unit(vector: torch.Tensor, along: torch.Tensor) -> torch.Tensor:
    """``vector`` normalised and signed to point along ``along``."""
    norm = vector.norm()
    if not torch.isfinite(norm) or norm == 0:
        raise UserError("the two languages' representations do not differ: no direction")
    unit: torch.Tensor = vector / norm
    return -unit if float(unit @ along) < 0 else unit


def diffmean_direction(
    source: Float[torch.Tensor, "n_source d"], target: Float[torch.Tensor, "n_target d"]
) -> Float[torch.Tensor, " d"]:
    """The difference of means ``μ_target − μ_source``, unit-normalised."""
    _, _, delta = _classes(source, target)
    return _unit(delta, delta)


def probe_direction(
    source: Float[torch.Tensor, "n_source d"],
    target: Float[torch.Tensor, "n_target d"],
    *,
    l2: float = PROBE_L2,
    max_iter: int = 500,
) -> Float[torch.Tensor, " d"]:
    """The weights of a logistic regression telling ``target`` (1) from ``source`` (0).

    Features are centred at the midpoint of the two means and divided by their overall
    RMS (one scalar, so the weights keep the residual's axes); each language weighs half
    of the mean log-loss; the penalty is ``l2 / 2 · ‖w‖²``. Fitted by full-batch L-BFGS
    in float64 from zero weights, so the same data give the same direction.
    """
    s, t, delta = _classes(source, target)
    centre = (s.mean(0) + t.mean(0)) / 2
    x = torch.cat([s, t]) - centre
    x = x / x.square().mean().sqrt().clamp_min(1e-30)
    y = torch.cat([torch.zeros(len(s)), torch.ones(len(t))]).double()
    weight = torch.cat([torch.full((len(s),), 0.5 / len(s)), torch.full((len(t),), 0.5 / len(t))])
    weight = weight.double()
    with torch.enable_grad(), torch.inference_mode(False):
        x, y, weight = x.clone(), y.clone(), weight.clone()
        w = torch.zeros(x.shape[1] + 1, dtype=torch.float64, requires_grad=True)
        optimiser = torch.optim.LBFGS(
            [w], max_iter=max_iter, tolerance_grad=1e-10, line_search_fn="strong_wolfe"
        )

        def loss() -> torch.Tensor:
            optimiser.zero_grad()
            logits = x @ w[:-1] + w[-1]
            value = (
                weight
                * torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")
            ).sum() + l2 / 2 * w[:-1].square().sum()
            value.backward()
            return value

        optimiser.step(loss)
        weights = w.detach()[:-1].clone()
    return _unit(weights, delta)


def ledoit_wolf_shrinkage(centred: Float[torch.Tensor, "n d"]) -> float:
    """Ledoit & Wolf's (2004) shrinkage intensity γ of the covariance ``S = XᵀX / n`` of
    centred samples ``X`` towards ``(tr S / p) I``: ``min(b̄², d²) / d²`` with
    ``d² = ‖S − (tr S / p) I‖²`` and ``b̄² = Σ_k ‖x_k x_kᵀ − S‖² / n²`` (``‖A‖² = tr AAᵀ / p``).
    """
    x = centred.double()
    n, p = x.shape
    cov = x.T @ x / n
    mu = torch.trace(cov) / p
    d2 = ((cov - mu * torch.eye(p, dtype=x.dtype)).square().sum() / p).item()
    # Σ_k ‖x_k x_kᵀ − S‖²_F = Σ_k ‖x_k‖⁴ − n ‖S‖²_F (the cross terms sum to 2n‖S‖²_F)
    b2 = ((x.square().sum(1).square().sum() - n * cov.square().sum()) / (n * n * p)).item()
    if d2 <= 0:
        return 1.0
    return float(min(max(b2, 0.0), d2) / d2)


def lda_direction(
    source: Float[torch.Tensor, "n_source d"],
    target: Float[torch.Tensor, "n_target d"],
    *,
    shrinkage: float | None = None,
) -> Float[torch.Tensor, " d"]:
    """Fisher's discriminant ``Σ⁻¹ (μ_t − μ_s)`` with a shrunk pooled covariance.

    ``Σ = (1 − γ) S + γ (tr S / p) I``, ``S`` the covariance of both languages' sentences
    each centred at its own language's mean (pooled); ``γ`` = ``shrinkage``, or by
    :func:`ledoit_wolf_shrinkage` when None (scikit-learn's ``shrinkage="auto"``).
    """
    s, t, delta = _classes(source, target)
    centred = torch.cat([s - s.mean(0), t - t.mean(0)])
    gamma = ledoit_wolf_shrinkage(centred) if shrinkage is None else float(shrinkage)
    if not 0 <= gamma <= 1:
        raise UserError(f"shrinkage={shrinkage!r} is not in [0, 1]")
    p = centred.shape[1]
    cov = centred.T @ centred / len(centred)
    shrunk = (1 - gamma) * cov + gamma * torch.trace(cov) / p * torch.eye(p, dtype=cov.dtype)
    try:
        solved = torch.linalg.solve(shrunk, delta)
    except RuntimeError as exc:  # singular: no shrinkage and fewer sentences than dimensions
        raise UserError(
            f"the pooled covariance is singular (shrinkage {gamma:g}, {len(centred)} sentences "
            f"in {p} dimensions); use shrinkage > 0 or more sentences"
        ) from exc
    return _unit(solved, delta)


def pca_direction(
    source: Float[torch.Tensor, "n_source d"], target: Float[torch.Tensor, "n_target d"]
) -> Float[torch.Tensor, " d"]:
    """The first principal component of both languages' sentences around the midpoint of
    their means (each language weighted equally), signed along ``μ_t − μ_s``."""
    s, t, delta = _classes(source, target)
    centre = (s.mean(0) + t.mean(0)) / 2
    rows = torch.cat([(s - centre) / len(s) ** 0.5, (t - centre) / len(t) ** 0.5])
    _, _, vh = torch.linalg.svd(rows, full_matrices=False)
    return _unit(vh[0], delta)


ESTIMATORS = {
    "diffmean": diffmean_direction,
    "probe": probe_direction,
    "lda": lda_direction,
    "pca": pca_direction,
}


def direction(
    method: str,
    source: Float[torch.Tensor, "n_source d"],
    target: Float[torch.Tensor, "n_target d"],
) -> Float[torch.Tensor, " d"]:
    """The unit direction of ``method`` (:data:`DIRECTION_METHODS`) from source to target."""
    estimate: Any = ESTIMATORS[check_method(method)]
    unit: torch.Tensor = estimate(source, target)
    return unit


# ----------------------------------------------------------------------------- from a model


@dataclass
class ResidualSamples:
    """Per-sentence mean-pooled residual vectors of each language at one hook point.

    Attributes:
        point: the hook name.
        vectors: language -> ``[sentences, d_model]`` (float64).
        token_rms: the root mean square of the per-token residual norms (each sentence
            weighted equally, BOS and padding left out): the residual's typical size.
    """

    point: str
    vectors: dict[str, torch.Tensor]
    token_rms: float


def residual_samples(
    model: TransformerBridge,
    corpus: MultilingualCorpus,
    *,
    layer: int,
    point: str = "post",
    max_sentences: int = 64,
    max_tokens: int = 64,
    batch_size: int = 8,
    progress: bool = False,
) -> ResidualSamples:
    """Each sentence's mean residual at ``blocks.{layer}.hook_resid_{point}``, per language.

    A collector pass (:func:`mlneurons.stats.collector.collect`) with one label per
    sentence: the sentences of :func:`mlneurons.methods.lrp2.sentence_batches`, each
    weighted for mean pooling, so each label's sum is that sentence's mean vector; the
    forward stops after the hook point.
    """
    name = residual_point(model, layer, point)
    if max_sentences < 2:
        raise UserError(f"max_sentences must be at least 2, got {max_sentences}")
    batches = list(
        sentence_batches(
            corpus,
            model.tokenizer,
            max_sentences=max_sentences,
            max_tokens=max_tokens,
            batch_size=batch_size,
        )
    )
    labels: list[str] = []
    languages: list[str] = []
    relabelled = []
    for batch in batches:
        start = len(labels)
        lang = corpus.languages[int(batch.labels)]  # sentence_batches: one language a batch
        labels += [f"{lang}:{start + i}" for i in range(len(batch.tokens))]
        languages += [lang] * len(batch.tokens)
        ids = torch.arange(start, start + len(batch.tokens))
        relabelled.append(dataclasses.replace(batch, labels=ids))
    stats = collect(
        model,
        relabelled,
        labels=labels,
        names_filter=name,
        squares=True,
        desc=f"residuals at {name}",
        progress=progress,
    )
    means, squares = stats.sums[name].double(), stats.squares[name].double()
    vectors = {
        lang: means[[i for i, x in enumerate(languages) if x == lang]] for lang in corpus.languages
    }
    token_rms = float(squares.sum(1).mean().sqrt())
    return ResidualSamples(name, vectors, token_rms)


@dataclass
class LanguageDirections(Result):
    """Unit directions from ``source`` to ``target`` at one residual hook point, per method.

    Attributes:
        source, target: the languages.
        point: the hook name (``blocks.{layer}.hook_resid_post`` or ``_pre``).
        methods: the order of ``directions``' first axis.
        directions: ``[method, d_model]`` unit vectors (float32).
        scale: ``s = ‖μ_t − μ_s‖``, the distance between the languages' mean sentence
            representations at ``point``; steering adds ``α · s · d``.
        residual_norm: the typical residual norm at ``point`` (RMS of the per-token norms,
            :func:`residual_samples`), for reference.
        sentences: language -> sentences the directions were estimated from.
        model: fingerprint of the model.
        settings: how the sentences were read and the estimators' constants.
    """

    TENSOR_FILE: ClassVar[str] = DIRECTIONS_FILE

    source: str
    target: str
    point: str
    methods: list[str]
    directions: Float[torch.Tensor, "method d_model"]
    scale: float
    residual_norm: float = 0.0
    sentences: dict[str, int] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, method: str) -> Float[torch.Tensor, " d_model"]:
        if method not in self.methods:
            raise UserError(
                f"no {method!r} direction; these directions are {', '.join(self.methods)}"
            )
        return self.directions[self.methods.index(method)]

    @property
    def layer(self) -> int:
        """The block index of :attr:`point`."""
        return int(self.point.split(".")[1])

    def cosines(self) -> Float[torch.Tensor, "method method"]:
        """The cosine of every pair of directions (they are unit vectors)."""
        d = self.directions.double()
        return d @ d.T

    def hooks(self, method: str, alpha: float) -> Hooks:
        """Add ``alpha · scale · direction`` at :attr:`point`, at every position (prompt and
        generated tokens)."""
        delta = float(alpha) * self.scale * self[method]
        return [(self.point, functools.partial(add_vector, vector=delta))]

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        del data["directions"]
        return data

    def to_tensors(self) -> dict[str, Any]:
        return {"directions": self.directions.contiguous()}


def add_vector(act: torch.Tensor, *, hook: Any, vector: torch.Tensor) -> torch.Tensor:
    """TransformerLens hook: ``act + vector`` at every position."""
    return act + vector.to(act.device, act.dtype)


def language_directions(
    model: TransformerBridge,
    corpus: MultilingualCorpus,
    *,
    source: str,
    target: str,
    layer: int,
    point: str = "post",
    methods: Sequence[str] = DIRECTION_METHODS,
    max_sentences: int = 64,
    max_tokens: int = 64,
    batch_size: int = 8,
    progress: bool = False,
) -> LanguageDirections:
    """Directions from ``source`` to ``target`` at one layer, by each method (CLaS-Bench).

    Args:
        model: a TransformerBridge.
        corpus: text of (at least) both languages, e.g.
            ``MultilingualCorpus.builtin(["es", "zh"])``; each document is a sentence.
        source, target: the languages (codes of ``corpus``).
        layer: the block; ``point``: ``post`` (after the block) or ``pre`` (before it).
        methods: estimators of :data:`DIRECTION_METHODS`.
        max_sentences: sentences per language; max_tokens: tokens per sentence.

    Raises:
        UserError: an unknown method, language, layer or point, before the model runs.
    """
    methods = list(dict.fromkeys(check_method(m) for m in methods))
    if not methods:
        raise UserError(f"name at least one method of {', '.join(DIRECTION_METHODS)}")
    source, target = (normalize_language(c, corpus.languages) for c in (source, target))
    if source == target:
        raise UserError(f"source and target are both {source!r}; name two languages")
    residual_point(model, layer, point)
    samples = residual_samples(
        model,
        corpus.subset([source, target]),
        layer=layer,
        point=point,
        max_sentences=max_sentences,
        max_tokens=max_tokens,
        batch_size=batch_size,
        progress=progress,
    )
    s, t = samples.vectors[source], samples.vectors[target]
    directions = torch.stack([direction(m, s, t) for m in methods]).float()
    return LanguageDirections(
        source=source,
        target=target,
        point=samples.point,
        methods=methods,
        directions=directions,
        scale=float((t.mean(0) - s.mean(0)).norm()),
        residual_norm=samples.token_rms,
        sentences={source: len(s), target: len(t)},
        model=fingerprint(model),
        settings={
            "max_sentences": max_sentences,
            "max_tokens": max_tokens,
            "probe_l2": PROBE_L2,
            "lda_shrinkage": "Ledoit-Wolf",
            "corpus": corpus.to_dict(),
        },
    )


__all__ = [
    "DIRECTIONS_FILE",
    "DIRECTION_METHODS",
    "PROBE_L2",
    "RESIDUAL_POINTS",
    "DirectionMethod",
    "LanguageDirections",
    "ResidualPoint",
    "ResidualSamples",
    "add_vector",
    "check_method",
    "diffmean_direction",
    "direction",
    "language_directions",
    "lda_direction",
    "ledoit_wolf_shrinkage",
    "pca_direction",
    "probe_direction",
    "residual_point",
    "residual_samples",
]
