"""Softcap, ALiBi or dropout alone on the persistent-grid Hopper forward (fa_fwd_sm90_persist.cuh with
kFeat: the CAP, CAP_SLIM, ALIBI and DROP feature sets, which keep the plain tile), opt-in with
FLASH_ATTN_C_SM90_FWD_PERSIST_FEAT=1 (read on every call; fa_fwd_sm90_route.cuh). A profiler check
that the variable selects the persistent instance of the right feature set, and only for one
feature alone (two features, varlen and the variable unset keep the one-block grid);
then forward parity against the float64 oracle (error-ratio rule) at the persistent tests' item
counts (1, 131, 133, 265, 1000+), causal with sq != sk both ways (items without key tiles), a window,
GQA / MQA, softcap 5 / 30 (CAP and, bf16 with FLASH_ATTN_C_SM90_FWD_CAP_SLIM=1, CAP_SLIM), ALiBi
slopes (h,) and (b, h) (per item: each item reads its own (batch, head) slope); dropout against the
oracle fed with dropout_mask's bits under the same seed (each item draws its own (batch, head)
counters). Runs on compute capability 9.0 only."""
from __future__ import annotations

import pytest
import torch

from conftest import sm90_persist_feats_ran, sm90_switches
from oracle import FWD_FACTOR, assert_ratio, check_dense, ref_forward_backward

import flash_attn_c

pytestmark = pytest.mark.gpu

CAP, ALIBI, DROP, CAP_SLIM = 1, 2, 3, 5  # FA_SM90_FEAT_* (fa_fwd_sm90_args.cuh)


@pytest.fixture(autouse=True)
def persist_feat_on(monkeypatch: pytest.MonkeyPatch) -> None:
    sm90_switches(monkeypatch, "the persistent forward with one feature", {
        "FLASH_ATTN_C_SM90_FEAT": None,
        "FLASH_ATTN_C_SM90_FWD_PERSIST": "1",       # every length and mask, not only the row's rule
        "FLASH_ATTN_C_SM90_FWD_PERSIST_FEAT": "1",
        "FLASH_ATTN_C_SM90_FWD_CAP_SLIM": None,
    })


def _feats(dtype, d, *, softcap=0.0, alibi=False, dropout=0.0, causal=True):
    q, k, v = (torch.randn(2, 300, 4, d, device="cuda", dtype=dtype) for _ in range(3))
    slopes = torch.rand(4, device="cuda") * 0.5 if alibi else None
    return sm90_persist_feats_ran(lambda: flash_attn_c.flash_attn_func(
        q, k, v, causal=causal, softcap=softcap, alibi_slopes=slopes, dropout_p=dropout))


@pytest.mark.parametrize("d", [64, 128])
def test_variable_selects_the_persistent_feature_instance(d, monkeypatch):
    assert _feats(torch.float16, d, softcap=30.0) == {(True, CAP)}
    assert _feats(torch.bfloat16, d, softcap=30.0) == {(True, CAP)}
    assert _feats(torch.bfloat16, d, alibi=True) == {(True, ALIBI)}
    assert _feats(torch.bfloat16, d, alibi=True, causal=False) == {(True, ALIBI)}
    assert _feats(torch.bfloat16, d) == {(False, 0)}                         # plain: as before
    assert _feats(torch.bfloat16, d, softcap=30.0, alibi=True) == set()      # both: the ANY tile
    assert _feats(torch.bfloat16, d, dropout=0.1) == {(True, DROP)}
    assert _feats(torch.bfloat16, d, softcap=30.0, dropout=0.1) == set()     # two features: never
    monkeypatch.setenv("FLASH_ATTN_C_SM90_FWD_CAP_SLIM", "1")
    assert _feats(torch.bfloat16, d, softcap=30.0) == {(True, CAP_SLIM)}
    monkeypatch.delenv("FLASH_ATTN_C_SM90_FWD_PERSIST_FEAT")
    assert _feats(torch.bfloat16, d, softcap=30.0) == set()
    assert _feats(torch.bfloat16, d, alibi=True) == set()
    monkeypatch.setenv("FLASH_ATTN_C_SM90_FWD_PERSIST_FEAT", "1")
    monkeypatch.setenv("FLASH_ATTN_C_SM90_FWD_PERSIST", "0")             # the grid switch still rules
    assert _feats(torch.bfloat16, d, alibi=True) == set()


def test_variable_leaves_varlen_on_the_one_block_grid():
    q = torch.randn(300, 4, 64, device="cuda", dtype=torch.bfloat16)
    cu = torch.tensor([0, 100, 300], device="cuda", dtype=torch.int32)
    call = lambda: flash_attn_c.flash_attn_varlen_func(q, q, q, cu, cu, 200, 200, softcap=30.0)  # noqa: E731
    assert sm90_persist_feats_ran(call) == set()


# (b, sq, sk, h, hk, d, causal, window): work items b h ceil(sq / Br), Br 192 (d 64) / 128 (d 128)
CASES = [
    (1, 100, 300, 1, 1, 64, False, (-1, -1)),    # 1 item
    (1, 128, 200, 131, 1, 128, True, (-1, -1)),  # 131 items, MQA
    (7, 150, 150, 19, 19, 64, True, (-1, -1)),   # 133 items
    (5, 17, 17, 53, 53, 128, False, (-1, -1)),   # 265 items of 17 rows
    (60, 200, 200, 9, 3, 64, True, (-1, -1)),    # 1080 items, GQA
    (30, 300, 37, 5, 5, 128, True, (-1, -1)),    # sq > sk: items without key tiles
    (6, 300, 1000, 8, 4, 128, True, (-1, -1)),   # sq < sk
    (2, 700, 900, 40, 40, 64, False, (130, 20)),  # window
]
FEATURES = [("cap5", 5.0, None, False), ("cap30", 30.0, None, False), ("slim30", 30.0, None, True),
            ("alibi_h", 0.0, "h", False), ("alibi_bh", 0.0, "bh", False)]
# CAP_SLIM is bf16 only (fp16 softcap runs CAP: cap5 / cap30)
VARIANTS = [(dt, f) for dt in (torch.bfloat16, torch.float16) for f in FEATURES
            if not (f[3] and dt != torch.bfloat16)]


@pytest.mark.parametrize("dtype,feature", VARIANTS,
                         ids=[f"{'bf16' if dt == torch.bfloat16 else 'fp16'}-{f[0]}" for dt, f in VARIANTS])
@pytest.mark.parametrize("case", CASES, ids=[f"b{c[0]}-sq{c[1]}-sk{c[2]}-h{c[3]}/{c[4]}-d{c[5]}" for c in CASES])
def test_persist_feature_forward(case, dtype, feature, monkeypatch):
    _, softcap, alibi, slim = feature
    if slim:
        monkeypatch.setenv("FLASH_ATTN_C_SM90_FWD_CAP_SLIM", "1")
    b, sq, sk, h, hk, d, causal, window = case
    check_dense("cuda", dtype, b, sq, sk, h, hk, d, causal=causal, window=window, softcap=softcap, alibi=alibi)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("case", CASES[:6], ids=[f"b{c[0]}-sq{c[1]}-sk{c[2]}-h{c[3]}/{c[4]}-d{c[5]}" for c in CASES[:6]])
def test_persist_dropout_forward(case, dtype):
    b, sq, sk, h, hk, d, causal, window = case
    p, seed, offset = 0.17, 4242 + sq, 7 + sk
    q = torch.randn(b, sq, h, d, device="cuda", dtype=dtype)
    k, v = (torch.randn(b, sk, hk, d, device="cuda", dtype=dtype) for _ in range(2))
    kw = dict(causal=causal, softcap=0.0, dropout_p=p)
    call = lambda: flash_attn_c.flash_attn_func(q, k, v, window_size=window, **kw)  # noqa: E731
    with flash_attn_c.fixed_dropout_seed(seed, offset):
        assert sm90_persist_feats_ran(call) == {(True, DROP)}
        out = call()
    mask = flash_attn_c.dropout_mask(b, h, sq, sk, p, seed, offset, device="cuda")
    ref = ref_forward_backward((q, k, v), None, upcast=True, window=window, dropout_mask=mask, **kw)
    base = ref_forward_backward((q, k, v), None, upcast=False, window=window, dropout_mask=mask, **kw)
    assert_ratio("out", out, ref.out, base.out, dtype, FWD_FACTOR)
