"""GQA / MQA: h % hk == 0, query head i reads kv head i // (h // hk); dK/dV sum over the group.
hk = 1 (MQA), 2, h (MHA); with causal, dense and varlen; forward and backward."""
from __future__ import annotations

import pytest
import torch

from conftest import dev_cases
from oracle import check_dense, check_varlen

import flash_attn_c

CPU_CASES = [(h, hk, causal, sq, sk) for h, hk in [(8, 1), (8, 2), (8, 8), (6, 3), (4, 2)]
             for causal in (False, True) for sq, sk in [(40, 40), (23, 61)]]
GPU_CASES = [(h, hk, causal, sq, sk) for h, hk in [(16, 1), (16, 2), (16, 4), (16, 16), (12, 3), (6, 2)]
             for causal in (False, True) for sq, sk in [(512, 512), (300, 1500), (1500, 300)]]


@pytest.mark.parametrize("device,dtype,h,hk,causal,sq,sk",
                         dev_cases(CPU_CASES, GPU_CASES, marks=[pytest.mark.parity_fwd]))
def test_gqa_forward(device, dtype, h, hk, causal, sq, sk):
    check_dense(device, dtype, 2, sq, sk, h, hk, 32, causal=causal)


@pytest.mark.parametrize("device,dtype,h,hk,causal,sq,sk",
                         dev_cases(CPU_CASES, GPU_CASES, marks=[pytest.mark.parity_grad]))
def test_gqa_backward(device, dtype, h, hk, causal, sq, sk):
    check_dense(device, dtype, 2, sq, sk, h, hk, 32, causal=causal, grad=True, check_lse=False)


@pytest.mark.parametrize("device,dtype,h,hk,causal",
                         dev_cases([(4, 1, False), (4, 2, True), (6, 3, False), (6, 6, True)],
                                   [(8, 1, True), (8, 2, False), (8, 4, True), (32, 8, True)],
                                   marks=[pytest.mark.parity_fwd, pytest.mark.parity_grad]))
def test_gqa_varlen(device, dtype, h, hk, causal):
    lens_q = [12, 0, 31, 5] if device == "cpu" else [120, 0, 1031, 5, 700]
    lens_k = [12, 4, 40, 0] if device == "cpu" else [120, 4, 1031, 0, 1400]
    check_varlen(device, dtype, lens_q, lens_k, h, hk, 64, causal=causal, grad=True)


@pytest.mark.parametrize("device,dtype", dev_cases([()], [()]))
def test_gqa_equals_explicit_repeat(device, dtype):
    """GQA output equals MHA on explicitly repeated K/V, bitwise (same math per query head); the
    GQA dK/dV equal the group sums of the repeated-K/V gradients to within summation order."""
    h, hk = 6, 2
    q = torch.randn(2, 30, h, 32, device=device, dtype=dtype, requires_grad=True)
    k = torch.randn(2, 40, hk, 32, device=device, dtype=dtype, requires_grad=True)
    v = torch.randn(2, 40, hk, 32, device=device, dtype=dtype, requires_grad=True)
    out = flash_attn_c.flash_attn_func(q, k, v, causal=True)
    kr = k.detach().repeat_interleave(h // hk, dim=2).requires_grad_()
    vr = v.detach().repeat_interleave(h // hk, dim=2).requires_grad_()
    q2 = q.detach().clone().requires_grad_()
    out_r = flash_attn_c.flash_attn_func(q2, kr, vr, causal=True)
    assert torch.equal(out, out_r)
    dout = torch.randn_like(out)
    dq, dk, dv = torch.autograd.grad(out, (q, k, v), dout)
    dq2, dkr, dvr = torch.autograd.grad(out_r, (q2, kr, vr), dout)
    assert torch.equal(dq, dq2)
    # Group sums in fp32. Ours may accumulate the group in fp32 and round once, the repeated
    # version rounds each head first: a few ulp of the dtype apart, plus fp32 summation-order
    # noise over ~100 terms (100 fp32 ulp, negligible except for fp32 inputs).
    dk_sum = dkr.float().unflatten(2, (hk, h // hk)).sum(3)
    dv_sum = dvr.float().unflatten(2, (hk, h // hk)).sum(3)
    for name, ours, ref in (("dk", dk, dk_sum), ("dv", dv, dv_sum)):
        tol = (3 * torch.finfo(dtype).eps + 100 * 1.2e-7) * max(1.0, ref.abs().max().item())
        err = (ours.float() - ref).abs().max().item()
        assert err <= tol, f"{name}: GQA grad differs from the group sum by {err:.3e} > {tol:.3e}"
