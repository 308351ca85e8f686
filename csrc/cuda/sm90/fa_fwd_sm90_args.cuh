/* fa_fwd_sm90_args.cuh - what the host side of the sm90 forward (fa_fwd_sm90.cu) hands to the
 * per-head-dim launchers (fa_fwd_sm90_hdim<D>.cu): the kernel's single parameter block. */
#ifndef FA_FWD_SM90_ARGS_CUH
#define FA_FWD_SM90_ARGS_CUH

#include <cuda.h>          /* CUtensorMap (type only: the encoder is fetched at run time) */
#include <cuda_runtime.h>
#include "flash_attn_c.h"
#include "fa_fwd.h"
#include "fa_tuning.h"

/* Passed by value as a __grid_constant__ kernel parameter: TMA reads the tensor maps straight
 * from the parameter space.
 *   dense:  tm_q over (d, sq, h, b), tm_k / tm_v over (d, sk, hk, b), element strides from fa_params
 *   varlen: tm_q over (d, total_q, h), tm_k / tm_v over (d, FA_SM90_VARLEN_ROWS, hk): the number
 *           of key rows is not in fa_params, so the K/V maps are unbounded in rows and the kernel
 *           never reads past the end of a sequence (see fa_fwd_sm90_block.cuh, "end-aligned").
 *   tm_o:   dense only, over (d, sq, h, b) with O's strides, box 64 rows (one consumer
 *           warpgroup's rows): the epilogue's TMA store (fa_fwd_sm90_consumer.cuh). Varlen calls
 *           leave it zero and store O with generic stores (their kVarlen instances never read it).
 * Every box is 64 elements wide (128 bytes, CU_TENSOR_MAP_SWIZZLE_128B) and Br (Q), Bc (K, V) or
 * 64 (O) rows tall; elements outside the tensor (d < bucket, rows past sq / sk) arrive as zeros,
 * and the O store skips them (so its extents are the true d and sq). */
typedef struct fa_sm90_params {
    CUtensorMap tm_q;
    CUtensorMap tm_k;
    CUtensorMap tm_v;
    CUtensorMap tm_o;
    fa_fwd_args a;   /* sizes, strides (for O), LSE, windows, scale, cu_seqlens, rng_state */
    int varlen;      /* cu_seqlens given: 3-d maps; the launcher picks the kernel's kVarlen instance */
    int persist_ctas; /* > 0: the persistent kernel on that many CTAs (fa_fwd_sm90_persist.cuh); 0: one
                         block per query block. Set by fa_fwd_sm90.cu, never for varlen / kFeat */
    int persist_group; /* persistent kernel: (batch, head) pairs whose items it interleaves, 1..b h
                          (fa_fwd_sm90_route.cuh fa_sm90_persist_group_for); unused by the one-block grid */
    int persist_paired; /* persistent kernel: its items walked in (long, short) pairs (fa_fwd_sm90_route.cuh
                           fa_sm90_persist_paired); unused by the one-block grid */
    int wide;        /* the plain dense instance on the row's wide_bc keys (fa_fwd_sm90_route.cuh fa_sm90_wide: no
                        mask band, one-block grid); the K / V boxes are that Bc. Last, so the fields
                        before it keep their kernel-parameter offsets */
    int small_br;    /* the plain dense d = 64 instance on the row's feat_br tile (fa_fwd_sm90_route.cuh
                        fa_sm90_small_br, FLASH_ATTN_C_SM90_FWD_D64_BR=128; one-block or persistent
                        grid); the Q box is that Br. After wide for the same reason */
    int cap_slim;    /* softcap alone, bf16: the CAP_SLIM instance (fa_fwd_sm90_route.cuh fa_sm90_cap_slim,
                        FLASH_ATTN_C_SM90_FWD_CAP_SLIM=1). Last, as wide */
} fa_sm90_params;

#define FA_SM90_VARLEN_ROWS 0x7FFFFFFF  /* row extent of the varlen K/V maps (coordinates are s32) */

/* Which features a kFeat instance compiles in (its kFeatSet template argument). ANY tests softcap
 * and ALiBi at run time: calls with both, and dropout with either. CAP and ALIBI compile one of the
 * two alone: in ANY the other's instructions stay in the softmax loop, predicated off but issued
 * (SASS of the d = 128 bf16 instances: a key tile's loop body 890 instructions in ANY against 506
 * plain), and at d = 128 the softmax side bounds the ping-pong, so softcap alone ran at 0.78x of the
 * plain kernel and ALiBi alone at 0.79x, the same as both (0.80x; H200 run 64, before the split). */
#define FA_SM90_FEAT_ANY 0
#define FA_SM90_FEAT_CAP 1
#define FA_SM90_FEAT_ALIBI 2
/* DROP: dropout without softcap and ALiBi (the kDrop instance only): the plain kernel's scores and
 * softmax plus the dropout zeroing (fa_fwd_sm90_dropout.cuh), where ANY + kDrop issued both features'
 * predicated-off instructions in every key tile too (dropout ran at 0.48x of the plain kernel, H200
 * run 65). Dropout with softcap or ALiBi keeps the ANY instance. */
#define FA_SM90_FEAT_DROP 3
/* CAP_SLIM: softcap alone without the running row max (opt-in, bf16, fa_fwd_sm90_route.cuh fa_sm90_cap_slim).
 * Softcapped scores are bounded, t = tanh(s scale / softcap) in [-1, 1], so the softmax may subtract
 * a fixed offset instead of m_i: p = exp2(C t - off), C = softcap log2(e), off = min(C, 100 - C)
 * (fa_sm90_cap_slim_offset). C <= 50 (softcap <= 34.66): off = C, so p <= 1 as with m_i (and p = 1
 * exactly where t saturates at 1) and p >= 2^-2C; 50 < C <= 74 (softcap <= 51.29): p in
 * [2^-100, 2^(2C - 100)], at most 2^48 (O's fp32 accumulation could overflow only for a row sum of
 * |v| past 2^80). Why p >= 2^-100 and not down to 2^-124 (still a bf16 / fp32 normal): O = sum p v
 * below 2^-126 is flushed to 0 (fast-math FTZ in the epilogue's O / l), an absolute error of up to
 * 2^-126 / l in the output, 0.25 for a row with one visible key saturated at -softcap (p = 2^-124);
 * 2^-100 bounds it by 2^-26. No max (one FMNMX per score), no alpha, no O rescale: the CAP tile
 * is issue-bound (capemu, H100 run 82), and this takes ~100 instructions per key tile off.
 * fp16 P has no such range (normals from 2^-14): fp16 keeps CAP. */
#define FA_SM90_FEAT_CAP_SLIM 5
#define FA_SM90_CAP_SLIM_MAX_LOG2 74.f

/* Whether feature set `set` is softcap alone (CAP or CAP_SLIM: the same tanh-unit scores, ALiBi
 * compiled out, exp2 folding in softcap log2(e)) */
static constexpr bool fa_sm90_feat_cap_only(int set)
{
    return set == FA_SM90_FEAT_CAP || set == FA_SM90_FEAT_CAP_SLIM;
}

/* The fixed exp2 offset of CAP_SLIM in log2 units (C = softcap log2(e), see above) */
static inline __host__ __device__ float fa_sm90_cap_slim_offset(float c)
{
    return fminf(c, 100.f - c);
}

/* The kFeat instance a call runs: -1 none (the plain kernel), else its FA_SM90_FEAT_* set (dropout
 * alone DROP, dropout with a feature ANY: fa_fwd_sm90_dropout.cuh). One place for the launcher and
 * the host's Q box. */
static inline int fa_sm90_feat_set_of(int softcap, int alibi, int dropout)
{
    if (dropout) return softcap || alibi ? FA_SM90_FEAT_ANY : FA_SM90_FEAT_DROP;
    if (softcap && alibi) return FA_SM90_FEAT_ANY;
    return softcap ? FA_SM90_FEAT_CAP : alibi ? FA_SM90_FEAT_ALIBI : -1;
}

/* The tile of head-dim bucket D for the sm90 kernel, plain or its softcap / ALiBi (kFeat) variant:
 * the fa_tuning.h row, whose feat_br / feat_warps override Br and warps for the kFeat ANY instance
 * where set. CAP, ALIBI and DROP take the plain tile: at d = 64 its 3 consumer warpgroups (160
 * registers each) compile without spills for one feature or dropout alone; only both features
 * together spilled (fa_tuning.h).
 * kWide: the plain calls' wide_bc where the row has one (fa_fwd_sm90_route.cuh fa_sm90_wide), else bc.
 * kSmallBr: the plain instance on the ANY instance's tile (feat_br, feat_warps) where kHasSmallBr
 * (d = 64: 128 rows, 2 consumer warpgroups at 240 registers instead of 192 rows, 3 at 160), the
 * tile of short causal calls (the row's small_br_max_sq rule, fa_fwd_sm90_route.cuh fa_sm90_small_br). */
template <int D, bool kFeat = false, int kFeatSet = FA_SM90_FEAT_ANY, bool kWide = false, bool kSmallBr = false>
struct fa_sm90_tile {
    static constexpr fa_tuning_row kRow = fa_tuning_find(FA_KERNEL_FWD_SM90, 90, D);
    static_assert(kRow.br > 0, "no FA_KERNEL_FWD_SM90 row in fa_tuning.h for this head dim");
    static constexpr bool kHasSmallBr = D == 64 && kRow.feat_br > 0 && kRow.feat_br < kRow.br;
    static_assert(!kSmallBr || (kHasSmallBr && !kFeat && !kWide), "kSmallBr: plain, d = 64 row only");
    static constexpr bool kOwn = (kFeat && kFeatSet == FA_SM90_FEAT_ANY) || kSmallBr;
    static constexpr int kBr = kOwn && kRow.feat_br > 0 ? kRow.feat_br : kRow.br;
    static constexpr int kBc = kWide && !kFeat && kRow.wide_bc > 0 ? kRow.wide_bc : kRow.bc;
    static constexpr int kStages = kRow.stages;
    static constexpr int kThreads = (kOwn && kRow.feat_warps > 0 ? kRow.feat_warps : kRow.warps) * 32;
    static constexpr bool kPingPong = kRow.pingpong != 0;
    static constexpr bool kPersist = kRow.persist != 0;
};

/* Defined in fa_fwd_sm90_hdim<D>.cu (D = 64, 128, 256). */
template <int D>
fa_status fa_fwd_sm90_launch_hdim(const fa_sm90_params &prm, fa_dtype dtype, cudaStream_t stream);

/* 1 when the binary holds the real sm_90a kernel of (D, dtype) for the current device (and not the
 * stub that other gencodes compile): see fa_fwd_sm90_kernel.cuh. */
template <int D>
int fa_fwd_sm90_has_image_hdim(fa_dtype dtype);

#endif /* FA_FWD_SM90_ARGS_CUH */
