/* flash_attn_c.h - the public C API of flash_attn_c.
 *
 * One params struct describes a whole attention call (forward or backward, dense or varlen);
 * the CPU and CUDA backends take the same struct. No torch, no C++-only syntax: a C11 program
 * can include this, fill the struct and call the entry points directly.
 *
 * Semantics (docs/conventions.md, shared by every backend):
 *   s_ij = softmax_scale * q_i . k_j
 *   softcap > 0:        s_ij = softcap * tanh(s_ij / softcap)
 *   alibi_slopes:       s_ij += -slope[b][h] * |i + sk - sq - j|
 *   mask (bottom-right): query i sees key j iff i+sk-sq-left <= j <= i+sk-sq+right (-1 = unbounded)
 *   P = softmax(S) over visible keys; dropout keeps with prob 1-p, scales kept by 1/(1-p)
 *   O = P V;  LSE = log(sum_j exp(s_ij)) over visible keys (natural log, pre-dropout)
 *   rows that see no key: O = 0, LSE = -inf, gradients 0.
 */
#ifndef FLASH_ATTN_C_H
#define FLASH_ATTN_C_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum fa_dtype {
    FA_F32 = 0,  /* CPU only */
    FA_F16 = 1,
    FA_BF16 = 2
} fa_dtype;

typedef enum fa_status {
    FA_OK = 0,
    FA_ERR_NULL_POINTER,  /* a required pointer (q, k, v, o, lse, grads) is NULL */
    FA_ERR_SHAPE,         /* a size is negative or zero where it must be positive */
    FA_ERR_HEADS,         /* heads % heads_k != 0 */
    FA_ERR_HEAD_DIM,      /* head_dim outside [1, 256] */
    FA_ERR_DTYPE,         /* dtype not supported by this backend */
    FA_ERR_WINDOW,        /* window_left or window_right < -1 */
    FA_ERR_DROPOUT,       /* dropout_p outside [0, 1) */
    FA_ERR_SOFTCAP,       /* softcap not 0 or a normal float <= FLT_MAX / 2; softmax_scale not finite
                             or |softmax_scale| > FLT_MAX / 2 */
    FA_ERR_SEQLENS,       /* cu_seqlens decreasing, or a sequence longer than seqlen_q/k */
    FA_ERR_STRIDE,        /* the last dimension is not contiguous */
    FA_ERR_WORKSPACE,     /* workspace missing, too small or not 16-byte aligned */
    FA_ERR_UNSUPPORTED,   /* a combination this backend does not implement */
    FA_ERR_CUDA,          /* a CUDA runtime call failed */
    FA_ERR_NO_CUDA,       /* the library was built without CUDA */
    FA_ERR_NO_MEMORY,     /* a host allocation failed */
    FA_STATUS_COUNT
} fa_status;

/* A human readable message for a status code (static storage, never NULL). */
const char *fa_status_string(fa_status status);

/* Everything one attention call needs. Sizes and strides are in elements, int64.
 * Dense layout:  q (b, sq, h, d), k/v (b, sk, hk, d), o like q, lse (b, h, sq).
 * Varlen layout: cu_seqlens_q/k non-NULL, q (total_q, h, d), k/v (total_k, hk, d),
 *                lse (h, total_q); seqlen_q/k hold the max sequence lengths and the
 *                *_batch_stride fields are ignored. Sequence b owns rows
 *                [cu_seqlens_q[b], cu_seqlens_q[b+1]) of q (likewise k/v); length 0 is legal.
 *                Rows no sequence covers (before cu_seqlens[0], from cu_seqlens[b] on) are
 *                not attention rows: the calls leave them o = 0, lse = -inf, dq = dk = dv = 0
 *                (fa_varlen_zero_uncovered_cpu on the CPU; the CUDA entry points do it).
 * Zero-initialise the struct (memset or `= {0}`) and fill what the call needs. */
typedef struct fa_params {
    fa_dtype dtype;          /* dtype of q, k, v, o, p, dout, dq, dk, dv */
    int64_t batch;           /* b: number of sequences */
    int64_t seqlen_q;        /* sq (dense) or max_seqlen_q (varlen) */
    int64_t seqlen_k;        /* sk (dense) or max_seqlen_k (varlen) */
    int64_t heads;           /* h */
    int64_t heads_k;         /* hk; heads % heads_k == 0; query head i reads kv head i / (h/hk) */
    int64_t head_dim;        /* d, shared by q, k, v, o; 1..256 */
    int64_t total_q;         /* varlen: rows of q (>= cu_seqlens_q[b]); dense: b * sq */
    int64_t total_k;         /* varlen: rows of k / v (>= cu_seqlens_k[b]; 0 = cu_seqlens_k[b]);
                                dense: unused */

    /* forward inputs and outputs */
    const void *q;           /* (b, sq, h, d) | (total_q, h, d) */
    const void *k;           /* (b, sk, hk, d) | (total_k, hk, d) */
    const void *v;           /* (b, sk, hk, d) | (total_k, hk, d) */
    void *o;                 /* like q */
    float *lse;              /* (b, h, sq) | (h, total_q), contiguous fp32 */
    void *p;                 /* optional, NULL = off: (b, h, seqlen_q, seqlen_k) contiguous, dtype;
                                P_ij pre-dropout, negated where dropped, 0 where masked or padded */
    int64_t q_batch_stride, q_row_stride, q_head_stride;
    int64_t k_batch_stride, k_row_stride, k_head_stride;
    int64_t v_batch_stride, v_row_stride, v_head_stride;
    int64_t o_batch_stride, o_row_stride, o_head_stride;

    const int32_t *cu_seqlens_q;  /* (b + 1,) or NULL (dense) */
    const int32_t *cu_seqlens_k;  /* (b + 1,) or NULL (dense); both NULL or both set */

    /* semantics */
    float softmax_scale;     /* usually d ** -0.5 */
    float softcap;           /* 0 = off */
    int64_t window_left;     /* -1 = unbounded */
    int64_t window_right;    /* -1 = unbounded; causal = 0 */
    const float *alibi_slopes;   /* NULL, or (h,) / (b, h) fp32 */
    int64_t alibi_batch_stride;  /* 0 for (h,), h for (b, h) */

    /* dropout: keep bit = fa_dropout_keep(seed, offset, b, h, i, j, fa_dropout_threshold(p)) (p
       quantised to 1/256), kept entries scaled by fa_dropout_rescale(p) = 1 / (1 - p_q) */
    float dropout_p;         /* [0, 1) */
    uint64_t seed;
    uint64_t offset;
    /* CUDA only, for graph capture: when philox_seed_ptr is non-NULL the kernels read
       seed = *philox_seed_ptr, offset = *philox_offset_ptr + philox_offset_add on the device. */
    const int64_t *philox_seed_ptr;
    const int64_t *philox_offset_ptr;
    uint64_t philox_offset_add;
    int64_t *rng_state;      /* optional (2,) {seed, offset} the forward writes (device memory on CUDA) */

    /* backward */
    const void *dout;        /* like o */
    const float *dlse;       /* optional, NULL = 0: the gradient of the loss wrt lse, laid out as lse
                                (contiguous fp32). It adds P_ij dlse_i to dS_ij (d lse_i / d s_ij =
                                P_ij), i.e. D_i = rowsum(dO_i o O_i) - dlse_i */
    void *dq;                /* like q */
    void *dk;                /* like k */
    void *dv;                /* like v */
    int64_t do_batch_stride, do_row_stride, do_head_stride;
    int64_t dq_batch_stride, dq_row_stride, dq_head_stride;
    int64_t dk_batch_stride, dk_row_stride, dk_head_stride;
    int64_t dv_batch_stride, dv_row_stride, dv_head_stride;
    int deterministic;       /* 1: bitwise reproducible backward */
    void *workspace;         /* backend scratch, fa_bwd_*_workspace_bytes() (backward) or
                                fa_fwd_cuda_workspace_bytes() (CUDA forward) bytes, 16-byte
                                aligned; NULL if 0. Outputs (o, lse, p, dq, dk, dv) must not
                                overlap each other or the inputs */
    size_t workspace_bytes;

    /* KV cache (forward; CUDA only, the split-KV kernel; the CPU backend returns
     * FA_ERR_UNSUPPORTED when one is set: flash_attn_c's Python layer gathers the visible keys
     * for it). Dense layout: k/v (batch_cache, seqlen_k, hk, d), seqlen_k the cache capacity.
     * Key position p of sequence i (0 <= p < capacity) lives at
     *   paged (block_table):  row p % page_block_size of block block_table[i][p / page_block_size]
     *                         of k/v (num_blocks, page_block_size, hk, d), k_batch_stride = the
     *                         block stride; varlen or dense q alike (cu_seqlens_k then only gives
     *                         lengths); capacity = seqlen_k
     *   dense:                k[cache_batch_idx ? cache_batch_idx[i] : i][p]
     *   varlen (cu_seqlens_k): k[cu_seqlens_k[i] + p]
     * Sequence i attends to positions [leftpad_k[i], end_i) with end_i = seqused_k[i] if given,
     * else its cu_seqlens_k length (varlen) or seqlen_k (dense); masks and ALiBi are bottom-right
     * aligned in (sq_i, end_i - leftpad_k[i]). Device values are not validated (no host sync):
     * ends are clamped to the capacity (packed varlen: to the sequence's own rows), a block index
     * outside k's dim 0 reads its keys as zeros, a cache_batch_idx outside it gives the sequence
     * no keys (o = 0, lse = -inf); no input reads out of bounds. */
    const int32_t *block_table;        /* NULL, or (b, max_blocks_per_seq) */
    int64_t block_table_batch_stride;
    int64_t page_block_size;           /* > 0 with block_table */
    int64_t kv_cache_rows;             /* k/v dim 0 (num_blocks or batch_cache) when any of
                                          block_table / cache_batch_idx is set */
    const int32_t *seqused_k;          /* NULL, or (b,) */
    const int32_t *leftpad_k;          /* NULL, or (b,) */
    const int32_t *cache_batch_idx;    /* NULL, or (b,), dense layout only */
    int num_splits;                    /* CUDA split-KV: 0 = heuristic, n > 0 = n key splits */
} fa_params;

/* 1 when p uses a KV-cache field above (such calls run on the CUDA split-KV kernel only). */
int fa_params_uses_kv_cache(const fa_params *p);

/* Checks sizes, pointers and semantics fields shared by every backend. backward != 0 also
 * checks the backward fields. Host-side only: it does not read cu_seqlens (may be device memory). */
fa_status fa_check_params(const fa_params *p, int backward);

/* ---- CPU backend (csrc/cpu) -------------------------------------------------------------
 * Work is split into independent items; the caller runs [begin, end) ranges on any threads
 * it likes (the torch glue uses at::parallel_for, so torch.set_num_threads is honoured).
 * Every item writes disjoint outputs, so results do not depend on the split. cu_seqlens must
 * be host memory here. */
int64_t fa_fwd_cpu_work_items(const fa_params *p);
fa_status fa_fwd_cpu(const fa_params *p, int64_t begin, int64_t end);

/* Backward runs in FA_BWD_CPU_PHASES phases, each fully finished before the next starts:
 *   phase 0: D = rowsum(dO * O) into the workspace;
 *   phase 1: dK, dV and a per-chunk fp32 partial sum of dQ per (b, kv head, chunk of key
 *            blocks), recomputing P from LSE;
 *   phase 2: dQ = the sum of the chunks' partials, in a fixed order.
 * The workspace holds D and the chunks' dQ partials (chunks x rows x padded d floats). No
 * atomics and a chunk count that depends on the shape only: deterministic by construction,
 * whatever the thread count. */
#define FA_BWD_CPU_PHASES 3
size_t fa_bwd_cpu_workspace_bytes(const fa_params *p);
int64_t fa_bwd_cpu_work_items(const fa_params *p, int phase);
fa_status fa_bwd_cpu(const fa_params *p, int phase, int64_t begin, int64_t end);

/* Varlen only (a no-op for dense calls): o = 0 and lse = -inf on the q rows outside
 * [cu_seqlens_q[0], cu_seqlens_q[b]) (backward != 0: dq = 0 there, and dk = dv = 0 on the k
 * rows outside [cu_seqlens_k[0], cu_seqlens_k[b])). No work item writes those rows, so the
 * caller runs this once, before or after the items, on any thread. */
fa_status fa_varlen_zero_uncovered_cpu(const fa_params *p, int backward);

/* Naive reference: materializes S and P for one (b, h) at a time, single-threaded. The oracle
 * of the C harness; never optimized. Backward needs no workspace. */
fa_status fa_fwd_cpu_reference(const fa_params *p);
fa_status fa_bwd_cpu_reference(const fa_params *p);

/* Writes the dropout keep mask (b, h, seqlen_q, seqlen_k) as uint8 0/1 for the dense
 * coordinates given; varlen callers index by sequence-local (i, j). */
void fa_dropout_mask_cpu(uint64_t seed, uint64_t offset, float dropout_p, int64_t batch,
                         int64_t heads, int64_t seqlen_q, int64_t seqlen_k,
                         uint8_t *mask /* (b, h, sq, sk) */);

/* ---- Rotary position embedding (RoPE), CPU and CUDA ------------------------------------
 * out[..., :rd] = x[..., :rd] rotated pair by pair, out[..., rd:] = x[..., rd:] (rd = rotary_dim).
 * Pair i (0 <= i < rd/2) is (i, i + rd/2) (GPT-NeoX) or (2i, 2i + 1) when interleaved (GPT-J):
 *   o0 = x0 * c - x1 * s,  o1 = x0 * s + x1 * c,  c = cos[pos][i], s = sin[pos][i] (-sin if
 *   conjugate: the inverse rotation, i.e. the backward). Computed in fp32, stored in dtype.
 * Dense:  x (batch, seqlen, heads, head_dim); row r = b * seqlen + j has pos = j + offset(b).
 * Varlen: cu_seqlens non-NULL, x (rows, heads, head_dim); row r with cu[b] <= r < cu[b + 1] has
 *         pos = r - cu[b] + offset(b); rows outside every sequence are passed through unchanged.
 * offset(b) = seqlen_offsets ? seqlen_offsets[b] : seqlen_offset. A pos outside [0, seqlen_ro)
 * is not rotated (c = 1, s = 0), like flash-attn past the end of its cos/sin tables.
 * out may be x itself (same pointer and strides: in place); otherwise they must not overlap. */
typedef struct fa_rotary_params {
    fa_dtype dtype;            /* of x and out: FA_F32, FA_F16, FA_BF16 (all on both backends) */
    int64_t batch;             /* dense: b; varlen: number of sequences */
    int64_t seqlen;            /* dense: rows per batch entry; varlen: unused */
    int64_t rows;              /* dense: batch * seqlen; varlen: rows of x */
    int64_t heads;
    int64_t head_dim;
    int64_t rotary_dim;        /* even, 0 <= rotary_dim <= head_dim */
    const void *x;             /* (batch, seqlen, heads, head_dim) | (rows, heads, head_dim) */
    void *out;                 /* like x (its own strides), or x itself */
    int64_t x_batch_stride, x_row_stride, x_head_stride;      /* batch stride: dense only */
    int64_t out_batch_stride, out_row_stride, out_head_stride;
    const float *cos;          /* (seqlen_ro, rotary_dim / 2) contiguous fp32 */
    const float *sin;          /* (seqlen_ro, rotary_dim / 2) contiguous fp32 */
    int64_t seqlen_ro;
    const int32_t *cu_seqlens;     /* (batch + 1,) or NULL (dense) */
    const int64_t *seqlen_offsets; /* (batch,) or NULL: then seqlen_offset for every sequence */
    int64_t seqlen_offset;
    int interleaved;
    int conjugate;
} fa_rotary_params;

/* Sizes, pointers and rotary_dim; does not read cu_seqlens / seqlen_offsets (may be device memory). */
fa_status fa_rotary_check(const fa_rotary_params *p);
/* CPU: rows [row_begin, row_end) (any split over threads; rows write disjoint outputs). Host memory. */
fa_status fa_rotary_cpu(const fa_rotary_params *p, int64_t row_begin, int64_t row_end);

/* ---- CUDA backend (csrc/cuda) -----------------------------------------------------------
 * stream is a cudaStream_t passed as void* so that C can include this header. All device
 * pointers, including cu_seqlens. No host synchronization, no allocation. */
int fa_cuda_available(void);  /* 1 if the library was built with the CUDA kernels */
fa_status fa_fwd_cuda(const fa_params *p, void *stream);
/* Scratch of a CUDA forward (the split-KV partial outputs), 0 for most calls; set
 * p->workspace / workspace_bytes to at least this much before fa_fwd_cuda. Depends on the
 * shape, num_splits and the current device's SM count only. */
size_t fa_fwd_cuda_workspace_bytes(const fa_params *p);
/* What a KV-cache decode step does before its attention, in one launch. Appends new keys and
 * values to a KV cache in place: k_new[i][t] goes to position cache_seqlens[i] + t of sequence i
 * (fa_params' KV-cache addressing: paged, cache_batch_idx or row i); positions outside
 * [0, capacity) and blocks / rows outside [0, cache_rows) are skipped (device values are not
 * validated: no host sync). block_table and cache_batch_idx exclude each other
 * (FA_ERR_UNSUPPORTED). With rotary tables, each new key is rotated by its cache position on its
 * way in and q is rotated into q_out (query i at cache_seqlens + i when q_positional, else every
 * query at cache_seqlens), with the arithmetic of fa_rotary_cuda (bit-identical results);
 * positions outside [0, seqlen_ro) stay unrotated. seqused_out receives cache_seqlens + seqlen_new,
 * the lengths the attention then sees. */
typedef struct fa_kvcache_append_params {
    fa_dtype dtype;            /* FA_F16 / FA_BF16 */
    int64_t batch, seqlen_new, heads_k, head_dim;   /* head_dim % 8 == 0 */
    const void *k_new;         /* (b, seqlen_new, hk, d) */
    const void *v_new;         /* (b, seqlen_new, hk, d) */
    int64_t kn_batch_stride, kn_row_stride, kn_head_stride;
    int64_t vn_batch_stride, vn_row_stride, vn_head_stride;
    void *k_cache;             /* (batch_cache, capacity, hk, d) | (num_blocks, page, hk, d) */
    void *v_cache;             /* like k_cache */
    int64_t kc_batch_stride, kc_row_stride, kc_head_stride;
    int64_t vc_batch_stride, vc_row_stride, vc_head_stride;
    int64_t cache_rows;        /* k_cache dim 0 */
    int64_t capacity;          /* positions per sequence: seqlen_cache, or max_blocks * page */
    const int32_t *cache_seqlens;  /* (b,) device, or NULL: cache_seqlen for every sequence */
    int64_t cache_seqlen;
    const int32_t *cache_batch_idx;  /* (b,) or NULL */
    const int32_t *block_table;      /* (b, max_blocks) or NULL */
    int64_t block_table_batch_stride;
    int64_t page_block_size;
    /* optional rotary: rotary_cos == NULL for none */
    const void *rotary_cos;    /* (seqlen_ro, rotary_dim / 2) contiguous, FA_F32 / FA_F16 / FA_BF16 */
    const void *rotary_sin;    /* like rotary_cos */
    fa_dtype rotary_dtype;
    int64_t seqlen_ro, rotary_dim;   /* rotary_dim even, <= head_dim */
    int rotary_interleaved, q_positional;
    const void *q;             /* (b, seqlen_q, heads, d), or NULL: q is not rotated */
    int64_t q_batch_stride, q_row_stride, q_head_stride, seqlen_q, heads;
    void *q_out;               /* (b, seqlen_q, heads, d) contiguous, when q != NULL */
    int32_t *seqused_out;      /* (b,) or NULL */
} fa_kvcache_append_params;
fa_status fa_kvcache_append_cuda(const fa_kvcache_append_params *p, void *stream);
size_t fa_bwd_cuda_workspace_bytes(const fa_params *p);
fa_status fa_bwd_cuda(const fa_params *p, void *stream);
fa_status fa_dropout_mask_cuda(uint64_t seed, uint64_t offset, float dropout_p, int64_t batch,
                               int64_t heads, int64_t seqlen_q, int64_t seqlen_k,
                               uint8_t *mask /* device (b, h, sq, sk) */, void *stream);
/* Rotary embedding of the whole call (device pointers, cu_seqlens / seqlen_offsets included). */
fa_status fa_rotary_cuda(const fa_rotary_params *p, void *stream);

#ifdef __cplusplus
}
#endif

#include "fa_common.h"

#endif /* FLASH_ATTN_C_H */
