"""flash_attn_with_kvcache: in-place append, cache_seqlens (int / tensor), cache_batch_idx,
cache_leftpad, paged block_table, rotary (interleaved / not), causal, window, GQA, ALiBi, softcap,
return_softmax_lse, decode (sq = 1) and chunked prefill (sq > 1), bad inputs.

The oracle rebuilds every sequence explicitly: the cache prefix [leftpad, seqlen) concatenated with
the new k/v, rotary applied by the reference below (float64; the low-precision baseline applies
it in the input dtype), then tests/oracle.attention_ref per sequence with the error-ratio rule.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import pytest
import torch

from conftest import dev_cases, poison_allocator
from oracle import (FWD_FACTOR, assert_grads, assert_lse, assert_ratio, attention_ref, make_alibi,
                    one_thread)

from flash_attn_c.kvcache import flash_attn_with_kvcache

ERRORS = (ValueError, RuntimeError, TypeError)


# --------------------------------------------------------------------------------------------
# reference rotary and the per-sequence oracle
# --------------------------------------------------------------------------------------------


def rotary_ref(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, pos: torch.Tensor,
               interleaved: bool, ct: torch.dtype) -> torch.Tensor:
    """x (s, heads, d) rotated at positions pos (s,) in compute dtype ct; cos/sin (seqlen_ro, r/2).
    Interleaved pairs channels (2i, 2i+1); otherwise (i, i + r/2). Channels >= r unchanged."""
    half = cos.shape[1]
    x = x.to(ct)
    c = cos[pos].to(ct)[:, None, :]  # (s, 1, r/2)
    s = sin[pos].to(ct)[:, None, :]
    out = x.clone()
    if interleaved:
        a, b = x[..., 0:2 * half:2], x[..., 1:2 * half:2]
        out[..., 0:2 * half:2] = a * c - b * s
        out[..., 1:2 * half:2] = a * s + b * c
    else:
        a, b = x[..., :half], x[..., half:2 * half]
        out[..., :half] = a * c - b * s
        out[..., half:2 * half] = a * s + b * c
    return out


def make_rotary(seqlen_ro: int, rotary_dim: int, dtype, device) -> Tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables (seqlen_ro, rotary_dim / 2) in dtype, standard 10000^(-2i/r) frequencies."""
    inv = 1.0 / (10000 ** (torch.arange(0, rotary_dim, 2, dtype=torch.float64) / rotary_dim))
    ang = torch.arange(seqlen_ro, dtype=torch.float64)[:, None] * inv[None, :]
    return ang.cos().to(dtype).to(device), ang.sin().to(dtype).to(device)


@dataclass(frozen=True)
class KV:
    """One scenario. seqlens: cache length of each batch row before the append."""
    b: int = 2
    sq: int = 1
    s_new: int = 1           # 0 = attention only (k=v=None)
    h: int = 4
    hk: int = 2
    d: int = 32
    capacity: int = 40       # s_cache, or max_blocks * page for paged
    seqlens: Tuple[int, ...] = (5, 17)
    causal: bool = False
    window: Tuple[int, int] = (-1, -1)
    rotary: Optional[str] = None   # None, "inter", "neox"
    rotary_dim: int = 0            # 0 = d
    leftpad: Optional[Tuple[int, ...]] = None
    batch_idx: Optional[Tuple[int, ...]] = None  # cache row of each batch row
    b_cache: int = 0               # 0 = b
    page: int = 0                  # > 0: paged cache with this page_block_size
    seqlens_int: bool = False      # pass cache_seqlens as a Python int (all equal)
    alibi: Optional[str] = None
    softcap: float = 0.0
    poison: bool = False     # every cache slot outside [leftpad, seqlen) NaN (k) / +inf (v)
    num_splits: int = 0      # passed through (0 = the library's choice)

    def __str__(self) -> str:
        parts = [f"b{self.b}", f"q{self.sq}", f"n{self.s_new}", f"h{self.h}k{self.hk}", f"d{self.d}"]
        if self.causal:
            parts.append("causal")
        if self.window != (-1, -1):
            parts.append(f"win{self.window[0]}_{self.window[1]}")
        if self.rotary:
            parts.append(f"rot-{self.rotary}{self.rotary_dim or self.d}")
        if self.leftpad:
            parts.append("leftpad")
        if self.batch_idx:
            parts.append("batchidx")
        if self.page:
            parts.append(f"paged{self.page}")
        if self.seqlens_int:
            parts.append("int")
        if self.alibi:
            parts.append(f"alibi-{self.alibi}")
        if self.softcap:
            parts.append(f"softcap{self.softcap:g}")
        if self.poison:
            parts.append("poison")
        if self.num_splits:
            parts.append(f"splits{self.num_splits}")
        return "-".join(parts)


def positional_q(c: KV) -> bool:
    return c.causal or tuple(c.window) != (-1, -1)


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise equality (NaN == NaN of the same payload; torch.equal says NaN != NaN)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    it = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
    return torch.equal(a.contiguous().view(it), b.contiguous().view(it))


def run_case(device, dtype, c: KV, *, lse: bool = True, grad: bool = False, full: bool = False):
    """Builds the scenario, calls the library, checks out / lse / cache against the oracle.

    With c.poison every cache slot the call may not read (before cache_leftpad, from
    cache_seqlens on, the rows / pages no batch row owns) holds NaN in k_cache and +inf in
    v_cache: a kernel that lets a masked slot reach a sum (0 * inf, NaN scores) fails the
    finiteness check of out / lse. Returns out, or (out, lse or None) with full=True."""
    b, hk, d = c.b, c.hk, c.d
    b_cache = c.b_cache or b
    q = torch.randn(b, c.sq, c.h, d, device=device, dtype=dtype)
    # the logical cache: one (capacity, hk, d) row per cache row
    logical_k = torch.randn(b_cache if not c.page else b, c.capacity, hk, d, device=device, dtype=dtype)
    logical_v = torch.randn_like(logical_k)
    k_new = torch.randn(b, c.s_new, hk, d, device=device, dtype=dtype) if c.s_new else None
    v_new = torch.randn_like(k_new) if c.s_new else None
    seqlens = list(c.seqlens)
    leftpad = list(c.leftpad) if c.leftpad else [0] * b
    rows = list(c.batch_idx) if c.batch_idx else list(range(b))
    rd = c.rotary_dim or d
    cos = sin = None
    if c.rotary:
        # flash-attn's rule with a cache_seqlens tensor: the table covers the cache capacity
        cos, sin = make_rotary(max(c.capacity, max(seqlens) + max(c.s_new, c.sq) + 3), rd, dtype,
                               device)
    slopes = make_alibi(c.alibi, b, c.h, device)

    if c.poison:  # slots outside [leftpad, seqlen) of each used row; unused rows entirely
        keep = torch.zeros(logical_k.shape[:2], dtype=torch.bool)
        for i in range(b):
            keep[rows[i] if not c.page else i, leftpad[i]:seqlens[i]] = True
        keep = keep.to(device)
        logical_k[~keep] = float("nan")
        logical_v[~keep] = float("inf")

    # storage actually passed to the library
    block_table = None
    if c.page:
        assert c.capacity % c.page == 0
        nblk = c.capacity // c.page
        num_blocks = b * nblk + 3  # a few blocks no sequence owns: must stay untouched
        perm = torch.randperm(num_blocks)[:b * nblk].view(b, nblk).to(device)
        k_cache = torch.randn(num_blocks, c.page, hk, d, device=device, dtype=dtype)
        v_cache = torch.randn_like(k_cache)
        if c.poison:
            k_cache.fill_(float("nan"))
            v_cache.fill_(float("inf"))
        k_cache[perm.flatten()] = logical_k.reshape(b * nblk, c.page, hk, d)
        v_cache[perm.flatten()] = logical_v.reshape(b * nblk, c.page, hk, d)
        block_table = perm.to(torch.int32)
    else:
        k_cache, v_cache = logical_k.clone(), logical_v.clone()
    k_cache0, v_cache0 = k_cache.clone(), v_cache.clone()

    # ---- the oracle: explicit concatenation per sequence ----
    def reference(upcast: bool):
        ct = torch.float64 if upcast else dtype
        outs, lses, k_rots = [], [], []
        with one_thread():
            for i in range(b):
                r = rows[i] if not c.page else i
                kp = logical_k[r, leftpad[i]:seqlens[i]]
                vp = logical_v[r, leftpad[i]:seqlens[i]]
                qi = q[i]
                kn = k_new[i] if c.s_new else kp[:0]
                vn = v_new[i] if c.s_new else vp[:0]
                if c.rotary and c.s_new:
                    pos_k = seqlens[i] + torch.arange(c.s_new, device=device)
                    kn = rotary_ref(kn, cos, sin, pos_k, c.rotary == "inter", ct)
                    steps = torch.arange(c.sq, device=device) if positional_q(c) else \
                        torch.zeros(c.sq, dtype=torch.int64, device=device)
                    qi = rotary_ref(qi, cos, sin, seqlens[i] + steps, c.rotary == "inter", ct)
                k_rots.append(kn)
                ks = torch.cat([kp.to(ct), kn.to(ct)], 0)[None]
                vs = torch.cat([vp.to(ct), vn.to(ct)], 0)[None]
                al = None if slopes is None else (slopes if slopes.dim() == 1 else slopes[i:i + 1])
                res = attention_ref(qi.to(ct)[None], ks, vs, causal=c.causal, window=c.window,
                                    softcap=c.softcap, alibi_slopes=al, upcast=upcast)
                outs.append(res.out[0])
                lses.append(res.lse[0])
        return torch.stack(outs), torch.stack(lses), k_rots

    ref_out, ref_lse, ref_krot = reference(True)
    base_out, base_lse, base_krot = reference(False)

    cache_seqlens = seqlens[0] if c.seqlens_int else torch.tensor(seqlens, dtype=torch.int32,
                                                                  device=device)
    if c.seqlens_int:
        assert len(set(seqlens)) == 1
    kw = dict(rotary_cos=cos, rotary_sin=sin, cache_seqlens=cache_seqlens,
              cache_batch_idx=(torch.tensor(rows, dtype=torch.int32, device=device)
                               if c.batch_idx else None),
              cache_leftpad=(torch.tensor(leftpad, dtype=torch.int32, device=device)
                             if c.leftpad else None),
              block_table=block_table, causal=c.causal, window_size=c.window, softcap=c.softcap,
              rotary_interleaved=c.rotary == "inter", alibi_slopes=slopes,
              num_splits=c.num_splits, return_softmax_lse=lse)
    qg = q.clone().requires_grad_(grad)
    kg = k_new.clone().requires_grad_(grad) if c.s_new else None
    vg = v_new.clone().requires_grad_(grad) if c.s_new else None
    poison_allocator(device, [q.numel() * q.element_size()] * 2 + [b * c.h * c.sq * 4])
    res = flash_attn_with_kvcache(qg, k_cache, v_cache, kg, vg, **kw)
    out, lse_ours = res if lse else (res, None)
    assert isinstance(out, torch.Tensor) and out.shape == q.shape and out.dtype == dtype
    assert_ratio("out", out, ref_out, base_out, dtype, FWD_FACTOR)
    empty = torch.isneginf(ref_lse)  # (b, h, sq)
    if empty.any():
        assert (out.detach().permute(0, 2, 1, 3)[empty] == 0).all(), "out must be 0 on empty rows"
    if lse:
        assert lse_ours.shape == (b, c.h, c.sq)
        assert_lse("lse", lse_ours, ref_lse, base_lse, dtype)

    # ---- the cache after the call: new rows written, everything else untouched ----
    with torch.no_grad():
        exp_k, exp_v = k_cache0.clone(), v_cache0.clone()
        written = torch.zeros(exp_k.shape[:2], dtype=torch.bool, device=device)
        for i in range(b):
            for j in range(c.s_new):
                p = seqlens[i] + j
                idx = (int(block_table[i, p // c.page]), p % c.page) if c.page else (rows[i], p)
                exp_k[idx] = ref_krot[i][j].to(dtype)
                exp_v[idx] = v_new[i, j]
                written[idx] = True
        kc, vc = k_cache.detach(), v_cache.detach()
        assert same_bits(kc[~written], exp_k[~written]), "k_cache changed outside the new rows"
        assert same_bits(vc[~written], exp_v[~written]), "v_cache changed outside the new rows"
        assert same_bits(vc[written], exp_v[written]), "v_cache new rows differ from v"
        if c.rotary:  # rotated in fp32 vs fp64: within the rounding rule
            base_k = torch.stack([base_krot[i][j] for i in range(b) for j in range(c.s_new)]) \
                if c.s_new else kc[written]
            ref_k = torch.stack([ref_krot[i][j] for i in range(b) for j in range(c.s_new)]) \
                if c.s_new else kc[written].double()
            ours_k = torch.stack([kc[(int(block_table[i, (seqlens[i] + j) // c.page]),
                                      (seqlens[i] + j) % c.page) if c.page else
                                     (rows[i], seqlens[i] + j)]
                                  for i in range(b) for j in range(c.s_new)]) if c.s_new \
                else kc[written]
            assert_ratio("k_cache new rows (rotary)", ours_k, ref_k, base_k, dtype, FWD_FACTOR)
        else:
            assert same_bits(kc[written], exp_k[written]), "k_cache new rows differ from k"

    if grad:  # autograd through rotary, the in-place append, the gather and the op
        dout = torch.randn_like(out)
        leaves = [qg] + ([kg, vg] if c.s_new else [])
        ours = torch.autograd.grad(out, leaves, dout)
        grads = []
        for upcast in (True, False):
            ct = torch.float64 if upcast else dtype
            ql = q.detach().to(ct).requires_grad_()
            kl = k_new.detach().to(ct).requires_grad_()
            vl = v_new.detach().to(ct).requires_grad_()
            outs = []
            for i in range(b):
                r = rows[i] if not c.page else i
                kn, qi = kl[i], ql[i]
                if c.rotary:
                    kn = rotary_ref(kn, cos, sin, seqlens[i] + torch.arange(c.s_new, device=device),
                                    c.rotary == "inter", ct)
                    steps = torch.arange(c.sq, device=device) if positional_q(c) else \
                        torch.zeros(c.sq, dtype=torch.int64, device=device)
                    qi = rotary_ref(qi, cos, sin, seqlens[i] + steps, c.rotary == "inter", ct)
                ks = torch.cat([logical_k[r, leftpad[i]:seqlens[i]].to(ct), kn], 0)[None]
                vs = torch.cat([logical_v[r, leftpad[i]:seqlens[i]].to(ct), vl[i]], 0)[None]
                al = None if slopes is None else (slopes if slopes.dim() == 1 else slopes[i:i + 1])
                outs.append(attention_ref(qi[None], ks, vs, causal=c.causal, window=c.window,
                                          softcap=c.softcap, alibi_slopes=al, upcast=upcast).out[0])
            grads.append(torch.autograd.grad(torch.stack(outs), (ql, kl, vl), dout.to(ct)))
        assert_grads(ours, grads[0], grads[1], dtype)
    return (out, lse_ours) if full else out


# --------------------------------------------------------------------------------------------
# forward parity cases
# --------------------------------------------------------------------------------------------

CASES = [
    # decode (sq = 1), GQA, rotary interleaved on half the head dim
    KV(b=3, sq=1, s_new=1, h=4, hk=2, d=64, seqlens=(0, 9, 38), causal=True, rotary="inter",
       rotary_dim=32),
    # decode without new tokens (attention over the cache only), one empty sequence
    KV(b=3, sq=1, s_new=0, h=2, hk=2, d=32, seqlens=(0, 13, 40)),
    # chunked prefill, causal, non-interleaved rotary on the full head dim, GQA 3
    KV(b=2, sq=5, s_new=5, h=6, hk=2, d=40, seqlens=(3, 20), causal=True, rotary="neox"),
    # chunked prefill, not causal: all of q rotated at position cache_seqlens
    KV(b=2, sq=4, s_new=4, h=2, hk=1, d=32, seqlens=(6, 11), rotary="inter"),
    # q longer than the new chunk (sq > s_new), causal
    KV(b=2, sq=6, s_new=2, h=4, hk=4, d=16, seqlens=(7, 2), causal=True),
    # sliding window (causal) with rotary: q positions advance
    KV(b=2, sq=4, s_new=4, h=4, hk=2, d=32, seqlens=(12, 30), causal=True, window=(7, 0),
       rotary="neox", rotary_dim=16),
    # local window both sides, not causal
    KV(b=2, sq=3, s_new=3, h=2, hk=2, d=32, seqlens=(9, 4), window=(3, 2), rotary="inter"),
    # cache_seqlens as a Python int
    KV(b=3, sq=2, s_new=2, h=4, hk=1, d=32, seqlens=(10, 10, 10), causal=True, seqlens_int=True),
    # cache_batch_idx into a larger cache (rows permuted, some unused)
    KV(b=3, sq=1, s_new=1, h=4, hk=2, d=32, seqlens=(4, 0, 21), b_cache=5, batch_idx=(3, 0, 4),
       causal=True, rotary="inter"),
    # cache_leftpad with rotary (positions stay absolute)
    KV(b=3, sq=3, s_new=3, h=4, hk=2, d=32, seqlens=(10, 5, 30), leftpad=(4, 5, 0), causal=True,
       rotary="neox"),
    # paged, page 16, shuffled blocks: decode and chunked prefill (with leftpad)
    KV(b=3, sq=1, s_new=1, h=4, hk=2, d=32, capacity=64, seqlens=(0, 31, 63), page=16,
       causal=True, rotary="inter"),
    KV(b=2, sq=7, s_new=7, h=4, hk=1, d=48, capacity=64, seqlens=(16, 40), page=16,
       causal=True, leftpad=(3, 17), rotary="neox", rotary_dim=32),
    # paged, attention only, page 5 (not a power of two)
    KV(b=2, sq=2, s_new=0, h=2, hk=2, d=32, capacity=30, seqlens=(30, 12), page=5, causal=True),
    # ALiBi (b, h) and softcap
    KV(b=2, sq=3, s_new=2, h=4, hk=2, d=32, seqlens=(8, 19), causal=True, alibi="bh",
       softcap=5.0, rotary="inter"),
    # odd head dim (CUDA pads to a multiple of 8), MQA
    KV(b=2, sq=2, s_new=1, h=3, hk=1, d=59, seqlens=(5, 25), causal=True, alibi="h"),
]

GPU_CASES = CASES + [
    KV(b=4, sq=1, s_new=1, h=16, hk=2, d=128, capacity=2048, seqlens=(0, 100, 1500, 2047),
       causal=True, rotary="neox"),
    KV(b=2, sq=128, s_new=128, h=8, hk=8, d=64, capacity=1024, seqlens=(300, 896), page=256,
       causal=True, rotary="inter", leftpad=(100, 0)),
]


@pytest.mark.parametrize("device,dtype,case",
                         dev_cases(CASES, GPU_CASES, marks=[pytest.mark.parity_fwd]))
def test_kvcache_parity(device, dtype, case):
    run_case(device, dtype, case)


@pytest.mark.parametrize("device,dtype", dev_cases([()], [()]))
def test_kvcache_no_lse_returns_tensor(device, dtype):
    out = run_case(device, dtype, KV(b=2, sq=2, s_new=2, seqlens=(3, 9), causal=True), lse=False)
    assert isinstance(out, torch.Tensor)


@pytest.mark.parametrize("device,dtype", dev_cases([()], [()], cpu_dtypes=(torch.float32,),
                                                   marks=[pytest.mark.parity_grad]))
@pytest.mark.parametrize("rotary", [None, "inter"])
def test_kvcache_autograd(device, dtype, rotary):
    """Gradients flow to q and the new k/v through rotary, the append and the gather."""
    run_case(device, dtype, KV(b=2, sq=3, s_new=3, h=4, hk=2, d=32, seqlens=(4, 9),
                               causal=True, rotary=rotary), grad=True)


# --------------------------------------------------------------------------------------------
# behaviour
# --------------------------------------------------------------------------------------------


def _small(device, dtype, b=2, sq=1, s_new=1, h=4, hk=2, d=32, s_cache=24):
    q = torch.randn(b, sq, h, d, device=device, dtype=dtype)
    kc = torch.randn(b, s_cache, hk, d, device=device, dtype=dtype)
    vc = torch.randn_like(kc)
    k = torch.randn(b, s_new, hk, d, device=device, dtype=dtype)
    v = torch.randn_like(k)
    return q, kc, vc, k, v


@pytest.mark.parametrize("device,dtype", dev_cases([()], [()]))
def test_int_and_tensor_cache_seqlens_identical(device, dtype):
    q, kc, vc, k, v = _small(device, dtype)
    kc2, vc2 = kc.clone(), vc.clone()
    a = flash_attn_with_kvcache(q, kc, vc, k, v, cache_seqlens=7, causal=True)
    t = flash_attn_with_kvcache(q, kc2, vc2, k, v, causal=True,
                                cache_seqlens=torch.full((2,), 7, dtype=torch.int32, device=device))
    assert torch.equal(a, t) and torch.equal(kc, kc2) and torch.equal(vc, vc2)


@pytest.mark.parametrize("device,dtype", dev_cases([()], [()]))
def test_repeated_batch_idx_without_append(device, dtype):
    """Rows that share a cache row only read it: allowed when nothing is appended (k / v absent or
    of 0 tokens, as flash-attn), equal to the same call on a cache with that row copied out."""
    q, kc, vc, k, v = _small(device, dtype)
    idx = torch.tensor([1, 1], dtype=torch.int32, device=device)
    want = flash_attn_with_kvcache(q, kc[[1, 1]], vc[[1, 1]], cache_seqlens=9, causal=True)
    got = flash_attn_with_kvcache(q, kc, vc, cache_seqlens=9, cache_batch_idx=idx, causal=True)
    none = flash_attn_with_kvcache(q, kc, vc, k[:, :0], v[:, :0], cache_seqlens=9, cache_batch_idx=idx,
                                   causal=True)
    assert torch.equal(got, want) and torch.equal(none, want)


@pytest.mark.parametrize("device,dtype", dev_cases([()], [()]))
def test_num_splits_ignored(device, dtype):
    q, kc, vc, _, _ = _small(device, dtype)
    a = flash_attn_with_kvcache(q, kc, vc, cache_seqlens=11, num_splits=0)
    b_ = flash_attn_with_kvcache(q, kc, vc, cache_seqlens=11, num_splits=4)
    assert torch.equal(a, b_)


@pytest.mark.parametrize("device,dtype", dev_cases([()], [()]))
def test_rotary_without_new_kv_is_an_error(device, dtype):
    """As in flash-attn ("If rotary cos/sin are provided, new key / value ... must also be
    provided"): rotary tables without k/v raise, naming rotary_cos, instead of leaving q
    silently unrotated; nothing is written."""
    q, kc, vc, _, _ = _small(device, dtype)
    cos, sin = make_rotary(32, 32, dtype, device)
    before = kc.clone()
    with pytest.raises(ValueError, match="rotary_cos"):
        flash_attn_with_kvcache(q, kc, vc, rotary_cos=cos, rotary_sin=sin, cache_seqlens=9, causal=True)
    assert torch.equal(kc, before)


@pytest.mark.parametrize("device,dtype", dev_cases([()], [()]))
def test_rotary_table_must_cover_the_positions(device, dtype):
    """A table shorter than the positions a call rotates by is an error on every path (CUDA
    checks it from sizes: the cache capacity), never a silently unrotated key."""
    q, kc, vc, kn, vn = _small(device, dtype)
    cos, sin = make_rotary(8, 32, dtype, device)  # 8 positions; the new keys sit at 9, 10
    with pytest.raises(ValueError, match="rotary_cos/rotary_sin have 8 positions"):
        flash_attn_with_kvcache(q, kc, vc, kn, vn, rotary_cos=cos, rotary_sin=sin,
                                cache_seqlens=9, causal=True)
    lens = torch.full((q.shape[0],), 9, dtype=torch.int32, device=device)
    with pytest.raises(ValueError, match="rotary_cos/rotary_sin have 8 positions"):
        flash_attn_with_kvcache(q, kc, vc, kn, vn, rotary_cos=cos, rotary_sin=sin,
                                cache_seqlens=lens, causal=True)


@pytest.mark.parametrize("device,dtype", dev_cases([()], [()]))
def test_block_table_padding_is_never_read(device, dtype):
    """Entries past what a sequence reads or appends to (flash-attn pads with -1) are ignored:
    the padded table gives the unpadded table's answer, on every path."""
    b, page, hk, d = 2, 4, 2, 32
    q = torch.randn(b, 1, 4, d, device=device, dtype=dtype)
    kc = torch.randn(6, page, hk, d, device=device, dtype=dtype)
    vc = torch.randn_like(kc)
    kn, vn = (torch.randn(b, 1, hk, d, device=device, dtype=dtype) for _ in range(2))
    lens = torch.tensor([5, 2], dtype=torch.int32, device=device)  # + 1 new: 2 and 1 blocks used
    tight = torch.tensor([[0, 3], [5, 1]], dtype=torch.int32, device=device)
    padded = torch.tensor([[0, 3, -1, -1], [5, -1, 7, -1]], dtype=torch.int32, device=device)
    outs = []
    for bt in (tight, padded):
        k2, v2 = kc.clone(), vc.clone()
        outs.append(flash_attn_with_kvcache(q, k2, v2, kn, vn, cache_seqlens=lens, block_table=bt,
                                            causal=True, return_softmax_lse=True))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    assert outs[1][1].is_contiguous()  # lse (b, h, sq), contiguous as flash-attn's


@pytest.mark.parametrize("device,dtype", dev_cases([()], [()]))
def test_no_cache_seqlens_attends_whole_cache(device, dtype):
    q, kc, vc, _, _ = _small(device, dtype, s_cache=24)
    a = flash_attn_with_kvcache(q, kc, vc)
    b_ = flash_attn_with_kvcache(q, kc, vc, cache_seqlens=24)
    assert torch.equal(a, b_)


@pytest.mark.parametrize("device,dtype", dev_cases([()], [()]))
def test_decode_steps_chain(device, dtype):
    """Three decode steps (sq = 1, one token appended each) then a step without new tokens:
    the last step sees exactly prefix + the three appended tokens."""
    b, h, hk, d = 2, 4, 2, 32
    kc = torch.randn(b, 16, hk, d, device=device, dtype=dtype)
    vc = torch.randn_like(kc)
    prefix = torch.tensor([3, 8], dtype=torch.int32, device=device)
    k0, v0 = kc.clone(), vc.clone()
    news = []
    for step in range(3):
        q = torch.randn(b, 1, h, d, device=device, dtype=dtype)
        k = torch.randn(b, 1, hk, d, device=device, dtype=dtype)
        v = torch.randn_like(k)
        news.append((k, v))
        flash_attn_with_kvcache(q, kc, vc, k, v, cache_seqlens=prefix + step, causal=True)
    q = torch.randn(b, 1, h, d, device=device, dtype=dtype)
    out, lse = flash_attn_with_kvcache(q, kc, vc, cache_seqlens=prefix + 3, causal=True,
                                       return_softmax_lse=True)
    outs, lses, bouts, blses = [], [], [], []
    for i in range(b):
        n = int(prefix[i])
        ks = torch.cat([k0[i, :n]] + [k[i] for k, _ in news])[None]
        vs = torch.cat([v0[i, :n]] + [v[i] for _, v in news])[None]
        with one_thread():
            r = attention_ref(q[i:i + 1], ks, vs, causal=True)
            bb = attention_ref(q[i:i + 1], ks, vs, causal=True, upcast=False)
        outs.append(r.out[0]), lses.append(r.lse[0]), bouts.append(bb.out[0]), blses.append(bb.lse[0])
    assert_ratio("out", out, torch.stack(outs), torch.stack(bouts), dtype, FWD_FACTOR)
    assert_lse("lse", lse, torch.stack(lses), torch.stack(blses), dtype)


# --------------------------------------------------------------------------------------------
# bad inputs: clear errors naming the argument
# --------------------------------------------------------------------------------------------

I32 = torch.int32


def _bad(**over):
    q, kc, vc, k, v = _small("cpu", torch.float16)
    args = dict(q=q, k_cache=kc, v_cache=vc, k=k, v=v, cache_seqlens=5)
    args.update(over)
    return args


BAD = [
    ("q_3d", dict(q=torch.randn(2, 4, 32, dtype=torch.float16)), r"\bq\b"),
    ("k_cache_dtype", dict(k_cache=torch.randn(2, 24, 2, 32)), r"k_cache"),
    ("v_cache_shape", dict(v_cache=torch.randn(2, 20, 2, 32, dtype=torch.float16)), r"v_cache"),
    ("k_cache_headdim", dict(k_cache=torch.randn(2, 24, 2, 16, dtype=torch.float16),
                             v_cache=torch.randn(2, 24, 2, 16, dtype=torch.float16)), r"head dim"),
    ("gqa_ratio", dict(k_cache=torch.randn(2, 24, 3, 32, dtype=torch.float16),
                       v_cache=torch.randn(2, 24, 3, 32, dtype=torch.float16),
                       k=torch.randn(2, 1, 3, 32, dtype=torch.float16),
                       v=torch.randn(2, 1, 3, 32, dtype=torch.float16)), r"nheads"),
    ("k_without_v", dict(v=None), r"\bk and v\b"),
    ("k_shape", dict(k=torch.randn(2, 1, 4, 32, dtype=torch.float16)), r"\bk\b"),
    ("v_dtype", dict(v=torch.randn(2, 1, 2, 32)), r"\bv\b"),
    ("k_without_cache_seqlens", dict(cache_seqlens=None), r"cache_seqlens"),
    ("cache_too_small", dict(cache_seqlens=24), r"cache too small"),
    ("cache_too_small_tensor", dict(cache_seqlens=torch.tensor([3, 24], dtype=I32)),
     r"cache_seqlens\[1\]"),
    ("cache_seqlens_int64", dict(cache_seqlens=torch.tensor([3, 4])), r"cache_seqlens"),
    ("cache_seqlens_shape", dict(cache_seqlens=torch.tensor([3, 4, 5], dtype=I32)), r"cache_seqlens"),
    ("cache_seqlens_float", dict(cache_seqlens=3.0), r"cache_seqlens"),
    ("cache_seqlens_negative", dict(cache_seqlens=-1), r"cache_seqlens"),
    ("leftpad_past_seqlen", dict(cache_leftpad=torch.tensor([0, 6], dtype=I32)), r"cache_leftpad\[1\]"),
    ("leftpad_dtype", dict(cache_leftpad=torch.tensor([0, 1])), r"cache_leftpad"),
    ("batch_idx_range", dict(cache_batch_idx=torch.tensor([0, 2], dtype=I32)), r"cache_batch_idx"),
    ("batch_idx_repeated", dict(cache_batch_idx=torch.tensor([1, 1], dtype=I32)), r"cache_batch_idx"),
    ("batch_idx_shape", dict(cache_batch_idx=torch.tensor([0], dtype=I32)), r"cache_batch_idx"),
    ("block_table_nonpaged_1d", dict(block_table=torch.tensor([0, 1], dtype=I32)), r"block_table"),
    ("block_table_batch", dict(block_table=torch.zeros(3, 2, dtype=I32)), r"block_table"),
    ("block_table_range", dict(block_table=torch.tensor([[0, 1], [2, 0]], dtype=I32)), r"block_table"),
    ("block_table_dtype", dict(block_table=torch.tensor([[0], [1]])), r"block_table"),
    ("block_table_with_batch_idx", dict(block_table=torch.tensor([[0], [1]], dtype=I32),
                                        cache_batch_idx=torch.tensor([0, 1], dtype=I32)),
     r"cache_batch_idx"),
    ("paged_cache_too_small", dict(block_table=torch.tensor([[0], [1]], dtype=I32),
                                   cache_seqlens=24), r"cache too small"),
    ("rotary_cos_only", dict(rotary_cos=torch.ones(32, 8, dtype=torch.float16)), r"rotary_sin"),
    ("rotary_too_wide", dict(rotary_cos=torch.ones(32, 17, dtype=torch.float16),
                             rotary_sin=torch.ones(32, 17, dtype=torch.float16)), r"rotary_cos"),
    ("rotary_too_short", dict(rotary_cos=torch.ones(5, 8, dtype=torch.float16),
                              rotary_sin=torch.ones(5, 8, dtype=torch.float16)), r"rotary_cos"),
    ("rotary_shape_mismatch", dict(rotary_cos=torch.ones(32, 8, dtype=torch.float16),
                                   rotary_sin=torch.ones(32, 4, dtype=torch.float16)), r"rotary_sin"),
    ("rotary_without_kv", dict(k=None, v=None, rotary_cos=torch.ones(32, 8, dtype=torch.float16),
                               rotary_sin=torch.ones(32, 8, dtype=torch.float16)), r"rotary_cos"),
    ("num_splits_negative", dict(num_splits=-1), r"num_splits"),
    ("num_splits_str", dict(num_splits="a"), r"num_splits"),
    ("paged_page_zero", dict(k_cache=torch.randn(2, 0, 2, 32, dtype=torch.float16),
                             v_cache=torch.randn(2, 0, 2, 32, dtype=torch.float16),
                             block_table=torch.tensor([[0], [1]], dtype=I32)), r"page_block_size"),
    ("window_bad", dict(window_size=(-2, 0)), r"window_size"),
    ("softcap_negative", dict(softcap=-1.0), r"softcap"),
    ("q_float64", dict(q=torch.randn(2, 1, 4, 32, dtype=torch.float64)), r"\bq\b"),
    ("alibi_shape", dict(alibi_slopes=torch.rand(3)), r"alibi_slopes"),
    ("alibi_dtype", dict(alibi_slopes=torch.rand(4, dtype=torch.float16)), r"alibi_slopes"),
    ("q_batch_exceeds_cache", dict(q=torch.randn(3, 1, 4, 32, dtype=torch.float16),
                                   k=None, v=None), r"k_cache"),
    # an expanded cache holds its batch rows in one place: an append into one row would show up in
    # the other (it was accepted, with only torch's deprecation warning)
    ("k_cache_expanded", dict(k_cache=torch.randn(1, 24, 2, 32, dtype=torch.float16).expand(2, -1, -1, -1)),
     r"k_cache has a dimension of stride 0"),
    ("v_cache_expanded", dict(v_cache=torch.randn(1, 24, 2, 32, dtype=torch.float16).expand(2, -1, -1, -1)),
     r"v_cache has a dimension of stride 0"),
    # two batch rows appending into the same block slot: the last write won (CPU path; the CUDA fused
    # path does not read the block table on the host)
    ("paged_rows_share_a_slot", dict(k_cache=torch.randn(3, 8, 2, 32, dtype=torch.float16),
                                     v_cache=torch.randn(3, 8, 2, 32, dtype=torch.float16),
                                     block_table=torch.tensor([[0], [0]], dtype=I32), cache_seqlens=2),
     r"block_table maps positions"),
]


@pytest.mark.parametrize("over,pattern", [pytest.param(o, p, id=n) for n, o, p in BAD])
def test_bad_input(over, pattern):
    args = _bad(**over)
    with pytest.raises(ERRORS, match=pattern):
        flash_attn_with_kvcache(**args)


@pytest.mark.parametrize("over", [
    pytest.param(dict(cache_leftpad=torch.tensor([0, 6], dtype=I32)), id="leftpad"),
    pytest.param(dict(alibi_slopes=torch.rand(3)), id="alibi"),
    pytest.param(dict(rotary_cos=torch.ones(5, 8, dtype=torch.float16),
                      rotary_sin=torch.ones(5, 8, dtype=torch.float16)), id="rotary"),
    pytest.param(dict(window_size=(-2, 0)), id="window"),
    pytest.param(dict(k_cache=torch.randn(3, 8, 2, 32, dtype=torch.float16),
                      v_cache=torch.randn(3, 8, 2, 32, dtype=torch.float16),
                      block_table=torch.tensor([[0], [0]], dtype=I32), cache_seqlens=2), id="shared_slot"),
])
def test_bad_input_leaves_cache_untouched(over):
    """Validation happens before the append: a rejected call must not write the cache."""
    args = _bad(**over)
    kc0, vc0 = args["k_cache"].clone(), args["v_cache"].clone()
    with pytest.raises(ERRORS):
        flash_attn_with_kvcache(**args)
    assert torch.equal(args["k_cache"], kc0) and torch.equal(args["v_cache"], vc0)


def test_cache_seqlens_numpy_int_accepted():
    np = pytest.importorskip("numpy")
    q, kc, vc, k, v = _small("cpu", torch.float32)
    kc2, vc2 = kc.clone(), vc.clone()
    a = flash_attn_with_kvcache(q, kc, vc, k, v, cache_seqlens=np.int64(6))
    b_ = flash_attn_with_kvcache(q, kc2, vc2, k, v, cache_seqlens=6)
    assert torch.equal(a, b_) and torch.equal(kc, kc2)


@pytest.mark.gpu
def test_cuda_cache_on_cpu_rejected():
    q, kc, vc, k, v = _small("cuda", torch.float16)
    with pytest.raises(ERRORS, match=r"k_cache"):
        flash_attn_with_kvcache(q, kc.cpu(), vc, k, v, cache_seqlens=3)
