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
 * Pass 2 runs as fa_bwd_sm90_pipe_kernel (TMA producer warpgroup + mbarrier ring,
 * fa_bwd_sm90_pipe_kernel.cuh) for dense tensors whose strides TMA accepts, by default with dQ
 * by TMA tensor reduces of smem-staged tiles from a dQ-writer warp; everything else keeps
 * fa_bwd_sm90_kernel. FLASH_ATTN_C_SM90_BWD_PIPE picks (fa_bwd_sm90_pipe_mode): 0 = always
 * fa_bwd_sm90_kernel, 1 = the pipelined kernel with dQ by red.add from the consumers, 2 = with
 * TMA-reduce dQ (both at d = 64 and 128, atomic or deterministic dQ); unset = 2 for atomic dQ at
 * every d, fa_bwd_sm90_kernel for deterministic calls (the pipelined kernel is not yet timed
 * there). d in (128, 256] (bucket 256) has only the pipelined kernel's dim-split instance
 * (fa_bwd_sm90_pipe_dsplit.cuh, dQ by red.add under =1 and =2): taken when dQ is atomic (or
 * FLASH_ATTN_C_SM90_BWD_PIPE is 1 or 2) and the call is dense and TMA-fit (fa_bwd_sm90_can_run
 * says no otherwise, so the sm80 backward runs it). The measurements behind these defaults:
 * fa_bwd_sm90_pipe_mode.
 * Deterministic calls with FLASH_ATTN_C_SM90_BWD_DET=ordered (dense, d <= 128, TMA-fit, and the
 * workspace of fa_bwd_sm90_workspace_bytes under that setting) run the pipelined kernel's ORDERED
 * instance instead of dK/dV + the ordered dQ pass: dQ added into dq_accum in a fixed key-block
 * order (fa_bwd_sm90_pipe_dq_order.cuh), then the convert pass as on the atomic path. Opt-in and
 * experimental: not yet run on a GPU; without it (or where it does not apply) deterministic calls
 * are unchanged.
 */
#include <cuda.h>
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
#include "fa_bwd_sm90_pipe_kernel.cuh"
#include "fa_bwd_sm90_ordered.h"  /* fa_bwd_sm90_det_ordered, fa_bwd_sm90_ordered_args */
#include "fa_bwd_sm90_tma_maps.h" /* fa_bwd_encode_4d, fa_bwd_encode_dqacc */
#include "fa_sm90_tma_host.h"     /* fa_sm90_encode_tiled */

/* Head-dim bucket of the sm90 kernels (0: not covered). 256: the pipelined kernel only (its
 * dim-split instance, fa_bwd_sm90_pipe_dsplit.cuh), so only where that one takes the call. */
static int fa_bwd_sm90_bucket(int64_t d)
{
    if (d < 8 || d % 8 != 0) return 0;
    if (d <= 64) return 64;
    if (d <= 128) return 128;
    if (d <= 256) return 256;
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

/* The same test on the pipelined kernel's d = 256 instance (bucket 256 has no cp.async kernel):
 * its real kernel declares 2 kStages Br floats of LSE / D, the stub none. */
template <bool kBf16>
static int fa_bwd_sm90_has_image_d256(void)
{
    static int cached = 0; /* as above */
    if (cached == 0) {
        cudaFuncAttributes attr;
        void (*kern)(const fa_bwd_sm90_params) = fa_bwd_sm90_pipe_kernel<kBf16, 256, FA_BWD_SM90_DQ_RED>;
        const bool ok = cudaFuncGetAttributes(&attr, (const void *)kern) == cudaSuccess &&
                        attr.sharedSizeBytes >= 4u * fa_bwd_sm90_pipe_cfg<256>::Br * sizeof(float);
        cached = ok ? 1 : -1;
    }
    return cached == 1;
}

static int fa_bwd_sm90_has_image(int bucket, fa_dtype dtype)
{
    const bool bf = dtype == FA_BF16;
    if (bucket == 64) return bf ? fa_bwd_sm90_has_image_dtype<true, 64>() : fa_bwd_sm90_has_image_dtype<false, 64>();
    if (bucket == 128) return bf ? fa_bwd_sm90_has_image_dtype<true, 128>() : fa_bwd_sm90_has_image_dtype<false, 128>();
    if (bucket == 256) return bf ? fa_bwd_sm90_has_image_d256<true>() : fa_bwd_sm90_has_image_d256<false>();
    return 0;
}

static int fa_bwd_sm90_pipe_prepare(const fa_params *p, const fa_bwd_args *a, fa_bwd_sm90_params *prm);

/* The checks of fa_bwd_sm90_can_run that need no tensor map: the head-dim bucket when they pass,
 * else 0. Bucket 256 needs the pipelined kernel's maps on top (fa_bwd_sm90_pipe_prepare), which
 * fa_bwd_sm90_can_run encodes to decide and fa_bwd_sm90 encodes once to run: the run path calls
 * this, not fa_bwd_sm90_can_run, so a call's maps are not encoded twice there. */
static int fa_bwd_sm90_bucket_checked(const fa_params *p)
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
    if (!fa_bwd_sm90_has_image(bucket, p->dtype)) return 0;
    return bucket;
}

int fa_bwd_sm90_can_run(const fa_params *p)
{
    const int bucket = fa_bwd_sm90_bucket_checked(p);
    if (bucket == 0) return 0;
    if (bucket == 256) {
        /* no cp.async kernel to fall back on: only where the pipelined kernel takes the call (dense,
         * TMA-fit, atomic dQ unless FLASH_ATTN_C_SM90_BWD_PIPE=1 / 2 asks for it, not =0:
         * fa_bwd_sm90_pipe_mode) */
        fa_bwd_args a;
        fa_bwd_fill_args(p, &a);
        fa_bwd_sm90_params prm;
        return fa_bwd_sm90_pipe_prepare(p, &a, &prm) != 0;
    }
    return 1;
}

int fa_bwd_sm90_supported(const fa_params *p)
{
    if (fa_env_off("FLASH_ATTN_C_SM90_BWD")) return 0;
    return fa_bwd_sm90_can_run(p);
}

/* The ordered dQ needs dq_accum and the turn counters besides dpsum (fa_bwd_host.h). */
size_t fa_bwd_sm90_workspace_bytes(const fa_params *p)
{
    const size_t need = fa_bwd_workspace_need(p);
    if (p == NULL || !fa_bwd_sm90_det_ordered(p)) return need;
    const size_t ordered = fa_bwd_ordered_dq_need(p, fa_bwd_sm90_ordered_rows(p));
    return ordered > need ? ordered : need;
}

/* Launches a backward kernel (either form: its parameter type P) on the grid of key blocks x kv
 * heads x batch, with `smem` bytes of dynamic shared memory. */
template <typename P>
static fa_status fa_bwd_sm90_launch_grid(void (*kern)(const P), const P &prm, const fa_bwd_args &a, int threads,
                                         int bc, size_t smem, cudaStream_t stream)
{
    /* > 48 KB of dynamic shared memory needs the opt-in (idempotent, host-only) */
    if (cudaFuncSetAttribute((const void *)kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem) !=
        cudaSuccess)
        return FA_ERR_CUDA;
    const dim3 grid((unsigned)((a.seqlen_k + bc - 1) / bc), (unsigned)a.heads_k,
                    (unsigned)a.batch);
    /* no key anywhere (or no sequence): no dK/dV rows; dq = 0 comes from the zeroed dq_accum */
    if (grid.x == 0 || grid.y == 0 || grid.z == 0) return FA_OK;
    kern<<<grid, threads, smem, stream>>>(prm);
    return cudaGetLastError() == cudaSuccess ? FA_OK : FA_ERR_CUDA;
}

template <bool kBf16, int D>
static fa_status fa_bwd_sm90_launch(const fa_bwd_args &a, cudaStream_t stream)
{
    void (*kern)(const fa_bwd_args) =
        a.atomic_dq ? fa_bwd_sm90_kernel<kBf16, D, true> : fa_bwd_sm90_kernel<kBf16, D, false>;
    return fa_bwd_sm90_launch_grid(kern, a, a, FA_BWD_SM90_THREADS, FA_BWD_SM90_BC, fa_bwd_sm90_cfg<D>::kSmemBytes,
                                   stream);
}

/* ---- the pipelined kernel: its mode, tensor maps (fa_bwd_sm90_tma_maps.h) and launch -------- */

/* The pipelined mode FLASH_ATTN_C_SM90_BWD_PIPE asks for (read on every call, like the other
 * switches): "0" -> 0 (fa_bwd_sm90_kernel), "1" -> 1 (red.add dQ), "2" -> 2 (TMA-reduce dQ), at
 * any d. Unset (or any other value): the measured default, 2 for atomic dQ at every d (at d > 128
 * that is the dim-split instance's red.add dQ: it has no TMA-dQ one). Measured: d = 128, H100 run
 * 41: the TMA-dQ instance 1.13-1.32x the red.add one, which ran 1.02-1.10x fa_bwd_sm90_kernel in
 * run 37; d = 64 (Br = 64 instances): 1.09-1.21x fa_bwd_sm90_kernel (run 50), compute-sanitizer
 * memcheck / racecheck / synccheck clean on the harness's 135 d <= 64 cases (run 51); d = 256
 * (dim split): 1.10-1.26x the sm80 kernel (run 52), harness 80 of 80 and the three sanitizers
 * clean (run 51). Deterministic calls (the dK/dV-only instance, never timed against
 * fa_bwd_sm90_kernel) get 0: the cp.async kernel at d <= 128, the sm80 backward above
 * (fa_bwd_sm90_can_run). 3 (ORDERED) whatever the variable says when a carries the ordered
 * dQ's counters (fa_bwd_sm90_ordered_args: deterministic, FLASH_ATTN_C_SM90_BWD_DET=ordered,
 * dense, d <= 128, workspace large enough). */
static int fa_bwd_sm90_pipe_mode(const fa_bwd_args *a)
{
    /* 3: the ORDERED instance (fa_bwd_sm90_ordered_args set the counters), whatever the variable */
    if (!a->atomic_dq && a->dq_sem != NULL) return 3;
    const char *env = getenv("FLASH_ATTN_C_SM90_BWD_PIPE");
    if (env != NULL && strcmp(env, "0") == 0) return 0;
    if (env != NULL && strcmp(env, "1") == 0) return 1;
    if (env != NULL && strcmp(env, "2") == 0) return 2;
    return a->atomic_dq ? 2 : 0;
}

/* Which pipelined instance this call runs (0: none, the cp.async kernel runs it): the mode of
 * fa_bwd_sm90_pipe_mode (=2 is the same kernel with dQ by TMA reduce when dQ is atomic;
 * deterministic calls run the dK/dV-only instance either way, unless mode 3: the ORDERED one, which
 * needs the dq_accum map too) when the tensors are dense, the encoder found and all maps
 * encodable (then in *prm); buckets 64 and 128 have all four instances, bucket 256 no TMA-dQ one
 * (1 is returned for =2 there: its red.add instance). The Q / dO boxes are the pipelined kernel's
 * own Br (fa_bwd_sm90_pipe_cfg: 64 at every bucket, not the cp.async kernel's 128 at d = 64), the
 * K / V boxes its Bc (128; 64 at bucket 256).
 * a: fa_bwd_fill_args(p). */
static int fa_bwd_sm90_pipe_prepare(const fa_params *p, const fa_bwd_args *a, fa_bwd_sm90_params *prm)
{
    const int mode = fa_bwd_sm90_pipe_mode(a);
    if (mode == 0) return 0;
    if (p->cu_seqlens_q != NULL || p->cu_seqlens_k != NULL || fa_sm90_encode_tiled() == NULL) return 0;
    memset(prm, 0, sizeof(*prm));
    const int br = p->head_dim <= 64    ? fa_bwd_sm90_pipe_cfg<64>::Br
                   : p->head_dim <= 128 ? fa_bwd_sm90_pipe_cfg<128>::Br
                                        : fa_bwd_sm90_pipe_cfg<256>::Br;
    const int bc = p->head_dim <= 128 ? FA_BWD_SM90_BC : fa_bwd_sm90_pipe_cfg<256>::Bc; /* the K / V boxes */
    const int64_t d = p->head_dim, sq = p->seqlen_q, sk = p->seqlen_k, h = p->heads, hk = p->heads_k, b = p->batch;
    const int ok = fa_bwd_encode_4d(&prm->tm_q, p->dtype, p->q, d, sq, h, b, p->q_row_stride, p->q_head_stride,
                                    p->q_batch_stride, br) &&
                   fa_bwd_encode_4d(&prm->tm_do, p->dtype, p->dout, d, sq, h, b, p->do_row_stride,
                                    p->do_head_stride, p->do_batch_stride, br) &&
                   fa_bwd_encode_4d(&prm->tm_k, p->dtype, p->k, d, sk, hk, b, p->k_row_stride, p->k_head_stride,
                                    p->k_batch_stride, bc) &&
                   fa_bwd_encode_4d(&prm->tm_v, p->dtype, p->v, d, sk, hk, b, p->v_row_stride, p->v_head_stride,
                                    p->v_batch_stride, bc);
    if (!ok) return 0;
    /* d > 128 has no TMA-dQ instance: =2 runs its red.add one (no dq_accum map; never mode 3) */
    if (d > 128) return 1;
    if ((mode == 3 || (mode == 2 && a->atomic_dq)) && !fa_bwd_encode_dqacc(&prm->tm_dqacc, a->dq_accum, d, sq, h, b))
        return 0;
    return mode;
}

/* dq_mode: fa_bwd_sm90_pipe_prepare's 1 (red.add dQ), 2 (TMA dQ) or 3 (ordered dQ, d <= 128);
 * other deterministic calls (a.atomic_dq = 0) run the dK/dV-only instance. */
template <bool kBf16, int D>
static fa_status fa_bwd_sm90_pipe_launch(const fa_bwd_sm90_params &prm, int dq_mode, cudaStream_t stream)
{
    const fa_bwd_args &a = prm.a;
    const int kdq = dq_mode == 3 ? FA_BWD_SM90_DQ_ORDERED
                    : !a.atomic_dq ? FA_BWD_SM90_DQ_NONE
                    : dq_mode == 2 ? FA_BWD_SM90_DQ_TMA
                                   : FA_BWD_SM90_DQ_RED;
    void (*kern)(const fa_bwd_sm90_params);
    if constexpr (fa_bwd_sm90_pipe_cfg<D>::kDimSplit) /* no TMA-dQ instance (prepare never asks for one) */
        kern = kdq != FA_BWD_SM90_DQ_NONE ? fa_bwd_sm90_pipe_kernel<kBf16, D, FA_BWD_SM90_DQ_RED>
                                          : fa_bwd_sm90_pipe_kernel<kBf16, D, FA_BWD_SM90_DQ_NONE>;
    else
        kern = kdq == FA_BWD_SM90_DQ_ORDERED ? fa_bwd_sm90_pipe_kernel<kBf16, D, FA_BWD_SM90_DQ_ORDERED>
               : kdq == FA_BWD_SM90_DQ_TMA   ? fa_bwd_sm90_pipe_kernel<kBf16, D, FA_BWD_SM90_DQ_TMA>
               : kdq == FA_BWD_SM90_DQ_RED   ? fa_bwd_sm90_pipe_kernel<kBf16, D, FA_BWD_SM90_DQ_RED>
                                             : fa_bwd_sm90_pipe_kernel<kBf16, D, FA_BWD_SM90_DQ_NONE>;
    return fa_bwd_sm90_launch_grid(kern, prm, a, FA_BWD_SM90_PIPE_THREADS, fa_bwd_sm90_pipe_cfg<D>::Bc,
                                   fa_bwd_sm90_pipe_cfg<D>::smem_bytes(kdq), stream);
}

/* pipe: the pipelined kernel's parameters (its .a is ignored: a is used), or NULL for the
 * cp.async kernel; pipe_mode: fa_bwd_sm90_pipe_prepare's result. */
template <bool kBf16>
static fa_status fa_bwd_sm90_run(const fa_bwd_args &a, const fa_bwd_sm90_params *pipe, int pipe_mode,
                                 cudaStream_t stream)
{
    const int64_t pairs = a.total_q * a.heads;
    const int64_t pair_blocks = (pairs * FA_BWD_PREP_LANES + FA_BWD_PREP_THREADS - 1) / FA_BWD_PREP_THREADS;
    if (pair_blocks > 0) {
        fa_bwd_dot_do_o_kernel<kBf16><<<(unsigned)pair_blocks, FA_BWD_PREP_THREADS, 0, stream>>>(a);
        if (cudaGetLastError() != cudaSuccess) return FA_ERR_CUDA;
    }
    fa_status st;
    if (pipe != NULL) {
        fa_bwd_sm90_params prm = *pipe;
        prm.a = a;
        st = a.head_dim <= 64    ? fa_bwd_sm90_pipe_launch<kBf16, 64>(prm, pipe_mode, stream)
             : a.head_dim <= 128 ? fa_bwd_sm90_pipe_launch<kBf16, 128>(prm, pipe_mode, stream)
                                 : fa_bwd_sm90_pipe_launch<kBf16, 256>(prm, pipe_mode, stream);
    } else if (a.head_dim <= 128) {
        st = a.head_dim <= 64 ? fa_bwd_sm90_launch<kBf16, 64>(a, stream) : fa_bwd_sm90_launch<kBf16, 128>(a, stream);
    } else {
        return FA_ERR_UNSUPPORTED; /* d > 128: the pipelined kernel only (fa_bwd_sm90 returned before this without it) */
    }
    if (st != FA_OK) return st;
    /* deterministic: the ordered dQ pass, unless the ORDERED instance added dQ into dq_accum */
    if (!a.atomic_dq && pipe_mode != 3) return fa_bwd_run_dq_pass(a, kBf16, stream);
    if (pair_blocks > 0) {
        fa_bwd_dq_convert_kernel<kBf16><<<(unsigned)pair_blocks, FA_BWD_PREP_THREADS, 0, stream>>>(a);
        if (cudaGetLastError() != cudaSuccess) return FA_ERR_CUDA;
    }
    return FA_OK;
}

/* a: fa_bwd_fill_args(p); *prm: filled where the result is not 0. The pipelined mode (0 none,
 * fa_bwd_sm90_pipe_prepare's), with a's ordered-dQ fields set only where mode 3 runs. */
static int fa_bwd_sm90_plan(const fa_params *p, fa_bwd_args *a, fa_bwd_sm90_params *prm)
{
    const int ordered = fa_bwd_sm90_ordered_args(p, a);
    const int mode = fa_bwd_sm90_pipe_prepare(p, a, prm);
    if (ordered && mode != 3) { /* maps not encodable: back to the dK/dV + ordered dQ pass path */
        a->dq_accum = NULL;
        a->dq_sem = NULL;
        a->dq_sem_rows = 0;
    }
    return mode;
}

int fa_bwd_sm90_pipe_takes(const fa_params *p)
{
    if (fa_bwd_sm90_bucket_checked(p) == 0) return 0;
    fa_bwd_args a;
    fa_bwd_fill_args(p, &a);
    fa_bwd_sm90_params prm;
    const int mode = fa_bwd_sm90_plan(p, &a, &prm);
    return mode == 3 ? 3 : mode == 2 && a.atomic_dq ? 2 : mode != 0;
}

fa_status fa_bwd_sm90(const fa_params *p, void *stream)
{
    const int bucket = fa_bwd_sm90_bucket_checked(p);
    if (bucket == 0) return FA_ERR_UNSUPPORTED;
    fa_bwd_args a;
    fa_bwd_fill_args(p, &a);
    cudaStream_t s = (cudaStream_t)stream;
    fa_bwd_sm90_params prm; /* 5 tensor maps + args, < 1 KB: on the host stack, copied into the launch */
    const int pipe_mode = fa_bwd_sm90_plan(p, &a, &prm);
    if (bucket == 256 && pipe_mode == 0) return FA_ERR_UNSUPPORTED; /* fa_bwd_sm90_can_run's answer */
    const fa_bwd_sm90_params *pipe = pipe_mode != 0 ? &prm : NULL;
    return p->dtype == FA_BF16 ? fa_bwd_sm90_run<true>(a, pipe, pipe_mode, s)
                               : fa_bwd_sm90_run<false>(a, pipe, pipe_mode, s);
}
