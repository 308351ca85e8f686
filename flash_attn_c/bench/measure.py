"""Timing, peak memory and failure classification for ``python -m flash_attn_c.bench``.

Timing: warm-up first, then a median. CUDA: ``triton.testing.do_bench(return_mode="median")`` when
triton imports, else CUDA events. CPU: ``time.perf_counter`` medians.

Peak memory: CUDA ``torch.cuda.max_memory_allocated`` growth over the allocation before the call.
CPU: growth of the process's peak RSS (Linux VmHWM, reset through /proc/self/clear_refs before each
measurement); "n.a." where that reset is not possible (a never-reset high-water mark would hide
every allocation smaller than an earlier one).
"""
from __future__ import annotations

import dataclasses
import gc
import statistics
import time
from typing import Any, Callable, Optional

import torch

from .backends import Prepared


@dataclasses.dataclass
class TimingSettings:
    """warmup/reps: CPU warm-up runs and maximum timed runs (CUDA events fallback too).
    cpu_budget_s: CPU timed runs stop once they used this long (but never fewer than min_reps).
    cuda_warmup_ms/cuda_rep_ms: do_bench's warm-up and measurement budgets."""

    warmup: int = 1
    reps: int = 10
    min_reps: int = 3
    cpu_budget_s: float = 1.0
    cuda_warmup_ms: float = 25.0
    cuda_rep_ms: float = 100.0

    @staticmethod
    def from_args(args: Any, dev: str) -> "TimingSettings":
        """The CLI's timing flags (None = the device's default: CPU 1 warm-up / 10 reps, CUDA
        5 / 20)."""
        return TimingSettings(warmup=args.warmup or (1 if dev == "cpu" else 5),
                              reps=args.reps or (10 if dev == "cpu" else 20),
                              cpu_budget_s=args.cpu_budget, cuda_rep_ms=args.cuda_rep_ms)


def timing_method(device: torch.device) -> str:
    """Human readable name of the timer used on ``device``."""
    if device.type == "cuda":
        return ("triton.testing.do_bench(return_mode='median')" if _do_bench() is not None
                else "CUDA events, median")
    return "time.perf_counter, median"


def _do_bench() -> Optional[Callable[..., float]]:
    try:
        from triton.testing import do_bench
    except Exception:  # triton missing or broken: fall back to CUDA events
        return None
    return do_bench


def time_ms(fn: Callable[[], Any], device: torch.device, settings: TimingSettings) -> float:
    """Median wall time of ``fn()`` in milliseconds, after warm-up."""
    if device.type == "cuda":
        do_bench = _do_bench()
        if do_bench is not None:
            return float(do_bench(fn, warmup=settings.cuda_warmup_ms, rep=settings.cuda_rep_ms,
                                  return_mode="median"))
        return _time_cuda_events(fn, settings)
    return _time_cpu(fn, settings)


def _time_cuda_events(fn: Callable[[], Any], settings: TimingSettings) -> float:
    for _ in range(max(1, settings.warmup)):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(max(settings.min_reps, settings.reps)):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def _time_cpu(fn: Callable[[], Any], settings: TimingSettings) -> float:
    for _ in range(max(1, settings.warmup)):
        fn()
    times: list[float] = []
    spent = 0.0
    while len(times) < settings.reps:
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        times.append(dt)
        spent += dt
        if len(times) >= settings.min_reps and spent >= settings.cpu_budget_s:
            break
    return statistics.median(times) * 1e3


# ----------------------------------------------------------------------------------- memory
def _proc_status_kib(field: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) of this process; False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _libc() -> Any:
    import ctypes
    import ctypes.util

    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def pin_malloc_for_rss() -> bool:
    """Make glibc serve every allocation >= 64 KiB with its own mmap and unmap it on free.

    By default glibc raises its mmap threshold after big frees, so later big buffers reuse
    already-resident heap pages and never show up in RSS (measured here: an 8 MiB temporary read
    as 8 MiB of a 16 MiB peak on its 4th run). Pinning the thresholds makes RSS track live
    memory. Called once, after all timing runs, so timings keep the default allocator behaviour.
    Returns False where mallopt is not available (non-glibc).
    """
    try:
        libc = _libc()
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 64 * 1024)) and bool(
            libc.mallopt(m_trim_threshold, 64 * 1024))
    except Exception:
        return False


def _release_free_heap_pages() -> None:
    """malloc_trim(0): give the free pages inside glibc's heaps back to the kernel, so a reused
    free chunk faults its pages in again and counts in the RSS peak."""
    try:
        _libc().malloc_trim(0)
    except Exception:
        pass


def memory_method(device: torch.device) -> str:
    """Human readable name of the peak-memory method on ``device``."""
    if device.type == "cuda":
        return "torch.cuda.max_memory_allocated delta"
    if _proc_status_kib("VmHWM") is not None and _reset_peak_rss():
        return ("peak RSS delta (VmHWM reset via /proc/self/clear_refs; glibc mmap threshold "
                "pinned to 64 KiB for the memory runs)")
    return "n.a. (peak RSS cannot be reset on this OS)"


def peak_memory_bytes(fn: Callable[[], Any], device: torch.device) -> Optional[int]:
    """Extra memory at the peak of one ``fn()`` call over what was allocated before it."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        result = fn()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
        del result
        return max(0, peak)
    _release_free_heap_pages()
    if not _reset_peak_rss():
        return None
    base = _proc_status_kib("VmRSS")
    result = fn()
    peak = _proc_status_kib("VmHWM")
    del result
    if base is None or peak is None:
        return None
    return max(0, peak - base) * 1024


# ------------------------------------------------------------------------------- directions
def direction_fn(prepared: Prepared, direction: str) -> tuple[Callable[[], Any], list[Any]]:
    """The callable to time for ``direction``, plus objects to keep alive while it is used.

    fwd: forward only, grad mode off. bwd: the forward runs once here, outside the timed region,
    and the callable computes only the gradients (retain_graph so it can repeat). fwdbwd: both.
    torch.autograd.grad returns gradients instead of accumulating into .grad, so repeated calls
    do the same work.
    """
    p = prepared
    if direction == "fwd":
        def fwd() -> Any:
            with torch.no_grad():
                return p.forward()
        return fwd, []
    if direction == "bwd":
        out = p.forward()

        def bwd() -> Any:
            return torch.autograd.grad(out, p.leaves, p.dout, retain_graph=True)
        return bwd, [out]
    if direction == "fwdbwd":
        def fwdbwd() -> Any:
            return torch.autograd.grad(p.forward(), p.leaves, p.dout)
        return fwdbwd, []
    raise ValueError(f"unknown direction {direction!r}")


# ---------------------------------------------------------------------------------- failures
def is_oom(exc: BaseException) -> bool:
    """True for out-of-memory failures (CUDA allocator, host allocator, kernels' own checks)."""
    if isinstance(exc, MemoryError):
        return True
    oom_type = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return "out of memory" in str(exc).lower()


def short_reason(exc: BaseException, limit: int = 160) -> str:
    """One line ``Type: message`` (first line, truncated) for tables and JSON."""
    lines = str(exc).strip().splitlines()
    first = lines[0] if lines else ""
    text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def release_memory(device: torch.device, collect: bool = False) -> None:
    """Drop cached blocks after a backend finished so the next starts clean. ``collect`` also
    runs the cyclic garbage collector (after a failure, whose traceback frames may hold tensors;
    not every time: with torch imported one collection costs ~0.1-0.3 s)."""
    if collect:
        gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
