/* fa_fwd_sm90_persist.cuh - the persistent-grid variant of the Hopper forward (issue #14), for
 * dense calls without softcap / ALiBi at the buckets whose tuning row sets `persist` (d = 64,
 * 128): min(#work items, #SMs) CTAs, one per SM, each walking a static list of work items (query
 * block, head, batch); the math, the producer and the epilogue are the one-block kernel's
 * (fa_fwd_sm90_producer.cuh, fa_fwd_sm90_consumer.cuh). What a CTA saves per item: the launch and
 * barrier setup, and the first kStages K/V tiles of its next item load while its consumers run
 * the epilogue (the next Q must wait for it: O is staged in the Q buffer).
 *
 * Schedule: item t = blockIdx.x + k gridDim.x (k = 0, 1, ...) of n = M heads batch, M query blocks.
 * t / (heads batch) counts the query blocks from the last one (longest first: under a causal mask
 * the last query blocks see the most key tiles, so the long items start in the first wave and the
 * short ones fill the tail); inside one query block t % heads runs fastest, so the CTAs of one
 * wave read the K/V heads of one batch together (GQA: the heads of a group share them in L2).
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

/* (query block, head, batch) of schedule item t (header comment); n_blk query blocks. */
static __device__ __forceinline__ void fa_sm90_persist_item(int t, int n_blk, int heads, int batch, int *m_block,
                                                            int *h, int *b)
{
    const int bh = heads * batch;
    const int q = t / bh, r = t - q * bh;
    *m_block = n_blk - 1 - q;
    *b = r / heads;
    *h = r - *b * heads;
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
    const int n_items = n_blk * a.heads * a.batch;  /* < 2^31: fa_fwd_sm90.cu */

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
        uint32_t phase = 0, k_par = 0;  /* k_par: item count & 1 */
        for (int t = blockIdx.x; t < n_items; t += gridDim.x, k_par ^= 1u) {
            int m_block, h, b;
            fa_sm90_persist_item(t, n_blk, a.heads, a.batch, &m_block, &h, &b);
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
    uint32_t phase = 0, k_par = 0;
    for (int t = blockIdx.x; t < n_items; t += gridDim.x, k_par ^= 1u) {
        int m_block, h, b;
        fa_sm90_persist_item(t, n_blk, a.heads, a.batch, &m_block, &h, &b);
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
