/* fa_bwd_hdim192.cu - backward kernels of head-dim bucket 192 (fp16 and bf16). One bucket per
 * translation unit so a parallel build compiles the buckets side by side. */
#define FA_BWD_LAUNCH_DEFINE
#include "fa_bwd_launch.cuh"

FA_BWD_INSTANTIATE(192)
