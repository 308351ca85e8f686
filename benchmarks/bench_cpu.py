"""CPU speed of flash_attn_c vs torch SDPA on CPU, forward and forward+backward, fp32 and bf16.

    python benchmarks/bench_cpu.py [--quick] [--repeats 5] [--threads N] [--out FILE.md]
                                   [--modes fwd,fwdbwd] [--dtypes fp32,bf16] [--only SHAPE,...]

In one process, for every shape of the grid (b 1..4, h 8..16, seqlen 512..4096 with b*h*s fixed
at 32768, d 64 / 128, causal and not): random inputs; ours takes q/k/v (b, s, h, d), SDPA
(F.scaled_dot_product_attention) contiguous (b, h, s, d) copies of the same values (causal via
is_causal: sq == sk, so top-left and bottom-right causal agree). Outputs are compared first (a
wrong kernel is never timed). Then warm-up runs, then `repeats` timed runs of each, interleaved
(ours, SDPA, SDPA, ours, ...) so machine noise hits both; the medians are reported and the ratio
is SDPA's median / ours (> 1: ours is faster). fwdbwd = forward with autograd + backward
(torch.autograd.grad of the three inputs against a fixed random dout).

Prints one table per (mode, dtype) with the geometric mean and minimum of the ratios and writes
the same as markdown to --out. --quick: a few tiny shapes, one repeat (a CI-sized smoke run;
one repeat means nothing; with --repeats it times the per-call overhead of tiny shapes). --only: shape names as printed (e.g. b1h8s4096d64c) to rerun points.
"""
from __future__ import annotations

import argparse
import math
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

try:
    import flash_attn_c
except ImportError:  # running from a checkout without an installed package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import flash_attn_c

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
MODES = ("fwd", "fwdbwd")


@dataclass(frozen=True)
class Shape:
    b: int
    h: int
    s: int
    d: int
    causal: bool

    @property
    def name(self) -> str:
        return f"b{self.b}h{self.h}s{self.s}d{self.d}{'c' if self.causal else ''}"


def full_grid() -> list[Shape]:
    """28 shapes: 7 (b, h, s) with b*h*s = 32768 (s 512..4096) x d 64/128 x causal or not."""
    bhs = [(1, 8, 4096), (1, 16, 2048), (2, 8, 2048), (2, 16, 1024), (4, 8, 1024),
           (4, 16, 512), (2, 12, 1024)]
    return [Shape(b, h, s, d, c) for (b, h, s) in bhs for d in (64, 128) for c in (False, True)]


def quick_grid() -> list[Shape]:
    return [Shape(1, 2, 128, 64, False), Shape(2, 2, 96, 128, True)]


def make_runners(sh: Shape, dtype: torch.dtype, mode: str
                 ) -> tuple[Callable[[], object], Callable[[], object]]:
    """(ours, sdpa) closures on the same random values; checks that their outputs agree."""
    gen = torch.Generator().manual_seed(hash(sh.name) % (2 ** 31))
    q, k, v, do = (torch.randn(sh.b, sh.s, sh.h, sh.d, generator=gen).to(dtype)
                   for _ in range(4))                                       # (b, s, h, d)
    qt, kt, vt, dot = (x.transpose(1, 2).contiguous() for x in (q, k, v, do))  # (b, h, s, d)
    grad = mode == "fwdbwd"
    for x in (q, k, v, qt, kt, vt):
        x.requires_grad_(grad)

    def ours_fwd() -> torch.Tensor:
        return flash_attn_c.flash_attn_func(q, k, v, causal=sh.causal)

    def sdpa_fwd() -> torch.Tensor:
        return F.scaled_dot_product_attention(qt, kt, vt, is_causal=sh.causal)

    with torch.no_grad():
        diff = (ours_fwd().float() - sdpa_fwd().transpose(1, 2).float()).abs().max().item()
    tol = 1e-3 if dtype == torch.float32 else 3e-2
    if not diff < tol:
        raise RuntimeError(f"{sh.name} {dtype}: ours and SDPA disagree (max |diff| {diff:.3g})")
    if not grad:
        def ours() -> object:
            with torch.no_grad():
                return ours_fwd()

        def sdpa() -> object:
            with torch.no_grad():
                return sdpa_fwd()
        return ours, sdpa

    def ours_fb() -> object:
        return torch.autograd.grad(ours_fwd(), (q, k, v), do)

    def sdpa_fb() -> object:
        return torch.autograd.grad(sdpa_fwd(), (qt, kt, vt), dot)
    return ours_fb, sdpa_fb


def time_interleaved(ours: Callable[[], object], sdpa: Callable[[], object], repeats: int,
                     warmup: int) -> tuple[float, float]:
    """Median ms of each; the order alternates every repeat (ours first, then SDPA first)."""
    for _ in range(warmup):
        ours()
        sdpa()
    t = {0: [], 1: []}
    fns = (ours, sdpa)
    for r in range(repeats):
        for which in ((0, 1) if r % 2 == 0 else (1, 0)):
            t0 = time.perf_counter()
            fns[which]()
            t[which].append((time.perf_counter() - t0) * 1e3)
    return statistics.median(t[0]), statistics.median(t[1])


def geomean(xs: list[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def header() -> list[str]:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, cwd=Path(__file__).parent).stdout.strip()
    except OSError:
        commit = "unknown"
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        load = open("/proc/loadavg").read().split()[:3]
    except OSError:
        load = ["?"]
    return [f"- machine: {cpu}, {torch.get_num_threads()} torch threads "
            f"(os.cpu_count() {__import__('os').cpu_count()}), {platform.machine()}",
            f"- torch {torch.__version__}, flash_attn_c commit {commit or 'unknown'}",
            f"- load average at start: {' '.join(load)}",
            f"- command: `python {' '.join(['benchmarks/bench_cpu.py'] + sys.argv[1:])}`"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny shapes, 1 repeat unless --repeats (smoke test)")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs of each (median; default 5, --quick 1)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs of each first (--quick: 1 unless given)")
    ap.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--modes", default="fwd,fwdbwd", help="comma list of fwd, fwdbwd")
    ap.add_argument("--dtypes", default="fp32,bf16", help="comma list of fp32, bf16")
    ap.add_argument("--only", default="", help="comma list of shape names to run")
    ap.add_argument("--out", type=Path, help="write the markdown record here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = quick_grid() if args.quick else full_grid()
    if args.only:
        want = set(args.only.split(","))
        shapes = [s for s in shapes if s.name in want]
    repeats = args.repeats if args.repeats is not None else 1 if args.quick else 5
    warmup = args.warmup
    modes = [m for m in args.modes.split(",") if m]
    dtypes = [d for d in args.dtypes.split(",") if d]
    for m in modes:
        if m not in MODES:
            ap.error(f"--modes: unknown mode {m!r} (choose from {', '.join(MODES)})")
    for d in dtypes:
        if d not in DTYPES:
            ap.error(f"--dtypes: unknown dtype {d!r} (choose from {', '.join(DTYPES)})")

    lines = ["# CPU speed: flash_attn_c vs torch SDPA", ""] + header() + [
        f"- {repeats} interleaved timed runs after {warmup} warm-up, medians; "
        "ratio = SDPA ms / ours ms (> 1: ours faster)", ""]
    print("\n".join(lines), flush=True)
    summary = []
    t_start = time.perf_counter()
    for mode in modes:
        for dname in dtypes:
            block = [f"## {mode} {dname}", "", "| shape | ours ms | SDPA ms | SDPA / ours |",
                     "|---|---|---|---|"]
            print("\n".join(block), flush=True)
            ratios = []
            for sh in shapes:
                ours, sdpa = make_runners(sh, DTYPES[dname], mode)
                mo, ms = time_interleaved(ours, sdpa, repeats, warmup)
                ratios.append(ms / mo)
                row = f"| {sh.name} | {mo:.1f} | {ms:.1f} | {ms / mo:.2f} |"
                block.append(row)
                print(row, flush=True)
            g, lo = geomean(ratios), min(ratios)
            tail = ["", f"geomean {g:.2f}x, min {lo:.2f}x over {len(ratios)} shapes", ""]
            print("\n".join(tail), flush=True)
            lines += block + tail
            summary.append(f"| {mode} | {dname} | {g:.2f}x | {lo:.2f}x |")
    summ = ["## summary", "", "| mode | dtype | geomean SDPA / ours | min |", "|---|---|---|---|"]
    summ += summary + ["", f"(sweep took {time.perf_counter() - t_start:.0f} s)"]
    print("\n".join(summ))
    lines += summ
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
