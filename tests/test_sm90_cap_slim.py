"""The CAP_SLIM instance of the Hopper forward (fa_fwd_sm90_args.cuh FA_SM90_FEAT_CAP_SLIM): softcap alone
without the running row max (a fixed exp2 offset: softcapped scores are bounded), opt-in with
FLASH_ATTN_C_SM90_FWD_CAP_SLIM=1 (read on every call) for bf16 calls with softcap <= 51.29; fp16, larger
softcaps and softcap with ALiBi / dropout keep their instances. A profiler check that the variable
selects it (and only where it should), then forward parity against the float64 oracle (error-ratio
rule): every head-dim bucket, softcap 5 / 30 / 50, causal / window / GQA / sq != sk both ways / varlen,
and a large softmax scale that saturates tanh at both ends. Runs on compute capability 9.0 only."""
from __future__ import annotations

import pytest
import torch

from conftest import sm90_fwd_feat_sets_ran, sm90_switches
from oracle import check_dense, check_varlen

import flash_attn_c

pytestmark = pytest.mark.gpu

CAP, CAP_SLIM = 1, 5  # FA_SM90_FEAT_CAP / FA_SM90_FEAT_CAP_SLIM


@pytest.fixture(autouse=True)
def slim_on(monkeypatch: pytest.MonkeyPatch) -> None:
    sm90_switches(monkeypatch, "the CAP_SLIM instance", {
        "FLASH_ATTN_C_SM90_FEAT": None,
        "FLASH_ATTN_C_SM90_FWD_CAP_SLIM": "1",
    })


def _sets(dtype, d, softcap, alibi=False):
    q, k, v = (torch.randn(2, 300, 4, d, device="cuda", dtype=dtype) for _ in range(3))
    slopes = torch.rand(4, device="cuda") * 0.5 if alibi else None
    return sm90_fwd_feat_sets_ran(lambda: flash_attn_c.flash_attn_func(q, k, v, causal=True, softcap=softcap,
                                                                      alibi_slopes=slopes))


@pytest.mark.parametrize("d", [64, 128, 256])
def test_env_selects_cap_slim(d, monkeypatch):
    assert _sets(torch.bfloat16, d, 30.0) == {CAP_SLIM}
    assert _sets(torch.bfloat16, d, 51.0) == {CAP_SLIM}
    assert _sets(torch.bfloat16, d, 52.0) == {CAP}        # past FA_SM90_CAP_SLIM_MAX_LOG2
    assert _sets(torch.float16, d, 30.0) == {CAP}         # fp16 P has no room for the fixed offset
    assert CAP_SLIM not in _sets(torch.bfloat16, d, 30.0, alibi=True)  # softcap with ALiBi: ANY
    monkeypatch.setenv("FLASH_ATTN_C_SM90_FWD_CAP_SLIM", "0")
    assert _sets(torch.bfloat16, d, 30.0) == {CAP}
    monkeypatch.delenv("FLASH_ATTN_C_SM90_FWD_CAP_SLIM")
    assert _sets(torch.bfloat16, d, 30.0) == {CAP}


CAPS = [5.0, 30.0, 50.0]


@pytest.mark.parity_fwd
@pytest.mark.parametrize("d", [64, 80, 128, 256])
@pytest.mark.parametrize("softcap", CAPS)
@pytest.mark.parametrize("causal", [False, True])
def test_cap_slim_forward(d, softcap, causal):
    dev, dt = "cuda", torch.bfloat16
    check_dense(dev, dt, 2, 300, 517, 4, 2, d, causal=causal, softcap=softcap)
    check_dense(dev, dt, 1, 517, 300, 6, 3, d, causal=causal, softcap=softcap)
    # tanh saturated at both ends (softmax scale 2: 16x to 32x the default)
    check_dense(dev, dt, 1, 257, 700, 4, 1, d, causal=causal, softcap=softcap, softmax_scale=2.0)


@pytest.mark.parity_fwd
@pytest.mark.parametrize("d", [64, 128, 256])
@pytest.mark.parametrize("softcap", CAPS)
def test_cap_slim_window_varlen(d, softcap):
    dev, dt = "cuda", torch.bfloat16
    check_dense(dev, dt, 1, 700, 900, 8, 2, d, window=(130, 20), softcap=softcap)
    check_varlen(dev, dt, [17, 0, 97, 1, 150, 300], [33, 5, 0, 1, 129, 517], 4, 2, d, causal=True,
                 softcap=softcap, softmax_scale=2.0)


def test_cap_slim_all_scores_negative():
    """Rows whose every score saturates at -softcap: p = 2^-(C + off) for every key (the bottom of
    the offset's range, 2^-100 from softcap 34.66), so O is the mean of V."""
    q = torch.ones(1, 64, 2, 128, device="cuda", dtype=torch.bfloat16) * 4
    k = -torch.ones(1, 200, 2, 128, device="cuda", dtype=torch.bfloat16) * 4
    v = torch.randn(1, 200, 2, 128, device="cuda", dtype=torch.bfloat16)
    for softcap in CAPS:
        out = flash_attn_c.flash_attn_func(q, k, v, softcap=softcap)
        ref = v.float().mean(dim=1, keepdim=True).expand_as(out)
        torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=0)


@pytest.mark.parametrize("softcap", CAPS + [43.0])
def test_cap_slim_one_key_saturated_small_v(softcap):
    """One visible key per row, its score saturated at -softcap, small V: O = V exactly. With the
    offset's bottom at 2^-124 (softcap >= 42.9) p v fell below 2^-126 and was flushed to O = 0."""
    q = torch.ones(1, 64, 2, 128, device="cuda", dtype=torch.bfloat16) * 8
    k = -torch.ones(1, 1, 2, 128, device="cuda", dtype=torch.bfloat16) * 4
    v = (torch.rand(1, 1, 2, 128, device="cuda") * 0.2 + 0.01).to(torch.bfloat16)
    assert sm90_fwd_feat_sets_ran(lambda: flash_attn_c.flash_attn_func(q, k, v, softcap=softcap)) == {CAP_SLIM}
    out = flash_attn_c.flash_attn_func(q, k, v, softcap=softcap)
    torch.testing.assert_close(out.float(), v.float().expand_as(out), atol=1e-3, rtol=1e-2)
