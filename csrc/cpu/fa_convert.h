/* fa_convert.h - fp16 / bf16 <-> fp32 conversions of the CPU backend (internal to csrc/cpu).
 *
 * Scalar conversions are inline here (the reference, the tests and the vector tails use them);
 * the row conversions in fa_convert.c use F16C / AVX-512 / AVX2 where the build allows and
 * produce bit-identical results to these scalar functions.
 *   fp32 -> fp16: round to nearest even, subnormals exact, overflow to inf, NaN stays a quiet NaN
 *                 (sign and the top 9 payload bits kept, quiet bit set).
 *   fp32 -> bf16: round to nearest even, NaN stays a quiet NaN (payload truncated, quiet bit set).
 *   fp16/bf16 -> fp32: exact.
 */
#ifndef FA_CONVERT_H
#define FA_CONVERT_H

#include <stdint.h>
#include <string.h>

#include "flash_attn_c.h"

static inline uint32_t fa_f32_bits(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    return x;
}

static inline float fa_bits_f32(uint32_t x)
{
    float f;
    memcpy(&f, &x, sizeof f);
    return f;
}

static inline float fa_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu;
    uint32_t m = h & 0x3ffu;
    if (e == 0x1fu) return fa_bits_f32(sign | 0x7f800000u | (m << 13)); /* inf, NaN */
    if (e == 0u) {
        /* zero or subnormal: m * 2^-24, exact in fp32 */
        float f = (float)m * 5.9604644775390625e-8f;
        return fa_bits_f32(fa_f32_bits(f) | sign);
    }
    return fa_bits_f32(sign | ((e + 112u) << 23) | (m << 13));
}

static inline uint16_t fa_f32_to_f16(float f)
{
    uint32_t x = fa_f32_bits(f);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((ax >> 13) & 0x3ffu)); /* NaN */
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* >= 65520 rounds to inf */
    if (ax >= 0x38800000u) {
        /* normal: drop 13 mantissa bits with round-to-nearest-even; a carry out of the mantissa
         * bumps the exponent, which is the right result; then rebias 127 -> 15. */
        uint32_t r = (ax + 0x0fffu + ((ax >> 13) & 1u)) >> 13;
        return (uint16_t)(sign | (r - (112u << 10)));
    }
    if (ax < 0x33000000u) return (uint16_t)sign; /* below 2^-25: rounds to zero */
    {
        /* subnormal result: value / 2^-24 rounded to nearest even */
        uint32_t e = ax >> 23;
        uint32_t m = (ax & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126u - e; /* 14 .. 24 */
        uint32_t r = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1u);
        uint32_t half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (r & 1u))) ++r;
        return (uint16_t)(sign | r);
    }
}

static inline float fa_bf16_to_f32(uint16_t h) { return fa_bits_f32((uint32_t)h << 16); }

static inline uint16_t fa_f32_to_bf16(float f)
{
    uint32_t x = fa_f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x0040u); /* NaN */
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

static inline int64_t fa_dtype_size(fa_dtype dt) { return dt == FA_F32 ? 4 : 2; }

/* element i of a dtype array, as fp32 */
static inline float fa_load1(fa_dtype dt, const void *base, int64_t i)
{
    if (dt == FA_F32) return ((const float *)base)[i];
    if (dt == FA_F16) return fa_f16_to_f32(((const uint16_t *)base)[i]);
    return fa_bf16_to_f32(((const uint16_t *)base)[i]);
}

static inline void fa_store1(fa_dtype dt, void *base, int64_t i, float x)
{
    if (dt == FA_F32) ((float *)base)[i] = x;
    else if (dt == FA_F16) ((uint16_t *)base)[i] = fa_f32_to_f16(x);
    else ((uint16_t *)base)[i] = fa_f32_to_bf16(x);
}

/* dst[0..n) = scale * src[0..n) as fp32 (scale 1 is exact) */
void fa_row_to_f32(fa_dtype dt, const void *src, float *dst, int64_t n, float scale);
/* dst[0..n) = scale * src[0..n) rounded to dt */
void fa_row_from_f32(fa_dtype dt, const float *src, void *dst, int64_t n, float scale);

#endif /* FA_CONVERT_H */
