/* fa_kvcache_append.cu - fa_kvcache_append_cuda: writes new keys and values into a KV cache in
 * place, at positions cache_seqlens[i] .. + seqlen_new of each sequence, through the same
 * addressing as the split-KV kernel (paged, cache_batch_idx or row i). One thread per 16-byte
 * chunk of a (sequence, new token, kv head) row of K and of V; writes that would leave the cache
 * (a position past the capacity, a block or row index outside k_cache's dim 0) are skipped, so
 * no device value can make it write out of bounds, and nothing waits on the host.
 */
#include <stdint.h>
#include "flash_attn_c.h"

__global__ void fa_kvcache_append_kernel(const fa_kvcache_append_params p)
{
    const int64_t chunks = p.head_dim / 8;
    const int64_t per_row = p.heads_k * chunks;  /* chunks of one (sequence, token) */
    const int64_t total = p.batch * p.seqlen_new * per_row;
    for (int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (int64_t)gridDim.x * blockDim.x) {
        const int64_t c = idx % chunks;
        const int64_t h = (idx / chunks) % p.heads_k;
        const int64_t t = (idx / per_row) % p.seqlen_new;
        const int64_t b = idx / (per_row * p.seqlen_new);
        const int64_t pos = (p.cache_seqlens != NULL ? (int64_t)p.cache_seqlens[b] : p.cache_seqlen) + t;
        if (pos < 0 || pos >= p.capacity) continue;
        int64_t row, in_row;
        if (p.block_table != NULL) {
            row = p.block_table[b * p.block_table_batch_stride + pos / p.page_block_size];
            in_row = pos % p.page_block_size;
        } else {
            row = p.cache_batch_idx != NULL ? (int64_t)p.cache_batch_idx[b] : b;
            in_row = pos;
        }
        if (row < 0 || row >= p.cache_rows) continue;
        const uint4 kv = *(const uint4 *)((const uint16_t *)p.k_new + b * p.kn_batch_stride + t * p.kn_row_stride +
                                          h * p.kn_head_stride + 8 * c);
        const uint4 vv = *(const uint4 *)((const uint16_t *)p.v_new + b * p.vn_batch_stride + t * p.vn_row_stride +
                                          h * p.vn_head_stride + 8 * c);
        *(uint4 *)((uint16_t *)p.k_cache + row * p.kc_batch_stride + in_row * p.kc_row_stride +
                   h * p.kc_head_stride + 8 * c) = kv;
        *(uint4 *)((uint16_t *)p.v_cache + row * p.vc_batch_stride + in_row * p.vc_row_stride +
                   h * p.vc_head_stride + 8 * c) = vv;
    }
}

fa_status fa_kvcache_append_cuda(const fa_kvcache_append_params *p, void *stream)
{
    if (p == NULL || p->k_new == NULL || p->v_new == NULL || p->k_cache == NULL || p->v_cache == NULL)
        return FA_ERR_NULL_POINTER;
    if (p->dtype != FA_F16 && p->dtype != FA_BF16) return FA_ERR_DTYPE;
    if (p->batch < 0 || p->seqlen_new < 0 || p->heads_k <= 0 || p->capacity < 0) return FA_ERR_SHAPE;
    if (p->head_dim <= 0 || p->head_dim % 8 != 0) return FA_ERR_UNSUPPORTED;  /* 16-byte chunks */
    if (p->block_table != NULL && p->page_block_size <= 0) return FA_ERR_SHAPE;
    if (p->block_table != NULL && p->cache_batch_idx != NULL) return FA_ERR_UNSUPPORTED;  /* as the forward */
    const int64_t total = p->batch * p->seqlen_new * p->heads_k * (p->head_dim / 8);
    if (total == 0) return FA_OK;
    const int64_t blocks = (total + 255) / 256;
    fa_kvcache_append_kernel<<<(unsigned)(blocks < 65536 ? blocks : 65536), 256, 0, (cudaStream_t)stream>>>(*p);
    return cudaGetLastError() == cudaSuccess ? FA_OK : FA_ERR_CUDA;
}
