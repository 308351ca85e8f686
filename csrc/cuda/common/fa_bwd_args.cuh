/* fa_bwd_args.cuh - what every backward kernel receives: a flat, by-value argument struct
 * built once on the host from fa_params, and the per-sequence view of it on the device.
 *
 * Sizes inside one sequence are int (fa_check_params keeps lengths below 2^31); element offsets
 * into whole tensors are int64. Tensors of the params dtype are passed as uint16_t (fp16/bf16
 * bits); the kernels reinterpret them through the kBf16 template flag. Fields that fa_fwd_args
 * also has carry the same name (and fa_params' name where it has the quantity).
 */
#ifndef FA_BWD_ARGS_CUH
#define FA_BWD_ARGS_CUH

#include <stdint.h>
#include "fa_seq.cuh"

typedef struct fa_bwd_args {
    /* inputs (dense (b, s, h, d) / varlen (total, h, d), like fa_params) */
    const uint16_t *q;      /* (b, sq, h, d) | (total_q, h, d) */
    const uint16_t *k;      /* (b, sk, hk, d) | (total_k, hk, d) */
    const uint16_t *v;      /* like k */
    const uint16_t *o;      /* like q */
    const uint16_t *dout;   /* like q */
    const float *lse;       /* (b, h, sq) | (h, total_q) */
    const float *dlse;      /* like lse, or NULL: the loss's gradient wrt lse (D = rowsum(dO o O) - dlse) */
    /* outputs */
    uint16_t *dq;           /* like q */
    uint16_t *dk;           /* like k */
    uint16_t *dv;           /* like v */
    /* workspace */
    float *dpsum;           /* D = rowsum(dO o O), indexed exactly like lse */
    float *dq_accum;        /* (total_q, h, d) fp32, or NULL (deterministic path, unless dq_sem) */
    int *dq_sem;            /* (b, h, ceil(sq / dq_sem_rows)) int32 turn counters of the sm90 ordered
                               dQ (dense, deterministic), or NULL; zeroed by fa_bwd_dot_do_o_kernel */
    int dq_sem_rows;        /* query rows per counter (the sm90 pipelined kernel's Br), 0 if unused */

    /* batch / row / head strides in elements, named as in fa_params */
    int64_t q_batch_stride, q_row_stride, q_head_stride;
    int64_t k_batch_stride, k_row_stride, k_head_stride;
    int64_t v_batch_stride, v_row_stride, v_head_stride;
    int64_t o_batch_stride, o_row_stride, o_head_stride;
    int64_t do_batch_stride, do_row_stride, do_head_stride;
    int64_t dq_batch_stride, dq_row_stride, dq_head_stride;
    int64_t dk_batch_stride, dk_row_stride, dk_head_stride;
    int64_t dv_batch_stride, dv_row_stride, dv_head_stride;

    const int32_t *cu_seqlens_q;   /* (b + 1,) device, or NULL (dense) */
    const int32_t *cu_seqlens_k;   /* (b + 1,) device, or NULL (dense) */
    int batch, heads, heads_k, head_dim;
    int seqlen_q, seqlen_k;        /* dense sizes / varlen maxima */
    int64_t total_q;               /* rows of q: b * sq (dense), q.size(0) (varlen) */

    float scale;                   /* softmax_scale */
    float scale_log2;              /* softmax_scale * log2(e) */
    float softcap;                 /* 0 = off */
    float scale_div_softcap;       /* softmax_scale / softcap (softcap > 0) */
    int window_left, window_right; /* -1 = unbounded; clamped on the host to < 2^30 */
    const float *alibi_slopes;     /* (h,) | (b, h) or NULL */
    int64_t alibi_batch_stride;    /* 0 for (h,), else the batch stride */

    float dropout_p;               /* 0 = off */
    float dropout_rescale;         /* fa_dropout_rescale(dropout_p) = 1 / (1 - p_q) */
    uint32_t dropout_threshold;    /* fa_dropout_threshold(dropout_p) */
    uint64_t seed, offset;         /* used when philox_seed_ptr is NULL */
    const int64_t *philox_seed_ptr;    /* graph capture: read on the device */
    const int64_t *philox_offset_ptr;
    uint64_t philox_offset_add;

    int atomic_dq;                 /* 1: the dK/dV kernel also adds dS K into dq_accum */
} fa_bwd_args;

#ifdef __CUDACC__
/* Element offset of (sequence row 0, head h) of a tensor with (batch, row, head) strides. */
static __device__ __forceinline__ int64_t fa_bwd_base(const fa_seq &s, int b, int64_t row0, int h,
                                                     int64_t bs, int64_t rs, int64_t hs)
{
    return (s.varlen ? row0 * rs : (int64_t)b * bs) + (int64_t)h * hs;
}

/* Offset of (sequence b, head h, row 0) in lse / dpsum: (b, h, sq) dense, (h, total_q) varlen. */
static __device__ __forceinline__ int64_t fa_bwd_lse_base(const fa_bwd_args &a, const fa_seq &s,
                                                         int b, int h)
{
    return s.varlen ? (int64_t)h * a.total_q + s.q_row0
                    : ((int64_t)b * a.heads + h) * a.seqlen_q;
}

/* Philox (seed, offset) of this call: from the args or, under graph capture, from the device. */
static __device__ __forceinline__ void fa_bwd_philox(const fa_bwd_args &a, uint64_t *seed,
                                                    uint64_t *offset)
{
    if (a.philox_seed_ptr != NULL) {
        *seed = (uint64_t)*a.philox_seed_ptr;
        *offset = (uint64_t)*a.philox_offset_ptr + a.philox_offset_add;
    } else {
        *seed = a.seed;
        *offset = a.offset;
    }
}
#endif /* __CUDACC__ */

#endif /* FA_BWD_ARGS_CUH */
