"""The ring over a torch.distributed group: neighbours, non-blocking exchanges, and the agreement
check that turns bad input on any rank into the same error on every rank (instead of a hang)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.distributed as dist

KV_TAG, GRAD_TAG = 0, 1  # distinct tags keep the K/V and dK/dV streams apart on gloo


@dataclass
class Ring:
    """This rank's place in the ring of ``group`` (None = the default group; without an
    initialised process group the ring is this process alone). next/prev are global ranks."""
    group: Optional[dist.ProcessGroup]
    world: int
    rank: int
    next: int
    prev: int

    @staticmethod
    def of(group: Optional[dist.ProcessGroup]) -> "Ring":
        if not dist.is_available() or not dist.is_initialized():
            if group is not None:
                raise RuntimeError("group was given but torch.distributed is not initialised")
            return Ring(None, 1, 0, 0, 0)
        g = group if group is not None else dist.group.WORLD
        world, rank = dist.get_world_size(g), dist.get_rank(g)
        if rank < 0:
            raise RuntimeError("this process is not a member of the given group")
        return Ring(group, world, rank, dist.get_global_rank(g, (rank + 1) % world),
                    dist.get_global_rank(g, (rank - 1) % world))

    def exchange(self, sends: Sequence[torch.Tensor], recvs: Sequence[torch.Tensor],
                 tag: int) -> List[Any]:
        """Posts sends to the next rank and receives from the previous one, non-blocking (the
        caller computes while they travel, then waits on the returned requests)."""
        ops = [dist.P2POp(dist.isend, t, self.next, self.group, tag) for t in sends]
        ops += [dist.P2POp(dist.irecv, t, self.prev, self.group, tag) for t in recvs]
        return dist.batch_isend_irecv(ops)


def wait(requests: Optional[List[Any]]) -> None:
    for r in requests or ():
        r.wait()


def agree(ring: Ring, meta: Dict[str, Any], error: Optional[Exception], what: str) -> None:
    """Every rank calls this before any point-to-point traffic. It gathers each rank's call
    description (meta) and local input error, and raises on EVERY rank when any rank had an error
    or the ranks disagree on meta, so no rank goes on into a ring the others left (a hang).
    One small all_gather_object; nothing at world size 1."""
    if ring.world == 1:
        if error is not None:
            raise error
        return
    g = ring.group if ring.group is not None else dist.group.WORLD
    mine = (meta, None if error is None else (type(error).__name__, str(error)))
    gathered: List[Any] = [None] * ring.world
    dist.all_gather_object(gathered, mine, group=g)
    if error is not None:
        raise error
    for r, (_, err) in enumerate(gathered):
        if err is not None:
            cls = {"ValueError": ValueError, "TypeError": TypeError,
                   "NotImplementedError": NotImplementedError}.get(err[0], RuntimeError)
            raise cls(f"{what}: rank {r} of the group rejected its input: {err[1]}")
    for key in meta:
        values = [m[key] for m, _ in gathered]
        if any(v != values[0] for v in values):
            detail = ", ".join(f"rank {r}: {v}" for r, v in enumerate(values))
            raise ValueError(f"{what}: the ranks of the group disagree on {key} ({detail}); "
                             "every rank must pass the same arguments and shards of one shape")
