"""Sequence isolation: a sequence's output and gradients are bit-identical whatever the other
sequences of the batch (dense) or pack (varlen) hold, Inf and NaN included (docs/conventions.md).

A kernel whose key tile crosses a sequence end may load a neighbour's rows; masking them gives
P = 0, but 0 * Inf = NaN, so the rows themselves must never reach the math. Each case runs a
forward and backward twice: once on random inputs, once with one sequence's q, k, v and dout
overwritten by Inf / NaN; every other sequence's out, dq, dk, dv must not change by a single bit.
On CUDA every kernel family is covered: the sm90 kernels (taken on H100/H200 for d 33..256
forward and d <= 128 backward), the sm80 kernels (FLASH_ATTN_C_SM90=0 / _BWD=0, and softcap,
which only the sm80 kernels run), and the deterministic dQ pass.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import pytest
import torch

from conftest import dev_cases
from oracle import cu_from_lens

import flash_attn_c

POISONS = {
    "inf": float("inf"),
    "nan": float("nan"),
}


def _run(q, k, v, dout, *, varlen_args=None, **kw) -> Tuple[torch.Tensor, ...]:
    """out, dq, dk, dv of one call (fresh leaves: no state shared between the two runs)."""
    qg, kg, vg = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    if varlen_args is None:
        out = flash_attn_c.flash_attn_func(qg, kg, vg, **kw)
    else:
        out = flash_attn_c.flash_attn_varlen_func(qg, kg, vg, *varlen_args, **kw)
    dq, dk, dv = torch.autograd.grad(out, (qg, kg, vg), dout)
    return out.detach(), dq, dk, dv


def _assert_same(name: str, a: torch.Tensor, b: torch.Tensor, exact: bool) -> None:
    assert torch.isfinite(a).all(), f"{name}: the clean run is not finite"
    assert torch.isfinite(b).all(), f"{name}: another sequence's Inf/NaN leaked in"
    if exact:
        assert torch.equal(a, b), f"{name}: changed by {(a.float() - b.float()).abs().max().item():.3g}"
    else:  # dq through float atomics: order-dependent rounding, but never a leak
        torch.testing.assert_close(a, b, rtol=0, atol=1e-2 * a.abs().max().item() + 1e-6)


def _kernels(device: str) -> List:
    """(fwd_sm90, bwd_sm90) switches: both families on CUDA, the one CPU backend otherwise."""
    return [("on", "on"), ("off", "off")] if device == "cuda" else [("on", "on")]


def _set_kernels(monkeypatch, sm90: str) -> None:
    value = "1" if sm90 == "on" else "0"
    monkeypatch.setenv("FLASH_ATTN_C_SM90", value)
    monkeypatch.setenv("FLASH_ATTN_C_SM90_BWD", value)


# (lens_q, lens_k, h, hk, d): lengths off the tile sizes; the poisoned sequence (index 1) sits in
# the middle so neighbours on both sides are checked, and is followed by key sequences shorter
# than a key tile: a tile that ends at such a short sequence's end starts inside the poisoned one.
CPU_VARLEN = [
    ([37, 5, 70, 1], [45, 9, 66, 3], 2, 1, 40),
    ([17, 33, 17], [130, 7, 13], 2, 2, 64),
]
GPU_VARLEN = [
    ([200, 77, 300, 5], [190, 130, 9, 40], 4, 2, d) for d in (40, 64, 128, 256)
] + [
    ([1, 1, 1, 1], [700, 33, 12, 64], 8, 2, 128),   # decode-like: one query per sequence
    ([129, 64, 255], [129, 200, 100], 2, 2, 64),
]


@pytest.mark.parametrize("device,dtype,lens_q,lens_k,h,hk,d", dev_cases(CPU_VARLEN, GPU_VARLEN))
@pytest.mark.parametrize("poison", list(POISONS))
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("feature", ["plain", "window", "softcap", "deterministic"])
def test_varlen_isolation(device, dtype, lens_q, lens_k, h, hk, d, poison, causal, feature,
                          monkeypatch):
    b = len(lens_q)
    victim = 1 if b > 2 else 0
    cq, ck = cu_from_lens(lens_q, device), cu_from_lens(lens_k, device)
    q = torch.randn(sum(lens_q), h, d, device=device, dtype=dtype)
    k = torch.randn(sum(lens_k), hk, d, device=device, dtype=dtype)
    v = torch.randn(sum(lens_k), hk, d, device=device, dtype=dtype)
    dout = torch.randn_like(q)
    kw = dict(causal=causal)
    if feature == "window":
        kw["window_size"] = (40, 3)
    if feature == "softcap":
        kw["softcap"] = 5.0
    kw["deterministic"] = feature == "deterministic"
    args = (cq, ck, max(lens_q), max(lens_k))

    bad = POISONS[poison]
    q2, k2, v2, dout2 = q.clone(), k.clone(), v.clone(), dout.clone()
    qs = slice(int(cq[victim]), int(cq[victim + 1]))
    ks = slice(int(ck[victim]), int(ck[victim + 1]))
    q2[qs], dout2[qs] = bad, bad
    k2[ks], v2[ks] = bad, bad

    for fwd, _ in _kernels(device):
        _set_kernels(monkeypatch, fwd)
        clean = _run(q, k, v, dout, varlen_args=args, **kw)
        dirty = _run(q2, k2, v2, dout2, varlen_args=args, **kw)
        exact_dq = device == "cpu" or kw["deterministic"]
        for s in range(b):
            if s == victim:
                continue
            rq = slice(int(cq[s]), int(cq[s + 1]))
            rk = slice(int(ck[s]), int(ck[s + 1]))
            tag = f"kernels sm90={fwd}, sequence {s}"
            _assert_same(f"out ({tag})", clean[0][rq], dirty[0][rq], True)
            _assert_same(f"dq ({tag})", clean[1][rq], dirty[1][rq], exact_dq)
            _assert_same(f"dk ({tag})", clean[2][rk], dirty[2][rk], True)
            _assert_same(f"dv ({tag})", clean[3][rk], dirty[3][rk], True)


# (b, sq, sk, h, hk, d)
CPU_DENSE = [(3, 37, 45, 2, 1, 40), (3, 17, 70, 2, 2, 64)]
GPU_DENSE = [(3, 200, 190, 4, 2, d) for d in (40, 64, 128, 256)] + [(3, 1, 300, 8, 2, 128)]


@pytest.mark.parametrize("device,dtype,b,sq,sk,h,hk,d", dev_cases(CPU_DENSE, GPU_DENSE))
@pytest.mark.parametrize("poison", list(POISONS))
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_dense_isolation(device, dtype, b, sq, sk, h, hk, d, poison, causal, monkeypatch):
    q = torch.randn(b, sq, h, d, device=device, dtype=dtype)
    k = torch.randn(b, sk, hk, d, device=device, dtype=dtype)
    v = torch.randn(b, sk, hk, d, device=device, dtype=dtype)
    dout = torch.randn_like(q)
    bad = POISONS[poison]
    q2, k2, v2, dout2 = q.clone(), k.clone(), v.clone(), dout.clone()
    victim = 1
    for t in (q2, k2, v2, dout2):
        t[victim] = bad
    for fwd, _ in _kernels(device):
        _set_kernels(monkeypatch, fwd)
        clean = _run(q, k, v, dout, causal=causal)
        dirty = _run(q2, k2, v2, dout2, causal=causal)
        for s in (0, 2):
            tag = f"kernels sm90={fwd}, batch {s}"
            _assert_same(f"out ({tag})", clean[0][s], dirty[0][s], True)
            _assert_same(f"dq ({tag})", clean[1][s], dirty[1][s], device == "cpu")
            _assert_same(f"dk ({tag})", clean[2][s], dirty[2][s], True)
            _assert_same(f"dv ({tag})", clean[3][s], dirty[3][s], True)
