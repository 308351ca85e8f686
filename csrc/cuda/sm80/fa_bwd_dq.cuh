/* fa_bwd_dq.cuh - deterministic dQ: a separate pass that owns its query rows, so dQ is summed
 * in one fixed order (key blocks ascending) in registers, with no atomics.
 *
 * Grid (ceil(max_sq / Br), heads, batch); block = Br query rows of one query head. Q_i, dO_i,
 * and the rows' LSE and D stay for the whole block; the block walks the key blocks K_j, V_j of
 * the mask band (double buffered) and per key block recomputes
 *   S = Q_i K_j^T,  P = exp(S' - LSE),  dP = dO_i V_j^T,  dS = P o (dP o Z - D) o (1 - tanh^2)
 *   dQ_i += dS K_j
 * Each warp owns 16 whole rows, so dS leaves the S/dP accumulators as A fragments of the dS K
 * product directly (fa_pack_c_to_a), without shared memory. Costs S, dP once more than the
 * atomic path (7 instead of 5 products in total), the price of bitwise reproducibility.
 */
#ifndef FA_BWD_DQ_CUH
#define FA_BWD_DQ_CUH

#include "fa_bwd_args.cuh"
#include "fa_bwd_config.cuh"
#include "fa_bwd_tile.cuh"

template <bool kBf16, int D>
__global__ void __launch_bounds__(fa_bwd_dq_cfg<D>::kThreads, 1)
fa_bwd_dq_kernel(const fa_bwd_args a)
{
    typedef fa_bwd_dq_cfg<D> C;
    constexpr int kBr = C::kBr, kBc = C::kBc, kThreads = C::kThreads;
    constexpr int kNtS = kBc / 8;  /* S / dP: 16 rows x Bc per warp */
    constexpr int kNtQ = D / 8;   /* dQ: 16 rows x d per warp */

    extern __shared__ __align__(16) unsigned char fa_bwd_smem[];
    uint16_t *sQ = (uint16_t *)(fa_bwd_smem + C::kOffQ);    /* [Br][d] */
    uint16_t *sdO = (uint16_t *)(fa_bwd_smem + C::kOffDo);  /* [Br][d] */
    uint16_t *sK = (uint16_t *)(fa_bwd_smem + C::kOffK);    /* [2][Bc][d] */
    uint16_t *sV = (uint16_t *)(fa_bwd_smem + C::kOffV);    /* [2][Bc][d] */
    fa_bwd_slot *sSlot = (fa_bwd_slot *)(fa_bwd_smem + C::kOffZero); /* zero, Philox */
    const int *sZero = &sSlot->zero;

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int m_block = blockIdx.x, qh = blockIdx.y, b = blockIdx.z;
    const fa_seq seq = fa_seq_get(a.cu_seqlens_q != NULL, a.cu_seqlens_q, a.cu_seqlens_k, a.seqlen_q,
                                 a.seqlen_k, b);
    const int m0 = m_block * kBr;
    if (m0 >= seq.sq) return;
    if (tid == 0) thread_init_bwd_slot(sSlot, a); /* ordered before its readers by the first loop barrier */
    const int hk = qh / (a.heads / a.heads_k);

    /* key blocks with a key seen by some row of [m0, m_last] (fa_seq.cuh) */
    int64_t j_lo, j_hi;
    fa_band_keys(m0, min(m0 + kBr, seq.sq) - 1, seq.sq, seq.sk, a.window_left, a.window_right, &j_lo, &j_hi);
    const fa_band n_band = fa_band_tiles(j_lo, j_hi, kBc);
    const int n_begin = n_band.first, n_n = n_band.count;

    const int64_t k_base = fa_bwd_base(seq, b, seq.k_row0, hk, a.k_batch_stride, a.k_row_stride, a.k_head_stride);
    const int64_t v_base = fa_bwd_base(seq, b, seq.k_row0, hk, a.v_batch_stride, a.v_row_stride, a.v_head_stride);
    if (n_n > 0) {
        const int64_t q_off = fa_bwd_base(seq, b, seq.q_row0, qh, a.q_batch_stride, a.q_row_stride, a.q_head_stride) +
                              (int64_t)m0 * a.q_row_stride;
        const int64_t do_off =
            fa_bwd_base(seq, b, seq.q_row0, qh, a.do_batch_stride, a.do_row_stride, a.do_head_stride) +
            (int64_t)m0 * a.do_row_stride;
        const int n0 = n_begin * kBc;
        block_load_tile_async<D, kBr, kThreads>(sQ, a.q + q_off, a.q_row_stride, seq.sq - m0, a.head_dim, tid, 0);
        block_load_tile_async<D, kBr, kThreads>(sdO, a.dout + do_off, a.do_row_stride, seq.sq - m0, a.head_dim,
                                                 tid, 0);
        block_load_tile_async<D, kBc, kThreads>(sK, a.k + k_base + (int64_t)n0 * a.k_row_stride, a.k_row_stride,
                                                 seq.sk - n0, a.head_dim, tid, 0);
        block_load_tile_async<D, kBc, kThreads>(sV, a.v + v_base + (int64_t)n0 * a.v_row_stride, a.v_row_stride,
                                                 seq.sk - n0, a.head_dim, tid, 0);
        fa_cp_async_commit();
    }

    /* LSE and D of the lane's two rows (g, g + 8 of its warp's 16); rows past sq read 0 */
    float lse[1][2], dps[1][2];
    {
        const int64_t l_off = fa_bwd_lse_base(a, seq, b, qh);
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const int i = m0 + 16 * warp + 8 * half + g;
            lse[0][half] = i < seq.sq ? a.lse[l_off + i] : 0.f;
            dps[0][half] = i < seq.sq ? a.dpsum[l_off + i] : 0.f;
        }
    }

    fa_bwd_score_ctx c = fa_bwd_make_score_ctx(a, seq, b, qh, sSlot->philox);

    float acc_dq[1][kNtQ][4];
    thread_zero_tile<1, kNtQ>(acc_dq);

    for (int it = 0; it < n_n; ++it) {
        const int st = it & 1;
        const int n0 = (n_begin + it) * kBc;
        const uint16_t *sKc = sK + st * kBc * D;
        const uint16_t *sVc = sV + st * kBc * D;

        fa_cp_async_wait<0>();
        /* why: K_j, V_j (and at it = 0 Q, dO and *sZero) were written by all threads; and every
         * warp has finished iteration it - 1, whose K, V buffer is refilled now */
        __syncthreads();
        const int zero = fa_opaque_zero(sZero); /* after the barrier; see fa_opaque_zero */
        if (it + 1 < n_n) {
            const int n1 = n0 + kBc;
            block_load_tile_async<D, kBc, kThreads>(sK + (st ^ 1) * kBc * D,
                                                     a.k + k_base + (int64_t)n1 * a.k_row_stride, a.k_row_stride,
                                                     seq.sk - n1, a.head_dim, tid, zero);
            block_load_tile_async<D, kBc, kThreads>(sV + (st ^ 1) * kBc * D,
                                                     a.v + v_base + (int64_t)n1 * a.v_row_stride, a.v_row_stride,
                                                     seq.sk - n1, a.head_dim, tid, zero);
            fa_cp_async_commit();
        }
        const bool need_mask = !fa_mask_tile_is_full(c.mask, m0, m0 + kBr, n0, n0 + kBc);

        float acc_s[1][kNtS][4];
        thread_zero_tile<1, kNtS>(acc_s);
        warp_gemm_smem<kBf16, 1, kNtS, D / 16, D, D, false, false, FA_BWD_ADDR_ALL>(acc_s, sQ, 16 * warp, sKc, 0, zero);
        warp_bwd_probs<kBf16, 1, kNtS, false, kBc>(acc_s, c, m0 + 16 * warp + g, n0 + 2 * t, lse,
                                                    need_mask, NULL, 0, 0);
        {
            float acc_dp[1][kNtS][4];
            thread_zero_tile<1, kNtS>(acc_dp);
            warp_gemm_smem<kBf16, 1, kNtS, D / 16, D, D, false, false, FA_BWD_ADDR_ALL>(acc_dp, sdO, 16 * warp, sVc, 0, zero);
            thread_bwd_dscores<1, kNtS>(acc_s, acc_dp, dps, c.dropout, c.dropout_rescale);
        }

        /* dQ += dS K: A = dS from registers, B = K_j stored [key][d] = [k][n] (.trans) */
        const uint32_t k_addr = fa_smem_u32(sKc);
#pragma unroll
        for (int ks = 0; ks < kBc / 16; ++ks) {
            uint32_t af[4];
            fa_pack_c_to_a<kBf16>(af, acc_s[0][2 * ks], acc_s[0][2 * ks + 1]);
#pragma unroll
            for (int np = 0; np < kNtQ / 2; ++np) {
                uint32_t bf[4];
                warp_ldmatrix_x4_trans(bf, k_addr + 2u * (uint32_t)fa_tile_offset<D>(
                                                   16 * ks + (lane & 15), 2 * np + (lane >> 4)));
                warp_mma_m16n16k16<kBf16>(acc_dq[0][2 * np], acc_dq[0][2 * np + 1], af, bf);
            }
        }
    }

    /* ---- epilogue: dQ x softmax_scale in the params dtype (zeros for rows outside the band) */
    const int64_t dq_off = fa_bwd_base(seq, b, seq.q_row0, qh, a.dq_batch_stride, a.dq_row_stride, a.dq_head_stride);
#pragma unroll
    for (int half = 0; half < 2; ++half) {
        const int i = m0 + 16 * warp + 8 * half + g;
        if (i >= seq.sq) continue;
#pragma unroll
        for (int nt = 0; nt < kNtQ; ++nt) {
            const int col = 8 * nt + 2 * t;
            if (col >= a.head_dim) continue;
            *(uint32_t *)(a.dq + dq_off + (int64_t)i * a.dq_row_stride + col) = fa_pack_f32x2<kBf16>(
                acc_dq[0][nt][2 * half] * a.scale, acc_dq[0][nt][2 * half + 1] * a.scale);
        }
    }
}

#endif /* FA_BWD_DQ_CUH */
