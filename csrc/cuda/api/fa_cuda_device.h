/* fa_cuda_device.h - which GPU the calling host thread's current CUDA device is (host side,
 * header-only so every harness that links a subset of csrc/cuda has it). */
#ifndef FA_CUDA_DEVICE_H
#define FA_CUDA_DEVICE_H

#include <cuda_runtime.h>

/* Compute capability of the current device as 10 x major + minor (80 = A100, 90 = H100/H200),
 * or 0 when the runtime cannot say. Attribute queries only: no synchronization. */
static inline int fa_cuda_current_arch(void)
{
    int dev = 0, major = 0, minor = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess)
        return 0;
    return 10 * major + minor;
}

/* Streaming multiprocessors of the current device, or 0 when the runtime cannot say. */
static inline int fa_cuda_sm_count(void)
{
    int dev = 0, n = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
        return 0;
    return n;
}

#endif /* FA_CUDA_DEVICE_H */
