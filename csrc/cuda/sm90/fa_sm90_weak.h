/* fa_sm90_weak.h - FA_SM90_WEAK marks the entry points of the Hopper kernels (fa_fwd_sm90.cuh,
 * fa_bwd_sm90.cuh) as weak symbols: the dispatch in fa_fwd_api.cu / fa_bwd_api.cu tests
 * `entry != NULL` before calling, so a build that links the dispatch without the sm90 objects
 * (the dev/fwd and dev/bwd harnesses) still links and simply never takes the sm90 path. */
#ifndef FA_SM90_WEAK_H
#define FA_SM90_WEAK_H

#if defined(__GNUC__)
#define FA_SM90_WEAK __attribute__((weak))
#else
#define FA_SM90_WEAK
#endif

#endif /* FA_SM90_WEAK_H */
