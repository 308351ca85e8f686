O0=$OUT; pack() { tar czf $O0/r.tgz -C /tmp od 2>/dev/null; }
export FA_BENCH_SM90_ONLY=1 OUT=/tmp/od; mkdir -p $OUT
CHECK_K=drop CHECK_TREES=dropset CHECK_S=120 FA_BENCH_FEAT=dropout ROUNDS=2 timeout 300 bash scripts/gpu_harness_ab.sh fwd_sm90 dbase=.exp/dbase dropset=.exp/dropset > $OUT/ab_drop.log 2>&1
tail -44 $OUT/ab_drop.log; pack
B=.exp/dropset/dev/bin/fwd_sm90/sm90_check
timeout 60 $B --bench > $OUT/plain_dropset.txt 2>&1; pack
{ for t in racecheck synccheck memcheck; do echo "== dropset $t"; timeout 50 compute-sanitizer --tool $t $B -k drop 2>&1 | tail -2; done; } 2>&1 | tee $OUT/san.log
pack
