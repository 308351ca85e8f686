"""Cost of softcap and ALiBi in the CUDA forward (issue #14: within 10% of the plain kernel's
TFLOP/s): on the standard sweep's forward shapes (bf16, 16k tokens, h*d = 2048, d 64/128/256,
causal and not, seqlen 512..16k), the plain call beside softcap=30, ALiBi (h,) slopes and both,
each on the sm90 kernel's kFeat variant (the default) and on the sm80 kernel
(FLASH_ATTN_C_SM90_FEAT=0; at d = 64 the variant runs a tile of its own, 128 rows). Outputs are checked against each other before timing.
With --dropout P it adds dropout (issue #14: within 20%): dropout_p = P on the sm90 kernel's kDrop
variant (the default, FLASH_ATTN_C_SM90_FWD_DROPOUT=1) and on the sm80 kernel (=0), the two outputs
checked against each other under the same seed (both draw the same Philox mask).

    python benchmarks/sm90_feat_cost.py [--seqlens 512,2048,8192,16384] [--dropout 0.1]
"""
import argparse
import math
import os

import torch
from triton.testing import do_bench

import flash_attn_c


def tflops(b: int, h: int, s: int, d: int, causal: bool, ms: float) -> float:
    flops = 4.0 * b * h * s * s * d / (2 if causal else 1)
    return flops / ms / 1e9


def timed(fn) -> float:
    return do_bench(fn, warmup=25, rep=100, return_mode="median")


def time_dropout(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, p: float,
                 d: int, s: int) -> tuple:
    """ms of dropout_p = p on the sm90 kDrop variant and on the sm80 kernel; q, k, v (b, s, h, d).
    Both outputs, drawn under the same seed, must agree (the same Philox mask)."""
    fn = lambda: flash_attn_c.flash_attn_func(q, k, v, dropout_p=p, causal=causal)  # noqa: E731
    out = {}
    ms = {}
    for flag in ("1", "0"):
        os.environ["FLASH_ATTN_C_SM90_FWD_DROPOUT"] = flag
        torch.manual_seed(0)
        out[flag] = fn()
        ms[flag] = timed(fn)
    os.environ.pop("FLASH_ATTN_C_SM90_FWD_DROPOUT", None)
    err = (out["1"].float() - out["0"].float()).abs().max().item()
    if not err < 3e-2:
        raise SystemExit(f"dropout d={d} s={s} causal={causal}: sm90 vs sm80 max err {err}")
    return ms["1"], ms["0"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seqlens", default="512,1024,2048,4096,8192,16384")
    ap.add_argument("--dropout", type=float, default=0.0, help="also time dropout_p = P (sm90 kDrop vs sm80)")
    args = ap.parse_args()
    seqlens = [int(x) for x in args.seqlens.split(",")]
    drop = args.dropout > 0
    print("| d | seqlen | causal | plain TFLOP/s | softcap sm90 | ALiBi sm90 | both sm90 | softcap sm80 |"
          + (" dropout sm90 | dropout sm80 |" if drop else ""))
    print("|---|---|---|---|---|---|---|---|" + ("---|---|" if drop else ""))
    ratios = {"softcap": [], "alibi": [], "both": [], "softcap_sm80": []}
    if drop:
        ratios.update({"dropout": [], "dropout_sm80": []})
    for d in (64, 128, 256):
        for s in seqlens:
            b, h = max(1, 16384 // s), 2048 // d
            q, k, v = (torch.randn(b, s, h, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
            slopes = torch.rand(h, device="cuda", dtype=torch.float32) * 0.5 + 0.05
            variants = {"plain": dict(), "softcap": dict(softcap=30.0), "alibi": dict(alibi_slopes=slopes),
                        "both": dict(softcap=30.0, alibi_slopes=slopes)}
            for causal in (False, True):
                row = {}
                for name, kw in variants.items():
                    os.environ["FLASH_ATTN_C_SM90_FEAT"] = "1"
                    fn = lambda: flash_attn_c.flash_attn_func(q, k, v, causal=causal, **kw)  # noqa: E731
                    out = fn()
                    row[name] = timed(fn)
                    if name != "plain":
                        os.environ["FLASH_ATTN_C_SM90_FEAT"] = "0"  # the sm80 kernel, as a check
                        ref = fn()
                        err = (out.float() - ref.float()).abs().max().item()
                        if not err < 3e-2:
                            raise SystemExit(f"{name} d={d} s={s} causal={causal}: sm90 vs sm80 max err {err}")
                        if name == "softcap":
                            row["softcap_sm80"] = timed(fn)
                os.environ.pop("FLASH_ATTN_C_SM90_FEAT", None)
                if drop:
                    row["dropout"], row["dropout_sm80"] = time_dropout(q, k, v, causal, args.dropout, d, s)
                tf = {n: tflops(b, h, s, d, causal, ms) for n, ms in row.items()}
                for n in ratios:
                    ratios[n].append(tf[n] / tf["plain"])
                print(f"| {d} | {s} | {causal} | {tf['plain']:.0f} | {tf['softcap']:.0f} | {tf['alibi']:.0f} | "
                      f"{tf['both']:.0f} | {tf['softcap_sm80']:.0f} |"
                      + (f" {tf['dropout']:.0f} | {tf['dropout_sm80']:.0f} |" if drop else ""), flush=True)
            del q, k, v
    for n, rs in ratios.items():
        g = math.exp(sum(map(math.log, rs)) / len(rs))
        print(f"{n:>13} / plain TFLOP/s: geomean {g:.3f}, min {min(rs):.3f} over {len(rs)} configs")


if __name__ == "__main__":
    main()
