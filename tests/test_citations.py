"""Nothing in the repository cites a file that is not in it: every repository path named in the
docs, comments and scripts (csrc/..., docs/..., tests/..., dev/..., ...) exists. Recorded runs
under benchmarks/results/ are history and keep the paths of their day."""
from __future__ import annotations

import glob
import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PATH = re.compile(r"(?<![\w/.-])((?:csrc|dev|docs|tests|benchmarks|flash_attn_c|scripts|examples|\.ci)"
                  r"/[\w./*<>-]*[\w*>])")
SUFFIXES = (".md", ".py", ".c", ".h", ".cu", ".cuh", ".cpp", ".sh", ".mk", "Makefile", ".toml", ".txt")
# Not files of the repository by design: build outputs, an example folder in a how-to, modules
# named with dots.
ALLOWED = (re.compile(r"^dev/bin(/|$)"), re.compile(r"^csrc/cuda/sm100"), re.compile(r"^tests/oracle\.\w+$"),
           re.compile(r"^tests/test_modeling_common\.py$"))


def _tracked() -> list:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [f for f in out.stdout.split() if not f.startswith("benchmarks/results/")
            and f != "tests/test_citations.py"  # its own patterns are not citations
            and f.endswith(SUFFIXES) and (ROOT / f).is_file()]


def _exists(cited: str, citing: str) -> bool:
    if any(c in cited for c in "*<>"):
        pattern = re.sub(r"<[^>]*>", "*", cited)
        return bool(glob.glob(str(ROOT / pattern))) or bool(glob.glob(str(ROOT / Path(citing).parent / pattern)))
    return (ROOT / cited).exists() or (ROOT / Path(citing).parent / cited).exists()


def test_every_cited_path_exists() -> None:
    missing = []
    for f in _tracked():
        text = (ROOT / f).read_text(errors="replace")
        for m in PATH.finditer(text):
            cited = m.group(1).rstrip(".")
            if any(a.search(cited) for a in ALLOWED) or _exists(cited, f):
                continue
            missing.append(f"{f}: {cited}")
    assert not missing, "cited files that do not exist:\n" + "\n".join(sorted(set(missing)))
