#!/usr/bin/env bash
# Before/after in one call on the lent GPU: the tree at BASE_DIR (a `git archive` of the baseline
# commit, carried along with the call) and this tree are each built in place; the given test files
# run against the baseline (new tests that must fail there: "failing before"), and the standard
# sweep runs on both, baseline first, then benchmarks/compare_sweeps.py compares every ratio.
# ROUNDS=n alternates n sweeps of each side (before, after, before, ...); the comparison takes
# each backend's median over the rounds, which damps the drift of the peers' timings.
#   usage: BASE_DIR=.before BASE_COMMIT=<sha> GIT_COMMIT=<sha> [ROUNDS=2] bash scripts/gpu_before_after.sh [test files...]
# (the commits name the two trees in the bench headers: the device's copy of .git may be stale)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/fa_out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MAX_JOBS=${MAX_JOBS:-16} FLASH_ATTN_C_CUDA_ARCHS=${FLASH_ATTN_C_CUDA_ARCHS:-90a}
BASE_DIR=${BASE_DIR:-.before}
SWEEP=${SWEEP:---preset sweep --directions fwd,bwd,fwdbwd --peers sdpa_flash,sdpa_cudnn,sdpa_efficient --no-plots}
log() { echo "[before_after $(date +%T)] $*"; }
build() { (cd "$1" && python3 setup.py build_ext --inplace > "$OUT/build_$2.log" 2>&1) || { tail -30 "$OUT/build_$2.log"; exit 1; }; }
log "build baseline ($BASE_DIR) and this tree"
build "$BASE_DIR" before & build . after & wait
if [ $# -gt 0 ]; then
  log "new tests on the baseline (expected to fail there)"
  (cd "$BASE_DIR" && timeout 240 python3 -m pytest "$@" -m gpu -q -n 8 -p no:cacheprovider --continue-on-collection-errors > "$OUT/tests_before.log" 2>&1)
  grep -E "^(FAILED|ERROR)" "$OUT/tests_before.log" | cut -c1-160 | head -15; tail -1 "$OUT/tests_before.log"
fi
SWEEP_S=${SWEEP_S:-280}
befores=() afters=()
for r in $(seq 1 "${ROUNDS:-1}"); do
  log "sweep $r: baseline"
  (cd "$BASE_DIR" && FLASH_ATTN_C_GIT_COMMIT=${BASE_COMMIT:-baseline} PYTHONPATH=$PWD timeout $SWEEP_S python3 -m flash_attn_c.bench ${SWEEP/--preset sweep/--preset issue} --out "$OUT/sweep_before_$r" > "$OUT/sweep_before_$r.log" 2>&1)
  log "sweep $r: this tree"
  FLASH_ATTN_C_GIT_COMMIT=${GIT_COMMIT:-this-tree} PYTHONPATH=$PWD timeout $SWEEP_S python3 -m flash_attn_c.bench $SWEEP --out "$OUT/sweep_after_$r" > "$OUT/sweep_after_$r.log" 2>&1
  befores+=("$OUT/sweep_before_$r/results.json") afters+=("$OUT/sweep_after_$r/results.json")
done
join() { local IFS=,; echo "$*"; }
python3 benchmarks/compare_sweeps.py "$(join "${befores[@]}")" "$(join "${afters[@]}")" > "$OUT/compare.md"
tail -1 "$OUT/compare.md"
(cd "$OUT" && tar -czf sweeps.tgz sweep_before_* sweep_after_* build_*.log && rm -rf sweep_before_* sweep_after_* build_*.log)
log "done"
