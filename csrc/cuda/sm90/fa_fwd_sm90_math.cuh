/* fa_fwd_sm90_math.cuh - the per-tile math of the Hopper forward's consumer warpgroups
 * (fa_fwd_sm90_consumer.cuh): the two wgmma GEMMs of a key tile, the scores as the softmax takes
 * them (softcap, ALiBi, mask), the online-softmax step split for the intra-warpgroup overlap, the
 * O rescale and the P repack into wgmma A fragments.
 *
 * Accumulator layout (wgmma m64nNk16, fa_wgmma.cuh): thread (warp wq of the warpgroup, lane =
 * 4 g + t4) holds rows 16 wq + g and + 8, columns 8 nb + 2 t4 + e: s[4 nb + 2 half + e].
 */
#ifndef FA_FWD_SM90_MATH_CUH
#define FA_FWD_SM90_MATH_CUH

#include "fa_fwd_sm90_block.cuh"

#if FA_SM90_DEVICE

/* S = Q K^T for this warpgroup's 64 rows: D/16 wgmma k-steps. dq / dk: descriptors of the
 * warpgroup's Q rows in column block 0 and of the K slot's column block 0. */
template <bool kBf16, int D, int Br, int Bc>
static __device__ __forceinline__ void warpgroup_gemm_qk(float (&s)[Bc / 2], uint64_t dq, uint64_t dk)
{
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
        const uint32_t in_block = (uint32_t)(kk % 4) * 32u;  /* 16 elements = 32 bytes */
        const uint64_t da = fa_wgmma_desc_add(dq, (uint32_t)(kk / 4) * (uint32_t)(Br * 128) + in_block);
        const uint64_t db = fa_wgmma_desc_add(dk, (uint32_t)(kk / 4) * (uint32_t)(Bc * 128) + in_block);
        fa_wgmma_ss<Bc, kBf16>(s, da, db, kk > 0 ? 1 : 0);
    }
}

/* O += P V: Bc/16 wgmma k-steps of 16 keys (16 rows of 128 bytes = 2048 bytes of the V slot). */
template <bool kBf16, int D, int Bc>
static __device__ __forceinline__ void warpgroup_gemm_pv(float (&o)[D / 2], const uint32_t (&pa)[Bc / 16][4],
                                                        uint64_t dv)
{
#pragma unroll
    for (int kk = 0; kk < Bc / 16; ++kk)
        fa_wgmma_rs_tb<D, kBf16>(o, pa[kk], fa_wgmma_desc_add(dv, (uint32_t)kk * 2048u), 1);
}

/* Sets invisible scores of a wgmma accumulator tile to -inf. s[4 nb + 2 half + e] is row
 * row0 + 8 half, key col0 + 8 nb + e (row0 = this thread's first row, col0 = key of its first
 * column). Keys below key_min are invisible too (the end-aligned varlen tile). */
template <int kNB>
static __device__ __forceinline__ void thread_mask_tile_sm90(float (&s)[kNB * 4], const fa_mask_t mk, int row0,
                                                            int col0, int key_min)
{
#pragma unroll
    for (int half = 0; half < 2; ++half) {
        int lo, hi;
        fa_mask_row_range(mk, row0 + 8 * half, &lo, &hi);
        /* bounds relative to col0, so the column offsets 8 nb + e are immediates (absolute keys
         * would be 2 kNB loop-invariant registers, which the compiler hoists and keeps live) */
        const int lo_rel = max(lo, key_min) - col0, hi_rel = hi - col0;
#pragma unroll
        for (int nb = 0; nb < kNB; ++nb)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                const int rel = 8 * nb + e;
                if (rel < lo_rel || rel > hi_rel) s[4 * nb + 2 * half + e] = -INFINITY;
            }
    }
}

/* The scores of key tile t as the softmax takes them: kFeat with softcap turns raw q.k into log2
 * units first (softcap log2(e) tanh(x scale / softcap), fa_softmax.cuh's "x" convention with
 * mul = 1), without softcap they stay q.k units (mul = scale log2(e)); minus the ALiBi bias
 * slope |i + sk - sq - j| in those units (the kernel passes slope log2(e) or slope / scale); then the
 * mask, where the tile straddles the band edge or the sequence end. Row i = row0 + 8 half, key
 * j = c0 + 2 t4 + 8 nb + e, c0 the tile's first key row (fa_sm90_tile_row0). The plain variant
 * is the mask alone, instruction for instruction the code before kFeat existed; so is kFeatSet
 * DROP (dropout alone: its keep bits follow the softmax, the zeroing the pack of P,
 * fa_fwd_sm90_dropout.cuh). */
template <bool kFeat, int kNB, int Bc, int kFeatSet = FA_SM90_FEAT_ANY>
static __device__ __forceinline__ void thread_scores_sm90(float (&s)[kNB * 4], const fa_fwd_args &a, const fa_mask_t mk,
                                                         float slope, int row0, int t4, int wg_r0, int wg_r1, int t,
                                                         int varlen)
{
    const int c0 = fa_sm90_tile_row0<Bc>(t, mk.sk, varlen);
    if (kFeat && kFeatSet != FA_SM90_FEAT_DROP) {
        /* kFeatSet (fa_fwd_sm90_args.cuh): CAP / ALIBI compile the other feature out; CAP_SLIM's
         * scores are CAP's */
        constexpr bool kCapOnly = fa_sm90_feat_cap_only(kFeatSet);
        const bool cap = kCapOnly || (kFeatSet == FA_SM90_FEAT_ANY && a.softcap > 0.f);
        constexpr bool kAlibi = !kCapOnly;
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            /* i + sk - sq - j at nb = e = 0, converted once: the other columns subtract the
             * immediate 8 nb + e in fp32 (exact below 2^24) instead of an integer subtract and
             * an int-to-float conversion per score */
            const float rel = (float)(row0 + 8 * half + mk.sk - mk.sq - c0 - 2 * t4);
#pragma unroll
            for (int nb = 0; nb < kNB; ++nb)
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    float x = s[4 * nb + 2 * half + e];
                    /* CAP alone keeps tanh units: its softmax multiplier is softcap log2(e) */
                    if (cap) x = kCapOnly ? fa_tanh(x * a.scale_div_softcap)
                                                              : a.softcap_log2 * fa_tanh(x * a.scale_div_softcap);
                    s[4 * nb + 2 * half + e] = kAlibi ? fmaf(-slope, fabsf(rel - (float)(8 * nb + e)), x) : x;
                }
        }
    }
    if (!fa_mask_tile_is_full(mk, wg_r0, wg_r1, t * Bc, t * Bc + Bc))
        thread_mask_tile_sm90<kNB>(s, mk, row0, c0 + 2 * t4, t * Bc);
}

/* One row half's exponentials, the step every softmax variant shares: s <- p = exp2(s mul - off)
 * over the half's scores (the thread's 2 kNB of that row), returning their sum (in score order).
 * off: m_i mul for the running-max softmax, the fixed offset for CAP_SLIM. */
template <int kNB>
static __device__ __forceinline__ float thread_exp2_rowsum_sm90(float (&s)[kNB * 4], int half, float mul, float off)
{
    float sum = 0.f;
#pragma unroll
    for (int nb = 0; nb < kNB; ++nb)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
            const float p = fa_exp2(fmaf(s[4 * nb + 2 * half + e], mul, -off));
            s[4 * nb + 2 * half + e] = p;
            sum += p;
        }
    return sum;
}

/* The online-softmax step of fa_softmax.cuh, split in two for the intra-warpgroup overlap: this
 * part needs only S (the O rescale by alpha happens after the P V product in flight is done).
 *   m_new = max(m, rowmax(s)); alpha = exp2((m - m_new) mul); l = l alpha + rowsum(p);
 *   s <- p = exp2(s mul - m_new mul)
 * Rows with only -inf so far keep m = -inf and p = alpha = 0 (the exponent offset is 0 then). */
template <int kNB>
static __device__ __forceinline__ void thread_softmax_sm90(float (&s)[kNB * 4], float (&m)[2], float (&l)[2],
                                                          float (&alpha)[2], float mul)
{
#pragma unroll
    for (int half = 0; half < 2; ++half) {
        float mx = m[half];
#pragma unroll
        for (int nb = 0; nb < kNB; ++nb) mx = fmaxf(mx, fmaxf(s[4 * nb + 2 * half], s[4 * nb + 2 * half + 1]));
        mx = quad_allreduce_max(mx);
        const float m_scaled = mx == -INFINITY ? 0.f : mx * mul;
        alpha[half] = fa_exp2(m[half] * mul - m_scaled);
        m[half] = mx;
        l[half] = fmaf(l[half], alpha[half], thread_exp2_rowsum_sm90<kNB>(s, half, mul, m_scaled));
    }
}

/* CAP_SLIM's softmax step (fa_fwd_sm90_args.cuh): the scores are bounded tanh units, so no row max
 * and no alpha; the fixed offset off (fa_sm90_cap_slim_offset) stands for m_i mul in every tile:
 *   s <- p = exp2(s mul - off);  l += rowsum(p)
 * Masked scores (-inf) give p = 0; rows with no visible key keep l = 0 (the epilogue's test). */
template <int kNB>
static __device__ __forceinline__ void thread_softmax_fixed_sm90(float (&s)[kNB * 4], float (&l)[2], float mul,
                                                                float off)
{
#pragma unroll
    for (int half = 0; half < 2; ++half) l[half] += thread_exp2_rowsum_sm90<kNB>(s, half, mul, off);
}

template <int kDB>
static __device__ __forceinline__ void thread_rescale_o(float (&o)[kDB * 4], const float (&alpha)[2])
{
#pragma unroll
    for (int db = 0; db < kDB; ++db) {
        o[4 * db + 0] *= alpha[0];
        o[4 * db + 1] *= alpha[0];
        o[4 * db + 2] *= alpha[1];
        o[4 * db + 3] *= alpha[1];
    }
}

/* P (fp32 accumulator layout) -> wgmma A fragments of Bc/16 k-steps (fa_pack_c_to_a order). */
template <bool kBf16, int Bc>
static __device__ __forceinline__ void thread_pack_p(uint32_t (&pa)[Bc / 16][4], const float (&s)[Bc / 2])
{
#pragma unroll
    for (int kk = 0; kk < Bc / 16; ++kk) {
        pa[kk][0] = fa_pack_f32x2<kBf16>(s[8 * kk + 0], s[8 * kk + 1]);
        pa[kk][1] = fa_pack_f32x2<kBf16>(s[8 * kk + 2], s[8 * kk + 3]);
        pa[kk][2] = fa_pack_f32x2<kBf16>(s[8 * kk + 4], s[8 * kk + 5]);
        pa[kk][3] = fa_pack_f32x2<kBf16>(s[8 * kk + 6], s[8 * kk + 7]);
    }
}

#endif /* FA_SM90_DEVICE */

#endif /* FA_FWD_SM90_MATH_CUH */
