/* check_cuda.h - the CUDA runtime side the self-checking harnesses of dev/ share: CK() (a runtime
 * error ends the harness with exit status 2), uploads, and the NaN poisoning of outputs.
 *
 * Include <cuda_runtime.h> first, or, for the backward's CPU simulator build, dev/bwd/sim/
 * sim_cuda.h (host memory standing in for device memory); this header uses only the calls both
 * provide. */
#ifndef DEV_CHECK_CUDA_H
#define DEV_CHECK_CUDA_H

#include <stdio.h>
#include <stdlib.h>

#define CK(x)                                                                                      \
    do {                                                                                           \
        cudaError_t e_ = (x);                                                                      \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "%s:%d: %s: CUDA error %s\n", __FILE__, __LINE__, #x,                  \
                    cudaGetErrorString(e_));                                                       \
            exit(2);                                                                               \
        }                                                                                          \
    } while (0)

/* A device copy of n elements of elem_bytes each (at least one element is allocated, so an empty
 * tensor still gets a distinct, freeable pointer). */
static inline void *check_to_device(const void *host /* (n, elem_bytes) */, size_t n, size_t elem_bytes)
{
    void *d = NULL;
    CK(cudaMalloc(&d, (n > 0 ? n : 1) * elem_bytes));
    if (n > 0) CK(cudaMemcpy(d, host, n * elem_bytes, cudaMemcpyHostToDevice));
    return d;
}

/* Prints "device: NAME (sm_XY)" for device 0; returns its compute capability as 10 major + minor. */
static inline int check_print_device(void)
{
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("device: %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
    return 10 * prop.major + prop.minor;
}

/* 0xFF bytes: NaN in fp16 / bf16 / fp32, so anything a kernel fails to write shows up */
static inline void check_poison(void *dev /* (bytes,) */, size_t bytes) { CK(cudaMemset(dev, 0xFF, bytes)); }

#endif /* DEV_CHECK_CUDA_H */
