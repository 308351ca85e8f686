"""Varlen rows that cu_seqlens does not cover (cu_seqlens[0] > 0, cu_seqlens[-1] < total) belong
to no sequence: they come back as out = 0, lse = -inf and zero gradients, never as whatever
memory held (docs/conventions.md). The covered rows are exactly the result of the same call on
the covered slice alone."""
from __future__ import annotations

import pytest
import torch

from conftest import dev_cases, poison_allocator

import flash_attn_c

# (rows before, lens, rows after) for q and for k, h, hk, d
CPU_CASES = [
    ((3, [7, 10], 5), (2, [10, 18], 3), 2, 1, 40),
    ((0, [17, 0, 9], 4), (0, [5, 3, 9], 0), 2, 2, 64),
    ((6, [1], 0), (0, [30], 7), 2, 2, 16),
]
GPU_CASES = [
    ((3, [70, 100], 50), (2, [100, 180], 33), 4, 2, d) for d in (40, 64, 128, 256)
] + [((0, [300], 129), (64, [300], 0), 4, 4, 128)]


def _cu(pre: int, lens, device) -> torch.Tensor:
    c = [pre]
    for n in lens:
        c.append(c[-1] + n)
    return torch.tensor(c, dtype=torch.int32, device=device)


@pytest.mark.parametrize("device,dtype,qspec,kspec,h,hk,d", dev_cases(CPU_CASES, GPU_CASES))
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_uncovered_rows_are_zero(device, dtype, qspec, kspec, h, hk, d, causal):
    (q_pre, lens_q, q_post), (k_pre, lens_k, k_post) = qspec, kspec
    tq, tk = q_pre + sum(lens_q) + q_post, k_pre + sum(lens_k) + k_post
    cq, ck = _cu(q_pre, lens_q, device), _cu(k_pre, lens_k, device)
    mq, mk = max(lens_q), max(lens_k)
    q = torch.randn(tq, h, d, device=device, dtype=dtype, requires_grad=True)
    k = torch.randn(tk, hk, d, device=device, dtype=dtype, requires_grad=True)
    v = torch.randn(tk, hk, d, device=device, dtype=dtype, requires_grad=True)
    dout = torch.randn(tq, h, d, device=device, dtype=dtype)

    poison_allocator(device, [q.numel() * q.element_size(), k.numel() * k.element_size(),
                              tq * h * 4])
    out, lse, _ = flash_attn_c.flash_attn_varlen_func(q, k, v, cq, ck, mq, mk, causal=causal,
                                                      deterministic=True, return_attn_probs=True)
    poison_allocator(device, [q.numel() * q.element_size(), k.numel() * k.element_size()])
    dq, dk, dv = torch.autograd.grad(out, (q, k, v), dout)

    q_cov = torch.zeros(tq, dtype=torch.bool)
    q_cov[q_pre:q_pre + sum(lens_q)] = True
    k_cov = torch.zeros(tk, dtype=torch.bool)
    k_cov[k_pre:k_pre + sum(lens_k)] = True
    assert (out[~q_cov] == 0).all(), "out must be 0 on rows no sequence covers"
    assert torch.isneginf(lse[:, ~q_cov]).all(), "lse must be -inf on rows no sequence covers"
    assert (dq[~q_cov] == 0).all(), "dq must be 0 on rows no sequence covers"
    assert (dk[~k_cov] == 0).all(), "dk must be 0 on rows no sequence covers"
    assert (dv[~k_cov] == 0).all(), "dv must be 0 on rows no sequence covers"

    # the covered rows: the same call on the covered slices alone
    qs = q.detach()[q_cov].clone().requires_grad_(True)
    ks = k.detach()[k_cov].clone().requires_grad_(True)
    vs = v.detach()[k_cov].clone().requires_grad_(True)
    out_s, lse_s, _ = flash_attn_c.flash_attn_varlen_func(
        qs, ks, vs, cq - q_pre, ck - k_pre, mq, mk, causal=causal, deterministic=True,
        return_attn_probs=True)
    dq_s, dk_s, dv_s = torch.autograd.grad(out_s, (qs, ks, vs), dout[q_cov])
    for name, a, b in (("out", out[q_cov], out_s), ("lse", lse[:, q_cov], lse_s),
                       ("dq", dq[q_cov], dq_s), ("dk", dk[k_cov], dk_s), ("dv", dv[k_cov], dv_s)):
        assert torch.equal(a, b), f"{name} on the covered rows differs from the sliced call"
