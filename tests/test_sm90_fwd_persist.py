"""The persistent-grid Hopper forward (fa_fwd_sm90_persist.cuh: min(#work items, #SMs) CTAs, each
walking (query block, head, batch) items, the query blocks of a group of (batch, head) pairs
together), forced with FLASH_ATTN_C_SM90_FWD_PERSIST=1 for dense calls without softcap / ALiBi at
d = 64 / 128 buckets: forward parity against the float64 oracle (error-ratio rule) at item counts
below, at and above the SM count (1, 131, 133, 265, 1000+), causal with sq != sk both ways (items
without key tiles), a window that skips key tiles, GQA / MQA, both dtypes; the pair groups by the
host's rule (sk = 8192: groups of 4 + 2) and forced with FLASH_ATTN_C_SM90_FWD_PERSIST_GROUP (a
smaller last group, groups across kv heads and batches, G = 1); a profiler check that the
persistent instance is what ran (and that =0 does not run it); with the variable unset, the tuning
rows' default rule (every plain dense call at d <= 64, causal ones at d in (64, 128]). Runs on
compute capability 9.0 only."""
from __future__ import annotations

import pytest
import torch

from conftest import sm90_switches
from oracle import check_dense

import flash_attn_c

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def persist_on(monkeypatch: pytest.MonkeyPatch) -> None:
    sm90_switches(monkeypatch, "the persistent forward", {"FLASH_ATTN_C_SM90_FWD_PERSIST": "1"})


def _persist_ran(fn) -> bool:
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return any("fa_fwd_sm90_persist_kernel" in e.name for e in prof.events())


DTYPES = [torch.bfloat16, torch.float16]


@pytest.mark.parametrize("dtype", DTYPES, ids=["bf16", "fp16"])
@pytest.mark.parametrize("d", [64, 128, 96])
def test_persist_kernel_runs(dtype, d, monkeypatch):
    q, k, v = (torch.randn(2, 700, 4, d, device="cuda", dtype=dtype) for _ in range(3))
    call = lambda: flash_attn_c.flash_attn_func(q, k, v, causal=True)  # noqa: E731
    assert _persist_ran(call)
    on = call()
    monkeypatch.setenv("FLASH_ATTN_C_SM90_FWD_PERSIST", "0")
    assert not _persist_ran(call)
    off = call()
    # the same per-item math as the one-block kernel: expected to match bitwise (not required)
    assert torch.allclose(on.float(), off.float(), atol=2e-2, rtol=2e-2)


# (b, sq, sk, h, hk, d, causal, window): work items b h ceil(sq / Br), Br 192 (d 64) / 128 (d 128)
CASES = [
    (1, 100, 300, 1, 1, 64, False, (-1, -1)),    # 1 item
    (1, 128, 200, 131, 1, 128, True, (-1, -1)),  # 131 items, MQA
    (7, 150, 150, 19, 19, 64, True, (-1, -1)),   # 133 items
    # 265 items of 17 rows: sq <= 16 would go to the split-KV kernel (fa_splitkv_takes), not sm90
    (5, 17, 17, 53, 53, 128, False, (-1, -1)),
    (64, 130, 64, 8, 2, 128, False, (-1, -1)),   # 1024 items, GQA
    (60, 200, 200, 9, 3, 64, True, (-1, -1)),    # 1080 items, GQA
    (6, 300, 1000, 8, 4, 128, True, (-1, -1)),   # sq < sk
    (30, 300, 37, 5, 5, 128, True, (-1, -1)),    # sq > sk: items without key tiles
    (2, 700, 900, 40, 40, 64, False, (130, 20)),  # window
    (2, 513, 513, 4, 4, 80, True, (-1, -1)),     # d 80 in the 128 bucket
    # kv head 8192 x 128 x 4 B = 4 MB, 16 MB per group: (batch, head) pairs in groups of 4 + 2
    (1, 300, 8192, 6, 6, 128, True, (-1, -1)),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=["bf16", "fp16"])
@pytest.mark.parametrize("case", CASES, ids=[f"b{c[0]}-sq{c[1]}-sk{c[2]}-h{c[3]}/{c[4]}-d{c[5]}" for c in CASES])
def test_persist_forward(dtype, case):
    b, sq, sk, h, hk, d, causal, window = case
    check_dense("cuda", dtype, b, sq, sk, h, hk, d, causal=causal, window=window)


# (G, b, sq, sk, h, hk, d, causal): the group size forced; b h not a multiple of G, G not a
# multiple of the GQA group, G = 1 (the one-block grid's K/V order), items without key tiles
GROUPS = [
    (4, 30, 300, 37, 5, 5, 128, True),     # 450 items, groups 37 x 4 + 2, empty items
    (7, 60, 200, 200, 9, 3, 64, True),     # 1080 items, groups 77 x 7 + 1, GQA
    (5, 7, 150, 150, 19, 19, 128, False),  # 266 items, groups 26 x 5 + 3
    (1, 6, 300, 1000, 8, 4, 128, True),    # 144 items
]


@pytest.mark.parametrize("dtype", DTYPES, ids=["bf16", "fp16"])
@pytest.mark.parametrize("case", GROUPS, ids=[f"G{c[0]}-b{c[1]}-sq{c[2]}-sk{c[3]}-h{c[4]}/{c[5]}-d{c[6]}"
                                              for c in GROUPS])
def test_persist_group(dtype, case, monkeypatch):
    g, b, sq, sk, h, hk, d, causal = case
    monkeypatch.setenv("FLASH_ATTN_C_SM90_FWD_PERSIST_GROUP", str(g))
    check_dense("cuda", dtype, b, sq, sk, h, hk, d, causal=causal, window=(-1, -1))


# The default with the variable unset (the tuning rows' persist rule, H100 run 54): every plain dense
# call at d <= 64, causal ones at d in (64, 128]; (d, causal, window, softcap, persistent)
DEFAULT_RULE = [
    (64, False, (-1, -1), 0.0, True),
    (64, True, (-1, -1), 0.0, True),
    (48, False, (30, 30), 0.0, True),
    (128, True, (-1, -1), 0.0, True),
    (96, True, (-1, -1), 0.0, True),
    (128, False, (-1, -1), 0.0, False),
    (128, False, (64, 0), 0.0, False),  # a sliding window is not "causal" in the measured rule
    (64, True, (-1, -1), 30.0, False),  # softcap: the kFeat kernel, no persistent instance
    (256, True, (-1, -1), 0.0, False),  # no persistent instance at d = 256
]


@pytest.mark.parametrize("dtype", DTYPES, ids=["bf16", "fp16"])
@pytest.mark.parametrize("d,causal,window,softcap,want", DEFAULT_RULE)
def test_persist_default_rule(dtype, d, causal, window, softcap, want, monkeypatch):
    monkeypatch.delenv("FLASH_ATTN_C_SM90_FWD_PERSIST")
    q, k, v = (torch.randn(2, 700, 4, d, device="cuda", dtype=dtype) for _ in range(3))
    call = lambda: flash_attn_c.flash_attn_func(q, k, v, causal=causal, window_size=window,  # noqa: E731
                                                softcap=softcap)
    assert _persist_ran(call) == want
    check_dense("cuda", dtype, 2, 700, 700, 4, 4, d, causal=causal, window=window, softcap=softcap)
