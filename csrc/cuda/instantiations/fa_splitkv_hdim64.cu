/* The split-KV forward of head-dim bucket 64 (both dtypes): one translation unit per bucket. */
#include "fa_splitkv_kernel.cuh"

FA_SPLITKV_DEFINE_HDIM(64)
