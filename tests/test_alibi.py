"""ALiBi: fp32 slopes (h,) or (b, h); s_ij += -slope * |i + sk - sq - j|, alone and with causal,
window and softcap; dense and varlen; forward and backward."""
from __future__ import annotations

import pytest
import torch

from conftest import dev_cases
from oracle import check_dense, check_varlen

import flash_attn_c

CPU_CASES = [(sq, sk, kind, causal) for sq, sk in [(50, 50), (20, 90), (90, 20)]
             for kind in ("h", "bh") for causal in (False, True)]
GPU_CASES = [(sq, sk, kind, causal) for sq, sk in [(255, 255), (400, 2000), (2000, 400), (2048, 2048)]
             for kind in ("h", "bh") for causal in (False, True)]


@pytest.mark.parametrize("device,dtype,sq,sk,kind,causal",
                         dev_cases(CPU_CASES, GPU_CASES, marks=[pytest.mark.parity_fwd]))
def test_alibi_forward(device, dtype, sq, sk, kind, causal):
    check_dense(device, dtype, 2, sq, sk, 3, 3, 64, alibi=kind, causal=causal)


@pytest.mark.parametrize("device,dtype,sq,sk,kind,causal",
                         dev_cases(CPU_CASES, GPU_CASES, marks=[pytest.mark.parity_grad]))
def test_alibi_backward(device, dtype, sq, sk, kind, causal):
    check_dense(device, dtype, 2, sq, sk, 3, 3, 64, alibi=kind, causal=causal, grad=True,
                check_lse=False)


@pytest.mark.parametrize("device,dtype,kind,window",
                         dev_cases([("h", (4, 4)), ("bh", (10, -1))], [("h", (64, 64)), ("bh", (100, 0))],
                                   marks=[pytest.mark.parity_fwd, pytest.mark.parity_grad]))
def test_alibi_with_window(device, dtype, kind, window):
    check_dense(device, dtype, 2, 77, 66, 2, 2, 32, alibi=kind, window=window, grad=True)


@pytest.mark.parametrize("device,dtype,kind,causal",
                         dev_cases([("h", False), ("bh", True)], [("h", True), ("bh", False), ("bh", True)],
                                   marks=[pytest.mark.parity_fwd, pytest.mark.parity_grad]))
def test_alibi_varlen(device, dtype, kind, causal):
    """Varlen ALiBi: distance uses each sequence's own sq/sk, (b, h) slopes index the sequence."""
    check_varlen(device, dtype, [9, 30, 0, 15], [20, 11, 6, 15], 4, 2, 32, alibi=kind,
                 causal=causal, grad=True)


@pytest.mark.parametrize("device,dtype", dev_cases([()], [()]))
def test_alibi_zero_slopes_is_off(device, dtype):
    q, k, v = (torch.randn(2, 30, 2, 32, device=device, dtype=dtype) for _ in range(3))
    a = flash_attn_c.flash_attn_func(q, k, v)
    b = flash_attn_c.flash_attn_func(q, k, v, alibi_slopes=torch.zeros(2, device=device))
    torch.testing.assert_close(a, b, rtol=0, atol=2 * torch.finfo(dtype).eps)


@pytest.mark.parametrize("device,dtype", dev_cases([()], [()]))
def test_alibi_per_batch_rows_differ(device, dtype):
    """(b, h) slopes: batch element i uses row i (swapping rows swaps outputs, bitwise)."""
    q, k, v = (torch.randn(2, 25, 2, 32, device=device, dtype=dtype) for _ in range(3))
    q[1], k[1], v[1] = q[0], k[0], v[0]
    slopes = torch.tensor([[0.1, 0.5], [0.9, 0.02]], device=device)
    a = flash_attn_c.flash_attn_func(q, k, v, alibi_slopes=slopes)
    b = flash_attn_c.flash_attn_func(q, k, v, alibi_slopes=slopes.flip(0))
    assert torch.equal(a[0], b[1]) and torch.equal(a[1], b[0])
    assert not torch.equal(a[0], a[1])
