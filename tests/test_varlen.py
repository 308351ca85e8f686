"""flash_attn_varlen_func: packed sequences with cu_seqlens, including length-0 sequences, sq != sk
per sequence, max_seqlen larger than needed; forward (out, lse (h, total_q)) and backward."""
from __future__ import annotations

import pytest
import torch

from conftest import dev_cases, poison_allocator
from oracle import check_varlen, cu_from_lens

import flash_attn_c

# (lens_q, lens_k, h, d)
CPU_CASES = [
    ([1], [1], 2, 64),
    ([17, 97, 5], [17, 97, 5], 2, 40),
    ([5, 0, 17, 1], [9, 3, 0, 40], 2, 59),     # a length-0 q sequence, a length-0 k sequence
    ([0, 0, 8], [0, 6, 8], 1, 32),
    ([64, 1, 33], [1, 64, 100], 3, 111),
    ([255], [97], 2, 80),
    ([3, 3, 3, 3, 3, 3], [7, 1, 7, 1, 7, 1], 2, 256),
    ([120, 7], [300, 2], 1, 16),
]
GPU_CASES = [
    ([1], [1], 4, 64),
    ([17, 97, 5], [17, 97, 5], 4, 128),
    ([5, 0, 17, 1], [9, 3, 0, 40], 4, 59),
    ([1025, 0, 2048, 1], [1025, 77, 2048, 3000], 4, 128),
    ([300] * 8, [500] * 8, 8, 64),
    ([4000, 10], [100, 4000], 2, 256),
    ([0, 700, 0], [0, 900, 5], 4, 40),
    ([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1000], [1000, 9, 8, 7, 6, 5, 4, 3, 2, 1, 1], 4, 96),
]
GPU_CASES = [(lq, lk, h, d) for (lq, lk, h, _) in GPU_CASES for d in (40, 64, 128, 256)]


@pytest.mark.parametrize("device,dtype,lens_q,lens_k,h,d",
                         dev_cases(CPU_CASES, GPU_CASES, marks=[pytest.mark.parity_fwd]))
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_varlen_forward(device, dtype, lens_q, lens_k, h, d, causal):
    check_varlen(device, dtype, lens_q, lens_k, h, h, d, causal=causal)


@pytest.mark.parametrize("device,dtype,lens_q,lens_k,h,d",
                         dev_cases(CPU_CASES, GPU_CASES, marks=[pytest.mark.parity_grad]))
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_varlen_backward(device, dtype, lens_q, lens_k, h, d, causal):
    check_varlen(device, dtype, lens_q, lens_k, h, h, d, causal=causal, grad=True)


@pytest.mark.parametrize("device,dtype,extra",
                         dev_cases([1, 37], [1, 500], marks=[pytest.mark.parity_fwd, pytest.mark.parity_grad]))
def test_varlen_max_seqlen_larger_than_needed(device, dtype, extra):
    check_varlen(device, dtype, [13, 0, 40], [20, 7, 33], 2, 2, 32, causal=True, grad=True,
                 extra_max=extra)


@pytest.mark.parametrize("device,dtype", dev_cases([()], [()]))
def test_varlen_equal_lengths_matches_dense(device, dtype):
    """Equal-length sequences through varlen give the dense result (same math per row)."""
    b, s, h, d = 3, 29, 2, 64
    q, k, v = (torch.randn(b, s, h, d, device=device, dtype=dtype) for _ in range(3))
    dense = flash_attn_c.flash_attn_func(q, k, v, causal=True)
    cu = cu_from_lens([s] * b, device)
    var = flash_attn_c.flash_attn_varlen_func(q.reshape(b * s, h, d), k.reshape(b * s, h, d),
                                              v.reshape(b * s, h, d), cu, cu, s, s, causal=True)
    torch.testing.assert_close(var.reshape(b, s, h, d), dense, rtol=0,
                               atol=2 * torch.finfo(dtype).eps)


@pytest.mark.parametrize("device,dtype", dev_cases([()], [()]))
def test_varlen_all_queries_empty(device, dtype):
    """total_q = 0: empty output and empty lse, no crash; backward gives zero dk/dv."""
    h, d = 2, 32
    q = torch.randn(0, h, d, device=device, dtype=dtype, requires_grad=True)
    k = torch.randn(10, h, d, device=device, dtype=dtype, requires_grad=True)
    v = torch.randn(10, h, d, device=device, dtype=dtype, requires_grad=True)
    cq = cu_from_lens([0, 0], device)
    ck = cu_from_lens([4, 6], device)
    out, lse, _ = flash_attn_c.flash_attn_varlen_func(q, k, v, cq, ck, 1, 6, return_attn_probs=True)
    assert out.shape == (0, h, d) and lse.shape == (h, 0)
    dq, dk, dv = torch.autograd.grad(out, (q, k, v), torch.randn_like(out), allow_unused=True)
    assert dk is None or (dk == 0).all()
    assert dv is None or (dv == 0).all()


@pytest.mark.parametrize("device,dtype", dev_cases([()], [()]))
def test_varlen_all_keys_empty(device, dtype):
    """Every sequence has sk = 0: out exactly 0, lse -inf, dq exactly 0, even with a poisoned
    allocator."""
    h, d = 2, 32
    q = torch.randn(9, h, d, device=device, dtype=dtype, requires_grad=True)
    k = torch.randn(0, h, d, device=device, dtype=dtype, requires_grad=True)
    v = torch.randn(0, h, d, device=device, dtype=dtype, requires_grad=True)
    cq = cu_from_lens([4, 5], device)
    ck = cu_from_lens([0, 0], device)
    poison_allocator(device, [q.numel() * q.element_size(), 9 * h * 4] * 2)
    out, lse, _ = flash_attn_c.flash_attn_varlen_func(q, k, v, cq, ck, 5, 0, return_attn_probs=True)
    assert (out == 0).all() and torch.isneginf(lse).all()
    poison_allocator(device, [q.numel() * q.element_size()] * 3)
    dq, = torch.autograd.grad(out, (q,), torch.randn_like(out))
    assert (dq == 0).all()


@pytest.mark.parametrize("device,dtype", dev_cases([()], [()]))
def test_varlen_sequences_independent(device, dtype):
    """Changing sequence 0's keys does not change sequence 1's output, bitwise."""
    h, d = 2, 32
    q = torch.randn(30, h, d, device=device, dtype=dtype)
    k = torch.randn(40, h, d, device=device, dtype=dtype)
    v = torch.randn(40, h, d, device=device, dtype=dtype)
    cq, ck = cu_from_lens([10, 20], device), cu_from_lens([15, 25], device)
    a = flash_attn_c.flash_attn_varlen_func(q, k, v, cq, ck, 20, 25)
    k2, v2 = k.clone(), v.clone()
    k2[:15] = torch.randn(15, h, d, device=device, dtype=dtype)
    v2[:15] = torch.randn(15, h, d, device=device, dtype=dtype)
    b = flash_attn_c.flash_attn_varlen_func(q, k2, v2, cq, ck, 20, 25)
    assert torch.equal(a[10:], b[10:])
    assert not torch.equal(a[:10], b[:10])
