/* fa_bwd_tile.cuh - warp-level building blocks of the backward kernels: tile products from
 * swizzled shared memory, recomputation of P from the LSE, dS, and staging of register tiles.
 *
 * Conventions (shared with fa_mma.cuh / fa_mask.cuh): a lane is (g = lane / 4, t = lane % 4);
 * an accumulator tile acc[kMT][kNT][4] covers 16 kMT rows x 8 kNT columns and element e of
 * (mt, nt) sits at row 16 mt + g + 8 (e >> 1), column 8 nt + 2 t + (e & 1).
 * Shared tiles are [R][C] b16 swizzled by fa_tile_offset<C> (fa_smem_tile.cuh); every ldmatrix
 * reads 8 consecutive rows of one 16-byte chunk, which that swizzle makes conflict-free.
 */
#ifndef FA_BWD_TILE_CUH
#define FA_BWD_TILE_CUH

#include <math.h>
#include <stdint.h>

#include "fa_mma.cuh"
#include "fa_smem_tile.cuh"
#include "fa_mask.cuh"
#include "fa_softmax.cuh"
#include "fa_dropout.cuh"
#include "fa_bwd_args.cuh"

#define FA_BWD_LOG2E 1.4426950408889634f

/* ---- one warp-tile product from shared memory -------------------------------------------
 * acc[kMT][kNT] += A (16 kMT x K) * B (K x 8 kNT), both operands read with ldmatrix.
 *   A stored [m][k] (kATrans = false) or [k][m] (kATrans = true), a tile with kACols columns;
 *   B stored [n][k] (kBTrans = false) or [k][n] (kBTrans = true), a tile with kBCols columns.
 * m0 / n0: first row / column of this warp's part of the product (multiples of 16).
 * Every k-step and column pair runs, also over the zero-filled padding of a head dim below the
 * bucket (the buckets are close enough that this costs less than a run-time bound per step).
 * Pipelining: fragments are requested one unit of mmas ahead (see below), so the ldmatrix
 * latency hides behind mmas. fence must be a run-time 0 the compiler cannot
 * see (fa_opaque_zero): the never-taken branch on it after every step keeps ptxas from hoisting
 * ldmatrix further ahead. Why both: with a data-dependent branch per step (an early version
 * skipped padding k-steps) every step waited for its own loads; with no branch at all ptxas
 * hoisted loads many steps ahead and spilled at d = 128 (255 registers).
 * Lane addresses (derived from the fragment layouts in fa_mma.cuh):
 *   "rows16" pattern: row = base + (lane & 15), chunk = base + (lane >> 4)
 *       A [m][k] (matrices: rows 0-7/8-15 x k chunk 0, then chunk 1 -> a0 a1 a2 a3)
 *       B [k][n] .trans (k rows 0-7/8-15 x n chunk 0 -> b0 b1 of the first n-block, chunk 1
 *       -> b0 b1 of the second)
 *   "rows8" pattern: row = base + (lane & 7) + 8 (lane >> 4), chunk = base + ((lane >> 3) & 1)
 *       B [n][k] (n rows 0-7 x k chunks 0, 1 -> b0 b1 of block 0; n rows 8-15 -> block 1)
 *       A [k][m] .trans (k rows 0-7 x m chunks 0, 1 -> a0 a1; k rows 8-15 -> a2 a3) */
/* ---- ldmatrix addressing ----------------------------------------------------------------
 * Every ldmatrix of a product reads 8-row x 16-byte matrices at row = R0 + lr, chunk = C0 + lc,
 * with R0 a multiple of 8 (warp offsets are multiples of 16), lr & 7 == lane & 7, C0 even and
 * lc in {0, 1} (the "rows16" / "rows8" lane patterns above). In a tile whose rows are whole
 * groups of 8 chunks the swizzle of fa_tile_offset then reduces to
 *     phys = (C0 & ~7) + ((C0 & 6) ^ lc ^ (lane & 7))
 * so the byte address is a per-lane value picked from at most 4 (C0 & 6 over the k-steps) or one
 * per 16-row / 16-column block (C0 fixed per block) plus a compile-time immediate: ldmatrix
 * becomes [register + immediate] with no per-load integer work. Tiles with a trailing group of
 * 4 chunks (d = 96, 192) keep the general fa_tile_offset per load. */
template <int kCols>
struct fa_bwd_fast_swizzle {
    static constexpr bool kOn = (kCols / 8) % 8 == 0;
};

/* per-lane byte address of the "k along columns" operand (A [m][k] or B [n][k]) for k-steps
 * with (ks & 3) == q: rows r0 + lr, chunk 2 q + lc (plus 16 (ks >> 2) chunks, an immediate) */
template <int kCols>
static __device__ __forceinline__ uint32_t fa_bwd_addr_kcols(uint32_t base, int r0, int lr, int lc,
                                                            int lane, int q)
{
    return base + 2u * (uint32_t)(kCols * (r0 + lr)) + 16u * (uint32_t)((2 * q) ^ lc ^ (lane & 7));
}

/* per-lane byte address of the "k along rows" operand (A [k][m] or B [k][n]) of the 16-wide
 * block whose first chunk is c0 (even): rows lr (+ 16 ks, an immediate), chunk c0 + lc */
template <int kCols>
static __device__ __forceinline__ uint32_t fa_bwd_addr_krows(uint32_t base, int c0, int lr, int lc,
                                                            int lane)
{
    return base + 2u * (uint32_t)(kCols * lr) +
           16u * (uint32_t)((c0 & ~7) + ((c0 & 6) ^ lc ^ (lane & 7)));
}

/* The product runs as units (ks, mt) in order; each unit's A fragment is requested one unit
 * ahead (2 buffers) and each k-step's B fragments one step ahead (2 buffers): the ldmatrix
 * latency hides behind the previous unit's mmas with 8 + 16 kNT / 2 fragment registers. */
template <bool kBf16, int kMT, int kNT, int kKSteps, int kACols, int kBCols, bool kATrans,
          bool kBTrans, int kAddr>
static __device__ __forceinline__ void warp_gemm_smem(float (*acc)[kNT][4],
                                                      const uint16_t *sA, int m0,
                                                      const uint16_t *sB, int n0, int fence)
{
    static_assert(kNT % 2 == 0, "B is loaded in pairs of 8-column blocks");
    /* kAddr (FA_BWD_ADDR_* of the tuning row): which operands use the precomputed addresses */
    constexpr bool kFastA = fa_bwd_fast_swizzle<kACols>::kOn && ((kAddr >> (kATrans ? 1 : 0)) & 1);
    constexpr bool kFastB = fa_bwd_fast_swizzle<kBCols>::kOn && ((kAddr >> (kBTrans ? 1 : 0)) & 1);
    const uint32_t a_base = fa_smem_u32(sA), b_base = fa_smem_u32(sB);
    /* + fence (0): the per-lane ldmatrix addresses depend on a value loaded inside the caller's
     * loop, so ptxas recomputes them per product instead of keeping every one of them live
     * across the whole loop (that spilled at d = 64 and 128) */
    const int lane = (threadIdx.x & 31) + fence;
    const int r16 = lane & 15, c16 = (lane >> 4) & 1;
    const int r8 = (lane & 7) + (((lane >> 4) & 1) << 3), c8 = (lane >> 3) & 1;

    /* address plan (fast swizzle): A non-trans 4 variants by ks & 3, A trans one per mt;
     * B non-trans 4 variants by ks & 3, B trans one per column pair */
    constexpr int kAN = kATrans ? kMT : 4, kBN = kBTrans ? kNT / 2 : 4;
    uint32_t a_adr[kAN], b_adr[kBN];
    if (kFastA) {
#pragma unroll
        for (int i = 0; i < kAN; ++i)
            a_adr[i] = kATrans ? fa_bwd_addr_krows<kACols>(a_base, m0 / 8 + 2 * i, r8, c8, lane)
                               : fa_bwd_addr_kcols<kACols>(a_base, m0, r16, c16, lane, i);
    }
    if (kFastB) {
#pragma unroll
        for (int i = 0; i < kBN; ++i)
            b_adr[i] = kBTrans ? fa_bwd_addr_krows<kBCols>(b_base, n0 / 8 + 2 * i, r16, c16, lane)
                               : fa_bwd_addr_kcols<kBCols>(b_base, n0, r8, c8, lane, i);
    }
    /* byte address of the A fragment (mt, ks) / of B column pair np at k-step ks */
#define FA_BWD_A_ADDR(mt, ks)                                                                        \
    (kFastA ? (kATrans ? a_adr[(mt) % kAN] + 2u * kACols * 16u * (uint32_t)(ks)                      \
                       : a_adr[(ks) & 3] + 2u * kACols * 16u * (uint32_t)(mt) + 128u * (uint32_t)((ks) >> 2)) \
            : a_base + 2u * (uint32_t)(kATrans ? fa_tile_offset<kACols>(16 * (ks) + r8, (m0 + 16 * (mt)) / 8 + c8) \
                                               : fa_tile_offset<kACols>(m0 + 16 * (mt) + r16, 2 * (ks) + c16)))
#define FA_BWD_B_ADDR(np, ks)                                                                        \
    (kFastB ? (kBTrans ? b_adr[(np) % kBN] + 2u * kBCols * 16u * (uint32_t)(ks)                      \
                       : b_adr[(ks) & 3] + 2u * kBCols * 16u * (uint32_t)(np) + 128u * (uint32_t)((ks) >> 2)) \
            : b_base + 2u * (uint32_t)(kBTrans ? fa_tile_offset<kBCols>(16 * (ks) + r16, (n0 + 16 * (np)) / 8 + c16) \
                                               : fa_tile_offset<kBCols>(n0 + 16 * (np) + r8, 2 * (ks) + c8)))

    uint32_t a[2][4], b[2][kNT / 2][4];
#pragma unroll
    for (int np = 0; np < kNT / 2; ++np) {
        if (kBTrans) warp_ldmatrix_x4_trans(b[0][np], FA_BWD_B_ADDR(np, 0));
        else warp_ldmatrix_x4(b[0][np], FA_BWD_B_ADDR(np, 0));
    }
    if (kATrans) warp_ldmatrix_x4_trans(a[0], FA_BWD_A_ADDR(0, 0));
    else warp_ldmatrix_x4(a[0], FA_BWD_A_ADDR(0, 0));
#pragma unroll
    for (int ks = 0; ks < kKSteps; ++ks) {
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
            const int cur = (ks * kMT + mt) & 1;
            if (mt + 1 < kMT) {
                if (kATrans) warp_ldmatrix_x4_trans(a[cur ^ 1], FA_BWD_A_ADDR(mt + 1, ks));
                else warp_ldmatrix_x4(a[cur ^ 1], FA_BWD_A_ADDR(mt + 1, ks));
            } else if (ks + 1 < kKSteps) {
#pragma unroll
                for (int np = 0; np < kNT / 2; ++np) {
                    if (kBTrans) warp_ldmatrix_x4_trans(b[(ks + 1) & 1][np], FA_BWD_B_ADDR(np, ks + 1));
                    else warp_ldmatrix_x4(b[(ks + 1) & 1][np], FA_BWD_B_ADDR(np, ks + 1));
                }
                if (kATrans) warp_ldmatrix_x4_trans(a[cur ^ 1], FA_BWD_A_ADDR(0, ks + 1));
                else warp_ldmatrix_x4(a[cur ^ 1], FA_BWD_A_ADDR(0, ks + 1));
            }
#pragma unroll
            for (int np = 0; np < kNT / 2; ++np)
                warp_mma_m16n16k16<kBf16>(acc[mt][2 * np], acc[mt][2 * np + 1], a[cur], b[ks & 1][np]);
        }
        if (fence) break; /* never taken: a scheduling fence (see above) */
    }
#undef FA_BWD_A_ADDR
#undef FA_BWD_B_ADDR
}

/* Per-thread: writes a register tile, times `mul`, as b16 pairs into a swizzled [R][kCols]
 * shared tile at rows r0 + ..., columns c0 + ... (r0, c0 multiples of 16 / 8). A quad writes
 * one 16-byte chunk of 8 consecutive rows: conflict-free under the swizzle. */
template <bool kBf16, int kMT, int kNT, int kCols>
static __device__ __forceinline__ void thread_store_tile_smem(uint16_t *s, const float (*acc)[kNT][4],
                                                             int r0, int c0)
{
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
            for (int half = 0; half < 2; ++half) {
                const int row = r0 + 16 * mt + 8 * half + g;
                const int off = fa_tile_offset<kCols>(row, c0 / 8 + nt) + 2 * t;
                *(uint32_t *)(s + off) =
                    fa_pack_f32x2<kBf16>(acc[mt][nt][2 * half], acc[mt][nt][2 * half + 1]);
            }
}

/* ---- recomputing P and dS -----------------------------------------------------------------
 * Everything the elementwise part of the backward needs about one (sequence, query head). */
typedef struct fa_bwd_score_ctx {
    fa_mask_t mask;          /* sequence-local mask */
    float scale_log2;        /* softmax_scale * log2(e): fast path exponent multiplier */
    float scale;             /* softmax_scale */
    float softcap;           /* 0 = off */
    float scale_div_softcap; /* softmax_scale / softcap */
    float alibi_slope;       /* 0 = off */
    int slow;                /* softcap or ALiBi: scores are transformed before exp */
    int dropout;             /* dropout_p > 0 */
    uint32_t threshold;      /* keep iff Philox byte >= threshold (fa_dropout_threshold) */
    float dropout_rescale;   /* 1 / (1 - dropout_p) */
    const uint64_t *philox;  /* shared memory {seed, offset}: read only on the dropout path, so
                                the 4 registers are not held across the whole loop */
    int b, h;                /* logical dropout coordinates: sequence index, query head */
} fa_bwd_score_ctx;

/* The context of sequence b, query head qh (the dK/dV kernel moves h and alibi_slope along as it
 * walks the query heads of its GQA group). philox: the block's shared {seed, offset}. */
static __device__ __forceinline__ fa_bwd_score_ctx fa_bwd_make_score_ctx(const fa_bwd_args &a,
                                                                         const fa_seq &seq,
                                                                         int b, int qh,
                                                                         const uint64_t *philox)
{
    fa_bwd_score_ctx c;
    c.mask.sq = seq.sq;
    c.mask.sk = seq.sk;
    c.mask.left = a.window_left;
    c.mask.right = a.window_right;
    c.scale_log2 = a.scale_log2;
    c.scale = a.scale;
    c.softcap = a.softcap;
    c.scale_div_softcap = a.scale_div_softcap;
    c.alibi_slope = a.alibi_slopes != NULL ? a.alibi_slopes[(int64_t)b * a.alibi_batch_stride + qh] : 0.f;
    c.slow = a.softcap > 0.f || a.alibi_slopes != NULL;
    c.dropout = a.dropout_p > 0.f;
    c.threshold = a.dropout_threshold;
    c.dropout_rescale = a.dropout_rescale;
    c.philox = philox;
    c.b = b;
    c.h = qh;
    return c;
}

/* The 32-byte shared slot of the backward kernels: an int 0 for fa_opaque_zero, then the
 * Philox {seed, offset} of this call. Written by thread 0 before the first loop barrier. */
typedef struct fa_bwd_slot {
    int zero;
    int pad;
    uint64_t philox[2];
} fa_bwd_slot;

/* Thread 0 of a backward block fills the slot (the caller's first loop barrier orders it before
 * every reader). */
static __device__ __forceinline__ void thread_init_bwd_slot(fa_bwd_slot *slot, const fa_bwd_args &a)
{
    slot->zero = 0;
    uint64_t seed = 0, offset = 0;
    if (a.dropout_p > 0.f) fa_bwd_philox(a, &seed, &offset);
    slot->philox[0] = seed;
    slot->philox[1] = offset;
}

/* Per-thread: the per-row values (LSE, D) of the two fragment rows g, g + 8 of each of kMT
 * m-tiles from a shared [rows] vector, rows from r0 on. */
template <int kMT>
static __device__ __forceinline__ void thread_load_row_values(float (*out)[2], const float *s_rows, int r0, int g)
{
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int half = 0; half < 2; ++half) out[mt][half] = s_rows[r0 + 16 * mt + 8 * half + g];
}

/* Per-thread, the common case (no softcap, ALiBi or dropout): s <- P = exp2(s * scale_log2 -
 * LSE log2(e)), and P also into the shared tile. kMask: the tile touches the mask boundary or
 * sk, so invisible entries are zeroed (a separate instantiation keeps the test out of the
 * interior tiles). Layout and arguments as warp_bwd_probs below. */
template <bool kBf16, int kMT, int kNT, bool kStoreP, int kPCols, bool kMask>
static __device__ __forceinline__ void thread_bwd_probs_plain(float (*s)[kNT][4],
                                                             const fa_bwd_score_ctx &c, int row_g,
                                                             int col_2t, const float (*lse)[2],
                                                             uint16_t *sP, int p_r0, int p_c0)
{
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const float lse2 =
                lse[mt][half] == -INFINITY ? INFINITY : lse[mt][half] * FA_BWD_LOG2E;
            int lo = 0, hi = 0;
            if (kMask) fa_mask_row_range(c.mask, row_g + 16 * mt + 8 * half, &lo, &hi);
#pragma unroll
            for (int nt = 0; nt < kNT; ++nt) {
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    float p = fa_exp2(fmaf(s[mt][nt][2 * half + e], c.scale_log2, -lse2));
                    if (kMask) {
                        const int j = col_2t + 8 * nt + e;
                        if (j < lo || j > hi) p = 0.f;
                    }
                    s[mt][nt][2 * half + e] = p;
                }
                if (kStoreP) {
                    const int off =
                        fa_tile_offset<kPCols>(p_r0 + 16 * mt + 8 * half + g, p_c0 / 8 + nt) + 2 * t;
                    *(uint32_t *)(sP + off) =
                        fa_pack_f32x2<kBf16>(s[mt][nt][2 * half], s[mt][nt][2 * half + 1]);
                }
            }
        }
    }
}

/* Warp-collective (dropout shuffles): turns the raw q.k dot products s (rows row_g + 16 mt +
 * 8 half, columns col_2t + 8 nt + e, sequence-local; row_g = tile row + g, col_2t = tile
 * column + 2 t, the tile column a multiple of 16) into
 *     s <- +-P * (1 - tanh^2)      sign bit set = dropped by dropout
 * the factor dS needs (tanh term only with softcap; the sign carries the keep bit so no extra
 * registers hold the mask), and, when kStoreP, writes the dropped-and-rescaled probabilities
 * P o Z (Z = keep / (1 - p_q), fa_dropout_rescale) as b16 into the swizzled [..][kPCols] tile
 * sP at rows p_r0 + ..., columns p_c0 + ... (this warp's place inside the block tile).
 * lse[mt][half]: natural-log LSE of the lane's rows; -inf (row sees no key) gives P = 0.
 * need_mask: the tile touches the mask boundary or sk (fa_mask_tile_is_full was false).
 * Without softcap, ALiBi and dropout it runs thread_bwd_probs_plain (then s = P >= 0). */
template <bool kBf16, int kMT, int kNT, bool kStoreP, int kPCols>
static __device__ __forceinline__ void warp_bwd_probs(float (*s)[kNT][4], const fa_bwd_score_ctx &c,
                                                     int row_g, int col_2t,
                                                     const float (*lse)[2], bool need_mask,
                                                     uint16_t *sP, int p_r0, int p_c0)
{
    if (!c.slow && !c.dropout) {
        if (need_mask)
            thread_bwd_probs_plain<kBf16, kMT, kNT, kStoreP, kPCols, true>(s, c, row_g, col_2t, lse,
                                                                            sP, p_r0, p_c0);
        else
            thread_bwd_probs_plain<kBf16, kMT, kNT, kStoreP, kPCols, false>(s, c, row_g, col_2t, lse,
                                                                             sP, p_r0, p_c0);
        return;
    }
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const uint64_t seed = c.philox[0], offset = c.philox[1];
    /* the keep bits of the whole warp tile (col_2t - 2 t: the tile column, a multiple of 16),
     * bit fa_dropout_keep_bit<kNT>(mt, nt, half, e) */
    const uint64_t keep = c.dropout ? warp_dropout_keep_tile<kMT, kNT>(seed, offset, c.b, c.h, row_g,
                                                                       col_2t - 2 * t, c.threshold)
                                    : ~(uint64_t)0;
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt) {
        float lse2[2];
        int lo[2], hi[2];
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            lse2[half] = lse[mt][half] == -INFINITY ? INFINITY : lse[mt][half] * FA_BWD_LOG2E;
            fa_mask_row_range(c.mask, row_g + 16 * mt + 8 * half, &lo[half], &hi[half]);
        }
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt) {
            float pd[4];
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int half = e >> 1;
                const int i = row_g + 16 * mt + 8 * half;
                const int j = col_2t + 8 * nt + (e & 1);
                const float x = s[mt][nt][e];
                float p, gf;
                if (!c.slow) {
                    p = fa_exp2(fmaf(x, c.scale_log2, -lse2[half]));
                    gf = p;
                } else {
                    float val, dtanh = 1.f;
                    if (c.softcap > 0.f) {
                        const float th = tanhf(x * c.scale_div_softcap);
                        val = c.softcap * th;
                        dtanh = fmaf(-th, th, 1.f);
                    } else {
                        val = x * c.scale;
                    }
                    const int dist = i + c.mask.sk - c.mask.sq - j;
                    val = fmaf(-c.alibi_slope, (float)(dist < 0 ? -dist : dist), val);
                    p = fa_exp2(fmaf(val, FA_BWD_LOG2E, -lse2[half]));
                    gf = p * dtanh;
                }
                if (need_mask && (j < lo[half] || j > hi[half])) {
                    p = 0.f;
                    gf = 0.f;
                }
                const bool kept = (keep >> fa_dropout_keep_bit<kNT>(mt, nt, half, e & 1)) & 1u;
                pd[e] = kept ? p * c.dropout_rescale : 0.f;
                s[mt][nt][e] = kept ? gf : -gf;
            }
            if (kStoreP) {
#pragma unroll
                for (int half = 0; half < 2; ++half) {
                    const int off =
                        fa_tile_offset<kPCols>(p_r0 + 16 * mt + 8 * half + g, p_c0 / 8 + nt) + 2 * t;
                    *(uint32_t *)(sP + off) = fa_pack_f32x2<kBf16>(pd[2 * half], pd[2 * half + 1]);
                }
            }
        }
    }
}

/* Per-thread: s (from warp_bwd_probs) and dp = dO V^T  ->  s <- dS, the gradient of the
 * pre-softcap scaled score:  dS = P (1 - tanh^2) (dP o Z - D),  D = rowsum(dO o O) of the
 * lane's rows (dpsum[mt][half]); Z = 1 / (1 - p_q) where kept, 0 where dropped (the sign of s).
 * dropout == 0: s = P (1 - tanh^2) >= 0 and Z = 1, so no sign handling. */
template <int kMT, int kNT>
static __device__ __forceinline__ void thread_bwd_dscores(float (*s)[kNT][4], const float (*dp)[kNT][4],
                                                         const float (*dpsum)[2], int dropout,
                                                         float dropout_rescale)
{
    if (!dropout) {
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
            for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
                for (int e = 0; e < 4; ++e)
                    s[mt][nt][e] *= dp[mt][nt][e] - dpsum[mt][e >> 1];
        return;
    }
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const float gf = s[mt][nt][e];
                const float dpz = signbit(gf) ? 0.f : dp[mt][nt][e] * dropout_rescale;
                s[mt][nt][e] = fabsf(gf) * (dpz - dpsum[mt][e >> 1]);
            }
}

#endif /* FA_BWD_TILE_CUH */
