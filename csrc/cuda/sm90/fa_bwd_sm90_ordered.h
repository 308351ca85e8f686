/* fa_bwd_sm90_ordered.h - host side of the pipelined Hopper backward's deterministic dQ
 * (kDq = FA_BWD_SM90_DQ_ORDERED, fa_bwd_sm90_pipe_dq_order.cuh): when a call takes it (the default
 * for deterministic calls, FLASH_ATTN_C_SM90_BWD_DET) and where its dq_accum and turn counters live in the
 * workspace (layout: fa_bwd_host.h, fa_bwd_ordered_dq_need). Host code only, included by
 * fa_bwd_sm90_plan.cu alone.
 */
#ifndef FA_BWD_SM90_ORDERED_H
#define FA_BWD_SM90_ORDERED_H

#include <stdlib.h>
#include <string.h>

#include "flash_attn_c.h"
#include "fa_bwd_host.h"               /* fa_bwd_ordered_dq_need, fa_bwd_ordered_dq_args */
#include "fa_bwd_sm90_dq_tiled.cuh"     /* fa_bwd_dq_tiled_floats, FA_BWD_DQ_TILE_ROWS (d > 128) */
#include "fa_bwd_sm90_pipe_layout.cuh" /* fa_bwd_sm90_pipe_cfg */
#include "fa_bwd_sm90_pipe80_host.h"   /* FA_BWD_SM90_PIPE80_BR / 128_BR, fa_bwd_sm90_fa3_tile_br */

/* FLASH_ATTN_C_SM90_BWD_DET (read on every call), the one place that parses it: unset or
 * "ordered_br" -> ORDERED on the FA3-sized tiles where they apply (the default since H200 run 62),
 * "ordered" -> ORDERED on the Br = 64 tile everywhere (the opt-out, the default of H100 runs 54-61),
 * "pass" (or any other value) -> the dK/dV-only instance + the ordered dQ pass; unset also the pass
 * path under FLASH_ATTN_C_SM90_BWD_PIPE=0 (the cp.async kernel). */
enum { FA_BWD_SM90_DET_PASS, FA_BWD_SM90_DET_ORDERED_BR64, FA_BWD_SM90_DET_ORDERED_FA3 };
static int fa_bwd_sm90_det_choice(void)
{
    const char *env = getenv("FLASH_ATTN_C_SM90_BWD_DET");
    if (env == NULL) {
        const char *pipe = getenv("FLASH_ATTN_C_SM90_BWD_PIPE");
        return pipe != NULL && strcmp(pipe, "0") == 0 ? FA_BWD_SM90_DET_PASS : FA_BWD_SM90_DET_ORDERED_FA3;
    }
    if (strcmp(env, "ordered_br") == 0) return FA_BWD_SM90_DET_ORDERED_FA3;
    if (strcmp(env, "ordered") == 0) return FA_BWD_SM90_DET_ORDERED_BR64;
    return FA_BWD_SM90_DET_PASS;
}

/* Whether a deterministic call takes an ORDERED instance (fa_bwd_sm90_det_choice; which one:
 * fa_bwd_sm90_ordered_mode). Host-only test of the call's shape: deterministic, dense, fp16/bf16,
 * d <= 128 (the staged-dQ instances); the TMA maps and the workspace are checked later
 * (fa_bwd_sm90_ordered_args, fa_bwd_sm90_pipe_prepare). */
static int fa_bwd_sm90_det_ordered(const fa_params *p)
{
    return fa_bwd_sm90_det_choice() != FA_BWD_SM90_DET_PASS && p->deterministic && p->cu_seqlens_q == NULL &&
           p->cu_seqlens_k == NULL && p->head_dim >= 8 && p->head_dim <= 128 && p->head_dim % 8 == 0;
}

/* Which ORDERED instance a deterministic call fa_bwd_sm90_det_ordered takes runs. The FA3 choice
 * (unset, "ordered_br"): the ORDERED instance of the FA3-sized tile its atomic-dQ twin would run
 * (fa_bwd_sm90_fa3_tile_br: softmax_scale > 0 and the FLASH_ATTN_C_SM90_BWD_VARIANT list), the
 * Br = 80 kernel at d in (64, 128] (mode 7), the Br = 128 instance at d <= 64 (mode 8); elsewhere,
 * and under "ordered", the Br = 64 one (mode 3). H200 run 62 (harness, bf16, 16k tokens, h*d 2048,
 * d 64 / 128, causal and not, seqlen 512..16k): --det 43 / 43 bitwise-repeatable, racecheck 0
 * hazards (dense d 64 and 128), memcheck clean; speed 0.919x the atomic default's, geomean
 * (0.813-0.999; non-causal up to seqlen 4k, 0.81-0.87x, costs 1.15-1.23x, over the 1.15x target
 * that the geomean's 1.09x meets), where "ordered" ran 0.744x (min 0.635) and "pass" 0.545x.
 * Host-only, on p; TMA-fit is checked later (fa_bwd_sm90_pipe_prepare: maps not encodable -> the
 * dQ-pass path, as for mode 3). */
static int fa_bwd_sm90_ordered_mode(const fa_params *p)
{
    /* softcap / ALiBi: the FEAT instance's ORDERED form has the Br = 64 tile (the rows of mode 3) */
    if (fa_bwd_sm90_feat_call(p)) return 3;
    if (fa_bwd_sm90_det_choice() != FA_BWD_SM90_DET_ORDERED_FA3) return 3;
    const int br = fa_bwd_sm90_fa3_tile_br(p->head_dim, p->softmax_scale);
    return br == FA_BWD_SM90_PIPE80_BR    ? FA_BWD_SM90_PIPE_MODE_BR80_ORDERED
           : br == FA_BWD_SM90_PIPE128_BR ? FA_BWD_SM90_PIPE_MODE_BR128_ORDERED
                                          : 3;
}

/* Query rows per turn counter: the Br of the ORDERED instance that runs (fa_bwd_sm90_ordered_mode;
 * d <= 128). fa_bwd_sm90_pipe_prepare tells the instances apart by these rows (a->dq_sem_rows), so
 * the workspace (fa_bwd_sm90_workspace_bytes), the counters' layout and the kernel always agree. */
static_assert(fa_bwd_sm90_pipe_cfg<64>::Br != FA_BWD_SM90_PIPE80_BR &&
                  fa_bwd_sm90_pipe_cfg<64>::Br != FA_BWD_SM90_PIPE128_BR &&
                  fa_bwd_sm90_pipe_cfg<128>::Br != FA_BWD_SM90_PIPE80_BR &&
                  fa_bwd_sm90_pipe_cfg<128>::Br != FA_BWD_SM90_PIPE128_BR,
              "the counter rows must name the ORDERED instance: the Br = 64 tile's Br differs from 80 and 128");
static int fa_bwd_sm90_ordered_rows(const fa_params *p)
{
    const int mode = fa_bwd_sm90_ordered_mode(p);
    if (mode == FA_BWD_SM90_PIPE_MODE_BR80_ORDERED) return FA_BWD_SM90_PIPE80_BR;
    if (mode == FA_BWD_SM90_PIPE_MODE_BR128_ORDERED) return FA_BWD_SM90_PIPE128_BR;
    return p->head_dim <= 64 ? fa_bwd_sm90_pipe_cfg<64>::Br : fa_bwd_sm90_pipe_cfg<128>::Br;
}

/* FLASH_ATTN_C_SM90_BWD_DET256 (read on every call): unset or any value but "0" -> deterministic dense
 * calls at d in (128, 256] run the dim-split kernel's ORDERED instance (mode
 * FA_BWD_SM90_PIPE_MODE_D256_ORDERED, fa_bwd_sm90_dsplit_order.cuh: its red.adds into the tiled dq_accum
 * in decreasing key-block order per 64-row query tile, then the tiled convert), unless
 * FLASH_ATTN_C_SM90_BWD_DET says "pass" (or its FLASH_ATTN_C_SM90_BWD_PIPE=0 reading does:
 * fa_bwd_sm90_det_choice). "0": the sm80 backward runs those calls (the path before H100 run 76, which
 * measured the ORDERED instance at 0.77-0.95x the atomic d256 backward, 1.16x cost geomean, where the
 * sm80 one cost 1.33-2.16x in run 74). Host-only test of the call's shape. */
static int fa_bwd_sm90_det256(const fa_params *p)
{
    const char *env = getenv("FLASH_ATTN_C_SM90_BWD_DET256");
    if (env != NULL && strcmp(env, "0") == 0) return 0;
    return fa_bwd_sm90_det_choice() != FA_BWD_SM90_DET_PASS && p->deterministic && p->cu_seqlens_q == NULL &&
           p->cu_seqlens_k == NULL && p->head_dim > 128 && p->head_dim <= 256 && p->head_dim % 8 == 0;
}

/* Its workspace (the layout of fa_bwd_host.h with dq_accum tiled): dpsum, then the tiled dq_accum
 * (fa_bwd_dq_tiled_floats, 256-aligned end) at byte fa_bwd_dpsum_bytes(p), then one turn counter
 * per (batch, head, 64-row query tile) at byte *sem_at. The bytes needed; 0 when there is nothing
 * to run. */
static size_t fa_bwd_sm90_det256_need(const fa_params *p, size_t *sem_at)
{
    const size_t dpsum = fa_bwd_dpsum_bytes(p);
    if (dpsum == 0) return 0;
    const size_t acc = (size_t)fa_bwd_dq_tiled_floats(p->batch, p->heads, p->seqlen_q) * sizeof(float);
    const size_t tiles = (size_t)((p->seqlen_q + FA_BWD_DQ_TILE_ROWS - 1) / FA_BWD_DQ_TILE_ROWS);
    *sem_at = dpsum + fa_bwd_align256(acc);
    return *sem_at + (size_t)p->batch * (size_t)p->heads * tiles * sizeof(int);
}

/* a (fa_bwd_fill_args(p)) with the ordered dQ's dq_accum and turn counters when this call asks for
 * it and the caller's workspace holds them (one sized without the variable does not: the call
 * then keeps the dK/dV + ordered dQ pass path, or at d > 128 the sm80 backward); 1 if so. d > 128
 * (fa_bwd_sm90_det256): the tiled dq_accum and counters per FA_BWD_DQ_TILE_ROWS = 64 rows, the
 * rows fa_bwd_sm90_pipe_prepare names mode FA_BWD_SM90_PIPE_MODE_D256_ORDERED by. */
static int fa_bwd_sm90_ordered_args(const fa_params *p, fa_bwd_args *a)
{
    if (fa_bwd_sm90_det256(p)) {
        size_t sem_at = 0;
        const size_t need = fa_bwd_sm90_det256_need(p, &sem_at);
        if (need == 0 || p->workspace == NULL || p->workspace_bytes < need) return 0;
        a->dq_accum = (float *)((char *)p->workspace + fa_bwd_dpsum_bytes(p));
        a->dq_sem = (int *)((char *)p->workspace + sem_at);
        a->dq_sem_rows = FA_BWD_DQ_TILE_ROWS;
        return 1;
    }
    if (!fa_bwd_sm90_det_ordered(p)) return 0;
    const int rows = fa_bwd_sm90_ordered_rows(p);
    const size_t need = fa_bwd_ordered_dq_need(p, rows);
    if (need == 0 || p->workspace == NULL || p->workspace_bytes < need) return 0;
    fa_bwd_ordered_dq_args(p, rows, a);
    return 1;
}

#endif /* FA_BWD_SM90_ORDERED_H */
