/* fa_bwd_sm90_dq_tiled.cuh - the tiled fp32 dQ accumulator of the d = 256 backward (every d in
 * (128, 256], atomic dQ: fa_bwd_sm90_pipe_dsplit.cuh): its layout, the consumers' adds into it and
 * the pass that converts it to dq.
 *
 * Why a layout of its own: the d = 256 tile is bound by its dQ adds (without them it ran 1.6-2.0x,
 * H200 run 62), and an add's cost follows the bytes per cache line a warp instruction covers, not
 * the instruction count (reduce_bw, run 65: red.global.add.v2 on the row-major (total_q, h, d)
 * buffer 2105 GB/s, v4 after a quad swap 2109 (16 rows x 32 bytes), after a quad transpose 2864
 * (8 rows x 64 bytes), v4 with every warp instruction on 512 contiguous bytes 3814). So the buffer
 * is laid out in the order the consumers hold their accumulators, as FlashAttention-3 does:
 *
 *   tile (b, h, m), m = query block of Br = 64 rows: 64 x 256 fp32 at float offset
 *     ((b H + h) M + m) 16384, M = ceil(sq / 64) (the last block padded: nothing reads its rows
 *     past sq, nor the columns past d of any block);
 *   inside a tile, float4 slot 128 k + tw, k = 16 wg + 8 hh + jn (wg: consumer warpgroup, hh: its
 *     64-dim half, jn: 8-dim group), tw = 32 wq + lane (thread of the warpgroup; g = lane / 4,
 *     t = lane % 4) holds the thread's accumulators 4 jn .. 4 jn + 3 of half hh: rows r, r, r + 8,
 *     r + 8 and dims c, c + 1, c, c + 1, r = 16 wq + g, c = 128 wg + 64 hh + 8 jn + 2 t
 *     (the wgmma m64nNk16 fp32 fragment order).
 * A warp's red.global.add.v4 for one (wg, hh, jn) covers 512 contiguous bytes; no bounds tests
 * (padding absorbs the rows past sq and dims past d). The first pass does not zero it (its
 * row-major walk would not match): fa_bwd_sm90.cu clears it with cudaMemsetAsync.
 */
#ifndef FA_BWD_SM90_DQ_TILED_CUH
#define FA_BWD_SM90_DQ_TILED_CUH

#include <stdint.h>

#include "fa_bwd_args.cuh"
#include "fa_mma.cuh" /* fa_pack_f32x2 */

#define FA_BWD_DQ_TILE_ROWS 64   /* = fa_bwd_sm90_pipe_cfg<256>::Br (static_assert in the dsplit tile) */
#define FA_BWD_DQ_TILE_DIMS 256
#define FA_BWD_DQ_TILE_FLOATS (FA_BWD_DQ_TILE_ROWS * FA_BWD_DQ_TILE_DIMS)

/* floats of the tiled buffer for (batch, heads, seqlen_q) */
static inline __host__ __device__ int64_t fa_bwd_dq_tiled_floats(int64_t batch, int64_t heads, int64_t seqlen_q)
{
    const int64_t m = (seqlen_q + FA_BWD_DQ_TILE_ROWS - 1) / FA_BWD_DQ_TILE_ROWS;
    return batch * heads * m * FA_BWD_DQ_TILE_FLOATS;
}

/* The float4 slot in a tile of accumulators 4 jn .. 4 jn + 3 of half hh, warpgroup wg, thread tw */
static inline __host__ __device__ int fa_bwd_dq_tiled_slot(int wg, int hh, int jn, int tw)
{
    return 128 * (16 * wg + 8 * hh + jn) + tw;
}

/* Row and dim of slot `in`'s first float (the others: (r, c + 1), (r + 8, c), (r + 8, c + 1)) */
static inline __host__ __device__ void fa_bwd_dq_tiled_coords(int in, int *r, int *c)
{
    const int k = in / 128, tw = in % 128, lane = tw % 32;
    *r = 16 * (tw / 32) + lane / 4;
    *c = 128 * (k / 16) + 64 * ((k / 8) % 2) + 8 * (k % 8) + 2 * (lane % 4);
}

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
/* *addr[0..3] += x[0..3] (16-byte aligned) */
static __device__ __forceinline__ void fa_red_add_f32x4(float *addr, const float *x)
{
    asm volatile("red.global.add.v4.f32 [%0], {%1, %2, %3, %4};\n" ::"l"(addr), "f"(x[0]), "f"(x[1]), "f"(x[2]),
                 "f"(x[3])
                 : "memory");
}
#endif

/* Tile (b, h, i0 / 64) += this thread's 64-query x 64-dim dQ half hh (kN = 64 accumulators / 2,
 * wgmma fragment order). wg: consumer warpgroup, tw: thread in the warpgroup (0..127). */
static __device__ __forceinline__ void thread_red_add_dq_tiled(const fa_bwd_args &a, const float (&dqa)[32], int b,
                                                               int h, int i0, int wg, int hh, int tw)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    const int64_t m_blocks = (a.seqlen_q + FA_BWD_DQ_TILE_ROWS - 1) / FA_BWD_DQ_TILE_ROWS;
    float *tile = a.dq_accum + (((int64_t)b * a.heads + h) * m_blocks + i0 / FA_BWD_DQ_TILE_ROWS) * FA_BWD_DQ_TILE_FLOATS;
    /* the thread's slot of (wg, 0, 0) as one pointer, (hh, jn) as constant offsets from it: the
     * adds then take immediate offsets from one 64-bit address (the caller's two halves share it),
     * instead of 16 addresses sign-extended and computed one by one (32 more live registers) */
    float *base = tile + 4 * fa_bwd_dq_tiled_slot(wg, 0, 0, tw);
#pragma unroll
    for (int jn = 0; jn < 8; ++jn) fa_red_add_f32x4(base + 4 * fa_bwd_dq_tiled_slot(0, hh, jn, 0), &dqa[4 * jn]);
#endif
}

/* dq (b, sq, h, d) = scale * the tiled buffer; one thread per float4 slot (reads coalesced, writes
 * 16 bytes per row per warp). Grid: ceil(fa_bwd_dq_tiled_floats / 4 / 256) blocks of 256. */
template <bool kBf16>
__global__ void __launch_bounds__(256) fa_bwd_dq_convert_tiled_kernel(const fa_bwd_args a)
{
    const int64_t u = (int64_t)blockIdx.x * 256 + threadIdx.x; /* float4 slot */
    if (u >= fa_bwd_dq_tiled_floats(a.batch, a.heads, a.seqlen_q) / 4) return;
    const int64_t m_blocks = (a.seqlen_q + FA_BWD_DQ_TILE_ROWS - 1) / FA_BWD_DQ_TILE_ROWS;
    const int64_t tile = u / (FA_BWD_DQ_TILE_FLOATS / 4);
    int r, c;
    fa_bwd_dq_tiled_coords((int)(u % (FA_BWD_DQ_TILE_FLOATS / 4)), &r, &c);
    const int m = (int)(tile % m_blocks), h = (int)((tile / m_blocks) % a.heads);
    const int64_t b = tile / (m_blocks * a.heads);
    if (c >= a.head_dim) return;
    const float4 x = *(const float4 *)(a.dq_accum + 4 * u);
    uint16_t *dq = a.dq + b * a.dq_batch_stride + (int64_t)h * a.dq_head_stride + c;
    const int i = FA_BWD_DQ_TILE_ROWS * m + r;
    if (i < a.seqlen_q)
        *(uint32_t *)(dq + (int64_t)i * a.dq_row_stride) = fa_pack_f32x2<kBf16>(x.x * a.scale, x.y * a.scale);
    if (i + 8 < a.seqlen_q)
        *(uint32_t *)(dq + (int64_t)(i + 8) * a.dq_row_stride) = fa_pack_f32x2<kBf16>(x.z * a.scale, x.w * a.scale);
}

#endif /* FA_BWD_SM90_DQ_TILED_CUH */
