#!/usr/bin/env bash
# Nsight Compute on the lent GPU: the main kernels of ours and of SDPA's cuDNN backend, forward and
# backward, for the shapes given (benchmarks/ncu_compare.py), into $OUT/ncu_<shape>.ncu-rep and a
# text summary $OUT/ncu_<shape>.txt (the report's details page: speed of light, occupancy, warp
# stalls, scheduler, launch). Needs the extension built (scripts/gpu_run.sh does it) and a machine
# whose runtime lets ncu read counters (the Firecracker kinds: device/KINDS.md); clocks left alone.
#   usage: bash scripts/gpu_ncu.sh "128 512" "128 512 causal" "64 512 causal"
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/fa_out}; mkdir -p "$OUT"
sections="--section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats --section SchedulerStats --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis"
for shape in "$@"; do
  set -- $shape
  d=$1 s=$2 c=${3:-}
  tag=d${d}_s${s}${c:+_causal}
  echo "== $tag"
  timeout ${NCU_S:-240} ncu --profile-from-start off --clock-control none --kernel-name "regex:fa_|cudnn" \
    $sections -f -o "$OUT/ncu_$tag" python3 benchmarks/ncu_compare.py --d "$d" --seqlen "$s" ${c:+--causal} \
    > "$OUT/ncu_$tag.log" 2>&1 || tail -5 "$OUT/ncu_$tag.log"
  ncu --import "$OUT/ncu_$tag.ncu-rep" --page details > "$OUT/ncu_$tag.txt" 2>&1
  grep -E "^  [a-z_]|Duration|Compute \(SM\) Throughput|Memory Throughput|Achieved Occupancy|Registers Per|Issue Slots Busy|No Eligible" "$OUT/ncu_$tag.txt" | head -80
done
