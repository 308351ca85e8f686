/* fa_dropout_mask.cu - fa_dropout_mask_cuda: the debug dropout keep mask, uint8 (b, h, sq, sk).
 *
 * Each thread makes one Philox call (fa_dropout_random16) and writes the 16 keys it covers, so the
 * mask is bit-identical to fa_dropout_mask_cpu and to what the forward/backward kernels apply.
 */
#include <stdint.h>
#include "flash_attn_c.h"
#include "fa_common.h"

/* grid-stride over (b, h, i, j16) */
__global__ void fa_dropout_mask_kernel(uint64_t seed, uint64_t offset, uint32_t threshold, int64_t heads,
                                       int64_t seqlen_q, int64_t seqlen_k, int64_t total_groups,
                                       uint8_t *mask /* (b, h, sq, sk) */)
{
    const int64_t groups_per_row = (seqlen_k + 15) / 16;
    for (int64_t gid = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; gid < total_groups;
         gid += (int64_t)gridDim.x * blockDim.x) {
        const int64_t j16 = gid % groups_per_row;
        const int64_t row = gid / groups_per_row;  /* (b * heads + h) * sq + i */
        const int64_t i = row % seqlen_q;
        const int64_t bh = row / seqlen_q;
        const int64_t h = bh % heads;
        const int64_t b = bh / heads;
        const fa_u32x4 r = fa_dropout_random16(seed, offset, b, h, i, j16);
        uint8_t *out = mask + row * seqlen_k + 16 * j16;
        const int64_t n = seqlen_k - 16 * j16 < 16 ? seqlen_k - 16 * j16 : 16;
        for (int64_t e = 0; e < n; ++e) out[e] = fa_dropout_byte(r, e) >= threshold ? 1 : 0;
    }
}

fa_status fa_dropout_mask_cuda(uint64_t seed, uint64_t offset, float dropout_p, int64_t batch, int64_t heads,
                               int64_t seqlen_q, int64_t seqlen_k, uint8_t *mask, void *stream)
{
    if (batch < 0 || heads < 0 || seqlen_q < 0 || seqlen_k < 0) return FA_ERR_SHAPE;
    if (!(dropout_p >= 0.f && dropout_p < 1.f)) return FA_ERR_DROPOUT;
    const int64_t total = batch * heads * seqlen_q * ((seqlen_k + 15) / 16);
    if (total == 0) return FA_OK;
    if (mask == NULL) return FA_ERR_NULL_POINTER;
    const int threads = 256;
    int64_t blocks = (total + threads - 1) / threads;
    if (blocks > 65536) blocks = 65536;  /* grid-stride beyond this */
    fa_dropout_mask_kernel<<<(unsigned)blocks, threads, 0, (cudaStream_t)stream>>>(
        seed, offset, fa_dropout_threshold(dropout_p), heads, seqlen_q, seqlen_k, total, mask);
    return cudaGetLastError() == cudaSuccess ? FA_OK : FA_ERR_CUDA;
}
