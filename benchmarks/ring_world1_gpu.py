"""World size 1 ring attention vs flash_attn_func on one GPU: the ring's per-block calls must be
the normal fast kernels, and its bookkeeping must cost < 5 %.

    python benchmarks/ring_world1_gpu.py [--seqlen 16384] [--heads 16] [--headdim 128]
                                         [--repeats 20] [--backend nccl|gloo|none]

b=1, bf16, causal and not; forward alone and forward+backward. The ring runs in a process group
of one rank (NCCL by default; `none` = no process group, the same code path). Calls alternate
ring / flash_attn_func so clock or load drift hits both; CUDA events; medians. Outputs are
compared (bitwise for the forward) before timing. Prints a markdown table with the ratio
ring / flash_attn_func; exit code 1 if a ratio exceeds 1.05 or the outputs differ.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from flash_attn_c import flash_attn_func  # noqa: E402
from flash_attn_c.distributed import ring_flash_attn_func  # noqa: E402


def _time(fn, start: torch.cuda.Event, end: torch.cuda.Event) -> float:
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seqlen", type=int, default=16384)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--headdim", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--backend", choices=["nccl", "gloo", "none"], default="nccl")
    args = ap.parse_args()
    torch.cuda.set_device(0)
    if args.backend != "none":
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29533")
        device_id = torch.device("cuda", 0) if args.backend == "nccl" else None
        dist.init_process_group(args.backend, rank=0, world_size=1, device_id=device_id)
    shape = (1, args.seqlen, args.heads, args.headdim)
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v, dout = (torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=g)
                     for _ in range(4))
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    print(f"{torch.cuda.get_device_name()}, b=1, s={args.seqlen}, h={args.heads}, "
          f"d={args.headdim}, bf16, backend {args.backend}, median of {args.repeats}\n")
    print("| causal | pass | flash_attn_func ms | ring (world 1) ms | ratio |")
    print("|---|---|---|---|---|")
    ok = True
    for causal in (False, True):
        a = ring_flash_attn_func(q, k, v, causal=causal)
        b = flash_attn_func(q, k, v, causal=causal)
        if not torch.equal(a, b):
            print(f"causal={causal}: ring output differs from flash_attn_func")
            ok = False

        def fwd(fn):
            return lambda: fn(q, k, v, causal=causal)

        def fwd_bwd(fn):
            def run():
                for t in leaves:
                    t.grad = None
                fn(*leaves, causal=causal).backward(dout)
            return run

        for name, make in (("fwd", fwd), ("fwd+bwd", fwd_bwd)):
            ring_fn, ref_fn = make(ring_flash_attn_func), make(flash_attn_func)
            for _ in range(3):  # warm-up
                ring_fn(), ref_fn()
            tr, tf = [], []
            for _ in range(args.repeats):
                tr.append(_time(ring_fn, start, end))
                tf.append(_time(ref_fn, start, end))
            mr, mf = statistics.median(tr), statistics.median(tf)
            ok &= mr <= 1.05 * mf
            print(f"| {causal} | {name} | {mf:.3f} | {mr:.3f} | {mr / mf:.3f} |")
    if args.backend != "none":
        dist.destroy_process_group()
    print("\nOK" if ok else "\nFAIL: a ratio above 1.05 or differing outputs")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
