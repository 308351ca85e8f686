#!/usr/bin/env bash
# session 15, backward call: tconv (d > 128: tiled dq_accum cleared by the prep pass, staged convert)
# and det256 (ORDERED deterministic d > 128, opt-in FLASH_ATTN_C_SM90_BWD_DET256=1; on tconv).
# Trees (run from /work/main): mkdir -p .exp/{tconv,det256}; git archive tconv | tar -x -C .exp/tconv;
#   git archive det256 | tar -x -C .exp/det256. carry [".exp/tconv", ".exp/det256", ".exp/callB.sh"]
O0=$OUT; pack() { tar czf $O0/r.tgz -C /tmp ob oc 2>/dev/null; }
export FA_BENCH_SM90_ONLY=1 FA_BENCH_D=256 CHECK_K=d256
export OUT=/tmp/ob; mkdir -p $OUT   # atomic d256: main vs tconv (det256's atomic path = tconv's)
CHECK_TREES="tconv" CHECK_S=80 ROUNDS=2 timeout 230 bash scripts/gpu_harness_ab.sh bwd_sm90 main=. tconv=.exp/tconv det256=.exp/det256 > $OUT/ab.log 2>&1
tail -20 $OUT/ab.log; pack
export OUT=/tmp/oc; mkdir -p $OUT   # deterministic d256: main (dK/dV + dQ pass) vs det256 (mode 9)
FLASH_ATTN_C_SM90_BWD_DET256=1 HARNESS_ARGS=--det CHECK_TREES=det256 CHECK_S=80 ROUNDS=2 timeout 200 bash scripts/gpu_harness_ab.sh bwd_sm90 main=. det256=.exp/det256 > $OUT/ab.log 2>&1
grep -h "det256 ordered\|passed" $OUT/check_det256.log; tail -16 $OUT/ab.log; pack
T=.exp/tconv/dev/bin/bwd_sm90/bwd_sm90_check; D=.exp/det256/dev/bin/bwd_sm90/bwd_sm90_check
{ for t in racecheck synccheck memcheck; do
    echo "== tconv $t"; timeout 25 compute-sanitizer --tool $t $T --filter "causal d256" 2>&1 | tail -2
    echo "== det256 $t"; FLASH_ATTN_C_SM90_BWD_DET256=1 timeout 25 compute-sanitizer --tool $t $D --det --filter "d256" 2>&1 | tail -2
  done; } 2>&1 | tee $OUT/san.log
pack
