"""Exact ring attention (context parallelism) over torch.distributed: the forward passes K/V blocks
around the ring and merges each block's output by LSE; the backward passes K/V around again with
the dK/dV accumulators travelling behind them back to their owners. Layouts: docs/distributed.md.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import torch

from .. import _ops
from ..interface import (_check_rank, _check_scalars, _check_tensor, _op_input, _softmax_scale,
                         _window, attention_with_lse, pad_head_dim_for_cuda)
from ._comm import GRAD_TAG, KV_TAG, Ring, agree, wait
from .primitives import _rng_placeholder, block_window, merge_attn_output_


@dataclass(frozen=True)
class _Seg:
    """Rows [start, start + length) of the local shard hold positions [pos, pos + length) of
    sequence seq."""
    seq: int
    pos: int
    start: int
    length: int


@dataclass(frozen=True)
class _Call:
    """One kernel call of a ring step: local query rows qs, rows ks of the K/V block held, a
    bottom-right aligned window, and whether it is one varlen call over the whole pack."""
    qs: slice
    ks: slice
    left: int
    right: int
    varlen: bool = False


@dataclass
class _Spec:
    ring: Ring
    rows: int  # local rows (dim 1 of the 4-D view)
    plans: List[List[_Call]]  # plans[t]: the calls of ring step t
    scale: float
    softcap: float
    deterministic: bool
    cu: Optional[torch.Tensor] = None  # local cu_seqlens (varlen)
    max_local: int = 0


def _segments(layout: str, rank: int, world: int, rows: int,
              local_lens: Optional[List[int]]) -> List[_Seg]:
    if layout == "ring":
        return [_Seg(0, rank * rows, 0, rows)]
    if layout == "zigzag":
        c = rows // 2
        return [_Seg(0, rank * c, 0, c), _Seg(0, (2 * world - 1 - rank) * c, c, c)]
    segs, start = [], 0
    for b, m in enumerate(local_lens or []):
        segs.append(_Seg(b, rank * m, start, m))
        start += m
    return segs


def _plans(layout: str, ring: Ring, rows: int, window: Tuple[int, int],
           local_lens: Optional[List[int]]) -> List[List[_Call]]:
    """The calls of every step: at step t this rank holds the K/V block of rank (rank - t) % world.
    Fully masked blocks have no call."""
    full = slice(0, rows)
    if ring.world == 1:  # the shard is the whole sequence (both zigzag chunks, in order)
        return [[_Call(full, full, window[0], window[1], layout == "varlen")]]
    if layout == "varlen" and window[0] == -1 and window[1] in (-1, 0):
        # No window: every sequence relates to the held block the same way (fully visible, the
        # causal diagonal, or fully masked), so one varlen call per step covers the whole pack.
        plans = []
        for t in range(ring.world):
            src = (ring.rank - t) % ring.world
            if window[1] == -1 or src < ring.rank:
                plans.append([_Call(full, full, -1, -1, True)])
            elif src == ring.rank:
                plans.append([_Call(full, full, -1, 0, True)])
            else:
                plans.append([])
        return plans
    mine = _segments(layout, ring.rank, ring.world, rows, local_lens)
    plans = []
    for t in range(ring.world):
        theirs = _segments(layout, (ring.rank - t) % ring.world, ring.world, rows, local_lens)
        calls = []
        for qs in mine:
            for ks in theirs:
                if qs.seq != ks.seq or qs.length == 0 or ks.length == 0:
                    continue
                bc = block_window(qs.pos, qs.length, ks.pos, ks.length, window)
                if bc is not None:
                    calls.append(_Call(slice(qs.start + bc.q0, qs.start + bc.q1),
                                       slice(ks.start + bc.k0, ks.start + bc.k1),
                                       bc.left, bc.right))
        plans.append(calls)
    return plans


class _Acc:
    """A tensor accumulated over row slices of dim 1 (dim -1 for an lse-like partner). The first
    contribution covering every row is adopted as is (world size 1 then costs nothing extra and
    equals flash_attn_func bit for bit); otherwise sums run in float32."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.out: Optional[torch.Tensor] = None
        self.lse: Optional[torch.Tensor] = None

    def _whole(self, sl: slice) -> bool:
        return sl.start == 0 and sl.stop == self.rows

    def _fp32(self, like: torch.Tensor, lse_like: Optional[torch.Tensor]) -> None:
        if self.out is None:
            shape = (like.shape[0], self.rows) + tuple(like.shape[2:])
            self.out = torch.zeros(shape, dtype=torch.float32, device=like.device)
            if lse_like is not None:
                self.lse = torch.full(lse_like.shape[:-1] + (self.rows,), float("-inf"),
                                      dtype=torch.float32, device=like.device)
        elif self.out.dtype != torch.float32:
            self.out = self.out.float()

    def merge(self, sl: slice, out: torch.Tensor, lse: torch.Tensor) -> None:
        """Attention rows sl absorb a block's (out (B, rows, h, d), lse (B, h, rows))."""
        if self.out is None and self._whole(sl):
            self.out, self.lse = out, lse
            return
        self._fp32(out, lse)
        merge_attn_output_(self.out[:, sl], self.lse[:, :, sl], out, lse)

    def add(self, sl: slice, g: torch.Tensor) -> None:
        """Gradient rows sl absorb g (B, rows, h, d)."""
        if self.out is None and self._whole(sl):
            self.out = g
            return
        self._fp32(g, None)
        self.out[:, sl] += g


def _block_fwd(spec: _Spec, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, c: _Call
               ) -> Tuple[torch.Tensor, torch.Tensor]:
    if c.varlen:
        o, l, _, _ = _ops.ops.fwd(q[0], k[0], v[0], spec.cu, spec.cu, spec.max_local,
                                  spec.max_local, 0.0, spec.scale, c.left, c.right, spec.softcap,
                                  None, False, None, spec.deterministic)
        return o.unsqueeze(0), l.unsqueeze(0)
    o, l, _, _ = _ops.ops.fwd(q[:, c.qs], k[:, c.ks], v[:, c.ks], None, None, 0, 0, 0.0,
                              spec.scale, c.left, c.right, spec.softcap, None, False, None,
                              spec.deterministic)
    return o, l


def _block_bwd(spec: _Spec, dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               out: torch.Tensor, lse: torch.Tensor, rng: torch.Tensor, c: _Call,
               dlse: Optional[torch.Tensor] = None):
    """One block's (dq, dk, dv) given the GLOBAL out / lse, and dlse (like lse, or None): the
    gradient of the returned lse, whose d lse_i / d s_ij = P_ij with the global P is exactly each
    block's share, as for dout."""
    if c.varlen:
        return _ops.ops.bwd(dout[0], q[0], k[0], v[0], out[0], lse[0], spec.cu, spec.cu,
                            spec.max_local, spec.max_local, 0.0, spec.scale, c.left, c.right,
                            spec.softcap, None, spec.deterministic, rng,
                            None if dlse is None else dlse[0].contiguous())
    return _ops.ops.bwd(dout[:, c.qs], q[:, c.qs], k[:, c.ks], v[:, c.ks], out[:, c.qs],
                        lse[:, :, c.qs].contiguous(), None, None, 0, 0, 0.0, spec.scale, c.left,
                        c.right, spec.softcap, None, spec.deterministic, rng,
                        None if dlse is None else dlse[:, :, c.qs].contiguous())


def _unsq(gs, varlen: bool):
    return tuple(g.unsqueeze(0) for g in gs) if varlen else gs


def _ring_forward(spec: _Spec, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
                  ) -> Tuple[torch.Tensor, torch.Tensor]:
    """q (B, rows, h, d), k/v (B, rows, hk, d) contiguous -> out (q's dtype), lse float32."""
    ring, acc = spec.ring, _Acc(spec.rows)
    bufs = [(torch.empty_like(k), torch.empty_like(v)) for _ in range(min(2, ring.world - 1))]
    kc, vc = k, v
    for t in range(ring.world):
        reqs = None
        if t + 1 < ring.world:  # post the next block's transfer first: it overlaps the compute
            nk, nv = bufs[t % 2]
            reqs = ring.exchange([kc, vc], [nk, nv], KV_TAG)
        for c in spec.plans[t]:
            o, l = _block_fwd(spec, q, kc, vc, c)
            acc.merge(c.qs, o, l)
        if reqs is not None:
            wait(reqs)
            kc, vc = nk, nv
    if acc.out is None:  # no key anywhere (only empty sequences)
        return torch.zeros_like(q), torch.full((q.shape[0], q.shape[2], spec.rows),
                                               float("-inf"), device=q.device, dtype=torch.float32)
    return acc.out.to(q.dtype), acc.lse


def _ring_backward(spec: _Spec, dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor,
                   v: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
                   dlse: Optional[torch.Tensor] = None
                   ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The reverse ring: the K/V blocks travel as in the forward; the dK/dV accumulator of the
    block held at step t goes to the next rank, which holds that block at step t + 1, and after
    world steps it reaches the block's owner with every rank's contribution."""
    ring, rng = spec.ring, _rng_placeholder(q.device)
    dq = _Acc(spec.rows)
    bufs = [(torch.empty_like(k), torch.empty_like(v)) for _ in range(min(2, ring.world - 1))]
    kc, vc = k, v
    grad_reqs, grad_in, grad_sent = None, None, None
    dk = dv = None
    for t in range(ring.world):
        reqs = None
        if t + 1 < ring.world:
            nk, nv = bufs[t % 2]
            reqs = ring.exchange([kc, vc], [nk, nv], KV_TAG)
        dk_t, dv_t = _Acc(spec.rows), _Acc(spec.rows)
        for c in spec.plans[t]:
            gq, gk, gv = _unsq(_block_bwd(spec, dout, q, kc, vc, out, lse, rng, c, dlse), c.varlen)
            dq.add(c.qs, gq)
            dk_t.add(c.ks, gk)
            dv_t.add(c.ks, gv)
        dk, dv = dk_t.out, dv_t.out  # None when every block of the step was masked
        if ring.world == 1:
            break
        if t > 0:  # the accumulator of this block from the ranks that held it before (the
            # wait also completes the previous step's send, so its buffers may be dropped)
            wait(grad_reqs)
            dk_acc, dv_acc = grad_in
            if dk is not None:
                dk_acc.add_(dk)
                dv_acc.add_(dv)
        else:
            dk_acc = dk.float() if dk is not None else torch.zeros_like(k, dtype=torch.float32)
            dv_acc = dv.float() if dv is not None else torch.zeros_like(v, dtype=torch.float32)
        grad_in = (torch.empty_like(dk_acc), torch.empty_like(dv_acc))
        grad_reqs = ring.exchange([dk_acc, dv_acc], list(grad_in), GRAD_TAG)
        grad_sent = (dk_acc, dv_acc)  # kept alive until the send completes (the next wait)
        if reqs is not None:
            wait(reqs)
            kc, vc = nk, nv
    if ring.world > 1:  # the owner's block, back with the sum over the whole ring
        wait(grad_reqs)
        dk, dv = grad_in
        del grad_sent
    dq_out = dq.out if dq.out is not None else torch.zeros_like(q)
    dk = dk if dk is not None else torch.zeros_like(k)
    dv = dv if dv is not None else torch.zeros_like(v)
    return dq_out.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


class _RingAttnFunc(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spec: _Spec):
        out, lse = _ring_forward(spec, q, k, v)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.spec = spec
        # out and lse are both differentiable (lse as flash_attn_func's); a gradient that does not
        # flow arrives as None, not a zero tensor
        ctx.set_materialize_grads(False)
        return out, lse

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dout: Optional[torch.Tensor], dlse: Optional[torch.Tensor]):
        q, k, v, out, lse = ctx.saved_tensors
        # every rank runs the ring's exchanges, whatever reached its own loss
        if dout is None:
            dout = torch.zeros_like(out)
        if dout.shape[-1] > 1 and dout.stride(-1) != 1:  # e.g. expanded by out.sum().backward()
            dout = dout.contiguous()
        # CUDA: a broadcast dout (stride 0, e.g. from out.sum(1)) as flash_attn_func's backward
        # takes it: densified, so the Hopper kernels' TMA maps it (same kernel, same bits)
        dout = _ops.unbroadcast(dout)
        if dlse is not None:
            dlse = dlse.contiguous()
        dq, dk, dv = _ring_backward(ctx.spec, dout, q, k, v, out, lse, dlse)
        return dq, dk, dv, None


def _refuse_unsupported(fname: str, dropout_p, softcap, alibi_slopes) -> Tuple[float, float]:
    """What the ring refuses at any world size (dropout, ALiBi), with errors naming fname;
    returns the checked (dropout_p, softcap)."""
    dropout_p, softcap = _check_scalars(dropout_p, softcap)
    if dropout_p > 0.0:
        raise NotImplementedError(f"{fname}: dropout_p > 0 is not supported (the dropout mask is "
                                  "a function of block-local positions; see docs/distributed.md)")
    if alibi_slopes is not None:
        raise NotImplementedError(f"{fname}: alibi_slopes is not supported (see "
                                  "docs/distributed.md)")
    return dropout_p, softcap


def _validate(fname: str, layout: str, ring: Ring, q, k, v, cu_seqlens, max_seqlen, dropout_p,
              softmax_scale, causal, window_size, softcap, alibi_slopes, deterministic
              ) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Local checks of one rank's arguments. Returns (meta every rank must agree on, the parts of
    the call); raises ValueError / TypeError / NotImplementedError naming the argument."""
    varlen = layout == "varlen"
    rank_, shape_doc = (3, "(total_local, nheads, headdim)") if varlen else \
        (4, "(batch, seqlen_local, nheads, headdim)")
    q, k, v = _op_input(q, "q"), _op_input(k, "k"), _op_input(v, "v")
    for name, t in (("q", q), ("k", k), ("v", v)):
        _check_rank(t, name, rank_, shape_doc)
    if k.shape != v.shape:
        raise ValueError(f"v must have k's shape {tuple(k.shape)}, got {tuple(v.shape)}")
    if q.shape[:-2] != k.shape[:-2]:
        raise ValueError(f"k must have q's {'rows' if varlen else 'batch and local sequence'} "
                         f"length(s) {tuple(q.shape[:-2])} (the ring splits the sequence of "
                         f"self-attention), got shape {tuple(k.shape)}")
    if q.shape[-1] != k.shape[-1] or not 1 <= q.shape[-1] <= 256:
        raise ValueError(f"head_dim of q ({q.shape[-1]}) and k ({k.shape[-1]}) must be equal "
                         "and in [1, 256]")
    if k.shape[-2] == 0 or q.shape[-2] % k.shape[-2] != 0:
        raise ValueError(f"nheads of q ({q.shape[-2]}) must be a multiple of k's ({k.shape[-2]})")
    allowed = (torch.float16, torch.bfloat16) + ((torch.float32,) if q.device.type == "cpu"
                                                  else ())
    if q.dtype not in allowed:  # checked here, before the ring starts, not by the first kernel
        raise TypeError(f"q must be {' / '.join(str(a)[6:] for a in allowed)} on "
                        f"{q.device.type}, got {q.dtype}")
    for name, t in (("k", k), ("v", v)):
        if t.device != q.device or t.dtype != q.dtype:
            raise ValueError(f"{name} must have q's device and dtype ({q.device}, {q.dtype}), got "
                             f"{t.device}, {t.dtype}")
    dropout_p, softcap = _refuse_unsupported(fname, dropout_p, softcap, alibi_slopes)
    window = _window(window_size, causal)
    scale = _softmax_scale(softmax_scale, q.shape[-1])
    rows = q.shape[0] if varlen else q.shape[1]
    if layout == "zigzag" and rows % 2 != 0:
        raise ValueError(f"q: the zigzag layout needs an even local sequence length (chunks r and "
                         f"2*world-1-r of the sequence cut into 2*world chunks), got {rows}")
    local_lens, cu_local, max_local = None, None, 0
    meta: Dict[str, Any] = dict(world=ring.world, layout=layout, q_shape=tuple(q.shape), k_shape=tuple(k.shape),
                                dtype=str(q.dtype), device_type=q.device.type, window=window,
                                softmax_scale=scale, softcap=softcap,
                                deterministic=bool(deterministic))
    if varlen:
        cu = _check_tensor(cu_seqlens, "cu_seqlens")
        if cu.dim() != 1 or cu.numel() < 1 or cu.dtype not in (torch.int32, torch.int64):
            raise ValueError("cu_seqlens must be a 1-D int32 tensor of shape (b + 1,), got "
                             f"{cu.dtype} {tuple(cu.shape)}")
        glob = [int(x) for x in cu.tolist()]
        lens = [b - a for a, b in zip(glob[:-1], glob[1:])]
        if glob[0] != 0 or any(n < 0 for n in lens):
            raise ValueError(f"cu_seqlens must start at 0 and be non-decreasing, got {glob}")
        bad = [n for n in lens if n % ring.world]
        if bad:
            raise ValueError(f"cu_seqlens: every sequence length must be divisible by the world "
                             f"size {ring.world} (each rank holds 1/{ring.world} of each "
                             f"sequence), got lengths {bad}")
        if glob[-1] != ring.world * rows:
            raise ValueError(f"q has {rows} rows but cu_seqlens describes {glob[-1]} = "
                             f"{ring.world} x {glob[-1] / ring.world:g} rows: the shard does not "
                             f"match cu_seqlens for world size {ring.world} (sharded for another "
                             "world size?)")
        if max_seqlen is None or int(max_seqlen) < max(lens, default=0):
            raise ValueError(f"max_seqlen ({max_seqlen}) must be >= the longest sequence in "
                             f"cu_seqlens ({max(lens, default=0)})")
        local_lens = [n // ring.world for n in lens]
        cu_local = torch.tensor([g // ring.world for g in glob], dtype=torch.int32,
                                device=q.device)
        max_local = max(local_lens, default=0)
        meta["cu_seqlens"] = glob
    parts = dict(q=q, k=k, v=v, rows=rows, window=window, scale=scale, softcap=softcap,
                 local_lens=local_lens, cu_local=cu_local, max_local=max_local)
    return meta, parts


def ring_attention(fname: str, layout: str, q, k, v, cu_seqlens, max_seqlen, dropout_p,
                   softmax_scale, causal, window_size, softcap, alibi_slopes, deterministic,
                   return_attn_probs, group):
    """The shared body of the three public ring functions (see their docstrings)."""
    ring = Ring.of(group)
    if ring.world == 1:
        return _world_size_1(fname, layout, q, k, v, cu_seqlens, max_seqlen, dropout_p,
                             softmax_scale, causal, window_size, softcap, alibi_slopes,
                             deterministic, return_attn_probs)
    meta: Dict[str, Any] = {}
    parts: Dict[str, Any] = {}
    error: Optional[Exception] = None
    try:
        meta, parts = _validate(fname, layout, ring, q, k, v, cu_seqlens, max_seqlen, dropout_p,
                                softmax_scale, causal, window_size, softcap, alibi_slopes,
                                deterministic)
    except Exception as e:  # noqa: BLE001  every local failure must reach agree(), or the others hang
        error = e
    agree(ring, meta, error, fname)
    q, k, v = parts["q"], parts["k"], parts["v"]
    d = q.shape[-1]
    (q, k, v), pad = pad_head_dim_for_cuda(q, k, v)
    if layout == "varlen":
        q, k, v = q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0)
    spec = _Spec(ring=ring, rows=parts["rows"],
                 plans=_plans(layout, ring, parts["rows"], parts["window"], parts["local_lens"]),
                 scale=parts["scale"], softcap=parts["softcap"], deterministic=bool(deterministic),
                 cu=parts["cu_local"], max_local=parts["max_local"])
    # Point-to-point sends need contiguous tensors; the kernels take any other layout.
    out, lse = _RingAttnFunc.apply(q, k.contiguous(), v.contiguous(), spec)
    if layout == "varlen":
        out, lse = out[0], lse[0]
    if pad:
        out = out[..., :d]
    return (out, lse, None) if return_attn_probs else out


def _world_size_1(fname: str, layout: str, q, k, v, cu_seqlens, max_seqlen, dropout_p,
                  softmax_scale, causal, window_size, softcap, alibi_slopes, deterministic,
                  return_attn_probs):
    """A ring of one rank holds the whole sequence in order (both zigzag chunks too): the call is
    flash_attn_func / flash_attn_varlen_func itself, without the ring's planning and bookkeeping
    (measured: they cost the GPU 5-7 % of a 16k-token forward in host time). The arguments the
    ring refuses at any world size are refused here too, with the same errors, so a script
    tested on one rank does not fail on two."""
    _refuse_unsupported(fname, dropout_p, softcap, alibi_slopes)
    varlen = layout == "varlen"
    if varlen:
        _check_rank(_check_tensor(q, "q"), "q", 3, "(total_local, nheads, headdim)")
        if cu_seqlens is None:
            raise ValueError("cu_seqlens is required (int32 tensor of shape (b + 1,))")
    else:
        _check_rank(_check_tensor(q, "q"), "q", 4, "(batch, seqlen_local, nheads, headdim)")
        if layout == "zigzag" and q.shape[1] % 2 != 0:
            raise ValueError(f"q: the zigzag layout needs an even local sequence length (chunks "
                             f"r and 2*world-1-r of the sequence cut into 2*world chunks), got "
                             f"{q.shape[1]}")
    for name, t in (("k", k), ("v", v)):
        if isinstance(t, torch.Tensor) and isinstance(q, torch.Tensor) and \
                t.shape[:-2] != q.shape[:-2]:
            raise ValueError(f"{name} must have q's {'rows' if varlen else 'batch and local sequence'}"
                             f" length(s) {tuple(q.shape[:-2])} (the ring splits the sequence of "
                             f"self-attention), got shape {tuple(t.shape)}")
    out, lse, _ = attention_with_lse(q, k, v, cu_seqlens if varlen else None,
                                     cu_seqlens if varlen else None,
                                     max_seqlen if varlen else 0, max_seqlen if varlen else 0,
                                     0.0, softmax_scale, causal, window_size, softcap, None,
                                     deterministic)
    return (out, lse, None) if return_attn_probs else out
