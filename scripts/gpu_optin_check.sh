#!/usr/bin/env bash
# One device call for the opt-in Hopper paths that have not yet run on a GPU (README, limitations):
#   FLASH_ATTN_C_SM90_BWD_DET=ordered   in-kernel ordered deterministic dQ
#   FLASH_ATTN_C_SM90_BWD_VARIANT=br80  Br = 80 backward at d in (64, 128]
#   FLASH_ATTN_C_SM90_BWD_VARIANT=br128 Br = 128 backward at d <= 64 (red.add and TMA dQ)
#   FLASH_ATTN_C_SM90_FWD_PERSIST=1     persistent forward (grouped item order, two Q slots)
#   FLASH_ATTN_C_SM90_FWD_DROPOUT=1     dropout on the sm90 forward (kDrop, dense)
# 1. the sm90 harnesses are built (in parallel);  2. correctness and compute-sanitizer groups run in parallel
# (no timings);  3. harness benches one at a time, sm90 column only (FA_BENCH_SM90_ONLY), each opt-in path
# beside its default, in priority order, each skipped once the call has run BENCH_CUTOFF s (default 480).
# The logs live in /tmp/w and are packed into $OUT/w.tgz after every step, so a call cut short by the
# session's device time still brings back what had run. Decide from cmp_*.md (dev/harness_bench_compare.py).
#   usage: BENCH_CUTOFF=480 CHECK_S=150 [EXP_BWD_TREE=.exp/st] bash scripts/gpu_optin_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/fa_out}; W=/tmp/w; mkdir -p $W $OUT
snapshot() { tar czf $OUT/w.tgz.tmp -C /tmp w && mv $OUT/w.tgz.tmp $OUT/w.tgz; }
export FLASH_ATTN_C_CUDA_ARCHS=${FLASH_ATTN_C_CUDA_ARCHS:-90a} PYTHONUNBUFFERED=1
CHECK_S=${CHECK_S:-150}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $W/env.txt
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
make -C dev/bwd_sm90 -j8 all > $W/make_bwd.log 2>&1 || tail -5 $W/make_bwd.log &
make -C dev/fwd_sm90 -j8 all > $W/make_fwd.log 2>&1 || tail -5 $W/make_fwd.log &
wait; echo "builds $(el) s"
# EXP_BWD_TREE: a copy of the tree (e.g. .exp/st, other tuning rows) whose backward harness builds in the
# background while the checks run, then benches after br128 as bwd_exp (compare with bwd_default)
if [ -n "${EXP_BWD_TREE:-}" ]; then
  make -C $EXP_BWD_TREE/dev/bwd_sm90 -j6 all > $W/make_exp.log 2>&1 &
fi
B=dev/bin/bwd_sm90/bwd_sm90_check; F=dev/bin/fwd_sm90/sm90_check
san() { # tool log cmd...: compute-sanitizer summary lines
  local tool=$1 log=$2; shift 2
  { echo "== compute-sanitizer --tool $tool $*"; timeout $CHECK_S compute-sanitizer --tool $tool "$@" 2>&1 |
      grep -E "passed|ERROR SUMMARY|RACECHECK SUMMARY|Invalid|out of bounds|hazard|Barrier|FAIL" | head -8
    echo "rc ${PIPESTATUS[0]}"; } >> $W/$log 2>&1
}
chk() { # log name cmd...: the harness's FAIL lines and its summary
  local log=$1 name=$2; shift 2
  { echo "== $*"; FA_CHECK_VERBOSE=1 timeout $CHECK_S "$@" > $W/$name.log 2>&1; echo "rc $?"
    grep -E "^FAIL" $W/$name.log | head -5; tail -3 $W/$name.log; } >> $W/$log 2>&1
}
( chk g1.log bwd_det $B --det ) &                             # every case, ordered dQ, run twice, bitwise equal
( san racecheck g2.log $B --det --filter gqa ) &
( san synccheck g3.log $B --det --filter gqa
  san memcheck g3.log $B --det --filter gqa ) &
( export FLASH_ATTN_C_SM90_BWD_VARIANT=br80
  chk g4.log br80_full $B ) &                                 # every case; the pipe tma modes on Br = 80
( export FLASH_ATTN_C_SM90_BWD_VARIANT=br80
  san racecheck g5.log $B --filter "dense d128"
  san memcheck g5.log $B --filter "dense d128" ) &
( chk g6.log persist_k $F -k persist
  san racecheck g6.log $F -k "persist bf16 b30"
  san synccheck g6.log $F -k persist ) &
( chk g7.log fwd_drop $F -k drop
  san racecheck g7.log $F -k drop
  san memcheck g7.log $F -k drop ) &
( FLASH_ATTN_C_SM90_FWD_PERSIST=1 chk g8.log persist_all $F ) &   # every plain dense d <= 128 case, persistent
( export FLASH_ATTN_C_SM90_BWD_VARIANT=br128
  chk g9.log br128_full $B                                    # every case; pipe / pipe tma at d <= 64 on Br = 128
  san racecheck g9.log $B --filter "dense d64"
  san synccheck g9.log $B --filter "gqa 8/2 causal d64"
  san memcheck g9.log $B --filter "dense d64" ) &
wait
for g in 1 2 3 4 5 6 7 8 9; do echo "######## group $g"; cat $W/g$g.log; done > $W/checks.txt
cat $W/checks.txt; echo "checks done at $(el) s"; snapshot
export FA_BENCH_SM90_ONLY=1
bench() { # name cmd...
  local name=$1; shift
  if [ $(el) -gt ${BENCH_CUTOFF:-480} ]; then echo "skip $name (at $(el) s)"; return; fi
  timeout 90 "$@" > $W/$name.txt 2>&1; echo "$name done at $(el) s"; snapshot
}
bench bwd_default $B --bench
bench bwd_br80 env FLASH_ATTN_C_SM90_BWD_VARIANT=br80 $B --bench
bench bwd_br128 env FLASH_ATTN_C_SM90_BWD_VARIANT=br128 $B --bench
if [ -n "${EXP_BWD_TREE:-}" ]; then
  X=$EXP_BWD_TREE/dev/bin/bwd_sm90/bwd_sm90_check   # built by the time the checks' wait returned
  if [ -x $X ]; then bench bwd_exp $X --bench; else tail -5 $W/make_exp.log; fi
fi
bench bwd_det_pass $B --bench --det
bench bwd_det_ordered env FLASH_ATTN_C_SM90_BWD_DET=ordered $B --bench --det
bench fwd_oneblock $F --bench
bench fwd_persist env FLASH_ATTN_C_SM90_FWD_PERSIST=1 $F --bench
C=dev/harness_bench_compare.py
python3 $C default=$W/bwd_default.txt br80=$W/bwd_br80.txt > $W/cmp_bwd_br80.md 2>&1
python3 $C default=$W/bwd_default.txt br128=$W/bwd_br128.txt > $W/cmp_bwd_br128.md 2>&1
[ -f $W/bwd_exp.txt ] && python3 $C default=$W/bwd_default.txt exp=$W/bwd_exp.txt > $W/cmp_bwd_exp.md 2>&1
python3 $C atomic=$W/bwd_default.txt det_pass=$W/bwd_det_pass.txt det_ordered=$W/bwd_det_ordered.txt > $W/cmp_bwd_det.md 2>&1
python3 $C oneblock=$W/fwd_oneblock.txt persist=$W/fwd_persist.txt > $W/cmp_fwd_persist.md 2>&1
cat $W/cmp_*.md; echo "total $(el) s"; snapshot
# dropout's speed goes through the extension: python3 benchmarks/sm90_feat_cost.py --dropout 0.1 (after gpu_run.sh builds it)
