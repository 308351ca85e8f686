/* fa_fwd_probs.cu - the return_attn_probs output: a slow, simple second pass for testing.
 *
 * After the forward has written LSE, recomputes every score with an fp32 dot product and writes
 *   P_ij = exp(s_ij - LSE_i)      (pre-dropout softmax probability)
 *   negated where dropout dropped (i, j), 0 where masked or outside this sequence,
 * into p (b, h, seqlen_q, seqlen_k) contiguous, in the input dtype. Same score definition as the
 * forward kernel (scale, softcap, ALiBi, bottom-right window), so the probabilities agree with
 * the forward's to fp32 rounding. Not tuned: one block per (b, h, row), threads over keys.
 */
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <math.h>
#include <stdint.h>
#include "fa_fwd.h"
#include "fa_common.h"
#include "fa_seq.cuh"
#include "fa_mma.cuh"  /* fa_b16_to_f32, fa_f32_to_b16 */

#define FA_PROBS_THREADS 256

/* grid (b * h, min(seqlen_q, 65535)); rows strided by gridDim.y. */
template <bool kBf16>
__global__ void __launch_bounds__(FA_PROBS_THREADS) fa_fwd_probs_kernel(const fa_fwd_args a)
{
    __shared__ float q_row[256];  /* this row's q, fp32 */
    const int b = blockIdx.x / a.heads;
    const int h = blockIdx.x % a.heads;
    const int kv_h = h / a.group;

    /* this sequence's extent (fa_seq.cuh) */
    const fa_seq seq = fa_seq_get(a.cu_seqlens_q != NULL, a.cu_seqlens_q, a.cu_seqlens_k, a.seqlen_q,
                                  a.seqlen_k, b);
    const int sq = seq.sq, sk = seq.sk;
    int64_t q_off, k_off;
    const float *lse_row;
    if (seq.varlen) {
        q_off = seq.q_row0 * a.q_row_stride;
        k_off = seq.k_row0 * a.k_row_stride;
        lse_row = a.lse + (int64_t)h * a.total_q + seq.q_row0;
    } else {
        q_off = (int64_t)b * a.q_batch_stride;
        k_off = (int64_t)b * a.k_batch_stride;
        lse_row = a.lse + ((int64_t)b * a.heads + h) * a.seqlen_q;
    }
    uint64_t seed = 0, offset = 0;
    if (a.has_dropout) fa_fwd_philox_seed(a, &seed, &offset);
    const float slope = a.alibi_slopes != NULL ? a.alibi_slopes[(int64_t)b * a.alibi_batch_stride + h] : 0.f;
    const uint16_t *gQ = (const uint16_t *)a.q + q_off + (int64_t)h * a.q_head_stride;
    const uint16_t *gK = (const uint16_t *)a.k + k_off + (int64_t)kv_h * a.k_head_stride;
    uint16_t *gP = (uint16_t *)a.p + ((int64_t)b * a.heads + h) * a.seqlen_q * a.seqlen_k;

    for (int i = blockIdx.y; i < a.seqlen_q; i += gridDim.y) {
        uint16_t *p_row = gP + (int64_t)i * a.seqlen_k;
        if (i >= sq) {  /* padding row of a shorter varlen sequence */
            for (int j = threadIdx.x; j < a.seqlen_k; j += blockDim.x) p_row[j] = 0;
            continue;
        }
        __syncthreads();  /* why: the previous row's readers of q_row are done */
        for (int c = threadIdx.x; c < a.head_dim; c += blockDim.x)
            q_row[c] = fa_b16_to_f32<kBf16>(*(gQ + (int64_t)i * a.q_row_stride + c));
        __syncthreads();  /* why: q_row is read by every thread below */
        int64_t j_lo, j_hi;
        fa_mask_bounds(i, sq, sk, a.window_left, a.window_right, &j_lo, &j_hi);
        const float lse = lse_row[i];
        for (int j = threadIdx.x; j < a.seqlen_k; j += blockDim.x) {
            float out = 0.f;
            if (j < sk && j >= j_lo && j <= j_hi) {
                const uint16_t *k_row = gK + (int64_t)j * a.k_row_stride;
                float dot = 0.f;
                for (int c = 0; c < a.head_dim; ++c) dot = fmaf(q_row[c], fa_b16_to_f32<kBf16>(*(k_row + c)), dot);
                float s = dot * a.scale;
                if (a.softcap > 0.f) s = a.softcap * tanhf(s / a.softcap);
                if (a.alibi_slopes != NULL) s += fa_alibi_bias(slope, i, j, sq, sk);
                out = expf(s - lse);
                if (a.has_dropout && !fa_dropout_keep(seed, offset, b, h, i, j, a.dropout_threshold)) out = -out;
            }
            p_row[j] = fa_f32_to_b16<kBf16>(out);
        }
    }
}

fa_status fa_fwd_probs_launch(const fa_fwd_args &a, fa_dtype dtype, cudaStream_t stream)
{
    if (a.p == NULL || a.seqlen_q == 0 || a.seqlen_k == 0 || a.batch == 0) return FA_OK;
    const int rows = a.seqlen_q < 65535 ? a.seqlen_q : 65535;
    const dim3 grid((unsigned)(a.batch * a.heads), (unsigned)rows);
    if (dtype == FA_BF16)
        fa_fwd_probs_kernel<true><<<grid, FA_PROBS_THREADS, 0, stream>>>(a);
    else
        fa_fwd_probs_kernel<false><<<grid, FA_PROBS_THREADS, 0, stream>>>(a);
    return cudaGetLastError() == cudaSuccess ? FA_OK : FA_ERR_CUDA;
}
