"""Summaries of call J's compare_*.md: candidate / main per d (geomean, min, max), and feature / plain
(m's feature TFLOP/s over main's plain TFLOP/s of the same run)."""
import math, sys, os
D = sys.argv[1]
def load(name):
    p = os.path.join(D, f"compare_{name}.md")
    if not os.path.exists(p): return None
    rows = {}
    for line in open(p):
        c = [x.strip() for x in line.strip().strip("|").split("|")]
        if len(c) < 4 or not c[0].isdigit(): continue
        rows[(int(c[0]), int(c[1]), int(c[2]))] = [float(x) for x in c[3:]]
    return rows
def gm(xs): return math.exp(sum(map(math.log, xs)) / len(xs)) if xs else float("nan")
plain = load("plain"); atomic = load("atomic")
for name in ["cap", "drop", "alibi", "det"]:
    r = load(name)
    if r is None: print(name, "missing"); continue
    print(f"== {name}: candidate / main")
    for d in sorted({k[0] for k in r}):
        xs = [v[1] / v[0] for k, v in r.items() if k[0] == d]
        print(f"  d{d}: geomean {gm(xs):.3f} min {min(xs):.3f} max {max(xs):.3f} (n={len(xs)})")
    xs = [v[1] / v[0] for v in r.values()]; print(f"  all: geomean {gm(xs):.3f} min {min(xs):.3f}")
    base = atomic if name == "det" else plain
    if base:
        for lab, col in (("main", 0), ("cand", 1)):
            xs = [v[col] / base[k][0] for k, v in r.items() if k in base]
            if xs: print(f"  {lab} / {'atomic' if name=='det' else 'plain'}: geomean {gm(xs):.3f} min {min(xs):.3f} max {max(xs):.3f}"
                         + ("  (cost = 1/ratio: max %.3f)" % (1 / min(xs)) if name == "det" else ""))
