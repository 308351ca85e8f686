/* fa_api.c - backend-neutral parts of the C API: status messages and parameter checks.
 *
 * Compiled into every build (CPU-only and CUDA), so it reads nothing a backend owns: in
 * particular it never dereferences cu_seqlens (device memory on CUDA).
 */
#include <float.h>
#include <math.h>
#include <stdint.h>

#include "flash_attn_c.h"

const char *fa_status_string(fa_status status)
{
    switch (status) {
    case FA_OK: return "success";
    case FA_ERR_NULL_POINTER: return "a required pointer (q, k, v, out, lse or a gradient) is NULL";
    case FA_ERR_SHAPE: return "a size is negative, zero where it must be positive, or too large";
    case FA_ERR_HEADS: return "heads must be a multiple of heads_k";
    case FA_ERR_HEAD_DIM: return "head_dim must be in [1, 256]";
    case FA_ERR_DTYPE: return "dtype not supported by this backend";
    case FA_ERR_WINDOW: return "window_left and window_right must be >= -1";
    case FA_ERR_DROPOUT: return "dropout_p must be in [0, 1)";
    case FA_ERR_SOFTCAP:
        return "softcap must be 0 (off) or a normal float up to FLT_MAX / 2, and softmax_scale finite with "
               "|softmax_scale| <= FLT_MAX / 2 (the kernels multiply both by log2(e))";
    case FA_ERR_SEQLENS:
        return "cu_seqlens invalid: only one of cu_seqlens_q/k given, decreasing, negative, "
               "a sequence longer than max_seqlen, or past the end of the rows";
    case FA_ERR_STRIDE: return "invalid stride (the last dimension must be contiguous, strides >= 0)";
    case FA_ERR_WORKSPACE: return "workspace missing, too small or not 16-byte aligned";
    case FA_ERR_UNSUPPORTED: return "this combination is not supported by this backend";
    case FA_ERR_CUDA: return "a CUDA runtime call failed";
    case FA_ERR_NO_CUDA: return "flash_attn_c was built without CUDA";
    case FA_ERR_NO_MEMORY: return "a host memory allocation failed";
    case FA_STATUS_COUNT: break;
    }
    return "unknown fa_status code";
}

/* Sequence lengths and row counts stay below 2^31: the kernels index rows within a sequence
 * with int32 vectors and Philox takes 32-bit row/column counters. */
#define FA_MAX_LEN 2147483647LL

int fa_params_uses_kv_cache(const fa_params *p)
{
    return p->block_table != NULL || p->seqused_k != NULL || p->leftpad_k != NULL ||
           p->cache_batch_idx != NULL;
}

fa_status fa_check_params(const fa_params *p, int backward)
{
    int varlen;
    int64_t q_rows, k_rows;
    if (p == NULL) return FA_ERR_NULL_POINTER;
    if (p->dtype != FA_F32 && p->dtype != FA_F16 && p->dtype != FA_BF16) return FA_ERR_DTYPE;

    varlen = p->cu_seqlens_q != NULL || p->cu_seqlens_k != NULL;
    if (varlen && (p->cu_seqlens_q == NULL || p->cu_seqlens_k == NULL)) return FA_ERR_SEQLENS;

    if (p->batch < 0 || p->seqlen_q < 0 || p->seqlen_k < 0) return FA_ERR_SHAPE;
    if (p->seqlen_q > FA_MAX_LEN || p->seqlen_k > FA_MAX_LEN) return FA_ERR_SHAPE;
    /* batch x rows and heads below 2^31 too: the products below (rows, item counts, workspace
     * sizes) then stay far inside int64 */
    if (p->batch > FA_MAX_LEN || p->heads > FA_MAX_LEN || p->heads_k > FA_MAX_LEN) return FA_ERR_SHAPE;
    if (!varlen && (p->batch * p->seqlen_q > FA_MAX_LEN || p->batch * p->seqlen_k > FA_MAX_LEN)) return FA_ERR_SHAPE;
    if (p->heads <= 0 || p->heads_k <= 0) return FA_ERR_SHAPE;
    if (varlen && (p->total_q < 0 || p->total_q > FA_MAX_LEN)) return FA_ERR_SHAPE;
    if (p->head_dim < 1 || p->head_dim > 256) return FA_ERR_HEAD_DIM;
    if (p->heads % p->heads_k != 0) return FA_ERR_HEADS;

    if (p->window_left < -1 || p->window_right < -1) return FA_ERR_WINDOW;
    /* written so that NaN fails too */
    if (!(p->dropout_p >= 0.0f && p->dropout_p < 1.0f)) return FA_ERR_DROPOUT;
    /* finite, and small enough that the kernels' products with log2(e) stay finite; a softcap in
     * (0, FLT_MIN) would flush to 0 or overflow scale / softcap (NaN scores) */
    if (!(p->softcap == 0.0f || (p->softcap >= FLT_MIN && p->softcap <= FLT_MAX / 2))) return FA_ERR_SOFTCAP;
    if (!(fabsf(p->softmax_scale) <= FLT_MAX / 2)) return FA_ERR_SOFTCAP; /* NaN and inf fail too */
    if (p->alibi_slopes != NULL && p->alibi_batch_stride != 0 && p->alibi_batch_stride < p->heads)
        return FA_ERR_SHAPE;

    /* pointers: required whenever the tensor they point to has elements */
    q_rows = varlen ? p->total_q : p->batch * p->seqlen_q;
    k_rows = p->batch > 0 ? p->seqlen_k : 0; /* varlen: total_k is not in the struct */
    if (q_rows > 0 && (p->q == NULL || p->o == NULL || p->lse == NULL)) return FA_ERR_NULL_POINTER;
    if (k_rows > 0 && (p->k == NULL || p->v == NULL)) return FA_ERR_NULL_POINTER;

    if (p->q_batch_stride < 0 || p->q_row_stride < 0 || p->q_head_stride < 0 ||
        p->k_batch_stride < 0 || p->k_row_stride < 0 || p->k_head_stride < 0 ||
        p->v_batch_stride < 0 || p->v_row_stride < 0 || p->v_head_stride < 0 ||
        p->o_batch_stride < 0 || p->o_row_stride < 0 || p->o_head_stride < 0)
        return FA_ERR_STRIDE;

    if (p->num_splits < 0) return FA_ERR_SHAPE;
    if (fa_params_uses_kv_cache(p)) {
        if (backward) return FA_ERR_UNSUPPORTED;  /* inference only */
        if (p->block_table != NULL && (p->page_block_size <= 0 || p->block_table_batch_stride < 0 ||
                                       p->cache_batch_idx != NULL))
            return FA_ERR_SHAPE;
        if ((p->block_table != NULL || p->cache_batch_idx != NULL) && p->kv_cache_rows <= 0)
            return FA_ERR_SHAPE;
        if (p->cache_batch_idx != NULL && varlen) return FA_ERR_UNSUPPORTED;
    }

    if (backward) {
        if (q_rows > 0 && (p->dout == NULL || p->dq == NULL)) return FA_ERR_NULL_POINTER;
        if (k_rows > 0 && (p->dk == NULL || p->dv == NULL)) return FA_ERR_NULL_POINTER;
        if (p->do_batch_stride < 0 || p->do_row_stride < 0 || p->do_head_stride < 0 ||
            p->dq_batch_stride < 0 || p->dq_row_stride < 0 || p->dq_head_stride < 0 ||
            p->dk_batch_stride < 0 || p->dk_row_stride < 0 || p->dk_head_stride < 0 ||
            p->dv_batch_stride < 0 || p->dv_row_stride < 0 || p->dv_head_stride < 0)
            return FA_ERR_STRIDE;
    }
    return FA_OK;
}
