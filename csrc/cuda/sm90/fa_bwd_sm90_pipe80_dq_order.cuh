/* fa_bwd_sm90_pipe80_dq_order.cuh - the ordered (deterministic) dQ writer of the Br = 80 pipelined
 * Hopper backward (fa_bwd_sm90_pipe80_ordered_kernel, fa_bwd_sm90_pipe80.cuh; opt-in,
 * FLASH_ATTN_C_SM90_BWD_DET=ordered_br, fa_bwd_sm90_ordered.h): warp_write_dqt with the turn protocol
 * of the Br = 64 ORDERED instance (fa_bwd_sm90_pipe_dq_order.cuh: decreasing key-block order per
 * query tile, one int32 turn counter per (b, h, query tile of Br = 80 rows), the grid's x reversed
 * so that every wait goes to an earlier-launched CTA; the deadlock argument there covers this
 * kernel: its paragraph "The FA3-sized tiles"). The consumers' side is the atomic kernel's,
 * unchanged (warpgroup_bwd_tile80: stage dQ^T, arrive FULL, sync EMPTY before the next tile).
 */
#ifndef FA_BWD_SM90_PIPE80_DQ_ORDER_CUH
#define FA_BWD_SM90_PIPE80_DQ_ORDER_CUH

#include "fa_bwd_sm90_pipe_dq_order.cuh" /* thread_dq_turn, thread_wait_dq_turn, thread_pass_dq_turn */
#include "fa_bwd_sm90_pipe_layout.cuh"

#if FA_SM90_DEVICE

/* dQ-writer warp of the ordered Br = 80 kernel: per tile (head h, query tile m, rows i0 = m Br) it
 * waits for both warpgroups' staged dQ^T, then lane 0 waits for key block n_block's turn on the
 * tile's counter, adds the 4 boxes {32 dims, Br rows} (warpgroup w's at dims 64 w + 32 hc; rows past
 * sq and dims past d dropped by TMA, a box wholly past d not issued), waits until the adds are
 * performed in dq_accum (not only read), passes the turn, and only then hands both staging buffers
 * back (not after the last tile: n_iter - 1 EMPTY generations per warpgroup, as warp_write_dqt).
 * sq, sk: seqlen_q / seqlen_k (dense); n_block: this CTA's key block (fa_bwd_pipe_n_block). */
template <int Br>
static __device__ __forceinline__ void warp_write_dqt_ordered(const fa_bwd_sm90_params &prm,
                                                              const fa_bwd_pipe_smem &sm, int sq, int sk, int b,
                                                              int hk, int n_block, int mb_lo, int n_mb, int n_iter)
{
    constexpr uint32_t kBoxBytes = 32u * Br * 4u;
    const fa_bwd_args &a = prm.a;
    const int lane = threadIdx.x % 32, group = a.heads / a.heads_k;
    if (lane == 0) fa_tma_prefetch_desc(&prm.tm_dqacc);
    for (int it = 0; it < n_iter; ++it) {
        const int h = hk * group + it / n_mb;
        const int m = mb_lo + it % n_mb, i0 = m * Br;
        const bool last = it + 1 == n_iter;
        /* why: warpgroups 0 and 1 stored this tile's dQ^T into their staging buffers and fenced the
         * stores for the async proxy (TMA) before arriving */
        fa_named_barrier_sync<FA_BWD_SM90_PIPE_DQ_BAR_THREADS>(FA_BWD_SM90_PIPE_BAR_DQ_FULL + 0);
        fa_named_barrier_sync<FA_BWD_SM90_PIPE_DQ_BAR_THREADS>(FA_BWD_SM90_PIPE_BAR_DQ_FULL + 1);
        if (lane == 0) {
            /* counters [b][h][ceil(sq / Br)]: the host laid them out with dq_sem_rows = Br
             * (fa_bwd_sm90_ordered_rows; fa_bwd_sm90.cu refuses a launch where they differ) */
            int *sem = a.dq_sem + ((int64_t)b * a.heads + h) * ((sq + Br - 1) / Br) + m;
            thread_wait_dq_turn(sem, thread_dq_turn<Br, FA_BWD_SM90_BC>(m, n_block, sq, sk, a.window_left,
                                                                         a.window_right));
#pragma unroll
            for (int w = 0; w < 2; ++w)
#pragma unroll
                for (int hc = 0; hc < 2; ++hc)
                    if (64 * w + 32 * hc < a.head_dim && i0 < sq)
                        fa_tma_reduce_add_4d(&prm.tm_dqacc, sm.dq + (uint32_t)(2 * w + hc) * kBoxBytes,
                                             64 * w + 32 * hc, i0, h, b);
            fa_bulk_commit();
            fa_bulk_wait<0>(); /* the adds performed in dq_accum (and both buffers read) */
            thread_pass_dq_turn(sem);
        }
        if (!last) {
            __syncwarp(); /* lane 0's turn and adds before the warp's arrivals */
            /* why: the TMA has read both staging buffers: warpgroups 0 and 1 may store their next
             * tile there (they bar.sync EMPTY + wg before their staging stores) */
            fa_named_barrier_arrive<FA_BWD_SM90_PIPE_DQ_BAR_THREADS>(FA_BWD_SM90_PIPE_BAR_DQ_EMPTY + 0);
            fa_named_barrier_arrive<FA_BWD_SM90_PIPE_DQ_BAR_THREADS>(FA_BWD_SM90_PIPE_BAR_DQ_EMPTY + 1);
        }
    }
    /* nothing left in flight (each tile waited for its adds); kept for symmetry with warp_write_dqt */
    if (lane == 0) fa_bulk_wait<0>();
}

#endif /* FA_SM90_DEVICE */

#endif /* FA_BWD_SM90_PIPE80_DQ_ORDER_CUH */
