"""Softcap and ALiBi on the Hopper backward: the pipelined kernel's FEAT instance
(fa_bwd_sm90_pipe_feat_kernel<kBf16, D, kDq>, the feature scores of thread_probs_ds_feat; D 64 / 128:
the Br = 64 tile, kDq 2 = dQ by TMA reduce; D 256: the dim split, kDq 1 = red.add; kDq 3 = ORDERED,
the deterministic form), opt-in with FLASH_ATTN_C_SM90_BWD_FEAT=1 (read on every call;
fa_bwd_sm90_plan.cu). Without the variable these calls run the sm80 backward, as before.

A profiler check of the selection: softcap, ALiBi and both at d <= 64, d in (64, 128] and d in
(128, 256] run the FEAT instance (kDq 2 / 1, or 3 when deterministic); plain calls never do;
dropout, varlen, FLASH_ATTN_C_SM90_BWD_DET=pass (d > 128: or DET256=0) deterministic feature
calls, and any feature call without the variable, launch no sm90 backward kernel at all (a plain
sm90 instance would ignore the features).
Then gradient parity against the float64 oracle (error-ratio rule, 3x for gradients) with the tile
edges of the pipelined tests: sq != sk both ways, causal, windows, GQA / MQA, softcaps that bend
the scores, slopes (h,) and (b, h), scale 4; deterministic calls also twice, bitwise identical.
Runs on compute capability 9.0 only."""
from __future__ import annotations

from typing import Callable

import pytest
import torch

from conftest import sm90_bwd_kernels, sm90_switches
from oracle import check_dense

import flash_attn_c

pytestmark = pytest.mark.gpu

ORDERED = "feat_3"  # conftest.sm90_bwd_kernels' tag of the deterministic form (kDq = ORDERED)


def _atomic(d: int) -> str:
    """The tag of the atomic-dQ form at head dim d: TMA dQ (kDq 2) at d <= 128, red.add (1) above."""
    return "feat_2" if d <= 128 else "feat_1"


@pytest.fixture(autouse=True)
def bwd_feat_on(monkeypatch: pytest.MonkeyPatch) -> None:
    sm90_switches(monkeypatch, "the Hopper backward with softcap / ALiBi", {
        "FLASH_ATTN_C_SM90_BWD": "1",
        "FLASH_ATTN_C_SM90_BWD_FEAT": "1",
        "FLASH_ATTN_C_SM90_BWD_PIPE": None,
        "FLASH_ATTN_C_SM90_BWD_DET": None,      # deterministic calls: the ORDERED form
        "FLASH_ATTN_C_SM90_BWD_DET256": None,
        "FLASH_ATTN_C_SM90_BWD_VARIANT": None,
    })




def _backward(d: int, *, softcap: float = 0.0, alibi: bool = False, deterministic: bool = False,
              dropout: float = 0.0, varlen: bool = False) -> Callable[[], object]:
    """One forward + backward of bf16 (2, 200, 4, d) q / k / v (varlen: 2 sequences of 100 / 300
    rows) with the given features; returns the call (for the profiler)."""
    def run() -> None:
        if varlen:
            q, k, v = (torch.randn(400, 4, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
                       for _ in range(3))
            cu = torch.tensor([0, 100, 400], device="cuda", dtype=torch.int32)
            out = flash_attn_c.flash_attn_varlen_func(q, k, v, cu, cu, 300, 300, causal=True, softcap=softcap,
                                                      alibi_slopes=slopes, deterministic=deterministic,
                                                      dropout_p=dropout)
        else:
            q, k, v = (torch.randn(2, 200, 4, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
                       for _ in range(3))
            out = flash_attn_c.flash_attn_func(q, k, v, causal=True, softcap=softcap, alibi_slopes=slopes,
                                               deterministic=deterministic, dropout_p=dropout)
        out.backward(torch.randn_like(out))

    slopes = torch.rand(4, device="cuda") * 0.5 + 0.05 if alibi else None
    return run


@pytest.mark.parametrize("d", [64, 128, 256])
def test_variable_selects_the_feat_instance(d: int, monkeypatch: pytest.MonkeyPatch) -> None:
    for feats in (dict(softcap=5.0), dict(alibi=True), dict(softcap=5.0, alibi=True)):
        names = sm90_bwd_kernels(_backward(d, **feats))
        assert names == [_atomic(d)], (feats, names)
        names = sm90_bwd_kernels(_backward(d, deterministic=True, **feats))
        assert names == [ORDERED], (feats, names)
    plain = sm90_bwd_kernels(_backward(d))
    assert plain and not any(t.startswith("feat") for t in plain), plain  # plain calls: their own instances
    # outside the FEAT instance's scope a feature call takes no sm90 backward kernel (the sm80 one)
    monkeypatch.setenv("FLASH_ATTN_C_SM90_BWD_DET", "pass")        # no dK/dV-only FEAT form
    assert sm90_bwd_kernels(_backward(d, softcap=5.0, deterministic=True)) == []
    monkeypatch.delenv("FLASH_ATTN_C_SM90_BWD_DET")
    if d > 128:                                                    # d > 128 deterministic: sm80 there
        monkeypatch.setenv("FLASH_ATTN_C_SM90_BWD_DET256", "0")
        assert sm90_bwd_kernels(_backward(d, softcap=5.0, deterministic=True)) == []
        monkeypatch.delenv("FLASH_ATTN_C_SM90_BWD_DET256")
    assert sm90_bwd_kernels(_backward(d, alibi=True, dropout=0.1)) == []
    assert sm90_bwd_kernels(_backward(d, softcap=5.0, varlen=True)) == []
    monkeypatch.delenv("FLASH_ATTN_C_SM90_BWD_FEAT")
    assert sm90_bwd_kernels(_backward(d, softcap=5.0)) == []
    assert sm90_bwd_kernels(_backward(d, alibi=True)) == []
    monkeypatch.setenv("FLASH_ATTN_C_SM90_BWD_FEAT", "1")
    monkeypatch.setenv("FLASH_ATTN_C_SM90_BWD_PIPE", "0")         # the cp.async kernel has no features
    assert sm90_bwd_kernels(_backward(d, softcap=5.0)) == []


# (b, sq, sk, h, hk, d, causal, window, softcap, alibi)
CASES = [
    (2, 97, 97, 4, 4, 64, False, (-1, -1), 2.0, None),
    (2, 200, 200, 2, 2, 128, True, (-1, -1), 2.0, None),
    (2, 130, 97, 4, 2, 128, False, (-1, -1), 0.0, "h"),
    (2, 97, 130, 8, 2, 64, True, (-1, -1), 0.0, "bh"),
    (1, 255, 255, 2, 2, 112, False, (20, 20), 3.0, "bh"),
    (1, 1025, 1025, 2, 2, 128, True, (-1, -1), 5.0, "h"),
    (2, 17, 1025, 2, 2, 48, False, (-1, -1), 0.0, "h"),
    (1, 1025, 17, 4, 1, 64, False, (-1, -1), 1.0, None),
    (2, 130, 200, 4, 2, 32, True, (-1, -1), 30.0, "bh"),
    (3, 1, 1, 2, 2, 128, False, (-1, -1), 0.0, "h"),
    (1, 2048, 2048, 8, 2, 128, True, (-1, -1), 50.0, "h"),
    # d in (128, 256]: the dim split (Bc = Br = 64); d 160 / 192 leave column blocks past d
    (2, 97, 97, 2, 2, 256, False, (-1, -1), 2.0, None),
    (2, 200, 130, 4, 2, 256, True, (-1, -1), 0.0, "bh"),
    (1, 130, 255, 2, 2, 160, False, (20, 20), 3.0, "h"),
    (1, 1025, 17, 4, 2, 192, False, (-1, -1), 5.0, "h"),
]


@pytest.mark.parity_grad
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("b,sq,sk,h,hk,d,causal,window,softcap,alibi", CASES)
def test_feat_backward_parity(dtype, b, sq, sk, h, hk, d, causal, window, softcap, alibi) -> None:
    # the parity would hold on the sm80 fallback too: the profiler says the FEAT instance ran
    names = sm90_bwd_kernels(lambda: check_dense("cuda", dtype, b, sq, sk, h, hk, d, causal=causal,
                                                  window=window, softcap=softcap, alibi=alibi, grad=True,
                                                  check_lse=False))
    assert names == [_atomic(d)], names


@pytest.mark.parity_grad
@pytest.mark.parametrize("b,sq,sk,h,hk,d,causal,window,softcap,alibi", CASES[:6] + CASES[-5:])
def test_feat_backward_deterministic(b, sq, sk, h, hk, d, causal, window, softcap, alibi) -> None:
    # parity on the ORDERED form, then two more backwards of the same inputs: identical bits
    names = sm90_bwd_kernels(lambda: check_dense("cuda", torch.bfloat16, b, sq, sk, h, hk, d, causal=causal,
                                                  window=window, softcap=softcap, alibi=alibi, grad=True,
                                                  check_lse=False, deterministic=True))
    assert names == [ORDERED], names
    q = torch.randn(b, sq, h, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k, v = (torch.randn(b, sk, hk, d, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(2))
    slopes = torch.rand((h,) if alibi == "h" else (b, h), device="cuda") * 0.5 + 0.05 if alibi else None
    out = flash_attn_c.flash_attn_func(q, k, v, causal=causal, window_size=window, softcap=softcap,
                                       alibi_slopes=slopes, deterministic=True)
    dout = torch.randn_like(out)
    first = torch.autograd.grad(out, (q, k, v), dout, retain_graph=True)
    second = torch.autograd.grad(out, (q, k, v), dout)
    for name, x, y in zip(("dq", "dk", "dv"), first, second):
        assert torch.equal(x, y), f"{name} differs between two deterministic backwards"


@pytest.mark.parity_grad
@pytest.mark.parametrize("d", [64, 128, 256])
@pytest.mark.parametrize("scale_mul", [4.0, -0.5])  # -0.5: softcap's scale / softcap < 0 too
def test_feat_backward_other_scales(d: int, scale_mul: float) -> None:
    names = sm90_bwd_kernels(lambda: check_dense("cuda", torch.bfloat16, 2, 97, 97, 2, 2, d, softcap=10.0,
                                                  alibi="h", softmax_scale=scale_mul / d ** 0.5, grad=True,
                                                  check_lse=False))
    assert names == [_atomic(d)], names
