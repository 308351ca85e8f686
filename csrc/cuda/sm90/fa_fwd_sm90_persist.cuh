/* fa_fwd_sm90_persist.cuh - the persistent-grid variant of the Hopper forward (issue #14), for
 * dense calls without softcap / ALiBi at the buckets whose tuning row sets `persist` (d = 64,
 * 128): min(#work items, #SMs) CTAs, one per SM, each walking a static list of work items (query
 * block, head, batch), grouped for K/V reuse in L2 (Schedule below); the math, the producer and
 * the epilogue are the one-block kernel's (fa_fwd_sm90_producer.cuh, fa_fwd_sm90_consumer.cuh).
 * What a CTA saves per item: the launch and barrier setup, and the first kStages K/V tiles of its
 * next item load while its consumers run the epilogue (the next Q must wait for it: O is staged
 * in the Q buffer).
 *
 * Schedule, static: a dynamic fetch would need a counter zeroed before every launch (a workspace
 * and a memset that the sm90 forward does not have); the walk below balances causal loads instead.
 *   Order of the n = M b h items (M query blocks): the (batch, head) pairs p = b heads + h go in
 *     groups of G = prm.persist_group consecutive pairs (the last group may be smaller), a group's
 *     items before the next group's. Why: the query blocks of one pair read the same K/V; run
 *     together they take it from HBM about once and from L2 after, and the host picks G so that
 *     a group's K/V fits well inside L2 (fa_sm90_persist_group_for: 16 MB of 50). The first order
 *     (query blocks outermost over all b h pairs) re-read each head's K/V from HBM once per wave:
 *     0.60-0.70x the one-block grid at d = 128, 512..2048 tokens (H100 run 52). Inside a group,
 *     row u = 0 .. M/2 - 1 gives each pair two consecutive items, query block M - 1 - u (the
 *     longest under a causal mask) then u (the shortest): their key tiles add up to about the
 *     same for every u. The pairs vary fastest within a row; an odd M ends the group with each
 *     pair's middle block. G = 1 reads K/V like the one-block grid (all blocks of a pair in turn).
 *   Walk (fa_sm90_persist_walk): CTA c takes the item pairs (2s, 2s + 1), s = c, c + C, ... (C =
 *     gridDim.x), so its load is a sum of nearly equal (long, short) pairs; a last round of at
 *     most C items goes one item per CTA instead (a pair there would double the round). Causal
 *     makespan / mean load, key tiles + 1 per item, harness bench shapes (CPU model, not timed):
 *     1.02-1.04 (first order 1.03-1.06); a plain round robin t = c + k C over groups ordered
 *     longest first ran 1.03-1.29 (a CTA kept the same place in the groups' descent).
 *   The schedule is invisible to the barriers below: to them a CTA's items are a list of 0..n
 *   key tiles each.
 *
 * Barriers across items (none is re-initialized; the one-block kernel's protocol otherwise):
 *   K/V ring: producer and consumers continue one sequence of fills / reads over the items (the
 *     ring position is carried; the consumers step it once more after an item's last tile), so
 *     the parity argument of fa_fwd_sm90_producer.cuh holds unchanged across items. The producer
 *     issues an item's first kStages fills before its Q-empty wait (their empty waits depend on
 *     earlier items' consumers only), the rest after its Q load.
 *   bar_q (count 1): one phase per item, also for items without key tiles (the producer then
 *     arrives without loading): item k waits parity k & 1. Within one phase of its waiters: phase
 *     k + 1 needs the producer past q_empty phase k, i.e. every consumer warp past item k.
 *   q_empty (count 4 kWG, new): each consumer warp arrives once per item, after its epilogue read
 *     the O it staged in sm.q (fence.proxy.async first: generic reads / writes of those bytes
 *     before the TMA's async-proxy writes); the producer waits parity (k & 1) ^ 1 before item k's
 *     Q (item 0 passes on the fresh barrier). Within one phase: phase k needs every consumer warp
 *     past bar_q phase k, which needs this wait done.
 *     Why both ways per item: with no key tiles the consumers would otherwise not wait for the
 *     producer at all and could run 2 items ahead, and a parity wait cannot tell phase k from k + 2.
 *   ping-pong turns (named 5 + wg): every item with key tiles opens and closes its own balanced
 *     round (warpgroup 0's closing bar.sync takes the last pass of warpgroup kWG - 1, which comes
 *     after every other warpgroup's last wait), so the next item's first pass finds each barrier
 *     at a fresh phase; items without key tiles use none (n_tiles is uniform over the CTA).
 *   named 1 + wg (epilogue, 128 threads of warpgroup wg): complete within one item; an item
 *     without key tiles syncs it once more before its O staging (WAR on the previous item's
 *     epilogue reads, which no ping-pong bar.sync separates there).
 */
#ifndef FA_FWD_SM90_PERSIST_CUH
#define FA_FWD_SM90_PERSIST_CUH

#include "fa_fwd_sm90_producer.cuh"
#include "fa_fwd_sm90_consumer.cuh"

#if FA_SM90_DEVICE

/* (query block, head, batch) of item t of the order (header, "Schedule"): n_blk query blocks, the
 * bh = b h (batch, head) pairs in groups of grp_pairs (1 <= grp_pairs <= bh, fa_fwd_sm90.cu). */
static __device__ __forceinline__ void fa_sm90_persist_item(int t, int n_blk, int grp_pairs, int heads, int bh,
                                                            int *m_block, int *h, int *b)
{
    const int first = t / (grp_pairs * n_blk) * grp_pairs;  /* the group's first pair (<= items) */
    const int g = min(grp_pairs, bh - first);               /* its pairs: fewer in the last group */
    const int r = t - first * n_blk;                        /* 0 <= r < g n_blk */
    const int half = n_blk >> 1, paired = 2 * half * g;     /* items in (long, short) rows */
    int pair;
    if (r < paired) {
        const int q = r >> 1, u = q / g;
        pair = first + (q - u * g);
        *m_block = (r & 1) ? u : n_blk - 1 - u;
    } else {
        pair = first + (r - paired);  /* odd n_blk: the middle query block */
        *m_block = half;
    }
    *b = pair / heads;
    *h = pair - *b * heads;
}

/* The k-th item of CTA c of C = gridDim.x over n items (header, "Walk"); >= n: no more. Items
 * [0, paired) go in pairs, paired = n or 2 C rounds (fa_fwd_sm90.cu, fa_sm90_persist_paired), the
 * rest one per CTA. Increasing in k, below n + 2 C (fa_fwd_sm90.cu keeps that in int). */
static __device__ __forceinline__ int fa_sm90_persist_walk(int k, int c, int C, int n, int paired)
{
    const int base = (k >> 1) * 2 * C;  /* the round's first item */
    if (base < paired) return base + 2 * c + (k & 1);
    return (k & 1) ? n : paired + c;  /* the last round, <= C items: one per CTA */
}

#endif /* FA_SM90_DEVICE */

template <bool kBf16, int D, int Br, int Bc, int kStages>
__global__ void __launch_bounds__((Br / 64 + 1) * 128, 1)
fa_fwd_sm90_persist_kernel(const __grid_constant__ fa_sm90_params prm)
{
#if FA_SM90_DEVICE
    constexpr int kWG = Br / 64;  /* consumer warpgroups */
    static_assert(Br % 64 == 0 && (kWG == 2 || kWG == 3), "2 or 3 consumer warpgroups");
    static_assert(kStages >= 2, "the ring needs 2 slots for the overlap");
    const fa_fwd_args &a = prm.a;

    extern __shared__ unsigned char fa_sm90_smem[];
    /* [0] Q full; per slot: K full, V full, K empty, V empty; [1 + 4 kStages] Q empty */
    __shared__ __align__(8) uint64_t s_bars[2 + 4 * kStages];
    const fa_sm90_layout sm = fa_sm90_smem_carve<D, Br, Bc, kStages>(fa_sm90_smem, s_bars);
    const uint32_t bar_qempty = sm.bar_q + 8u * (1 + 4 * kStages);

    const int tid = threadIdx.x;
    const int n_blk = (a.seqlen_q + Br - 1) / Br;
    const int bh = a.heads * a.batch;
    const int n_items = n_blk * bh;  /* < 2^31: fa_fwd_sm90.cu */
    const int grp_pairs = prm.persist_group;  /* 1..bh (fa_fwd_sm90.cu) */

    if (a.rng_state != NULL && blockIdx.x == 0 && tid == 0) {
        uint64_t seed, offset;
        fa_fwd_philox_seed(a, &seed, &offset);
        a.rng_state[0] = (int64_t)seed;
        a.rng_state[1] = (int64_t)offset;
    }

    if (tid == 0) thread_init_fwd_bars<kWG, kStages, true>(sm, bar_qempty);
    /* why: the barriers must be initialized before any thread waits on them or TMA signals them */
    __syncthreads();

    if (tid < 128) {
        /* ======================= producer warpgroup ======================= */
        fa_setmaxnreg_dec<fa_sm90_regs<kWG>::kProducer>();
        if (tid != 0) return;
        fa_tma_prefetch_desc(&prm.tm_q);
        fa_tma_prefetch_desc(&prm.tm_k);
        fa_tma_prefetch_desc(&prm.tm_v);
        int stage = 0;
        uint32_t phase = 0;
        for (int k = 0;; ++k) {
            const int t = fa_sm90_persist_walk(k, blockIdx.x, gridDim.x, n_items, prm.persist_paired);
            if (t >= n_items) break;
            const uint32_t k_par = (uint32_t)k & 1u;  /* item count & 1 */
            int m_block, h, b;
            fa_sm90_persist_item(t, n_blk, grp_pairs, a.heads, bh, &m_block, &h, &b);
            fa_sm90_item it;
            fa_sm90_item_get<Br, Bc, false>(a, m_block, h, b, &it);  /* dense: m_block < n_blk */
            const int kv_h = h / a.group;
            /* The item's first kStages K/V tiles go in before the Q-empty wait, so they land during
             * the previous item's epilogue: fill g waits for the release of fill g - kStages, here
             * one of an earlier item (its consumers need nothing from this producer any more). A
             * later fill would wait for this item's own consumers, who need its Q first. */
            const int n_early = min(it.n_tiles, kStages);
            thread_fill_item_tiles<D, Bc, kStages, false>(prm, sm, it, kv_h, 0, n_early, stage, phase);
            /* why: the consumers' epilogue of the previous item has read its O out of sm.q */
            fa_mbar_wait(bar_qempty, k_par ^ 1u);
            if (it.n_tiles > 0) {
                thread_load_q<D, Br, false>(prm, sm, it);
                thread_fill_item_tiles<D, Bc, kStages, false>(prm, sm, it, kv_h, n_early, it.n_tiles, stage, phase);
            } else {
                fa_mbar_arrive(sm.bar_q);  /* this item's bar_q phase, without a load (header) */
            }
        }
        return;
    }

    /* ======================= consumer warpgroups ======================= */
    fa_setmaxnreg_inc<fa_sm90_regs<kWG>::kConsumer>();
    const float mul = a.scale_log2;  /* plain: scores in q.k units, exp2 folds in scale log2(e) */
    int stage = 0;
    uint32_t phase = 0;
    for (int k = 0;; ++k) {
        /* the producer's walk: the same items in the same order */
        const int t = fa_sm90_persist_walk(k, blockIdx.x, gridDim.x, n_items, prm.persist_paired);
        if (t >= n_items) break;
        const uint32_t k_par = (uint32_t)k & 1u;
        int m_block, h, b;
        fa_sm90_persist_item(t, n_blk, grp_pairs, a.heads, bh, &m_block, &h, &b);
        fa_sm90_item it;
        fa_sm90_item_get<Br, Bc, false>(a, m_block, h, b, &it);
        const fa_sm90_rows rw = fa_sm90_rows_get(tid, it.m0, it.mk.sq);
        float o[D / 2];
        float m_i[2] = {-INFINITY, -INFINITY}, l_i[2] = {0.f, 0.f};
#pragma unroll
        for (int i = 0; i < D / 2; ++i) o[i] = 0.f;
        if (it.n_tiles > 0)
            warpgroup_attend_item<kBf16, D, Br, Bc, kStages, false, false>(o, m_i, l_i, a, sm, it, rw, mul, 0.f, tid,
                                                                           k_par, stage, phase);
        else {
            fa_mbar_wait(sm.bar_q, k_par);  /* keeps the producer within one item (header) */
            /* why: the staging below overwrites rows that other warps of this warpgroup read in
             * the previous item's epilogue. The q_empty -> producer -> bar_q chain orders that
             * already, but only through a third thread; an item with key tiles also has the
             * warpgroup's ping-pong bar.sync in between, this path had no barrier of its own
             * (racecheck flagged exactly these items). Same barrier as the epilogue's, 128. */
            fa_named_barrier_sync<128>(1 + rw.wg);
        }
        warpgroup_store_item<kBf16, D, Br, false>(o, m_i, l_i, a, sm.q, b, h, 0, it.m0, it.m_end, mul, tid);
        fa_fence_proxy_async_smem();  /* this thread's generic O writes / reads before the next Q's TMA */
        /* why: the producer's next Q load overwrites the O this warp staged and read (header) */
        warp_release_slot(bar_qempty, rw.lane);
    }
#else
    __trap();  /* not the sm_90a pass: never launched */
#endif
}

/* Host: launches the persistent instance of (dtype, bucket D) on prm.persist_ctas CTAs. */
template <bool kBf16, int D>
static fa_status fa_fwd_sm90_launch_persist(const fa_sm90_params &prm, cudaStream_t stream)
{
    typedef fa_sm90_tile<D, false> T;
    static_assert(T::kPersist, "the bucket's tuning row has no persist instance");
    const size_t smem = fa_fwd_sm90_smem_bytes(D, T::kBr, T::kBc, T::kStages);
    void (*kern)(const fa_sm90_params) = fa_fwd_sm90_persist_kernel<kBf16, D, T::kBr, T::kBc, T::kStages>;
    if (cudaFuncSetAttribute((const void *)kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem) !=
        cudaSuccess)
        return FA_ERR_CUDA;
    kern<<<(unsigned)prm.persist_ctas, T::kThreads, smem, stream>>>(prm);
    return cudaGetLastError() == cudaSuccess ? FA_OK : FA_ERR_CUDA;
}

#endif /* FA_FWD_SM90_PERSIST_CUH */
