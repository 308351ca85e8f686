"""Finite-difference gradient checks at tiny sizes on CPU.

The CPU backend takes fp32/fp16/bf16 only (no float64), so a float64 gradcheck of our function is
impossible. What we do instead, and why it is still a real check:

1. torch.autograd.gradcheck of the *oracle* in float64 (tight default tolerances). The oracle's
   autograd is the truth every gradient parity test compares against, so this makes sure the
   reference itself (masking, empty rows, softcap, ALiBi, dropout scaling) differentiates right.
2. torch.autograd.gradcheck of *our* function in fp32 with tolerances derived from fp32 rounding:
   central differences with eps = 1e-3 on inputs of size ~1 see forward rounding noise of about
   eps_fp32 * |out| / eps ~ 1.2e-7 * 3 / 1e-3 ~ 4e-4 per Jacobian entry, and truncation error
   ~eps^2 * |f'''| ~ 1e-6. So atol = 2e-3, rtol = 1e-2 separate noise from bugs: a wrong mask
   element, a missing softcap chain-rule factor or a dropout mask mismatch between forward and
   backward produce Jacobian errors of order 0.1..1. This checks our backward against our own
   forward, independently of the oracle (the parity tests check both against the oracle).
"""
from __future__ import annotations

import warnings

import pytest
import torch

from oracle import attention_ref, cu_from_lens, one_thread

import flash_attn_c

# name -> (sq, sk, h, hk, d, kwargs for both functions)
FEATURES = {
    "plain": (3, 4, 2, 2, 4, {}),
    "causal_sq_gt_sk": (5, 3, 2, 2, 4, dict(causal=True)),   # rows 0, 1 empty
    "causal_sq_lt_sk": (3, 5, 1, 1, 4, dict(causal=True)),
    "window": (5, 6, 1, 1, 4, dict(window=(1, 1))),
    "softcap": (3, 4, 2, 2, 4, dict(softcap=0.7)),
    "alibi_h": (4, 4, 2, 2, 4, dict(alibi="h")),
    "alibi_bh_causal": (4, 5, 2, 2, 4, dict(alibi="bh", causal=True)),
    "gqa": (3, 4, 4, 2, 4, {}),
    "mqa_causal": (4, 4, 3, 1, 4, dict(causal=True)),
    "scale": (3, 4, 1, 1, 4, dict(softmax_scale=1.7)),
}


def _slopes(kind, b, h, dtype):
    if kind is None:
        return None
    return torch.linspace(0.1, 0.8, steps=h if kind == "h" else b * h, dtype=torch.float32).reshape(
        (h,) if kind == "h" else (b, h))


def _inputs(sq, sk, h, hk, d, dtype, b=1):
    q = torch.randn(b, sq, h, d, dtype=dtype, requires_grad=True)
    k = torch.randn(b, sk, hk, d, dtype=dtype, requires_grad=True)
    v = torch.randn(b, sk, hk, d, dtype=dtype, requires_grad=True)
    return q, k, v


@pytest.mark.parametrize("feature", list(FEATURES))
def test_oracle_gradcheck_float64(feature):
    sq, sk, h, hk, d, kw = FEATURES[feature]
    kw = dict(kw)
    b = 2 if kw.get("alibi") == "bh" else 1
    slopes = _slopes(kw.pop("alibi", None), b, h, torch.float64)
    q, k, v = _inputs(sq, sk, h, hk, d, torch.float64, b)
    with one_thread():
        assert torch.autograd.gradcheck(
            lambda q, k, v: attention_ref(q, k, v, alibi_slopes=slopes, **kw).out, (q, k, v))


def test_oracle_gradcheck_float64_dropout_and_varlen():
    q = torch.randn(7, 2, 4, dtype=torch.float64, requires_grad=True)
    k = torch.randn(9, 1, 4, dtype=torch.float64, requires_grad=True)
    v = torch.randn(9, 1, 4, dtype=torch.float64, requires_grad=True)
    cq, ck = cu_from_lens([3, 0, 4], "cpu"), cu_from_lens([2, 3, 4], "cpu")
    mask = torch.rand(3, 2, 4, 4) > 0.3
    fn = lambda q, k, v: attention_ref(q, k, v, causal=True, cu_seqlens_q=cq, cu_seqlens_k=ck,
                                       dropout_mask=mask, dropout_p=0.3).out
    with one_thread():
        # fast mode (random projections of the Jacobian): the varlen reference is a Python loop
        assert torch.autograd.gradcheck(fn, (q, k, v), fast_mode=True)


def _ours(kw, slopes):
    api = dict(kw)
    if "window" in api:
        api["window_size"] = api.pop("window")
    return lambda q, k, v: flash_attn_c.flash_attn_func(q, k, v, alibi_slopes=slopes, **api)


def _gradcheck_fp32(fn, inputs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "inputs are not double precision": deliberate, see top
        return torch.autograd.gradcheck(fn, inputs, eps=1e-3, atol=2e-3, rtol=1e-2, nondet_tol=0.0)


@pytest.mark.parametrize("feature", list(FEATURES))
def test_ours_gradcheck_fp32(feature):
    sq, sk, h, hk, d, kw = FEATURES[feature]
    kw = dict(kw)
    b = 2 if kw.get("alibi") == "bh" else 1
    slopes = _slopes(kw.pop("alibi", None), b, h, torch.float32)
    assert _gradcheck_fp32(_ours(kw, slopes), _inputs(sq, sk, h, hk, d, torch.float32, b))


def test_ours_gradcheck_fp32_varlen():
    q = torch.randn(7, 2, 4, requires_grad=True)
    k = torch.randn(9, 1, 4, requires_grad=True)
    v = torch.randn(9, 1, 4, requires_grad=True)
    cq, ck = cu_from_lens([3, 0, 4], "cpu"), cu_from_lens([2, 3, 4], "cpu")
    fn = lambda q, k, v: flash_attn_c.flash_attn_varlen_func(q, k, v, cq, ck, 4, 4, causal=True)
    assert _gradcheck_fp32(fn, (q, k, v))


def test_ours_gradcheck_fp32_dropout_fixed_seed():
    """Under a fixed seed the mask is a constant, so the function is smooth and its backward must
    use the forward's mask: a mismatch shows as a Jacobian error of order 1."""
    q, k, v = _inputs(4, 5, 2, 1, 4, torch.float32)

    def fn(q, k, v):
        with flash_attn_c.fixed_dropout_seed(99, 3):
            return flash_attn_c.flash_attn_func(q, k, v, dropout_p=0.4)

    assert _gradcheck_fp32(fn, (q, k, v))
