/* fa_bwd_sm90_kernel.cuh - the Hopper (sm_90a, wgmma) backward main kernel: dK, dV of one key
 * block and its dS K contribution to dq_accum (fp32 atomics). Its loads: fa_bwd_sm90_loads.cuh;
 * the per-tile products (shared with the pipelined kernel): fa_bwd_sm90_tile.cuh.
 *
 * kDq = false (deterministic = 1, a.atomic_dq = 0): dK, dV only; dQ comes from the sm80 path's
 * ordered dQ kernel (fa_bwd_sm90.cu). A template flag, not a runtime branch: the branch alone
 * cost the atomic-dQ kernel 3-4% at d = 128 (GPU runs 8 vs 10).
 *
 * Grid (key block n, kv head hk, batch b); 256 threads = 2 warpgroups, no producer warpgroup:
 * every thread issues cp.async copies for the NEXT query block while the current one computes
 * (2-stage ring of Q / dO tiles). Warpgroup wg owns keys [j0 + 64 wg, j0 + 64 wg + 64) of the
 * key block of Bc = 128 keys and steps over query blocks of Br rows (fa_tuning.h rows
 * FA_KERNEL_BWD_SM90: Br = 128 at D = 64, Br = 64 at D = 128). It works in the transposed
 * orientation, so that P^T and dS^T come out of the accumulators already in the A-fragment
 * layout of the next products:
 *   S^T  = K_wg Q_i^T        wgmma SS  (A = K rows, B = Q rows, both K-major over d)
 *   dP^T = V_wg dO_i^T       wgmma SS
 *   P^T  = exp2(S^T scale log2e - LSE_i log2e)   (masked entries and rows with LSE = -inf: 0)
 *   dS^T = P^T o (dP^T - D_i)
 *   dV_wg += P^T dO_i        wgmma RS  (A = P^T registers, B = dO MN-major)
 *   dK_wg += dS^T Q_i        wgmma RS  (A = dS^T registers, B = Q MN-major)
 *   dQ_i  += dS K_j          wgmma SS with both operands MN-major (fa_wgmma_bwd.cuh): A = dS^T
 *                            written to shared memory (bf16/fp16), B = K rows.
 * dQ split, always one wgmma N = 64 over all 128 keys and 32 accumulators per thread:
 *   D = 64 (Br = 128):  warpgroup wg computes queries [64 wg, 64 wg + 64);
 *   D = 128 (Br = 64):  warpgroup wg computes dims [64 wg, 64 wg + 64).
 * GQA: the CTA loops over the heads_q / heads_k query heads of its kv head, so dK/dV sum the
 * group in registers; no extra workspace.
 *
 * Shared memory (dynamic, 1024-byte aligned, 128-byte swizzle of fa_wgmma.cuh, tiles stored as
 * column blocks of [rows][64]): K [Bc][D], V [Bc][D], Q [2][Br][D], dO [2][Br][D],
 * dS^T [Bc][Br]. Static: LSE*log2e and D of the 2 stages (also the sm_90a-image marker).
 *
 * Out-of-range handling: Q/dO rows past sq and dims past d are zero-filled by cp.async; their
 * LSE is stored as +inf so P = exp2(-inf) = 0. K/V rows past sk are zero-filled and masked.
 */
#ifndef FA_BWD_SM90_KERNEL_CUH
#define FA_BWD_SM90_KERNEL_CUH

#include "fa_bwd_sm90_loads.cuh" /* block_load_tile, block_issue_loads, FA_BWD_SM90_THREADS */
#include "fa_bwd_sm90_tile.cuh"  /* the per-tile products, fa_sw128_off, fa_red_add_f32x2, FA_BWD_SM90_BC */

/* The tile shape of bucket D (fa_tuning.h, FA_KERNEL_BWD_SM90 rows). Br = the N of S^T = K Q^T and
 * the k extent of dV += P^T dO, dK += dS^T Q; Bc and the warp count are fixed by the kernel's
 * warpgroup-per-64-keys layout. */
template <int D>
struct fa_bwd_sm90_cfg {
    static constexpr fa_tuning_row kRow = fa_tuning_find(FA_KERNEL_BWD_SM90, 90, D);
    static constexpr int Br = kRow.br;
    static_assert(kRow.bc == FA_BWD_SM90_BC && kRow.warps * 32 == FA_BWD_SM90_THREADS,
                  "the sm90 backward has Bc = 128 and 8 warps");
    /* the two dQ splits of the header: registers allow Br = 128 only at D = 64 */
    static_assert((D == 64 && Br == 128) || (D == 128 && Br == 64), "sm90 backward tiles: 64x128 or 128x64");
    /* dynamic shared memory: K, V, 2 stages of Q and dO, dS^T; + 1024 for aligning the base */
    static constexpr size_t kSmemBytes = 2 * (size_t)FA_BWD_SM90_BC * D * 2 + 4 * (size_t)Br * D * 2 +
                                         (size_t)FA_BWD_SM90_BC * Br * 2 + 1024;
};

template <bool kBf16, int D, bool kDq>
__global__ void __launch_bounds__(FA_BWD_SM90_THREADS, 1)
fa_bwd_sm90_kernel(const fa_bwd_args a)
{
#if FA_SM90_DEVICE
    constexpr int Br = fa_bwd_sm90_cfg<D>::Br, Bc = FA_BWD_SM90_BC;
    constexpr uint32_t kKVBytes = Bc * D * 2, kQBytes = Br * D * 2;
    extern __shared__ unsigned char fa_bwd_sm90_smem[];
    /* LSE*log2e (+inf where P must be 0) and D = rowsum(dO o O) of the two stages */
    __shared__ float s_lse[2][Br], s_dsum[2][Br];

    const int n_block = blockIdx.x, hk = blockIdx.y, b = blockIdx.z;
    const fa_seq seq = fa_seq_get(a.cu_seqlens_q != NULL, a.cu_seqlens_q, a.cu_seqlens_k, a.seqlen_q,
                                 a.seqlen_k, b);
    const int sq = seq.sq, sk = seq.sk;
    const int j0 = n_block * Bc;
    if (j0 >= sk) return;  /* uniform over the CTA: no key of this block exists */

    const int tid = threadIdx.x, wg = tid / 128, wq = (tid / 32) % 4, lane = tid % 32;
    const int g = lane / 4, t = lane % 4;
    const int d = a.head_dim;
    const int group = a.heads / a.heads_k;

    const uint32_t sK = (fa_smem_u32(fa_bwd_sm90_smem) + 1023u) & ~1023u;  /* swizzle atoms: 1024-aligned */
    const uint32_t sV = sK + kKVBytes;
    const uint32_t sQ = sV + kKVBytes;       /* [2] stages */
    const uint32_t sdO = sQ + 2 * kQBytes;   /* [2] stages */
    const uint32_t sdS = sdO + 2 * kQBytes;  /* dS^T [Bc keys][Br queries] */

    /* query blocks with a row that can see some key of [j0, j1] (fa_seq.cuh) */
    const int off = sk - sq;
    const fa_band m_band = fa_band_query_tiles(j0, Bc, sq, sk, a.window_left, a.window_right, Br);
    const int mb_lo = m_band.first, n_mb = m_band.count;
    const int n_iter = n_mb * group;

    /* K_j, V_j once (rows past sk zero-filled) */
    {
        const uint16_t *kb = a.k +
                             fa_bwd_base(seq, b, seq.k_row0, hk, a.k_batch_stride, a.k_row_stride, a.k_head_stride) +
                             (int64_t)j0 * a.k_row_stride;
        const uint16_t *vb = a.v +
                             fa_bwd_base(seq, b, seq.k_row0, hk, a.v_batch_stride, a.v_row_stride, a.v_head_stride) +
                             (int64_t)j0 * a.v_row_stride;
        block_load_tile<Bc, D>(sK, kb, a.k_row_stride, sk - j0, d);
        block_load_tile<Bc, D>(sV, vb, a.v_row_stride, sk - j0, d);
    }

    if (n_iter > 0) block_issue_loads<D, Br>(a, seq, b, hk * group, mb_lo, n_mb, 0, sQ, sdO, s_lse[0], s_dsum[0]);
    fa_cp_async_commit();

    float dk[D / 2], dv[D / 2];
#pragma unroll
    for (int i = 0; i < D / 2; ++i) dk[i] = dv[i] = 0.f;

    /* descriptors (fa_wgmma.cuh): K-major SBO 1024; MN-major LBO = column-block distance */
    const uint64_t dK_kmaj = fa_wgmma_desc_sw128(sK + (uint32_t)wg * (64 * 128), 16u, 1024u);
    const uint64_t dV_kmaj = fa_wgmma_desc_sw128(sV + (uint32_t)wg * (64 * 128), 16u, 1024u);
    /* dQ split (header): D = 64 -> this warpgroup's 64 queries (column block wg of dS^T);
     * D = 128 -> its 64 dims (column block wg of K); over all Bc keys either way */
    const int dq_cb = D == 128 ? wg : 0;  /* K column block (dims 64 dq_cb ..) */
    const int dq_rb = D == 64 ? wg : 0;   /* dS^T column block (queries 64 dq_rb ..) */

    const int key_base = j0 + 64 * wg + 16 * wq + g;  /* + 8 e2: the key of accumulator row */

    for (int it = 0; it < n_iter; ++it) {
        const int stage = it & 1;
        const int h = hk * group + it / n_mb;
        const int i0 = (mb_lo + it % n_mb) * Br;
        /* (A) this stage has landed (own copies: wait_group; others': the barrier), the
         * generic-proxy writes (cp.async, st.shared) are ordered before the wgmma reads (proxy
         * fence), and every thread finished iteration it - 1 (its wgmmas waited), so the other
         * stage and dS^T may be overwritten. */
        fa_cp_async_wait<0>();
        fa_fence_proxy_async_smem();
        __syncthreads();
        if (it + 1 < n_iter)
            block_issue_loads<D, Br>(a, seq, b, hk * group, mb_lo, n_mb, it + 1, sQ + (uint32_t)(stage ^ 1) * kQBytes,
                                 sdO + (uint32_t)(stage ^ 1) * kQBytes, s_lse[stage ^ 1], s_dsum[stage ^ 1]);
        fa_cp_async_commit();

        const uint32_t q_st = sQ + (uint32_t)stage * kQBytes, do_st = sdO + (uint32_t)stage * kQBytes;
        float s[Br / 2], dp[Br / 2];
        fa_wgmma_fence();
        warpgroup_gemm_kq_t<kBf16, D, Br>(s, dK_kmaj, q_st);
        fa_wgmma_commit();
        warpgroup_gemm_kq_t<kBf16, D, Br>(dp, dV_kmaj, do_st);
        fa_wgmma_commit();

        /* edge tile? keys past sk, or the band boundary crosses [i0, i0+Br) x [j0, j0+Bc): the
         * expression of fa_bwd_tile_need_mask, kept inline (through the helper this kernel's SASS
         * changed: one uniform compare with swapped operands, nvcc 13.0) */
        const bool need_mask = j0 + Bc > sk ||
                               (a.window_right >= 0 && j0 + Bc - 1 > i0 + off + a.window_right) ||
                               (a.window_left >= 0 && j0 < i0 + Br - 1 + off - a.window_left);

        fa_wgmma_wait<1>();  /* S^T ready, dP^T may still run */
        fa_reg_fence(s);
        /* thread_probs_t written out: called here, the same code compiled to 270-520 more
         * instructions per instance (the need_mask test became branches), in the kernel that runs
         * by default; kept as the GPU-measured SASS until an A/B says otherwise */
#pragma unroll
        for (int jn = 0; jn < Br / 8; ++jn) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int c = 8 * jn + 2 * t + (e & 1);  /* query within the block */
                float x = exp2f(fmaf(s[4 * jn + e], a.scale_log2, -s_lse[stage][c]));
                if (need_mask) {
                    const int j = key_base + 8 * (e >> 1), i = i0 + c;
                    const bool vis = j < sk && (a.window_right < 0 || j <= i + off + a.window_right) &&
                                     (a.window_left < 0 || j >= i + off - a.window_left);
                    x = vis ? x : 0.f;
                }
                s[4 * jn + e] = x;
            }
        }
        fa_wgmma_wait<0>();
        fa_reg_fence(dp);
        thread_ds_t<Br>(dp, s, s_dsum[stage], t);

        /* P^T, dS^T as A fragments (k = 16 queries per step) */
        uint32_t pa[Br / 16][4], dsa[Br / 16][4];
#pragma unroll
        for (int kk = 0; kk < Br / 16; ++kk) {
            fa_pack_c_to_a<kBf16>(pa[kk], &s[8 * kk], &s[8 * kk + 4]);
            fa_pack_c_to_a<kBf16>(dsa[kk], &dp[8 * kk], &dp[8 * kk + 4]);
        }
        /* dS^T to shared memory for dQ: row = key (64 wg + 16 wq + g + 8 half), query pair 2t of
         * n-block jn; exactly the u32 of dsa: dsa[kk][0..3] = (g, jn=2kk), (g+8, 2kk), (g, 2kk+1),
         * (g+8, 2kk+1) (fa_ds_t_off). Not when deterministic: the ordered dQ pass computes dQ. A
         * plain store rather than the pipelined kernel's st.shared (warpgroup_tile_pds): as one
         * store helper the d = 64 atomic-dQ instances spilled 24 bytes (nvcc 13.0, rechecked). */
        if (kDq) {
            unsigned char *base = fa_bwd_sm90_smem + (sdS - fa_smem_u32(fa_bwd_sm90_smem));
#pragma unroll
            for (int kk = 0; kk < Br / 16; ++kk)
#pragma unroll
                for (int q = 0; q < 4; ++q) *(uint32_t *)(base + fa_ds_t_off(kk, q, wg, wq, g, t)) = dsa[kk][q];
        }

        fa_wgmma_fence();
        warpgroup_gemm_dv_dk<kBf16, D, Br>(dv, dk, pa, dsa, q_st, do_st);
        fa_wgmma_commit();
        if (!kDq) {
            /* the dK/dV products read this stage's Q and dO: complete before the barrier (A)
             * after which the next loads may overwrite the stage */
            fa_wgmma_wait<0>();
            fa_reg_fence(dk);
            fa_reg_fence(dv);
            continue;
        }

        /* (B) dS^T of both warpgroups is in shared memory and ordered before the async proxy */
        fa_fence_proxy_async_smem();
        fa_named_barrier_sync<FA_BWD_SM90_THREADS>(1);

        float dqa[32];
        fa_wgmma_fence();
        warpgroup_gemm_dq<kBf16, Bc / 16>(dqa, sdS + (uint32_t)dq_rb * (uint32_t)(Bc * 128),
                                          sK + (uint32_t)dq_cb * (uint32_t)(Bc * 128), 0);
        fa_wgmma_commit();
        fa_wgmma_wait<0>();
        fa_reg_fence(dqa);
        fa_reg_fence(dk);
        fa_reg_fence(dv);

        /* dq_accum (total_q, h, d) += dS K (unscaled; the convert kernel applies the scale) */
        {
            float *acc = a.dq_accum + ((seq.q_row0 + i0) * a.heads + h) * (int64_t)d;
            const int64_t row_step = (int64_t)a.heads * d;
#pragma unroll
            for (int jn = 0; jn < 8; ++jn)
#pragma unroll
                for (int half = 0; half < 2; ++half) {
                    const int m = 64 * dq_rb + 16 * wq + g + 8 * half;
                    const int col = 64 * dq_cb + 8 * jn + 2 * t;
                    if (i0 + m < sq && col < d)
                        fa_red_add_f32x2(acc + m * row_step + col, dqa[4 * jn + 2 * half], dqa[4 * jn + 2 * half + 1]);
                }
        }
    }
    fa_cp_async_wait<0>();

    /* dK = scale * sum dS^T Q, dV = sum P^T dO: rows key_base + 8 half, dims 8 jn + 2 t */
    {
        uint16_t *dkb =
            a.dk + fa_bwd_base(seq, b, seq.k_row0, hk, a.dk_batch_stride, a.dk_row_stride, a.dk_head_stride);
        uint16_t *dvb =
            a.dv + fa_bwd_base(seq, b, seq.k_row0, hk, a.dv_batch_stride, a.dv_row_stride, a.dv_head_stride);
#pragma unroll
        for (int jn = 0; jn < D / 8; ++jn)
#pragma unroll
            for (int half = 0; half < 2; ++half) {
                const int j = key_base + 8 * half, col = 8 * jn + 2 * t;
                if (j < sk && col < d) {
                    *(uint32_t *)(dkb + (int64_t)j * a.dk_row_stride + col) =
                        fa_pack_f32x2<kBf16>(dk[4 * jn + 2 * half] * a.scale, dk[4 * jn + 2 * half + 1] * a.scale);
                    *(uint32_t *)(dvb + (int64_t)j * a.dv_row_stride + col) =
                        fa_pack_f32x2<kBf16>(dv[4 * jn + 2 * half], dv[4 * jn + 2 * half + 1]);
                }
            }
    }
#else
    /* other gencodes: never launched (fa_bwd_sm90_supported checks for the sm_90a image) */
    __trap();
#endif
}

#endif /* FA_BWD_SM90_KERNEL_CUH */
