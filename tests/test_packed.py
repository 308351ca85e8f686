"""Packed variants: flash_attn_qkvpacked_func (b, s, 3, h, d), flash_attn_kvpacked_func
(kv (b, sk, 2, hk, d)), and their varlen forms; forward and the packed gradients vs the oracle."""
from __future__ import annotations

import pytest
import torch

from conftest import dev_cases
from oracle import FWD_FACTOR, assert_grads, assert_lse, assert_ratio, cu_from_lens, ref_forward_backward

import flash_attn_c


def _compare(dtype, out, lse, grads, ref, base):
    assert_ratio("out", out, ref.out, base.out, dtype, FWD_FACTOR)
    if lse is not None:
        assert_lse("lse", lse, ref.lse, base.lse, dtype)
    assert_grads(grads, ref.grads, base.grads, dtype)


QKV_CPU = [(2, 37, 2, 40, False), (1, 64, 4, 64, True), (2, 1, 2, 32, False), (1, 130, 1, 111, True)]
QKV_GPU = [(b, s, h, d, c) for b, s, h in [(2, 256, 4), (1, 2048, 8)] for d in (64, 128, 256)
           for c in (False, True)]


@pytest.mark.parametrize("device,dtype,b,s,h,d,causal",
                         dev_cases(QKV_CPU, QKV_GPU, marks=[pytest.mark.parity_fwd, pytest.mark.parity_grad]))
def test_qkvpacked(device, dtype, b, s, h, d, causal):
    qkv = torch.randn(b, s, 3, h, d, device=device, dtype=dtype, requires_grad=True)
    out, lse, _ = flash_attn_c.flash_attn_qkvpacked_func(qkv, causal=causal, return_attn_probs=True)
    dout = torch.randn_like(out)
    (dqkv,) = torch.autograd.grad(out, (qkv,), dout)
    assert dqkv.shape == qkv.shape
    q, k, v = qkv.detach().unbind(2)
    ref = ref_forward_backward((q, k, v), dout, upcast=True, causal=causal)
    base = ref_forward_backward((q, k, v), dout, upcast=False, causal=causal)
    _compare(dtype, out, lse, dqkv.unbind(2), ref, base)


KV_CPU = [(2, 37, 50, 4, 2, 40, False), (1, 64, 30, 4, 1, 64, True), (1, 20, 20, 3, 3, 59, True)]
KV_GPU = [(b, sq, sk, h, hk, d, c) for b, sq, sk, h, hk in [(2, 300, 700, 8, 2), (1, 1500, 900, 8, 8)]
          for d in (64, 128) for c in (False, True)]


@pytest.mark.parametrize("device,dtype,b,sq,sk,h,hk,d,causal",
                         dev_cases(KV_CPU, KV_GPU, marks=[pytest.mark.parity_fwd, pytest.mark.parity_grad]))
def test_kvpacked(device, dtype, b, sq, sk, h, hk, d, causal):
    q = torch.randn(b, sq, h, d, device=device, dtype=dtype, requires_grad=True)
    kv = torch.randn(b, sk, 2, hk, d, device=device, dtype=dtype, requires_grad=True)
    out, lse, _ = flash_attn_c.flash_attn_kvpacked_func(q, kv, causal=causal, return_attn_probs=True)
    dout = torch.randn_like(out)
    dq, dkv = torch.autograd.grad(out, (q, kv), dout)
    assert dkv.shape == kv.shape
    k, v = kv.detach().unbind(2)
    ref = ref_forward_backward((q.detach(), k, v), dout, upcast=True, causal=causal)
    base = ref_forward_backward((q.detach(), k, v), dout, upcast=False, causal=causal)
    _compare(dtype, out, lse, (dq,) + dkv.unbind(2), ref, base)


VQKV_CPU = [([5, 0, 17, 1], 2, 40, False), ([33, 64], 3, 64, True)]
VQKV_GPU = [([500, 0, 1700, 1], 4, d, c) for d in (64, 128, 256) for c in (False, True)]


@pytest.mark.parametrize("device,dtype,lens,h,d,causal",
                         dev_cases(VQKV_CPU, VQKV_GPU, marks=[pytest.mark.parity_fwd, pytest.mark.parity_grad]))
def test_varlen_qkvpacked(device, dtype, lens, h, d, causal):
    total = sum(lens)
    qkv = torch.randn(total, 3, h, d, device=device, dtype=dtype, requires_grad=True)
    cu = cu_from_lens(lens, device)
    out, lse, _ = flash_attn_c.flash_attn_varlen_qkvpacked_func(qkv, cu, max(lens), causal=causal,
                                                                return_attn_probs=True)
    dout = torch.randn_like(out)
    (dqkv,) = torch.autograd.grad(out, (qkv,), dout)
    q, k, v = qkv.detach().unbind(1)
    kw = dict(causal=causal, cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=max(lens),
              max_seqlen_k=max(lens))
    ref = ref_forward_backward((q, k, v), dout, upcast=True, **kw)
    base = ref_forward_backward((q, k, v), dout, upcast=False, **kw)
    _compare(dtype, out, lse, dqkv.unbind(1), ref, base)


VKV_CPU = [([5, 0, 17, 1], [9, 4, 0, 30], 4, 2, 40, False), ([33, 64], [64, 33], 2, 1, 64, True)]
VKV_GPU = [([500, 0, 1700, 1], [900, 4, 1000, 2000], 8, hk, 128, c) for hk in (1, 8) for c in (False, True)]


@pytest.mark.parametrize("device,dtype,lens_q,lens_k,h,hk,d,causal",
                         dev_cases(VKV_CPU, VKV_GPU, marks=[pytest.mark.parity_fwd, pytest.mark.parity_grad]))
def test_varlen_kvpacked(device, dtype, lens_q, lens_k, h, hk, d, causal):
    q = torch.randn(sum(lens_q), h, d, device=device, dtype=dtype, requires_grad=True)
    kv = torch.randn(sum(lens_k), 2, hk, d, device=device, dtype=dtype, requires_grad=True)
    cq, ck = cu_from_lens(lens_q, device), cu_from_lens(lens_k, device)
    mq, mk = max(lens_q), max(lens_k)
    out, lse, _ = flash_attn_c.flash_attn_varlen_kvpacked_func(q, kv, cq, ck, mq, mk, causal=causal,
                                                               return_attn_probs=True)
    dout = torch.randn_like(out)
    dq, dkv = torch.autograd.grad(out, (q, kv), dout)
    k, v = kv.detach().unbind(1)
    kw = dict(causal=causal, cu_seqlens_q=cq, cu_seqlens_k=ck, max_seqlen_q=mq, max_seqlen_k=mk)
    ref = ref_forward_backward((q.detach(), k, v), dout, upcast=True, **kw)
    base = ref_forward_backward((q.detach(), k, v), dout, upcast=False, **kw)
    _compare(dtype, out, lse, (dq,) + dkv.unbind(1), ref, base)


@pytest.mark.parametrize("device,dtype", dev_cases([()], [()]))
def test_qkvpacked_equals_unpacked(device, dtype):
    """The packed entry point computes exactly what flash_attn_func computes on the views."""
    qkv = torch.randn(2, 40, 3, 2, 32, device=device, dtype=dtype)
    a = flash_attn_c.flash_attn_qkvpacked_func(qkv, causal=True)
    b = flash_attn_c.flash_attn_func(*qkv.unbind(2), causal=True)
    assert torch.equal(a, b)


@pytest.mark.parametrize("device,dtype,feature",
                         dev_cases(["alibi", "window", "softcap"], ["alibi", "window", "softcap"],
                                   marks=[pytest.mark.parity_fwd, pytest.mark.parity_grad]))
def test_packed_forwards_feature_arguments(device, dtype, feature):
    """The tail arguments (window_size, softcap, alibi_slopes) reach the kernel in every packed
    form: each packed output equals the unpacked call with the same arguments."""
    h = 2
    kw = {"alibi": dict(alibi_slopes=torch.rand(h, device=device) * 0.5),
          "window": dict(window_size=(3, 2)),
          "softcap": dict(softcap=2.0)}[feature]
    qkv = torch.randn(2, 20, 3, h, 32, device=device, dtype=dtype)
    q, k, v = qkv.unbind(2)
    expect = flash_attn_c.flash_attn_func(q, k, v, **kw)
    assert not torch.equal(expect, flash_attn_c.flash_attn_func(q, k, v))  # the feature matters
    assert torch.equal(flash_attn_c.flash_attn_qkvpacked_func(qkv, **kw), expect)
    assert torch.equal(flash_attn_c.flash_attn_kvpacked_func(q, qkv[:, :, 1:], **kw), expect)
    cu = cu_from_lens([20, 20], device)
    flat = qkv.reshape(40, 3, h, 32)
    vq = flash_attn_c.flash_attn_varlen_qkvpacked_func(flat, cu, 20, **kw)
    vkv = flash_attn_c.flash_attn_varlen_kvpacked_func(flat[:, 0], flat[:, 1:], cu, cu, 20, 20, **kw)
    ve = flash_attn_c.flash_attn_varlen_func(flat[:, 0], flat[:, 1], flat[:, 2], cu, cu, 20, 20, **kw)
    assert torch.equal(vq, ve) and torch.equal(vkv, ve)
    torch.testing.assert_close(ve.reshape(2, 20, h, 32), expect, rtol=0, atol=2 * torch.finfo(dtype).eps)
