#!/usr/bin/env bash
# call 53: the full GPU suite at c149578 (pipelined backward default at every d, forward d=256 Bc 80), then a short
# backward bench beside every SDPA backend (d 64 / 256, where the defaults changed)
set -uo pipefail
OUT=${OUT:-/tmp/o}; mkdir -p $OUT/w
GIT_COMMIT=c149578 NPROC=12 PYTEST_S=290 OUT=$OUT/w bash scripts/gpu_run.sh tests
echo "== bench bwd d64/d256"
timeout 80 python3 -m flash_attn_c.bench --directions bwd --head-dims 64,256 --seqlens 2048,16384 --causal both --out $OUT/w/b > $OUT/w/bench_short.log 2>&1; tail -30 $OUT/w/bench_short.log
rm -f $OUT/w/build.log.gz; gzip -f $OUT/w/build.log 2>/dev/null
cd $OUT && tar czf w.tgz w && rm -rf w
