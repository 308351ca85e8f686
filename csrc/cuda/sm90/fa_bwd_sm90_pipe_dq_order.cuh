/* fa_bwd_sm90_pipe_dq_order.cuh - deterministic dQ inside the pipelined Hopper backward
 * (kDq = FA_BWD_SM90_DQ_ORDERED): the dQ-writer warp of key block n adds its partial dQ of a query
 * tile into dq_accum only when every key block after n (n' > n) that touches the tile has added
 * its own, so each element of dq_accum receives its terms in one fixed order (decreasing key
 * block) whatever the scheduling: the fp32 sums, and dq, are identical bit for bit run to run.
 *
 * Turn counter: one int32 per (batch b, query head h, query tile m of Br rows) in the workspace,
 * laid out [b][h][ceil(sq / Br)] (fa_bwd_host.h), zeroed by fa_bwd_dot_do_o_kernel. It counts the
 * key blocks that have added into the tile. Key block n's turn on tile m is the number of key
 * blocks n' > n touching m (thread_dq_turn); it spins until the counter equals that, adds, waits
 * for its adds to complete, then increments the counter (release). Turn 0 stores instead of
 * adding, so dq_accum is not cleared beforehand except in the tiles no key block touches
 * (fa_bwd_dot_do_o_kernel): one 4-byte-per-element write pass of the workspace less per call.
 *
 * Why decreasing key blocks (the shortest critical path under causal masks): with the
 * bottom-right causal mask key block n's query band starts at its diagonal tile, so the CTA
 * reaches query tile m after about m - 2n + 1 tiles of its own (Bc = 2 Br): for a given m the
 * highest key block touching it gets there first, the next lower one later, and so on; these are
 * also the CTAs with the fewest tiles, which finish first. Decreasing order is the order in which
 * the adds arrive anyway, so a writer rarely waits. Increasing order would make key block 0 (the
 * longest CTA, reaching tile m last) the head of every chain: each CTA then moves at key block
 * 0's pace and stays resident until about its end. dev/bwd_sm90/det_order_sim, causal sq = sk =
 * 4096, 16 heads, 132 resident CTAs, unit tile time: makespan 171 (decreasing) vs 271
 * (increasing), CTA-resident time 17.0k vs 32.4k. Without a mask both orders cost the same.
 *
 * Why this cannot deadlock: the kernel maps blockIdx.x -> n = gridDim.x - 1 - blockIdx.x
 * (fa_bwd_pipe_n_block), so the key blocks a CTA waits for (n' > n, same kv head and batch:
 * query head h belongs to one kv head) have lower linear block indices. CTAs are dispatched in
 * increasing linear index, so a CTA that is resident finds every CTA it waits for resident or
 * finished. By induction on the linear index (the lowest one never waits; a CTA's own waits only
 * name lower indices, which all finish), every CTA finishes: nothing ever waits for a CTA that
 * is not yet resident, whatever the number of resident CTAs. (The other mapping, n = blockIdx.x,
 * deadlocks once the grid exceeds the resident CTAs: the simulator shows it.) Within a CTA the
 * writer adds tiles in the consumers' order, and the consumers need only the writer's EMPTY
 * arrival of the previous tile: no cycle.
 *
 * The FA3-sized tiles (the default, FLASH_ATTN_C_SM90_BWD_DET unset: fa_bwd_sm90_pipe80_ordered_kernel,
 * Br = 80, d in (64, 128], writer warp_write_dq<128, 80, true>; fa_bwd_sm90_pipe128_kernel<.., ORDERED>,
 * Br = 128, d <= 64, writer warp_write_dq<64, 128, true>): the same protocol with one counter per
 * Br = 80 / 128 query rows (the host lays them out with the Br of the instance that runs:
 * fa_bwd_sm90_ordered_rows; the launch refuses other rows) and thread_dq_turn<Br, 128>. The argument
 * above holds unchanged, as it uses only (a) Bc = 128 key blocks on grid x, reversed, so every wait
 * names a CTA of the same (hk, b) with a lower linear index; (b) the turn of key block n on tile m
 * is the number of key blocks n' > n whose query band (fa_band_query_tiles at this Br, the tiles
 * the CTA walks) contains m, so each wait is for adds that the CTAs waited for do make (a key block
 * outside the band neither adds nor is counted: no wait for a CTA that exits with n_iter = 0);
 * (c) within the CTA, the writer's waits need only lower-index CTAs and the consumers' FULL arrivals
 * of the current tile, which need only the writer's EMPTY arrivals of the previous one (the FULL /
 * EMPTY generations and the ring are the atomic TMA kernels', unchanged). (b) is a property of the
 * band functions for any Br: dev/bwd_sm90/det_order_sim with BR = 80 and 128 checks the turns
 * against brute force over the mask and schedules the grid under 1, 2, 5 and 132 resident CTAs
 * without deadlock, each tile added in decreasing key-block order (tests/test_sm90_bwd_det_br.py);
 * decreasing order stays the shorter critical path under causal masks there (causal 2048, 16 heads:
 * makespan 45.6 vs 58.0 at Br = 80, 27.6 vs 38.0 at Br = 128). Br = 80 is no power of 2: only
 * the tile arithmetic (m Br, ceil(sq / Br)) sees it, in int, like the atomic Br = 80 kernel's.
 *
 * Memory order (per tile): wait: ld.acquire.gpu until counter == turn, then fence.proxy.async.global
 * (the TMA reduces below are async-proxy accesses: order them after the acquire). Add: the TMA
 * reduces (turn 0: TMA stores), commit, cp.async.bulk.wait_group 0 (the writes to global are performed, not only the
 * smem source read), fence.proxy.async.global (those async-proxy writes before the generic-proxy
 * release), red.release.gpu.global.add (release: the next key block's acquire sees our adds).
 */
#ifndef FA_BWD_SM90_PIPE_DQ_ORDER_CUH
#define FA_BWD_SM90_PIPE_DQ_ORDER_CUH

#include "fa_bwd_sm90_pipe_layout.cuh"

#if FA_SM90_DEVICE

/* The key block of this CTA: blockIdx.x, reversed under kDq = ORDERED (header comment: waits go
 * to lower linear indices only). */
template <int kDq>
static __device__ __forceinline__ int fa_bwd_pipe_n_block(void)
{
    return kDq == FA_BWD_SM90_DQ_ORDERED ? (int)(gridDim.x - 1 - blockIdx.x) : (int)blockIdx.x;
}

/* Key block n's turn on query tile m (rows [m Br, + Br) clipped to sq): the key blocks n' > n of Bc
 * keys whose key range meets the keys that the tile's rows see. Those rows see keys [lo, hi]
 * (fa_band_keys: the union of their ranges, contiguous), so the touching key blocks are the
 * tiles fa_band_tiles(lo, hi, Bc) and the turn is the last of them minus n. The kernel walks the
 * query side instead (fa_band_queries of the key block): the same relation, since row i sees key
 * j exactly when j lies in row i's range (the simulator checks both against each other). Only
 * called for tiles the key block touches, so the band is not empty and its last block >= n. */
template <int Br, int Bc>
static __device__ __forceinline__ int thread_dq_turn(int m, int n, int sq, int sk, int left, int right)
{
    int64_t lo, hi;
    fa_band_keys(m * Br, min(m * Br + Br, sq) - 1, sq, sk, left, right, &lo, &hi);
    const fa_band kb = fa_band_tiles(lo, hi, Bc);
    return kb.first + kb.count - 1 - n;
}

/* Spins (one thread) until *sem == turn: ld.acquire.gpu, __nanosleep backoff from 32 to 256 ns
 * between polls (a poll is an L2 round trip, ~0.5 us; the backoff keeps a long wait from
 * hammering the line the previous writer will increment). Shared by every ORDERED turn wait. */
static __device__ __forceinline__ void thread_spin_acquire_turn(const int *sem /* one counter */, int turn)
{
    unsigned ns = 32;
    for (;;) {
        int v;
        asm volatile("ld.acquire.gpu.global.s32 %0, [%1];\n" : "=r"(v) : "l"(sem) : "memory");
        if (v == turn) break;
        __nanosleep(ns);
        ns = ns < 256 ? 2 * ns : 256;
    }
}

/* The dQ writer's turn (TMA reduce-adds follow): the spin above, then the proxy fence. */
static __device__ __forceinline__ void thread_wait_dq_turn(const int *sem /* one counter */, int turn)
{
    thread_spin_acquire_turn(sem, turn);
    /* the TMA reduces that follow (async proxy) after the acquire */
    asm volatile("fence.proxy.async.global;\n" ::: "memory");
}

/* After this thread's bulk groups completed (fa_bulk_wait<0>): the next key block's turn. */
static __device__ __forceinline__ void thread_pass_dq_turn(int *sem /* one counter */)
{
    /* the completed async-proxy writes to dq_accum before the generic-proxy release below */
    asm volatile("fence.proxy.async.global;\n" ::: "memory");
    asm volatile("red.release.gpu.global.add.s32 [%0], 1;\n" ::"l"(sem) : "memory");
}

#endif /* FA_SM90_DEVICE */

#endif /* FA_BWD_SM90_PIPE_DQ_ORDER_CUH */
