#!/usr/bin/env bash
# session 16 call 1: forward candidates capemu (softcap poly exp2 share), dropfast (cheaper DROP), br128 (d64 Br 128 tile)
O0=$OUT; pack() { tar czf $O0/r.tgz -C /tmp oe 2>/dev/null; }
export FA_BENCH_SM90_ONLY=1 OUT=/tmp/oe; mkdir -p $OUT
nvidia-smi --query-gpu=name,clocks.max.sm,memory.total --format=csv > $OUT/gpu.txt; python3 -c "import torch;print(torch.__version__)" >> $OUT/gpu.txt
# softcap: main (CAP) vs capemu 1/2, capemu check (builds all four trees once)
FA_BENCH_FEAT=softcap FLASH_ATTN_C_SM90_FWD_CAP_EMU=1/2 CHECK_K=capemu CHECK_TREES=capemu CHECK_S=150 ROUNDS=2 timeout 260 \
  bash scripts/gpu_harness_ab.sh fwd_sm90 main=. capemu=.exp/capemu dropfast=.exp/dropfast br128=.exp/br128 > $OUT/ab_cap_half.log 2>&1
tail -40 $OUT/ab_cap_half.log; cp $OUT/compare.md $OUT/compare_cap_half.md; pack
CHECK_K=drop CHECK_TREES=dropfast CHECK_S=100 FA_BENCH_FEAT=dropout ROUNDS=2 timeout 150 \
  bash scripts/gpu_harness_ab.sh fwd_sm90 main=. dropfast=.exp/dropfast > $OUT/ab_drop.log 2>&1
tail -40 $OUT/ab_drop.log; cp $OUT/compare.md $OUT/compare_drop.md; pack
FLASH_ATTN_C_SM90_FWD_D64_BR=128 CHECK_K=d64br128 CHECK_TREES=br128 CHECK_S=100 ROUNDS=2 timeout 150 \
  bash scripts/gpu_harness_ab.sh fwd_sm90 main=. br128=.exp/br128 > $OUT/ab_br128.log 2>&1
tail -40 $OUT/ab_br128.log; cp $OUT/compare.md $OUT/compare_br128.md; pack
FA_BENCH_FEAT=softcap FLASH_ATTN_C_SM90_FWD_CAP_EMU=1/4 CHECK_TREES=none ROUNDS=1 timeout 60 \
  bash scripts/gpu_harness_ab.sh fwd_sm90 main=. capemu=.exp/capemu > $OUT/ab_cap_quarter.log 2>&1
tail -30 $OUT/ab_cap_quarter.log; cp $OUT/compare.md $OUT/compare_cap_quarter.md; pack
C=.exp/capemu/dev/bin/fwd_sm90/sm90_check; D=.exp/dropfast/dev/bin/fwd_sm90/sm90_check; B=.exp/br128/dev/bin/fwd_sm90/sm90_check
{ for t in memcheck racecheck synccheck; do
  echo "== capemu $t"; FLASH_ATTN_C_SM90_FWD_CAP_EMU=1/2 timeout 30 compute-sanitizer --tool $t $C -k "capemu bf16 b2 h4/2 d64" 2>&1 | tail -2
  echo "== dropfast $t"; timeout 40 compute-sanitizer --tool $t $D -k "drop bf16 b1" 2>&1 | tail -2
  echo "== br128 $t"; FLASH_ATTN_C_SM90_FWD_D64_BR=128 timeout 30 compute-sanitizer --tool $t $B -k "d64br128 bf16 b1 " 2>&1 | tail -2
done; } > $OUT/san.log 2>&1; cat $OUT/san.log; pack
(cd .exp/dropfast && make -C dev/bwd -j16 all > $OUT/make_bwd80.log 2>&1 && timeout 60 dev/bin/bwd/bwd_check --filter dropout | tail -2 \
  && make -C dev/fwd -j16 all > $OUT/make_fwd80.log 2>&1 && timeout 60 dev/bin/fwd/fwd_check -k drop | tail -2) > $OUT/sm80_drop.log 2>&1
cat $OUT/sm80_drop.log; pack
