"""Compares two runs of the benchmark (results.json of `python -m flash_attn_c.bench`) made in one
device call on one GPU: for every configuration and direction, ours / each SDPA peer before and
after, and the change of that ratio. Used to show a change is speed-neutral (issue rule: every
ratio to SDPA within 3% of before).

    python benchmarks/compare_sweeps.py BEFORE/results.json AFTER/results.json [--tolerance 0.03]

BEFORE and AFTER may each be a comma-separated list of results.json (rounds that alternated
before / after in one call): every backend's TFLOP/s is then the median over its rounds, which
damps the run-to-run drift of the peers' timings.

Prints a markdown table and a summary line; exit code 1 if a ratio moved by more than the
tolerance."""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from typing import Dict, List, Tuple

Key = Tuple[str, str, int, int, bool]  # direction, dtype, head_dim, seqlen, causal


def load(paths: str) -> Dict[Key, Dict[str, float]]:
    """{config: {backend: TFLOP/s}} of the rows that ran; the median over the comma-separated
    results.json files given."""
    runs: Dict[Key, Dict[str, List[float]]] = {}
    for path in paths.split(","):
        for r in json.load(open(path))["results"]:
            if r["status"] != "ok" or r.get("tflops") is None:
                continue
            key = (r["direction"], r["dtype"], r["head_dim"], r["seqlen"], bool(r["causal"]))
            runs.setdefault(key, {}).setdefault(r["backend"], []).append(float(r["tflops"]))
    return {k: {b: statistics.median(v) for b, v in bs.items()} for k, bs in runs.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--tolerance", type=float, default=0.03)
    args = ap.parse_args(argv)
    before, after = load(args.before), load(args.after)
    peers = sorted({p for v in before.values() for p in v if p != "ours"})
    print("| direction | d | seqlen | causal | ours TFLOP/s before -> after | "
          + " | ".join(f"ours/{p} before -> after (change)" for p in peers) + " |")
    print("|---|---|---|---|---|" + "---|" * len(peers))
    worst, logs, n = 0.0, [], 0
    for key in sorted(set(before) & set(after)):
        b, a = before[key], after[key]
        if "ours" not in b or "ours" not in a:
            continue
        cells = []
        for p in peers:
            if p in b and p in a:
                rb, ra = b["ours"] / b[p], a["ours"] / a[p]
                change = ra / rb - 1.0
                worst = max(worst, abs(change))
                logs.append(math.log(ra / rb))
                n += 1
                cells.append(f"{rb:.3f} -> {ra:.3f} ({change:+.1%})")
            else:
                cells.append("n.a.")
        d, dt, hd, s, c = key
        print(f"| {d} | {hd} | {s} | {'yes' if c else 'no'} | {b['ours']:.1f} -> {a['ours']:.1f} | "
              + " | ".join(cells) + " |")
    geo = math.exp(sum(logs) / len(logs)) - 1.0 if logs else float("nan")
    ok = worst <= args.tolerance
    print(f"\n{n} ratios compared: geomean change {geo:+.2%}, largest |change| {worst:.2%} "
          f"(tolerance {args.tolerance:.0%}): {'within' if ok else 'OUTSIDE'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
