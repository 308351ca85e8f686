/* fa_fwd_sm90_block.cuh - geometry of one block of the Hopper forward (fa_fwd_sm90_kernel.cuh):
 * the shared-memory layout and its addresses, the hardware named barriers and the ping-pong turns
 * of the consumer warpgroups, the register split, where a key tile starts, and the zeroing of
 * borrowed V rows (varlen).
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
#ifndef FA_FWD_SM90_BLOCK_CUH
#define FA_FWD_SM90_BLOCK_CUH

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

/* Shared-memory (shared::cta) addresses of a block: the tiles of the dynamic part and the
 * mbarriers (8 bytes each; K/V: one per ring slot, 8 bytes apart). */
typedef struct fa_sm90_layout {
    uint32_t q;           /* Q tile [D/64][Br][64], then O staging in the epilogue */
    uint32_t k, v;        /* K and V rings [kStages][D/64][Bc][64] */
    uint32_t bar_q;       /* Q full (the TMA bytes landed) */
    uint32_t bar_kfull, bar_vfull;    /* + 8 stage: the slot's TMA bytes landed */
    uint32_t bar_kempty, bar_vempty;  /* + 8 stage: every consumer warp is done reading the slot */
} fa_sm90_layout;

/* One work item: the query rows [m0, m_end) of (sequence b, query head h) and the key tiles
 * their band sees, t_hi - n_tiles .. t_hi - 1 (visited right to left). */
typedef struct fa_sm90_item {
    int b, h;
    int m0, m_end;       /* sequence-local query rows */
    int q_begin, k_begin;  /* first rows of the sequence in the varlen maps (0 when dense) */
    fa_mask_t mk;        /* sq, sk and the window of this sequence */
    int t_hi, n_tiles;
} fa_sm90_item;

/* A consumer thread's place in an item (wgmma accumulator layout, fa_fwd_sm90_math.cuh). */
typedef struct fa_sm90_rows {
    int wg;            /* consumer warpgroup 0 .. kWG-1: rows m0 + 64 wg .. + 63 */
    int wq;            /* warp within the warpgroup: 16 rows each */
    int lane, g, t4;   /* lane = 4 g + t4 */
    int row0;          /* sequence-local row of s[0], o[0] */
    int wg_r0, wg_r1;  /* the warpgroup's first row; wg_r1 for the tile-is-full test */
} fa_sm90_rows;

#if FA_SM90_DEVICE

/* The item of query block m_block of (b, h): 0 when the block starts past the sequence's sq
 * (varlen: a shorter sequence; nothing to do, not even the epilogue). */
template <int Br, int Bc, bool kVarlen>
static __device__ __forceinline__ int fa_sm90_item_get(const fa_fwd_args &a, int m_block, int h, int b,
                                                       fa_sm90_item *it)
{
    /* this sequence's extent (fa_seq.cuh); q_begin, k_begin: first rows of the varlen maps */
    const fa_seq seq = fa_seq_get(kVarlen, a.cu_seqlens_q, a.cu_seqlens_k, a.seqlen_q, a.seqlen_k, b);
    const int sq = seq.sq, sk = seq.sk;
    it->b = b;
    it->h = h;
    it->q_begin = (int)seq.q_row0;
    it->k_begin = (int)seq.k_row0;
    it->m0 = m_block * Br;
    if (it->m0 >= sq) return 0;
    it->m_end = min(it->m0 + Br, sq);
    it->mk.sq = sq;
    it->mk.sk = sk;
    it->mk.left = a.window_left;
    it->mk.right = a.window_right;
    /* key tiles with a key seen by some row of [m0, m_end) (fa_seq.cuh) */
    int n_lo, n_hi;  /* int: fa_seq.cuh */
    fa_band_keys(it->m0, it->m_end - 1, sq, sk, it->mk.left, it->mk.right, &n_lo, &n_hi);
    const fa_band n_band = fa_band_tiles(n_lo, n_hi, Bc);
    it->t_hi = n_band.first + n_band.count;
    it->n_tiles = n_band.count;
    return 1;
}

/* The addresses of the layout above: dyn = the dynamic shared memory, bars = 1 + 4 kStages
 * mbarriers in the order Q full, K full, V full, K empty, V empty. */
template <int D, int Br, int Bc, int kStages>
static __device__ __forceinline__ fa_sm90_layout fa_sm90_smem_carve(const void *dyn, const void *bars)
{
    fa_sm90_layout sm;
    sm.q = (fa_smem_u32(dyn) + 1023u) & ~1023u;  /* swizzle atoms: 1024-aligned */
    sm.k = sm.q + (uint32_t)Br * D * 2;
    sm.v = sm.k + kStages * ((uint32_t)Bc * D * 2);
    sm.bar_q = fa_smem_u32(bars);
    sm.bar_kfull = sm.bar_q + 8u;
    sm.bar_vfull = sm.bar_kfull + 8u * kStages;
    sm.bar_kempty = sm.bar_vfull + 8u * kStages;
    sm.bar_vempty = sm.bar_kempty + 8u * kStages;
    return sm;
}

/* Thread 0's initialization of the layout's mbarriers (and with kQEmpty bar_qempty, the persistent
 * kernel's Q-empty barrier), fenced for the async proxy; the caller's __syncthreads publishes
 * them. Arrival counts: Q full and K/V full 1 (the producer's arrive.expect_tx), K/V empty and Q
 * empty 4 kWG (one arrival per consumer warp). */
template <int kWG, int kStages, bool kQEmpty>
static __device__ __forceinline__ void thread_init_fwd_bars(const fa_sm90_layout &sm, uint32_t bar_qempty)
{
    fa_mbar_init(sm.bar_q, 1);
    if (kQEmpty) fa_mbar_init(bar_qempty, 4 * kWG); /* one arrival per consumer warp and item */
#pragma unroll
    for (int st = 0; st < kStages; ++st) {
        fa_mbar_init(sm.bar_kfull + 8u * st, 1);       /* the producer's arrive.expect_tx */
        fa_mbar_init(sm.bar_vfull + 8u * st, 1);
        fa_mbar_init(sm.bar_kempty + 8u * st, 4 * kWG); /* one arrival per consumer warp */
        fa_mbar_init(sm.bar_vempty + 8u * st, 4 * kWG);
    }
    fa_mbar_init_fence();
}

/* The fa_sm90_rows of consumer thread tid (warps 4 ..) for the item rows [m0, ...) of a sequence
 * of sq query rows (the one-block kernel spells the same out inline, in its original order: a
 * call here changed its SASS). */
static __device__ __forceinline__ fa_sm90_rows fa_sm90_rows_get(int tid, int m0, int sq)
{
    fa_sm90_rows r;
    const int warp = tid >> 5;
    r.lane = tid & 31;
    r.wg = warp / 4 - 1;
    r.wq = warp & 3;
    r.g = r.lane >> 2;
    r.t4 = r.lane & 3;
    r.row0 = m0 + 64 * r.wg + 16 * r.wq + r.g;
    r.wg_r0 = m0 + 64 * r.wg;
    r.wg_r1 = max(min(r.wg_r0 + 64, sq), r.wg_r0 + 1);
    return r;
}

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

#endif /* FA_SM90_DEVICE */

#endif /* FA_FWD_SM90_BLOCK_CUH */
