"""torch.library.opcheck on the internal ops (torch.ops.flash_attn_c.fwd / bwd / dropout_mask):
schema (no undeclared mutation or aliasing), fake (meta) kernels agree with the real ones in
shape/dtype/strides, and AOT dispatch with dynamic shapes works. Dropout 0 throughout (a random
op cannot be compared run to run)."""
from __future__ import annotations

import pytest
import torch

from conftest import dev_cases, devices
from oracle import cu_from_lens

import flash_attn_c  # noqa: F401  (registers the ops)

OPS = torch.ops.flash_attn_c


def _dense(device, dtype, h=4, hk=2, d=40, alibi=False):
    q = torch.randn(2, 17, h, d, device=device, dtype=dtype)
    k = torch.randn(2, 23, hk, d, device=device, dtype=dtype)
    v = torch.randn(2, 23, hk, d, device=device, dtype=dtype)
    slopes = torch.rand(h, device=device) * 0.3 if alibi else None
    return q, k, v, None, None, 17, 23, slopes


def _varlen(device, dtype, h=4, hk=2, d=40, alibi=False):
    lq, lk = [5, 0, 12], [7, 3, 13]
    q = torch.randn(sum(lq), h, d, device=device, dtype=dtype)
    k = torch.randn(sum(lk), hk, d, device=device, dtype=dtype)
    v = torch.randn(sum(lk), hk, d, device=device, dtype=dtype)
    slopes = torch.rand(3, h, device=device) * 0.3 if alibi else None
    return q, k, v, cu_from_lens(lq, device), cu_from_lens(lk, device), 12, 13, slopes


def _fwd_args(layout, device, dtype, causal, alibi, return_probs):
    q, k, v, cq, ck, mq, mk, slopes = (_dense if layout == "dense" else _varlen)(device, dtype, alibi=alibi)
    scale = q.shape[-1] ** -0.5
    return (q, k, v, cq, ck, mq, mk, 0.0, scale, -1, 0 if causal else -1, 0.0, slopes,
            return_probs, None)


CASES = [("dense", False, False, False), ("dense", True, True, True), ("varlen", True, False, True),
         ("varlen", False, True, False)]


@pytest.mark.parametrize("device,dtype,layout,causal,alibi,return_probs", dev_cases(CASES, CASES))
def test_opcheck_fwd(device, dtype, layout, causal, alibi, return_probs):
    torch.library.opcheck(OPS.fwd.default, _fwd_args(layout, device, dtype, causal, alibi, return_probs))


@pytest.mark.parametrize("device,dtype,layout,causal,alibi,return_probs", dev_cases(CASES, CASES))
def test_opcheck_bwd(device, dtype, layout, causal, alibi, return_probs):
    args = _fwd_args(layout, device, dtype, causal, alibi, False)
    out, lse, _, rng_state = OPS.fwd(*args)
    q, k, v, cq, ck, mq, mk, p, scale, wl, wr, softcap, slopes, _, _ = args
    dout = torch.randn_like(out)
    torch.library.opcheck(OPS.bwd.default, (dout, q, k, v, out, lse, cq, ck, mq, mk, p, scale, wl, wr,
                                            softcap, slopes, False, rng_state))


@pytest.mark.parametrize("device", devices())
def test_opcheck_dropout_mask(device):
    torch.library.opcheck(OPS.dropout_mask.default, (2, 3, 9, 13, 0.25, 1234, 56, torch.device(device)))


@pytest.mark.parametrize("device", devices())
def test_dropout_mask_op_equals_public_function(device):
    a = OPS.dropout_mask(2, 3, 9, 13, 0.25, 1234, 56, torch.device(device))
    b = flash_attn_c.dropout_mask(2, 3, 9, 13, 0.25, 1234, 56, device=device)
    assert torch.equal(a, b)


@pytest.mark.parametrize("device,dtype,layout", dev_cases(["dense", "varlen"], ["dense", "varlen"]))
def test_opcheck_fwd_with_autograd(device, dtype, layout):
    """Inputs that require grad: opcheck also checks the autograd registration of fwd (the
    backward is registered with torch.library.register_autograd, no Python-level wrapper)."""
    args = list(_fwd_args(layout, device, dtype, True, False, False))
    for i in range(3):
        args[i] = args[i].requires_grad_()
    torch.library.opcheck(OPS.fwd.default, tuple(args))
