"""torch.compile(fullgraph=True) of code calling flash_attn_func and flash_attn_varlen_func, forward
and backward, on CPU (and CUDA when present): no graph breaks (fullgraph raises on one), results
equal eager's."""
from __future__ import annotations

import pytest
import torch

from conftest import devices
from oracle import cu_from_lens

import flash_attn_c


def _model(q, k, v, qv, kv, vv, cu_q, cu_k, max_q: int, max_k: int):
    a = flash_attn_c.flash_attn_func(q, k, v, causal=True, window_size=(8, -1))
    b = flash_attn_c.flash_attn_varlen_func(qv, kv, vv, cu_q, cu_k, max_q, max_k, causal=True,
                                            softcap=5.0)
    return (a.float() * 2).sum() + (b.float() ** 2).sum()


def _inputs(device, dtype, lens_q=(5, 0, 17), lens_k=(9, 3, 17)):
    q, k, v = (torch.randn(2, 33, 4, 32, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
    qv = torch.randn(sum(lens_q), 4, 32, device=device, dtype=dtype, requires_grad=True)
    kv = torch.randn(sum(lens_k), 2, 32, device=device, dtype=dtype, requires_grad=True)
    vv = torch.randn(sum(lens_k), 2, 32, device=device, dtype=dtype, requires_grad=True)
    return (q, k, v, qv, kv, vv, cu_from_lens(lens_q, device), cu_from_lens(lens_k, device),
            max(lens_q), max(lens_k))


def _loss_and_grads(fn, args):
    loss = fn(*args)
    leaves = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    return loss.detach(), torch.autograd.grad(loss, leaves)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compile_fullgraph_forward_backward(device, backend):
    torch._dynamo.reset()
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    args = _inputs(device, dtype)
    eager = _loss_and_grads(_model, args)
    compiled = torch.compile(_model, fullgraph=True, backend=backend)
    got = _loss_and_grads(compiled, args)
    # the attention ops run the same kernels on the same inputs; only the surrounding sum/scale
    # may be fused differently by inductor (fp32 reassociation): a few fp32 ulp of the loss
    torch.testing.assert_close(got[0], eager[0], rtol=1e-5, atol=0)
    for g, e in zip(got[1], eager[1]):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("device", devices())
def test_compile_dynamic_varlen_shapes(device):
    """Different total lengths and max_seqlens through one compiled function (dynamic shapes):
    no graph break, each result equals eager."""
    torch._dynamo.reset()
    dtype = torch.float32 if device == "cpu" else torch.float16
    compiled = torch.compile(_model, fullgraph=True, backend="aot_eager", dynamic=True)
    for lens_q, lens_k in [((5, 0, 17), (9, 3, 17)), ((30, 2, 1), (3, 40, 8)), ((4, 4, 4), (4, 4, 4))]:
        args = _inputs(device, dtype, lens_q, lens_k)
        got = _loss_and_grads(compiled, args)
        eager = _loss_and_grads(_model, args)
        assert torch.equal(got[0], eager[0])
        for g, e in zip(got[1], eager[1]):
            assert torch.equal(g, e)


def test_compile_no_graph_breaks_explain():
    """torch._dynamo.explain reports one graph and zero breaks for the model."""
    torch._dynamo.reset()
    args = _inputs("cpu", torch.float32)
    ex = torch._dynamo.explain(_model)(*args)
    assert ex.graph_break_count == 0, ex.break_reasons
    assert ex.graph_count == 1
