"""This process's place in a launch: ``torchrun``'s (or any launcher's) environment.

Only ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and, for a connected launch,
``MASTER_ADDR`` are read; no torch import, so the command line can ask cheaply.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from mlneurons.errors import UserError


@dataclass(frozen=True)
class World:
    """This process's place among the processes of a launch (``torchrun``'s environment)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> World:
        try:
            rank, size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
            local = int(os.environ.get("LOCAL_RANK", rank))
        except ValueError as exc:
            raise UserError(f"RANK/WORLD_SIZE/LOCAL_RANK must be integers: {exc}") from None
        if not 0 <= rank < size:
            raise UserError(f"RANK={rank} is not in 0..WORLD_SIZE-1 (WORLD_SIZE={size})")
        return cls(rank, size, local)

    @property
    def connected(self) -> bool:
        """Whether the processes can reach each other (a torchrun-style rendezvous)."""
        return self.size > 1 and "MASTER_ADDR" in os.environ

    def shards(self, n_shards: int) -> list[int]:
        """The logical shards this rank computes."""
        return [s for s in range(n_shards) if s % self.size == self.rank]


__all__ = ["World"]
