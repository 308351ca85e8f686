"""Softcap and ALiBi on the Hopper forward (the sm90 kernel's kFeat variant; the default,
FLASH_ATTN_C_SM90_FEAT=0 sends those calls to the sm80 kernels): forward parity against the float64 oracle (error-ratio
rule), every head-dim bucket, causal / window / GQA / varlen with empty sequences, alone and
combined. Runs on compute capability 9.0 only (elsewhere there is no sm90 kernel to select)."""
from __future__ import annotations

import re

import pytest
import torch

from conftest import dev_cases, sm90_fwd_feat_sets_ran, sm90_fwd_flag_ran, sm90_switches
from oracle import check_dense, check_varlen

import flash_attn_c


@pytest.fixture(autouse=True)
def feat_on(monkeypatch: pytest.MonkeyPatch) -> None:
    sm90_switches(monkeypatch, "the kFeat variant", {"FLASH_ATTN_C_SM90_FEAT": None})


FEATS = [dict(softcap=6.0), dict(alibi="h"), dict(softcap=3.0, alibi="bh")]
# d = 64: softcap and ALiBi together run the kFeat ANY tile (Br 128, 2 consumer warpgroups; fa_tuning.h
# feat_br), each alone the plain 192-row tile (FA_SM90_FEAT_CAP / ALIBI)
CASES = [(d, i, causal) for d in (64, 128, 256, 80) for i in range(len(FEATS)) for causal in (False, True)]


# fa_fwd_sm90_kernel<kBf16, D, Br, Bc, kStages, kFeat, kVarlen, kDrop>: kFeat is template argument 5
# (the kDrop instance has kFeat = true too; these tests make no dropout calls)
_FEAT_ARG = 5
_MANGLED_FEAT = re.compile(r"fa_fwd_sm90_kernelILb[01]E(?:Li\d+E){4}Lb1E")


def _feat_kernel_ran(fn) -> bool:
    """Whether fn() ran the sm90 forward's kFeat instantiation (kFeat = true), from the CUDA
    kernels the profiler saw (demangled or mangled names)."""
    return sm90_fwd_flag_ran(fn, _FEAT_ARG, _MANGLED_FEAT)


@pytest.mark.parametrize("device,dtype,d,expect", dev_cases([], [(128, True), (256, True), (80, True), (64, True)]))
def test_feat_calls_run_the_sm90_feat_kernel(device, dtype, d, expect, monkeypatch):
    """The parity tests below would pass on the sm80 kernel too: this one checks which kernel ran
    by default (and that with FLASH_ATTN_C_SM90_FEAT=0 it is not the sm90 one)."""
    q, k, v = (torch.randn(2, 300, 4, d, device=device, dtype=dtype) for _ in range(3))
    slopes = torch.rand(4, device=device) * 0.5
    call = lambda: flash_attn_c.flash_attn_func(q, k, v, causal=True, softcap=6.0, alibi_slopes=slopes)  # noqa: E731
    assert _feat_kernel_ran(call) == expect
    monkeypatch.setenv("FLASH_ATTN_C_SM90_FEAT", "0")
    assert not _feat_kernel_ran(call)


def _feat_sets_ran(fn) -> set[int]:
    """The kFeatSet values of the kFeat instances (no dropout) fn() launched (conftest)."""
    return sm90_fwd_feat_sets_ran(fn, drop=False)


@pytest.mark.parametrize("device,dtype,d,feat,want", dev_cases([], [(d, i, w) for d in (64, 128, 256)
                                                                    for i, w in ((0, 1), (1, 2), (2, 0))]))
def test_single_feature_runs_its_own_instance(device, dtype, d, feat, want):
    """Softcap alone runs the CAP instance, ALiBi alone the ALIBI one, both the ANY one (the single-
    feature instances compile the other feature out)."""
    q, k, v = (torch.randn(2, 300, 4, d, device=device, dtype=dtype) for _ in range(3))
    f = FEATS[feat]
    slopes = torch.rand(4, device=device) * 0.5 if "alibi" in f else None
    call = lambda: flash_attn_c.flash_attn_func(q, k, v, causal=True, softcap=f.get("softcap", 0.0),  # noqa: E731
                                                alibi_slopes=slopes)
    assert _feat_sets_ran(call) == {want}


@pytest.mark.parametrize("device,dtype,d,feat,causal", dev_cases([], CASES, marks=[pytest.mark.parity_fwd]))
def test_feat_forward(device, dtype, d, feat, causal):
    check_dense(device, dtype, 2, 300, 517, 4, 2, d, causal=causal, softmax_scale=0.5 if d == 64 else None,
                **FEATS[feat])


@pytest.mark.parametrize("device,dtype,d,feat", dev_cases([], [(d, i) for d in (64, 128, 256)
                                                                for i in range(len(FEATS))],
                                                          marks=[pytest.mark.parity_fwd]))
def test_feat_window_gqa_varlen(device, dtype, d, feat):
    check_dense(device, dtype, 1, 700, 900, 8, 2, d, window=(130, 20), **FEATS[feat])
    check_varlen(device, dtype, [17, 0, 97, 1, 150, 300], [33, 5, 0, 1, 129, 517], 4, 2, d, causal=True,
                 **FEATS[feat])


@pytest.mark.parametrize("device,dtype", dev_cases([], [()]))
def test_feat_env_off_is_the_sm80_path(device, dtype, monkeypatch):
    """With FLASH_ATTN_C_SM90_FEAT=0 the same call still passes (the sm80 kernels take it), and the
    two kernels agree to within low-precision rounding."""
    q, k, v = (torch.randn(2, 300, 4, 128, device=device, dtype=dtype) for _ in range(3))
    on = flash_attn_c.flash_attn_func(q, k, v, causal=True, softcap=6.0)
    monkeypatch.setenv("FLASH_ATTN_C_SM90_FEAT", "0")
    off = flash_attn_c.flash_attn_func(q, k, v, causal=True, softcap=6.0)
    torch.testing.assert_close(on.float(), off.float(), atol=2e-2, rtol=0)
