"""Issue-2 check: CPU forward speed vs torch SDPA, and peak extra memory of our forward.

    python benchmarks/bench_cpu_forward.py [--runs 10] [--threads N]

1. Speed: b=1, h=8, s=2048, d=64, fp32, causal and not; ours (flash_attn_func, q/k/v (b, s, h, d))
   vs torch SDPA on CPU (contiguous (b, h, s, d) copies of the same values) in the same process.
   Runs alternate ours/SDPA so load drifts on a shared machine hit both alike; medians. With
   sq == sk, SDPA's top-left is_causal equals our bottom-right causal; the outputs are compared
   before timing so we never time a wrong kernel.
2. Memory: peak RSS growth of one forward at s=8192 in a fresh subprocess (inputs allocated and
   the kernels warmed up at a small size first), against 1/8 of one s*s fp32 matrix
   (8192^2 * 4 B / 8 = 32 MiB). Reported with and without the output + LSE the call must return.

Prints a short markdown table. Exit code 0 when both parts ran (the verdicts are printed, not
enforced), 1 if a part failed to run.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

try:
    import flash_attn_c
except ImportError:  # running from a checkout without an installed package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import flash_attn_c

MIB = 2 ** 20


def time_pair(b: int, h: int, s: int, d: int, causal: bool, runs: int,
              warmup: int) -> dict[str, Any]:
    """Median ms of ours and of SDPA on the same random fp32 inputs; alternating runs."""
    gen = torch.Generator().manual_seed(1234 + int(causal))
    q, k, v = (torch.randn(b, s, h, d, generator=gen) for _ in range(3))   # (b, s, h, d)
    qt, kt, vt = (x.transpose(1, 2).contiguous() for x in (q, k, v))      # (b, h, s, d)

    def ours() -> torch.Tensor:
        return flash_attn_c.flash_attn_func(q, k, v, causal=causal)

    def sdpa() -> torch.Tensor:
        return F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal)

    with torch.no_grad():
        max_diff = (ours() - sdpa().transpose(1, 2)).abs().max().item()
        if not max_diff < 1e-3:
            raise RuntimeError(f"ours and SDPA disagree (max |diff| {max_diff:.3g}); "
                               "refusing to time a wrong result")
        for _ in range(warmup):
            ours()
            sdpa()
        t_ours, t_sdpa = [], []
        for _ in range(runs):
            for fn, sink in ((ours, t_ours), (sdpa, t_sdpa)):
                t0 = time.perf_counter()
                fn()
                sink.append((time.perf_counter() - t0) * 1e3)
    ms_ours, ms_sdpa = statistics.median(t_ours), statistics.median(t_sdpa)
    flops = 4.0 * b * h * s * s * d / (2 if causal else 1)
    return {"causal": causal, "ours_ms": ms_ours, "sdpa_ms": ms_sdpa,
            "ours_gflops": flops / ms_ours / 1e6, "sdpa_gflops": flops / ms_sdpa / 1e6,
            "speedup": ms_sdpa / ms_ours, "max_abs_diff": max_diff}


# ------------------------------------------------------------------------- memory subprocess
def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} missing from /proc/self/status")


def memory_child(s: int, b: int, h: int, d: int, causal: bool) -> None:
    """Runs in a fresh process: prints JSON with the peak RSS growth of one forward at s."""
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    # Every allocation >= 64 KiB gets its own mmap (no reuse of resident heap pages, which
    # would hide buffers from RSS); see flash_attn_c/bench/measure.py.
    libc.mallopt(-3, 64 * 1024)   # M_MMAP_THRESHOLD
    libc.mallopt(-1, 64 * 1024)   # M_TRIM_THRESHOLD
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        small = [torch.randn(1, 64, h, d, generator=gen) for _ in range(3)]
        flash_attn_c.flash_attn_func(*small, causal=causal)  # load libraries, start threads
        q, k, v = (torch.randn(b, s, h, d, generator=gen) for _ in range(3))
        libc.malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")                                   # reset VmHWM to the current RSS
        base = _status_kib("VmRSS")
        out = flash_attn_c.flash_attn_func(q, k, v, causal=causal)
        peak = _status_kib("VmHWM")
    print(json.dumps({"peak_growth_bytes": (peak - base) * 1024,
                      "output_bytes": out.numel() * out.element_size(),
                      "lse_bytes": b * h * s * 4}))


def measure_memory(s: int, b: int, h: int, d: int, causal: bool) -> dict[str, Any]:
    env = dict(os.environ)
    pkg_parent = str(Path(flash_attn_c.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = pkg_parent + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, __file__, "--memory-child", str(s), "--b", str(b), "--h", str(h),
           "--d", str(d)] + (["--causal"] if causal else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"memory subprocess failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=10, help="timed runs per backend (median)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs per backend first")
    p.add_argument("--seqlen", type=int, default=2048, help="speed test sequence length")
    p.add_argument("--mem-seqlen", type=int, default=8192, help="memory test sequence length")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--skip-memory", action="store_true", help="only the speed test")
    p.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    p.add_argument("--b", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--h", type=int, default=8, help=argparse.SUPPRESS)
    p.add_argument("--d", type=int, default=64, help=argparse.SUPPRESS)
    p.add_argument("--causal", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args.memory_child, args.b, args.h, args.d, args.causal)
        return 0

    b, h, d = args.b, args.h, args.d
    print(f"flash_attn_c {getattr(flash_attn_c, '__version__', 'unknown')}, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads; b={b} h={h} d={d} fp32\n")
    status = 0
    print(f"| s={args.seqlen} | ours ms | SDPA ms | ours GFLOP/s | SDPA GFLOP/s | "
          "SDPA time / ours time |")
    print("|---|---|---|---|---|---|")
    for causal in (False, True):
        try:
            r = time_pair(b, h, args.seqlen, d, causal, args.runs, args.warmup)
        except Exception as exc:
            print(f"| {'causal' if causal else 'non-causal'} | failed: {exc} | | | | |")
            status = 1
            continue
        print(f"| {'causal' if causal else 'non-causal'} | {r['ours_ms']:.1f} | "
              f"{r['sdpa_ms']:.1f} | {r['ours_gflops']:.1f} | {r['sdpa_gflops']:.1f} | "
              f"{r['speedup']:.2f}x |")
    print(f"\n(medians of {args.runs} alternating runs; > 1x means ours is faster)\n")
    if args.skip_memory:
        return status

    s = args.mem_seqlen
    budget = s * s * 4 // 8
    try:
        m = measure_memory(s, b, h, d, causal=False)
    except Exception as exc:
        print(f"memory test failed: {exc}")
        return 1
    returned = m["output_bytes"] + m["lse_bytes"]
    workspace = m["peak_growth_bytes"] - returned
    print(f"| memory, forward s={s} (fresh process) | MiB |")
    print("|---|---|")
    print(f"| peak RSS growth of one forward | {m['peak_growth_bytes'] / MIB:.2f} |")
    print(f"| of which output + LSE (returned) | {returned / MIB:.2f} |")
    print(f"| growth minus output + LSE (workspace) | {workspace / MIB:.2f} |")
    print(f"| budget: 1/8 of one s*s fp32 matrix | {budget / MIB:.2f} |")
    verdict = ("within budget" if m["peak_growth_bytes"] <= budget else
               "workspace within budget, total with output over it" if workspace <= budget
               else "OVER budget")
    print(f"| verdict | {verdict} |")
    return status


if __name__ == "__main__":
    sys.exit(main())
