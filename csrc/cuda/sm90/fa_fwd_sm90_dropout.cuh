/* fa_fwd_sm90_dropout.cuh - dropout on P in the wgmma accumulator layout (the Hopper forward's
 * kDrop variant, fa_fwd_sm90_consumer.cuh), bit-identical to the CPU backend and the sm80 kernels.
 *
 * Element -> random number: the keep bit of (b, h, i, j) is fa_dropout_keep() of fa_common.h,
 * one Philox4x32-10 call per 4 keys 4 (j >> 2) .. + 3 of row i (b = sequence, h = query head,
 * i / j sequence-local). warp_dropout_keep4 (fa_dropout.cuh) draws those bits for the mma.sync C
 * layout of one 16 x 8 block: lane 4 g + t4 holds rows g, g + 8 and columns 2 t4, 2 t4 + 1,
 * returned as bit 2 half + e. The wgmma m64nNk16 accumulator (fa_fwd_sm90_math.cuh) gives warp
 * wq of a warpgroup the same 16 x 8 block layout per n-block: s[4 nb + 2 half + e] is row
 * row0 + 8 half, key c0 + 2 t4 + 8 nb + e (row0 = m0 + 64 wg + 16 wq + g), lane = 4 g + t4 as
 * well. So n-block nb is warp_dropout_keep4 at (row0, c0 + 2 t4 + 8 nb), its bit k is s[4 nb + k].
 * The lane pairing of warp_dropout_keep4 (lanes 2u, 2u + 1 hold the 4 keys of one Philox group)
 * needs c0 % 4 == 0: true for dense tiles (c0 = t Bc, Bc % 8 == 0), not for the end-aligned
 * varlen tile (c0 = sk - Bc), so the kDrop variant is dense only (fa_fwd_sm90.cu).
 */
#ifndef FA_FWD_SM90_DROPOUT_CUH
#define FA_FWD_SM90_DROPOUT_CUH

#include "fa_dropout.cuh"

/* Warp-collective (all 32 lanes, uniform control flow: the shuffle of warp_dropout_keep4). Zeroes
 * the dropped entries of one accumulator tile s (layout above; kept entries unscaled, the
 * epilogue multiplies by 1 / (1 - p) with 1 / l). row0: sequence-local row of s[0]; col_2t: key
 * of s[0] (c0 + 2 t4, c0 a multiple of 4). The Philox calls run in rolled loops of at most 16
 * n-blocks that collect keep bits into one 64-bit word (as warp_dropout_tile: unrolled, the
 * scheduler interleaves the 10-round bodies and the registers run out). */
template <int kNB>
static __device__ __forceinline__ void warp_dropout_tile_sm90(float (&s)[kNB * 4], uint64_t seed, uint64_t offset,
                                                             int b, int h, int row0, int col_2t, uint32_t threshold)
{
    constexpr int kChunk = kNB < 16 ? kNB : 16;  /* n-blocks per 64-bit keep word */
    static_assert(kNB % kChunk == 0, "whole keep words");
#pragma unroll
    for (int c = 0; c < kNB / kChunk; ++c) {
        uint64_t keep = 0;
#pragma unroll 1
        for (int nb = 0; nb < kChunk; ++nb) {
            const uint32_t k4 = warp_dropout_keep4(seed, offset, b, h, row0, col_2t + 8 * (kChunk * c + nb), threshold);
            keep |= (uint64_t)k4 << (4 * nb);
        }
#pragma unroll
        for (int k = 0; k < 4 * kChunk; ++k)
            if (!((keep >> k) & 1u)) s[4 * kChunk * c + k] = 0.f;
    }
}

#endif /* FA_FWD_SM90_DROPOUT_CUH */
