"""Decode timings of flash_attn_with_kvcache on fresh cache allocations (dev tool): each config
is allocated `--allocs` times and timed like the bench (do_bench, L2 flush, median), so a slow
placement of one allocation shows as an outlier instead of a regression. Runs in any tree
that has flash_attn_with_kvcache (for A/B of two builds, run it in each tree).

    python dev/decode/ab_alloc.py [--allocs 3] [--label name]
"""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path.cwd()))
from flash_attn_c import flash_attn_with_kvcache  # noqa: E402
from flash_attn_c.bench.measure import TimingSettings, time_ms  # noqa: E402

CONFIGS = [(32, 8, 64, 32768), (32, 8, 128, 1024), (32, 32, 16, 1024), (64, 8, 16, 131072),
           (64, 8, 64, 32768), (64, 8, 128, 16384), (64, 8, 64, 16384), (32, 8, 16, 1024)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--allocs", type=int, default=3)
    ap.add_argument("--label", default="tree")
    args = ap.parse_args()
    settings = TimingSettings(cuda_warmup_ms=10, cuda_rep_ms=40)
    dev, d = torch.device("cuda"), 128
    for h, hk, b, s in CONFIGS:
        times = []
        for _ in range(args.allocs):
            q = torch.randn(b, 1, h, d, device=dev, dtype=torch.bfloat16)
            kc = torch.randn(b, s, hk, d, device=dev, dtype=torch.bfloat16)
            vc = torch.randn_like(kc)
            lens = torch.full((b,), s, dtype=torch.int32, device=dev)
            times.append(time_ms(lambda: flash_attn_with_kvcache(q, kc, vc, cache_seqlens=lens), dev, settings))
            del q, kc, vc
            torch.cuda.empty_cache()
        gbs = [2 * b * s * hk * d * 2 / t / 1e6 for t in times]
        print(f"{args.label} h/hk {h}/{hk} b {b} s {s}: ms " + " ".join(f"{t:.4f}" for t in times)
              + " | GB/s " + " ".join(f"{g:.0f}" for g in gbs), flush=True)


if __name__ == "__main__":
    main()
