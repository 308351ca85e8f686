/* fa_bwd_sm90_tma_maps.h - host side of the pipelined Hopper backward (fa_bwd_sm90_plan.cu): the TMA
 * tensor maps its producer loads Q, dO, K, V through and its dQ writer reduce-adds dq_accum
 * through (layouts: fa_bwd_sm90_pipe_layout.cuh, fa_bwd_sm90_params). Host code only, included by
 * fa_bwd_sm90_plan.cu alone.
 */
#ifndef FA_BWD_SM90_TMA_MAPS_H
#define FA_BWD_SM90_TMA_MAPS_H

#include <cuda.h>
#include <stdint.h>

#include "flash_attn_c.h"      /* fa_dtype */
#include "fa_sm90_tma_host.h" /* fa_sm90_encode_tiled, fa_sm90_tma_stride_ok */

/* A TMA global stride in elements (2-byte): positive, 16-byte multiple, below 2^40 bytes. A
 * dimension of extent 1 is never stepped over, so a stride the caller left arbitrary there is
 * replaced by `fallback` (the next-outer natural value). */
static int64_t fa_bwd_tma_stride(int64_t stride, int64_t extent, int64_t fallback)
{
    return fa_sm90_tma_stride_ok(stride) ? stride : extent == 1 ? fallback : -1;
}

/* Dense 4-d map (d, rows, heads, batch) of b16 elements, box 64 x box_rows, 128-byte swizzle,
 * out-of-bounds elements read as zeros. 0 when TMA cannot describe the tensor. */
static int fa_bwd_encode_4d(CUtensorMap *map, fa_dtype dtype, const void *base, int64_t d, int64_t rows,
                            int64_t heads, int64_t batch, int64_t rs, int64_t hs, int64_t bs, int box_rows)
{
    if (((uintptr_t)base & 15u) != 0) return 0;
    rs = fa_bwd_tma_stride(rs, rows, 8 * ((d + 7) / 8));
    if (rs < 0) return 0;
    hs = fa_bwd_tma_stride(hs, heads, rs * rows);
    if (hs < 0) return 0;
    bs = fa_bwd_tma_stride(bs, batch, hs * heads);
    if (bs < 0) return 0;
    const cuuint64_t gdim[4] = {(cuuint64_t)d, (cuuint64_t)rows, (cuuint64_t)heads, (cuuint64_t)batch};
    const cuuint64_t gstride[3] = {(cuuint64_t)rs * 2u, (cuuint64_t)hs * 2u, (cuuint64_t)bs * 2u};
    const cuuint32_t box[4] = {64u, (cuuint32_t)box_rows, 1u, 1u};
    const cuuint32_t estride[4] = {1u, 1u, 1u, 1u};
    const CUtensorMapDataType ty =
        dtype == FA_BF16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
    return fa_sm90_encode_tiled()(map, ty, 4u, (void *)base, gdim, gstride, box, estride, CU_TENSOR_MAP_INTERLEAVE_NONE,
                                 CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
                                 CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

/* dq_accum (b * sq, h, d) fp32 row-major as the dense 4-d map (d, sq, h, b) the TMA-dQ kernel
 * reduce-adds into (fa_bwd_sm90_pipe_kernel.cuh, warp_write_dq): box 32 x box_rows (32 fp32 = the
 * 128-byte swizzle span; 64 rows, 80 for fa_bwd_sm90_pipe80.cuh) x 1 x 1, 128-byte swizzle. The row
 * extent sq makes TMA drop the rows of a query block past the sequence end (they would be the next
 * batch's rows in the flat buffer), the dim extent d the dims past d. 0 when TMA cannot describe it. */
static int fa_bwd_encode_dqacc(CUtensorMap *map, const float *dq_accum, int64_t d, int64_t sq, int64_t h,
                               int64_t b, int box_rows)
{
    if (dq_accum == NULL || ((uintptr_t)dq_accum & 15u) != 0 || d % 4 != 0) return 0;
    /* the dq_accum allocation's size (so no overflow); the batch stride sq h d 4 is below it */
    const int64_t bytes = b * sq * h * d * 4;
    if (d <= 0 || sq <= 0 || h <= 0 || b <= 0 || bytes >= ((int64_t)1 << 40)) return 0;
    const cuuint64_t gdim[4] = {(cuuint64_t)d, (cuuint64_t)sq, (cuuint64_t)h, (cuuint64_t)b};
    const cuuint64_t gstride[3] = {(cuuint64_t)(h * d * 4), (cuuint64_t)(d * 4), (cuuint64_t)(sq * h * d * 4)};
    const cuuint32_t box[4] = {32u, (cuuint32_t)box_rows, 1u, 1u};
    const cuuint32_t estride[4] = {1u, 1u, 1u, 1u};
    return fa_sm90_encode_tiled()(map, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 4u, (void *)dq_accum, gdim, gstride, box,
                                 estride, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                                 CU_TENSOR_MAP_L2_PROMOTION_L2_128B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

#endif /* FA_BWD_SM90_TMA_MAPS_H */
