/* fa_splitkv_kernel.cuh - the split-KV forward (decode) on mma.sync tensor cores, every GPU from
 * sm_80 on, and the combine of its partial outputs.
 *
 * Grid (b * hk, row tiles, num_splits); a block of kWarps warps owns FA_SPLITKV_ROWS = 16 packed
 * query rows (r = i * group + hh: query i of head kh * group + hh) and split `blockIdx.z` of the
 * key band those rows see. Decoding is a stream over the K/V cache with little arithmetic, so
 * the design is about bytes in flight:
 *   - K and V tiles of Bc keys go through a kStages-deep cp.async ring: kStages - 1 tiles are
 *     always being fetched while one is consumed;
 *   - every warp takes its own Bc / kWarps keys of each tile (S = Q K^T, softmax, O += P V, all
 *     warp-local), so no barrier sits between the warps inside a tile; each warp keeps its own
 *     m_i, l_i, O and the warps are merged once at the end through shared memory;
 *   - the rows of a tile are gathered row by row, so a paged cache (any page size, even 1)
 *     costs one block-table lookup per row and nothing else; rows past the band, behind a bad
 *     block index or in a bad cache row are zero-filled, never read.
 * Masks (causal, window) are bottom-right aligned per sequence; ALiBi and softcap as in the
 * forward (kFeat variant). num_splits == 1 writes O and the LSE directly; otherwise an fp32
 * partial (normalised O and its LSE) per split, merged by fa_splitkv_combine_kernel.
 */
#ifndef FA_SPLITKV_KERNEL_CUH
#define FA_SPLITKV_KERNEL_CUH

#include <math.h>
#include <stdint.h>
#include "fa_splitkv.h"
#include "fa_tuning.h"
#include "fa_cuda_device.h"
#include "fa_grid_dep.cuh"
#include "fa_mma.cuh"
#include "fa_smem_tile.cuh"
#include "fa_softmax.cuh"
#include "fa_warp_gemm.cuh"

/* Bytes of dynamic shared memory: the Q tile and kStages (K, V) tiles; the end-of-block merge
 * of the warps reuses them (kWarps x 16 rows of D + 2 floats of O, plus m and l per row). */
static inline size_t fa_splitkv_smem_bytes(int d, int bc, int stages, int warps)
{
    const size_t ring = (size_t)(FA_SPLITKV_ROWS + 2 * stages * bc) * (size_t)d * 2u;
    const size_t merge = (size_t)warps * FA_SPLITKV_ROWS * (size_t)(d + 4) * 4u;
    return ring > merge ? ring : merge;
}

/* The rows of a [Bc][D] K/V tile as block_load_kv_tile's threads copy them: 16-byte chunks, D / 8
 * per row, thread tid takes chunk idx = tid + pass * kThreads; so in each pass a warp covers
 * fa_kv_rows_per_pass whole rows, and over the fa_kv_passes passes at most 32 rows (one a lane). */
constexpr int fa_kv_rows_per_pass(int d) { return 32 / (d / 8); }
constexpr int fa_kv_passes(int d, int bc, int threads) { return bc * (d / 8) / threads; }

/* Warp-collective, paged caches only: lane m resolves the page of the m-th tile row this warp
 * copies (pass m / rows-per-pass, row m % rows-per-pass of the warp in that pass) for the tile of
 * local keys [j0, j0 + Bc): .x = block index (-1: past j_end; checked against the cache when it
 * is used), .y = row in the page. Only loads: the caller resolves a tile one iteration before it
 * issues its copies, so the block-table latency hides under a tile of work. */
template <int D, int Bc, int kThreads>
static __device__ __forceinline__ int2 warp_kv_tile_pages(const fa_splitkv_args &a, const fa_kv_seq &s, int b,
                                                          int j0, int j_end, int warp, int lane)
{
    constexpr int kRows = fa_kv_rows_per_pass(D);
    int2 pg = make_int2(-1, 0);
    if (a.block_table == NULL || lane >= fa_kv_passes(D, Bc, kThreads) * kRows) return pg;
    const int pass = lane / kRows, u = lane % kRows;
    const int j = j0 + warp * kRows + u + pass * (kThreads / (D / 8));
    if (j < j_end) {
        const int pos = s.start + j;
        pg.x = a.block_table[(int64_t)b * a.block_table_batch_stride + pos / a.page];
        pg.y = pos % a.page;
    }
    return pg;
}

/* Block-collective: starts the cp.async copies of the K and V rows of keys [j0, j0 + Bc) of
 * sequence s (local key j = cache position s.start + j) into swizzled [Bc][D] tiles; a paged
 * cache takes each row's page from pg (warp_kv_tile_pages of this tile, exchanged by shuffles).
 * Keys at or past j_end, channels >= head_dim and rows whose block / cache row is out of range
 * arrive as zeros. The caller commits the group. */
template <int D, int Bc, int kThreads>
static __device__ __forceinline__ void block_load_kv_tile(uint16_t *sK /* [Bc][D] */, uint16_t *sV /* [Bc][D] */,
                                                          const fa_splitkv_args &a, const fa_kv_seq &s,
                                                          int kh, int j0, int j_end, int2 pg, int tid)
{
    constexpr int kChunks = D / 8, kPasses = fa_kv_passes(D, Bc, kThreads);
    static_assert((Bc * kChunks) % kThreads == 0 && 32 % kChunks == 0, "whole rows per warp and pass");
    static_assert(kPasses * fa_kv_rows_per_pass(D) <= 32, "one lane per row of a warp's share of the tile");
    const int lane = tid & 31;
    const uint16_t *gK = (const uint16_t *)a.f.k + (int64_t)kh * a.f.k_head_stride;
    const uint16_t *gV = (const uint16_t *)a.f.v + (int64_t)kh * a.f.v_head_stride;
    const uint32_t uK = fa_smem_u32(sK), uV = fa_smem_u32(sV);
#pragma unroll
    for (int it = 0; it < kPasses; ++it) {
        const int idx = tid + it * kThreads;
        const int row = idx / kChunks, c = idx % kChunks;
        const int j = j0 + row;
        bool pred = j < j_end && c * 8 < a.f.head_dim;
        int64_t ko = 0, vo = 0;
        if (a.block_table != NULL) {  /* uniform: every lane takes part in the shuffles */
            const int src = it * fa_kv_rows_per_pass(D) + lane / kChunks;
            const int blk = __shfl_sync(0xffffffffu, pg.x, src);
            const int in_page = __shfl_sync(0xffffffffu, pg.y, src);
            pred = pred && blk >= 0 && blk < a.kv_cache_rows;
            ko = (int64_t)blk * a.f.k_batch_stride + (int64_t)in_page * a.f.k_row_stride;
            vo = (int64_t)blk * a.f.v_batch_stride + (int64_t)in_page * a.f.v_row_stride;
        } else {
            const int pos = s.start + j;
            ko = s.k_row0 + (int64_t)pos * a.f.k_row_stride;
            vo = s.v_row0 + (int64_t)pos * a.f.v_row_stride;
        }
        const uint32_t dst = 2u * (uint32_t)fa_tile_offset<D>(row, c);
        fa_cp_async_16(uK + dst, pred ? gK + ko + c * 8 : gK, pred);
        fa_cp_async_16(uV + dst, pred ? gV + vo + c * 8 : gV, pred);
    }
}

template <bool kBf16, int D, int Bc, int kWarps, int kStages, bool kFeat>
__global__ void __launch_bounds__(kWarps * 32)
fa_splitkv_kernel(const fa_splitkv_args a)
{
    constexpr int kThreads = kWarps * 32;
    constexpr int kR = FA_SPLITKV_ROWS;
    constexpr int kKW = Bc / kWarps;   /* keys of each tile per warp */
    constexpr int kNB = kKW / 8;       /* 8-key n-blocks of a warp's S */
    constexpr int kDB = D / 8;         /* 8-column n-blocks of O */
    static_assert(kKW % 16 == 0 && D % 32 == 0 && kStages >= 2, "tile shape");

    extern __shared__ __align__(128) unsigned char fa_smem[];
    uint16_t *sQ = (uint16_t *)fa_smem;     /* [16][D] */
    uint16_t *sK = sQ + kR * D;             /* [kStages][Bc][D] */
    uint16_t *sV = sK + kStages * Bc * D;   /* [kStages][Bc][D] */

    /* the combine (launched as a programmatic dependent on sm_90) may be scheduled now: it waits
     * for this whole grid in griddepcontrol.wait, so only its launch latency overlaps us */
    fa_grid_launch_dependents();
    if (a.f.rng_state != NULL && blockIdx.x == 0 && blockIdx.y == 0 && blockIdx.z == 0 && threadIdx.x == 0) {
        uint64_t seed, offset;  /* what every forward writes for a replayed backward (no dropout here) */
        fa_fwd_philox_seed(a.f, &seed, &offset);
        a.f.rng_state[0] = (int64_t)seed;
        a.f.rng_state[1] = (int64_t)offset;
    }

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, t4 = lane & 3;
    const int split = blockIdx.z;
    const int b = (int)blockIdx.x / a.f.heads_k, kh = (int)blockIdx.x % a.f.heads_k;
    const fa_kv_seq s = fa_kv_seq_get(a, b);
    const int rows = a.f.group * s.sq;
    const int r0 = (int)blockIdx.y * kR;
    if (r0 >= rows) return;  /* uniform: a shorter varlen sequence has fewer row tiles */

    /* the key band of rows [r0, r_last]: local keys [lo, hi) (window / causal bottom-right) */
    const int r_last = min(r0 + kR, rows) - 1;
    const int diag = s.sk - s.sq;
    int lo = 0, hi = s.sk;
    if (a.f.window_left >= 0) lo = max(0, r0 / a.f.group + diag - a.f.window_left);
    if (a.f.window_right >= 0) hi = min(s.sk, r_last / a.f.group + diag + a.f.window_right + 1);
    const int n_tiles = hi > lo ? (hi - lo + Bc - 1) / Bc : 0;
    const int per_split = (n_tiles + a.num_splits - 1) / a.num_splits;
    const int t_begin = split * per_split, t_end = min(n_tiles, t_begin + per_split);

    /* this thread's two fragment rows (g, g + 8): query index, visible keys, ALiBi slope */
    int i_row[2], j_lo[2], j_hi[2];
    float slope[2] = {0.f, 0.f};
#pragma unroll
    for (int half = 0; half < 2; ++half) {
        const int r = r0 + g + 8 * half;
        i_row[half] = r / a.f.group;
        j_lo[half] = a.f.window_left >= 0 ? i_row[half] + diag - a.f.window_left : 0;
        j_hi[half] = a.f.window_right >= 0 ? min(i_row[half] + diag + a.f.window_right, s.sk - 1) : s.sk - 1;
        if (r >= rows) j_hi[half] = -1;  /* padding row: sees nothing */
        if (kFeat && a.f.alibi_slopes != NULL)
            slope[half] = a.f.alibi_slopes[(int64_t)b * a.f.alibi_batch_stride + kh * a.f.group + r % a.f.group] * FA_LOG2E;
    }
    const float mul = kFeat ? 1.f : a.f.scale_log2;  /* x -> log2 units, see fa_softmax.cuh */

    float o[1][kDB][4];
    float m_i[1][2] = {{-INFINITY, -INFINITY}}, l_i[1][2] = {{0.f, 0.f}};
    thread_zero_tile<1, kDB>(o);

    /* prologue: the first kStages - 1 tiles of this split in flight (a paged cache resolves their
     * pages first), then the pages of the next tile requested */
    int2 pg = make_int2(-1, 0);
#pragma unroll
    for (int st = 0; st < kStages - 1; ++st) {
        if (t_begin + st < t_end) {
            pg = warp_kv_tile_pages<D, Bc, kThreads>(a, s, b, lo + (t_begin + st) * Bc, hi, warp, lane);
            block_load_kv_tile<D, Bc, kThreads>(sK + st * Bc * D, sV + st * Bc * D, a, s, kh,
                                                lo + (t_begin + st) * Bc, hi, pg, tid);
        }
        fa_cp_async_commit();
    }
    if (t_begin + kStages - 1 < t_end)
        pg = warp_kv_tile_pages<D, Bc, kThreads>(a, s, b, lo + (t_begin + kStages - 1) * Bc, hi, warp, lane);

    /* Q: the 16 packed rows, zero past the sequence and past head_dim (read while the first K/V
     * tiles are in flight) */
    for (int idx = tid; idx < kR * (D / 8); idx += kThreads) {
        const int rr = idx / (D / 8), c = idx % (D / 8);
        const int r = r0 + rr;
        uint4 val = make_uint4(0u, 0u, 0u, 0u);
        if (r < rows && c * 8 < a.f.head_dim) {
            const int head = kh * a.f.group + r % a.f.group;
            val = *(const uint4 *)((const uint16_t *)a.f.q +
                                   fa_splitkv_row_offset(a, s, b, r / a.f.group, head, a.f.q_batch_stride,
                                                         a.f.q_row_stride, a.f.q_head_stride) + c * 8);
        }
        *(uint4 *)(sQ + fa_tile_offset<D>(rr, c)) = val;
    }

    const uint32_t sQ_u = fa_smem_u32(sQ);
    for (int t = t_begin; t < t_end; ++t) {
        const int it = t - t_begin, stage = it % kStages;
        fa_cp_async_wait<kStages - 2>();
        /* why: tile t (and, at it = 0, Q) was copied by every thread; and every warp is done with
         * tile t - 1, whose stage the load below refills */
        __syncthreads();
        if (t + kStages - 1 < t_end) {
            const int ns = (it + kStages - 1) % kStages;
            block_load_kv_tile<D, Bc, kThreads>(sK + ns * Bc * D, sV + ns * Bc * D, a, s, kh,
                                                lo + (t + kStages - 1) * Bc, hi, pg, tid);
        }
        fa_cp_async_commit();
        if (t + kStages < t_end)  /* the pages of the tile after it: used one iteration later */
            pg = warp_kv_tile_pages<D, Bc, kThreads>(a, s, b, lo + (t + kStages) * Bc, hi, warp, lane);

        const int kw0 = warp * kKW;                  /* this warp's first key in the tile */
        const int j0 = lo + t * Bc + kw0;            /* its local key index */
        float sc[1][kNB][4];
        thread_zero_tile<1, kNB>(sc);
        const fa_ldsm_bases<D> qb = fa_fwd_bases_a<D>(sQ_u, lane);
        const fa_ldsm_bases<D> kb = fa_fwd_bases_k<D>(fa_smem_u32(sK + (stage * Bc + kw0) * D), lane);
        warp_gemm_qk<kBf16, D, 1, kNB, false>(sc, NULL, qb, kb);
#pragma unroll
        for (int nb = 0; nb < kNB; ++nb)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int half = e >> 1;
                const int j = j0 + 8 * nb + 2 * t4 + (e & 1);
                float x = sc[0][nb][e];
                if (kFeat) {  /* x in log2 units: softcap, scale, ALiBi */
                    if (a.f.softcap > 0.f) x = a.f.softcap_log2 * fa_tanh(x * a.f.scale_div_softcap);
                    else x *= a.f.scale_log2;
                    x -= slope[half] * fabsf((float)(i_row[half] + diag - j));
                }
                sc[0][nb][e] = (j < j_lo[half] || j > j_hi[half]) ? -INFINITY : x;
            }
        warp_online_softmax_tile<1, kNB, kDB>(sc, o, m_i, l_i, mul);
        uint32_t pa[1][kNB / 2][4];
#pragma unroll
        for (int kk = 0; kk < kNB / 2; ++kk) fa_pack_c_to_a<kBf16>(pa[0][kk], sc[0][2 * kk], sc[0][2 * kk + 1]);
        const fa_ldsm_bases<D> vb = fa_fwd_bases_a<D>(fa_smem_u32(sV + (stage * Bc + kw0) * D), lane);
        warp_gemm_pv<kBf16, D, 1, kNB>(o, pa, vb);
    }
    fa_cp_async_wait<0>();
    /* why: the merge below overwrites the K/V ring, which other warps may still be reading */
    __syncthreads();

    /* merge the warps: each parks its unnormalised O, m (log2 units) and l; then every thread
     * finalises 4 columns of one row at a time */
    float *sO = (float *)fa_smem;                       /* [kWarps][16][D + 2] */
    float *sM = sO + kWarps * kR * (D + 2);             /* [kWarps][16] (fits: see smem bytes) */
    float *sL = sM + kWarps * kR;
#pragma unroll
    for (int half = 0; half < 2; ++half) {
        const int rr = g + 8 * half;
        /* l_i holds this lane's columns only (fa_softmax.cuh): the row sum is the quad's */
        const float l_row = quad_allreduce_sum(l_i[0][half]);
#pragma unroll
        for (int db = 0; db < kDB; ++db) {
            float *dst = sO + (warp * kR + rr) * (D + 2) + 8 * db + 2 * t4;
            dst[0] = o[0][db][2 * half];
            dst[1] = o[0][db][2 * half + 1];
        }
        if (t4 == 0) {
            sM[warp * kR + rr] = m_i[0][half] == -INFINITY ? -INFINITY : m_i[0][half] * mul;
            sL[warp * kR + rr] = l_row;
        }
    }
    __syncthreads();  /* why: rows are finalised by other threads than the ones that parked them */
    for (int idx = tid; idx < kR * (D / 4); idx += kThreads) {
        const int rr = idx / (D / 4), c = 4 * (idx % (D / 4));
        const int r = r0 + rr;
        if (r >= rows || c >= a.f.head_dim) continue;
        float mx = -INFINITY;
#pragma unroll
        for (int w = 0; w < kWarps; ++w) mx = fmaxf(mx, sM[w * kR + rr]);
        float l = 0.f, acc[4] = {0.f, 0.f, 0.f, 0.f};
        if (mx != -INFINITY) {
#pragma unroll
            for (int w = 0; w < kWarps; ++w) {
                const float f = fa_exp2(sM[w * kR + rr] - mx);  /* 0 for a warp that saw nothing */
                l = fmaf(sL[w * kR + rr], f, l);
                const float *src = sO + (w * kR + rr) * (D + 2) + c;
#pragma unroll
                for (int e = 0; e < 4; ++e) acc[e] = fmaf(src[e], f, acc[e]);
            }
        }
        const float inv = l > 0.f ? 1.f / l : 0.f;
        const float lse = l > 0.f ? (mx + __log2f(l)) * FA_LN2 : -INFINITY;
        const int i = r / a.f.group, head = kh * a.f.group + r % a.f.group;
        if (a.num_splits == 1) {
            uint16_t *dst = (uint16_t *)a.f.o + fa_splitkv_row_offset(a, s, b, i, head, a.f.o_batch_stride,
                                                                    a.f.o_row_stride, a.f.o_head_stride) + c;
            *(uint2 *)dst = make_uint2(fa_pack_f32x2<kBf16>(acc[0] * inv, acc[1] * inv),
                                       fa_pack_f32x2<kBf16>(acc[2] * inv, acc[3] * inv));
            if (c == 0) a.f.lse[fa_splitkv_lse_index(a, s, b, head, i)] = lse;
        } else {
            const int64_t pi = fa_splitkv_part_index(a, split, b, head, i);
            *(float4 *)(a.o_part + pi * D + c) = make_float4(acc[0] * inv, acc[1] * inv, acc[2] * inv, acc[3] * inv);
            if (c == 0) a.lse_part[pi] = lse;
        }
    }
}

/* One warp per (sequence b, head, row i): O = sum_s exp(lse_s - lse) O_s with
 * lse = log sum_s exp(lse_s); splits that saw no key (lse_s = -inf) weigh 0 and are not read. */
template <bool kBf16, int D>
__global__ void __launch_bounds__(128)
fa_splitkv_combine_kernel(const fa_splitkv_args a)
{
    constexpr int kPer = D / 32;  /* columns per lane: 2, 4 or 8 */
    const int lane = threadIdx.x & 31;
    const int64_t row = (int64_t)blockIdx.x * 4 + (threadIdx.x >> 5);
    if (row >= (int64_t)a.f.batch * a.f.heads * a.f.seqlen_q) return;
    const int i = (int)(row % a.f.seqlen_q);
    const int head = (int)((row / a.f.seqlen_q) % a.f.heads);
    const int b = (int)(row / ((int64_t)a.f.seqlen_q * a.f.heads));
    const fa_kv_seq s = fa_kv_seq_get(a, b);  /* inputs of the attention kernel: no wait needed */
    if (i >= s.sq) return;
    /* why: the partials are the attention grid's output (a no-op unless launched as its
     * programmatic dependent, where it returns once that grid has finished and flushed) */
    fa_grid_dependency_wait();

    float mx = -INFINITY;
    for (int sp = lane; sp < a.num_splits; sp += 32) mx = fmaxf(mx, a.lse_part[fa_splitkv_part_index(a, sp, b, head, i)]);
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
    float acc[kPer];
#pragma unroll
    for (int e = 0; e < kPer; ++e) acc[e] = 0.f;
    float l = 0.f;
    if (mx != -INFINITY) {
        for (int sp = 0; sp < a.num_splits; ++sp) {
            const int64_t pi = fa_splitkv_part_index(a, sp, b, head, i);
            const float ls = a.lse_part[pi];
            if (ls == -INFINITY) continue;
            const float w = fa_exp2((ls - mx) * FA_LOG2E);
            l += w;
            const float *src = a.o_part + pi * D + lane * kPer;
#pragma unroll
            for (int e = 0; e < kPer; e += 2) {
                const float2 v = *(const float2 *)(src + e);
                acc[e] = fmaf(v.x, w, acc[e]);
                acc[e + 1] = fmaf(v.y, w, acc[e + 1]);
            }
        }
    }
    const float inv = l > 0.f ? 1.f / l : 0.f;
    const int c = lane * kPer;
    if (c < a.f.head_dim) {
        uint16_t *dst = (uint16_t *)a.f.o + fa_splitkv_row_offset(a, s, b, i, head, a.f.o_batch_stride,
                                                                a.f.o_row_stride, a.f.o_head_stride) + c;
#pragma unroll
        for (int e = 0; e < kPer; e += 2)
            *(uint32_t *)(dst + e) = fa_pack_f32x2<kBf16>(acc[e] * inv, acc[e + 1] * inv);
    }
    if (lane == 0) a.f.lse[fa_splitkv_lse_index(a, s, b, head, i)] = l > 0.f ? mx + logf(l) : -INFINITY;
}

/* Host: whether the combine kernel of (dtype, D) loaded on the current device carries the
 * griddepcontrol.wait (PTX of compute capability 9.0 or newer): a build whose newest image is
 * compute_80 PTX, JIT-compiled on an H100, has none, and must not be launched as a dependent.
 * Cached per device (benign race: every writer writes the same value). */
template <bool kBf16, int D>
static bool fa_splitkv_combine_waits(void)
{
    static int cached[FA_CUDA_MAX_DEVICES];  /* 0 unknown, 1 yes, -1 no */
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= FA_CUDA_MAX_DEVICES) return false;
    if (cached[dev] == 0) {
        cudaFuncAttributes attr;
        const bool ok = cudaFuncGetAttributes(&attr, (const void *)fa_splitkv_combine_kernel<kBf16, D>) == cudaSuccess &&
                        attr.ptxVersion >= 90;
        cached[dev] = ok ? 1 : -1;
    }
    return cached[dev] == 1;
}

/* Host: the attention kernel of (dtype, bucket D) with its fa_tuning.h row, then the combine. */
template <int kDtype, int D>
static fa_status fa_splitkv_launch_dtype(const fa_splitkv_args &a, bool pdl, cudaStream_t stream)
{
    constexpr fa_tuning_row R = fa_tuning_find(FA_KERNEL_SPLITKV, 80, D);
    static_assert(R.bc > 0, "no FA_KERNEL_SPLITKV tuning row for this head dim");
    constexpr bool kBf16 = kDtype == FA_BF16;
    /* GPUs with at most 99 KB of shared memory per block (sm_86 / 89 / 120: RTX, A10, L4, L40S)
     * cannot take the row's ring at d >= 128 (100-104 KB): the same row with a 2-slot ring
     * (one tile in flight) runs there instead (FLASH_ATTN_C_SPLITKV_SMALL_SMEM=1 forces it,
     * to check it on a larger GPU). */
    size_t smem = fa_splitkv_smem_bytes(D, R.bc, R.stages, R.warps);
    const bool small = smem > fa_cuda_max_smem_per_block() || fa_env_flag("FLASH_ATTN_C_SPLITKV_SMALL_SMEM");
    if (small) smem = fa_splitkv_smem_bytes(D, R.bc, 2, R.warps);
    const bool feat = a.f.softcap > 0.f || a.f.alibi_slopes != NULL || !(a.f.scale > 0.f);
    void (*kern)(const fa_splitkv_args) =
        small ? (feat ? fa_splitkv_kernel<kBf16, D, R.bc, R.warps, 2, true>
                      : fa_splitkv_kernel<kBf16, D, R.bc, R.warps, 2, false>)
              : (feat ? fa_splitkv_kernel<kBf16, D, R.bc, R.warps, R.stages, true>
                      : fa_splitkv_kernel<kBf16, D, R.bc, R.warps, R.stages, false>);
    if (smem > 48 * 1024 &&
        cudaFuncSetAttribute((const void *)kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem) != cudaSuccess) {
        (void)cudaGetLastError();  /* not left for an unrelated later check to report */
        return FA_ERR_CUDA;
    }
    const int row_tiles = (a.f.group * a.f.seqlen_q + FA_SPLITKV_ROWS - 1) / FA_SPLITKV_ROWS;
    if (row_tiles > 65535 || a.num_splits > 65535) return FA_ERR_UNSUPPORTED;  /* grid y / z limits */
    const dim3 grid((unsigned)(a.f.batch * a.f.heads_k), (unsigned)row_tiles, (unsigned)a.num_splits);
    kern<<<grid, R.warps * 32, smem, stream>>>(a);
    if (cudaGetLastError() != cudaSuccess) return FA_ERR_CUDA;
    if (a.num_splits > 1) {
        /* one warp per output row; on sm_90 a programmatic dependent launch, so the combine's
         * launch latency overlaps the attention grid's tail instead of following it */
        const int64_t rows = (int64_t)a.f.batch * a.f.heads * a.f.seqlen_q;
        cudaLaunchAttribute attr;
        attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
        attr.val.programmaticStreamSerializationAllowed = 1;
        cudaLaunchConfig_t cfg = {};
        cfg.gridDim = dim3((unsigned)((rows + 3) / 4));
        cfg.blockDim = dim3(128);
        cfg.stream = stream;
        cfg.attrs = &attr;
        cfg.numAttrs = pdl && fa_splitkv_combine_waits<kBf16, D>() ? 1 : 0;
        if (cudaLaunchKernelEx(&cfg, fa_splitkv_combine_kernel<kBf16, D>, a) != cudaSuccess) return FA_ERR_CUDA;
    }
    return FA_OK;
}

/* Defines fa_splitkv_launch_hdim<D> (both dtypes) in one translation unit per bucket. */
#define FA_SPLITKV_DEFINE_HDIM(D)                                                                \
    template <>                                                                                   \
    fa_status fa_splitkv_launch_hdim<D>(const fa_splitkv_args &a, fa_dtype dtype, bool pdl,       \
                                        cudaStream_t stream)                                      \
    {                                                                                             \
        if (dtype == FA_F16) return fa_splitkv_launch_dtype<FA_F16, D>(a, pdl, stream);           \
        if (dtype == FA_BF16) return fa_splitkv_launch_dtype<FA_BF16, D>(a, pdl, stream);         \
        return FA_ERR_DTYPE;                                                                      \
    }

#endif /* FA_SPLITKV_KERNEL_CUH */
