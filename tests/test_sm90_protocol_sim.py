"""The CPU model of the Hopper forward's barrier protocol (dev/fwd_sm90/protocol_sim/sim.py):
random-timing replays of the one-block kernel (fa_fwd_sm90_kernel.cuh) and of the persistent grid
(fa_fwd_sm90_persist.cuh: one CTA walking work items, the K/V ring and the ping-pong rounds carried
over the items, two Q slots with a Q-full / Q-empty phase per item of the slot, O written by a TMA store
that reads the slot asynchronously, the slot released in the next item) must finish with every check passing
(deadlock, named-barrier UB, mbarrier parity ABA, TMA into a buffer in use, wrong tile read,
ping-pong order, O store reading a slot that is reloaded or at exit), and deliberate breaks of the persistent
protocol must be flagged. CPU only; the
longer campaigns are `python3 sim.py 30` and `python3 sim.py persist 300`."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "dev" / "fwd_sm90" / "protocol_sim"))
import sim  # noqa: E402


@pytest.fixture(autouse=True)
def _no_mutation():
    sim.MUT.clear()
    yield
    sim.MUT.clear()


def test_one_block_protocol():
    tot, fails, worst = sim.campaign(2, [0, 1, 2, 3, 7])
    assert fails == 0, worst


def test_persistent_protocol():
    tot, fails, worst = sim.campaign_persist(25)
    assert tot == 100 and fails == 0, worst


@pytest.mark.parametrize("mutation", sim.PERSIST_MUTATIONS)
def test_persistent_breaks_are_caught(mutation):
    sim.MUT.add(mutation)
    tot, fails, _ = sim.campaign_persist(10)
    assert fails > 0, f"{mutation}: no run flagged"
