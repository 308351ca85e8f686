/* fa_grid_dep.cuh - programmatic dependent launch (sm_90 on): a grid launched with
 * cudaLaunchAttributeProgrammaticStreamSerialization may start while the grid before it in the
 * stream is still running; it must wait in fa_grid_dependency_wait before it reads what that
 * grid writes. Both helpers compile to nothing for older targets, where such a launch is plain
 * stream order anyway. */
#ifndef FA_GRID_DEP_CUH
#define FA_GRID_DEP_CUH

/* Lets the dependent grid be scheduled once every block of this grid has called it (or exited). */
static __device__ __forceinline__ void fa_grid_launch_dependents(void)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

/* Returns once the grids this one depends on have completed and their writes are visible. */
static __device__ __forceinline__ void fa_grid_dependency_wait(void)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

#endif /* FA_GRID_DEP_CUH */
