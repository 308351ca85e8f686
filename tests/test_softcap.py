"""softcap > 0: s_ij = softcap * tanh(softmax_scale * q_i.k_j / softcap), forward and backward,
alone and with causal / window / ALiBi / custom scale."""
from __future__ import annotations

import math

import pytest
import torch

from conftest import dev_cases
from oracle import check_dense, check_varlen

import flash_attn_c

SOFTCAPS = [0.5, 5.0, 30.0]
CPU_CASES = [(sq, sk, c, causal) for sq, sk in [(64, 64), (33, 97), (97, 33)]
             for c in SOFTCAPS for causal in (False, True)]
GPU_CASES = [(sq, sk, c, causal) for sq, sk in [(256, 256), (1000, 3000), (2048, 512)]
             for c in SOFTCAPS + [50.0] for causal in (False, True)]


@pytest.mark.parametrize("device,dtype,sq,sk,softcap,causal",
                         dev_cases(CPU_CASES, GPU_CASES, marks=[pytest.mark.parity_fwd]))
def test_softcap_forward(device, dtype, sq, sk, softcap, causal):
    # softmax_scale 0.5 at d=64 gives scores of std ~4: well into the saturating part of tanh
    check_dense(device, dtype, 1, sq, sk, 2, 2, 64, softcap=softcap, causal=causal,
                softmax_scale=0.5)


@pytest.mark.parametrize("device,dtype,sq,sk,softcap,causal",
                         dev_cases(CPU_CASES, GPU_CASES, marks=[pytest.mark.parity_grad]))
def test_softcap_backward(device, dtype, sq, sk, softcap, causal):
    check_dense(device, dtype, 1, sq, sk, 2, 2, 64, softcap=softcap, causal=causal,
                softmax_scale=0.5, grad=True, check_lse=False)


@pytest.mark.parametrize("device,dtype,softcap,causal",
                         dev_cases([(c, causal) for c in (200.0, 1e4) for causal in (False, True)],
                                   cpu_dtypes=[torch.float32],
                                   marks=[pytest.mark.parity_fwd, pytest.mark.parity_grad]))
def test_softcap_large_fp32(device, dtype, softcap, causal):
    """softcap >> |score| puts tanh's argument near 0, where only a relative tanh error keeps the
    score's error at fp32 size: a tanh accurate to 6e-8 absolute only (1 - 2 / (e^2x + 1)) gave
    30x torch's fp32 error at softcap 200 and 2500x at 1e4."""
    check_dense(device, dtype, 1, 128, 128, 2, 2, 64, softcap=softcap, causal=causal, grad=True)


@pytest.mark.parametrize("device,dtype,extra",
                         dev_cases(["window", "alibi", "varlen"], ["window", "alibi", "varlen"],
                                   marks=[pytest.mark.parity_fwd, pytest.mark.parity_grad]))
def test_softcap_combined(device, dtype, extra):
    if extra == "varlen":
        check_varlen(device, dtype, [7, 0, 50], [30, 3, 50], 2, 1, 40, softcap=3.0, causal=True,
                     grad=True)
    elif extra == "window":
        check_dense(device, dtype, 2, 70, 90, 2, 2, 40, softcap=3.0, window=(5, 9), grad=True)
    else:
        check_dense(device, dtype, 2, 70, 90, 2, 2, 40, softcap=3.0, alibi="bh", grad=True)


@pytest.mark.parametrize("device,dtype", dev_cases([()], [()]))
def test_softcap_zero_is_off(device, dtype):
    """softcap=0.0 is off (the no-softcap oracle's output), and a small positive softcap is not:
    scores of std ~4 capped at 1.0 give a visibly different output."""
    case = check_dense(device, dtype, 1, 31, 31, 2, 2, 32, softcap=0.0, softmax_scale=0.5, check_lse=False)
    q, k, v = case.inputs
    capped = flash_attn_c.flash_attn_func(q, k, v, softcap=1.0, softmax_scale=0.5)
    assert (capped.float() - case.ours_out.float()).abs().max().item() > 0.05


@pytest.mark.parametrize("device,dtype", dev_cases([()], [()]))
def test_softcap_bounds_scores(device, dtype):
    """With huge scores a tiny softcap keeps the softmax near uniform: lse <= softcap + log(sk)."""
    q = torch.randn(1, 16, 1, 32, device=device, dtype=dtype) * 20
    k = torch.randn(1, 24, 1, 32, device=device, dtype=dtype) * 20
    v = torch.randn(1, 24, 1, 32, device=device, dtype=dtype)
    _, lse, _ = flash_attn_c.flash_attn_func(q, k, v, softcap=0.5, return_attn_probs=True)
    assert (lse <= 0.5 + math.log(24) + 1e-3).all()
    assert (lse >= -0.5 + math.log(24) - 1e-3).all()
