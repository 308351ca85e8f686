"""The pipelined Hopper backward (fa_bwd_sm90_pipe_kernel, a TMA producer warpgroup feeding an
mbarrier ring), both dQ paths: FLASH_ATTN_C_SM90_BWD_PIPE=1 (dQ by red.add from the consumers) and
=2 (dQ staged in shared memory, added by TMA tensor reduces from a dQ-writer warp), at d = 128
(Br = 64) and d <= 64 (Br = 64, dQ split by dims), d in (128, 256] (the dim-split instance,
Bc = Br = 64, red.add dQ under both =1 and =2; =0 leaves it to the sm80 backward), and the
default with the variable unset (=2 for atomic dQ at every d; =0, the cp.async kernel, turns the
pipelined kernel off). Gradient parity
against the float64 oracle (error-ratio rule, 3x for gradients) on dense shapes, causal / window /
GQA, both dtypes, atomic and deterministic dQ; and a profiler check that the expected instance
(template argument kDq: 0 no dQ, 1 red.add, 2 TMA reduce, 3 ordered) is what ran. With
FLASH_ATTN_C_SM90_BWD_DET=ordered, deterministic calls at d <= 128 run kDq = 3 (dQ added in a
fixed key-block order inside the pipelined kernel): parity, 20 bitwise-identical repeats, scope.
Every test here pins FLASH_ATTN_C_SM90_BWD_VARIANT=br64 (the Br = 64 tile these instances are) and
FLASH_ATTN_C_SM90_BWD_DET=pass (the dK/dV-only instance for deterministic calls, unless a test asks
for ordered, the Br = 64 ORDERED instance): the package defaults, the FA3-sized tiles and their
ORDERED instances for deterministic calls, are tested in test_sm90_bwd_tiles.py and
test_sm90_bwd_det_br.py.
Runs on compute capability 9.0 only (elsewhere there is no sm90 kernel to select)."""
from __future__ import annotations

import re
from typing import Callable, List

import pytest
import torch

from conftest import cuda_kernel_names, sm90_switches
from oracle import check_dense

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True, params=["1", "2", "unset"], ids=["pipe_red", "pipe_tma", "pipe_default"])
def pipe(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """FLASH_ATTN_C_SM90_BWD_PIPE for the test: every test runs with both dQ paths and with the
    variable unset (the default: TMA dQ for atomic dQ at every d, the cp.async kernel for
    deterministic calls under DET=pass); the Br = 64 tile (VARIANT=br64) throughout."""
    sm90_switches(monkeypatch, "the pipelined backward", {
        "FLASH_ATTN_C_SM90_BWD": "1",
        "FLASH_ATTN_C_SM90_BWD_VARIANT": "br64",
        "FLASH_ATTN_C_SM90_BWD_DET": "pass",
    })
    if request.param == "unset":
        monkeypatch.delenv("FLASH_ATTN_C_SM90_BWD_PIPE", raising=False)
    else:
        monkeypatch.setenv("FLASH_ATTN_C_SM90_BWD_PIPE", request.param)
    return request.param


_PIPE_NAME = re.compile(r"fa_bwd_sm90_pipe_kernel<\s*(?:true|false|1|0)\s*,\s*\d+\s*,\s*(\d)\s*>")


def _pipe_instances(fn: Callable[[], object]) -> List[int]:
    """The kDq template arguments of the fa_bwd_sm90_pipe_kernel instances fn() launched (CUDA
    kernels seen by the profiler, demangled as fa_bwd_sm90_pipe_kernel<kBf16, D, kDq>)."""
    names = cuda_kernel_names(fn, "fa_bwd_sm90_pipe_kernel")
    modes = [int(m.group(1)) for m in (_PIPE_NAME.search(n) for n in names) if m]
    assert len(modes) == len(names), f"unexpected pipe kernel names: {sorted(set(names))}"
    return modes


def _expected(pipe: str, deterministic: bool, d: int) -> List[int]:
    """kDq of the pipelined instance one backward (head dim d) must launch: with the variable set,
    0 (dK/dV only) when deterministic, else its value (1 red.add, 2 TMA reduce), at every d, except
    that d > 128 has no TMA-dQ instance (=2 runs red.add there); unset: =2 with atomic dQ at every
    d (so red.add at d > 128), none when deterministic (the cp.async kernel at d <= 128, the sm80
    backward above: the dK/dV-only instance is not timed against them)."""
    if pipe == "unset":
        if deterministic:
            return []
        return [1] if d > 128 else [2]
    if deterministic:
        return [0]
    return [1] if d > 128 else [int(pipe)]


# (b, sq, sk, h, hk, d, causal, window): sizes off the tiles (Br 64, Bc 128), sq != sk both
# ways, a multi-stage ring (many query blocks per key block), GQA (the ring crosses heads); d = 128
# and d <= 64 (dQ tiles of 32 dims per consumer warpgroup: d 48 leaves the second one half past d,
# d 32 wholly).
CASES = [
    (2, 97, 97, 4, 4, 128, False, (-1, -1)),
    (2, 200, 200, 2, 2, 80, False, (-1, -1)),
    (1, 1025, 1025, 2, 2, 128, True, (-1, -1)),
    (2, 17, 1025, 2, 2, 128, False, (-1, -1)),
    (1, 1025, 17, 2, 1, 128, False, (-1, -1)),
    (2, 97, 130, 4, 2, 112, True, (-1, -1)),
    (1, 255, 255, 2, 2, 128, False, (32, 8)),
    (1, 1, 1, 2, 2, 128, False, (-1, -1)),
    (1, 2048, 2048, 8, 2, 128, True, (-1, -1)),
    (2, 97, 97, 4, 4, 64, False, (-1, -1)),
    (1, 1025, 1025, 4, 2, 64, True, (-1, -1)),
    (2, 17, 1025, 2, 2, 64, False, (-1, -1)),
    (1, 1025, 17, 4, 2, 48, False, (-1, -1)),
    (2, 130, 200, 4, 2, 32, True, (-1, -1)),
    (1, 255, 255, 2, 2, 64, False, (32, 8)),
    # d in (128, 256]: the dim-split instance (Bc = Br = 64; d 160 / 192: K, Q column block 3
    # wholly or half past d, zero-filled by TMA)
    (2, 97, 97, 2, 2, 256, False, (-1, -1)),
    (1, 1025, 17, 4, 2, 256, False, (-1, -1)),
    (2, 17, 1025, 2, 2, 256, True, (-1, -1)),
    (1, 300, 300, 4, 1, 256, True, (-1, -1)),
    (1, 255, 130, 2, 2, 256, False, (20, 20)),
    (2, 97, 130, 4, 2, 192, True, (-1, -1)),
    (1, 130, 97, 2, 2, 160, False, (-1, -1)),
]


@pytest.mark.parity_grad
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("b,sq,sk,h,hk,d,causal,window", CASES)
def test_pipe_backward_atomic_dq(pipe, dtype, b, sq, sk, h, hk, d, causal, window):
    # the parity would hold on the fallback kernel too: the profiler says which one ran
    ran = _pipe_instances(lambda: check_dense("cuda", dtype, b, sq, sk, h, hk, d, causal=causal, window=window,
                                              grad=True, check_lse=False))
    assert sorted(set(ran)) == _expected(pipe, False, d)


# The dK/dV-only instance (the ordered dQ pass follows), d <= 64, d = 128 and d in (128, 256].
@pytest.mark.parity_grad
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("b,sq,sk,h,hk,d,causal,window", [
    (2, 97, 97, 4, 4, 64, False, (-1, -1)),
    (1, 1025, 1025, 4, 2, 64, True, (-1, -1)),
    (2, 97, 255, 2, 2, 40, False, (20, 20)),
    (1, 1025, 1025, 2, 2, 128, True, (-1, -1)),
    (1, 1025, 1025, 2, 2, 256, True, (-1, -1)),
    (2, 97, 130, 4, 2, 192, False, (-1, -1)),
])
def test_pipe_backward_deterministic(pipe, dtype, b, sq, sk, h, hk, d, causal, window):
    ran = _pipe_instances(lambda: check_dense("cuda", dtype, b, sq, sk, h, hk, d, causal=causal, window=window,
                                              grad=True, check_lse=False, deterministic=True))
    assert sorted(set(ran)) == _expected(pipe, True, d)


@pytest.mark.parametrize("d,deterministic", [(128, False), (128, True), (64, False), (64, True), (256, False),
                                             (256, True)])
def test_pipe_kernel_is_selected(pipe: str, d: int, deterministic: bool):
    import flash_attn_c
    q, k, v = (torch.randn(2, 300, 4, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
               for _ in range(3))
    out = flash_attn_c.flash_attn_func(q, k, v, causal=True, deterministic=deterministic)
    dout = torch.randn_like(out)
    assert _pipe_instances(lambda: torch.autograd.grad(out, (q, k, v), dout)) == _expected(pipe, deterministic, d)


def test_pipe_d64_atomic_runs_pipelined(pipe: str):
    """d = 64 with atomic dQ: FLASH_ATTN_C_SM90_BWD_PIPE=1 / =2 run the pipelined kernel's red.add /
    TMA-dQ instance (Br = 64), and so does unset (the default since H100 run 51). Exact either way."""
    want = {"1": [1], "2": [2], "unset": [2]}[pipe]
    assert _expected(pipe, False, 64) == want
    assert _pipe_instances(lambda: check_dense("cuda", torch.bfloat16, 2, 97, 97, 4, 2, 64, causal=True,
                                               grad=True, check_lse=False)) == want


@pytest.mark.parametrize("deterministic", [False, True])
def test_pipe_off_runs_cp_async_kernel(pipe: str, monkeypatch: pytest.MonkeyPatch, deterministic: bool):
    """FLASH_ATTN_C_SM90_BWD_PIPE=0 keeps every call on fa_bwd_sm90_kernel, still exact."""
    monkeypatch.setenv("FLASH_ATTN_C_SM90_BWD_PIPE", "0")
    assert _pipe_instances(lambda: check_dense("cuda", torch.bfloat16, 2, 97, 130, 4, 2, 128, causal=True,
                                               grad=True, check_lse=False, deterministic=deterministic)) == []


@pytest.mark.parametrize("deterministic", [False, True])
def test_pipe_off_d256_runs_sm80(pipe: str, monkeypatch: pytest.MonkeyPatch, deterministic: bool):
    """FLASH_ATTN_C_SM90_BWD_PIPE=0 at d = 256: no sm90 kernel covers it (no cp.async instance), so
    the sm80 backward runs it, exact."""
    monkeypatch.setenv("FLASH_ATTN_C_SM90_BWD_PIPE", "0")
    assert _pipe_instances(lambda: check_dense("cuda", torch.bfloat16, 2, 97, 130, 4, 2, 256, causal=True,
                                               grad=True, check_lse=False, deterministic=deterministic)) == []


# ---- deterministic dQ inside the pipelined kernel (FLASH_ATTN_C_SM90_BWD_DET=ordered, kDq = 3):
# each query tile's dQ added in decreasing key-block order behind turn counters; d <= 128 dense,
# whatever FLASH_ATTN_C_SM90_BWD_PIPE says. Shapes: sq != sk both ways, causal / window bands (tiles
# skipped by some key blocks: their turns must not count them), GQA / MQA (one counter per query
# head), more key blocks than a causal chain needs, d 32 / 48 (dims past d).
ORDERED_CASES = [
    (2, 97, 97, 4, 4, 128, False, (-1, -1)),
    (1, 1025, 1025, 2, 2, 128, True, (-1, -1)),
    (2, 17, 1025, 2, 2, 128, True, (-1, -1)),
    (1, 1025, 17, 4, 2, 128, False, (-1, -1)),
    (2, 97, 130, 4, 2, 112, True, (-1, -1)),
    (1, 255, 255, 2, 2, 128, False, (32, 8)),
    (1, 200, 255, 2, 2, 128, False, (0, 0)),
    (1, 255, 130, 2, 2, 64, False, (-1, 5)),
    (1, 1025, 1025, 2, 2, 64, False, (100, 0)),
    (1, 2048, 2048, 8, 2, 128, True, (-1, -1)),
    (1, 300, 300, 4, 1, 64, True, (-1, -1)),
    (2, 130, 200, 4, 2, 32, True, (-1, -1)),
    (1, 255, 130, 2, 2, 48, False, (20, 20)),
    (1, 1, 1, 2, 2, 128, False, (-1, -1)),
]


@pytest.mark.parity_grad
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("b,sq,sk,h,hk,d,causal,window", ORDERED_CASES)
def test_pipe_backward_det_ordered(pipe, monkeypatch, dtype, b, sq, sk, h, hk, d, causal, window):
    monkeypatch.setenv("FLASH_ATTN_C_SM90_BWD_DET", "ordered")
    ran = _pipe_instances(lambda: check_dense("cuda", dtype, b, sq, sk, h, hk, d, causal=causal, window=window,
                                              grad=True, check_lse=False, deterministic=True))
    assert ran == [3]


@pytest.mark.parametrize("d,causal,h,hk", [(128, True, 8, 2), (128, False, 4, 4), (64, True, 4, 1)])
def test_pipe_det_ordered_bitwise_repeats(pipe, monkeypatch, d, causal, h, hk):
    """20 backwards of one call: dq, dk, dv identical bit for bit (atomic dQ would differ)."""
    import flash_attn_c
    monkeypatch.setenv("FLASH_ATTN_C_SM90_BWD_DET", "ordered")
    q = torch.randn(2, 1500, h, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k, v = (torch.randn(2, 1700, hk, d, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(2))
    out = flash_attn_c.flash_attn_func(q, k, v, causal=causal, deterministic=True)
    dout = torch.randn_like(out)
    ref = None
    for r in range(20):
        g = torch.autograd.grad(out, (q, k, v), dout, retain_graph=True)
        if ref is None:
            ref = g
            assert _pipe_instances(lambda: torch.autograd.grad(out, (q, k, v), dout, retain_graph=True)) == [3]
        for name, a, b in zip(("dq", "dk", "dv"), g, ref):
            assert torch.equal(a, b), f"{name} differs at repeat {r}"


def test_pipe_det_ordered_scope(pipe, monkeypatch):
    """FLASH_ATTN_C_SM90_BWD_DET=ordered leaves calls outside its scope as they were: atomic dQ
    (the variable is for deterministic calls), d > 128 (the dim-split kernel's own ORDERED instance,
    kDq 3, in every pipe mode; under FLASH_ATTN_C_SM90_BWD_DET256=0 no staged-dQ instance) and varlen."""
    monkeypatch.setenv("FLASH_ATTN_C_SM90_BWD_DET", "ordered")
    assert _pipe_instances(lambda: check_dense("cuda", torch.bfloat16, 2, 97, 130, 4, 2, 128, causal=True,
                                               grad=True, check_lse=False)) == _expected(pipe, False, 128)

    def det256():
        return _pipe_instances(lambda: check_dense("cuda", torch.bfloat16, 2, 97, 130, 4, 2, 256, causal=True,
                                                   grad=True, check_lse=False, deterministic=True))

    assert det256() == [3]
    monkeypatch.setenv("FLASH_ATTN_C_SM90_BWD_DET256", "0")
    assert det256() == _expected(pipe, True, 256)
    monkeypatch.delenv("FLASH_ATTN_C_SM90_BWD_DET256")
    from oracle import check_varlen
    assert _pipe_instances(lambda: check_varlen("cuda", torch.bfloat16, [300, 0, 70], [200, 9, 70], 4, 2, 128,
                                                causal=True, grad=True, deterministic=True)) == []
