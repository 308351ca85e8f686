/* fa_dropout.cuh - dropout keep bits on register tiles, bit-identical to the CPU backend.
 *
 * The keep bit of (b, h, i, j) is fa_dropout_keep() of fa_common.h: one Philox4x32-10 call gives
 * the random bytes of the 16 keys 16 (j >> 4) .. + 15 of row i, key j keeps iff its byte >= the
 * byte threshold t. In the mma.sync C layout (fa_mma.cuh) lane 4 g + t4 holds columns 2 t4, +1 of
 * every 8-column n-block, rows g and g + 8. So the quad of lanes 4 g .. 4 g + 3 holds, over 4
 * n-blocks (32 columns = two 16-key groups), rows g and g + 8: 2 x 2 Philox groups, one per lane.
 * warp_dropout_keep32 lets lane t4 draw the group (row g + 8 (t4 & 1), 16-key block t4 >> 1),
 * compares its 16 bytes with t (4 SIMD-within-a-register compares), and two quad shuffles hand
 * every lane the 16 bits of its own elements. That is one Philox call per 16 elements, the
 * minimum, where the 32-bit word per key before cost one call per 4.
 *
 * The per-lane steps are __host__ __device__ (thread_dropout_*) so that
 * dev/dropout/dropout_lanes_check.cu runs them for 32 emulated lanes on the CPU against
 * fa_dropout_keep.
 */
#ifndef FA_DROPOUT_CUH
#define FA_DROPOUT_CUH

#include <stdint.h>
#include "fa_common.h"

#define FA_DROP_HD static __host__ __device__ __forceinline__
/* nvcc's device pass: the PRMT / LOP3 intrinsics; otherwise (host, the dev/bwd CPU simulator,
 * which defines __CUDA_ARCH__ for g++) the portable C. */
#if defined(__CUDA_ARCH__) && defined(__NVCC__)
#define FA_DROP_SASS 1
#endif

/* __byte_perm(a, b, sel): byte k of the result is byte (sel >> 4 k) & 7 of the 8 bytes b:a. */
FA_DROP_HD uint32_t fa_byte_perm(uint32_t a, uint32_t b, uint32_t sel)
{
#ifdef FA_DROP_SASS
    return __byte_perm(a, b, sel);
#else
    const uint64_t v = ((uint64_t)b << 32) | a;
    uint32_t r = 0;
    for (int k = 0; k < 4; ++k) r |= (uint32_t)((v >> (8 * ((sel >> (4 * k)) & 7))) & 0xffu) << (8 * k);
    return r;
#endif
}

/* Per-thread: bit 7 of byte k of the result = (byte k of x >= t), every other bit 0. t in
 * [0, 255]. The low 7 bits compare through d = x_lo7 + (0x80 - t_lo7) (no carry leaves a byte);
 * with xh = the top bits of x, x >= t is xh | d7 when t < 128 and xh & d7 when t >= 128, which
 * the last LOP3 selects through tsel's bit 7 (its other bits are 1, so they give 0). */
FA_DROP_HD uint32_t thread_dropout_ge_bytes(uint32_t x, uint32_t t)
{
    const uint32_t c = (0x80u - (t & 0x7fu)) * 0x01010101u;
    const uint32_t tsel = (t & 0x80u) ? 0xffffffffu : 0x7f7f7f7fu;
    const uint32_t xh = x & 0x80808080u;
    const uint32_t d = x - xh + c;
#ifdef FA_DROP_SASS
    /* one LOP3 (ptxas otherwise rebuilt it from x in three) */
    uint32_t ge;
    asm("lop3.b32 %0, %1, %2, %3, 0xd4;" : "=r"(ge) : "r"(xh), "r"(d), "r"(tsel));
    return ge;
#else
    return (xh & d) | ((xh | d) & ~tsel);
#endif
}

/* Per-thread: the 16 keep bits of one Philox group r (fa_dropout_random16), key jj = 4 k + b at
 * bit 8 b + k (byte b, bit k). The four words' bits are disjoint, so + is |; ptxas folds a shift
 * into each add (LEA.HI: one SHF + three LEA.HI where | took four SHF + two LOP3). */
FA_DROP_HD uint32_t thread_dropout_flags16(fa_u32x4 r, uint32_t t)
{
    return (thread_dropout_ge_bytes(r.x, t) >> 7) + (thread_dropout_ge_bytes(r.y, t) >> 6) +
           (thread_dropout_ge_bytes(r.z, t) >> 5) + (thread_dropout_ge_bytes(r.w, t) >> 4);
}

/* Per-thread, after the xor-1 shuffle: lane t4 holds x (its group: row half t4 & 1, 16-key
 * block t4 >> 1) and x1 (the partner's: the other row half, same block). Lane t4 needs the keys
 * jj = 2 t4 + e + 8 hi (e, hi in 0..1) of every group, i.e. bytes 2 (t4 & 1) + e, bits
 * (t4 >> 1) + 2 hi: keep bytes 2 (t4 & 1), +1 of both, as byte 2 half + e (half = row half). */
FA_DROP_HD uint32_t thread_dropout_merge_rows(uint32_t x, uint32_t x1, int t4)
{
    return fa_byte_perm(x, x1, (t4 & 1) ? 0x3276u : 0x5410u);
}

/* Per-thread, after the xor-2 shuffle: y from thread_dropout_merge_rows (block cg = t4 >> 1),
 * y2 the partner's (block 1 - cg). The lane's bits sit at bit cg + 2 hi of each byte in both;
 * the partner's move to bit (1 - cg) + 2 hi. Result: byte 2 half + e, bit cg + 2 hi holds the
 * element of row half `half`, column 8 (2 cg + hi) + 2 t4 + e (fa_dropout_bit); other bits are
 * garbage. */
FA_DROP_HD uint32_t thread_dropout_merge_cols(uint32_t y, uint32_t y2, int t4)
{
    const int cg = t4 >> 1;
    const uint32_t mine = 0x05050505u << cg;
    const uint32_t moved = (y2 << 1) >> (2 * cg);
    return (y & mine) | (moved & ~mine);
}

/* The "high" layout of the sm90 forward (warp_dropout_keep32<true>): thread_dropout_flags16's bits
 * 4 higher, key jj = 4 k + b at bit 8 b + 4 + k, so that key k = 3 sits at the byte's bit 7
 * already (r.w's compare needs no shift) and the merged word needs no nibble mask before the
 * sign-replicate masks of fa_fwd_sm90_dropout.cuh (bits 0..3 stay 0 through the row merge; the
 * column merge leaves garbage there, which the masks never read). */
FA_DROP_HD uint32_t thread_dropout_flags16_hi(fa_u32x4 r, uint32_t t)
{
    return (thread_dropout_ge_bytes(r.x, t) >> 3) + (thread_dropout_ge_bytes(r.y, t) >> 2) +
           (thread_dropout_ge_bytes(r.z, t) >> 1) + thread_dropout_ge_bytes(r.w, t);
}

/* Rotate left by s in 1..31. */
FA_DROP_HD uint32_t fa_rotl32(uint32_t x, int s)
{
#ifdef FA_DROP_SASS
    return __funnelshift_l(x, x, s);
#else
    return (x << s) | (x >> (32 - s));
#endif
}

/* thread_dropout_merge_cols for the high layout: the lane's bits at 4 + cg + 2 hi, the partner's
 * moved to 4 + (1 - cg) + 2 hi by one rotate (left 1 for cg = 0, right 1 for cg = 1; a bit that
 * crosses a byte lands in bits 0..3 or under `mine`). Result: byte 2 half + e, bit 4 + cg + 2 hi
 * holds the element of row half `half`, column 8 (2 cg + hi) + 2 t4 + e; bits 0..3 are garbage. */
FA_DROP_HD uint32_t thread_dropout_merge_cols_hi(uint32_t y, uint32_t y2, int t4)
{
    const int cg = t4 >> 1;
    const uint32_t mine = 0x50505050u << cg;
    const uint32_t moved = fa_rotl32(y2, cg ? 31 : 1);
    return (y & mine) | (moved & ~mine);
}

/* Byte k of the result is 0xff if bit 7 of byte (sel >> 4 k) & 3 of x is set, else 0 (sel's
 * nibbles 8 | byte: PRMT's sign-replicate selectors, which __byte_perm masks off). Only selectors
 * of bytes 0..3 (x's own) are valid: PRMT's bytes 4..7 are the zero second operand, which the host
 * form's "& 3" would misread as x's. */
FA_DROP_HD uint32_t fa_byte_sign_perm(uint32_t x, uint32_t sel)
{
#ifdef FA_DROP_SASS
    uint32_t r;
    asm("prmt.b32 %0, %1, 0, %2;" : "=r"(r) : "r"(x), "r"(sel));
    return r;
#else
    uint32_t r = 0;
    for (int k = 0; k < 4; ++k)
        if ((x >> (8 * ((sel >> (4 * k)) & 3) + 7)) & 1u) r |= 0xffu << (8 * k);
    return r;
#endif
}

/* The upper 32 bits of the 64-bit product a b. */
FA_DROP_HD uint32_t fa_umulhi32(uint32_t a, uint32_t b)
{
#ifdef FA_DROP_SASS
    return __umulhi(a, b);
#else
    return (uint32_t)(((uint64_t)a * b) >> 32);
#endif
}

/* Per-thread: fa_dropout_random16 (fa_common.h) with the Philox products as 32-bit halves
 * (fa_umulhi32 and the low multiply), the same bits (dev/dropout/dropout_lanes_check.cu compares
 * them). fa_philox4x32_10's 64-bit products kept the rounds' xors 64-bit in the PTX, and ptxas
 * added each product's zero upper word back: a VIADD per product, 20 of a call's ~100 SASS
 * instructions. Every CUDA kernel that draws keep bits calls this one (warp_dropout_keep32);
 * fa_dropout_random16 stays the CPU backend's (and the debug mask kernel's) definition. */
FA_DROP_HD fa_u32x4 thread_dropout_random16(uint64_t seed, uint64_t offset, int b, int h, int i, int j16)
{
    uint32_t x = (uint32_t)j16, y = (uint32_t)i, z = ((uint32_t)b << 16) | ((uint32_t)h & 0xffffu);
    uint32_t w = (uint32_t)offset;
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32) ^ (uint32_t)(offset >> 32);
#pragma unroll
    for (int round = 0; round < 10; ++round) {
        const uint32_t hi0 = fa_umulhi32(FA_PHILOX_M0, x), lo0 = FA_PHILOX_M0 * x;
        const uint32_t hi1 = fa_umulhi32(FA_PHILOX_M1, z), lo1 = FA_PHILOX_M1 * z;
        x = hi1 ^ y ^ k0;
        y = lo1;
        z = hi0 ^ w ^ k1;
        w = lo0;
        k0 += FA_PHILOX_W0;
        k1 += FA_PHILOX_W1;
    }
    fa_u32x4 r;
    r.x = x;
    r.y = y;
    r.z = z;
    r.w = w;
    return r;
}

/* Bit of the element (n-block nb in 0..3, row half, column offset e) in the keep word of
 * warp_dropout_keep32, lane-independent. */
FA_DROP_HD constexpr int fa_dropout_bit(int nb, int half, int e)
{
    return 16 * half + 8 * e + (nb >> 1) + 2 * (nb & 1);
}

/* Warp-collective (all 32 lanes, uniform control flow: two quad shuffles). Keep bits of one
 * m-tile x 4 n-blocks of a C-layout tile: rows row_g, row_g + 8 (row_g = tile row + g,
 * sequence-local), columns col16 + 8 nb + 2 t4 + e, col16 a multiple of 16 (keys past the tile
 * are drawn but not read). Bit fa_dropout_bit(nb, half, e) = keep; the other bits are garbage.
 * t = fa_dropout_threshold (byte). The Philox of thread_dropout_random16 (fa_dropout_random16's
 * bits). kHi: the sm90 forward's high layout (thread_dropout_flags16_hi): bit 4 +
 * fa_dropout_bit(nb, half, e) holds the keep bit, bits 0..3 of each byte are garbage. */
template <bool kHi = false>
static __device__ __forceinline__ uint32_t warp_dropout_keep32(uint64_t seed, uint64_t offset, int b, int h,
                                                               int row_g, int col16, uint32_t t)
{
    const int t4 = threadIdx.x & 3;
    const int i = row_g + 8 * (t4 & 1), j16 = (col16 >> 4) + (t4 >> 1);
    const fa_u32x4 r = thread_dropout_random16(seed, offset, b, h, i, j16);
    const uint32_t x = kHi ? thread_dropout_flags16_hi(r, t) : thread_dropout_flags16(r, t);
    const uint32_t y = thread_dropout_merge_rows(x, __shfl_xor_sync(0xffffffffu, x, 1), t4);
    const uint32_t y2 = __shfl_xor_sync(0xffffffffu, y, 2);
    return kHi ? thread_dropout_merge_cols_hi(y, y2, t4) : thread_dropout_merge_cols(y, y2, t4);
}

/* Keep words of warp_dropout_keep_tile: call c (0..3) covers m-tile c / kChunks, n-blocks
 * 4 (c % kChunks) .. + 3 (kChunks = ceil(kNB / 4)); its word is masked to its low nibbles and
 * shifted by 32 (c >> 1) + 4 (c & 1) into one 64-bit word. The bit of element (m-tile mt,
 * n-block nb, row half, column offset e): */
template <int kNB>
FA_DROP_HD constexpr int fa_dropout_keep_bit(int mt, int nb, int half, int e)
{
    return 32 * (((kNB + 3) / 4 * mt + nb / 4) >> 1) + 4 * (((kNB + 3) / 4 * mt + nb / 4) & 1) +
           fa_dropout_bit(nb & 3, half, e);
}

/* Warp-collective: the keep bits of kMT m-tiles x kNB n-blocks (kNB even, at most 4 calls of
 * warp_dropout_keep32 in all), rows row0 + 16 mt + 8 half, columns col0 + 8 nb + 2 t4 + e with
 * col0 a multiple of 16, as one 64-bit word (fa_dropout_keep_bit). The Philox calls run in one
 * rolled loop over the m-tiles and 4-n-block chunks (a last pair of n-blocks takes a whole
 * call): unrolled, the scheduler interleaves the 10-round bodies and the registers run out. */
template <int kMT, int kNB>
static __device__ __forceinline__ uint64_t warp_dropout_keep_tile(uint64_t seed, uint64_t offset, int b, int h,
                                                                 int row0, int col0, uint32_t t)
{
    constexpr int kChunks = (kNB + 3) / 4;
    static_assert(kNB % 2 == 0 && kMT * kChunks <= 4, "pairs of n-blocks, 64 keep bits");
    uint64_t keep = 0;
#pragma unroll 1
    for (int c = 0; c < kMT * kChunks; ++c) {
        const int mt = c / kChunks, chunk = c - mt * kChunks;
        const uint32_t z =
            warp_dropout_keep32(seed, offset, b, h, row0 + 16 * mt, col0 + 32 * chunk, t) & 0x0f0f0f0fu;
        keep |= (uint64_t)z << (32 * (c >> 1) + 4 * (c & 1));
    }
    return keep;
}

/* Warp-collective: zeroes the dropped entries of p[kMT][kNB][4] (C layout, see fa_mask.cuh for
 * row0; col0 = the tile's first column, a multiple of 16). Kept entries are left unscaled; the
 * caller applies fa_dropout_rescale once. */
template <int kMT, int kNB>
static __device__ __forceinline__ void warp_dropout_tile(float (*p)[kNB][4], uint64_t seed, uint64_t offset,
                                                        int b, int h, int row0, int col0, uint32_t threshold)
{
    const uint64_t keep = warp_dropout_keep_tile<kMT, kNB>(seed, offset, b, h, row0, col0, threshold);
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int nb = 0; nb < kNB; ++nb)
#pragma unroll
            for (int e = 0; e < 4; ++e)
                if (!((keep >> fa_dropout_keep_bit<kNB>(mt, nb, e >> 1, e & 1)) & 1u)) p[mt][nb][e] = 0.f;
}

#endif /* FA_DROPOUT_CUH */
