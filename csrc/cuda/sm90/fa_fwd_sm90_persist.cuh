/* fa_fwd_sm90_persist.cuh - the persistent-grid variant of the Hopper forward (issue #14), for
 * plain dense calls (and softcap, ALiBi or dropout alone, opt-in: fa_fwd_sm90_route.cuh) at the
 * buckets whose tuning row sets `persist` (d = 64, 128): min(#work items, #SMs) CTAs, one per SM,
 * each walking a static list of work items (query
 * block, head, batch), grouped for K/V reuse in L2 (Schedule below); the math, the producer and
 * the epilogue are the one-block kernel's (fa_fwd_sm90_producer.cuh, fa_fwd_sm90_consumer.cuh,
 * fa_fwd_sm90_epilogue.cuh).
 * Q double-buffered (two Q slots, the second past the K/V rings: + Br D 2 bytes of shared memory):
 * item k uses slot k & 1, and the epilogue stages its O in that slot, from where a TMA store
 * writes it out while the consumers go on (the slot is released during item k + 1, below). So
 * the producer loads the next item's Q (and then its K/V tiles into the ring) as soon as it has
 * issued this item's last fill, while the consumers still run this item's last tiles and its
 * epilogue: at an item boundary Q and the first kStages K/V tiles are resident, and what the
 * consumers wait for is only their own epilogue. (With one slot, run 52's kernel, the next Q could only load after every consumer
 * warp's epilogue read its O out of the Q buffer: one full TMA latency per item, the one-block
 * grid's per-CTA cost.) FlashAttention-3 (hopper/mainloop_fwd_sm90_tma_gmma_ws.hpp) frees its one
 * Q buffer after the item's last Q K^T and stages O over V instead; two slots free it earlier.
 * What a CTA saves per item besides: the launch and barrier setup.
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
 *     the parity argument of fa_fwd_sm90_producer.cuh holds unchanged across items.
 *   Q full of slot s (count 1; s_bars[0] for slot 0, the layout's bar_q): one phase per item of the
 *     slot, also for items without key tiles (the producer then arrives without loading): item
 *     k = 2 u + s waits parity u & 1. Within one phase of its waiters: phase u + 1 (item k + 2)
 *     needs the producer past Q empty of slot s phase u, i.e. every consumer warp past item k.
 *   Q empty of slot s (count 4 kWG): each consumer warp arrives once per item of the slot, after
 *     the TMA store of the O its warpgroup staged there has READ it. The epilogue of item k
 *     (fa_fwd_sm90_epilogue.cuh) stages O with generic writes, fence.proxy.async in every writing
 *     thread, named barrier 1 + wg, then the warpgroup's first thread (thread_issues_o) issues the
 *     TMA stores and commits them as one bulk group, and nobody waits: the warps go on to item
 *     k + 1. There, once tile 0's Q K^T is issued (no key tiles: after the Q full wait), every
 *     warp calls warp_release_staged_slot for slot s: the issuing thread waits
 *     cp.async.bulk.wait_group.read 0 (its only open group is item k's: item k + 1's store comes
 *     later), then lane 0 of each warp arrives. So the arrivals of the issuing warps come after
 *     the async-proxy reads of the staging (a bulk read finished before the mbarrier release, the
 *     producer's acquire, then its TMA load: no proxy fence needed between the two async-proxy
 *     accesses), and those of the other warps after their last access to the slot (the staging
 *     writes, already fenced and ordered before the store by the named barrier); the count
 *     needs all of them, so the phase completes only after the store read the slot. Why deferred
 *     and not a wait right after the issue: the issuing warp would stall its warpgroup's next
 *     GEMM for the read of 64 D 2 bytes; in item k + 1 the read is long done and the arrival
 *     overlaps the Q K^T. Why not later: the producer waits for this phase before item k + 2's
 *     Q, which it reaches once item k + 1's K/V fills are issued (its middle for short items).
 *     After the last item only the wait.read remains (shared memory must outlive the read).
 *     The producer waits parity (u & 1) ^ 1 before item k's Q, i.e. for item k - 2's release
 *     (items 0 and 1 pass on fresh barriers). No deadlock: the arrivals for item k need only item
 *     k + 1's Q full and first K full phases, whose loads the producer issues before it waits
 *     for this phase (item k + 1's Q needs slot s ^ 1, released during item k; its first K/V
 *     fill needs a ring slot released during item k or earlier).
 *     Within one phase: phase u needs every consumer warp past Q full phase u of the slot, which
 *     needs this wait done; an arrival for item k comes after that warp's Q full wait of item k,
 *     and each warp arrives once per item, so it lands in phase u.
 *     Why both ways per item: with no key tiles the consumers would otherwise not wait for the
 *     producer at all and could run 2 items of a slot ahead, and a parity wait cannot tell phase
 *     u from u + 2. The Q full wait of item k + 2 also orders item k + 2's staging writes after
 *     item k's store read the slot (through the producer's Q empty wait and Q full arrival /
 *     load), also for items without key tiles.
 *   ping-pong turns (named 5 + wg): every item with key tiles opens and closes its own balanced
 *     round (warpgroup 0's closing bar.sync takes the last pass of warpgroup kWG - 1, which comes
 *     after every other warpgroup's last wait), so the next item's first pass finds each barrier
 *     at a fresh phase; items without key tiles use none (n_tiles is uniform over the CTA).
 *   named 1 + wg (epilogue, 128 threads of warpgroup wg): complete within one item: every warp's
 *     staging writes (each fenced for the async proxy) before the TMA store that reads them. The
 *     generic accesses of one slot's items are only these writes now (the store reads in the
 *     async proxy); item k + 2's come after item k's store read the slot through Q empty / Q full
 *     (above). (With generic stores, run 54's kernel, each warp read its chunks back itself and
 *     this barrier ordered item k's writes after item k - 2's reads.)
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
 * [0, paired) go in pairs, paired = n or 2 C rounds (fa_fwd_sm90_route.cuh fa_sm90_persist_paired), the
 * rest one per CTA. Increasing in k, below n + 2 C (fa_fwd_sm90_route.cuh fa_sm90_persist_ctas_for keeps that in int). */
static __device__ __forceinline__ int fa_sm90_persist_walk(int k, int c, int C, int n, int paired)
{
    const int base = (k >> 1) * 2 * C;  /* the round's first item */
    if (base < paired) return base + 2 * c + (k & 1);
    return (k & 1) ? n : paired + c;  /* the last round, <= C items: one per CTA */
}

/* The layout with Q slot s (0, 1) as its Q tile and Q full barrier (header: slot 1 lies q1 bytes
 * past slot 0, its barrier bar1 bytes past slot 0's). */
static __device__ __forceinline__ fa_sm90_layout fa_sm90_persist_slot(fa_sm90_layout sm, uint32_t s, uint32_t q1,
                                                                      uint32_t bar1)
{
    sm.q += s * q1;
    sm.bar_q += s * bar1;
    return sm;
}

#endif /* FA_SM90_DEVICE */

/* Q slot 1 of the persistent kernel: right after the V ring (fa_fwd_sm90_block.cuh's layout: Q
 * [Br][D], K and V [kStages][Bc][D]), 1024-aligned like the rest (Br D 2 and Bc D 2 are multiples
 * of 1024). Its dynamic shared memory: the one-block kernel's + that slot. */
template <int D, int Br, int Bc, int kStages>
static __host__ __device__ constexpr uint32_t fa_sm90_persist_q1()
{
    return (uint32_t)(Br + 2 * kStages * Bc) * D * 2u;
}

template <int D, int Br, int Bc, int kStages>
static constexpr size_t fa_fwd_sm90_persist_smem_bytes()
{
    return (size_t)(2 * Br + 2 * kStages * Bc) * D * 2u + 1024u;  /* fa_fwd_sm90_smem_bytes + Br D 2 */
}

template <bool kBf16, int D, int Br, int Bc, int kStages, bool kFeat = false, int kFeatSet = FA_SM90_FEAT_ANY>
__global__ void __launch_bounds__((Br / 64 + 1) * 128, 1)
fa_fwd_sm90_persist_kernel(const __grid_constant__ fa_sm90_params prm)
{
#if FA_SM90_DEVICE
    constexpr int kWG = Br / 64;  /* consumer warpgroups */
    static_assert(Br % 64 == 0 && (kWG == 2 || kWG == 3), "2 or 3 consumer warpgroups");
    static_assert(kStages >= 2, "the ring needs 2 slots for the overlap");
    /* kFeat: one feature alone, softcap, ALiBi or dropout (CAP, CAP_SLIM, ALIBI, DROP: the plain tile),
     * opt-in (route) */
    static_assert(!kFeat || kFeatSet != FA_SM90_FEAT_ANY, "one feature alone");
    constexpr bool kDrop = kFeat && kFeatSet == FA_SM90_FEAT_DROP;
    const fa_fwd_args &a = prm.a;

    extern __shared__ unsigned char fa_sm90_smem[];
    /* [0] Q full of Q slot 0; per ring slot: K full, V full, K empty, V empty; [1 + 4 kStages] Q
     * full of Q slot 1; [2 + 4 kStages + s] Q empty of Q slot s */
    __shared__ __align__(8) uint64_t s_bars[4 + 4 * kStages];
    const fa_sm90_layout sm = fa_sm90_smem_carve<D, Br, Bc, kStages>(fa_sm90_smem, s_bars);
    constexpr uint32_t kQSlot1 = fa_sm90_persist_q1<D, Br, Bc, kStages>();  /* Q slot 1 - slot 0 */
    constexpr uint32_t kQFull1 = 8u * (1 + 4 * kStages);                     /* its Q full - slot 0's */
    const uint32_t bar_qempty = sm.bar_q + kQFull1 + 8u;                     /* + 8 s: slot s */

    const int tid = threadIdx.x;
    const int n_blk = (a.seqlen_q + Br - 1) / Br;
    const int bh = a.heads * a.batch;
    const int n_items = n_blk * bh;  /* < 2^31: fa_fwd_sm90.cu */
    const int grp_pairs = prm.persist_group;  /* 1..bh (fa_fwd_sm90_route.cuh fa_sm90_persist_group_for) */

    if (a.rng_state != NULL && blockIdx.x == 0 && tid == 0) {
        uint64_t seed, offset;
        fa_fwd_philox_seed(a, &seed, &offset);
        a.rng_state[0] = (int64_t)seed;
        a.rng_state[1] = (int64_t)offset;
    }

    if (tid == 0) {
        fa_mbar_init(sm.bar_q + kQFull1, 1);       /* slot 1's Q full: the producer's arrive(.expect_tx) */
        fa_mbar_init(bar_qempty + 8u, 4 * kWG);    /* slot 1's Q empty: one arrival per consumer warp */
        thread_init_fwd_bars<kWG, kStages, true>(sm, bar_qempty);  /* the rest, slot 0's; fenced */
    }
    /* why: the barriers must be initialized before any thread waits on them or TMA signals them */
    __syncthreads();

    if (tid < 128) {
        /* ======================= producer warpgroup ======================= */
        fa_setmaxnreg_dec<fa_sm90_regs<kWG>::kProducer>();
        if (tid != 0) return;
        fa_tma_prefetch_desc(&prm.tm_q);
        fa_tma_prefetch_desc(&prm.tm_k);
        fa_tma_prefetch_desc(&prm.tm_v);
        fa_tma_prefetch_desc(&prm.tm_o); /* the epilogue's store (dense calls only here) */
        int stage = 0;
        uint32_t phase = 0;
        for (int k = 0;; ++k) {
            const int t = fa_sm90_persist_walk(k, blockIdx.x, gridDim.x, n_items, prm.persist_paired);
            if (t >= n_items) break;
            const uint32_t s = (uint32_t)k & 1u, u_par = ((uint32_t)k >> 1) & 1u;  /* Q slot, its use & 1 */
            int m_block, h, b;
            fa_sm90_persist_item(t, n_blk, grp_pairs, a.heads, bh, &m_block, &h, &b);
            fa_sm90_item it;
            fa_sm90_item_get<Br, Bc, false>(a, m_block, h, b, &it);  /* dense: m_block < n_blk */
            const fa_sm90_layout sl = fa_sm90_persist_slot(sm, s, kQSlot1, kQFull1);
            /* why: item k - 2's O TMA store has read its staging out of this Q slot (header) */
            fa_mbar_wait(bar_qempty + 8u * s, u_par ^ 1u);
            if (it.n_tiles > 0)
                thread_produce_item<D, Br, Bc, kStages, false>(prm, sl, it, stage, phase);  /* Q, then K/V */
            else
                fa_mbar_arrive(sl.bar_q);  /* this item's Q full phase, without a load (header) */
        }
        return;
    }

    /* ======================= consumer warpgroups ======================= */
    fa_setmaxnreg_inc<fa_sm90_regs<kWG>::kConsumer>();
    /* mul is the same for every item (b, h only pick the slope, read per item below) */
    const float mul = fa_sm90_score_factors<kFeat, kFeatSet>(a, 0, 0).x;
    int stage = 0;
    uint32_t phase = 0;
    bool q_pend = false;  /* item k - 1 exists: its Q slot (s ^ 1) awaits this warp's Q empty arrival */
    for (int k = 0;; ++k) {
        /* the producer's walk: the same items in the same order */
        const int t = fa_sm90_persist_walk(k, blockIdx.x, gridDim.x, n_items, prm.persist_paired);
        if (t >= n_items) break;
        const uint32_t s = (uint32_t)k & 1u, u_par = ((uint32_t)k >> 1) & 1u;
        int m_block, h, b;
        fa_sm90_persist_item(t, n_blk, grp_pairs, a.heads, bh, &m_block, &h, &b);
        fa_sm90_item it;
        fa_sm90_item_get<Br, Bc, false>(a, m_block, h, b, &it);
        const fa_sm90_layout sl = fa_sm90_persist_slot(sm, s, kQSlot1, kQFull1);
        const fa_sm90_rows rw = fa_sm90_rows_get(tid, it.m0, it.mk.sq);
        float o[D / 2];
        float m_i[2] = {-INFINITY, -INFINITY}, l_i[2] = {0.f, 0.f};
#pragma unroll
        for (int i = 0; i < D / 2; ++i) o[i] = 0.f;
        /* why: the producer's Q load of item k + 1 overwrites the O that item k - 1 staged in slot
         * s ^ 1; released once its TMA store has read it (header: inside the item's first tile) */
        const uint32_t bar_prev = bar_qempty + 8u * (s ^ 1u);
        if (it.n_tiles > 0) {
            const float slope = fa_sm90_score_factors<kFeat, kFeatSet>(a, b, h).y;  /* ALiBi: per (b, h) */
            warpgroup_attend_item<kBf16, D, Br, Bc, kStages, kFeat, false, kDrop, kFeatSet>(
                o, m_i, l_i, a, sl, it, rw, mul, slope, tid, u_par, stage, phase, q_pend, bar_prev);
        } else {
            fa_mbar_wait(sl.bar_q, u_par);  /* keeps the producer within one item of the slot (header) */
            if (q_pend) warp_release_staged_slot(bar_prev, tid);
        }
        /* O staged in slot s (its generic writes fenced for the async proxy in there), TMA store
         * issued, not waited for: slot s is released during item k + 1 (or after the loop) */
        warpgroup_store_item<kBf16, D, Br, false, kDrop>(o, m_i, l_i, a, sl.q, &prm.tm_o, b, h, 0, it.m0, it.m_end,
                                                         mul, tid);
        q_pend = true;
    }
    /* The last item's slot needs no arrival (the producer loads nothing more), but shared memory
     * must stay valid until its O store has read it. */
    if (thread_issues_o(tid)) fa_bulk_wait_read<0>();
#else
    __trap();  /* not the sm_90a pass: never launched */
#endif
}

/* Host: launches the persistent instance of (dtype, bucket D) on prm.persist_ctas CTAs; kSmallBr:
 * on the row's feat_br tile (prm.small_br, fa_sm90_tile); kFeat: feature set kFeatSet (one feature
 * alone, the plain tile; DROP: the dropout instance). */
template <bool kBf16, int D, bool kSmallBr = false, bool kFeat = false, int kFeatSet = FA_SM90_FEAT_ANY>
static fa_status fa_fwd_sm90_launch_persist(const fa_sm90_params &prm, cudaStream_t stream)
{
    typedef fa_sm90_tile<D, kFeat, kFeatSet, false, kSmallBr> T;
    static_assert(T::kPersist, "the bucket's tuning row has no persist instance");
    constexpr size_t smem = fa_fwd_sm90_persist_smem_bytes<D, T::kBr, T::kBc, T::kStages>();
    static_assert(smem <= 227u * 1024u, "two Q slots and the K/V rings exceed the opt-in shared memory of sm_90");
    void (*kern)(const fa_sm90_params) = fa_fwd_sm90_persist_kernel<kBf16, D, T::kBr, T::kBc, T::kStages, kFeat,
                                                                    kFeatSet>;
    if (cudaFuncSetAttribute((const void *)kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem) !=
        cudaSuccess)
        return FA_ERR_CUDA;
    kern<<<(unsigned)prm.persist_ctas, T::kThreads, smem, stream>>>(prm);
    return cudaGetLastError() == cudaSuccess ? FA_OK : FA_ERR_CUDA;
}

#endif /* FA_FWD_SM90_PERSIST_CUH */
