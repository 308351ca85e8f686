"""The README's code runs as written: every ```python block executes in a fresh interpreter (CPU
is enough: the examples pick CUDA when there is one), and the shell commands it tells users to
run are the ones CI runs (.ci/run)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README, flags=re.S)
PYTHON = [code for lang, code in BLOCKS if lang == "python"]


def test_readme_has_examples() -> None:
    assert len(PYTHON) >= 3, "the README lost its python examples"


@pytest.mark.parametrize("index", range(len(PYTHON)))
def test_readme_python_block_runs(index: int, tmp_path: Path) -> None:
    code = PYTHON[index]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, f"README python block {index} failed:\n{code}\n{proc.stderr[-3000:]}"


def test_readme_shell_commands_are_what_ci_runs() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    shell = "\n".join(code for lang, code in BLOCKS if lang == "bash")
    for command in ("pip install -r requirements.txt", "pip install --no-build-isolation -e .",
                    "python -m pytest tests -q"):
        assert command in shell, f"the README no longer says `{command}`"
        assert command in ci, f".ci/run does not run the README's `{command}`"
