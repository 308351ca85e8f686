/* fwd_compare.h - the pass rule of the forward harnesses (dev/fwd/fwd_check.cu,
 * dev/fwd_sm90/sm90_check.cu): GPU O, LSE and probabilities against the float64 reference
 * (fa_fwd_cpu_reference, rounded to the dtype), element by element, and the result line.
 *
 * Tolerances: O |gpu - ref| <= 2.5e-2 + 2e-2 |ref| (bf16) / 4e-3 + 4e-3 |ref| (fp16);
 * LSE 2e-3 + 1e-4 |ref|, with -inf (rows that see no key) matching exactly;
 * P 1e-2 (bf16) / 2e-3 (fp16) + 2e-2 |ref|, and the sign (negative = dropped) must match where
 * |ref| > 2 x that. NaN (an unwritten, poisoned element) always fails. */
#ifndef DEV_FWD_COMPARE_H
#define DEV_FWD_COMPARE_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>

#include <algorithm>

#include "check_host.h"
#include "fwd_problem.h"

typedef struct fwd_errors {
    double o_max, o_rel_l2;        /* max |gpu - ref| of O, relative L2 error of O */
    double lse_max, p_max;         /* max |gpu - ref| of LSE (finite entries) and P */
    int64_t bad_o, bad_lse, bad_p; /* elements outside the tolerance */
} fwd_errors;

/* Compares the first g->o_elems / lse_elems / p_elems elements; prints the first 3 failures of
 * each tensor. Zero-initialize e: a tensor not compared keeps 0 errors. */
static inline void fwd_compare(const fwd_geom *g, fa_dtype dt, const uint16_t *go /* (o_elems,) */,
                               const uint16_t *ro /* (o_elems,) */, const float *glse /* (lse_elems,) */,
                               const float *rlse /* (lse_elems,) */, const uint16_t *gp /* (p_elems,) */,
                               const uint16_t *rp /* (p_elems,) */, fwd_errors *e)
{
    const size_t h = (size_t)g->h, d = (size_t)g->d;
    const double o_abs = dt == FA_BF16 ? 2.5e-2 : 4e-3, o_rel = dt == FA_BF16 ? 2e-2 : 4e-3;
    const double p_tol = dt == FA_BF16 ? 1e-2 : 2e-3;
    double num = 0, den = 0;
    for (size_t i = 0; i < g->o_elems; ++i) {
        const double r = check_from_bits(dt, ro[i]), x = check_from_bits(dt, go[i]);
        const double err = fabs(x - r);
        if (!(err <= o_abs + o_rel * fabs(r))) { /* NaN (unwritten) fails */
            if (e->bad_o < 3)
                printf("   O[%zu] (row %zu, head %zu, col %zu) gpu %g ref %g\n", i, i / (h * d), i / d % h, i % d, x,
                       r);
            ++e->bad_o;
        }
        if (err == err) e->o_max = std::max(e->o_max, err);
        num += (x - r) * (x - r);
        den += r * r;
    }
    e->o_rel_l2 = den > 0 ? sqrt(num / den) : sqrt(num);
    for (size_t i = 0; i < g->lse_elems; ++i) {
        const double r = rlse[i], x = glse[i];
        if (isinf(r) || isinf(x)) {
            if (!(isinf(r) && isinf(x) && (r < 0) == (x < 0))) {
                if (e->bad_lse < 3) printf("   LSE[%zu] gpu %g ref %g\n", i, x, r);
                ++e->bad_lse;
            }
            continue;
        }
        const double err = fabs(x - r);
        if (!(err <= 2e-3 + 1e-4 * fabs(r))) {
            if (e->bad_lse < 3) printf("   LSE[%zu] gpu %g ref %g\n", i, x, r);
            ++e->bad_lse;
        }
        if (err == err) e->lse_max = std::max(e->lse_max, err);
    }
    for (size_t i = 0; i < g->p_elems; ++i) {
        const double r = check_from_bits(dt, rp[i]), x = check_from_bits(dt, gp[i]);
        const double err = fabs(x - r);
        const int sign_bad = fabs(r) > 2 * p_tol && ((r < 0) != (x < 0));
        if (!(err <= p_tol + 2e-2 * fabs(r)) || sign_bad) {
            if (e->bad_p < 3) printf("   P[%zu] gpu %g ref %g\n", i, x, r);
            ++e->bad_p;
        }
        if (err == err) e->p_max = std::max(e->p_max, err);
    }
}

/* "ok  " / "FAIL", the case name padded to name_width, the errors (P only when probs) */
static inline void fwd_print_result(int ok, const char *name, int name_width, const fwd_errors *e, int probs)
{
    printf("%s %-*s O maxerr %.3e relL2 %.3e | LSE maxerr %.3e", ok ? "ok  " : "FAIL", name_width, name, e->o_max,
           e->o_rel_l2, e->lse_max);
    if (probs) printf(" | P maxerr %.3e", e->p_max);
    printf("\n");
}

#endif /* DEV_FWD_COMPARE_H */
