/* fa_bwd_sm90_pipe_kernel.cuh - the Hopper backward with a producer warpgroup (steps 1 and 2 of
 * the staged sm90 backward plan of issue #13): the math of fa_bwd_sm90_kernel.cuh (S^T, dP^T
 * recomputed per query block, dV/dK accumulated in registers), but the loads come from a TMA
 * producer through an mbarrier ring instead of every thread's cp.async; dQ (kDq) either
 * by fp32 red.add from the consumers (FA_BWD_SM90_DQ_RED) or (step 2, FA_BWD_SM90_DQ_TMA) staged
 * in shared memory and added into dq_accum by TMA tensor reduces that a dQ-writer warp issues.
 * Selected on the host by FLASH_ATTN_C_SM90_BWD_PIPE=1 (red.add dQ) or =2 (TMA dQ)
 * (fa_bwd_sm90.cu), dense tensors only (varlen would need the borrowed-row zeroing of the
 * forward: plan step 7). Measured against fa_bwd_sm90_kernel (H100 run 37, bf16, 16k tokens),
 * red.add dQ: d = 128 1.02-1.10x its TFLOP/s (364 vs 330 at 16k non-causal); the native harness
 * passes every case with it, under memcheck, racecheck and synccheck. TMA dQ (H100 run 41):
 * 1.13-1.32x red.add at d = 128, the default there for atomic dQ. Br comes from this kernel's own
 * tuning row (fa_bwd_sm90_pipe_cfg), not fa_bwd_sm90_kernel's: d = 64 runs Br = 64 (with Br = 128
 * both atomic-dQ instances spilled at the 240-register cap: red.add 48 bytes, TMA dQ 92, nvcc
 * 13.0); d = 64 runs here only when asked (FLASH_ATTN_C_SM90_BWD_PIPE=1/2): its TMA-dQ instance ran
 * 1.09-1.21x fa_bwd_sm90_kernel and passed the harness's d <= 64 cases (H100 run 50), but no
 * compute-sanitizer run has covered it yet.
 *
 * Grid (key block n, kv head hk, batch b) as the old kernel; 384 threads = 3 warpgroups:
 *   warpgroup 0, the producer: setmaxnreg down to 24; warps 2-3 exit (and warp 1 unless kDq = TMA);
 *     warp 0 loads K_j, V_j once (lane 0, TMA, own mbarrier), then walks the (head of the group,
 *     query block) sequence: Q_i + LSE_i into the Q ring, dO_i + D_i into the dO ring (kStages
 *     slots each, one "empty" mbarrier per slot shared by both). Tiles by TMA (lane 0); LSE*log2e
 *     and D by plain loads of all 32 lanes into static shared memory (each lane arrives on the
 *     slot's full barrier after its stores, so the consumers' wait covers them).
 *     Warp 1 (kDq = TMA only), the dQ writer: walks the same sequence and reduce-adds each consumer
 *     warpgroup's staged dQ tile into dq_accum (warp_write_dq).
 *   warpgroups 1, 2, the consumers: setmaxnreg up to 240; warpgroup wg = 0, 1 owns keys
 *     [j0 + 64 wg, + 64) exactly as in fa_bwd_sm90_kernel.cuh (same products, through its
 *     helpers, at this kernel's Br). dQ = dS K of the Br x d block is one 64-query x N-dim tile
 *     per warpgroup over all Bc keys (fa_bwd_pipe_dq_split): Br = 64 splits the dims, N = d / 2
 *     (d = 128: dims 64 wg.., N = 64; d = 64: dims 32 wg.., N = 32); Br = 128 splits the
 *     queries (queries 64 wg.., N = d = 64: the split of fa_bwd_sm90_kernel at d = 64).
 * Ring protocol per slot s (parity = pass over the ring & 1):
 *   q_full[s]  (32 arrivals + TMA bytes): producer lanes arrive after their LSE stores, lane 0
 *              announced the Q bytes with expect_tx before issuing; consumers wait, then S^T.
 *   do_full[s] (32 arrivals + TMA bytes): the same for dO and D; consumers wait before dP^T.
 *   empty[s]   (256 arrivals): each consumer thread arrives once its wgmmas reading Q/dO of the
 *              slot completed and its LSE/D reads are done; the producer waits before refilling.
 *   kv_full    (1 arrival + K, V bytes): consumers wait once before the first tile.
 * dS^T (for dQ) is double buffered by iteration parity, so its reuse needs no barrier: writing
 * buffer it & 1 happens after the dS barrier of iteration it - 1, which both warpgroups reach only
 * after their dQ product of iteration it - 2 (the last reader of that buffer) completed.
 * Named barriers (hardware ids; 0 is __syncthreads, used once before the role split):
 *   1 FA_BWD_SM90_PIPE_BAR_DS (256: both consumer warpgroups, bar.sync): dS^T of both written.
 *   kDq = TMA, per consumer warpgroup w = 0, 1, 160 threads (its 128 + the writer warp's 32):
 *   2 + w FA_BWD_SM90_PIPE_BAR_DQ_FULL: the 128 consumers bar.arrive after their fragment stores
 *         into staging buffer w + fence.proxy.async; the writer bar.syncs, then issues the reduce.
 *   4 + w FA_BWD_SM90_PIPE_BAR_DQ_EMPTY: the writer bar.arrives once the TMA has read buffer w
 *         (cp.async.bulk.wait_group.read 0); the consumers bar.sync before storing the next tile.
 *         Tile 0 skips that sync (the buffer starts free) and the writer skips the arrival after
 *         the last tile, so both sides count n_iter - 1 generations. Generations cannot overlap:
 *         the writer's arrival for tile it needs the consumers' FULL arrival of tile it, which
 *         follows their EMPTY sync of tile it (and symmetrically for FULL). Before exiting, the
 *         writer waits for all its reduces to complete (cp.async.bulk.wait_group 0).
 *   (The consumers name ids 2 + wg, 4 + wg from a register, so ptxas reports all 16 barriers in
 *   use; with one CTA per SM that costs nothing.)
 * Consumer order per tile, kDq = TMA (FA3's, overlapping dQ with dK): S^T, dP^T, P^T, dS^T ->
 * smem; issue dV; DS barrier; issue dQ; wait <= 1 (dV done); issue dK; wait <= 1 (dQ done); dQ
 * fragments -> staging (after the EMPTY sync), arrive FULL; wait 0 (dK done); release the slot.
 * kDq = RED / NONE keep step 1's order (dV and dK issued together, then dQ, waited at once).
 *
 * Shared memory (dynamic, 1024-aligned, 128-byte swizzle, [D/64][rows][64] column blocks as
 * TMA writes them): K [Bc][D], V [Bc][D], Q [kStages][Br][D], dO [kStages][Br][D],
 * dS^T [2][Bc][Br]; kDq = TMA adds the dQ staging buffers [2 warpgroups][N / 32][64 rows][32 fp32]
 * (N = 64: 16 KB each; N = 32: 8 KB; warpgroup_stage_dq). Static: LSE*log2e and D per slot, the
 * mbarriers (also the image marker).
 * Out of range: TMA zero-fills rows past sq / sk and dims past d (dense 4-d maps); LSE = +inf
 * there, so P = 0. The TMA dQ reduce skips rows past sq and dims past d (outside its 4-d map).
 */
#ifndef FA_BWD_SM90_PIPE_KERNEL_CUH
#define FA_BWD_SM90_PIPE_KERNEL_CUH

#include <cuda.h> /* CUtensorMap (type only; the host fetches the encoder at run time) */
#include "fa_bwd_sm90_kernel.cuh"  /* fa_sw128_off, fa_red_add_f32x2, warpgroup_gemm_dq, FA_BWD_SM90_BC */

#define FA_BWD_SM90_PIPE_THREADS 384
/* setmaxnreg budget of 3 warpgroups (the forward's, fa_sm90_regs<2>): 24 + 2 x 240 = 504 <= 512
 * registers per thread slot (65536 / 128). The producer warp needs few (a loop and addresses). */
#define FA_BWD_SM90_PIPE_REGS_PRODUCER 24
#define FA_BWD_SM90_PIPE_REGS_CONSUMER 240
/* setmaxnreg.inc waits until the pool holds the registers: the producer's release must cover the
 * consumers' growth from the launch allocation (65536 / 384 threads, in steps of 8), or they hang */
static_assert(128 * ((65536 / FA_BWD_SM90_PIPE_THREADS) / 8 * 8 - FA_BWD_SM90_PIPE_REGS_PRODUCER) >=
                  256 * (FA_BWD_SM90_PIPE_REGS_CONSUMER - (65536 / FA_BWD_SM90_PIPE_THREADS) / 8 * 8),
              "setmaxnreg: the producer warpgroup frees fewer registers than the consumers take");
/* named barrier of the 256 consumer threads: dS^T of both warpgroups written (0 = __syncthreads) */
#define FA_BWD_SM90_PIPE_BAR_DS 1
/* kDq = FA_BWD_SM90_DQ_TMA: per consumer warpgroup w (ids + w), 160 threads = its 128 + the
 * writer warp's 32 (protocol in the header comment): staged dQ tile ready / staging buffer free */
#define FA_BWD_SM90_PIPE_BAR_DQ_FULL 2  /* ids 2, 3 */
#define FA_BWD_SM90_PIPE_BAR_DQ_EMPTY 4 /* ids 4, 5 */
#define FA_BWD_SM90_PIPE_DQ_BAR_THREADS 160

/* How an instance adds dQ = dS K into dq_accum (template argument kDq). */
enum fa_bwd_sm90_dq_mode {
    FA_BWD_SM90_DQ_NONE = 0, /* deterministic: dK, dV only (the ordered dQ pass follows) */
    FA_BWD_SM90_DQ_RED = 1,  /* every consumer thread: red.global.add.v2.f32 of its fragments */
    FA_BWD_SM90_DQ_TMA = 2   /* staged in smem, TMA tensor reduce-add by the dQ-writer warp */
};
/* one TMA box of the staged dQ tile (kDq = TMA): 32 dims (the 128-byte swizzle span) x 64 rows, fp32 */
#define FA_BWD_SM90_DQ_BOX_BYTES (32 * 64 * 4)

/* How dQ = dS K of a Br x D query block splits over the two consumer warpgroups: one tile of 64
 * queries (the wgmma M) x kN dims each, over all Bc keys. Br = 128 splits the queries (warpgroup
 * wg: queries 64 wg.., all kN = D dims), Br = 64 the dims (dims kN wg.., kN = D / 2). kN / 2 fp32
 * accumulators per thread; kDq = TMA stages the tile as kN / 32 boxes. */
template <int D, int Br>
struct fa_bwd_pipe_dq_split {
    static constexpr int kN = Br * D / 128;
    static_assert((Br == 64 || Br == 128) && (kN == 32 || kN == 64),
                  "dQ tiles: 64 queries x 32 or 64 dims (fa_wgmma_bwd.cuh shapes, whole TMA boxes)");
    static constexpr int kBoxes = kN / 32;
    static constexpr uint32_t kStageBytes = (uint32_t)kBoxes * FA_BWD_SM90_DQ_BOX_BYTES;
    /* first query / dim of warpgroup wg's tile within the block */
    static constexpr int row0(int wg) { return Br == 128 ? 64 * wg : 0; }
    static constexpr int col0(int wg) { return Br == 128 ? 0 : kN * wg; }
};

/* The kernel's single parameter (passed __grid_constant__: TMA reads the maps from parameter
 * space). Dense 4-d maps of b16 elements, 128-byte swizzle, box 64 x rows:
 *   tm_q, tm_do: (d, sq, h, b), box 64 x Br;   tm_k, tm_v: (d, sk, hk, b), box 64 x Bc;
 * and for kDq = TMA only, tm_dqacc: dq_accum (b * sq, h, d) fp32 row-major viewed as the 4-d
 * (d, sq, h, b), box 32 x 64 (32 fp32 = the 128-byte swizzle span), 128-byte swizzle. */
typedef struct fa_bwd_sm90_params {
    CUtensorMap tm_q;
    CUtensorMap tm_do;
    CUtensorMap tm_k;
    CUtensorMap tm_v;
    CUtensorMap tm_dqacc;
    fa_bwd_args a;
} fa_bwd_sm90_params;

/* The tile shape of bucket D (fa_tuning.h, FA_KERNEL_BWD_SM90_PIPE rows). */
template <int D>
struct fa_bwd_sm90_pipe_cfg {
    static constexpr fa_tuning_row kRow = fa_tuning_find(FA_KERNEL_BWD_SM90_PIPE, 90, D);
    static constexpr int Br = kRow.br;
    static constexpr int kStages = kRow.stages;
    static_assert(kRow.bc == FA_BWD_SM90_BC && kRow.warps * 32 == FA_BWD_SM90_PIPE_THREADS,
                  "the pipelined sm90 backward has Bc = 128 and 12 warps");
    /* Br is this row's own (the helpers of fa_bwd_sm90_kernel.cuh take it as a template argument):
     * S^T, dP^T are wgmma N = Br, Br / 2 accumulators each per thread */
    static_assert(Br == 64 || Br == 128, "S^T / dP^T tiles of 64 keys x 64 or 128 queries per warpgroup");
    static_assert(kStages >= 2, "the ring needs 2 slots to load during a tile");
    /* K, V, kStages slots of Q and dO, 2 dS^T buffers; + 1024 for aligning the base */
    static constexpr size_t kSmemBytes = 2 * (size_t)FA_BWD_SM90_BC * D * 2 + 2 * (size_t)kStages * Br * D * 2 +
                                         2 * (size_t)FA_BWD_SM90_BC * Br * 2 + 1024;
    /* kDq = TMA: + one dQ staging buffer per consumer warpgroup (right after dS^T: 1024-aligned,
     * and so is the second: whole 8 KB boxes) */
    static constexpr size_t kSmemBytesTma = kSmemBytes + 2 * (size_t)fa_bwd_pipe_dq_split<D, Br>::kStageBytes;
    /* the kernel's static shared memory: LSE, D per slot, 1 + 3 kStages mbarriers */
    static constexpr size_t kStaticBytes = 2 * (size_t)kStages * Br * 4 + (1 + 3 * (size_t)kStages) * 8;
    /* sm_90: at most 227 KB of shared memory per block, dynamic + static */
    static_assert(kSmemBytesTma + kStaticBytes <= 227 * 1024, "the TMA-dQ instance does not fit in shared memory");
    static constexpr size_t smem_bytes(int dq) { return dq == FA_BWD_SM90_DQ_TMA ? kSmemBytesTma : kSmemBytes; }
};

#if FA_SM90_DEVICE

/* Where the kernel's shared memory is (shared-window addresses). */
typedef struct fa_bwd_pipe_smem {
    uint32_t k, v, q, dout, ds, dq;    /* tiles: K, V, Q[kStages], dO[kStages], dS^T[2], dQ staging[2] */
    uint32_t kv_full, q_full, do_full, empty;  /* mbarriers; slot s at + 8 s */
} fa_bwd_pipe_smem;

/* A consumer thread is done with a slot: its wgmmas reading the slot's Q/dO completed and its
 * LSE/D reads are done; the empty barrier expects all 256 consumer threads. Why every thread and
 * not one lane per warp after __syncwarp: that form is ordered too (bar.warp.sync, then lane 0's
 * release), but compute-sanitizer racecheck does not follow it and reported each LSE/D read
 * against the producer's next store into the slot; with every thread arriving: 0 hazards at the
 * same speed (H100 run 37). */
static __device__ __forceinline__ void thread_release_bwd_slot(uint32_t bar)
{
    fa_mbar_arrive(bar);
}

/* The layout above from the tile base (1024-aligned) and the barrier base. Rebuilt where it is
 * used rather than carried through the consumer loop: as ten live registers it made the d = 64
 * consumer spill at 240 registers (nvcc 13.0). */
template <int D, int Br, int kStages>
static __device__ __forceinline__ fa_bwd_pipe_smem fa_bwd_pipe_smem_at(uint32_t base, uint32_t bars)
{
    constexpr uint32_t kKVBytes = FA_BWD_SM90_BC * D * 2, kQBytes = Br * D * 2;
    fa_bwd_pipe_smem sm;
    sm.k = base;
    sm.v = base + kKVBytes;
    sm.q = base + 2 * kKVBytes;
    sm.dout = sm.q + kStages * kQBytes;
    sm.ds = sm.dout + kStages * kQBytes;
    sm.dq = sm.ds + 2u * (FA_BWD_SM90_BC * Br * 2); /* only allocated (and used) when kDq = TMA */
    sm.kv_full = bars;
    sm.q_full = bars + 8u;
    sm.do_full = sm.q_full + 8u * kStages;
    sm.empty = sm.do_full + 8u * kStages;
    return sm;
}

/* Producer warp: issues every load of the CTA. n_iter > 0 (the caller returns before otherwise,
 * so no TMA is in flight when the CTA could exit). lse_s, dsum_s: [kStages][Br] static shared. */
template <int D, int Br, int kStages>
static __device__ __forceinline__ void warp_produce(const fa_bwd_sm90_params &prm, const fa_bwd_pipe_smem &sm,
                                                    const fa_seq &seq, int b, int hk, int j0, int mb_lo,
                                                    int n_mb, int n_iter, float (*lse_s)[Br], float (*dsum_s)[Br])
{
    constexpr uint32_t kKVBytes = FA_BWD_SM90_BC * D * 2, kQBytes = Br * D * 2;
    const fa_bwd_args &a = prm.a;
    const int lane = threadIdx.x % 32, group = a.heads / a.heads_k;
    if (lane == 0) {
        fa_tma_prefetch_desc(&prm.tm_q);
        fa_tma_prefetch_desc(&prm.tm_do);
        fa_mbar_arrive_expect_tx(sm.kv_full, 2 * kKVBytes);
#pragma unroll
        for (int cb = 0; cb < D / 64; ++cb) {
            const uint32_t off = (uint32_t)cb * (FA_BWD_SM90_BC * 128);
            fa_tma_load_4d(sm.k + off, &prm.tm_k, sm.kv_full, cb * 64, j0, hk, b);
            fa_tma_load_4d(sm.v + off, &prm.tm_v, sm.kv_full, cb * 64, j0, hk, b);
        }
    }
    int stage = 0;
    uint32_t phase = 0;
    for (int it = 0; it < n_iter; ++it) {
        const int h = hk * group + it / n_mb;
        const int i0 = (mb_lo + it % n_mb) * Br;
        /* why: all 256 consumer threads released this slot (their wgmmas on its Q/dO completed, their
         * LSE/D reads done); a fresh barrier passes parity 1 at once (first pass over the ring) */
        fa_mbar_wait(sm.empty + 8u * stage, phase ^ 1u);
        if (lane == 0) {
            /* bytes before the loads, and before this lane's own arrival below, so the phase
             * cannot complete without them */
            fa_mbar_expect_tx(sm.q_full + 8u * stage, kQBytes);
            fa_mbar_expect_tx(sm.do_full + 8u * stage, kQBytes);
#pragma unroll
            for (int cb = 0; cb < D / 64; ++cb) {
                const uint32_t off = (uint32_t)stage * kQBytes + (uint32_t)cb * (Br * 128);
                fa_tma_load_4d(sm.q + off, &prm.tm_q, sm.q_full + 8u * stage, cb * 64, i0, h, b);
                fa_tma_load_4d(sm.dout + off, &prm.tm_do, sm.do_full + 8u * stage, cb * 64, i0, h, b);
            }
        }
        const int64_t li = fa_bwd_lse_base(a, seq, b, h) + i0;
#pragma unroll
        for (int r = lane; r < Br; r += 32) {
            const float lse = i0 + r < seq.sq ? a.lse[li + r] : -INFINITY;
            /* -inf (row sees no key, or padding): +inf makes P = exp2(s - inf) = 0 */
            lse_s[stage][r] = lse == -INFINITY ? INFINITY : lse * 1.4426950408889634f;
        }
        /* why: this lane's LSE stores are released to the consumers that wait on q_full */
        fa_mbar_arrive(sm.q_full + 8u * stage);
#pragma unroll
        for (int r = lane; r < Br; r += 32) dsum_s[stage][r] = i0 + r < seq.sq ? a.dpsum[li + r] : 0.f;
        /* why: the same for D and do_full */
        fa_mbar_arrive(sm.do_full + 8u * stage);
        if (++stage == kStages) {
            stage = 0;
            phase ^= 1u;
        }
    }
}

/* dQ-writer warp (warp 1 of the producer warpgroup, kDq = TMA): walks the consumers' (head,
 * query block) sequence; per tile and consumer warpgroup w, waits for w's staged 64 x N dQ tile
 * (fa_bwd_pipe_dq_split), lane 0 adds it into dq_accum with one TMA tensor reduce per 32-dim box
 * (box 32 x 64 of tm_dqacc; N / 32 of them) and, once the TMA has read the buffer, hands it back
 * to w. Rows past sq and dims past d are outside the map, so TMA drops them: nothing is added
 * outside this (b, h)'s rows, and a box that lies wholly outside is not issued. n_iter > 0.
 * sq: seqlen_q (dense). */
template <int D, int Br>
static __device__ __forceinline__ void warp_write_dq(const fa_bwd_sm90_params &prm, const fa_bwd_pipe_smem &sm,
                                                     int sq, int b, int hk, int mb_lo, int n_mb, int n_iter)
{
    using Dq = fa_bwd_pipe_dq_split<D, Br>;
    const fa_bwd_args &a = prm.a;
    const int lane = threadIdx.x % 32, group = a.heads / a.heads_k;
    if (lane == 0) fa_tma_prefetch_desc(&prm.tm_dqacc);
    for (int it = 0; it < n_iter; ++it) {
        const int h = hk * group + it / n_mb;
        const int i0 = (mb_lo + it % n_mb) * Br;
        const bool last = it + 1 == n_iter;
#pragma unroll
        for (int w = 0; w < 2; ++w) {
            /* warpgroup w's tile: its N dims of the Br = 64 queries, or its 64 of Br = 128 queries */
            const int row0 = i0 + Dq::row0(w), dim0 = Dq::col0(w);
            /* why: warpgroup w's 128 threads stored this tile's dQ fragments into staging buffer w
             * and fenced them for the async proxy (TMA) before arriving */
            fa_named_barrier_sync<FA_BWD_SM90_PIPE_DQ_BAR_THREADS>(FA_BWD_SM90_PIPE_BAR_DQ_FULL + w);
            if (lane == 0) {
                const uint32_t stg = sm.dq + (uint32_t)w * Dq::kStageBytes;
#pragma unroll
                for (int hc = 0; hc < Dq::kBoxes; ++hc)
                    if (dim0 + 32 * hc < a.head_dim && row0 < sq)
                        fa_tma_reduce_add_4d(&prm.tm_dqacc, stg + (uint32_t)(hc * FA_BWD_SM90_DQ_BOX_BYTES), dim0 + 32 * hc,
                                             row0, h, b);
                fa_bulk_commit();
                /* the buffer is free once read (the adds may still be on their way to L2) */
                if (!last) fa_bulk_wait_read<0>();
            }
            if (!last) {
                __syncwarp(); /* lane 0's wait before the warp's arrival */
                /* why: the TMA has read staging buffer w: warpgroup w may store its next tile
                 * there (it bar.syncs on this before its stores). Not after the last tile, where
                 * the consumers do not wait: both sides count n_iter - 1 generations. */
                fa_named_barrier_arrive<FA_BWD_SM90_PIPE_DQ_BAR_THREADS>(FA_BWD_SM90_PIPE_BAR_DQ_EMPTY + w);
            }
        }
    }
    /* every reduce has read its source and landed in dq_accum before the CTA (and its shared
     * memory) goes away; the convert kernel reads dq_accum after this kernel */
    if (lane == 0) fa_bulk_wait<0>();
}

/* First half of a consumer tile: S^T, dP^T, P^T, dS^T, packed as the A fragments pa (P^T) and
 * dsa (dS^T) of the dV / dK products, and with kStoreDs dS^T into sds ([Bc][Br] swizzled, this
 * iteration's buffer) for dQ. The math and the fragment maps of fa_bwd_sm90_kernel's loop body;
 * only the waits differ (mbarriers of the slot instead of cp.async groups + __syncthreads).
 * lse_s, dsum_s: the slot's [Br] rows. Leaves the slot's Q / dO in use (dV, dK read them). */
template <bool kBf16, int D, int Br, bool kStoreDs>
static __device__ __forceinline__ void warpgroup_tile_pds(const fa_bwd_args &a, const fa_seq &seq,
                                                          const fa_bwd_pipe_smem &sm, int stage, uint32_t phase,
                                                          uint32_t sds, int i0, int j0, const float *lse_s,
                                                          const float *dsum_s, uint32_t (&pa)[Br / 16][4],
                                                          uint32_t (&dsa)[Br / 16][4])
{
    constexpr int Bc = FA_BWD_SM90_BC;
    constexpr uint32_t kQBytes = Br * D * 2;
    const int tid = threadIdx.x - 128, wg = tid / 128, wq = (tid / 32) % 4, lane = tid % 32;
    const int g = lane / 4, t = lane % 4;
    const int sq = seq.sq, sk = seq.sk, off = sk - sq;
    const int key_base = j0 + 64 * wg + 16 * wq + g;
    const uint32_t q_st = sm.q + (uint32_t)stage * kQBytes, do_st = sm.dout + (uint32_t)stage * kQBytes;
    const uint64_t dK_kmaj = fa_wgmma_desc_sw128(sm.k + (uint32_t)wg * (64 * 128), 16u, 1024u);
    const uint64_t dV_kmaj = fa_wgmma_desc_sw128(sm.v + (uint32_t)wg * (64 * 128), 16u, 1024u);

    float s[Br / 2], dp[Br / 2];
    /* why: Q_i (TMA bytes) and LSE_i (the producer lanes' stores) of this slot have landed */
    fa_mbar_wait(sm.q_full + 8u * stage, phase);
    fa_wgmma_fence();
    warpgroup_gemm_kq_t<kBf16, D, Br>(s, dK_kmaj, q_st);
    fa_wgmma_commit();
    /* why: dO_i and D_i of this slot have landed (separate barrier: S^T starts before dO is in) */
    fa_mbar_wait(sm.do_full + 8u * stage, phase);
    fa_wgmma_fence();  /* dp is an accumulator of the group below (ptxas injected it otherwise: C7519) */
    warpgroup_gemm_kq_t<kBf16, D, Br>(dp, dV_kmaj, do_st);
    fa_wgmma_commit();

    /* edge tile? keys past sk, or the band boundary crosses [i0, i0+Br) x [j0, j0+Bc) */
    const bool need_mask = j0 + Bc > sk || (a.window_right >= 0 && j0 + Bc - 1 > i0 + off + a.window_right) ||
                           (a.window_left >= 0 && j0 < i0 + Br - 1 + off - a.window_left);
    fa_wgmma_wait<1>(); /* S^T ready, dP^T may still run */
    fa_reg_fence(s);
    thread_probs_t<Br>(s, a, lse_s, need_mask, key_base, i0, sk, off, t);
    fa_wgmma_wait<0>();
    fa_reg_fence(dp);
    /* queries past sq: Q, dO rows zero-filled by TMA, LSE = +inf, D = 0, so P = exp2(-inf) = 0 and
     * dS = 0 * (0 - 0) = 0 exactly: their dQ rows are true zeros (the TMA reduce clips them anyway) */
    thread_ds_t<Br>(dp, s, dsum_s, t);

#pragma unroll
    for (int kk = 0; kk < Br / 16; ++kk) {
        fa_pack_c_to_a<kBf16>(pa[kk], &s[8 * kk], &s[8 * kk + 4]);
        fa_pack_c_to_a<kBf16>(dsa[kk], &dp[8 * kk], &dp[8 * kk + 4]);
    }
    if (kStoreDs) {
        /* dS^T rows = keys 64 wg + 16 wq + g + 8 (q & 1), query pair 2t of n-block 2 kk + (q >> 1) */
#pragma unroll
        for (int kk = 0; kk < Br / 16; ++kk)
#pragma unroll
            for (int q = 0; q < 4; ++q) {
                const int r = 64 * wg + 16 * wq + g + 8 * (q & 1);
                const int c = 8 * (2 * kk + (q >> 1)) + 2 * t;
                asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(sds + fa_sw128_off<Bc>(r, c)), "r"(dsa[kk][q]) : "memory");
            }
    }
}

/* dQ = dS K of this consumer warpgroup's 64-query x N-dim tile (fa_bwd_pipe_dq_split) over all Bc
 * keys, issued and committed: A = the 64-query column block of dS^T (sds) that holds its queries,
 * B = K from its first dim (N = 32 at dims 32..63: 64 bytes into the column block). */
template <bool kBf16, int D, int Br>
static __device__ __forceinline__ void warpgroup_issue_dq(float (&dqa)[fa_bwd_pipe_dq_split<D, Br>::kN / 2],
                                                          uint32_t sds, uint32_t sk, int wg)
{
    using Dq = fa_bwd_pipe_dq_split<D, Br>;
    constexpr int Bc = FA_BWD_SM90_BC;
    const int row0 = Dq::row0(wg), col0 = Dq::col0(wg);
    const uint32_t a = sds + (uint32_t)(row0 / 64) * (uint32_t)(Bc * 128);
    const uint32_t b = sk + (uint32_t)(col0 / 64) * (uint32_t)(Bc * 128) + (uint32_t)(col0 % 64) * 2u;
    fa_wgmma_fence();
    warpgroup_gemm_dq<kBf16, Bc / 16, Dq::kN>(dqa, a, b, 0);
    fa_wgmma_commit();
}

/* One consumer tile, kDq = NONE or RED (step 1's order): dV += P^T dO, dK += dS^T Q, and with RED
 * dQ = dS K added by red.add once everything completed. sds: this iteration's dS^T buffer. */
template <bool kBf16, int D, int Br, int kDq>
static __device__ __forceinline__ void warpgroup_bwd_tile(const fa_bwd_args &a, const fa_seq &seq,
                                                          const fa_bwd_pipe_smem &sm, float (&dk)[D / 2],
                                                          float (&dv)[D / 2], int stage, uint32_t phase, uint32_t sds,
                                                          int h, int i0, int j0, const float *lse_s,
                                                          const float *dsum_s)
{
    using Dq = fa_bwd_pipe_dq_split<D, Br>;
    constexpr uint32_t kQBytes = Br * D * 2;
    const int tid = threadIdx.x - 128, wg = tid / 128, wq = (tid / 32) % 4, lane = tid % 32;
    const int g = lane / 4, t = lane % 4;
    const int sq = seq.sq;
    const uint32_t q_st = sm.q + (uint32_t)stage * kQBytes, do_st = sm.dout + (uint32_t)stage * kQBytes;

    uint32_t pa[Br / 16][4], dsa[Br / 16][4]; /* P^T, dS^T as A fragments (16 queries per k-step) */
    warpgroup_tile_pds<kBf16, D, Br, kDq == FA_BWD_SM90_DQ_RED>(a, seq, sm, stage, phase, sds, i0, j0, lse_s, dsum_s,
                                                                pa, dsa);
    fa_wgmma_fence();
    warpgroup_gemm_dv_dk<kBf16, D, Br>(dv, dk, pa, dsa, q_st, do_st);
    fa_wgmma_commit();
    if (kDq == FA_BWD_SM90_DQ_NONE) {
        fa_wgmma_wait<0>();
        fa_reg_fence(dk);
        fa_reg_fence(dv);
        /* why: this thread's reads of the slot (dK/dV wgmmas, LSE, D) are complete: 1 of 256 arrivals */
        thread_release_bwd_slot(sm.empty + 8u * stage);
        return;
    }

    fa_fence_proxy_async_smem(); /* the dS^T stores before the dQ wgmma (async proxy) reads them */
    /* why: the dQ product reads the dS^T rows of both warpgroups */
    fa_named_barrier_sync<256>(FA_BWD_SM90_PIPE_BAR_DS);
    float dqa[Dq::kN / 2];
    warpgroup_issue_dq<kBf16, D, Br>(dqa, sds, sm.k, wg);
    fa_wgmma_wait<0>();
    fa_reg_fence(dqa);
    fa_reg_fence(dk);
    fa_reg_fence(dv);
    /* why: dK/dV/dQ wgmmas of this thread completed, LSE/D read: the slot may be refilled */
    thread_release_bwd_slot(sm.empty + 8u * stage);

    /* dq_accum (total_q, h, d) += dS K (unscaled; the convert kernel applies the scale) */
    float *acc = a.dq_accum + ((seq.q_row0 + i0) * a.heads + h) * (int64_t)a.head_dim;
    /* 32-bit offsets within the tile (fewer 64-bit address registers at the 240 cap): at most
     * Br x heads x d < 128 x 65536 x 128 = 2^30 */
    const int row_step = a.heads * a.head_dim;
#pragma unroll
    for (int jn = 0; jn < Dq::kN / 8; ++jn)
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const int m = Dq::row0(wg) + 16 * wq + g + 8 * half;
            const int col = Dq::col0(wg) + 8 * jn + 2 * t;
            if (i0 + m < sq && col < a.head_dim)
                fa_red_add_f32x2(acc + m * row_step + col, dqa[4 * jn + 2 * half], dqa[4 * jn + 2 * half + 1]);
        }
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

/* One consumer tile, kDq = TMA, FA3's order: dQ = dS K overlaps the dK product, its fragments go
 * to the warpgroup's staging buffer for the writer warp (protocol: header comment). first: tile 0
 * of the CTA (the staging buffer has never been used: no EMPTY sync). sds: this iteration's dS^T
 * buffer. */
template <bool kBf16, int D, int Br>
static __device__ __forceinline__ void warpgroup_bwd_tile_tma(const fa_bwd_args &a, const fa_seq &seq,
                                                              const fa_bwd_pipe_smem &sm, float (&dk)[D / 2],
                                                              float (&dv)[D / 2], int stage, uint32_t phase,
                                                              uint32_t sds, bool first, int i0, int j0,
                                                              const float *lse_s, const float *dsum_s)
{
    using Dq = fa_bwd_pipe_dq_split<D, Br>;
    constexpr uint32_t kQBytes = Br * D * 2;
    const int wg = (threadIdx.x - 128) / 128;
    const uint32_t q_st = sm.q + (uint32_t)stage * kQBytes, do_st = sm.dout + (uint32_t)stage * kQBytes;

    uint32_t pa[Br / 16][4], dsa[Br / 16][4]; /* P^T, dS^T as A fragments (16 queries per k-step) */
    warpgroup_tile_pds<kBf16, D, Br, true>(a, seq, sm, stage, phase, sds, i0, j0, lse_s, dsum_s, pa, dsa);
    fa_wgmma_fence();
    {
        const uint64_t dOmn = fa_wgmma_desc_sw128(do_st, (uint32_t)Br * 128u, 1024u);
#pragma unroll
        for (int kk = 0; kk < Br / 16; ++kk)
            fa_wgmma_rs_tb<D, kBf16>(dv, pa[kk], fa_wgmma_desc_add(dOmn, (uint32_t)kk * 2048u), 1);
        fa_wgmma_commit(); /* group: dV */
    }
    fa_fence_proxy_async_smem(); /* the dS^T stores before the dQ wgmma (async proxy) reads them */
    /* why: the dQ product reads the dS^T rows of both warpgroups */
    fa_named_barrier_sync<256>(FA_BWD_SM90_PIPE_BAR_DS);
    float dqa[Dq::kN / 2];
    warpgroup_issue_dq<kBf16, D, Br>(dqa, sds, sm.k, wg); /* group: dQ */
    fa_wgmma_wait<1>(); /* dV done (pa free), dQ may still run */
    fa_reg_fence(dv);
    fa_wgmma_fence();
    {
        const uint64_t dQmn = fa_wgmma_desc_sw128(q_st, (uint32_t)Br * 128u, 1024u);
#pragma unroll
        for (int kk = 0; kk < Br / 16; ++kk)
            fa_wgmma_rs_tb<D, kBf16>(dk, dsa[kk], fa_wgmma_desc_add(dQmn, (uint32_t)kk * 2048u), 1);
        fa_wgmma_commit(); /* group: dK */
    }
    fa_wgmma_wait<1>(); /* dQ done, dK may still run */
    fa_reg_fence(dqa);
    const uint32_t stg = sm.dq + (uint32_t)wg * Dq::kStageBytes;
    /* why: the writer warp's TMA has read this warpgroup's previous tile out of the buffer (tile
     * 0: never used) */
    if (!first) fa_named_barrier_sync<FA_BWD_SM90_PIPE_DQ_BAR_THREADS>(FA_BWD_SM90_PIPE_BAR_DQ_EMPTY + wg);
    warpgroup_stage_dq<Dq::kN>(dqa, stg);
    fa_fence_proxy_async_smem(); /* this thread's staging stores before the TMA (async proxy) reads them */
    /* why: 1 of the 128 arrivals the writer warp waits for before it issues the reduce */
    fa_named_barrier_arrive<FA_BWD_SM90_PIPE_DQ_BAR_THREADS>(FA_BWD_SM90_PIPE_BAR_DQ_FULL + wg);
    fa_wgmma_wait<0>(); /* dK done */
    fa_reg_fence(dk);
    /* why: this thread's reads of the slot (the dV/dK wgmmas on Q, dO; LSE, D) are complete */
    thread_release_bwd_slot(sm.empty + 8u * stage);
}

/* dK = scale sum dS^T Q, dV = sum P^T dO of this consumer thread: rows key_base + 8 half, dims
 * 8 jn + 2 t (dK, dV: (b, sk, hk, d) | (total_k, hk, d), rows past sk / dims past d not written). */
template <bool kBf16, int D>
static __device__ __forceinline__ void warpgroup_store_dkdv(const fa_bwd_args &a, const fa_seq &seq, int b, int hk,
                                                            int j0, const float (&dk)[D / 2], const float (&dv)[D / 2])
{
    const int tid = threadIdx.x - 128, wg = tid / 128, wq = (tid / 32) % 4, lane = tid % 32;
    const int g = lane / 4, t = lane % 4;
    const int key_base = j0 + 64 * wg + 16 * wq + g;
    uint16_t *dkb = a.dk + fa_bwd_base(seq, b, seq.k_row0, hk, a.dk_batch_stride, a.dk_row_stride, a.dk_head_stride);
    uint16_t *dvb = a.dv + fa_bwd_base(seq, b, seq.k_row0, hk, a.dv_batch_stride, a.dv_row_stride, a.dv_head_stride);
#pragma unroll
    for (int jn = 0; jn < D / 8; ++jn)
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const int j = key_base + 8 * half, col = 8 * jn + 2 * t;
            if (j < seq.sk && col < a.head_dim) {
                *(uint32_t *)(dkb + (int64_t)j * a.dk_row_stride + col) =
                    fa_pack_f32x2<kBf16>(dk[4 * jn + 2 * half] * a.scale, dk[4 * jn + 2 * half + 1] * a.scale);
                *(uint32_t *)(dvb + (int64_t)j * a.dv_row_stride + col) =
                    fa_pack_f32x2<kBf16>(dv[4 * jn + 2 * half], dv[4 * jn + 2 * half + 1]);
            }
        }
}

#endif /* FA_SM90_DEVICE */

/* kDq: fa_bwd_sm90_dq_mode. The dynamic shared memory is fa_bwd_sm90_pipe_cfg<D>::smem_bytes(kDq). */
template <bool kBf16, int D, int kDq>
__global__ void __launch_bounds__(FA_BWD_SM90_PIPE_THREADS, 1)
fa_bwd_sm90_pipe_kernel(const __grid_constant__ fa_bwd_sm90_params prm)
{
#if FA_SM90_DEVICE
    constexpr int Br = fa_bwd_sm90_pipe_cfg<D>::Br, kStages = fa_bwd_sm90_pipe_cfg<D>::kStages;
    constexpr int Bc = FA_BWD_SM90_BC;
    const fa_bwd_args &a = prm.a;
    extern __shared__ unsigned char fa_bwd_sm90_smem[];
    /* LSE*log2e (+inf where P must be 0) and D = rowsum(dO o O) of each slot */
    __shared__ float s_lse[kStages][Br], s_dsum[kStages][Br];
    /* kv_full; q_full[kStages]; do_full[kStages]; empty[kStages] */
    __shared__ __align__(8) uint64_t s_bars[1 + 3 * kStages];

    const int n_block = blockIdx.x, hk = blockIdx.y, b = blockIdx.z;
    const fa_seq seq = fa_seq_get(0, a.cu_seqlens_q, a.cu_seqlens_k, a.seqlen_q, a.seqlen_k, b); /* dense only */
    const int j0 = n_block * Bc;
    if (j0 >= seq.sk) return; /* uniform over the CTA, before any barrier exists */

    const uint32_t tiles = (fa_smem_u32(fa_bwd_sm90_smem) + 1023u) & ~1023u; /* swizzle atoms: 1024-aligned */
    const fa_bwd_pipe_smem sm = fa_bwd_pipe_smem_at<D, Br, kStages>(tiles, fa_smem_u32(&s_bars[0]));

    /* query blocks with a row that can see some key of [j0, j1] (fa_seq.cuh), for each query
     * head of the group */
    int64_t m_lo, m_hi;
    fa_band_queries(j0, min(j0 + Bc, seq.sk) - 1, seq.sq, seq.sk, a.window_left, a.window_right, &m_lo, &m_hi);
    const fa_band m_band = fa_band_tiles(m_lo, m_hi, Br);
    const int mb_lo = m_band.first, n_mb = m_band.count;
    const int group = a.heads / a.heads_k;
    const int n_iter = n_mb * group;

    if (threadIdx.x == 0) {
        fa_mbar_init(sm.kv_full, 1); /* the producer's arrive.expect_tx */
#pragma unroll
        for (int st = 0; st < kStages; ++st) {
            fa_mbar_init(sm.q_full + 8u * st, 32);  /* every producer lane, after its LSE stores */
            fa_mbar_init(sm.do_full + 8u * st, 32); /* every producer lane, after its D stores */
            fa_mbar_init(sm.empty + 8u * st, 256);  /* every consumer thread */
        }
        fa_mbar_init_fence();
    }
    /* why: the barriers must be initialized before any thread waits on them or TMA signals them */
    __syncthreads();

    if (threadIdx.x < 128) {
        /* ======================= producer warpgroup ======================= */
        fa_setmaxnreg_dec<FA_BWD_SM90_PIPE_REGS_PRODUCER>();
        if (n_iter == 0) return;
        if (threadIdx.x < 32)
            warp_produce<D, Br, kStages>(prm, sm, seq, b, hk, j0, mb_lo, n_mb, n_iter, s_lse, s_dsum);
        else if (kDq == FA_BWD_SM90_DQ_TMA && threadIdx.x < 64)
            warp_write_dq<D, Br>(prm, sm, seq.sq, b, hk, mb_lo, n_mb, n_iter);
        return;
    }

    /* ======================= consumer warpgroups ======================= */
    fa_setmaxnreg_inc<FA_BWD_SM90_PIPE_REGS_CONSUMER>();
    float dk[D / 2], dv[D / 2];
#pragma unroll
    for (int i = 0; i < D / 2; ++i) dk[i] = dv[i] = 0.f;
    if (n_iter > 0) {
        /* why: K_j and V_j (TMA) have landed; read by every tile */
        fa_mbar_wait(sm.kv_full, 0);
        int stage = 0;
        uint32_t phase = 0;
        for (int it = 0; it < n_iter; ++it) {
            const int h = hk * group + it / n_mb;
            const int i0 = (mb_lo + it % n_mb) * Br;
            const uint32_t sds = sm.ds + (uint32_t)(it & 1) * (uint32_t)(Bc * Br * 2);
            if (kDq == FA_BWD_SM90_DQ_TMA)
                warpgroup_bwd_tile_tma<kBf16, D, Br>(a, seq, sm, dk, dv, stage, phase, sds, it == 0, i0, j0,
                                                     s_lse[stage], s_dsum[stage]);
            else
                warpgroup_bwd_tile<kBf16, D, Br, kDq>(a, seq, sm, dk, dv, stage, phase, sds, h, i0, j0, s_lse[stage],
                                                      s_dsum[stage]);
            if (++stage == kStages) {
                stage = 0;
                phase ^= 1u;
            }
        }
    }
    warpgroup_store_dkdv<kBf16, D>(a, seq, b, hk, j0, dk, dv);
#else
    /* other gencodes: never launched (fa_bwd_sm90_supported checks for the sm_90a image) */
    __trap();
#endif
}

#endif /* FA_BWD_SM90_PIPE_KERNEL_CUH */
