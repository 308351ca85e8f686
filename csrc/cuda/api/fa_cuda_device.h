/* fa_cuda_device.h - which GPU the calling host thread's current CUDA device is (host side,
 * header-only so every harness that links a subset of csrc/cuda has it). */
#ifndef FA_CUDA_DEVICE_H
#define FA_CUDA_DEVICE_H

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdlib.h>

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

/* Shared memory one block may opt in to on the current device (bytes; 227 KB on H100, 163 KB on
 * A100, 99 KB on sm_86 / 89 / 120), or 48 KB when the runtime cannot say. */
static inline size_t fa_cuda_max_smem_per_block(void)
{
    int dev = 0, n = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&n, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess || n <= 0)
        return 48u * 1024u;
    return (size_t)n;
}

/* 1 when the environment variable `name` is set to "1" (read on every call). */
static inline int fa_env_flag(const char *name)
{
    const char *v = getenv(name);
    return v != NULL && v[0] == '1' && v[1] == '\0';
}

#endif /* FA_CUDA_DEVICE_H */
