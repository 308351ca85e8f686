#!/usr/bin/env bash
# One device call that checks and A/B-times the Hopper kernel paths: the defaults of H100 run 54 / H200
# run 62 and the alternatives their switches keep (README, "Kernel selection on Hopper"):
#   backward   default tiles (Br = 80 at d in (64, 128], Br = 128 at d <= 64) | FLASH_ATTN_C_SM90_BWD_VARIANT=br64
#   determ.    ORDERED dQ on the Br = 80 / 128 tiles (default; Br = 64 else)  | FLASH_ATTN_C_SM90_BWD_DET=pass
#              (=ordered_br names the default)                                | FLASH_ATTN_C_SM90_BWD_DET=ordered (Br = 64)
#   forward    persistent grid at d <= 64 and causal d <= 128 (default)       | FLASH_ATTN_C_SM90_FWD_PERSIST=0 / =1
#              dropout on the sm90 kDrop instance (default)                   | FLASH_ATTN_C_SM90_FWD_DROPOUT=0
#   d = 256    issue #13's go / no-go (last, under BENCH_CUTOFF): reduce_bw (fp32 dQ add bandwidth, TMA reduce
#              vs red.add) and bwd_sm90_check_nodq (the d = 256 kernel without dQ traffic); dev/bwd_sm90/README.md
# 1. the sm90 harnesses are built (in parallel);  2. correctness and compute-sanitizer groups run in parallel
# (no timings);  3. harness benches one at a time, sm90 column only (FA_BENCH_SM90_ONLY), in priority order,
# each skipped once the call has run BENCH_CUTOFF s (default 480).
# The logs live in /tmp/w and are packed into $OUT/w.tgz after every step, so a call cut short by the
# session's device time still brings back what had run. Decide from cmp_*.md (dev/harness_bench_compare.py).
#   usage: BENCH_CUTOFF=480 CHECK_S=150 [EXP_BWD_TREE=.exp/st] bash scripts/gpu_sm90_check.sh
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
# background while the checks run, then benches after the default as bwd_exp (compare with bwd_default)
if [ -n "${EXP_BWD_TREE:-}" ]; then
  make -C $EXP_BWD_TREE/dev/bwd_sm90 -j6 all > $W/make_exp.log 2>&1 &
fi
# the no-dQ d = 256 harness (two more objects) builds during the checks
make -C dev/bwd_sm90 -j4 nodq > $W/make_nodq.log 2>&1 || tail -5 $W/make_nodq.log &
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
    grep -E "^FAIL" $W/$name.log | head -5; tail -4 $W/$name.log; } >> $W/$log 2>&1
}
( chk g1.log bwd_all $B ) &                                   # every case, every mode, the default tiles (counted)
( FLASH_ATTN_C_SM90_BWD_VARIANT=br64 chk g2.log bwd_br64 $B ) &   # every case on the Br = 64 tile
( export FLASH_ATTN_C_SM90_BWD_DET=ordered                    # the Br = 64 ORDERED opt-out, every case run twice
  chk g3.log bwd_det_ordered $B --det                         # (bitwise equal), every dense call on mode 3
  san racecheck g3.log $B --det --filter gqa
  san synccheck g3.log $B --det --filter gqa ) &
( unset FLASH_ATTN_C_SM90_BWD_DET                             # the default: ORDERED Br = 80 / 128 (modes 7 / 8)
  chk g4.log bwd_det $B --det
  san racecheck g4.log $B --det --filter "dense d128"
  san racecheck g4.log $B --det --filter "dense d64"
  san memcheck g4.log $B --det --filter gqa ) &
( san racecheck g5.log $B --filter "dense d128"
  san racecheck g5.log $B --filter "dense d64"
  san memcheck g5.log $B --filter "dense d" ) &
( san synccheck g6.log $B --filter "gqa 8/2 causal"
  san memcheck g6.log $B --det --filter "dense d" ) &
( CHECK_S=$((CHECK_S + 90)) chk g7.log fwd_all $F ) &         # every forward case at the defaults
( chk g8.log fwd_persist0 env FLASH_ATTN_C_SM90_FWD_PERSIST=0 $F -k " d64"
  san racecheck g8.log $F -k "persist bf16 b30"
  san synccheck g8.log $F -k persist
  san memcheck g8.log $F -k drop ) &
wait
for g in 1 2 3 4 5 6 7 8; do echo "######## group $g"; cat $W/g$g.log; done > $W/checks.txt
cat $W/checks.txt; echo "checks done at $(el) s"; snapshot
export FA_BENCH_SM90_ONLY=1
bench() { # name cmd...
  local name=$1; shift
  if [ $(el) -gt ${BENCH_CUTOFF:-480} ]; then echo "skip $name (at $(el) s)"; return; fi
  timeout ${BENCH_T:-90} "$@" > $W/$name.txt 2>&1; echo "$name done at $(el) s"; snapshot
}
bench bwd_default $B --bench
bench bwd_det $B --bench --det                                # the default: ORDERED Br = 80 / 128
bench bwd_det_ordered env FLASH_ATTN_C_SM90_BWD_DET=ordered $B --bench --det   # the Br = 64 opt-out
bench bwd_br64 env FLASH_ATTN_C_SM90_BWD_VARIANT=br64 $B --bench
if [ -n "${EXP_BWD_TREE:-}" ]; then
  X=$EXP_BWD_TREE/dev/bin/bwd_sm90/bwd_sm90_check   # built by the time the checks' wait returned
  if [ -x $X ]; then bench bwd_exp $X --bench; else tail -5 $W/make_exp.log; fi
fi
bench fwd_default $F --bench
bench fwd_persist0 env FLASH_ATTN_C_SM90_FWD_PERSIST=0 $F --bench
bench fwd_persist1 env FLASH_ATTN_C_SM90_FWD_PERSIST=1 $F --bench   # persistent everywhere: short non-causal d 128 / 256?
bench bwd_det_pass env FLASH_ATTN_C_SM90_BWD_DET=pass $B --bench --det
BENCH_T=60 bench reduce_bw dev/bin/bwd_sm90/reduce_bw             # fp32 dQ add GB/s per path (issue #13)
BENCH_T=60 bench bwd_nodq dev/bin/bwd_sm90/bwd_sm90_check_nodq --bench   # d = 256 without dQ traffic
C=dev/harness_bench_compare.py
python3 $C default=$W/bwd_default.txt br64=$W/bwd_br64.txt > $W/cmp_bwd_br64.md 2>&1
python3 $C atomic=$W/bwd_default.txt ordered_br=$W/bwd_det.txt ordered=$W/bwd_det_ordered.txt \
  pass=$W/bwd_det_pass.txt > $W/cmp_bwd_det.md 2>&1
[ -f $W/bwd_exp.txt ] && python3 $C default=$W/bwd_default.txt exp=$W/bwd_exp.txt > $W/cmp_bwd_exp.md 2>&1
python3 $C default=$W/fwd_default.txt persist0=$W/fwd_persist0.txt $([ -f $W/fwd_persist1.txt ] && echo persist1=$W/fwd_persist1.txt) \
  > $W/cmp_fwd_persist.md 2>&1
[ -f $W/bwd_nodq.txt ] && python3 $C default=$W/bwd_default.txt nodq=$W/bwd_nodq.txt > $W/cmp_bwd_nodq.md 2>&1
[ -f $W/reduce_bw.txt ] && cat $W/reduce_bw.txt
cat $W/cmp_*.md; echo "total $(el) s"; snapshot
# the extension's own suite and the bench of record: scripts/gpu_run.sh tests / bench;
# dropout's cost through the extension: python3 benchmarks/sm90_feat_cost.py --dropout 0.1 (after gpu_run.sh builds it)
# softcap / ALiBi on the backward (FEAT instance vs sm80): python3 benchmarks/sm90_bwd_feat_cost.py (after gpu_run.sh builds it)
