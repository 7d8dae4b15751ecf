"""Collector passes over many processes: logical shards, per-shard checkpoints, one reduction.

The batches of a pass are split into ``S`` logical shards fixed at the first launch (batch
``b`` belongs to shard ``b % S``; ``DIR/manifest.json`` records ``S`` and what the pass
reads). Rank ``r`` of ``W`` takes the shards ``s`` with ``s % W == r``, so the number of
ranks may change between launches. Each shard checkpoints to its own file
``DIR/shards/shard-{s}.safetensors`` and a finished shard is never recomputed. At the end
every rank checks that all used the same model fingerprint, corpus key and labels, and one
``all_reduce`` (gloo, on the CPU, so CPU and GPU runs share the code) adds the counters.

Launch with ``torchrun`` (or ``accelerate launch``, ``srun torchrun``): only ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` (and ``MASTER_ADDR``/``MASTER_PORT`` for the reduction)
are read. Without ``MASTER_ADDR`` (e.g. a Slurm job array) each process only writes its
shards and :func:`merge_shards` (``mlneurons merge DIR``) adds them offline.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

from mlneurons.errors import UserError
from mlneurons.models.bridge import TransformerBridge
from mlneurons.models.fingerprint import fingerprint
from mlneurons.results import read_json, write_json
from mlneurons.stats.collector import KINDS, HookStats, Labelled, collect
from mlneurons.world import World

MANIFEST_FILE = "manifest.json"
SHARD_DIR = "shards"
DEFAULT_SHARDS = 8
"""Logical shards of a pass when none are asked for (at least 2 per rank)."""


def shard_path(directory: str | Path, shard: int) -> Path:
    return Path(directory) / SHARD_DIR / f"shard-{shard:05d}.safetensors"


def shard_batches(batches: Iterable[Labelled], shard: int, n_shards: int) -> Iterator[Labelled]:
    """The batches of one logical shard: every ``n_shards``-th, from the ``shard``-th."""
    for index, batch in enumerate(batches):
        if index % n_shards == shard:
            yield batch


def read_manifest(directory: str | Path, key: dict[str, Any], n_shards: int | None) -> int:
    """The number of shards of the pass in ``directory``, written at the first launch.

    Raises:
        UserError: the directory holds shards of another model, corpus or setting, or
            ``n_shards`` differs from the first launch's.
    """
    path = Path(directory) / MANIFEST_FILE
    manifest = read_json(path, MANIFEST_FILE)
    if manifest["key"] != key:
        raise UserError(
            f"{str(directory)!r} holds shards of another pass ({_differs(manifest['key'], key)}); "
            "pick another directory or delete it"
        )
    if n_shards is not None and n_shards != manifest["n_shards"]:
        raise UserError(
            f"--shards {n_shards}: {str(directory)!r} was started with {manifest['n_shards']} "
            "shards; resume with that number"
        )
    return int(manifest["n_shards"])


def _differs(saved: dict[str, Any], given: dict[str, Any]) -> str:
    keys = [k for k in sorted(set(saved) | set(given)) if saved.get(k) != given.get(k)]
    return ", ".join(f"{k}: {saved.get(k)!r} there, {given.get(k)!r} here" for k in keys[:3])


def collect_sharded(
    model: TransformerBridge,
    batches: Callable[[], Iterable[Labelled]],
    *,
    directory: str | Path,
    labels: list[str],
    key: dict[str, Any],
    n_shards: int | None = None,
    world: World | None = None,
    checkpoint_every: int = 20,
    progress: bool = True,
    **options: Any,
) -> HookStats | None:
    """:func:`~mlneurons.stats.collector.collect` over this rank's logical shards, then the
    reduction over all ranks.

    Args:
        batches: makes the pass's batch stream (the same on every rank, in the same order).
        directory: holds ``manifest.json`` and ``shards/``.
        key: what the pass reads (model hash, corpus key, batch size, ...): shards of another
            key are refused.
        n_shards: logical shards, fixed at the first launch (default
            ``max(DEFAULT_SHARDS, 2 * world size)``).
        world: this process's rank and world size (default: from the environment).
        options: passed to ``collect`` (``names_filter``, ``fires``, ``source``, ...).

    Returns:
        The statistics of every shard, on every rank of a connected launch (and in a single
        process); None when the ranks cannot reach each other: each wrote its shards, and
        :func:`merge_shards` adds them.
    """
    world = world or World.from_env()
    directory = Path(directory)
    options.pop("desc", None)  # each shard has its own progress bar
    if world.connected:
        _init_process_group(world)
    if world.rank == 0 and not (directory / MANIFEST_FILE).exists():
        chosen = n_shards or max(DEFAULT_SHARDS, 2 * world.size)
        write_json(directory, MANIFEST_FILE, {"n_shards": chosen, "key": key})
    if world.connected:
        torch.distributed.barrier()
    n_shards = read_manifest(directory, key, n_shards)
    total = None
    for shard in world.shards(n_shards):
        part = _shard(
            model,
            batches,
            directory,
            shard,
            n_shards,
            labels,
            key,
            checkpoint_every,
            progress,
            options,
        )
        if part is not None:
            total = part if total is None else total + part
    if world.size > 1 and not world.connected:
        return None  # this rank's shards are written; merge_shards adds them all
    if not world.connected:
        return total
    return all_reduce(total, world, key)


def _shard(
    model: TransformerBridge,
    batches: Callable[[], Iterable[Labelled]],
    directory: Path,
    shard: int,
    n_shards: int,
    labels: list[str],
    key: dict[str, Any],
    checkpoint_every: int,
    progress: bool,
    options: dict[str, Any],
) -> HookStats | None:
    """One shard: read it when finished, else compute it (resuming from its checkpoint);
    None for a shard without batches (a corpus with fewer batches than shards)."""
    path = shard_path(directory, shard)
    resume_key = {**key, "shard": shard, "n_shards": n_shards}
    if path.with_suffix(".empty.json").exists():
        return None
    if path.exists():
        saved, extra = HookStats.load_with_extra(path)
        if extra.get("finished"):
            return saved
    stream = shard_batches(batches(), shard, n_shards)
    first = next(stream, None)
    if first is None:
        write_json(path.parent, path.with_suffix(".empty.json").name, {"resume_key": resume_key})
        return None
    stats = collect(
        model,
        itertools.chain([first], stream),
        labels=labels,
        checkpoint=path,
        checkpoint_every=checkpoint_every,
        resume_key=resume_key,
        desc=f"shard {shard}/{n_shards}",
        progress=progress,
        **options,
    )
    stats.save(path, extra={"resume_key": resume_key, "finished": True})  # read, never resumed
    return stats


def _init_process_group(world: World) -> None:
    """The gloo group of this launch (the statistics live on the CPU, so any device works).

    The rendezvous store is prefixed with torchrun's restart count: after a restart the
    store still held the dead attempt's gloo addresses, and ``init_process_group`` failed
    to connect ("connectFullMesh ... Connection refused") in 4 of 5 restarts on our
    machine; with the prefix, 5 of 5 connected.
    """
    if torch.distributed.is_initialized():
        return
    store, rank, size = next(torch.distributed.rendezvous("env://"))
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    store = torch.distributed.PrefixStore(f"mlneurons/attempt-{attempt}", store)
    torch.distributed.init_process_group("gloo", store=store, rank=rank, world_size=size)


def all_reduce(stats: HookStats | None, world: World, key: dict[str, Any]) -> HookStats:
    """Check that every rank read the same pass, then add every rank's counters (one
    ``all_reduce`` per dtype, float64 and int64, so counts stay exact)."""
    mine = None if stats is None else _layout(stats, key)
    layouts: list[Any] = [None] * world.size
    torch.distributed.all_gather_object(layouts, mine)
    known = [(rank, layout) for rank, layout in enumerate(layouts) if layout is not None]
    if not known:
        raise UserError("no rank had a shard to compute")
    first_rank, first = known[0]
    for rank, layout in known[1:]:
        if layout != first:
            raise RuntimeError(
                f"rank {rank} computed another pass than rank {first_rank}: "
                f"{_differs(first, layout)}"
            )
    if stats is None:  # a rank without shards adds zeros of the same layout
        stats = HookStats.empty(
            first["labels"],
            {p: tuple(s) for p, s in zip(first["points"], first["shapes"])},
            fires=first["fires"],
            squares=first["squares"],
            dtype=getattr(torch, first["dtype"]),
            meta=first["meta"],
        )
    tensors = _tensors(stats)
    for dtype in (torch.float64, torch.float32, torch.int64):
        group = [t for t in tensors if t.dtype == dtype]
        if group:
            flat = torch.cat([t.flatten() for t in group])
            torch.distributed.all_reduce(flat)
            for t, part in zip(group, flat.split([t.numel() for t in group])):
                t.copy_(part.view_as(t))
    return stats


def _layout(stats: HookStats, key: dict[str, Any]) -> dict[str, Any]:
    return {
        "key": key,
        "model": stats.model.get("hash"),
        "labels": stats.labels,
        "points": stats.points,
        "shapes": [list(stats.sums[p].shape[1:]) for p in stats.points],
        "fires": bool(stats.fires),
        "squares": bool(stats.squares),
        "dtype": str(next(iter(stats.sums.values())).dtype).removeprefix("torch."),
        "meta": {"model": stats.model, "source": stats.meta.get("source", {})},
    }


def _tensors(stats: HookStats) -> list[torch.Tensor]:
    out = [stats.weights, stats.tokens, stats.rows]
    for kind in KINDS:
        out += [getattr(stats, kind)[p] for p in stats.points if p in getattr(stats, kind)]
    return out


def run_pass(
    model: TransformerBridge,
    batches: Callable[[], Iterable[Labelled]],
    *,
    labels: list[str],
    key: dict[str, Any],
    shards: str | Path | None = None,
    n_shards: int | None = None,
    checkpoint: str | Path | None = None,
    total: int | None = None,
    **options: Any,
) -> HookStats | None:
    """A collector pass in one process (``checkpoint``: resumable) or, with ``shards`` (a
    directory), data-parallel over logical shards (:func:`collect_sharded`); ``key`` names
    what the pass reads, so that checkpoints and shards of another pass are refused."""
    if shards is None:
        return collect(
            model,
            batches(),
            labels=labels,
            checkpoint=checkpoint,
            resume_key=key,
            total=total,
            **options,
        )
    key = {**key, "model": fingerprint(model)["hash"], "labels": list(labels)}
    return collect_sharded(
        model, batches, directory=shards, labels=labels, key=key, n_shards=n_shards, **options
    )


def all_reduce_sum(tensor: torch.Tensor, world: World) -> torch.Tensor:
    """``tensor`` summed over the ranks of a connected launch, in place (a CPU tensor)."""
    if world.connected:
        _init_process_group(world)
        torch.distributed.all_reduce(tensor)
    return tensor


def gather(items: list[Any], world: World) -> list[Any]:
    """Every rank's ``items`` concatenated in rank order, on every rank (for item-parallel
    work such as probing facts ``[rank::size]``)."""
    if not world.connected:
        return list(items)
    _init_process_group(world)
    parts: list[Any] = [None] * world.size
    torch.distributed.all_gather_object(parts, list(items))
    return [item for part in parts for item in part]


def merge_shards(*directories: str | Path) -> HookStats:
    """Add the finished shard files of one pass, offline (``mlneurons merge DIR``).

    Raises:
        UserError: directories of different passes (model, corpus, settings), a shard that
            appears twice, or shards missing or unfinished.
    """
    if not directories:
        raise UserError("name at least one directory with a manifest.json")
    manifests = [read_json(Path(d), MANIFEST_FILE) for d in directories]
    first = manifests[0]
    for directory, manifest in zip(directories[1:], manifests[1:]):
        if manifest != first:
            raise UserError(
                f"{str(directory)!r} holds shards of another pass than {str(directories[0])!r} "
                f"({_differs(first['key'], manifest['key']) or 'another number of shards'})"
            )
    n_shards = int(first["n_shards"])
    seen: dict[int, Path] = {}
    total = None
    files = [
        path
        for directory in directories
        for pattern in ("shard-*.empty.json", "shard-*.safetensors")
        for path in sorted((Path(directory) / SHARD_DIR).glob(pattern))
    ]
    for path in files:
        shard = int(path.name.split(".")[0].removeprefix("shard-"))
        if shard in seen:
            raise UserError(f"shard {shard} appears twice: {str(seen[shard])!r} and {str(path)!r}")
        seen[shard] = path
        if path.suffix == ".json":  # a shard without batches
            continue
        stats, extra = HookStats.load_with_extra(path)
        recorded = extra.get("resume_key") or {}
        if recorded != {**first["key"], "shard": shard, "n_shards": n_shards}:
            raise UserError(
                f"{str(path)!r} belongs to another pass "
                f"({_differs({**first['key'], 'shard': shard}, recorded)})"
            )
        if not extra.get("finished"):
            raise UserError(f"shard {shard} ({str(path)!r}) is not finished; run the pass again")
        total = stats if total is None else total + stats
    missing = [s for s in range(n_shards) if s not in seen]
    if missing or total is None:
        raise UserError(
            f"shards {missing[:8]} of {n_shards} are missing; run the pass for them first"
        )
    return total


__all__ = [
    "DEFAULT_SHARDS",
    "MANIFEST_FILE",
    "World",
    "all_reduce",
    "all_reduce_sum",
    "gather",
    "collect_sharded",
    "merge_shards",
    "read_manifest",
    "run_pass",
    "shard_batches",
    "shard_path",
]
