#!/usr/bin/env bash
# One call on the lent GPU machine: build the extension, run the GPU test suite, the dev kernel
# harnesses and the benchmark; logs and results land in $OUT (at most 8 files come back).
#   usage: bash scripts/gpu_run.sh [tests|bench|all] [extra pytest args...]
set -uo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}; shift || true
OUT=${OUT:-/tmp/fa_out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MAX_JOBS=${MAX_JOBS:-16}
# Only the GPU in hand (sm_90) is built here, which halves the compile time of a test run.
export FLASH_ATTN_C_CUDA_ARCHS=${FLASH_ATTN_C_CUDA_ARCHS:-90a}
PYTEST_S=${PYTEST_S:-240} BENCH_S=${BENCH_S:-240} NPROC=${NPROC:-8}
log() { echo "[gpu_run $(date +%T)] $*"; }
# the tree copied to the device may carry a stale .git: the bench header takes the given commit
[ -n "${GIT_COMMIT:-}" ] && export FLASH_ATTN_C_GIT_COMMIT=$GIT_COMMIT

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())"
  echo "commit ${GIT_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

log "build"
t0=$(date +%s)
python3 -m pip install -v --no-build-isolation --no-deps -e . > "$OUT/build.log" 2>&1 || { tail -50 "$OUT/build.log"; exit 1; }
log "build took $(( $(date +%s) - t0 )) s"; grep "build plan" "$OUT/build.log"

if [ "$what" = tests ] || [ "$what" = all ]; then
  log "dev harnesses"
  for h in dev/fwd dev/bwd dev/fwd_sm90 dev/bwd_sm90; do
    [ -f $h/Makefile ] || continue
    (env -u OUT make -C $h -j16 GENCODE="-gencode arch=compute_90a,code=sm_90a" >/dev/null 2>&1 && env -u OUT timeout 150 make -C $h run GENCODE="-gencode arch=compute_90a,code=sm_90a") 2>&1 | grep -E "FAIL|passed|failed|error" | head -30
  done > "$OUT/harness.log" 2>&1
  tail -6 "$OUT/harness.log"
  log "pytest (gpu)"
  timeout $PYTEST_S python3 -m pytest tests -m gpu -q -n $NPROC --timeout 200 -p no:cacheprovider "$@" > "$OUT/pytest_gpu.log" 2>&1
  grep -E "^(FAILED|ERROR)" "$OUT/pytest_gpu.log" | cut -c1-220 | head -40; tail -3 "$OUT/pytest_gpu.log"
fi
if [ "$what" = bench ] || [ "$what" = all ]; then
  log "benchmark"
  timeout $BENCH_S python3 -m flash_attn_c.bench --preset sweep --out "$OUT/bench" > "$OUT/bench.log" 2>&1
  tail -40 "$OUT/bench.log"
  # At most 8 files come back from the device: the bench folder travels as one archive.
  tar -C "$OUT" -czf "$OUT/bench.tgz" bench && rm -rf "$OUT/bench"
fi
if [ "$what" = all ] || [ "$what" = extras ]; then
  log "compute-sanitizer memcheck on small harness subsets"
  for c in "dev/bin/fwd/fwd_check -k varlen" "dev/bin/fwd_sm90/sm90_check -k sq17" \
           "dev/bin/bwd/bwd_check --filter varlen" "dev/bin/bwd_sm90/bwd_sm90_check --filter gqa"; do
    [ -x "${c%% *}" ] || continue
    echo "== compute-sanitizer --tool memcheck $c"
    timeout 50 compute-sanitizer --tool memcheck $c 2>&1 | grep -E "passed|ERROR SUMMARY|Invalid|out of bounds" | head -8
  done > "$OUT/sanitizer.log" 2>&1
  cat "$OUT/sanitizer.log"
  log "deterministic backward cost"
  timeout 120 python3 benchmarks/deterministic_cost.py > "$OUT/deterministic.log" 2>&1; cat "$OUT/deterministic.log"
  log "long sequences (memory)"
  timeout 200 python3 -m flash_attn_c.bench --long --out "$OUT/long" > "$OUT/long.log" 2>&1
  tail -25 "$OUT/long.log"; rm -rf "$OUT/long"
  cat "$OUT/sanitizer.log" "$OUT/deterministic.log" "$OUT/long.log" > "$OUT/extras.log" && rm "$OUT/sanitizer.log" "$OUT/deterministic.log" "$OUT/long.log"
fi
log "done"
