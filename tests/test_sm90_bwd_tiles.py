"""The Hopper backward's default tiles and deterministic path (H100 run 54 / H200 run 62 defaults):
atomic-dQ calls run the FA3-sized tiles, Br = 80 at d in (64, 128] (fa_bwd_sm90_pipe80_kernel, TMA
dQ) and Br = 128 at d <= 64 (fa_bwd_sm90_pipe128_kernel<kBf16, kDq>, TMA dQ, red.add under
FLASH_ATTN_C_SM90_BWD_PIPE=1); FLASH_ATTN_C_SM90_BWD_VARIANT, a list, picks them ("br80", "br128",
unset = both, "br64" = neither: fa_bwd_sm90_pipe_kernel at Br = 64). Deterministic calls at
d <= 128, dense, run the ORDERED instance of the same tile (fa_bwd_sm90_pipe80_ordered_kernel,
fa_bwd_sm90_pipe128_kernel<kBf16, 3>; the Br = 64 kernel's kDq = 3 where the tile is Br = 64);
FLASH_ATTN_C_SM90_BWD_DET=ordered keeps the Br = 64 ORDERED instance, =pass the dK/dV + ordered dQ
pass path. Gradient parity against the float64 oracle (error-ratio rule,
3x for gradients) and a profiler check of which instance ran. Runs on compute capability 9.0 only."""
from __future__ import annotations

from typing import Callable, List

import pytest
import torch

from conftest import sm90_bwd_kernels, sm90_switches
from oracle import check_dense, check_varlen
from test_sm90_bwd_pipe import CASES as PIPE_CASES

pytestmark = pytest.mark.gpu

_ENV = ("FLASH_ATTN_C_SM90_BWD_PIPE", "FLASH_ATTN_C_SM90_BWD_DET", "FLASH_ATTN_C_SM90_BWD_VARIANT")


@pytest.fixture(autouse=True)
def hopper_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sm90 backward with every switch at its default (unset)."""
    sm90_switches(monkeypatch, "the pipelined backward", {
        "FLASH_ATTN_C_SM90_BWD": "1",
        **{name: None for name in _ENV},
    })


def _tiles(fn: Callable[[], object]) -> List[str]:
    """The sm90 backward kernels fn() launched, as sorted unique tags (conftest.sm90_bwd_kernels): "br64_<kDq>"
    (the Br = 64 kernel, also the d > 128 dim-split one), "br128_<kDq>", "br80", "cp_async"."""
    return sorted(set(sm90_bwd_kernels(fn)))


def _default_det_tile(d: int) -> List[str]:
    """The ORDERED instance a deterministic dense call (d <= 128) runs by default (scale > 0)."""
    return ["br128_3"] if d <= 64 else ["br80_ordered"]


def _default_tile(d: int) -> List[str]:
    """The instance an atomic-dQ dense call runs by default (scale > 0)."""
    if d <= 64:
        return ["br128_2"]
    if d <= 128:
        return ["br80"]
    return ["br64_1"]  # d in (128, 256]: the dim-split instance, red.add dQ


# (b, sq, sk, h, hk, d, causal, window): the Br = 64 tests' shapes (sq != sk both ways, GQA / MQA,
# windows, one query, d below the bucket, the d in (128, 256] bucket), plus sizes off the Br = 80 and
# Br = 128 tiles
CASES = PIPE_CASES + [
    (1, 1025, 17, 4, 2, 96, False, (-1, -1)),
    (2, 161, 130, 4, 2, 112, True, (-1, -1)),
    (1, 255, 257, 2, 2, 64, False, (100, 0)),
]


@pytest.mark.parity_grad
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("b,sq,sk,h,hk,d,causal,window", CASES)
def test_default_tiles(dtype, b, sq, sk, h, hk, d, causal, window):
    ran = _tiles(lambda: check_dense("cuda", dtype, b, sq, sk, h, hk, d, causal=causal, window=window, grad=True,
                                     check_lse=False))
    assert ran == _default_tile(d)


@pytest.mark.parametrize("variant,d,want", [
    ("br64", 64, ["br64_2"]), ("br64", 128, ["br64_2"]),
    ("br80", 64, ["br64_2"]), ("br80", 128, ["br80"]),
    ("br128", 64, ["br128_2"]), ("br128", 128, ["br64_2"]),
    ("br128,br80", 64, ["br128_2"]), ("br128,br80", 128, ["br80"]),
])
def test_variant_list(monkeypatch, variant: str, d: int, want: List[str]):
    """FLASH_ATTN_C_SM90_BWD_VARIANT names the FA3-sized tiles a call may take; the rest keep Br = 64."""
    monkeypatch.setenv("FLASH_ATTN_C_SM90_BWD_VARIANT", variant)
    assert _tiles(lambda: check_dense("cuda", torch.bfloat16, 2, 200, 150, 4, 2, d, causal=True, grad=True,
                                      check_lse=False)) == want


def test_red_add_dq_at_d64(monkeypatch):
    """FLASH_ATTN_C_SM90_BWD_PIPE=1 (red.add dQ): the Br = 128 tile has that instance too; the Br = 80 one
    has TMA dQ only, so d = 128 keeps the Br = 64 red.add instance."""
    monkeypatch.setenv("FLASH_ATTN_C_SM90_BWD_PIPE", "1")
    assert _tiles(lambda: check_dense("cuda", torch.bfloat16, 2, 200, 150, 4, 2, 64, grad=True,
                                      check_lse=False)) == ["br128_1"]
    assert _tiles(lambda: check_dense("cuda", torch.bfloat16, 2, 200, 150, 4, 2, 128, grad=True,
                                      check_lse=False)) == ["br64_1"]


@pytest.mark.parametrize("d", [64, 128])
def test_negative_scale_keeps_br64(d: int):
    """The FA3-sized tiles fold -LSE / scale into their S^T accumulator, so softmax_scale <= 0 keeps the
    Br = 64 tile (still exact)."""
    assert _tiles(lambda: check_dense("cuda", torch.bfloat16, 2, 97, 130, 4, 2, d, softmax_scale=-0.2, grad=True,
                                      check_lse=False)) == ["br64_2"]


@pytest.mark.parity_grad
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("b,sq,sk,h,hk,d,causal,window", [c for c in CASES if c[5] <= 128])
def test_deterministic_default_is_ordered(dtype, b, sq, sk, h, hk, d, causal, window):
    ran = _tiles(lambda: check_dense("cuda", dtype, b, sq, sk, h, hk, d, causal=causal, window=window, grad=True,
                                     check_lse=False, deterministic=True))
    assert ran == _default_det_tile(d)


@pytest.mark.parity_grad
@pytest.mark.parametrize("d", [48, 64, 96, 128])
def test_deterministic_ordered_opt_out(monkeypatch, d: int):
    """FLASH_ATTN_C_SM90_BWD_DET=ordered (the default before H200 run 62) runs the Br = 64 ORDERED
    instance at every d <= 128, and softmax_scale <= 0 does by default (the FA3 tiles need scale > 0)."""
    monkeypatch.setenv("FLASH_ATTN_C_SM90_BWD_DET", "ordered")
    assert _tiles(lambda: check_dense("cuda", torch.bfloat16, 2, 200, 150, 4, 2, d, causal=True, grad=True,
                                      check_lse=False, deterministic=True)) == ["br64_3"]
    monkeypatch.delenv("FLASH_ATTN_C_SM90_BWD_DET")
    assert _tiles(lambda: check_dense("cuda", torch.bfloat16, 2, 97, 130, 4, 2, d, softmax_scale=-0.2, grad=True,
                                      check_lse=False, deterministic=True)) == ["br64_3"]


def test_deterministic_scope(monkeypatch):
    """Outside the FA3 tiles' ORDERED instances deterministic calls keep their paths: varlen (the
    cp.async sm90 dK/dV kernel + the ordered dQ pass); DET=pass and PIPE=0 opt out to that path.
    (d > 128 runs the dim-split kernel's own ORDERED instance: test_sm90_bwd_det256.py's scope.)"""
    assert _tiles(lambda: check_varlen("cuda", torch.bfloat16, [300, 0, 70], [200, 9, 70], 4, 2, 128, causal=True,
                                       grad=True, deterministic=True)) == ["cp_async"]
    for name, value in (("FLASH_ATTN_C_SM90_BWD_DET", "pass"), ("FLASH_ATTN_C_SM90_BWD_PIPE", "0")):
        monkeypatch.setenv(name, value)
        assert _tiles(lambda: check_dense("cuda", torch.bfloat16, 2, 97, 130, 4, 2, 128, causal=True, grad=True,
                                          check_lse=False, deterministic=True)) == ["cp_async"]
        monkeypatch.delenv(name)


@pytest.mark.parametrize("det", ["unset", "ordered"])
def test_deterministic_default_bitwise_repeats(monkeypatch, det: str):
    """10 backwards of one call (GQA, causal, sq != sk): dq, dk, dv identical bit for bit, on the default
    ORDERED instance (Br = 80) and on the Br = 64 one (FLASH_ATTN_C_SM90_BWD_DET=ordered)."""
    import flash_attn_c
    if det != "unset":
        monkeypatch.setenv("FLASH_ATTN_C_SM90_BWD_DET", det)
    q = torch.randn(2, 1500, 8, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k, v = (torch.randn(2, 1700, 2, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(2))
    out = flash_attn_c.flash_attn_func(q, k, v, causal=True, deterministic=True)
    dout = torch.randn_like(out)
    want = ["br80_ordered"] if det == "unset" else ["br64_3"]
    assert _tiles(lambda: torch.autograd.grad(out, (q, k, v), dout, retain_graph=True)) == want
    ref = torch.autograd.grad(out, (q, k, v), dout, retain_graph=True)
    for r in range(10):
        g = torch.autograd.grad(out, (q, k, v), dout, retain_graph=True)
        for name, a, b in zip(("dq", "dk", "dv"), g, ref):
            assert torch.equal(a, b), f"{name} differs at repeat {r}"
