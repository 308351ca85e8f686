"""Times torch SDPA's FLASH_ATTENTION and CUDNN_ATTENTION backends (forward, and forward+backward
with --bwd) on the standard sweep: bf16, d 64/128/256, seqlen 512..16k, 16k tokens, h*d = 2048.
A quick anchor to read next to dev/fwd's `fwd_check --bench` table; the real side-by-side
benchmark is `python -m flash_attn_c.bench --preset sweep`."""
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from triton.testing import do_bench

bwd = "--bwd" in sys.argv
print(f"{'d':>4} {'seq':>6} {'causal':>6} {'flash':>8} {'cudnn':>8}  TFLOP/s ({'fwd+bwd' if bwd else 'fwd'})")
for d in (64, 128, 256):
    for s in (512, 2048, 8192, 16384):
        b, h = 16384 // s, 2048 // d
        q, k, v = (torch.randn(b, h, s, d, device="cuda", dtype=torch.bfloat16, requires_grad=bwd)
                   for _ in range(3))
        for causal in (False, True):
            flops = 4 * b * h * s * s * d / (2 if causal else 1) * (3.5 if bwd else 1.0)
            row = []
            for be in (SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION):
                def fn():
                    with sdpa_kernel(be):
                        o = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
                        if bwd:
                            o.backward(torch.ones_like(o))
                try:
                    ms = do_bench(fn, warmup=25, rep=100, return_mode="median")
                    row.append(f"{flops / ms / 1e9:8.1f}")
                except Exception:
                    row.append(f"{'n.a.':>8}")
            print(f"{d:>4} {s:>6} {str(causal):>6} {' '.join(row)}")
