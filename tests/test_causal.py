"""causal=True: bottom-right aligned mask (docs/conventions.md). Rows that see no key (sq > sk)
give out 0 and lse -inf; forward and backward against the fp64 oracle."""
from __future__ import annotations

import pytest
import torch

from conftest import dev_cases
from oracle import FWD_FACTOR, assert_ratio, check_dense, check_varlen, visible_mask

import flash_attn_c

# (b, sq, sk, h, d)
CPU_SIZES = [
    (1, 1, 1, 2, 64),
    (2, 17, 17, 2, 40),
    (1, 97, 255, 2, 59),
    (1, 255, 97, 2, 80),   # sq > sk: the first 158 rows are empty
    (1, 2, 5, 1, 16),
    (1, 5, 2, 1, 16),
    (1, 1, 97, 2, 111),
    (1, 97, 1, 2, 32),     # only the last row sees a key
    (2, 128, 128, 2, 256),
    (1, 1025, 64, 1, 64),
]
GPU_SIZES = [(b, sq, sk, h, d)
             for (b, sq, sk, h) in [(2, 17, 17, 4), (2, 97, 255, 4), (2, 255, 97, 4),
                                    (1, 1025, 1025, 4), (1, 2048, 2048, 2), (1, 3000, 1000, 2),
                                    (1, 1000, 3000, 2), (4, 1, 513, 4)]
             for d in (40, 64, 111, 128, 256)]


@pytest.mark.parametrize("device,dtype,b,sq,sk,h,d",
                         dev_cases(CPU_SIZES, GPU_SIZES, marks=[pytest.mark.parity_fwd]))
def test_causal_forward(device, dtype, b, sq, sk, h, d):
    check_dense(device, dtype, b, sq, sk, h, h, d, causal=True)


@pytest.mark.parametrize("device,dtype,b,sq,sk,h,d",
                         dev_cases(CPU_SIZES[:-1], GPU_SIZES, marks=[pytest.mark.parity_grad]))
def test_causal_backward(device, dtype, b, sq, sk, h, d):
    check_dense(device, dtype, b, sq, sk, h, h, d, causal=True, grad=True, check_lse=False)


@pytest.mark.parametrize("device,dtype,sq,sk,expected",
                         dev_cases([(2, 5, [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]),
                                    (5, 2, [[0, 0], [0, 0], [0, 0], [1, 0], [1, 1]]),
                                    (3, 3, [[1, 0, 0], [1, 1, 0], [1, 1, 1]])],
                                   [(2, 5, [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]),
                                    (5, 2, [[0, 0], [0, 0], [0, 0], [1, 0], [1, 1]])]))
def test_causal_mask_is_bottom_right(device, dtype, sq, sk, expected):
    """The written-out examples of docs/conventions.md / flash-attn's docstring, read from S_dmask (zero
    exactly where masked) and lse (-inf exactly on empty rows)."""
    exp = torch.tensor(expected, dtype=torch.bool)
    assert torch.equal(visible_mask(sq, sk, causal=True), exp)  # the oracle agrees with the doc
    q = torch.randn(1, sq, 1, 16, device=device, dtype=dtype)
    k = torch.randn(1, sk, 1, 16, device=device, dtype=dtype)
    v = torch.randn(1, sk, 1, 16, device=device, dtype=dtype)
    out, lse, s = flash_attn_c.flash_attn_func(q, k, v, causal=True, return_attn_probs=True)
    assert torch.equal((s[0, 0] != 0).cpu(), exp)
    assert torch.equal(torch.isneginf(lse[0, 0]).cpu(), ~exp.any(dim=1))
    assert (out[0, ~exp.any(dim=1).to(out.device)] == 0).all()


@pytest.mark.parametrize("device,dtype", dev_cases([()], [()]))
def test_causal_square_matches_sdpa(device, dtype):
    """For sq == sk bottom-right and top-left agree, so torch SDPA's is_causal is a second,
    independent reference: SDPA in fp64 as the truth, SDPA in the input dtype as the baseline of
    the error-ratio rule."""
    q, k, v = (torch.randn(2, 64, 3, 32, device=device, dtype=dtype) for _ in range(3))
    out = flash_attn_c.flash_attn_func(q, k, v, causal=True)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    ref = sdpa(*(t.double().transpose(1, 2) for t in (q, k, v)), is_causal=True).transpose(1, 2)
    base = sdpa(*(t.transpose(1, 2) for t in (q, k, v)), is_causal=True).transpose(1, 2)
    assert_ratio("out vs SDPA", out, ref, base, dtype, FWD_FACTOR)


@pytest.mark.parametrize("device,dtype,lens_q,lens_k",
                         dev_cases([([5, 17, 1], [9, 17, 40]), ([30, 7], [3, 7])],
                                   [([5, 170, 1, 999], [9, 170, 400, 1000]),
                                    ([300, 7, 2048], [30, 7, 2000])],
                                   marks=[pytest.mark.parity_fwd, pytest.mark.parity_grad]))
def test_causal_varlen_uses_per_sequence_lengths(device, dtype, lens_q, lens_k):
    """The causal diagonal of each sequence uses that sequence's own sq and sk."""
    check_varlen(device, dtype, lens_q, lens_k, 2, 2, 32, causal=True, grad=True)
