/* fa_bwd_sm90.cuh - entry points of the Hopper (sm_90a, wgmma) backward, for the dispatch in
 * fa_bwd_cuda / fa_bwd_cuda_workspace_bytes and for dev/bwd_sm90's harness. Host functions only;
 * the kernels live in fa_bwd_sm90_kernel.cuh and fa_bwd_sm90_pipe_kernel.cuh, the host side in
 * fa_bwd_sm90_plan.cu (can_run, supported, workspace_bytes, pipe_takes: the decisions) and
 * fa_bwd_sm90.cu (fa_bwd_sm90: the passes and launches).
 *
 * Scope: fp16/bf16, head dim d % 8 == 0, d <= 128 (buckets 64 / 128, smaller d zero-padded),
 * dense and varlen, causal / sliding-window masks (bottom-right), GQA/MQA, rows that see no key
 * (zero gradients); dQ by fp32 atomics, or with deterministic = 1 by the pipelined kernel in a fixed
 * key-block order (dense, d <= 128; fa_bwd_sm90_ordered.h), else by the sm80 path's ordered dQ
 * kernel after the sm90 dK/dV kernel; d in (128, 256] only dense, TMA-fit and with atomic dQ (or
 * FLASH_ATTN_C_SM90_BWD_PIPE=1/2 asking, or deterministic unless
 * FLASH_ATTN_C_SM90_BWD_DET256=0: the dim-split kernel's ORDERED instance). Softcap / ALiBi only
 * with FLASH_ATTN_C_SM90_BWD_FEAT=1, dense (the pipelined kernel's FEAT instance and its ORDERED
 * form, at every d of the buckets). Dropout, other softcap / ALiBi calls and other d > 128 stay on the sm80 kernels:
 * fa_bwd_sm90_supported() returns 0.
 */
#ifndef FA_BWD_SM90_CUH
#define FA_BWD_SM90_CUH

#include <stddef.h>
#include "flash_attn_c.h"
#include "fa_sm90_weak.h"  /* FA_SM90_WEAK: the hook tests `fa_bwd_sm90_supported != NULL` */

/* 1 when fa_bwd_sm90 can run this call on the current device: compute capability 9.0, the
 * sm_90a kernel image is in the binary, the call is in scope (above) and passes the sm80
 * backward's validation (fa_bwd_validate). Reads the pipelined kernel's switches
 * (FLASH_ATTN_C_SM90_BWD_PIPE, _DET, _DET256, _VARIANT, _FEAT), not FLASH_ATTN_C_SM90_BWD. */
int fa_bwd_sm90_can_run(const fa_params *p);

/* fa_bwd_sm90_can_run(p), unless the environment sets FLASH_ATTN_C_SM90_BWD=0 (read on every
 * call; on by default). */
FA_SM90_WEAK int fa_bwd_sm90_supported(const fa_params *p);

/* Workspace bytes fa_bwd_sm90 needs (D and dq_accum: the same layout as the sm80 backward,
 * fa_bwd_host.h; deterministic calls that take an ORDERED instance: D, dq_accum and the turn
 * counters, fa_bwd_ordered_dq_need). Given uninitialized; the first pass initializes what it
 * uses. Reads the environment: size and run the call under the same setting. */
FA_SM90_WEAK size_t fa_bwd_sm90_workspace_bytes(const fa_params *p);

/* Non-zero when fa_bwd_sm90 would run this call on the pipelined kernel
 * (FLASH_ATTN_C_SM90_BWD_PIPE=1 or 2 at any d, or unset with atomic dQ at any d; dense tensors
 * whose maps encode): 3 when that is the Br = 64 ORDERED instance (deterministic, d <= 128, dense,
 * FLASH_ATTN_C_SM90_BWD_DET not "pass", workspace sized for it), 2 when the TMA-dQ instance (mode 2
 * with atomic dQ; 4 when FLASH_ATTN_C_SM90_BWD_VARIANT=br80 moves that call at d in (64, 128] to the
 * Br = 80 kernel, fa_bwd_sm90_pipe80.cuh), else 1; with "br128" in FLASH_ATTN_C_SM90_BWD_VARIANT the
 * atomic-dQ calls at d <= 64 answer 5 (Br = 128, red.add dQ) or 6 (Br = 128, TMA dQ) instead of 1 / 2;
 * 7 (the Br = 80 ORDERED instance) or 8 (Br = 128 ORDERED) instead of 3 where those tiles apply,
 * unless FLASH_ATTN_C_SM90_BWD_DET=ordered (fa_bwd_sm90_ordered_mode); 9 for the d in (128, 256]
 * ORDERED instance (FLASH_ATTN_C_SM90_BWD_DET256 not 0, FA_BWD_SM90_PIPE_MODE_D256_ORDERED); 10 for a
 * softcap / ALiBi call on the FEAT instance (FLASH_ATTN_C_SM90_BWD_FEAT=1, FA_BWD_SM90_PIPE_MODE_FEAT), 11
 * for a deterministic one on its ORDERED form (FA_BWD_SM90_PIPE_MODE_FEAT_ORDERED). Host only, reads the
 * environment like fa_bwd_sm90. For the harness: which "pipe" cases fell back. */
FA_SM90_WEAK int fa_bwd_sm90_pipe_takes(const fa_params *p);

/* Runs the sm90 backward on `stream` (a cudaStream_t); no synchronization, no allocation.
 * FA_ERR_UNSUPPORTED when !fa_bwd_sm90_can_run(p). */
FA_SM90_WEAK fa_status fa_bwd_sm90(const fa_params *p, void *stream);

#endif /* FA_BWD_SM90_CUH */
