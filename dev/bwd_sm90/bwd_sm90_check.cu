/* bwd_sm90_check.cu - self-checking harness of the Hopper backward (fa_bwd_sm90), no torch.
 * Shares everything with dev/bwd/bwd_check.cu through dev/common/bwd_*.h (same oracle, same bar,
 * same poisoning); only the call under test, the case list (the sm90 scope: fp16/bf16, d <= 128,
 * and d in (128, 256] on the pipelined kernel alone, no dropout/softcap/ALiBi, atomic dQ; softcap /
 * ALiBi in a list of their own, g_feat_cases) and the benchmark differ.
 *
 *   bwd_sm90_check                 every case through fa_bwd_sm90 with FLASH_ATTN_C_SM90_BWD_PIPE=0
 *                                  (the cp.async kernel: modes "sm90", "sm90#2"), then again with
 *                                  FLASH_ATTN_C_SM90_BWD_PIPE=1 (modes "pipe", "pipe#2", "pipe det":
 *                                  under FLASH_ATTN_C_SM90_BWD_DET=pass, the dK/dV-only instance)
 *                                  and =2 (modes "pipe tma", "pipe tma#2": dQ by TMA reduce), and at
 *                                  d <= 128 with FLASH_ATTN_C_SM90_BWD_DET as the harness got it
 *                                  (mode "det ordered": deterministic dQ in the pipelined kernel, run
 *                                  twice, bitwise identical; every dense call must take the ORDERED
 *                                  instance its shape names, below); then
 *                                  how many calls of each pipelined mode ran the pipelined kernel,
 *                                  and of the dense ones with atomic dQ at d <= 64 (Br = 64
 *                                  instances: each must, else one more check fails);
 *                                  last line "N passed, N failed" (exit status 1 if any failed).
 *                                  A case that fa_bwd_sm90_supported() rejects FAILS (they are all
 *                                  in scope). Cases with d > 128 run in the pipe modes only (their
 *                                  one instance, opt-in by the =1 / =2 those modes set).
 *   bwd_sm90_check --filter d256   the d in (128, 256] cases (the dim-split instance)
 *   bwd_sm90_check --filter feat   the softcap / ALiBi cases (d 32..256), in the modes "pipe feat", "pipe feat#2"
 *                                  and "pipe feat det" (FLASH_ATTN_C_SM90_BWD_FEAT=1: the FEAT
 *                                  instance, mode 10, deterministic its ORDERED form, mode 11, run
 *                                  twice, bitwise identical; counted checks: every call on the mode
 *                                  its determinism names, and every one refused without the variable).
 *                                  They run with every selection that names them (not with --det)
 *   bwd_sm90_check --det [--filter STR]  only the "det ordered" runs (of the selected cases)
 *   FLASH_ATTN_C_SM90_BWD_DET unset (the package default) or =ordered_br: the "det ordered" mode runs
 *                                  the ORDERED instances of the FA3-sized tiles (Br = 80 at d in
 *                                  (64, 128], Br = 128 at d <= 64; scale > 0), the Br = 64 one elsewhere:
 *                                  every dense call must run the one its shape names (a counted check;
 *                                  line "det ordered_br"); =ordered (the Br = 64 opt-out): the Br = 64
 *                                  one everywhere (the same counted check); other values: refused
 *                                  (exit 2) but with --bench. --bench --det times what the variable
 *                                  says (each row ends with the pipelined mode that ran: 3 Br = 64
 *                                  ordered, 7 Br = 80 ordered, 8 Br = 128 ordered, 0 the dQ-pass path)
 *   FLASH_ATTN_C_SM90_BWD_DET256 unset (the default) or not "0", with any of the above: "det ordered" runs
 *                                  the d in (128, 256] cases, every dense one on the dim-split kernel's
 *                                  ORDERED instance (mode 9; a counted check, line "det256 ordered:
 *                                  N of N d256 det calls"); --bench --det: its d = 256 rows (mode 9)
 *   bwd_sm90_check --filter STR    only cases whose name contains STR
 *   bwd_sm90_check --no-gpu        CPU side only: oracle vs low-precision baseline
 *   bwd_sm90_check --bench [--det] bf16, d in {64,128,256}, 16k tokens, h*d = 2048, seqlen
 *                                  512..16k, causal and not: sm90 next to the sm80 fa_bwd_cuda
 *                                  (run with FLASH_ATTN_C_SM90_BWD=0 so it cannot take the sm90
 *                                  hook); median of 10 CUDA-event timings after 3 warm-ups;
 *                                  TFLOP/s with backward = 2.5 x forward FLOPs. The sm90 column
 *                                  follows FLASH_ATTN_C_SM90_BWD_PIPE as fa_bwd_sm90 reads it:
 *                                  A/B of the dQ path = two runs on one machine,
 *                                  FLASH_ATTN_C_SM90_BWD_PIPE=0 (cp.async kernel), =1 (red.add)
 *                                  and =2 (TMA reduce; also what unset runs at d > 64). --det:
 *                                  deterministic = 1 in both columns, for the deterministic cost
 *                                  and its A/B: the sm90 column runs the ORDERED instances (dQ in
 *                                  the pipelined kernel, the default), or with
 *                                  FLASH_ATTN_C_SM90_BWD_DET=pass the dK/dV kernel + the ordered
 *                                  dQ pass. FA_BENCH_D=256 (64, 128): that head dim's rows only
 *   bwd_sm90_check_nodq --bench    (make nodq: this file and fa_bwd_sm90.cu with
 *                                  -DFA_BWD_SM90_DEV_NO_DQ_D256) the d = 256 rows only, its kernel
 *                                  without the dQ red.adds: the time a free dQ would give (--bench only)
 *   FLASH_ATTN_C_SM90_BWD_VARIANT (a list; unset = "br80,br128", the package default) with any of the
 *                                  above: with br80 the "pipe tma" calls (and the bench's sm90
 *                                  column) at d in (64, 128] run the Br = 80 kernel
 *                                  (fa_bwd_sm90_pipe80.cuh); every dense one must (a counted check);
 *                                  with br128 the "pipe" / "pipe tma" calls (and the bench's sm90
 *                                  column) at d <= 64 with atomic dQ run the Br = 128 instances
 *                                  (fa_bwd_sm90_pipe128.cuh); every dense one must (a counted check,
 *                                  line "br128 variant"). "br64": the Br = 64 tile at both.
 *
 * Per case: random inputs (normal, rounded to the dtype), the fp32 CPU reference forward gives O
 * (rounded) and LSE; the oracle is fa_bwd_cpu_reference. Bar: max error at most 3x the error of a
 * low-precision baseline with the same roundings plus half an ulp of the largest gradient (of
 * 0.01 at least). Outputs (and every gap of strided layouts) and the workspace are poisoned
 * with 0xFF bytes before the call; any NaN or write outside the logical tensors fails. Each case
 * runs twice ("sm90" and "sm90 again") to catch races that show up only sometimes.
 */
#include <cuda_runtime.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>

#include "flash_attn_c.h"
#include "fa_bwd_sm90.cuh"
#include "fa_bwd_sm90_pipe80_host.h" /* fa_bwd_sm90_variant_has */
#include "../common/check_host.h"
#include "../common/check_cuda.h"
#include "../common/bwd_problem.h"
#include "../common/bwd_run.h"
#include "../common/bwd_bench.h"

static check_rng g_rng = {0x9E3779B97F4A7C15ull};

/* ---- test cases --------------------------------------------------------------------------- */
#define BF FA_BF16
#define HF FA_F16
#define VL1 "0,17,97,0,1,255|0,33,97,5,0,255"
#define VL2 "130,1,64,0,77|200,64,1,3,0"
static const bwd_case g_cases[] = {
    /* name                              dt  b   sq    sk   h hk   d   wl  wr  cap al drop sp st lens scale */
    {"dense d64",                        BF, 2,  97,   97,  4, 4,  64, -1, -1, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"dense d64 fp16",                   HF, 2,  97,   97,  4, 4,  64, -1, -1, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"dense d128",                       BF, 2, 200,  200,  2, 2, 128, -1, -1, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"dense d128 fp16",                  HF, 2, 200,  200,  2, 2, 128, -1, -1, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"causal d40",                       BF, 2,  97,   97,  3, 3,  40, -1,  0, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"causal d80 sq<sk",                 BF, 2,  17,   97,  2, 2,  80, -1,  0, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"causal d128 sq>sk masked rows",    BF, 2,  97,   17,  2, 2, 128, -1,  0, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"causal d112 gqa",                  BF, 2,  97,  130,  4, 2, 112, -1,  0, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"dense d112 window 20,20",          BF, 2, 150,  150,  2, 2, 112, 20, 20, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"dense d96 fp16",                   HF, 2, 130,   97,  3, 3,  96, -1, -1, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"seqlen 1 d128",                    BF, 3,   1,    1,  2, 2, 128, -1, -1, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"seqlen 1 d64 fp16",                HF, 3,   1,    1,  2, 2,  64, -1,  0, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"sq1 sk1025 causal d64",            BF, 2,   1, 1025,  2, 2,  64, -1,  0, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"sq1025 causal d64",                BF, 1, 1025, 1025, 2, 2,  64, -1,  0, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"sq1025 causal d128 fp16",          HF, 1, 1025, 1025, 2, 2, 128, -1,  0, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"sq1025 sk17 d128 gqa",             BF, 1, 1025,  17,  2, 1, 128, -1, -1, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"sq17 sk1025 d128 fp16",            HF, 2,  17, 1025,  2, 2, 128, -1, -1, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"sq17 sk17 d64",                    BF, 2,  17,   17,  2, 2,  64, -1, -1, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"window 32,8 d64",                  BF, 2, 255,  255,  2, 2,  64, 32,  8, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"window 0,0 d128",                  BF, 1, 200,  255,  2, 2, 128,  0,  0, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"window -1,5 d64 sq>sk",            BF, 1, 255,  130,  2, 2,  64, -1,  5, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"window 7,-1 d128 fp16",            HF, 1,  97,  200,  2, 2, 128,  7, -1, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"window 100,0 d64 long",            BF, 1, 1025, 1025, 2, 2,  64, 100, 0, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"scale 4 d128",                     BF, 2,  97,   97,  2, 2, 128, -1, -1, 0.f, 0, 0.f, 0, 0, NULL, 4.f},
    {"gqa 8/2 causal d64",               BF, 2,  97,   97,  8, 2,  64, -1,  0, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"gqa 4/2 d128 fp16",                HF, 2, 130,  130,  4, 2, 128, -1, -1, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"mqa 4/1 d128",                     BF, 2, 129,  129,  4, 1, 128, -1, -1, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"mqa 4/1 causal d64",               BF, 1, 300,  300,  4, 1,  64, -1,  0, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"varlen d64",                       BF, 6,   0,    0,  2, 2,  64, -1, -1, 0.f, 0, 0.f, 0, 0, VL1,  1.f},
    {"varlen causal gqa d128 fp16",      HF, 6,   0,    0,  4, 2, 128, -1,  0, 0.f, 0, 0.f, 0, 0, VL1,  1.f},
    {"varlen window d128",               BF, 5,   0,    0,  2, 2, 128, 32,  0, 0.f, 0, 0.f, 0, 0, VL2,  1.f},
    {"varlen window d80 gqa",            BF, 6,   0,    0,  4, 2,  80, 40,  3, 0.f, 0, 0.f, 0, 0, VL1,  1.5f},
    {"varlen no queries d64",            BF, 3,   0,    0,  2, 1,  64, -1, -1, 0.f, 0, 0.f, 0, 0, "0,0,0|5,0,70", 1.f},
    {"varlen no keys causal d128",       BF, 3,   0,    0,  2, 2, 128, -1,  0, 0.f, 0, 0.f, 0, 0, "3,0,70|0,0,0", 1.f},
    {"strided causal gqa d128",          BF, 2,  97,   97,  4, 2, 128, -1,  0, 0.f, 0, 0.f, 0, 1, NULL, 1.f},
    {"strided varlen d64",               BF, 5,   0,    0,  2, 1,  64, -1, -1, 0.f, 0, 0.f, 0, 1, VL2,  1.f},
    {"strided varlen window d96 fp16",   HF, 6,   0,    0,  4, 2,  96, 40,  3, 0.f, 0, 0.f, 0, 1, VL1,  1.5f},
    /* d <= 64, dense: the pipelined kernel's Br = 64 instances (dQ split by dims, N = 32); the
     * d64 cases above run them too. d 32: warpgroup 1's dims all past d (no TMA box, no red.add);
     * d 48: its box half past d; sq > sk with 17 query blocks x 2 heads of the group on the ring.
     * Every name has "d64", so --filter d64 (the sanitizer runs) selects them all. */
    {"sq1025 sk17 d64 gqa",              BF, 1, 1025,  17,  4, 2,  64, -1, -1, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"sq17 sk1025 d64 fp16",             HF, 2,  17, 1025,  2, 2,  64, -1, -1, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"causal d32 gqa fp16 sq<sk (d64 tile)", HF, 2, 130,  200,  4, 2,  32, -1,  0, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"window 20,20 d48 sq>sk (d64 tile)", BF, 1, 255,  130,  2, 2,  48, 20, 20, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"strided causal gqa d64",           BF, 2,  97,   97,  4, 2,  64, -1,  0, 0.f, 0, 0.f, 0, 1, NULL, 1.f},
    /* d in (128, 256]: the pipelined kernel's dim-split instance only (Bc = Br = 64,
     * fa_bwd_sm90_pipe_dsplit.cuh), opt-in: these cases run in the pipe modes alone (no cp.async
     * kernel at d > 128), =2 on its red.add instance. d 160: K/V/Q/dO column block 3 wholly past
     * d (TMA zero-fills the box), warpgroup 1's dQ half 192.. not added; d 136: block 2 mostly
     * past d. Every name has "d256", so --filter d256 selects them all. */
    {"dense d256",                       BF, 2,  97,   97,  2, 2, 256, -1, -1, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"dense d256 fp16",                  HF, 2, 130,  130,  2, 2, 256, -1, -1, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"causal d256 sq>sk gqa",            BF, 2, 200,  130,  4, 2, 256, -1,  0, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"causal d256 sq<sk fp16",           HF, 2,  17,   97,  2, 2, 256, -1,  0, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"sq1025 sk17 d256 gqa",             BF, 1, 1025,  17,  4, 2, 256, -1, -1, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"sq17 sk1025 causal d256 fp16",     HF, 2,  17, 1025,  2, 2, 256, -1,  0, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"sq1025 causal d256",               BF, 1, 1025, 1025, 2, 2, 256, -1,  0, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"window 20,20 d256 sq<sk",          BF, 1, 130,  255,  2, 2, 256, 20, 20, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"window -1,5 d256 sq>sk",           BF, 1, 255,  130,  2, 2, 256, -1,  5, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"mqa 4/1 causal d256 fp16",         HF, 1, 300,  300,  4, 1, 256, -1,  0, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"seqlen 1 d256",                    BF, 3,   1,    1,  2, 2, 256, -1, -1, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"scale 4 d256",                     BF, 2,  97,   97,  2, 2, 256, -1, -1, 0.f, 0, 0.f, 0, 0, NULL, 4.f},
    {"strided causal gqa d256",          BF, 2,  97,   97,  4, 2, 256, -1,  0, 0.f, 0, 0.f, 0, 1, NULL, 1.f},
    {"dense d160 sq<sk (d256 tile)",     BF, 2,  97,  130,  2, 2, 160, -1, -1, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"causal d192 gqa fp16 (d256 tile)", HF, 2, 130,   97,  4, 2, 192, -1,  0, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"window 7,-1 d136 (d256 tile)",     BF, 1,  97,  200,  2, 2, 136,  7, -1, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
};

/* Softcap and / or ALiBi (the FEAT instance, opt-in FLASH_ATTN_C_SM90_BWD_FEAT=1: dense, no
 * dropout; d <= 128 the Br = 64 tile, d in (128, 256] the dim split): a list of their own, run only
 * in the "pipe feat" modes below. Softcaps small enough that tanh bends the scores (the inputs' dots
 * are ~N(0, 1) x scale); slopes (h,) and (b, h); the tile edges and ring shapes of the plain list.
 * Every name has "feat" (--filter feat). */
static const bwd_case g_feat_cases[] = {
    /* name                              dt  b   sq    sk   h hk   d   wl  wr  cap al drop sp st lens scale */
    {"feat softcap d64",                 BF, 2,  97,   97,  4, 4,  64, -1, -1, 2.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"feat softcap causal d128 fp16",    HF, 2, 200,  200,  2, 2, 128, -1,  0, 2.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"feat alibi sq>sk gqa d128",        BF, 2, 130,   97,  4, 2, 128, -1, -1, 0.f, 1, 0.f, 0, 0, NULL, 1.f},
    {"feat alibi bh causal gqa d64",     BF, 2,  97,  130,  8, 2,  64, -1,  0, 0.f, 2, 0.f, 0, 0, NULL, 1.f},
    {"feat softcap alibi window d112",   BF, 1, 255,  255,  2, 2, 112, 20, 20, 3.f, 2, 0.f, 0, 0, NULL, 1.f},
    {"feat softcap alibi sq1025 causal d128", BF, 1, 1025, 1025, 2, 2, 128, -1, 0, 5.f, 1, 0.f, 0, 0, NULL, 1.f},
    {"feat alibi sq17 sk1025 d48 fp16",  HF, 2,  17, 1025,  2, 2,  48, -1, -1, 0.f, 1, 0.f, 0, 0, NULL, 1.f},
    {"feat softcap sq1025 sk17 mqa d64", BF, 1, 1025,  17,  4, 1,  64, -1, -1, 1.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"feat softcap scale 4 d128",        BF, 2,  97,   97,  2, 2, 128, -1, -1, 10.f, 0, 0.f, 0, 0, NULL, 4.f},
    {"feat seqlen 1 alibi d128",         BF, 3,   1,    1,  2, 2, 128, -1, -1, 0.f, 1, 0.f, 0, 0, NULL, 1.f},
    {"feat softcap alibi d32 sq<sk causal fp16", HF, 2, 130, 200, 4, 2, 32, -1, 0, 2.f, 2, 0.f, 0, 0, NULL, 1.f},
    {"feat softcap alibi scale -0.5 d64", BF, 2,  97,   97,  2, 2,  64, -1, -1, 5.f, 1, 0.f, 0, 0, NULL, -0.5f},
    /* d in (128, 256]: the dim split's FEAT instance (red.add dQ into the tiled buffer; ORDERED) */
    {"feat softcap d256",                BF, 2,  97,   97,  2, 2, 256, -1, -1, 2.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"feat alibi bh causal gqa sq>sk d256 fp16", HF, 2, 200, 130, 4, 2, 256, -1, 0, 0.f, 2, 0.f, 0, 0, NULL, 1.f},
    {"feat softcap alibi window d160 (d256 tile)", BF, 1, 130, 255, 2, 2, 160, 20, 20, 3.f, 1, 0.f, 0, 0, NULL, 1.f},
    {"feat softcap alibi sq1025 sk17 d192 (d256 tile)", BF, 1, 1025, 17, 4, 2, 192, -1, -1, 5.f, 1, 0.f, 0, 0, NULL, 1.f},
};

/* ---- under test: fa_bwd_sm90_kernel, the cp.async kernel (FLASH_ATTN_C_SM90_BWD_PIPE=0: unset, d > 64
 * with atomic dQ would run the pipelined kernel), twice per case ----------------------------- */
/* fa_bwd_sm90 under FLASH_ATTN_C_SM90_BWD_PIPE=mode and FLASH_ATTN_C_SM90_BWD_DET=pass (so that the
 * deterministic calls of these modes keep the dK/dV-only instance + the ordered dQ pass; the ORDERED
 * instance has its own mode below); both variables are unset again after: every mode below names
 * its own. *takes = fa_bwd_sm90_pipe_takes() under them when takes != NULL. */
static fa_status run_with_pipe_env(const char *mode, const fa_params *p, void *stream, int *takes)
{
    setenv("FLASH_ATTN_C_SM90_BWD_PIPE", mode, 1);
    setenv("FLASH_ATTN_C_SM90_BWD_DET", "pass", 1);
    if (takes != NULL) *takes = fa_bwd_sm90_pipe_takes(p);
    const fa_status st = fa_bwd_sm90(p, stream);
    unsetenv("FLASH_ATTN_C_SM90_BWD_PIPE");
    unsetenv("FLASH_ATTN_C_SM90_BWD_DET");
    return st;
}
static fa_status fa_bwd_sm90_cp_async_entry(const fa_params *p, void *stream)
{
    return run_with_pipe_env("0", p, stream, NULL);
}
static const bwd_mode g_modes[] = {
    {"sm90", 0, 0},
    {"sm90#2", 0, 0},
};
static const bwd_target g_target = {fa_bwd_sm90_cp_async_entry, fa_bwd_sm90_workspace_bytes, fa_bwd_sm90_supported,
                                    g_modes, 2};

/* Dense calls with atomic dQ at d <= 64 (the pipelined kernel's Br = 64 instances, opt-in),
 * counted per pipelined mode: how many there were and how many the pipelined kernel ran. Every
 * one must (the harness strides are TMA-fit): main counts a failed check otherwise, so a silent
 * fallback to the cp.async kernel, which passes the parity check too, cannot pass the run. */
typedef struct d64_count {
    int calls, taken;
} d64_count;
static void d64_tally(d64_count *c, const fa_params *p, int taken)
{
    if (p->head_dim > 64 || p->deterministic || p->cu_seqlens_q != NULL) return;
    ++c->calls;
    c->taken += taken;
}

/* FLASH_ATTN_C_SM90_BWD_VARIANT with br128 (unset: the package default "br80,br128"): dense atomic-dQ
 * d <= 64 "pipe" / "pipe tma" calls, and those on the Br = 128 instances (fa_bwd_sm90_pipe_takes()
 * == 5 red.add, 6 TMA dQ) */
static d64_count g_br128 = {0, 0};
/* the package's reading of the list and its default (fa_bwd_sm90_pipe80_host.h) */
static int variant_has(const char *name) { return fa_bwd_sm90_variant_has(name); }
static void br128_tally(const fa_params *p, int taken)
{
    if (variant_has("br128") && p->softmax_scale > 0.f) d64_tally(&g_br128, p, taken);
}

/* ---- under test: the pipelined kernel (FLASH_ATTN_C_SM90_BWD_PIPE=1, fa_bwd_sm90_pipe_kernel.cuh),
 * every case again: dense cases run it (every d, atomic or deterministic dQ), varlen and
 * TMA-unfit strides fall back to fa_bwd_sm90_kernel. */
static int g_pipe_calls = 0, g_pipe_fallbacks = 0;  /* "pipe" runs, and those on the old kernel */
static d64_count g_pipe_d64 = {0, 0};
static fa_status fa_bwd_sm90_pipe_entry(const fa_params *p, void *stream)
{
    int takes;
    const fa_status st = run_with_pipe_env("1", p, stream, &takes);
    ++g_pipe_calls;
    g_pipe_fallbacks += !takes;
    d64_tally(&g_pipe_d64, p, takes == 1 || takes == 5);
    br128_tally(p, takes == 5);
    return st;
}
/* fa_bwd_sm90_supported under FLASH_ATTN_C_SM90_BWD_PIPE=mode: d > 128 is in scope only there
 * (opt-in); at d <= 128 the variable does not change the answer */
static int supported_with_pipe_env(const char *mode, const fa_params *p)
{
    setenv("FLASH_ATTN_C_SM90_BWD_PIPE", mode, 1);
    const int ok = fa_bwd_sm90_supported(p);
    unsetenv("FLASH_ATTN_C_SM90_BWD_PIPE");
    return ok;
}
static int fa_bwd_sm90_pipe_supported(const fa_params *p)
{
    return supported_with_pipe_env("1", p);
}
static int fa_bwd_sm90_pipe_tma_supported(const fa_params *p)
{
    return supported_with_pipe_env("2", p);
}
static const bwd_mode g_pipe_modes[] = {
    {"pipe", 0, 0},
    {"pipe#2", 0, 0},
    {"pipe det", 1, 1},
};
static const bwd_target g_pipe_target = {fa_bwd_sm90_pipe_entry, fa_bwd_sm90_workspace_bytes,
                                         fa_bwd_sm90_pipe_supported, g_pipe_modes, 3};

/* ---- under test: the same with FLASH_ATTN_C_SM90_BWD_PIPE=2, dQ by TMA tensor reduce from the
 * dQ-writer warp (atomic dQ only: deterministic calls run the same instance as =1, so no "det"
 * mode here); fa_bwd_sm90_pipe_takes() == 2 says the TMA-dQ instance ran. */
static int g_tma_calls = 0, g_tma_taken = 0;  /* "pipe tma" runs, and those on the TMA-dQ instance */
static d64_count g_tma_d64 = {0, 0};
/* FLASH_ATTN_C_SM90_BWD_VARIANT with br80 (the default): dense d in (64, 128] "pipe tma" calls, and those on the Br = 80
 * kernel (fa_bwd_sm90_pipe_takes() == 4) */
static d64_count g_br80 = {0, 0};
static fa_status fa_bwd_sm90_pipe_tma_entry(const fa_params *p, void *stream)
{
    int takes;
    const fa_status st = run_with_pipe_env("2", p, stream, &takes);
    ++g_tma_calls;
    g_tma_taken += takes == 2 || takes == 4 || takes == 6;
    d64_tally(&g_tma_d64, p, takes == 2 || takes == 6);
    br128_tally(p, takes == 6);
    if (variant_has("br80") && p->head_dim > 64 && p->head_dim <= 128 &&
        p->cu_seqlens_q == NULL && p->softmax_scale > 0.f) {
        ++g_br80.calls;
        g_br80.taken += takes == 4;
    }
    return st;
}
static const bwd_mode g_pipe_tma_modes[] = {
    {"pipe tma", 0, 0},
    {"pipe tma#2", 0, 0},
};
static const bwd_target g_pipe_tma_target = {fa_bwd_sm90_pipe_tma_entry, fa_bwd_sm90_workspace_bytes,
                                             fa_bwd_sm90_pipe_tma_supported, g_pipe_tma_modes, 2};

/* ---- under test: deterministic dQ inside the pipelined kernel (kDq = ORDERED), d <= 128: every
 * dense case must run the ORDERED instance its shape names (fa_bwd_sm90_pipe_takes() ==
 * det_expected_mode), varlen keeps the dK/dV + ordered dQ pass path. The workspace is sized under
 * the same variable (the ORDERED instances need dq_accum and the turn counters; poisoned like the
 * rest). */
static int g_det_calls = 0, g_det_dense = 0, g_det_taken = 0;
/* FLASH_ATTN_C_SM90_BWD_DET in the harness's environment (read once in main, before the pipe modes
 * set and unset the variable), which the mode runs under: unset (NULL, the package default) or
 * "ordered_br" (g_det_br = 1): the ORDERED instances of the FA3-sized tiles where their atomic twins
 * run (mode 7: Br = 80 at d in (64, 128]; 8: Br = 128 at d <= 64; with scale > 0 and
 * FLASH_ATTN_C_SM90_BWD_VARIANT's list), else the Br = 64 one (3); "ordered" (g_det_br = 0): the
 * Br = 64 one everywhere. Every dense call must run the instance its shape names (a counted check) */
static const char *g_det_env = NULL;
static int g_det_br = 1;
static int g_det_br_calls[2] = {0, 0}, g_det_br_taken[2] = {0, 0}; /* [0] Br = 80, [1] Br = 128 */
static void set_det_env(void)
{
    if (g_det_env != NULL) setenv("FLASH_ATTN_C_SM90_BWD_DET", g_det_env, 1);
    else unsetenv("FLASH_ATTN_C_SM90_BWD_DET");
}
/* FLASH_ATTN_C_SM90_BWD_DET256 unset or not "0" in the harness's environment (read in main, left as is: the package
 * reads it per call, and only deterministic d > 128 calls under a DET other than "pass" see it): the
 * "det ordered" mode also runs the d in (128, 256] cases, each dense one on the dim-split kernel's
 * ORDERED instance (mode 9, FA_BWD_SM90_PIPE_MODE_D256_ORDERED; a counted check, line "det256
 * ordered"). "0": those cases have no "det ordered" run (their deterministic calls take the sm80
 * backward, outside this harness). */
static int g_det256 = 0;
static int g_det256_calls = 0, g_det256_taken = 0;
/* the pipelined mode a dense deterministic call must take in this mode (fa_bwd_sm90_ordered_mode) */
static int det_expected_mode(const fa_params *p)
{
    if (p->head_dim > 128) return FA_BWD_SM90_PIPE_MODE_D256_ORDERED;
    if (!g_det_br || !(p->softmax_scale > 0.f)) return 3;
    if (p->head_dim > 64 && p->head_dim <= 128 && variant_has("br80")) return 7;
    if (p->head_dim <= 64 && variant_has("br128")) return 8;
    return 3;
}
static fa_status fa_bwd_sm90_det_entry(const fa_params *p, void *stream)
{
    set_det_env();
    const int takes = fa_bwd_sm90_pipe_takes(p);
    const fa_status st = fa_bwd_sm90(p, stream);
    unsetenv("FLASH_ATTN_C_SM90_BWD_DET");
    ++g_det_calls;
    if (p->cu_seqlens_q == NULL) {
        const int want = det_expected_mode(p);
        ++g_det_dense;
        g_det_taken += takes == want;
        if (want == 7 || want == 8) {
            ++g_det_br_calls[want == 8];
            g_det_br_taken[want == 8] += takes == want;
        }
        if (want == FA_BWD_SM90_PIPE_MODE_D256_ORDERED) {
            ++g_det256_calls;
            g_det256_taken += takes == want;
        }
    }
    return st;
}
static size_t fa_bwd_sm90_det_workspace(const fa_params *p)
{
    set_det_env();
    const size_t bytes = fa_bwd_sm90_workspace_bytes(p);
    unsetenv("FLASH_ATTN_C_SM90_BWD_DET");
    return bytes;
}
static const bwd_mode g_det_modes[] = {
    {"det ordered", 1, 1}, /* run twice: dq, dk, dv identical bit for bit */
};
static const bwd_target g_det_target = {fa_bwd_sm90_det_entry, fa_bwd_sm90_det_workspace, fa_bwd_sm90_supported,
                                        g_det_modes, 1};

/* ---- under test: the FEAT instance (FLASH_ATTN_C_SM90_BWD_FEAT=1, pipelined mode
 * FA_BWD_SM90_PIPE_MODE_FEAT; "pipe feat det": deterministic, its ORDERED form, mode
 * FA_BWD_SM90_PIPE_MODE_FEAT_ORDERED, run twice, bitwise identical), the g_feat_cases: every call
 * must take the mode its determinism names (a counted check), and without the variable
 * fa_bwd_sm90_supported must refuse every one of them (the sm80 backward's: a plain instance would
 * ignore softcap / ALiBi; a counted check too). */
static int g_feat_calls = 0, g_feat_taken = 0, g_feat_refused_off = 0;
static fa_status fa_bwd_sm90_feat_entry(const fa_params *p, void *stream)
{
    unsetenv("FLASH_ATTN_C_SM90_BWD_FEAT");
    g_feat_refused_off += !fa_bwd_sm90_supported(p);
    setenv("FLASH_ATTN_C_SM90_BWD_FEAT", "1", 1);
    const int takes = fa_bwd_sm90_pipe_takes(p);
    const fa_status st = fa_bwd_sm90(p, stream);
    unsetenv("FLASH_ATTN_C_SM90_BWD_FEAT");
    ++g_feat_calls;
    g_feat_taken += takes == (p->deterministic ? FA_BWD_SM90_PIPE_MODE_FEAT_ORDERED : FA_BWD_SM90_PIPE_MODE_FEAT);
    return st;
}
static int fa_bwd_sm90_feat_supported(const fa_params *p)
{
    setenv("FLASH_ATTN_C_SM90_BWD_FEAT", "1", 1);
    const int ok = fa_bwd_sm90_supported(p);
    unsetenv("FLASH_ATTN_C_SM90_BWD_FEAT");
    return ok;
}
/* the workspace under the same variable: at d > 128 the FEAT instance needs the tiled dq_accum (and,
 * deterministic, its turn counters), which fa_bwd_sm90_workspace_bytes counts only for calls the
 * sm90 backward may take */
static size_t fa_bwd_sm90_feat_workspace(const fa_params *p)
{
    setenv("FLASH_ATTN_C_SM90_BWD_FEAT", "1", 1);
    const size_t bytes = fa_bwd_sm90_workspace_bytes(p);
    unsetenv("FLASH_ATTN_C_SM90_BWD_FEAT");
    return bytes;
}
static const bwd_mode g_feat_modes[] = {
    {"pipe feat", 0, 0},
    {"pipe feat#2", 0, 0},
    {"pipe feat det", 1, 1}, /* FLASH_ATTN_C_SM90_BWD_DET unset here (main): the ORDERED form */
};
static const bwd_target g_feat_target = {fa_bwd_sm90_feat_entry, fa_bwd_sm90_feat_workspace,
                                         fa_bwd_sm90_feat_supported, g_feat_modes, 3};

/* ---- timing ------------------------------------------------------------------------------- */
static void bench(int det)
{
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    /* the sm80 column must not take the sm90 hook once the lead wires it into fa_bwd_cuda */
    setenv("FLASH_ATTN_C_SM90_BWD", "0", 1);
    const char *pipe = getenv("FLASH_ATTN_C_SM90_BWD_PIPE"), *det_env = getenv("FLASH_ATTN_C_SM90_BWD_DET");
    const char *variant = getenv("FLASH_ATTN_C_SM90_BWD_VARIANT");
    printf("bench: %s, bf16, backward only (%s), 16k tokens, h*d = 2048; TFLOP/s = 2.5 x fwd; "
           "sm90 column: FLASH_ATTN_C_SM90_BWD_PIPE=%s FLASH_ATTN_C_SM90_BWD_DET=%s "
           "FLASH_ATTN_C_SM90_BWD_VARIANT=%s\n",
           prop.name, det ? "deterministic dQ" : "atomic dQ", pipe != NULL ? pipe : "(unset)",
           det_env != NULL ? det_env : "(unset)", variant != NULL ? variant : "(unset)");
    printf("%4s %6s %4s %4s %6s %10s %9s %10s %9s %7s\n", "d", "seqlen", "b", "h", "causal", "sm90 ms",
           "TFLOP/s", "sm80 ms", "TFLOP/s", "speedup");
    const int dims[3] = {64, 128, 256};
    const int lens[6] = {512, 1024, 2048, 4096, 8192, 16384};
#ifdef FA_BWD_SM90_DEV_NO_DQ_D256
    /* bwd_sm90_check_nodq (make nodq): only d = 256 differs from the default build */
    printf("NO_DQ_D256 build: the d in (128, 256] kernel without its dQ red.adds (dQ wrong): an upper bound\n");
    const int di0 = 2;
#else
    const int di0 = 0;
#endif
    /* FA_BENCH_D=<d>: only that head dim's rows (an A/B of one instance, e.g. 256) */
    const int only_d = getenv("FA_BENCH_D") != NULL ? atoi(getenv("FA_BENCH_D")) : 0;
    for (int di = di0; di < 3; ++di)
        for (int li = 0; li < 6 && (only_d == 0 || only_d == dims[di]); ++li)
            for (int causal = 0; causal <= 1; ++causal) {
                const int d = dims[di], s = lens[li], b = 16384 / s, h = 2048 / d;
                fa_params p;
                bwd_bench_setup(b, s, h, d, causal, &p);
                p.deterministic = det;  /* before the workspace size: the ordered dQ pass needs more */
                p.workspace_bytes = std::max(fa_bwd_cuda_workspace_bytes(&p), fa_bwd_sm90_workspace_bytes(&p));
                CK(cudaMalloc(&p.workspace, std::max<size_t>(p.workspace_bytes, 16)));
                const double flops = 2.5 * 4.0 * b * h * (double)s * s * d * (causal ? 0.5 : 1.0);
                fa_status st;
                /* fa_bwd_sm90 ignores FLASH_ATTN_C_SM90_BWD but follows FLASH_ATTN_C_SM90_BWD_PIPE
                 * (1: pipelined, red.add dQ; 2: pipelined, TMA dQ); median ms, or -1 on an error */
                const double t90 = fa_bwd_sm90_can_run(&p) ? bwd_bench_median_ms(fa_bwd_sm90, &p, &st) : -1.0;
                /* FA_BENCH_SM90_ONLY set: no sm80 column (A/B runs of the sm90 kernel, half the time) */
                const double t80 = getenv("FA_BENCH_SM90_ONLY") != NULL ? -1.0 : bwd_bench_median_ms(fa_bwd_cuda, &p, &st);
                printf("%4d %6d %4d %4d %6d ", d, s, b, h, causal);
                if (t90 > 0) printf("%10.3f %9.1f ", t90, flops / (t90 * 1e-3) / 1e12);
                else printf("%10s %9s ", "n/a", "-");
                if (t80 > 0) printf("%10.3f %9.1f ", t80, flops / (t80 * 1e-3) / 1e12);
                else printf("%10s %9s ", "error", "-");
                if (t90 > 0 && t80 > 0) printf("%6.2fx", t80 / t90);
                /* which sm90 instance the column timed (fa_bwd_sm90_pipe_takes: 0 the cp.async kernel,
                 * 3 / 7 / 8 the ORDERED ones, 4 Br = 80, 5 / 6 Br = 128) */
                if (t90 > 0) printf("  mode %d", fa_bwd_sm90_pipe_takes(&p));
                printf("\n");
                fflush(stdout);
                CK(cudaFree(p.workspace));
                bwd_bench_free(&p);
            }
}

int main(int argc, char **argv)
{
    check_cli cli;
    if (!check_parse_cli(argc, argv, CHECK_OPT_FILTER | CHECK_OPT_NO_GPU | CHECK_OPT_BENCH | CHECK_OPT_DET |
                                             CHECK_OPT_STRICT,
                         "[--filter STR] [--no-gpu] [--det] [--bench [--det]]", &cli))
        return 2;
    if (cli.bench) {
        bench(cli.det);
        return 0;
    }
#ifdef FA_BWD_SM90_DEV_NO_DQ_D256
    fprintf(stderr, "bwd_sm90_check_nodq: --bench only (its d = 256 kernel adds no dQ)\n");
    return 2;
#endif
    if (!cli.no_gpu) check_print_device();
    g_det_env = getenv("FLASH_ATTN_C_SM90_BWD_DET");
    if (g_det_env != NULL && strcmp(g_det_env, "ordered_br") != 0 && strcmp(g_det_env, "ordered") != 0) {
        fprintf(stderr, "FLASH_ATTN_C_SM90_BWD_DET=%s: the checks take unset, ordered_br or ordered (--bench: any)\n",
                g_det_env);
        return 2;
    }
    g_det_br = g_det_env == NULL || strcmp(g_det_env, "ordered_br") == 0;
    g_det256 = getenv("FLASH_ATTN_C_SM90_BWD_DET256") == NULL || strcmp(getenv("FLASH_ATTN_C_SM90_BWD_DET256"), "0") != 0;
    if (g_det_env != NULL) g_det_env = strdup(g_det_env); /* unsetenv below may free the string */
    /* from here every mode sets the variable it runs under (the first case's workspace sizing included) */
    unsetenv("FLASH_ATTN_C_SM90_BWD_DET");
    check_tally tally = {0, 0};
    for (size_t i = 0; i < sizeof g_cases / sizeof g_cases[0]; ++i) {
        if (!check_selected(&cli, g_cases[i].name)) continue;
        /* --det without --bench: the "det ordered" runs alone (the sanitizer runs of the ORDERED
         * instance); d > 128: no cp.async kernel; the oracle's CPU side (--no-gpu) still runs */
        const int all = !cli.det;
        if (all && (cli.no_gpu || g_cases[i].d <= 128))
            bwd_run_case(&g_cases[i], cli.no_gpu, &g_target, &g_rng, &tally);
        if (all && !cli.no_gpu) bwd_run_case(&g_cases[i], 0, &g_pipe_target, &g_rng, &tally);
        if (all && !cli.no_gpu) bwd_run_case(&g_cases[i], 0, &g_pipe_tma_target, &g_rng, &tally);
        if (!cli.no_gpu && (g_cases[i].d <= 128 || g_det256))
            bwd_run_case(&g_cases[i], 0, &g_det_target, &g_rng, &tally);
    }
    /* softcap / ALiBi: the FEAT instance alone (its three modes; not with --det, which selects the
     * plain ORDERED instances' runs) */
    for (size_t i = 0; i < sizeof g_feat_cases / sizeof g_feat_cases[0] && !cli.det; ++i)
        if (check_selected(&cli, g_feat_cases[i].name))
            bwd_run_case(&g_feat_cases[i], cli.no_gpu, &g_feat_target, &g_rng, &tally);
    /* the "pipe" lines of cases outside the pipelined kernel's scope ran the old kernel */
    if (g_pipe_calls > 0)
        printf("pipe modes: %d of %d backward calls ran the pipelined kernel (the others: varlen or "
               "TMA-unfit strides, on the cp.async kernel); dense d <= 64 with atomic dQ: %d of %d ran its "
               "red.add instance\n",
               g_pipe_calls - g_pipe_fallbacks, g_pipe_calls, g_pipe_d64.taken, g_pipe_d64.calls);
    if (g_tma_calls > 0)
        printf("pipe tma modes: %d of %d backward calls ran the TMA-dQ instance (the others: varlen or "
               "TMA-unfit strides, on the cp.async kernel; d > 128: the dim-split red.add instance); dense "
               "d <= 64: %d of %d\n",
               g_tma_taken, g_tma_calls, g_tma_d64.taken, g_tma_d64.calls);
    if (g_det_calls > 0)
        printf("det ordered mode (FLASH_ATTN_C_SM90_BWD_DET=%s): %d of %d dense deterministic calls ran "
               "their ORDERED instance (%s; %d calls, varlen ones on the dK/dV + ordered dQ pass path)\n",
               g_det_env != NULL ? g_det_env : "(unset)", g_det_taken, g_det_dense,
               g_det_br ? "Br = 80 / 128 where they apply, else Br = 64" : "Br = 64, mode 3", g_det_calls);
    if (g_det256)
        printf("det256 ordered: %d of %d d256 det calls ran the dim-split ORDERED instance (mode %d, "
               "FLASH_ATTN_C_SM90_BWD_DET256 not 0)\n",
               g_det256_taken, g_det256_calls, FA_BWD_SM90_PIPE_MODE_D256_ORDERED);
    if (g_det_br && g_det_calls > 0)
        printf("det ordered_br: %d of %d dense calls ran the Br = 80 ORDERED instance (mode 7), %d of %d the "
               "Br = 128 one (mode 8)\n",
               g_det_br_taken[0], g_det_br_calls[0], g_det_br_taken[1], g_det_br_calls[1]);
    if (g_feat_calls > 0) {
        printf("pipe feat modes (FLASH_ATTN_C_SM90_BWD_FEAT=1): %d of %d softcap / ALiBi calls ran the FEAT instance "
               "(mode %d, deterministic %d); without the variable the sm90 backward refused %d of them "
               "(the sm80 one's)\n",
               g_feat_taken, g_feat_calls, FA_BWD_SM90_PIPE_MODE_FEAT, FA_BWD_SM90_PIPE_MODE_FEAT_ORDERED,
               g_feat_refused_off);
        check_count(&tally, g_feat_taken == g_feat_calls);
        check_count(&tally, g_feat_refused_off == g_feat_calls);
    }
    /* every dense "det ordered" call must have run the ORDERED instance its shape names (3, or unset /
     * ordered_br 7 / 8: det_expected_mode; a check, like d64_tally) */
    if (g_det_dense > 0) check_count(&tally, g_det_taken == g_det_dense);
    /* the d <= 64 lines are checks, not just counts (d64_tally) */
    if (g_pipe_d64.calls > 0) check_count(&tally, g_pipe_d64.taken == g_pipe_d64.calls);
    if (g_tma_d64.calls > 0) check_count(&tally, g_tma_d64.taken == g_tma_d64.calls);
    if (g_br80.calls > 0) {
        printf("br80 variant: %d of %d dense d in (64, 128] pipe tma calls ran the Br = 80 kernel\n", g_br80.taken,
               g_br80.calls);
        check_count(&tally, g_br80.taken == g_br80.calls);
    }
    if (g_br128.calls > 0) {
        printf("br128 variant: %d of %d dense atomic-dQ d <= 64 pipe / pipe tma calls ran the Br = 128 instances\n",
               g_br128.taken, g_br128.calls);
        check_count(&tally, g_br128.taken == g_br128.calls);
    }
    return check_summary(&tally);
}
