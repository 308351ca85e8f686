"""Sliding-window (local) attention: window_size=(left, right), bottom-right aligned, -1 meaning
unbounded; causal=True forces right = 0. Includes windows that leave rows empty."""
from __future__ import annotations

import pytest
import torch

from conftest import dev_cases
from oracle import check_dense, check_varlen, visible_mask

import flash_attn_c

WINDOWS = [(3, 5), (0, 0), (10, -1), (-1, 4), (0, -1), (-1, 0), (1, 1)]
CPU_PAIRS = [(97, 97), (64, 150), (150, 64)]  # sq > sk with small windows leaves rows empty
GPU_PAIRS = [(255, 255), (300, 1030), (1030, 300), (2048, 2048)]
GPU_WINDOWS = WINDOWS + [(128, 0), (256, 256), (1000, 17)]


def _cases(pairs, windows, d):
    return [(sq, sk, w, d) for (sq, sk) in pairs for w in windows]


CPU_CASES = _cases(CPU_PAIRS, WINDOWS, 40)
GPU_CASES = _cases(GPU_PAIRS, GPU_WINDOWS, 64) + _cases([(500, 700)], GPU_WINDOWS, 128)


@pytest.mark.parametrize("device,dtype,sq,sk,window,d",
                         dev_cases(CPU_CASES, GPU_CASES, marks=[pytest.mark.parity_fwd]))
def test_window_forward(device, dtype, sq, sk, window, d):
    check_dense(device, dtype, 1, sq, sk, 2, 2, d, window=window)


@pytest.mark.parametrize("device,dtype,sq,sk,window,d",
                         dev_cases(CPU_CASES, GPU_CASES, marks=[pytest.mark.parity_grad]))
def test_window_backward(device, dtype, sq, sk, window, d):
    check_dense(device, dtype, 1, sq, sk, 2, 2, d, window=window, grad=True, check_lse=False)


CAUSAL_WINDOWS = [(8, -1), (8, 0), (0, -1), (40, 7)]  # right is ignored (forced to 0) when causal


@pytest.mark.parametrize("device,dtype,sq,sk,window",
                         dev_cases([(sq, sk, w) for sq, sk in [(80, 80), (50, 120), (120, 50)]
                                    for w in CAUSAL_WINDOWS],
                                   [(sq, sk, w) for sq, sk in [(1024, 1024), (300, 2000), (2000, 300)]
                                    for w in CAUSAL_WINDOWS + [(255, -1)]],
                                   marks=[pytest.mark.parity_fwd, pytest.mark.parity_grad]))
def test_causal_plus_window(device, dtype, sq, sk, window):
    """causal=True with a left window: the oracle forces right = 0, and so must the library."""
    check_dense(device, dtype, 1, sq, sk, 2, 2, 64, causal=True, window=window, grad=True)


@pytest.mark.parametrize("device,dtype", dev_cases([()], [()]))
def test_window_mask_pattern(device, dtype):
    """The exact visible set of a (2, 1) window with sq=4, sk=6, read back from S_dmask."""
    sq, sk, w = 4, 6, (2, 1)
    q = torch.randn(1, sq, 1, 8, device=device, dtype=dtype)
    k = torch.randn(1, sk, 1, 8, device=device, dtype=dtype)
    v = torch.randn(1, sk, 1, 8, device=device, dtype=dtype)
    _, _, s = flash_attn_c.flash_attn_func(q, k, v, window_size=w, return_attn_probs=True)
    expected = torch.tensor([[1, 1, 1, 1, 0, 0],
                             [0, 1, 1, 1, 1, 0],
                             [0, 0, 1, 1, 1, 1],
                             [0, 0, 0, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(visible_mask(sq, sk, w), expected)
    assert torch.equal((s[0, 0] != 0).cpu(), expected)


@pytest.mark.parametrize("device,dtype,window",
                         dev_cases([((2, 3),), ((0, 0),), ((-1, 1),)], [((2, 3),), ((0, 0),), ((16, -1),)],
                                   marks=[pytest.mark.parity_fwd, pytest.mark.parity_grad]))
def test_window_varlen(device, dtype, window):
    """Windows in varlen use each sequence's own diagonal; includes a length-0 sequence."""
    check_varlen(device, dtype, [10, 0, 33, 4], [12, 5, 20, 40], 2, 2, 32, window=window, grad=True)


@pytest.mark.parametrize("device,dtype", dev_cases([()], [()]))
def test_window_larger_than_sequence_equals_no_window(device, dtype):
    """A window covering everything is the same computation as no window."""
    q, k, v = (torch.randn(2, 40, 2, 32, device=device, dtype=dtype) for _ in range(3))
    a = flash_attn_c.flash_attn_func(q, k, v)
    b = flash_attn_c.flash_attn_func(q, k, v, window_size=(1000, 1000))
    torch.testing.assert_close(a, b, rtol=0, atol=2 * torch.finfo(dtype).eps)


HUGE = 2**63 - 1  # sys.maxsize: the CPU mask's sums overflowed with it (a wrong answer, no error)


@pytest.mark.parametrize("device,dtype,window",
                         dev_cases([((HUGE, 0),), ((0, HUGE),), ((HUGE, HUGE),), ((HUGE, 3),)],
                                   [((HUGE, 0),), ((0, HUGE),)],
                                   marks=[pytest.mark.parity_fwd, pytest.mark.parity_grad]))
def test_window_near_int64_max(device, dtype, window):
    """A window side near INT64_MAX bounds nothing, like any side at least as wide as the
    sequence: forward, gradients, dense (sq < sk and sq > sk) and varlen."""
    check_dense(device, dtype, 1, 40, 70, 2, 2, 32, window=window, grad=True)
    check_dense(device, dtype, 1, 70, 40, 2, 2, 32, window=window, grad=True)
    check_varlen(device, dtype, [10, 0, 33], [12, 5, 40], 2, 2, 32, window=window, grad=True)
