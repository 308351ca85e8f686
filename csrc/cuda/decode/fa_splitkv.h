/* fa_splitkv.h - host/device interface of the split-KV forward: the kernel for short query blocks
 * (decode, speculative decoding) and for every KV-cache call (paged, used lengths, left padding,
 * remapped cache rows). Semantics and addressing: fa_params' KV-cache section (flash_attn_c.h).
 *
 * Work of one block: 16 packed query rows of one (sequence b, kv head kh) and one split of its
 * key band. The rows are (query i, head of the group hh) pairs, r = i * group + hh, so every
 * K/V byte is read once per kv head, not once per query head (GQA packing). With num_splits > 1
 * each block writes an fp32 partial output and its LSE; fa_splitkv_combine merges them exactly.
 */
#ifndef FA_SPLITKV_H
#define FA_SPLITKV_H

#include <cuda_runtime.h>
#include <stdint.h>
#include "flash_attn_c.h"
#include "fa_fwd.h"

#define FA_SPLITKV_ROWS 16      /* packed query rows per block: one mma m-tile */
#define FA_SPLITKV_MAX_SPLITS 128

typedef struct fa_splitkv_args {
    fa_fwd_args f;     /* the forward's fields: q, k, v, o, lse, strides, sizes, mask, softcap,
                          ALiBi (fa_fwd_fill_args); k/v in the KV-cache layout of fa_params */
    float *o_part;     /* (num_splits, b, h, seqlen_q, D) fp32, when num_splits > 1 */
    float *lse_part;   /* (num_splits, b, h, seqlen_q) fp32, when num_splits > 1 */
    const int32_t *seqused_k;        /* (b,) or NULL */
    const int32_t *leftpad_k;        /* (b,) or NULL */
    const int32_t *cache_batch_idx;  /* (b,) or NULL */
    const int32_t *block_table;      /* (b, max_blocks) or NULL */
    int64_t block_table_batch_stride;
    int page;                        /* page_block_size (block_table) */
    int kv_cache_rows;               /* k/v dim 0 (block_table / cache_batch_idx) */
    int num_splits;                  /* >= 1 */
} fa_splitkv_args;

/* One sequence of a split-KV call: its query rows and the cache positions it attends to. */
typedef struct fa_kv_seq {
    int sq;            /* query rows of the sequence */
    int q_begin;       /* varlen: first row in q; dense: 0 */
    int start;         /* first visible cache position (leftpad) */
    int sk;            /* visible keys: positions [start, start + sk) */
    int64_t k_row0;    /* non-paged: element offset of position 0 of this sequence in k */
    int64_t v_row0;    /* likewise in v */
    bool valid_row;    /* the dense cache row exists (cache_batch_idx in range) */
} fa_kv_seq;

/* The sequence extent of a split-KV call (the one definition the attention and combine kernels
 * share). Device values are clamped, never trusted: ends to the capacity, leftpad to [0, end]. */
static __device__ __forceinline__ fa_kv_seq fa_kv_seq_get(const fa_splitkv_args &a, int b)
{
    fa_kv_seq s;
    s.sq = a.f.seqlen_q;
    s.q_begin = 0;
    if (a.f.cu_seqlens_q != NULL) {
        s.q_begin = a.f.cu_seqlens_q[b];
        s.sq = max(0, min(a.f.cu_seqlens_q[b + 1] - s.q_begin, a.f.seqlen_q));
    }
    int end = a.f.seqlen_k;
    int64_t row = b;
    s.valid_row = true;
    s.k_row0 = s.v_row0 = 0;
    int cap = a.f.seqlen_k;  /* positions this sequence owns */
    if (a.f.cu_seqlens_k != NULL) {
        const int k0 = a.f.cu_seqlens_k[b];
        end = a.f.cu_seqlens_k[b + 1] - k0;
        if (a.block_table == NULL) {  /* packed rows: only its own, whatever seqused_k says */
            cap = max(0, min(end, cap));
            s.k_row0 = (int64_t)k0 * a.f.k_row_stride;
            s.v_row0 = (int64_t)k0 * a.f.v_row_stride;
        }
    } else if (a.block_table == NULL) {
        if (a.cache_batch_idx != NULL) {
            row = a.cache_batch_idx[b];
            s.valid_row = row >= 0 && row < a.kv_cache_rows;
        }
        s.k_row0 = row * a.f.k_batch_stride;
        s.v_row0 = row * a.f.v_batch_stride;
    }
    if (a.seqused_k != NULL) end = a.seqused_k[b];
    end = max(0, min(end, cap));
    s.start = a.leftpad_k != NULL ? max(0, min(a.leftpad_k[b], end)) : 0;
    s.sk = s.valid_row ? end - s.start : 0;
    return s;
}

/* Element index of the LSE of (sequence b, head, row i): (b, h, sq) or varlen (h, total_q). */
static __device__ __forceinline__ int64_t fa_splitkv_lse_index(const fa_splitkv_args &a, const fa_kv_seq &s,
                                                               int b, int head, int i)
{
    if (a.f.cu_seqlens_q != NULL) return (int64_t)head * a.f.total_q + s.q_begin + i;
    return ((int64_t)b * a.f.heads + head) * a.f.seqlen_q + i;
}

/* Element offset of row i, head `head` of sequence b in a q-like tensor with these strides. */
static __device__ __forceinline__ int64_t fa_splitkv_row_offset(const fa_splitkv_args &a, const fa_kv_seq &s,
                                                                int b, int i, int head, int64_t batch_stride,
                                                                int64_t row_stride, int64_t head_stride)
{
    const int64_t seq = a.f.cu_seqlens_q != NULL ? (int64_t)s.q_begin * row_stride : (int64_t)b * batch_stride;
    return seq + (int64_t)i * row_stride + (int64_t)head * head_stride;
}

/* Index of (split, b, head, i) in the partial buffers (times D for o_part). */
static __device__ __forceinline__ int64_t fa_splitkv_part_index(const fa_splitkv_args &a, int split, int b,
                                                               int head, int i)
{
    return (((int64_t)split * a.f.batch + b) * a.f.heads + head) * a.f.seqlen_q + i;
}

/* Host: fills the arguments from a checked fa_params (num_splits resolved by the caller). */
void fa_splitkv_fill_args(const fa_params *p, int num_splits, int bucket, fa_splitkv_args *a);

/* Host: the split count (p->num_splits when > 0, else the heuristic of fa_tuning.h's
 * FA_KERNEL_SPLITKV section) for head-dim bucket D on a GPU with sm_count SMs. */
int fa_splitkv_num_splits(const fa_params *p, int bucket, int sm_count);

/* Launches the attention kernel of bucket D (64, 128, 256) and, with num_splits > 1, the combine
 * (as a programmatic dependent launch when pdl: compute capability 9.0 or newer). */
template <int D>
fa_status fa_splitkv_launch_hdim(const fa_splitkv_args &a, fa_dtype dtype, bool pdl, cudaStream_t stream);

#endif /* FA_SPLITKV_H */
