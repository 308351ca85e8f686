"""Builds the C harness of the CPU backend (tests/c, no torch, no Python) into a temporary build
directory with its own Makefile and runs it: the C API alone must pass its own oracle checks."""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

C_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "c")
CC = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


@pytest.mark.skipif(CC is None, reason="no C compiler (cc/gcc/clang) found")
@pytest.mark.skipif(shutil.which("make") is None, reason="no make found")
@pytest.mark.skipif(not os.path.exists(os.path.join(C_DIR, "Makefile")), reason="tests/c/Makefile missing")
def test_c_harness_builds_and_passes(tmp_path):
    build = str(tmp_path / "build")
    binary = os.path.join(build, "test_fa_native")
    # build only (the Makefile's default target also runs ./$(BUILD)/..., which assumes a
    # relative BUILD); the target path is $(BUILD)/test_fa_native
    mk = subprocess.run(["make", "-C", C_DIR, f"BUILD={build}", f"CC={CC}", binary],
                        capture_output=True, text=True, timeout=600)
    assert mk.returncode == 0, f"make failed:\n{mk.stdout[-3000:]}\n{mk.stderr[-3000:]}"
    assert os.path.exists(binary)
    run = subprocess.run([binary], capture_output=True, text=True, timeout=600)
    lines = [ln for ln in run.stdout.strip().splitlines() if ln.strip()]
    assert lines, f"the harness printed nothing (rc {run.returncode}): {run.stderr[-2000:]}"
    m = re.search(r"(\d+) passed, (\d+) failed", lines[-1])
    assert m, f"unexpected last line: {lines[-1]!r}"
    passed, failed = int(m.group(1)), int(m.group(2))
    fails = [ln for ln in lines if "FAIL" in ln][:20]
    assert failed == 0, f"{failed} C harness checks failed:\n" + "\n".join(fails)
    assert passed > 0
    assert run.returncode == 0, f"harness exit code {run.returncode}"
