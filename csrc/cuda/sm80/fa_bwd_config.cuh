/* fa_bwd_config.cuh - compile-time shapes of the backward kernels, read from the tuning table
 * (fa_tuning.h, FA_KERNEL_BWD_SM80 and
 * FA_KERNEL_BWD_DQ_SM80 rows), and their shared-memory layouts.
 *
 * The kernel bodies pick the row of the architecture they are compiled for (FA_BWD_ARCH); the
 * host picks the row of the device it launches on. Both rows of a head dim share Br, Bc and the
 * warp count (static_asserts below), so grid and block never depend on which cubin runs, and
 * the sm90 row never needs less shared memory than the sm80 one (a compute_80 PTX JIT-compiled
 * on an sm90 GPU then still gets enough).
 */
#ifndef FA_BWD_CONFIG_CUH
#define FA_BWD_CONFIG_CUH

#include "fa_tuning.h"

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define FA_BWD_ARCH 90
#else
#define FA_BWD_ARCH 80
#endif

/* dK/dV kernel (fa_bwd_dkdv.cuh). Byte offsets into dynamic shared memory:
 *   sK [Bc][d], sV [Bc][d], sQ [stages][Br][d], sdO [do_stages][Br][d], sP [Br][Bc],
 *   sdS [Br][Bc] (all b16, swizzled), sLse [stages][Br], sDp [stages][Br] (fp32), and a 32-byte
 *   slot: the int 0 that fa_opaque_zero reads, then the Philox {seed, offset} (fa_bwd_slot). */
template <int D, int kArch>
struct fa_bwd_dkdv_cfg {
    static constexpr fa_tuning_row kRow = fa_tuning_find(FA_KERNEL_BWD_SM80, kArch, D);
    static constexpr int kBr = kRow.br, kBc = kRow.bc, kWarps = kRow.warps;
    static constexpr int kThreads = 32 * kWarps;
    static constexpr int kQStages = kRow.stages;
    static constexpr int kWmS = kRow.wm_sdp;         /* warps along Br in S, dP */
    static constexpr int kWnKV = kRow.wn_dkv;        /* warps along Bc in dK, dV */
    static constexpr int kWmQ = kRow.wm_dq;          /* warps along Br in dQ */
    static constexpr int kDoStages = kRow.do_stages;
    static constexpr int kDqPasses = kRow.dq_passes; /* column slices of the dQ tile */
    static constexpr int kAddr = kRow.addr;          /* FA_BWD_ADDR_* */

    static constexpr int kOffK = 0;
    static constexpr int kOffV = kOffK + 2 * kBc * D;
    static constexpr int kOffQ = kOffV + 2 * kBc * D;
    static constexpr int kOffDo = kOffQ + 2 * kQStages * kBr * D;
    static constexpr int kOffP = kOffDo + 2 * kDoStages * kBr * D;
    static constexpr int kOffDs = kOffP + 2 * kBr * kBc;
    static constexpr int kOffLse = kOffDs + 2 * kBr * kBc;
    static constexpr int kOffDp = kOffLse + 4 * kQStages * kBr;
    static constexpr int kOffZero = kOffDp + 4 * kQStages * kBr;
    static constexpr int kSmem = kOffZero + 32;

    static_assert(kRow.br > 0, "no FA_KERNEL_BWD_SM80 tuning row for this head dim");
    static_assert(kWmS >= 1 && kWarps % kWmS == 0 && kBr % (16 * kWmS) == 0 &&
                      kBc % (16 * (kWarps / kWmS)) == 0,
                  "S/dP warp grid must tile Br x Bc in 16x16 pieces");
    static_assert(kWnKV >= 1 && kWarps % kWnKV == 0 && kBc % (16 * kWnKV) == 0 &&
                      D % (16 * (kWarps / kWnKV)) == 0,
                  "dK/dV warp grid must tile Bc x d in 16x16 pieces");
    static_assert(kWmQ >= 1 && kWarps % kWmQ == 0 && kBr % (16 * kWmQ) == 0 &&
                      D % (16 * (kWarps / kWmQ)) == 0,
                  "dQ warp grid must tile Br x d in 16x16 pieces");
    static_assert(kDqPasses >= 1 && D % (16 * kDqPasses * (kWarps / kWmQ)) == 0,
                  "dQ passes must split the warp's dQ columns into pairs of 8-column blocks");
    static_assert(kQStages == 1 || kQStages == 2, "Q stages: 1 or 2");
    static_assert(kDoStages == 1 || kDoStages == 2, "dO stages: 1 or 2");
    static_assert(kThreads >= 2 * kBr, "the LSE and D rows are loaded by one thread each");
    static_assert(D % 32 == 0 && kBc % 64 == 0, "tile widths the swizzle of fa_tile_offset covers");
};

/* Deterministic dQ kernel (fa_bwd_dq.cuh): sQ [Br][d], sdO [Br][d], sK [2][Bc][d], sV [2][Bc][d],
 * the 32-byte slot (fa_bwd_slot). */
template <int D>
struct fa_bwd_dq_cfg {
    static constexpr fa_tuning_row kRow = fa_tuning_find(FA_KERNEL_BWD_DQ_SM80, 80, D);
    static constexpr int kBr = kRow.br, kBc = kRow.bc, kWarps = kRow.warps;
    static constexpr int kThreads = 32 * kWarps;
    static constexpr int kStages = kRow.stages;

    static constexpr int kOffQ = 0;
    static constexpr int kOffDo = kOffQ + 2 * kBr * D;
    static constexpr int kOffK = kOffDo + 2 * kBr * D;
    static constexpr int kOffV = kOffK + 2 * kStages * kBc * D;
    static constexpr int kOffZero = kOffV + 2 * kStages * kBc * D;
    static constexpr int kSmem = kOffZero + 32;

    static_assert(kRow.br > 0, "no FA_KERNEL_BWD_DQ_SM80 tuning row for this head dim");
    static_assert(kBr == 16 * kWarps, "each warp owns 16 query rows");
    static_assert(kStages == 2, "the dQ kernel double-buffers K and V");
    static_assert(kBc % 16 == 0 && D % 32 == 0 && (D / 8) % 2 == 0, "tile shapes");
};

/* The host-side view: shapes of the row that runs on a device of compute capability major.minor
 * (arch = 10 major + minor). Checked to agree with what the kernel bodies assume. */
template <int D>
struct fa_bwd_dkdv_host {
    typedef fa_bwd_dkdv_cfg<D, 80> C80;
    typedef fa_bwd_dkdv_cfg<D, 90> C90;
    static_assert(C80::kBr == C90::kBr && C80::kBc == C90::kBc && C80::kWarps == C90::kWarps,
                  "sm80 and sm90 rows must share Br, Bc and warps");
    static_assert(C90::kSmem >= C80::kSmem, "the sm90 row must not need less shared memory");
    static constexpr int kBr = C80::kBr, kBc = C80::kBc, kThreads = C80::kThreads;
    static int smem_bytes(int arch) { return arch >= 90 ? C90::kSmem : C80::kSmem; }
};

#endif /* FA_BWD_CONFIG_CUH */
