"""flash_attn_varlen_func(..., block_table=...): varlen attention over a paged KV cache.

k/v are (num_blocks, page_block_size, hk, d); sequence i's key p lives at
k[block_table[i, p // page], p % page] and its length is cu_seqlens_k[i + 1] - cu_seqlens_k[i].
Each case scatters a packed logical K/V into randomly permuted blocks of a cache whose every other
slot (the tail of a sequence's last page, the pages no sequence owns) is NaN in k and +inf in v,
pads block_table past each sequence's end with -1 (or other junk), and checks out / lse (and
gradients) against the float64 varlen oracle on the logical K/V with the error-ratio rule.
Page sizes 1, 5, 16, 48, 256; causal, windows, softcap, ALiBi, GQA/MQA, length-0 sequences;
bad input.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Sequence, Tuple

import pytest
import torch

from conftest import dev_cases, devices, poison_allocator
from oracle import (FWD_FACTOR, assert_grads, assert_lse, assert_ratio, cu_from_lens, make_alibi,
                    ref_forward_backward)

import flash_attn_c
from flash_attn_c.testing import capture_cuda_graph

ERRORS = (ValueError, RuntimeError, TypeError)
I32 = torch.int32


@dataclass(frozen=True)
class PV:
    """One paged varlen scenario."""
    lens_q: Tuple[int, ...]
    lens_k: Tuple[int, ...]
    page: int
    h: int = 4
    hk: int = 2
    d: int = 32
    causal: bool = False
    window: Tuple[int, int] = (-1, -1)
    softcap: float = 0.0
    alibi: Optional[str] = None
    extra_blocks: int = 1      # block_table columns past the longest sequence's need
    spare_blocks: int = 3      # cache blocks no sequence owns (poisoned)
    pad: int = -1              # block_table value past each sequence's blocks
    cu_offset: int = 0         # added to cu_seqlens_k (only differences matter)

    def __str__(self) -> str:
        s = [f"q{'_'.join(map(str, self.lens_q))}", f"k{'_'.join(map(str, self.lens_k))}",
             f"p{self.page}", f"h{self.h}k{self.hk}", f"d{self.d}"]
        if self.causal:
            s.append("causal")
        if self.window != (-1, -1):
            s.append(f"win{self.window[0]}_{self.window[1]}")
        if self.softcap:
            s.append(f"softcap{self.softcap:g}")
        if self.alibi:
            s.append(f"alibi-{self.alibi}")
        if self.pad != -1:
            s.append(f"pad{self.pad}")
        if self.cu_offset:
            s.append(f"off{self.cu_offset}")
        return "-".join(s)


@dataclass
class Paged:
    """A paged cache holding the packed logical k/v (total_k, hk, d)."""
    k_cache: torch.Tensor      # (num_blocks, page, hk, d)
    v_cache: torch.Tensor
    block_table: torch.Tensor  # int32 (b, max_blocks)
    where: torch.Tensor        # int64 (total_k, 2): (block, offset) of each logical key


def make_paged(k: torch.Tensor, v: torch.Tensor, lens_k: Sequence[int], page: int,
               extra_blocks: int = 1, spare_blocks: int = 3, pad: int = -1) -> Paged:
    """Scatters packed k/v (total_k, hk, d) into randomly permuted pages. Every cache slot that
    holds no key is poisoned (k NaN, v +inf); block_table entries past a sequence's blocks are
    `pad`."""
    b = len(lens_k)
    nb = [(n + page - 1) // page for n in lens_k]
    max_blocks = max(nb + [0]) + extra_blocks
    num_blocks = sum(nb) + spare_blocks
    perm = torch.randperm(num_blocks).tolist()
    hk, d = k.shape[1], k.shape[2]
    k_cache = torch.full((num_blocks, page, hk, d), float("nan"), dtype=k.dtype, device=k.device)
    v_cache = torch.full((num_blocks, page, hk, d), float("inf"), dtype=v.dtype, device=v.device)
    table = torch.full((b, max_blocks), pad, dtype=I32)
    where = []
    used = 0
    for i, n in enumerate(lens_k):
        for j in range(nb[i]):
            table[i, j] = perm[used]
            used += 1
        for p in range(n):
            where.append((int(table[i, p // page]), p % page))
    where_t = torch.tensor(where, dtype=torch.int64).view(-1, 2).to(k.device)
    k_cache[where_t[:, 0], where_t[:, 1]] = k
    v_cache[where_t[:, 0], where_t[:, 1]] = v
    return Paged(k_cache, v_cache, table.to(k.device), where_t)


def check_paged(device, dtype, c: PV, *, grad: bool = False, k_layout: str = "contiguous"):
    """flash_attn_varlen_func with block_table vs the fp64 varlen oracle on the logical k/v:
    out (2x rule, exact 0 on empty rows), lse (h, total_q) and, with grad=True, dq and the
    gradients of the caches (3x rule at the keys' slots, exactly 0 everywhere else)."""
    b = len(c.lens_q)
    assert len(c.lens_k) == b
    tq, tk = sum(c.lens_q), sum(c.lens_k)
    q = torch.randn(tq, c.h, c.d, device=device, dtype=dtype)
    k = torch.randn(tk, c.hk, c.d, device=device, dtype=dtype)
    v = torch.randn(tk, c.hk, c.d, device=device, dtype=dtype)
    cq, ck = cu_from_lens(c.lens_q, device), cu_from_lens(c.lens_k, device)
    mq, mk = max(c.lens_q), max(c.lens_k)
    slopes = make_alibi(c.alibi, b, c.h, device)
    kw = dict(causal=c.causal, window=c.window, softcap=c.softcap, alibi_slopes=slopes,
              cu_seqlens_q=cq, cu_seqlens_k=ck, max_seqlen_q=mq, max_seqlen_k=mk)
    dout = torch.randn(tq, c.h, c.d, device=device, dtype=dtype) if grad else None
    ref = ref_forward_backward((q, k, v), dout, upcast=True, **kw)
    base = ref_forward_backward((q, k, v), dout, upcast=False, **kw)

    pg = make_paged(k, v, c.lens_k, c.page, c.extra_blocks, c.spare_blocks, c.pad)
    k_cache, v_cache = pg.k_cache, pg.v_cache
    if k_layout == "kv_packed":  # k/v as views of one (num_blocks, page, 2, hk, d) tensor
        kv = torch.stack([k_cache, v_cache], dim=2)
        k_cache, v_cache = kv[:, :, 0], kv[:, :, 1]
    k0, v0 = k_cache.clone(), v_cache.clone()
    api_kw = dict(causal=c.causal, window_size=c.window, softcap=c.softcap, alibi_slopes=slopes)
    qg = q.clone().requires_grad_(grad)
    kg = k_cache.requires_grad_(grad) if k_layout == "contiguous" else k_cache
    vg = v_cache.requires_grad_(grad) if k_layout == "contiguous" else v_cache
    ck_paged = ck + c.cu_offset
    poison_allocator(device, (q.numel() * q.element_size(),) * 2)
    out, lse, _ = flash_attn_c.flash_attn_varlen_func(qg, kg, vg, cq, ck_paged, mq, mk,
                                                      return_attn_probs=True,
                                                      block_table=pg.block_table, **api_kw)
    assert out.shape == q.shape and out.dtype == dtype and out.device == q.device
    assert_ratio("out", out, ref.out, base.out, dtype, FWD_FACTOR)
    assert_lse("lse", lse, ref.lse, base.lse, dtype)
    empty = torch.isneginf(ref.lse)  # (h, total_q)
    if empty.any():
        assert (out.detach().permute(1, 0, 2)[empty] == 0).all(), "out must be 0 on empty rows"
    # without return_attn_probs: the plain tensor, the same values
    out2 = flash_attn_c.flash_attn_varlen_func(q, k_cache.detach(), v_cache.detach(), cq, ck_paged,
                                               mq, mk, block_table=pg.block_table, **api_kw)
    assert isinstance(out2, torch.Tensor)
    assert_ratio("out (no probs)", out2, ref.out, base.out, dtype, FWD_FACTOR)
    # the caches are inputs: never written
    for name, t, t0 in (("k", k_cache, k0), ("v", v_cache, v0)):
        assert torch.equal(t.detach().isnan(), t0.isnan()), f"{name} cache was written"
        fin = ~t0.isnan()
        assert torch.equal(t.detach()[fin], t0[fin]), f"{name} cache was written"

    if grad:
        dq, dkc, dvc = torch.autograd.grad(out, (qg, kg, vg), dout)
        blk, off = pg.where[:, 0], pg.where[:, 1]
        assert_grads((dq, dkc[blk, off], dvc[blk, off]), ref.grads, base.grads, dtype)
        unread = torch.ones(dkc.shape[:2], dtype=torch.bool, device=device)
        unread[blk, off] = False
        assert (dkc[unread] == 0).all() and (dvc[unread] == 0).all(), \
            "gradient outside the sequences' key slots must be exactly 0"
    return out


CPU_CASES = [
    PV((1, 3, 0), (5, 0, 9), page=1, causal=True),
    PV((4, 1, 7), (40, 1, 17), page=16, h=4, hk=1, d=64),
    PV((6, 6), (33, 16), page=16, causal=True, window=(5, 0)),
    PV((2, 9, 1), (100, 48, 0), page=48, h=6, hk=2, d=40, causal=True, softcap=5.0),
    PV((5, 5), (49, 96), page=48, window=(7, 3), alibi="bh"),
    PV((3, 1), (300, 7), page=256, h=2, hk=2, d=80, causal=True, alibi="h"),
    PV((1, 1, 1, 1), (0, 0, 0, 0), page=256, h=2, hk=1),
    PV((8,), (23,), page=5, h=3, hk=1, d=59, causal=True),
    PV((10, 3), (4, 3), page=16, causal=True),                 # sq > sk: empty leading rows
    PV((2, 4), (17, 31), page=16, causal=True, extra_blocks=3, pad=0),
    PV((2, 4), (17, 31), page=16, pad=2 ** 30, cu_offset=7),  # junk past the end, shifted cu
]
GPU_CASES = [
    PV((1, 1, 1, 1), (0, 1, 700, 2049), page=p, h=8, hk=2, d=d, causal=True)
    for p in (1, 16, 48, 256) for d in (64, 128)
] + [
    PV((128, 1, 300), (1000, 5, 300), page=p, h=4, hk=4, d=d, causal=True)
    for p in (16, 256) for d in (40, 80, 256)
] + [
    PV((1, 7, 64), (3000, 129, 64), page=16, h=8, hk=1, d=128, causal=True, window=(100, 0)),
    PV((33, 1), (517, 257), page=48, h=4, hk=2, d=64, window=(40, 7), softcap=10.0),
    PV((16, 16, 16), (0, 255, 1024), page=256, h=8, hk=2, d=128, causal=True, alibi="bh"),
    PV((200, 3), (10, 3), page=16, h=4, hk=2, d=64, causal=True),
    PV((1, 1), (4096, 4000), page=256, h=16, hk=16, d=64, pad=0, cu_offset=123),
] + [replace(c, d=max(c.d, 64)) for c in CPU_CASES]


@pytest.mark.parametrize("device,dtype,case",
                         dev_cases(CPU_CASES, GPU_CASES, marks=[pytest.mark.parity_fwd]))
def test_paged_varlen_forward(device, dtype, case):
    check_paged(device, dtype, case)


GRAD_CASES = [
    PV((3, 0, 5), (20, 7, 33), page=16, causal=True),
    PV((4, 4), (9, 1), page=1, h=4, hk=1, window=(3, 1), softcap=3.0),
]


@pytest.mark.parametrize("device,dtype,case",
                         dev_cases(GRAD_CASES, GRAD_CASES + [
                             PV((64, 1), (300, 1000), page=256, h=8, hk=2, d=128, causal=True)],
                             cpu_dtypes=(torch.float32, torch.bfloat16),
                             marks=[pytest.mark.parity_grad]))
def test_paged_varlen_backward(device, dtype, case):
    """Gradients reach q and the paged caches through the gather (zero at unread slots)."""
    check_paged(device, dtype, case, grad=True)


@pytest.mark.parametrize("device,dtype", dev_cases([()], [()]))
def test_paged_kv_views_of_one_tensor(device, dtype):
    """k/v as strided views of one (num_blocks, page, 2, hk, d) tensor (a kv-packed cache)."""
    check_paged(device, dtype, PV((3, 5), (30, 17), page=16, causal=True), k_layout="kv_packed")


@pytest.mark.parametrize("device", devices())
def test_paged_equals_contiguous(device):
    """The same keys paged or contiguous give the same result (CPU: the same packed op input, so
    bit-identical; CUDA: within the error-ratio rule, checked by check_paged)."""
    dtype = torch.bfloat16
    lens_q, lens_k = (4, 1, 6), (20, 0, 37)
    q = torch.randn(sum(lens_q), 4, 64, device=device, dtype=dtype)
    k = torch.randn(sum(lens_k), 2, 64, device=device, dtype=dtype)
    v = torch.randn_like(k)
    cq, ck = cu_from_lens(lens_q, device), cu_from_lens(lens_k, device)
    pg = make_paged(k, v, lens_k, page=16)
    a = flash_attn_c.flash_attn_varlen_func(q, k, v, cq, ck, 6, 37, causal=True)
    b = flash_attn_c.flash_attn_varlen_func(q, pg.k_cache, pg.v_cache, cq, ck, 6, 37, causal=True,
                                            block_table=pg.block_table)
    if device == "cpu":
        assert torch.equal(a, b)
    else:
        torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("device", devices())
def test_max_seqlen_k_larger_than_needed(device):
    """A generous max_seqlen_k (here past the table's capacity) changes nothing."""
    dtype = torch.float16
    lens_q, lens_k = (2, 3), (10, 21)
    q = torch.randn(5, 2, 32, device=device, dtype=dtype)
    k = torch.randn(31, 2, 32, device=device, dtype=dtype)
    v = torch.randn_like(k)
    cq, ck = cu_from_lens(lens_q, device), cu_from_lens(lens_k, device)
    pg = make_paged(k, v, lens_k, page=8)
    ref = flash_attn_c.flash_attn_varlen_func(q, k, v, cq, ck, 3, 21, causal=True)
    for mk in (21, 22, 1000):
        out = flash_attn_c.flash_attn_varlen_func(q, pg.k_cache, pg.v_cache, cq, ck, 3, mk,
                                                  causal=True, block_table=pg.block_table)
        torch.testing.assert_close(out, ref, rtol=0, atol=0)


@pytest.mark.parametrize("device,lens_q", [
    pytest.param("cuda", (1, 1, 1), marks=pytest.mark.gpu, id="cuda-in-place"),
    pytest.param("cuda", (1, 20, 3), marks=pytest.mark.gpu, id="cuda-gather"),
    pytest.param("cpu", (1, 20, 3), id="cpu-gather")])
def test_paged_varlen_compile_fullgraph(device, lens_q):
    """torch.compile(fullgraph=True) of both paths: the in-place kernel (decode-style, query
    blocks <= 16) and the gather (longer query blocks, and the CPU) read no length on the host."""
    dtype = torch.bfloat16
    lens_k = (0, 77, 300)
    mq = max(lens_q)
    q = torch.randn(sum(lens_q), 8, 128, device=device, dtype=dtype)
    k = torch.randn(sum(lens_k), 2, 128, device=device, dtype=dtype)
    v = torch.randn_like(k)
    cq, ck = cu_from_lens(lens_q, device), cu_from_lens(lens_k, device)
    pg = make_paged(k, v, lens_k, page=16)

    def f(q, kc, vc, cq, ck, bt):
        return flash_attn_c.flash_attn_varlen_func(q, kc, vc, cq, ck, mq, 300, causal=True,
                                                   block_table=bt)

    eager = f(q, pg.k_cache, pg.v_cache, cq, ck, pg.block_table)
    compiled = torch.compile(f, fullgraph=True)(q, pg.k_cache, pg.v_cache, cq, ck, pg.block_table)
    torch.testing.assert_close(compiled, eager, rtol=0, atol=0)
    ref = ref_forward_backward((q, k, v), None, upcast=True, causal=True, cu_seqlens_q=cq,
                               cu_seqlens_k=ck, max_seqlen_q=mq, max_seqlen_k=300)
    base = ref_forward_backward((q, k, v), None, upcast=False, causal=True, cu_seqlens_q=cq,
                                cu_seqlens_k=ck, max_seqlen_q=mq, max_seqlen_k=300)
    assert_ratio("out", compiled, ref.out, base.out, dtype, FWD_FACTOR)


@pytest.mark.gpu
def test_paged_varlen_cuda_graph_reads_tables_on_device():
    """Captured in a CUDA graph, then the lengths (cu_seqlens_k) and the block_table change in
    place: each replay follows the new contents (nothing was read on the host at capture)."""
    dtype, dev = torch.float16, "cuda"
    h, hk, d, page, max_k = 8, 2, 64, 16, 200
    lens_q = (1, 1, 1)
    q = torch.randn(3, h, d, device=dev, dtype=dtype)
    cq = cu_from_lens(lens_q, dev)
    scenarios = [(0, 77, 200), (200, 1, 16), (33, 0, 150)]
    pages = []
    for lens_k in scenarios:
        k = torch.randn(sum(lens_k), hk, d, device=dev, dtype=dtype)
        v = torch.randn_like(k)
        pages.append((k, v, make_paged(k, v, lens_k, page, extra_blocks=0,
                                       spare_blocks=60 - sum((n + page - 1) // page
                                                             for n in lens_k))))
    # one cache / table / cu_seqlens_k storage, refilled per scenario
    kc, vc = pages[0][2].k_cache.clone(), pages[0][2].v_cache.clone()
    bt = torch.full((3, (max_k + page - 1) // page), -1, dtype=I32, device=dev)
    ck = cu_from_lens(scenarios[0], dev)

    def load(i):
        pg = pages[i][2]
        kc.copy_(pg.k_cache), vc.copy_(pg.v_cache), ck.copy_(cu_from_lens(scenarios[i], dev))
        bt.fill_(-1)
        bt[:, :pg.block_table.shape[1]].copy_(pg.block_table)

    def f():
        return flash_attn_c.flash_attn_varlen_func(q, kc, vc, cq, ck, 1, max_k, causal=True,
                                                   block_table=bt)

    load(0)
    graph, static_out = capture_cuda_graph(f, warmup=1)
    for i, lens_k in enumerate(scenarios):
        load(i)
        graph.replay()
        k, v, _ = pages[i]
        ck_i = cu_from_lens(lens_k, dev)
        kw = dict(causal=True, cu_seqlens_q=cq, cu_seqlens_k=ck_i, max_seqlen_q=1,
                  max_seqlen_k=max_k)
        ref = ref_forward_backward((q, k, v), None, upcast=True, **kw)
        base = ref_forward_backward((q, k, v), None, upcast=False, **kw)
        assert_ratio(f"replay {i}", static_out, ref.out, base.out, dtype, FWD_FACTOR)


# --------------------------------------------------------------------------------------------
# bad input: errors naming the argument (CPU: the values are checked there)
# --------------------------------------------------------------------------------------------


def _args(**over):
    """A valid paged call: 2 sequences of 5 and 12 keys, page 4, 8 blocks."""
    q = torch.randn(3, 4, 32, dtype=torch.float16)
    kc = torch.randn(8, 4, 2, 32, dtype=torch.float16)
    vc = torch.randn_like(kc)
    a = dict(q=q, k=kc, v=vc, cu_seqlens_q=torch.tensor([0, 1, 3], dtype=I32),
             cu_seqlens_k=torch.tensor([0, 5, 17], dtype=I32), max_seqlen_q=2, max_seqlen_k=12,
             block_table=torch.tensor([[3, 0, -1, -1], [7, 1, 2, 5]], dtype=I32))
    a.update(over)
    return a


def test_valid_call_of_bad_input_table():
    """The base of the bad-input table is itself valid (so each row tests only its change)."""
    out = flash_attn_c.flash_attn_varlen_func(**_args())
    assert out.shape == (3, 4, 32) and torch.isfinite(out).all()


BAD = [
    ("table_dtype", dict(block_table=torch.tensor([[3, 0], [7, 1]])), r"block_table"),
    ("table_1d", dict(block_table=torch.tensor([3, 0, 7, 1], dtype=I32)), r"block_table"),
    ("table_3d", dict(block_table=torch.zeros(2, 4, 1, dtype=I32)), r"block_table"),
    ("table_batch", dict(block_table=torch.zeros(3, 4, dtype=I32)), r"block_table"),
    ("table_not_tensor", dict(block_table=[[3, 0], [7, 1]]), r"block_table"),
    ("table_negative_read", dict(block_table=torch.tensor([[3, -1, 0, 0], [7, 1, 2, 5]],
                                                          dtype=I32)), r"block_table\[0, 1\]"),
    ("table_out_of_range", dict(block_table=torch.tensor([[3, 0, 0, 0], [7, 1, 8, 5]],
                                                         dtype=I32)), r"block_table\[1, 2\]"),
    ("past_capacity", dict(block_table=torch.tensor([[3, 0], [7, 1]], dtype=I32)),
     r"cu_seqlens_k.*block_table|block_table.*cu_seqlens_k"),
    ("k_3d", dict(k=torch.randn(32, 2, 32, dtype=torch.float16),
                  v=torch.randn(32, 2, 32, dtype=torch.float16)), r"\bk\b.*4-D"),
    ("v_shape", dict(v=torch.randn(8, 2, 2, 32, dtype=torch.float16)), r"\bv\b"),
    ("k_dtype", dict(k=torch.randn(8, 4, 2, 32)), r"\bk\b"),
    ("page_zero", dict(k=torch.randn(8, 0, 2, 32, dtype=torch.float16),
                       v=torch.randn(8, 0, 2, 32, dtype=torch.float16)), r"page_block_size"),
    ("gqa_ratio", dict(k=torch.randn(8, 4, 3, 32, dtype=torch.float16),
                       v=torch.randn(8, 4, 3, 32, dtype=torch.float16)), r"head"),
    ("head_dim", dict(k=torch.randn(8, 4, 2, 16, dtype=torch.float16),
                      v=torch.randn(8, 4, 2, 16, dtype=torch.float16)), r"\bk\b|head"),
    ("cu_k_dtype", dict(cu_seqlens_k=torch.tensor([0, 5, 17])), r"cu_seqlens_k"),
    ("cu_k_entries", dict(cu_seqlens_k=torch.tensor([0, 5], dtype=I32)), r"cu_seqlens_k"),
    ("cu_k_decreasing", dict(cu_seqlens_k=torch.tensor([0, 5, 3], dtype=I32)), r"cu_seqlens_k"),
    ("max_seqlen_k_small", dict(max_seqlen_k=11), r"max_seqlen_k"),
    ("cu_q_missing", dict(cu_seqlens_q=None), r"cu_seqlens_q"),
]


@pytest.mark.parametrize("over,pattern", [pytest.param(o, p, id=n) for n, o, p in BAD])
def test_bad_input(over, pattern):
    with pytest.raises(ERRORS, match=pattern):
        flash_attn_c.flash_attn_varlen_func(**_args(**over))


@pytest.mark.gpu
@pytest.mark.parametrize("max_seqlen_q", [2, 20])  # 2: pages read in place; 20: the gather route
def test_cuda_sequence_past_the_block_table_is_an_error(max_seqlen_q):
    """On CUDA (eager) too, a sequence longer than its block table covers is an error naming
    cu_seqlens_k, on both routes: the gather route used to clamp the block column and read
    another position's keys."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    a = _args(block_table=torch.tensor([[3, 0], [7, 1]], dtype=I32), max_seqlen_q=max_seqlen_q)
    a = {n: (t.cuda() if isinstance(t, torch.Tensor) else t) for n, t in a.items()}
    with pytest.raises(ValueError, match="cu_seqlens_k"):
        flash_attn_c.flash_attn_varlen_func(**a)


def test_flash_attn_func_has_no_block_table():
    """flash-attn 2.8's flash_attn_func takes no block_table; neither does ours."""
    q = torch.randn(1, 2, 2, 32)
    with pytest.raises(TypeError, match=r"block_table"):
        flash_attn_c.flash_attn_func(q, q, q, block_table=torch.zeros(1, 1, dtype=I32))


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["block_table", "k"])
def test_cuda_device_mismatch(name):
    a = _args()
    a = {n: (t.cuda() if isinstance(t, torch.Tensor) and n != name else t) for n, t in a.items()}
    with pytest.raises(ERRORS, match=rf"\b{name}\b"):
        flash_attn_c.flash_attn_varlen_func(**a)
