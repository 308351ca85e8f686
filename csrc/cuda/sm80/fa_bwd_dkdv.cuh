/* fa_bwd_dkdv.cuh - the main FlashAttention-2 backward kernel: dK and dV of one key block, and
 * (non-deterministic path) the dQ contributions of that key block through fp32 atomics.
 *
 * Grid (ceil(max_sk / Bc), heads_k, batch); block = one key block K_j, V_j (Bc rows) of one kv
 * head of one sequence. K_j, V_j are loaded once; the block then walks the query blocks Q_i
 * (Br rows) of the mask band, for every query head of its GQA group, so dK and dV are summed
 * over the group in registers (no repeated K/V, no partials, deterministic). Per (head, Q_i):
 *
 *   S   = Q_i K_j^T                          (raw dots; scale, softcap, ALiBi applied below)
 *   P   = exp(S' - LSE_i), 0 where masked    (LSE = -inf rows give P = 0)
 *   dV += (P o Z)^T dO_i                     (Z = dropout keep / (1 - p_q))
 *   dP  = dO_i V_j^T
 *   dS  = P o (dP o Z - D_i) o (1 - tanh^2)  (D_i = rowsum(dO_i o O_i), from the preprocess)
 *   dK += dS^T Q_i                            (scaled by softmax_scale at the end)
 *   dQ_i += dS K_j                            (atomicAdd into dq_accum, scaled in the convert)
 *
 * Pipelining: Q_i (+ its LSE and D rows) and dO_i have 1 or 2 shared buffers (tuning table);
 * with 2 the next tiles are requested at the top of an iteration and land during it, with 1
 * they are requested right after their last reader in the iteration (one extra barrier each).
 */
#ifndef FA_BWD_DKDV_CUH
#define FA_BWD_DKDV_CUH

#include "fa_bwd_args.cuh"
#include "fa_bwd_config.cuh"
#include "fa_bwd_tile.cuh"

/* Block-collective: requests Q rows [m0, m0 + Br) of query head qh and their LSE and D values. */
template <int D, int kBr, int kThreads>
static __device__ __forceinline__ void block_load_q_lse_dp(const fa_bwd_args &a, const fa_seq &seq,
                                                          int b, int qh, int m0,
                                                          uint16_t *sQ /* [Br][d] */,
                                                          float *sLse /* [Br] */,
                                                          float *sDp /* [Br] */, int tid, int zero)
{
    const int64_t q_off = fa_bwd_base(seq, b, seq.q_row0, qh, a.q_batch_stride, a.q_row_stride, a.q_head_stride) +
                          (int64_t)m0 * a.q_row_stride;
    block_load_tile_async<D, kBr, kThreads>(sQ, a.q + q_off, a.q_row_stride, seq.sq - m0, a.head_dim, tid, zero);
    const int64_t l_off = fa_bwd_lse_base(a, seq, b, qh) + m0;
    /* rows past sq read as 0: finite, and their Q and dO rows are zero, so they add nothing */
    if (tid < kBr) {
        const bool ok = m0 + tid < seq.sq;
        fa_cp_async_4(fa_smem_u32(sLse + tid), ok ? (const void *)(a.lse + l_off + tid) : (const void *)a.lse, ok);
    } else if (tid < 2 * kBr) {
        const int r = tid - kBr;
        const bool ok = m0 + r < seq.sq;
        fa_cp_async_4(fa_smem_u32(sDp + r), ok ? (const void *)(a.dpsum + l_off + r) : (const void *)a.dpsum, ok);
    }
}

/* Block-collective: requests dO rows [m0, m0 + Br) of query head qh. */
template <int D, int kBr, int kThreads>
static __device__ __forceinline__ void block_load_do(const fa_bwd_args &a, const fa_seq &seq, int b,
                                                    int qh, int m0, uint16_t *sdO /* [Br][d] */, int tid,
                                                    int zero)
{
    const int64_t off = fa_bwd_base(seq, b, seq.q_row0, qh, a.do_batch_stride, a.do_row_stride, a.do_head_stride) +
                        (int64_t)m0 * a.do_row_stride;
    block_load_tile_async<D, kBr, kThreads>(sdO, a.dout + off, a.do_row_stride, seq.sq - m0, a.head_dim, tid, zero);
}

template <bool kBf16, int D>
__global__ void __launch_bounds__(fa_bwd_dkdv_cfg<D, 80>::kThreads, 1)
fa_bwd_dkdv_kernel(const fa_bwd_args a)
{
    typedef fa_bwd_dkdv_cfg<D, FA_BWD_ARCH> C;
    constexpr int kBr = C::kBr, kBc = C::kBc, kWarps = C::kWarps, kThreads = C::kThreads;
    constexpr int kQStages = C::kQStages, kDoStages = C::kDoStages;
    /* warp tiles of the three grids (see fa_tuning.h) */
    constexpr int kTmS = kBr / C::kWmS, kTnS = kBc / (kWarps / C::kWmS);
    constexpr int kMtS = kTmS / 16, kNtS = kTnS / 8;
    constexpr int kTmKV = kBc / C::kWnKV, kTnKV = D / (kWarps / C::kWnKV);
    constexpr int kMtKV = kTmKV / 16, kNtKV = kTnKV / 8;
    constexpr int kTmQ = kBr / C::kWmQ, kTnQ = D / (kWarps / C::kWmQ);
    constexpr int kTnQp = kTnQ / C::kDqPasses; /* columns of one dQ pass */
    constexpr int kMtQ = kTmQ / 16, kNtQp = kTnQp / 8;

    extern __shared__ __align__(16) unsigned char fa_bwd_smem[];
    uint16_t *sK = (uint16_t *)(fa_bwd_smem + C::kOffK);    /* [Bc][d] */
    uint16_t *sV = (uint16_t *)(fa_bwd_smem + C::kOffV);    /* [Bc][d] */
    uint16_t *sQ = (uint16_t *)(fa_bwd_smem + C::kOffQ);    /* [kQStages][Br][d] */
    uint16_t *sdO = (uint16_t *)(fa_bwd_smem + C::kOffDo);  /* [kDoStages][Br][d] */
    uint16_t *sP = (uint16_t *)(fa_bwd_smem + C::kOffP);    /* [Br][Bc] P o Z */
    uint16_t *sdS = (uint16_t *)(fa_bwd_smem + C::kOffDs);  /* [Br][Bc] dS */
    float *sLse = (float *)(fa_bwd_smem + C::kOffLse);      /* [kQStages][Br] */
    float *sDp = (float *)(fa_bwd_smem + C::kOffDp);        /* [kQStages][Br] */
    fa_bwd_slot *sSlot = (fa_bwd_slot *)(fa_bwd_smem + C::kOffZero); /* zero, Philox */
    const int *sZero = &sSlot->zero;

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int n_block = blockIdx.x, hk = blockIdx.y, b = blockIdx.z;
    const fa_seq seq = fa_seq_get(a.cu_seqlens_q != NULL, a.cu_seqlens_q, a.cu_seqlens_k, a.seqlen_q,
                                 a.seqlen_k, b);
    const int n0 = n_block * kBc;
    if (n0 >= seq.sk) return; /* past this sequence's keys (varlen / padding of the grid) */
    if (tid == 0) thread_init_bwd_slot(sSlot, a); /* ordered before its readers by the first loop barrier */

    /* Query blocks with a row that sees some key of [n0, n_last] (fa_seq.cuh). Rows outside the
     * band get P = 0 on this block, so they are skipped. */
    const fa_band m_band = fa_band_query_tiles(n0, kBc, seq.sq, seq.sk, a.window_left, a.window_right, kBr);
    const int m_begin = m_band.first, n_m = m_band.count;
    const int group = a.heads / a.heads_k;
    const int n_iter = n_m * group;

    /* warp positions in the three grids */
    const int wm_s = warp % C::kWmS, wn_s = warp / C::kWmS;
    const int wn_kv = warp % C::kWnKV, wd_kv = warp / C::kWnKV;
    const int wm_q = warp % C::kWmQ, wd_q = warp / C::kWmQ;

    float acc_dk[kMtKV][kNtKV][4], acc_dv[kMtKV][kNtKV][4];
    thread_zero_tile<kMtKV, kNtKV>(acc_dk);
    thread_zero_tile<kMtKV, kNtKV>(acc_dv);

    int qh = hk * group, m = m_begin; /* the (query head, query block) of the current iteration */
    if (n_iter > 0) {
        const int64_t k_off = fa_bwd_base(seq, b, seq.k_row0, hk, a.k_batch_stride, a.k_row_stride, a.k_head_stride) +
                              (int64_t)n0 * a.k_row_stride;
        const int64_t v_off = fa_bwd_base(seq, b, seq.k_row0, hk, a.v_batch_stride, a.v_row_stride, a.v_head_stride) +
                              (int64_t)n0 * a.v_row_stride;
        block_load_tile_async<D, kBc, kThreads>(sK, a.k + k_off, a.k_row_stride, seq.sk - n0, a.head_dim, tid, 0);
        block_load_tile_async<D, kBc, kThreads>(sV, a.v + v_off, a.v_row_stride, seq.sk - n0, a.head_dim, tid, 0);
        block_load_q_lse_dp<D, kBr, kThreads>(a, seq, b, qh, m * kBr, sQ, sLse, sDp, tid, 0);
        block_load_do<D, kBr, kThreads>(a, seq, b, qh, m * kBr, sdO, tid, 0);
        fa_cp_async_commit();
    }

    fa_bwd_score_ctx c = fa_bwd_make_score_ctx(a, seq, b, qh, sSlot->philox);

    for (int it = 0; it < n_iter; ++it) {
        const int qs = kQStages == 2 ? (it & 1) : 0;
        const int dos = kDoStages == 2 ? (it & 1) : 0;
        uint16_t *sQc = sQ + qs * kBr * D;
        uint16_t *sdOc = sdO + dos * kBr * D;

        const float *sLsec = sLse + qs * kBr;
        const float *sDpc = sDp + qs * kBr;
        int qh_next = qh, m_next = m + 1;
        if (m_next == m_begin + n_m) {
            m_next = m_begin;
            ++qh_next;
        }
        const bool has_next = it + 1 < n_iter;

        fa_cp_async_wait<0>();
        /* why: this iteration's Q, dO, LSE, D (and at it = 0 K, V and *sZero) were written by
         * all threads; and every warp has finished iteration it - 1, whose buffers are refilled
         * below and whose sP / sdS are overwritten in this iteration */
        __syncthreads();
        /* 0 the compiler cannot see (read after the barrier that publishes it): keeps the
         * loaders' per-thread offsets out of registers (see fa_opaque_zero) */
        const int zero = fa_opaque_zero(sZero);
        if (has_next) {
            if (kQStages == 2)
                block_load_q_lse_dp<D, kBr, kThreads>(a, seq, b, qh_next, m_next * kBr,
                                                       sQ + (qs ^ 1) * kBr * D,
                                                       sLse + (qs ^ 1) * kBr, sDp + (qs ^ 1) * kBr, tid,
                                                       zero);
            if (kDoStages == 2)
                block_load_do<D, kBr, kThreads>(a, seq, b, qh_next, m_next * kBr,
                                                 sdO + (dos ^ 1) * kBr * D, tid, zero);
            fa_cp_async_commit();
        }

        const int m0 = m * kBr;
        c.h = qh;
        c.alibi_slope = a.alibi_slopes != NULL ? a.alibi_slopes[(int64_t)b * a.alibi_batch_stride + qh] : 0.f;
        const bool need_mask = !fa_mask_tile_is_full(c.mask, m0, m0 + kBr, n0, n0 + kBc);

        /* ---- S = Q K^T, P ---- */
        float acc_s[kMtS][kNtS][4];
        thread_zero_tile<kMtS, kNtS>(acc_s);
        warp_gemm_smem<kBf16, kMtS, kNtS, D / 16, D, D, false, false, C::kAddr>(
            acc_s, sQc, wm_s * kTmS, sK, wn_s * kTnS, zero);
        {
            float lse[kMtS][2];
            thread_load_row_values<kMtS>(lse, sLsec, wm_s * kTmS, g);
            /* + zero: the key columns are loop-invariant, and ptxas otherwise hoists the first
             * Philox rounds of every column out of the loop and spills them */
            warp_bwd_probs<kBf16, kMtS, kNtS, true, kBc>(acc_s, c, m0 + wm_s * kTmS + g,
                                                          n0 + wn_s * kTnS + 2 * t + zero, lse,
                                                          need_mask, sP, wm_s * kTmS, wn_s * kTnS);
        }

        /* ---- dP = dO V^T, dS ---- */
        {
            float acc_dp[kMtS][kNtS][4];
            thread_zero_tile<kMtS, kNtS>(acc_dp);
            warp_gemm_smem<kBf16, kMtS, kNtS, D / 16, D, D, false, false, C::kAddr>(
                acc_dp, sdOc, wm_s * kTmS, sV, wn_s * kTnS, zero);
            float dps[kMtS][2];
            thread_load_row_values<kMtS>(dps, sDpc, wm_s * kTmS, g);
            thread_bwd_dscores<kMtS, kNtS>(acc_s, acc_dp, dps, c.dropout, c.dropout_rescale);
        }
        thread_store_tile_smem<kBf16, kMtS, kNtS, kBc>(sdS, acc_s, wm_s * kTmS, wn_s * kTnS);
        /* why: sP and sdS are written in the S/dP warp grid and read in the other two grids */
        __syncthreads();

        /* ---- dV += (P o Z)^T dO ---- */
        warp_gemm_smem<kBf16, kMtKV, kNtKV, kBr / 16, kBc, D, true, true, C::kAddr>(
            acc_dv, sP, wn_kv * kTmKV, sdOc, wd_kv * kTnKV, zero);
        if (kDoStages == 1 && has_next) {
            /* why: every warp must be done reading the single dO buffer before it is refilled */
            __syncthreads();
            block_load_do<D, kBr, kThreads>(a, seq, b, qh_next, m_next * kBr, sdO, tid, zero);
            fa_cp_async_commit();
        }

        /* ---- dK += dS^T Q ---- */
        warp_gemm_smem<kBf16, kMtKV, kNtKV, kBr / 16, kBc, D, true, true, C::kAddr>(
            acc_dk, sdS, wn_kv * kTmKV, sQc, wd_kv * kTnKV, zero);
        if (kQStages == 1 && has_next) {
            /* why: every warp must be done reading the single Q buffer (and LSE, D) first */
            __syncthreads();
            block_load_q_lse_dp<D, kBr, kThreads>(a, seq, b, qh_next, m_next * kBr, sQ, sLse, sDp, tid,
                                                   zero);
            fa_cp_async_commit();
        }

        /* ---- dQ_i += dS K (unscaled; fa_bwd_dq_convert applies softmax_scale) ---- */
        if (a.atomic_dq) {
            const int64_t ld = (int64_t)a.heads * a.head_dim; /* dq_accum row stride */
            float *dqa = a.dq_accum + (seq.q_row0 + m0) * ld + (int64_t)qh * a.head_dim;
            /* one column slice at a time (kDqPasses > 1 when the whole tile would spill) */
#pragma unroll 1
            for (int pass = 0; pass < C::kDqPasses; ++pass) {
                const int c0 = wd_q * kTnQ + pass * kTnQp;
                if (c0 >= a.head_dim) break;
                float acc_dq[kMtQ][kNtQp][4];
                thread_zero_tile<kMtQ, kNtQp>(acc_dq);
                warp_gemm_smem<kBf16, kMtQ, kNtQp, kBc / 16, kBc, D, false, true, C::kAddr>(
                    acc_dq, sdS, wm_q * kTmQ, sK, c0, zero);
#pragma unroll
                for (int mt = 0; mt < kMtQ; ++mt)
#pragma unroll
                    for (int half = 0; half < 2; ++half) {
                        const int r = wm_q * kTmQ + 16 * mt + 8 * half + g;
                        if (m0 + r >= seq.sq) continue;
#pragma unroll
                        for (int nt = 0; nt < kNtQp; ++nt) {
                            const int col = c0 + 8 * nt + 2 * t;
                            if (col >= a.head_dim) continue;
                            float *dst = dqa + r * ld + col;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
                            /* sm90: one 8-byte vector reduction instead of two 4-byte ones */
                            atomicAdd((float2 *)dst, make_float2(acc_dq[mt][nt][2 * half],
                                                                 acc_dq[mt][nt][2 * half + 1]));
#else
                            atomicAdd(dst, acc_dq[mt][nt][2 * half]);
                            atomicAdd(dst + 1, acc_dq[mt][nt][2 * half + 1]);
#endif
                        }
                    }
            }
        }
        qh = qh_next;
        m = m_next;
    }

    /* ---- epilogue: dK (x softmax_scale) and dV in the params dtype ---- */
    const int64_t dk_off = fa_bwd_base(seq, b, seq.k_row0, hk, a.dk_batch_stride, a.dk_row_stride, a.dk_head_stride);
    const int64_t dv_off = fa_bwd_base(seq, b, seq.k_row0, hk, a.dv_batch_stride, a.dv_row_stride, a.dv_head_stride);
#pragma unroll
    for (int mt = 0; mt < kMtKV; ++mt)
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const int j = n0 + wn_kv * kTmKV + 16 * mt + 8 * half + g;
            if (j >= seq.sk) continue;
#pragma unroll
            for (int nt = 0; nt < kNtKV; ++nt) {
                const int col = wd_kv * kTnKV + 8 * nt + 2 * t;
                if (col >= a.head_dim) continue;
                *(uint32_t *)(a.dk + dk_off + (int64_t)j * a.dk_row_stride + col) = fa_pack_f32x2<kBf16>(
                    acc_dk[mt][nt][2 * half] * a.scale, acc_dk[mt][nt][2 * half + 1] * a.scale);
                *(uint32_t *)(a.dv + dv_off + (int64_t)j * a.dv_row_stride + col) =
                    fa_pack_f32x2<kBf16>(acc_dv[mt][nt][2 * half], acc_dv[mt][nt][2 * half + 1]);
            }
        }
}

#endif /* FA_BWD_DKDV_CUH */
