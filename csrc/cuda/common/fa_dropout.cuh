/* fa_dropout.cuh - dropout keep bits on register tiles, bit-identical to the CPU backend.
 *
 * The keep bit of (b, h, i, j) is fa_dropout_keep() of fa_common.h: one Philox4x32-10 call gives
 * the words of the 4 keys 4 * (j >> 2) .. +3 of row i. In the mma.sync C layout (fa_mma.cuh) a
 * lane holds 2 adjacent columns of rows g and g + 8; lanes 2u and 2u + 1 (t = 0,1 or 2,3) hold
 * the 4 columns of one Philox group. So the pair splits the work: the even lane draws row g,
 * the odd lane row g + 8, and they swap the halves they do not own with one shuffle. That is
 * one Philox call per 4 elements, the minimum.
 */
#ifndef FA_DROPOUT_CUH
#define FA_DROPOUT_CUH

#include <stdint.h>
#include "fa_common.h"

/* Warp-collective (all 32 lanes, uniform control flow). For one m-tile x n-block of a C-layout
 * tile: returns 4 keep bits, bit e for element e (rows row_g, row_g + 8; columns col_2t, +1).
 * row_g: sequence-local row of element 0 (tile row + g); col_2t: column of element 0
 * (tile column + 2 t, tile column a multiple of 8). */
static __device__ __forceinline__ uint32_t warp_dropout_keep4(uint64_t seed, uint64_t offset, int b, int h,
                                                              int row_g, int col_2t, uint32_t threshold)
{
    const int lane = threadIdx.x & 31;
    const int odd = lane & 1;
    const fa_u32x4 r = fa_dropout_random4(seed, offset, b, h, row_g + 8 * odd, col_2t >> 2);
    /* bits of this lane's row for group positions 0..3 */
    const uint32_t mine = (uint32_t)(r.x >= threshold) | ((uint32_t)(r.y >= threshold) << 1) |
                          ((uint32_t)(r.z >= threshold) << 2) | ((uint32_t)(r.w >= threshold) << 3);
    /* even lane owns group positions 0,1 (columns 2t, 2t+1 with t even), odd lane positions 2,3;
     * each sends the partner the 2 bits of the positions the partner owns */
    const uint32_t send = odd ? (mine & 3u) : (mine >> 2);
    const uint32_t recv = __shfl_xor_sync(0xffffffffu, send, 1);
    /* result: bits 0,1 = row g, bits 2,3 = row g + 8 */
    return odd ? (recv | (mine & 0xcu)) : ((mine & 3u) | (recv << 2));
}

/* Warp-collective: zeroes the dropped entries of p[kMT][kNB][4] (C layout, see fa_mask.cuh for
 * row0/col0). Kept entries are left unscaled; the caller applies 1 / (1 - p_drop) once.
 * The Philox calls run in a rolled loop that collects keep bits into one 64-bit mask per
 * m-tile (bit 4 nb + e): unrolled, the 10-round Philox bodies of every n-block were
 * interleaved by the scheduler and blew the register budget. */
template <int kMT, int kNB>
static __device__ __forceinline__ void warp_dropout_tile(float (*p)[kNB][4], uint64_t seed, uint64_t offset,
                                                        int b, int h, int row0, int col0, uint32_t threshold)
{
    static_assert(kNB <= 16, "64 keep bits per m-tile");
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt) {
        uint64_t keep = 0;
#pragma unroll 1
        for (int nb = 0; nb < kNB; ++nb) {
            const uint32_t k4 = warp_dropout_keep4(seed, offset, b, h, row0 + 16 * mt, col0 + 8 * nb, threshold);
            keep |= (uint64_t)k4 << (4 * nb);
        }
#pragma unroll
        for (int nb = 0; nb < kNB; ++nb)
#pragma unroll
            for (int e = 0; e < 4; ++e)
                if (!((keep >> (4 * nb + e)) & 1u)) p[mt][nb][e] = 0.f;
    }
}

#endif /* FA_DROPOUT_CUH */
