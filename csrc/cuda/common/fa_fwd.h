/* fa_fwd.h - host/device interface of the CUDA forward: the kernel argument block and the
 * per-head-dim launchers (one .cu per head-dim bucket, so the build can run them in parallel).
 */
#ifndef FA_FWD_H
#define FA_FWD_H

#include <cuda_runtime.h>
#include <stdint.h>
#include "flash_attn_c.h"

/* Everything a forward kernel reads, already validated and converted by fa_fwd_cuda (passed by
 * value as a kernel parameter). Element strides; layouts as in fa_params. */
typedef struct fa_fwd_args {
    const void *q;     /* (b, sq, h, d) | (total_q, h, d) */
    const void *k;     /* (b, sk, hk, d) | (total_k, hk, d) */
    const void *v;     /* (b, sk, hk, d) | (total_k, hk, d) */
    void *o;           /* like q */
    float *lse;        /* (b, h, sq) | (h, total_q) */
    void *p;           /* NULL or (b, h, sq, sk) contiguous, the return_attn_probs output */
    int64_t q_batch_stride, q_row_stride, q_head_stride;
    int64_t k_batch_stride, k_row_stride, k_head_stride;
    int64_t v_batch_stride, v_row_stride, v_head_stride;
    int64_t o_batch_stride, o_row_stride, o_head_stride;
    const int32_t *cu_seqlens_q;  /* (b + 1,) device, or NULL (dense) */
    const int32_t *cu_seqlens_k;  /* (b + 1,) device, or NULL (dense) */
    int64_t total_q;              /* varlen: rows of q (LSE row pitch) */
    int batch, heads, heads_k, group;  /* group = heads / heads_k */
    int seqlen_q, seqlen_k;       /* dense sizes, or the varlen maxima */
    int head_dim;                 /* real d (<= the kernel's bucket), multiple of 8 */
    int window_left, window_right;  /* -1 = unbounded (also for windows wider than the sequences) */
    float scale;                  /* softmax_scale */
    float scale_log2;             /* softmax_scale * log2(e) */
    float softcap;                /* 0 = off */
    float softcap_log2;           /* softcap * log2(e) */
    float scale_div_softcap;      /* softmax_scale / softcap */
    const float *alibi_slopes;    /* NULL or (h,) / (b, h) */
    int64_t alibi_batch_stride;
    int has_dropout;              /* dropout_p > 0 */
    uint32_t dropout_threshold;   /* fa_dropout_threshold(dropout_p) */
    float dropout_rescale;        /* fa_dropout_rescale(dropout_p) = 1 / (1 - p_q) */
    uint64_t seed, offset;
    const int64_t *philox_seed_ptr;    /* device, or NULL */
    const int64_t *philox_offset_ptr;  /* device, or NULL */
    uint64_t philox_offset_add;
    int64_t *rng_state;           /* device (2,), or NULL */
} fa_fwd_args;

/* Fills the kernel arguments from a checked fa_params (fa_fwd_api.cu); FA_ERR_NULL_POINTER when a
 * philox seed pointer comes without its offset pointer. */
fa_status fa_fwd_fill_args(const fa_params *p, fa_fwd_args *a);

/* Launches the forward of head-dim bucket D (32, 64, ..., 256) for dtype FA_F16 / FA_BF16. */
template <int D>
fa_status fa_fwd_launch_hdim(const fa_fwd_args &a, fa_dtype dtype, cudaStream_t stream);

/* The slow second pass that writes P for return_attn_probs (needs the LSE of the first). */
fa_status fa_fwd_probs_launch(const fa_fwd_args &a, fa_dtype dtype, cudaStream_t stream);

/* One thread writes {seed, offset} to a.rng_state (used when the main grid is empty). */
fa_status fa_fwd_rng_state_launch(const fa_fwd_args &a, cudaStream_t stream);

/* Reads the Philox seed/offset the kernels use: from the device pointers when given (graph
 * capture), else from the arguments. */
static __device__ __forceinline__ void fa_fwd_philox_seed(const fa_fwd_args &a, uint64_t *seed,
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

#endif /* FA_FWD_H */
