/* fa_fwd_kernel.cuh - the FlashAttention-2 forward kernel on mma.sync tensor cores (sm80+).
 *
 * One block computes Br query rows of one (sequence b, query head h): grid (query blocks, h, b),
 * the query-block index reversed so the long rows of a causal mask start first. Each of the
 * block's warps owns kMT = Br / (16 warps) m-tiles of 16 rows for the whole block, so the
 * softmax needs no inter-warp reduction. Per key tile of Bc rows (K_j, V_j in shared memory,
 * cp.async double-buffered or FA2-interleaved, fa_tuning.h):
 *     S = Q K_j^T                      (mma.sync m16n8k16, fp32 accumulators in registers)
 *     scores -> x units, mask only when the tile straddles the band edge
 *     m_i, l_i, O rescaled; P = exp2(x mul - m_i mul)    (fa_softmax.cuh)
 *     dropout on P (fa_dropout.cuh), then O += P V_j with P straight from registers
 * Key tiles entirely outside the causal / window band are never visited, so causal costs
 * about half. Finally O /= l_i (x 1/(1-p) with dropout), LSE = (m_i mul) ln 2 + ln l_i, and O
 * goes out through shared memory as 16-byte coalesced stores.
 *
 * Template arguments are compile-time constants only: dtype, head-dim bucket D, the tile shape
 * from fa_tuning.h, and kFeat (softcap / ALiBi / dropout / non-positive scale compiled in;
 * the common case runs without that code and its registers).
 */
#ifndef FA_FWD_KERNEL_CUH
#define FA_FWD_KERNEL_CUH

#include <math.h>
#include <stdint.h>
#include "fa_fwd.h"
#include "fa_tuning.h"
#include "fa_mma.cuh"
#include "fa_smem_tile.cuh"
#include "fa_warp_gemm.cuh"
#include "fa_mask.cuh"
#include "fa_softmax.cuh"
#include "fa_dropout.cuh"

/* Bytes of dynamic shared memory of a forward configuration: Q tile + kStages (K, V) tiles. */
static inline size_t fa_fwd_smem_bytes(int d, int br, int bc, int stages)
{
    return (size_t)(br + 2 * stages * bc) * (size_t)d * 2u;
}

template <bool kBf16, int D, int Br, int Bc, int kWarps, int kStages, bool kQRegs, bool kFeat>
__global__ void __launch_bounds__(kWarps * 32)
fa_fwd_kernel(const fa_fwd_args a)
{
    constexpr int kThreads = kWarps * 32;
    constexpr int kMT = Br / (16 * kWarps);  /* 16-row m-tiles per warp */
    constexpr int kNB = Bc / 8;              /* 8-column n-blocks of S */
    constexpr int kDB = D / 8;               /* 8-column n-blocks of O */
    static_assert(Br % (16 * kWarps) == 0 && kMT >= 1, "Br must be a multiple of 16 * warps");
    static_assert(Bc % 16 == 0 && D % 32 == 0, "tile shape");
    static_assert(kStages == 1 || kStages == 2, "1 or 2 stages");

    extern __shared__ __align__(128) unsigned char fa_smem[];
    uint16_t *sQ = (uint16_t *)fa_smem;     /* [Br][D]; reused to stage O */
    uint16_t *sK = sQ + Br * D;             /* [kStages][Bc][D] */
    uint16_t *sV = sK + kStages * Bc * D;   /* [kStages][Bc][D] */
    __shared__ int s_zero;                  /* fa_opaque_zero's slot */
    __shared__ const uint16_t *s_gkv[2];    /* this (b, kv head)'s K and V base, see below */

    const int tid = threadIdx.x;
    if (tid == 0) s_zero = 0;  /* read only after the first __syncthreads below */
    const int lane = tid & 31;
    const int warp = tid >> 5;
    const int m_block = (int)gridDim.x - 1 - (int)blockIdx.x;
    const int h = blockIdx.y;
    const int b = blockIdx.z;

    uint64_t seed = 0, offset = 0;
    if ((kFeat && a.has_dropout) || a.rng_state != NULL) fa_fwd_philox_seed(a, &seed, &offset);
    if (a.rng_state != NULL && blockIdx.x == 0 && blockIdx.y == 0 && blockIdx.z == 0 && tid == 0) {
        a.rng_state[0] = (int64_t)seed;
        a.rng_state[1] = (int64_t)offset;
    }

    /* This sequence's extent and, below, its key band: fa_seq_get and fa_band_keys (fa_seq.cuh)
     * written out. This kernel sits at 255 registers in its feature variants, and every form
     * that called the helpers changed its allocation (measured with ptxas: d = 96 on sm_80 spilled
     * 16-32 bytes, other buckets moved by 1-4 registers): the dense b * seqlen of fa_seq and the
     * int64 band stay live or reorder the prologue. Keep the two in step with fa_seq.cuh. */
    int sq = a.seqlen_q, sk = a.seqlen_k;
    int q_begin = 0;
    int64_t q_off, k_off, v_off;
    if (a.cu_seqlens_q != NULL) {
        q_begin = a.cu_seqlens_q[b];
        const int k_begin = a.cu_seqlens_k[b];
        sq = a.cu_seqlens_q[b + 1] - q_begin;
        sk = a.cu_seqlens_k[b + 1] - k_begin;
        q_off = (int64_t)q_begin * a.q_row_stride;
        k_off = (int64_t)k_begin * a.k_row_stride;
        v_off = (int64_t)k_begin * a.v_row_stride;
    } else {
        q_off = (int64_t)b * a.q_batch_stride;
        k_off = (int64_t)b * a.k_batch_stride;
        v_off = (int64_t)b * a.v_batch_stride;
    }
    const int m0 = m_block * Br;
    if (m0 >= sq) return;  /* uniform: a shorter varlen sequence has fewer query blocks */
    const int m_end = min(m0 + Br, sq);
    const int kv_h = h / a.group;
    const uint16_t *gQ = (const uint16_t *)a.q + q_off + (int64_t)h * a.q_head_stride + (int64_t)m0 * a.q_row_stride;
    const uint16_t *gK = (const uint16_t *)a.k + k_off + (int64_t)kv_h * a.k_head_stride;
    const uint16_t *gV = (const uint16_t *)a.v + v_off + (int64_t)kv_h * a.v_head_stride;
    /* The loop re-reads these block-uniform pointers from shared memory each tile (volatile,
     * read after the first barrier) instead of keeping 4 registers live across it: at kMT = 2
     * the accumulators leave no room for them. */
    if (tid == 0) {
        s_gkv[0] = gK;
        s_gkv[1] = gV;
    }

    fa_mask_t mk;
    mk.sq = sq;
    mk.sk = sk;
    mk.left = a.window_left;
    mk.right = a.window_right;

    /* key tiles touching the band of rows [m0, m_end): [t_lo, t_hi) (fa_band_keys, half-open) */
    int n_lo = 0, n_hi = sk;
    if (mk.left >= 0) n_lo = max(0, m0 + sk - sq - mk.left);
    if (mk.right >= 0) n_hi = min(sk, (m_end - 1) + sk - sq + mk.right + 1);
    const int t_lo = n_lo / Bc;
    const int n_tiles = n_hi > n_lo ? (n_hi + Bc - 1) / Bc - t_lo : 0;

    const int warp_row = warp * 16 * kMT;      /* block-local first row of this warp */
    const int g = lane >> 2, t4 = lane & 3;
    const int row0 = m0 + warp_row + g;        /* sequence-local row of fragment element 0 */

    float mul = a.scale_log2;                  /* x -> log2 units, see fa_softmax.cuh */
    float alibi_log2 = 0.f;
    if (kFeat) {
        mul = 1.f;
        if (a.alibi_slopes != NULL) alibi_log2 = a.alibi_slopes[(int64_t)b * a.alibi_batch_stride + h] * FA_LOG2E;
    }

    float o[kMT][kDB][4];
    float m_i[kMT][2], l_i[kMT][2];
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
        for (int db = 0; db < kDB; ++db)
#pragma unroll
            for (int e = 0; e < 4; ++e) o[mt][db][e] = 0.f;
        m_i[mt][0] = m_i[mt][1] = -INFINITY;
        l_i[mt][0] = l_i[mt][1] = 0.f;
    }

    const uint32_t sQ_u = fa_smem_u32(sQ);
    if (n_tiles > 0) {
        int tile = t_lo + n_tiles - 1;  /* walk right to left: the straddling tiles first */
        block_load_tile_async<D, Br, kThreads>(sQ, gQ, a.q_row_stride, m_end - m0, a.head_dim, tid, 0);
        fa_cp_async_commit();
        block_load_tile_async<D, Bc, kThreads>(sK, gK + (int64_t)tile * Bc * a.k_row_stride, a.k_row_stride,
                                              sk - tile * Bc, a.head_dim, tid, 0);
        if (kStages == 2)
            block_load_tile_async<D, Bc, kThreads>(sV, gV + (int64_t)tile * Bc * a.v_row_stride, a.v_row_stride,
                                                  sk - tile * Bc, a.head_dim, tid, 0);
        fa_cp_async_commit();

        uint32_t qf[kQRegs ? kMT : 1][D / 16][4];
        if (kQRegs) {
            const fa_ldsm_bases<D> qb0 = fa_fwd_bases_a<D>(sQ_u + 2u * (uint32_t)(warp_row * D), lane);
            fa_cp_async_wait<1>();
            __syncthreads();  /* why: the Q tile comes from every thread's copies */
#pragma unroll
            for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
                for (int kk = 0; kk < D / 16; ++kk)
                    warp_ldmatrix_x4(qf[mt][kk], fa_ldsm_addr<D>(qb0, 16 * mt, kk));
        }

        for (int it = 0; it < n_tiles; ++it, --tile) {
            const int buf = kStages == 2 ? (it & 1) : 0;
            const int n0 = tile * Bc;
            fa_cp_async_wait<0>();
            /* why: K_j (and with 2 stages V_j) were copied by all threads; and every warp has
             * finished iteration it-1, whose buffers the loads issued next overwrite */
            __syncthreads();
            const int zero = fa_opaque_zero(&s_zero);
            const uint16_t *gK_it = fa_ld_volatile_shared_ptr(&s_gkv[0]);
            const uint16_t *gV_it = fa_ld_volatile_shared_ptr(&s_gkv[1]);
            if (kStages == 2) {
                if (it + 1 < n_tiles) {
                    const int nn = n0 - Bc;
                    block_load_tile_async<D, Bc, kThreads>(sK + (buf ^ 1) * Bc * D, gK_it + (int64_t)nn * a.k_row_stride,
                                                          a.k_row_stride, sk - nn, a.head_dim, tid, zero);
                    block_load_tile_async<D, Bc, kThreads>(sV + (buf ^ 1) * Bc * D, gV_it + (int64_t)nn * a.v_row_stride,
                                                          a.v_row_stride, sk - nn, a.head_dim, tid, zero);
                }
            } else {
                block_load_tile_async<D, Bc, kThreads>(sV, gV_it + (int64_t)n0 * a.v_row_stride, a.v_row_stride,
                                                      sk - n0, a.head_dim, tid, zero);
            }
            fa_cp_async_commit();

            float s[kMT][kNB][4];
            thread_zero_tile<kMT, kNB>(s);
            /* per-tile ldmatrix bases (recomputed from lane + zero: a few integer ops per tile
             * instead of registers live across the loop) */
            const int lane_z = lane + zero;
            const fa_ldsm_bases<D> qb = fa_fwd_bases_a<D>(sQ_u + 2u * (uint32_t)(warp_row * D), lane_z);
            const fa_ldsm_bases<D> kb = fa_fwd_bases_k<D>(fa_smem_u32(sK + buf * Bc * D), lane_z);
            warp_gemm_qk<kBf16, D, kMT, kNB, kQRegs>(s, qf, qb, kb);

            if (kFeat) {
                /* x = score in log2 units: softcap, scale, ALiBi */
#pragma unroll
                for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
                    for (int nb = 0; nb < kNB; ++nb)
#pragma unroll
                        for (int e = 0; e < 4; ++e) {
                            float x = s[mt][nb][e];
                            if (a.softcap > 0.f) x = a.softcap_log2 * fa_tanh(x * a.scale_div_softcap);
                            else x *= a.scale_log2;
                            if (a.alibi_slopes != NULL) {
                                const int i = row0 + 16 * mt + 8 * (e >> 1);
                                const int j = n0 + 2 * t4 + 8 * nb + (e & 1);
                                x -= alibi_log2 * fabsf((float)(i + sk - sq - j));
                            }
                            s[mt][nb][e] = x;
                        }
            }
            if (!fa_mask_tile_is_full(mk, m0, m_end, n0, n0 + Bc))
                thread_mask_tile<kMT, kNB>(s, mk, row0, n0 + 2 * t4);
            warp_online_softmax_tile<kMT, kNB, kDB>(s, o, m_i, l_i, mul);
            if (kFeat && a.has_dropout)
                warp_dropout_tile<kMT, kNB>(s, seed, offset, b, h, row0, n0, a.dropout_threshold);

            if (kStages == 1) {
                fa_cp_async_wait<0>();
                /* why: V_j was copied by all threads; and every warp is done reading K_j,
                 * which the next load overwrites */
                __syncthreads();
                if (it + 1 < n_tiles) {
                    const int nn = n0 - Bc;
                    block_load_tile_async<D, Bc, kThreads>(sK, gK_it + (int64_t)nn * a.k_row_stride, a.k_row_stride,
                                                          sk - nn, a.head_dim, tid, zero);
                }
                fa_cp_async_commit();
            }
            uint32_t pa[kMT][kNB / 2][4];
#pragma unroll
            for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
                for (int kk = 0; kk < kNB / 2; ++kk) fa_pack_c_to_a<kBf16>(pa[mt][kk], s[mt][2 * kk], s[mt][2 * kk + 1]);
            const fa_ldsm_bases<D> vb = fa_fwd_bases_a<D>(fa_smem_u32(sV + buf * Bc * D), lane + zero);
            warp_gemm_pv<kBf16, D, kMT, kNB>(o, pa, vb);
        }
        fa_cp_async_wait<0>();  /* nothing may still be writing shared memory at exit */
    }

    /* epilogue: O /= l, LSE, O staged through this warp's own rows of sQ. The output pointers
     * are formed only now so that they occupy no registers during the key loop. */
    float *lse_row;  /* LSE of row 0 of this (b, h) */
    uint16_t *gO = (uint16_t *)a.o + (int64_t)h * a.o_head_stride + (int64_t)m0 * a.o_row_stride;
    if (a.cu_seqlens_q != NULL) {
        lse_row = a.lse + (int64_t)h * a.total_q + q_begin;
        gO += (int64_t)q_begin * a.o_row_stride;
    } else {
        lse_row = a.lse + ((int64_t)b * a.heads + h) * a.seqlen_q;
        gO += (int64_t)b * a.o_batch_stride;
    }
    const float rescale = (kFeat && a.has_dropout) ? a.dropout_rescale : 1.f;
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const float sum = quad_allreduce_sum(l_i[mt][half]);
            const float inv = sum > 0.f ? rescale / sum : 0.f;
            const float lse = sum > 0.f ? m_i[mt][half] * mul * FA_LN2 + logf(sum) : -INFINITY;
#pragma unroll
            for (int db = 0; db < kDB; ++db) {
                o[mt][db][2 * half] *= inv;
                o[mt][db][2 * half + 1] *= inv;
            }
            const int i = row0 + 16 * mt + 8 * half;
            if (t4 == 0 && i < m_end) lse_row[i] = lse;
        }
    }
    /* why: only this warp read these sQ rows (its own Q rows), so a warp barrier orders its
     * last ldmatrix before the overwrite */
    __syncwarp();
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int half = 0; half < 2; ++half)
#pragma unroll
            for (int db = 0; db < kDB; ++db) {
                const int r = warp_row + 16 * mt + 8 * half + g;
                uint32_t *dst = (uint32_t *)(sQ + fa_tile_offset<D>(r, db) + 2 * t4);
                *dst = fa_pack_f32x2<kBf16>(o[mt][db][2 * half], o[mt][db][2 * half + 1]);
            }
    __syncwarp();  /* why: each lane stores chunks that other lanes of the warp wrote */
    constexpr int kWarpChunks = 16 * kMT * kDB;
#pragma unroll
    for (int it = 0; it < kWarpChunks / 32; ++it) {
        const int idx = lane + 32 * it;
        const int r = warp_row + idx / kDB;
        const int c = idx % kDB;
        if (m0 + r < m_end && c * 8 < a.head_dim) {
            const uint4 val = *(const uint4 *)(sQ + fa_tile_offset<D>(r, c));
            *(uint4 *)(gO + (int64_t)r * a.o_row_stride + c * 8) = val;
        }
    }
}

/* Host: launches the kernel of (dtype, bucket D) with the fa_tuning.h row of D. */
template <int kDtype, int D>
static fa_status fa_fwd_launch_dtype(const fa_fwd_args &a, cudaStream_t stream)
{
    constexpr fa_tuning_row R = fa_tuning_find(FA_KERNEL_FWD_SM80, 80, D);
    static_assert(R.br > 0, "no FA_KERNEL_FWD_SM80 tuning row for this head dim");
    constexpr bool kQRegs = R.q_in_regs != 0;
    constexpr bool kQRegsFeat = kQRegs && R.feat_q_smem == 0;
    const size_t smem = fa_fwd_smem_bytes(D, R.br, R.bc, R.stages);

    int dev = 0, smem_max = 0;
    if (cudaGetDevice(&dev) != cudaSuccess) return FA_ERR_CUDA;
    if (cudaDeviceGetAttribute(&smem_max, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess)
        return FA_ERR_CUDA;
    if (smem > (size_t)smem_max) return FA_ERR_UNSUPPORTED;  /* e.g. d > 128 on 99 KB parts */

    const bool feat = a.softcap > 0.f || a.alibi_slopes != NULL || a.has_dropout || !(a.scale > 0.f);
    void (*kern)(const fa_fwd_args) =
        feat ? fa_fwd_kernel<kDtype == FA_BF16, D, R.br, R.bc, R.warps, R.stages, kQRegsFeat, true>
             : fa_fwd_kernel<kDtype == FA_BF16, D, R.br, R.bc, R.warps, R.stages, kQRegs, false>;
    /* The kernel's few static shared slots come on top of the dynamic bytes: opt in to the large
       carve-out from 47 KB on, not 48 (d = 64 uses exactly 48 KB of dynamic shared memory). */
    if (smem > 47 * 1024 &&
        cudaFuncSetAttribute((const void *)kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem) != cudaSuccess)
        return FA_ERR_CUDA;
    const dim3 grid((unsigned)((a.seqlen_q + R.br - 1) / R.br), (unsigned)a.heads, (unsigned)a.batch);
    kern<<<grid, R.warps * 32, smem, stream>>>(a);
    return cudaGetLastError() == cudaSuccess ? FA_OK : FA_ERR_CUDA;
}

/* Defines fa_fwd_launch_hdim<D> (both dtypes) in one translation unit per head-dim bucket. */
#define FA_FWD_DEFINE_HDIM(D)                                                                     \
    template <>                                                                                   \
    fa_status fa_fwd_launch_hdim<D>(const fa_fwd_args &a, fa_dtype dtype, cudaStream_t stream)    \
    {                                                                                             \
        if (dtype == FA_F16) return fa_fwd_launch_dtype<FA_F16, D>(a, stream);                    \
        if (dtype == FA_BF16) return fa_fwd_launch_dtype<FA_BF16, D>(a, stream);                  \
        return FA_ERR_DTYPE;                                                                      \
    }

#endif /* FA_FWD_KERNEL_CUH */
