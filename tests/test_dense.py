"""Dense flash_attn_func: awkward sizes, sq != sk both ways, odd head dims, custom softmax_scale,
strided inputs (with NaN in the gaps), forward and backward against the fp64 oracle."""
from __future__ import annotations

import pytest
import torch

from conftest import dev_cases, poison_allocator
from oracle import FWD_FACTOR, assert_grads, assert_ratio, check_dense, ref_forward_backward

import flash_attn_c

# (b, sq, sk, h, d): CPU sizes stay small (2 shared cores); one 1025 case each way.
CPU_SIZES = [
    (1, 1, 1, 1, 64),
    (2, 17, 17, 2, 40),
    (1, 97, 97, 2, 59),
    (1, 255, 255, 1, 80),
    (1, 17, 97, 2, 111),
    (1, 97, 17, 2, 256),
    (1, 1, 255, 3, 64),
    (1, 255, 1, 2, 32),
    (3, 33, 65, 4, 16),
    (1, 20, 30, 2, 3),
    (1, 1025, 97, 1, 64),
    (1, 97, 1025, 1, 40),
]
# GPU: every seqlen pair with every head dim (fp16 and bf16 each).
GPU_PAIRS = [(1, 1), (17, 17), (97, 255), (255, 97), (1025, 1025), (113, 203), (2048, 2048),
             (1, 4096), (3000, 1000), (512, 2049)]
GPU_DIMS = [32, 40, 59, 64, 80, 96, 111, 128, 160, 192, 224, 256]


def _gpu_sizes():
    out = []
    for sq, sk in GPU_PAIRS:
        big = sq * sk >= 2_000_000
        for d in GPU_DIMS:
            out.append((1 if big else 2, sq, sk, 2 if big else 4, d))
    return out


GPU_SIZES = _gpu_sizes()


@pytest.mark.parametrize("device,dtype,b,sq,sk,h,d",
                         dev_cases(CPU_SIZES, GPU_SIZES, marks=[pytest.mark.parity_fwd]))
def test_dense_forward(device, dtype, b, sq, sk, h, d):
    check_dense(device, dtype, b, sq, sk, h, h, d)


# Backward: the same shapes minus the two largest CPU ones (their backward oracle is the slow part).
@pytest.mark.parametrize("device,dtype,b,sq,sk,h,d",
                         dev_cases(CPU_SIZES[:-2] + [(1, 300, 77, 1, 64)], GPU_SIZES,
                                   marks=[pytest.mark.parity_grad]))
def test_dense_backward(device, dtype, b, sq, sk, h, d):
    check_dense(device, dtype, b, sq, sk, h, h, d, grad=True, check_lse=False)


@pytest.mark.parametrize("device,dtype,scale",
                         dev_cases([0.05, 0.5, 1.0, 2.5], [0.05, 0.3, 1.0, 2.0],
                                   marks=[pytest.mark.parity_fwd, pytest.mark.parity_grad]))
def test_dense_softmax_scale(device, dtype, scale):
    """An explicit softmax_scale replaces d ** -0.5 (forward and backward)."""
    check_dense(device, dtype, 2, 45, 61, 2, 2, 48, softmax_scale=scale, grad=True)


@pytest.mark.parametrize("device,dtype", dev_cases([()], [()]))
def test_dense_default_scale_is_original_head_dim(device, dtype):
    """d = 59 is padded to 64 on CUDA; the default scale must stay 59 ** -0.5, i.e. equal to an
    explicit softmax_scale=59 ** -0.5, bitwise."""
    q, k, v = (torch.randn(1, 33, 2, 59, device=device, dtype=dtype) for _ in range(3))
    a = flash_attn_c.flash_attn_func(q, k, v)
    b = flash_attn_c.flash_attn_func(q, k, v, softmax_scale=59 ** -0.5)
    assert torch.equal(a, b)


def _strided(shape, d_pad, device, dtype):
    """A (b, s, h, d) view with gaps: last dim contiguous, row/head strides padded, the gaps NaN."""
    b, s, h, d = shape
    buf = torch.full((b, s + 3, h + 1, d + d_pad), float("nan"), device=device, dtype=dtype)
    view = buf[:, 1:s + 1, :h, :d]
    view.copy_(torch.randn(shape, device=device, dtype=dtype))
    return view


@pytest.mark.parametrize("device,dtype,causal",
                         dev_cases([False, True], [False, True],
                                   marks=[pytest.mark.parity_fwd, pytest.mark.parity_grad]))
def test_dense_strided_inputs_with_nan_gaps(device, dtype, causal):
    """Non-contiguous q/k/v (only the last dim contiguous) whose gaps hold NaN: the result equals
    the contiguous call bitwise, matches the oracle, and gradients have the inputs' shapes."""
    b, sq, sk, h, d = 2, 37, 53, 3, 40
    q = _strided((b, sq, h, d), 8, device, dtype)
    k = _strided((b, sk, h, d), 5, device, dtype)
    v = _strided((b, sk, h, d), 3, device, dtype)
    assert not q.is_contiguous() and q.stride(-1) == 1
    qg, kg, vg = (t.detach().requires_grad_() for t in (q, k, v))
    out = flash_attn_c.flash_attn_func(qg, kg, vg, causal=causal)
    qc, kc, vc = (t.contiguous().requires_grad_() for t in (q, k, v))
    out_c = flash_attn_c.flash_attn_func(qc, kc, vc, causal=causal)
    assert torch.equal(out, out_c), "strided and contiguous inputs must give the same output"
    dout = torch.randn_like(out_c)
    g = torch.autograd.grad(out, (qg, kg, vg), dout)
    gc = torch.autograd.grad(out_c, (qc, kc, vc), dout)
    for name, a, c in zip("qkv", g, gc):
        assert a.shape == c.shape
        assert torch.equal(a, c), f"d{name}: strided and contiguous inputs must give the same gradient"
    ref = ref_forward_backward((q, k, v), dout, upcast=True, causal=causal)
    base = ref_forward_backward((q, k, v), dout, upcast=False, causal=causal)
    assert_ratio("out", out, ref.out, base.out, dtype, FWD_FACTOR)
    assert_grads(g, ref.grads, base.grads, dtype)


@pytest.mark.parametrize("device,dtype", dev_cases([()], [()]))
def test_dense_transposed_views(device, dtype):
    """q/k/v as transposes of (b, h, s, d) tensors (the layout transformers hands out)."""
    b, s, h, d = 2, 29, 4, 32
    qt, kt, vt = (torch.randn(b, h, s, d, device=device, dtype=dtype) for _ in range(3))
    q, k, v = (t.transpose(1, 2) for t in (qt, kt, vt))
    out = flash_attn_c.flash_attn_func(q, k, v)
    out_c = flash_attn_c.flash_attn_func(q.contiguous(), k.contiguous(), v.contiguous())
    assert torch.equal(out, out_c)


@pytest.mark.parametrize("device,dtype", dev_cases([()], [()]))
def test_dense_poisoned_allocator_outputs_fully_written(device, dtype):
    """With the allocator full of NaN, every element of out, lse and the gradients is finite."""
    b, sq, sk, h, d = 2, 70, 70, 2, 64
    q, k, v = (torch.randn(b, s, h, d, device=device, dtype=dtype, requires_grad=True)
               for s in (sq, sk, sk))
    poison_allocator(device, [q.numel() * q.element_size(), b * h * sq * 4] * 3)
    out, lse, _ = flash_attn_c.flash_attn_func(q, k, v, return_attn_probs=True)
    assert torch.isfinite(out).all() and torch.isfinite(lse).all()
    poison_allocator(device, [q.numel() * q.element_size()] * 4 + [q.numel() * 4] * 3)
    g = torch.autograd.grad(out, (q, k, v), torch.randn_like(out))
    for t in g:
        assert torch.isfinite(t).all()


@pytest.mark.parametrize("device,dtype", dev_cases([()], [()]))
def test_dense_output_independent_of_batch_neighbours(device, dtype):
    """Each batch element is computed from its own rows only: computing batch element 1 alone
    gives the same bits as inside the batch of 3."""
    q, k, v = (torch.randn(3, 41, 2, 64, device=device, dtype=dtype) for _ in range(3))
    full = flash_attn_c.flash_attn_func(q, k, v)
    one = flash_attn_c.flash_attn_func(q[1:2], k[1:2], v[1:2])
    assert torch.equal(full[1:2], one)
