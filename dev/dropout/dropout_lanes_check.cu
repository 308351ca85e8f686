/* dropout_lanes_check.cu - runs the per-lane steps of warp_dropout_keep32 (fa_dropout.cuh) for
 * 32 emulated lanes on the CPU, the two quad shuffles done by hand, and checks every keep bit
 * against fa_dropout_keep (fa_common.h), the definition the CPU backend uses. No GPU needed:
 *   nvcc -std=c++17 $(python3 csrc/build_flags.py includes .) -o /tmp/dropout_lanes \
 *        dev/dropout/dropout_lanes_check.cu && /tmp/dropout_lanes
 * Covers: the byte compare for every (byte, threshold) pair; thresholds 0, 1, 127, 128, 255 and
 * random ones; tiles at several rows / 16-aligned columns; the 64-bit word of
 * warp_dropout_keep_tile for the (kMT, kNB) shapes of the sm80 and sm90 kernels; the Philox of
 * thread_dropout_random16 (the kernels' Philox, 32-bit products) against fa_dropout_random16 word
 * for word; the sm90 forward's path (warp_dropout_keep32<true>'s words in the high layout,
 * thread_dropout_pair_mask's packed-P masks, fa_fwd_sm90_dropout.cuh) against fa_dropout_keep of
 * the elements they cover.
 * Host code: it runs the portable branches of fa_umulhi32, fa_byte_sign_perm and fa_rotl32, not
 * __umulhi, PRMT and the funnel shift; the device branches are covered by the GPU mask tests
 * (tests/test_sm90_dropout.py, sm90_check -k drop).
 */
#include <stdio.h>
#include <stdint.h>
#include "fa_dropout.cuh"
#include "fa_fwd_sm90_dropout.cuh"

static uint64_t g_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd64(void)
{
    g_state ^= g_state << 13;
    g_state ^= g_state >> 7;
    g_state ^= g_state << 17;
    return g_state;
}

/* the keep word of one m-tile x 4 n-blocks for each of the 32 lanes, as the warp computes it
 * (warp_dropout_keep32<hi>); philox32: thread_dropout_random16 instead of fa_dropout_random16 (the
 * same bits), hi: the sm90 forward's high layout */
static void emulate_keep32(uint64_t seed, uint64_t offset, int b, int h, int row_tile, int col16, uint32_t t,
                           uint32_t z[32], int philox32, int hi)
{
    uint32_t x[32], y[32];
    for (int l = 0; l < 32; ++l) {
        const int g = l >> 2, t4 = l & 3;
        const int i = row_tile + g + 8 * (t4 & 1), j16 = (col16 >> 4) + (t4 >> 1);
        const fa_u32x4 r = philox32 ? thread_dropout_random16(seed, offset, b, h, i, j16)
                                    : fa_dropout_random16(seed, offset, b, h, i, j16);
        x[l] = hi ? thread_dropout_flags16_hi(r, t) : thread_dropout_flags16(r, t);
    }
    for (int l = 0; l < 32; ++l) y[l] = thread_dropout_merge_rows(x[l], x[l ^ 1], l & 3);
    for (int l = 0; l < 32; ++l)
        z[l] = hi ? thread_dropout_merge_cols_hi(y[l], y[l ^ 2], l & 3) : thread_dropout_merge_cols(y[l], y[l ^ 2], l & 3);
}

int main(void)
{
    long long bad = 0, checked = 0;
    /* the SWAR byte compare, every byte value against every threshold */
    for (uint32_t t = 0; t < 256; ++t)
        for (uint32_t v = 0; v < 256; v += 4) {
            const uint32_t x = v | (v + 1) << 8 | (v + 2) << 16 | (v + 3) << 24;
            const uint32_t ge = thread_dropout_ge_bytes(x, t);
            for (int k = 0; k < 4; ++k) {
                const uint32_t want = (v + k >= t) ? 0x80u << (8 * k) : 0u;
                bad += (ge & (0xffu << (8 * k))) != want;
                ++checked;
            }
        }
    printf("byte compare: %lld of %lld wrong\n", bad, checked);

    /* thread_dropout_random16 (32-bit products) == fa_dropout_random16, every word */
    long long bad_philox = 0;
    for (int trial = 0; trial < 200000; ++trial) {
        const uint64_t seed = rnd64(), offset = rnd64(), u = rnd64();
        const int b = (int)(u & 0xffff), h = (int)((u >> 16) & 0xffff), i = (int)((u >> 32) & 0x7fffff);
        const int j16 = (int)(rnd64() & 0xfffff);
        const fa_u32x4 r = fa_dropout_random16(seed, offset, b, h, i, j16);
        const fa_u32x4 q = thread_dropout_random16(seed, offset, b, h, i, j16);
        bad_philox += r.x != q.x || r.y != q.y || r.z != q.z || r.w != q.w;
    }
    printf("Philox with 32-bit products: %lld of 200000 calls differ\n", bad_philox);
    bad += bad_philox;

    const uint32_t fixed_t[] = {0, 1, 26, 127, 128, 129, 230, 255};
    long long bad_tile = 0, tiles = 0, checked_bits = 0;
    for (int trial = 0; trial < 400; ++trial) {
        const uint64_t seed = rnd64(), offset = rnd64();
        const int b = (int)(rnd64() % 5), h = (int)(rnd64() % 40);
        const uint32_t t = trial < 8 ? fixed_t[trial] : (uint32_t)(rnd64() % 256);
        const int row_tile = 16 * (int)(rnd64() % 300), col0 = 16 * (int)(rnd64() % 600);
        /* the (kMT, kNB) shapes of the callers: sm80 forward (2, 4) (2, 8) (1, 8) (1, 4), sm80
         * backward (2, 4) (1, 8) (1, 4), sm90 (1, 16) (1, 10) */
        const int shapes[6][2] = {{2, 4}, {2, 8}, {1, 8}, {1, 4}, {1, 16}, {1, 10}};
        const int kMT = shapes[trial % 6][0], kNB = shapes[trial % 6][1], kChunks = (kNB + 3) / 4;
        /* warp_dropout_keep_tile: kMT * kChunks calls of warp_dropout_keep32 */
        uint64_t keep[32] = {0};
        for (int c = 0; c < kMT * kChunks; ++c) {
            uint32_t z[32];
            const int mt = c / kChunks, chunk = c - mt * kChunks;
            emulate_keep32(seed, offset, b, h, row_tile + 16 * mt, col0 + 32 * chunk, t, z, trial & 1, 0);
            for (int l = 0; l < 32; ++l)
                keep[l] |= (uint64_t)(z[l] & 0x0f0f0f0fu) << (32 * (c >> 1) + 4 * (c & 1));
        }
        for (int l = 0; l < 32; ++l) {
            const int g = l >> 2, t4 = l & 3;
            for (int mt = 0; mt < kMT; ++mt)
                for (int nb = 0; nb < kNB; ++nb)
                    for (int half = 0; half < 2; ++half)
                        for (int e = 0; e < 2; ++e) {
                            const int i = row_tile + 16 * mt + g + 8 * half, j = col0 + 8 * nb + 2 * t4 + e;
                            const int want = fa_dropout_keep(seed, offset, b, h, i, j, t);
                            const int bit = kNB == 4    ? fa_dropout_keep_bit<4>(mt, nb, half, e)
                                            : kNB == 8  ? fa_dropout_keep_bit<8>(mt, nb, half, e)
                                            : kNB == 10 ? fa_dropout_keep_bit<10>(mt, nb, half, e)
                                                        : fa_dropout_keep_bit<16>(mt, nb, half, e);
                            bad_tile += (int)((keep[l] >> bit) & 1u) != want;
                            ++checked_bits;
                        }
        }
        ++tiles;
    }
    printf("warp_dropout_keep_tile emulation: %lld wrong of %lld bits over %lld tiles\n", bad_tile, checked_bits,
           tiles);
    /* the sm90 forward: fa_sm90_keep words from warp_dropout_keep32<true> (Bc = 128: 16 n-blocks, 4
     * calls; Bc = 80: 10 n-blocks, 3 calls) and thread_dropout_packed_sm90's masks: register
     * pa[kk][q] holds accumulator elements s[8 kk + 2 q + e] (thread_pack_p), element k being
     * (n-block k >> 2, row half (k >> 1) & 1, e = k & 1); its mask must be 0xffff in half e iff
     * fa_dropout_keep keeps that element */
    long long bad_mask = 0, masks = 0;
    for (int trial = 0; trial < 400; ++trial) {
        const uint64_t seed = rnd64(), offset = rnd64();
        const int b = (int)(rnd64() % 5), h = (int)(rnd64() % 40);
        const uint32_t t = trial < 8 ? fixed_t[trial] : (uint32_t)(rnd64() % 256);
        const int row_tile = 16 * (int)(rnd64() % 300), col0 = 16 * (int)(rnd64() % 600);
        const int kNB = trial & 1 ? 10 : 16;
        fa_sm90_keep<16> k16[32];
        fa_sm90_keep<10> k10[32];
        for (int c = 0; c < (kNB + 3) / 4; ++c) {
            uint32_t z[32];
            emulate_keep32(seed, offset, b, h, row_tile, col0 + 32 * c, t, z, 1, 1);
            for (int l = 0; l < 32; ++l) {
                if (kNB == 16) k16[l].w[c] = z[l];
                else k10[l].w[c] = z[l];
            }
        }
        for (int l = 0; l < 32; ++l) {
            const int g = l >> 2, t4 = l & 3;
            for (int kk = 0; kk < kNB / 2; ++kk)
                for (int q = 0; q < 4; ++q) {
                    const uint32_t m = kNB == 10 ? thread_dropout_pair_mask<10>(k10[l], 2 * kk + (q >> 1), q & 1)
                                                 : thread_dropout_pair_mask<16>(k16[l], 2 * kk + (q >> 1), q & 1);
                    uint32_t want = 0;
                    for (int e = 0; e < 2; ++e) {
                        const int k = 8 * kk + 2 * q + e, nb = k >> 2, half = (k >> 1) & 1;
                        const int i = row_tile + g + 8 * half, j = col0 + 8 * nb + 2 * t4 + (k & 1);
                        if (fa_dropout_keep(seed, offset, b, h, i, j, t)) want |= 0xffffu << (16 * e);
                    }
                    bad_mask += m != want;
                    ++masks;
                }
        }
    }
    printf("sm90 high-layout keep words -> packed-P masks: %lld wrong of %lld\n", bad_mask, masks);
    /* the bit positions of one keep word never collide (kMT = 2, kNB = 8: all 64 bits) */
    int collide = 0;
    for (int u = 0; u < 64; ++u)
        for (int v = 0; v < 64; ++v)
            if (u != v && fa_dropout_keep_bit<8>(u >> 5, (u >> 2) & 7, (u >> 1) & 1, u & 1) ==
                              fa_dropout_keep_bit<8>(v >> 5, (v >> 2) & 7, (v >> 1) & 1, v & 1))
                ++collide;
    printf("keep-bit collisions: %d\n", collide);
    const int ok = bad == 0 && bad_tile == 0 && bad_mask == 0 && collide == 0;
    printf("%s\n", ok ? "PASS" : "FAIL");
    return ok ? 0 : 1;
}
