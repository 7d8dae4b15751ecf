"""Attention heads as language units (LAHIS, Liu et al., AAAI 2026).

A head's output is ``z = hook_z[..., head, :]`` (``[batch, pos, head, d_head]`` in
TransformerLens), which the output projection ``W_O`` maps into the residual stream.
Three views of the heads, per language:

- **Output statistics** (:func:`head_statistics`): the collector's pass over every
  layer's ``attn.hook_z``; :func:`output_norms` reads the root mean square norm of each
  head's output per language, ``sqrt(E ||z||^2)`` over the counted tokens.
- **Importance** (:func:`head_importance`), LAHIS's *language attention head importance
  score*: a soft mask ``m`` (initialised to 1) multiplies each head's output, and the
  score of head ``h`` on language ``L`` is the mean over that language's rows ``r`` of
  ``|dL_r / dm_h|``, where ``L_r`` is the mean next-token negative log-likelihood of row
  ``r`` (every row has the same number of predicted tokens, so this is also the mean of
  ``|dS_r / dm_h|`` per predicted token, ``S_r`` the row's summed loss). One forward and
  one backward pass per batch: each row gets its own copy of the mask, so the gradient
  of the batch's summed loss with respect to row ``r``'s copy is exactly ``dS_r / dm``.
  The LAHIS code multiplies by ``m`` (1 here) and, in one reimplementation, by the share
  of rows whose gradient is negative; we keep the plain absolute gradient and store the
  signed per-row gradients, so either can be read back (:meth:`HeadImportance.signed`).
- **Language-specific and general heads** (:func:`select_heads`), LAHIS's selection
  (``language_heads.py``): each language's candidates are its ``round(top_rate x heads)``
  most important heads; a head among the candidates of at least ``shared_min``
  languages is *general*; each language's remaining candidates are its
  *language-specific* heads. LAHIS takes the heads above the ``q = 0.96`` quantile
  (``top_rate = 0.04``) and ``min_repetition = 4`` over more languages than a small run
  has; our defaults (``top_rate = 0.1``, ``shared_min = 2``) say "in no other language's
  candidates" and suit a few languages and a few dozen heads.

**Deactivation** (:func:`head_deactivation`): each language's specific heads are zeroed
(their ``hook_z``, which equals zeroing their input columns of ``W_O``) and every
language's held-out perplexity is measured, the matrix of Tang et al. with heads for
neurons; the controls are as many random heads per layer, from the same layers, never a
language-specific head (as the neuron pipeline's random selection). Changes come with
percentile bootstrap intervals over held-out rows (the same resample for both sides of a
change); each cell is tested against its control (the paired difference of the changes,
a two-sided bootstrap p-value, Holm across the matrix's cells) and is *not significant*
when the adjusted p-value is not below ``1 - confidence``.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from tqdm.auto import tqdm

from mlneurons.config import rate
from mlneurons.data.corpus import MultilingualCorpus
from mlneurons.errors import UserError
from mlneurons.evaluation.perplexity import sequence_nll
from mlneurons.evaluation.uncertainty import (
    MIN_RESAMPLED,
    Estimate,
    Uncertainty,
    bootstrap,
    holm,
    weights,
)
from mlneurons.models.bridge import TransformerBridge
from mlneurons.models.fingerprint import fingerprint
from mlneurons.models.forward import model_device, pad_right, run_body, unembed
from mlneurons.models.scoring import check_causal_lm
from mlneurons.models.tokens import bos_count, display_tokens, encode
from mlneurons.results import Result
from mlneurons.stats.activation import corpus_batch_count, corpus_batches
from mlneurons.stats.collector import HookStats, collect

HEADS_FILE = "heads.json"
UNEMBED_CHUNK = 256
"""Positions unembedded per matmul in the importance pass (the logits of a whole batch never
exist at once; the backward runs chunk by chunk into the final states)."""

Head = tuple[int, int]
"""(layer, head)."""


def z_hook(layer: int) -> str:
    """The hook point of layer ``layer``'s head outputs, ``[batch, pos, head, d_head]``."""
    return f"blocks.{layer}.attn.hook_z"


def head_grid(model: TransformerBridge) -> tuple[int, int]:
    """``(layers, heads per layer)`` of ``model``; raises unless every layer has ``hook_z``."""
    n_layers, n_heads = int(model.cfg.n_layers), int(model.cfg.n_heads)
    missing = [z_hook(layer) for layer in range(n_layers) if z_hook(layer) not in model.hook_dict]
    if missing:
        raise UserError(
            f"model {getattr(model.cfg, 'model_name', '?')!r} has no attention head outputs "
            f"({missing[0]}); heads need a TransformerBridge with attention blocks"
        )
    return n_layers, n_heads


# ----------------------------------------------------------------------------- statistics


def head_statistics(
    model: TransformerBridge,
    corpus: MultilingualCorpus,
    *,
    batch_size: int = 8,
    progress: bool = True,
) -> HookStats:
    """Per language, sums and sums of squares of every head's output (``attn.hook_z`` of
    every layer) through the collector (:func:`mlneurons.stats.collector.collect`); BOS
    positions are not counted."""
    n_layers, _ = head_grid(model)
    tokenizer = model.tokenizer
    return collect(
        model,
        corpus_batches(corpus, tokenizer, batch_size),
        labels=list(corpus.languages),
        names_filter=[z_hook(layer) for layer in range(n_layers)],
        squares=True,
        source=corpus.to_dict(),
        total=corpus_batch_count(corpus, tokenizer, batch_size),
        desc="head stats",
        progress=progress,
    )


def output_norms(stats: HookStats) -> Float[torch.Tensor, "language layer head"]:
    """The root mean square norm of each head's output per language, ``sqrt(E ||z||^2)``:
    the per-dimension mean squares summed over ``d_head``."""
    squares = stats.stacked("squares").double()  # [label, layer, head, d_head]
    per_token = squares.sum(-1) / stats.weights.double().view(-1, 1, 1)
    return per_token.sqrt()


# ----------------------------------------------------------------------------- importance


def _masked_z(
    z: torch.Tensor, *, hook: Any, layer: int, state: dict[str, torch.Tensor]
) -> torch.Tensor:
    """Multiply each row's head outputs by that row's mask of layer ``layer``."""
    mask = state["mask"][:, layer]  # [batch, head]
    return z * mask[:, None, :, None].to(z.device, z.dtype)


def _row_loss_gradients(
    model: TransformerBridge, rows: Int[torch.Tensor, "batch seq"], n_layers: int, n_heads: int
) -> tuple[Float[torch.Tensor, "batch layer head"], Float[torch.Tensor, " batch"]]:
    """``(dS_r/dm, S_r)`` per row: the gradient of each row's summed next-token loss with
    respect to its own soft head mask (all ones), and that loss."""
    device = model_device(model)
    rows = rows.to(device)
    mask = torch.ones(len(rows), n_layers, n_heads, device=device, requires_grad=True)
    state = {"mask": mask}
    hooks = [
        (z_hook(layer), functools.partial(_masked_z, layer=layer, state=state))
        for layer in range(n_layers)
    ]
    with torch.inference_mode(False), torch.enable_grad(), model.hooks(fwd_hooks=hooks):
        hidden = run_body(model, rows)
    # the unembedding runs chunk by chunk on a detached copy of the final states; their
    # gradients then flow back through the body once
    final = hidden.detach().requires_grad_()
    states = final[:, :-1].reshape(-1, final.shape[-1])
    targets = rows[:, 1:].reshape(-1)
    owner = torch.arange(len(rows), device=device).repeat_interleave(rows.shape[1] - 1)
    grad_final = torch.zeros_like(final)
    losses = torch.zeros(len(rows), dtype=torch.float64)
    with torch.inference_mode(False), torch.enable_grad():
        for start in range(0, len(states), UNEMBED_CHUNK):
            part = slice(start, start + UNEMBED_CHUNK)
            logits = unembed(model, states[part])
            logits = logits if logits.dtype == torch.float64 else logits.float()
            nll = F.cross_entropy(logits, targets[part], reduction="none")
            (grad,) = torch.autograd.grad(nll.sum(), final)
            grad_final += grad
            losses.index_add_(0, owner[part].cpu(), nll.detach().double().cpu())
        (grad_mask,) = torch.autograd.grad(hidden, mask, grad_outputs=grad_final)
    return grad_mask.detach().double().cpu(), losses


@dataclass
class HeadImportance(Result):
    """Per language, the gradient of each row's loss with respect to every head's soft mask.

    Attributes:
        languages: the languages, in order.
        n_layers: layers of the model.
        n_heads: attention heads per layer.
        gradients: language -> ``[row][layer][head]``, ``dL_r / dm_h`` with ``L_r`` the mean
            next-token loss of row ``r`` (signed; the score is the mean of its absolute value).
        tokens: language -> predicted tokens of each row.
        norms: language -> ``[layer][head]`` RMS norm of each head's output
            (:func:`output_norms`); empty when not collected.
        model: fingerprint of the model.
        settings: the corpus read.
    """

    FILE: ClassVar[str] = "head_importance.json"

    languages: list[str]
    n_layers: int
    n_heads: int
    gradients: dict[str, list[list[list[float]]]]
    tokens: dict[str, list[int]]
    norms: dict[str, list[list[float]]] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def signed(self, language: str) -> Float[torch.Tensor, "row layer head"]:
        """The signed per-row gradients of ``language``."""
        if language not in self.gradients:
            raise UserError(f"unknown language {language!r}; these scores have {self.languages}")
        return torch.tensor(self.gradients[language], dtype=torch.float64).reshape(
            -1, self.n_layers, self.n_heads
        )

    def score(self, language: str) -> Float[torch.Tensor, "layer head"]:
        """LAHIS importance of every head on ``language``: ``|dL_r/dm_h|``, mean over rows
        weighted by their predicted tokens."""
        grads = self.signed(language).abs()
        n = torch.tensor(self.tokens[language], dtype=torch.float64)
        return torch.einsum("r,rlh->lh", n, grads) / n.sum()

    def scores(self) -> Float[torch.Tensor, "language layer head"]:
        """:meth:`score` of every language, stacked."""
        return torch.stack([self.score(lang) for lang in self.languages])

    def interval(self, language: str, head: Head, how: Uncertainty = Uncertainty()) -> Estimate:
        """The importance of ``head`` on ``language`` with its bootstrap interval over rows."""
        layer, index = head
        grads = self.signed(language)[:, layer, index].abs().numpy()
        n = np.asarray(self.tokens[language], dtype=np.float64)
        return bootstrap(
            lambda w: (w @ (n * grads)) / (w @ n), len(n), how, method="bootstrap over rows"
        )

    def norm(self, language: str) -> Float[torch.Tensor, "layer head"]:
        """RMS output norm of every head on ``language``."""
        if language not in self.norms:
            raise UserError(f"no output norms for {language!r}; collect them with norms=True")
        return torch.tensor(self.norms[language], dtype=torch.float64)


def head_importance(
    model: TransformerBridge,
    corpus: MultilingualCorpus,
    *,
    batch_size: int = 4,
    norms: bool = True,
    progress: bool = True,
) -> HeadImportance:
    """LAHIS head importance per language of ``corpus`` (see the module's docstring): one
    forward and backward pass per batch of rows, with a per-row soft mask on every head's
    ``hook_z``. ``norms``: also collect each head's output norm (:func:`head_statistics`)."""
    check_causal_lm(model)
    n_layers, n_heads = head_grid(model)
    if batch_size < 1:
        raise UserError(f"batch_size must be at least 1, got {batch_size}")
    gradients: dict[str, list[list[list[float]]]] = {}
    tokens: dict[str, list[int]] = {}
    for lang in corpus.languages:
        rows = list(corpus.rows(lang, model.tokenizer, batch_size=batch_size))
        per_row: list[torch.Tensor] = []
        for batch in tqdm(rows, desc=f"head importance: {lang}", disable=not progress):
            grad, _ = _row_loss_gradients(model, batch, n_layers, n_heads)
            per_row.append(grad / (batch.shape[1] - 1))
            tokens.setdefault(lang, []).extend([batch.shape[1] - 1] * len(batch))
        gradients[lang] = torch.cat(per_row).tolist()
    found: dict[str, list[list[float]]] = {}
    if norms:
        stats = head_statistics(model, corpus, batch_size=max(batch_size, 8), progress=progress)
        found = dict(zip(stats.labels, output_norms(stats).tolist()))
    return HeadImportance(
        languages=list(corpus.languages),
        n_layers=n_layers,
        n_heads=n_heads,
        gradients=gradients,
        tokens=tokens,
        norms=found,
        model=fingerprint(model),
        settings={"corpus": corpus.to_dict()},
    )


# ----------------------------------------------------------------------------- selection


@dataclass
class LanguageHeads(Result):
    """Language-specific and general heads (LAHIS's selection, :func:`select_heads`).

    Attributes:
        languages: the languages compared.
        n_layers: layers of the model.
        n_heads: heads per layer.
        candidates: language -> its most important heads, most important first.
        specific: language -> its candidates that are not general, most important first.
        general: heads among the candidates of at least ``shared_min`` languages.
        constants: ``method``, ``top_rate``, ``shared_min`` and ``per_language`` (candidates).
        model: fingerprint of the model.
    """

    FILE: ClassVar[str] = "language_heads.json"

    languages: list[str]
    n_layers: int
    n_heads: int
    candidates: dict[str, list[list[int]]]
    specific: dict[str, list[list[int]]]
    general: list[list[int]]
    constants: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)

    def heads(self, language: str) -> list[Head]:
        """The language-specific heads of ``language``."""
        if language not in self.specific:
            raise UserError(f"unknown language {language!r}; these heads have {self.languages}")
        return [(int(layer), int(head)) for layer, head in self.specific[language]]

    def mask(self, language: str) -> torch.Tensor:
        """``[layer, head]`` True at the language-specific heads of ``language``."""
        mask = torch.zeros(self.n_layers, self.n_heads, dtype=torch.bool)
        for layer, head in self.heads(language):
            mask[layer, head] = True
        return mask


def select_heads(
    importance: HeadImportance,
    languages: Sequence[str] | None = None,
    *,
    top_rate: float = 0.1,
    shared_min: int = 2,
) -> LanguageHeads:
    """LAHIS's language-specific and general heads.

    1. Each language's candidates: its ``max(1, round(top_rate x layers x heads))`` most
       important heads (:meth:`HeadImportance.score`; ties by index).
    2. General heads: those among the candidates of at least ``shared_min`` languages.
    3. Each language's specific heads: its candidates that are not general.

    Args:
        importance: the scores (:func:`head_importance`).
        languages: the languages compared (default: all of ``importance``), at least two.
        top_rate: share of all heads among each language's candidates (LAHIS: 1 - q, 0.04).
        shared_min: candidates of this many languages make a head general (LAHIS: 4).
    """
    languages = list(languages or importance.languages)
    unknown = [lang for lang in languages if lang not in importance.languages]
    if unknown:
        raise UserError(f"unknown languages {unknown}; these scores have {importance.languages}")
    if len(languages) < 2:
        raise UserError(f"language-specific heads compare languages: give two, got {languages}")
    rate("top_rate", top_rate)
    if isinstance(shared_min, bool) or not 2 <= shared_min <= len(languages):
        raise UserError(
            f"shared_min={shared_min!r} must be an integer in 2..{len(languages)} (languages)"
        )
    n_heads = importance.n_layers * importance.n_heads
    k = max(1, round(top_rate * n_heads))
    candidates: dict[str, list[int]] = {}
    for lang in languages:
        flat = importance.score(lang).flatten()
        order = sorted(range(n_heads), key=lambda i: (-float(flat[i]), i))
        candidates[lang] = order[:k]
    counts = Counter(i for chosen in candidates.values() for i in chosen)
    general = sorted(i for i, n in counts.items() if n >= shared_min)

    def pairs(indices: Sequence[int]) -> list[list[int]]:
        return [[i // importance.n_heads, i % importance.n_heads] for i in indices]

    return LanguageHeads(
        languages=languages,
        n_layers=importance.n_layers,
        n_heads=importance.n_heads,
        candidates={lang: pairs(chosen) for lang, chosen in candidates.items()},
        specific={
            lang: pairs([i for i in chosen if counts[i] < shared_min])
            for lang, chosen in candidates.items()
        },
        general=pairs(general),
        constants={
            "method": "lahis",
            "top_rate": top_rate,
            "shared_min": shared_min,
            "per_language": k,
        },
        model=dict(importance.model),
    )


# ----------------------------------------------------------------------------- deactivation


def random_heads(heads: LanguageHeads, *, seed: int = 0) -> dict[str, list[list[int]]]:
    """Per language, as many random heads per layer as its specific heads there, drawn
    uniformly from the heads of that layer that are no language's specific head."""
    taken = torch.zeros(heads.n_layers, heads.n_heads, dtype=torch.bool)
    for lang in heads.languages:
        taken |= heads.mask(lang)
    generator = torch.Generator().manual_seed(seed)
    drawn: dict[str, list[list[int]]] = {}
    for lang in heads.languages:
        per_layer = heads.mask(lang).sum(-1).tolist()
        picked: list[list[int]] = []
        for layer, n in enumerate(per_layer):
            pool = (~taken[layer]).nonzero().flatten()
            if n > len(pool):
                raise UserError(
                    f"layer {layer} has {len(pool)} heads that are no language's specific head, "
                    f"too few for a control of {n} heads of {lang!r}; lower top_rate"
                )
            chosen = pool[torch.randperm(len(pool), generator=generator)[:n]]
            picked += [[layer, int(h)] for h in sorted(chosen.tolist())]
        drawn[lang] = picked
    return drawn


def _keep_z(
    z: torch.Tensor, *, hook: Any, layer: int, state: dict[str, torch.Tensor]
) -> torch.Tensor:
    """Zero the heads each row's condition deactivates in layer ``layer``."""
    keep = state["keep"][:, layer]  # [batch, head]
    return z * keep[:, None, :, None].to(z.device, z.dtype)


def masked_head_nll(
    model: TransformerBridge,
    rows: Int[torch.Tensor, "row seq"],
    off: Sequence[Sequence[Head]],
    *,
    batch_size: int = 8,
    progress: bool = True,
    desc: str = "heads off",
) -> Float[torch.Tensor, "condition row"]:
    """Summed next-token loss of every row with each condition's heads zeroed (``hook_z``).

    All conditions of a row run in shared forward passes: the row is repeated once per
    condition and a per-row mask zeroes that condition's heads (an empty condition is the
    baseline). :func:`~mlneurons.evaluation.perplexity.sequence_nll` scores each pass.
    """
    n_layers, n_heads = head_grid(model)
    keep = torch.ones(len(off), n_layers, n_heads)
    for c, heads in enumerate(off):
        for layer, head in heads:
            if not (0 <= layer < n_layers and 0 <= head < n_heads):
                raise UserError(
                    f"head (layer {layer}, head {head}) does not fit a model with {n_layers} "
                    f"layers of {n_heads} heads"
                )
            keep[c, layer, head] = 0.0
    keep = keep.to(model_device(model))
    layers = (keep < 1).any(-1).any(0).nonzero().flatten().tolist()
    state: dict[str, torch.Tensor] = {}
    hooks = [
        (z_hook(layer), functools.partial(_keep_z, layer=layer, state=state)) for layer in layers
    ]
    nll = torch.zeros(len(off), len(rows), dtype=torch.float64)
    work = [(c, r) for r in range(len(rows)) for c in range(len(off))]
    with model.hooks(fwd_hooks=hooks):
        starts = range(0, len(work), batch_size)
        for start in tqdm(starts, desc=desc, disable=not progress):
            chunk = work[start : start + batch_size]
            cond = torch.tensor([c for c, _ in chunk])
            state["keep"] = keep[cond.to(keep.device)]
            per_row = sequence_nll(model, rows[[r for _, r in chunk]])
            for (c, r), value in zip(chunk, per_row.tolist()):
                nll[c, r] = value
    return nll


@dataclass
class HeadDeactivation(Result):
    """Held-out loss per row with each language's specific heads zeroed, and controls.

    Rows of the matrix are the deactivated language, columns the evaluated one.

    Attributes:
        languages: row and column order.
        heads: language -> the heads deactivated for it.
        controls: one dict per draw: language -> its random heads (same layers).
        baseline: evaluated language -> summed next-token loss of each held-out row.
        deactivated: deactivated language -> evaluated language -> loss of each row.
        control: per draw, deactivated language -> evaluated language -> loss of each row.
        tokens: evaluated language -> predicted tokens of each row.
        seed: seed of the controls (draw d uses ``seed + d``).
        model: fingerprint of the model.
        settings: the held-out corpus.
    """

    FILE: ClassVar[str] = "head_deactivation.json"

    languages: list[str]
    heads: dict[str, list[list[int]]]
    controls: list[dict[str, list[list[int]]]]
    baseline: dict[str, list[float]]
    deactivated: dict[str, dict[str, list[float]]]
    control: list[dict[str, dict[str, list[float]]]]
    tokens: dict[str, list[int]]
    seed: int = 0
    model: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def perplexity(self, column: str, row: str | None = None) -> float:
        """Perplexity of ``column`` with ``row``'s heads off (None: the baseline)."""
        nll = self.baseline[column] if row is None else self.deactivated[row][column]
        return math.exp(sum(nll) / sum(self.tokens[column]))

    def _changes(
        self, row: str, column: str
    ) -> tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray] | None]:
        """Relative perplexity changes of cell ``(row, column)`` as functions of row
        weights ``[..., rows]``: the heads off, and the mean over the control's draws."""
        base = np.asarray(self.baseline[column])
        n = np.asarray(self.tokens[column], dtype=np.float64)

        def change(nll: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
            return lambda w: np.expm1((w @ (nll - base)) / (w @ n))

        off = change(np.asarray(self.deactivated[row][column]))
        draws = [change(np.asarray(d[row][column])) for d in self.control]
        if not draws:
            return off, None
        return off, lambda w: np.mean([f(w) for f in draws], axis=0)

    def cells(self, how: Uncertainty = Uncertainty()) -> dict[str, dict[str, dict[str, Any]]]:
        """Per deactivated and evaluated language: ``change`` (relative perplexity change,
        :class:`Estimate`), ``control`` (mean over draws), ``difference`` (change minus
        control), ``p`` (two-sided bootstrap p-value of the difference), ``p_holm`` (Holm
        across the cells) and ``significant``; without controls only ``change``."""
        table: dict[str, dict[str, dict[str, Any]]] = {}
        method = "bootstrap over held-out rows"
        for row in self.languages:
            for column in self.languages:
                off, control = self._changes(row, column)
                n = len(self.tokens[column])
                cell: dict[str, Any] = {"change": bootstrap(off, n, how, method=method)}
                if control is not None:
                    difference = (lambda a, b: lambda w: a(w) - b(w))(off, control)
                    cell["control"] = bootstrap(control, n, how, method=method)
                    cell["difference"] = bootstrap(difference, n, how, method=method)
                    cell["p"] = _bootstrap_p(difference, n, how)
                table.setdefault(row, {})[column] = cell
        if self.control:
            flat = [cell for per in table.values() for cell in per.values()]
            for cell, p in zip(flat, holm([c["p"] for c in flat])):
                cell["p_holm"] = p
                cell["significant"] = p < 1 - how.confidence
        return table

    def relative_change(self, which: str = "deactivated") -> Float[torch.Tensor, "row column"]:
        """``perplexity / baseline - 1``, rows deactivated, columns evaluated; ``which``:
        ``deactivated`` or ``control`` (the mean over the draws)."""
        if which not in ("deactivated", "control"):
            raise UserError(f"which={which!r} is not valid; choose from deactivated, control")
        values = []
        for row in self.languages:
            for column in self.languages:
                off, control = self._changes(row, column)
                chosen = off if which == "deactivated" else control
                if chosen is None:
                    raise UserError("this deactivation ran no controls")
                values.append(float(chosen(np.ones(len(self.tokens[column])))))
        n = len(self.languages)
        return torch.tensor(values, dtype=torch.float64).reshape(n, n)


def _bootstrap_p(statistic: Callable[[np.ndarray], np.ndarray], n: int, how: Uncertainty) -> float:
    """Two-sided percentile-bootstrap p-value of ``statistic = 0``: twice the smaller share
    of resamples on either side of 0 (at least ``1 / (resamples + 1)``), 1 when the
    statistic is 0 in every resample, nan with too few items to resample."""
    if n < MIN_RESAMPLED:
        return math.nan
    draws = statistic(weights(n, how.samples, how.seed))
    draws = draws[np.isfinite(draws)]
    below, above = float(np.mean(draws <= 0)), float(np.mean(draws >= 0))
    return min(1.0, max(2 * min(below, above), 1 / (how.samples + 1)))


def head_deactivation(
    model: TransformerBridge,
    heads: LanguageHeads,
    corpus: MultilingualCorpus,
    *,
    control_draws: int = 2,
    seed: int = 0,
    batch_size: int = 8,
    progress: bool = True,
) -> HeadDeactivation:
    """The perplexity matrix with each language's specific heads zeroed, with controls.

    Args:
        model: the model the heads were selected on.
        heads: the language-specific heads (:func:`select_heads`); ``corpus``'s languages
            must be among their languages.
        corpus: held-out text (e.g. ``MultilingualCorpus.builtin(split="heldout")``).
        control_draws: draws of the random-head control (:func:`random_heads`, seeds
            ``seed``, ``seed + 1``, ...); 0: none.
        seed: seed of the controls.
        batch_size: rows per forward pass.
    """
    n_layers, n_heads = head_grid(model)
    if (heads.n_layers, heads.n_heads) != (n_layers, n_heads):
        raise UserError(
            f"heads are for {heads.n_layers} layers x {heads.n_heads} heads, but the model has "
            f"{n_layers} x {n_heads}"
        )
    missing = [lang for lang in corpus.languages if lang not in heads.languages]
    if missing:
        raise UserError(f"no heads for languages {missing}; the heads have {heads.languages}")
    languages = list(corpus.languages)
    controls = [random_heads(heads, seed=seed + d) for d in range(control_draws)]  # checked now
    conditions: list[list[Head]] = [[]]
    conditions += [heads.heads(lang) for lang in languages]
    for drawn in controls:
        conditions += [[(layer, head) for layer, head in drawn[lang]] for lang in languages]
    baseline: dict[str, list[float]] = {}
    deactivated: dict[str, dict[str, list[float]]] = {lang: {} for lang in languages}
    control: list[dict[str, dict[str, list[float]]]] = [
        {lang: {} for lang in languages} for _ in controls
    ]
    tokens: dict[str, list[int]] = {}
    with torch.inference_mode():
        for column in languages:
            rows = torch.cat(list(corpus.rows(column, model.tokenizer, batch_size=64)))
            tokens[column] = [rows.shape[1] - 1] * len(rows)
            nll = masked_head_nll(
                model, rows, conditions, batch_size=batch_size, progress=progress,
                desc=f"heads off: {column}",
            )  # fmt: skip
            baseline[column] = nll[0].tolist()
            for i, row in enumerate(languages):
                deactivated[row][column] = nll[1 + i].tolist()
                for d in range(len(controls)):
                    control[d][row][column] = nll[1 + len(languages) * (d + 1) + i].tolist()
    return HeadDeactivation(
        languages=languages,
        heads={lang: [list(h) for h in heads.heads(lang)] for lang in languages},
        controls=[{lang: drawn[lang] for lang in languages} for drawn in controls],
        baseline=baseline,
        deactivated=deactivated,
        control=control,
        tokens=tokens,
        seed=seed,
        model=fingerprint(model),
        settings={"corpus": corpus.to_dict()},
    )


# ----------------------------------------------------------------------------- together


@dataclass
class HeadsResult(Result):
    """What ``mlneurons heads`` finds: importance, the selected heads, their deactivation.

    Attributes:
        importance: :class:`HeadImportance`.
        heads: :class:`LanguageHeads`.
        deactivation: :class:`HeadDeactivation`, or None when not run.
        settings: ``uncertainty`` (how intervals are computed) and anything else.
    """

    FILE: ClassVar[str] = HEADS_FILE

    importance: HeadImportance
    heads: LanguageHeads
    deactivation: HeadDeactivation | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def languages(self) -> list[str]:
        return self.heads.languages

    @property
    def model(self) -> dict[str, Any]:
        return self.importance.model

    @property
    def how(self) -> Uncertainty:
        return Uncertainty.of(self.settings)

    def to_json(self) -> dict[str, Any]:
        return {
            "importance": self.importance.to_json(),
            "heads": self.heads.to_json(),
            "deactivation": None if self.deactivation is None else self.deactivation.to_json(),
            "settings": self.settings,
            "model": self.model,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], tensors: dict[str, Any] | None = None) -> HeadsResult:
        deactivation = data.get("deactivation")
        return cls(
            importance=HeadImportance.from_json(data["importance"]),
            heads=LanguageHeads.from_json(data["heads"]),
            deactivation=None if deactivation is None else HeadDeactivation.from_json(deactivation),
            settings=data.get("settings", {}),
        )


def language_heads(
    model: TransformerBridge,
    corpus: MultilingualCorpus,
    heldout: MultilingualCorpus | None = None,
    *,
    top_rate: float = 0.1,
    shared_min: int = 2,
    control_draws: int = 2,
    seed: int = 0,
    batch_size: int = 4,
    how: Uncertainty = Uncertainty(),
    progress: bool = True,
) -> HeadsResult:
    """Importance (:func:`head_importance`) on ``corpus``, language-specific and general
    heads (:func:`select_heads`), and their deactivation on ``heldout``
    (:func:`head_deactivation`; skipped when None): what ``mlneurons heads`` runs.
    ``batch_size`` rows per forward and backward pass; the deactivation's forwards, without
    a backward, take twice as many."""
    if len(corpus.languages) < 2:
        raise UserError(f"heads compare languages: give at least two, got {corpus.languages}")
    rate("top_rate", top_rate)
    if isinstance(shared_min, bool) or not 2 <= shared_min <= len(corpus.languages):
        raise UserError(
            f"shared_min={shared_min!r} must be an integer in 2..{len(corpus.languages)} "
            "(languages)"
        )
    extra = [
        lang for lang in (heldout.languages if heldout else []) if lang not in corpus.languages
    ]
    if extra:
        raise UserError(f"held-out languages {extra} are not among {corpus.languages}")
    importance = head_importance(model, corpus, batch_size=batch_size, progress=progress)
    heads = select_heads(importance, top_rate=top_rate, shared_min=shared_min)
    deactivation = None
    if heldout is not None:
        deactivation = head_deactivation(
            model, heads, heldout, control_draws=control_draws, seed=seed,
            batch_size=2 * batch_size, progress=progress,
        )  # fmt: skip
    return HeadsResult(importance, heads, deactivation, settings={"uncertainty": how.to_json()})


# ----------------------------------------------------------------------------- patterns


def attention_patterns(
    model: TransformerBridge,
    texts: Sequence[str],
    layer: int,
    head: int,
    *,
    max_tokens: int = 128,
    lock: AbstractContextManager[Any] | None = None,
) -> list[tuple[list[str], Float[torch.Tensor, "dst src"]]]:
    """Per text: its display tokens and head ``(layer, head)``'s attention pattern over them
    (rows: the attending token, columns: the token attended to; ``attn.hook_pattern``).

    BOS is kept as a token (heads park their attention there). Byte pieces merged into one
    character are one token: its row is the pattern of its last piece (which sees all of
    them) and its column the sum over its pieces, so rows still sum to 1.
    """
    n_layers, n_heads = head_grid(model)
    if not (0 <= layer < n_layers and 0 <= head < n_heads):
        raise UserError(
            f"head (layer {layer}, head {head}) does not fit a model with {n_layers} layers "
            f"of {n_heads} heads"
        )
    tokenizer = model.tokenizer
    rows = [encode(tokenizer, text, max_tokens) for text in texts]
    if not rows or any(not row for row in rows):
        raise UserError("attention patterns need non-empty texts")
    store: dict[str, torch.Tensor] = {}

    def keep(pattern: torch.Tensor, *, hook: Any) -> None:
        store["pattern"] = pattern[:, head].float().cpu()

    ids, mask = pad_right(rows, getattr(tokenizer, "pad_token_id", None) or 0)
    device = model_device(model)
    with lock if lock is not None else nullcontext(), torch.inference_mode():
        with model.hooks(fwd_hooks=[(f"blocks.{layer}.attn.hook_pattern", keep)]):
            run_body(model, ids.to(device), attention_mask=mask.to(device))
    found = []
    for k, row in enumerate(rows):
        pattern = store["pattern"][k, : len(row), : len(row)]
        skip = bos_count(tokenizer, row)
        strings, groups = display_tokens(tokenizer, row[skip:])
        groups = [[skip + g for g in group] for group in groups]
        if skip:
            strings, groups = [str(tokenizer.decode(row[:1]))] + strings, [[0]] + groups
        merged = torch.stack(
            [torch.stack([pattern[dst[-1], src].sum() for src in groups]) for dst in groups]
        )
        found.append((strings, merged))
    return found


__all__ = [
    "HEADS_FILE",
    "Head",
    "HeadDeactivation",
    "HeadImportance",
    "HeadsResult",
    "LanguageHeads",
    "attention_patterns",
    "head_deactivation",
    "head_grid",
    "head_importance",
    "head_statistics",
    "language_heads",
    "masked_head_nll",
    "output_norms",
    "random_heads",
    "select_heads",
    "z_hook",
]
