/* sim_cuda.h - the few CUDA runtime calls bwd_check.cu makes, on host memory, for the CPU
 * simulator build (-DBWD_SIM): "device" buffers are plain malloc'ed memory that the simulated
 * kernels read and write directly. */
#ifndef BWD_SIM_CUDA_H
#define BWD_SIM_CUDA_H

#include <stdlib.h>
#include <string.h>

typedef int cudaError_t;
enum { cudaSuccess = 0, cudaErrorMemoryAllocation = 2 };
enum cudaMemcpyKind { cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2 };

typedef struct cudaDeviceProp {
    char name[256];
    int major, minor;
} cudaDeviceProp;

static inline const char *cudaGetErrorString(cudaError_t e)
{
    return e == cudaSuccess ? "no error" : "simulated allocation failure";
}

template <typename T>
static inline cudaError_t cudaMalloc(T **p, size_t n)
{
    /* 16-byte aligned like device allocations (256 there) */
    *p = (T *)aligned_alloc(256, (n + 255) & ~(size_t)255);
    return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
static inline cudaError_t cudaFree(void *p)
{
    free(p);
    return cudaSuccess;
}
static inline cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind)
{
    memcpy(dst, src, n);
    return cudaSuccess;
}
static inline cudaError_t cudaMemset(void *dst, int v, size_t n)
{
    memset(dst, v, n);
    return cudaSuccess;
}
static inline cudaError_t cudaDeviceSynchronize(void) { return cudaSuccess; }
static inline cudaError_t cudaGetLastError(void) { return cudaSuccess; }
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *prop, int dev);

#endif /* BWD_SIM_CUDA_H */
