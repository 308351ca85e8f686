"""Building blocks of blockwise (ring, context-parallel) attention, public so other schemes can
reuse them.

- ``attn_forward_with_lse``: one block's attention and its log-sum-exp, no autograd.
- ``merge_attn_outputs``: exact combination of partial attentions over disjoint key sets by LSE.
- ``attn_backward_with_lse``: one block's contribution to dq/dk/dv, given the GLOBAL output and LSE
  of the merged attention (the backward recomputes P_ij = exp(s_ij - LSE_i) from the LSE it is
  given, and D_i = rowsum(dO_i * O_i) from the output, so with the global ones each block's
  gradients are exactly its share of the whole attention's gradients).
- ``block_window``: the (rows, keys, window) of a kernel call that applies a GLOBAL band mask to a
  block whose queries and keys start at arbitrary global positions.

Shapes: dense q (b, sq, h, d), k/v (b, sk, hk, d), out (b, sq, h, d), lse float32 (b, h, sq);
varlen (cu_seqlens given) q (total_q, h, d), k/v (total_k, hk, d), lse (h, total_q).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch

from .. import _ops
from ..interface import _softmax_scale, _window

INF = math.inf


def _rng_placeholder(device: torch.device) -> torch.Tensor:
    """The bwd op takes an rng_state tensor even without dropout (then it is not read)."""
    return torch.zeros(2, dtype=torch.int64, device=device)


def attn_forward_with_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                          softmax_scale: Optional[float] = None, causal: bool = False,
                          window_size: Sequence[int] = (-1, -1), softcap: float = 0.0,
                          deterministic: bool = False, cu_seqlens_q: Optional[torch.Tensor] = None,
                          cu_seqlens_k: Optional[torch.Tensor] = None, max_seqlen_q: int = 0,
                          max_seqlen_k: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """One block of attention with our kernel (bottom-right aligned masks, docs/conventions.md),
    without autograd. Returns out (like q, in q's dtype) and lse float32 ((b, h, sq) dense,
    (h, total_q) varlen); rows that see no key give out 0 and lse -inf."""
    left, right = _window(window_size, causal)
    scale = _softmax_scale(softmax_scale, q.shape[-1])
    with torch.no_grad():
        out, lse, _, _ = _ops.ops.fwd(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                                      max_seqlen_k, 0.0, scale, left, right, float(softcap), None,
                                      False, None, bool(deterministic))
    return out, lse


def attn_backward_with_lse(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                           out: torch.Tensor, lse: torch.Tensor,
                           softmax_scale: Optional[float] = None, causal: bool = False,
                           window_size: Sequence[int] = (-1, -1), softcap: float = 0.0,
                           deterministic: bool = False,
                           cu_seqlens_q: Optional[torch.Tensor] = None,
                           cu_seqlens_k: Optional[torch.Tensor] = None, max_seqlen_q: int = 0,
                           max_seqlen_k: int = 0, dlse: Optional[torch.Tensor] = None
                           ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of attention of q over this block of keys (k, v), given the output ``out`` (like
    q, q's dtype) and ``lse`` (float32, (b, h, sq) dense / (h, total_q) varlen; made contiguous
    here) of the WHOLE attention the block is part of. Summing the returned (dq, dk, dv) (shapes
    of q, k, v; dk/dv summed over GQA groups) over all key blocks gives the exact gradients of the
    whole attention. With the block's own out/lse it is the ordinary backward of that block.
    dlse (like lse, or None): the gradient of the whole attention's lse (d lse_i / d s_ij = P_ij),
    added to every block's share the same way."""
    left, right = _window(window_size, causal)
    scale = _softmax_scale(softmax_scale, q.shape[-1])
    with torch.no_grad():
        return _ops.ops.bwd(dout, q, k, v, out, lse.contiguous(), cu_seqlens_q, cu_seqlens_k,
                            max_seqlen_q, max_seqlen_k, 0.0, scale, left, right, float(softcap),
                            None, bool(deterministic), _rng_placeholder(q.device),
                            None if dlse is None else dlse.contiguous())


def _lse_weight(lse: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """exp(lse - total) laid out to multiply an output: lse (..., h, s) -> (..., s, h, 1); 0 where
    lse = -inf (also when total = -inf: no key at all, never NaN)."""
    safe = torch.where(torch.isneginf(total), torch.zeros_like(total), total)
    return torch.exp(lse - safe).transpose(-1, -2).unsqueeze(-1)


def merge_attn_outputs(outs: Sequence[torch.Tensor], lses: Sequence[torch.Tensor]
                       ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Exact attention over the union of disjoint key sets from the attentions over each set.

    outs[i]: (b, s, h, d) or (total, h, d); lses[i]: float32 (b, h, s) or (h, total), -inf where
    the row saw no key of set i. Returns out float32 (same shape) and lse float32:
        lse = log sum_i exp(lses[i]),   out = sum_i exp(lses[i] - lse) * outs[i]
    Rows that saw no key in any set give out 0, lse -inf (no NaN).
    """
    if len(outs) != len(lses) or not outs:
        raise ValueError(f"merge_attn_outputs needs as many outs as lses (>= 1), got {len(outs)} "
                         f"and {len(lses)}")
    shape = tuple(outs[0].shape)
    if len(shape) not in (3, 4):
        raise ValueError(f"merge_attn_outputs: outs[0] must be (b, s, h, d) or (total, h, d), got {shape}")
    # (b, s, h, d) -> lse (b, h, s); (total, h, d) -> lse (h, total)
    want = shape[:-3] + (shape[-2], shape[-3])
    for i, (o, l) in enumerate(zip(outs, lses)):
        if tuple(o.shape) != shape:
            raise ValueError(f"merge_attn_outputs: outs[{i}] has shape {tuple(o.shape)}, outs[0] {shape}")
        if tuple(l.shape) != want:
            raise ValueError(f"merge_attn_outputs: lses[{i}] has shape {tuple(l.shape)}, want {want} for outs of "
                             f"shape {shape}")
    lse = torch.logsumexp(torch.stack([x.float() for x in lses]), dim=0)
    out = torch.zeros(outs[0].shape, dtype=torch.float32, device=outs[0].device)
    for o, l in zip(outs, lses):
        out += _lse_weight(l.float(), lse) * o.float()
    return out, lse


def merge_attn_output_(out: torch.Tensor, lse: torch.Tensor, block_out: torch.Tensor,
                       block_lse: torch.Tensor) -> None:
    """In-place running form of merge_attn_outputs: out float32 (b, s, h, d) and lse float32
    (b, h, s) (views allowed) absorb block_out / block_lse of the same shapes."""
    new = torch.logaddexp(lse, block_lse)
    w_old, w_new = _lse_weight(lse, new), _lse_weight(block_lse, new)
    out.mul_(w_old).addcmul_(w_new, block_out)  # no temporary of out's size
    lse.copy_(new)


@dataclass(frozen=True)
class BlockCall:
    """A kernel call covering rows [q0, q1) of a query segment and keys [k0, k1) of a key segment
    (segment-relative), with the bottom-right aligned window (left, right) that reproduces the
    global mask there (-1 = unbounded)."""
    q0: int
    q1: int
    k0: int
    k1: int
    left: int
    right: int


def block_window(q_pos: int, sq: int, k_pos: int, sk: int, window: Tuple[int, int]
                 ) -> Optional[BlockCall]:
    """The call that applies the global band mask of one sequence to a block of it.

    Queries at global positions [q_pos, q_pos + sq) and keys at [k_pos, k_pos + sk) of one
    sequence whose query and key lengths are equal (self-attention, so its bottom-right mask is
    the top-left one): global query i sees global key j iff i - left <= j <= i + right (-1 =
    unbounded; causal is right = 0). Returns None when no query of the block sees any key of it
    (skip the block), else the smallest sub-rectangle holding every visible pair and the
    (left, right) of a bottom-right aligned call on it (both >= 0 or -1; (-1, -1) when every pair
    of the rectangle is visible).
    """
    left, right = window
    d = k_pos - q_pos  # j_g - i_g = (j - i) + d for block-local i, j
    lo = -INF if left < 0 else -left - d  # visible iff lo <= j - i <= hi
    hi = INF if right < 0 else right - d
    r0, r1 = max(0, -hi), min(sq - 1, sk - 1 - lo)  # rows that see some key
    c0, c1 = max(0, lo), min(sk - 1, sq - 1 + hi)  # keys some row sees
    if r0 > r1 or c0 > c1:
        return None
    r0, r1, c0, c1 = int(r0), int(r1), int(c0), int(c1)
    nq, nk = r1 - r0 + 1, c1 - c0 + 1
    lo, hi = lo - c0 + r0, hi - c0 + r0  # band in the sub-rectangle's coordinates
    if lo <= -(nq - 1) and hi >= nk - 1:
        return BlockCall(r0, r1 + 1, c0, c1 + 1, -1, -1)
    c = nk - nq  # the bottom-right diagonal of the call: j - i = c
    wl = -1 if lo == -INF else int(c - lo)
    wr = -1 if hi == INF else int(hi - c)
    # The trimming guarantees lo <= c <= hi (the last row sees a key, the last key is seen).
    assert wl >= -1 and wr >= -1 and (wl != -1 or lo == -INF) and (wr != -1 or hi == INF)
    return BlockCall(r0, r1 + 1, c0, c1 + 1, wl, wr)
