/* fa_bwd_sm90_pipe_layout.cuh - the shapes of the pipelined Hopper backward
 * (fa_bwd_sm90_pipe_kernel.cuh, protocol overview there): thread roles and register budgets, the
 * named-barrier ids, the dQ modes and dQ split, the kernel parameter (tensor maps), the tile
 * config of a head-dim bucket (fa_tuning.h FA_KERNEL_BWD_SM90_PIPE rows) and where each tile lives
 * in shared memory.
 *
 * Shared memory (dynamic, 1024-aligned, 128-byte swizzle, [D/64][rows][64] column blocks as
 * TMA writes them): K [Bc][D], V [Bc][D], Q [kStages][Br][D], dO [kStages][Br][D],
 * dS^T [2][Bc][Br] (d = 256: then P^T [2][Bc][Br]); kDq = TMA adds the dQ staging buffers
 * [2 warpgroups][N / 32][64 rows][32 fp32] (N = 64: 16 KB each; N = 32: 8 KB; warpgroup_stage_dq),
 * and so does kDq = ORDERED.
 * Static: LSE*log2e and D per slot, the mbarriers (also the image marker).
 */
#ifndef FA_BWD_SM90_PIPE_LAYOUT_CUH
#define FA_BWD_SM90_PIPE_LAYOUT_CUH

#include <cuda.h> /* CUtensorMap (type only; the host fetches the encoder at run time) */
#include "fa_bwd_sm90_tile.cuh" /* FA_BWD_SM90_BC, fa_tuning_find */

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
    FA_BWD_SM90_DQ_TMA = 2,  /* staged in smem, TMA tensor reduce-add by the dQ-writer warp */
    FA_BWD_SM90_DQ_ORDERED = 3 /* deterministic: as TMA, each query tile's adds in decreasing key
                                  block order (turn counters, fa_bwd_sm90_pipe_dq_order.cuh) */
};
/* the dQ-writer warp and the smem staging: TMA and ORDERED */
#define FA_BWD_SM90_DQ_STAGED(kDq) ((kDq) == FA_BWD_SM90_DQ_TMA || (kDq) == FA_BWD_SM90_DQ_ORDERED)
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
    static constexpr uint32_t kBoxBytes = FA_BWD_SM90_DQ_BOX_BYTES;
    static constexpr uint32_t kStageBytes = (uint32_t)kBoxes * kBoxBytes;
    static constexpr bool kTransposed = false; /* the tile is dQ (warpgroup_stage_dq) */
    /* first query / dim of warpgroup wg's tile within the block */
    static constexpr int row0(int wg) { return Br == 128 ? 64 * wg : 0; }
    static constexpr int col0(int wg) { return Br == 128 ? 0 : kN * wg; }
};
/* Br = 80 (d = 128, fa_bwd_sm90_pipe80.cuh): 80 queries are no wgmma M, so each warpgroup computes
 * dQ^T, 64 dims (64 wg..) x all Br queries (kN = Br: the wgmma N), staged as 2 boxes {32 dims, Br
 * rows} of a map encoded with Br-row boxes (fa_bwd_sm90_pipe80_dq.cuh). */
template <>
struct fa_bwd_pipe_dq_split<128, 80> {
    static constexpr int kN = 80;
    static constexpr int kBoxes = 2;
    static constexpr uint32_t kBoxBytes = 32u * 80u * 4u;
    static constexpr uint32_t kStageBytes = (uint32_t)kBoxes * kBoxBytes;
    static constexpr bool kTransposed = true; /* the tile is dQ^T (warpgroup_stage_dqt) */
    static constexpr int row0(int) { return 0; }
    static constexpr int col0(int wg) { return 64 * wg; }
};

/* The kernel's single parameter (passed __grid_constant__: TMA reads the maps from parameter
 * space). Dense 4-d maps of b16 elements, 128-byte swizzle, box 64 x rows:
 *   tm_q, tm_do: (d, sq, h, b), box 64 x Br;   tm_k, tm_v: (d, sk, hk, b), box 64 x Bc;
 * and for kDq = TMA / ORDERED only, tm_dqacc: dq_accum (b * sq, h, d) fp32 row-major viewed as the 4-d
 * (d, sq, h, b), box 32 x 64 (32 fp32 = the 128-byte swizzle span), 128-byte swizzle. */
typedef struct fa_bwd_sm90_params {
    CUtensorMap tm_q;
    CUtensorMap tm_do;
    CUtensorMap tm_k;
    CUtensorMap tm_v;
    CUtensorMap tm_dqacc;
    fa_bwd_args a;
} fa_bwd_sm90_params;

/* The tile shape of bucket D (fa_tuning.h, FA_KERNEL_BWD_SM90_PIPE rows; kKernel =
 * FA_KERNEL_BWD_SM90_PIPE128: the Br = 128 row at d = 64, fa_bwd_sm90_pipe128.cuh;
 * FA_KERNEL_BWD_SM90_PIPE80: the Br = 80 row at d = 128, fa_bwd_sm90_pipe80.cuh, staged dQ only). */
template <int D, int kKernel = FA_KERNEL_BWD_SM90_PIPE>
struct fa_bwd_sm90_pipe_cfg {
    static constexpr fa_tuning_row kRow = fa_tuning_find(kKernel, 90, D);
    static constexpr int Br = kRow.br;
    static constexpr int Bc = kRow.bc;
    static constexpr int kStages = kRow.stages;
    /* d = 256 splits the head dims over the consumer warpgroups instead of the keys
     * (fa_bwd_sm90_pipe_dsplit.cuh): both see the same Bc = 64 keys, each owns 128 dims of dK, dV */
    static constexpr bool kDimSplit = D == 256;
    static_assert(kRow.warps * 32 == FA_BWD_SM90_PIPE_THREADS, "the pipelined sm90 backward has 12 warps");
    static_assert(kDimSplit ? Bc == 64 && Br == 64 : Bc == FA_BWD_SM90_BC,
                  "Bc = 128 (a warpgroup per 64 keys), or at d = 256 Bc = Br = 64 (a warpgroup per 128 dims)");
    /* Br is this row's own (the helpers of fa_bwd_sm90_tile.cuh take it as a template argument):
     * S^T, dP^T are wgmma N = Br, Br / 2 accumulators each per thread (d = 256: N = Br / 2 each) */
    static_assert(Br == 64 || Br == 128 || (kKernel == FA_KERNEL_BWD_SM90_PIPE80 && D == 128 && Br == 80),
                  "S^T / dP^T tiles of 64 keys x 64 or 128 queries per warpgroup (x 80: the Br = 80 kernel)");
    /* every tile and box 1024-aligned (128-byte swizzle atoms): Br x 128 bytes is */
    static_assert((Br * 128) % 1024 == 0, "Br must be a multiple of 8");
    static_assert(kStages >= 2, "the ring needs 2 slots to load during a tile");
    /* K, V, kStages slots of Q and dO, 2 dS^T buffers (d = 256: and 2 P^T buffers); + 1024 for
     * aligning the base */
    static constexpr size_t kSmemBytes = 2 * (size_t)Bc * D * 2 + 2 * (size_t)kStages * Br * D * 2 +
                                         (kDimSplit ? 2 : 1) * 2 * (size_t)Bc * Br * 2 + 1024;
    /* kDq = TMA: + one dQ staging buffer per consumer warpgroup (right after dS^T: 1024-aligned,
     * and so is the second: whole 8 KB boxes); d = 256 has no TMA-dQ instance (2 x 32 KB more
     * would not fit: its kDq = TMA calls run red.add, fa_bwd_sm90_pipe_launch) */
    static constexpr size_t dq_stage_bytes()
    {
        if constexpr (kDimSplit) return 0;
        else return 2 * (size_t)fa_bwd_pipe_dq_split<D, Br>::kStageBytes;
    }
    static constexpr size_t kSmemBytesTma = kSmemBytes + dq_stage_bytes();
    /* the kernel's static shared memory: LSE, D per slot, 1 + 3 kStages mbarriers */
    static constexpr size_t kStaticBytes = 2 * (size_t)kStages * Br * 4 + (1 + 3 * (size_t)kStages) * 8;
    /* sm_90: at most 227 KB of shared memory per block, dynamic + static */
    static_assert(kSmemBytesTma + kStaticBytes <= 227 * 1024, "the TMA-dQ instance does not fit in shared memory");
    static constexpr size_t smem_bytes(int dq) { return FA_BWD_SM90_DQ_STAGED(dq) ? kSmemBytesTma : kSmemBytes; }
};

#if FA_SM90_DEVICE

/* Where the kernel's shared memory is (shared-window addresses). */
typedef struct fa_bwd_pipe_smem {
    uint32_t k, v, q, dout, ds, dq;    /* tiles: K, V, Q[kStages], dO[kStages], dS^T[2], dQ staging[2] */
    uint32_t p; /* d = 256: P^T[2] [Bc][Br], where the staging would be (that bucket has none) */
    uint32_t kv_full, q_full, do_full, empty;  /* mbarriers; slot s at + 8 s */
} fa_bwd_pipe_smem;

/* The layout above from the tile base (1024-aligned) and the barrier base. Rebuilt where it is
 * used rather than carried through the consumer loop: as ten live registers it made the d = 64
 * consumer spill at 240 registers (nvcc 13.0). */
template <int D, int Br, int kStages>
static __device__ __forceinline__ fa_bwd_pipe_smem fa_bwd_pipe_smem_at(uint32_t base, uint32_t bars)
{
    constexpr int Bc = fa_bwd_sm90_pipe_cfg<D>::Bc;
    constexpr uint32_t kKVBytes = Bc * D * 2, kQBytes = Br * D * 2;
    fa_bwd_pipe_smem sm;
    sm.k = base;
    sm.v = base + kKVBytes;
    sm.q = base + 2 * kKVBytes;
    sm.dout = sm.q + kStages * kQBytes;
    sm.ds = sm.dout + kStages * kQBytes;
    sm.dq = sm.ds + 2u * (Bc * Br * 2); /* only allocated (and used) when kDq = TMA / ORDERED */
    sm.p = sm.dq;                       /* only allocated (and used) at d = 256 */
    sm.kv_full = bars;
    sm.q_full = bars + 8u;
    sm.do_full = sm.q_full + 8u * kStages;
    sm.empty = sm.do_full + 8u * kStages;
    return sm;
}

/* Thread 0 initializes the ring's mbarriers (protocol: fa_bwd_sm90_pipe_kernel.cuh); every thread
 * of the CTA calls this once, before the role split. */
template <int kStages>
static __device__ __forceinline__ void block_bwd_pipe_init_barriers(const fa_bwd_pipe_smem &sm)
{
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
}

#endif /* FA_SM90_DEVICE */

#endif /* FA_BWD_SM90_PIPE_LAYOUT_CUH */
