"""The wide Hopper forward instance (fa_tuning.h wide_bc: at d in (64, 128] the plain dense calls
with neither causal nor a window and at least wide_min_sk = 4096 keys run on 176-key tiles, FA3's
non-causal hdim-128 tile): forward parity against the float64 oracle (error-ratio rule) at key
lengths around the tile (1, 175, 176, 177, 352, 353, 1000; FLASH_ATTN_C_SM90_FWD_WIDE=1 takes the
wide tile below wide_min_sk), sq != sk both ways, GQA / MQA, both dtypes; a profiler check that the
wide instance is what ran for those calls, that shorter calls by default and causal, windowed, varlen
and softcap calls and FLASH_ATTN_C_SM90_FWD_WIDE=0 keep the 128-key tile. Runs on compute capability
9.0 only."""
from __future__ import annotations

import pytest
import torch

from conftest import sm90_fwd_int_args_ran, sm90_switches
from oracle import check_dense

import flash_attn_c

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def sm90_on(monkeypatch: pytest.MonkeyPatch) -> None:
    sm90_switches(monkeypatch, "the wide forward", {
        "FLASH_ATTN_C_SM90_FWD_WIDE": None,
        "FLASH_ATTN_C_SM90_FWD_PERSIST": None,
    })


def _bcs_ran(fn) -> set:
    """The Bc (template argument 3) of every one-block sm90 forward instance fn() launched."""
    return {bc for grid, bc in sm90_fwd_int_args_ran(fn, 3) if grid == "block"}


DTYPES = [torch.bfloat16, torch.float16]


@pytest.mark.parametrize("dtype", DTYPES, ids=["bf16", "fp16"])
@pytest.mark.parametrize("d", [128, 96])
def test_wide_instance_runs_for_unmasked_calls(dtype, d, monkeypatch):
    ql, kl, vl = (torch.randn(1, 4096, 2, d, device="cuda", dtype=dtype) for _ in range(3))
    assert _bcs_ran(lambda: flash_attn_c.flash_attn_func(ql, kl, vl)) == {176}  # sk >= wide_min_sk
    q, k, v = (torch.randn(2, 700, 4, d, device="cuda", dtype=dtype) for _ in range(3))
    assert _bcs_ran(lambda: flash_attn_c.flash_attn_func(q, k, v)) == {128}  # shorter: the rule keeps 128
    monkeypatch.setenv("FLASH_ATTN_C_SM90_FWD_WIDE", "1")
    assert _bcs_ran(lambda: flash_attn_c.flash_attn_func(q, k, v)) == {176}
    assert _bcs_ran(lambda: flash_attn_c.flash_attn_func(q, k, v, causal=True)) <= {128}  # one-block or persistent
    assert _bcs_ran(lambda: flash_attn_c.flash_attn_func(q, k, v, window_size=(100, 100))) == {128}
    assert _bcs_ran(lambda: flash_attn_c.flash_attn_func(q, k, v, softcap=5.0)) == {128}
    qv = q.reshape(-1, 4, d)
    cu = torch.tensor([0, 700, 1400], device="cuda", dtype=torch.int32)
    kv = k.reshape(-1, 4, d), v.reshape(-1, 4, d)
    assert _bcs_ran(lambda: flash_attn_c.flash_attn_varlen_func(qv, *kv, cu, cu, 700, 700)) == {128}
    monkeypatch.setenv("FLASH_ATTN_C_SM90_FWD_WIDE", "0")
    assert _bcs_ran(lambda: flash_attn_c.flash_attn_func(ql, kl, vl)) == {128}


@pytest.mark.parametrize("dtype", DTYPES, ids=["bf16", "fp16"])
@pytest.mark.parametrize("sq,sk", [(1, 1), (64, 175), (130, 176), (257, 177), (300, 352), (353, 353),
                                   (1000, 300), (100, 1000)])
def test_wide_parity(dtype, sq, sk, monkeypatch):
    monkeypatch.setenv("FLASH_ATTN_C_SM90_FWD_WIDE", "1")  # the wide tile below wide_min_sk too
    check_dense("cuda", dtype, 2, sq, sk, 4, 4, 128, causal=False)


@pytest.mark.parametrize("dtype", DTYPES, ids=["bf16", "fp16"])
@pytest.mark.parametrize("hk", [2, 1])
def test_wide_parity_gqa(dtype, hk, monkeypatch):
    monkeypatch.setenv("FLASH_ATTN_C_SM90_FWD_WIDE", "1")
    check_dense("cuda", dtype, 3, 333, 517, 8, hk, 128, causal=False)
    check_dense("cuda", dtype, 1, 200, 1000, 4, hk, 80, causal=False)


@pytest.mark.parametrize("dtype", DTYPES, ids=["bf16", "fp16"])
def test_wide_parity_default_rule(dtype):
    """Past wide_min_sk the default takes the wide tile: a key length just over it, 4097 = 23 x 176 + 49."""
    check_dense("cuda", dtype, 1, 100, 4097, 4, 2, 128, causal=False)
