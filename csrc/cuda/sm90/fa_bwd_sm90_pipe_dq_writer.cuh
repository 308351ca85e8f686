/* fa_bwd_sm90_pipe_dq_writer.cuh - dQ by TMA reduce-add (kDq = FA_BWD_SM90_DQ_TMA, and in key-block
 * order for kDq = FA_BWD_SM90_DQ_ORDERED) in the pipelined
 * Hopper backward: each consumer warpgroup stores its 64 x N dQ tile into its staging buffer
 * (warpgroup_stage_dq, the layout of the TMA box), and the dQ-writer warp (warp 1 of warpgroup 0)
 * adds the staged tiles into dq_accum with TMA tensor reduces (warp_write_dq). The FULL / EMPTY
 * named barriers between them: fa_bwd_sm90_pipe_kernel.cuh's header comment.
 */
#ifndef FA_BWD_SM90_PIPE_DQ_WRITER_CUH
#define FA_BWD_SM90_PIPE_DQ_WRITER_CUH

#include "fa_bwd_sm90_pipe_dq_order.cuh"
#include "fa_bwd_sm90_pipe_layout.cuh"

#if FA_SM90_DEVICE

/* Lane 0 of the writer: the TMA reduces of warpgroup w's staged tile of query block i0 (one per
 * 32-dim box of its dims; Br = 80: of its dQ^T) into dq_accum, not committed; kStore: TMA stores
 * instead (the first add of a tile under kDq = ORDERED: nothing to add to, so dq_accum needs no
 * clearing there). The boxes of the two warpgroups cover every element of the tile inside the map. Rows past sq and dims past d are
 * outside the map, so TMA drops them: nothing is added outside this (b, h)'s rows, and a box that
 * lies wholly outside is not issued. */
template <int D, int Br, bool kStore = false>
static __device__ __forceinline__ void thread_reduce_dq_tile(const fa_bwd_sm90_params &prm, const fa_bwd_pipe_smem &sm,
                                                             int w, int i0, int h, int b, int sq)
{
    using Dq = fa_bwd_pipe_dq_split<D, Br>;
    /* warpgroup w's tile: its N dims of the Br = 64 queries, its 64 of Br = 128 queries, or its
     * 64 dims of the Br = 80 queries */
    const int row0 = i0 + Dq::row0(w), dim0 = Dq::col0(w);
    const uint32_t stg = sm.dq + (uint32_t)w * Dq::kStageBytes;
#pragma unroll
    for (int hc = 0; hc < Dq::kBoxes; ++hc)
        if (dim0 + 32 * hc < prm.a.head_dim && row0 < sq) {
            if constexpr (kStore)
                fa_tma_store_4d(&prm.tm_dqacc, stg + (uint32_t)hc * Dq::kBoxBytes, dim0 + 32 * hc, row0, h, b);
            else
                fa_tma_reduce_add_4d(&prm.tm_dqacc, stg + (uint32_t)hc * Dq::kBoxBytes, dim0 + 32 * hc, row0, h, b);
        }
}

/* dQ-writer warp (warp 1 of the producer warpgroup, kDq = TMA or ORDERED; every pipelined tile,
 * Br = 64, 80, 128): walks the consumers' (head, query block) sequence; per tile and consumer
 * warpgroup w, waits for w's staged dQ tile (fa_bwd_pipe_dq_split; Br = 80: dQ^T), lane 0 adds it
 * into dq_accum (thread_reduce_dq_tile) and, once the TMA has read the buffer, hands it back to w.
 * n_iter > 0.
 * kOrdered (kDq = ORDERED, fa_bwd_sm90_pipe_dq_order.cuh): per tile, both staged tiles first, then
 * lane 0 waits for key block n_block's turn on the tile's counter, adds both (turn 0: stores both,
 * over whatever the workspace held), waits until the adds
 * are performed and passes the turn; only then are both buffers handed back (a tile's adds cannot
 * start before the turn, so its buffer cannot be freed earlier).
 * sq, sk: seqlen_q / seqlen_k (dense). */
template <int D, int Br, bool kOrdered>
static __device__ __forceinline__ void warp_write_dq(const fa_bwd_sm90_params &prm, const fa_bwd_pipe_smem &sm,
                                                     int sq, int sk, int b, int hk, int n_block, int mb_lo, int n_mb,
                                                     int n_iter)
{
    const fa_bwd_args &a = prm.a;
    const int lane = threadIdx.x % 32, group = a.heads / a.heads_k;
    if (lane == 0) fa_tma_prefetch_desc(&prm.tm_dqacc);
    for (int it = 0; it < n_iter; ++it) {
        const int h = hk * group + it / n_mb;
        const int m = mb_lo + it % n_mb, i0 = m * Br;
        const bool last = it + 1 == n_iter;
        if constexpr (kOrdered) {
            /* why: warpgroups 0 and 1 stored this tile's dQ fragments into their staging buffers
             * and fenced them for the async proxy (TMA) before arriving */
            fa_named_barrier_sync<FA_BWD_SM90_PIPE_DQ_BAR_THREADS>(FA_BWD_SM90_PIPE_BAR_DQ_FULL + 0);
            fa_named_barrier_sync<FA_BWD_SM90_PIPE_DQ_BAR_THREADS>(FA_BWD_SM90_PIPE_BAR_DQ_FULL + 1);
            if (lane == 0) {
                /* counters [b][h][ceil(sq / Br)] (fa_bwd_host.h): the host laid them out with
                 * dq_sem_rows = Br (fa_bwd_sm90_ordered_rows; fa_bwd_sm90.cu refuses a launch
                 * where they differ) */
                int *sem = a.dq_sem + ((int64_t)b * a.heads + h) * ((sq + Br - 1) / Br) + m;
                const int turn = thread_dq_turn<Br, FA_BWD_SM90_BC>(m, n_block, sq, sk, a.window_left, a.window_right);
                thread_wait_dq_turn(sem, turn);
                /* turn 0 (the highest key block touching the tile) writes the tile, the others add
                 * to it: fa_bwd_dot_do_o_kernel clears only the tiles no key block touches */
                if (turn == 0) {
                    thread_reduce_dq_tile<D, Br, true>(prm, sm, 0, i0, h, b, sq);
                    thread_reduce_dq_tile<D, Br, true>(prm, sm, 1, i0, h, b, sq);
                } else {
                    thread_reduce_dq_tile<D, Br>(prm, sm, 0, i0, h, b, sq);
                    thread_reduce_dq_tile<D, Br>(prm, sm, 1, i0, h, b, sq);
                }
                fa_bulk_commit();
                fa_bulk_wait<0>(); /* the adds performed in dq_accum (and both buffers read) */
                thread_pass_dq_turn(sem);
            }
            if (!last) {
                __syncwarp(); /* lane 0's wait before the warp's arrivals */
                /* why: the TMA has read both staging buffers (EMPTY protocol: the header comment of
                 * fa_bwd_sm90_pipe_kernel.cuh, n_iter - 1 generations on each side as with TMA) */
                fa_named_barrier_arrive<FA_BWD_SM90_PIPE_DQ_BAR_THREADS>(FA_BWD_SM90_PIPE_BAR_DQ_EMPTY + 0);
                fa_named_barrier_arrive<FA_BWD_SM90_PIPE_DQ_BAR_THREADS>(FA_BWD_SM90_PIPE_BAR_DQ_EMPTY + 1);
            }
        } else {
#pragma unroll
            for (int w = 0; w < 2; ++w) {
                /* why: warpgroup w's 128 threads stored this tile's dQ fragments into staging buffer
                 * w and fenced them for the async proxy (TMA) before arriving */
                fa_named_barrier_sync<FA_BWD_SM90_PIPE_DQ_BAR_THREADS>(FA_BWD_SM90_PIPE_BAR_DQ_FULL + w);
                if (lane == 0) {
                    thread_reduce_dq_tile<D, Br>(prm, sm, w, i0, h, b, sq);
                    fa_bulk_commit();
                    /* the buffer is free once read (the adds may still be on their way to L2) */
                    if (!last) fa_bulk_wait_read<0>();
                }
                if (!last) {
                    __syncwarp(); /* lane 0's wait before the warp's arrival */
                    /* why: the TMA has read staging buffer w: warpgroup w may store its next tile
                     * there (it bar.syncs on this before its stores). Not after the last tile,
                     * where the consumers do not wait: both sides count n_iter - 1 generations. */
                    fa_named_barrier_arrive<FA_BWD_SM90_PIPE_DQ_BAR_THREADS>(FA_BWD_SM90_PIPE_BAR_DQ_EMPTY + w);
                }
            }
        }
    }
    /* every reduce has read its source and landed in dq_accum before the CTA (and its shared
     * memory) goes away; the convert kernel reads dq_accum after this kernel */
    if (lane == 0) fa_bulk_wait<0>();
}

/* This thread's dQ accumulators into its warpgroup's staging buffer stg (kDq = TMA).
 * dqa in the wgmma D layout (fa_wgmma.cuh): dqa[4 jn + 2 half + e] = dQ[m][n] of the warpgroup's
 * 64 x kN tile, m = 16 wq + g + 8 half (query), n = 8 jn + 2 t + e (dim). stg holds the kN / 32
 * TMA boxes {32 dims, 64 rows} of tm_dqacc as the 128-byte swizzle lays them out: dims
 * [32 hc, + 32) at stg + 8192 hc (hc = jn / 4), row m at + 128 m, 16-byte chunk k = (n % 32) / 4
 * = 2 (jn % 4) + t / 2 of the row at physical chunk k ^ (m % 8) = k ^ g, the pair (e = 0, 1) at
 * byte 8 (t % 2) of the chunk: one st.shared.v2.f32 per (jn, half), kN / 4 per thread.
 * Banks, per store instruction (a warp writes 32 x 8 = 256 bytes: 2 wavefronts at best): rows are
 * 128 bytes apart, so physical chunk p covers banks 4p..4p+3 in every row; it is hit by the lanes
 * with (2 (jn % 4) + t / 2) ^ g = p, i.e. 2 values of g times 2 of t % 2 = 4 lanes, 2 per bank:
 * every bank twice, 2 wavefronts, conflict-free. (Unswizzled 128-byte rows would put the 8 g of a
 * column on the same banks: 8-way.) */
template <int kN>
static __device__ __forceinline__ void warpgroup_stage_dq(const float (&dqa)[kN / 2], uint32_t stg)
{
    const int lane = threadIdx.x % 32, wq = (threadIdx.x / 32) % 4;
    const int g = lane / 4, t = lane % 4;
#pragma unroll
    for (int jn = 0; jn < kN / 8; ++jn)
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const int m = 16 * wq + g + 8 * half;
            const uint32_t chunk = (uint32_t)((2 * (jn % 4) + t / 2) ^ g);
            const uint32_t addr = stg + (uint32_t)(jn / 4) * FA_BWD_SM90_DQ_BOX_BYTES + (uint32_t)m * 128u +
                                  (chunk << 4) + (uint32_t)(t % 2) * 8u;
            asm volatile("st.shared.v2.f32 [%0], {%1, %2};\n" ::"r"(addr), "f"(dqa[4 * jn + 2 * half]),
                         "f"(dqa[4 * jn + 2 * half + 1])
                         : "memory");
        }
}

#endif /* FA_SM90_DEVICE */

#endif /* FA_BWD_SM90_PIPE_DQ_WRITER_CUH */
