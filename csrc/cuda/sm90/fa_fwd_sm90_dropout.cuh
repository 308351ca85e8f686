/* fa_fwd_sm90_dropout.cuh - dropout on P in the wgmma accumulator layout (the Hopper forward's
 * kDrop variant, fa_fwd_sm90_consumer.cuh), bit-identical to the CPU backend and the sm80 kernels.
 *
 * Element -> random byte: the keep bit of (b, h, i, j) is fa_dropout_keep() of fa_common.h, one
 * Philox4x32-10 call per 16 keys 16 (j >> 4) .. + 15 of row i, one byte each (b = sequence, h =
 * query head, i / j sequence-local). The wgmma m64nNk16 accumulator (fa_fwd_sm90_math.cuh) gives
 * warp wq of a warpgroup the mma.sync C layout per 8-column n-block: s[4 nb + 2 half + e] is row
 * row0 + 8 half, key c0 + 2 t4 + 8 nb + e (row0 = m0 + 64 wg + 16 wq + g), lane = 4 g + t4. So
 * warp_dropout_keep32<true> (fa_dropout.cuh) draws the bits of the warp's 16 rows x 32 keys: lane t4
 * of each quad draws one 16-key group per 4 n-blocks (rows g, g + 8 x two 16-key blocks) and two
 * quad shuffles hand each lane its 16 bits; s[4 nb + k] is bit fa_sm90_drop_bit(nb, k >> 1,
 * k & 1) of keep word nb >> 2. The groups need c0 % 16 == 0: true for dense tiles (c0 = t Bc, Bc % 16 == 0), not for
 * the end-aligned varlen tile (c0 = sk - Bc), so the kDrop variant is dense only (fa_fwd_sm90.cu).
 * Bc = 80 (d = 256): 10 n-blocks = 2 calls of 4 n-blocks + 1 call whose upper 16 keys go unused.
 * The keep bits are applied to P after its conversion to 16 bits (thread_dropout_packed_sm90),
 * two elements per register.
 */
#ifndef FA_FWD_SM90_DROPOUT_CUH
#define FA_FWD_SM90_DROPOUT_CUH

#include "fa_dropout.cuh"

/* Keep words of one accumulator tile: word nb >> 2 (one warp_dropout_keep32<true> call per 4
 * n-blocks), the element (nb, half, e) at bit fa_sm90_drop_bit. */
template <int kNB>
struct fa_sm90_keep {
    uint32_t w[(kNB + 3) / 4];
};

FA_DROP_HD constexpr int fa_sm90_drop_bit(int nb, int half, int e)
{
    return 4 + fa_dropout_bit(nb & 3, half, e);
}

/* Warp-collective (all 32 lanes, uniform control flow: the quad shuffles of
 * warp_dropout_keep32<true>). The keep bits of one accumulator tile (layout above): s[4 nb + k] is
 * kept iff bit fa_sm90_drop_bit(nb, k >> 1, k & 1) of word nb >> 2 is set. row0: sequence-local
 * row of s[0]; c0: the tile's first key (a multiple of 16). The kNB / 4 calls are unrolled (a
 * rolled loop's counter, column and variable-shift insert cost ~15 SASS instructions a call, and
 * ptxas interleaves the unrolled Philox rounds with the softmax's exp2 within the consumer's
 * register budget: 0 spills at d = 64 with 160 registers). The high layout (fa_dropout.cuh) puts
 * n-block 3 of each call at the bytes' bit 7 and needs no nibble packing. */
template <int kNB>
static __device__ __forceinline__ void warp_dropout_keep_sm90(fa_sm90_keep<kNB> &keep, uint64_t seed, uint64_t offset,
                                                             int b, int h, int row0, int c0, uint32_t threshold)
{
#pragma unroll
    for (int c = 0; c < (kNB + 3) / 4; ++c)
        keep.w[c] = warp_dropout_keep32<true>(seed, offset, b, h, row0, c0 + 32 * c, threshold);
}

/* Per-thread: the AND mask of the packed P register that holds the elements (nb, half, e = 0)
 * (low 16 bits) and (nb, half, e = 1) (high 16 bits): 0xffff in each half whose element is kept.
 * Their keep bits sit at bit p of bytes 2 half and 2 half + 1 of word nb >> 2 (fa_sm90_drop_bit);
 * a shift by 7 - p (none for nb % 4 = 3) moves them to the bytes' bit 7, which PRMT's
 * sign-replicate selectors spread over 16 bits each. The shift is shared by the two row halves. */
template <int kNB>
static __host__ __device__ __forceinline__ uint32_t thread_dropout_pair_mask(const fa_sm90_keep<kNB> &keep, int nb,
                                                                           int half)
{
    const int p = fa_sm90_drop_bit(nb, half, 0) & 7, byte = 2 * half;
    const uint32_t w = keep.w[nb >> 2] << (7 - p);
    return fa_byte_sign_perm(w, 0x8888u | (uint32_t)byte * 0x11u | (uint32_t)(byte + 1) * 0x1100u);
}

/* Per-thread: zeroes the dropped elements of the packed P (thread_pack_p of
 * fa_fwd_sm90_math.cuh: pa[kk][q] = s[8 kk + 2 q], s[8 kk + 2 q + 1] in its low / high 16 bits,
 * i.e. n-block nb = 2 kk + (q >> 1), row half q & 1, e = 0 / 1) with the keep words of
 * warp_dropout_keep_sm90: one AND per register, its mask one PRMT (+ one shift per n-block),
 * where zeroing the fp32 P cost a predicate and a select per element. Kept entries are left
 * unscaled (the epilogue multiplies by fa_dropout_rescale with 1 / l); l_i summed the undropped
 * P before the pack. */
template <int Bc>
static __device__ __forceinline__ void thread_dropout_packed_sm90(uint32_t (&pa)[Bc / 16][4],
                                                                 const fa_sm90_keep<Bc / 8> &keep)
{
#pragma unroll
    for (int kk = 0; kk < Bc / 16; ++kk)
#pragma unroll
        for (int q = 0; q < 4; ++q) pa[kk][q] &= thread_dropout_pair_mask<Bc / 8>(keep, 2 * kk + (q >> 1), q & 1);
}

#endif /* FA_FWD_SM90_DROPOUT_CUH */
