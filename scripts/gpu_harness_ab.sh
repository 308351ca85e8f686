#!/usr/bin/env bash
# Kernel A/B on the lent GPU through the native harnesses only (no extension build: a harness
# builds in about a minute), for several source trees in one call: each tree's harness is built
# (in parallel), checked (every case, FA_CHECK_VERBOSE=1 so a timeout names the case it stopped
# in), then the trees' --bench runs alternate for ROUNDS rounds and dev/harness_bench_compare.py
# prints per shape the median TFLOP/s of each tree and its ratio to the first one.
# Trees: `git archive <branch> | tar -x -C .exp/<label>` here, carried with the call (carry .exp).
#   usage: [ROUNDS=2] [CHECK_S=300] [CHECK_K=<case filter: -k / --filter>] [CHECK_TREES="label ..."] \
#          [HARNESS_ARGS="--det"] bash scripts/gpu_harness_ab.sh fwd_sm90|bwd_sm90 label=dir...
#   (HARNESS_ARGS: extra arguments of every check and bench run, e.g. bwd_sm90_check's --det for the
#   deterministic instances)
#   (CHECK_TREES: the trees whose cases are checked, default all; the float64 reference makes a full
#   fwd_sm90 check take minutes, so a known-good baseline can skip it)
#   e.g.   bash scripts/gpu_harness_ab.sh fwd_sm90 main=. pingpong=.exp/pp bc176=.exp/bc176
# Environment for the bench (e.g. FLASH_ATTN_C_SM90_BWD_PIPE) passes through to every tree alike.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/fa_out}; mkdir -p "$OUT"
H=$1; shift
case $H in fwd_sm90) exe=sm90_check; flt=-k ;; bwd_sm90) exe=bwd_sm90_check; flt=--filter ;; *) echo "harness: fwd_sm90 or bwd_sm90"; exit 2 ;; esac
log() { echo "[harness_ab $(date +%T)] $*"; }
labels=() dirs=()
for t in "$@"; do labels+=("${t%%=*}"); dirs+=("${t#*=}"); done
jobs=$(( 16 / ${#dirs[@]} )); [ $jobs -lt 2 ] && jobs=2
log "build ${labels[*]} (make -j$jobs each)"
for i in "${!dirs[@]}"; do
  ( make -C "${dirs[$i]}/dev/$H" -j$jobs all > "$OUT/make_${labels[$i]}.log" 2>&1 || tail -20 "$OUT/make_${labels[$i]}.log" ) &
done
wait
for i in "${!dirs[@]}"; do
  bin=${dirs[$i]}/dev/bin/$H
  case " ${CHECK_TREES:-${labels[*]}} " in *" ${labels[$i]} "*) ;; *) continue ;; esac
  log "check ${labels[$i]}"
  [ -x "$bin/unit_check" ] && { timeout 120 "$bin/unit_check" 2>&1 | tail -1; }
  FA_CHECK_VERBOSE=1 timeout "${CHECK_S:-300}" "$bin/$exe" ${HARNESS_ARGS:-} ${CHECK_K:+$flt "$CHECK_K"} \
    > "$OUT/check_${labels[$i]}.log" 2>&1
  rc=$?
  grep -E "^FAIL" "$OUT/check_${labels[$i]}.log" | head -5
  if [ $rc = 124 ]; then echo "TIMEOUT after ${CHECK_S:-300} s in: $(grep '^case ' "$OUT/check_${labels[$i]}.log" | tail -1)"
  else tail -1 "$OUT/check_${labels[$i]}.log"; fi
done
files=()
for r in $(seq 1 "${ROUNDS:-2}"); do
  for i in "${!dirs[@]}"; do
    f=$OUT/bench_${labels[$i]}_$r.txt
    timeout "${BENCH_S:-150}" "${dirs[$i]}/dev/bin/$H/$exe" --bench ${HARNESS_ARGS:-} > "$f" 2>&1
    files+=("${labels[$i]}=$f")
  done
done
python3 dev/harness_bench_compare.py "${files[@]}" | tee "$OUT/compare.md"
log "done"
