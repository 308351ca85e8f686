/* fa_dropout.c - the dropout keep mask on the CPU: the debug mask entry point and the factor
 * tiles the tiled kernels multiply into P. The mask entry point (and the scalar build) call
 * fa_dropout_random16 (fa_common.h), one Philox4x32-10 call per 16 consecutive keys, one byte
 * per key; the vector builds evaluate the same function on FA_VL rows at once. Either way the
 * bits are those of fa_dropout_keep() and of the CUDA kernels (the C harness checks every factor
 * against it). */
#include "fa_cpu.h"
#include "fa_simd.h"

void fa_dropout_mask_cpu(uint64_t seed, uint64_t offset, float dropout_p, int64_t batch,
                         int64_t heads, int64_t seqlen_q, int64_t seqlen_k,
                         uint8_t *mask /* (b, h, sq, sk) */)
{
    uint32_t thr;
    int64_t b, h, i, j;
    if (mask == NULL || batch < 0 || heads < 0 || seqlen_q < 0 || seqlen_k < 0) return;
    thr = fa_dropout_threshold(dropout_p);
    for (b = 0; b < batch; ++b)
        for (h = 0; h < heads; ++h)
            for (i = 0; i < seqlen_q; ++i) {
                uint8_t *row = mask + ((b * heads + h) * seqlen_q + i) * seqlen_k;
                for (j = 0; j < seqlen_k; j += 16) {
                    fa_u32x4 r = fa_dropout_random16(seed, offset, b, h, i, j >> 4);
                    int64_t t;
                    for (t = 0; t < 16 && j + t < seqlen_k; ++t)
                        row[j + t] = (uint8_t)(fa_dropout_byte(r, t) >= thr);
                }
            }
}

/* ---- Philox on FA_VL rows at once ------------------------------------------------------
 * The tile kernels need the words of many (i, j16) counters that differ only in the row i
 * (counter word y). fa_philox_rows runs FA_VL of them in the lanes of integer vectors; the
 * 32 x 32 -> 64-bit products come from the even/odd-lane widening multiply. It computes
 * exactly fa_philox4x32_10 (the harness compares every factor with fa_dropout_keep). */
#if defined(FA_SIMD_AVX512)
#include <immintrin.h>
#define FA_DROP_VEC 1
typedef __m512i fa_vu;
static inline fa_vu vu_set1(uint32_t x) { return _mm512_set1_epi32((int)x); }
static inline fa_vu vu_xor(fa_vu a, fa_vu b) { return _mm512_xor_si512(a, b); }
static inline fa_vu vu_rows(int32_t i) /* i, i + 1, ... */
{
    return _mm512_add_epi32(_mm512_set1_epi32(i),
                            _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0));
}
/* hi / lo 32 bits of a * m per lane */
static inline void vu_mulhilo(fa_vu a, uint32_t m, fa_vu *hi, fa_vu *lo)
{
    __m512i vm = _mm512_set1_epi32((int)m);
    __m512i even = _mm512_mul_epu32(a, vm);                        /* lanes 0, 2, ...: 64-bit */
    __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(a, 32), vm);  /* lanes 1, 3, ... */
    *hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 32), odd);
    *lo = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
}
/* byte (word >> shift) & 0xff >= thr ? keep : 0 */
static inline fa_vf vu_factor(fa_vu word, int shift, uint32_t thr, float keep)
{
    __m512i byte = _mm512_and_si512(_mm512_srl_epi32(word, _mm_cvtsi32_si128(shift)), _mm512_set1_epi32(0xff));
    __mmask16 k = _mm512_cmp_epu32_mask(byte, _mm512_set1_epi32((int)thr), _MM_CMPINT_NLT);
    return _mm512_maskz_mov_ps(k, _mm512_set1_ps(keep));
}
#elif defined(FA_SIMD_AVX2)
#include <immintrin.h>
#define FA_DROP_VEC 1
typedef __m256i fa_vu;
static inline fa_vu vu_set1(uint32_t x) { return _mm256_set1_epi32((int)x); }
static inline fa_vu vu_xor(fa_vu a, fa_vu b) { return _mm256_xor_si256(a, b); }
static inline fa_vu vu_rows(int32_t i)
{
    return _mm256_add_epi32(_mm256_set1_epi32(i), _mm256_set_epi32(7, 6, 5, 4, 3, 2, 1, 0));
}
static inline void vu_mulhilo(fa_vu a, uint32_t m, fa_vu *hi, fa_vu *lo)
{
    __m256i vm = _mm256_set1_epi32((int)m);
    __m256i even = _mm256_mul_epu32(a, vm);
    __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), vm);
    *hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
    *lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
}
static inline fa_vf vu_factor(fa_vu word, int shift, uint32_t thr, float keep)
{
    /* byte >= thr  <=>  !(thr > byte), both in [0, 255] so the signed compare is exact */
    __m256i byte = _mm256_and_si256(_mm256_srl_epi32(word, _mm_cvtsi32_si128(shift)), _mm256_set1_epi32(0xff));
    __m256i lt = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)thr), byte);
    return _mm256_andnot_ps(_mm256_castsi256_ps(lt), _mm256_set1_ps(keep));
}
#endif

#ifdef FA_DROP_VEC
/* the four Philox word vectors (x, y, z, w) of keys 16 j16 .. + 15 for rows i_first + lane */
static inline void fa_philox_rows(const fa_params *p, int64_t b, int64_t h, int64_t i_first, int64_t j16,
                                  fa_vu r[4])
{
    uint32_t k0 = (uint32_t)p->seed, k1 = (uint32_t)(p->seed >> 32) ^ (uint32_t)(p->offset >> 32);
    fa_vu x = vu_set1((uint32_t)j16), y = vu_rows((int32_t)(uint32_t)i_first);
    fa_vu z = vu_set1(((uint32_t)b << 16) | ((uint32_t)h & 0xffffu)), w = vu_set1((uint32_t)p->offset);
    int round;
    for (round = 0; round < 10; ++round) {
        fa_vu hi0, lo0, hi1, lo1;
        vu_mulhilo(x, FA_PHILOX_M0, &hi0, &lo0);
        vu_mulhilo(z, FA_PHILOX_M1, &hi1, &lo1);
        x = vu_xor(vu_xor(hi1, y), vu_set1(k0));
        y = lo1;
        z = vu_xor(vu_xor(hi0, w), vu_set1(k1));
        w = lo0;
        k0 += FA_PHILOX_W0;
        k1 += FA_PHILOX_W1;
    }
    r[0] = x;
    r[1] = y;
    r[2] = z;
    r[3] = w;
}
#endif

void fa_dropout_tile(const fa_params *p, int64_t b, int64_t h, int64_t i0, int64_t ni, int64_t j0,
                     int64_t nj, float *z, int64_t ldz, int transposed)
{
    uint32_t thr = fa_dropout_threshold(p->dropout_p);
    float keep = fa_dropout_rescale(p->dropout_p);
    int64_t ii = 0, j;
#ifdef FA_DROP_VEC
    /* FA_VL rows at a time; the transposed tile takes whole vectors (its row length ldz is a
     * multiple of FA_VL, lanes past ni are padding the caller ignores), the other layout
     * scatters the lanes of the rows that exist */
    for (; ii < ni; ii += FA_VL) {
        for (j = j0 & ~(int64_t)15; j < j0 + nj; j += 16) {
            fa_vu r[4];
            int64_t t;
            fa_philox_rows(p, b, h, i0 + ii, j >> 4, r);
            for (t = 0; t < 16; ++t) {
                int64_t jj = j + t - j0;
                fa_vf f;
                if (jj < 0 || jj >= nj) continue;
                f = vu_factor(r[t >> 2], 8 * (int)(t & 3), thr, keep);
                if (transposed) {
                    fa_vstore(z + jj * ldz + ii, f);
                } else {
                    float lanes[FA_VL];
                    int64_t l;
                    fa_vstore(lanes, f);
                    for (l = 0; l < FA_VL && ii + l < ni; ++l) z[(ii + l) * ldz + jj] = lanes[l];
                }
            }
        }
    }
#else
    for (; ii < ni; ++ii) {
        /* start at the 16-aligned group containing j0 so the Philox bytes line up */
        for (j = j0 & ~(int64_t)15; j < j0 + nj; j += 16) {
            fa_u32x4 r = fa_dropout_random16(p->seed, p->offset, b, h, i0 + ii, j >> 4);
            int64_t t;
            for (t = 0; t < 16; ++t) {
                int64_t jj = j + t - j0;
                float f;
                if (jj < 0 || jj >= nj) continue;
                f = fa_dropout_byte(r, t) >= thr ? keep : 0.0f;
                if (transposed) z[jj * ldz + ii] = f;
                else z[ii * ldz + jj] = f;
            }
        }
    }
#endif
}
