/* fa_bwd_sm90.cu - host side of the Hopper backward, its run path: the three passes on the
 * caller's stream (no allocation, no host synchronization):
 *   1. fa_bwd_dot_do_o_kernel (fa_bwd_prep.cuh, shared with sm80): D = rowsum(dO o O) into the
 *      workspace, dq_accum zeroed (the tiled one of d > 128 too, by a flat walk);
 *   2. fa_bwd_sm90_kernel<kBf16, D, kDq = atomic_dq>: dK, dV per key block, dS K added into dq_accum (not when
 *      deterministic: float atomics add in a varying order);
 *   3. fa_bwd_dq_convert_kernel (fa_bwd_prep.cuh): dq = scale * dq_accum in the params dtype (d > 128:
 *      fa_bwd_dq_convert_tiled_kernel, fa_bwd_sm90_dq_tiled.cuh);
 *      deterministic: the sm80 path's ordered dQ kernel instead (fa_bwd_run_dq_pass, fa_bwd_api.cu),
 *      which recomputes S and dP per query block and sums over the keys in a fixed order, unless an
 *      ORDERED instance added dQ in key-block order (d <= 128, softcap / ALiBi ones too; d > 128 unless
 *      FLASH_ATTN_C_SM90_BWD_DET256=0, into the tiled buffer): then the convert as above.
 * Workspace layout: the sm80 backward's (fa_bwd_host.h), with dq_accum tiled and larger at d > 128
 * (atomic dQ: fa_bwd_sm90_dq_tiled.cuh, sized by fa_bwd_sm90_workspace_bytes).
 * Whether a call runs here (fa_bwd_sm90_can_run), its workspace, and whether pass 2 runs the
 * pipelined kernel instead, with which dQ mode and tensor maps (fa_bwd_sm90_plan): in
 * fa_bwd_sm90_plan.cu. This file holds what references the kernels (each instance is compiled in
 * this translation unit alone): their image test, their launches and the passes.
 */
#include <cuda_runtime.h>
#include <stdint.h>

#include "flash_attn_c.h"
#include "fa_bwd_args.cuh"
#include "fa_bwd_host.h"
#include "fa_bwd_launch.cuh"
#include "fa_bwd_prep.cuh"
#include "fa_bwd_sm90.cuh"
#include "fa_bwd_sm90_dq_tiled.cuh"
#include "fa_bwd_sm90_kernel.cuh"
#include "fa_bwd_sm90_pipe_kernel.cuh"
#include "fa_bwd_sm90_pipe80.cuh"      /* the Br = 80 tile and config (its kernels, modes 4 and 7: pipe_kernel.cuh) */
#include "fa_bwd_sm90_pipe80_host.h"   /* FA_BWD_SM90_PIPE_MODE_*, FA_BWD_SM90_PIPE80_BR / 128_BR */
#include "fa_bwd_sm90_plan.h"

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

int fa_bwd_sm90_has_image(int bucket, fa_dtype dtype)
{
    const bool bf = dtype == FA_BF16;
    if (bucket == 64) return bf ? fa_bwd_sm90_has_image_dtype<true, 64>() : fa_bwd_sm90_has_image_dtype<false, 64>();
    if (bucket == 128) return bf ? fa_bwd_sm90_has_image_dtype<true, 128>() : fa_bwd_sm90_has_image_dtype<false, 128>();
    if (bucket == 256) return bf ? fa_bwd_sm90_has_image_d256<true>() : fa_bwd_sm90_has_image_d256<false>();
    return 0;
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

/* ---- the pipelined kernel's launch (its mode and tensor maps: fa_bwd_sm90_plan.cu) --------- */

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

/* The Br = 80 kernel (fa_bwd_sm90_pipe80.cuh, pipelined mode 4: TMA dQ at d in (64, 128]). prm: the
 * maps of fa_bwd_sm90_pipe_prepare under that mode (Q / dO boxes of Br rows, dq_accum boxes {32, Br}). */
template <bool kBf16>
static fa_status fa_bwd_sm90_pipe80_launch(const fa_bwd_sm90_params &prm, cudaStream_t stream)
{
    static_assert(fa_bwd_sm90_pipe80_cfg::Br == FA_BWD_SM90_PIPE80_BR, "the plan's boxes are the kernel's Br rows");
    return fa_bwd_sm90_launch_grid(fa_bwd_sm90_pipe80_kernel<kBf16>, prm, prm.a, FA_BWD_SM90_PIPE_THREADS,
                                   fa_bwd_sm90_pipe80_cfg::Bc, fa_bwd_sm90_pipe80_cfg::kSmemBytes, stream);
}

/* The ORDERED instances of the Br = 80 and Br = 128 tiles (pipelined modes 7, 8; the deterministic
 * default, fa_bwd_sm90_ordered.h): prm as for their atomic twins, plus a.dq_sem laid out per Br
 * query rows (fa_bwd_sm90_ordered_rows). A counter layout of other rows would make the turns wait
 * on the wrong counters: refused (the plan never asks for it). */
template <bool kBf16>
static fa_status fa_bwd_sm90_pipe_ordered_br_launch(const fa_bwd_sm90_params &prm, int pipe_mode, cudaStream_t stream)
{
    using Cfg128 = fa_bwd_sm90_pipe_cfg<64, FA_KERNEL_BWD_SM90_PIPE128>;
    if (pipe_mode == FA_BWD_SM90_PIPE_MODE_BR80_ORDERED) {
        if (prm.a.dq_sem == NULL || prm.a.dq_sem_rows != fa_bwd_sm90_pipe80_cfg::Br) return FA_ERR_UNSUPPORTED;
        return fa_bwd_sm90_launch_grid(fa_bwd_sm90_pipe80_ordered_kernel<kBf16>, prm, prm.a, FA_BWD_SM90_PIPE_THREADS,
                                       fa_bwd_sm90_pipe80_cfg::Bc, fa_bwd_sm90_pipe80_cfg::kSmemBytes, stream);
    }
    if (prm.a.dq_sem == NULL || prm.a.dq_sem_rows != Cfg128::Br) return FA_ERR_UNSUPPORTED;
    return fa_bwd_sm90_launch_grid(fa_bwd_sm90_pipe128_kernel<kBf16, FA_BWD_SM90_DQ_ORDERED>, prm, prm.a,
                                   FA_BWD_SM90_PIPE_THREADS, Cfg128::Bc, Cfg128::smem_bytes(FA_BWD_SM90_DQ_ORDERED),
                                   stream);
}

/* The ORDERED instance of the d in (128, 256] dim-split kernel (pipelined mode
 * FA_BWD_SM90_PIPE_MODE_D256_ORDERED, default, FLASH_ATTN_C_SM90_BWD_DET256=0 opts out; fa_bwd_sm90_dsplit_order.cuh):
 * prm as for its red.add twin, plus a.dq_accum (tiled) and a.dq_sem laid out per 64 query rows
 * (fa_bwd_sm90_ordered_args). Other rows would make the turns wait on the wrong counters: refused. */
template <bool kBf16>
static fa_status fa_bwd_sm90_pipe_d256_ordered_launch(const fa_bwd_sm90_params &prm, cudaStream_t stream)
{
    using Cfg = fa_bwd_sm90_pipe_cfg<256>;
    static_assert(Cfg::Br == FA_BWD_DQ_TILE_ROWS, "one turn counter per tile of the tiled dq_accum");
    if (prm.a.dq_sem == NULL || prm.a.dq_accum == NULL || prm.a.dq_sem_rows != Cfg::Br) return FA_ERR_UNSUPPORTED;
    return fa_bwd_sm90_launch_grid(fa_bwd_sm90_pipe_kernel<kBf16, 256, FA_BWD_SM90_DQ_ORDERED>, prm, prm.a,
                                   FA_BWD_SM90_PIPE_THREADS, Cfg::Bc, Cfg::smem_bytes(FA_BWD_SM90_DQ_ORDERED), stream);
}

/* The FEAT instance (softcap / ALiBi; D = 64, 128: Br = 64; 256: the dim split): pipelined mode
 * FA_BWD_SM90_PIPE_MODE_FEAT (TMA dQ; at D = 256 red.add into the tiled dq_accum) or _FEAT_ORDERED
 * (prm.a.dq_sem laid out per Br = 64 query rows, as for modes 3 and 9; other rows would make the
 * turns wait on the wrong counters: refused). prm as for fa_bwd_sm90_pipe_kernel<kBf16, D, kDq>,
 * whose shared memory it has. */
template <bool kBf16, int D>
static fa_status fa_bwd_sm90_pipe_feat_launch(const fa_bwd_sm90_params &prm, int pipe_mode, cudaStream_t stream)
{
    using Cfg = fa_bwd_sm90_pipe_cfg<D>;
    if (pipe_mode == FA_BWD_SM90_PIPE_MODE_FEAT_ORDERED) {
        if (prm.a.dq_sem == NULL || prm.a.dq_accum == NULL || prm.a.dq_sem_rows != Cfg::Br) return FA_ERR_UNSUPPORTED;
        return fa_bwd_sm90_launch_grid(fa_bwd_sm90_pipe_feat_kernel<kBf16, D, FA_BWD_SM90_DQ_ORDERED>, prm, prm.a,
                                       FA_BWD_SM90_PIPE_THREADS, Cfg::Bc, Cfg::smem_bytes(FA_BWD_SM90_DQ_ORDERED),
                                       stream);
    }
    constexpr int kDq = Cfg::kDimSplit ? FA_BWD_SM90_DQ_RED : FA_BWD_SM90_DQ_TMA; /* d = 256: no TMA-dQ instance */
    return fa_bwd_sm90_launch_grid(fa_bwd_sm90_pipe_feat_kernel<kBf16, D, kDq>, prm, prm.a, FA_BWD_SM90_PIPE_THREADS,
                                   Cfg::Bc, Cfg::smem_bytes(kDq), stream);
}

/* The Br = 128 instances at d <= 64 (fa_bwd_sm90_pipe128.cuh; pipelined modes 5 red.add dQ, 6 TMA dQ).
 * prm: the maps of fa_bwd_sm90_pipe_prepare under that mode (Q / dO boxes of Br rows, dq_accum boxes
 * {32, 64}). */
template <bool kBf16>
static fa_status fa_bwd_sm90_pipe128_launch(const fa_bwd_sm90_params &prm, int pipe_mode, cudaStream_t stream)
{
    using Cfg = fa_bwd_sm90_pipe_cfg<64, FA_KERNEL_BWD_SM90_PIPE128>;
    static_assert(Cfg::Br == FA_BWD_SM90_PIPE128_BR, "the plan's boxes are the kernel's Br rows");
    const int kdq = pipe_mode == FA_BWD_SM90_PIPE_MODE_BR128_TMA ? FA_BWD_SM90_DQ_TMA : FA_BWD_SM90_DQ_RED;
    void (*kern)(const fa_bwd_sm90_params) = kdq == FA_BWD_SM90_DQ_TMA
                                                 ? fa_bwd_sm90_pipe128_kernel<kBf16, FA_BWD_SM90_DQ_TMA>
                                                 : fa_bwd_sm90_pipe128_kernel<kBf16, FA_BWD_SM90_DQ_RED>;
    return fa_bwd_sm90_launch_grid(kern, prm, prm.a, FA_BWD_SM90_PIPE_THREADS, Cfg::Bc, Cfg::smem_bytes(kdq), stream);
}

/* pipe: the pipelined kernel's parameters (its .a is ignored: a is used), or NULL for the
 * cp.async kernel; pipe_mode: fa_bwd_sm90_pipe_prepare's result. */
template <bool kBf16>
static fa_status fa_bwd_sm90_run(const fa_bwd_args &a, const fa_bwd_sm90_params *pipe, int pipe_mode,
                                 cudaStream_t stream)
{
    const int64_t pairs = a.total_q * a.heads;
    const int64_t pair_blocks = (pairs * FA_BWD_PREP_LANES + FA_BWD_PREP_THREADS - 1) / FA_BWD_PREP_THREADS;
    /* d > 128 with atomic dQ (or an ORDERED instance, mode D256_ORDERED or FEAT_ORDERED): the dim-split tile adds
     * into the tiled dq_accum (the plan checked the workspace holds it), cleared here, not by the
     * first pass's row-major walk */
    const bool tiled = pipe != NULL && a.head_dim > 128 && a.dq_accum != NULL &&
                       (a.atomic_dq || pipe_mode == FA_BWD_SM90_PIPE_MODE_D256_ORDERED ||
                        pipe_mode == FA_BWD_SM90_PIPE_MODE_FEAT_ORDERED);
    const int64_t tiled_floats = tiled ? fa_bwd_dq_tiled_floats(a.batch, a.heads, a.seqlen_q) : 0;
    if (pair_blocks > 0) {
        fa_bwd_dot_do_o_kernel<kBf16><<<(unsigned)pair_blocks, FA_BWD_PREP_THREADS, 0, stream>>>(a, tiled_floats / 4);
        if (cudaGetLastError() != cudaSuccess) return FA_ERR_CUDA;
    }
    fa_status st;
    if (pipe != NULL) {
        fa_bwd_sm90_params prm = *pipe;
        prm.a = a;
        st = pipe_mode == FA_BWD_SM90_PIPE_MODE_BR80 ? fa_bwd_sm90_pipe80_launch<kBf16>(prm, stream)
             : pipe_mode == FA_BWD_SM90_PIPE_MODE_BR128_RED || pipe_mode == FA_BWD_SM90_PIPE_MODE_BR128_TMA
                 ? fa_bwd_sm90_pipe128_launch<kBf16>(prm, pipe_mode, stream)
             : pipe_mode == FA_BWD_SM90_PIPE_MODE_BR80_ORDERED || pipe_mode == FA_BWD_SM90_PIPE_MODE_BR128_ORDERED
                 ? fa_bwd_sm90_pipe_ordered_br_launch<kBf16>(prm, pipe_mode, stream)
             : pipe_mode == FA_BWD_SM90_PIPE_MODE_D256_ORDERED ? fa_bwd_sm90_pipe_d256_ordered_launch<kBf16>(prm, stream)
             : FA_BWD_SM90_PIPE_MODE_IS_FEAT(pipe_mode)
                 ? (a.head_dim <= 64    ? fa_bwd_sm90_pipe_feat_launch<kBf16, 64>(prm, pipe_mode, stream)
                    : a.head_dim <= 128 ? fa_bwd_sm90_pipe_feat_launch<kBf16, 128>(prm, pipe_mode, stream)
                                        : fa_bwd_sm90_pipe_feat_launch<kBf16, 256>(prm, pipe_mode, stream))
             : a.head_dim <= 64                      ? fa_bwd_sm90_pipe_launch<kBf16, 64>(prm, pipe_mode, stream)
             : a.head_dim <= 128                     ? fa_bwd_sm90_pipe_launch<kBf16, 128>(prm, pipe_mode, stream)
                                                     : fa_bwd_sm90_pipe_launch<kBf16, 256>(prm, pipe_mode, stream);
    } else if (a.head_dim <= 128) {
        st = a.head_dim <= 64 ? fa_bwd_sm90_launch<kBf16, 64>(a, stream) : fa_bwd_sm90_launch<kBf16, 128>(a, stream);
    } else {
        return FA_ERR_UNSUPPORTED; /* d > 128: the pipelined kernel only (fa_bwd_sm90 returned before this without it) */
    }
    if (st != FA_OK) return st;
    /* deterministic: the ordered dQ pass, unless an ORDERED instance (modes 3, 7, 8, 9, 11) added dQ into
     * dq_accum */
    if (!a.atomic_dq && !FA_BWD_SM90_PIPE_MODE_ORDERED(pipe_mode)) return fa_bwd_run_dq_pass(a, kBf16, stream);
    if (tiled) {
        const int64_t blocks = tiled_floats / FA_BWD_DQ_TILE_FLOATS; /* one block per tile */
        if (blocks > 0)
            fa_bwd_dq_convert_tiled_kernel<kBf16><<<(unsigned)blocks, FA_BWD_DQ_CONVERT_THREADS, 0, stream>>>(a);
        return cudaGetLastError() == cudaSuccess ? FA_OK : FA_ERR_CUDA;
    }
    if (pair_blocks > 0) {
        fa_bwd_dq_convert_kernel<kBf16><<<(unsigned)pair_blocks, FA_BWD_PREP_THREADS, 0, stream>>>(a);
        if (cudaGetLastError() != cudaSuccess) return FA_ERR_CUDA;
    }
    return FA_OK;
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
    if (!fa_bwd_sm90_mode_runs(p, bucket, pipe_mode)) return FA_ERR_UNSUPPORTED; /* fa_bwd_sm90_can_run's answer */
    const fa_bwd_sm90_params *pipe = pipe_mode != 0 ? &prm : NULL;
    return p->dtype == FA_BF16 ? fa_bwd_sm90_run<true>(a, pipe, pipe_mode, s)
                               : fa_bwd_sm90_run<false>(a, pipe, pipe_mode, s);
}
