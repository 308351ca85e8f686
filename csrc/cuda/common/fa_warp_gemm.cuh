/* fa_warp_gemm.cuh - the warp-level mma.sync products of the sm80-generation kernels (the
 * forward and the split-KV decode kernel): S = Q K^T and O += P V for one warp's 16-row m-tiles
 * and their ldmatrix bases. Fragment layouts: fa_mma.cuh; swizzle: fa_smem_tile.cuh.
 */
#ifndef FA_WARP_GEMM_CUH
#define FA_WARP_GEMM_CUH

#include <stdint.h>
#include "fa_mma.cuh"
#include "fa_smem_tile.cuh"
#include "fa_softmax.cuh"


/* Per-lane ldmatrix bases of the three operands (fa_smem_tile.cuh, fa_ldsm_bases).
 *   Q as A (16x16 at rows 16 mt, chunks 2 kk): lanes 0-15 rows 0-15 at chunk 2kk, lanes 16-31
 *     the same rows at chunk 2kk + 1 -> a[0..3] in mma order.
 *   K as B (n-blocks 2 nb2, 2 nb2 + 1; dims 16 kk): matrices (n 0-7, k lo), (n 0-7, k hi),
 *     (n 8-15, k lo), (n 8-15, k hi) -> b of n-block 2 nb2 = r0, r1, of 2 nb2 + 1 = r2, r3.
 *   V as B, transposed (keys 16 kk, dims 16 db2): matrices (keys 0-7, d lo), (keys 8-15, d lo),
 *     (keys 0-7, d hi), (keys 8-15, d hi) -> b of dim block 2 db2 = r0, r1, of 2 db2 + 1 = r2, r3. */
template <int D>
FA_TILE_HD fa_ldsm_bases<D> fa_fwd_bases_a(uint32_t tile, int lane)
{
    return fa_ldsm_make_bases<D>(tile, lane & 15, lane >> 4);
}
template <int D>
FA_TILE_HD fa_ldsm_bases<D> fa_fwd_bases_k(uint32_t tile, int lane)
{
    return fa_ldsm_make_bases<D>(tile, (lane & 7) + ((lane >> 4) << 3), (lane >> 3) & 1);
}

/* S[kMT][kNB] += Q (this warp's rows) K_tile^T. qb: bases of sQ at this warp's first row
 * (used when !kQRegs); qf: Q fragments when kQRegs; kb: bases of the K tile. */
template <bool kBf16, int D, int kMT, int kNB, bool kQRegs>
static __device__ __forceinline__ void warp_gemm_qk(float (*s)[kNB][4],
                                                   const uint32_t (*qf)[D / 16][4],
                                                   const fa_ldsm_bases<D> &qb, const fa_ldsm_bases<D> &kb)
{
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
        uint32_t af[kMT][4];
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
            if (kQRegs) {
#pragma unroll
                for (int r = 0; r < 4; ++r) af[mt][r] = qf[mt][kk][r];
            } else {
                warp_ldmatrix_x4(af[mt], fa_ldsm_addr<D>(qb, 16 * mt, kk));
            }
        }
#pragma unroll
        for (int nb2 = 0; nb2 < kNB / 2; ++nb2) {
            uint32_t bf[4];
            warp_ldmatrix_x4(bf, fa_ldsm_addr<D>(kb, 16 * nb2, kk));
#pragma unroll
            for (int mt = 0; mt < kMT; ++mt) warp_mma_m16n16k16<kBf16>(s[mt][2 * nb2], s[mt][2 * nb2 + 1], af[mt], bf);
        }
    }
}

/* O[kMT][D/8] += P V_tile. pa: P already packed to A fragments (kNB/2 k-steps of 16 keys);
 * packing all of P first frees the fp32 S registers before the V fragments are loaded.
 * vb: bases of the V tile (fa_fwd_bases_a layout). */
template <bool kBf16, int D, int kMT, int kNB>
static __device__ __forceinline__ void warp_gemm_pv(float (*o)[D / 8][4], const uint32_t (*pa)[kNB / 2][4],
                                                   const fa_ldsm_bases<D> &vb)
{
#pragma unroll
    for (int kk = 0; kk < kNB / 2; ++kk) {
#pragma unroll
        for (int db2 = 0; db2 < D / 16; ++db2) {
            uint32_t bf[4];
            warp_ldmatrix_x4_trans(bf, fa_ldsm_addr<D>(vb, 16 * kk, db2));
#pragma unroll
            for (int mt = 0; mt < kMT; ++mt) warp_mma_m16n16k16<kBf16>(o[mt][2 * db2], o[mt][2 * db2 + 1], pa[mt][kk], bf);
        }
    }
}

#endif /* FA_WARP_GEMM_CUH */
