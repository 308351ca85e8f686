/* fa_bwd_sm90_pipe_kernel.cuh - the Hopper backward with a producer warpgroup (steps 1 and 2 of
 * the staged sm90 backward plan of issue #13): the math of fa_bwd_sm90_kernel.cuh (S^T, dP^T
 * recomputed per query block, dV/dK accumulated in registers), but the loads come from a TMA
 * producer through an mbarrier ring instead of every thread's cp.async; dQ (kDq) either
 * by fp32 red.add from the consumers (FA_BWD_SM90_DQ_RED) or (step 2, FA_BWD_SM90_DQ_TMA) staged
 * in shared memory and added into dq_accum by TMA tensor reduces that a dQ-writer warp issues.
 * Selected on the host by FLASH_ATTN_C_SM90_BWD_PIPE=1 (red.add dQ) or =2 (TMA dQ)
 * (fa_bwd_sm90_plan.cu), dense tensors only (varlen would need the borrowed-row zeroing of the
 * forward: plan step 7). Measured against fa_bwd_sm90_kernel (H100 run 37, bf16, 16k tokens),
 * red.add dQ: d = 128 1.02-1.10x its TFLOP/s (364 vs 330 at 16k non-causal); the native harness
 * passes every case with it, under memcheck, racecheck and synccheck. TMA dQ (H100 run 41):
 * 1.13-1.32x red.add at d = 128, the default there for atomic dQ. Br comes from this kernel's own
 * tuning row (fa_bwd_sm90_pipe_cfg), not fa_bwd_sm90_kernel's: d = 64 runs Br = 64 (with Br = 128
 * both atomic-dQ instances spilled at the 240-register cap: red.add 48 bytes, TMA dQ 92, nvcc
 * 13.0); its TMA-dQ instance ran 1.09-1.21x fa_bwd_sm90_kernel and passed the harness's d <= 64
 * cases (H100 run 50), clean under compute-sanitizer memcheck / racecheck / synccheck (run 51):
 * the default for atomic dQ at d <= 64 too.
 * kDq = FA_BWD_SM90_DQ_ORDERED (deterministic dQ, d <= 128; which calls run it: below):
 * the TMA-dQ kernel whose writer adds each query tile in decreasing key-block order, waiting on a
 * per-(b, h, query tile) turn counter in the workspace; the grid's x is reversed so that every
 * wait goes to an earlier-launched CTA (fa_bwd_sm90_pipe_dq_order.cuh: order, deadlock argument).
 * The default for deterministic dense d <= 128 calls in H100 runs 54-61; since H200 run 62 only where
 * the Br = 80 / 128 ORDERED instances do not apply, or under FLASH_ATTN_C_SM90_BWD_DET=ordered.
 *
 * Grid (key block n, kv head hk, batch b) as the old kernel; 384 threads = 3 warpgroups:
 *   warpgroup 0, the producer: setmaxnreg down to 24; warps 2-3 exit (and warp 1 unless kDq = TMA
 *     or ORDERED);
 *     warp 0 loads K_j, V_j once (lane 0, TMA, own mbarrier), then walks the (head of the group,
 *     query block) sequence: Q_i + LSE_i into the Q ring, dO_i + D_i into the dO ring (kStages
 *     slots each, one "empty" mbarrier per slot shared by both). Tiles by TMA (lane 0); LSE*log2e
 *     and D by plain loads of all 32 lanes into static shared memory (each lane arrives on the
 *     slot's full barrier after its stores, so the consumers' wait covers them).
 *     Warp 1 (kDq = TMA / ORDERED only), the dQ writer: walks the same sequence and reduce-adds each consumer
 *     warpgroup's staged dQ tile into dq_accum (warp_write_dq).
 *   warpgroups 1, 2, the consumers: setmaxnreg up to 240; warpgroup wg = 0, 1 owns keys
 *     [j0 + 64 wg, + 64) exactly as in fa_bwd_sm90_kernel.cuh (same products, fa_bwd_sm90_tile.cuh
 *     helpers, at this kernel's Br). dQ = dS K of the Br x d block is one 64-query x N-dim tile
 *     per warpgroup over all Bc keys (fa_bwd_pipe_dq_split): Br = 64 splits the dims, N = d / 2
 *     (d = 128: dims 64 wg.., N = 64; d = 64: dims 32 wg.., N = 32); Br = 128 splits the
 *     queries (queries 64 wg.., N = d = 64: the split of fa_bwd_sm90_kernel at d = 64).
 *   d = 256 (every d in (128, 256]; fa_bwd_sm90_pipe_cfg<256>::kDimSplit; the default
 *     for atomic dQ since H100 runs 51-52): Bc = 64, both
 *     consumer warpgroups on the same 64 keys, warpgroup wg owning dims [128 wg, + 128) of dK, dV
 *     and of dQ; S^T / dP^T split by queries (32 each), P^T / dS^T exchanged through shared memory
 *     under the DS barrier; dQ by red.add only (fa_bwd_sm90_pipe_dsplit.cuh). The producer, the
 *     ring and the barriers below are the same. Its kDq = ORDERED instance (default;
 *     FLASH_ATTN_C_SM90_BWD_DET256=0 opts out) keeps the red.adds and orders them per query tile with
 *     warp 1 as the turn warp and barriers 2, 3 (fa_bwd_sm90_dsplit_order.cuh).
 * Ring protocol per slot s (parity = pass over the ring & 1):
 *   q_full[s]  (32 arrivals + TMA bytes): producer lanes arrive after their LSE stores, lane 0
 *              announced the Q bytes with expect_tx before issuing; consumers wait, then S^T.
 *   do_full[s] (32 arrivals + TMA bytes): the same for dO and D; consumers wait before dP^T.
 *   empty[s]   (256 arrivals): each consumer thread arrives once its wgmmas reading Q/dO of the
 *              slot completed and its LSE/D reads are done; the producer waits before refilling.
 *   kv_full    (1 arrival + K, V bytes): consumers wait once before the first tile.
 * dS^T (for dQ) is double buffered by iteration parity, so its reuse needs no barrier: writing
 * buffer it & 1 happens after the dS barrier of iteration it - 1, which both warpgroups reach only
 * after their dQ product of iteration it - 2 (the last reader of that buffer) completed.
 * Named barriers (hardware ids; 0 is __syncthreads, used once before the role split):
 *   1 FA_BWD_SM90_PIPE_BAR_DS (256: both consumer warpgroups, bar.sync): dS^T of both written
 *     (d = 256: both warpgroups' halves of P^T and dS^T).
 *   kDq = TMA (and ORDERED), per consumer warpgroup w = 0, 1, 160 threads (its 128 + the writer warp's 32):
 *   2 + w FA_BWD_SM90_PIPE_BAR_DQ_FULL: the 128 consumers bar.arrive after their fragment stores
 *         into staging buffer w + fence.proxy.async; the writer bar.syncs, then issues the reduce.
 *   4 + w FA_BWD_SM90_PIPE_BAR_DQ_EMPTY: the writer bar.arrives once the TMA has read buffer w
 *         (cp.async.bulk.wait_group.read 0); the consumers bar.sync before storing the next tile.
 *         Tile 0 skips that sync (the buffer starts free) and the writer skips the arrival after
 *         the last tile, so both sides count n_iter - 1 generations. Generations cannot overlap:
 *         the writer's arrival for tile it needs the consumers' FULL arrival of tile it, which
 *         follows their EMPTY sync of tile it (and symmetrically for FULL). Before exiting, the
 *         writer waits for all its reduces to complete (cp.async.bulk.wait_group 0).
 *         ORDERED: the writer bar.syncs FULL 0 and FULL 1, takes its turn, adds both, waits for
 *         the adds to complete, then arrives EMPTY 0 and 1: the same generations per barrier.
 *   (The consumers name ids 2 + wg, 4 + wg from a register, so ptxas reports all 16 barriers in
 *   use; with one CTA per SM that costs nothing.)
 * Consumer order per tile, kDq = TMA (FA3's, overlapping dQ with dK): S^T, dP^T, P^T, dS^T ->
 * smem; issue dV; DS barrier; issue dQ; wait <= 1 (dV done); issue dK; wait <= 1 (dQ done); dQ
 * fragments -> staging (after the EMPTY sync), arrive FULL; wait 0 (dK done); release the slot.
 * kDq = RED / NONE keep step 1's order (dV and dK issued together, then dQ, waited at once).
 *
 * Files: fa_bwd_sm90_pipe_layout.cuh (shapes, shared memory layout), _producer.cuh (warp 0),
 * _dq_writer.cuh (warp 1 and the dQ staging), _dq_order.cuh (ORDERED's turns), _consumer.cuh (the
 * consumer tile), _dsplit.cuh (the consumer tile at d = 256); the products of fa_bwd_sm90_tile.cuh.
 *
 * fa_bwd_sm90_pipe128_kernel (FLASH_ATTN_C_SM90_BWD_VARIANT, default "br80,br128"; H100 run 54): this
 * kernel's body at Br = 128, d <= 64 (tuning row FA_KERNEL_BWD_SM90_PIPE128), red.add or TMA dQ, with
 * the consumer tile of fa_bwd_sm90_pipe128.cuh (the Br = 80 kernel's register tricks; 0 spills); and
 * its kDq = ORDERED instance (deterministic default at d <= 64 since H200 run 62: the TMA consumers and the
 * ordered writer above with turn counters per 128 query rows).
 * fa_bwd_sm90_pipe80_kernel / _pipe80_ordered_kernel (defaults at d in (64, 128]: H100 run 54, H200 run 62): this
 * kernel's body at Br = 80 (tuning row FA_KERNEL_BWD_SM90_PIPE80), TMA or ORDERED dQ, with the
 * consumer tile of fa_bwd_sm90_pipe80.cuh (dQ transposed; the same writer warp).
 * fa_bwd_sm90_pipe_feat_kernel (opt-in FLASH_ATTN_C_SM90_BWD_FEAT=1, not yet run on a GPU): this body
 * with kFeat, softcap / ALiBi scores (thread_probs_ds_feat; the wrapper below says which tiles).
 *
 * Out of range: TMA zero-fills rows past sq / sk and dims past d (dense 4-d maps); LSE = +inf
 * there, so P = 0. The TMA dQ reduce skips rows past sq and dims past d (outside its 4-d map).
 */
#ifndef FA_BWD_SM90_PIPE_KERNEL_CUH
#define FA_BWD_SM90_PIPE_KERNEL_CUH

#include "fa_bwd_sm90_pipe_consumer.cuh"
#include "fa_bwd_sm90_pipe_dq_writer.cuh"
#include "fa_bwd_sm90_pipe_dsplit.cuh"
#include "fa_bwd_sm90_pipe_layout.cuh"
#include "fa_bwd_sm90_pipe_producer.cuh"
#include "fa_bwd_sm90_pipe128.cuh" /* the Br = 128 consumer tile */
#include "fa_bwd_sm90_pipe80.cuh"  /* the Br = 80 consumer tile */

#if FA_SM90_DEVICE

/* The kernel body (the __global__ wrappers below): kKernel picks the tuning row
 * (fa_bwd_sm90_pipe_cfg) and, for FA_KERNEL_BWD_SM90_PIPE128 / _PIPE80, the consumer tile of
 * fa_bwd_sm90_pipe128.cuh / fa_bwd_sm90_pipe80.cuh. prm: the kernel's __grid_constant__ parameter.
 * kFeat: softcap and / or ALiBi (the FEAT instance: Br = 64, TMA or ORDERED dQ at d <= 128, warpgroup_tile_pds;
 * the dim split's red.add or ORDERED dQ at d in (128, 256], warpgroup_bwd_tile_dsplit). */
template <bool kBf16, int D, int kDq, int kKernel, bool kFeat = false>
static __device__ __forceinline__ void fa_bwd_sm90_pipe_main(const fa_bwd_sm90_params &prm)
{
    using Cfg = fa_bwd_sm90_pipe_cfg<D, kKernel>;
    constexpr int Br = Cfg::Br, kStages = Cfg::kStages, Bc = Cfg::Bc;
    static_assert(!kFeat || (kKernel == FA_KERNEL_BWD_SM90_PIPE &&
                             (Cfg::kDimSplit ? kDq == FA_BWD_SM90_DQ_RED || kDq == FA_BWD_SM90_DQ_ORDERED
                                             : FA_BWD_SM90_DQ_STAGED(kDq))),
                  "softcap / ALiBi: the Br = 64 tile with TMA or ORDERED dQ, the dim split with red.add or ORDERED");
    /* dK, dV accumulators per thread: 64 keys x D dims per warpgroup, or at d = 256 (kDimSplit)
     * 64 keys x D / 2 dims */
    constexpr int kAcc = Cfg::kDimSplit ? D / 4 : D / 2;
    const fa_bwd_args &a = prm.a;
    extern __shared__ unsigned char fa_bwd_sm90_smem[];
    /* LSE*log2e (+inf where P must be 0) and D = rowsum(dO o O) of each slot */
    __shared__ float s_lse[kStages][Br], s_dsum[kStages][Br];
    /* kv_full; q_full[kStages]; do_full[kStages]; empty[kStages] */
    __shared__ __align__(8) uint64_t s_bars[1 + 3 * kStages];

    /* key block: blockIdx.x, reversed for kDq = ORDERED (its turn waits go to lower block indices
     * only: fa_bwd_sm90_pipe_dq_order.cuh) */
    const int n_block = fa_bwd_pipe_n_block<kDq>(), hk = blockIdx.y, b = blockIdx.z;
    const fa_seq seq = fa_seq_get(0, a.cu_seqlens_q, a.cu_seqlens_k, a.seqlen_q, a.seqlen_k, b); /* dense only */
    const int j0 = n_block * Bc;
    if (j0 >= seq.sk) return; /* uniform over the CTA, before any barrier exists */

    const uint32_t tiles = (fa_smem_u32(fa_bwd_sm90_smem) + 1023u) & ~1023u; /* swizzle atoms: 1024-aligned */
    const fa_bwd_pipe_smem sm = fa_bwd_pipe_smem_at<D, Br, kStages>(tiles, fa_smem_u32(&s_bars[0]));

    /* query blocks with a row that can see some key of [j0, j1] (fa_seq.cuh), for each query
     * head of the group */
    const fa_band m_band = fa_band_query_tiles(j0, Bc, seq.sq, seq.sk, a.window_left, a.window_right, Br);
    const int mb_lo = m_band.first, n_mb = m_band.count;
    const int group = a.heads / a.heads_k;
    const int n_iter = n_mb * group;

    block_bwd_pipe_init_barriers<kStages>(sm);

    if (threadIdx.x < 128) {
        /* ======================= producer warpgroup ======================= */
        fa_setmaxnreg_dec<FA_BWD_SM90_PIPE_REGS_PRODUCER>();
        if (n_iter == 0) return;
        if constexpr (Cfg::kDimSplit && kDq == FA_BWD_SM90_DQ_ORDERED) {
            /* d = 256 ORDERED: no dQ writer (the consumers red.add); warp 1 orders their adds */
            if (threadIdx.x < 32)
                warp_produce<D, Br, kStages>(prm, sm, seq, b, hk, j0, mb_lo, n_mb, n_iter, s_lse, s_dsum);
            else if (threadIdx.x < 64)
                warp_order_dsplit_dq<Br, Bc>(a, seq.sq, seq.sk, b, hk, n_block, mb_lo, n_mb, n_iter);
        } else if constexpr (FA_BWD_SM90_DQ_STAGED(kDq)) { /* (not instantiated at d = 256: no TMA-dQ instance) */
            if (threadIdx.x < 32)
                warp_produce<D, Br, kStages>(prm, sm, seq, b, hk, j0, mb_lo, n_mb, n_iter, s_lse, s_dsum);
            else if (threadIdx.x < 64)
                warp_write_dq<D, Br, kDq == FA_BWD_SM90_DQ_ORDERED>(prm, sm, seq.sq, seq.sk, b, hk, n_block, mb_lo,
                                                                    n_mb, n_iter);
        } else if (threadIdx.x < 32) {
            warp_produce<D, Br, kStages>(prm, sm, seq, b, hk, j0, mb_lo, n_mb, n_iter, s_lse, s_dsum);
        }
        return;
    }

    /* ======================= consumer warpgroups ======================= */
    fa_setmaxnreg_inc<FA_BWD_SM90_PIPE_REGS_CONSUMER>();
    float dk[kAcc], dv[kAcc];
#pragma unroll
    for (int i = 0; i < kAcc; ++i) dk[i] = dv[i] = 0.f;
    if (n_iter > 0) {
        /* why: K_j and V_j (TMA) have landed; read by every tile */
        fa_mbar_wait(sm.kv_full, 0);
        int stage = 0;
        uint32_t phase = 0;
        for (int it = 0; it < n_iter; ++it) {
            const int h = hk * group + it / n_mb;
            const int i0 = (mb_lo + it % n_mb) * Br;
            const uint32_t buf = (uint32_t)(it & 1) * (uint32_t)(Bc * Br * 2); /* dS^T (P^T) buffer it & 1 */
            /* ALiBi (the FEAT instance): the slope of this tile's query head (0 = off) */
            const float slope = kFeat && a.alibi_slopes != NULL
                                    ? a.alibi_slopes[(int64_t)b * a.alibi_batch_stride + h] : 0.f;
            if constexpr (kKernel == FA_KERNEL_BWD_SM90_PIPE80) {
                warpgroup_bwd_tile80<kBf16>(a, seq, sm, dk, dv, stage, phase, sm.ds + buf, it == 0, i0, j0,
                                            s_lse[stage], s_dsum[stage]);
            } else if constexpr (kKernel == FA_KERNEL_BWD_SM90_PIPE128) {
                warpgroup_bwd_tile128<kBf16, kDq>(a, seq, sm, dk, dv, stage, phase, sm.ds + buf, it == 0, h, i0, j0,
                                                  s_lse[stage], s_dsum[stage]);
            } else if constexpr (Cfg::kDimSplit) {
                warpgroup_bwd_tile_dsplit<kBf16, D, kDq, kFeat>(a, seq, sm, dk, dv, stage, phase, buf, b, h, i0, j0,
                                                                s_lse[stage], s_dsum[stage], slope);
            } else {
                const uint32_t sds = sm.ds + buf;
                if (FA_BWD_SM90_DQ_STAGED(kDq))
                    warpgroup_bwd_tile_tma<kBf16, D, Br, kFeat>(a, seq, sm, dk, dv, stage, phase, sds, it == 0, i0,
                                                                j0, s_lse[stage], s_dsum[stage], slope);
                else
                    warpgroup_bwd_tile<kBf16, D, Br, kDq>(a, seq, sm, dk, dv, stage, phase, sds, h, i0, j0,
                                                          s_lse[stage], s_dsum[stage]);
            }
            if (++stage == kStages) {
                stage = 0;
                phase ^= 1u;
            }
        }
    }
    if constexpr (Cfg::kDimSplit)
        warpgroup_store_dkdv_dsplit<kBf16, D>(a, seq, b, hk, j0, dk, dv);
    else
        warpgroup_store_dkdv<kBf16, D>(a, seq, b, hk, j0, dk, dv);
}

#endif /* FA_SM90_DEVICE */

/* kDq: fa_bwd_sm90_dq_mode. The dynamic shared memory is fa_bwd_sm90_pipe_cfg<D>::smem_bytes(kDq). */
template <bool kBf16, int D, int kDq>
__global__ void __launch_bounds__(FA_BWD_SM90_PIPE_THREADS, 1)
fa_bwd_sm90_pipe_kernel(const __grid_constant__ fa_bwd_sm90_params prm)
{
#if FA_SM90_DEVICE
    fa_bwd_sm90_pipe_main<kBf16, D, kDq, FA_KERNEL_BWD_SM90_PIPE>(prm);
#else
    /* other gencodes: never launched (fa_bwd_sm90_supported checks for the sm_90a image) */
    __trap();
#endif
}

/* The FEAT instance (pipelined modes FA_BWD_SM90_PIPE_MODE_FEAT / _FEAT_ORDERED; opt-in
 * FLASH_ATTN_C_SM90_BWD_FEAT=1, fa_bwd_sm90_plan.cu): softcap and / or ALiBi, this kernel's body
 * with the feature scores (the consumers wait for S^T and dP^T together, then P^T and dS^T in one
 * pass, thread_probs_ds_feat; the slope of each tile's query head read in the loop): D = 64, 128
 * (Br = 64) with kDq = TMA (atomic dQ) or ORDERED (deterministic); D = 256 (the dim split) with
 * kDq = RED or ORDERED. Dense, no dropout: every other softcap / ALiBi call runs the sm80 backward.
 * The same maps, shared memory and launch as fa_bwd_sm90_pipe_kernel<kBf16, D, kDq>. */
template <bool kBf16, int D, int kDq>
__global__ void __launch_bounds__(FA_BWD_SM90_PIPE_THREADS, 1)
fa_bwd_sm90_pipe_feat_kernel(const __grid_constant__ fa_bwd_sm90_params prm)
{
#if FA_SM90_DEVICE
    fa_bwd_sm90_pipe_main<kBf16, D, kDq, FA_KERNEL_BWD_SM90_PIPE, true>(prm);
#else
    __trap(); /* as above */
#endif
}

/* The Br = 128 instance at d <= 64 (fa_bwd_sm90_pipe128.cuh; kDq = RED or TMA, and ORDERED: the
 * deterministic default since H200 run 62 (fa_bwd_sm90_ordered.h), turn counters per 128 query rows,
 * grid x reversed). The dynamic shared memory is
 * fa_bwd_sm90_pipe_cfg<64, FA_KERNEL_BWD_SM90_PIPE128>::smem_bytes(kDq). */
template <bool kBf16, int kDq>
__global__ void __launch_bounds__(FA_BWD_SM90_PIPE_THREADS, 1)
fa_bwd_sm90_pipe128_kernel(const __grid_constant__ fa_bwd_sm90_params prm)
{
#if FA_SM90_DEVICE
    static_assert(kDq == FA_BWD_SM90_DQ_RED || FA_BWD_SM90_DQ_STAGED(kDq), "no dK/dV-only instance at Br = 128");
    fa_bwd_sm90_pipe_main<kBf16, 64, kDq, FA_KERNEL_BWD_SM90_PIPE128>(prm);
#else
    __trap(); /* as above */
#endif
}

/* The Br = 80 kernel at d in (64, 128] (fa_bwd_sm90_pipe80.cuh; kDq = TMA): dynamic shared memory
 * fa_bwd_sm90_pipe80_cfg::kSmemBytes; prm.tm_q / tm_do with Br-row boxes, prm.tm_dqacc with {32, Br}
 * boxes (fa_bwd_sm90_pipe80_host.h). */
template <bool kBf16>
__global__ void __launch_bounds__(FA_BWD_SM90_PIPE_THREADS, 1)
fa_bwd_sm90_pipe80_kernel(const __grid_constant__ fa_bwd_sm90_params prm)
{
#if FA_SM90_DEVICE
    fa_bwd_sm90_pipe_main<kBf16, 128, FA_BWD_SM90_DQ_TMA, FA_KERNEL_BWD_SM90_PIPE80>(prm);
#else
    __trap(); /* as above */
#endif
}

/* The ordered (deterministic) instance (the default since H200 run 62, fa_bwd_sm90_ordered.h): the same grid,
 * shared memory and maps, plus prm.a.dq_sem with dq_sem_rows = Br (fa_bwd_sm90_ordered.h). */
template <bool kBf16>
__global__ void __launch_bounds__(FA_BWD_SM90_PIPE_THREADS, 1)
fa_bwd_sm90_pipe80_ordered_kernel(const __grid_constant__ fa_bwd_sm90_params prm)
{
#if FA_SM90_DEVICE
    fa_bwd_sm90_pipe_main<kBf16, 128, FA_BWD_SM90_DQ_ORDERED, FA_KERNEL_BWD_SM90_PIPE80>(prm);
#else
    __trap(); /* as above */
#endif
}

#endif /* FA_BWD_SM90_PIPE_KERNEL_CUH */
