"""The ORDERED (deterministic) dQ on the FA3-sized pipelined Hopper backward tiles, the default since
H200 run 62 (FLASH_ATTN_C_SM90_BWD_DET unset, or =ordered_br; csrc/cuda/sm90/fa_bwd_sm90_ordered.h):
deterministic dense calls run fa_bwd_sm90_pipe80_ordered_kernel (Br = 80, d in (64, 128]) or
fa_bwd_sm90_pipe128_kernel<kBf16, 3> (Br = 128, d <= 64) where the atomic-dQ call would run the
Br = 80 kernel / the Br = 128 instances (softmax_scale > 0, TMA-fit, FLASH_ATTN_C_SM90_BWD_VARIANT's
list), with turn counters per Br query rows of the tile that runs.

CPU part (no GPU): the turn / schedule model of dev/bwd_sm90/det_order_sim at BR = 80 and 128 (the
deadlock argument of fa_bwd_sm90_pipe_dq_order.cuh for the new tiles: the writer's turn equals the
number of later touching key blocks, counted by brute force over the mask; the reversed grid never
deadlocks under 1, 2, 5, 132 resident CTAs; each tile is added in decreasing key-block order).
GPU part (marked gpu, compute capability 9.0 only), at the default: gradient parity against the
float64 oracle with a profiler check of the instance that ran, 20 bitwise-identical repeats, and the
scope (atomic dQ, varlen, d > 128, scale <= 0 and FLASH_ATTN_C_SM90_BWD_VARIANT=br64 keep their
kernels; DET=ordered_br names the default, DET=ordered opts out to the Br = 64 ORDERED kernel)."""
from __future__ import annotations

import importlib.util
import os
import random
import re
from typing import Callable, List

import pytest
import torch

from conftest import sm90_switches

from test_sm90_bwd_pipe import ORDERED_CASES

_SIM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "dev", "bwd_sm90", "det_order_sim", "sim.py")
_spec = importlib.util.spec_from_file_location("bwd_sm90_det_order_sim_br", _SIM)
sim = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sim)

TILE_BR = [80, 128]  # fa_bwd_sm90_pipe80_cfg::Br, fa_bwd_sm90_pipe_cfg<64, FA_KERNEL_BWD_SM90_PIPE128>::Br


# ---- CPU: the protocol model at the new tiles' Br ------------------------------------------------

@pytest.fixture(params=TILE_BR, ids=[f"br{b}" for b in TILE_BR])
def br(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """The simulator's query-tile rows (its module global BR, read at call time)."""
    monkeypatch.setattr(sim, "BR", request.param)
    return request.param


def test_turns_match_brute_force_br(br):
    for sq, sk, _, _, left, right in sim.FIXED:
        assert sim.check_turns(sq, sk, left, right) > 0 or sq == 0
    rng = random.Random(br)
    for _ in range(40):
        sq, sk, _, _, left, right = sim.random_case(rng)
        sim.check_turns(sq, sk, left, right)


@pytest.mark.parametrize("resident", [1, 2, 5, 132])
def test_schedule_no_deadlock_and_order_br(br, resident):
    rng = random.Random(1000 * br + resident)
    for sq, sk, h, hk, left, right in sim.FIXED[:16]:
        sim.simulate(sq, sk, h, hk, left, right, batch=2, resident=resident, rng=rng,
                     speed=lambda r: r.choice([0.1, 1.0, 10.0]))


def test_forward_mapping_deadlocks_br(br):
    assert sim.mutation_deadlocks()


def test_decreasing_order_is_faster_under_causal_br(br):
    (dec_t, dec_busy), (inc_t, inc_busy) = sim.critical_path(sq=2048, h=16, hk=16, right=0, resident=132)
    assert dec_t < inc_t and dec_busy < inc_busy


# ---- GPU: the kernels ---------------------------------------------------------------------------

@pytest.fixture
def sm90(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sm90 backward on, every backward switch at its default (DET unset = the FA3 tiles' ORDERED
    instances, PIPE unset, VARIANT unset = "br80,br128")."""
    sm90_switches(monkeypatch, "the pipelined backward", {
        "FLASH_ATTN_C_SM90_BWD": "1",
        "FLASH_ATTN_C_SM90_BWD_PIPE": None,
        "FLASH_ATTN_C_SM90_BWD_VARIANT": None,
        "FLASH_ATTN_C_SM90_BWD_DET": None,
    })


def _sm90_kernels(fn: Callable[[], object]) -> List[str]:
    """Tags of the sm90 backward kernels fn() launched, one per launch (conftest.sm90_bwd_kernels)."""
    from conftest import sm90_bwd_kernels
    return sm90_bwd_kernels(fn)


def _want(d: int) -> List[str]:
    """The ORDERED instance a deterministic dense call at head dim d runs by default (scale > 0)."""
    return ["br80_ordered"] if d > 64 else ["br128_3"]


# (b, sq, sk, h, hk, d, causal, window): the Br = 64 ORDERED shapes plus: off-tile sizes (Br 80 / 128, Bc 128), causal /
# window bands (tiles some key blocks skip: their turns must not count them), GQA / MQA (one counter
# per query head), long causal chains, d 96 / 112 (Br = 80, dims past d in the last dQ^T box) and
# d 32 / 48 (Br = 128, dims past d), single rows.
CASES = ORDERED_CASES + [
    (2, 161, 161, 2, 2, 96, False, (-1, -1)),
    (1, 2048, 2048, 8, 2, 64, True, (-1, -1)),
    (1, 1, 1, 2, 2, 64, False, (-1, -1)),
]


@pytest.mark.gpu
@pytest.mark.parity_grad
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("b,sq,sk,h,hk,d,causal,window", CASES)
def test_det_ordered_br_parity(sm90, dtype, b, sq, sk, h, hk, d, causal, window):
    from oracle import check_dense
    ran = _sm90_kernels(lambda: check_dense("cuda", dtype, b, sq, sk, h, hk, d, causal=causal, window=window,
                                            grad=True, check_lse=False, deterministic=True))
    assert ran == _want(d)


@pytest.mark.gpu
@pytest.mark.parametrize("d,causal,h,hk", [(128, True, 8, 2), (128, False, 4, 4), (96, True, 4, 1),
                                           (64, True, 4, 1), (64, False, 8, 2), (40, True, 4, 4)])
def test_det_ordered_br_bitwise_repeats(sm90, d, causal, h, hk):
    """20 backwards of one call: dq, dk, dv identical bit for bit (atomic dQ would differ)."""
    import flash_attn_c
    q = torch.randn(2, 1500, h, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k, v = (torch.randn(2, 1700, hk, d, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(2))
    out = flash_attn_c.flash_attn_func(q, k, v, causal=causal, deterministic=True)
    dout = torch.randn_like(out)
    assert _sm90_kernels(lambda: torch.autograd.grad(out, (q, k, v), dout, retain_graph=True)) == _want(d)
    ref = torch.autograd.grad(out, (q, k, v), dout, retain_graph=True)
    for r in range(20):
        g = torch.autograd.grad(out, (q, k, v), dout, retain_graph=True)
        for name, x, y in zip(("dq", "dk", "dv"), g, ref):
            assert torch.equal(x, y), f"{name} differs at repeat {r}"


@pytest.mark.gpu
def test_det_ordered_br_scope(sm90, monkeypatch):
    """The default leaves calls outside its scope as they were: atomic dQ (the FA3 tiles' atomic
    instances), d > 128 (the dim-split kernel's own ORDERED instance: test_sm90_bwd_det256.py's scope),
    varlen (no pipelined kernel: dK/dV + the dQ pass), softmax_scale <= 0 (the Br = 64 ORDERED
    instance), VARIANT=br64 (the Br = 64 ORDERED instance at both d). DET=ordered_br is the default
    by name; DET=ordered (the opt-out) runs the Br = 64 ORDERED instance at both d."""
    from oracle import check_dense, check_varlen

    def dense(d, **kw):
        return _sm90_kernels(lambda: check_dense("cuda", torch.bfloat16, 2, 97, 130, 4, 2, d, causal=True, grad=True,
                                                 check_lse=False, **kw))

    assert dense(128) == ["br80"]
    assert dense(64) == ["br128_2"]
    assert dense(128, deterministic=True, softmax_scale=-0.05) == ["br64_3"]
    assert not [t for t in _sm90_kernels(lambda: check_varlen("cuda", torch.bfloat16, [300, 0, 70], [200, 9, 70], 4,
                                                              2, 128, causal=True, grad=True, deterministic=True))
                if t != "cp_async"]
    monkeypatch.setenv("FLASH_ATTN_C_SM90_BWD_DET", "ordered_br")
    assert dense(128, deterministic=True) == ["br80_ordered"]
    assert dense(64, deterministic=True) == ["br128_3"]
    monkeypatch.setenv("FLASH_ATTN_C_SM90_BWD_DET", "ordered")
    assert dense(128, deterministic=True) == ["br64_3"]
    assert dense(64, deterministic=True) == ["br64_3"]
    monkeypatch.delenv("FLASH_ATTN_C_SM90_BWD_DET")
    monkeypatch.setenv("FLASH_ATTN_C_SM90_BWD_VARIANT", "br64")
    assert dense(128, deterministic=True) == ["br64_3"]
    assert dense(64, deterministic=True) == ["br64_3"]
    monkeypatch.setenv("FLASH_ATTN_C_SM90_BWD_VARIANT", "br80")
    assert dense(96, deterministic=True) == ["br80_ordered"]
    assert dense(64, deterministic=True) == ["br64_3"]
