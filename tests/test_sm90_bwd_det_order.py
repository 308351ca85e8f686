"""The ordered deterministic dQ of the pipelined Hopper backward (kDq = FA_BWD_SM90_DQ_ORDERED,
csrc/cuda/sm90/fa_bwd_sm90_pipe_dq_order.cuh), on the CPU model of dev/bwd_sm90/det_order_sim:
the writer's turn (fa_band_keys of the query tile) equals the number of later key blocks that
touch the tile, counted by brute force over the mask (causal / window / sq != sk / GQA / edge
lengths), the kernel's tile walk matches brute force, and the schedule neither deadlocks (under
1, 2, grid / 2 and 132 resident CTAs) nor adds a tile out of decreasing key-block order. The
mutations show the checks bite: the forward blockIdx mapping deadlocks, and increasing order is
slower under a causal mask (the reason for decreasing order). No GPU needed."""
from __future__ import annotations

import importlib.util
import os
import random

import pytest

_SIM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "dev", "bwd_sm90", "det_order_sim", "sim.py")
_spec = importlib.util.spec_from_file_location("bwd_sm90_det_order_sim", _SIM)
sim = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sim)


@pytest.mark.parametrize("case", sim.FIXED, ids=[",".join(map(str, c)) for c in sim.FIXED])
def test_turns_match_brute_force(case):
    sq, sk, _, _, left, right = case
    assert sim.check_turns(sq, sk, left, right) > 0 or sq == 0


def test_turns_random_shapes():
    rng = random.Random(7)
    for _ in range(40):
        sq, sk, _, _, left, right = sim.random_case(rng)
        sim.check_turns(sq, sk, left, right)


@pytest.mark.parametrize("resident", [1, 2, 5, 132])
def test_schedule_no_deadlock_and_order(resident):
    rng = random.Random(resident)
    for case in sim.FIXED[:16]:
        sq, sk, h, hk, left, right = case
        sim.simulate(sq, sk, h, hk, left, right, batch=2, resident=resident, rng=rng,
                     speed=lambda r: r.choice([0.1, 1.0, 10.0]))


def test_forward_mapping_deadlocks():
    assert sim.mutation_deadlocks()


def test_decreasing_order_is_faster_under_causal():
    (dec_t, dec_busy), (inc_t, inc_busy) = sim.critical_path(sq=2048, h=16, hk=16, right=0, resident=132)
    assert dec_t < inc_t and dec_busy < inc_busy
    (dec_t, _), (inc_t, _) = sim.critical_path(sq=2048, h=16, hk=16, right=-1, resident=132)
    assert dec_t == pytest.approx(inc_t)
