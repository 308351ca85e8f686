"""Cost of deterministic=True in the CUDA backward (issue #13: at most 1.15x): backward time with
and without it on the same inputs (bf16, 16k tokens, h*d = 2048, d 64/128/256, causal and not,
the given seqlens), and the geometric mean of the ratios.

On Hopper deterministic=True (dense, d <= 128) runs the pipelined kernel's ORDERED instances (dQ
added per query tile in decreasing key-block order behind turn counters, on the Br = 80 / 128
tiles; FLASH_ATTN_C_SM90_BWD_DET picks the others); d > 128 and varlen run other paths (README,
"Kernel selection on Hopper"). deterministic=False adds dQ with atomics.

    python benchmarks/deterministic_cost.py [--seqlens 512,1024,2048,4096,8192,16384] [--dims 64,128,256]
"""
import argparse
import math

import torch
from triton.testing import do_bench

import flash_attn_c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seqlens", default="512,1024,2048,4096,8192,16384")
    ap.add_argument("--dims", default="64,128,256")
    args = ap.parse_args()
    print(f"{'d':>4} {'seq':>6} {'causal':>6} {'bwd ms':>9} {'bwd ms det':>11} {'cost':>7}")
    costs = []
    for d in (int(x) for x in args.dims.split(",")):
        for s in (int(x) for x in args.seqlens.split(",")):
            b, h = 16384 // s, 2048 // d
            q, k, v = (torch.randn(b, s, h, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
                       for _ in range(3))
            g = torch.randn(b, s, h, d, device="cuda", dtype=torch.bfloat16)
            for causal in (False, True):
                ms = []
                for det in (False, True):
                    out = flash_attn_c.flash_attn_func(q, k, v, causal=causal, deterministic=det)
                    ms.append(do_bench(lambda: torch.autograd.grad(out, (q, k, v), g, retain_graph=True),
                                       warmup=25, rep=100, return_mode="median"))
                costs.append(ms[1] / ms[0])
                print(f"{d:>4} {s:>6} {str(causal):>6} {ms[0]:9.3f} {ms[1]:11.3f} {ms[1] / ms[0]:6.2f}x",
                      flush=True)
    geo = math.exp(sum(math.log(c) for c in costs) / len(costs))
    print(f"deterministic cost: geomean {geo:.3f}x over {len(costs)} shapes, max {max(costs):.3f}x")


if __name__ == "__main__":
    main()
