/* fa_fwd_sm90.cuh - entry points of the Hopper (sm_90a, wgmma + TMA) forward, for the dispatch in
 * fa_fwd_api.cu and for dev/fwd_sm90's harness. Host functions only; the kernel lives in
 * fa_fwd_sm90_kernel.cuh (its parts: fa_fwd_sm90_block.cuh, fa_fwd_sm90_math.cuh,
 * fa_fwd_sm90_producer.cuh, fa_fwd_sm90_consumer.cuh), the host side in fa_fwd_sm90.cu.
 *
 * The sm90 kernel covers fp16/bf16, head dims 40..256 in buckets 64 / 128 / 256, causal and
 * sliding-window masks (bottom-right), GQA/MQA, varlen, LSE, rows that see no key (O = 0,
 * LSE = -inf), softcap / ALiBi in its kFeat variant and dense dropout in its kDrop instances
 * (DROP alone, ANY with a feature). Varlen dropout, return_attn_probs and non-positive scales stay
 * on the sm80 (mma.sync) kernels: fa_fwd_sm90_can_run() returns 0 for them. The dispatch takes the kFeat variant unless FLASH_ATTN_C_SM90_FEAT=0 (below).
 */
#ifndef FA_FWD_SM90_CUH
#define FA_FWD_SM90_CUH

#include "flash_attn_c.h"
#include "fa_sm90_weak.h"  /* FA_SM90_WEAK: the hook tests `fa_fwd_sm90_supported != NULL` */

/* 1 when fa_fwd_sm90 can run this call on the current device: compute capability 9.0, the
 * sm_90a kernel image is in the binary, and the call is in the kernel's scope (above). */
int fa_fwd_sm90_can_run(const fa_params *p);

/* 1 when the dispatch should take the sm90 path: fa_fwd_sm90_can_run(p), unless the environment
 * sets FLASH_ATTN_C_SM90=0 (read on every call; on by default); a call with softcap or ALiBi
 * unless FLASH_ATTN_C_SM90_FEAT=0. */
FA_SM90_WEAK int fa_fwd_sm90_supported(const fa_params *p);

/* Runs the sm90 forward on `stream` (a cudaStream_t); no synchronization, no allocation.
 * FA_ERR_UNSUPPORTED when !fa_fwd_sm90_can_run(p) or a TMA descriptor cannot be encoded for
 * these strides (the caller then falls back to the sm80 kernels). */
FA_SM90_WEAK fa_status fa_fwd_sm90(const fa_params *p, void *stream);

/* The CTAs of the persistent grid fa_fwd_sm90 would launch for p now (FLASH_ATTN_C_SM90_FWD_PERSIST,
 * fa_fwd_sm90.cu), 0 when it would take the one-block grid or cannot run p (dev/fwd_sm90 checks
 * with it that its "persist" cases ran the persistent kernel). */
int fa_fwd_sm90_persist_ctas(const fa_params *p);

/* The (batch, head) pairs per group of that grid's item order (fa_fwd_sm90_persist.cuh,
 * "Schedule"; FLASH_ATTN_C_SM90_FWD_PERSIST_GROUP), 0 when p would not take the persistent grid. */
int fa_fwd_sm90_persist_group(const fa_params *p);

/* 1 when fa_fwd_sm90 runs call p on the CAP_SLIM instance (softcap alone, bf16, softcap <= 51.29,
 * FLASH_ATTN_C_SM90_FWD_CAP_SLIM=1 at the time of this call; fa_fwd_sm90_args.cuh). For tests. */
int fa_fwd_sm90_cap_slim(const fa_params *p);

#endif /* FA_FWD_SM90_CUH */
