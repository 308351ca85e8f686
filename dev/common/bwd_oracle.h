/* bwd_oracle.h - what the backward harnesses (dev/bwd/bwd_check.cu, dev/bwd_sm90/bwd_sm90_check.cu)
 * measure a GPU backward against: a low-precision baseline that computes dq, dk, dv with the
 * kernels' roundings (its error against the fp32 oracle fa_bwd_cpu_reference sets the bar), the
 * error statistics, and the pass rule (error ratio against the baseline plus an ulp floor).
 * Host code only (also built into the CPU simulator, dev/bwd/sim). */
#ifndef DEV_BWD_ORACLE_H
#define DEV_BWD_ORACLE_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include <algorithm>
#include <vector>

#include "fa_common.h"
#include "check_host.h"
#include "bwd_problem.h"

/* ---- low-precision baseline: the backward with the kernel's roundings --------------------- */
/* q, o_lp (O rounded to the dtype), dout, dq: (rows_q, h, d); k, v, dk, dv: (rows_k, hk, d);
 * lse: (b, h, max_sq) dense | (h, rows_q) varlen. P and dS are rounded to the dtype before the
 * products, D comes from the rounded O, sums are fp32, the outputs are rounded. */
static inline void bwd_lowp_backward(const bwd_problem &P, fa_dtype dt, const std::vector<float> &q,
                                     const std::vector<float> &k, const std::vector<float> &v,
                                     const std::vector<float> &o_lp, const std::vector<float> &dout,
                                     const std::vector<float> &lse, std::vector<float> &dq,
                                     std::vector<float> &dk, std::vector<float> &dv)
{
    const int d = P.d, H = P.h, HK = P.hk, G = P.h / P.hk;
    const float pdrop = P.c->dropout, rp = fa_dropout_rescale(pdrop);
    const uint32_t thr = fa_dropout_threshold(pdrop);
    const float cap = P.c->softcap;
    dq.assign((size_t)(P.rows_q * H * d), 0.f);
    dk.assign((size_t)(P.rows_k * HK * d), 0.f);
    dv.assign((size_t)(P.rows_k * HK * d), 0.f);
    std::vector<float> dqa((size_t)d), dka, dva;
    for (int bi = 0; bi < P.b; ++bi) {
        int64_t q0, k0;
        int sq, sk;
        bwd_seq_bounds(P, bi, &q0, &sq, &k0, &sk);
        for (int hk = 0; hk < HK; ++hk) {
            dka.assign((size_t)sk * d, 0.f);
            dva.assign((size_t)sk * d, 0.f);
            for (int hh = hk * G; hh < (hk + 1) * G; ++hh) {
                const float slope = P.alibi.empty() ? 0.f
                                    : P.alibi[(size_t)((P.c->alibi == 2 ? bi * H : 0) + hh)];
                for (int i = 0; i < sq; ++i) {
                    const float *qi = &q[(size_t)(((q0 + i) * H + hh) * d)];
                    const float *doi = &dout[(size_t)(((q0 + i) * H + hh) * d)];
                    const float *oi = &o_lp[(size_t)(((q0 + i) * H + hh) * d)];
                    const int64_t li = P.varlen ? (int64_t)hh * P.rows_q + q0 + i
                                                : ((int64_t)bi * H + hh) * P.max_sq + i;
                    const float L = lse[(size_t)li];
                    float D = 0.f;
                    for (int c = 0; c < d; ++c) D += oi[c] * doi[c];
                    std::fill(dqa.begin(), dqa.end(), 0.f);
                    int64_t lo, hi;
                    fa_mask_bounds(i, sq, sk, P.c->wl, P.c->wr, &lo, &hi);
                    for (int j = (int)std::max<int64_t>(lo, 0); j <= hi && j < sk; ++j) {
                        const float *kj = &k[(size_t)(((k0 + j) * HK + hk) * d)];
                        const float *vj = &v[(size_t)(((k0 + j) * HK + hk) * d)];
                        double dot = 0.0, dpd = 0.0;
                        for (int c = 0; c < d; ++c) {
                            dot += (double)qi[c] * kj[c];
                            dpd += (double)doi[c] * vj[c];
                        }
                        float s = (float)dot * P.scale, dt2 = 1.f;
                        if (cap > 0.f) {
                            const float th = tanhf(s / cap);
                            s = cap * th;
                            dt2 = 1.f - th * th;
                        }
                        s += -slope * (float)abs(i + sk - sq - j);
                        const float p = L == -INFINITY ? 0.f : expf(s - L);
                        const bool keep = pdrop > 0.f
                                              ? fa_dropout_keep(P.seed, P.offset, bi, hh, i, j, thr)
                                              : true;
                        const float pz = check_round(dt, keep ? p * rp : 0.f);
                        const float ds =
                            check_round(dt, p * dt2 * ((keep ? (float)dpd * rp : 0.f) - D));
                        for (int c = 0; c < d; ++c) {
                            dva[(size_t)j * d + c] += pz * doi[c];
                            dka[(size_t)j * d + c] += ds * qi[c];
                            dqa[(size_t)c] += ds * kj[c];
                        }
                    }
                    for (int c = 0; c < d; ++c)
                        dq[(size_t)(((q0 + i) * H + hh) * d + c)] = check_round(dt, dqa[(size_t)c] * P.scale);
                }
            }
            for (int j = 0; j < sk; ++j)
                for (int c = 0; c < d; ++c) {
                    dk[(size_t)(((k0 + j) * HK + hk) * d + c)] = check_round(dt, dka[(size_t)j * d + c] * P.scale);
                    dv[(size_t)(((k0 + j) * HK + hk) * d + c)] = check_round(dt, dva[(size_t)j * d + c]);
                }
        }
    }
}

/* ---- comparison and the pass rule --------------------------------------------------------- */
typedef struct bwd_errstat {
    double max_err, max_ref;  /* max |x - ref|, max |ref| */
    int64_t nonfinite;        /* NaN / inf elements of x (poison that was never overwritten) */
} bwd_errstat;

/* max |x - ref| and max |ref| over the finite elements of x; the others are counted */
static inline bwd_errstat bwd_compare(const std::vector<float> &x /* (n,) */, const std::vector<float> &ref /* (n,) */)
{
    bwd_errstat e = {0.0, 0.0, 0};
    for (size_t i = 0; i < ref.size(); ++i) {
        if (!isfinite(x[i])) {
            ++e.nonfinite;
            continue;
        }
        e.max_err = std::max(e.max_err, (double)fabsf(x[i] - ref[i]));
        e.max_ref = std::max(e.max_ref, (double)fabsf(ref[i]));
    }
    return e;
}

/* The baseline must itself agree with the oracle, else the bar below means nothing: finite, and
 * within 32 half-ulps of the largest gradient (of 0.01 at least). eps: check_half_ulp(dtype). */
static inline int bwd_baseline_ok(const bwd_errstat *base, double eps)
{
    return !(base->nonfinite || base->max_err > 32.0 * eps * std::max(base->max_ref, 0.01));
}

/* The bar a gradient under test must meet, after FlashAttention's test rule: 3x the baseline's
 * max error plus half an ulp of the largest gradient. Gradients that are exactly 0 in exact
 * arithmetic (e.g. one visible key per row) still pick up rounding noise: the floor is half an
 * ulp of 0.01 at least. */
static inline double bwd_bar(const bwd_errstat *base, double eps)
{
    return 3.0 * base->max_err + eps * std::max(base->max_ref, 0.01);
}

#endif /* DEV_BWD_ORACLE_H */
