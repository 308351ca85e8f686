/* fa_bwd_launch.cuh - host-side launch of the backward kernels of one (dtype, head-dim bucket).
 *
 * Defined here, explicitly instantiated once per head-dim bucket in fa_bwd_hdim{64,96,128,192,256}.cu
 * (so the heavy kernels compile in parallel, one translation unit each) and called from the
 * dispatch in fa_bwd_api.cu, which only sees the declaration below.
 */
#ifndef FA_BWD_LAUNCH_CUH
#define FA_BWD_LAUNCH_CUH

#include <cuda_runtime.h>

#include "flash_attn_c.h"
#include "fa_bwd_args.cuh"

/* Runs the dK/dV kernel and, when !a.atomic_dq, the deterministic dQ kernel. arch = 10 major +
 * minor of the current device. The preprocess / convert passes are launched by the caller. */
template <bool kBf16, int D>
fa_status fa_bwd_launch_main(const fa_bwd_args &a, int arch, cudaStream_t stream);

/* The deterministic dQ kernel alone (fa_bwd_dq.cuh: one block per Br query rows, keys in a fixed
 * order, dq written directly). Needs D = rowsum(dO o O) in the workspace. */
template <bool kBf16, int D>
fa_status fa_bwd_launch_dq(const fa_bwd_args &a, cudaStream_t stream);

/* fa_bwd_launch_dq of a.head_dim's bucket (fa_bwd_api.cu); used by the sm80 and the sm90 paths. */
fa_status fa_bwd_run_dq_pass(const fa_bwd_args &a, int bf16, cudaStream_t stream);

#ifdef FA_BWD_LAUNCH_DEFINE
#include "fa_bwd_config.cuh"
#include "fa_bwd_dkdv.cuh"
#include "fa_bwd_dq.cuh"

template <bool kBf16, int D>
fa_status fa_bwd_launch_main(const fa_bwd_args &a, int arch, cudaStream_t stream)
{
    typedef fa_bwd_dkdv_host<D> H;
    if (a.seqlen_k > 0 && a.batch > 0) {
        const int smem = H::smem_bytes(arch);
        const dim3 grid((unsigned)((a.seqlen_k + H::kBc - 1) / H::kBc), (unsigned)a.heads_k,
                        (unsigned)a.batch);
        if (cudaFuncSetAttribute(fa_bwd_dkdv_kernel<kBf16, D>,
                                 cudaFuncAttributeMaxDynamicSharedMemorySize, smem) != cudaSuccess)
            return FA_ERR_CUDA;
        fa_bwd_dkdv_kernel<kBf16, D><<<grid, H::kThreads, smem, stream>>>(a);
        if (cudaGetLastError() != cudaSuccess) return FA_ERR_CUDA;
    }
    return a.atomic_dq ? FA_OK : fa_bwd_launch_dq<kBf16, D>(a, stream);
}

template <bool kBf16, int D>
fa_status fa_bwd_launch_dq(const fa_bwd_args &a, cudaStream_t stream)
{
    if (a.seqlen_q > 0 && a.batch > 0) {
        typedef fa_bwd_dq_cfg<D> Q;
        const dim3 grid((unsigned)((a.seqlen_q + Q::kBr - 1) / Q::kBr), (unsigned)a.heads,
                        (unsigned)a.batch);
        if (cudaFuncSetAttribute(fa_bwd_dq_kernel<kBf16, D>,
                                 cudaFuncAttributeMaxDynamicSharedMemorySize, Q::kSmem) != cudaSuccess)
            return FA_ERR_CUDA;
        fa_bwd_dq_kernel<kBf16, D><<<grid, Q::kThreads, Q::kSmem, stream>>>(a);
        if (cudaGetLastError() != cudaSuccess) return FA_ERR_CUDA;
    }
    return FA_OK;
}

#define FA_BWD_INSTANTIATE(D)                                                                    \
    template fa_status fa_bwd_launch_main<false, D>(const fa_bwd_args &, int, cudaStream_t);   \
    template fa_status fa_bwd_launch_main<true, D>(const fa_bwd_args &, int, cudaStream_t);   \
    template fa_status fa_bwd_launch_dq<false, D>(const fa_bwd_args &, cudaStream_t);           \
    template fa_status fa_bwd_launch_dq<true, D>(const fa_bwd_args &, cudaStream_t);
#endif /* FA_BWD_LAUNCH_DEFINE */

#endif /* FA_BWD_LAUNCH_CUH */
