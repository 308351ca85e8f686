/* fa_tuning.h - THE tuning table of the CUDA kernels: one row per (arch, head-dim bucket,
 * direction), the tile shape as data, and the reason for it beside each row.
 *
 * Columns:
 *   arch     minimum compute capability x 10 the row is for (80 = every sm80+ GPU; an sm90a
 *            wgmma path would add rows with arch 90)
 *   dir      FA_DIR_FWD / FA_DIR_BWD
 *   d        head-dim bucket (the kernel's compile-time head dim; smaller d zero-fills)
 *   br, bc   query rows per block (Br) and key rows per tile (Bc)
 *   warps    warps per block
 *   stages   shared-memory buffers per K and V tile (1: FA2-style interleave, V(j) loads during
 *            S = Q K(j)^T and K(j+1) during O += P V(j); 2: K(j+1), V(j+1) load during all of
 *            iteration j)
 *   flags    direction specific bits (forward: FA_TUNE_Q_IN_REGS = Q fragments live in registers
 *            for the whole block instead of being re-read from shared memory every tile;
 *            FA_TUNE_FEAT_Q_SMEM = not in the feature variant, whose extra code needs the room)
 *
 * Budgets that decided the forward rows (mma.sync path, fp32 accumulators):
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

enum { FA_DIR_FWD = 0, FA_DIR_BWD = 1 };  /* FA_DIR_BWD_DQ = 2, FA_DIR_BWD_SM90 = 3: below */
enum {
    FA_TUNE_Q_IN_REGS = 1,    /* fwd: Q fragments in registers for the whole block */
    FA_TUNE_FEAT_Q_SMEM = 2   /* fwd: ...except in the softcap/ALiBi/dropout variant (registers) */
};

typedef struct fa_tuning_row {
    int arch, dir, d, br, bc, warps, stages, flags;
    const char *reason;
} fa_tuning_row;

#define FA_TUNING_ROWS_FWD                                                                          \
    /* arch dir       d    br   bc  warps stages flags */                                           \
    {80, FA_DIR_FWD,  32, 128,  64, 4, 2, FA_TUNE_Q_IN_REGS,                                        \
     "kMT=2: O 32 + S 64 + Q 16 regs; Bc=128 spilled in the softcap/ALiBi/dropout variant; "      \
     "smem 8+16 = 24 KB"},                                                                           \
    {80, FA_DIR_FWD,  64, 128,  64, 4, 2, FA_TUNE_Q_IN_REGS | FA_TUNE_FEAT_Q_SMEM,                  \
     "kMT=2 (32 FLOP/B of smem): O 64 + S 64 + Q 32 regs; Bc=128 would need S 128 and spill "      \
     "with Q in regs; the feature variant spilled 16 B on sm_80 with Q in regs; smem 48 KB"},      \
    {80, FA_DIR_FWD,  96, 128,  64, 4, 2, 0,                                                        \
     "kMT=2: O 96 + S 64 regs; Q (48 regs) is re-read from smem to stay under 255 without "        \
     "spills; smem 24+48 = 72 KB"},                                                                  \
    {80, FA_DIR_FWD, 128, 128,  32, 4, 2, 0,                                                        \
     "kMT=2: O 128 + S 32 regs, Q re-read from smem (21 FLOP/B vs 16 for kMT=1). Bc=64 "           \
     "(26 FLOP/B, half the per-tile barriers) left 48 B of spills (l_i) on sm_90, Bc=48 12 B"},    \
    {80, FA_DIR_FWD, 160, 128,  64, 8, 2, FA_TUNE_Q_IN_REGS,                                        \
     "kMT=1 (kMT=2 needs O 160 regs): O 80 + S 32 + Q 40 regs; 8 warps keep Br=128; "             \
     "smem 40+80 = 120 KB"},                                                                         \
    {80, FA_DIR_FWD, 192, 128,  64, 8, 2, FA_TUNE_Q_IN_REGS,                                        \
     "kMT=1: O 96 + S 32 + Q 48 regs; smem 48+96 = 144 KB (fits A100's 163 KB)"},                 \
    {80, FA_DIR_FWD, 224, 128,  32, 8, 2, 0,                                                        \
     "kMT=1: O 112 + S 16 regs; Q in regs (+56) spilled; Bc=64 with 1 stage spilled 20 B on "      \
     "sm_80; Bc=32 double-buffered: 56 + 2*28 = 112 KB"},                                            \
    {80, FA_DIR_FWD, 256, 128,  64, 8, 1, 0,                                                        \
     "kMT=1: O 128 + S 32 regs; Q in regs (+64) would spill, so Q is re-read from smem; "          \
     "1 stage interleave, smem 64+64 = 128 KB (2 stages = 192 KB does not fit A100)"},          \
    /* arch 90: the Hopper kernel (fa_fwd_sm90_kernel.cuh, wgmma + TMA, sm_90a only). warps =    \
     * 4 x (1 producer + Br/64 consumer warpgroups); stages = depth of the K/V slot ring. Budgets: \
     * consumer registers (240 after setmaxnreg with 2 consumer warpgroups) = O d/2 + S Bc/2 +    \
     * P Bc/4 + ~30; shared memory (Br + 2 stages Bc) d 2 B + 1 KB <= 227 KB. */                 \
    {90, FA_DIR_FWD,  64, 192, 128, 16, 2, 0,                                                       \
     "3 consumer warpgroups (FA3's 192x128): at d=64 the MMA per tile is smallest, so a third "    \
     "warpgroup hides more softmax; O 32 + S 64 + P 32 regs fit the 160 of 3 warpgroups (152 "     \
     "used, no spills; Br=128 / 12 warps also compiles clean); smem 24 + 2x2x16 = 88 KB"},          \
    {90, FA_DIR_FWD, 128, 128, 128, 12, 2, 0,                                                       \
     "O 64 + S 64 + P 32 regs (FA3's 128x128; 184 of 240 used, no spills); smem 32 + 2x2x32 = "  \
     "160 KB, 2 stages so K_j+1 and V_j+1 land during tile j"},                                      \
    {90, FA_DIR_FWD, 256, 128,  64, 12, 2, 0,                                                       \
     "O 128 regs, so Bc=64 (S 32 + P 16; 205 of 240 used); smem 64 + 2x2x32 = 192 KB"},

/* ============================== BACKWARD SECTION ==================================
 * Owned by the backward kernels (csrc/cuda/fa_bwd*). Same columns; the meaning of flags for
 * FA_DIR_BWD is defined there. Add rows here, e.g.
 *   {80, FA_DIR_BWD, 128, 64, 128, 8, 2, 0, "why"},
 * ===================================================================================== */
/* FA_DIR_BWD rows describe the dK/dV kernel (fa_bwd_dkdv.cuh): one block owns Bc keys of one kv
 * head, keeps dK, dV in registers and loops over the query blocks (and the query heads of its
 * GQA group) in the mask band. Per query block it runs five products with three warp grids:
 *   S = Q K^T, dP = dO V^T   (Br x Bc)   wm_sdp warps along Br, warps / wm_sdp along Bc
 *   dV += P^T dO, dK += dS^T Q (Bc x d)  wn_dkv warps along Bc, warps / wn_dkv along d
 *   dQ += dS K               (Br x d)    wm_dq  warps along Br, warps / wm_dq along d
 * P and dS go through shared memory between the grids. stages = Q (+ LSE, D) buffers;
 * do_stages = dO buffers: 2 = the next tile loads during a whole iteration, 1 = it loads after
 * its last use in this iteration (one more barrier). flags = FA_BWD_FLAGS(wm_sdp, wn_dkv, wm_dq,
 * do_stages, dq_passes, addr): dq_passes > 1 splits a warp's dQ tile into that many column slices
 * computed one after the other (fewer live accumulators, dS re-read from shared memory). Budgets: registers = dK + dV accumulators 2 Bc d / (32 warps) + S and dP
 * 2 Br Bc / (32 warps) (+ dQ Br d / (32 warps) while S, dP are dead), cap 255 and no spills;
 * shared memory in bytes (swizzled, no padding):
 *   2 (2 Bc d + (stages + do_stages) Br d + 2 Br Bc) + 8 stages Br
 * <= 163 KB on sm80 (A100 opt-in limit), <= 227 KB on sm90. Br, Bc and warps must be the same
 * in the arch 80 and arch 90 rows of a head dim (the host picks grid and block size without
 * knowing which cubin runs); only the buffering may differ, and the sm90 row may not use less
 * shared memory than the sm80 row.
 * FA_DIR_BWD_DQ rows describe the deterministic dQ kernel (fa_bwd_dq.cuh), used instead of
 * float atomics when deterministic = 1: one block owns Br = 16 warps query rows, loops over the
 * key blocks of the band with K, V double buffered (stages = 2), keeps dS in registers and
 * feeds it straight into dQ += dS K (C fragments repacked as A fragments). flags unused. */
enum { FA_DIR_BWD_DQ = 2, FA_DIR_BWD_SM90 = 3 };
#define FA_BWD_FLAGS(wm_sdp, wn_dkv, wm_dq, do_stages, dq_passes, addr) \
    ((wm_sdp) | ((wn_dkv) << 4) | ((wm_dq) << 8) | ((do_stages) << 12) | ((dq_passes) << 16) | \
     ((addr) << 20))
/* addr: which ldmatrix operands use precomputed per-lane addresses ([register + immediate], no
 * per-load swizzle arithmetic, but 4 or one-per-block registers held through a product):
 * FA_BWD_ADDR_KCOLS = operands stored k along columns (Q, dO, K, V in S/dP, dS in dQ),
 * FA_BWD_ADDR_KROWS = operands stored k along rows (P, dS, dO, Q in dV/dK, K in dQ). Chosen per
 * row as what compiles without spills (the d = 64/128 kernels sit at 255 registers). */
enum { FA_BWD_ADDR_KCOLS = 1, FA_BWD_ADDR_KROWS = 2, FA_BWD_ADDR_ALL = 3 };

#define FA_TUNING_ROWS_BWD                                                                          \
    /* arch dir       d    br   bc  warps stages flags */                                           \
    {80, FA_DIR_BWD,  64, 128, 128, 8, 2, FA_BWD_FLAGS(2, 4, 4, 2, 1, FA_BWD_ADDR_ALL),                                 \
     "S/dP warp tiles 64x32: S + dP 128 regs, dK + dV (32x32 tiles) 64 regs; Br = Bc = 128 "       \
     "gives 8 warps square-ish tiles (96 smem rows read per warp product) and halves the dQ "      \
     "atomics per FLOP vs Bc = 64; smem 32 K,V + 64 Q,dO x2 + 64 P,dS + 2 = 162 KB (A100 fits)"},  \
    {80, FA_DIR_BWD,  96,  64, 128, 8, 2, FA_BWD_FLAGS(2, 4, 4, 2, 1, FA_BWD_ADDR_ALL),                                 \
     "as d = 128 with dK + dV 32x48 tiles (96 regs); dQ 16x48 tiles (4x2 warps: 48 columns "       \
     "split in 8-column pairs needs 2 warps along d); smem 48 K,V + 48 Q,dO x2 + 32 P,dS = 129 KB"},\
    {80, FA_DIR_BWD, 128,  64, 128, 8, 2, FA_BWD_FLAGS(2, 4, 2, 2, 1, FA_BWD_ADDR_KROWS),                                 \
     "dK + dV (32x64 tiles) 128 regs, so S/dP shrink to Br = 64 (32x32 tiles, 64 regs); "          \
     "Bc = 128 keeps K, V reuse and dQ atomics at 1 per 128 keys; dQ 32x32 tiles 32 regs; "        \
     "smem 64 K,V + 64 Q,dO x2 + 32 P,dS + 1 = 161 KB (A100 fits)"},                               \
    {80, FA_DIR_BWD, 192,  64,  64, 8, 2, FA_BWD_FLAGS(4, 2, 4, 2, 1, FA_BWD_ADDR_ALL),                                 \
     "as d = 256 but dK + dV (32x48 tiles) 96 regs and dQ 16x96 tiles 48 regs in one pass; "       \
     "Q and dO double buffered: 48 K,V + 96 Q,dO x2 + 16 P,dS = 161 KB fits A100"},                \
    {80, FA_DIR_BWD, 256,  64,  64, 8, 1, FA_BWD_FLAGS(4, 2, 2, 1, 2, FA_BWD_ADDR_ALL),                                 \
     "dK + dV (32x64 tiles) 128 regs; dQ 32x64 tiles in 2 passes of 32 columns (32 regs: one "     \
     "pass spilled 4 bytes on sm80); S/dP 16x32 tiles (32 regs); Bc = 64 (Bc = 128 would need "   \
     "256 accumulator regs); single Q and dO buffers: "                                            \
     "64 K,V + 64 Q,dO + 16 P,dS = 144.5 KB fits A100, double buffers (208.5 KB) do not"},         \
    {90, FA_DIR_BWD, 256,  64,  64, 8, 2, FA_BWD_FLAGS(4, 2, 2, 2, 1, FA_BWD_ADDR_ALL),                                 \
     "as the sm80 row, but H100/H200 have 227 KB: Q and dO double buffered (208.5 KB) so the "     \
     "next tiles load during a whole iteration and two barriers per iteration go away; the "       \
     "32x64 dQ tile in one pass (64 regs) fits the sm90 allocation without spills"},              \
    /* arch 90, FA_DIR_BWD_SM90: the Hopper backward (fa_bwd_sm90_kernel.cuh, wgmma, sm_90a      \
     * only): 2 warpgroups x 64 keys = Bc 128, 8 warps, 2-stage Q/dO ring (stages), flags unused. \
     * Registers per thread (cap 255, zero spills): dK + dV 2 (64 d / 128) = d, S^T + dP^T 2 (64 \
     * Br / 128) = Br, then P^T, dS^T fragments Br/2 and dQ 32. Shared memory: 2 Bc d 2 B (K, V) \
     * + 4 Br d 2 B (Q, dO x 2) + Bc Br 2 B (dS^T) + 1 KB <= 227 KB. */                          \
    {90, FA_DIR_BWD_SM90,  64, 128, 128, 8, 2, 0,                                                   \
     "dK + dV only 64 regs, so Br = 128 (S^T + dP^T 128 regs): each wgmma is N = 128 instead "     \
     "of 64, barriers, LSE/D loads and loop overhead per FLOP halve, and dQ splits by queries "    \
     "(one red.add per dq entry per CTA instead of two); 255 regs, no spills; measured on the H200: "\
     "bwd 261 vs 202 TFLOP/s at s = 8k (Br = 64); smem 32 K,V + 64 Q,dO + 32 dS = 129 KB"}, \
    {90, FA_DIR_BWD_SM90, 128,  64, 128, 8, 2, 0,                                                   \
     "dK + dV 128 regs, so Br = 64 (S^T + dP^T 64 regs; Br = 128 would need 256); dQ splits by "  \
     "dims; 255 regs, no spills; smem 64 K,V + 64 Q,dO + 16 dS = 145 KB"},                        \
    {80, FA_DIR_BWD_DQ,  64, 64,  64, 4, 2, 0,                                                      \
     "warp = 16 rows x 64 keys: S + dP 64 regs, dQ 32 regs (Bc = 128: S + dP 128 regs spilled on " \
     "sm90); smem 16 Q,dO + 2 x 16 K,V = 48 KB -> several blocks/SM overlap exp with MMAs"},       \
    {80, FA_DIR_BWD_DQ,  96, 64,  64, 4, 2, 0,                                                      \
     "S + dP 64 regs, dQ 48 regs; smem 24 Q,dO + 2 x 24 K,V = 72 KB"},                             \
    {80, FA_DIR_BWD_DQ, 128, 64,  64, 4, 2, 0,                                                      \
     "S + dP 64 regs, dQ 64 regs; smem 32 Q,dO + 2 x 32 K,V = 96 KB (2 blocks/SM on H100)"},        \
    {80, FA_DIR_BWD_DQ, 192, 64,  32, 4, 2, 0,                                                      \
     "dQ 96 regs, so Bc = 32 as for d = 256 (S + dP 32 regs); smem 48 Q,dO + 2 x 24 K,V = 96 KB"}, \
    {80, FA_DIR_BWD_DQ, 256, 64,  32, 4, 2, 0,                                                      \
     "dQ accumulator alone is 128 regs, so Bc = 32 (S + dP 32 regs); smem 64 Q,dO + 2 x 32 K,V "   \
     "= 128 KB"},

/* C++ only (every CUDA source is C++): the table itself, and a compile-time lookup used as
 * template arguments. */
#ifdef __cplusplus
static constexpr fa_tuning_row fa_tuning_table[] = {
    FA_TUNING_ROWS_FWD
    FA_TUNING_ROWS_BWD
};

/* The row with the largest arch <= `arch` for (dir, d); br == 0 when there is none. */
constexpr fa_tuning_row fa_tuning_find(int arch, int dir, int d)
{
    fa_tuning_row best = {0, 0, 0, 0, 0, 0, 0, 0, "missing"};
    for (unsigned i = 0; i < sizeof(fa_tuning_table) / sizeof(fa_tuning_table[0]); ++i) {
        const fa_tuning_row r = fa_tuning_table[i];
        if (r.dir == dir && r.d == d && r.arch <= arch && r.arch >= best.arch) best = r;
    }
    return best;
}
#endif

#endif /* FA_TUNING_H */
