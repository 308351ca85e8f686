#!/usr/bin/env bash
# session 15, forward: fwdcombo (= featsplit + ncwide) vs main. featsplit only changes softcap-alone /
# ALiBi-alone calls, ncwide only plain non-causal unwindowed d in (64,128] calls, so the three benches
# (alibi, softcap, plain) separate the two effects. carry [".exp/fwdcombo", ".exp/callFG.sh"]
O0=$OUT; pack() { tar czf $O0/r.tgz -C /tmp of 2>/dev/null; }
export FA_BENCH_SM90_ONLY=1
export OUT=/tmp/of; mkdir -p $OUT
# plain first: ncwide's rows (d128 non-causal) + the causal control
CHECK_K="d128 " CHECK_TREES=combo CHECK_S=150 ROUNDS=2 timeout 330 bash scripts/gpu_harness_ab.sh fwd_sm90 main=. combo=.exp/fwdcombo > $OUT/ab_plain.log 2>&1
tail -30 $OUT/ab_plain.log; cp $OUT/compare.md $OUT/compare_plain.md; pack
B=.exp/fwdcombo/dev/bin/fwd_sm90/sm90_check
FA_CHECK_VERBOSE=1 timeout 90 $B -k feat > $OUT/check_feat.log 2>&1; echo "feat rc=$?"; grep -E "^FAIL" $OUT/check_feat.log | head -5; tail -1 $OUT/check_feat.log; pack
FA_BENCH_FEAT=alibi CHECK_TREES=none ROUNDS=1 timeout 80 bash scripts/gpu_harness_ab.sh fwd_sm90 main=. combo=.exp/fwdcombo > $OUT/ab_alibi.log 2>&1
tail -12 $OUT/ab_alibi.log; cp $OUT/compare.md $OUT/compare_alibi.md; pack
FA_BENCH_FEAT=softcap CHECK_TREES=none ROUNDS=1 timeout 80 bash scripts/gpu_harness_ab.sh fwd_sm90 main=. combo=.exp/fwdcombo > $OUT/ab_softcap.log 2>&1
tail -12 $OUT/ab_softcap.log; cp $OUT/compare.md $OUT/compare_softcap.md; pack
{ for t in racecheck synccheck memcheck; do echo "== combo $t"; timeout 40 compute-sanitizer --tool $t $B -k "shape bf16 b2 h3/3 d128 sq130 sk257" 2>&1 | tail -2; done; } 2>&1 | tee $OUT/san.log
pack
