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
 * (padding absorbs the rows past sq and dims past d). The first pass clears it by a flat walk of
 * its own (fa_bwd_dot_do_o_kernel's flat_clear4: its row-major walk would not match the layout).
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

#define FA_BWD_DQ_CONVERT_THREADS 256
/* The staging tile's row pitch in 32-bit words: 128 words of dim pairs + 4, so the 8 rows x 4
 * words a warp writes per slot fall in 32 different banks, and a row stays 16-byte aligned. */
#define FA_BWD_DQ_CONVERT_PITCH (FA_BWD_DQ_TILE_DIMS / 2 + 4)

/* dq (b, sq, h, d) = scale * the tiled buffer, one block per tile (grid: fa_bwd_dq_tiled_floats /
 * FA_BWD_DQ_TILE_FLOATS). The tile passes through shared memory: read in slot order (each warp
 * 512 contiguous bytes per load, 16 loads in flight per thread), written to a row-major staging
 * tile of packed dim pairs, then stored 16 bytes per thread, a warp per 512-byte row. Written
 * straight from the slot order, a warp covered 8 rows x 16 bytes per store: 86-112 us at 16k
 * tokens, h 8, d 256 (cuDNN's convert 74-78, H100 run 75) for 160 MiB of traffic. */
template <bool kBf16>
__global__ void __launch_bounds__(FA_BWD_DQ_CONVERT_THREADS) fa_bwd_dq_convert_tiled_kernel(const fa_bwd_args a)
{
    constexpr int kSlots = FA_BWD_DQ_TILE_FLOATS / 4, kPer = kSlots / FA_BWD_DQ_CONVERT_THREADS;
    __shared__ __align__(16) uint32_t stage[FA_BWD_DQ_TILE_ROWS * FA_BWD_DQ_CONVERT_PITCH];
    const int64_t m_blocks = (a.seqlen_q + FA_BWD_DQ_TILE_ROWS - 1) / FA_BWD_DQ_TILE_ROWS;
    const int64_t tile = blockIdx.x;
    const int m = (int)(tile % m_blocks), h = (int)((tile / m_blocks) % a.heads);
    const int64_t b = tile / (m_blocks * a.heads);
    const float4 *src = (const float4 *)(a.dq_accum + tile * FA_BWD_DQ_TILE_FLOATS);
    float4 x[kPer];
#pragma unroll
    for (int j = 0; j < kPer; ++j) x[j] = src[j * FA_BWD_DQ_CONVERT_THREADS + threadIdx.x];
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
        int r, c;
        fa_bwd_dq_tiled_coords(j * FA_BWD_DQ_CONVERT_THREADS + threadIdx.x, &r, &c);
        stage[r * FA_BWD_DQ_CONVERT_PITCH + c / 2] = fa_pack_f32x2<kBf16>(x[j].x * a.scale, x[j].y * a.scale);
        stage[(r + 8) * FA_BWD_DQ_CONVERT_PITCH + c / 2] = fa_pack_f32x2<kBf16>(x[j].z * a.scale, x[j].w * a.scale);
    }
    __syncthreads(); /* every row of the staging tile is written (by threads of all 8 warps) before any is stored */
    const int rows = min(FA_BWD_DQ_TILE_ROWS, a.seqlen_q - FA_BWD_DQ_TILE_ROWS * m), chunks = a.head_dim / 8;
    uint16_t *dq = a.dq + b * a.dq_batch_stride + (int64_t)h * a.dq_head_stride +
                   (int64_t)FA_BWD_DQ_TILE_ROWS * m * a.dq_row_stride;
    for (int u = threadIdx.x; u < FA_BWD_DQ_TILE_ROWS * (FA_BWD_DQ_TILE_DIMS / 8); u += FA_BWD_DQ_CONVERT_THREADS) {
        const int r = u / (FA_BWD_DQ_TILE_DIMS / 8), ch = u % (FA_BWD_DQ_TILE_DIMS / 8);
        if (r < rows && ch < chunks)
            *(uint4 *)(dq + (int64_t)r * a.dq_row_stride + 8 * ch) = *(const uint4 *)&stage[r * FA_BWD_DQ_CONVERT_PITCH + 4 * ch];
    }
}

#endif /* FA_BWD_SM90_DQ_TILED_CUH */
