#!/usr/bin/env bash
# call 52 (warm after 51; harnesses built there): timings only, one process at a time.
# forward harness bench, 2 rounds alternating: main (= persist tree, PERSIST unset: SASS-identical split) vs
# persist (FLASH_ATTN_C_SM90_FWD_PERSIST=1) vs bc80; backward harness bench with FLASH_ATTN_C_SM90_BWD_PIPE=2 (bwdnext)
set -uo pipefail
OUT=${OUT:-/tmp/o}; W=$OUT/w; mkdir -p $W
export FLASH_ATTN_C_CUDA_ARCHS=90a
nvidia-smi --query-gpu=name --format=csv,noheader | tee $W/env.txt
for d in .exp/persist .exp/bc80; do [ -x $d/dev/bin/fwd_sm90/sm90_check ] || make -C $d/dev/fwd_sm90 -j8 all > /dev/null 2>&1; done
[ -x .exp/bwdnext/dev/bin/bwd_sm90/bwd_sm90_check ] || make -C .exp/bwdnext/dev/bwd_sm90 -j16 all > /dev/null 2>&1
P=.exp/persist/dev/bin/fwd_sm90/sm90_check; C=.exp/bc80/dev/bin/fwd_sm90/sm90_check
files=()
for r in 1 2; do
  T0=$(date +%s)
  timeout 100 $P --bench > $W/fb_main_$r.txt 2>&1; files+=("main=$W/fb_main_$r.txt")
  FLASH_ATTN_C_SM90_FWD_PERSIST=1 timeout 100 $P --bench > $W/fb_persist_$r.txt 2>&1; files+=("persist=$W/fb_persist_$r.txt")
  timeout 100 $C --bench > $W/fb_bc80_$r.txt 2>&1; files+=("bc80=$W/fb_bc80_$r.txt")
  echo "round $r $(( $(date +%s) - T0 )) s"
done
python3 dev/harness_bench_compare.py "${files[@]}" > $W/fwd_compare.md; cat $W/fwd_compare.md
echo "== bwd bench PIPE=2 (bwdnext)"; FLASH_ATTN_C_SM90_BWD_PIPE=2 timeout 150 .exp/bwdnext/dev/bin/bwd_sm90/bwd_sm90_check --bench > $W/bwd_bench_pipe2.txt 2>&1; cat $W/bwd_bench_pipe2.txt | tail -40
cd $OUT && tar czf w.tgz w && rm -rf w
