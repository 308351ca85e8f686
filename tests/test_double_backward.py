"""Double backward (gradients of gradients) through flash_attn_c attention is not supported: it
raises a RuntimeError that says so, instead of returning second-order gradients that treat the
backward op as a constant (wrong numbers). First-order gradients, with or without create_graph,
are unchanged."""
from __future__ import annotations

import pytest
import torch

from conftest import devices
from oracle import cu_from_lens

import flash_attn_c

MSG = r"double backward \(gradients of gradients.*not supported"


def _dtype(device):
    return torch.float32 if device == "cpu" else torch.float16


def _dense(device):
    dt = _dtype(device)
    return [torch.randn(2, 5, 4, 16, device=device, dtype=dt, requires_grad=True)
            for _ in range(3)]


def _call_dense(q, k, v):
    return flash_attn_c.flash_attn_func(q, k, v, causal=True)


def _call_varlen(q, k, v):
    cu = cu_from_lens([3, 7], q.device)
    return flash_attn_c.flash_attn_varlen_func(q.reshape(10, 4, 16), k.reshape(10, 4, 16),
                                               v.reshape(10, 4, 16), cu, cu, 7, 7)


def _call_qkvpacked(q, k, v):
    return flash_attn_c.flash_attn_qkvpacked_func(torch.stack((q, k, v), dim=2))


def _call_kvcache(q, k, v):
    return flash_attn_c.flash_attn_with_kvcache(q, k, v, causal=True)


CALLS = [_call_dense, _call_varlen, _call_qkvpacked, _call_kvcache]


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("call", CALLS, ids=lambda c: c.__name__[6:])
def test_second_backward_raises(device, call):
    q, k, v = _dense(device)
    out = call(q, k, v)
    # the loss also depends on q outside the attention: its gradient g is differentiable either
    # way, so only our own refusal stops a second backward from returning partial numbers
    loss = (out.float() ** 2).sum() + (q.float() ** 3).sum()
    g = torch.autograd.grad(loss, (q, k, v), create_graph=True)
    assert all(x.requires_grad for x in g)
    with pytest.raises(RuntimeError, match=MSG):
        torch.autograd.grad(sum(x.float().sum() for x in g), (q, k, v), retain_graph=True)
    with pytest.raises(RuntimeError, match=MSG):
        g[1].float().pow(2).sum().backward()


@pytest.mark.parametrize("device", devices())
def test_create_graph_first_order_unchanged(device):
    """create_graph=True alone is fine and gives the same first-order gradients, bit for bit."""
    q, k, v = _dense(device)
    dout = torch.randn_like(q)
    plain = torch.autograd.grad(_call_dense(q, k, v), (q, k, v), dout)
    graph = torch.autograd.grad(_call_dense(q, k, v), (q, k, v), dout, create_graph=True)
    for a, b in zip(plain, graph):
        assert not a.requires_grad
        assert torch.equal(a, b.detach())


def test_gradgradcheck_raises():
    """torch.autograd.gradgradcheck reaches the refusal rather than comparing numbers."""
    q, k, v = (torch.randn(1, 3, 2, 8, dtype=torch.float32, requires_grad=True) for _ in range(3))
    with pytest.raises(RuntimeError, match=MSG):
        torch.autograd.gradgradcheck(_call_dense, (q, k, v), eps=1e-2, atol=1e-2, rtol=1e-2)


def test_first_order_backward_adds_no_node():
    """Without create_graph the backward calls the op directly: the gradients have no grad_fn."""
    q, k, v = _dense("cpu")
    g = torch.autograd.grad(_call_dense(q, k, v).sum(), (q, k, v))
    assert all(x.grad_fn is None and not x.requires_grad for x in g)
