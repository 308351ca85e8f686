"""Cost of softcap and ALiBi in the CUDA backward (issue #13: softcap and ALiBi on the Hopper
backward): on the standard sweep's shapes (bf16, 16k tokens, h*d = 2048, d 64 / 128 / 256, causal and
not), the backward alone (torch.autograd.grad of one forward's output) of the plain call beside
softcap=30, ALiBi (h,) slopes and both, each on the sm90 FEAT instance (FLASH_ATTN_C_SM90_BWD_FEAT=1)
and on the sm80 backward (the variable unset, the default). The two feature gradients are checked
against each other before timing (the same forward, so the same P up to rounding).

TFLOP/s counts the backward as 2.5 x the forward's 4 b h s^2 d (halved when causal), as the
harnesses do. The last lines: each column's geomean ratio to the plain backward, and the FEAT
instance's speedup over the sm80 backward.

    python benchmarks/sm90_bwd_feat_cost.py [--seqlens 512,2048,8192,16384] [--dims 64,128,256]
"""
from __future__ import annotations

import argparse
import math
import os
from typing import Dict, List

import torch
from torch.profiler import ProfilerActivity, profile
from triton.testing import do_bench

import flash_attn_c


def bwd_tflops(b: int, h: int, s: int, d: int, causal: bool, ms: float) -> float:
    flops = 2.5 * 4.0 * b * h * s * s * d / (2 if causal else 1)
    return flops / ms / 1e9


def backward_ms(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dout: torch.Tensor, causal: bool,
                kw: dict, feat_switch: bool) -> tuple:
    """(median ms of the backward, its (dq, dk, dv)) of q, k, v (b, s, h, d) leaves requiring grad,
    with FLASH_ATTN_C_SM90_BWD_FEAT=1 when feat_switch, else unset. The variable is read at each
    backward call, so it is set around the timed calls, not the forward."""
    out = flash_attn_c.flash_attn_func(q, k, v, causal=causal, **kw)
    grad = lambda: torch.autograd.grad(out, (q, k, v), dout, retain_graph=True)  # noqa: E731
    if feat_switch:
        os.environ["FLASH_ATTN_C_SM90_BWD_FEAT"] = "1"
    try:
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            grads = grad()
            torch.cuda.synchronize()
        ran = any("fa_bwd_sm90_pipe_feat_kernel" in e.name for e in prof.events())
        if ran != (feat_switch and bool(kw)):  # the FEAT instance, and only where it was asked for
            raise SystemExit(f"FLASH_ATTN_C_SM90_BWD_FEAT={int(feat_switch)} {sorted(kw)}: FEAT instance ran: {ran}")
        ms = do_bench(grad, warmup=25, rep=100, return_mode="median")
    finally:
        os.environ.pop("FLASH_ATTN_C_SM90_BWD_FEAT", None)
    return ms, grads


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seqlens", default="512,1024,2048,4096,8192,16384")
    ap.add_argument("--dims", default="64,128,256")
    args = ap.parse_args()
    seqlens = [int(x) for x in args.seqlens.split(",")]
    dims = [int(x) for x in args.dims.split(",")]
    os.environ.pop("FLASH_ATTN_C_SM90_BWD_FEAT", None)
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}; backward TFLOP/s (2.5 x fwd FLOPs)")
    print("| d | seqlen | causal | plain | softcap FEAT | softcap sm80 | ALiBi FEAT | ALiBi sm80 | both FEAT | both sm80 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    ratios: Dict[str, List[float]] = {}
    for d in dims:
        for s in seqlens:
            b, h = max(1, 16384 // s), 2048 // d
            q, k, v = (torch.randn(b, s, h, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
                       for _ in range(3))
            dout = torch.randn(b, s, h, d, device="cuda", dtype=torch.bfloat16)
            slopes = torch.rand(h, device="cuda", dtype=torch.float32) * 0.5 + 0.05
            feats = {"softcap": dict(softcap=30.0), "alibi": dict(alibi_slopes=slopes),
                     "both": dict(softcap=30.0, alibi_slopes=slopes)}
            for causal in (False, True):
                tf = {"plain": bwd_tflops(b, h, s, d, causal, backward_ms(q, k, v, dout, causal, {}, False)[0])}
                for name, kw in feats.items():
                    ms_feat, g_feat = backward_ms(q, k, v, dout, causal, kw, True)
                    ms_80, g_80 = backward_ms(q, k, v, dout, causal, kw, False)
                    for n, a, r in zip(("dq", "dk", "dv"), g_feat, g_80):
                        err = (a.float() - r.float()).abs().max().item()
                        scale = max(r.float().abs().max().item(), 1e-3)
                        if not err <= 3e-2 * scale:
                            raise SystemExit(f"{name} d={d} s={s} causal={causal}: {n} FEAT vs sm80 max err {err} "
                                             f"(max |{n}| {scale})")
                    tf[name] = bwd_tflops(b, h, s, d, causal, ms_feat)
                    tf[name + "_sm80"] = bwd_tflops(b, h, s, d, causal, ms_80)
                for n, x in tf.items():
                    if n != "plain":
                        ratios.setdefault(n + " / plain", []).append(x / tf["plain"])
                for n in feats:
                    ratios.setdefault(n + " FEAT / sm80", []).append(tf[n] / tf[n + "_sm80"])
                print(f"| {d} | {s} | {causal} | {tf['plain']:.0f} | {tf['softcap']:.0f} | {tf['softcap_sm80']:.0f} | "
                      f"{tf['alibi']:.0f} | {tf['alibi_sm80']:.0f} | {tf['both']:.0f} | {tf['both_sm80']:.0f} |",
                      flush=True)
            del q, k, v, dout
    for n, rs in ratios.items():
        g = math.exp(sum(map(math.log, rs)) / len(rs))
        print(f"{n:>22}: geomean {g:.3f}, min {min(rs):.3f}, max {max(rs):.3f} over {len(rs)} configs")


if __name__ == "__main__":
    main()
