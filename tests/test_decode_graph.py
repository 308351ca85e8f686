"""Decode loops that a serving stack runs: eager, replayed from a CUDA graph, and one step under
torch.compile(fullgraph=True).

A toy greedy decoder (embedding -> q/k/v projections -> flash_attn_with_kvcache with rotary and an
in-place append -> output projection -> argmax) runs 16 steps from a batch of caches with mixed
prefix lengths (0, 5, 37, 100). The cache slots past the prefix start poisoned (NaN k, +inf v):
the steps overwrite them one by one, the rest must stay poisoned and never leak. cache_seqlens is
an int32 device tensor that each step advances in place, so a graph replay only works if the
library reads the lengths on the device.

Checks: every step's attention output against the float64 oracle (per row: the prefix plus the
rotated keys appended so far, q rotated at its position) with the error-ratio rule; the final
caches (appended slots = the rotated new keys / the new values, every other slot bit-identical);
graph replay and compiled step against the eager loop (same tokens, same lengths, outputs and
caches equal to rounding). The CUDA-graph and compile tests need a decode path that does not read
the lengths on the host.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import List, Optional, Tuple

import pytest
import torch

from conftest import devices
from oracle import FWD_FACTOR, assert_ratio, attention_ref, one_thread
from test_kvcache import make_rotary, rotary_ref, same_bits

from flash_attn_c.kvcache import flash_attn_with_kvcache
from flash_attn_c.testing import capture_cuda_graph

STEPS = 16
PREFIX = (0, 5, 37, 100)
CAPACITY = 160


@dataclass
class Toy:
    """Weights of a one-layer greedy decoder: emb (vocab, h*d), wq (h*d, h*d), wk/wv (h*d, hk*d),
    wo (h*d, vocab)."""
    emb: torch.Tensor
    wq: torch.Tensor
    wk: torch.Tensor
    wv: torch.Tensor
    wo: torch.Tensor
    h: int
    hk: int
    d: int


def make_toy(device, dtype, vocab: int = 64, h: int = 4, hk: int = 2, d: int = 64) -> Toy:
    g = torch.Generator().manual_seed(1234)
    hd = h * d

    def w(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(device=device, dtype=dtype)

    return Toy(w(vocab, hd), w(hd, hd, scale=hd ** -0.5), w(hd, hk * d, scale=hd ** -0.5),
               w(hd, hk * d, scale=hd ** -0.5), w(hd, vocab, scale=4 * hd ** -0.5), h, hk, d)


@dataclass
class State:
    """What a decode loop mutates: tok int64 (b,), seqlens int32 (b,) (cache length before the
    next append), k_cache/v_cache (b, capacity, hk, d) or paged (num_blocks, page, hk, d)."""
    tok: torch.Tensor
    seqlens: torch.Tensor
    k_cache: torch.Tensor
    v_cache: torch.Tensor
    block_table: Optional[torch.Tensor] = None  # int32 (b, capacity / page); never mutated


def clone_state(s: State) -> State:
    return State(*(None if getattr(s, f.name) is None else getattr(s, f.name).clone()
                   for f in fields(State)))


def restore(dst: State, src: State) -> None:
    """dst's tensors (same storage, as a captured graph needs) take src's values."""
    for f in fields(State):
        if getattr(dst, f.name) is not None:
            getattr(dst, f.name).copy_(getattr(src, f.name))


def make_state(device, dtype, toy: Toy, page: int = 0) -> Tuple[State, torch.Tensor, torch.Tensor]:
    """Initial state plus the logical prefix caches (b, CAPACITY, hk, d): random in [0, PREFIX[i]),
    NaN (k) / +inf (v) after. Paged: the logical rows scattered over permuted pages, with two
    spare pages (poisoned)."""
    b = len(PREFIX)
    lk = torch.randn(b, CAPACITY, toy.hk, toy.d, device=device, dtype=dtype)
    lv = torch.randn_like(lk)
    for i, n in enumerate(PREFIX):
        lk[i, n:] = float("nan")
        lv[i, n:] = float("inf")
    tok = torch.randint(0, toy.emb.shape[0], (b,), device=device)
    seqlens = torch.tensor(PREFIX, dtype=torch.int32, device=device)
    if not page:
        return State(tok, seqlens, lk.clone(), lv.clone()), lk, lv
    nblk = CAPACITY // page
    num_blocks = b * nblk + 2
    perm = torch.randperm(num_blocks)[:b * nblk].view(b, nblk).to(device)
    kc = torch.full((num_blocks, page, toy.hk, toy.d), float("nan"), device=device, dtype=dtype)
    vc = torch.full_like(kc, float("inf"))
    kc[perm.flatten()] = lk.reshape(b * nblk, page, toy.hk, toy.d)
    vc[perm.flatten()] = lv.reshape(b * nblk, page, toy.hk, toy.d)
    return State(tok, seqlens, kc, vc, perm.to(torch.int32)), lk, lv


def logical_cache(st: State, i: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Row i of the caches as (CAPACITY, hk, d), whatever the layout."""
    if st.block_table is None:
        return st.k_cache[i], st.v_cache[i]
    blocks = st.block_table[i].long()
    return (st.k_cache[blocks].flatten(0, 1), st.v_cache[blocks].flatten(0, 1))


def decode_step(toy: Toy, st: State, cos: torch.Tensor, sin: torch.Tensor
                ) -> Tuple[torch.Tensor, ...]:
    """One greedy step, in place: appends the new token's k/v at st.seqlens, then advances
    st.tok (argmax) and st.seqlens (+1). Returns q (b, 1, h, d), k/v (b, 1, hk, d) before
    rotary, and the attention output (b, 1, h, d). No host reads (graph-capturable)."""
    b = st.tok.shape[0]
    x = toy.emb[st.tok]                                     # (b, h * d)
    q = (x @ toy.wq).view(b, 1, toy.h, toy.d)
    k = (x @ toy.wk).view(b, 1, toy.hk, toy.d)
    v = (x @ toy.wv).view(b, 1, toy.hk, toy.d)
    out = flash_attn_with_kvcache(q, st.k_cache, st.v_cache, k, v, rotary_cos=cos,
                                  rotary_sin=sin, cache_seqlens=st.seqlens,
                                  block_table=st.block_table, causal=True,
                                  rotary_interleaved=False)
    logits = out.reshape(b, toy.h * toy.d) @ toy.wo         # (b, vocab)
    st.tok.copy_(logits.argmax(-1))
    st.seqlens.add_(1)
    return q, k, v, out


class Ledger:
    """The oracle's view of the caches: per row, the keys/values so far (keys rotated by the
    reference rotary) in float64 (ref) and in the inputs' dtype (base, the low-precision
    baseline of the error-ratio rule)."""

    def __init__(self, lk: torch.Tensor, lv: torch.Tensor, lens: List[int], cos, sin,
                 interleaved: bool):
        self.lens = list(lens)
        self.cos, self.sin, self.inter = cos, sin, interleaved
        self.dtype = lk.dtype
        self.k = {u: [lk[i, :n].to(self._ct(u)) for i, n in enumerate(lens)] for u in (True, False)}
        self.v = {u: [lv[i, :n].to(self._ct(u)) for i, n in enumerate(lens)] for u in (True, False)}

    def _ct(self, upcast: bool) -> torch.dtype:
        return torch.float64 if upcast else self.dtype

    def step(self, q: torch.Tensor, k_new: torch.Tensor, v_new: torch.Tensor, causal: bool = True
             ) -> Tuple[torch.Tensor, torch.Tensor, List[torch.Tensor]]:
        """Appends k_new/v_new (b, s_new, hk, d) to every row and attends q (b, sq, h, d) over
        the row (causal: q token j at position len + j). Returns (ref out, base out) (b, sq, h, d)
        and the float64 rotated new keys of every row."""
        b, sq = q.shape[0], q.shape[1]
        s_new = k_new.shape[1]
        dev = q.device
        outs = {True: [], False: []}
        new_keys = []
        with one_thread():
            for u in (True, False):
                ct = self._ct(u)
                for i in range(b):
                    n = self.lens[i]
                    kn = rotary_ref(k_new[i], self.cos, self.sin,
                                    n + torch.arange(s_new, device=dev), self.inter, ct)
                    qpos = n + (torch.arange(sq, device=dev) if causal
                                else torch.zeros(sq, dtype=torch.int64, device=dev))
                    qi = rotary_ref(q[i], self.cos, self.sin, qpos, self.inter, ct)
                    self.k[u][i] = torch.cat([self.k[u][i], kn])
                    self.v[u][i] = torch.cat([self.v[u][i], v_new[i].to(ct)])
                    if u:
                        new_keys.append(kn)
                    res = attention_ref(qi[None], self.k[u][i][None], self.v[u][i][None],
                                        causal=causal, upcast=u)
                    outs[u].append(res.out[0])
        self.lens = [n + s_new for n in self.lens]
        return torch.stack(outs[True]), torch.stack(outs[False]), new_keys


def check_final_cache(st: State, lk0: torch.Tensor, lv0: torch.Tensor, ledger: Ledger,
                      start: List[int]) -> None:
    """Every row: [0, start) bit-identical to the initial prefix, [start, ledger.lens) the
    appended keys (error-ratio rule vs the float64 rotation) and values (bit-exact), the rest
    still the initial poison, bit for bit."""
    dtype = lk0.dtype
    for i, (s0, end) in enumerate(zip(start, ledger.lens)):
        kc, vc = logical_cache(st, i)
        assert same_bits(kc[:s0], lk0[i, :s0]) and same_bits(vc[:s0], lv0[i, :s0]), \
            f"row {i}: the prefix changed"
        assert same_bits(kc[end:], lk0[i, end:]) and same_bits(vc[end:], lv0[i, end:]), \
            f"row {i}: slots past the appended ones changed"
        assert same_bits(vc[s0:end], ledger.v[False][i][s0:end]), f"row {i}: appended v differs"
        assert_ratio(f"row {i} appended k (rotary)", kc[s0:end], ledger.k[True][i][s0:end],
                     ledger.k[False][i][s0:end], dtype, FWD_FACTOR)


def run_eager(toy: Toy, st: State, cos, sin) -> List[Tuple[torch.Tensor, ...]]:
    """STEPS eager steps; per step (q, k, v, out, next token)."""
    rec = []
    for _ in range(STEPS):
        q, k, v, out = decode_step(toy, st, cos, sin)
        rec.append((q, k, v, out, st.tok.clone()))
    return rec


def check_loop_against_oracle(rec, lk0, lv0, st: State, cos, sin, dtype) -> None:
    ledger = Ledger(lk0, lv0, list(PREFIX), cos, sin, interleaved=False)
    for step, (q, k, v, out, _) in enumerate(rec):  # each step on its own error baseline
        ref, base, _ = ledger.step(q, k, v)
        assert_ratio(f"decode output of step {step}", out, ref, base, dtype, FWD_FACTOR)
    assert st.seqlens.tolist() == [n + STEPS for n in PREFIX]
    check_final_cache(st, lk0, lv0, ledger, list(PREFIX))


def assert_rounding_close(name: str, a: torch.Tensor, b: torch.Tensor, dtype) -> None:
    """Equal up to one rounding of dtype (NaN/inf positions must match exactly)."""
    scale = max(1.0, float(b.float().nan_to_num(0, 0, 0).abs().max()))
    torch.testing.assert_close(a, b, rtol=torch.finfo(dtype).eps, atol=1e-4 * scale,
                               equal_nan=True, msg=lambda m: f"{name}: {m}")


def compare_records(rec_a, rec_b, dtype) -> None:
    for t, (ra, rb) in enumerate(zip(rec_a, rec_b)):
        assert torch.equal(ra[4], rb[4]), f"step {t}: greedy tokens differ: {ra[4]} vs {rb[4]}"
        for name, x, y in zip(("q", "k", "v", "out"), ra[:4], rb[:4]):
            assert_rounding_close(f"step {t} {name}", x, y, dtype)


# --------------------------------------------------------------------------------------------
# eager loop (CPU and CUDA): the baseline the graph and compile tests compare with
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("page", [0, 16], ids=["dense", "paged16"])
def test_eager_decode_loop_matches_oracle(device, dtype, page):
    toy = make_toy(device, dtype)
    st, lk0, lv0 = make_state(device, dtype, toy, page)
    cos, sin = make_rotary(CAPACITY + 1, toy.d, dtype, device)
    rec = run_eager(toy, st, cos, sin)
    check_loop_against_oracle(rec, lk0, lv0, st, cos, sin, dtype)


# --------------------------------------------------------------------------------------------
# (a) CUDA graph: one step captured, replayed STEPS times
# --------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("page", [0, 16], ids=["dense", "paged16"])
def test_cuda_graph_decode_loop(dtype, page):
    """One greedy step (projections, rotary + in-place append at the device cache_seqlens,
    attention, argmax, cache_seqlens += 1) captured in a torch.cuda.CUDAGraph and replayed 16
    times equals the eager loop step for step, and each replayed step matches the oracle. A
    library that read the lengths on the host would fail to capture, or replay the lengths of
    the capture."""
    device = "cuda"
    toy = make_toy(device, dtype)
    init, lk0, lv0 = make_state(device, dtype, toy, page)
    cos, sin = make_rotary(CAPACITY + 1, toy.d, dtype, device)

    st_e = clone_state(init)
    rec_e = run_eager(toy, st_e, cos, sin)

    st = clone_state(init)
    graph, static = capture_cuda_graph(lambda: decode_step(toy, st, cos, sin), warmup=2,
                                       reset=lambda: restore(st, init))
    restore(st, init)  # capture runs nothing; start the replays from the initial state anyway
    rec_g = []
    for _ in range(STEPS):
        graph.replay()
        rec_g.append(tuple(t.clone() for t in static) + (st.tok.clone(),))
    torch.cuda.synchronize()

    compare_records(rec_g, rec_e, dtype)
    assert torch.equal(st.seqlens, st_e.seqlens)
    assert_rounding_close("k_cache", st.k_cache, st_e.k_cache, dtype)
    assert_rounding_close("v_cache", st.v_cache, st_e.v_cache, dtype)
    check_loop_against_oracle(rec_g, lk0, lv0, st, cos, sin, dtype)


# --------------------------------------------------------------------------------------------
# (b) torch.compile(fullgraph=True) of one decode step
# --------------------------------------------------------------------------------------------


def _kvcache_step(q, k_cache, v_cache, k, v, cache_seqlens, cos, sin, block_table):
    return flash_attn_with_kvcache(q, k_cache, v_cache, k, v, rotary_cos=cos, rotary_sin=sin,
                                   cache_seqlens=cache_seqlens, block_table=block_table,
                                   causal=True, rotary_interleaved=True, return_softmax_lse=True)


@pytest.mark.gpu
@pytest.mark.parametrize("page", [0, 16], ids=["dense", "paged16"])
@pytest.mark.parametrize("s_new", [1, 4])
def test_compile_fullgraph_decode_step(page, s_new):
    """flash_attn_with_kvcache (rotary, k/v appended in place, cache_seqlens a device tensor)
    compiled with fullgraph=True: two consecutive steps (the second with new lengths must reuse
    the graph: no recompile) give eager's out / lse / caches to rounding and pass the oracle."""
    device, dtype = "cuda", torch.bfloat16
    toy = make_toy(device, dtype)
    st_e, lk0, lv0 = make_state(device, dtype, toy, page)
    st_c = clone_state(st_e)
    cos, sin = make_rotary(CAPACITY + 1, toy.d, dtype, device)
    ledger = Ledger(lk0, lv0, list(PREFIX), cos, sin, interleaved=True)
    b = len(PREFIX)
    compiled = torch.compile(_kvcache_step, fullgraph=True)
    for step in range(2):
        q = torch.randn(b, s_new, toy.h, toy.d, device=device, dtype=dtype)
        k = torch.randn(b, s_new, toy.hk, toy.d, device=device, dtype=dtype)
        v = torch.randn_like(k)
        out_e, lse_e = _kvcache_step(q, st_e.k_cache, st_e.v_cache, k, v, st_e.seqlens, cos, sin,
                                     st_e.block_table)
        with torch._dynamo.config.patch(error_on_recompile=step > 0):
            out_c, lse_c = compiled(q, st_c.k_cache, st_c.v_cache, k, v, st_c.seqlens, cos, sin,
                                    st_c.block_table)
        assert_rounding_close(f"step {step} out", out_c, out_e, dtype)
        torch.testing.assert_close(lse_c, lse_e, rtol=1e-5, atol=1e-5)
        assert_rounding_close(f"step {step} k_cache", st_c.k_cache, st_e.k_cache, dtype)
        assert_rounding_close(f"step {step} v_cache", st_c.v_cache, st_e.v_cache, dtype)
        ref, base, _ = ledger.step(q, k, v)
        assert_ratio(f"step {step} out (compiled)", out_c, ref, base, dtype, FWD_FACTOR)
        st_e.seqlens += s_new
        st_c.seqlens += s_new
    check_final_cache(st_c, lk0, lv0, ledger, list(PREFIX))
