/* fa_splitkv.cu - host side of the split-KV forward: when fa_fwd_cuda takes it, the split count,
 * the workspace of the partial outputs, the kernel arguments and the per-bucket launch.
 */
#include <stdint.h>
#include <string.h>
#include "flash_attn_c.h"
#include "fa_splitkv.h"
#include "fa_splitkv_route.h"
#include "fa_tuning.h"
#include "fa_cuda_device.h"

/* Head-dim buckets of the split-KV kernel (fa_splitkv_hdim<D>.cu); d is rounded up. */
static int fa_splitkv_bucket(int64_t d)
{
    return d <= 64 ? 64 : d <= 128 ? 128 : d <= 256 ? 256 : 0;
}

int fa_splitkv_takes(const fa_params *p)
{
    if (fa_params_uses_kv_cache(p)) return 1;
    /* short query blocks: decode (1 token) and speculative decoding (up to 16), within the
     * kernel's grid (b * hk blocks in x, a combine block per 4 output rows); larger calls (they
     * need over 100 GB of tensors) stay on the other kernels */
    return p->seqlen_q <= 16 && p->dropout_p == 0.f && p->p == NULL &&
           p->batch * p->heads_k <= 2147483647LL && p->batch * p->heads * p->seqlen_q / 4 < 2147483647LL;
}

int fa_splitkv_num_splits(const fa_params *p, int bucket, int sm_count)
{
    const fa_tuning_row row = fa_tuning_find(FA_KERNEL_SPLITKV, 80, bucket);  /* the launcher's row */
    const int64_t key_tiles = (p->seqlen_k + row.bc - 1) / row.bc;
    int64_t n;
    if (p->num_splits > 0) {
        n = p->num_splits;  /* honoured; more splits than key tiles would only be empty */
    } else {
        /* fa_tuning.h, FA_KERNEL_SPLITKV: as many splits as keep the grid within
         * FA_SPLITKV_WARPS_PER_SM streaming warps per SM, each split at least 2 key tiles */
        const int64_t group = p->heads / p->heads_k;
        const int64_t row_tiles = (group * p->seqlen_q + FA_SPLITKV_ROWS - 1) / FA_SPLITKV_ROWS;
        const int64_t blocks = p->batch * p->heads_k * row_tiles;
        const int64_t target = (int64_t)(sm_count > 0 ? sm_count : 108) * FA_SPLITKV_WARPS_PER_SM / row.warps;
        n = target / (blocks > 0 ? blocks : 1);
        if (n > key_tiles / 2) n = key_tiles / 2;
    }
    if (n > key_tiles) n = key_tiles;
    if (n > FA_SPLITKV_MAX_SPLITS) n = FA_SPLITKV_MAX_SPLITS;
    return n < 1 ? 1 : (int)n;
}

/* Bytes of the partials of `splits` splits: O (bucket floats) and LSE per (split, b, h, row). */
static size_t fa_splitkv_partial_bytes(const fa_params *p, int bucket, int splits)
{
    if (splits <= 1) return 0;
    const size_t rows = (size_t)splits * (size_t)p->batch * (size_t)p->heads * (size_t)p->seqlen_q;
    return rows * (size_t)(bucket + 1) * sizeof(float);
}

size_t fa_splitkv_workspace_bytes(const fa_params *p)
{
    const int bucket = fa_splitkv_bucket(p->head_dim);
    if (bucket == 0) return 0;
    return fa_splitkv_partial_bytes(p, bucket, fa_splitkv_num_splits(p, bucket, fa_cuda_sm_count()));
}

void fa_splitkv_fill_args(const fa_params *p, int num_splits, int bucket, fa_splitkv_args *a)
{
    memset(a, 0, sizeof(*a));
    (void)fa_fwd_fill_args(p, &a->f);  /* its one failure (philox pointers) concerns dropout only */
    if (num_splits > 1) {
        a->o_part = (float *)p->workspace;
        a->lse_part = a->o_part + (size_t)num_splits * p->batch * p->heads * p->seqlen_q * bucket;
    }
    a->seqused_k = p->seqused_k;
    a->leftpad_k = p->leftpad_k;
    a->cache_batch_idx = p->cache_batch_idx;
    a->block_table = p->block_table;
    a->block_table_batch_stride = p->block_table_batch_stride;
    a->page = (int)p->page_block_size;
    a->kv_cache_rows = (int)(p->kv_cache_rows < 2147483647LL ? p->kv_cache_rows : 2147483647LL);
    a->num_splits = num_splits;
}

fa_status fa_splitkv_run(const fa_params *p, cudaStream_t stream)
{
    if (p->dropout_p > 0.f || p->p != NULL) return FA_ERR_UNSUPPORTED;  /* no dropout / probs here */
    const int bucket = fa_splitkv_bucket(p->head_dim);
    if (bucket == 0) return FA_ERR_HEAD_DIM;
    /* grid x = b * hk, y = row tiles (<= 65535), z = splits; int32 row arithmetic in the kernel */
    if (p->batch * p->heads_k > 2147483647LL) return FA_ERR_UNSUPPORTED;
    if ((p->heads / p->heads_k) * p->seqlen_q > (int64_t)FA_SPLITKV_ROWS * 65535) return FA_ERR_UNSUPPORTED;
    if (p->batch == 0 || p->seqlen_q == 0) {  /* nothing to compute, no workspace needed */
        fa_fwd_args f;
        const fa_status st = fa_fwd_fill_args(p, &f);
        return st != FA_OK ? st : fa_fwd_rng_state_launch(f, stream);
    }
    const int splits = fa_splitkv_num_splits(p, bucket, fa_cuda_sm_count());
    if (splits > 1 && (p->workspace == NULL || p->workspace_bytes < fa_splitkv_partial_bytes(p, bucket, splits) ||
                       ((uintptr_t)p->workspace & 15u) != 0))  /* float4 stores into the partials */
        return FA_ERR_WORKSPACE;
    fa_splitkv_args a;
    fa_splitkv_fill_args(p, splits, bucket, &a);
    const bool pdl = splits > 1 && fa_cuda_current_arch() >= 90;
    switch (bucket) {
    case 64: return fa_splitkv_launch_hdim<64>(a, p->dtype, pdl, stream);
    case 128: return fa_splitkv_launch_hdim<128>(a, p->dtype, pdl, stream);
    default: return fa_splitkv_launch_hdim<256>(a, p->dtype, pdl, stream);
    }
}
