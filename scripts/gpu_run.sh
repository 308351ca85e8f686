#!/usr/bin/env bash
# One call on the lent GPU machine: build the extension, run the GPU test suite, the dev kernel
# harnesses and the benchmark; logs and results land in $OUT (at most 8 files come back).
#   usage: bash scripts/gpu_run.sh [tests|bench|sanitize|extras|optin|all] [extra pytest args...]
#   (sanitize: compute-sanitizer on the harnesses the GPU suite built; extras: sanitize + the
#   deterministic-cost and long-sequence runs; optin: the opt-in paths never yet run on a GPU, in
#   one call: their GPU tests, their harness cases and their A/B cost scripts, the harnesses built
#   here, so `sanitize` can follow on the same warm machine)
set -uo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}; shift || true
OUT=${OUT:-/tmp/fa_out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MAX_JOBS=${MAX_JOBS:-16}
# Only the GPU in hand (sm_90) is built here, which halves the compile time of a test run.
export FLASH_ATTN_C_CUDA_ARCHS=${FLASH_ATTN_C_CUDA_ARCHS:-90a}
PYTEST_S=${PYTEST_S:-480} BENCH_S=${BENCH_S:-240} NPROC=${NPROC:-8}
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
  # the GPU suite; it builds and runs the native harnesses of dev/ too (tests/test_native_harnesses.py,
  # with the package's flags and FLASH_ATTN_C_CUDA_ARCHS), printing their pass counts (-rA lines)
  log "pytest (gpu)"
  timeout $PYTEST_S python3 -m pytest tests -m gpu -q -n $NPROC --timeout 200 -p no:cacheprovider -rA "$@" > "$OUT/pytest_gpu.log" 2>&1
  grep -E "^(FAILED|ERROR)" "$OUT/pytest_gpu.log" | cut -c1-220 | head -40
  grep -E "^(fwd|fwd_sm90|bwd|bwd_sm90): [0-9]+ passed" "$OUT/pytest_gpu.log" | sort -u; tail -3 "$OUT/pytest_gpu.log" | grep -E "passed|failed"
fi
if [ "$what" = optin ]; then
  # FLASH_ATTN_C_SM90_BWD_FEAT (softcap / ALiBi backward), FLASH_ATTN_C_SM90_FWD_PERSIST_FEAT (one
  # feature on the persistent forward), FLASH_ATTN_C_SM90_FWD_CAP_SLIM, and the op-check crash cases
  log "pytest (opt-in paths)"
  timeout 240 python3 -m pytest tests/test_sm90_bwd_feat.py tests/test_sm90_fwd_persist_feat.py \
    tests/test_sm90_cap_slim.py tests/test_bad_input.py -m gpu -q -n $NPROC --timeout 200 -p no:cacheprovider \
    -rfE "$@" > "$OUT/pytest_optin.log" 2>&1
  grep -E "^(FAILED|ERROR)" "$OUT/pytest_optin.log" | cut -c1-220 | head -40; tail -2 "$OUT/pytest_optin.log"
  log "harnesses (built here: bwd_sm90, fwd_sm90)"
  make -C dev/bwd_sm90 -j $MAX_JOBS > "$OUT/harness_optin.log" 2>&1 && make -C dev/fwd_sm90 -j $MAX_JOBS >> "$OUT/harness_optin.log" 2>&1
  { timeout 120 dev/bin/bwd_sm90/bwd_sm90_check --filter feat 2>&1 | grep -E "^FAIL|^pipe feat modes|passed"
    timeout 120 dev/bin/fwd_sm90/sm90_check -k persistfeat 2>&1 | grep -E "^FAIL|passed"; } >> "$OUT/harness_optin.log" 2>&1
  grep -E "FAIL|^pipe feat modes|passed|Error|error:" "$OUT/harness_optin.log" | head -20
  log "A/B: softcap / ALiBi backward (FEAT vs sm80), one-feature forward (persistent grid or not)"
  { timeout 150 python3 benchmarks/sm90_bwd_feat_cost.py --seqlens 1024,4096,16384
    for pf in 0 1; do echo "== FLASH_ATTN_C_SM90_FWD_PERSIST_FEAT=$pf"
      FLASH_ATTN_C_SM90_FWD_PERSIST_FEAT=$pf timeout 100 python3 benchmarks/sm90_feat_cost.py --seqlens 1024,4096,16384 --dropout 0.1; done
  } > "$OUT/ab_optin.log" 2>&1
  grep -E "geomean|Error|error" "$OUT/ab_optin.log"
fi
if [ "$what" = bench ] || [ "$what" = all ]; then
  log "benchmark"
  timeout $BENCH_S python3 -m flash_attn_c.bench --preset sweep --out "$OUT/bench" > "$OUT/bench.log" 2>&1
  tail -40 "$OUT/bench.log"
  # At most 8 files come back from the device: the bench folder travels as one archive.
  tar -C "$OUT" -czf "$OUT/bench.tgz" bench && rm -rf "$OUT/bench"
fi
if [ "$what" = all ] || [ "$what" = extras ] || [ "$what" = sanitize ]; then
  log "compute-sanitizer on small harness subsets (memcheck everywhere; racecheck, synccheck on the Hopper kernels)"
  # bwd_sm90_check runs every case in all its modes (sm90, pipe = FLASH_ATTN_C_SM90_BWD_PIPE=1, pipe tma
  # = =2: the dQ-writer warp and its named barriers), so each --filter below covers all three kernels;
  # --filter sq1025: long query ranges per CTA (17 query blocks: many dQ FULL/EMPTY generations; it
  # selects the d = 64 and d = 256 tiles' sq1025 cases too); --filter d256: the dim-split instance
  # (d 136..256); -k drop: the forward's dropout variant (opt-in; the harness sets it); --det: only the ORDERED deterministic instances (FLASH_ATTN_C_SM90_BWD_DET as given;
  # unset: the default Br = 80 / 128 ones); -k persist: the persistent forward's cases (items without key tiles too)
  # first the instances that have not yet had a sanitizer run to its summary (filters with spaces:
  # tool|harness|filter): CAP_SLIM (opt-in softcap), the persistent grid with one feature (opt-in),
  # the backward's softcap / ALiBi FEAT instance (opt-in; its "pipe feat" mode sets the switch)
  for spec in "memcheck|fwd|capslim bf16 b1 h6/3" "synccheck|fwd|capslim bf16 b1 h6/3" "racecheck|fwd|capslim bf16 b1 h6/3 d128" \
              "memcheck|fwd|persistfeat bf16 b7" "synccheck|fwd|persistfeat bf16 b7" "racecheck|fwd|persistfeat bf16 b1" \
              "memcheck|bwd|feat alibi" "synccheck|bwd|feat softcap" "racecheck|bwd|feat softcap alibi window"; do
    tool=${spec%%|*}; rest=${spec#*|}; which=${rest%%|*}; filt=${rest#*|}
    if [ "$which" = fwd ]; then exe=dev/bin/fwd_sm90/sm90_check; opt=-k; else exe=dev/bin/bwd_sm90/bwd_sm90_check; opt=--filter; fi
    echo "== compute-sanitizer --tool $tool $exe $opt '$filt'"
    timeout 90 compute-sanitizer --tool $tool $exe $opt "$filt" 2>&1 |
      grep -E "passed|ERROR SUMMARY|RACECHECK SUMMARY|Invalid|out of bounds|hazard|Barrier" | head -8
  done > "$OUT/sanitizer_new.log" 2>&1
  cat "$OUT/sanitizer_new.log"
  for c in "memcheck dev/bin/fwd/fwd_check -k varlen" "memcheck dev/bin/fwd_sm90/sm90_check -k varlen" \
           "memcheck dev/bin/bwd/bwd_check --filter varlen" "memcheck dev/bin/bwd_sm90/bwd_sm90_check --filter gqa" \
           "racecheck dev/bin/fwd_sm90/sm90_check -k varlen" "synccheck dev/bin/fwd_sm90/sm90_check -k varlen" \
           "racecheck dev/bin/bwd_sm90/bwd_sm90_check --filter gqa" "synccheck dev/bin/bwd_sm90/bwd_sm90_check --filter gqa" \
           "racecheck dev/bin/bwd_sm90/bwd_sm90_check --filter sq1025" "synccheck dev/bin/bwd_sm90/bwd_sm90_check --filter sq1025" \
           "memcheck dev/bin/fwd_sm90/sm90_check -k feat" "racecheck dev/bin/fwd_sm90/sm90_check -k feat" \
           "memcheck dev/bin/bwd_sm90/bwd_sm90_check --filter d256" "synccheck dev/bin/bwd_sm90/bwd_sm90_check --filter d256" \
           "memcheck dev/bin/bwd_sm90/bwd_sm90_check --det --filter gqa" "racecheck dev/bin/bwd_sm90/bwd_sm90_check --det --filter gqa" \
           "synccheck dev/bin/bwd_sm90/bwd_sm90_check --det --filter gqa" \
           "racecheck dev/bin/fwd_sm90/sm90_check -k persist" "synccheck dev/bin/fwd_sm90/sm90_check -k persist" \
           "memcheck dev/bin/fwd_sm90/sm90_check -k drop" "racecheck dev/bin/fwd_sm90/sm90_check -k drop"; do
    set -- $c; tool=$1; shift
    [ -x "$1" ] || { echo "== $1 missing (not built)"; continue; }
    echo "== compute-sanitizer --tool $tool $*"
    timeout 90 compute-sanitizer --tool $tool "$@" 2>&1 | grep -E "passed|ERROR SUMMARY|RACECHECK SUMMARY|Invalid|out of bounds|hazard|Barrier" | head -8
  done > "$OUT/sanitizer.log" 2>&1
  # the split-KV decode kernels (paged, splits, lengths 0..480) through Python, the other kernels unchecked
  for tool in memcheck racecheck synccheck; do
    echo "== compute-sanitizer --tool $tool --kernel-name kns=splitkv dev/decode/probe.py --parity"
    timeout 150 compute-sanitizer --tool $tool --kernel-name kns=splitkv python3 dev/decode/probe.py --parity 2>&1 |
      grep -E "parity|ERROR SUMMARY|RACECHECK SUMMARY|Invalid|hazard" | head -6
  done >> "$OUT/sanitizer.log" 2>&1
  # the decode step's append + rotary kernel, through the rotary decode tests (paged and not)
  echo "== compute-sanitizer --tool memcheck --kernel-name kns=kvcache_append pytest test_decode_rotary (cuda)" >> "$OUT/sanitizer.log"
  timeout 200 compute-sanitizer --tool memcheck --kernel-name kns=kvcache_append python3 -m pytest tests/test_decode.py \
    -k "test_decode_rotary and cuda" -q -p no:cacheprovider 2>&1 | grep -E "passed|failed|ERROR SUMMARY|Invalid" | head -6 >> "$OUT/sanitizer.log"
  cat "$OUT/sanitizer.log"
fi
if [ "$what" = all ] || [ "$what" = extras ]; then
  log "deterministic backward cost"
  timeout 240 python3 benchmarks/deterministic_cost.py > "$OUT/deterministic.log" 2>&1; cat "$OUT/deterministic.log"
  log "long sequences (memory)"
  timeout 200 python3 -m flash_attn_c.bench --long --out "$OUT/long" > "$OUT/long.log" 2>&1
  tail -25 "$OUT/long.log"; rm -rf "$OUT/long"
  cat "$OUT/deterministic.log" "$OUT/long.log" > "$OUT/extras.log" && rm "$OUT/deterministic.log" "$OUT/long.log"
fi
log "done"
