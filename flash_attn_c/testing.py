"""Reference attention, for checking flash_attn_c (or any attention kernel) on your own setup.

``attention_ref`` is attention computed by its definition (docs/conventions.md): scores, the
bottom-right aligned causal / sliding-window mask, softcap, ALiBi, softmax, dropout, the weighted
sum of V. It materializes the full (b, h, sq, sk) score matrix, so it is for small shapes only.
``upcast=True`` (the default) computes in float64: the oracle this project's tests and
``python -m flash_attn_c.bench`` measure against. ``upcast=False`` computes the same ops in the
inputs' own dtype: what plain PyTorch code gets in low precision, the baseline of the
error-ratio rule (an fp16/bf16 kernel should be at most about 2x as far from the float64 result
as that baseline; 3x for gradients).

    import torch, flash_attn_c
    from flash_attn_c.testing import attention_ref

    q = torch.randn(2, 128, 8, 64, dtype=torch.bfloat16)       # (b, sq, h, d)
    k = torch.randn(2, 128, 2, 64, dtype=torch.bfloat16)       # (b, sk, hk, d)
    v = torch.randn(2, 128, 2, 64, dtype=torch.bfloat16)
    out = flash_attn_c.flash_attn_func(q, k, v, causal=True)
    ref = attention_ref(q, k, v, causal=True)                  # float64
    low = attention_ref(q, k, v, causal=True, upcast=False)    # bf16, same formula
    err = (out.double() - ref.out).abs().max()
    base = (low.out.double() - ref.out).abs().max()            # expect err <= 2 * base (+ a tiny floor)

GQA / MQA (hk < h) is handled here by repeating K/V heads inside the reference; the library
itself never does that. Only torch is needed: nothing here calls the compiled extension.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence, Tuple, TypeVar

import torch

from ._dropout import dropout_keep_prob

__all__ = ["RefResult", "alibi_distance", "attention_ref", "capture_cuda_graph", "cu_from_lens",
           "ref_forward_backward", "visible_mask", "window_sides"]

T = TypeVar("T")


# --------------------------------------------------------------------------------------------
# masks
# --------------------------------------------------------------------------------------------


def window_sides(sq: int, sk: int, left: int, right: int) -> Tuple[int, int]:
    """(left, right) with a side at least as wide as the sequence it bounds made -1 (unbounded):
    left >= sk reaches before key 0 from every row, right >= sq past key sk - 1. Taken before any
    i + sk - sq +- w sum, which a side near 2**63 would overflow in int64 (the C side's
    fa_window_clamp)."""
    return (-1 if left >= sk else left), (-1 if right >= sq else right)


def visible_mask(sq: int, sk: int, window: Sequence[int] = (-1, -1), causal: bool = False,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """Which keys each query may see, bool (sq, sk), aligned to the bottom-right corner.

    Query i sees key j iff ``i + sk - sq - left <= j <= i + sk - sq + right`` with
    ``window = (left, right)``, -1 = unbounded; ``causal=True`` forces right = 0 (flash-attn's
    rule). With sq == sk that is torch's top-left ``is_causal`` triangle; with sq < sk the last
    query sees every key.
    """
    left, right = int(window[0]), int(window[1])
    if causal:
        right = 0
    left, right = window_sides(sq, sk, left, right)
    i = torch.arange(sq, device=device).unsqueeze(1)
    j = torch.arange(sk, device=device).unsqueeze(0)
    diag = i + sk - sq
    vis = torch.ones(sq, sk, dtype=torch.bool, device=device)
    if left >= 0:
        vis &= j >= diag - left
    if right >= 0:
        vis &= j <= diag + right
    return vis


def alibi_distance(sq: int, sk: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """ALiBi's distance ``|i + sk - sq - j|`` (bottom-right aligned), float64 (sq, sk); the bias
    added to score (i, j) is ``-slope * alibi_distance(sq, sk)[i, j]``."""
    i = torch.arange(sq, device=device, dtype=torch.float64).unsqueeze(1)
    j = torch.arange(sk, device=device, dtype=torch.float64).unsqueeze(0)
    return (i + sk - sq - j).abs()


def cu_from_lens(lens: Sequence[int], device: torch.device | str = "cpu") -> torch.Tensor:
    """Cumulative sequence lengths for the varlen API, int32 (len(lens) + 1,): [0, l0, l0+l1, ...]."""
    c = [0]
    for n in lens:
        c.append(c[-1] + int(n))
    return torch.tensor(c, dtype=torch.int32, device=device)


# --------------------------------------------------------------------------------------------
# the reference
# --------------------------------------------------------------------------------------------


@dataclass
class RefResult:
    """What ``attention_ref`` returns.

    out: like q (float64 when upcast). lse: (b, h, sq) dense, (h, total_q) varlen; float64 when
    upcast, else float32; -inf on rows that see no key. probs: softmax before dropout,
    (b, h, sq, sk) dense, (b, h, max_sq, max_sk) zero padded varlen. grads: (dq, dk, dv) when
    ``ref_forward_backward`` was given an output gradient, else ().
    """
    out: torch.Tensor
    lse: torch.Tensor
    probs: torch.Tensor
    grads: tuple = field(default_factory=tuple)


def _attention_dense(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool,
                     window: Sequence[int], softcap: float, alibi_slopes: Optional[torch.Tensor],
                     dropout_mask: Optional[torch.Tensor], dropout_p: float,
                     softmax_scale: Optional[float], upcast: bool):
    """Dense reference. q (b, sq, h, d), k/v (b, sk, hk, d); alibi (h,) or (b, h);
    dropout_mask bool (b, h, sq, sk), True = kept. Differentiable w.r.t. q, k, v.
    Returns out (b, sq, h, d), lse (b, h, sq), probs (b, h, sq, sk)."""
    b, sq, h, d = q.shape
    sk, hk = k.shape[1], k.shape[2]
    assert h % hk == 0, "reference needs h % hk == 0"
    ct = torch.float64 if upcast else q.dtype
    scale = d ** -0.5 if softmax_scale is None else softmax_scale
    g = h // hk
    qc = q.to(ct)
    kc = k.to(ct).repeat_interleave(g, dim=2)  # query head i reads kv head i // g
    vc = v.to(ct).repeat_interleave(g, dim=2)
    s = torch.einsum("bqhd,bkhd->bhqk", qc, kc) * scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    if alibi_slopes is not None:
        slopes = alibi_slopes.to(torch.float64)
        slopes = slopes.view(1, h, 1, 1) if slopes.dim() == 1 else slopes.view(b, h, 1, 1)
        s = s + (-slopes * alibi_distance(sq, sk, q.device)).to(ct)
    vis = visible_mask(sq, sk, window, causal, q.device)  # (sq, sk)
    row_empty = ~vis.any(dim=-1, keepdim=True)  # (sq, 1)
    s_masked = s.masked_fill(~vis, float("-inf"))
    # Empty rows: softmax (and logsumexp) over all -inf is NaN in the gradient; give those rows a
    # harmless finite input (zeros), then zero their probabilities and set their lse to -inf, so
    # values and gradients are exactly 0 there. lse is differentiable (d lse_i / d s_ij = P_ij).
    s_lse = s_masked if upcast else s_masked.float()
    lse = torch.logsumexp(torch.where(row_empty, torch.zeros_like(s_lse), s_lse), dim=-1)
    lse = lse.masked_fill(row_empty.squeeze(-1), float("-inf"))
    p = torch.softmax(torch.where(row_empty, torch.zeros_like(s_masked), s_masked), dim=-1)
    p = p * vis.to(p.dtype)
    if dropout_mask is not None:
        assert dropout_p > 0, "a dropout_mask needs dropout_p > 0 for the 1/(1-p) scale"
        # the kernels' scale: 1 / (1 - p_q), p quantised to 1/256 (flash_attn_c._dropout)
        p_drop = p * dropout_mask.to(p.dtype) * (1.0 / dropout_keep_prob(dropout_p))
    else:
        p_drop = p
    out = torch.einsum("bhqk,bkhd->bqhd", p_drop, vc)
    return out, lse, p


def attention_ref(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
                  window: Sequence[int] = (-1, -1), softcap: float = 0.0,
                  alibi_slopes: Optional[torch.Tensor] = None,
                  dropout_mask: Optional[torch.Tensor] = None, dropout_p: float = 0.0,
                  softmax_scale: Optional[float] = None,
                  cu_seqlens_q: Optional[torch.Tensor] = None,
                  cu_seqlens_k: Optional[torch.Tensor] = None,
                  max_seqlen_q: Optional[int] = None, max_seqlen_k: Optional[int] = None,
                  upcast: bool = True) -> RefResult:
    """Attention by definition (docs/conventions.md), float64 when upcast else in q's dtype.

    Dense: q (b, sq, h, d), k/v (b, sk, hk, d) -> out (b, sq, h, d), lse (b, h, sq),
    probs (b, h, sq, sk). Varlen (cu_seqlens_* given, int32 (b + 1,)): q (total_q, h, d),
    k/v (total_k, hk, d) -> out (total_q, h, d), lse (h, total_q), probs (b, h, max_sq, max_sk)
    zero padded; each sequence uses its own sq/sk for masks and ALiBi.

    window (left, right) and causal as in ``visible_mask``; softcap > 0 gives
    ``softcap * tanh(s / softcap)``; alibi_slopes (h,) or (b, h) add ``-slope * |i + sk - sq - j|``;
    softmax_scale defaults to d ** -0.5. dropout_mask bool (b, h, sq, sk) (varlen: indexed by
    (sequence, head, local i, local j) from (b, h, max_sq, max_sk)), True = kept, scaled by
    1 / (1 - p_q), p_q = dropout_p rounded to a multiple of 1/256 as the kernels draw it
    (``flash_attn_c._dropout.dropout_keep_prob``); ``flash_attn_c.dropout_mask`` gives the
    library's own mask.
    Rows that see no key: out 0, lse -inf, probs 0, gradients 0. Varlen rows that no sequence
    covers (before cu_seqlens_q[0], from cu_seqlens_q[-1] on) are out 0, lse -inf as well
    (docs/conventions.md). out and lse are differentiable w.r.t. q, k, v.
    """
    kw = dict(causal=causal, window=window, softcap=softcap, dropout_p=dropout_p,
              softmax_scale=softmax_scale, upcast=upcast)
    if cu_seqlens_q is None:
        out, lse, p = _attention_dense(q, k, v, alibi_slopes=alibi_slopes,
                                       dropout_mask=dropout_mask, **kw)
        return RefResult(out, lse, p)
    if cu_seqlens_k is None:
        raise ValueError("attention_ref: cu_seqlens_k is required with cu_seqlens_q")
    cq = [int(x) for x in cu_seqlens_q.tolist()]
    ck = [int(x) for x in cu_seqlens_k.tolist()]
    for name, cu, rows in (("cu_seqlens_q", cq, q.shape[0]), ("cu_seqlens_k", ck, k.shape[0])):
        if not cu or cu[0] < 0 or any(b < a for a, b in zip(cu[:-1], cu[1:])) or cu[-1] > rows:
            raise ValueError(f"attention_ref: {name} must be non-decreasing from >= 0 to at most the "
                             f"{rows} rows, got {cu}")
    if len(cq) != len(ck):
        raise ValueError(f"attention_ref: cu_seqlens_q and cu_seqlens_k describe {len(cq) - 1} and "
                         f"{len(ck) - 1} sequences")
    nb = len(cq) - 1
    h = q.shape[1]
    mq = max_seqlen_q if max_seqlen_q is not None else max([cq[i + 1] - cq[i] for i in range(nb)] + [0])
    mk = max_seqlen_k if max_seqlen_k is not None else max([ck[i + 1] - ck[i] for i in range(nb)] + [0])
    outs, lses = [], []
    ct = torch.float64 if upcast else q.dtype
    probs = torch.zeros(nb, h, mq, mk, dtype=ct, device=q.device)
    for i in range(nb):
        qs = q[cq[i]:cq[i + 1]].unsqueeze(0)
        ks = k[ck[i]:ck[i + 1]].unsqueeze(0)
        vs = v[ck[i]:ck[i + 1]].unsqueeze(0)
        sq, sk = qs.shape[1], ks.shape[1]
        al = None
        if alibi_slopes is not None:
            al = alibi_slopes if alibi_slopes.dim() == 1 else alibi_slopes[i:i + 1]
        dm = None if dropout_mask is None else dropout_mask[i:i + 1, :, :sq, :sk]
        o, l, p = _attention_dense(qs, ks, vs, alibi_slopes=al, dropout_mask=dm, **kw)
        outs.append(o[0])
        lses.append(l[0])
        probs[i, :, :sq, :sk] = p[0].detach()
    # rows outside [cu_seqlens_q[0], cu_seqlens_q[-1]): no sequence, out 0 and lse -inf
    lse_dt = torch.float64 if upcast else torch.float32
    head, tail = cq[0], q.shape[0] - cq[-1]
    o_shape = tuple(q.shape[1:-1]) + (v.shape[-1],)
    outs = [q.new_zeros((head,) + o_shape, dtype=ct)] + outs + [q.new_zeros((tail,) + o_shape, dtype=ct)]
    lses = ([torch.full((h, head), float("-inf"), dtype=lse_dt, device=q.device)] + lses
            + [torch.full((h, tail), float("-inf"), dtype=lse_dt, device=q.device)])
    return RefResult(torch.cat(outs, 0), torch.cat(lses, -1), probs)


def ref_forward_backward(inputs: Sequence[torch.Tensor], dout: Optional[torch.Tensor],
                         upcast: bool = True, dlse: Optional[torch.Tensor] = None, **kw) -> RefResult:
    """``attention_ref`` on fresh leaf copies of inputs = (q, k, v) (float64 when upcast, else
    the inputs' dtype), shapes as there; with dout (like out) it also fills ``grads`` with
    (dq, dk, dv) in the leaves' dtype, and with dlse (like lse; alone or with dout) the gradients
    of sum(out dout) + sum(lse dlse). ``kw`` are attention_ref's keyword arguments."""
    ct = torch.float64 if upcast else inputs[0].dtype
    leaves = [t.detach().to(ct).requires_grad_(dout is not None or dlse is not None) for t in inputs]
    res = attention_ref(*leaves, upcast=upcast, **kw)
    if dout is None and dlse is not None:  # a loss on lse alone (v gets no gradient: zeros)
        gs = torch.autograd.grad(res.lse, leaves, dlse.to(res.lse.dtype), allow_unused=True)
        res.grads = tuple(torch.zeros_like(t) if g is None else g for g, t in zip(gs, leaves))
    elif dout is not None and dlse is not None:
        res.grads = torch.autograd.grad((res.out, res.lse), leaves, (dout.to(ct), dlse.to(res.lse.dtype)))
    elif dout is not None:
        res.grads = torch.autograd.grad(res.out, leaves, dout.to(ct))
    res.out, res.lse = res.out.detach(), res.lse.detach()
    return res


# --------------------------------------------------------------------------------------------
# CUDA graphs
# --------------------------------------------------------------------------------------------


def capture_cuda_graph(fn: Callable[[], T], warmup: int = 2,
                       reset: Optional[Callable[[], None]] = None) -> Tuple[torch.cuda.CUDAGraph, T]:
    """Captures fn() in a CUDA graph, the standard recipe: fn runs `warmup` times on a side
    stream first (lazy initialisation, allocator pools and cuBLAS / library handles must not be
    created inside the capture), then reset() (when given: undo what the warm-up changed), then
    the capture. Returns the graph and what fn returned during the capture: the static tensors
    each graph.replay() overwrites. fn must do no host synchronisation."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    if reset is not None:
        reset()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static = fn()
    return graph, static
