/* fa_bwd_prep.cuh - the two memory-bound passes around the main backward kernel:
 *   fa_bwd_dot_do_o_kernel:  D = rowsum(dO o O) (fp32, laid out like lse; minus dlse where the
 *                            caller passes the gradient of the LSE output) and, on the atomic
 *                            path, zeroes dq_accum (the workspace arrives uninitialized; the sm90
 *                            tiled one of d > 128 by a flat walk of its own); for the sm90 ordered
 *                            dQ its turn counters (dq_sem) and only the dq_accum tiles no key
 *                            block writes;
 *   fa_bwd_dq_convert_kernel: dq = softmax_scale * dq_accum in the params dtype.
 *
 * One (row, head) pair of the (total_q, h, d) view is handled by 8 consecutive lanes, each
 * taking 16-byte chunks c = lane8, lane8 + 8, ... of the d elements: a group of 8 lanes reads
 * 128 contiguous bytes, and pairs are ordered (row, head) so neighbouring groups are adjacent
 * in memory for the usual (b, s, h, d) layout.
 */
#ifndef FA_BWD_PREP_CUH
#define FA_BWD_PREP_CUH

#include "fa_bwd_args.cuh"
#include "fa_mma.cuh"

#define FA_BWD_PREP_THREADS 256
#define FA_BWD_PREP_LANES 8 /* lanes per (row, head) */

/* Element offset of (global row, head) in a tensor with (batch, row, head) strides: dense rows
 * are b * seqlen_q + i; varlen rows index the (total_q, h, d) view directly. */
static __device__ __forceinline__ int64_t fa_bwd_row_off(const fa_bwd_args &a, int64_t row, int h,
                                                        int64_t bs, int64_t rs, int64_t hs)
{
    if (a.cu_seqlens_q != NULL) return row * rs + (int64_t)h * hs;
    const int64_t b = row / a.seqlen_q, i = row - b * a.seqlen_q;
    return b * bs + i * rs + (int64_t)h * hs;
}

/* lse / dpsum index of (global row, head): (b, h, sq) dense, (h, total_q) varlen */
static __device__ __forceinline__ int64_t fa_bwd_row_lse(const fa_bwd_args &a, int64_t row, int h)
{
    if (a.cu_seqlens_q != NULL) return (int64_t)h * a.total_q + row;
    const int64_t b = row / a.seqlen_q, i = row - b * a.seqlen_q;
    return (b * a.heads + h) * a.seqlen_q + i;
}

/* This thread's place: the (row, head) pair of its group of FA_BWD_PREP_LANES lanes and its lane
 * `sub` in the group; active = the pair exists (row and h are 0 when it does not). */
typedef struct fa_bwd_prep_slot {
    int64_t row;
    int h, sub;
    bool active;
} fa_bwd_prep_slot;

static __device__ __forceinline__ fa_bwd_prep_slot fa_bwd_prep_slot_get(const fa_bwd_args &a)
{
    const int64_t gid = (int64_t)blockIdx.x * FA_BWD_PREP_THREADS + threadIdx.x;
    const int64_t pair = gid / FA_BWD_PREP_LANES;
    fa_bwd_prep_slot t;
    t.sub = (int)(gid % FA_BWD_PREP_LANES);
    t.active = pair < (int64_t)a.total_q * a.heads;
    t.row = t.active ? pair / a.heads : 0;
    t.h = t.active ? (int)(pair % a.heads) : 0;
    return t;
}

/* flat_clear4 > 0: a.dq_accum is the sm90 tiled buffer of d > 128 (fa_bwd_sm90_dq_tiled.cuh), that
 * many float4, whose layout does not follow the (row, head) pairs: every thread of the grid clears
 * a float4 per grid stride, before its loads (the stores need no result; one pass over memory in
 * place of a separate cudaMemsetAsync, which cost 41 us at 16k tokens, h 8, d 256: H100 run 75). */
template <bool kBf16>
__global__ void __launch_bounds__(FA_BWD_PREP_THREADS)
fa_bwd_dot_do_o_kernel(const fa_bwd_args a, int64_t flat_clear4)
{
    if (flat_clear4 > 0) {
        const int64_t stride = (int64_t)gridDim.x * FA_BWD_PREP_THREADS;
        float4 *acc = (float4 *)a.dq_accum;
        for (int64_t u = (int64_t)blockIdx.x * FA_BWD_PREP_THREADS + threadIdx.x; u < flat_clear4; u += stride)
            acc[u] = make_float4(0.f, 0.f, 0.f, 0.f);
    }
    const fa_bwd_prep_slot t = fa_bwd_prep_slot_get(a);
    const int64_t row = t.row;
    const int h = t.h, sub = t.sub;
    const bool active = t.active;
    const int chunks = a.head_dim / 8;
    float sum = 0.f;
    if (active) {
        const uint16_t *o = a.o + fa_bwd_row_off(a, row, h, a.o_batch_stride, a.o_row_stride, a.o_head_stride);
        const uint16_t *dout = a.dout + fa_bwd_row_off(a, row, h, a.do_batch_stride, a.do_row_stride, a.do_head_stride);
        for (int ch = sub; ch < chunks; ch += FA_BWD_PREP_LANES) {
            const uint4 ov = *(const uint4 *)(o + 8 * ch);
            const uint4 dv = *(const uint4 *)(dout + 8 * ch);
            const uint32_t ow[4] = {ov.x, ov.y, ov.z, ov.w};
            const uint32_t dw[4] = {dv.x, dv.y, dv.z, dv.w};
#pragma unroll
            for (int w = 0; w < 4; ++w) {
                const float2 of = fa_unpack_f32x2<kBf16>(ow[w]);
                const float2 df = fa_unpack_f32x2<kBf16>(dw[w]);
                sum = fmaf(of.x, df.x, sum);
                sum = fmaf(of.y, df.y, sum);
            }
        }
    }
    /* the 8 lanes of a pair are aligned inside the warp (8 divides 32) */
    sum += __shfl_xor_sync(0xffffffffu, sum, 4);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    if (!active) return;
    if (sub == 0) {
        /* dlse: d lse_i / d s_ij = P_ij adds P_ij dlse_i to every dS_ij = P_ij (dP_ij - D_i) */
        const int64_t at = fa_bwd_row_lse(a, row, h);
        a.dpsum[at] = a.dlse != NULL ? sum - a.dlse[at] : sum;
    }
    /* sm90 ordered dQ (a.dq_sem, dense): the first key block of a tile stores it (turn 0,
     * warp_write_dq), so only the rows of tiles that no key block touches need clearing: those
     * whose dq_sem_rows-row tile sees no key (fa_band_keys empty; e.g. causal rows above the
     * diagonal when seqlen_q > seqlen_k, seqlen_k = 0), where dq = 0 */
    bool clear = a.dq_accum != NULL && flat_clear4 == 0;
    if (clear && a.dq_sem != NULL && !a.atomic_dq) {
        const int64_t i = row % a.seqlen_q;
        const int r0 = (int)(i - i % a.dq_sem_rows), r1 = min(r0 + a.dq_sem_rows, a.seqlen_q) - 1;
        int lo, hi;
        fa_band_keys(r0, r1, a.seqlen_q, a.seqlen_k, a.window_left, a.window_right, &lo, &hi);
        clear = lo > hi;
    }
    if (clear) {
        float4 *acc = (float4 *)(a.dq_accum + (row * a.heads + h) * a.head_dim);
        for (int c4 = sub; c4 < a.head_dim / 4; c4 += FA_BWD_PREP_LANES)
            acc[c4] = make_float4(0.f, 0.f, 0.f, 0.f);
    }
    /* sm90 ordered dQ (dense): the turn counter of (b, h, query tile) by the pair of its first row */
    if (a.dq_sem != NULL && sub == 0) {
        const int64_t b = row / a.seqlen_q, i = row - b * a.seqlen_q;
        if (i % a.dq_sem_rows == 0) {
            const int64_t tiles = (a.seqlen_q + a.dq_sem_rows - 1) / a.dq_sem_rows;
            a.dq_sem[(b * a.heads + h) * tiles + i / a.dq_sem_rows] = 0;
        }
    }
}

template <bool kBf16>
__global__ void __launch_bounds__(FA_BWD_PREP_THREADS)
fa_bwd_dq_convert_kernel(const fa_bwd_args a)
{
    const fa_bwd_prep_slot t = fa_bwd_prep_slot_get(a);
    if (!t.active) return;
    const int64_t row = t.row;
    const int h = t.h, sub = t.sub;
    const float4 *acc = (const float4 *)(a.dq_accum + (row * a.heads + h) * a.head_dim);
    uint16_t *dq = a.dq + fa_bwd_row_off(a, row, h, a.dq_batch_stride, a.dq_row_stride, a.dq_head_stride);
    for (int ch = sub; ch < a.head_dim / 8; ch += FA_BWD_PREP_LANES) {
        const float4 x = acc[2 * ch], y = acc[2 * ch + 1];
        uint4 out;
        out.x = fa_pack_f32x2<kBf16>(x.x * a.scale, x.y * a.scale);
        out.y = fa_pack_f32x2<kBf16>(x.z * a.scale, x.w * a.scale);
        out.z = fa_pack_f32x2<kBf16>(y.x * a.scale, y.y * a.scale);
        out.w = fa_pack_f32x2<kBf16>(y.z * a.scale, y.w * a.scale);
        *(uint4 *)(dq + 8 * ch) = out;
    }
}

#endif /* FA_BWD_PREP_CUH */
