"""One streaming statistics collector over named hook points and labelled rows.

Every method of mlneurons is a pass over labelled text that accumulates statistics at
named hook points, followed by a small pure function of them: LAPE counts firing MLP
neurons per language, LRP2 averages mean-pooled residual streams per language, PROBELESS
reads each fact's activations at its object position. :func:`collect` is that pass, and
:class:`HookStats` the mergeable state it returns: per label and hook point the weighted
sum of the activations, and where asked the number of positions where they are positive
("fires", LAPE's activation) and the weighted sum of squares. Memory does not grow with
the text; runs over disjoint shards or processes merge by addition (``a + b``) and a run
checkpoints and resumes to the same totals.

Each position's weight says how much it counts: 1 on every token but BOS for LAPE,
``1 / length`` of its row for a mean-pooled sentence (LRP2), 1 at one chosen position for
per-item vectors (PROBELESS). ``weights`` per label sum them, so ``sums / weights`` is the
mean in every case.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from tqdm.auto import tqdm

from mlneurons.errors import UserError, did_you_mean
from mlneurons.models.bridge import TransformerBridge
from mlneurons.models.canary import canary_ids, verify
from mlneurons.models.dictionary import units
from mlneurons.models.fingerprint import fingerprint
from mlneurons.models.forward import model_device, run_body
from mlneurons.models.hooks import hooks_attached, identity, mlp_neuron_hook, unwrapped
from mlneurons.results import read_tensors, write_tensors

KINDS = ("sums", "fires", "squares")
"""What :class:`HookStats` can hold per hook point; ``sums`` always."""

NamesFilter = Callable[[str], bool] | str | Iterable[str] | None
"""TransformerLens' ``names_filter``: a predicate on hook names, one name or a list of names."""

Transform = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Labelled:
    """One batch of token rows, with the label of each row and the weight of each position.

    Attributes:
        tokens: ``[batch, pos]`` token ids.
        labels: the label index of the whole batch, or one per row.
        weights: ``[batch, pos]`` weight of each position; None counts every position from
            ``skip`` on with weight 1.
        skip: leading positions (BOS) left out when ``weights`` is None.
        attention_mask: passed to the model (right-padded rows).
    """

    tokens: Int[torch.Tensor, "batch pos"]
    labels: int | Int[torch.Tensor, " batch"]
    weights: Float[torch.Tensor, "batch pos"] | None = None
    skip: int = 0
    attention_mask: Int[torch.Tensor, "batch pos"] | None = None

    def position_weights(self) -> Float[torch.Tensor, "batch pos"]:
        """The weight of every position (float32, on the CPU)."""
        if self.weights is not None:
            return self.weights.float().cpu()
        weights = torch.ones(self.tokens.shape, dtype=torch.float32)
        weights[:, : self.skip] = 0.0
        return weights

    def row_labels(self) -> Int[torch.Tensor, " batch"]:
        if isinstance(self.labels, int):
            return torch.full((len(self.tokens),), self.labels, dtype=torch.long)
        return self.labels.long().cpu()


@dataclass
class HookStats:
    """Per-label sums (and fire counts, sums of squares) at named hook points: the
    mergeable state of :func:`collect`.

    Attributes:
        labels: the order of every tensor's first axis (languages, fact keys, ...).
        points: hook names, in forward order.
        sums: hook name -> ``[label, *shape]`` weighted sum of the activations.
        fires: hook name -> ``[label, *shape]`` positions (weight > 0) with activation > 0.
        squares: hook name -> ``[label, *shape]`` weighted sum of squared activations.
        weights: ``[label]`` total weight (the token count when every weight is 1).
        tokens: ``[label]`` counted positions (weight > 0).
        rows: ``[label]`` rows counted.
        meta: ``model`` (fingerprint), ``source`` (what was read) and anything else.
    """

    labels: list[str]
    points: list[str]
    sums: dict[str, torch.Tensor]
    fires: dict[str, torch.Tensor] = field(default_factory=dict)
    squares: dict[str, torch.Tensor] = field(default_factory=dict)
    weights: Float[torch.Tensor, " label"] = None  # type: ignore[assignment]
    tokens: Int[torch.Tensor, " label"] = None  # type: ignore[assignment]
    rows: Int[torch.Tensor, " label"] = None  # type: ignore[assignment]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.labels)
        if len(set(self.labels)) != n:
            raise ValueError(f"labels must be unique, got {self.labels}")
        self.weights = torch.zeros(n, dtype=torch.float64) if self.weights is None else self.weights
        self.tokens = torch.zeros(n, dtype=torch.int64) if self.tokens is None else self.tokens
        self.rows = torch.zeros(n, dtype=torch.int64) if self.rows is None else self.rows
        for kind in KINDS:
            table = getattr(self, kind)
            if kind == "sums" or table:
                missing = [p for p in self.points if p not in table]
                if missing:
                    raise ValueError(f"{kind} lacks hook points {missing}")
                bad = {p: tuple(t.shape) for p, t in table.items() if t.shape[0] != n}
                if bad:
                    raise ValueError(f"{kind} do not fit {n} labels: shapes {bad}")

    @property
    def model(self) -> dict[str, Any]:
        model: dict[str, Any] = self.meta.get("model", {})
        return model

    def index(self, label: str) -> int:
        """Position of ``label`` on the first axis."""
        if label not in self.labels:
            raise ValueError(f"unknown label {label!r}; these statistics have {self.labels}")
        return self.labels.index(label)

    def _per_label(self, counts: torch.Tensor, what: str, like: torch.Tensor) -> torch.Tensor:
        empty = [label for label, n in zip(self.labels, counts.tolist()) if n == 0]
        if empty:
            raise ValueError(f"no {what} were counted for {empty}")
        return counts.double().view(-1, *([1] * (like.dim() - 1)))

    def mean(self, point: str) -> Float[torch.Tensor, "label ..."]:
        """Weighted mean activation per label at ``point`` (float64)."""
        sums = self.sums[self._point(point)]
        return sums.double() / self._per_label(self.weights, "weights", sums)

    def variance(self, point: str) -> Float[torch.Tensor, "label ..."]:
        """Weighted variance per label at ``point``; needs ``squares=True`` at collection."""
        if not self.squares:
            raise ValueError("these statistics hold no sums of squares; collect with squares=True")
        squares = self.squares[self._point(point)]
        mean = self.mean(point)
        return squares / self._per_label(self.weights, "weights", squares) - mean.square()

    def fire_rate(self, point: str) -> Float[torch.Tensor, "label ..."]:
        """Fraction of counted positions where the activation is > 0 (LAPE's p)."""
        if not self.fires:
            raise ValueError("these statistics hold no fire counts; collect with fires=True")
        fires = self.fires[self._point(point)]
        return fires.double() / self._per_label(self.tokens, "tokens", fires)

    def stacked(self, kind: str) -> torch.Tensor:
        """``[label, point, *shape]``: one kind of statistic at every hook point."""
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; choose from {', '.join(KINDS)}")
        table = getattr(self, kind)
        return torch.stack([table[p] for p in self.points], dim=1)

    def _point(self, point: str) -> str:
        if point not in self.sums:
            raise UserError(
                f"no statistics at hook point {point!r};{did_you_mean(point, self.points)} "
                f"these have {len(self.points)} points ({', '.join(self.points[:4])}, ...)"
            )
        return point

    def select(self, labels: list[str]) -> HookStats:
        """The statistics of ``labels`` only, in that order."""
        idx = torch.tensor([self.index(label) for label in labels], dtype=torch.long)
        return HookStats(
            list(labels),
            list(self.points),
            {p: t[idx] for p, t in self.sums.items()},
            {p: t[idx] for p, t in self.fires.items()},
            {p: t[idx] for p, t in self.squares.items()},
            self.weights[idx],
            self.tokens[idx],
            self.rows[idx],
            dict(self.meta),
        )

    def __add__(self, other: HookStats) -> HookStats:
        """Merge two runs (shards, processes): every statistic adds; labels unite."""
        mine, theirs = self.model, other.model
        if mine.get("hash") != theirs.get("hash"):
            raise ValueError(
                f"cannot merge statistics of different models: {mine.get('name')!r} "
                f"({mine.get('hash')}) and {theirs.get('name')!r} ({theirs.get('hash')})"
            )
        if self.points != other.points:
            raise ValueError(
                f"cannot merge statistics of different hook points: {self.points[:3]}... and "
                f"{other.points[:3]}..."
            )
        for kind in KINDS:
            a, b = getattr(self, kind), getattr(other, kind)
            if bool(a) != bool(b):
                raise ValueError(f"cannot merge statistics with and without {kind}")
            shapes = {p: (tuple(a[p].shape[1:]), tuple(b[p].shape[1:])) for p in a}
            if any(x != y for x, y in shapes.values()):
                raise ValueError(f"cannot merge statistics of shapes {shapes}")
        labels = self.labels + [label for label in other.labels if label not in self.labels]
        merged = HookStats(
            labels,
            list(self.points),
            {p: _zeros_like(t, len(labels)) for p, t in self.sums.items()},
            {p: _zeros_like(t, len(labels)) for p, t in self.fires.items()},
            {p: _zeros_like(t, len(labels)) for p, t in self.squares.items()},
            meta={k: v for k, v in self.meta.items() if k != "source"},
        )
        for part in (self, other):
            idx = torch.tensor([labels.index(label) for label in part.labels], dtype=torch.long)
            for kind in KINDS:
                for p, t in getattr(part, kind).items():
                    getattr(merged, kind)[p].index_add_(0, idx, t)
            merged.weights.index_add_(0, idx, part.weights)
            merged.tokens.index_add_(0, idx, part.tokens)
            merged.rows.index_add_(0, idx, part.rows)
        source = self.meta.get("source"), other.meta.get("source")
        merged.meta["source"] = source[0] if source[0] == source[1] else {"merged": list(source)}
        return merged

    def save(self, path: str | Path, *, extra: dict[str, Any] | None = None) -> Path:
        """Write one safetensors file (tensors, and labels/points/meta as JSON); returns it."""
        tensors = {"weights": self.weights, "tokens": self.tokens, "rows": self.rows}
        for kind in KINDS:
            tensors.update({f"{kind}/{p}": t for p, t in getattr(self, kind).items()})
        meta = {"labels": self.labels, "points": self.points, "meta": self.meta}
        return write_tensors(path, tensors, {**meta, **(extra or {})})

    @classmethod
    def load(cls, path: str | Path) -> HookStats:
        """Read what :meth:`save` wrote."""
        return cls.load_with_extra(path)[0]

    @classmethod
    def load_with_extra(cls, path: str | Path) -> tuple[HookStats, dict[str, Any]]:
        """Read what :meth:`save` wrote, and the ``extra`` it was given."""
        tensors, meta = read_tensors(path, Path(path).name)
        tables: dict[str, dict[str, torch.Tensor]] = {kind: {} for kind in KINDS}
        for key, tensor in tensors.items():
            kind, _, point = key.partition("/")
            if point:
                tables[kind][point] = tensor
        stats = cls(
            meta["labels"],
            meta["points"],
            tables["sums"],
            tables["fires"],
            tables["squares"],
            tensors["weights"],
            tensors["tokens"],
            tensors["rows"],
            meta.get("meta", {}),
        )
        return stats, meta

    @classmethod
    def empty(
        cls,
        labels: list[str],
        shapes: dict[str, tuple[int, ...]],
        *,
        fires: bool = False,
        squares: bool = False,
        dtype: torch.dtype = torch.float64,
        meta: dict[str, Any] | None = None,
    ) -> HookStats:
        """All-zero statistics of ``labels`` at hook points of the given shapes."""
        n = len(labels)
        return cls(
            list(labels),
            list(shapes),
            {p: torch.zeros(n, *s, dtype=dtype) for p, s in shapes.items()},
            {p: torch.zeros(n, *s, dtype=torch.int64) for p, s in shapes.items()} if fires else {},
            {p: torch.zeros(n, *s, dtype=dtype) for p, s in shapes.items()} if squares else {},
            meta=dict(meta or {}),
        )


def _zeros_like(tensor: torch.Tensor, n: int) -> torch.Tensor:
    return torch.zeros(n, *tensor.shape[1:], dtype=tensor.dtype)


# ----------------------------------------------------------------------------- hook points


def hook_points(
    model: TransformerBridge, names_filter: NamesFilter = None
) -> list[tuple[str, Transform]]:
    """``(hook name, transform)`` of the points to collect at, in forward order.

    The default is every layer's MLP neurons, read as their act_fn output (see
    :func:`mlneurons.models.hooks.mlp_neuron_hook`); a ``names_filter`` selects any hook
    points instead, read as they are.
    """
    if names_filter is None:
        return [mlp_neuron_hook(model, layer) for layer in range(int(model.cfg.n_layers))]
    known = list(model.hook_dict)
    if isinstance(names_filter, str):
        names = [names_filter]
    elif callable(names_filter):
        names = [name for name in known if names_filter(name)]
    else:
        names = list(names_filter)
    unknown = [name for name in names if name not in model.hook_dict]
    if unknown:
        raise UserError(
            f"unknown hook point {unknown[0]!r};{did_you_mean(unknown[0], known)} "
            f"this model has {len(known)} (e.g. {', '.join(known[:3])})"
        )
    if not names:
        raise UserError(f"names_filter {names_filter!r} selects none of the model's hook points")
    order = {name: i for i, name in enumerate(known)}
    return [(name, identity) for name in sorted(set(names), key=order.__getitem__)]


def act_fn_modules(model: TransformerBridge) -> list[torch.nn.Module] | None:
    """Each layer's own act_fn module, or None when the MLPs do not call one module each
    (e.g. processed weights in compatibility mode): then only the exact path counts."""
    n_layers = int(model.cfg.n_layers)
    sites = [mlp_neuron_hook(model, layer)[1] for layer in range(n_layers)]
    modules = [m for m in sites if isinstance(m, torch.nn.Module)]
    if (
        len(modules) == n_layers
        and len({id(m) for m in modules}) == n_layers
        and not getattr(model, "compatibility_mode", False)
    ):
        return modules
    return None


# ----------------------------------------------------------------------------- accumulating


class _AllRead(Exception):
    """Raised by the last hook of a batch: the rest of the forward pass is not needed."""


class Accumulator:
    """Running per-label totals of one pass, on the model's device (64-bit).

    Hooks call :meth:`add`; the driver sets the batch with :meth:`start` and moves the
    totals into a :class:`HookStats` with :meth:`fold`.
    """

    def __init__(
        self,
        points: list[str],
        n_labels: int,
        *,
        fires: bool,
        squares: bool,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        self.points, self.n_labels, self.device, self.dtype = points, n_labels, device, dtype
        self.want = {"fires": fires, "squares": squares}
        self.totals: dict[str, dict[str, torch.Tensor]] = {kind: {} for kind in KINDS}
        self.read: set[str] = set()
        self.stop_early = True
        self.batch: Labelled | None = None
        self._weights: torch.Tensor | None = None
        self._labels: torch.Tensor | None = None

    def start(self, batch: Labelled) -> None:
        self.batch, self.read = batch, set()
        simple = batch.weights is None and isinstance(batch.labels, int)
        self._weights = None if simple else batch.position_weights().to(self.device)
        self._labels = None if simple else batch.row_labels().to(self.device)

    def _total(self, kind: str, point: str, like: torch.Tensor) -> torch.Tensor:
        table = self.totals[kind]
        if point not in table:
            dtype = torch.int64 if kind == "fires" else self.dtype
            table[point] = torch.zeros(
                self.n_labels, *like.shape[2:], dtype=dtype, device=like.device
            )
        return table[point]

    def add(self, point: str, value: torch.Tensor) -> None:
        """Add one batch's activations ``[batch, pos, *shape]`` at ``point``."""
        batch = self.batch
        assert batch is not None, "Accumulator.add outside a batch"
        kinds = ["sums", *(k for k in ("fires", "squares") if self.want[k])]
        if self._weights is None:  # one label, weight 1 from `skip` on
            for kind in kinds:
                self._total(kind, point, value)[batch.labels] += _reduce_all(
                    kind, value, batch.skip
                )
        else:
            assert self._labels is not None  # start() sets labels and weights together
            for kind in kinds:
                per_row = _reduce_rows(kind, value, self._weights)
                total = self._total(kind, point, value)
                total.index_add_(0, self._labels.to(total.device), per_row.to(total.dtype))
        self.read.add(point)
        if self.stop_early and len(self.read) == len(self.points):
            raise _AllRead

    def fold(self, stats: HookStats) -> None:
        """Move the running totals into ``stats`` (on the CPU) and zero them."""
        for kind, table in self.totals.items():
            for point, total in table.items():
                getattr(stats, kind)[point] += total.cpu().to(getattr(stats, kind)[point].dtype)
                total.zero_()


def _reduce_all(kind: str, value: torch.Tensor, skip: int) -> torch.Tensor:
    """Sum over batch and positions from ``skip`` on. Reductions over the whole contiguous
    tensor are several times faster than over a sliced view, so everything is summed and
    the skipped positions taken back out."""
    if kind == "fires":
        positive = value > 0
        total = positive.sum((0, 1), dtype=torch.int32)
        return total - positive[:, :skip].sum((0, 1), dtype=torch.int32) if skip else total
    values = value.square() if kind == "squares" else value
    total = values.sum((0, 1), dtype=torch.float32)
    return total - values[:, :skip].sum((0, 1), dtype=torch.float32) if skip else total


def _reduce_rows(kind: str, value: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Per row, the weighted sum over positions (fires: the count of positive, weighted ones)."""
    weights = weights.to(value.device)
    if kind == "fires":
        counted = (weights > 0).view(*weights.shape, *([1] * (value.dim() - 2)))
        return ((value > 0) & counted).sum(1, dtype=torch.int64)
    values = value.float().square() if kind == "squares" else value.float()
    return torch.einsum("bp,bp...->b...", weights, values)


def _hook(
    act: torch.Tensor, *, hook: Any, point: str, transform: Transform, acc: Accumulator
) -> None:
    """TransformerLens hook: add the (transformed) activation at ``point``."""
    acc.add(point, transform(act))


@contextmanager
def attached(
    model: TransformerBridge,
    points: list[tuple[str, Transform]],
    acc: Accumulator,
    *,
    exact: bool = False,
) -> Iterator[str]:
    """Attach the accumulating hooks at ``points``; always detach them. Yields the path taken.

    For the default points (every MLP's neurons) the fast path reads the act_fn output
    from each MLP's own ``act_fn`` module, which spares recomputing it, and bypasses the
    bridge's wrappers unless a TransformerLens hook is attached (they cost about 10% of
    the forward). Every other case, and ``exact=True``, uses TransformerLens hooks through
    the bridge. :func:`check_statistics_pass` checks that both agree.
    """
    modules = None
    neuron_points = points == hook_points(model)
    if neuron_points and not exact:
        modules = act_fn_modules(model)
    handles = []
    try:
        if modules is not None:
            for (name, _), module in zip(points, modules):

                def read_output(module: Any, args: Any, output: Any, name: str = name) -> None:
                    acc.add(name, output)

                handles.append(module.register_forward_hook(read_output))
            listening = hooks_attached(model)
            with nullcontext() if listening else unwrapped(model):
                yield "bridge with act_fn hooks" if listening else "unwrapped HF modules"
        else:
            hooks = [
                (name, functools.partial(_hook, point=name, transform=transform, acc=acc))
                for name, transform in points
            ]
            with model.hooks(fwd_hooks=hooks):
                yield "TransformerLens hooks"
    finally:
        for handle in handles:
            handle.remove()


def run_batch(model: TransformerBridge, batch: Labelled, acc: Accumulator) -> None:
    """One forward pass of ``batch`` for the hooks; stops once every point was read."""
    device = model_device(model)
    acc.start(batch)
    mask = None if batch.attention_mask is None else batch.attention_mask.to(device)
    try:
        run_body(model, batch.tokens.to(device), attention_mask=mask)
    except _AllRead:
        pass
    missing = [p for p in acc.points if p not in acc.read]
    if missing:
        raise RuntimeError(
            f"the statistics hooks did not fire in every layer of this model: {missing[:3]} "
            f"({len(missing)} of {len(acc.points)} points) were never reached"
        )


def check_statistics_pass(model: TransformerBridge) -> None:
    """Canary: the fast statistics pass counts exactly what bridge hooks count (once per model)."""
    if act_fn_modules(model) is None:
        return  # statistics use the exact path already
    points = hook_points(model)
    row = torch.tensor([canary_ids(model, 8)])
    first = 1 if getattr(model.tokenizer, "bos_token_id", None) is not None else 0
    batch = Labelled(row, 0, skip=first)

    def count(exact: bool) -> torch.Tensor:
        acc = Accumulator(
            [p for p, _ in points],
            1,
            fires=True,
            squares=False,
            dtype=torch.float64,
            device=model_device(model),
        )
        with attached(model, points, acc, exact=exact):
            run_batch(model, batch, acc)
        return torch.cat(
            [acc.totals[k][p].flatten().double() for k in ("fires", "sums") for p, _ in points]
        )

    mode = "bridge with act_fn hooks" if hooks_attached(model) else "unwrapped HF modules"
    verify(model, f"statistics pass ({mode})", lambda: (count(False), count(True)))


# ----------------------------------------------------------------------------- the pass


def collect(
    model: TransformerBridge,
    batches: Iterable[Labelled],
    *,
    labels: list[str],
    names_filter: NamesFilter = None,
    fires: bool = False,
    squares: bool = False,
    dtype: torch.dtype = torch.float64,
    source: dict[str, Any] | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 20,
    resume_key: dict[str, Any] | None = None,
    total: int | None = None,
    desc: str = "collect",
    progress: bool = True,
    exact: bool = False,
) -> HookStats:
    """Stream labelled batches through ``model`` and accumulate statistics at hook points.

    Args:
        model: a TransformerBridge.
        batches: the batches, in a fixed order (a resumed run skips the first ones).
        labels: the label names that ``Labelled.labels`` index.
        names_filter: which hook points (TransformerLens' ``names_filter``); default:
            every layer's MLP neurons (act_fn output), through the fast path.
        fires: also count positions with activation > 0 (LAPE).
        squares: also sum squared activations (for variances).
        dtype: of the sums (float64; float32 halves memory when each label is read once).
        source: a description of what was read, kept in ``meta["source"]``.
        checkpoint: a file to save progress to every ``checkpoint_every`` batches; if it
            exists and matches this model and ``resume_key``, the run continues from it
            and gives the same totals as an uninterrupted run.
        resume_key: what must match for a checkpoint to be resumed (corpus, batch size).
        total: batches expected, for the progress bar.
        exact: count through TransformerLens hooks even where the fast path applies.
    """
    points = hook_points(model, names_filter)
    names = [name for name, _ in points]
    meta = {"model": fingerprint(model), "source": source or {}}
    described = units(model, names)
    if described is not None:  # dictionary features: which dictionaries they belong to
        meta["model"]["units"] = described
    stats = None
    done = 0
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    if checkpoint is not None and checkpoint.exists():
        stats, done = _resume(checkpoint, meta["model"], names, resume_key or {})
    device = model_device(model)
    acc = Accumulator(names, len(labels), fires=fires, squares=squares, dtype=dtype, device=device)
    # Stop each forward after the last point, unless a user's hook may still be listening.
    acc.stop_early = not hooks_attached(model)
    if names_filter is None and not exact:
        check_statistics_pass(model)
    bar = tqdm(total=total, desc=desc, unit="batch", disable=not progress, initial=done)
    since = 0
    with torch.inference_mode(), attached(model, points, acc, exact=exact):
        for n, batch in enumerate(batches):
            if n < done:
                continue
            run_batch(model, batch, acc)
            if stats is None:
                shapes = {p: tuple(acc.totals["sums"][p].shape[1:]) for p in names}
                with torch.inference_mode(False):  # results stay ordinary tensors
                    stats = HookStats.empty(
                        labels, shapes, fires=fires, squares=squares, dtype=dtype, meta=meta
                    )
            _count_positions(stats, batch)
            bar.update()
            since += 1
            if checkpoint is not None and since >= checkpoint_every:
                acc.fold(stats)
                stats.save(checkpoint, extra={"batches_done": n + 1, "resume_key": resume_key})
                since = 0
            done = n + 1
        bar.close()
        if stats is None:
            raise UserError(f"nothing to collect: no batches for labels {labels}")
        acc.fold(stats)
    if checkpoint is not None:
        stats.save(checkpoint, extra={"batches_done": done, "resume_key": resume_key})
    return stats


def _count_positions(stats: HookStats, batch: Labelled) -> None:
    weights = batch.position_weights().double()
    rows = batch.row_labels()
    stats.weights.index_add_(0, rows, weights.sum(1))
    stats.tokens.index_add_(0, rows, (weights > 0).sum(1))
    stats.rows.index_add_(0, rows, torch.ones_like(rows))


def _resume(
    path: Path, model: dict[str, Any], points: list[str], key: dict[str, Any]
) -> tuple[HookStats, int]:
    saved, extra = HookStats.load_with_extra(path)
    if "batches_done" not in extra:
        raise UserError(
            f"{str(path)!r} holds finished statistics, not a checkpoint; pick another path"
        )
    recorded = extra.get("resume_key") or {}
    for name in ("batch_size",):
        if name in key and recorded.get(name) != key[name]:
            raise UserError(
                f"checkpoint {str(path)!r} was written with {name}={recorded.get(name)}; "
                f"resume with that {name.replace('_', ' ')}, not {key[name]}"
            )
    if saved.model.get("hash") != model.get("hash") or recorded != key or saved.points != points:
        raise UserError(
            f"checkpoint {str(path)!r} belongs to another model or corpus "
            f"(model {saved.model.get('name')!r}, source {saved.meta.get('source')}); "
            "delete it or pick another path"
        )
    return saved, int(extra["batches_done"])


__all__ = [
    "KINDS",
    "Accumulator",
    "HookStats",
    "Labelled",
    "act_fn_modules",
    "attached",
    "check_statistics_pass",
    "collect",
    "hook_points",
    "run_batch",
]
