/* fa_fwd_api.cu - the C entry points of the CUDA forward: fa_cuda_available, fa_fwd_cuda.
 * (fa_dropout_mask_cuda: fa_dropout_mask.cu; fa_bwd_cuda*: the backward's files.)
 *
 * fa_fwd_cuda validates what the kernels assume, converts fa_params into the kernel argument
 * block and dispatches on the head-dim bucket. It never synchronizes or allocates; everything
 * is launched on the given stream.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>
#include "flash_attn_c.h"
#include "fa_fwd.h"
#include "fa_fwd_sm90.cuh"  /* sm90 hook, see fa_fwd_cuda */
#include "fa_varlen_rows.cuh"
#include "fa_splitkv_route.h"  /* decode / KV-cache calls, see fa_fwd_cuda_run */

/* Head-dim buckets compiled (fa_fwd_hdim<D>.cu); d is rounded up to the next one. */
static const int fa_fwd_buckets[] = {32, 64, 96, 128, 160, 192, 224, 256};

int fa_cuda_available(void)
{
    return 1;
}

/* Writes {seed, offset} when the main grid is empty (nothing else would). */
__global__ void fa_fwd_rng_state_kernel(const fa_fwd_args a)
{
    uint64_t seed, offset;
    fa_fwd_philox_seed(a, &seed, &offset);
    a.rng_state[0] = (int64_t)seed;
    a.rng_state[1] = (int64_t)offset;
}

fa_status fa_fwd_rng_state_launch(const fa_fwd_args &a, cudaStream_t stream)
{
    if (a.rng_state == NULL) return FA_OK;
    fa_fwd_rng_state_kernel<<<1, 1, 0, stream>>>(a);
    return cudaGetLastError() == cudaSuccess ? FA_OK : FA_ERR_CUDA;
}

static int fa_is_aligned16(const void *ptr)
{
    return ((uintptr_t)ptr & 15u) == 0;
}

/* The kernels' view of a forward call (both the sm80 and the sm90 kernels take it). */
fa_status fa_fwd_fill_args(const fa_params *p, fa_fwd_args *a)
{
    memset(a, 0, sizeof(*a));
    a->q = p->q;
    a->k = p->k;
    a->v = p->v;
    a->o = p->o;
    a->lse = p->lse;
    a->p = p->p;
    a->q_batch_stride = p->q_batch_stride;
    a->q_row_stride = p->q_row_stride;
    a->q_head_stride = p->q_head_stride;
    a->k_batch_stride = p->k_batch_stride;
    a->k_row_stride = p->k_row_stride;
    a->k_head_stride = p->k_head_stride;
    a->v_batch_stride = p->v_batch_stride;
    a->v_row_stride = p->v_row_stride;
    a->v_head_stride = p->v_head_stride;
    a->o_batch_stride = p->o_batch_stride;
    a->o_row_stride = p->o_row_stride;
    a->o_head_stride = p->o_head_stride;
    a->cu_seqlens_q = p->cu_seqlens_q;
    a->cu_seqlens_k = p->cu_seqlens_k;
    a->total_q = p->total_q;
    a->batch = (int)p->batch;
    a->heads = (int)p->heads;
    a->heads_k = (int)p->heads_k;
    a->group = (int)(p->heads / p->heads_k);
    a->seqlen_q = (int)p->seqlen_q;
    a->seqlen_k = (int)p->seqlen_k;
    a->head_dim = (int)p->head_dim;
    a->window_left = fa_window_clamp(p->window_left, p->seqlen_k);
    a->window_right = fa_window_clamp(p->window_right, p->seqlen_q);
    a->scale = p->softmax_scale;
    a->scale_log2 = p->softmax_scale * 1.4426950408889634f;
    a->softcap = p->softcap;
    if (p->softcap > 0.f) {
        a->softcap_log2 = p->softcap * 1.4426950408889634f;
        a->scale_div_softcap = p->softmax_scale / p->softcap;
    }
    a->alibi_slopes = p->alibi_slopes;
    a->alibi_batch_stride = p->alibi_batch_stride;
    a->has_dropout = p->dropout_p > 0.f;
    a->dropout_threshold = fa_dropout_threshold(p->dropout_p);
    a->dropout_rescale = fa_dropout_rescale(p->dropout_p);  /* 1 / (1 - p_q), fa_common.h */
    a->seed = p->seed;
    a->offset = p->offset;
    a->philox_seed_ptr = p->philox_seed_ptr;
    a->philox_offset_ptr = p->philox_seed_ptr != NULL ? p->philox_offset_ptr : NULL;
    a->philox_offset_add = p->philox_offset_add;
    a->rng_state = p->rng_state;
    return a->philox_seed_ptr != NULL && a->philox_offset_ptr == NULL ? FA_ERR_NULL_POINTER : FA_OK;
}

static fa_status fa_fwd_cuda_run(const fa_params *p, void *stream_ptr)
{
    fa_status st = fa_check_params(p, 0);
    if (st != FA_OK) return st;
    if (p->dtype != FA_F16 && p->dtype != FA_BF16) return FA_ERR_DTYPE;
    if (p->q == NULL || p->k == NULL || p->v == NULL || p->o == NULL || p->lse == NULL)
        return FA_ERR_NULL_POINTER;
    const int varlen = p->cu_seqlens_q != NULL;
    if (varlen != (p->cu_seqlens_k != NULL)) return FA_ERR_NULL_POINTER;

    /* what the kernels assume (the Python layer guarantees it): 16-byte vector access */
    if (p->head_dim % 8 != 0) return FA_ERR_UNSUPPORTED;
    if (!fa_is_aligned16(p->q) || !fa_is_aligned16(p->k) || !fa_is_aligned16(p->v) || !fa_is_aligned16(p->o))
        return FA_ERR_UNSUPPORTED;
    if (p->q_row_stride % 8 || p->q_head_stride % 8 || p->k_row_stride % 8 || p->k_head_stride % 8 ||
        p->v_row_stride % 8 || p->v_head_stride % 8 || p->o_row_stride % 8 || p->o_head_stride % 8)
        return FA_ERR_UNSUPPORTED;
    if (!varlen && (p->q_batch_stride % 8 || p->k_batch_stride % 8 || p->v_batch_stride % 8 ||
                    p->o_batch_stride % 8))
        return FA_ERR_UNSUPPORTED;
    /* grid limits and int32 sequence arithmetic inside the kernels */
    if (p->seqlen_q >= (1 << 30) || p->seqlen_k >= (1 << 30) || p->heads > 65535 ||
        p->batch > 65535 || p->heads_k > p->heads)
        return FA_ERR_UNSUPPORTED;

    /* ---- split-KV: every KV-cache call (paged, used lengths, left padding, cache_batch_idx)
     * and short query blocks (decode): the K/V stream is split over blocks so one query token
     * still fills the GPU (decode/fa_splitkv.cu). ---- */
    if (fa_splitkv_takes(p)) return fa_splitkv_run(p, (cudaStream_t)stream_ptr);  /* writes rng_state */

    /* ---- sm90 hook: the Hopper wgmma/TMA forward (fa_fwd_sm90*.cu), taken only on compute
     * capability 9.0 unless FLASH_ATTN_C_SM90=0 (on by default since GPU run 3); calls it
     * does not cover (varlen dropout, probabilities, d <= 32, softcap / ALiBi with
     * FLASH_ATTN_C_SM90_FEAT=0, ...) or whose strides TMA
     * refuses (FA_ERR_UNSUPPORTED) continue to the sm80 kernels below. The entry points are weak
     * (NULL when a build leaves the sm90 objects out, see fa_sm90_weak.h). ---- */
    if (fa_fwd_sm90_supported != NULL && fa_fwd_sm90_supported(p)) {
        st = fa_fwd_sm90(p, stream_ptr);
        if (st != FA_ERR_UNSUPPORTED) return st;
    }

    int bucket = 0;
    for (unsigned i = 0; i < sizeof(fa_fwd_buckets) / sizeof(fa_fwd_buckets[0]); ++i) {
        if (p->head_dim <= fa_fwd_buckets[i]) {
            bucket = fa_fwd_buckets[i];
            break;
        }
    }
    if (bucket == 0) return FA_ERR_HEAD_DIM;

    fa_fwd_args a;
    st = fa_fwd_fill_args(p, &a);
    if (st != FA_OK) return st;

    cudaStream_t stream = (cudaStream_t)stream_ptr;
    if (a.batch == 0 || a.seqlen_q == 0 || a.heads == 0) return fa_fwd_rng_state_launch(a, stream);

    switch (bucket) {
    case 32: st = fa_fwd_launch_hdim<32>(a, p->dtype, stream); break;
    case 64: st = fa_fwd_launch_hdim<64>(a, p->dtype, stream); break;
    case 96: st = fa_fwd_launch_hdim<96>(a, p->dtype, stream); break;
    case 128: st = fa_fwd_launch_hdim<128>(a, p->dtype, stream); break;
    case 160: st = fa_fwd_launch_hdim<160>(a, p->dtype, stream); break;
    case 192: st = fa_fwd_launch_hdim<192>(a, p->dtype, stream); break;
    case 224: st = fa_fwd_launch_hdim<224>(a, p->dtype, stream); break;
    default: st = fa_fwd_launch_hdim<256>(a, p->dtype, stream); break;
    }
    if (st != FA_OK) return st;
    if (a.p != NULL) st = fa_fwd_probs_launch(a, p->dtype, stream);
    return st;
}

size_t fa_fwd_cuda_workspace_bytes(const fa_params *p)
{
    if (p == NULL || fa_check_params(p, 0) != FA_OK || !fa_splitkv_takes(p)) return 0;
    return fa_splitkv_workspace_bytes(p);
}

fa_status fa_fwd_cuda(const fa_params *p, void *stream)
{
    if (p == NULL) return FA_ERR_NULL_POINTER;
    const fa_status st = fa_fwd_cuda_run(p, stream);
    /* varlen: the q rows no sequence covers get o = 0, lse = -inf (fa_varlen_rows.cuh) */
    return st == FA_OK ? fa_varlen_zero_uncovered_cuda(p, 0, (cudaStream_t)stream) : st;
}
