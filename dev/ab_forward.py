"""Times flash_attn_func (forward, and forward+backward with --fwdbwd) on a few standard-sweep
shapes and prints one JSON line {label: median ms}: run it from two trees in turn to compare a
commit with its baseline on one GPU without the bench's peers (whose own drift moves the ratios).

    PYTHONPATH=<tree> python dev/ab_forward.py --label after [--shapes 64:512:0,64:512:1] [--fwdbwd]
    python dev/ab_forward.py --compare ab.jsonl     (a markdown table: per shape, the median over
                                                      rounds of each label, and the change)

A shape is d:seqlen:causal on the sweep's grid (bf16, 16k tokens, h*d = 2048). Timing: triton's
do_bench (L2 flushed between calls), median of --rep ms after warm-up; inputs are random normal.
"""
import argparse
import json

DEFAULT = "64:512:0,64:512:1,64:2048:0,64:8192:0,128:512:0,128:2048:0,256:512:0"
# the standard sweep's forward grid: d 64/128/256 x seqlen 512..16k x causal and not
SWEEP = ",".join(f"{d}:{s}:{c}" for d in (64, 128, 256) for s in (512, 2048, 8192, 16384) for c in (0, 1))


def compare(path: str) -> None:
    """Prints, per shape, each label's median ms over its rounds, TFLOP/s and after / before - 1."""
    import statistics
    runs: dict = {}
    for line in open(path):
        r = json.loads(line)
        runs.setdefault(r.pop("label"), []).append(r)
    labels = [x for x in runs if not x.endswith("-fwdbwd")]
    for group in (labels, [x for x in runs if x.endswith("-fwdbwd")]):
        if len(group) != 2:
            continue
        a, b = group
        print(f"| shape d:seqlen:causal | {a} ms | {b} ms | {b} / {a} - 1 | {b} TFLOP/s |")
        print("|---|---|---|---|---|")
        for spec in [k for k in runs[a][0] if k != "tree"]:
            ma = statistics.median(r[spec] for r in runs[a])
            mb = statistics.median(r[spec] for r in runs[b])
            d, s, c = (int(x) for x in spec.split(":"))
            flops = 4.0 * (16384 // s) * s * s * (2048 // d) * d / (2 if c else 1)
            flops *= 3.5 if a.endswith("-fwdbwd") else 1.0
            print(f"| {spec} | {ma:.4f} | {mb:.4f} | {100 * (mb / ma - 1):+.1f}% | {flops / mb / 1e9:.0f} |")
        print(f"\n({len(runs[a])} / {len(runs[b])} rounds, alternating)\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--compare", metavar="JSONL", help="summarise a file of runs and exit")
    ap.add_argument("--label")
    ap.add_argument("--shapes", default=DEFAULT, help="d:seqlen:causal,... or 'sweep'")
    ap.add_argument("--fwdbwd", action="store_true")
    ap.add_argument("--rep", type=int, default=300)
    args = ap.parse_args()
    if args.compare:
        return compare(args.compare)
    if not args.label:
        ap.error("--label is required to time")
    import torch
    from triton.testing import do_bench

    import flash_attn_c
    torch.manual_seed(0)
    res = {"label": args.label, "tree": flash_attn_c.__file__}
    for spec in (SWEEP if args.shapes == "sweep" else args.shapes).split(","):
        d, s, causal = (int(x) for x in spec.split(":"))
        b, h = max(1, 16384 // s), 2048 // d
        q, k, v = (torch.randn(b, s, h, d, device="cuda", dtype=torch.bfloat16,
                               requires_grad=args.fwdbwd) for _ in range(3))
        if args.fwdbwd:
            g = torch.randn_like(q)

            def fn():
                flash_attn_c.flash_attn_func(q, k, v, causal=bool(causal)).backward(g)
        else:
            def fn():
                flash_attn_c.flash_attn_func(q, k, v, causal=bool(causal))
        res[spec] = round(do_bench(fn, warmup=50, rep=args.rep, return_mode="median"), 5)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
