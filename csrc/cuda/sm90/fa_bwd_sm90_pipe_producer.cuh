/* fa_bwd_sm90_pipe_producer.cuh - the producer warp of the pipelined Hopper backward (warp 0 of
 * warpgroup 0, fa_bwd_sm90_pipe_kernel.cuh: ring protocol there): K_j, V_j once (lane 0, TMA, own
 * mbarrier), then for each (head of the group, query block) Q_i + LSE_i into the Q ring and
 * dO_i + D_i into the dO ring. Tiles by TMA (lane 0); LSE*log2e and D by plain loads of all 32
 * lanes into static shared memory, each lane arriving on the slot's full barrier after its stores
 * so that the consumers' wait covers them.
 */
#ifndef FA_BWD_SM90_PIPE_PRODUCER_CUH
#define FA_BWD_SM90_PIPE_PRODUCER_CUH

#include "fa_bwd_sm90_pipe_layout.cuh"

#if FA_SM90_DEVICE

/* Producer warp: issues every load of the CTA. n_iter > 0 (the caller returns before otherwise,
 * so no TMA is in flight when the CTA could exit). lse_s, dsum_s: [kStages][Br] static shared. */
template <int D, int Br, int kStages>
static __device__ __forceinline__ void warp_produce(const fa_bwd_sm90_params &prm, const fa_bwd_pipe_smem &sm,
                                                    const fa_seq &seq, int b, int hk, int j0, int mb_lo,
                                                    int n_mb, int n_iter, float (*lse_s)[Br], float (*dsum_s)[Br])
{
    constexpr int Bc = fa_bwd_sm90_pipe_cfg<D>::Bc; /* 128, or 64 at d = 256 */
    constexpr uint32_t kKVBytes = Bc * D * 2, kQBytes = Br * D * 2;
    const fa_bwd_args &a = prm.a;
    const int lane = threadIdx.x % 32, group = a.heads / a.heads_k;
    if (lane == 0) {
        fa_tma_prefetch_desc(&prm.tm_q);
        fa_tma_prefetch_desc(&prm.tm_do);
        fa_mbar_arrive_expect_tx(sm.kv_full, 2 * kKVBytes);
#pragma unroll
        for (int cb = 0; cb < D / 64; ++cb) {
            const uint32_t off = (uint32_t)cb * (Bc * 128);
            fa_tma_load_4d(sm.k + off, &prm.tm_k, sm.kv_full, cb * 64, j0, hk, b);
            fa_tma_load_4d(sm.v + off, &prm.tm_v, sm.kv_full, cb * 64, j0, hk, b);
        }
    }
    int stage = 0;
    uint32_t phase = 0;
    for (int it = 0; it < n_iter; ++it) {
        const int h = hk * group + it / n_mb;
        const int i0 = (mb_lo + it % n_mb) * Br;
        /* why: all 256 consumer threads released this slot (their wgmmas on its Q/dO completed, their
         * LSE/D reads done); a fresh barrier passes parity 1 at once (first pass over the ring) */
        fa_mbar_wait(sm.empty + 8u * stage, phase ^ 1u);
        if (lane == 0) {
            /* bytes before the loads, and before this lane's own arrival below, so the phase
             * cannot complete without them */
            fa_mbar_expect_tx(sm.q_full + 8u * stage, kQBytes);
            fa_mbar_expect_tx(sm.do_full + 8u * stage, kQBytes);
#pragma unroll
            for (int cb = 0; cb < D / 64; ++cb) {
                const uint32_t off = (uint32_t)stage * kQBytes + (uint32_t)cb * (Br * 128);
                fa_tma_load_4d(sm.q + off, &prm.tm_q, sm.q_full + 8u * stage, cb * 64, i0, h, b);
                fa_tma_load_4d(sm.dout + off, &prm.tm_do, sm.do_full + 8u * stage, cb * 64, i0, h, b);
            }
        }
        const int64_t li = fa_bwd_lse_base(a, seq, b, h) + i0;
#pragma unroll
        for (int r = lane; r < Br; r += 32) {
            const float lse = i0 + r < seq.sq ? a.lse[li + r] : -INFINITY;
            /* -inf (row sees no key, or padding): +inf makes P = exp2(s - inf) = 0 */
            lse_s[stage][r] = lse == -INFINITY ? INFINITY : lse * 1.4426950408889634f;
        }
        /* why: this lane's LSE stores are released to the consumers that wait on q_full */
        fa_mbar_arrive(sm.q_full + 8u * stage);
#pragma unroll
        for (int r = lane; r < Br; r += 32) dsum_s[stage][r] = i0 + r < seq.sq ? a.dpsum[li + r] : 0.f;
        /* why: the same for D and do_full */
        fa_mbar_arrive(sm.do_full + 8u * stage);
        if (++stage == kStages) {
            stage = 0;
            phase ^= 1u;
        }
    }
}

#endif /* FA_SM90_DEVICE */

#endif /* FA_BWD_SM90_PIPE_PRODUCER_CUH */
