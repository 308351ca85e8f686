"""benchmarks/ring_scaling.py end to end on the CPU: the driver launches torchrun (gloo) for world
sizes 1 and 2 at tiny sizes with the correctness check, then merges; the JSON must hold real,
positive timings for every configuration of both worlds, a passing check whose errors are measured
numbers (not placeholders), overlap values in [0, 1], and results.md the tables."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "ring_scaling.py"


def test_driver_cpu_worlds_1_2(tmp_path: Path) -> None:
    out = tmp_path / "res"
    cmd = [sys.executable, str(SCRIPT), "--driver", "--device", "cpu", "--worlds", "1,2",
           "--out", str(out), "--seqlens", "128,256", "--heads", "2", "--headdim", "16",
           "--reps", "2", "--check", "--check-seqlen", "32", "--budget-s", "120",
           "--startup-s", "5", "--pg-timeout-s", "60"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=170, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    worlds = res["worlds"]
    assert sorted(worlds) == ["1", "2"]
    for w, n_series in (("1", 4), ("2", 8)):  # world 1: one layout (the ring is flash_attn_func)
        rows = worlds[w]["rows"]
        assert len(rows) == 2 * n_series, rows  # every series at both lengths
        for r in rows:
            assert r["status"] == "ok", r
            assert r["ms"] > 0 and math.isfinite(r["tflops_per_gpu"]) and r["tflops_per_gpu"] > 0
            if w == "2":
                assert r["ms_compute"] > 0 and r["ms_comm"] > 0 and 0.0 <= r["overlap"] <= 1.0
    # the convention: TFLOP/s per GPU = FLOPs / world / time
    r = next(r for r in worlds["2"]["rows"] if not r["causal"] and r["direction"] == "fwd"
             and r["seqlen"] == 256)
    flops = 4 * 1 * 2 * 256 * 256 * 16
    assert math.isclose(r["tflops_per_gpu"], flops / 2 / (r["ms"] * 1e-3) / 1e12, rel_tol=1e-9)
    check = worlds["2"]["check"]
    assert check["ok"] is True
    assert len(check["attention"]) == 4
    for a in check["attention"]:
        for n in ("out", "dq", "dk", "dv"):
            assert a[n]["ok"] and 0 < a[n]["err"] <= a[n]["bound"], a
            assert a[n]["vs_1gpu"] < 1e-4  # fp32: the ring equals the single-process call
    tr = check["training"]
    assert len(tr["single"]) == 5 and tr["single"][-1] < tr["single"][0]
    for lay in ("ring", "zigzag"):
        assert tr[lay]["max_rel_diff"] <= 1e-4 and len(tr[lay]["losses"]) == 5
    assert worlds["1"]["check"] is None  # no check at world 1
    summ = res["summary"]
    assert summ["longest"] == {"1": 256, "2": 256}
    effs = {(e["layout"], e["causal"], e["direction"]): e for e in summ["efficiency"]}
    assert len(effs) == 8
    for e in effs.values():
        assert e["strong_seqlen"] == 256 and e["strong"] > 0 and e["weak"] > 0
    md = (out / "results.md").read_text()
    for needle in ("check PASS", "## TFLOP/s per GPU", "## Communication hidden", "## Scaling",
                   "Longest sequence run per world size: 1: 256, 2: 256", "NCCL n.a. (gloo)"):
        assert needle in md, needle
