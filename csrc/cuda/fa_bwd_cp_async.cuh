/* fa_bwd_cp_async.cuh - the 4-byte cp.async the backward uses for per-row fp32 vectors (LSE, D);
 * fa_mma.cuh only has the 16-byte form. */
#ifndef FA_BWD_CP_ASYNC_CUH
#define FA_BWD_CP_ASYNC_CUH

#include <stdint.h>

/* 4-byte global -> shared copy (.ca: the 16-byte-only .cg does not take 4). pred false:
 * the 4 destination bytes are zero-filled and nothing is read (gmem_ptr must still be valid). */
static __device__ __forceinline__ void fa_cp_async_4(uint32_t smem_addr, const void *gmem_ptr, bool pred)
{
    int src_bytes = pred ? 4 : 0;
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_addr), "l"(gmem_ptr),
                 "r"(src_bytes));
}

#endif /* FA_BWD_CP_ASYNC_CUH */
