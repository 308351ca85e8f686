/* fa_fwd_sm90_route.cuh - the Hopper forward's host-side routing: which head-dim bucket, grid
 * (one-block or persistent, its head group and pairing), tile (the row's Br or the 128-row small-Br
 * tile, the row's Bc or the wide one) and feature-set instance (CAP_SLIM) a call takes, from its
 * fa_params and the switches (environment variables, read on every call). Predicates only:
 * fa_sm90_build_and_launch (fa_fwd_sm90.cu) reads each once per call and fills fa_sm90_params from
 * them; the exported queries there (fa_fwd_sm90_persist_ctas, _persist_group, _cap_slim) answer
 * tests and harnesses with the same functions. Included by fa_fwd_sm90.cu only (static functions).
 */
#ifndef FA_FWD_SM90_ROUTE_CUH
#define FA_FWD_SM90_ROUTE_CUH

#include <stdint.h>
#include <stdlib.h>
#include "flash_attn_c.h"
#include "fa_cuda_device.h"      /* fa_env_flag, fa_env_off, fa_cuda_sm_count */
#include "fa_fwd_sm90_args.cuh"  /* fa_sm90_tile (the tuning rows), FA_SM90_FEAT_* */

/* Buckets compiled for sm90: the kernel's head dim D; smaller d (multiple of 8) is zero-filled by
 * the TMA boxes. d <= 32 stays on the sm80 kernels (their d = 32 bucket wastes no work). */
static int fa_sm90_bucket(int64_t d)
{
    if (d <= 32 || d % 8 != 0) return 0;
    if (d <= 64) return 64;
    if (d <= 128) return 128;
    if (d <= 256) return 256;
    return 0;
}

/* FLASH_ATTN_C_SM90_FWD_PERSIST (read on every call): 1 runs the dense calls without softcap /
 * ALiBi / dropout of the buckets whose tuning row has a persistent instance (d = 64, 128) on the
 * persistent grid (fa_fwd_sm90_persist.cuh), 0 on the one-block grid; unset: the row's measured
 * rule (FA_PERSIST_ALL at d = 64, FA_PERSIST_CAUSAL at d = 128: H100 run 54, the tuning rows).
 * Softcap / ALiBi / dropout alone follow it only with FLASH_ATTN_C_SM90_FWD_PERSIST_FEAT=1. */
static int fa_sm90_persist_default(int rule, const fa_params *p)
{
    const int causal = p->window_left < 0 && p->window_right == 0;
    return rule == FA_PERSIST_ALL || (rule == FA_PERSIST_CAUSAL && causal);
}

/* The plain dense d = 64 calls (no softcap / ALiBi / dropout, no cu_seqlens), on the one-block grid
 * or the persistent one (whichever fa_sm90_persist_ctas_for picks), may run the row's feat_br tile
 * (fa_sm90_tile kSmallBr: 128 rows, 2 consumer warpgroups) instead of its 192 rows with 3. Why: at
 * short causal lengths the 192-row tile leaves rows idle (576 for 512) and more masked diagonal work
 * per block. The measured rule (tuning row small_br_max_sq): causal calls with seqlen_q and seqlen_k
 * up to that length. FLASH_ATTN_C_SM90_FWD_D64_BR (read on every call) overrides it: "128" takes the
 * 128-row tile for every such call, any other value (e.g. "192") keeps the row's tile. */
template <int D>
static int fa_sm90_small_br(const fa_params *p)
{
    typedef fa_sm90_tile<D> T;
    if (!T::kHasSmallBr || p->cu_seqlens_q != NULL) return 0;
    if (p->softcap > 0.f || p->alibi_slopes != NULL || p->dropout_p != 0.f) return 0;
    const char *env = getenv("FLASH_ATTN_C_SM90_FWD_D64_BR");
    if (env != NULL && *env != '\0') {
        char *end;
        const long br = strtol(env, &end, 10);
        return *end == '\0' && br == T::kRow.feat_br;  /* "128" exactly; anything else keeps the row's Br */
    }
    const int causal = p->window_left < 0 && p->window_right == 0;
    const int max_sq = T::kRow.small_br_max_sq;
    return causal && p->seqlen_q <= max_sq && p->seqlen_k <= max_sq;
}

/* Br of the plain instance that call p runs on bucket D (its Q box, its query blocks) */
template <int D>
static int fa_sm90_plain_br(const fa_params *p)
{
    return fa_sm90_small_br<D>(p) ? fa_sm90_tile<D>::kRow.feat_br : fa_sm90_tile<D>::kBr;
}

/* CTAs of the persistent grid for call p on bucket D (0: the one-block kernel): one per SM, at
 * most one per work item (query block of br rows, head, batch; br = fa_sm90_plain_br, which the
 * caller has); 0 where the item count or the SM count does not fit the kernel's int arithmetic /
 * is unknown. */
template <int D>
static int fa_sm90_persist_ctas_for(const fa_params *p, int br)
{
    typedef fa_sm90_tile<D> T;
    const int cap = p->softcap > 0.f, alibi = p->alibi_slopes != NULL, drop = p->dropout_p != 0.f;
    /* softcap, ALiBi or dropout alone (their instances keep the plain tile) only with
     * FLASH_ATTN_C_SM90_FWD_PERSIST_FEAT=1 (read on every call; opt-in until measured), then by
     * the same rule as plain calls; never two of them (the ANY tile differs at d = 64) */
    const int feat_ok = cap + alibi + drop == 1 && fa_env_flag("FLASH_ATTN_C_SM90_FWD_PERSIST_FEAT");
    if (!T::kPersist || p->cu_seqlens_q != NULL || ((cap || alibi || drop) && !feat_ok)) return 0;
    const int on = fa_env_flag("FLASH_ATTN_C_SM90_FWD_PERSIST")  ? 1
                   : fa_env_off("FLASH_ATTN_C_SM90_FWD_PERSIST") ? 0
                                                                 : fa_sm90_persist_default(T::kRow.persist, p);
    if (!on) return 0;
    const int64_t items = (p->seqlen_q + br - 1) / br * p->heads * p->batch;
    const int sms = fa_cuda_sm_count();
    /* the kernel's walk computes item indices below items + 2 CTAs in int (fa_sm90_persist_walk) */
    if (items < 1 || sms <= 0 || items > (int64_t)INT32_MAX - 2 * (int64_t)sms) return 0;
    return (int)(items < sms ? items : sms);
}

/* (batch, head) pairs per group G of the persistent kernel's item order (fa_fwd_sm90_persist.cuh,
 * "Schedule": a group's query blocks run together, so each K/V head is read from HBM about once):
 * as many whole GQA groups as keep the group's K/V (kv heads x sk x d x 2 tensors x 2 B) within
 * FA_SM90_PERSIST_KV_BYTES, at least one, at most b h. Why 16 MB: a third of the 50 MB L2 of an
 * H100 / H200 (two 25 MB halves), the rest left to the streaming Q / O and to the next group's K/V
 * coming in while the last wave of this one runs. Not yet timed (the run 52 order was G = b h with
 * query blocks outermost). FLASH_ATTN_C_SM90_FWD_PERSIST_GROUP=n (n >= 1, read on every call) sets
 * G = min(n, b h) instead, for A/B runs and for the harness's partial-group cases. */
#define FA_SM90_PERSIST_KV_BYTES ((int64_t)16 << 20)
static int fa_sm90_persist_group_for(const fa_params *p)
{
    const int64_t bh = (int64_t)p->batch * p->heads;
    const char *env = getenv("FLASH_ATTN_C_SM90_FWD_PERSIST_GROUP");
    if (env != NULL && env[0] != '\0') {
        char *end = NULL;
        const long n = strtol(env, &end, 10);
        if (*end == '\0' && n >= 1) return (int)(n < bh ? n : bh);
    }
    const int64_t kv_head_bytes = p->seqlen_k * p->head_dim * 2 * 2;
    const int64_t kv_heads = kv_head_bytes >= FA_SM90_PERSIST_KV_BYTES ? 1
                                                                       : FA_SM90_PERSIST_KV_BYTES / kv_head_bytes;
    const int64_t g = kv_heads * (p->heads / p->heads_k);
    return (int)(g < bh ? g : bh);
}

/* The items of n that the persistent kernel walks in (long, short) pairs on C CTAs
 * (fa_fwd_sm90_persist.cuh, "Walk"): all of them, unless the last round would hold at most C
 * items: those go one per CTA (as pairs they would take two items' time on half the CTAs). */
static int fa_sm90_persist_paired(int n, int C)
{
    const int rounds = n / (2 * C), rest = n - 2 * C * rounds;
    return rest > C ? n : 2 * C * rounds;
}

/* FLASH_ATTN_C_SM90_FWD_CAP_SLIM=1 (read on every call; opt-in: 1.08x CAP in H100 run 86, the default
 * once its whole check has run): softcap-alone (kFeatSet CAP) bf16 calls with softcap log2(e) <=
 * FA_SM90_CAP_SLIM_MAX_LOG2 (softcap <= 51.29) run the CAP_SLIM instance, the softmax without the
 * running row max (fa_fwd_sm90_args.cuh); others CAP. */
static int fa_sm90_cap_slim(const fa_params *p, int feat_set, float softcap_log2)
{
    return feat_set == FA_SM90_FEAT_CAP && p->dtype == FA_BF16 && softcap_log2 <= FA_SM90_CAP_SLIM_MAX_LOG2 &&
           fa_env_flag("FLASH_ATTN_C_SM90_FWD_CAP_SLIM");
}

/* Whether a call runs the wide instance (fa_tuning.h wide_bc): a plain dense call (feature set -1:
 * no softcap / ALiBi / dropout; no cu_seqlens) with no mask band (neither causal nor a window: only the sequence
 * end masks, so a longer key tile cuts the per-tile overhead and masks nothing more) on the one-block
 * grid (persist_ctas 0: the persistent kernel's two Q slots need the row's bc), with at least the
 * row's wide_min_sk keys (shorter ones ran slower on it). FLASH_ATTN_C_SM90_FWD_WIDE=0 keeps such
 * calls on bc, =1 takes the wide tile at every length (read on every call, for A/B runs and tests). */
template <int D>
static int fa_sm90_wide(const fa_params *p, int feat_set, int persist_ctas)
{
    if (fa_sm90_tile<D>::kRow.wide_bc == 0 || feat_set >= 0 || persist_ctas > 0 || p->cu_seqlens_q != NULL) return 0;
    if (p->window_left >= 0 || p->window_right >= 0) return 0;
    if (fa_env_off("FLASH_ATTN_C_SM90_FWD_WIDE")) return 0;
    return fa_env_flag("FLASH_ATTN_C_SM90_FWD_WIDE") || p->seqlen_k >= fa_sm90_tile<D>::kRow.wide_min_sk;
}

#endif /* FA_FWD_SM90_ROUTE_CUH */
