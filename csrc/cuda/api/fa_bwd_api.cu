/* fa_bwd_api.cu - CUDA backward entry points: workspace size, validation and dispatch.
 *
 * Passes, all on the caller's stream, no allocation and no host synchronization:
 *   1. fa_bwd_dot_do_o_kernel   D = rowsum(dO o O) into the workspace; zeroes dq_accum
 *   2. fa_bwd_dkdv_kernel       dK, dV (+ dQ through fp32 atomics unless deterministic)
 *   3. fa_bwd_dq_convert_kernel dq = scale * dq_accum          (atomic path)
 *      fa_bwd_dq_kernel         dq by a separate ordered pass   (deterministic path)
 *   4. varlen only: zeros on the rows no sequence covers (fa_varlen_rows.cu)
 * The workspace layout is described in fa_bwd_host.h.
 */
#include <cuda_runtime.h>

#include "flash_attn_c.h"
#include "fa_bwd_args.cuh"
#include "fa_cuda_device.h"
#include "fa_bwd_host.h"
#include "fa_bwd_launch.cuh"
#include "fa_bwd_prep.cuh"
#include "fa_bwd_sm90.cuh"
#include "fa_varlen_rows.cuh"

/* The sm90 kernel (fa_bwd_sm90*.cu) may need a different workspace than the sm80 one: reserve the
 * larger, whichever kernel runs. Its entry points are weak (NULL when a build leaves them out). */
extern "C" size_t fa_bwd_cuda_workspace_bytes(const fa_params *p)
{
    const size_t sm80 = fa_bwd_workspace_need(p);
    const size_t sm90 = fa_bwd_sm90_workspace_bytes != NULL ? fa_bwd_sm90_workspace_bytes(p) : 0;
    return sm90 > sm80 ? sm90 : sm80;
}

/* The template per head-dim bucket (64, 96, 128, 192, 256); a smaller d runs in the next bucket
 * up with zero-filled padding columns (k-steps and column pairs past d are skipped). */
template <bool kBf16>
static fa_status fa_bwd_dispatch_d(const fa_bwd_args &a, int arch, cudaStream_t stream)
{
    if (a.head_dim <= 64) return fa_bwd_launch_main<kBf16, 64>(a, arch, stream);
    if (a.head_dim <= 96) return fa_bwd_launch_main<kBf16, 96>(a, arch, stream);
    if (a.head_dim <= 128) return fa_bwd_launch_main<kBf16, 128>(a, arch, stream);
    if (a.head_dim <= 192) return fa_bwd_launch_main<kBf16, 192>(a, arch, stream);
    return fa_bwd_launch_main<kBf16, 256>(a, arch, stream);
}

template <bool kBf16>
static fa_status fa_bwd_dispatch_dq(const fa_bwd_args &a, cudaStream_t stream)
{
    if (a.head_dim <= 64) return fa_bwd_launch_dq<kBf16, 64>(a, stream);
    if (a.head_dim <= 96) return fa_bwd_launch_dq<kBf16, 96>(a, stream);
    if (a.head_dim <= 128) return fa_bwd_launch_dq<kBf16, 128>(a, stream);
    if (a.head_dim <= 192) return fa_bwd_launch_dq<kBf16, 192>(a, stream);
    return fa_bwd_launch_dq<kBf16, 256>(a, stream);
}

fa_status fa_bwd_run_dq_pass(const fa_bwd_args &a, int bf16, cudaStream_t stream)
{
    return bf16 ? fa_bwd_dispatch_dq<true>(a, stream) : fa_bwd_dispatch_dq<false>(a, stream);
}

template <bool kBf16>
static fa_status fa_bwd_run(const fa_bwd_args &a, int arch, cudaStream_t stream)
{
    const int64_t pairs = a.total_q * a.heads;
    const int64_t pair_blocks =
        (pairs * FA_BWD_PREP_LANES + FA_BWD_PREP_THREADS - 1) / FA_BWD_PREP_THREADS;
    if (pair_blocks > 0) {
        fa_bwd_dot_do_o_kernel<kBf16><<<(unsigned)pair_blocks, FA_BWD_PREP_THREADS, 0, stream>>>(a, 0);
        if (cudaGetLastError() != cudaSuccess) return FA_ERR_CUDA;
    }
    const fa_status st = fa_bwd_dispatch_d<kBf16>(a, arch, stream);
    if (st != FA_OK) return st;
    if (a.atomic_dq && pair_blocks > 0) {
        fa_bwd_dq_convert_kernel<kBf16><<<(unsigned)pair_blocks, FA_BWD_PREP_THREADS, 0, stream>>>(a);
        if (cudaGetLastError() != cudaSuccess) return FA_ERR_CUDA;
    }
    return FA_OK;
}

static fa_status fa_bwd_cuda_run(const fa_params *p, void *stream)
{
    const fa_status chk = fa_bwd_validate(p);
    if (chk != FA_OK) return chk;
    /* ---- sm90 hook: the Hopper wgmma backward for the cases it covers (cc 9.0, d <= 128 or opt-in d <= 256, no
     * dropout; softcap / ALiBi only with FLASH_ATTN_C_SM90_BWD_FEAT=1; deterministic: its ORDERED instances or
     * its dK/dV kernel and the dQ pass);
     * FLASH_ATTN_C_SM90_BWD=0 opts out. ---- */
    if (fa_bwd_sm90_supported != NULL && fa_bwd_sm90_supported(p)) return fa_bwd_sm90(p, stream);
    fa_bwd_args a;
    fa_bwd_fill_args(p, &a);

    const int arch = fa_cuda_current_arch();
    if (arch == 0) return FA_ERR_CUDA;
    if (arch < 80) return FA_ERR_UNSUPPORTED;

    cudaStream_t s = (cudaStream_t)stream;
    return p->dtype == FA_BF16 ? fa_bwd_run<true>(a, arch, s) : fa_bwd_run<false>(a, arch, s);
}

extern "C" fa_status fa_bwd_cuda(const fa_params *p, void *stream)
{
    const fa_status st = fa_bwd_cuda_run(p, stream);
    /* varlen: dq, dk, dv = 0 on the rows no sequence covers (fa_varlen_rows.cuh) */
    return st == FA_OK ? fa_varlen_zero_uncovered_cuda(p, 1, (cudaStream_t)stream) : st;
}
