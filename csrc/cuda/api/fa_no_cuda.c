/* fa_no_cuda.c - CUDA entry points of a CPU-only build: they report FA_ERR_NO_CUDA. */
#include "flash_attn_c.h"

int fa_cuda_available(void) { return 0; }

fa_status fa_fwd_cuda(const fa_params *p, void *stream)
{
    (void)p;
    (void)stream;
    return FA_ERR_NO_CUDA;
}

size_t fa_bwd_cuda_workspace_bytes(const fa_params *p)
{
    (void)p;
    return 0;
}

fa_status fa_bwd_cuda(const fa_params *p, void *stream)
{
    (void)p;
    (void)stream;
    return FA_ERR_NO_CUDA;
}

fa_status fa_dropout_mask_cuda(uint64_t seed, uint64_t offset, float dropout_p, int64_t batch,
                               int64_t heads, int64_t seqlen_q, int64_t seqlen_k, uint8_t *mask,
                               void *stream)
{
    (void)seed; (void)offset; (void)dropout_p; (void)batch; (void)heads;
    (void)seqlen_q; (void)seqlen_k; (void)mask; (void)stream;
    return FA_ERR_NO_CUDA;
}

fa_status fa_rotary_cuda(const fa_rotary_params *p, void *stream)
{
    (void)p;
    (void)stream;
    return FA_ERR_NO_CUDA;
}

size_t fa_fwd_cuda_workspace_bytes(const fa_params *p)
{
    (void)p;
    return 0;
}

fa_status fa_kvcache_append_cuda(const fa_kvcache_append_params *p, void *stream)
{
    (void)p;
    (void)stream;
    return FA_ERR_NO_CUDA;
}
