"""Ring attention on CPU with gloo: per-rank peak memory and time against sequence length for
world sizes 1..4.

    python benchmarks/bench_ring_cpu.py [--seqlens 1536 3072 6144] [--worlds 1 2 3 4]
                                        [--repeats 3] [--out benchmarks/results/ring_cpu.md]

For each (world, total sequence length S): `world` spawned processes (gloo, one torch thread
each), b=1, h=8, hk=2 (GQA), d=64, fp32, causal, contiguous layout (rank r holds S/world
positions). Each rank measures
  * peak memory (glibc told to mmap every block >= 64 KiB, so freed tensors leave RSS at once):
    its peak RSS (VmHWM, reset through /proc/self/clear_refs just before the call)
    minus its RSS then, over one forward+backward, after its inputs exist and after a warm-up
    call at a tiny size (so it is the call's working memory:
    the output, LSE, K/V ring buffers, the travelling dK/dV accumulators, the gradients and the
    kernels' own buffers);
  * time: median over `repeats` forward+backward calls (the ranks run in lockstep; the slowest
    rank's median is reported).
Also the whole-sequence single-process flash_attn_func at the same S for reference (world 1 of
the ring is the same call). With more processes than cores the times measure oversubscription,
not scaling; the memory column is the point on a small machine.
Writes a markdown table (and prints it).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Dict, List

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from flash_attn_c.distributed import ring_flash_attn_func, ring_shard  # noqa: E402

B, H, HK, D = 1, 8, 2, 64
MIB = 2 ** 20


def _status_mib(key: str) -> float:
    status = Path("/proc/self/status").read_text()
    return int(re.search(key + r":\s+(\d+) kB", status).group(1)) / 1024


def _reset_peak() -> float:
    """Resets this process's peak RSS to its current RSS (Linux >= 4.0); returns that RSS."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_mib("VmRSS")


def _rank(rank: int, world: int, store: str, seqlens: List[int], repeats: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", store=dist.FileStore(store, world), rank=rank,
                            world_size=world, timeout=timedelta(seconds=600))
    res: Dict[str, Dict[str, float]] = {}

    def step(q, k, v, dout):
        out = ring_flash_attn_func(q, k, v, causal=True)
        out.backward(dout)

    tiny = [torch.randn(B, 4 * world, n, D, requires_grad=True) for n in (H, HK, HK)]
    step(*(ring_shard(t.detach(), 1).requires_grad_() for t in tiny),
         ring_shard(torch.randn(B, 4 * world, H, D), 1))  # warm-up: gloo pairs, kernels
    for s in seqlens:
        g = torch.Generator().manual_seed(s)
        q, k, v = (torch.randn(B, s // world, n, D, generator=g).requires_grad_()
                   for n in (H, HK, HK))
        dout = torch.randn(B, s // world, H, D, generator=g)
        before = _reset_peak()
        step(q, k, v, dout)
        peak = _status_mib("VmHWM") - before
        times = []
        for _ in range(repeats):
            q.grad = k.grad = v.grad = None
            dist.barrier()
            t0 = time.perf_counter()
            step(q, k, v, dout)
            times.append(time.perf_counter() - t0)
        res[str(s)] = dict(peak_mib=peak, ms=1e3 * statistics.median(times))
    Path(out, f"{world}_{rank}.json").write_text(json.dumps(res))
    dist.destroy_process_group()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seqlens", type=int, nargs="+", default=[1536, 3072, 6144])
    ap.add_argument("--worlds", type=int, nargs="+", default=[1, 2, 3, 4])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/results/ring_cpu.md")
    args = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"
    # glibc: serve every block >= 64 KiB by mmap and unmap it on free, so RSS follows the live
    # tensors and its peak is the call's true peak (not the allocator's cached arena)
    os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for world in args.worlds:
            seqlens = [s for s in args.seqlens if s % world == 0]
            mp.start_processes(_rank, args=(world, os.path.join(tmp, f"store{world}"), seqlens,
                                            args.repeats, tmp), nprocs=world, join=True,
                               start_method="spawn")
            per_rank = [json.loads(Path(tmp, f"{world}_{r}.json").read_text())
                        for r in range(world)]
            for s in seqlens:
                peaks = [p[str(s)]["peak_mib"] for p in per_rank]
                rows.append((world, s, max(peaks), min(peaks),
                             max(p[str(s)]["ms"] for p in per_rank)))
    lines = [f"Ring attention fwd+bwd on CPU (gloo), b={B}, h={H}, hk={HK}, d={D}, fp32, causal, "
             f"contiguous layout; {os.cpu_count()} CPU cores, 1 thread per rank.",
             "", "| world | seqlen | per-rank peak MiB (max / min over ranks) | ms (slowest rank, "
             "median) |", "|---|---|---|---|"]
    for world, s, pmax, pmin, ms in sorted(rows, key=lambda r: (r[1], r[0])):
        lines.append(f"| {world} | {s} | {pmax:.1f} / {pmin:.1f} | {ms:.0f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
