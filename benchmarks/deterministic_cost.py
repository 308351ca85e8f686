"""Cost of deterministic=True in the CUDA backward: backward time with and without it on the same
inputs (bf16, 16k tokens, h*d = 2048, seqlen 2k and 8k, d 64/128/256, causal and not).

deterministic=True runs the sm80 backward with dQ reduced in a fixed order (no float atomics);
deterministic=False may take the Hopper kernel, whose dQ uses atomic adds."""
import torch
from triton.testing import do_bench

import flash_attn_c

print(f"{'d':>4} {'seq':>6} {'causal':>6} {'bwd ms':>9} {'bwd ms det':>11} {'cost':>7}")
for d in (64, 128, 256):
    for s in (2048, 8192):
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
            print(f"{d:>4} {s:>6} {str(causal):>6} {ms[0]:9.3f} {ms[1]:11.3f} {ms[1] / ms[0]:6.2f}x")
