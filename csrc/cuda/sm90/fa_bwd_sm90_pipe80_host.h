/* fa_bwd_sm90_pipe80_host.h - host side of the opt-in Br = 80 pipelined Hopper backward
 * (fa_bwd_sm90_pipe80.cuh): its switch, its pipelined mode and its query-block rows. Host code
 * only, no kernel: included by fa_bwd_sm90_plan.cu, which decides and encodes its maps
 * (fa_bwd_sm90_pipe_prepare: Q / dO boxes of FA_BWD_SM90_PIPE80_BR rows, dq_accum boxes {32, Br}),
 * and by fa_bwd_sm90.cu, which launches it as pipelined mode 4 (fa_bwd_sm90_run).
 * FLASH_ATTN_C_SM90_BWD_VARIANT=br80 (read on every call, like the other switches) asks for it
 * where the pipelined kernel would run its TMA-dQ instance at d in (64, 128] (atomic dQ, dense,
 * TMA-fit) and softmax_scale > 0 (the kernel folds -LSE log2e / (scale log2e) into the S^T
 * accumulator: thread_init_acc80); anything else (unset, other values, other d, deterministic,
 * varlen, scale <= 0) is unchanged.
 * "br128" (alone or in a list such as "br80,br128") does the same for the Br = 128 instances at
 * d <= 64 (modes 5 / 6 below). Not yet run on a GPU.
 */
#ifndef FA_BWD_SM90_PIPE80_HOST_H
#define FA_BWD_SM90_PIPE80_HOST_H

#include <stdlib.h>
#include <string.h>

#include "fa_tuning.h" /* fa_tuning_find, FA_KERNEL_BWD_SM90_PIPE80 / _PIPE128 */

/* The pipelined mode of the Br = 80 kernel (fa_bwd_sm90_pipe_prepare's result, fa_bwd_sm90_pipe_takes'). */
#define FA_BWD_SM90_PIPE_MODE_BR80 4

/* Its query-block rows Br (the Q / dO and dq_accum box rows): the tuning row its kernel's
 * fa_bwd_sm90_pipe80_cfg reads (fa_bwd_sm90.cu asserts the two agree). */
static constexpr int FA_BWD_SM90_PIPE80_BR = fa_tuning_find(FA_KERNEL_BWD_SM90_PIPE80, 90, 128).br;

/* The opt-in Br = 128 instances at d <= 64 (fa_bwd_sm90_pipe128_kernel, fa_bwd_sm90_pipe128.cuh):
 * FLASH_ATTN_C_SM90_BWD_VARIANT=br128 moves the pipelined kernel's atomic-dQ calls at d <= 64
 * (dense, TMA-fit, scale > 0: its S^T accumulator also starts at -LSE log2e / (scale log2e)) to
 * them: mode 5 instead of 1 (red.add dQ), 6 instead of 2 (TMA dQ; dq_accum boxes {32, 64}, one per
 * warpgroup's 64 queries). Q / dO boxes of FA_BWD_SM90_PIPE128_BR rows. Not yet run on a GPU. */
#define FA_BWD_SM90_PIPE_MODE_BR128_RED 5
#define FA_BWD_SM90_PIPE_MODE_BR128_TMA 6
static constexpr int FA_BWD_SM90_PIPE128_BR = fa_tuning_find(FA_KERNEL_BWD_SM90_PIPE128, 90, 64).br;

/* Whether FLASH_ATTN_C_SM90_BWD_VARIANT, a comma-separated list ("br80", "br128", "br80,br128"),
 * names `name`. */
static int fa_bwd_sm90_variant_has(const char *name)
{
    const char *env = getenv("FLASH_ATTN_C_SM90_BWD_VARIANT");
    const size_t n = strlen(name);
    for (const char *p = env; p != NULL && *p != '\0';) {
        const char *end = strchr(p, ',');
        const size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
        if (len == n && strncmp(p, name, n) == 0) return 1;
        p = end != NULL ? end + 1 : NULL;
    }
    return 0;
}

/* Whether FLASH_ATTN_C_SM90_BWD_VARIANT asks for the Br = 80 kernel. */
static int fa_bwd_sm90_variant_br80(void)
{
    return fa_bwd_sm90_variant_has("br80");
}

/* Whether FLASH_ATTN_C_SM90_BWD_VARIANT asks for the Br = 128 instances at d <= 64. */
static int fa_bwd_sm90_variant_br128(void)
{
    return fa_bwd_sm90_variant_has("br128");
}

#endif /* FA_BWD_SM90_PIPE80_HOST_H */
