"""Projection of the new defaults onto run 56's bench of record: ours x (harness A/B ratio, same machine)."""
import json, math
rows = json.load(open('run56_bench/results.json'))['results']
def harness(path):
    """(d, seqlen, causal) -> sm90 TFLOP/s of a harness bench (bwd_sm90_check or sm90_check --bench)."""
    out = {}
    for line in open(path):
        t = line.split()
        if len(t) >= 7 and t[0].isdigit() and t[1].isdigit():      # bwd: d seqlen b h causal ms TFLOP/s
            out[(int(t[0]), int(t[1]), int(t[4]))] = float(t[6])
        elif len(t) >= 8 and t[0] in ("bf16", "fp16") and t[1].isdigit():  # fwd: dtype d seqlen b h causal ms TFLOP/s
            out[(int(t[1]), int(t[2]), int(t[5]))] = float(t[7])
    return out
ab = {'bwd': (harness('run58_r2_bwd_default.txt'), harness('run58_r2_bwd_br.txt')),
      'fwd': (harness('run54_fwd_oneblock.txt'), harness('run54_fwd_persist.txt'))}
tf = {}
for r in rows:
    if r['status'] == 'ok':
        tf[(r['direction'], r['head_dim'], r['seqlen'], r['causal'], r['backend'])] = r['tflops']
def persist_default(d, causal):
    return d <= 64 or (d <= 128 and causal)
print("| dir | d | causal | seqlen | cuDNN | ours run 56 | A/B ratio (harness) | ours projected | projected / cuDNN |")
print("|---|---|---|---|---|---|---|---|---|")
logs = {'fwd': [], 'bwd': [], 'fwdbwd': []}
keys = sorted({(k[1], k[2], k[3]) for k in tf if k[0] == 'bwd'}, key=lambda x: (x[0], x[2], x[1]))
for dr in ('fwd', 'bwd'):
    for d, s, c in keys:
        base, new = ab[dr]
        h = (d, s, int(c))
        ratio = new[h] / base[h] if h in base and h in new else 1.0
        if dr == 'fwd' and not persist_default(d, c): ratio = 1.0  # the one-block grid, unchanged
        if dr == 'bwd' and d > 128: ratio = 1.0
        ours = tf[(dr, d, s, c, 'ours')] * ratio
        cud = tf[(dr, d, s, c, 'sdpa_cudnn')]
        logs[dr].append(math.log(ours / cud))
        print(f"| {dr} | {d} | {'yes' if c else 'no'} | {s} | {cud:.0f} | {tf[(dr, d, s, c, 'ours')]:.0f} | {ratio:.3f} | {ours:.0f} | {ours / cud:.2f} |")
        if dr == 'bwd':
            f_ours = tf[('fwd', d, s, c, 'ours')] * (ab['fwd'][1][h] / ab['fwd'][0][h] if persist_default(d, c) else 1.0)
            # fwd+bwd time = fwd time + bwd time; flops fwd F, bwd 2.5F
            t_ours = 1 / f_ours + 2.5 / ours
            t_cud = 1 / tf[('fwd', d, s, c, 'sdpa_cudnn')] + 2.5 / cud
            logs['fwdbwd'].append(math.log(t_cud / t_ours))
for k, v in logs.items():
    print(f"\n{k}: projected ours / cuDNN geomean {math.exp(sum(v) / len(v)):.3f}, min {math.exp(min(v)):.2f} over {len(v)} configs")
