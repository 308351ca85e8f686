/* fa_splitkv_route.h - what fa_fwd_cuda (api/fa_fwd_api.cu) asks the split-KV path. */
#ifndef FA_SPLITKV_ROUTE_H
#define FA_SPLITKV_ROUTE_H

#include <cuda_runtime.h>
#include <stddef.h>
#include "flash_attn_c.h"

/* 1 when the call runs on the split-KV kernel: every KV-cache call (fa_params_uses_kv_cache) and
 * short query blocks (seqlen_q <= 16) without dropout or probabilities. */
int fa_splitkv_takes(const fa_params *p);
/* Scratch of the partial outputs (0 when one split suffices). */
size_t fa_splitkv_workspace_bytes(const fa_params *p);
/* Validated by fa_fwd_cuda already; FA_ERR_WORKSPACE when p->workspace is too small. */
fa_status fa_splitkv_run(const fa_params *p, cudaStream_t stream);

#endif /* FA_SPLITKV_ROUTE_H */
