/* fa_fwd_sm90_dropout.cuh - dropout on P in the wgmma accumulator layout (the Hopper forward's
 * kDrop variant, fa_fwd_sm90_consumer.cuh), bit-identical to the CPU backend and the sm80 kernels.
 *
 * Element -> random byte: the keep bit of (b, h, i, j) is fa_dropout_keep() of fa_common.h, one
 * Philox4x32-10 call per 16 keys 16 (j >> 4) .. + 15 of row i, one byte each (b = sequence, h =
 * query head, i / j sequence-local). The wgmma m64nNk16 accumulator (fa_fwd_sm90_math.cuh) gives
 * warp wq of a warpgroup the mma.sync C layout per 8-column n-block: s[4 nb + 2 half + e] is row
 * row0 + 8 half, key c0 + 2 t4 + 8 nb + e (row0 = m0 + 64 wg + 16 wq + g), lane = 4 g + t4. So
 * warp_dropout_keep_tile (fa_dropout.cuh) draws the bits of the warp's 16 rows x Bc keys: lane t4
 * of each quad draws one 16-key group per 4 n-blocks (rows g, g + 8 x two 16-key blocks) and two
 * quad shuffles hand each lane its 16 bits; s[4 nb + k] is bit fa_dropout_keep_bit<kNB>(0, nb,
 * k >> 1, k & 1). The groups need c0 % 16 == 0: true for dense tiles (c0 = t Bc, Bc % 16 == 0), not for
 * the end-aligned varlen tile (c0 = sk - Bc), so the kDrop variant is dense only (fa_fwd_sm90.cu).
 * Bc = 80 (d = 256): 10 n-blocks = 2 calls of 4 n-blocks + 1 call whose upper 16 keys go unused.
 */
#ifndef FA_FWD_SM90_DROPOUT_CUH
#define FA_FWD_SM90_DROPOUT_CUH

#include "fa_dropout.cuh"

/* Warp-collective (all 32 lanes, uniform control flow: the quad shuffles of warp_dropout_keep32).
 * Zeroes the dropped entries of one accumulator tile s (layout above; kept entries unscaled, the
 * epilogue multiplies by fa_dropout_rescale with 1 / l). row0: sequence-local row of s[0]; c0:
 * the tile's first key (a multiple of 16). The Philox calls run in a rolled loop that collects
 * the keep bits into one 64-bit word (warp_dropout_keep_tile: unrolled, the scheduler interleaves
 * the 10-round bodies and the registers run out). kPhilox32: the Philox of thread_dropout_random16
 * (fa_dropout.cuh; same bits, 79 instead of 101 SASS instructions a call at d = 128), for now only
 * in the DROP instance. */
template <int kNB, bool kPhilox32 = false>
static __device__ __forceinline__ void warp_dropout_tile_sm90(float (&s)[kNB * 4], uint64_t seed, uint64_t offset,
                                                             int b, int h, int row0, int c0, uint32_t threshold)
{
    const uint64_t keep = warp_dropout_keep_tile<1, kNB, kPhilox32>(seed, offset, b, h, row0, c0, threshold);
#pragma unroll
    for (int k = 0; k < 4 * kNB; ++k)
        if (!((keep >> fa_dropout_keep_bit<kNB>(0, k >> 2, (k >> 1) & 1, k & 1)) & 1u)) s[k] = 0.f;
}

#endif /* FA_FWD_SM90_DROPOUT_CUH */
