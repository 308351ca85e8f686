/* fa_bwd_sm90.cu - host side of the Hopper backward: when it applies, and the three passes on
 * the caller's stream (no allocation, no host synchronization):
 *   1. fa_bwd_dot_do_o_kernel (fa_bwd_prep.cuh, shared with sm80): D = rowsum(dO o O) into the
 *      workspace, dq_accum zeroed;
 *   2. fa_bwd_sm90_kernel<kBf16, D, kDq = atomic_dq>: dK, dV per key block, dS K added into dq_accum (not when
 *      deterministic: float atomics add in a varying order);
 *   3. fa_bwd_dq_convert_kernel (fa_bwd_prep.cuh): dq = scale * dq_accum in the params dtype;
 *      deterministic: the sm80 path's ordered dQ kernel instead (fa_bwd_run_dq_pass, fa_bwd_api.cu),
 *      which recomputes S and dP per query block and sums over the keys in a fixed order.
 * Workspace layout: exactly the sm80 backward's (fa_bwd_host.h).
 */
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "flash_attn_c.h"
#include "fa_bwd_args.cuh"
#include "fa_bwd_host.h"
#include "fa_cuda_device.h"
#include "fa_bwd_launch.cuh"
#include "fa_bwd_prep.cuh"
#include "fa_bwd_sm90.cuh"
#include "fa_bwd_sm90_kernel.cuh"

/* Head-dim bucket of the sm90 kernel (0: not covered). */
static int fa_bwd_sm90_bucket(int64_t d)
{
    if (d < 8 || d % 8 != 0) return 0;
    if (d <= 64) return 64;
    if (d <= 128) return 128;
    return 0;
}

/* The real kernel declares LSE / D stages as static shared memory (2 * 2 * Br floats); the stub
 * compiled for other gencodes declares none. So a non-zero static size means the sm_90a image
 * was loaded for this device (cudaFuncGetAttributes is a host query, no synchronization). */
template <bool kBf16, int D>
static int fa_bwd_sm90_has_image_dtype(void)
{
    static int cached = 0;  /* 0 unknown, 1 yes, -1 no; benign race: every writer writes the same */
    if (cached == 0) {
        cudaFuncAttributes attr;
        void (*kern)(const fa_bwd_args) = fa_bwd_sm90_kernel<kBf16, D, true>;
        const bool ok = cudaFuncGetAttributes(&attr, (const void *)kern) == cudaSuccess &&
                        attr.sharedSizeBytes >= 4u * fa_bwd_sm90_cfg<D>::Br * sizeof(float);
        cached = ok ? 1 : -1;
    }
    return cached == 1;
}

static int fa_bwd_sm90_has_image(int bucket, fa_dtype dtype)
{
    const bool bf = dtype == FA_BF16;
    if (bucket == 64) return bf ? fa_bwd_sm90_has_image_dtype<true, 64>() : fa_bwd_sm90_has_image_dtype<false, 64>();
    if (bucket == 128) return bf ? fa_bwd_sm90_has_image_dtype<true, 128>() : fa_bwd_sm90_has_image_dtype<false, 128>();
    return 0;
}

int fa_bwd_sm90_can_run(const fa_params *p)
{
    if (p == NULL) return 0;
    if (p->dtype != FA_F16 && p->dtype != FA_BF16) return 0;
    /* the plain path only (deterministic = 1 is fine: dK/dV are per-CTA sums in a fixed order) */
    if (p->dropout_p != 0.f || p->softcap != 0.f || p->alibi_slopes != NULL) return 0;
    if (!isfinite(p->softmax_scale)) return 0;
    const int bucket = fa_bwd_sm90_bucket(p->head_dim);
    if (bucket == 0) return 0;
    /* the sm80 backward's checks: pointers, 16-byte alignment, strides % 8, grid, workspace */
    if (fa_bwd_validate(p) != FA_OK) return 0;
    /* lengths may be 0 (varlen batches without queries / keys); int arithmetic in the kernel */
    if (p->seqlen_k >= (1 << 30) || p->seqlen_q >= (1 << 30)) return 0;
    if (p->heads_k > 65535) return 0;
    if (fa_cuda_current_arch() != 90) return 0;
    return fa_bwd_sm90_has_image(bucket, p->dtype);
}

int fa_bwd_sm90_supported(const fa_params *p)
{
    if (fa_env_off("FLASH_ATTN_C_SM90_BWD")) return 0;
    return fa_bwd_sm90_can_run(p);
}

size_t fa_bwd_sm90_workspace_bytes(const fa_params *p)
{
    return fa_bwd_workspace_need(p);
}

template <bool kBf16, int D>
static fa_status fa_bwd_sm90_launch(const fa_bwd_args &a, cudaStream_t stream)
{
    const size_t smem = fa_bwd_sm90_cfg<D>::kSmemBytes;
    void (*kern)(const fa_bwd_args) =
        a.atomic_dq ? fa_bwd_sm90_kernel<kBf16, D, true> : fa_bwd_sm90_kernel<kBf16, D, false>;
    /* > 48 KB of dynamic shared memory needs the opt-in (idempotent, host-only) */
    if (cudaFuncSetAttribute((const void *)kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem) !=
        cudaSuccess)
        return FA_ERR_CUDA;
    const dim3 grid((unsigned)((a.seqlen_k + FA_BWD_SM90_BC - 1) / FA_BWD_SM90_BC), (unsigned)a.heads_k,
                    (unsigned)a.batch);
    /* no key anywhere (or no sequence): no dK/dV rows; dq = 0 comes from the zeroed dq_accum */
    if (grid.x == 0 || grid.y == 0 || grid.z == 0) return FA_OK;
    kern<<<grid, FA_BWD_SM90_THREADS, smem, stream>>>(a);
    return cudaGetLastError() == cudaSuccess ? FA_OK : FA_ERR_CUDA;
}

template <bool kBf16>
static fa_status fa_bwd_sm90_run(const fa_bwd_args &a, cudaStream_t stream)
{
    const int64_t pairs = a.total_q * a.heads;
    const int64_t pair_blocks = (pairs * FA_BWD_PREP_LANES + FA_BWD_PREP_THREADS - 1) / FA_BWD_PREP_THREADS;
    if (pair_blocks > 0) {
        fa_bwd_dot_do_o_kernel<kBf16><<<(unsigned)pair_blocks, FA_BWD_PREP_THREADS, 0, stream>>>(a);
        if (cudaGetLastError() != cudaSuccess) return FA_ERR_CUDA;
    }
    const fa_status st = a.head_dim <= 64 ? fa_bwd_sm90_launch<kBf16, 64>(a, stream)
                                          : fa_bwd_sm90_launch<kBf16, 128>(a, stream);
    if (st != FA_OK) return st;
    if (!a.atomic_dq) return fa_bwd_run_dq_pass(a, kBf16, stream);
    if (pair_blocks > 0) {
        fa_bwd_dq_convert_kernel<kBf16><<<(unsigned)pair_blocks, FA_BWD_PREP_THREADS, 0, stream>>>(a);
        if (cudaGetLastError() != cudaSuccess) return FA_ERR_CUDA;
    }
    return FA_OK;
}

fa_status fa_bwd_sm90(const fa_params *p, void *stream)
{
    if (!fa_bwd_sm90_can_run(p)) return FA_ERR_UNSUPPORTED;
    fa_bwd_args a;
    fa_bwd_fill_args(p, &a);
    cudaStream_t s = (cudaStream_t)stream;
    return p->dtype == FA_BF16 ? fa_bwd_sm90_run<true>(a, s) : fa_bwd_sm90_run<false>(a, s);
}
