/* fa_varlen_rows.cuh - the rows of a varlen call that no sequence covers (fa_varlen_rows.cu).
 *
 * Rows before cu_seqlens[0] and from cu_seqlens[b] on belong to no sequence, so no attention
 * kernel writes them. fa_fwd_cuda / fa_bwd_cuda finish a varlen call with this pass: o = 0 and
 * lse = -inf on the uncovered q rows (backward: dq = 0 there, dk = dv = 0 on the uncovered k
 * rows), as fa_varlen_zero_uncovered_cpu does on the CPU. cu_seqlens stay on the device: the
 * kernel reads the two bounds itself, so there is no host synchronization. */
#ifndef FA_VARLEN_ROWS_CUH
#define FA_VARLEN_ROWS_CUH

#include <cuda_runtime.h>
#include "flash_attn_c.h"

fa_status fa_varlen_zero_uncovered_cuda(const fa_params *p, int backward, cudaStream_t stream);

#endif /* FA_VARLEN_ROWS_CUH */
