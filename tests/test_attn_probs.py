"""return_attn_probs=True: (out, softmax_lse, S_dmask). lse fp32 (b, h, sq) / (h, total_q);
S_dmask (b, h, max_sq, max_sk) in q's dtype = the softmax probabilities (pre-dropout, unscaled),
exactly 0 where masked or padding. (Dropout signs are tested in test_dropout.py.)"""
from __future__ import annotations

import pytest
import torch

from conftest import dev_cases, poison_allocator
from oracle import (FWD_FACTOR, assert_lse, assert_ratio, cu_from_lens, make_alibi,
                    ref_forward_backward, visible_mask)

import flash_attn_c

# (b, sq, sk, h, hk, d, causal, window, softcap, alibi)
CPU_CASES = [
    (2, 33, 33, 2, 2, 32, False, (-1, -1), 0.0, None),
    (1, 20, 70, 4, 2, 64, True, (-1, -1), 0.0, None),
    (1, 70, 20, 2, 1, 40, True, (-1, -1), 0.0, "h"),
    (2, 50, 50, 2, 2, 59, False, (4, 7), 0.0, None),
    (1, 40, 60, 2, 2, 64, False, (-1, -1), 2.0, "bh"),
    (1, 1, 1, 1, 1, 8, False, (-1, -1), 0.0, None),
]
GPU_CASES = [
    (2, 257, 257, 4, 4, 64, False, (-1, -1), 0.0, None),
    (1, 200, 1100, 8, 2, 128, True, (-1, -1), 0.0, None),
    (1, 1100, 200, 4, 1, 40, True, (-1, -1), 0.0, "h"),
    (2, 500, 500, 4, 4, 256, False, (33, 70), 0.0, None),
    (1, 400, 600, 4, 4, 64, False, (-1, -1), 5.0, "bh"),
    (1, 2048, 2048, 2, 2, 128, True, (-1, -1), 0.0, None),
]


@pytest.mark.parametrize("device,dtype,b,sq,sk,h,hk,d,causal,window,softcap,alibi",
                         dev_cases(CPU_CASES, GPU_CASES, marks=[pytest.mark.parity_fwd]))
def test_attn_probs_dense(device, dtype, b, sq, sk, h, hk, d, causal, window, softcap, alibi):
    q = torch.randn(b, sq, h, d, device=device, dtype=dtype)
    k = torch.randn(b, sk, hk, d, device=device, dtype=dtype)
    v = torch.randn(b, sk, hk, d, device=device, dtype=dtype)
    slopes = make_alibi(alibi, b, h, device)
    kw = dict(causal=causal, softcap=softcap, alibi_slopes=slopes)
    ref = ref_forward_backward((q, k, v), None, upcast=True, window=window, **kw)
    base = ref_forward_backward((q, k, v), None, upcast=False, window=window, **kw)
    poison_allocator(device, [b * h * sq * sk * q.element_size(), q.numel() * q.element_size()])
    out, lse, s = flash_attn_c.flash_attn_func(q, k, v, window_size=window, return_attn_probs=True, **kw)
    assert s.shape == (b, h, sq, sk) and s.dtype == dtype
    assert lse.shape == (b, h, sq) and lse.dtype == torch.float32
    assert_ratio("out", out, ref.out, base.out, dtype, FWD_FACTOR)
    assert_lse("lse", lse, ref.lse, base.lse, dtype)
    assert (s >= 0).all(), "no dropout: S_dmask has no negative entries"
    assert_ratio("S_dmask", s, ref.probs, base.probs, dtype, FWD_FACTOR)
    vis = visible_mask(sq, sk, window, causal, device)
    assert (s[..., ~vis] == 0).all(), "S_dmask must be exactly 0 where masked"


@pytest.mark.parametrize("device,dtype,lens_q,lens_k,extra,causal",
                         dev_cases([([5, 0, 17, 1], [9, 3, 0, 40], 0, False),
                                    ([30, 2], [2, 30], 5, True)],
                                   [([500, 0, 1700, 1], [900, 4, 1000, 2000], 0, False),
                                    ([300, 20], [20, 300], 64, True)],
                                   marks=[pytest.mark.parity_fwd]))
def test_attn_probs_varlen(device, dtype, lens_q, lens_k, extra, causal):
    """Varlen S_dmask is (b, h, max_sq, max_sk): sequence i's block at [i, :, :sq_i, :sk_i], and
    exact zeros elsewhere (written even when the allocator is poisoned)."""
    h, hk, d = 4, 2, 32
    q = torch.randn(sum(lens_q), h, d, device=device, dtype=dtype)
    k = torch.randn(sum(lens_k), hk, d, device=device, dtype=dtype)
    v = torch.randn(sum(lens_k), hk, d, device=device, dtype=dtype)
    cq, ck = cu_from_lens(lens_q, device), cu_from_lens(lens_k, device)
    mq, mk = max(lens_q) + extra, max(lens_k) + extra
    kw = dict(causal=causal, cu_seqlens_q=cq, cu_seqlens_k=ck, max_seqlen_q=mq, max_seqlen_k=mk)
    ref = ref_forward_backward((q, k, v), None, upcast=True, **kw)
    base = ref_forward_backward((q, k, v), None, upcast=False, **kw)
    poison_allocator(device, [len(lens_q) * h * mq * mk * q.element_size()])
    out, lse, s = flash_attn_c.flash_attn_varlen_func(q, k, v, cq, ck, mq, mk, causal=causal,
                                                      return_attn_probs=True)
    assert s.shape == (len(lens_q), h, mq, mk) and s.dtype == dtype
    assert lse.shape == (h, sum(lens_q))
    assert_ratio("out", out, ref.out, base.out, dtype, FWD_FACTOR)
    assert_lse("lse", lse, ref.lse, base.lse, dtype)
    assert_ratio("S_dmask", s, ref.probs, base.probs, dtype, FWD_FACTOR)
    for i, (sq, sk) in enumerate(zip(lens_q, lens_k)):
        pad = torch.ones(h, mq, mk, dtype=torch.bool, device=device)
        pad[:, :sq, :sk] = False
        assert (s[i][pad] == 0).all(), f"S_dmask padding of sequence {i} must be 0"


@pytest.mark.parametrize("device,dtype", dev_cases([()], [()]))
def test_attn_probs_rows_sum_to_one(device, dtype):
    """Each visible row of S_dmask sums to 1 (within the dtype's rounding over sk entries)."""
    q, k, v = (torch.randn(1, 50, 2, 32, device=device, dtype=dtype) for _ in range(3))
    _, _, s = flash_attn_c.flash_attn_func(q, k, v, causal=True, return_attn_probs=True)
    sums = s.double().sum(-1)
    # each entry is rounded once (<= half an ulp of itself), so the row sum is off by <= eps/2;
    # plus fp32 normalization error (lse carried in fp32) ~1e-6
    tol = torch.finfo(dtype).eps + 1e-5
    assert ((sums - 1).abs() <= tol).all()


@pytest.mark.parametrize("device,dtype", dev_cases([()], [()]))
def test_attn_probs_false_returns_tensor(device, dtype):
    q, k, v = (torch.randn(1, 8, 1, 16, device=device, dtype=dtype) for _ in range(3))
    out = flash_attn_c.flash_attn_func(q, k, v)
    assert isinstance(out, torch.Tensor)
    res = flash_attn_c.flash_attn_func(q, k, v, return_attn_probs=True)
    assert isinstance(res, tuple) and len(res) == 3
    assert torch.equal(res[0], out), "return_attn_probs must not change the output"
