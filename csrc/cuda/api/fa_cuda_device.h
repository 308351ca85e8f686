/* fa_cuda_device.h - which GPU the calling host thread's current CUDA device is (host side,
 * header-only so every harness that links a subset of csrc/cuda has it). */
#ifndef FA_CUDA_DEVICE_H
#define FA_CUDA_DEVICE_H

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdlib.h>

#define FA_CUDA_MAX_DEVICES 64

/* Attribute `attr` of the current device, read from the runtime once per device and translation
 * unit (device attributes never change; a decode step asks for several on every call), or -1
 * when the runtime cannot say. cache: [FA_CUDA_MAX_DEVICES] of value + 1, 0 = not read yet
 * (benign race: every writer stores the same value). No synchronization. */
static inline int fa_cuda_attr_cached(enum cudaDeviceAttr attr, int *cache)
{
    int dev = 0, n = 0;
    if (cudaGetDevice(&dev) != cudaSuccess) return -1;
    const int slot = dev >= 0 && dev < FA_CUDA_MAX_DEVICES;
    if (slot && cache[dev] != 0) return cache[dev] - 1;
    if (cudaDeviceGetAttribute(&n, attr, dev) != cudaSuccess) return -1;
    if (slot) cache[dev] = n + 1;
    return n;
}

/* Compute capability of the current device as 10 x major + minor (80 = A100, 90 = H100/H200),
 * or 0 when the runtime cannot say. */
static inline int fa_cuda_current_arch(void)
{
    static int major_cache[FA_CUDA_MAX_DEVICES], minor_cache[FA_CUDA_MAX_DEVICES];
    const int major = fa_cuda_attr_cached(cudaDevAttrComputeCapabilityMajor, major_cache);
    const int minor = fa_cuda_attr_cached(cudaDevAttrComputeCapabilityMinor, minor_cache);
    return major < 0 || minor < 0 ? 0 : 10 * major + minor;
}

/* Streaming multiprocessors of the current device, or 0 when the runtime cannot say. */
static inline int fa_cuda_sm_count(void)
{
    static int cache[FA_CUDA_MAX_DEVICES];
    const int n = fa_cuda_attr_cached(cudaDevAttrMultiProcessorCount, cache);
    return n > 0 ? n : 0;
}

/* Shared memory one block may opt in to on the current device (bytes; 227 KB on H100, 163 KB on
 * A100, 99 KB on sm_86 / 89 / 120), or 48 KB when the runtime cannot say. */
static inline size_t fa_cuda_max_smem_per_block(void)
{
    static int cache[FA_CUDA_MAX_DEVICES];
    const int n = fa_cuda_attr_cached(cudaDevAttrMaxSharedMemoryPerBlockOptin, cache);
    return n > 0 ? (size_t)n : 48u * 1024u;
}

/* 1 when the environment variable `name` is set to "1" (read on every call): opt-in switches. */
static inline int fa_env_flag(const char *name)
{
    const char *v = getenv(name);
    return v != NULL && v[0] == '1' && v[1] == '\0';
}

/* 1 when the environment variable `name` is set to "0" (read on every call): the opt-out
 * switches of paths that are on by default (FLASH_ATTN_C_SM90, _SM90_BWD, _SM90_FEAT). */
static inline int fa_env_off(const char *name)
{
    const char *v = getenv(name);
    return v != NULL && v[0] == '0' && v[1] == '\0';
}

#endif /* FA_CUDA_DEVICE_H */
