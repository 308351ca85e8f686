"""Gradients through the softmax_lse output: flash_attn_func(..., return_attn_probs=True) returns
lse with requires_grad, and a loss that uses it gets its gradient (d lse_i / d s_ij = P_ij, which
the backward adds as D_i - dlse_i). flash-attn 2 drops it (a silent zero); so did flash_attn_c.
Against the float64 reference's autograd with the 3x gradient rule: dense and varlen, causal,
window, GQA, softcap, ALiBi, dropout, sq != sk with rows that see no key, lse alone or with out.
The attention-probability output (S_dmask) has no gradient: requires_grad False."""
from __future__ import annotations

import pytest
import torch

from conftest import dev_cases
from oracle import assert_grads, assert_lse, make_alibi

import flash_attn_c
from flash_attn_c.testing import ref_forward_backward

CASES = [  # (b, sq, sk, h, hk, d, kw)
    (2, 37, 37, 4, 4, 32, dict(causal=True)),
    (1, 64, 100, 4, 2, 64, dict(window=(20, 5))),
    (2, 70, 40, 2, 1, 32, dict(causal=True)),              # sq > sk: the first 30 rows see no key
    (1, 50, 80, 2, 2, 40, dict(softcap=5.0, alibi="bh")),
]


@pytest.mark.parametrize("device,dtype,b,sq,sk,h,hk,d,kw", dev_cases(CASES, CASES, marks=[pytest.mark.parity_grad]))
@pytest.mark.parametrize("with_out", [True, False], ids=["out+lse", "lse"])
def test_lse_gradient_dense(device, dtype, b, sq, sk, h, hk, d, kw, with_out):
    kw = dict(kw)
    slopes = make_alibi(kw.pop("alibi", None), b, h, device)
    window = kw.pop("window", (-1, -1))
    q = torch.randn(b, sq, h, d, device=device, dtype=dtype)
    k, v = (torch.randn(b, sk, hk, d, device=device, dtype=dtype) for _ in range(2))
    dout = torch.randn(b, sq, h, d, device=device, dtype=dtype) if with_out else torch.zeros(
        b, sq, h, d, device=device, dtype=dtype)
    dlse = torch.randn(b, h, sq, device=device, dtype=torch.float32)
    rkw = dict(window=window, alibi_slopes=slopes, **kw)
    ref = ref_forward_backward((q, k, v), dout, upcast=True, dlse=dlse, **rkw)
    base = ref_forward_backward((q, k, v), dout, upcast=False, dlse=dlse, **rkw)
    qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))
    out, lse, probs = flash_attn_c.flash_attn_func(qg, kg, vg, window_size=window, alibi_slopes=slopes,
                                                   return_attn_probs=True, **kw)
    assert lse.requires_grad and not probs.requires_grad
    assert_lse("lse", lse.detach(), ref.lse, base.lse, dtype)
    loss = (lse.nan_to_num(neginf=0.0) * dlse).sum()  # -inf rows: no gradient there
    if with_out:
        loss = loss + (out * dout).sum()
    grads = torch.autograd.grad(loss, (qg, kg, vg))
    assert_grads(grads, ref.grads, base.grads, dtype)


@pytest.mark.parametrize("device,dtype", dev_cases([()], [()], marks=[pytest.mark.parity_grad]))
def test_lse_gradient_varlen_and_dropout(device, dtype):
    """Varlen (an empty query sequence included) and dropout: lse is pre-dropout, its gradient
    adds to the dropout backward's D the same way."""
    lens_q, lens_k = [7, 0, 33], [20, 4, 33]
    cu_q = torch.tensor([0, 7, 7, 40], device=device, dtype=torch.int32)
    cu_k = torch.tensor([0, 20, 24, 57], device=device, dtype=torch.int32)
    q = torch.randn(40, 4, 32, device=device, dtype=dtype, requires_grad=True)
    k, v = (torch.randn(57, 2, 32, device=device, dtype=dtype, requires_grad=True) for _ in range(2))
    dlse = torch.randn(4, 40, device=device)
    out, lse, _ = flash_attn_c.flash_attn_varlen_func(q, k, v, cu_q, cu_k, 33, 33, causal=True,
                                                      return_attn_probs=True)
    dout = torch.randn_like(out)
    ref = ref_forward_backward((q, k, v), dout, upcast=True, dlse=dlse, cu_seqlens_q=cu_q,
                               cu_seqlens_k=cu_k, causal=True)
    base = ref_forward_backward((q, k, v), dout, upcast=False, dlse=dlse, cu_seqlens_q=cu_q,
                                cu_seqlens_k=cu_k, causal=True)
    gs = torch.autograd.grad((out * dout).sum() + (lse * dlse).sum(), (q, k, v))
    assert_grads(gs, ref.grads, base.grads, dtype)
    # dropout: lse (and so its gradient) is pre-dropout; a loss on lse alone runs the dropout backward
    # with dout = 0 and must give the reference's lse-only gradient
    _, l_drop, _ = flash_attn_c.flash_attn_varlen_func(q, k, v, cu_q, cu_k, 33, 33, dropout_p=0.3, causal=True,
                                                       return_attn_probs=True)
    g_lse = torch.autograd.grad((l_drop * dlse).sum(), (q, k, v))
    zero = torch.zeros_like(dout)
    ref_l = ref_forward_backward((q, k, v), zero, upcast=True, dlse=dlse, cu_seqlens_q=cu_q,
                                 cu_seqlens_k=cu_k, causal=True)
    base_l = ref_forward_backward((q, k, v), zero, upcast=False, dlse=dlse, cu_seqlens_q=cu_q,
                                  cu_seqlens_k=cu_k, causal=True)
    assert_grads(g_lse, ref_l.grads, base_l.grads, dtype)


@pytest.mark.parametrize("device,dtype", dev_cases([()], [()]))
def test_unused_lse_changes_nothing(device, dtype):
    """A loss on out alone gives the same gradients, bitwise, whether lse was returned or not."""
    q, k, v = (torch.randn(2, 45, 2, 32, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
    dout = torch.randn(2, 45, 2, 32, device=device, dtype=dtype)
    a = torch.autograd.grad((flash_attn_c.flash_attn_func(q, k, v, causal=True) * dout).sum(), (q, k, v))
    out, _lse, _ = flash_attn_c.flash_attn_func(q, k, v, causal=True, return_attn_probs=True)
    b = torch.autograd.grad((out * dout).sum(), (q, k, v))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
