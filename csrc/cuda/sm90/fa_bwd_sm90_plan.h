/* fa_bwd_sm90_plan.h - what the two host files of the Hopper backward share: the decisions
 * (fa_bwd_sm90_plan.cu: scope checks, pipelined mode, TMA tensor maps) and the run path
 * (fa_bwd_sm90.cu: the kernels, their image test, the passes). Host code only, included by those
 * two files alone; the public entry points are in fa_bwd_sm90.cuh.
 */
#ifndef FA_BWD_SM90_PLAN_H
#define FA_BWD_SM90_PLAN_H

#include "flash_attn_c.h"              /* fa_params, fa_dtype */
#include "fa_bwd_args.cuh"             /* fa_bwd_args */
#include "fa_bwd_sm90_pipe_layout.cuh" /* fa_bwd_sm90_params */

/* 1 when the sm_90a image of the bucket's kernel (64, 128: the cp.async kernel; 256: the
 * pipelined kernel's dim-split instance) was loaded for the current device, cached per instance.
 * In fa_bwd_sm90.cu, next to the kernels, so fa_bwd_sm90_plan.cu references (compiles) none. */
int fa_bwd_sm90_has_image(int bucket, fa_dtype dtype);

/* The checks of fa_bwd_sm90_can_run that need no tensor map (scope, validation, device, image):
 * the head-dim bucket (64, 128, 256) when they pass, else 0. */
int fa_bwd_sm90_bucket_checked(const fa_params *p);

/* a: fa_bwd_fill_args(p). Which pipelined instance runs pass 2: 0 (the cp.async kernel; none at
 * bucket 256), 1 (red.add dQ), 2 (TMA-reduce dQ), 3 (ordered dQ), 4 (the Br = 80 kernel) or 5 / 6
 * (the Br = 128 instances, red.add / TMA dQ; fa_bwd_sm90_pipe80_host.h) or 7 / 8 (their ORDERED
 * instances, the deterministic default there) or 9 (the d in (128, 256] ORDERED instance, unless
 * FLASH_ATTN_C_SM90_BWD_DET256=0) or 10 / 11 (FA_BWD_SM90_PIPE_MODE_FEAT / _FEAT_ORDERED: softcap /
 * ALiBi), with the tensor maps in *prm where not 0 and a's ordered-dQ fields set only where 3, 7,
 * 8, 9 or 11 runs. */
int fa_bwd_sm90_plan(const fa_params *p, fa_bwd_args *a, fa_bwd_sm90_params *prm);

/* Whether fa_bwd_sm90_plan's mode may run this call in the head-dim bucket (the rule of
 * fa_bwd_sm90_can_run, asked again by the run path on the mode it planned): softcap / ALiBi calls
 * only on the FEAT instance (every other instance would ignore them), bucket 256 only on a
 * pipelined instance (mode != 0). */
int fa_bwd_sm90_mode_runs(const fa_params *p, int bucket, int mode);

#endif /* FA_BWD_SM90_PLAN_H */
