"""Context parallelism: exact ring attention over torch.distributed (NCCL on GPUs, gloo on CPU),
forward and backward, with the same code for CPU and CUDA tensors.

Each rank of ``group`` holds a shard of the sequence dimension of q, k and v; K/V blocks travel
around the ring (point-to-point operations of torch.distributed only), each step computes one
block with the flash_attn_c kernel while the next block is in flight, and the partial outputs are
merged by their log-sum-exp. The result equals attention over the whole sequence up to float32
rounding of the merge; at world size 1 (or without an initialised process group) it is
flash_attn_func, bit for bit. Layouts, supported features and the primitives:
docs/distributed.md.

    ring_flash_attn_func          contiguous shards: rank r holds positions [r*s, (r+1)*s)
    zigzag_ring_flash_attn_func   rank r holds chunks r and 2*world-1-r of 2*world (causal balance)
    ring_flash_attn_varlen_func   packed sequences, rank r holds the r-th 1/world of each one
    zigzag_shard / zigzag_unshard, ring_shard / ring_unshard, varlen_shard: build/undo the layouts
    merge_attn_outputs, attn_forward_with_lse, attn_backward_with_lse, block_window: primitives
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.distributed as dist

from ._comm import Ring, agree
from .primitives import (BlockCall, attn_backward_with_lse, attn_forward_with_lse, block_window,
                         merge_attn_output_, merge_attn_outputs)
from .ring import ring_attention

Result = Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor, None]]


def ring_flash_attn_func(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0,
                         softmax_scale: Optional[float] = None, causal: bool = False,
                         window_size: Sequence[int] = (-1, -1), softcap: float = 0.0,
                         alibi_slopes: Optional[torch.Tensor] = None, deterministic: bool = False,
                         return_attn_probs: bool = False,
                         group: Optional[dist.ProcessGroup] = None) -> Result:
    """Attention over a sequence split contiguously over the ranks of ``group``.

    q: (b, s_local, h, d), k/v: (b, s_local, hk, d) (h % hk == 0; GQA without repeating K/V): rank
    r's shard, positions [r * s_local, (r + 1) * s_local) of the whole sequence of length
    world * s_local. causal / window_size / softcap / softmax_scale mean what they mean for
    flash_attn_func on the whole sequence. Returns this rank's output shard (b, s_local, h, d), or
    (out, lse (b, h, s_local) float32, None) with return_attn_probs (probabilities are not
    materialised). Differentiable in q, k, v (the backward is a second ring). Every rank of the
    group must call it with the same arguments and shard shapes; bad input on any rank raises on
    every rank. dropout_p > 0 and alibi_slopes raise NotImplementedError.
    """
    return ring_attention("ring_flash_attn_func", "ring", q, k, v, None, None, dropout_p,
                          softmax_scale, causal, window_size, softcap, alibi_slopes, deterministic,
                          return_attn_probs, group)


def zigzag_ring_flash_attn_func(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                dropout_p: float = 0.0, softmax_scale: Optional[float] = None,
                                causal: bool = False, window_size: Sequence[int] = (-1, -1),
                                softcap: float = 0.0, alibi_slopes: Optional[torch.Tensor] = None,
                                deterministic: bool = False, return_attn_probs: bool = False,
                                group: Optional[dist.ProcessGroup] = None) -> Result:
    """ring_flash_attn_func for the zigzag layout: the sequence is cut into 2 * world chunks and
    rank r holds chunks r and 2 * world - 1 - r, concatenated (build it with zigzag_shard). With
    causal=True every rank then does the same work. s_local must be even."""
    return ring_attention("zigzag_ring_flash_attn_func", "zigzag", q, k, v, None, None,
                          dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes,
                          deterministic, return_attn_probs, group)


def ring_flash_attn_varlen_func(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                cu_seqlens: torch.Tensor, max_seqlen: int, dropout_p: float = 0.0,
                                softmax_scale: Optional[float] = None, causal: bool = False,
                                window_size: Sequence[int] = (-1, -1), softcap: float = 0.0,
                                alibi_slopes: Optional[torch.Tensor] = None,
                                deterministic: bool = False, return_attn_probs: bool = False,
                                group: Optional[dist.ProcessGroup] = None) -> Result:
    """Ring attention on packed variable-length sequences.

    cu_seqlens (b + 1,) int32 and max_seqlen describe the WHOLE packed batch (the same on every
    rank); every sequence length must be divisible by the world size. Rank r holds, packed in
    order, positions [r * n_i / world, (r + 1) * n_i / world) of each sequence i (build it with
    varlen_shard): q (total / world, h, d), k/v (total / world, hk, d). Returns out
    (total / world, h, d), or (out, lse (h, total / world), None). Without a window (causal or
    not) each ring step is one varlen kernel call; with a window, one call per sequence.
    """
    return ring_attention("ring_flash_attn_varlen_func", "varlen", q, k, v, cu_seqlens,
                          max_seqlen, dropout_p, softmax_scale, causal, window_size, softcap,
                          alibi_slopes, deterministic, return_attn_probs, group)


def _layout_check(x: torch.Tensor, dim: int, parts: int, fname: str, ring: Ring) -> int:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{fname}: x must be a torch.Tensor, got {type(x).__name__}")
    dim = dim % x.dim()
    if x.shape[dim] % parts != 0:
        raise ValueError(f"{fname}: x.shape[{dim}] = {x.shape[dim]} must be divisible by {parts} "
                         f"(world size {ring.world})")
    return dim


def zigzag_shard(x: torch.Tensor, dim: int = 1,
                 group: Optional[dist.ProcessGroup] = None) -> torch.Tensor:
    """This rank's zigzag shard of the whole tensor x: along dim, x cut into 2 * world chunks,
    chunks r and 2 * world - 1 - r concatenated. x.shape[dim] must be divisible by 2 * world."""
    ring = Ring.of(group)
    dim = _layout_check(x, dim, 2 * ring.world, "zigzag_shard", ring)
    chunks = x.chunk(2 * ring.world, dim)
    return torch.cat([chunks[ring.rank], chunks[2 * ring.world - 1 - ring.rank]], dim)


def _gather(x: torch.Tensor, dim: int, ring: Ring, fname: str) -> List[torch.Tensor]:
    meta = dict(shape=tuple(x.shape), dtype=str(x.dtype), dim=dim)
    agree(ring, meta, None, fname)
    if ring.world == 1:
        return [x]
    parts = [torch.empty_like(x, memory_format=torch.contiguous_format)
             for _ in range(ring.world)]
    dist.all_gather(parts, x.contiguous(), group=ring.group)
    return parts


def zigzag_unshard(x: torch.Tensor, dim: int = 1,
                   group: Optional[dist.ProcessGroup] = None) -> torch.Tensor:
    """The whole tensor from every rank's zigzag shard x (an all_gather; not differentiable)."""
    ring = Ring.of(group)
    error = None
    try:
        dim = _layout_check(x, dim, 2, "zigzag_unshard", ring)
    except (TypeError, ValueError) as e:
        error = e
    agree(ring, {}, error, "zigzag_unshard")
    parts = _gather(x, dim, ring, "zigzag_unshard")
    halves = [p.chunk(2, dim) for p in parts]
    return torch.cat([h[0] for h in halves] + [h[1] for h in reversed(halves)], dim)


def ring_shard(x: torch.Tensor, dim: int = 1,
               group: Optional[dist.ProcessGroup] = None) -> torch.Tensor:
    """This rank's contiguous shard of x along dim (x.shape[dim] divisible by the world size)."""
    ring = Ring.of(group)
    dim = _layout_check(x, dim, ring.world, "ring_shard", ring)
    return x.chunk(ring.world, dim)[ring.rank]


def ring_unshard(x: torch.Tensor, dim: int = 1,
                 group: Optional[dist.ProcessGroup] = None) -> torch.Tensor:
    """The whole tensor from every rank's contiguous shard x (an all_gather; not differentiable)."""
    ring = Ring.of(group)
    return torch.cat(_gather(x, dim % x.dim(), ring, "ring_unshard"), dim)


def varlen_shard(x: torch.Tensor, cu_seqlens: torch.Tensor,
                 group: Optional[dist.ProcessGroup] = None) -> torch.Tensor:
    """This rank's rows of a packed tensor x (total, ...) for ring_flash_attn_varlen_func: the
    r-th 1/world of every sequence of cu_seqlens, packed in order (total / world, ...)."""
    ring = Ring.of(group)
    cu = [int(c) for c in cu_seqlens.tolist()]
    lens = [b - a for a, b in zip(cu[:-1], cu[1:])]
    if any(n % ring.world for n in lens):
        raise ValueError(f"varlen_shard: every sequence length in cu_seqlens must be divisible by "
                         f"the world size {ring.world}, got {lens}")
    if cu[-1] != x.shape[0]:
        raise ValueError(f"varlen_shard: x has {x.shape[0]} rows, cu_seqlens[-1] = {cu[-1]}")
    idx = [a + ring.rank * (n // ring.world) + i
           for a, n in zip(cu[:-1], lens) for i in range(n // ring.world)]
    return x[torch.tensor(idx, dtype=torch.long, device=x.device)]


__all__ = [
    "ring_flash_attn_func",
    "zigzag_ring_flash_attn_func",
    "ring_flash_attn_varlen_func",
    "zigzag_shard",
    "zigzag_unshard",
    "ring_shard",
    "ring_unshard",
    "varlen_shard",
    "merge_attn_outputs",
    "merge_attn_output_",
    "attn_forward_with_lse",
    "attn_backward_with_lse",
    "block_window",
    "BlockCall",
]
