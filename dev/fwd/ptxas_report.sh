#!/usr/bin/env bash
# ptxas_report.sh - compiles every forward translation unit with -Xptxas -v for sm_80 and sm_90
# and prints one line per kernel instantiation: arch, registers, spill bytes, stack, kernel.
# Usage: dev/fwd/ptxas_report.sh [file.cu ...]   (default: csrc/cuda/instantiations/fa_fwd_hdim*.cu)
# Flags: the package's (csrc/build_flags.py), one target at a time.
set -u
cd "$(dirname "$0")/../.."
files=("$@")
[ ${#files[@]} -gt 0 ] || files=(csrc/cuda/instantiations/fa_fwd_hdim*.cu)
flags="$(python3 csrc/build_flags.py nvcc) $(python3 csrc/build_flags.py includes)"
for f in "${files[@]}"; do
  for arch in 80 90; do
    nvcc $flags -gencode arch=compute_$arch,code=sm_$arch -Xptxas -v \
      -c "$f" -o /dev/null 2>&1 |
    awk -v arch=$arch '
      /Compiling entry function/ { match($0, /_Z[A-Za-z0-9_]+/); fn = substr($0, RSTART, RLENGTH) }
      /bytes stack frame/ { split($0, w, " "); stack = w[1]; spill_st = w[5]; spill_ld = w[9] }
      /Used [0-9]+ registers/ { match($0, /Used [0-9]+ registers/); regs = substr($0, RSTART + 5, RLENGTH - 15);
        printf "sm_%s regs %3d spill_st %4s spill_ld %4s stack %4s  %s\n", arch, regs, spill_st, spill_ld, stack, fn }'
  done
done
