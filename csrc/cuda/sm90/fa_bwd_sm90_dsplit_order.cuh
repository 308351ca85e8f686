/* fa_bwd_sm90_dsplit_order.cuh - deterministic dQ in the d = 256 (dim-split) pipelined Hopper
 * backward (fa_bwd_sm90_pipe_kernel<kBf16, 256, FA_BWD_SM90_DQ_ORDERED>, pipelined mode
 * FA_BWD_SM90_PIPE_MODE_D256_ORDERED; the default, FLASH_ATTN_C_SM90_BWD_DET256=0 opts out, fa_bwd_sm90_ordered.h).
 *
 * The consumers add dQ by red.global.add.v4 into the tiled dq_accum exactly as the atomic instance
 * (kDq = RED, fa_bwd_sm90_pipe_dsplit.cuh, fa_bwd_sm90_dq_tiled.cuh), but each query tile (b, h, m)
 * of Br = 64 rows receives the adds of the key blocks (Bc = 64 keys) in one fixed order, decreasing
 * key block, so every float of dq_accum sums its terms in the same order every run: dq is identical
 * bit for bit. Turn order, counters and band math are the d <= 128 ORDERED instances'
 * (fa_bwd_sm90_pipe_dq_order.cuh): one int32 counter per (b, h, m) in the workspace (layout
 * [b][h][ceil(sq / 64)], dq_sem_rows = 64, zeroed by fa_bwd_dot_do_o_kernel, which also clears the
 * whole tiled dq_accum: flat_clear4); key block n's turn on tile m is thread_dq_turn<64, 64>, the
 * number of key blocks n' > n whose key range meets the keys of the tile's rows.
 *
 * Who does what, per tile it of the CTA's (head, query tile) walk:
 *   the turn warp (warp 1 of the producer warpgroup, idle at d = 256 otherwise): lane 0 spins with
 *     ld.acquire.gpu until the counter equals the turn (not at turn 0: the counter is 0 from the
 *     prep kernel, which precedes on the stream), then the warp bar.arrives TURN;
 *   the 256 consumer threads: bar.sync TURN right before their first red.add of the tile, issue
 *     their 16 red.add.v4, then bar.arrive DONE;
 *   the turn warp: bar.sync DONE (all 256 threads' adds issued), lane 0 publishes turn + 1:
 *     fence.acq_rel.gpu + red.relaxed.gpu.global.add (a release pattern); skipped for the last
 *     key block of the tile (n = the lowest one touching it: nobody waits for that turn).
 * Why a separate warp rather than a consumer thread: the acquire poll (an L2 round trip) and the
 * release fence (it waits for the adds to be performed at gpu scope) then stall no consumer warp;
 * a stalled consumer warp would hold back its warpgroup's next wgmma. The consumers only see a
 * bar.sync that the turn warp has normally already arrived at (it runs a tile ahead).
 * Why the DONE barrier spans the 256 consumer threads: every one of them adds a part of the tile
 * (each owns 64 of its 16384 floats); the turn may pass only once all of them have issued theirs.
 * Named barriers (ids 2, 3: the staged-dQ ids, unused here, as d = 256 has no dQ-writer warp;
 * 288 threads = the 256 consumers + the turn warp): generations cannot overlap, as with FULL /
 * EMPTY of the TMA-dQ kernel: the turn warp's TURN arrival of tile it + 1 follows its DONE sync of
 * tile it, which needs every consumer's DONE arrival of tile it, which follows that consumer's TURN
 * sync of tile it; a consumer's DONE arrival of tile it + 1 follows its TURN sync of tile it + 1,
 * which needs the turn warp's arrival, which follows its DONE sync of tile it. Both sides count
 * n_iter generations of each.
 *
 * Memory order (PTX ISA, "Memory Consistency Model"). Publish: a consumer's red.add W (relaxed,
 * generic proxy) precedes its bar.arrive DONE in program order; "a bar{.cta}.sync, bar{.cta}.red or
 * bar{.cta}.arrive operation synchronizes with a bar{.cta}.sync or bar{.cta}.red operation executed
 * on the same barrier", so W precedes the turn warp's bar.sync, hence its fence.acq_rel.gpu + relaxed
 * red on the counter ("release pattern": a fence.acq_rel followed by a strong write), in base
 * causality order, which is transitive whatever the scopes of the links. Acquire: the next key
 * block's ld.acquire.gpu that reads our increment synchronizes with that release pattern (both
 * morally strong at gpu scope); its bar.arrive TURN synchronizes with its consumers' bar.sync,
 * which precede their red.adds W' in program order. So W precedes W' in causality order, and the
 * "Causality" axiom puts W before W' in the coherence order of every float: the adds of a tile
 * land in turn order. (CUTLASS's GenericBarrier::arrive_inc relies on the same rule: "the fence
 * also releases data that was weakly-written by other threads prior to the last syncthreads".) No
 * proxy fence: red.global is generic-proxy, unlike the d <= 128 writer's TMA reduces.
 *
 * Why this cannot deadlock: the argument of fa_bwd_sm90_pipe_dq_order.cuh, whose premises hold
 * here: (a) the grid's x is reversed (fa_bwd_pipe_n_block<ORDERED>), so every wait names key blocks
 * n' > n of the same (b, hk) (query head h belongs to kv head h / group alone, and the counters
 * are per query head: no tile gets adds from CTAs of two kv heads), i.e. CTAs of lower linear
 * index, which are dispatched earlier and so are resident or finished, and by induction on the
 * linear index all finish; (b) the turn counts exactly the key blocks whose query band
 * (fa_band_query_tiles, the tiles the CTA walks) contains m, at Br = Bc = 64 as at Br = 80 / 128,
 * Bc = 128 (a property of fa_band_keys / fa_band_queries for any tile sizes: dev/bwd_sm90/
 * det_order_sim with BR = BC = 64 checks it: tests/test_sm90_bwd_det256.py); (c) within the CTA,
 * the turn warp's TURN arrival of tile it needs only lower-index CTAs (its poll) and the
 * consumers' DONE arrivals of tile it - 1; the consumers' DONE arrival of tile it needs only that
 * TURN arrival and the producer's ring, which needs only the consumers' slot releases of earlier
 * tiles (the atomic instance's ring, unchanged; consumers that wait hold their slot, and the
 * producer simply waits too): no cycle.
 */
#ifndef FA_BWD_SM90_DSPLIT_ORDER_CUH
#define FA_BWD_SM90_DSPLIT_ORDER_CUH

#include "fa_bwd_sm90_pipe_dq_order.cuh" /* the turn order (thread_dq_turn's band, inlined below) */
#include "fa_bwd_sm90_pipe_layout.cuh"

/* d = 256 ORDERED: the turn is ours (turn warp -> consumers) / all 256 consumers issued their adds
 * (consumers -> turn warp). The ids of the staged-dQ barriers, free at d = 256 (no dQ writer). */
#define FA_BWD_SM90_PIPE_BAR_DQ_TURN FA_BWD_SM90_PIPE_BAR_DQ_FULL
#define FA_BWD_SM90_PIPE_BAR_DQ_DONE (FA_BWD_SM90_PIPE_BAR_DQ_FULL + 1)
#define FA_BWD_SM90_PIPE_TURN_BAR_THREADS 288 /* 256 consumer threads + the turn warp */

#if FA_SM90_DEVICE

/* Consumer side, before this thread's first red.add of the tile: the turn warp's acquire of the
 * tile's turn (bar.sync: the adds below follow it in causality order, header comment). */
static __device__ __forceinline__ void thread_wait_dsplit_dq_turn(void)
{
    /* why: the adds of this tile may start only once the key blocks before ours in the turn order
     * have published theirs (the turn warp acquired the counter) */
    fa_named_barrier_sync<FA_BWD_SM90_PIPE_TURN_BAR_THREADS>(FA_BWD_SM90_PIPE_BAR_DQ_TURN);
}

/* Consumer side, after this thread's last red.add of the tile. */
static __device__ __forceinline__ void thread_done_dsplit_dq_adds(void)
{
    /* why: the turn warp publishes the next turn only once all 256 consumer threads issued their
     * adds of the tile (their red.adds precede it: header comment) */
    fa_named_barrier_arrive<FA_BWD_SM90_PIPE_TURN_BAR_THREADS>(FA_BWD_SM90_PIPE_BAR_DQ_DONE);
}

/* Lane 0: passes the turn after the consumers' adds (release pattern, header comment). */
static __device__ __forceinline__ void thread_pass_dsplit_dq_turn(int *sem /* one counter */)
{
    /* fence.acq_rel.gpu then a relaxed (strong) red: a release pattern that also orders the other
     * consumer threads' red.adds, which precede this thread's bar.sync DONE in base causality
     * order (PTX memory model: barriers synchronize; base causality order is transitive) */
    asm volatile("fence.acq_rel.gpu;\n" ::: "memory");
    asm volatile("red.relaxed.gpu.global.add.s32 [%0], 1;\n" ::"l"(sem) : "memory");
}

/* The turn warp (warp 1 of the producer warpgroup, kDq = ORDERED at d = 256): for each tile of the
 * consumers' (head, query block) walk, acquires key block n_block's turn on the tile's counter,
 * releases the consumers' adds (TURN), waits until all of them are issued (DONE) and passes the
 * turn on. sq, sk: seqlen_q / seqlen_k (dense); n_iter > 0. */
template <int Br, int Bc>
static __device__ __forceinline__ void warp_order_dsplit_dq(const fa_bwd_args &a, int sq, int sk, int b, int hk,
                                                            int n_block, int mb_lo, int n_mb, int n_iter)
{
    const int lane = threadIdx.x % 32, group = a.heads / a.heads_k;
    const int m_tiles = (sq + Br - 1) / Br;
    for (int it = 0; it < n_iter; ++it) {
        const int h = hk * group + it / n_mb, m = mb_lo + it % n_mb;
        /* counters [b][h][ceil(sq / Br)] (fa_bwd_host.h layout, dq_sem_rows = Br: the launch
         * refuses other rows) */
        int *sem = a.dq_sem + ((int64_t)b * a.heads + h) * m_tiles + m;
        /* the key blocks touching tile m: kb (thread_dq_turn's band); our turn is the number of
         * them above n_block, and the lowest one (kb.first) passes to nobody */
        int64_t lo, hi;
        fa_band_keys(m * Br, min(m * Br + Br, sq) - 1, sq, sk, a.window_left, a.window_right, &lo, &hi);
        const fa_band kb = fa_band_tiles(lo, hi, Bc);
        const int turn = kb.first + kb.count - 1 - n_block;
        /* turn 0: the counter holds the prep kernel's 0 (stream order): no poll */
        /* no proxy fence after it: the adds that follow are generic-proxy red.adds */
        if (lane == 0 && turn > 0) thread_spin_acquire_turn(sem, turn);
        __syncwarp(); /* lane 0's acquire before the warp's arrival */
        /* why: the consumers' adds of this tile must follow our acquire of the turn */
        fa_named_barrier_arrive<FA_BWD_SM90_PIPE_TURN_BAR_THREADS>(FA_BWD_SM90_PIPE_BAR_DQ_TURN);
        /* why: the turn passes once all 256 consumer threads issued their adds of this tile */
        fa_named_barrier_sync<FA_BWD_SM90_PIPE_TURN_BAR_THREADS>(FA_BWD_SM90_PIPE_BAR_DQ_DONE);
        if (lane == 0 && n_block > kb.first) thread_pass_dsplit_dq_turn(sem);
    }
}

#endif /* FA_SM90_DEVICE */

#endif /* FA_BWD_SM90_DSPLIT_ORDER_CUH */
