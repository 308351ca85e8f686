/* fa_fwd_sm90_hdim64.cu - Hopper (sm_90a wgmma + TMA) forward kernels of head-dim bucket 64 (fp16
 * and bf16), one TU per bucket so the build compiles them in parallel. Tile shape: the arch-90
 * rows of fa_tuning.h. Other gencodes compile a trap stub (fa_fwd_sm90_kernel.cuh). */
#include "fa_fwd_sm90_kernel.cuh"

FA_FWD_SM90_DEFINE_HDIM(64)
