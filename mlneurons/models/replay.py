"""Block replay: record one forward pass and resume it from any block with another residual."""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from mlneurons.models.bridge import TransformerBridge
from mlneurons.models.hooks import is_masked_lm


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


def hf_blocks(model: TransformerBridge) -> tuple[list[torch.nn.Module], torch.nn.Module]:
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
