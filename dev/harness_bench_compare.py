"""Summarises native-harness benchmarks of several trees (scripts/gpu_harness_ab.sh): per shape,
the median over rounds of each tree's TFLOP/s (the harness's first TFLOP/s column: the sm90
kernel) and its ratio to the first tree, then the geometric mean of each ratio.

    python dev/harness_bench_compare.py main=bench_main_1.txt pp=bench_pp_1.txt main=bench_main_2.txt ...

Reads the --bench tables of dev/bin/fwd_sm90/sm90_check (dtype d seqlen batch h causal ms TFLOP/s
...) and dev/bin/bwd_sm90/bwd_sm90_check (d seqlen b h causal ms TFLOP/s ...); other lines are
skipped. A shape a run did not reach (timeout) is left out of that tree's median.
"""
from __future__ import annotations

import math
import statistics
import sys
from typing import Dict, List, Tuple

Shape = Tuple[int, int, int]  # (d, seqlen, causal)


def parse(path: str) -> Dict[Shape, float]:
    """TFLOP/s of the sm90 kernel per (d, seqlen, causal) in one --bench output."""
    out: Dict[Shape, float] = {}
    for line in open(path, errors="replace"):
        f = line.split()
        try:
            if len(f) >= 8 and f[0] in ("bf16", "fp16"):   # forward: dtype d seqlen batch h causal ms tflops
                out[(int(f[1]), int(f[2]), int(f[5]))] = float(f[7])
            elif len(f) >= 7 and f[0].isdigit():           # backward: d seqlen b h causal ms tflops
                out[(int(f[0]), int(f[1]), int(f[4]))] = float(f[6])
        except ValueError:  # "n/a" columns, headers
            continue
    return out


def main(argv: List[str]) -> int:
    runs: Dict[str, List[Dict[Shape, float]]] = {}
    for arg in argv:
        label, path = arg.split("=", 1)
        runs.setdefault(label, []).append(parse(path))
    labels = list(runs)
    if not labels:
        print(__doc__)
        return 2
    shapes = sorted({s for rs in runs.values() for r in rs for s in r})
    med = {lb: {s: statistics.median(v) for s in shapes if (v := [r[s] for r in runs[lb] if s in r])}
           for lb in labels}
    base = labels[0]
    head = ["d", "seqlen", "causal"] + [f"{lb} TFLOP/s" for lb in labels] + [f"{lb} / {base}" for lb in labels[1:]]
    print("| " + " | ".join(head) + " |")
    print("|---" * len(head) + "|")
    logs: Dict[str, List[float]] = {lb: [] for lb in labels[1:]}
    for s in shapes:
        cells = [f"{med[lb][s]:.1f}" if s in med[lb] else "-" for lb in labels]
        ratios = []
        for lb in labels[1:]:
            if s in med[lb] and s in med[base]:
                q = med[lb][s] / med[base][s]
                logs[lb].append(math.log(q))
                ratios.append(f"{q:.3f}")
            else:
                ratios.append("-")
        print("| " + " | ".join([str(s[0]), str(s[1]), str(s[2])] + cells + ratios) + " |")
    for lb in labels[1:]:
        if logs[lb]:
            print(f"\n{lb} / {base}: geomean {math.exp(sum(logs[lb]) / len(logs[lb])):.3f} over {len(logs[lb])} shapes "
                  f"(min {math.exp(min(logs[lb])):.3f}, max {math.exp(max(logs[lb])):.3f}), "
                  f"{len(runs[lb])} round(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
