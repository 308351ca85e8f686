#!/usr/bin/env bash
# A/B of two kernel builds on the lent GPU machine, in one call: builds the extension with each
# set of extra nvcc flags (FLASH_ATTN_C_NVCC_EXTRA, e.g. a -D switch of a kernel variant), runs
# the GPU tests given in AB_PYTEST (a pytest -k expression; empty = none) and the benchmark with
# the given arguments for each, and prints both summaries. Logs land in $OUT. AB_PYTEST runs on
# side A only (the candidate; B is the reference being replaced).
#   usage: bash scripts/gpu_ab.sh "FLAGS_A" "FLAGS_B" [bench args...]
#   e.g.   bash scripts/gpu_ab.sh "" "-DFA_BWD_SM90_DQ_RED" --preset sweep --directions bwd
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/fa_out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MAX_JOBS=${MAX_JOBS:-16} FLASH_ATTN_C_CUDA_ARCHS=${FLASH_ATTN_C_CUDA_ARCHS:-90a}
[ -n "${GIT_COMMIT:-}" ] && export FLASH_ATTN_C_GIT_COMMIT=$GIT_COMMIT
flags_a=$1 flags_b=$2; shift 2
for side in A B; do
  if [ $side = A ]; then flags=$flags_a; else flags=$flags_b; fi
  echo "== $side: extra nvcc flags '${flags}'"
  FLASH_ATTN_C_NVCC_EXTRA="$flags" python3 -m pip install -v --no-build-isolation --no-deps -e . \
    > "$OUT/build_$side.log" 2>&1 || { tail -30 "$OUT/build_$side.log"; exit 1; }
  grep "build plan" "$OUT/build_$side.log"
  if [ -n "${AB_PYTEST:-}" ] && [ $side = A ]; then
    timeout 300 python3 -m pytest tests -m gpu -q -n 8 -p no:cacheprovider -k "$AB_PYTEST" > "$OUT/pytest_$side.log" 2>&1
    tail -1 "$OUT/pytest_$side.log"
  fi
  timeout 300 python3 -m flash_attn_c.bench --no-plots "$@" --out "$OUT/bench_$side" > "$OUT/bench_$side.log" 2>&1
  grep -E "^## |geomean|^\| bf16|^\| fp16" "$OUT/bench_$side/results.md" | head -80
  rm -rf "$OUT/bench_$side"
done
