#!/usr/bin/env bash
# session 17 call L (lean: ten device starts failed, ~430 s of device time left): main (.) vs the merged
# candidates tree .exp/m (s17merge a79e95f, opt-in switches exported; main ignores them): each candidate's
# own harness cases on m, one bench round per tree, the deterministic backward, the dropout producer's
# sanitizers.
O0=$OUT; pack() { tar czf $O0/r.tgz -C /tmp og 2>/dev/null; }
export FA_BENCH_SM90_ONLY=1 OUT=/tmp/og; mkdir -p $OUT
export FLASH_ATTN_C_SM90_FWD_CAP_SLIM=1 FLASH_ATTN_C_SM90_FWD_DROP_PRODUCER=1 FLASH_ATTN_C_SM90_FWD_ALIBI_SLIM=1 FLASH_ATTN_C_SM90_BWD_DET_HOP=1
nvidia-smi --query-gpu=name,clocks.max.sm,memory.total --format=csv > $OUT/gpu.txt; date +%T > $OUT/t
for t in . .exp/m; do for h in fwd_sm90 bwd_sm90; do make -C $t/dev/$h -j8 all > $OUT/make_${h}_${t//\//_}.log 2>&1 & done; done
wait; date +%T >> $OUT/t
ab() { local n=$1; shift; env "$@" timeout 60 bash scripts/gpu_harness_ab.sh fwd_sm90 main=. m=.exp/m > $OUT/ab_$n.log 2>&1
       tail -12 $OUT/ab_$n.log; cp $OUT/compare.md $OUT/compare_$n.md; pack; }
ab cap FA_BENCH_FEAT=softcap CHECK_K=capslim CHECK_TREES=m CHECK_S=40 ROUNDS=1
ab drop FA_BENCH_FEAT=dropout CHECK_K=dropprod CHECK_TREES=m CHECK_S=40 ROUNDS=1
ab alibi FA_BENCH_FEAT=alibi CHECK_K=alislim CHECK_TREES=m CHECK_S=40 ROUNDS=1
CHECK_TREES=none ROUNDS=1 timeout 25 bash scripts/gpu_harness_ab.sh fwd_sm90 main=. > $OUT/ab_plain.log 2>&1
cp $OUT/compare.md $OUT/compare_plain.md; pack
HARNESS_ARGS=--det CHECK_TREES=m CHECK_S=50 ROUNDS=1 timeout 80 \
  bash scripts/gpu_harness_ab.sh bwd_sm90 main=. m=.exp/m > $OUT/ab_det.log 2>&1
tail -12 $OUT/ab_det.log; cp $OUT/compare.md $OUT/compare_det.md; pack
CHECK_TREES=none ROUNDS=1 timeout 30 bash scripts/gpu_harness_ab.sh bwd_sm90 main=. > $OUT/ab_atomic.log 2>&1
cp $OUT/compare.md $OUT/compare_atomic.md; date +%T >> $OUT/t; pack
F=.exp/m/dev/bin/fwd_sm90/sm90_check
{ for t in memcheck racecheck synccheck; do echo "== dropprod $t"; timeout 25 compute-sanitizer --tool $t $F -k "dropprod bf16 b1" 2>&1 | tail -2; done
} > $OUT/san1.log 2>&1; cat $OUT/san1.log; date +%T >> $OUT/t; pack
