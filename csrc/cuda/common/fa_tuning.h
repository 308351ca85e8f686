/* fa_tuning.h - THE tuning table of the CUDA kernels: one row per (kernel, minimum arch,
 * head-dim bucket), the tile shape as named fields, and the measured reason beside each row.
 *
 * Fields (fa_tuning_row; each row names the fields it sets, the others are 0):
 *   kernel   the kernel the row tunes (FA_KERNEL_*)
 *   arch     minimum compute capability x 10 of the GPUs the row is for; the lookup takes the
 *            row with the largest arch <= the target's. 80 = every sm80+ GPU; the sm_90a-only
 *            kernels have arch-90 rows only; FA_KERNEL_BWD_SM80 adds an arch-90 row where
 *            H100/H200's larger shared memory pays.
 *   d        head-dim bucket (the kernel's compile-time head dim; smaller d zero-fills)
 *   br, bc   query rows per block (Br) and key rows per tile (Bc)
 *   warps    warps per block
 *   stages   forward: shared-memory buffers per K and V tile (1: FA2-style interleave, V(j)
 *            loads during S = Q K(j)^T and K(j+1) during O += P V(j); 2: K(j+1), V(j+1) load
 *            during all of iteration j); sm90 forward: depth of the K/V slot ring; backward:
 *            Q (+ LSE, D) buffers (dK/dV kernels) or K, V buffers (ordered dQ kernel)
 *   q_in_regs, feat_q_smem         FA_KERNEL_FWD_SM80 only, see fa_tuning_row
 *   feat_br, feat_warps            FA_KERNEL_FWD_SM90 only: the kFeat ANY instance's tile (at d = 64
 *            also the plain dense calls' within small_br_max_sq, sm90/fa_fwd_sm90_route.cuh)
 *   small_br_max_sq                FA_KERNEL_FWD_SM90 only: plain dense causal calls with seqlen_q and
 *            seqlen_k up to this run the feat_br tile (the measured rule; 0: never);
 *            FLASH_ATTN_C_SM90_FWD_D64_BR=128 takes it for every plain dense call, =192 never
 *   pingpong                       FA_KERNEL_FWD_SM90 only: the consumer warpgroups issue their
 *            GEMMs in turn, so one's softmax runs while another's GEMMs use the tensor cores
 *   persist                        FA_KERNEL_FWD_SM90 only: whether the bucket has the persistent-
 *            grid instance (fa_fwd_sm90_persist.cuh) for dense calls without softcap / ALiBi /
 *            dropout, and which calls take it by default (FA_PERSIST_*; the measured rule):
 *            FLASH_ATTN_C_SM90_FWD_PERSIST=1 / =0 overrides that rule (sm90/fa_fwd_sm90_route.cuh);
 *            softcap / ALiBi / dropout alone follow it with FLASH_ATTN_C_SM90_FWD_PERSIST_FEAT=1 (opt-in)
 *   wide_bc                        FA_KERNEL_FWD_SM90 only: Bc of the "wide" instance that the plain
 *            dense calls without causal or window take on the one-block grid (no masked tiles but the
 *            sequence end, so a longer key tile only cuts per-tile overhead); 0: none.
 *            FLASH_ATTN_C_SM90_FWD_WIDE=0 keeps those calls on bc (sm90/fa_fwd_sm90_route.cuh)
 *   wide_min_sk                    FA_KERNEL_FWD_SM90 only: the wide instance only from this seqlen_k
 *            on (the measured rule); FLASH_ATTN_C_SM90_FWD_WIDE=1 takes it at every length
 *   wm_sdp, wn_dkv, wm_dq, do_stages, dq_passes, addr   FA_KERNEL_BWD_SM80 only, see the
 *            backward section
 *
 * Budgets that decided the sm80 forward rows (mma.sync path, fp32 accumulators):
 *   - registers per thread (cap 255, zero spills): O accumulator (16 kMT x d) / 32 lanes
 *     = kMT * d / 2, S tile kMT * Bc / 2, Q fragments kMT * d / 4 when in registers,
 *     where kMT = Br / (16 warps) is the number of 16-row m-tiles a warp owns.
 *   - shared-memory bandwidth (128 B/clk/SM): every warp reads the whole K and V tile with
 *     ldmatrix, so tensor-core work per shared byte is 16 kMT FLOP/B (less when Q is re-read).
 *     kMT = 2 is worth a lot: with kMT = 1 the ldmatrix traffic alone caps an SM at about
 *     2 kFLOP/clk, below what mma.sync can do on H100. kMT = 2 needs O = d regs, so it is used
 *     up to d = 128; above that a warp owns 16 rows (kMT = 1).
 *   - shared memory per block <= 163 KB (A100 opt-in limit; H100/H200 allow 227 KB), and two
 *     blocks per SM where it fits so one block's softmax overlaps the other's MMAs.
 *   - Br = 128 for every row: the causal/window skipping granularity and the grid size at
 *     16k tokens (b * h * sq / 128 blocks >= 2 waves on 132 SMs for h*d = 2048).
 */
#ifndef FA_TUNING_H
#define FA_TUNING_H

/* The kernels the table tunes. */
enum {
    FA_KERNEL_FWD_SM80 = 0,    /* sm80/fa_fwd_kernel.cuh: mma.sync forward, every GPU from sm_80 on */
    FA_KERNEL_FWD_SM90 = 1,    /* sm90/fa_fwd_sm90_kernel.cuh: wgmma + TMA forward, sm_90a only */
    FA_KERNEL_BWD_SM80 = 2,    /* sm80/fa_bwd_dkdv.cuh: dK, dV (and atomic dQ) of a key block */
    FA_KERNEL_BWD_DQ_SM80 = 3, /* sm80/fa_bwd_dq.cuh: the ordered (deterministic) dQ pass */
    FA_KERNEL_BWD_SM90 = 4,    /* sm90/fa_bwd_sm90_kernel.cuh: wgmma backward, sm_90a only */
    FA_KERNEL_SPLITKV = 5,     /* decode/fa_splitkv_kernel.cuh: split-KV forward (decode, KV cache) */
    FA_KERNEL_BWD_SM90_PIPE = 6, /* sm90/fa_bwd_sm90_pipe_kernel.cuh: the sm90 backward with a TMA
                                    producer warpgroup (the default at d > 64 with atomic dQ;
                                    FLASH_ATTN_C_SM90_BWD_PIPE, fa_bwd_sm90_plan.cu) */
    FA_KERNEL_BWD_SM90_PIPE80 = 7, /* sm90/fa_bwd_sm90_pipe80.cuh: its Br = 80 form at d in (64, 128],
                                     TMA dQ, the default there (FLASH_ATTN_C_SM90_BWD_VARIANT) */
    FA_KERNEL_BWD_SM90_PIPE128 = 8 /* sm90/fa_bwd_sm90_pipe128.cuh: FA_KERNEL_BWD_SM90_PIPE at Br = 128,
                                      d <= 64, atomic dQ, the default there (FLASH_ATTN_C_SM90_BWD_VARIANT) */
};

/* FA_KERNEL_FWD_SM90 persist: no persistent instance; an instance only FLASH_ATTN_C_SM90_FWD_PERSIST=1
 * selects; the default for causal calls (window_left < 0, window_right = 0); the default for every
 * call in its scope. */
enum { FA_PERSIST_NONE = 0, FA_PERSIST_OPT_IN = 1, FA_PERSIST_CAUSAL = 2, FA_PERSIST_ALL = 3 };

/* FA_KERNEL_BWD_SM80 addr: which ldmatrix operands use precomputed per-lane addresses
 * ([register + immediate], no per-load swizzle arithmetic, but 4 or one-per-block registers held
 * through a product): FA_BWD_ADDR_KCOLS = operands stored k along columns (Q, dO, K, V in S/dP,
 * dS in dQ), FA_BWD_ADDR_KROWS = operands stored k along rows (P, dS, dO, Q in dV/dK, K in dQ).
 * Chosen per row as what compiles without spills (the d = 64/128 kernels sit at 255 registers). */
enum { FA_BWD_ADDR_KCOLS = 1, FA_BWD_ADDR_KROWS = 2, FA_BWD_ADDR_ALL = 3 };

typedef struct fa_tuning_row {
    int kernel;      /* FA_KERNEL_* */
    int arch;        /* minimum compute capability x 10 */
    int d;           /* head-dim bucket */
    int br, bc;      /* query rows per block, key rows per tile */
    int warps;       /* warps per block */
    int stages;      /* K/V buffers (forward), Q buffers (dK/dV), K/V buffers (ordered dQ) */
    int q_in_regs;   /* FWD_SM80: Q fragments in registers for the whole block */
    int feat_q_smem; /* FWD_SM80: ...but re-read from smem in the softcap/ALiBi/dropout variant,
                        whose extra code needs the registers */
    int feat_br;     /* FWD_SM90: Br of the kFeat ANY instance (softcap + ALiBi, dropout with either) where it differs (0: br) */
    int feat_warps;  /* FWD_SM90: warps of the kFeat ANY instance where they differ (0: warps) */
    int pingpong;    /* FWD_SM90: consumer warpgroups take turns issuing their GEMMs (1) */
    int persist;     /* FWD_SM90: FA_PERSIST_*: the persistent-grid instance and its default scope */
    int wide_bc;     /* FWD_SM90: Bc of the plain dense calls with no mask band (0: bc), see below */
    int wide_min_sk; /* FWD_SM90: ... from this seqlen_k on (shorter calls keep bc) */
    int small_br_max_sq; /* FWD_SM90 d = 64: plain dense causal calls up to this seqlen_q and seqlen_k run
                            the feat_br / feat_warps tile (0: never) */
    int wm_sdp;      /* BWD_SM80: warps along Br in S = Q K^T and dP = dO V^T */
    int wn_dkv;      /* BWD_SM80: warps along Bc in dV += P^T dO and dK += dS^T Q */
    int wm_dq;       /* BWD_SM80: warps along Br in dQ += dS K */
    int do_stages;   /* BWD_SM80: dO buffers, 1 or 2 */
    int dq_passes;   /* BWD_SM80: column slices of a warp's dQ tile, computed one after the other */
    int addr;        /* BWD_SM80: FA_BWD_ADDR_* */
    const char *reason;
} fa_tuning_row;

/* FA_KERNEL_SPLITKV split count (num_splits = 0): streaming warps per SM the grid aims for (the
 * measured rule and its data: the FA_KERNEL_SPLITKV rows below). */
#define FA_SPLITKV_WARPS_PER_SM 4

/* C++ only (every CUDA source is C++): the table itself (designated initializers: nvcc accepts
 * them in C++17 when they follow the declaration order), and a compile-time lookup used as
 * template arguments. */
#ifdef __cplusplus
static constexpr fa_tuning_row fa_tuning_table[] = {
    /* ================================ FA_KERNEL_FWD_SM80 ================================= */
    {.kernel = FA_KERNEL_FWD_SM80, .arch = 80, .d = 32, .br = 128, .bc = 64, .warps = 4, .stages = 2,
     .q_in_regs = 1,
     .reason = "kMT=2: O 32 + S 64 + Q 16 regs; Bc=128 spilled in the softcap/ALiBi/dropout variant; "
               "smem 8+16 = 24 KB"},
    {.kernel = FA_KERNEL_FWD_SM80, .arch = 80, .d = 64, .br = 128, .bc = 64, .warps = 4, .stages = 2,
     .q_in_regs = 1, .feat_q_smem = 1,
     .reason = "kMT=2 (32 FLOP/B of smem): O 64 + S 64 + Q 32 regs; Bc=128 would need S 128 and spill "
               "with Q in regs; the feature variant spilled 16 B on sm_80 with Q in regs; smem 48 KB"},
    {.kernel = FA_KERNEL_FWD_SM80, .arch = 80, .d = 96, .br = 128, .bc = 64, .warps = 4, .stages = 2,
     .reason = "kMT=2: O 96 + S 64 regs; Q (48 regs) is re-read from smem to stay under 255 without "
               "spills; smem 24+48 = 72 KB"},
    {.kernel = FA_KERNEL_FWD_SM80, .arch = 80, .d = 128, .br = 128, .bc = 32, .warps = 4, .stages = 2,
     .reason = "kMT=2: O 128 + S 32 regs, Q re-read from smem (21 FLOP/B vs 16 for kMT=1). Bc=64 "
               "(26 FLOP/B, half the per-tile barriers) left 48 B of spills (l_i) on sm_90, Bc=48 12 B"},
    {.kernel = FA_KERNEL_FWD_SM80, .arch = 80, .d = 160, .br = 128, .bc = 64, .warps = 8, .stages = 2,
     .q_in_regs = 1,
     .reason = "kMT=1 (kMT=2 needs O 160 regs): O 80 + S 32 + Q 40 regs; 8 warps keep Br=128; "
               "smem 40+80 = 120 KB"},
    {.kernel = FA_KERNEL_FWD_SM80, .arch = 80, .d = 192, .br = 128, .bc = 64, .warps = 8, .stages = 2,
     .q_in_regs = 1,
     .reason = "kMT=1: O 96 + S 32 + Q 48 regs; smem 48+96 = 144 KB (fits A100's 163 KB)"},
    {.kernel = FA_KERNEL_FWD_SM80, .arch = 80, .d = 224, .br = 128, .bc = 32, .warps = 8, .stages = 2,
     .reason = "kMT=1: O 112 + S 16 regs; Q in regs (+56) spilled; Bc=64 with 1 stage spilled 20 B on "
               "sm_80; Bc=32 double-buffered: 56 + 2*28 = 112 KB"},
    {.kernel = FA_KERNEL_FWD_SM80, .arch = 80, .d = 256, .br = 128, .bc = 64, .warps = 8, .stages = 1,
     .reason = "kMT=1: O 128 + S 32 regs; Q in regs (+64) would spill, so Q is re-read from smem; "
               "1 stage interleave, smem 64+64 = 128 KB (2 stages = 192 KB does not fit A100)"},

    /* ================================ FA_KERNEL_FWD_SM90 =================================
     * The Hopper kernel (fa_fwd_sm90_kernel.cuh, wgmma + TMA, sm_90a only). warps =
     * 4 x (1 producer + Br/64 consumer warpgroups); stages = depth of the K/V slot ring. Budgets:
     * consumer registers (240 after setmaxnreg with 2 consumer warpgroups) = O d/2 + S Bc/2 +
     * P Bc/4 + ~30; shared memory (Br + 2 stages Bc) d 2 B + 1 KB <= 227 KB. */
    {.kernel = FA_KERNEL_FWD_SM90, .arch = 90, .d = 64, .br = 192, .bc = 128, .warps = 16, .stages = 2,
     .feat_br = 128, .feat_warps = 12, .pingpong = 1, .persist = FA_PERSIST_ALL, .small_br_max_sq = 1024,
     .reason = "small_br_max_sq 1024: the plain calls on the 128-row, 2-warpgroup tile ran causal 1.17 / 1.20 / "
               "1.02 / 0.98 / 0.92 / 0.88x the 192-row tile at 512 / 1k / 2k / 4k / 8k / 16k, non-causal "
               "0.80-0.93x at every length (H100 run 82, harness bench, 2 rounds, bf16 16k tokens, h*d 2048; "
               "checks 28 / 28, memcheck / synccheck clean), so causal calls up to 1k take it "
               "(2k: within noise); "
               "persist ALL: 1.01-1.20x the one-block grid over the 12 shapes but one (causal 16k 0.97; causal "
               "1.10-1.20 at 512..8k, non-causal 1.12 at 512, 1.01-1.06 from 1k; H100 run 54, harness bench, "
               "bf16 16k tokens, h*d 2048, 1 round); harness 21 / 21 persistent cases, 354 plain cases before "
               "the call's time ran out, 0 failed; racecheck / synccheck clean (run 54). Item order: "
               "the query blocks of G (batch, head) pairs run together, G = whole GQA groups whose K/V "
               "(kv heads x sk x d x 2 x 2 B) fits 16 MB of the 50 MB L2 (fa_fwd_sm90_route.cuh), so each K/V "
               "head is read from HBM about once; each CTA walks (longest, shortest) item pairs for causal "
               "balance (fa_fwd_sm90_persist.cuh); two Q slots (+24 KB: 112 KB), so the next item's Q and "
               "K/V load during this item's last tiles and epilogue; 0 spills, highest "
               "SASS register R156 of 160 (nvcc 13.0). "
               "The first order (query blocks outermost over all pairs) ran 0.88-1.00x the one-block grid "
               "here, 0.60-0.95x at d = 128 (H100 run 52; correct: harness 357/357 with it, run 51); an "
               "earlier persistent kernel without ping-pong ran 1.06x (run 48). "
               "pingpong: neutral here, 1.011x geomean (0.97-1.05) over 12 shapes (H100 run 48, harness bench), kept for the kFeat variant's softmax-side work. 3 consumer warpgroups (FA3's 192x128): at d=64 the MMA per tile is smallest, so a third "
               "warpgroup hides more softmax; O 32 + S 64 + P 32 regs fit the 160 of 3 warpgroups (152 "
               "used, no spills; Br=128 / 12 warps also compiles clean); smem 24 + 2x2x16 = 88 KB. "
               "kFeat ANY (softcap and ALiBi together, dropout with either): 2 consumer warpgroups at 240 "
               "regs, the 3-warpgroup variant spilled 120 B at 160; softcap alone / ALiBi alone / dropout "
               "alone (FA_SM90_FEAT_CAP / ALIBI / DROP) run this 3-warpgroup tile, 0 spills (nvcc 13.0; "
               "DROP: highest SASS register R157 of 160): at d = 64 ALiBi 1.07-1.54x, softcap 1.03-1.35x, "
               "dropout 1.09-1.41x the ANY instance's 2-warpgroup tile they ran on before (H100 runs 77 "
               "and 79, harness bench, the feature calls of 12 shapes)"},
    {.kernel = FA_KERNEL_FWD_SM90, .arch = 90, .d = 128, .br = 128, .bc = 128, .warps = 12, .stages = 2,
     .pingpong = 1, .persist = FA_PERSIST_CAUSAL, .wide_bc = 176, .wide_min_sk = 4096,
     .reason = "wide_bc 176: FA3's non-causal hdim-128 tile (128 x 176), d128 non-causal 1.01-1.07x the "
               "128-key tile at seqlen 4k..16k (8k: 651-659 vs 614-627 TFLOP/s), 0.95-1.00x at 512 / 1k, "
               "0.98-1.01x at 2k (H100 runs 77-78, harness bench, 2 + 3 rounds), hence wide_min_sk 4096; "
               "S 88 + P 44 + O 64 regs, 0 spills; smem 32 + 2x2x44 = 208 KB (one Q slot: the persistent "
               "grid keeps Bc 128). "
               "persist CAUSAL: grouped item order and two Q slots (+32 KB: 193 KB) as the d = 64 row (R202 of "
               "240, 0 spills): causal 1.10 / 1.07 / 1.06 / 1.01 / 1.00 / 0.98x the one-block grid at "
               "512..16k, non-causal 0.97-0.99x at 512..8k (1.01 at 16k), so non-causal calls keep the "
               "one-block grid (H100 run 54, harness bench, 1 round); "
               "the first order ran 0.60-0.70x at 512..2048, 0.89-0.95x at 4k..16k (run 52). "
               "pingpong: neutral here, 1.005x geomean (0.99-1.02) over 12 shapes (H100 run 48). O 64 + S 64 + P 32 regs (FA3's 128x128; 184 of 240 used, no spills); smem 32 + 2x2x32 = "
               "160 KB, 2 stages so K_j+1 and V_j+1 land during tile j"},
    {.kernel = FA_KERNEL_FWD_SM90, .arch = 90, .d = 256, .br = 128, .bc = 80, .warps = 12, .stages = 2,
     .pingpong = 1,
     .reason = "no persist (d = 64 / 128 only). Bc = 80, not 64: 1.02-1.07x the Bc = 64 kernel at seqlen 1k..16k, 0.97-0.99x at 512 (H100 "
               "run 52, harness bench, 2 rounds; run 48: 1.038x geomean); O 128 regs + S 40 + P 20, 0 spills; "
               "smem 64 + 2x2x40 = 224 KB of the 227. pingpong: 1.030x geomean (1.01-1.09) over 12 shapes "
               "(H100 run 48, at Bc = 64); L2-flushed sweep run 39: +6.9% / +9.2% at 8k / 16k non-causal"},

    /* ================================ FA_KERNEL_BWD_SM80 =================================
     * The dK/dV kernel (fa_bwd_dkdv.cuh): one block owns Bc keys of one kv head, keeps dK, dV in
     * registers and loops over the query blocks (and the query heads of its GQA group) in the mask
     * band. Per query block it runs five products with three warp grids:
     *   S = Q K^T, dP = dO V^T   (Br x Bc)   wm_sdp warps along Br, warps / wm_sdp along Bc
     *   dV += P^T dO, dK += dS^T Q (Bc x d)  wn_dkv warps along Bc, warps / wn_dkv along d
     *   dQ += dS K               (Br x d)    wm_dq  warps along Br, warps / wm_dq along d
     * P and dS go through shared memory between the grids. stages = Q (+ LSE, D) buffers;
     * do_stages = dO buffers: 2 = the next tile loads during a whole iteration, 1 = it loads after
     * its last use in this iteration (one more barrier). dq_passes > 1 splits a warp's dQ tile
     * into that many column slices computed one after the other (fewer live accumulators, dS
     * re-read from shared memory); addr: FA_BWD_ADDR_* above. Budgets: registers = dK + dV
     * accumulators 2 Bc d / (32 warps) + S and dP 2 Br Bc / (32 warps) (+ dQ Br d / (32 warps)
     * while S, dP are dead), cap 255 and no spills; shared memory in bytes (swizzled, no padding):
     *   2 (2 Bc d + (stages + do_stages) Br d + 2 Br Bc) + 8 stages Br
     * <= 163 KB on sm80 (A100 opt-in limit), <= 227 KB on sm90. Br, Bc and warps must be the same
     * in the arch 80 and arch 90 rows of a head dim (the host picks grid and block size without
     * knowing which cubin runs); only the buffering may differ, and the sm90 row may not use less
     * shared memory than the sm80 row. */
    {.kernel = FA_KERNEL_BWD_SM80, .arch = 80, .d = 64, .br = 128, .bc = 128, .warps = 8, .stages = 2,
     .wm_sdp = 2, .wn_dkv = 4, .wm_dq = 4, .do_stages = 2, .dq_passes = 1, .addr = FA_BWD_ADDR_ALL,
     .reason = "S/dP warp tiles 64x32: S + dP 128 regs, dK + dV (32x32 tiles) 64 regs; Br = Bc = 128 "
               "gives 8 warps square-ish tiles (96 smem rows read per warp product) and halves the dQ "
               "atomics per FLOP vs Bc = 64; smem 32 K,V + 64 Q,dO x2 + 64 P,dS + 2 = 162 KB (A100 fits)"},
    {.kernel = FA_KERNEL_BWD_SM80, .arch = 80, .d = 96, .br = 64, .bc = 128, .warps = 8, .stages = 2,
     .wm_sdp = 2, .wn_dkv = 4, .wm_dq = 4, .do_stages = 2, .dq_passes = 1, .addr = FA_BWD_ADDR_ALL,
     .reason = "as d = 128 with dK + dV 32x48 tiles (96 regs); dQ 16x48 tiles (4x2 warps: 48 columns "
               "split in 8-column pairs needs 2 warps along d); smem 48 K,V + 48 Q,dO x2 + 32 P,dS = 129 KB"},
    {.kernel = FA_KERNEL_BWD_SM80, .arch = 80, .d = 128, .br = 64, .bc = 128, .warps = 8, .stages = 2,
     .wm_sdp = 2, .wn_dkv = 4, .wm_dq = 2, .do_stages = 2, .dq_passes = 1, .addr = FA_BWD_ADDR_KROWS,
     .reason = "dK + dV (32x64 tiles) 128 regs, so S/dP shrink to Br = 64 (32x32 tiles, 64 regs); "
               "Bc = 128 keeps K, V reuse and dQ atomics at 1 per 128 keys; dQ 32x32 tiles 32 regs; "
               "smem 64 K,V + 64 Q,dO x2 + 32 P,dS + 1 = 161 KB (A100 fits)"},
    {.kernel = FA_KERNEL_BWD_SM80, .arch = 80, .d = 192, .br = 64, .bc = 64, .warps = 8, .stages = 2,
     .wm_sdp = 4, .wn_dkv = 2, .wm_dq = 4, .do_stages = 2, .dq_passes = 1, .addr = FA_BWD_ADDR_ALL,
     .reason = "as d = 256 but dK + dV (32x48 tiles) 96 regs and dQ 16x96 tiles 48 regs in one pass; "
               "Q and dO double buffered: 48 K,V + 96 Q,dO x2 + 16 P,dS = 161 KB fits A100"},
    {.kernel = FA_KERNEL_BWD_SM80, .arch = 80, .d = 256, .br = 64, .bc = 64, .warps = 8, .stages = 1,
     .wm_sdp = 4, .wn_dkv = 2, .wm_dq = 2, .do_stages = 1, .dq_passes = 2, .addr = FA_BWD_ADDR_ALL,
     .reason = "dK + dV (32x64 tiles) 128 regs; dQ 32x64 tiles in 2 passes of 32 columns (32 regs: one "
               "pass spilled 4 bytes on sm80); S/dP 16x32 tiles (32 regs); Bc = 64 (Bc = 128 would need "
               "256 accumulator regs); single Q and dO buffers: "
               "64 K,V + 64 Q,dO + 16 P,dS = 144.5 KB fits A100, double buffers (208.5 KB) do not"},
    {.kernel = FA_KERNEL_BWD_SM80, .arch = 90, .d = 256, .br = 64, .bc = 64, .warps = 8, .stages = 2,
     .wm_sdp = 4, .wn_dkv = 2, .wm_dq = 2, .do_stages = 2, .dq_passes = 1, .addr = FA_BWD_ADDR_ALL,
     .reason = "as the sm80 row, but H100/H200 have 227 KB: Q and dO double buffered (208.5 KB) so the "
               "next tiles load during a whole iteration and two barriers per iteration go away; the "
               "32x64 dQ tile in one pass (64 regs) fits the sm90 allocation without spills"},

    /* ================================ FA_KERNEL_BWD_SM90 =================================
     * The Hopper backward (fa_bwd_sm90_kernel.cuh, wgmma, sm_90a only): 2 warpgroups x 64 keys =
     * Bc 128, 8 warps, 2-stage Q/dO ring (stages). Registers per thread (cap 255, zero spills):
     * dK + dV 2 (64 d / 128) = d, S^T + dP^T 2 (64 Br / 128) = Br, then P^T, dS^T fragments Br/2
     * and dQ 32. Shared memory: 2 Bc d 2 B (K, V) + 4 Br d 2 B (Q, dO x 2) + Bc Br 2 B (dS^T)
     * + 1 KB <= 227 KB. */
    {.kernel = FA_KERNEL_BWD_SM90, .arch = 90, .d = 64, .br = 128, .bc = 128, .warps = 8, .stages = 2,
     .reason = "dK + dV only 64 regs, so Br = 128 (S^T + dP^T 128 regs): each wgmma is N = 128 instead "
               "of 64, barriers, LSE/D loads and loop overhead per FLOP halve, and dQ splits by queries "
               "(one red.add per dq entry per CTA instead of two); 255 regs, no spills; measured on the H200: "
               "bwd 261 vs 202 TFLOP/s at s = 8k (Br = 64); smem 32 K,V + 64 Q,dO + 32 dS = 129 KB"},
    {.kernel = FA_KERNEL_BWD_SM90, .arch = 90, .d = 128, .br = 64, .bc = 128, .warps = 8, .stages = 2,
     .reason = "dK + dV 128 regs, so Br = 64 (S^T + dP^T 64 regs; Br = 128 would need 256); dQ splits by "
               "dims; 255 regs, no spills; smem 64 K,V + 64 Q,dO + 16 dS = 145 KB"},

    /* ============================== FA_KERNEL_BWD_SM90_PIPE ==============================
     * The math of FA_KERNEL_BWD_SM90 (Bc = 128, its helpers, S^T/dP^T Br/2 + Br/2 and dK/dV d/2
     * + d/2 registers) with its own Br, plus a producer warpgroup (12 warps = 1 producer + 2
     * consumer warpgroups; setmaxnreg 24 / 240, so the consumers must fit 240 registers instead
     * of 255) that streams Q + LSE and dO + D into a `stages`-deep mbarrier ring by TMA. dS^T is
     * double buffered (2 Bc Br 2 B) so that no barrier guards its reuse. dQ: one 64-query x N tile
     * per consumer warpgroup (N = Br d / 128: Br = 64 splits the dims, Br = 128 the queries;
     * N / 2 registers). Shared memory: 2 Bc d 2 B (K, V) + 2 stages Br d 2 B (Q, dO) + 2 Bc Br 2 B
     * (dS^T x 2) + 1 KB; the TMA-dQ instance (the default for atomic dQ at d = 128) adds a
     * 64 x N fp32 dQ staging buffer per consumer warpgroup (2 x 16 KB at N = 64, 2 x 8 KB at
     * N = 32); static: 2 stages Br 4 B (LSE, D) + the mbarriers. The softcap / ALiBi FEAT instance
     * (opt-in FLASH_ATTN_C_SM90_BWD_FEAT=1) runs these rows with TMA or ORDERED dQ: why Br = 64 and not the
     * Br = 80 / 128 tiles: their preset accumulators (-LSE / scale, -D) assume plain scores, and at
     * Br = 64 the feature pass fits (0 spills, R233 at d = 128, R175 at d = 64; the d = 256 row's
     * dim split too, R219; not yet timed). */
    {.kernel = FA_KERNEL_BWD_SM90_PIPE, .arch = 90, .d = 64, .br = 64, .bc = 128, .warps = 12, .stages = 2,
     .reason = "Br = 64, not FA_KERNEL_BWD_SM90's 128: with Br = 128 both atomic-dQ instances spilled at "
               "the consumers' 240 regs (red.add 48 B, TMA dQ 92 B; nvcc 13.0); with Br = 64 S^T + dP^T "
               "are 64 regs, dQ splits the dims (wgmma N = 32, 16 regs; TMA dQ: one 32 x 64 box per "
               "warpgroup) and every instance (kDq 0/1/2, bf16/fp16; the dK/dV-only one ran Br = 128 "
               "before) compiles with 0 spills, highest register in the SASS R176 (red.add) / R182 (TMA "
               "dQ) / R155 (dK/dV only) of the 240. H100 run 50 (bf16 16k tokens, h*d 2048): TMA dQ "
               "(=2) 1.09-1.21x the cp.async kernel (Br 128; 327 vs 277 TFLOP/s at 16k non-causal), "
               "harness 135 of 135 d <= 64 cases, compute-sanitizer memcheck / racecheck / synccheck "
               "clean on them (run 51): the default for atomic dQ. smem 32 K,V + 32 Q,dO + 2 x 16 dS^T "
               "= 97 KB, TMA dQ + 2 x 8 dQ staging = 113 KB (+ 1.1 KB static), so 3-4 stages "
               "(129 / 145 KB with TMA dQ) fit: candidates for the A/B"},
    {.kernel = FA_KERNEL_BWD_SM90_PIPE, .arch = 90, .d = 128, .br = 64, .bc = 128, .warps = 12, .stages = 2,
     .reason = "Br and the 2 stages of the FA_KERNEL_BWD_SM90 row (3 stages not yet tried). bf16 16k tokens "
               "on H100: red.add dQ (=1) 1.02-1.10x that kernel (run 37); TMA dQ (=2, the default) "
               "1.13-1.32x red.add, 154-475 TFLOP/s (run 41: 459 at 16k non-causal, 361 with red.add). "
               "smem 64 K,V + 64 Q,dO + 2 x 16 dS^T = 161 KB (3 stages: 193 KB, fits); TMA dQ + 2 x 16 dQ "
               "staging = 193 KB (3 stages then 225 KB + 1.6 KB static: fits the 227 KB by 0.4 KB)"},
    /* FA_KERNEL_BWD_SM90_PIPE80 (fa_bwd_sm90_pipe80.cuh): the d = 128 row above with FA3's non-causal
     * hdim-128 tile (hopper/flash_bwd_launch_template.h run_mha_bwd_hdim128: kBlockM 80, kBlockN 128,
     * SdP_swapAB, dQ_swapAB, 2 Q/dO stages, 2 dS stages). */
    {.kernel = FA_KERNEL_BWD_SM90_PIPE80, .arch = 90, .d = 128, .br = 80, .bc = 128, .warps = 12, .stages = 2,
     .reason = "Br = 80 instead of 64: S^T / dP^T wgmma N = 80 (SS m64n64k16 reads 4 KB of smem per 32 "
               "tensor-core cycles, the SM's 128 B/clk; N = 80 reads 4.5 KB per 40) and 25% more FLOPs per "
               "per-tile barrier / mbarrier wait / wgmma drain; dQ as dQ^T = K^T dS (M = 64 dims, N = 80) "
               "since 80 queries are no wgmma M. S^T + dP^T 40 + 40 regs, dK + dV 64 + 64, dQ^T 40. smem "
               "64 K,V + 80 Q,dO + 2 x 20 dS + 2 x 20 dQ^T staging + 1 = 225 KB + 1.3 KB static (of 227): "
               "no third stage. Opt-in until timed against the Br = 64 row"},
    /* FA_KERNEL_BWD_SM90_PIPE128 (fa_bwd_sm90_pipe128.cuh): the d = 64 row above at FA3's hdim-64 tile
     * (hopper/flash_bwd_launch_template.h run_mha_bwd_hdim64: kBlockM 128, kBlockN 128). */
    {.kernel = FA_KERNEL_BWD_SM90_PIPE128, .arch = 90, .d = 64, .br = 128, .bc = 128, .warps = 12, .stages = 2,
     .reason = "Br = 128 instead of 64: S^T / dP^T wgmma N = 128 (the SS product reads 4 KB of smem per 64 "
               "tensor-core cycles instead of per 32) and twice the FLOPs per per-tile barrier / mbarrier "
               "wait / wgmma drain; dQ splits the queries (64 x 64 per warpgroup, N = 64). S^T + dP^T 64 + "
               "64 regs, dK + dV 32 + 32: 0 spills at 240 only with the Br = 80 kernel's register tricks "
               "(accumulators preset to -LSE2 / scale_log2 and -D, shfl'd warp indices, mask as a second "
               "pass). smem 32 K,V + 64 Q,dO + 2 x 32 dS^T + 1 = 161 KB, TMA dQ + 2 x 16 staging = 193 KB "
               "(+ 2.1 KB static). Opt-in until timed against the Br = 64 row"},
    /* d = 256 (d in (128, 256]): the dim split (fa_bwd_sm90_pipe_dsplit.cuh): Bc = Br = 64, both consumer
     * warpgroups on the same 64 keys, each owning 128 of the 256 dims of dK, dV (64 + 64 regs);
     * opt-in (FLASH_ATTN_C_SM90_BWD_PIPE=1/2) until it has run on a GPU. */
    {.kernel = FA_KERNEL_BWD_SM90_PIPE, .arch = 90, .d = 256, .br = 64, .bc = 64, .warps = 12, .stages = 2,
     .reason = "Bc = Br = 64, head dims split over the consumer warpgroups (128 each: dK + dV 64 + 64 regs; "
               "a key split as at d = 128 would need 128 + 128); S^T / dP^T computed once, a 32-query half "
               "per warpgroup (wgmma N = 32, 16 + 16 regs), P^T / dS^T exchanged through shared memory; dQ as "
               "two N = 64 halves by red.add (no TMA dQ: 2 x 32 KB of staging does not fit). H100 run 52 (bf16, "
               "16k tokens): 1.10-1.26x the sm80 kernel (269 vs 214 TFLOP/s at 16k non-causal), so the "
               "default for atomic dQ at d in (128, 256]; harness 80/80, sanitizers clean (run 51). 0 spills, highest register in the SASS R236 (red.add) / R201 (dK/dV "
               "only) of the 240; smem 64 K,V + 128 Q,dO + 2 x 8 dS^T + 2 x 8 P^T + 1 = 225 KB + 1.1 KB "
               "static of the 227 KB, so no third stage"},

    /* =============================== FA_KERNEL_BWD_DQ_SM80 ===============================
     * The deterministic dQ kernel (fa_bwd_dq.cuh), used instead of float atomics when
     * deterministic = 1: one block owns Br = 16 warps query rows, loops over the key blocks of
     * the band with K, V double buffered (stages = 2), keeps dS in registers and feeds it straight
     * into dQ += dS K (C fragments repacked as A fragments). */
    {.kernel = FA_KERNEL_BWD_DQ_SM80, .arch = 80, .d = 64, .br = 64, .bc = 64, .warps = 4, .stages = 2,
     .reason = "warp = 16 rows x 64 keys: S + dP 64 regs, dQ 32 regs (Bc = 128: S + dP 128 regs spilled on "
               "sm90); smem 16 Q,dO + 2 x 16 K,V = 48 KB -> several blocks/SM overlap exp with MMAs"},
    {.kernel = FA_KERNEL_BWD_DQ_SM80, .arch = 80, .d = 96, .br = 64, .bc = 64, .warps = 4, .stages = 2,
     .reason = "S + dP 64 regs, dQ 48 regs; smem 24 Q,dO + 2 x 24 K,V = 72 KB"},
    {.kernel = FA_KERNEL_BWD_DQ_SM80, .arch = 80, .d = 128, .br = 64, .bc = 64, .warps = 4, .stages = 2,
     .reason = "S + dP 64 regs, dQ 64 regs; smem 32 Q,dO + 2 x 32 K,V = 96 KB (2 blocks/SM on H100)"},
    {.kernel = FA_KERNEL_BWD_DQ_SM80, .arch = 80, .d = 192, .br = 64, .bc = 32, .warps = 4, .stages = 2,
     .reason = "dQ 96 regs, so Bc = 32 as for d = 256 (S + dP 32 regs); smem 48 Q,dO + 2 x 24 K,V = 96 KB"},
    {.kernel = FA_KERNEL_BWD_DQ_SM80, .arch = 80, .d = 256, .br = 64, .bc = 32, .warps = 4, .stages = 2,
     .reason = "dQ accumulator alone is 128 regs, so Bc = 32 (S + dP 32 regs); smem 64 Q,dO + 2 x 32 K,V "
               "= 128 KB"},

    /* ================================ FA_KERNEL_SPLITKV =================================
     * The split-KV forward (decode/fa_splitkv_kernel.cuh): br = 16 packed query rows (one mma
     * m-tile of (query, head-of-the-group) pairs), each of the warps takes bc / warps keys of
     * every tile, stages = depth of the cp.async K/V ring. Decode is a stream over the cache,
     * so the rows are sized for bytes in flight: (stages - 1) x bc x d x 4 bytes per block
     * (K and V) and 2 blocks per SM (smem <= 113 KB each on H100/H200; A100 too). Where a row's
     * shared memory exceeds the device's per-block limit (99 KB on sm_86 / 89 / 120: the d = 128
     * and 256 rows) the launcher runs it with stages = 2 (not measured: no such GPU is lent).
     * Split count (num_splits = 0, fa_splitkv_num_splits): n = floor(SMs x FA_SPLITKV_WARPS_PER_SM
     * / warps / (b x hk x row tiles)), at least 1, at most half the key tiles (a split of at least
     * 2 tiles), at most FA_SPLITKV_MAX_SPLITS: the grid fills each SM with about 4 streaming warps
     * (one block at d <= 128, two at d = 256) and no more. Measured (H100, run 21, every n from 1
     * to 128 on 60 shapes, b 1..64, cache 1k..64k, d 64/128/256: benchmarks/results/
     * 2026-12-06_h100_run20_decode-splits.md): the fastest n puts b x hk x n near 132 blocks at
     * d <= 128 and near 264 at d = 256; a second block per SM, or a partly filled second wave,
     * costs 3-18% (the earlier rule, 2 blocks per SM: up to 1.24x the best time, 1.07 typical). */
    {.kernel = FA_KERNEL_SPLITKV, .arch = 80, .d = 64, .br = 16, .bc = 64, .warps = 4, .stages = 4,
     .reason = "16 keys per warp (one P V k-step); 3 tiles = 48 KB of K/V in flight per block; "
               "smem 2 + 64 = 66 KB -> 3 blocks/SM on H100"},
    {.kernel = FA_KERNEL_SPLITKV, .arch = 80, .d = 128, .br = 16, .bc = 64, .warps = 4, .stages = 3,
     .reason = "16 keys per warp; 2 tiles = 64 KB of K/V in flight per block; smem 4 + 96 = 100 KB "
               "-> 2 blocks/SM on H100 (1 on A100's 163 KB)"},
    {.kernel = FA_KERNEL_SPLITKV, .arch = 80, .d = 256, .br = 16, .bc = 32, .warps = 2, .stages = 3,
     .reason = "O = 16 x 256 fp32 is 128 regs per lane, so 2 warps x 16 keys; 2 tiles = 64 KB in "
               "flight; smem 8 + 96 = 104 KB -> 2 blocks/SM on H100"},
};

/* The row of `kernel` for head dim d with the largest arch <= `arch`; br == 0 when there is none. */
constexpr fa_tuning_row fa_tuning_find(int kernel, int arch, int d)
{
    fa_tuning_row best = {.kernel = kernel, .reason = "missing"};
    for (unsigned i = 0; i < sizeof(fa_tuning_table) / sizeof(fa_tuning_table[0]); ++i) {
        const fa_tuning_row r = fa_tuning_table[i];
        if (r.kernel == kernel && r.d == d && r.arch <= arch && r.arch >= best.arch) best = r;
    }
    return best;
}
#endif

#endif /* FA_TUNING_H */
