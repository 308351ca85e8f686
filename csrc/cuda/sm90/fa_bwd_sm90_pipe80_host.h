/* fa_bwd_sm90_pipe80_host.h - host side of the pipelined Hopper backward's FA3-sized tiles: the
 * Br = 80 kernel at d in (64, 128] (fa_bwd_sm90_pipe80.cuh) and the Br = 128 instances at d <= 64
 * (fa_bwd_sm90_pipe128.cuh): their switch, their pipelined modes and their query-block rows. Host
 * code only, no kernel: included by fa_bwd_sm90_plan.cu, which decides and encodes their maps
 * (fa_bwd_sm90_pipe_prepare: Q / dO boxes of Br rows, dq_accum boxes {32, Br} / {32, 64}), and by
 * fa_bwd_sm90.cu, which launches them as pipelined modes 4, 5 and 6 (fa_bwd_sm90_run).
 * FLASH_ATTN_C_SM90_BWD_VARIANT (read on every call, like the other switches) is a comma-separated
 * list; unset, it means "br80,br128", the default since H100 run 54 (harness bench, bf16, 16k tokens,
 * h*d 2048: Br = 80 1.03-1.31x the Br = 64 kernel at d = 128, Br = 128 1.19-1.47x it at d = 64; both
 * harnesses 420 / 420 with them, compute-sanitizer memcheck / racecheck / synccheck clean). "br80"
 * takes the calls where the pipelined kernel would run its TMA-dQ instance at d in (64, 128] (atomic
 * dQ, dense, TMA-fit) and softmax_scale > 0 (the kernel folds -LSE log2e / (scale log2e) into the
 * S^T accumulator: thread_init_acc80); "br128" the atomic-dQ calls at d <= 64 (modes 5 / 6 below).
 * A list without them (e.g. "br64") keeps the Br = 64 tile of fa_bwd_sm90_pipe_kernel at both d.
 * Anything else (deterministic, varlen, scale <= 0, other d) is unchanged, except that
 * deterministic dense calls run the same tiles' ORDERED instances by default (modes 7, 8 below; the
 * same conditions and this variable's list; FLASH_ATTN_C_SM90_BWD_DET=ordered keeps Br = 64).
 */
#ifndef FA_BWD_SM90_PIPE80_HOST_H
#define FA_BWD_SM90_PIPE80_HOST_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "flash_attn_c.h" /* fa_params */
#include "fa_tuning.h"    /* fa_tuning_find, FA_KERNEL_BWD_SM90_PIPE80 / _PIPE128 */

/* The pipelined mode of the Br = 80 kernel (fa_bwd_sm90_pipe_prepare's result, fa_bwd_sm90_pipe_takes'). */
#define FA_BWD_SM90_PIPE_MODE_BR80 4

/* Its query-block rows Br (the Q / dO and dq_accum box rows): the tuning row its kernel's
 * fa_bwd_sm90_pipe80_cfg reads (fa_bwd_sm90.cu asserts the two agree). */
static constexpr int FA_BWD_SM90_PIPE80_BR = fa_tuning_find(FA_KERNEL_BWD_SM90_PIPE80, 90, 128).br;

/* The Br = 128 instances at d <= 64 (fa_bwd_sm90_pipe128_kernel, fa_bwd_sm90_pipe128.cuh): "br128"
 * (the default) moves the pipelined kernel's atomic-dQ calls at d <= 64 (dense, TMA-fit, scale > 0:
 * its S^T accumulator also starts at -LSE log2e / (scale log2e)) to them: mode 5 instead of 1
 * (red.add dQ), 6 instead of 2 (TMA dQ; dq_accum boxes {32, 64}, one per warpgroup's 64 queries).
 * Q / dO boxes of FA_BWD_SM90_PIPE128_BR rows. */
#define FA_BWD_SM90_PIPE_MODE_BR128_RED 5
#define FA_BWD_SM90_PIPE_MODE_BR128_TMA 6
static constexpr int FA_BWD_SM90_PIPE128_BR = fa_tuning_find(FA_KERNEL_BWD_SM90_PIPE128, 90, 64).br;

/* The ordered (deterministic) instances of the two tiles (the default since H200 run 62,
 * fa_bwd_sm90_ordered.h): mode 7 the Br = 80 kernel's (fa_bwd_sm90_pipe80_ordered_kernel), 8 the
 * Br = 128 one's (fa_bwd_sm90_pipe128_kernel<kBf16, FA_BWD_SM90_DQ_ORDERED>); mode 3 is the Br = 64
 * ORDERED instance. Their turn counters are per Br query rows of the tile that runs. */
#define FA_BWD_SM90_PIPE_MODE_BR80_ORDERED 7
#define FA_BWD_SM90_PIPE_MODE_BR128_ORDERED 8
/* The ORDERED instance of the d in (128, 256] dim-split kernel (fa_bwd_sm90_pipe_kernel<kBf16, 256,
 * FA_BWD_SM90_DQ_ORDERED>, fa_bwd_sm90_dsplit_order.cuh; the default, FLASH_ATTN_C_SM90_BWD_DET256=0 opts out,
 * fa_bwd_sm90_ordered.h): turn counters per 64 query rows, dQ into the tiled dq_accum. */
#define FA_BWD_SM90_PIPE_MODE_D256_ORDERED 9
/* The pipelined modes of the FEAT instance (fa_bwd_sm90_pipe_feat_kernel<kBf16, D, kDq>: softcap
 * and / or ALiBi scores; dense, no dropout; opt-in FLASH_ATTN_C_SM90_BWD_FEAT=1, fa_bwd_sm90_feat_ok):
 * 10 atomic dQ (d <= 128: the Br = 64 tile, TMA dQ; d > 128: the dim split, red.add into the tiled
 * dq_accum), 11 its ORDERED form (deterministic, with the 64-row turn counters of mode 3 / 9). A call with softcap or ALiBi runs on the sm90 backward only in
 * these modes: every other instance would ignore the features. */
#define FA_BWD_SM90_PIPE_MODE_FEAT 10
#define FA_BWD_SM90_PIPE_MODE_FEAT_ORDERED 11
#define FA_BWD_SM90_PIPE_MODE_IS_FEAT(m) \
    ((m) == FA_BWD_SM90_PIPE_MODE_FEAT || (m) == FA_BWD_SM90_PIPE_MODE_FEAT_ORDERED)
/* Softcap or ALiBi: scores only the FEAT instance computes (the plain instances would ignore them). */
static inline int fa_bwd_sm90_feat_call(const fa_params *p)
{
    return p->softcap != 0.f || p->alibi_slopes != NULL;
}
/* the modes whose kernel adds dQ in key-block order (the convert pass follows, no dQ pass) */
#define FA_BWD_SM90_PIPE_MODE_ORDERED(m)                                                                 \
    ((m) == 3 || (m) == FA_BWD_SM90_PIPE_MODE_BR80_ORDERED || (m) == FA_BWD_SM90_PIPE_MODE_BR128_ORDERED || \
     (m) == FA_BWD_SM90_PIPE_MODE_D256_ORDERED || (m) == FA_BWD_SM90_PIPE_MODE_FEAT_ORDERED)

/* The variants FLASH_ATTN_C_SM90_BWD_VARIANT means when unset (the measured default, above). */
#define FA_BWD_SM90_VARIANT_DEFAULT "br80,br128"

/* Whether FLASH_ATTN_C_SM90_BWD_VARIANT, a comma-separated list ("br80", "br128", "br80,br128",
 * "br64"), or FA_BWD_SM90_VARIANT_DEFAULT where it is unset, names `name`. */
static int fa_bwd_sm90_variant_has(const char *name)
{
    const char *set = getenv("FLASH_ATTN_C_SM90_BWD_VARIANT");
    const char *env = set != NULL ? set : FA_BWD_SM90_VARIANT_DEFAULT;
    const size_t n = strlen(name);
    for (const char *p = env; p != NULL && *p != '\0';) {
        const char *end = strchr(p, ',');
        const size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
        if (len == n && strncmp(p, name, n) == 0) return 1;
        p = end != NULL ? end + 1 : NULL;
    }
    return 0;
}

/* The FA3-sized tile a dense call of head dim d and softmax scale `scale` may run, atomic dQ or
 * ordered (the caller checks the rest: dQ path, TMA fit): FA_BWD_SM90_PIPE80_BR at d in (64, 128]
 * with "br80", FA_BWD_SM90_PIPE128_BR at d <= 64 with "br128", both only for scale > 0 (their S^T
 * accumulators start at -LSE log2e / (scale log2e)); 0: the Br = 64 tile. */
static int fa_bwd_sm90_fa3_tile_br(int64_t d, float scale)
{
    if (!(scale > 0.f)) return 0;
    if (d > 64 && d <= 128 && fa_bwd_sm90_variant_has("br80")) return FA_BWD_SM90_PIPE80_BR;
    if (d <= 64 && fa_bwd_sm90_variant_has("br128")) return FA_BWD_SM90_PIPE128_BR;
    return 0;
}

/* Whether pipelined mode m runs one of the FA3-sized tiles (4-8 above): fa_bwd_sm90_pipe_takes
 * reports those as they are. */
#define FA_BWD_SM90_PIPE_MODE_FA3(m) ((m) >= FA_BWD_SM90_PIPE_MODE_BR80 && (m) <= FA_BWD_SM90_PIPE_MODE_BR128_ORDERED)

#endif /* FA_BWD_SM90_PIPE80_HOST_H */
