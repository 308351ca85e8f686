/* fa_fwd_sm90_kernel.cuh - FlashAttention forward on Hopper tensor cores (wgmma, sm_90a) with
 * TMA loads and a producer/consumer split, FA3-style (simplified). No dropout or probabilities
 * (fa_fwd_sm90.cu sends those to the sm80 kernels); softcap and ALiBi in the kFeat variant.
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
 * out through the warpgroup's own Q rows of shared memory as 16-byte coalesced stores.
 *
 * Shared memory (1024-byte aligned, 128-byte swizzle, fa_wgmma.cuh): Q [D/64][Br][64],
 * K and V [kStages][D/64][Bc][64] each; the mbarriers are static shared memory (that static
 * block is also how the host recognises the real sm_90a image, see fa_fwd_sm90_has_image).
 *
 * Varlen ("end-aligned" last tile): the K/V tensor maps do not know where the key rows end, so a
 * tile that would cross the end of its sequence is loaded as the Bc rows that END at the
 * sequence end instead (rows sk - Bc .. sk - 1; rows before the sequence start come from the
 * previous sequence or, before row 0, as TMA zeros). The consumers mask the keys below the
 * tile's nominal start (they belong to the next tile to the left) and the band as usual, so the
 * borrowed rows get P = 0 exactly. P = 0 is not enough for V: 0 * Inf = NaN, so a previous
 * sequence's Inf/NaN would leak into this one's O. The consumers therefore zero the borrowed V
 * rows in shared memory once they land (block_zero_slot_rows), before any P V reads them; so a
 * sequence's output never depends on its neighbours' values (the sm80 kernel zero-fills its
 * loads instead). Dense tensors need none of this: rows past sk are outside the 4-d tensor map
 * and arrive as zeros.
 */
#ifndef FA_FWD_SM90_KERNEL_CUH
#define FA_FWD_SM90_KERNEL_CUH

#include <math.h>
#include <stdint.h>
#include "fa_fwd_sm90_args.cuh"
#include "fa_wgmma.cuh"
#include "fa_sm90_sync.cuh"
#include "fa_mma.cuh"      /* fa_smem_u32, fa_pack_f32x2 */
#include "fa_mask.cuh"     /* fa_mask_t, fa_mask_row_range, fa_mask_tile_is_full */
#include "fa_seq.cuh"      /* fa_seq_get, fa_band_keys, fa_band_tiles */
#include "fa_softmax.cuh"  /* fa_exp2, quad_allreduce_max / _sum */

/* Named barrier of the consumer warpgroups after zeroing borrowed V rows (0 is __syncthreads,
 * 1 .. kWG are the epilogue's per-warpgroup barriers, 5 .. 4 + kWG the ping-pong turns). */
#define FA_SM90_BAR_ZERO_V 4

/* Ping-pong of the consumer warpgroups (fa_tuning.h pingpong): warpgroup w issues its GEMMs of
 * a tile only after warpgroup w - 1 (cyclically) issued its own, so that while one warpgroup's
 * GEMMs run on the tensor cores the others do their softmax on the CUDA cores. One hardware
 * barrier per warpgroup, FA_SM90_BAR_SCHED + w, of 256 threads: the 128 of warpgroup w that wait
 * there and the 128 of the warpgroup before it that pass the turn. Warpgroup 0 takes the first
 * turn (tile 0) without waiting and closes by waiting on its barrier once more, which takes the
 * last pass of warpgroup kWG - 1: every phase of every barrier is one pass (128 bar.arrive) plus
 * one wait (128 bar.sync) of two different warpgroups, and every barrier ends with as many passes
 * as waits. A warpgroup passes at most once before the next one waits (its next turn needs that
 * wait done), so no phase ever completes from one side's arrivals alone. No warp arrives and
 * then syncs on the same barrier within one phase (the PTX ISA warns against a warp's extra
 * barrier instruction after bar.arrive before the barrier resets: it counts once more). */
#define FA_SM90_BAR_SCHED 5 /* .. 4 + kWG */

/* Registers per thread after setmaxnreg: the producer warpgroup keeps the minimum (one thread
 * issues TMA, the rest exit), the consumers take the rest of the 64K register file:
 * 2 consumer warpgroups: 24 + 2 * 240 = 504 <= 512 per "thread slot" (65536 / 128);
 * 3 consumer warpgroups: 24 + 3 * 160 = 504. */
template <int kWG>
struct fa_sm90_regs {
    static constexpr int kProducer = 24;
    static constexpr int kConsumer = kWG == 2 ? 240 : 160;
};

/* Shared-memory bytes of a configuration (dynamic part), + 1024 for aligning the base. */
static inline size_t fa_fwd_sm90_smem_bytes(int d, int br, int bc, int stages)
{
    return (size_t)(br + 2 * stages * bc) * (size_t)d * 2u + 1024u;
}

#if FA_SM90_DEVICE

template <bool kOn>
static __device__ __forceinline__ void warpgroup_sched_wait(int wg)
{
    /* why: the previous warpgroup has issued this round's GEMMs (see above) */
    if (kOn) fa_named_barrier_sync<256>(FA_SM90_BAR_SCHED + wg);
}

template <bool kOn, int kWG>
static __device__ __forceinline__ void warpgroup_sched_pass(int wg)
{
    if (kOn) fa_named_barrier_arrive<256>(FA_SM90_BAR_SCHED + (wg + 1) % kWG);
}

/* First key (sequence-local) held in shared-memory row 0 of key tile t: t * Bc, except the
 * end-aligned last tile of a varlen sequence (see the header comment). */
template <int Bc>
static __device__ __forceinline__ int fa_sm90_tile_row0(int t, int sk, int varlen)
{
    const int n0 = t * Bc;
    return (varlen && n0 + Bc > sk) ? sk - Bc : n0;
}

/* S = Q K^T for this warpgroup's 64 rows: D/16 wgmma k-steps. dq / dk: descriptors of the
 * warpgroup's Q rows in column block 0 and of the K slot's column block 0. */
template <bool kBf16, int D, int Br, int Bc>
static __device__ __forceinline__ void warpgroup_gemm_qk(float (&s)[Bc / 2], uint64_t dq, uint64_t dk)
{
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
        const uint32_t in_block = (uint32_t)(kk % 4) * 32u;  /* 16 elements = 32 bytes */
        const uint64_t da = fa_wgmma_desc_add(dq, (uint32_t)(kk / 4) * (uint32_t)(Br * 128) + in_block);
        const uint64_t db = fa_wgmma_desc_add(dk, (uint32_t)(kk / 4) * (uint32_t)(Bc * 128) + in_block);
        fa_wgmma_ss<Bc, kBf16>(s, da, db, kk > 0 ? 1 : 0);
    }
}

/* O += P V: Bc/16 wgmma k-steps of 16 keys (16 rows of 128 bytes = 2048 bytes of the V slot). */
template <bool kBf16, int D, int Bc>
static __device__ __forceinline__ void warpgroup_gemm_pv(float (&o)[D / 2], const uint32_t (&pa)[Bc / 16][4],
                                                        uint64_t dv)
{
#pragma unroll
    for (int kk = 0; kk < Bc / 16; ++kk)
        fa_wgmma_rs_tb<D, kBf16>(o, pa[kk], fa_wgmma_desc_add(dv, (uint32_t)kk * 2048u), 1);
}

/* Sets invisible scores of a wgmma accumulator tile to -inf. s[4 nb + 2 half + e] is row
 * row0 + 8 half, key col0 + 8 nb + e (row0 = this thread's first row, col0 = key of its first
 * column). Keys below key_min are invisible too (the end-aligned varlen tile). */
template <int kNB>
static __device__ __forceinline__ void thread_mask_tile_sm90(float (&s)[kNB * 4], const fa_mask_t mk, int row0,
                                                            int col0, int key_min)
{
#pragma unroll
    for (int half = 0; half < 2; ++half) {
        int lo, hi;
        fa_mask_row_range(mk, row0 + 8 * half, &lo, &hi);
        /* bounds relative to col0, so the column offsets 8 nb + e are immediates (absolute keys
         * would be 2 kNB loop-invariant registers, which the compiler hoists and keeps live) */
        const int lo_rel = max(lo, key_min) - col0, hi_rel = hi - col0;
#pragma unroll
        for (int nb = 0; nb < kNB; ++nb)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                const int rel = 8 * nb + e;
                if (rel < lo_rel || rel > hi_rel) s[4 * nb + 2 * half + e] = -INFINITY;
            }
    }
}

/* The scores of key tile t as the softmax takes them: kFeat with softcap turns raw q.k into log2
 * units first (softcap log2(e) tanh(x scale / softcap), fa_softmax.cuh's "x" convention with
 * mul = 1), without softcap they stay q.k units (mul = scale log2(e)); minus the ALiBi bias
 * slope |i + sk - sq - j| in those units (the kernel passes slope log2(e) or slope / scale); then the
 * mask, where the tile straddles the band edge or the sequence end. Row i = row0 + 8 half, key
 * j = c0 + 2 t4 + 8 nb + e, c0 the tile's first key row (fa_sm90_tile_row0). The plain variant
 * is the mask alone, instruction for instruction the code before kFeat existed. */
template <bool kFeat, int kNB, int Bc>
static __device__ __forceinline__ void thread_scores_sm90(float (&s)[kNB * 4], const fa_fwd_args &a, const fa_mask_t mk,
                                                         float slope, int row0, int t4, int wg_r0, int wg_r1, int t,
                                                         int varlen)
{
    const int c0 = fa_sm90_tile_row0<Bc>(t, mk.sk, varlen);
    if (kFeat) {
        const bool cap = a.softcap > 0.f;
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            /* i + sk - sq - j at nb = e = 0, converted once: the other columns subtract the
             * immediate 8 nb + e in fp32 (exact below 2^24) instead of an integer subtract and
             * an int-to-float conversion per score */
            const float rel = (float)(row0 + 8 * half + mk.sk - mk.sq - c0 - 2 * t4);
#pragma unroll
            for (int nb = 0; nb < kNB; ++nb)
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    float x = s[4 * nb + 2 * half + e];
                    if (cap) x = a.softcap_log2 * fa_tanh(x * a.scale_div_softcap);
                    s[4 * nb + 2 * half + e] = fmaf(-slope, fabsf(rel - (float)(8 * nb + e)), x);
                }
        }
    }
    if (!fa_mask_tile_is_full(mk, wg_r0, wg_r1, t * Bc, t * Bc + Bc))
        thread_mask_tile_sm90<kNB>(s, mk, row0, c0 + 2 * t4, t * Bc);
}

/* The online-softmax step of fa_softmax.cuh, split in two for the intra-warpgroup overlap: this
 * part needs only S (the O rescale by alpha happens after the P V product in flight is done).
 *   m_new = max(m, rowmax(s)); alpha = exp2((m - m_new) mul); l = l alpha + rowsum(p);
 *   s <- p = exp2(s mul - m_new mul)
 * Rows with only -inf so far keep m = -inf and p = alpha = 0 (the exponent offset is 0 then). */
template <int kNB>
static __device__ __forceinline__ void thread_softmax_sm90(float (&s)[kNB * 4], float (&m)[2], float (&l)[2],
                                                          float (&alpha)[2], float mul)
{
#pragma unroll
    for (int half = 0; half < 2; ++half) {
        float mx = m[half];
#pragma unroll
        for (int nb = 0; nb < kNB; ++nb) mx = fmaxf(mx, fmaxf(s[4 * nb + 2 * half], s[4 * nb + 2 * half + 1]));
        mx = quad_allreduce_max(mx);
        const float m_scaled = mx == -INFINITY ? 0.f : mx * mul;
        alpha[half] = fa_exp2(m[half] * mul - m_scaled);
        m[half] = mx;
        float sum = 0.f;
#pragma unroll
        for (int nb = 0; nb < kNB; ++nb)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                const float p = fa_exp2(fmaf(s[4 * nb + 2 * half + e], mul, -m_scaled));
                s[4 * nb + 2 * half + e] = p;
                sum += p;
            }
        l[half] = fmaf(l[half], alpha[half], sum);
    }
}

template <int kDB>
static __device__ __forceinline__ void thread_rescale_o(float (&o)[kDB * 4], const float (&alpha)[2])
{
#pragma unroll
    for (int db = 0; db < kDB; ++db) {
        o[4 * db + 0] *= alpha[0];
        o[4 * db + 1] *= alpha[0];
        o[4 * db + 2] *= alpha[1];
        o[4 * db + 3] *= alpha[1];
    }
}

/* P (fp32 accumulator layout) -> wgmma A fragments of Bc/16 k-steps (fa_pack_c_to_a order). */
template <bool kBf16, int Bc>
static __device__ __forceinline__ void thread_pack_p(uint32_t (&pa)[Bc / 16][4], const float (&s)[Bc / 2])
{
#pragma unroll
    for (int kk = 0; kk < Bc / 16; ++kk) {
        pa[kk][0] = fa_pack_f32x2<kBf16>(s[8 * kk + 0], s[8 * kk + 1]);
        pa[kk][1] = fa_pack_f32x2<kBf16>(s[8 * kk + 2], s[8 * kk + 3]);
        pa[kk][2] = fa_pack_f32x2<kBf16>(s[8 * kk + 4], s[8 * kk + 5]);
        pa[kk][3] = fa_pack_f32x2<kBf16>(s[8 * kk + 6], s[8 * kk + 7]);
    }
}

/* Zeroes rows [0, n_rows) of a K/V slot ([D/64][Bc][64] column blocks of 128-byte rows: whole
 * rows, so the swizzle inside a row does not matter), 16 bytes per store, spread over the
 * kThreads consumer threads (ctid = 0 .. kThreads-1). */
template <int D, int Bc, int kThreads>
static __device__ __forceinline__ void block_zero_slot_rows(uint32_t slot, int n_rows, int ctid)
{
    const int per_block = n_rows * 8;  /* 16-byte chunks of one column block */
    for (int i = ctid; i < (D / 64) * per_block; i += kThreads) {
        const uint32_t addr = slot + (uint32_t)(i / per_block) * (uint32_t)(Bc * 128) + (uint32_t)(i % per_block) * 16u;
        asm volatile("st.shared.v4.b32 [%0], {%1, %1, %1, %1};\n" ::"r"(addr), "r"(0u) : "memory");
    }
}

/* The producer thread fills slot `stage` of the K or V ring (slots of [D/64][Bc][64] from ring,
 * barriers 8 bytes apart from bar_empty / bar_full) with the Bc key rows from `row`
 * (sequence-local; varlen rows are offset by k_begin in the 3-d map) of kv head kv_h: waits until
 * every consumer warp released the slot (the first pass finds parity 1 of a fresh barrier
 * "completed", so it does not block), announces the bytes on the full barrier, and issues one
 * TMA load per 64-column block. */
template <int D, int Bc>
static __device__ __forceinline__ void thread_fill_slot(uint32_t ring, int stage, const void *tm, uint32_t bar_empty,
                                                       uint32_t bar_full, uint32_t phase, int row, int k_begin,
                                                       int kv_h, int b, int varlen)
{
    constexpr uint32_t kSlotBytes = (uint32_t)Bc * D * 2;
    fa_mbar_wait(bar_empty + 8u * stage, phase ^ 1u);
    fa_mbar_arrive_expect_tx(bar_full + 8u * stage, kSlotBytes);
#pragma unroll
    for (int cb = 0; cb < D / 64; ++cb) {
        const uint32_t dst = ring + (uint32_t)stage * kSlotBytes + (uint32_t)cb * (Bc * 128);
        if (varlen) fa_tma_load_3d(dst, tm, bar_full + 8u * stage, cb * 64, k_begin + row, kv_h);
        else fa_tma_load_4d(dst, tm, bar_full + 8u * stage, cb * 64, row, kv_h, b);
    }
}

/* A consumer warp is done reading a slot: one arrival per warp (the slot's empty barrier
 * expects 4 kWG). Why per warp: each warp's wgmma.wait_group covers that warp's view of the
 * warpgroup's operations, so the slot is free only when all of them have waited. */
static __device__ __forceinline__ void warp_release_slot(uint32_t bar, int lane)
{
    __syncwarp();
    if (lane == 0) fa_mbar_arrive(bar);
}

#endif /* FA_SM90_DEVICE */

/* kVarlen: the sequences come from cu_seqlens (3-d tensor maps, end-aligned last tiles, borrowed V
 * rows zeroed); a compile-time flag so that the dense instances carry none of that code (as a
 * runtime test it cost the dense d = 64 kernel ~190 instructions of prologue and a different
 * schedule of its uniform datapath). The host picks the instance from prm.varlen. */
template <bool kBf16, int D, int Br, int Bc, int kStages, bool kFeat, bool kVarlen>
__global__ void __launch_bounds__((Br / 64 + 1) * 128, 1)
fa_fwd_sm90_kernel(const __grid_constant__ fa_sm90_params prm)
{
#if FA_SM90_DEVICE
    constexpr int kWG = Br / 64;            /* consumer warpgroups */
    constexpr int kCols = D / 64;           /* 64-element column blocks */
    constexpr uint32_t kQBytes = (uint32_t)Br * D * 2;
    constexpr uint32_t kKVBytes = (uint32_t)Bc * D * 2;  /* one K (or V) slot */
    constexpr int kNB = Bc / 8;             /* 8-column n-blocks of S */
    constexpr int kDB = D / 8;              /* 8-column n-blocks of O */
    static_assert(Br % 64 == 0 && (kWG == 2 || kWG == 3), "2 or 3 consumer warpgroups");
    static_assert(D % 64 == 0 && Bc % 16 == 0 && Bc <= 256, "tile shape");
    static_assert(kStages >= 2, "the ring needs 2 slots for the overlap");

    const fa_fwd_args &a = prm.a;
    const int varlen = kVarlen;  /* the helpers take it as an argument; constant-folded */

    extern __shared__ unsigned char fa_sm90_smem[];
    /* [0] Q full; then per slot: K full, V full, K empty, V empty */
    __shared__ __align__(8) uint64_t s_bars[1 + 4 * kStages];
    const uint32_t sQ = (fa_smem_u32(fa_sm90_smem) + 1023u) & ~1023u;  /* swizzle atoms: 1024-aligned */
    const uint32_t sK = sQ + kQBytes;
    const uint32_t sV = sK + kStages * kKVBytes;
    const uint32_t bar_q = fa_smem_u32(&s_bars[0]);
    const uint32_t bar_kfull = bar_q + 8u;                /* + 8 stage */
    const uint32_t bar_vfull = bar_kfull + 8u * kStages;
    const uint32_t bar_kempty = bar_vfull + 8u * kStages;
    const uint32_t bar_vempty = bar_kempty + 8u * kStages;

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

    /* this sequence's extent (fa_seq.cuh); q_begin, k_begin: first rows of the varlen maps */
    const fa_seq seq = fa_seq_get(varlen, a.cu_seqlens_q, a.cu_seqlens_k, a.seqlen_q, a.seqlen_k, b);
    const int sq = seq.sq, sk = seq.sk;
    const int q_begin = (int)seq.q_row0, k_begin = (int)seq.k_row0;
    const int m0 = m_block * Br;
    if (m0 >= sq) return;  /* uniform over the block, before any barrier exists */
    const int m_end = min(m0 + Br, sq);

    fa_mask_t mk;
    mk.sq = sq;
    mk.sk = sk;
    mk.left = a.window_left;
    mk.right = a.window_right;
    /* key tiles with a key seen by some row of [m0, m_end) (fa_seq.cuh): t_hi - n_tiles ..
     * t_hi - 1, visited right to left */
    int n_lo, n_hi;  /* int: fa_seq.cuh */
    fa_band_keys(m0, m_end - 1, sq, sk, mk.left, mk.right, &n_lo, &n_hi);
    const fa_band n_band = fa_band_tiles(n_lo, n_hi, Bc);
    const int t_hi = n_band.first + n_band.count, n_tiles = n_band.count;

    if (tid == 0) {
        fa_mbar_init(bar_q, 1);
#pragma unroll
        for (int st = 0; st < kStages; ++st) {
            fa_mbar_init(bar_kfull + 8u * st, 1);       /* the producer's arrive.expect_tx */
            fa_mbar_init(bar_vfull + 8u * st, 1);
            fa_mbar_init(bar_kempty + 8u * st, 4 * kWG); /* one arrival per consumer warp */
            fa_mbar_init(bar_vempty + 8u * st, 4 * kWG);
        }
        fa_mbar_init_fence();
    }
    /* why: the barriers must be initialized before any thread waits on them or TMA signals them */
    __syncthreads();

    if (warp < 4) {
        /* ======================= producer warpgroup ======================= */
        fa_setmaxnreg_dec<fa_sm90_regs<kWG>::kProducer>();
        if (tid != 0 || n_tiles == 0) return;
        const void *tm_q = &prm.tm_q, *tm_k = &prm.tm_k, *tm_v = &prm.tm_v;
        fa_tma_prefetch_desc(tm_q);
        fa_tma_prefetch_desc(tm_k);
        fa_tma_prefetch_desc(tm_v);
        const int kv_h = h / a.group;

        fa_mbar_arrive_expect_tx(bar_q, kQBytes);
#pragma unroll
        for (int cb = 0; cb < kCols; ++cb) {
            const uint32_t dst = sQ + (uint32_t)cb * (Br * 128);
            if (varlen) fa_tma_load_3d(dst, tm_q, bar_q, cb * 64, q_begin + m0, h);
            else fa_tma_load_4d(dst, tm_q, bar_q, cb * 64, m0, h, b);
        }

        int stage = 0;
        uint32_t phase = 0;
        for (int it = 0; it < n_tiles; ++it) {
            const int row = fa_sm90_tile_row0<Bc>(t_hi - 1 - it, sk, varlen);
            thread_fill_slot<D, Bc>(sK, stage, tm_k, bar_kempty, bar_kfull, phase, row, k_begin, kv_h, b, varlen);
            thread_fill_slot<D, Bc>(sV, stage, tm_v, bar_vempty, bar_vfull, phase, row, k_begin, kv_h, b, varlen);
            if (++stage == kStages) {
                stage = 0;
                phase ^= 1u;
            }
        }
        return;
    }

    /* ======================= consumer warpgroups ======================= */
    fa_setmaxnreg_inc<fa_sm90_regs<kWG>::kConsumer>();
    const int wg = warp / 4 - 1;     /* 0 .. kWG-1: rows m0 + 64 wg .. + 63 */
    const int wq = warp & 3;         /* warp within the warpgroup: 16 rows each */
    const int g = lane >> 2, t4 = lane & 3;
    const int row0 = m0 + 64 * wg + 16 * wq + g;  /* sequence-local row of s[0], o[0] */
    const int wg_r0 = m0 + 64 * wg;
    const int wg_r1 = max(min(wg_r0 + 64, sq), wg_r0 + 1);  /* for the tile-is-full test */
    /* plain and ALiBi alone: scores stay in q.k units (the ALiBi slope divided by the scale)
     * and exp2 folds in scale log2(e); softcap: log2 units already (tanh needs the scale first) */
    const bool cap = kFeat && a.softcap > 0.f;
    const float mul = cap ? 1.f : a.scale_log2;
    const float slope = kFeat && a.alibi_slopes != NULL
                            ? a.alibi_slopes[(int64_t)b * a.alibi_batch_stride + h] * (cap ? FA_LOG2E : 1.f / a.scale)
                            : 0.f;

    float o[D / 2];
    float s[Bc / 2];
    uint32_t pa[Bc / 16][4];
    float m_i[2] = {-INFINITY, -INFINITY}, l_i[2] = {0.f, 0.f}, alpha[2] = {0.f, 0.f};
#pragma unroll
    for (int i = 0; i < D / 2; ++i) o[i] = 0.f;
#pragma unroll
    for (int i = 0; i < Bc / 2; ++i) s[i] = 0.f;

    if (n_tiles > 0) {
        constexpr bool kPP = fa_sm90_tile<D, kFeat>::kPingPong;
        /* K-major A (Q) and B (K): SBO = 1024 (8 rows of 128 B), LBO unused; MN-major B (V):
         * SBO = 1024 (8 keys), LBO = Bc * 128 (from dims 0..63 to 64..127) */
        const uint64_t dq = fa_wgmma_desc_sw128(sQ + (uint32_t)wg * (64 * 128), 16u, 1024u);
        const uint64_t dk0 = fa_wgmma_desc_sw128(sK, 16u, 1024u);
        const uint64_t dv0 = fa_wgmma_desc_sw128(sV, (uint32_t)Bc * 128u, 1024u);
        int stage = 0;
        uint32_t phase = 0;
        int t = t_hi - 1;

        /* tile 0: S = Q K_0^T, softmax, P_0 */
        fa_mbar_wait(bar_q, 0);
        fa_mbar_wait(bar_kfull, 0);
        if (varlen && t_hi * Bc > sk) {
            /* tile 0 is the end-aligned one: its first t_hi Bc - sk rows are borrowed (header
             * comment). Zero them in its V slot (stage 0) before any P V reads it. */
            fa_mbar_wait(bar_vfull, 0);
            block_zero_slot_rows<D, Bc, kWG * 128>(sV, t_hi * Bc - sk, tid - 128);
            fa_fence_proxy_async_smem();  /* the zero stores before the wgmma (async proxy) reads */
            /* why: every consumer warpgroup's P V reads rows that the others zeroed */
            fa_named_barrier_sync<kWG * 128>(FA_SM90_BAR_ZERO_V);
        }
        if (wg != 0) warpgroup_sched_wait<kPP>(wg);  /* warpgroup 0 has the first turn */
        fa_wgmma_fence();  /* s was written by ordinary code (zeroed) */
        warpgroup_gemm_qk<kBf16, D, Br, Bc>(s, dq, dk0);
        fa_wgmma_commit();
        warpgroup_sched_pass<kPP, kWG>(wg);
        fa_wgmma_wait<0>();
        fa_reg_fence(s);
        warp_release_slot(bar_kempty, lane);
        thread_scores_sm90<kFeat, kNB, Bc>(s, a, mk, slope, row0, t4, wg_r0, wg_r1, t, varlen);
        thread_softmax_sm90<kNB>(s, m_i, l_i, alpha, mul);  /* alpha = 0: scales the zero O */
        thread_pack_p<kBf16, Bc>(pa, s);

        /* tiles 1 .. n-1. Per tile j:
         *   issue S_j = Q K_j^T;  O *= alpha_{j-1} (O is idle: P_{j-2} V_{j-2} was waited for);
         *   issue O += P_{j-1} V_{j-1};  wait for S_j only;  softmax of S_j on the CUDA cores
         *   while the tensor cores run P_{j-1} V_{j-1};  wait for it;  P_j -> pa. */
        for (int it = 1; it < n_tiles; ++it) {
            const int pstage = stage;
            const uint32_t pphase = phase;
            if (++stage == kStages) {
                stage = 0;
                phase ^= 1u;
            }
            --t;
            fa_mbar_wait(bar_kfull + 8u * stage, phase);
            warpgroup_sched_wait<kPP>(wg);
            fa_wgmma_fence();  /* why: s was read and written by ordinary instructions */
            warpgroup_gemm_qk<kBf16, D, Br, Bc>(s, dq, fa_wgmma_desc_add(dk0, (uint32_t)stage * kKVBytes));
            fa_wgmma_commit();
            thread_rescale_o<kDB>(o, alpha);
            fa_mbar_wait(bar_vfull + 8u * pstage, pphase);
            fa_wgmma_fence();  /* why: o and pa were written by ordinary instructions */
            warpgroup_gemm_pv<kBf16, D, Bc>(o, pa, fa_wgmma_desc_add(dv0, (uint32_t)pstage * kKVBytes));
            fa_wgmma_commit();
            warpgroup_sched_pass<kPP, kWG>(wg);

            fa_wgmma_wait<1>();  /* S_j done; P_{j-1} V_{j-1} may still run */
            fa_reg_fence(s);
            warp_release_slot(bar_kempty + 8u * stage, lane);
            thread_scores_sm90<kFeat, kNB, Bc>(s, a, mk, slope, row0, t4, wg_r0, wg_r1, t, varlen);
            /* Scheduling fence: the test always holds (a positive scale: fa_fwd_sm90_can_run; it
             * reads the scale, never a value the compiler can prove positive, or it would drop the
             * branch), but the branch ends a basic block. ptxas places wgmma.wait_group at the
             * earliest point of its basic block; in the same block as the softmax the wait below
             * was hoisted above all of it (seen in the SASS), which serialized the softmax with
             * P_{j-1} V_{j-1}. In a block of its own it stays after the softmax. */
            if (kFeat ? a.scale_log2 > 0.f : mul > 0.f) thread_softmax_sm90<kNB>(s, m_i, l_i, alpha, mul);

            fa_wgmma_wait<0>();  /* P_{j-1} V_{j-1} done: pa is free */
            fa_reg_fence(o);
            warp_release_slot(bar_vempty + 8u * pstage, lane);
            thread_pack_p<kBf16, Bc>(pa, s);
        }

        /* last tile's P V */
        thread_rescale_o<kDB>(o, alpha);
        fa_mbar_wait(bar_vfull + 8u * stage, phase);
        fa_wgmma_fence();
        warpgroup_gemm_pv<kBf16, D, Bc>(o, pa, fa_wgmma_desc_add(dv0, (uint32_t)stage * kKVBytes));
        fa_wgmma_commit();
        fa_wgmma_wait<0>();
        fa_reg_fence(o);
        warp_release_slot(bar_vempty + 8u * stage, lane);
        /* why: takes the last pass of warpgroup kWG - 1, so the barrier ends balanced */
        if (kPP && wg == 0) fa_named_barrier_sync<256>(FA_SM90_BAR_SCHED);
    }

    /* ---- epilogue: O /= l, LSE, O through this warpgroup's Q rows of shared memory ---- */
    float *lse_row;  /* LSE of row 0 of this (b, h) */
    uint16_t *gO = (uint16_t *)a.o + (int64_t)h * a.o_head_stride;
    if (varlen) {
        lse_row = a.lse + (int64_t)h * a.total_q + q_begin;
        gO += (int64_t)q_begin * a.o_row_stride;
    } else {
        lse_row = a.lse + ((int64_t)b * a.heads + h) * a.seqlen_q;
        gO += (int64_t)b * a.o_batch_stride;
    }
#pragma unroll
    for (int half = 0; half < 2; ++half) {
        const float sum = quad_allreduce_sum(l_i[half]);
        const float inv = sum > 0.f ? 1.f / sum : 0.f;
        const float lse = sum > 0.f ? m_i[half] * mul * FA_LN2 + logf(sum) : -INFINITY;
#pragma unroll
        for (int db = 0; db < kDB; ++db) {
            o[4 * db + 2 * half] *= inv;
            o[4 * db + 2 * half + 1] *= inv;
        }
        const int i = row0 + 8 * half;
        if (t4 == 0 && i < m_end) lse_row[i] = lse;
    }
    /* Stage O in the warpgroup's own 64 Q rows (only this warpgroup's wgmmas read them, and all of
     * those completed above). Layout: same swizzled column blocks as Q, chunk c of row r at
     * (c / 8) Br 128 + r 128 + ((c % 8) ^ (r % 8)) 16: a warp's 8 rows x 4 lanes hit 32 banks. */
    fa_fence_proxy_async_smem();  /* async-proxy reads of Q before the generic writes below */
#pragma unroll
    for (int db = 0; db < kDB; ++db)
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const int r = 64 * wg + 16 * wq + 8 * half + g;  /* block-local row */
            const uint32_t addr = sQ + (uint32_t)(db / 8) * (Br * 128) + (uint32_t)r * 128u +
                                  (uint32_t)(((db % 8) ^ (r % 8)) * 16) + 4u * (uint32_t)t4;
            const uint32_t v = fa_pack_f32x2<kBf16>(o[4 * db + 2 * half], o[4 * db + 2 * half + 1]);
            asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(addr), "r"(v) : "memory");
        }
    /* why: each thread stores 16-byte chunks that other warps of the warpgroup wrote */
    fa_named_barrier_sync<128>(1 + wg);
    const int wtid = tid - 128 * (wg + 1);
#pragma unroll
    for (int it = 0; it < 64 * kDB / 128; ++it) {
        const int idx = wtid + 128 * it;
        const int r = idx / kDB;         /* row within the warpgroup */
        const int c = idx % kDB;         /* 16-byte chunk */
        const int i = wg_r0 + r;
        if (i < m_end && c * 8 < a.head_dim) {
            const int rb = 64 * wg + r;
            const uint32_t addr = sQ + (uint32_t)(c / 8) * (Br * 128) + (uint32_t)rb * 128u +
                                  (uint32_t)(((c % 8) ^ (rb % 8)) * 16);
            uint4 v;
            asm volatile("ld.shared.v4.b32 {%0, %1, %2, %3}, [%4];\n"
                         : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                         : "r"(addr)
                         : "memory");
            *(uint4 *)(gO + (int64_t)i * a.o_row_stride + c * 8) = v;
        }
    }
#else
    /* Not the sm_90a pass: never launched (the host checks for the real image first). */
    __trap();
#endif
}

typedef void (*fa_fwd_sm90_kernel_fn)(const fa_sm90_params);

/* Host: launches the dense or varlen instance of (dtype, bucket D, kFeat) with its tile. */
template <bool kBf16, int D, bool kFeat>
static fa_status fa_fwd_sm90_launch_variant(const fa_sm90_params &prm, cudaStream_t stream)
{
    typedef fa_sm90_tile<D, kFeat> T;
    static_assert(T::kThreads == (T::kBr / 64 + 1) * 128, "warps column: (Br / 64 + 1) warpgroups");
    const size_t smem = fa_fwd_sm90_smem_bytes(D, T::kBr, T::kBc, T::kStages);
    const fa_fwd_sm90_kernel_fn kern = prm.varlen ? fa_fwd_sm90_kernel<kBf16, D, T::kBr, T::kBc, T::kStages, kFeat, true>
                                                  : fa_fwd_sm90_kernel<kBf16, D, T::kBr, T::kBc, T::kStages, kFeat, false>;
    if (cudaFuncSetAttribute((const void *)kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem) !=
        cudaSuccess)
        return FA_ERR_CUDA;
    const dim3 grid((unsigned)((prm.a.seqlen_q + T::kBr - 1) / T::kBr), (unsigned)prm.a.heads,
                    (unsigned)prm.a.batch);
    kern<<<grid, T::kThreads, smem, stream>>>(prm);
    return cudaGetLastError() == cudaSuccess ? FA_OK : FA_ERR_CUDA;
}

/* Host: the kernel of (dtype, bucket D): softcap / ALiBi take the kFeat variant (whose Q tensor
 * map the caller encoded with that variant's Br: fa_sm90_tile<D, true>). */
template <int kDtype, int D>
static fa_status fa_fwd_sm90_launch_dtype(const fa_sm90_params &prm, cudaStream_t stream)
{
    constexpr bool kBf16 = kDtype == FA_BF16;
    const bool feat = prm.a.softcap > 0.f || prm.a.alibi_slopes != NULL;
    return feat ? fa_fwd_sm90_launch_variant<kBf16, D, true>(prm, stream)
                : fa_fwd_sm90_launch_variant<kBf16, D, false>(prm, stream);
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
            fa_fwd_sm90_kernel<kDtype == FA_BF16, D, T::kBr, T::kBc, T::kStages, false, false>;  /* others: same image */
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
