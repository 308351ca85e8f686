/* half_host.h - fp32 <-> fp16 / bf16 bit conversions on the host (round to nearest even), for the
 * self-checking harnesses of dev/ (through check_host.h) and the backward's CPU simulator.
 * Bit-identical to the CUDA host intrinsics __float2half_rn / __float2bfloat16_rn and back for
 * every non-NaN input; needs no CUDA header, so the simulator build (g++ only) can use it. */
#ifndef DEV_HALF_HOST_H
#define DEV_HALF_HOST_H

#include <math.h>
#include <stdint.h>
#include <string.h>

static inline uint16_t host_f32_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u); /* quiet NaN */
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

static inline float host_bf16_to_f32(uint16_t h)
{
    const uint32_t x = (uint32_t)h << 16;
    float f;
    memcpy(&f, &x, 4);
    return f;
}

static inline uint16_t host_f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    const uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);  /* NaN */
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* >= 65520: inf */
    if (ax >= 0x38800000u) {                                   /* normal result */
        const uint32_t r = (ax + 0xfffu + ((ax >> 13) & 1u)) >> 13;
        return (uint16_t)(sign | (r - (112u << 10)));
    }
    /* subnormal (or zero) result: |f| * 2^24 rounded to nearest even (exact scaling) */
    const float a = fabsf(f) * 16777216.0f;
    return (uint16_t)(sign | (uint32_t)nearbyintf(a));
}

static inline float host_f16_to_f32(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    uint32_t x;
    if (e == 0x1fu) {
        x = sign | 0x7f800000u | (m << 13);
    } else if (e == 0) {
        float f = (float)m * 5.9604644775390625e-8f; /* m * 2^-24, exact */
        memcpy(&x, &f, 4);
        x |= sign;
    } else {
        x = sign | ((e + 112u) << 23) | (m << 13);
    }
    float f;
    memcpy(&f, &x, 4);
    return f;
}

#endif /* DEV_HALF_HOST_H */
