"""The ORDERED (deterministic) dQ of the d in (128, 256] pipelined Hopper backward, the default since H100
run 76 (FLASH_ATTN_C_SM90_BWD_DET256=0 opts out; csrc/cuda/sm90/fa_bwd_sm90_dsplit_order.cuh, fa_bwd_sm90_ordered.h):
deterministic dense calls run fa_bwd_sm90_pipe_kernel<kBf16, 256, 3> (the dim-split tile, Br = Bc = 64),
whose consumers red.add dQ into the tiled dq_accum in decreasing key-block order per 64-row query tile,
behind per-tile turn counters that a turn warp acquires and passes on.

CPU part (no GPU): the turn / schedule model of dev/bwd_sm90/det_order_sim at BR = BC = 64 (the
deadlock argument: turns equal the number of later touching key blocks, counted by brute force over
the mask; the reversed grid never deadlocks under 1, 2, 5, 132 resident CTAs; each tile is added in
decreasing key-block order).
GPU part (marked gpu, compute capability 9.0 only), with the variable at "1": gradient parity against the
float64 oracle (d 160 / 256, causal or not, windows, GQA / MQA) with a profiler check of the instance
that ran, 20 bitwise-identical repeats, and the scope (unset: the same instance; "0": the sm80 backward
as before run 76; atomic dQ, varlen, DET=pass keep their paths)."""
from __future__ import annotations

import importlib.util
import os
import random
import re
from typing import Callable, List

import pytest
import torch

from conftest import sm90_switches

_SIM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "dev", "bwd_sm90", "det_order_sim", "sim.py")
_spec = importlib.util.spec_from_file_location("bwd_sm90_det_order_sim_d256", _SIM)
sim = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sim)


# ---- CPU: the protocol model at the dim-split tile (Br = Bc = 64) --------------------------------

@pytest.fixture
def tile64(monkeypatch: pytest.MonkeyPatch) -> None:
    """The simulator's query-tile rows and key-block columns (module globals BR, BC, read at call time)."""
    monkeypatch.setattr(sim, "BR", 64)
    monkeypatch.setattr(sim, "BC", 64)


def test_turns_match_brute_force_d256(tile64):
    for sq, sk, _, _, left, right in sim.FIXED:
        assert sim.check_turns(sq, sk, left, right) > 0 or sq == 0
    rng = random.Random(256)
    for _ in range(40):
        sq, sk, _, _, left, right = sim.random_case(rng)
        sim.check_turns(sq, sk, left, right)


@pytest.mark.parametrize("resident", [1, 2, 5, 132])
def test_schedule_no_deadlock_and_order_d256(tile64, resident):
    rng = random.Random(256000 + resident)
    for sq, sk, h, hk, left, right in sim.FIXED[:16]:
        sim.simulate(sq, sk, h, hk, left, right, batch=2, resident=resident, rng=rng,
                     speed=lambda r: r.choice([0.1, 1.0, 10.0]))


def test_forward_mapping_deadlocks_d256(tile64):
    assert sim.mutation_deadlocks()


# ---- GPU: the kernel ----------------------------------------------------------------------------

@pytest.fixture
def det256(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sm90 backward on, FLASH_ATTN_C_SM90_BWD_DET256=1, every other backward switch at its default."""
    sm90_switches(monkeypatch, "the pipelined backward", {
        "FLASH_ATTN_C_SM90_BWD": "1",
        "FLASH_ATTN_C_SM90_BWD_DET256": "1",
        "FLASH_ATTN_C_SM90_BWD_PIPE": None,
        "FLASH_ATTN_C_SM90_BWD_VARIANT": None,
        "FLASH_ATTN_C_SM90_BWD_DET": None,
    })


# demangled fa_bwd_sm90_pipe_kernel<kBf16, D, kDq> -> (D, kDq); other sm90 backward kernels -> their name
_PIPE = re.compile(r"fa_bwd_sm90_pipe_kernel<\s*\w+\s*,\s*(\d+)\s*,\s*(\d)\s*>")


def _sm90_kernels(fn: Callable[[], object]) -> List[object]:
    """The sm90 backward kernels fn() launched, one per launch: (D, kDq) for the pipelined kernel's
    Br = 64 / dim-split instances, else the profiler's name (conftest.cuda_kernel_names)."""
    from conftest import cuda_kernel_names
    out = []
    for name in cuda_kernel_names(fn, "fa_bwd_sm90"):
        m = _PIPE.search(name)
        out.append((int(m.group(1)), int(m.group(2))) if m else name)
    return out


ORDERED = [(256, 3)]  # fa_bwd_sm90_pipe_kernel<kBf16, 256, FA_BWD_SM90_DQ_ORDERED>

# (b, sq, sk, h, hk, d, causal, window): d 160 / 192 (dims past d: the last K/V/Q/dO column block and
# warpgroup 1's upper dQ half zero), off-tile lengths (tiles of 64 rows, key blocks of 64), sq < sk and
# sq > sk under causal masks (rows that see no key: tiles no key block touches, dq = 0 from the cleared
# buffer), windows (bands some key blocks skip: their turns must not count them), GQA / MQA (one
# counter per query head), long causal chains, a single row.
CASES = [
    (2, 97, 97, 2, 2, 256, False, (-1, -1)),
    (2, 130, 130, 2, 2, 160, True, (-1, -1)),
    (2, 200, 130, 4, 2, 256, True, (-1, -1)),
    (2, 17, 1025, 2, 2, 256, True, (-1, -1)),
    (1, 1025, 17, 4, 2, 160, False, (-1, -1)),
    (1, 1025, 1025, 2, 2, 256, True, (-1, -1)),
    (1, 130, 255, 2, 2, 256, False, (20, 20)),
    (1, 255, 130, 2, 2, 192, False, (-1, 5)),
    (1, 300, 300, 4, 1, 256, True, (-1, -1)),
    (1, 1, 1, 2, 2, 256, False, (-1, -1)),
]


@pytest.mark.gpu
@pytest.mark.parity_grad
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("b,sq,sk,h,hk,d,causal,window", CASES)
def test_det256_parity(det256, dtype, b, sq, sk, h, hk, d, causal, window):
    from oracle import check_dense
    ran = _sm90_kernels(lambda: check_dense("cuda", dtype, b, sq, sk, h, hk, d, causal=causal, window=window,
                                            grad=True, check_lse=False, deterministic=True))
    assert ran == ORDERED


@pytest.mark.gpu
@pytest.mark.parametrize("d,causal,h,hk", [(256, True, 4, 2), (256, False, 2, 2), (160, True, 4, 1),
                                           (160, False, 4, 2)])
def test_det256_bitwise_repeats(det256, d, causal, h, hk):
    """20 backwards of one call: dq, dk, dv identical bit for bit (atomic dQ would differ)."""
    import flash_attn_c
    q = torch.randn(2, 1500, h, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k, v = (torch.randn(2, 1700, hk, d, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(2))
    out = flash_attn_c.flash_attn_func(q, k, v, causal=causal, deterministic=True)
    dout = torch.randn_like(out)
    assert _sm90_kernels(lambda: torch.autograd.grad(out, (q, k, v), dout, retain_graph=True)) == ORDERED
    ref = torch.autograd.grad(out, (q, k, v), dout, retain_graph=True)
    for r in range(20):
        g = torch.autograd.grad(out, (q, k, v), dout, retain_graph=True)
        for name, x, y in zip(("dq", "dk", "dv"), g, ref):
            assert torch.equal(x, y), f"{name} differs at repeat {r}"


@pytest.mark.gpu
def test_det256_scope(det256, monkeypatch):
    """Only deterministic dense d in (128, 256] calls move: atomic dQ keeps the red.add instance,
    varlen and DET=pass keep their paths (no ORDERED instance); unset the variable means the ORDERED
    instance too (the default), "0" no pipelined instance (the sm80 backward, as before run 76)."""
    from oracle import check_dense, check_varlen

    def dense(**kw):
        return _sm90_kernels(lambda: check_dense("cuda", torch.bfloat16, 2, 97, 130, 4, 2, 256, causal=True, grad=True,
                                                 check_lse=False, **kw))

    assert dense(deterministic=True) == ORDERED
    assert dense() == [(256, 1)]
    assert ORDERED[0] not in _sm90_kernels(lambda: check_varlen("cuda", torch.bfloat16, [300, 0, 70], [200, 9, 70], 4,
                                                                2, 256, causal=True, grad=True, deterministic=True))
    monkeypatch.setenv("FLASH_ATTN_C_SM90_BWD_DET", "pass")
    assert ORDERED[0] not in dense(deterministic=True)
    monkeypatch.delenv("FLASH_ATTN_C_SM90_BWD_DET")
    monkeypatch.delenv("FLASH_ATTN_C_SM90_BWD_DET256")
    assert dense(deterministic=True) == ORDERED
    monkeypatch.setenv("FLASH_ATTN_C_SM90_BWD_DET256", "0")
    assert dense(deterministic=True) == []
