"""Dropout on the Hopper forward (the sm90 kernel's kDrop instance; the default since H100 run 54,
FLASH_ATTN_C_SM90_FWD_DROPOUT=0 sends dropout calls to the sm80 kernels). Dense calls only
(varlen dropout stays on sm80). Checks, with the variable unset or 1:

* the dropout calls run the kDrop kernel (profiler names), and not under =0; dropout alone its
  DROP instance (no softcap / ALiBi code), dropout with softcap or ALiBi the ANY one;
* the mask the kernel applies is dropout_mask(..., seed, offset) bit for bit: with q = 0 every
  visible key gets P = 1 / l, and V = one-hot rows make O[i, c] = keep(i, key c) / ((1 - p) l),
  so O != 0 is the mask, read directly (several key ranges: every key tile, both halves of the
  accumulator rows, every warpgroup, GQA query heads);
* out and the gradients (the backward takes the sm90 forward's LSE) against the float64 oracle
  fed with the same mask, and out against the sm80 kernel's under the same seed.
Runs on compute capability 9.0 only."""
from __future__ import annotations

import re

import pytest
import torch

from conftest import dev_cases, sm90_fwd_feat_sets_ran, sm90_fwd_flag_ran, sm90_switches
from oracle import FWD_FACTOR, assert_grads, assert_ratio, ref_forward_backward

import flash_attn_c


@pytest.fixture(autouse=True)
def drop_on(monkeypatch: pytest.MonkeyPatch) -> None:
    sm90_switches(monkeypatch, "the kDrop instance", {
        "FLASH_ATTN_C_SM90_FEAT": None,
        "FLASH_ATTN_C_SM90_FWD_DROPOUT": "1",
    })


# fa_fwd_sm90_kernel<kBf16, D, Br, Bc, kStages, kFeat, kVarlen, kDrop>: kDrop is argument 7
_DROP_ARG = 7
_MANGLED_DROP = re.compile(r"fa_fwd_sm90_kernelILb[01]E(?:Li\d+E){4}Lb1ELb0ELb1E")


def _drop_kernel_ran(fn) -> bool:
    """Whether fn() ran the sm90 forward's kDrop instance, from the CUDA kernels the profiler saw
    (demangled or mangled names)."""
    return sm90_fwd_flag_ran(fn, _DROP_ARG, _MANGLED_DROP)


@pytest.mark.parametrize("device,dtype,d", dev_cases([], [64, 128, 256, 80]))
def test_dropout_calls_run_the_sm90_drop_kernel(device, dtype, d, monkeypatch):
    q, k, v = (torch.randn(2, 300, 4, d, device=device, dtype=dtype) for _ in range(3))
    call = lambda: flash_attn_c.flash_attn_func(q, k, v, causal=True, dropout_p=0.2)  # noqa: E731
    assert _drop_kernel_ran(call)
    monkeypatch.delenv("FLASH_ATTN_C_SM90_FWD_DROPOUT")  # the default: sm90 as well
    assert _drop_kernel_ran(call)
    monkeypatch.setenv("FLASH_ATTN_C_SM90_FWD_DROPOUT", "0")  # the opt-out: sm80
    assert not _drop_kernel_ran(call)
    monkeypatch.setenv("FLASH_ATTN_C_SM90_FWD_DROPOUT", "1")
    cq = torch.tensor([0, 300, 600], device=device, dtype=torch.int32)
    qv, kv, vv = (t.reshape(600, 4, d) for t in (q, k, v))
    varlen = lambda: flash_attn_c.flash_attn_varlen_func(qv, kv, vv, cq, cq, 300, 300,  # noqa: E731
                                                         dropout_p=0.2)
    assert not _drop_kernel_ran(varlen), "varlen dropout is not the kDrop instance's"


# dropout with (softcap, ALiBi) -> the kDrop instance's kFeatSet: FA_SM90_FEAT_DROP 3 alone, ANY 0 with
# either feature (fa_sm90_feat_set_of)
SET_CASES = [(d, cap, alibi, 3 if not (cap or alibi) else 0) for d in (64, 128, 256)
             for cap, alibi in ((False, False), (True, False), (False, True), (True, True))]


@pytest.mark.parametrize("device,dtype,d,cap,alibi,want", dev_cases([], SET_CASES))
def test_dropout_alone_runs_the_drop_instance(device, dtype, d, cap, alibi, want):
    """Dropout alone runs the DROP instance (the plain kernel's scores, at d = 64 on the plain 192-row
    tile), dropout with softcap or ALiBi the ANY one (same style as test_sm90_feat's
    test_single_feature_runs_its_own_instance)."""
    q, k, v = (torch.randn(2, 300, 4, d, device=device, dtype=dtype) for _ in range(3))
    slopes = torch.rand(4, device=device) * 0.5 if alibi else None
    call = lambda: flash_attn_c.flash_attn_func(q, k, v, causal=True, dropout_p=0.2,  # noqa: E731
                                                softcap=6.0 if cap else 0.0, alibi_slopes=slopes)
    assert sm90_fwd_feat_sets_ran(call, drop=True) == {want}


# (b, sq, sk, h, hk, d, p, causal, softcap): softcap 0 runs the DROP instance, softcap > 0 the ANY one
# (the routing is test_dropout_alone_runs_the_drop_instance's; with q = 0 every score is 0 either way,
# so O != 0 is still the mask)
MASK_CASES = [
    (2, 300, 517, 4, 2, 128, 0.5, False, 0.0),
    (1, 257, 300, 3, 3, 128, 0.17, True, 0.0),
    (2, 97, 33, 2, 1, 64, 0.3, False, 0.0),
    (1, 200, 410, 4, 2, 256, 0.5, True, 0.0),
    (1, 1, 130, 2, 2, 80, 0.25, False, 0.0),
    (2, 300, 517, 4, 2, 128, 0.5, False, 5.0),
    (1, 400, 300, 3, 3, 64, 0.17, True, 5.0),
    (1, 400, 300, 2, 2, 64, 0.3, False, 0.0),  # d = 64 DROP: 3 consumer warpgroups, 3 query blocks of 192
    # Bc = 80 (3 keep words a tile, the last half used): DROP with a threshold >= 128 (p 0.85), ANY
    (1, 130, 333, 2, 1, 256, 0.85, False, 0.0),
    (1, 150, 260, 2, 2, 256, 0.3, True, 5.0),
]


@pytest.mark.parametrize("device,dtype,b,sq,sk,h,hk,d,p,causal,softcap", dev_cases([], MASK_CASES))
def test_sm90_dropout_mask_is_dropout_mask(device, dtype, b, sq, sk, h, hk, d, p, causal, softcap, monkeypatch):
    """The implied mask (O != 0 under q = 0, one-hot V) equals dropout_mask bit for bit, on the
    visible keys, for the sm90 kernel (DROP or ANY instance) and for the sm80 kernel (same seed)."""
    seed, offset = (1 << 40) + 3 * sq, (5 << 32) + sk
    q = torch.zeros(b, sq, h, d, device=device, dtype=dtype)
    k = torch.randn(b, sk, hk, d, device=device, dtype=dtype)
    mask = flash_attn_c.dropout_mask(b, h, sq, sk, p, seed, offset, device=device)  # (b, h, sq, sk)
    vis = torch.ones(sq, sk, dtype=torch.bool, device=device)
    if causal:  # bottom-right: key j visible from row i iff j <= i + sk - sq
        vis = torch.arange(sk, device=device)[None, :] <= torch.arange(sq, device=device)[:, None] + sk - sq
    for j0 in range(0, sk, d):  # keys j0 .. j0 + d - 1 on the output columns
        n = min(d, sk - j0)
        v = torch.zeros(b, sk, hk, d, device=device, dtype=dtype)
        v[:, j0:j0 + n, :, :n] = torch.eye(n, device=device, dtype=dtype)[None, :, None, :]
        implied = {}
        for env in ("1", "0"):  # sm90 kDrop, then the sm80 kernel
            monkeypatch.setenv("FLASH_ATTN_C_SM90_FWD_DROPOUT", env)
            with flash_attn_c.fixed_dropout_seed(seed, offset):
                out = flash_attn_c.flash_attn_func(q, k, v, dropout_p=p, causal=causal, softcap=softcap)
            implied[env] = out.permute(0, 2, 1, 3)[..., :n] != 0  # (b, h, sq, n)
        want = mask[..., j0:j0 + n] & vis[None, None, :, j0:j0 + n]
        assert torch.equal(implied["1"], want), f"sm90 mask differs from dropout_mask (keys {j0}..)"
        assert torch.equal(implied["0"], want), f"sm80 mask differs from dropout_mask (keys {j0}..)"


# (b, sq, sk, h, hk, d, p, causal, window, softcap)
PARITY_CASES = [
    (2, 257, 257, 4, 4, 64, 0.17, False, (-1, -1), 0.0),
    (1, 200, 1100, 8, 2, 128, 0.5, True, (-1, -1), 0.0),
    (2, 500, 500, 4, 4, 256, 0.1, False, (33, 70), 0.0),
    (1, 400, 600, 4, 2, 80, 0.25, True, (-1, -1), 5.0),
    (1, 2048, 2048, 2, 2, 128, 0.1, True, (-1, -1), 0.0),
    (2, 1000, 1000, 4, 4, 64, 0.9, False, (-1, -1), 0.0),
]


@pytest.mark.parametrize("device,dtype,b,sq,sk,h,hk,d,p,causal,window,softcap",
                         dev_cases([], PARITY_CASES, marks=[pytest.mark.parity_fwd, pytest.mark.parity_grad]))
def test_sm90_dropout_matches_oracle_and_sm80(device, dtype, b, sq, sk, h, hk, d, p, causal, window, softcap,
                                              monkeypatch):
    seed, offset = 987654321 + sq, 17 + sk
    q = torch.randn(b, sq, h, d, device=device, dtype=dtype, requires_grad=True)
    k = torch.randn(b, sk, hk, d, device=device, dtype=dtype, requires_grad=True)
    v = torch.randn(b, sk, hk, d, device=device, dtype=dtype, requires_grad=True)
    kw = dict(causal=causal, softcap=softcap, dropout_p=p)
    call = lambda: flash_attn_c.flash_attn_func(q, k, v, window_size=window, **kw)  # noqa: E731
    with flash_attn_c.fixed_dropout_seed(seed, offset):
        assert _drop_kernel_ran(call)
        out = call()
    dout = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), dout)  # the sm90 forward's LSE and saved seed
    mask = flash_attn_c.dropout_mask(b, h, sq, sk, p, seed, offset, device=device)
    ref = ref_forward_backward((q, k, v), dout, upcast=True, window=window, dropout_mask=mask, **kw)
    base = ref_forward_backward((q, k, v), dout, upcast=False, window=window, dropout_mask=mask, **kw)
    assert_ratio("out", out, ref.out, base.out, dtype, FWD_FACTOR)
    assert_grads(grads, ref.grads, base.grads, dtype)
    monkeypatch.setenv("FLASH_ATTN_C_SM90_FWD_DROPOUT", "0")
    with flash_attn_c.fixed_dropout_seed(seed, offset), torch.no_grad():
        out80 = call()
    # kept P is scaled by 1 / (1 - p): so is the low-precision rounding the two kernels differ by
    torch.testing.assert_close(out.detach().float(), out80.float(), atol=2e-2 / (1 - p), rtol=0)
