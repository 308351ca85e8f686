"""The 128-row tile of the plain d = 64 Hopper forward (fa_fwd_sm90.cu fa_sm90_small_br): by the
tuning row's measured rule (small_br_max_sq = 1024) causal calls with seqlen_q and seqlen_k up to 1024
run it, everything else the row's Br 192 with 3 consumer warpgroups; FLASH_ATTN_C_SM90_FWD_D64_BR=128
(read on every call) takes it for every plain dense d = 64 call, any other value never. A profiler
check of the rule's edges and of the variable on the persistent and the one-block grid, that calls
outside its scope (softcap, varlen, d = 128) keep their tiles; forward parity against the float64
oracle (error-ratio rule) at lengths around the 128 / 192 row blocks, causal bottom-right with sq != sk
both ways, a window, GQA / MQA, both dtypes, both grids. Runs on compute capability 9.0 only."""
from __future__ import annotations

import pytest
import torch

from conftest import sm90_fwd_int_args_ran, sm90_switches
from oracle import check_dense

import flash_attn_c

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def sm90_on(monkeypatch: pytest.MonkeyPatch) -> None:
    sm90_switches(monkeypatch, "the 128-row d = 64 tile", {
        "FLASH_ATTN_C_SM90_FWD_D64_BR": None,
        "FLASH_ATTN_C_SM90_FWD_PERSIST": None,
    })


def _brs_ran(fn) -> set:
    """(grid, Br) of every sm90 forward instance fn() launched, grid "persist" or "block" (Br:
    template argument 2)."""
    return sm90_fwd_int_args_ran(fn, 2)


DTYPES = [torch.bfloat16, torch.float16]


@pytest.mark.parametrize("dtype", DTYPES, ids=["bf16", "fp16"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_switch_selects_br128(dtype, causal, monkeypatch):
    q, k, v = (torch.randn(2, 512, 8, 64, device="cuda", dtype=dtype) for _ in range(3))
    run = lambda: flash_attn_c.flash_attn_func(q, k, v, causal=causal)  # noqa: E731
    # unset: the rule (causal up to 1024: 128 rows; non-causal: the row's 192), persist ALL
    assert _brs_ran(run) == {("persist", 128 if causal else 192)}
    monkeypatch.setenv("FLASH_ATTN_C_SM90_FWD_D64_BR", "128")
    assert _brs_ran(run) == {("persist", 128)}
    monkeypatch.setenv("FLASH_ATTN_C_SM90_FWD_PERSIST", "0")
    assert _brs_ran(run) == {("block", 128)}
    monkeypatch.setenv("FLASH_ATTN_C_SM90_FWD_D64_BR", "192")  # any other value: the row's tile
    assert _brs_ran(run) == {("block", 192)}


@pytest.mark.parametrize("sq,sk,window,want", [
    (1024, 1024, None, 128),     # the rule's last length
    (1025, 1025, None, 192),     # one past it
    (64, 1024, None, 128),       # causal sq < sk inside it
    (512, 2048, None, 192),      # keys past it
    (2048, 512, None, 192),      # queries past it
    (512, 512, (100, 0), 192),   # a window is not causal
])
def test_default_rule(sq, sk, window, want):
    """The tuning row's rule without the variable: causal (no window) with both lengths <= 1024."""
    q = torch.randn(1, sq, 4, 64, device="cuda", dtype=torch.bfloat16)
    k, v = (torch.randn(1, sk, 4, 64, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    kw = {"causal": True} if window is None else {"window_size": window}
    assert {br for _, br in _brs_ran(lambda: flash_attn_c.flash_attn_func(q, k, v, **kw))} == {want}


def test_switch_scope(monkeypatch):
    """Softcap (its CAP instance: the row's 192 rows), varlen and d = 128 calls ignore the variable."""
    monkeypatch.setenv("FLASH_ATTN_C_SM90_FWD_D64_BR", "128")
    q, k, v = (torch.randn(2, 300, 4, 64, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    assert _brs_ran(lambda: flash_attn_c.flash_attn_func(q, k, v, softcap=5.0)) == {("block", 192)}
    cu = torch.tensor([0, 300, 600], device="cuda", dtype=torch.int32)
    qv, kv, vv = (t.reshape(-1, 4, 64) for t in (q, k, v))
    assert _brs_ran(lambda: flash_attn_c.flash_attn_varlen_func(qv, kv, vv, cu, cu, 300, 300)) == {("block", 192)}


@pytest.mark.parametrize("dtype", DTYPES, ids=["bf16", "fp16"])
@pytest.mark.parametrize("persist", ["1", "0"], ids=["persist", "block"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("sq,sk", [(1, 1), (127, 127), (128, 200), (129, 129), (191, 300), (192, 192),
                                   (193, 100), (257, 257), (512, 512)])
def test_br128_parity(dtype, persist, causal, sq, sk, monkeypatch):
    monkeypatch.setenv("FLASH_ATTN_C_SM90_FWD_D64_BR", "128")
    monkeypatch.setenv("FLASH_ATTN_C_SM90_FWD_PERSIST", persist)
    check_dense("cuda", dtype, 2, sq, sk, 4, 4, 64, causal=causal)


@pytest.mark.parametrize("dtype", DTYPES, ids=["bf16", "fp16"])
@pytest.mark.parametrize("persist", ["1", "0"], ids=["persist", "block"])
@pytest.mark.parametrize("hk", [2, 1])
def test_br128_parity_gqa_window(dtype, persist, hk, monkeypatch):
    monkeypatch.setenv("FLASH_ATTN_C_SM90_FWD_D64_BR", "128")
    monkeypatch.setenv("FLASH_ATTN_C_SM90_FWD_PERSIST", persist)
    check_dense("cuda", dtype, 3, 333, 517, 8, hk, 64, causal=True)
    check_dense("cuda", dtype, 2, 400, 300, 4, hk, 48, window=(100, 20))
