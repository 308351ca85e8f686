/* fa_rotary.cu - fa_rotary_cuda: rotary position embedding on the GPU.
 *
 * One thread per (row, head, slot): slots [0, rd/2) are the rotation pairs (both members loaded,
 * rotated in fp32 with cos/sin read in fp32, stored), slots [rd/2, rd/2 + head_dim - rd) copy the
 * dims past rotary_dim (only when out is not x). Consecutive threads take consecutive slots of one
 * head, so the loads of a warp are contiguous runs. Each element is read and written by the same
 * thread, which makes the in-place call (out == x) race free without any synchronization.
 */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include "flash_attn_c.h"
#include "fa_rotary.h"

#define FA_ROTARY_THREADS 256

template <int kDtype>
static __device__ __forceinline__ float fa_rotary_ld(const void *base, int64_t i)
{
    if (kDtype == FA_F32) return ((const float *)base)[i];
    if (kDtype == FA_F16) return __half2float(((const __half *)base)[i]);
    return __bfloat162float(((const __nv_bfloat16 *)base)[i]);
}

template <int kDtype>
static __device__ __forceinline__ void fa_rotary_st(void *base, int64_t i, float v)
{
    if (kDtype == FA_F32) ((float *)base)[i] = v;
    else if (kDtype == FA_F16) ((__half *)base)[i] = __float2half_rn(v);
    else ((__nv_bfloat16 *)base)[i] = __float2bfloat16_rn(v);
}

/* Grid-stride over items = rows * heads * slots; p is the host struct passed by value. */
template <int kDtype>
__global__ void __launch_bounds__(FA_ROTARY_THREADS)
fa_rotary_kernel(const fa_rotary_params p, int64_t slots, int64_t items)
{
    const int64_t half = p.rotary_dim / 2;
    const float sign = p.conjugate ? -1.f : 1.f;
    for (int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; t < items;
         t += (int64_t)gridDim.x * blockDim.x) {
        const int64_t slot = t % slots;
        const int64_t rh = t / slots;               /* row * heads + head */
        const int64_t h = rh % p.heads, r = rh / p.heads;
        const fa_rotary_row w = fa_rotary_locate(&p, r);
        const void *x_h = (const char *)p.x + (w.x_off + h * p.x_head_stride) * (kDtype == FA_F32 ? 4 : 2);
        void *out_h = (char *)p.out + (w.out_off + h * p.out_head_stride) * (kDtype == FA_F32 ? 4 : 2);
        if (slot < half) {
            int64_t i0, i1;
            fa_rotary_pair(slot, p.rotary_dim, p.interleaved, &i0, &i1);
            const float x0 = fa_rotary_ld<kDtype>(x_h, i0), x1 = fa_rotary_ld<kDtype>(x_h, i1);
            float o0 = x0, o1 = x1;  /* no position: identity, bit-exact */
            if (w.pos >= 0) {
                const float c = p.cos[w.pos * half + slot], s = sign * p.sin[w.pos * half + slot];
                /* plain multiply-adds, not fmaf: the same rounding as the C backend */
                o0 = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s));
                o1 = __fadd_rn(__fmul_rn(x0, s), __fmul_rn(x1, c));
            }
            fa_rotary_st<kDtype>(out_h, i0, o0);
            fa_rotary_st<kDtype>(out_h, i1, o1);
        } else {
            const int64_t e = p.rotary_dim + (slot - half);  /* a dim past rotary_dim */
            if (kDtype == FA_F32) ((float *)out_h)[e] = ((const float *)x_h)[e];
            else ((uint16_t *)out_h)[e] = ((const uint16_t *)x_h)[e];  /* raw bits: exact */
        }
    }
}

fa_status fa_rotary_cuda(const fa_rotary_params *p, void *stream)
{
    const fa_status st = fa_rotary_check(p);
    if (st != FA_OK) return st;
    const int in_place = p->out == p->x;
    const int64_t slots = p->rotary_dim / 2 + (in_place ? 0 : p->head_dim - p->rotary_dim);
    const int64_t items = p->rows * p->heads * slots;
    if (items == 0) return FA_OK;
    int64_t blocks = (items + FA_ROTARY_THREADS - 1) / FA_ROTARY_THREADS;
    if (blocks > 65536) blocks = 65536;  /* grid-stride beyond this */
    const cudaStream_t s = (cudaStream_t)stream;
    if (p->dtype == FA_F16)
        fa_rotary_kernel<FA_F16><<<(unsigned)blocks, FA_ROTARY_THREADS, 0, s>>>(*p, slots, items);
    else if (p->dtype == FA_BF16)
        fa_rotary_kernel<FA_BF16><<<(unsigned)blocks, FA_ROTARY_THREADS, 0, s>>>(*p, slots, items);
    else
        fa_rotary_kernel<FA_F32><<<(unsigned)blocks, FA_ROTARY_THREADS, 0, s>>>(*p, slots, items);
    return cudaGetLastError() == cudaSuccess ? FA_OK : FA_ERR_CUDA;
}
