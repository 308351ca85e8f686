#!/usr/bin/env bash
# call 51: correctness + compute-sanitizer, groups in parallel (no timings in this call).
# trees: .exp/bwdnext (sm90-bwd-next: main's backward split by role, SASS-identical, + opt-in d=256 instance),
#        .exp/persist (sm90-fwd-persist: forward split, SASS-identical, + opt-in persistent grid), .exp/bc80
set -uo pipefail
OUT=${OUT:-/tmp/o}; W=$OUT/w; mkdir -p $W
export FLASH_ATTN_C_CUDA_ARCHS=90a PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $W/env.txt
python3 -c "import torch; print('torch', torch.__version__, 'cudnn', torch.backends.cudnn.version())" | tee -a $W/env.txt
T0=$(date +%s)
make -C .exp/bwdnext/dev/bwd_sm90 -j6 all > $W/make_bwd.log 2>&1 || tail -20 $W/make_bwd.log &
make -C .exp/persist/dev/fwd_sm90 -j5 all > $W/make_persist.log 2>&1 || tail -20 $W/make_persist.log &
make -C .exp/bc80/dev/fwd_sm90 -j5 all > $W/make_bc80.log 2>&1 || tail -20 $W/make_bc80.log &
wait; echo "builds $(( $(date +%s) - T0 )) s"
B=.exp/bwdnext/dev/bin/bwd_sm90; F=.exp/persist/dev/bin/fwd_sm90
san() { # tool log timeout cmd...
  local tool=$1 log=$2 to=$3; shift 3
  { echo "== compute-sanitizer --tool $tool $*"; timeout $to compute-sanitizer --tool $tool "$@" 2>&1 | grep -E "passed|ERROR SUMMARY|RACECHECK SUMMARY|Invalid|out of bounds|hazard|Barrier|FAIL" | head -8; echo "rc ${PIPESTATUS[0]}"; } >> $W/$log 2>&1
}
chk() { # log timeout cmd...
  local log=$1 to=$2; shift 2
  { echo "== $*"; FA_CHECK_VERBOSE=1 timeout $to "$@" > /tmp/chk_$$_$RANDOM.log 2>&1; echo "rc $?"; } >> $W/$log 2>&1
}
( $B/unit_check 2>&1 | tail -2 > $W/g1.log
  { echo "== bwd --filter d256"; FA_CHECK_VERBOSE=1 timeout 200 $B/bwd_sm90_check --filter d256 > $W/bwd_d256.log 2>&1; echo "rc $?"; grep -E "^FAIL" $W/bwd_d256.log | head -5; tail -1 $W/bwd_d256.log; } >> $W/g1.log
  san memcheck g1.log 150 $B/bwd_sm90_check --filter d64
  san synccheck g1.log 150 $B/bwd_sm90_check --filter d64 ) &
( san racecheck g2.log 200 $B/bwd_sm90_check --filter d64
  san memcheck g2.log 150 $B/bwd_sm90_check --filter d256
  san synccheck g2.log 120 $B/bwd_sm90_check --filter d256 ) &
( san racecheck g3.log 180 $B/bwd_sm90_check --filter "dense d256"
  san racecheck g3.log 150 $B/bwd_sm90_check --filter "sq1025 sk17 d256"
  { echo "== bwd full check"; FA_CHECK_VERBOSE=1 timeout 200 $B/bwd_sm90_check > $W/bwd_full.log 2>&1; echo "rc $?"; grep -E "^FAIL" $W/bwd_full.log | head -5; tail -1 $W/bwd_full.log; } >> $W/g3.log ) &
( $F/unit_check 2>&1 | tail -2 > $W/g4.log
  { echo "== persist -k persist"; FA_CHECK_VERBOSE=1 timeout 150 $F/sm90_check -k persist > $W/persist_k.log 2>&1; echo "rc $?"; grep -E "^FAIL|note" $W/persist_k.log | head -5; tail -1 $W/persist_k.log; } >> $W/g4.log
  { echo "== PERSIST=1 full fwd check"; FLASH_ATTN_C_SM90_FWD_PERSIST=1 FA_CHECK_VERBOSE=1 timeout 330 $F/sm90_check > $W/persist_full.log 2>&1; echo "rc $?"; grep -E "^FAIL" $W/persist_full.log | head -5; tail -1 $W/persist_full.log; } >> $W/g4.log ) &
( for t in memcheck racecheck synccheck; do san $t g5.log 100 $F/sm90_check -k "persist bf16 b7"; done
  for t in racecheck synccheck; do san $t g5.log 100 $F/sm90_check -k "persist bf16 b30"; done ) &
( { echo "== bc80 -k ' d2'"; FA_CHECK_VERBOSE=1 timeout 200 .exp/bc80/dev/bin/fwd_sm90/sm90_check -k " d2" > $W/bc80.log 2>&1; echo "rc $?"; grep -E "^FAIL" $W/bc80.log | head -5; tail -1 $W/bc80.log; } > $W/g6.log ) &
wait
echo "total $(( $(date +%s) - T0 )) s"
for g in 1 2 3 4 5 6; do echo "######## group $g"; cat $W/g$g.log; done
cd $OUT && tar czf w.tgz w && rm -rf w
