"""CPU forward on short query blocks (decode and speculative decoding): the op's time per call
for 1..4 query rows over 256..4096 keys (b=1, h=4, d=64, causal, one torch thread), and a
128-row block for reference. Prints a markdown table; run it in two trees to compare.

    PYTHONPATH=<tree> python benchmarks/cpu_decode_step.py
"""
import time

import torch

import flash_attn_c

SHAPES = [(1, 256, torch.float32), (1, 4096, torch.float32), (1, 4096, torch.float16), (1, 4096, torch.bfloat16),
          (2, 1024, torch.float32), (3, 1024, torch.float32), (4, 1024, torch.float32),
          (128, 1024, torch.float32)]


def per_call_us(fn, seconds: float = 1.0) -> float:
    """Median over 5 rounds of the mean time per call, each round about seconds / 5 long."""
    for _ in range(20):
        fn()
    t0 = time.perf_counter()
    fn()
    n = max(1, int(seconds / 5 / max(time.perf_counter() - t0, 1e-7)))
    rounds = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        rounds.append((time.perf_counter() - t0) / n * 1e6)
    return sorted(rounds)[2]


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    print(f"flash_attn_c from {flash_attn_c.__file__}")
    print("| query rows | keys | dtype | us per call |")
    print("|---|---|---|---|")
    for sq, sk, dt in SHAPES:
        q = torch.randn(1, sq, 4, 64, dtype=dt)
        k, v = torch.randn(1, sk, 4, 64, dtype=dt), torch.randn(1, sk, 4, 64, dtype=dt)
        with torch.inference_mode():
            us = per_call_us(lambda: flash_attn_c.flash_attn_func(q, k, v, causal=True))
        print(f"| {sq} | {sk} | {str(dt).replace('torch.', '')} | {us:.1f} |", flush=True)


if __name__ == "__main__":
    main()
