#!/usr/bin/env bash
# session 15, merged head: build, bench of record, deterministic cost, GPU pytest of the touched
# features (sm90 files, dropout, softcap, alibi, determinism, native harnesses) in the time left.
T0=$(date +%s); left() { echo $(( ${1} - ($(date +%s) - T0) )); }
O0=$OUT; export OUT=/tmp/oh; mkdir -p $OUT; pack() { tar czf $O0/r.tgz -C /tmp oh 2>/dev/null; }
export GIT_COMMIT=$(cat .exp/head) BENCH_S=220 NPROC=15
bash scripts/gpu_run.sh bench > $OUT/gpu_run_bench.log 2>&1; tail -45 $OUT/gpu_run_bench.log; pack
echo "[callH] bench done at $(( $(date +%s) - T0 )) s"
timeout 90 python3 benchmarks/deterministic_cost.py --dims 256 > $OUT/det_cost_d256.txt 2>&1; tail -16 $OUT/det_cost_d256.txt; pack
echo "[callH] det cost done at $(( $(date +%s) - T0 )) s"
timeout $(left 570) python3 -m pytest tests/test_sm90_feat.py tests/test_sm90_fwd_wide.py tests/test_sm90_dropout.py \
  tests/test_sm90_bwd_det256.py tests/test_sm90_bwd_det_br.py tests/test_sm90_bwd_tiles.py tests/test_softcap.py tests/test_alibi.py \
  tests/test_dropout.py tests/test_determinism.py tests/test_sm90_fwd_persist.py tests/test_dense.py \
  -m gpu -q -n 15 --timeout 200 -p no:cacheprovider -rfE > $OUT/pytest_gpu.log 2>&1
tail -8 $OUT/pytest_gpu.log; grep -E "^(FAILED|ERROR)" $OUT/pytest_gpu.log | head -20; gzip -f $OUT/pytest_gpu.log; pack
echo "[callH] all done at $(( $(date +%s) - T0 )) s"
