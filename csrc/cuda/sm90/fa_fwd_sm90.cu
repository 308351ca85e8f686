/* fa_fwd_sm90.cu - host side of the Hopper forward: when it applies (fa_fwd_sm90_can_run), the
 * TMA tensor maps of Q, K, V (and O for dense calls), and the dispatch on the head-dim bucket
 * (fa_fwd_sm90_hdim<D>.cu). Which grid / tile / instance a call takes: fa_fwd_sm90_route.cuh.
 * The tensor-map encoder: fa_sm90_tma_host.h.
 */
#include <cuda.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "flash_attn_c.h"
#include "fa_cuda_device.h"
#include "fa_fwd_sm90.cuh"
#include "fa_fwd_sm90_args.cuh"
#include "fa_fwd_sm90_route.cuh"  /* bucket, grid, tile and instance predicates */
#include "fa_sm90_tma_host.h"  /* fa_sm90_encode_tiled, fa_sm90_tma_stride_ok */

static int fa_sm90_has_image(int bucket, fa_dtype dtype)
{
    switch (bucket) {
    case 64: return fa_fwd_sm90_has_image_hdim<64>(dtype);
    case 128: return fa_fwd_sm90_has_image_hdim<128>(dtype);
    case 256: return fa_fwd_sm90_has_image_hdim<256>(dtype);
    default: return 0;
    }
}

static int fa_sm90_aligned16(const void *ptr)
{
    return ((uintptr_t)ptr & 15u) == 0;
}

int fa_fwd_sm90_can_run(const fa_params *p)
{
    if (p == NULL) return 0;
    if (p->dtype != FA_F16 && p->dtype != FA_BF16) return 0;
    /* no probabilities; softcap and ALiBi run the kFeat variant, dropout its dense kDrop instance
     * (the varlen end-aligned tile breaks its 16-key Philox groups: fa_fwd_sm90_dropout.cuh) */
    if (p->p != NULL) return 0;
    if (p->dropout_p != 0.f && p->cu_seqlens_q != NULL) return 0;
    if (!(p->softmax_scale > 0.f) || !isfinite(p->softmax_scale)) return 0;
    const int bucket = fa_sm90_bucket(p->head_dim);
    if (bucket == 0) return 0;
    if (p->q == NULL || p->k == NULL || p->v == NULL || p->o == NULL || p->lse == NULL) return 0;
    if (!fa_sm90_aligned16(p->q) || !fa_sm90_aligned16(p->k) || !fa_sm90_aligned16(p->v) ||
        !fa_sm90_aligned16(p->o))
        return 0;
    const int varlen = p->cu_seqlens_q != NULL;
    if (varlen != (p->cu_seqlens_k != NULL)) return 0;
    /* KV-cache addressing is the split-KV kernel's (fa_fwd_cuda routes it there first); refused
     * here too, so a direct call cannot read a cache as if it were packed */
    if (fa_params_uses_kv_cache(p)) return 0;
    if (p->batch < 1 || p->batch > 65535 || p->heads < 1 || p->heads > 65535 || p->heads_k < 1 ||
        p->heads % p->heads_k != 0)
        return 0;
    if (p->seqlen_q < 1 || p->seqlen_q >= (1 << 30) || p->seqlen_k < 1 || p->seqlen_k >= (1 << 30)) return 0;
    if (varlen && (p->total_q < 1 || p->total_q >= ((int64_t)1 << 31))) return 0;
    /* row and head strides are TMA strides; O's need 16-byte alignment for the stores */
    if (!fa_sm90_tma_stride_ok(p->q_row_stride) || !fa_sm90_tma_stride_ok(p->k_row_stride) ||
        !fa_sm90_tma_stride_ok(p->v_row_stride) || p->o_row_stride % 8 != 0 || p->o_head_stride % 8 != 0)
        return 0;
    if ((p->heads > 1 && !fa_sm90_tma_stride_ok(p->q_head_stride)) ||
        (p->heads_k > 1 && (!fa_sm90_tma_stride_ok(p->k_head_stride) || !fa_sm90_tma_stride_ok(p->v_head_stride))))
        return 0;
    if (!varlen && (p->o_batch_stride % 8 != 0 ||
                    (p->batch > 1 && (!fa_sm90_tma_stride_ok(p->q_batch_stride) || !fa_sm90_tma_stride_ok(p->k_batch_stride) ||
                                      !fa_sm90_tma_stride_ok(p->v_batch_stride)))))
        return 0;
    /* dense O is written by TMA stores (tm_o): its strides are TMA strides too, where the
     * dimension has more than one element (extent 1: fa_sm90_stride_or below) */
    if (!varlen && ((p->seqlen_q > 1 && !fa_sm90_tma_stride_ok(p->o_row_stride)) ||
                    (p->heads > 1 && !fa_sm90_tma_stride_ok(p->o_head_stride)) ||
                    (p->batch > 1 && !fa_sm90_tma_stride_ok(p->o_batch_stride))))
        return 0;
    /* the device: Hopper (9.0) exactly, and the binary holds the sm_90a kernels */
    if (fa_cuda_current_arch() != 90) return 0;
    if (fa_sm90_encode_tiled() == NULL) return 0;
    return fa_sm90_has_image(bucket, p->dtype);
}

int fa_fwd_sm90_supported(const fa_params *p)
{
    /* On by default since GPU run 3 (H200: harness 246/0, full GPU suite); FLASH_ATTN_C_SM90=0
       selects the sm80 kernels, e.g. to compare the two. */
    if (fa_env_off("FLASH_ATTN_C_SM90")) return 0;
    /* Softcap / ALiBi on the sm90 kernel (its kFeat variant): on by default since GPU runs
       28-32 (H100: tests/test_sm90_feat.py 76/76, the harness's feat cases under memcheck and
       racecheck; benchmarks/sm90_feat_cost.py: softcap 1.21-1.57x the sm80 kernel's TFLOP/s at
       d = 128, 1.58-1.91x at d = 256); FLASH_ATTN_C_SM90_FEAT=0 sends those calls to the sm80
       kernels. */
    if ((p->softcap != 0.f || p->alibi_slopes != NULL) && fa_env_off("FLASH_ATTN_C_SM90_FEAT")) return 0;
    /* Dropout on the sm90 kernel (kDrop, dense): on by default since H100 run 54 (dev/fwd_sm90
       -k drop: 111 / 111, compute-sanitizer racecheck / memcheck clean; run 57: 1.36x the sm80
       kernel's TFLOP/s, geomean over 18 shapes); FLASH_ATTN_C_SM90_FWD_DROPOUT=0 sends those calls
       to the sm80 kernels. */
    if (p->dropout_p != 0.f && fa_env_off("FLASH_ATTN_C_SM90_FWD_DROPOUT")) return 0;
    return fa_fwd_sm90_can_run(p);
}

/* A stride that TMA accepts for a dimension of extent 1 whose stride the caller left as is (it is
 * never stepped over): keep it when valid, else the next-outer natural value. */
static int64_t fa_sm90_stride_or(int64_t stride, int64_t fallback)
{
    return fa_sm90_tma_stride_ok(stride) ? stride : fallback;
}

/* Encodes a tensor map of b16 elements: dims[0] = d (contiguous), strides in elements for
 * dims 1..rank-1, box = {64, box_rows, 1, ...}, 128-byte swizzle, out-of-bounds -> zeros. */
static int fa_sm90_encode(CUtensorMap *map, fa_dtype dtype, const void *base, int rank, const int64_t *dims,
                          const int64_t *strides, int box_rows)
{
    cuuint64_t gdim[4], gstride[3];
    cuuint32_t box[4], estride[4];
    for (int i = 0; i < rank; ++i) {
        gdim[i] = (cuuint64_t)dims[i];
        box[i] = i == 0 ? 64u : i == 1 ? (cuuint32_t)box_rows : 1u;
        estride[i] = 1u;
    }
    for (int i = 0; i < rank - 1; ++i) gstride[i] = (cuuint64_t)strides[i] * 2u;
    const CUtensorMapDataType ty =
        dtype == FA_BF16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
    const CUresult r = fa_sm90_encode_tiled()(map, ty, (cuuint32_t)rank, (void *)base, gdim, gstride, box, estride,
                                         CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                                         CU_TENSOR_MAP_L2_PROMOTION_L2_128B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    return r == CUDA_SUCCESS;
}

int fa_fwd_sm90_persist_ctas(const fa_params *p)
{
    if (!fa_fwd_sm90_can_run(p)) return 0;
    switch (fa_sm90_bucket(p->head_dim)) {
    case 64: return fa_sm90_persist_ctas_for<64>(p, fa_sm90_plain_br<64>(p));
    case 128: return fa_sm90_persist_ctas_for<128>(p, fa_sm90_plain_br<128>(p));
    case 256: return fa_sm90_persist_ctas_for<256>(p, fa_sm90_plain_br<256>(p));
    default: return 0;
    }
}

int fa_fwd_sm90_cap_slim(const fa_params *p)
{
    if (!fa_fwd_sm90_can_run(p) || p->softcap <= 0.f) return 0;
    const int set = fa_sm90_feat_set_of(1, p->alibi_slopes != NULL, p->dropout_p != 0.f);
    fa_fwd_args a;  /* the launcher's softcap_log2, from the same fill */
    return fa_fwd_fill_args(p, &a) == FA_OK && fa_sm90_cap_slim(p, set, a.softcap_log2);
}

int fa_fwd_sm90_persist_group(const fa_params *p)
{
    return fa_fwd_sm90_persist_ctas(p) > 0 ? fa_sm90_persist_group_for(p) : 0;
}

template <int D>
static fa_status fa_sm90_build_and_launch(const fa_params *p, cudaStream_t stream)
{
    typedef fa_sm90_tile<D> T;
    const int varlen = p->cu_seqlens_q != NULL;
    /* the Q box is the launched instance's Br (fa_fwd_sm90_launch_dtype picks it by the same
     * fa_sm90_feat_set_of; dropout alone runs in the DROP instance, with a feature in ANY) */
    const int set = fa_sm90_feat_set_of(p->softcap > 0.f, p->alibi_slopes != NULL, p->dropout_p != 0.f);
    const int small_br = fa_sm90_small_br<D>(p);  /* read once: the Q box, the items and the launcher agree */
    const int br = set == FA_SM90_FEAT_ANY     ? fa_sm90_tile<D, true, FA_SM90_FEAT_ANY>::kBr
                   : set == FA_SM90_FEAT_CAP   ? fa_sm90_tile<D, true, FA_SM90_FEAT_CAP>::kBr
                   : set == FA_SM90_FEAT_ALIBI ? fa_sm90_tile<D, true, FA_SM90_FEAT_ALIBI>::kBr
                   : set == FA_SM90_FEAT_DROP  ? fa_sm90_tile<D, true, FA_SM90_FEAT_DROP>::kBr
                   : small_br                  ? T::kRow.feat_br
                                               : T::kBr;
    fa_sm90_params prm;
    memset(&prm, 0, sizeof(prm));
    const fa_status filled = fa_fwd_fill_args(p, &prm.a);
    if (filled != FA_OK) return filled;
    prm.varlen = varlen;
    prm.persist_ctas = fa_sm90_persist_ctas_for<D>(p, br);
    if (prm.persist_ctas > 0) {
        const int items = (int)((p->seqlen_q + br - 1) / br * p->heads * p->batch);  /* fits: above */
        prm.persist_group = fa_sm90_persist_group_for(p);
        prm.persist_paired = fa_sm90_persist_paired(items, prm.persist_ctas);
    }
    prm.small_br = small_br;
    prm.wide = !prm.small_br && fa_sm90_wide<D>(p, set, prm.persist_ctas);
    prm.cap_slim = fa_sm90_cap_slim(p, set, prm.a.softcap_log2);  /* CAP's tile: the same boxes */
    /* the K / V boxes: the launched instance's Bc (the kFeat variant shares the row's bc) */
    const int bc = prm.wide ? fa_sm90_tile<D, false, FA_SM90_FEAT_ANY, true>::kBc : T::kBc;

    const int64_t d = p->head_dim, h = p->heads, hk = p->heads_k;
    int ok;
    if (varlen) {
        const int64_t qd[3] = {d, p->total_q, h};
        const int64_t qs[2] = {p->q_row_stride, fa_sm90_stride_or(p->q_head_stride, p->q_row_stride * p->total_q)};
        const int64_t kd[3] = {d, FA_SM90_VARLEN_ROWS, hk};
        const int64_t ks[2] = {p->k_row_stride, fa_sm90_stride_or(p->k_head_stride, p->k_row_stride)};
        const int64_t vs[2] = {p->v_row_stride, fa_sm90_stride_or(p->v_head_stride, p->v_row_stride)};
        ok = fa_sm90_encode(&prm.tm_q, p->dtype, p->q, 3, qd, qs, br) &&
             fa_sm90_encode(&prm.tm_k, p->dtype, p->k, 3, kd, ks, bc) &&
             fa_sm90_encode(&prm.tm_v, p->dtype, p->v, 3, kd, vs, bc);
    } else {
        const int64_t sq = p->seqlen_q, sk = p->seqlen_k, b = p->batch;
        const int64_t qd[4] = {d, sq, h, b};
        const int64_t kd[4] = {d, sk, hk, b};
        const int64_t q_hs = fa_sm90_stride_or(p->q_head_stride, p->q_row_stride * sq);
        const int64_t k_hs = fa_sm90_stride_or(p->k_head_stride, p->k_row_stride * sk);
        const int64_t v_hs = fa_sm90_stride_or(p->v_head_stride, p->v_row_stride * sk);
        const int64_t qs[3] = {p->q_row_stride, q_hs, fa_sm90_stride_or(p->q_batch_stride, q_hs * h)};
        const int64_t ks[3] = {p->k_row_stride, k_hs, fa_sm90_stride_or(p->k_batch_stride, k_hs * hk)};
        const int64_t vs[3] = {p->v_row_stride, v_hs, fa_sm90_stride_or(p->v_batch_stride, v_hs * hk)};
        /* O: one consumer warpgroup's 64 rows per box (the epilogue's TMA store; extents d and sq
         * exactly, so the store clips the dims past head_dim and the rows past seqlen_q) */
        const int64_t o_rs = fa_sm90_stride_or(p->o_row_stride, (d + 7) / 8 * 8);
        const int64_t o_hs = fa_sm90_stride_or(p->o_head_stride, o_rs * sq);
        const int64_t os[3] = {o_rs, o_hs, fa_sm90_stride_or(p->o_batch_stride, o_hs * h)};
        ok = fa_sm90_encode(&prm.tm_q, p->dtype, p->q, 4, qd, qs, br) &&
             fa_sm90_encode(&prm.tm_k, p->dtype, p->k, 4, kd, ks, bc) &&
             fa_sm90_encode(&prm.tm_v, p->dtype, p->v, 4, kd, vs, bc) &&
             fa_sm90_encode(&prm.tm_o, p->dtype, p->o, 4, qd, os, 64);
    }
    if (!ok) return FA_ERR_UNSUPPORTED;
    return fa_fwd_sm90_launch_hdim<D>(prm, p->dtype, stream);
}

fa_status fa_fwd_sm90(const fa_params *p, void *stream_ptr)
{
    if (p == NULL) return FA_ERR_NULL_POINTER;
    const fa_status st = fa_check_params(p, 0);
    if (st != FA_OK) return st;
    if (!fa_fwd_sm90_can_run(p)) return FA_ERR_UNSUPPORTED;
    cudaStream_t stream = (cudaStream_t)stream_ptr;
    switch (fa_sm90_bucket(p->head_dim)) {
    case 64: return fa_sm90_build_and_launch<64>(p, stream);
    case 128: return fa_sm90_build_and_launch<128>(p, stream);
    case 256: return fa_sm90_build_and_launch<256>(p, stream);
    default: return FA_ERR_UNSUPPORTED;
    }
}
