#!/usr/bin/env python3
"""SASS instructions per unmasked key tile of one sm90 forward kernel (no GPU needed).

    cuobjdump -sass -fun '<mangled kernel>' fa_fwd_sm90_hdim128.o > k.sass
    python3 dev/fwd_sm90/tile_sass_count.py k.sass [CALLS]

Counts the consumer's key-tile loop (the largest predicated backward branch) minus its masked-tile
region (the largest forward skip inside it that holds no exp2 and no inner loop: the branch of
tiles that straddle the band edge or the sequence end), plus (CALLS - 1) x the body of each inner
loop (a rolled Philox loop of CALLS trips: 4 at Bc = 128, 3 at Bc = 80; 1 when unrolled). NOPs are
not counted. The numbers in README.md ("Dropout cost") are this count."""
import re
import sys


def main() -> None:
    txt = open(sys.argv[1]).read()
    calls = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    ins = [(int(m.group(1), 16), m.group(2).strip()) for m in re.finditer(r'/\*([0-9a-f]{4,})\*/\s+(.*?);', txt)]

    def count(a: int, b: int) -> int:
        return sum(1 for pc, op in ins if a <= pc <= b and op.split()[-1] != 'NOP' and not op.startswith('NOP'))

    back, fwd = [], []
    for pc, op in ins:
        m = re.search(r'\bBRA(\.\w+)*\s+(?:!?P\d,\s*)?(0x[0-9a-f]+)', op)
        if not m or '.ANY' in op or not op.startswith('@'):
            continue
        tgt = int(m.group(2), 16)
        (back if tgt < pc else fwd).append((tgt, pc) if tgt < pc else (pc, tgt))
    loop = max(back, key=lambda r: r[1] - r[0])
    inner = [r for r in back if loop[0] < r[0] and r[1] < loop[1]]
    skips = [r for r in fwd if loop[0] < r[0] < loop[1] and r[1] <= loop[1]
             and not any(r[0] < a < r[1] for a, _ in inner)
             and not any(r[0] < pc < r[1] and 'MUFU.EX2' in op for pc, op in ins)] or [(0, 0)]
    mask = max(skips, key=lambda r: r[1] - r[0])
    total, masked = count(*loop), count(mask[0] + 16, mask[1] - 16) if mask[1] else 0
    bodies = [count(*r) for r in inner]
    print(f"loop {total} static, masked region {masked}, inner loops {bodies}: "
          f"{total - masked + (calls - 1) * sum(bodies)} per unmasked key tile")


if __name__ == "__main__":
    main()
