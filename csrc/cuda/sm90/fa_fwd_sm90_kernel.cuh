/* fa_fwd_sm90_kernel.cuh - FlashAttention forward on Hopper tensor cores (wgmma, sm_90a) with
 * TMA loads and a producer/consumer split, FA3-style (simplified). No probabilities
 * (fa_fwd_sm90.cu sends those to the sm80 kernels); softcap and ALiBi in the kFeat variant,
 * dropout (dense only; FLASH_ATTN_C_SM90_FWD_DROPOUT=0 opts out) in its kDrop instance.
 * This file: the one-block __global__ kernel and the host launchers; the pieces:
 *   fa_fwd_sm90_block.cuh     shared-memory layout, named barriers, ping-pong turns, work item
 *   fa_fwd_sm90_math.cuh      the per-tile GEMMs, scores / mask, online softmax
 *   fa_fwd_sm90_producer.cuh  the TMA producer (Q, the K/V ring)
 *   fa_fwd_sm90_consumer.cuh  the consumer loop over key tiles
 *   fa_fwd_sm90_epilogue.cuh  the epilogue: O /= l, LSE, O by TMA stores (dense) / generic stores
 *   fa_fwd_sm90_persist.cuh   the persistent-grid kernel (one CTA per SM walks many blocks' work)
 *
 * One block = Br = 64 kWG query rows of one (sequence b, query head h); grid (query blocks, h, b),
 * the query-block index reversed so that the long rows of a causal mask start first.
 *   warpgroup 0 (warps 0-3), the producer: gives registers away (setmaxnreg), and one thread
 *     issues every TMA load: the Q tile once, then K_j and V_j into a kStages-deep ring of
 *     shared-memory slots. Each slot has a "full" mbarrier (the TMA bytes landed) and an "empty"
 *     mbarrier (every consumer warp is done reading it), for K and V separately.
 *   warpgroups 1..kWG, the consumers: each owns 64 query rows for the whole block, so the
 *     softmax needs no communication between warpgroups. Per key tile j (Bc keys):
 *       S = Q K_j^T       wgmma, A = Q and B = K_j from shared memory (both K-major)
 *       mask (only tiles that straddle the band edge or the sequence end), online softmax
 *       O += P V_j        wgmma, A = P from registers (bf16/fp16), B = V_j MN-major
 *     Intra-warpgroup overlap: S_j = Q K_j^T is issued together with O += P_{j-1} V_{j-1}; the
 *     softmax of S_j runs on the CUDA cores while the tensor cores still work on P_{j-1} V_{j-1};
 *     O is rescaled by alpha_{j-1} just before that product is issued (while Q K_j^T runs).
 *     Registers (d = 128, Bc = 128): O 64, S 64, P 32 per thread.
 * Key tiles outside the causal / window band are never loaded. Finally O /= l, LSE, and O goes
 * out through the warpgroup's own Q rows of shared memory: dense calls by TMA stores (one thread
 * per warpgroup issues them and waits for their shared-memory reads before it exits; the others
 * exit at once), varlen calls as 16-byte coalesced stores of every thread.
 *
 * Barrier protocol of a block (every phase argued where it is used):
 *   __syncthreads (0)            once, after tid 0 initialized the mbarriers
 *   bar_q (mbarrier, count 1)    the Q tile landed: phase 0, waited for with parity 0
 *   K/V full / empty (mbarriers) the ring of fa_fwd_sm90_producer.cuh
 *   named 1 + wg (128 threads)   the epilogue's O staging inside warpgroup wg (before its
 *                                TMA store / the generic stores read it)
 *   named 4 (128 kWG threads)    varlen: borrowed V rows zeroed (fa_fwd_sm90_block.cuh)
 *   named 5 + wg (256 threads)   the ping-pong turns (fa_fwd_sm90_block.cuh)
 */
#ifndef FA_FWD_SM90_KERNEL_CUH
#define FA_FWD_SM90_KERNEL_CUH

#include "fa_fwd_sm90_producer.cuh"
#include "fa_fwd_sm90_consumer.cuh"
#include "fa_fwd_sm90_persist.cuh"  /* the persistent-grid variant (dense, plain) */

/* kVarlen: the sequences come from cu_seqlens (3-d tensor maps, end-aligned last tiles, borrowed V
 * rows zeroed); a compile-time flag so that the dense instances carry none of that code (as a
 * runtime test it cost the dense d = 64 kernel ~190 instructions of prologue and a different
 * schedule of its uniform datapath). The host picks the instance from prm.varlen.
 * kDrop: dropout on P (fa_fwd_sm90_dropout.cuh), only with kFeat and dense (after kVarlen, so
 * the other instances keep their names and the kFeat argument's position); with
 * kFeatSet DROP the scores are the plain kernel's (fa_sm90_feat_set_of: dropout alone). */
template <bool kBf16, int D, int Br, int Bc, int kStages, bool kFeat, bool kVarlen, bool kDrop,
          int kFeatSet = FA_SM90_FEAT_ANY>
__global__ void __launch_bounds__((Br / 64 + 1) * 128, 1)
fa_fwd_sm90_kernel(const __grid_constant__ fa_sm90_params prm)
{
#if FA_SM90_DEVICE
    constexpr int kWG = Br / 64;            /* consumer warpgroups */
    static_assert(Br % 64 == 0 && (kWG == 2 || kWG == 3), "2 or 3 consumer warpgroups");
    static_assert(D % 64 == 0 && Bc % 16 == 0 && Bc <= 256, "tile shape");
    static_assert(kStages >= 2, "the ring needs 2 slots for the overlap");

    const fa_fwd_args &a = prm.a;

    extern __shared__ unsigned char fa_sm90_smem[];
    /* [0] Q full; then per slot: K full, V full, K empty, V empty */
    __shared__ __align__(8) uint64_t s_bars[1 + 4 * kStages];
    const fa_sm90_layout sm = fa_sm90_smem_carve<D, Br, Bc, kStages>(fa_sm90_smem, s_bars);

    const int tid = threadIdx.x;
    const int warp = tid >> 5;
    const int lane = tid & 31;
    const int m_block = (int)gridDim.x - 1 - (int)blockIdx.x;
    const int h = blockIdx.y;
    const int b = blockIdx.z;

    if (a.rng_state != NULL && blockIdx.x == 0 && blockIdx.y == 0 && blockIdx.z == 0 && tid == 0) {
        uint64_t seed, offset;
        fa_fwd_philox_seed(a, &seed, &offset);
        a.rng_state[0] = (int64_t)seed;
        a.rng_state[1] = (int64_t)offset;
    }

    fa_sm90_item it;
    /* uniform over the block, before any barrier exists */
    if (!fa_sm90_item_get<Br, Bc, kVarlen>(a, m_block, h, b, &it)) return;
    const int m0 = it.m0;

    if (tid == 0) thread_init_fwd_bars<kWG, kStages, false>(sm, 0u);
    /* why: the barriers must be initialized before any thread waits on them or TMA signals them */
    __syncthreads();

    if (warp < 4) {
        /* ======================= producer warpgroup ======================= */
        fa_setmaxnreg_dec<fa_sm90_regs<kWG>::kProducer>();
        if (tid != 0 || it.n_tiles == 0) return;
        fa_tma_prefetch_desc(&prm.tm_q);
        fa_tma_prefetch_desc(&prm.tm_k);
        fa_tma_prefetch_desc(&prm.tm_v);
        if (!kVarlen) fa_tma_prefetch_desc(&prm.tm_o); /* the epilogue's store (varlen: no map) */
        int stage = 0;
        uint32_t phase = 0;
        thread_produce_item<D, Br, Bc, kStages, kVarlen>(prm, sm, it, stage, phase);
        return;
    }

    /* ======================= consumer warpgroups ======================= */
    fa_setmaxnreg_inc<fa_sm90_regs<kWG>::kConsumer>();
    const int wg = warp / 4 - 1;     /* 0 .. kWG-1: rows m0 + 64 wg .. + 63 */
    const int wq = warp & 3;         /* warp within the warpgroup: 16 rows each */
    const int g = lane >> 2, t4 = lane & 3;
    const int row0 = m0 + 64 * wg + 16 * wq + g;  /* sequence-local row of s[0], o[0] */
    const int wg_r0 = m0 + 64 * wg;
    const int wg_r1 = max(min(wg_r0 + 64, it.mk.sq), wg_r0 + 1);  /* for the tile-is-full test */
    static_assert(kFeat || kFeatSet == FA_SM90_FEAT_ANY, "a feature set only in the kFeat variant");
    static_assert((kFeatSet == FA_SM90_FEAT_DROP) <= kDrop, "DROP: the dropout instance only");
    const float2 f = fa_sm90_score_factors<kFeat, kFeatSet>(a, b, h);
    const float mul = f.x, slope = f.y;

    const fa_sm90_rows rw = {wg, wq, lane, g, t4, row0, wg_r0, wg_r1};
    float o[D / 2];
    float m_i[2] = {-INFINITY, -INFINITY}, l_i[2] = {0.f, 0.f};
#pragma unroll
    for (int i = 0; i < D / 2; ++i) o[i] = 0.f;

    if (it.n_tiles > 0) {
        int stage = 0;
        uint32_t phase = 0;
        warpgroup_attend_item<kBf16, D, Br, Bc, kStages, kFeat, kVarlen, kDrop, kFeatSet>(o, m_i, l_i, a, sm, it, rw, mul, slope,
                                                                                tid, 0u, stage, phase);
    }

    warpgroup_store_item<kBf16, D, Br, kVarlen, kDrop>(o, m_i, l_i, a, sm.q, &prm.tm_o, b, h, it.q_begin, m0,
                                                       it.m_end, mul, tid);
    /* dense: the O TMA store reads the staging asynchronously; the block's shared memory must
     * outlive that read (the global writes need no wait: they complete before the grid does) */
    if (!kVarlen && thread_issues_o(tid)) fa_bulk_wait_read<0>();
#else
    /* Not the sm_90a pass: never launched (the host checks for the real image first). */
    __trap();
#endif
}

typedef void (*fa_fwd_sm90_kernel_fn)(const fa_sm90_params);

/* Host: kern, an instance of tile T (fa_sm90_tile), one block per query block of T::kBr rows. */
template <typename T>
static fa_status fa_fwd_sm90_launch_blocks(fa_fwd_sm90_kernel_fn kern, const fa_sm90_params &prm, cudaStream_t stream)
{
    const size_t smem = fa_fwd_sm90_smem_bytes(T::kRow.d, T::kBr, T::kBc, T::kStages);
    if (cudaFuncSetAttribute((const void *)kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem) !=
        cudaSuccess)
        return FA_ERR_CUDA;
    const dim3 grid((unsigned)((prm.a.seqlen_q + T::kBr - 1) / T::kBr), (unsigned)prm.a.heads,
                    (unsigned)prm.a.batch);
    kern<<<grid, T::kThreads, smem, stream>>>(prm);
    return cudaGetLastError() == cudaSuccess ? FA_OK : FA_ERR_CUDA;
}

/* Host: launches the dense or varlen instance of (dtype, bucket D, kFeat) with its tile, or the
 * persistent one where the host asked for it (prm.persist_ctas: plain dense calls, and softcap,
 * ALiBi or dropout alone with FLASH_ATTN_C_SM90_FWD_PERSIST_FEAT=1), either on
 * the row's feat_br tile where the host asked for that (prm.small_br: plain dense d = 64), or the wide
 * one (prm.wide: plain dense calls without a mask band, the row's wide_bc keys); kDrop:
 * the dense dropout instance (kFeatSet DROP or ANY, with that set's tile; fa_fwd_sm90.cu never
 * sends varlen dropout here). */
template <bool kBf16, int D, bool kFeat, bool kDrop = false, int kFeatSet = FA_SM90_FEAT_ANY>
static fa_status fa_fwd_sm90_launch_variant(const fa_sm90_params &prm, cudaStream_t stream)
{
    typedef fa_sm90_tile<D, kFeat, kFeatSet> T;
    static_assert(T::kThreads == (T::kBr / 64 + 1) * 128, "warps column: (Br / 64 + 1) warpgroups");
    if constexpr (!kFeat && T::kHasSmallBr)
        if (prm.small_br && !prm.varlen) {  /* the Q box was encoded with S::kBr (fa_fwd_sm90.cu) */
            typedef fa_sm90_tile<D, false, FA_SM90_FEAT_ANY, false, true> S;
            static_assert(S::kThreads == (S::kBr / 64 + 1) * 128, "warps column: (Br / 64 + 1) warpgroups");
            if constexpr (T::kPersist)
                if (prm.persist_ctas > 0) return fa_fwd_sm90_launch_persist<kBf16, D, true>(prm, stream);
            return fa_fwd_sm90_launch_blocks<S>(fa_fwd_sm90_kernel<kBf16, D, S::kBr, S::kBc, S::kStages, false, false,
                                                                   false>,
                                                prm, stream);
        }
    if constexpr (!kFeat && T::kPersist)
        if (prm.persist_ctas > 0 && !prm.varlen) return fa_fwd_sm90_launch_persist<kBf16, D>(prm, stream);
    /* one feature alone on the plain tile: the persistent grid where the host asked for it (opt-in) */
    if constexpr (kFeat && kFeatSet != FA_SM90_FEAT_ANY && T::kPersist)
        if (prm.persist_ctas > 0 && !prm.varlen)
            return fa_fwd_sm90_launch_persist<kBf16, D, false, true, kFeatSet>(prm, stream);
    if constexpr (!kFeat && T::kRow.wide_bc > 0)
        if (prm.wide && !prm.varlen) {  /* the K / V boxes were encoded with the wide Bc (fa_fwd_sm90.cu) */
            typedef fa_sm90_tile<D, false, FA_SM90_FEAT_ANY, true> W;
            return fa_fwd_sm90_launch_blocks<W>(fa_fwd_sm90_kernel<kBf16, D, W::kBr, W::kBc, W::kStages, false, false,
                                                                   false>,
                                                prm, stream);
        }
    static_assert(!kDrop || kFeat, "dropout runs in the kFeat variant");
    fa_fwd_sm90_kernel_fn kern;
    if constexpr (kDrop) {
        if (prm.varlen) return FA_ERR_UNSUPPORTED;
        kern = fa_fwd_sm90_kernel<kBf16, D, T::kBr, T::kBc, T::kStages, kFeat, false, true, kFeatSet>;
    } else {
        kern = prm.varlen ? fa_fwd_sm90_kernel<kBf16, D, T::kBr, T::kBc, T::kStages, kFeat, true, false, kFeatSet>
                          : fa_fwd_sm90_kernel<kBf16, D, T::kBr, T::kBc, T::kStages, kFeat, false, false, kFeatSet>;
    }
    return fa_fwd_sm90_launch_blocks<T>(kern, prm, stream);
}

/* Host: the kernel of (dtype, bucket D): softcap / ALiBi take the kFeat variant, dropout its kDrop
 * instances (DROP alone, ANY with a feature), whose Q tensor map the caller encoded with the Br of
 * fa_sm90_tile<D, true, set>, set from fa_sm90_feat_set_of. */
template <int kDtype, int D>
static fa_status fa_fwd_sm90_launch_dtype(const fa_sm90_params &prm, cudaStream_t stream)
{
    constexpr bool kBf16 = kDtype == FA_BF16;
    const int cap = prm.a.softcap > 0.f, alibi = prm.a.alibi_slopes != NULL;
    if (prm.a.has_dropout)
        return fa_sm90_feat_set_of(cap, alibi, 1) == FA_SM90_FEAT_DROP
                   ? fa_fwd_sm90_launch_variant<kBf16, D, true, true, FA_SM90_FEAT_DROP>(prm, stream)
                   : fa_fwd_sm90_launch_variant<kBf16, D, true, true>(prm, stream);
    /* one feature alone: the instance without the other's instructions (FA_SM90_FEAT_*) */
    switch (fa_sm90_feat_set_of(cap, alibi, 0)) {
    case FA_SM90_FEAT_ANY: return fa_fwd_sm90_launch_variant<kBf16, D, true>(prm, stream);
    case FA_SM90_FEAT_CAP:
        if constexpr (kBf16)  /* opt-in, bf16 only (fa_fwd_sm90_args.cuh) */
            if (prm.cap_slim) return fa_fwd_sm90_launch_variant<kBf16, D, true, false, FA_SM90_FEAT_CAP_SLIM>(prm, stream);
        return fa_fwd_sm90_launch_variant<kBf16, D, true, false, FA_SM90_FEAT_CAP>(prm, stream);
    case FA_SM90_FEAT_ALIBI: return fa_fwd_sm90_launch_variant<kBf16, D, true, false, FA_SM90_FEAT_ALIBI>(prm, stream);
    default: return fa_fwd_sm90_launch_variant<kBf16, D, false>(prm, stream);
    }
}

/* The real kernel declares the mbarriers as static shared memory; the stub compiled for other
 * gencodes declares none. So a non-zero static size means the sm_90a image was loaded for this
 * device. (cudaFuncGetAttributes is a host query: no synchronization.) */
template <int kDtype, int D>
static int fa_fwd_sm90_has_image_dtype(void)
{
    typedef fa_sm90_tile<D> T;
    static int cached = 0;  /* 0 unknown, 1 yes, -1 no; benign race: every writer writes the same */
    if (cached == 0) {
        cudaFuncAttributes attr;
        const fa_fwd_sm90_kernel_fn kern =
            fa_fwd_sm90_kernel<kDtype == FA_BF16, D, T::kBr, T::kBc, T::kStages, false, false, false>;  /* others: same image */
        const bool ok = cudaFuncGetAttributes(&attr, (const void *)kern) == cudaSuccess &&
                        attr.sharedSizeBytes >= (size_t)(1 + 4 * T::kStages) * 8u;
        cached = ok ? 1 : -1;
    }
    return cached == 1;
}

/* Defines the launchers of bucket D (both dtypes) in one translation unit per bucket. */
#define FA_FWD_SM90_DEFINE_HDIM(D)                                                                  \
    template <>                                                                                     \
    fa_status fa_fwd_sm90_launch_hdim<D>(const fa_sm90_params &prm, fa_dtype dtype, cudaStream_t stream) \
    {                                                                                               \
        if (dtype == FA_F16) return fa_fwd_sm90_launch_dtype<FA_F16, D>(prm, stream);               \
        if (dtype == FA_BF16) return fa_fwd_sm90_launch_dtype<FA_BF16, D>(prm, stream);             \
        return FA_ERR_DTYPE;                                                                        \
    }                                                                                               \
    template <>                                                                                     \
    int fa_fwd_sm90_has_image_hdim<D>(fa_dtype dtype)                                               \
    {                                                                                               \
        if (dtype == FA_F16) return fa_fwd_sm90_has_image_dtype<FA_F16, D>();                       \
        if (dtype == FA_BF16) return fa_fwd_sm90_has_image_dtype<FA_BF16, D>();                     \
        return 0;                                                                                   \
    }

#endif /* FA_FWD_SM90_KERNEL_CUH */
