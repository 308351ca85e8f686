/* fa_bwd_sm90_plan.cu - host side of the Hopper backward, its decisions: whether a call runs here
 * (fa_bwd_sm90_can_run / fa_bwd_sm90_supported: head-dim bucket, scope, device, kernel image), the
 * workspace it needs (fa_bwd_sm90_workspace_bytes), and which kernel runs pass 2 with which TMA
 * tensor maps (fa_bwd_sm90_plan: fa_bwd_sm90_pipe_mode, fa_bwd_sm90_pipe_prepare; the encoders in
 * fa_bwd_sm90_tma_maps.h). The passes and launches: fa_bwd_sm90.cu, which also holds the kernel
 * image test (fa_bwd_sm90_has_image) so that no kernel is referenced, hence compiled, here.
 * Pass 2 (fa_bwd_sm90.cu) runs as fa_bwd_sm90_pipe_kernel (TMA producer warpgroup + mbarrier ring,
 * fa_bwd_sm90_pipe_kernel.cuh) for dense tensors whose strides TMA accepts, by default with dQ
 * by TMA tensor reduces of smem-staged tiles from a dQ-writer warp; everything else keeps
 * fa_bwd_sm90_kernel. FLASH_ATTN_C_SM90_BWD_PIPE picks (fa_bwd_sm90_pipe_mode): 0 = always
 * fa_bwd_sm90_kernel, 1 = the pipelined kernel with dQ by red.add from the consumers, 2 = with
 * TMA-reduce dQ (both at d = 64 and 128, atomic or deterministic dQ); unset = 2 for atomic dQ at
 * every d, and for deterministic calls the ORDERED instance below where it applies,
 * fa_bwd_sm90_kernel elsewhere. d in (128, 256] (bucket 256) has only the pipelined kernel's dim-split instance
 * (fa_bwd_sm90_pipe_dsplit.cuh, dQ by red.add under =1 and =2): taken when dQ is atomic (or
 * FLASH_ATTN_C_SM90_BWD_PIPE is 1 or 2) and the call is dense and TMA-fit (fa_bwd_sm90_can_run
 * says no otherwise, so the sm80 backward runs it). The measurements behind these defaults:
 * fa_bwd_sm90_pipe_mode.
 * Deterministic calls (dense, d <= 128, TMA-fit, and the workspace of fa_bwd_sm90_workspace_bytes)
 * run the pipelined kernel's ORDERED instance instead of dK/dV + the ordered dQ pass: dQ added into
 * dq_accum in a fixed key-block order (fa_bwd_sm90_pipe_dq_order.cuh), then the convert pass as on
 * the atomic path (fa_bwd_sm90_ordered.h): by default (since H200 run 62) the ORDERED instances of
 * the FA3-sized tiles below where their atomic twins would run (modes 7, 8), else the Br = 64 one
 * (mode 3, the default of H100 runs 54-61, everywhere under FLASH_ATTN_C_SM90_BWD_DET=ordered);
 * FLASH_ATTN_C_SM90_BWD_DET=pass keeps the dK/dV + ordered dQ pass path. Unless
 * FLASH_ATTN_C_SM90_BWD_DET256=0: deterministic dense calls at d in (128, 256] run the dim-split
 * kernel's ORDERED instance (mode FA_BWD_SM90_PIPE_MODE_D256_ORDERED, fa_bwd_sm90_dsplit_order.cuh)
 * into the tiled dq_accum, then the tiled convert; with "0" the sm80 backward takes them.
 * The FA3-sized tiles (FLASH_ATTN_C_SM90_BWD_VARIANT, default "br80,br128"; fa_bwd_sm90_pipe80_host.h):
 * the TMA-dQ calls at d in (64, 128] (scale > 0) run the Br = 80 kernel (fa_bwd_sm90_pipe80.cuh;
 * mode 4), the atomic-dQ calls at d <= 64 (scale > 0) the Br = 128 instances (fa_bwd_sm90_pipe128.cuh;
 * modes 5 red.add, 6 TMA dQ); "br64" keeps the Br = 64 tile for both (H100 run 54: 1.03-1.31x and
 * 1.19-1.47x it).
 * Softcap / ALiBi (FLASH_ATTN_C_SM90_BWD_FEAT=1, opt-in: fa_bwd_sm90_feat_ok): dense calls without
 * dropout run the FEAT instance (mode FA_BWD_SM90_PIPE_MODE_FEAT: d <= 128 the Br = 64 tile with TMA
 * dQ, d in (128, 256] the dim split with red.add dQ; deterministic calls _FEAT_ORDERED, the ordered
 * dQ of modes 3 / 9);
 * a softcap / ALiBi call that cannot is refused here (fa_bwd_sm90_can_run), so the sm80 backward runs it.
 */
#include <cuda.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "flash_attn_c.h"
#include "fa_bwd_args.cuh"
#include "fa_bwd_host.h"
#include "fa_cuda_device.h"
#include "fa_bwd_sm90.cuh"
#include "fa_bwd_sm90_dq_tiled.cuh" /* fa_bwd_dq_tiled_floats */
#include "fa_bwd_sm90_plan.h"
#include "fa_bwd_sm90_pipe_layout.cuh" /* fa_bwd_sm90_pipe_cfg, fa_bwd_sm90_params, FA_BWD_SM90_BC */
#include "fa_bwd_sm90_ordered.h"  /* fa_bwd_sm90_det_ordered, fa_bwd_sm90_ordered_args */
#include "fa_bwd_sm90_pipe80_host.h" /* Br = 80 / 128 tiles (modes 4-8): fa_bwd_sm90_fa3_tile_br, the modes */
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

static int fa_bwd_sm90_pipe_prepare(const fa_params *p, const fa_bwd_args *a, fa_bwd_sm90_params *prm);

/* A softcap / ALiBi call the FEAT instance (FA_BWD_SM90_PIPE_MODE_FEAT / _FEAT_ORDERED) may take:
 * opt-in FLASH_ATTN_C_SM90_BWD_FEAT=1 (compiled, never yet run on a GPU: the sm80 backward keeps
 * these calls until a GPU run shows parity and speed), no dropout, dense (the head-dim bucket:
 * fa_bwd_sm90_bucket_of_shape); deterministic only where an ORDERED instance runs
 * (fa_bwd_sm90_det_ordered at d <= 128, fa_bwd_sm90_det256 above: not under
 * FLASH_ATTN_C_SM90_BWD_DET=pass, which has no FEAT form, nor DET256=0 at d > 128). TMA-fit and the
 * workspace are checked later (fa_bwd_sm90_pipe_prepare). */
static int fa_bwd_sm90_feat_ok(const fa_params *p)
{
    return fa_env_flag("FLASH_ATTN_C_SM90_BWD_FEAT") && p->dropout_p == 0.f &&
           (!p->deterministic || fa_bwd_sm90_det_ordered(p) || fa_bwd_sm90_det256(p)) && p->cu_seqlens_q == NULL &&
           p->cu_seqlens_k == NULL;
}

/* The checks of fa_bwd_sm90_bucket_checked that look at neither the pointers nor the workspace (so
 * fa_bwd_sm90_workspace_bytes can ask them before there is one): the head-dim bucket when they
 * pass, else 0. */
static int fa_bwd_sm90_bucket_of_shape(const fa_params *p)
{
    if (p == NULL) return 0;
    if (p->dtype != FA_F16 && p->dtype != FA_BF16) return 0;
    /* no dropout (deterministic = 1 is fine: dK/dV are per-CTA sums in a fixed order); softcap /
     * ALiBi only where the FEAT instance may take the call */
    if (p->dropout_p != 0.f || (fa_bwd_sm90_feat_call(p) && !fa_bwd_sm90_feat_ok(p))) return 0;
    if (!isfinite(p->softmax_scale)) return 0;
    const int bucket = fa_bwd_sm90_bucket(p->head_dim);
    if (bucket == 0) return 0;
    /* lengths may be 0 (varlen batches without queries / keys); int arithmetic in the kernel */
    if (p->seqlen_k >= (1 << 30) || p->seqlen_q >= (1 << 30)) return 0;
    if (p->heads_k > 65535) return 0;
    if (fa_cuda_current_arch() != 90) return 0;
    if (!fa_bwd_sm90_has_image(bucket, p->dtype)) return 0;
    return bucket;
}

/* The checks of fa_bwd_sm90_can_run that need no tensor map: the head-dim bucket when they pass,
 * else 0. Bucket 256 and softcap / ALiBi calls need the pipelined kernel's maps on top
 * (fa_bwd_sm90_pipe_prepare), which fa_bwd_sm90_can_run encodes to decide and fa_bwd_sm90 encodes
 * again to run (host work only, a few microseconds): the run path calls this, not
 * fa_bwd_sm90_can_run. */
int fa_bwd_sm90_bucket_checked(const fa_params *p)
{
    const int bucket = fa_bwd_sm90_bucket_of_shape(p);
    /* the sm80 backward's checks: pointers, 16-byte alignment, strides % 8, grid, workspace */
    if (bucket == 0 || fa_bwd_validate(p) != FA_OK) return 0;
    return bucket;
}

int fa_bwd_sm90_can_run(const fa_params *p)
{
    const int bucket = fa_bwd_sm90_bucket_checked(p);
    if (bucket == 0) return 0;
    if (bucket != 256 && !fa_bwd_sm90_feat_call(p)) return 1; /* the cp.async kernel takes what the plan leaves */
    fa_bwd_args a;
    fa_bwd_fill_args(p, &a);
    fa_bwd_sm90_params prm;
    return fa_bwd_sm90_mode_runs(p, bucket, fa_bwd_sm90_plan(p, &a, &prm));
}

int fa_bwd_sm90_mode_runs(const fa_params *p, int bucket, int mode)
{
    /* softcap / ALiBi: only the FEAT instance computes them (TMA-fit maps; atomic dQ with
     * FLASH_ATTN_C_SM90_BWD_PIPE not 0, or the ordered dQ's counters, which mode 3 gets under
     * FLASH_ATTN_C_SM90_BWD_DET=ordered even with PIPE=0, as plain calls do) */
    if (fa_bwd_sm90_feat_call(p)) return FA_BWD_SM90_PIPE_MODE_IS_FEAT(mode);
    /* bucket 256: no cp.async kernel to fall back on, only where the pipelined kernel takes the
     * call (dense, TMA-fit, atomic dQ unless FLASH_ATTN_C_SM90_BWD_PIPE=1 / 2 asks for it, not =0:
     * fa_bwd_sm90_pipe_mode; deterministic (FLASH_ATTN_C_SM90_BWD_DET256 not 0) and its workspace:
     * the ORDERED instance) */
    return bucket != 256 || mode != 0;
}

int fa_bwd_sm90_supported(const fa_params *p)
{
    if (fa_env_off("FLASH_ATTN_C_SM90_BWD")) return 0;
    return fa_bwd_sm90_can_run(p);
}

/* Bytes of the workspace when the call's dQ goes into the tiled dq_accum of the d > 128 tile
 * (dense, atomic dQ; fa_bwd_sm90_dq_tiled.cuh): dpsum, then the tiled buffer at dq_accum's place;
 * 0 for calls the tile cannot take (fa_bwd_sm90_bucket_of_shape: asked before there is a
 * workspace), which would pay up to 256 / d x the padding of whole 64-row blocks for nothing. */
static size_t fa_bwd_sm90_tiled_need(const fa_params *p)
{
    if (p->deterministic || p->cu_seqlens_q != NULL || p->cu_seqlens_k != NULL || fa_bwd_sm90_bucket_of_shape(p) != 256)
        return 0;
    const size_t dpsum = fa_bwd_dpsum_bytes(p);
    if (dpsum == 0) return 0;
    return dpsum + (size_t)fa_bwd_dq_tiled_floats(p->batch, p->heads, p->seqlen_q) * sizeof(float);
}

/* The ordered dQ needs dq_accum and the turn counters besides dpsum (fa_bwd_host.h); the d > 128
 * tile a tiled dq_accum (larger than the row-major one: whole 64-row blocks of 256 dims). */
size_t fa_bwd_sm90_workspace_bytes(const fa_params *p)
{
    size_t need = fa_bwd_workspace_need(p);
    if (p == NULL) return need;
    const size_t tiled = fa_bwd_sm90_tiled_need(p);
    if (tiled > need) need = tiled;
    /* d > 128, deterministic, FLASH_ATTN_C_SM90_BWD_DET256 not 0: the tiled dq_accum + counters (only
     * for the shapes the sm90 kernels take: a dropout or fp32 call runs sm80, which needs neither) */
    if (fa_bwd_sm90_det256(p) && fa_bwd_sm90_bucket_of_shape(p) == 256) {
        size_t sem_at;
        const size_t d256 = fa_bwd_sm90_det256_need(p, &sem_at);
        return d256 > need ? d256 : need;
    }
    if (!fa_bwd_sm90_det_ordered(p)) return need;
    const size_t ordered = fa_bwd_ordered_dq_need(p, fa_bwd_sm90_ordered_rows(p));
    return ordered > need ? ordered : need;
}

/* ---- the pipelined kernel: its mode and tensor maps (fa_bwd_sm90_tma_maps.h; launch: fa_bwd_sm90.cu) */

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
 * dQ's counters (fa_bwd_sm90_ordered_args: deterministic, FLASH_ATTN_C_SM90_BWD_DET not "pass",
 * dense, d <= 128, workspace large enough; fa_bwd_sm90_pipe_prepare picks the tile). */
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
 * own Br (fa_bwd_sm90_pipe_cfg: 64 at every bucket, not the cp.async kernel's 128 at d = 64; 80 and
 * {32, 80} dq_accum boxes where 4, the Br = 80 kernel, runs), the K / V boxes its Bc (128; 64 at
 * bucket 256).
 * a: fa_bwd_fill_args(p). */
static int fa_bwd_sm90_pipe_prepare(const fa_params *p, const fa_bwd_args *a, fa_bwd_sm90_params *prm)
{
    const int mode = fa_bwd_sm90_pipe_mode(a);
    if (mode == 0) return 0;
    if (p->cu_seqlens_q != NULL || p->cu_seqlens_k != NULL || fa_sm90_encode_tiled() == NULL) return 0;
    memset(prm, 0, sizeof(*prm));
    /* softcap / ALiBi: the FEAT instance whatever =1 / =2 says (d <= 128 TMA dQ, d > 128 red.add), or
     * (mode 3, the ordered dQ's counters laid out for 64 rows: fa_bwd_sm90_ordered_mode / det256) its
     * ORDERED form; or none */
    const int feat = fa_bwd_sm90_feat_call(p);
    if (feat && (!fa_bwd_sm90_feat_ok(p) || !(a->atomic_dq || mode == 3))) return 0;
    /* the FA3-sized tiles (FLASH_ATTN_C_SM90_BWD_VARIANT, default both; fa_bwd_sm90_pipe80_host.h): the
     * TMA-dQ call at d in (64, 128] runs the Br = 80 kernel, the atomic-dQ calls (red.add or TMA) at
     * d <= 64 the Br = 128 instances */
    const int fa3 = a->atomic_dq && !feat ? fa_bwd_sm90_fa3_tile_br(p->head_dim, p->softmax_scale) : 0;
    const int br80 = mode == 2 && fa3 == FA_BWD_SM90_PIPE80_BR;
    const int br128 = (mode == 1 || mode == 2) && fa3 == FA_BWD_SM90_PIPE128_BR;
    /* deterministic (unset or FLASH_ATTN_C_SM90_BWD_DET=ordered_br): the ORDERED instances of those
     * tiles (modes 7, 8), named by the rows of the turn counters fa_bwd_sm90_ordered_args laid out
     * (fa_bwd_sm90_ordered_rows) */
    const int ord80 = mode == 3 && a->dq_sem_rows == FA_BWD_SM90_PIPE80_BR;
    const int ord128 = mode == 3 && a->dq_sem_rows == FA_BWD_SM90_PIPE128_BR;
    const int br = br80 || ord80        ? FA_BWD_SM90_PIPE80_BR
                   : br128 || ord128    ? FA_BWD_SM90_PIPE128_BR
                   : p->head_dim <= 64  ? fa_bwd_sm90_pipe_cfg<64>::Br
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
    /* d > 128 has no TMA-dQ instance: =2 runs its red.add one (no dq_accum map), into
     * the tiled dq_accum: a workspace sized for the row-major one only (a caller that did not ask
     * fa_bwd_sm90_workspace_bytes) cannot take it */
    if (d > 128) {
        /* mode 3 here: fa_bwd_sm90_ordered_args laid out the tiled dq_accum and counters of 64 rows
         * (FLASH_ATTN_C_SM90_BWD_DET256 not 0): the dim-split kernel's ORDERED instance (its FEAT
         * form for softcap / ALiBi) */
        if (mode == 3)
            return a->dq_sem_rows != FA_BWD_DQ_TILE_ROWS ? 0
                   : feat                                ? FA_BWD_SM90_PIPE_MODE_FEAT_ORDERED
                                                         : FA_BWD_SM90_PIPE_MODE_D256_ORDERED;
        const int tiled_ok = p->workspace_bytes >= fa_bwd_sm90_tiled_need(p);
        if (feat) return a->atomic_dq && tiled_ok ? FA_BWD_SM90_PIPE_MODE_FEAT : 0; /* red.add into the tiled buffer */
        return !a->atomic_dq || tiled_ok;
    }
    if ((feat || mode == 3 || (mode == 2 && a->atomic_dq)) &&
        !fa_bwd_encode_dqacc(&prm->tm_dqacc, a->dq_accum, d, sq, h, b, br80 || ord80 ? br : 64))
        return 0;
    /* d <= 128 here, Br = 64 above (ord80 / ord128 are 0: 64 counter rows) */
    if (feat) return mode == 3 ? FA_BWD_SM90_PIPE_MODE_FEAT_ORDERED : FA_BWD_SM90_PIPE_MODE_FEAT;
    if (ord80) return FA_BWD_SM90_PIPE_MODE_BR80_ORDERED;
    if (ord128) return FA_BWD_SM90_PIPE_MODE_BR128_ORDERED;
    if (br128) return mode == 2 ? FA_BWD_SM90_PIPE_MODE_BR128_TMA : FA_BWD_SM90_PIPE_MODE_BR128_RED;
    return br80 ? FA_BWD_SM90_PIPE_MODE_BR80 : mode;
}

/* a: fa_bwd_fill_args(p); *prm: filled where the result is not 0. The pipelined mode (0 none,
 * fa_bwd_sm90_pipe_prepare's), with a's ordered-dQ fields set only where mode 3, 7, 8, 9 or 11 runs. */
int fa_bwd_sm90_plan(const fa_params *p, fa_bwd_args *a, fa_bwd_sm90_params *prm)
{
    const int ordered = fa_bwd_sm90_ordered_args(p, a);
    const int mode = fa_bwd_sm90_pipe_prepare(p, a, prm);
    /* maps not encodable: back to the dK/dV + ordered dQ pass path */
    if (ordered && !FA_BWD_SM90_PIPE_MODE_ORDERED(mode)) {
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
    if (FA_BWD_SM90_PIPE_MODE_FA3(mode) || mode == FA_BWD_SM90_PIPE_MODE_D256_ORDERED ||
        FA_BWD_SM90_PIPE_MODE_IS_FEAT(mode))
        return mode;
    return mode == 3 ? 3 : mode == 2 && a.atomic_dq ? 2 : mode != 0;
}
