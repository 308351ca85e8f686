/* fa_kvcache_append.cu - fa_kvcache_append_cuda: everything a KV-cache decode step does before
 * its attention, in one launch (it used to take up to six: two table conversions, two rotary
 * passes, the append and the length update).
 *   - append: new keys and values written into the cache in place at cache_seqlens[i] + t,
 *     through the split-KV kernel's addressing (paged, cache_batch_idx or row i), each key
 *     rotated by its cache position on the way when rotary tables are given;
 *   - q rotated into q_out (when given);
 *   - seqused_out = cache_seqlens + seqlen_new, the lengths the attention sees.
 * One thread per 16-byte chunk (8 elements) of a row of K and V, then of q, then one per
 * sequence for the lengths, all in one grid-stride range. Writes that would leave the cache (a
 * position past the capacity, a block or row index outside k_cache's dim 0) are skipped, so no
 * device value can make it write out of bounds, and nothing waits on the host.
 */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>
#include "flash_attn_c.h"
#include "fa_mma.cuh"    /* fa_b16_to_f32, fa_f32_to_b16 */
#include "fa_rotary.h"  /* fa_rotary_pair: which two elements a rotation slot pairs */

#define FA_APPEND_THREADS 256

/* Entry i of a cos / sin table in fp32 (the conversion is exact for fp16 / bf16 tables). */
static __device__ __forceinline__ float fa_table_at(const void *t, fa_dtype dtype, int64_t i)
{
    if (dtype == FA_F32) return ((const float *)t)[i];
    if (dtype == FA_F16) return __half2float(((const __half *)t)[i]);
    return __bfloat162float(((const __nv_bfloat16 *)t)[i]);
}

/* Thread: elements [8c, 8c + 8) of one head row x, rotated at position pos when rotary tables
 * are given and pos is in [0, seqlen_ro), else as they are. Each element is computed from itself
 * and its pair partner (the next / previous element when interleaved, else rotary_dim / 2 away,
 * read from x; fa_rotary_pair defines the pairs) exactly as fa_rotary_kernel computes it: o0 = x0 c - x1 s, o1 = x0 s + x1 c. */
template <bool kBf16>
static __device__ __forceinline__ uint4 thread_rotated_chunk(const fa_kvcache_append_params &p,
                                                             const uint16_t *x /* (head_dim,) */, int64_t c,
                                                             int64_t pos)
{
    const uint4 raw = *(const uint4 *)(x + 8 * c);
    if (p.rotary_cos == NULL || pos < 0 || pos >= p.seqlen_ro || 8 * c >= p.rotary_dim) return raw;
    const int64_t half = p.rotary_dim / 2;
    const uint32_t in[4] = {raw.x, raw.y, raw.z, raw.w};  /* element e: half (e & 1) of word e / 2 */
    uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int e = 0; e < 8; ++e) {
        const int64_t i = 8 * c + e;
        if (i >= p.rotary_dim) break;
        const int64_t slot = p.rotary_interleaved ? i / 2 : (i < half ? i : i - half);
        int64_t i0, i1;  /* the pair of slot: i is one of them */
        fa_rotary_pair(slot, p.rotary_dim, p.rotary_interleaved, &i0, &i1);
        const bool second = i == i1;
        const uint16_t own = (uint16_t)(in[e >> 1] >> (16 * (e & 1)));
        /* interleaved pairs are neighbours inside this chunk (8c is even) */
        const uint16_t mate = p.rotary_interleaved ? (uint16_t)(in[e >> 1] >> (16 * (1 - (e & 1))))
                                                   : x[second ? i0 : i1];
        const float xi = fa_b16_to_f32<kBf16>(own), xp = fa_b16_to_f32<kBf16>(mate);
        const float cs = fa_table_at(p.rotary_cos, p.rotary_dtype, pos * half + slot);
        const float sn = fa_table_at(p.rotary_sin, p.rotary_dtype, pos * half + slot);
        /* plain multiply-adds, not fmaf: the rounding of fa_rotary_kernel and the C backend */
        const float o = second ? __fadd_rn(__fmul_rn(xp, sn), __fmul_rn(xi, cs))
                               : __fsub_rn(__fmul_rn(xi, cs), __fmul_rn(xp, sn));
        const uint32_t v = fa_f32_to_b16<kBf16>(o);
        w[e >> 1] = (e & 1) ? ((w[e >> 1] & 0x0000ffffu) | (v << 16)) : ((w[e >> 1] & 0xffff0000u) | v);
    }
    return make_uint4(w[0], w[1], w[2], w[3]);
}

/* Thread: chunk c of new token t, kv head h of sequence b, of K (rotated) and V, into the cache. */
template <bool kBf16>
static __device__ __forceinline__ void thread_append_chunk(const fa_kvcache_append_params &p, int64_t b, int64_t t,
                                                           int64_t h, int64_t c)
{
    const int64_t pos = (p.cache_seqlens != NULL ? (int64_t)p.cache_seqlens[b] : p.cache_seqlen) + t;
    if (pos < 0 || pos >= p.capacity) return;
    int64_t row, in_row;
    if (p.block_table != NULL) {
        row = p.block_table[b * p.block_table_batch_stride + pos / p.page_block_size];
        in_row = pos % p.page_block_size;
    } else {
        row = p.cache_batch_idx != NULL ? (int64_t)p.cache_batch_idx[b] : b;
        in_row = pos;
    }
    if (row < 0 || row >= p.cache_rows) return;
    const uint16_t *kn = (const uint16_t *)p.k_new + b * p.kn_batch_stride + t * p.kn_row_stride + h * p.kn_head_stride;
    const uint4 kv = thread_rotated_chunk<kBf16>(p, kn, c, pos);
    const uint4 vv = *(const uint4 *)((const uint16_t *)p.v_new + b * p.vn_batch_stride + t * p.vn_row_stride +
                                      h * p.vn_head_stride + 8 * c);
    *(uint4 *)((uint16_t *)p.k_cache + row * p.kc_batch_stride + in_row * p.kc_row_stride + h * p.kc_head_stride +
               8 * c) = kv;
    *(uint4 *)((uint16_t *)p.v_cache + row * p.vc_batch_stride + in_row * p.vc_row_stride + h * p.vc_head_stride +
               8 * c) = vv;
}

template <bool kBf16>
__global__ void __launch_bounds__(FA_APPEND_THREADS)
fa_kvcache_append_kernel(const fa_kvcache_append_params p)
{
    const int64_t chunks = p.head_dim / 8;
    const int64_t kv_items = p.batch * p.seqlen_new * p.heads_k * chunks;
    const int64_t q_items = p.q != NULL ? p.batch * p.seqlen_q * p.heads * chunks : 0;
    const int64_t total = kv_items + q_items + (p.seqused_out != NULL ? p.batch : 0);
    for (int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (int64_t)gridDim.x * blockDim.x) {
        if (idx < kv_items) {  /* (b, t, h, c) of the new keys / values */
            const int64_t c = idx % chunks, h = (idx / chunks) % p.heads_k;
            const int64_t t = (idx / (chunks * p.heads_k)) % p.seqlen_new;
            thread_append_chunk<kBf16>(p, idx / (chunks * p.heads_k * p.seqlen_new), t, h, c);
        } else if (idx < kv_items + q_items) {  /* (b, i, h, c) of q */
            const int64_t u = idx - kv_items;
            const int64_t c = u % chunks, h = (u / chunks) % p.heads;
            const int64_t i = (u / (chunks * p.heads)) % p.seqlen_q, b = u / (chunks * p.heads * p.seqlen_q);
            const int64_t seqlen = p.cache_seqlens != NULL ? (int64_t)p.cache_seqlens[b] : p.cache_seqlen;
            const uint16_t *x = (const uint16_t *)p.q + b * p.q_batch_stride + i * p.q_row_stride + h * p.q_head_stride;
            *(uint4 *)((uint16_t *)p.q_out + ((b * p.seqlen_q + i) * p.heads + h) * p.head_dim + 8 * c) =
                thread_rotated_chunk<kBf16>(p, x, c, seqlen + (p.q_positional ? i : 0));
        } else {  /* the lengths the attention sees (not clamped here: the kernels clamp them) */
            const int64_t b = idx - kv_items - q_items;
            const int64_t seqlen = p.cache_seqlens != NULL ? (int64_t)p.cache_seqlens[b] : p.cache_seqlen;
            p.seqused_out[b] = (int32_t)(seqlen + p.seqlen_new);
        }
    }
}

fa_status fa_kvcache_append_cuda(const fa_kvcache_append_params *p, void *stream)
{
    if (p == NULL || p->k_cache == NULL || p->v_cache == NULL) return FA_ERR_NULL_POINTER;
    if (p->seqlen_new > 0 && (p->k_new == NULL || p->v_new == NULL)) return FA_ERR_NULL_POINTER;
    if (p->dtype != FA_F16 && p->dtype != FA_BF16) return FA_ERR_DTYPE;
    if (p->batch < 0 || p->seqlen_new < 0 || p->heads_k <= 0 || p->capacity < 0) return FA_ERR_SHAPE;
    if (p->head_dim <= 0 || p->head_dim % 8 != 0) return FA_ERR_UNSUPPORTED;  /* 16-byte chunks */
    if (p->block_table != NULL && p->page_block_size <= 0) return FA_ERR_SHAPE;
    if (p->block_table != NULL && p->cache_batch_idx != NULL) return FA_ERR_UNSUPPORTED;  /* as the forward */
    if (p->rotary_cos != NULL) {
        if (p->rotary_sin == NULL) return FA_ERR_NULL_POINTER;
        if (p->rotary_dtype != FA_F32 && p->rotary_dtype != FA_F16 && p->rotary_dtype != FA_BF16) return FA_ERR_DTYPE;
        if (p->rotary_dim < 0 || p->rotary_dim % 2 != 0 || p->rotary_dim > p->head_dim || p->seqlen_ro < 0)
            return FA_ERR_SHAPE;
    }
    if (p->q != NULL && (p->q_out == NULL || p->seqlen_q < 0 || p->heads <= 0)) return FA_ERR_SHAPE;
    const int64_t chunks = p->head_dim / 8;
    const int64_t total = p->batch * p->seqlen_new * p->heads_k * chunks +
                          (p->q != NULL ? p->batch * p->seqlen_q * p->heads * chunks : 0) +
                          (p->seqused_out != NULL ? p->batch : 0);
    if (total == 0) return FA_OK;
    const int64_t blocks = (total + FA_APPEND_THREADS - 1) / FA_APPEND_THREADS;
    const dim3 grid((unsigned)(blocks < 65536 ? blocks : 65536));  /* grid-stride beyond this */
    if (p->dtype == FA_BF16)
        fa_kvcache_append_kernel<true><<<grid, FA_APPEND_THREADS, 0, (cudaStream_t)stream>>>(*p);
    else
        fa_kvcache_append_kernel<false><<<grid, FA_APPEND_THREADS, 0, (cudaStream_t)stream>>>(*p);
    return cudaGetLastError() == cudaSuccess ? FA_OK : FA_ERR_CUDA;
}
