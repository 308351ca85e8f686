"""The native harnesses of dev/ (self-checking nvcc programs that link the shipped csrc sources, no
torch) are part of the test suite: on a GPU machine each is built with the package's own flags
(csrc/build_flags.py, through dev/common/csrc_objects.mk) and run; every case must pass. On any
machine the build plans are checked to use exactly the flags setup.py uses."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "csrc"))
import build_flags  # noqa: E402

HARNESSES = ["fwd", "fwd_sm90", "bwd", "bwd_sm90"]
RESULT = re.compile(r"^(?:\w+: )?(\d+) passed, (\d+) failed", re.M)


@pytest.mark.parametrize("name", HARNESSES)
def test_harness_build_uses_the_package_flags(name: str) -> None:
    """`make -n` (no compiler needed): every nvcc compile of a csrc source carries setup.py's
    nvcc flags and targets, every C compile the package's C flags; no variable named OUT."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    makefile = (ROOT / "dev" / name / "Makefile").read_text()
    assert not re.search(r"^\s*OUT\s*[:?]?=", makefile, re.M), "Makefiles must not use OUT"
    plan = subprocess.run(["make", "-n", "-B", "-C", str(ROOT / "dev" / name)], capture_output=True,
                          text=True, env=dict(os.environ, NVCC="nvcc"), timeout=60)
    assert plan.returncode == 0, plan.stderr
    nvcc = " ".join(build_flags.NVCC_FLAGS + build_flags.gencode(build_flags.cuda_archs()))
    cflags = " ".join(build_flags.c_flags())
    compiles = [line for line in plan.stdout.splitlines() if " -c " in line and "/csrc/" in line]
    assert compiles, plan.stdout[-2000:]
    for line in compiles:
        if line.startswith("nvcc"):
            assert nvcc in line, f"nvcc without the package flags:\n{line}"
        elif "/csrc/cpu/" in line:
            assert cflags in line, f"C compile without the package flags:\n{line}"


@pytest.mark.gpu
@pytest.mark.timeout(900)  # a build of all kernels of one harness, then every case
@pytest.mark.parametrize("name", HARNESSES)
def test_native_harness_passes(name: str) -> None:
    if shutil.which("nvcc") is None or shutil.which("make") is None:
        pytest.fail("nvcc and make are needed to build the native harnesses on a GPU machine")
    where = str(ROOT / "dev" / name)
    jobs = str(max(1, (os.cpu_count() or 2) // 2))
    build = subprocess.run(["make", "-C", where, "-j", jobs], capture_output=True, text=True,
                           timeout=900)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    run = subprocess.run(["make", "-C", where, "run"], capture_output=True, text=True, timeout=900)
    out = run.stdout + run.stderr
    results = [(int(p), int(f)) for p, f in RESULT.findall(out)]
    assert run.returncode == 0, out[-4000:]
    assert results, f"no 'N passed, N failed' line:\n{out[-3000:]}"
    assert all(f == 0 and p > 0 for p, f in results), out[-4000:]
    print(f"{name}: " + "; ".join(f"{p} passed, {f} failed" for p, f in results))


@pytest.mark.timeout(900)
def test_bwd_simulator_passes() -> None:
    """The sm80 backward kernels (dK/dV and the ordered dQ kernel, fa_bwd_dkdv.cuh / fa_bwd_dq.cuh)
    compiled as plain C++ against dev/bwd/sim (a warp-level simulator of mma.sync, ldmatrix and
    cp.async) and run on every case of the backward harness, for both the sm_80 and the sm_90 tile
    rows: the one check of the CUDA backward's tile logic that needs no GPU, so CI keeps it
    building (it broke once, unnoticed, when fa_mma.cuh gained helpers the simulator lacked)."""
    if shutil.which("make") is None or shutil.which("g++") is None:
        pytest.skip("make and g++ are needed to build the backward simulator")
    where = str(ROOT / "dev" / "bwd")
    run = subprocess.run(["make", "-C", where, "-j", "2", "simrun"], capture_output=True, text=True, timeout=900)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    results = [(int(p), int(f)) for p, f in RESULT.findall(out)]
    assert len(results) == 2 and all(p > 0 and f == 0 for p, f in results), out[-4000:]
