"""One forward and one backward call of ours and of torch SDPA's cuDNN backend, on one shape of the
standard sweep, inside a CUDA-profiler range, for Nsight Compute to read the main kernels' hardware
counters side by side (issues #13 / #14: at seqlen 512 both directions trail cuDNN, and run 75 put
the backward's gap inside the main kernel). Run it under ncu, e.g. through scripts/gpu_ncu.sh:

    ncu --profile-from-start off --clock-control none --kernel-name regex:'fa_|cudnn' \\
        --section SpeedOfLight --section WarpStateStats ... python3 benchmarks/ncu_compare.py --d 128 --seqlen 512

Everything runs (and warms up) outside the range; inside it each backend runs once per direction.
"""
import argparse

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import flash_attn_c

TOKENS, HD = 16384, 2048


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--causal", action="store_true")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("ncu_compare.py needs a CUDA device")
    d, s = args.d, args.seqlen
    b, h = TOKENS // s, HD // d
    torch.manual_seed(0)
    q, k, v = (torch.randn(b, s, h, d, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    qt, kt, vt = (t.detach().transpose(1, 2).requires_grad_(True) for t in (q, k, v))
    dout = torch.randn(b, s, h, d, device="cuda", dtype=torch.bfloat16)

    def ours() -> None:
        out = flash_attn_c.flash_attn_func(q, k, v, causal=args.causal)
        torch.autograd.grad(out, (q, k, v), dout)

    def cudnn() -> None:
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            ref = F.scaled_dot_product_attention(qt, kt, vt, is_causal=args.causal)
            torch.autograd.grad(ref, (qt, kt, vt), dout.transpose(1, 2))

    for _ in range(3):  # warm-up: plans, autotuning, allocator
        ours()
        cudnn()
    torch.cuda.synchronize()
    print(f"bf16 d={d} seqlen={s} b={b} h={h} causal={args.causal}: profiling ours, then cudnn", flush=True)
    torch.cuda.profiler.start()
    ours()
    torch.cuda.synchronize()
    cudnn()
    torch.cuda.synchronize()
    torch.cuda.profiler.stop()


if __name__ == "__main__":
    main()
