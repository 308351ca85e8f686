"""Where the time of one attention call goes, kernel by kernel, for ours and torch SDPA's cuDNN
backend side by side (issues #13 / #14: the seqlen-512 rows trail cuDNN while long ones lead).

On the standard sweep's shapes (bf16, 16k tokens, h*d = 2048, d 64/128/256, causal and not) it
profiles the forward and the backward of each backend with torch.profiler (CUDA activity only,
after warm-up) and prints, per call, every GPU kernel's median time (us over --iters calls) and
its share of the call's summed kernel time. Our backward is three kernels (D = rowsum(dO o O) with
the dq_accum clearing, the main kernel, the dQ convert); their split says how much of a short
sequence's gap is the linear-in-tokens passes and how much the main kernel.

    python benchmarks/kernel_split.py [--seqlens 512,2048] [--dims 64,128,256] [--iters 20]
"""
import argparse
import statistics
from collections import defaultdict
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.profiler import ProfilerActivity, profile

import flash_attn_c

TOKENS, HD = 16384, 2048


def sweep_tensors(d: int, s: int):
    """q, k, v (b, s, h, d) bf16 requiring grad for ours, and their (b, h, s, d) views as SDPA
    leaves, at the standard sweep's shape (TOKENS tokens, h * d = HD) for head dim d, seqlen s."""
    b, h = TOKENS // s, HD // d
    torch.manual_seed(0)
    q, k, v = (torch.randn(b, s, h, d, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    qt, kt, vt = (t.detach().transpose(1, 2).requires_grad_(True) for t in (q, k, v))
    return q, k, v, qt, kt, vt


def kernel_times(fn: Callable[[], None], iters: int) -> Dict[str, float]:
    """Median us per call of every CUDA kernel fn launches (fn is called iters times; a kernel
    launched k times per call is summed over its k launches)."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            fn()
        torch.cuda.synchronize()
    per_name: Dict[str, List[float]] = defaultdict(list)
    for ev in prof.events():
        if ev.device_type == torch.autograd.DeviceType.CUDA:
            per_name[ev.name].append(ev.device_time_total)
    out = {}
    for name, ts in per_name.items():
        k = max(1, round(len(ts) / iters))  # launches per call
        calls = [sum(ts[i:i + k]) for i in range(0, len(ts) - k + 1, k)]
        out[name] = statistics.median(calls) if calls else 0.0
    return out


def report(label: str, times: Dict[str, float]) -> None:
    total = sum(times.values())
    print(f"  {label}: {total:8.1f} us in {len(times)} kernels")
    for name, t in sorted(times.items(), key=lambda x: -x[1]):
        print(f"      {t:8.1f} us {100 * t / total:5.1f}%  {name[:110]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seqlens", default="512,2048,16384")
    ap.add_argument("--dims", default="64,128,256")
    ap.add_argument("--iters", type=int, default=20)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("kernel_split.py needs a CUDA device")
    print(torch.cuda.get_device_name(), "torch", torch.__version__, "cudnn", torch.backends.cudnn.version())
    for d in (int(x) for x in args.dims.split(",")):
        for s in (int(x) for x in args.seqlens.split(",")):
            for causal in (False, True):
                b, h = TOKENS // s, HD // d
                q, k, v, qt, kt, vt = sweep_tensors(d, s)
                print(f"\nbf16 d={d} seqlen={s} b={b} h={h} causal={causal}")
                out = flash_attn_c.flash_attn_func(q, k, v, causal=causal)
                dout = torch.randn_like(out)
                report("ours fwd", kernel_times(lambda: flash_attn_c.flash_attn_func(q, k, v, causal=causal),
                                                args.iters))
                report("ours bwd", kernel_times(lambda: torch.autograd.grad(out, (q, k, v), dout,
                                                                            retain_graph=True), args.iters))
                with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                    ref = F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal)
                    dref = dout.transpose(1, 2)
                    report("cudnn fwd", kernel_times(
                        lambda: F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal), args.iters))
                    report("cudnn bwd", kernel_times(lambda: torch.autograd.grad(ref, (qt, kt, vt), dref,
                                                                                 retain_graph=True),
                                                     args.iters))
                del q, k, v, qt, kt, vt, out, ref, dout, dref
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
