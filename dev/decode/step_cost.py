"""What a full decode step costs beyond the attention (dev tool, CUDA): flash_attn_with_kvcache
timed as attention only, with the new token's k/v appended in place, and with rotary on q and k
as well, on the same cache; plus the kernels each variant launches (torch profiler). The data for
deciding whether to fuse append and rotary into the split-KV kernel (issue #12).

    python dev/decode/step_cost.py [--graph]

--graph also times each variant replayed from a captured CUDA graph (what a serving loop does),
which removes the host and launch overheads that eager timing includes.
"""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path.cwd()))
from flash_attn_c import flash_attn_with_kvcache  # noqa: E402
from flash_attn_c.bench.measure import TimingSettings, time_ms  # noqa: E402
from flash_attn_c.testing import capture_cuda_graph  # noqa: E402

CONFIGS = [(1, 1024), (1, 16384), (8, 4096), (64, 4096)]  # (batch, cache length)


def kernels_of(fn) -> list[str]:
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return [e.name for e in prof.events() if e.device_type.name == "CUDA"]


def graphed(fn):
    """fn captured in a CUDA graph (flash_attn_c.testing's recipe, 3 warm-ups), as a replay function."""
    return capture_cuda_graph(fn, warmup=3)[0].replay


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--graph", action="store_true")
    args = ap.parse_args()
    dev, st = torch.device("cuda"), TimingSettings(cuda_warmup_ms=10, cuda_rep_ms=40)
    h, hk, d = 32, 8, 128
    print("| b | cache | variant | kernels | eager us | graph us |")
    print("|---|---|---|---|---|---|")
    for b, s in CONFIGS:
        q = torch.randn(b, 1, h, d, device=dev, dtype=torch.bfloat16)
        kc = torch.randn(b, s, hk, d, device=dev, dtype=torch.bfloat16)
        vc = torch.randn_like(kc)
        kn = torch.randn(b, 1, hk, d, device=dev, dtype=torch.bfloat16)
        vn = torch.randn_like(kn)
        lens = torch.full((b,), s - 1, dtype=torch.int32, device=dev)  # the new token fills the last slot
        full = lens + 1
        cos = torch.randn(s, d // 2, device=dev, dtype=torch.float32)
        sin = torch.randn_like(cos)
        variants = {
            "attention": lambda: flash_attn_with_kvcache(q, kc, vc, cache_seqlens=full, causal=True),
            "+ append": lambda: flash_attn_with_kvcache(q, kc, vc, k=kn, v=vn, cache_seqlens=lens, causal=True),
            "+ append + rotary": lambda: flash_attn_with_kvcache(q, kc, vc, k=kn, v=vn, cache_seqlens=lens,
                                                                 rotary_cos=cos, rotary_sin=sin, causal=True),
        }
        for name, fn in variants.items():
            names = kernels_of(fn)
            eager = time_ms(fn, dev, st) * 1e3
            graph = time_ms(graphed(fn), dev, st) * 1e3 if args.graph else float("nan")
            print(f"| {b} | {s} | {name} | {len(names)} | {eager:.1f} | {graph:.1f} |", flush=True)
            if b == CONFIGS[0][0] and s == CONFIGS[0][1]:
                print("|  |  | kernels: " + ", ".join(n.split("(")[0][-48:] for n in names) + " |  |  |  |")
        del q, kc, vc


if __name__ == "__main__":
    main()
