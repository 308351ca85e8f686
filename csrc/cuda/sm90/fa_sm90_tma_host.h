/* fa_sm90_tma_host.h - host side of the Hopper kernels' TMA, shared by the forward
 * (fa_fwd_sm90.cu) and the backward (fa_bwd_sm90_plan.cu): the driver's tensor-map encoder and the
 * stride rule of a tensor map. Host code only.
 *
 * cuTensorMapEncodeTiled is a driver API function; it is fetched once per translation unit through
 * the runtime's cudaGetDriverEntryPointByVersion, so nothing links libcuda directly.
 */
#ifndef FA_SM90_TMA_HOST_H
#define FA_SM90_TMA_HOST_H

#include <cuda.h>
#include <cuda_runtime.h>
#include <stdint.h>

typedef CUresult (*fa_sm90_encode_tiled_fn)(CUtensorMap *, CUtensorMapDataType, cuuint32_t, void *,
                                            const cuuint64_t *, const cuuint64_t *, const cuuint32_t *,
                                            const cuuint32_t *, CUtensorMapInterleave, CUtensorMapSwizzle,
                                            CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

static inline fa_sm90_encode_tiled_fn fa_sm90_load_encode_tiled(void)
{
    void *fn = NULL;
    cudaDriverEntryPointQueryResult q;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &q) !=
            cudaSuccess ||
        q != cudaDriverEntryPointSuccess)
        return NULL;
    return (fa_sm90_encode_tiled_fn)fn;
}

/* The encoder, or NULL when the driver has none (then the sm90 kernels are not used). */
static inline fa_sm90_encode_tiled_fn fa_sm90_encode_tiled(void)
{
    static const fa_sm90_encode_tiled_fn fn = fa_sm90_load_encode_tiled(); /* thread-safe static init */
    return fn;
}

/* A TMA global stride of 2-byte elements: positive, a multiple of 16 bytes, below 2^40 bytes. */
static inline int fa_sm90_tma_stride_ok(int64_t elems)
{
    return elems > 0 && elems % 8 == 0 && elems < ((int64_t)1 << 39);
}

#endif /* FA_SM90_TMA_HOST_H */
