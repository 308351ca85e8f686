"""Calls with nothing to differentiate skip the autograd layer of the forward op (flash_attn_c._ops.fwd):
the Python autograd kernel torch.library registers would only find that out and redispatch, host time
that bounds small decode steps. The skip must change nothing else: same outputs, and every call that
autograd must record still goes through it."""
from __future__ import annotations

import contextlib

import pytest
import torch

from conftest import dev_cases

import flash_attn_c
from flash_attn_c import _ops


@pytest.fixture
def entered(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts how often _ops.fwd enters the below-autograd guard."""
    count = [0]
    real = _ops._BELOW_AUTOGRAD
    assert real is not None, "this torch lacks torch._C._AutoDispatchBelowAutograd"

    @contextlib.contextmanager
    def counting():
        count[0] += 1
        with real():
            yield

    monkeypatch.setattr(_ops, "_BELOW_AUTOGRAD", counting)
    return count


def _inputs(device: str, dtype: torch.dtype, requires_grad: bool = False):
    torch.manual_seed(0)
    shape = (2, 37, 4, 64)
    q = torch.randn(shape, device=device, dtype=dtype)
    k = torch.randn(2, 53, 2, 64, device=device, dtype=dtype)
    v = torch.randn_like(k)
    return [t.requires_grad_(requires_grad) for t in (q, k, v)]


@pytest.mark.parametrize("device,dtype", dev_cases([()]))
@pytest.mark.parametrize("mode", ["no_grad", "inference_mode", "grad_mode_no_requires_grad"])
def test_inference_calls_skip_autograd_with_the_same_result(device, dtype, mode, entered, monkeypatch):
    q, k, v = _inputs(device, dtype)
    ctx = {"no_grad": torch.no_grad, "inference_mode": torch.inference_mode,
           "grad_mode_no_requires_grad": contextlib.nullcontext}[mode]
    with ctx():
        out, lse, _ = flash_attn_c.flash_attn_func(q, k, v, causal=True, return_attn_probs=True)
    assert entered[0] == 1
    assert out.grad_fn is None
    monkeypatch.setattr(_ops, "_BELOW_AUTOGRAD", None)  # the plain dispatch, for comparison
    with ctx():
        ref, ref_lse, _ = flash_attn_c.flash_attn_func(q, k, v, causal=True, return_attn_probs=True)
    assert torch.equal(out, ref) and torch.equal(lse, ref_lse)


@pytest.mark.parametrize("device,dtype", dev_cases([()]))
def test_calls_that_need_gradients_go_through_autograd(device, dtype, entered):
    q, k, v = _inputs(device, dtype, requires_grad=True)
    out = flash_attn_c.flash_attn_func(q, k, v, causal=True)
    assert entered[0] == 0 and out.grad_fn is not None
    out.float().sum().backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in (q, k, v))
    # only k requires grad: still recorded, gradient for k only
    q2, k2, v2 = (t.detach() for t in (q, k, v))
    k2.requires_grad_()
    out2 = flash_attn_c.flash_attn_func(q2, k2, v2, causal=True)
    assert entered[0] == 0 and out2.grad_fn is not None
    out2.float().sum().backward()
    assert k2.grad is not None and q2.grad is None


@pytest.mark.parametrize("device,dtype", dev_cases([()]))
def test_compiled_calls_keep_the_traceable_dispatch(device, dtype, entered):
    """Under torch.compile the guard is not entered (Dynamo traces the op itself)."""
    q, k, v = _inputs(device, dtype)
    with torch.no_grad():
        out = torch.compile(lambda a, b, c: flash_attn_c.flash_attn_func(a, b, c, causal=True),
                            fullgraph=True)(q, k, v)
        ref = flash_attn_c.flash_attn_func(q, k, v, causal=True)
    assert entered[0] == 1  # the eager reference only
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
