"""The CPU backend runs on torch's intra-op threads (issue 10, point 6).

The C backend's work items go through at::parallel_for; that is parallel only when the extension
is compiled with OpenMP (torch's CPU backend is OpenMP). We measure the process CPU time over
the wall time of a forward and of a backward: with torch.set_num_threads(2) on a machine with at
least two cores it must exceed 1.5 (two busy threads), and with torch.set_num_threads(1) it must
stay near 1 (the threads follow torch's setting, no pool of our own).

Shapes: b=1, h=2 (b*h = 2 < threads is not the point; the query / key blocks split the work),
s=1024, d=64 fp32 -- about 0.1-0.3 s per call on one core, so both measurements stay short.
"""
from __future__ import annotations

import os
import time
from typing import Callable, Iterator

import pytest
import torch

import flash_attn_c

B, S, H, D = 1, 1024, 2, 64


def cpu_over_wall(fn: Callable[[], object], min_wall_s: float = 0.4) -> float:
    """Process CPU time / wall time over repeated calls of fn (after one warm-up call)."""
    fn()
    c0, w0 = time.process_time(), time.perf_counter()
    n = 0
    while True:
        fn()
        n += 1
        wall = time.perf_counter() - w0
        if wall >= min_wall_s and n >= 2:
            break
    return (time.process_time() - c0) / wall


@pytest.fixture
def threads() -> Iterator[Callable[[int], None]]:
    """Sets torch's intra-op thread count; restores the original afterwards."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def _inputs(requires_grad: bool) -> tuple[torch.Tensor, ...]:
    """q, k, v (B, S, H, D) fp32 random; dout (B, S, H, D)."""
    q, k, v, do = (torch.randn(B, S, H, D) for _ in range(4))
    for t in (q, k, v):
        t.requires_grad_(requires_grad)
    return q, k, v, do


def _forward() -> Callable[[], object]:
    q, k, v, _ = _inputs(False)
    return lambda: flash_attn_c.flash_attn_func(q, k, v, causal=False)


def _backward() -> Callable[[], object]:
    """A backward only (the forward runs once, outside the timed calls)."""
    q, k, v, do = _inputs(True)
    out = flash_attn_c.flash_attn_func(q, k, v, causal=False)
    return lambda: torch.autograd.grad(out, (q, k, v), do, retain_graph=True)


@pytest.mark.skipif((os.cpu_count() or 1) < 2,
                    reason="needs >= 2 CPU cores to observe more than one busy thread")
@pytest.mark.parametrize("which", ["forward", "backward"])
def test_two_threads_keep_two_cores_busy(which: str, threads: Callable[[int], None]) -> None:
    threads(2)
    fn = _forward() if which == "forward" else _backward()
    ratio = cpu_over_wall(fn)
    assert ratio > 1.5, (f"{which}: CPU time / wall time {ratio:.2f} with torch.set_num_threads(2): "
                         "the CPU backend is not running on torch's intra-op threads")


@pytest.mark.parametrize("which", ["forward", "backward"])
def test_one_thread_follows_torch_setting(which: str, threads: Callable[[int], None]) -> None:
    threads(1)
    fn = _forward() if which == "forward" else _backward()
    ratio = cpu_over_wall(fn)
    assert ratio < 1.2, (f"{which}: CPU time / wall time {ratio:.2f} with torch.set_num_threads(1): "
                         "the CPU backend uses threads beyond torch's setting")


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs Linux /proc/self/maps")
def test_one_openmp_runtime_in_process() -> None:
    """Our extension links OpenMP; it must reuse the runtime torch loaded, not bring a second one
    (two runtimes = two thread pools fighting for the cores)."""
    _forward()()
    with open("/proc/self/maps") as f:
        paths = {line.split()[-1] for line in f if line.rstrip().endswith(".so") or ".so." in line}
    omp = sorted(p for p in paths
                 if any(n in os.path.basename(p) for n in ("libgomp", "libiomp", "libomp")))
    assert len(omp) <= 1, f"more than one OpenMP runtime mapped: {omp}"
