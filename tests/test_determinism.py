"""deterministic=True: the backward is bitwise reproducible run to run (CPU: 5 repeats; CUDA: 50).
The forward always is. On CPU results also must not depend on the thread count (work items write
disjoint outputs, flash_attn_c.h)."""
from __future__ import annotations

import pytest
import torch

from conftest import dev_cases
from oracle import check_dense, check_varlen, cu_from_lens

import flash_attn_c

# (kind, causal, h, hk): GQA is the case where dK/dV accumulate over several query heads
CASES = [("dense", False, 4, 4), ("dense", True, 8, 2), ("dense", False, 4, 1), ("varlen", True, 4, 2)]


def _inputs(device, dtype, kind, h, hk, big):
    if kind == "dense":
        b, sq, sk = (2, 1000, 1200) if big else (2, 70, 90)
        q = torch.randn(b, sq, h, 64, device=device, dtype=dtype)
        k = torch.randn(b, sk, hk, 64, device=device, dtype=dtype)
        v = torch.randn(b, sk, hk, 64, device=device, dtype=dtype)
        return (q, k, v), {}
    lens_q = [300, 0, 1000, 7] if big else [30, 0, 50, 7]
    lens_k = [400, 9, 1000, 0] if big else [40, 9, 50, 0]
    q = torch.randn(sum(lens_q), h, 64, device=device, dtype=dtype)
    k = torch.randn(sum(lens_k), hk, 64, device=device, dtype=dtype)
    v = torch.randn(sum(lens_k), hk, 64, device=device, dtype=dtype)
    extra = (cu_from_lens(lens_q, device), cu_from_lens(lens_k, device), max(lens_q), max(lens_k))
    return (q, k, v), {"extra": extra}


def _fwd_bwd(inputs, extra, causal, dout=None, deterministic=True, dropout_p=0.0):
    q, k, v = (t.detach().requires_grad_() for t in inputs)
    kw = dict(causal=causal, deterministic=deterministic, dropout_p=dropout_p)
    with flash_attn_c.fixed_dropout_seed(5, 6):
        if extra:
            out = flash_attn_c.flash_attn_varlen_func(q, k, v, *extra, **kw)
        else:
            out = flash_attn_c.flash_attn_func(q, k, v, **kw)
    if dout is None:
        dout = torch.randn_like(out)
    return out.detach(), torch.autograd.grad(out, (q, k, v), dout), dout


def _repeat_check(device, dtype, kind, causal, h, hk, repeats, big, dropout_p=0.0):
    inputs, kw = _inputs(device, dtype, kind, h, hk, big)
    extra = kw.get("extra")
    out0, g0, dout = _fwd_bwd(inputs, extra, causal, dropout_p=dropout_p)
    for r in range(repeats):
        out, g, _ = _fwd_bwd(inputs, extra, causal, dout, dropout_p=dropout_p)
        assert torch.equal(out, out0), f"forward differs at repeat {r}"
        for name, a, b in zip(("dq", "dk", "dv"), g, g0):
            assert torch.equal(a, b), f"{name} differs at repeat {r}"


@pytest.mark.parametrize("device,dtype,kind,causal,h,hk",
                         dev_cases(CASES, [], cpu_dtypes=(torch.float32, torch.bfloat16)))
def test_deterministic_backward_cpu(device, dtype, kind, causal, h, hk):
    _repeat_check(device, dtype, kind, causal, h, hk, repeats=5, big=False)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kind,causal,h,hk", CASES)
def test_deterministic_backward_cuda_50_repeats(dtype, kind, causal, h, hk):
    _repeat_check("cuda", dtype, kind, causal, h, hk, repeats=50, big=True)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kind,causal,h,hk", CASES)
def test_deterministic_backward_cuda_pass_sm90(monkeypatch, dtype, kind, causal, h, hk):
    """FLASH_ATTN_C_SM90_BWD_DET=pass: on H100/H200 the dense cases at d <= 128 take the dK/dV kernel +
    the ordered dQ pass instead of the default (dQ added inside the pipelined sm90 kernel in a fixed
    key-block order, the Br = 80 / 128 tiles' ORDERED instances, what the test above runs there);
    elsewhere the variable changes nothing. Bitwise identical over 50 repeats either way."""
    monkeypatch.setenv("FLASH_ATTN_C_SM90_BWD_DET", "pass")
    _repeat_check("cuda", dtype, kind, causal, h, hk, repeats=50, big=True)


# Gradient parity of deterministic=True (on CUDA its own dQ path: the ordered dQ kernel after the
# sm80 backward or, on H100/H200 for d <= 128 without dropout/softcap/ALiBi, dQ added in order inside
# the pipelined sm90 kernel for dense calls, the sm90 dK/dV kernel + the ordered dQ pass for varlen).
# (d, causal, window, h, hk, sq, sk)
DET_GPU_CASES = [(64, False, (-1, -1), 8, 8, 1000, 1000), (64, True, (-1, -1), 8, 2, 700, 1300),
                 (128, False, (-1, -1), 4, 4, 513, 1500), (128, True, (-1, -1), 8, 1, 1500, 600),
                 (40, True, (-1, -1), 4, 2, 300, 300), (96, False, (64, 32), 4, 4, 400, 500),
                 (256, True, (-1, -1), 4, 2, 384, 384), (64, False, (100, 0), 4, 4, 777, 777)]
DET_CPU_CASES = [(64, True, (-1, -1), 4, 2, 33, 47), (32, False, (8, 4), 2, 2, 40, 40)]


@pytest.mark.parametrize("device,dtype,d,causal,window,h,hk,sq,sk",
                         dev_cases(DET_CPU_CASES, DET_GPU_CASES, cpu_dtypes=(torch.float32,),
                                   marks=[pytest.mark.parity_grad]))
def test_deterministic_backward_parity(device, dtype, d, causal, window, h, hk, sq, sk):
    check_dense(device, dtype, 2, sq, sk, h, hk, d, causal=causal, window=window, grad=True,
                check_lse=False, deterministic=True)


@pytest.mark.parametrize("device,dtype,d,causal",
                         dev_cases([(64, True)], [(64, True), (128, False), (80, True)],
                                   cpu_dtypes=(torch.float32,), marks=[pytest.mark.parity_grad]))
def test_deterministic_backward_parity_varlen(device, dtype, d, causal):
    lens_q = [20, 0, 33, 5] if device == "cpu" else [300, 0, 1031, 5, 700]
    lens_k = [20, 7, 41, 0] if device == "cpu" else [300, 4, 1031, 0, 1400]
    check_varlen(device, dtype, lens_q, lens_k, 8, 2, d, causal=causal, grad=True,
                 deterministic=True)


@pytest.mark.parametrize("device,dtype", dev_cases([()], [()], cpu_dtypes=(torch.float16,)))
def test_deterministic_backward_with_dropout(device, dtype):
    _repeat_check(device, dtype, "dense", True, 4, 2, repeats=5, big=device == "cuda", dropout_p=0.3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kind", ["dense", "varlen"])
def test_cpu_results_independent_of_thread_count(dtype, kind):
    inputs, kw = _inputs("cpu", dtype, kind, 4, 2, False)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        out1, g1, dout = _fwd_bwd(inputs, kw.get("extra"), True)
        torch.set_num_threads(max(2, old))
        out2, g2, _ = _fwd_bwd(inputs, kw.get("extra"), True, dout)
    finally:
        torch.set_num_threads(old)
    assert torch.equal(out1, out2)
    for a, b in zip(g1, g2):
        assert torch.equal(a, b)
