/* fa_fwd_hdim256.cu - forward kernels of head-dim bucket 256 (fp16 and bf16), one TU per bucket
 * so the build compiles buckets in parallel. Tile shape: fa_tuning.h. */
#include "fa_fwd_kernel.cuh"

FA_FWD_DEFINE_HDIM(256)
