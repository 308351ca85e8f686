#!/usr/bin/env bash
# Incremental in-place rebuild of flash_attn_c._C for development (objects are reused when their
# sources did not change). FLASH_ATTN_C_FORCE_CPU=1 skips the CUDA kernels for a fast CPU loop.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
MAX_JOBS=${MAX_JOBS:-2} "$PY" setup.py -q build_ext --inplace 2>&1 | grep -vE "^(running|copying|W[0-9]{4})" || true
"$PY" -c "import flash_attn_c; print('rebuilt; CUDA kernels:', flash_attn_c.cuda_available())"
