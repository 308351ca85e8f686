/* test_fa.c - C-only test harness of the flash_attn_c CPU backend (no torch, no Python).
 *
 * Build and run (see tests/c/Makefile; `make -C tests/c help` lists the targets):
 *   cc -std=c11 -O2 -Wall -Wextra -pedantic -march=native -Icsrc/include -Icsrc/cpu \
 *      tests/c/test_fa.c csrc/cpu/\*.c -lm -o test_fa && ./test_fa [-v] [-s seed]
 *
 * What it checks:
 *   - Philox4x32-10 known-answer vectors, the dropout mask entry point and its keep rate;
 *   - fp16 / bf16 conversions (exhaustive round trips, round-to-nearest-even at every tie,
 *     subnormals, overflow, NaN) and the vector row conversions against the scalar ones;
 *   - the vector exp2 (ulp error) and tanh;
 *   - fa_check_params and the CPU entry points on bad parameters;
 *   - a central finite-difference check of the reference backward (fp32 in/out, tiny sizes);
 *   - tiled forward and backward against the reference in fp32, fp16 and bf16 on awkward sizes
 *     and every feature (causal, windows, GQA/MQA, varlen with empty sequences, ALiBi (h) and
 *     (b, h), softcap, dropout, the probabilities output, strided layouts, sk = 0), with every
 *     output poisoned with NaN before each call, padding between rows checked untouched,
 *     results checked independent of the work split, and the backward checked bitwise
 *     deterministic.
 * The last line is exactly "N passed, N failed"; the exit status is non-zero on any failure.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flash_attn_c.h"
#include "fa_convert.h"
#include "fa_simd.h"
#include "fa_gemm.h"

static int g_pass, g_fail, g_verbose;

static void check(int ok, const char *fmt, ...)
{
    va_list ap;
    if (ok) {
        ++g_pass;
        if (!g_verbose) return;
        printf("  ok    ");
    } else {
        ++g_fail;
        printf("  FAIL  ");
    }
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
}

/* ---- deterministic random numbers ------------------------------------------------------- */
static uint64_t g_rng = 0x243f6a8885a308d3ull;

static uint64_t rng_u64(void)
{
    g_rng ^= g_rng >> 12;
    g_rng ^= g_rng << 25;
    g_rng ^= g_rng >> 27;
    return g_rng * 0x2545f4914f6cdd1dull;
}
static double rng_uniform(void) { return (double)(rng_u64() >> 11) * (1.0 / 9007199254740992.0); }
static double rng_normal(void)
{
    double u1 = rng_uniform(), u2 = rng_uniform();
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}
static int64_t rng_int(int64_t n) { return (int64_t)(rng_u64() % (uint64_t)n); }

static const char *dtype_name(fa_dtype dt) { return dt == FA_F32 ? "fp32" : dt == FA_F16 ? "fp16" : "bf16"; }

/* ================================ Philox and dropout ====================================== */
static void test_philox(void)
{
    struct { uint32_t c[4], k[2], r[4]; } kat[3] = {
        {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}},
        {{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}, {0xffffffffu, 0xffffffffu},
         {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}},
        {{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}, {0xa4093822u, 0x299f31d0u},
         {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}},
    };
    int t;
    printf("philox4x32-10 known answers\n");
    for (t = 0; t < 3; ++t) {
        fa_u32x4 c, r;
        c.x = kat[t].c[0]; c.y = kat[t].c[1]; c.z = kat[t].c[2]; c.w = kat[t].c[3];
        r = fa_philox4x32_10(c, kat[t].k[0], kat[t].k[1]);
        check(r.x == kat[t].r[0] && r.y == kat[t].r[1] && r.z == kat[t].r[2] && r.w == kat[t].r[3],
              "philox KAT %d: got %08x %08x %08x %08x", t, r.x, r.y, r.z, r.w);
    }
}

static void test_dropout_mask(void)
{
    int64_t b = 2, h = 3, sq = 5, sk = 11, bi, hi, i, j, bad = 0, kept = 0, n;
    uint8_t *m = malloc((size_t)(b * h * sq * sk));
    uint8_t *big, *other;
    uint64_t seed = 0x123456789abcdefull, off = 0xfedcba9876543210ull;
    float pdrop = 0.3f;
    uint32_t thr = fa_dropout_threshold(pdrop);
    printf("dropout mask\n");
    memset(m, 7, (size_t)(b * h * sq * sk));
    fa_dropout_mask_cpu(seed, off, pdrop, b, h, sq, sk, m);
    for (bi = 0; bi < b; ++bi)
        for (hi = 0; hi < h; ++hi)
            for (i = 0; i < sq; ++i)
                for (j = 0; j < sk; ++j)
                    if (m[((bi * h + hi) * sq + i) * sk + j] != fa_dropout_keep(seed, off, bi, hi, i, j, thr)) ++bad;
    check(bad == 0, "fa_dropout_mask_cpu == fa_dropout_keep element by element (%lld mismatches)", (long long)bad);
    free(m);

    n = 2 * 256 * 257;
    big = malloc((size_t)n);
    other = malloc((size_t)n);
    fa_dropout_mask_cpu(seed, off, pdrop, 1, 2, 256, 257, big);
    for (i = 0; i < n; ++i) kept += big[i];
    {
        /* p = 0.3 drops t / 256 = 77 / 256 (fa_dropout_threshold: p quantised to 1/256) */
        double q = 1.0 - (double)thr / 256.0;
        double rate = (double)kept / (double)n, sd = sqrt(q * (1.0 - q) / (double)n);
        check(thr == 77u, "fa_dropout_threshold(0.3) = %u (77 = round(0.3 * 256))", (unsigned)thr);
        check(fabs(rate - q) < 6.0 * sd, "keep rate %.5f for p = 0.3 (%.5f, 6 sigma = %.5f)", rate, q, 6.0 * sd);
    }
    fa_dropout_mask_cpu(seed, off + 1, pdrop, 1, 2, 256, 257, other);
    for (i = 0, bad = 0; i < n; ++i) bad += big[i] != other[i];
    check(bad > n / 4, "a different offset gives a different mask (%lld of %lld differ)", (long long)bad, (long long)n);
    fa_dropout_mask_cpu(seed, off, 0.0f, 1, 2, 256, 257, other);
    for (i = 0, kept = 0; i < n; ++i) kept += other[i];
    check(kept == n, "p = 0 keeps everything");
    free(big);
    free(other);
}

/* ================================ conversions ============================================ */
static double f16_value(uint16_t h) { return (double)fa_f16_to_f32(h); }

static void test_conversions(void)
{
    uint32_t h;
    int64_t bad_rt = 0, bad_round = 0, bad_bf = 0, bad_bfround = 0, bad_row = 0;
    printf("fp16 / bf16 conversions\n");
    /* fp16: every code round-trips; NaN stays NaN */
    for (h = 0; h < 65536u; ++h) {
        float f = fa_f16_to_f32((uint16_t)h);
        uint16_t back = fa_f32_to_f16(f);
        int nan = (h & 0x7c00u) == 0x7c00u && (h & 0x3ffu);
        if (nan ? !(f != f && (back & 0x7c00u) == 0x7c00u && (back & 0x3ffu)) : back != h) ++bad_rt;
    }
    check(bad_rt == 0, "fp16 -> fp32 -> fp16 round trip of all 65536 codes (%lld bad)", (long long)bad_rt);
    /* fp16 rounding: at, just below, exactly at and just above every midpoint */
    for (h = 0; h < 0x7c00u; ++h) {
        int s;
        for (s = 0; s < 2; ++s) {
            uint16_t code = (uint16_t)(h | (s ? 0x8000u : 0u));
            double a = f16_value((uint16_t)h), bnext = h == 0x7bffu ? 65536.0 : f16_value((uint16_t)(h + 1));
            float mid = (float)((a + bnext) / 2.0); /* exact: 12 significant bits */
            float lo = nextafterf(mid, 0.0f), hi = nextafterf(mid, INFINITY);
            uint16_t even = (h & 1u) ? (uint16_t)(h + 1) : (uint16_t)h;
            uint16_t sign = (uint16_t)(s ? 0x8000u : 0u);
            float sg = s ? -1.0f : 1.0f;
            if (fa_f32_to_f16(sg * (float)a) != code) ++bad_round;
            if (fa_f32_to_f16(sg * lo) != code) ++bad_round;
            if (fa_f32_to_f16(sg * mid) != (uint16_t)(even | sign)) ++bad_round;
            if (fa_f32_to_f16(sg * hi) != (uint16_t)((h + 1) | sign)) ++bad_round;
        }
    }
    check(bad_round == 0, "fp32 -> fp16 round to nearest even at every midpoint incl. subnormals and overflow (%lld bad)",
          (long long)bad_round);
    check(fa_f32_to_f16(1e-10f) == 0 && fa_f32_to_f16(-1e-10f) == 0x8000u && fa_f32_to_f16(1e6f) == 0x7c00u &&
              fa_f32_to_f16(-INFINITY) == 0xfc00u && fa_f32_to_f16(65504.0f) == 0x7bffu,
          "fp16 underflow to signed zero, overflow to inf");
    check((fa_f32_to_f16(NAN) & 0x7e00u) == 0x7e00u, "fp16 NaN is a quiet NaN");

    /* bf16: every code round-trips, rounding at every midpoint of the positive finite codes */
    for (h = 0; h < 65536u; ++h) {
        float f = fa_bf16_to_f32((uint16_t)h);
        uint16_t back = fa_f32_to_bf16(f);
        int nan = (h & 0x7f80u) == 0x7f80u && (h & 0x7fu);
        if (nan ? !(f != f && (back & 0x7fc0u) == 0x7fc0u) : back != h) ++bad_bf;
        if (h < 0x7f7fu) {
            uint32_t a = h << 16;
            uint32_t mid = a + 0x8000u, lo = mid - 1u, hi = mid + 1u;
            uint16_t even = (h & 1u) ? (uint16_t)(h + 1) : (uint16_t)h;
            if (fa_f32_to_bf16(fa_bits_f32(lo)) != h) ++bad_bfround;
            if (fa_f32_to_bf16(fa_bits_f32(mid)) != even) ++bad_bfround;
            if (fa_f32_to_bf16(fa_bits_f32(hi)) != h + 1) ++bad_bfround;
        }
    }
    check(bad_bf == 0, "bf16 -> fp32 -> bf16 round trip of all 65536 codes (%lld bad)", (long long)bad_bf);
    check(bad_bfround == 0, "fp32 -> bf16 round to nearest even at every midpoint (%lld bad)", (long long)bad_bfround);
    check(fa_f32_to_bf16(3.4e38f) == 0x7f80u && (fa_f32_to_bf16(-NAN) & 0x7fc0u) == 0x7fc0u &&
              fa_f32_to_bf16(1e-40f) == 0x0001u,
          "bf16 overflow to inf, quiet NaN, subnormals kept");

    /* the (vector) row conversions agree bit for bit with the scalar ones */
    {
        enum { N = 77 };
        float src[N], back[N];
        uint16_t got[N];
        int t, dt, n, i;
        for (t = 0; t < 200; ++t) {
            for (i = 0; i < N; ++i) {
                uint32_t bits = (uint32_t)rng_u64();
                int kind = (int)rng_int(8);
                float f = kind < 3 ? fa_bits_f32(bits) /* anything, NaN included */
                        : kind < 6 ? (float)(rng_normal() * pow(2.0, (double)rng_int(60) - 40.0))
                        : kind == 6 ? (float)rng_normal() * 1e-6f : INFINITY;
                src[i] = f;
            }
            n = (int)rng_int(N + 1);
            for (dt = 1; dt <= 2; ++dt) {
                fa_row_from_f32((fa_dtype)dt, src, got, n, 1.0f);
                for (i = 0; i < n; ++i)
                    if (got[i] != (dt == 1 ? fa_f32_to_f16(src[i]) : fa_f32_to_bf16(src[i]))) ++bad_row;
                fa_row_to_f32((fa_dtype)dt, got, back, n, 1.0f);
                for (i = 0; i < n; ++i) {
                    float e = dt == 1 ? fa_f16_to_f32(got[i]) : fa_bf16_to_f32(got[i]);
                    if (fa_f32_bits(e) != fa_f32_bits(back[i])) ++bad_row;
                }
            }
        }
    }
    check(bad_row == 0, "vector row conversions (%s) == scalar conversions, bit for bit (%lld bad)", FA_SIMD_NAME,
          (long long)bad_row);
}

/* ================================ exp2 and tanh =========================================== */
static void test_exp2_tanh(void)
{
    enum { N = 200000 };
    float xs[FA_VL], ys[FA_VL];
    double max_ulp = 0.0, max_sub = 0.0, max_tanh = 0.0, max_tanh_rel = 0.0, max_stanh_rel = 0.0;
    int64_t t;
    int l;
    printf("vector exp2 / tanh (%s)\n", FA_SIMD_NAME);
    for (t = 0; t < N; t += FA_VL) {
        for (l = 0; l < FA_VL; ++l)
            xs[l] = (t + l) % 2 ? (float)(-160.0 + 290.0 * rng_uniform()) : (float)(-3.0 + 6.0 * rng_uniform());
        fa_vstore(ys, fa_vexp2(fa_vload(xs)));
        for (l = 0; l < FA_VL; ++l) {
            double ref = exp2((double)xs[l]);
            if (ref >= 0x1p-126 && ref < 3.4028234663852886e38) {
                double ulp = ldexp(1.0, ilogb(ref) - 23);
                double e = fabs((double)ys[l] - ref) / ulp;
                if (e > max_ulp) max_ulp = e;
            } else if (ref < 0x1p-126) {
                double e = fabs((double)ys[l] - ref) / 0x1p-149;
                if (e > max_sub) max_sub = e;
            } else if (ys[l] != INFINITY) {
                max_ulp = 1e9;
            }
        }
        for (l = 0; l < FA_VL; ++l) xs[l] = (float)(-12.0 + 24.0 * rng_uniform());
        fa_vstore(ys, fa_vtanh(fa_vload(xs)));
        for (l = 0; l < FA_VL; ++l) {
            double e = fabs((double)ys[l] - tanh((double)xs[l]));
            if (e > max_tanh) max_tanh = e;
        }
        /* relative error, |x| log-uniform in [1e-6, 12] (softcap >> |s| puts tanh's argument near 0,
         * where an absolute error would be all of the result), both the vector and the scalar tanh */
        for (l = 0; l < FA_VL; ++l)
            xs[l] = (float)((l % 2 ? -1.0 : 1.0) * exp(log(1e-6) + (log(12.0) - log(1e-6)) * rng_uniform()));
        fa_vstore(ys, fa_vtanh(fa_vload(xs)));
        for (l = 0; l < FA_VL; ++l) {
            double ref = tanh((double)xs[l]);
            double e = fabs((double)ys[l] - ref) / fabs(ref);
            double es = fabs((double)fa_scalar_tanh(xs[l]) - ref) / fabs(ref);
            if (e > max_tanh_rel) max_tanh_rel = e;
            if (es > max_stanh_rel) max_stanh_rel = es;
        }
    }
    check(max_ulp <= 2.0, "exp2 max error %.3f ulp over normal results (limit 2)", max_ulp);
    check(max_sub <= 1.0, "exp2 max error %.3f subnormal ulp over subnormal results (limit 1)", max_sub);
    check(max_tanh <= 2.5e-7, "tanh max abs error %.3g (limit 2.5e-7)", max_tanh);
    check(max_tanh_rel <= 3.6e-7, "tanh max relative error %.3g over |x| in [1e-6, 12] (limit 3.6e-7: 3 ulp)",
          max_tanh_rel);
    check(max_stanh_rel <= 3.6e-7, "scalar tanh max relative error %.3g over |x| in [1e-6, 12] (limit 3.6e-7)",
          max_stanh_rel);
    for (l = 0; l < FA_VL; ++l) xs[l] = l % 4 == 0 ? -INFINITY : l % 4 == 1 ? 200.0f : l % 4 == 2 ? (float)(l - 8) : NAN;
    fa_vstore(ys, fa_vexp2(fa_vload(xs)));
    {
        int ok = 1;
        for (l = 0; l < FA_VL; ++l) {
            if (l % 4 == 0) ok &= ys[l] == 0.0f;
            if (l % 4 == 1) ok &= ys[l] == INFINITY;
            if (l % 4 == 2) ok &= ys[l] == (float)ldexp(1.0, l - 8);
            if (l % 4 == 3) ok &= ys[l] != ys[l];
        }
        check(ok, "exp2(-inf) = 0, exp2(200) = inf, exp2(integer) exact, exp2(NaN) = NaN");
    }
}

/* ================================ attention problems ====================================== */
typedef struct cfg {
    const char *name;
    int64_t b, sq, sk, h, hk, d;
    const int32_t *lq, *lk; /* varlen sequence lengths (b each); NULL = dense */
    int64_t wl, wr;         /* window; causal = (-1, 0) */
    float softcap, scale;   /* scale 0 = 1/sqrt(d) */
    float dropout;
    int alibi;              /* 0 none, 1 slopes (h,), 2 slopes (b, h) */
    int probs;              /* request the probabilities output */
    int64_t pad;            /* extra elements between heads / rows / batches (strided layout) */
} cfg;

/* a (b, s, heads, d) or (total, heads, d) tensor with padding between heads, rows and batches */
typedef struct tens {
    void *data;
    int64_t n;          /* allocated elements */
    int64_t bs, rs, hs; /* strides */
    int64_t heads;
    int is_k;           /* indexed by the key sequence (k, v, dk, dv) */
} tens;

typedef struct prob {
    cfg c;
    fa_dtype dt;
    fa_params p;
    int32_t *cuq, *cuk;
    int64_t total_q, total_k;
    tens q, k, v, o, dout, dq, dk, dv;
    float *lse;
    int64_t n_lse;
    void *probs;
    int64_t n_probs;
    float *slopes;
    void *ws;
    size_t ws_bytes;
} prob;

static int64_t seq_len(const prob *P, int is_k, int64_t b)
{
    if (P->cuq) return is_k ? P->cuk[b + 1] - P->cuk[b] : P->cuq[b + 1] - P->cuq[b];
    return is_k ? P->c.sk : P->c.sq;
}

static int64_t tens_off(const prob *P, const tens *t, int64_t b, int64_t i, int64_t hh, int64_t c)
{
    int64_t row = P->cuq ? (t->is_k ? P->cuk[b] : P->cuq[b]) + i : i;
    return (P->cuq ? 0 : b * t->bs) + row * t->rs + hh * t->hs + c;
}

static void poison(void *buf, int64_t n, fa_dtype dt)
{
    int64_t i;
    for (i = 0; i < n; ++i) {
        if (dt == FA_F32) ((uint32_t *)buf)[i] = 0xffc5a5a5u;
        else if (dt == FA_F16) ((uint16_t *)buf)[i] = 0xfe5au;
        else ((uint16_t *)buf)[i] = 0xffa5u;
    }
}

static int is_poison(const void *buf, int64_t i, fa_dtype dt)
{
    if (dt == FA_F32) return ((const uint32_t *)buf)[i] == 0xffc5a5a5u;
    if (dt == FA_F16) return ((const uint16_t *)buf)[i] == 0xfe5au;
    return ((const uint16_t *)buf)[i] == 0xffa5u;
}

static void tens_init(prob *P, tens *t, int64_t heads, int is_k)
{
    int64_t seq = is_k ? P->c.sk : P->c.sq, rows = is_k ? P->total_k : P->total_q, pad = P->c.pad;
    t->heads = heads;
    t->is_k = is_k;
    t->hs = P->c.d + pad;
    t->rs = heads * t->hs + 2 * pad;
    t->bs = seq * t->rs + 3 * pad;
    t->n = (P->cuq ? rows * t->rs : P->c.b * t->bs) + 1;
    t->data = malloc((size_t)(t->n * fa_dtype_size(P->dt)));
    poison(t->data, t->n, P->dt);
}

/* logical elements in (b, head, i, c) order, as double; returns the count */
static int64_t gather(const prob *P, const tens *t, double *out)
{
    int64_t b, hh, i, c, n = 0;
    for (b = 0; b < P->c.b; ++b)
        for (hh = 0; hh < t->heads; ++hh)
            for (i = 0; i < seq_len(P, t->is_k, b); ++i)
                for (c = 0; c < P->c.d; ++c) out[n++] = (double)fa_load1(P->dt, t->data, tens_off(P, t, b, i, hh, c));
    return n;
}

static void fill_random(prob *P, tens *t)
{
    int64_t b, hh, i, c;
    for (b = 0; b < P->c.b; ++b)
        for (hh = 0; hh < t->heads; ++hh)
            for (i = 0; i < seq_len(P, t->is_k, b); ++i)
                for (c = 0; c < P->c.d; ++c)
                    fa_store1(P->dt, t->data, tens_off(P, t, b, i, hh, c), (float)rng_normal());
}

/* number of elements outside the logical ones that are no longer poison */
static int64_t padding_written(const prob *P, const tens *t)
{
    char *logical = calloc((size_t)t->n, 1);
    int64_t b, hh, i, c, e, bad = 0;
    for (b = 0; b < P->c.b; ++b)
        for (hh = 0; hh < t->heads; ++hh)
            for (i = 0; i < seq_len(P, t->is_k, b); ++i)
                for (c = 0; c < P->c.d; ++c) logical[tens_off(P, t, b, i, hh, c)] = 1;
    for (e = 0; e < t->n; ++e)
        if (!logical[e] && !is_poison(t->data, e, P->dt)) ++bad;
    free(logical);
    return bad;
}

static void set_tens(const tens *t, const void **data, int64_t *bs, int64_t *rs, int64_t *hs)
{
    *data = t->data;
    *bs = t->bs;
    *rs = t->rs;
    *hs = t->hs;
}

static void prob_init(prob *P, const cfg *c, fa_dtype dt)
{
    fa_params *p = &P->p;
    int64_t b;
    memset(P, 0, sizeof *P);
    P->c = *c;
    P->dt = dt;
    if (c->lq) {
        P->cuq = malloc((size_t)(c->b + 1) * sizeof(int32_t));
        P->cuk = malloc((size_t)(c->b + 1) * sizeof(int32_t));
        P->cuq[0] = P->cuk[0] = 0;
        P->c.sq = P->c.sk = 0;
        for (b = 0; b < c->b; ++b) {
            P->cuq[b + 1] = P->cuq[b] + c->lq[b];
            P->cuk[b + 1] = P->cuk[b] + c->lk[b];
            if (c->lq[b] > P->c.sq) P->c.sq = c->lq[b];
            if (c->lk[b] > P->c.sk) P->c.sk = c->lk[b];
        }
        P->total_q = P->cuq[c->b];
        P->total_k = P->cuk[c->b];
    } else {
        P->total_q = c->b * c->sq;
        P->total_k = c->b * c->sk;
    }
    tens_init(P, &P->q, c->h, 0);
    tens_init(P, &P->o, c->h, 0);
    tens_init(P, &P->dout, c->h, 0);
    tens_init(P, &P->dq, c->h, 0);
    tens_init(P, &P->k, c->hk, 1);
    tens_init(P, &P->v, c->hk, 1);
    tens_init(P, &P->dk, c->hk, 1);
    tens_init(P, &P->dv, c->hk, 1);
    fill_random(P, &P->q);
    fill_random(P, &P->k);
    fill_random(P, &P->v);
    fill_random(P, &P->dout);
    P->n_lse = c->lq ? c->h * P->total_q : c->b * c->h * P->c.sq;
    P->lse = malloc((size_t)(P->n_lse + 1) * sizeof(float));
    P->n_probs = c->b * c->h * P->c.sq * P->c.sk;
    P->probs = malloc((size_t)(P->n_probs + 1) * sizeof(float));
    P->slopes = malloc((size_t)(c->b * (c->h + 1) + 1) * sizeof(float));
    for (b = 0; b < c->b * (c->h + 1); ++b) P->slopes[b] = (float)(0.05 + 0.6 * rng_uniform());

    memset(p, 0, sizeof *p);
    p->dtype = dt;
    p->batch = c->b;
    p->seqlen_q = P->c.sq;
    p->seqlen_k = P->c.sk;
    p->heads = c->h;
    p->heads_k = c->hk;
    p->head_dim = c->d;
    p->total_q = P->total_q;
    set_tens(&P->q, &p->q, &p->q_batch_stride, &p->q_row_stride, &p->q_head_stride);
    set_tens(&P->k, &p->k, &p->k_batch_stride, &p->k_row_stride, &p->k_head_stride);
    set_tens(&P->v, &p->v, &p->v_batch_stride, &p->v_row_stride, &p->v_head_stride);
    set_tens(&P->o, (const void **)&p->o, &p->o_batch_stride, &p->o_row_stride, &p->o_head_stride);
    set_tens(&P->dout, &p->dout, &p->do_batch_stride, &p->do_row_stride, &p->do_head_stride);
    set_tens(&P->dq, (const void **)&p->dq, &p->dq_batch_stride, &p->dq_row_stride, &p->dq_head_stride);
    set_tens(&P->dk, (const void **)&p->dk, &p->dk_batch_stride, &p->dk_row_stride, &p->dk_head_stride);
    set_tens(&P->dv, (const void **)&p->dv, &p->dv_batch_stride, &p->dv_row_stride, &p->dv_head_stride);
    p->lse = P->lse;
    p->p = c->probs ? P->probs : NULL;
    p->cu_seqlens_q = P->cuq;
    p->cu_seqlens_k = P->cuk;
    p->softmax_scale = c->scale > 0.0f ? c->scale : (float)(1.0 / sqrt((double)c->d));
    p->softcap = c->softcap;
    p->window_left = c->wl;
    p->window_right = c->wr;
    if (c->alibi) {
        p->alibi_slopes = P->slopes;
        p->alibi_batch_stride = c->alibi == 2 ? c->h + 1 : 0;
    }
    p->dropout_p = c->dropout;
    p->seed = 0x0123456789abcdefull ^ (uint64_t)c->d;
    p->offset = 0x1000000000ull + (uint64_t)c->sq;
    P->ws_bytes = fa_bwd_cpu_workspace_bytes(p);
    P->ws = malloc(P->ws_bytes + 4);
    p->workspace = P->ws;
    p->workspace_bytes = P->ws_bytes;
}

static void prob_free(prob *P)
{
    tens *ts[8];
    int i;
    ts[0] = &P->q; ts[1] = &P->k; ts[2] = &P->v; ts[3] = &P->o;
    ts[4] = &P->dout; ts[5] = &P->dq; ts[6] = &P->dk; ts[7] = &P->dv;
    for (i = 0; i < 8; ++i) free(ts[i]->data);
    free(P->lse); free(P->probs); free(P->slopes); free(P->ws); free(P->cuq); free(P->cuk);
}

static void poison_fwd_outputs(prob *P)
{
    int64_t i;
    poison(P->o.data, P->o.n, P->dt);
    for (i = 0; i < P->n_lse; ++i) P->lse[i] = NAN;
    poison(P->probs, P->n_probs, P->dt);
}

static void poison_bwd_outputs(prob *P)
{
    poison(P->dq.data, P->dq.n, P->dt);
    poison(P->dk.data, P->dk.n, P->dt);
    poison(P->dv.data, P->dv.n, P->dt);
    poison(P->ws, (int64_t)(P->ws_bytes / 4), FA_F32);
}

/* Run [0, n) in pieces: split 0 = one call, 1 = random chunks, 2 = one item at a time backwards. */
static fa_status run_fwd(const fa_params *p, int split)
{
    int64_t n = fa_fwd_cpu_work_items(p), i = 0;
    fa_status st = FA_OK;
    if (split == 0 || n == 0) return fa_fwd_cpu(p, 0, n);
    if (split == 2) {
        for (i = n - 1; i >= 0 && st == FA_OK; --i) st = fa_fwd_cpu(p, i, i + 1);
        return st;
    }
    while (i < n && st == FA_OK) {
        int64_t e = i + 1 + rng_int(7);
        st = fa_fwd_cpu(p, i, e > n ? n : e);
        i = e;
    }
    return st;
}

static fa_status run_bwd(const fa_params *p, int split)
{
    int phase;
    fa_status st = FA_OK;
    for (phase = 0; phase < FA_BWD_CPU_PHASES && st == FA_OK; ++phase) {
        int64_t n = fa_bwd_cpu_work_items(p, phase), i = 0;
        if (split == 0) {
            st = fa_bwd_cpu(p, phase, 0, n);
        } else if (split == 2) {
            for (i = n - 1; i >= 0 && st == FA_OK; --i) st = fa_bwd_cpu(p, phase, i, i + 1);
        } else {
            while (i < n && st == FA_OK) {
                int64_t e = i + 1 + rng_int(5);
                st = fa_bwd_cpu(p, phase, i, e > n ? n : e);
                i = e;
            }
        }
    }
    return st;
}

/* max |got - ref| / max |ref| over finite entries; -1 when NaN / inf placement differs */
static double rel_err(const double *got, const double *ref, int64_t n)
{
    double maxabs = 0.0, maxerr = 0.0;
    int64_t i;
    for (i = 0; i < n; ++i) {
        if (isnan(ref[i]) || isnan(got[i])) {
            if (!(isnan(ref[i]) && isnan(got[i]))) return -1.0;
            continue;
        }
        if (isinf(ref[i]) || isinf(got[i])) {
            if (ref[i] != got[i]) return -1.0;
            continue;
        }
        if (fabs(ref[i]) > maxabs) maxabs = fabs(ref[i]);
        if (fabs(got[i] - ref[i]) > maxerr) maxerr = fabs(got[i] - ref[i]);
    }
    return maxabs > 0.0 ? maxerr / maxabs : maxerr;
}

static int64_t tens_count(const prob *P, const tens *t)
{
    int64_t b, n = 0;
    for (b = 0; b < P->c.b; ++b) n += seq_len(P, t->is_k, b) * t->heads * P->c.d;
    return n;
}

/* Tolerances on the max-normalised error. The tiled kernels and the reference read the same
 * rounded inputs, so forward outputs differ by fp32 accumulation order plus at most about an
 * ulp of the final rounding: fp32 1e-5, fp16 1.5e-3 (3 eps, eps = 2^-11), bf16 1e-2 (2.6 eps,
 * eps = 2^-8). Gradients also inherit FlashAttention's D = rowsum(dO o O) computed from the
 * stored, rounded O, which cancellation in dP - D amplifies: fp32 2e-5, fp16 3e-3 (6 eps),
 * bf16 3e-2 (8 eps). Observed maxima over the fixed cases and 60 random seeds: fwd 1.1e-6 /
 * 3.8e-4 / 1.5e-3, bwd 1.3e-6 / 1.0e-3 / 2.1e-2 (fp32 / fp16 / bf16). */
static double tol_fwd(fa_dtype dt) { return dt == FA_F32 ? 1e-5 : dt == FA_F16 ? 1.5e-3 : 1e-2; }
static double tol_bwd(fa_dtype dt) { return dt == FA_F32 ? 2e-5 : dt == FA_F16 ? 3e-3 : 3e-2; }

static void gather_probs(const prob *P, double *out)
{
    int64_t i;
    for (i = 0; i < P->n_probs; ++i) out[i] = (double)fa_load1(P->dt, P->probs, i);
}

static void test_forward(const cfg *c, fa_dtype dt)
{
    prob P;
    int64_t no, i, b, hh, r, cc, bad_empty = 0, bad_lse = 0, bad_sign = 0;
    double *o_ref, *o_got, *lse_ref, *p_ref = NULL, *p_got = NULL, e_o, e_p = 0.0, e_lse = 0.0;
    fa_status st;
    void *o_copy;
    int64_t rng[2] = {-1, -1};
    prob_init(&P, c, dt);
    no = tens_count(&P, &P.o);
    o_ref = malloc((size_t)(no + 1) * sizeof(double));
    o_got = malloc((size_t)(no + 1) * sizeof(double));
    lse_ref = malloc((size_t)(P.n_lse + 1) * sizeof(double));
    if (c->probs) {
        p_ref = malloc((size_t)(P.n_probs + 1) * sizeof(double));
        p_got = malloc((size_t)(P.n_probs + 1) * sizeof(double));
    }

    poison_fwd_outputs(&P);
    st = fa_fwd_cpu_reference(&P.p);
    check(st == FA_OK, "%s %s: reference forward status %d", c->name, dtype_name(dt), (int)st);
    gather(&P, &P.o, o_ref);
    for (i = 0; i < P.n_lse; ++i) lse_ref[i] = (double)P.lse[i];
    if (c->probs) gather_probs(&P, p_ref);

    poison_fwd_outputs(&P);
    P.p.rng_state = rng;
    st = run_fwd(&P.p, 1);
    P.p.rng_state = NULL;
    check(st == FA_OK, "%s %s: tiled forward status %d", c->name, dtype_name(dt), (int)st);
    check(rng[0] == (int64_t)P.p.seed && rng[1] == (int64_t)P.p.offset, "%s %s: forward writes rng_state {seed, offset}",
          c->name, dtype_name(dt));
    gather(&P, &P.o, o_got);
    e_o = rel_err(o_got, o_ref, no);
    for (i = 0; i < P.n_lse; ++i) {
        double g = (double)P.lse[i], rf = lse_ref[i];
        if (isinf(rf) || isnan(g)) {
            if (g != rf) ++bad_lse;
        } else if (fabs(g - rf) / (1.0 + fabs(rf)) > e_lse) {
            e_lse = fabs(g - rf) / (1.0 + fabs(rf));
        }
    }
    /* rows that see no key: O exactly 0 */
    for (b = 0, r = 0; b < c->b; ++b)
        for (hh = 0; hh < c->h; ++hh)
            for (i = 0; i < seq_len(&P, 0, b); ++i, ++r) {
                int64_t li = P.cuq ? hh * P.total_q + P.cuq[b] + i : (b * c->h + hh) * P.c.sq + i;
                if (lse_ref[li] == -INFINITY)
                    for (cc = 0; cc < c->d; ++cc) bad_empty += o_got[r * c->d + cc] != 0.0;
            }
    if (c->probs) {
        gather_probs(&P, p_got);
        e_p = rel_err(p_got, p_ref, P.n_probs);
        /* sign of P == the dropout mask of fa_dropout_keep wherever P > 0 */
        if (c->dropout > 0.0f) {
            uint32_t thr = fa_dropout_threshold(c->dropout);
            int64_t j;
            for (b = 0; b < c->b; ++b)
                for (hh = 0; hh < c->h; ++hh)
                    for (i = 0; i < seq_len(&P, 0, b); ++i)
                        for (j = 0; j < seq_len(&P, 1, b); ++j) {
                            double v = p_got[((b * c->h + hh) * P.c.sq + i) * P.c.sk + j];
                            int keep = fa_dropout_keep(P.p.seed, P.p.offset, b, hh, i, j, thr);
                            if (v != 0.0 && (v > 0.0) != keep) ++bad_sign;
                        }
        }
    }
    if (g_verbose)
        printf("    %-28s %s: O %.2e  lse %.2e  P %.2e\n", c->name, dtype_name(dt), e_o, e_lse, e_p);
    check(e_o >= 0.0 && e_o <= tol_fwd(dt), "%s %s: forward O rel err %.3g (tol %.3g)", c->name, dtype_name(dt), e_o,
          tol_fwd(dt));
    check(bad_lse == 0 && e_lse <= 2e-5, "%s %s: lse max err %.3g / (1 + |lse|), %lld inf/NaN mismatches",
          c->name, dtype_name(dt), e_lse, (long long)bad_lse);
    check(bad_empty == 0, "%s %s: rows that see no key have O == 0 (%lld bad)", c->name, dtype_name(dt),
          (long long)bad_empty);
    check(padding_written(&P, &P.o) == 0, "%s %s: forward writes nothing outside O's elements", c->name,
          dtype_name(dt));
    if (c->probs) {
        check(e_p >= 0.0 && e_p <= tol_fwd(dt), "%s %s: probabilities rel err %.3g", c->name, dtype_name(dt), e_p);
        check(bad_sign == 0, "%s %s: probabilities negated exactly where dropout drops (%lld bad)", c->name,
              dtype_name(dt), (long long)bad_sign);
    }

    /* the work split does not change a single bit */
    o_copy = malloc((size_t)(P.o.n * fa_dtype_size(dt)));
    memcpy(o_copy, P.o.data, (size_t)(P.o.n * fa_dtype_size(dt)));
    poison_fwd_outputs(&P);
    st = run_fwd(&P.p, 2);
    check(st == FA_OK && memcmp(o_copy, P.o.data, (size_t)(P.o.n * fa_dtype_size(dt))) == 0,
          "%s %s: forward bitwise identical with another work split", c->name, dtype_name(dt));
    free(o_copy);
    free(o_ref); free(o_got); free(lse_ref); free(p_ref); free(p_got);
    prob_free(&P);
}

static void test_backward(const cfg *c, fa_dtype dt)
{
    prob P;
    tens *grads[3];
    const char *names[3] = {"dq", "dk", "dv"};
    double *ref[3], *got[3];
    int64_t n[3];
    void *copy[3];
    int g, same = 1;
    fa_status st;
    prob_init(&P, c, dt);
    P.p.p = NULL;
    grads[0] = &P.dq; grads[1] = &P.dk; grads[2] = &P.dv;
    for (g = 0; g < 3; ++g) {
        n[g] = tens_count(&P, grads[g]);
        ref[g] = malloc((size_t)(n[g] + 1) * sizeof(double));
        got[g] = malloc((size_t)(n[g] + 1) * sizeof(double));
    }
    st = run_fwd(&P.p, 0); /* the tiled backward consumes the tiled forward's O and LSE */
    check(st == FA_OK, "%s %s: forward for backward status %d", c->name, dtype_name(dt), (int)st);

    poison_bwd_outputs(&P);
    st = fa_bwd_cpu_reference(&P.p);
    check(st == FA_OK, "%s %s: reference backward status %d", c->name, dtype_name(dt), (int)st);
    for (g = 0; g < 3; ++g) gather(&P, grads[g], ref[g]);

    poison_bwd_outputs(&P);
    st = run_bwd(&P.p, 1);
    check(st == FA_OK, "%s %s: tiled backward status %d", c->name, dtype_name(dt), (int)st);
    for (g = 0; g < 3; ++g) {
        double e;
        gather(&P, grads[g], got[g]);
        e = rel_err(got[g], ref[g], n[g]);
        if (g_verbose) printf("    %-28s %s: %s %.2e\n", c->name, dtype_name(dt), names[g], e);
        check(e >= 0.0 && e <= tol_bwd(dt), "%s %s: backward %s rel err %.3g (tol %.3g)", c->name, dtype_name(dt),
              names[g], e, tol_bwd(dt));
        check(padding_written(&P, grads[g]) == 0, "%s %s: backward writes nothing outside %s's elements", c->name,
              dtype_name(dt), names[g]);
        copy[g] = malloc((size_t)(grads[g]->n * fa_dtype_size(dt)));
        memcpy(copy[g], grads[g]->data, (size_t)(grads[g]->n * fa_dtype_size(dt)));
    }
    /* deterministic and independent of the split */
    poison_bwd_outputs(&P);
    st = run_bwd(&P.p, 2);
    for (g = 0; g < 3; ++g) same &= memcmp(copy[g], grads[g]->data, (size_t)(grads[g]->n * fa_dtype_size(dt))) == 0;
    check(st == FA_OK && same, "%s %s: backward bitwise identical with another work split", c->name, dtype_name(dt));
    for (g = 0; g < 3; ++g) {
        free(ref[g]);
        free(got[g]);
        free(copy[g]);
    }
    prob_free(&P);
}

/* ================================ finite differences ====================================== */
static double fd_loss(prob *P, const double *dout)
{
    int64_t n = tens_count(P, &P->o), i;
    double *o = malloc((size_t)(n + 1) * sizeof(double)), L = 0.0;
    fa_fwd_cpu_reference(&P->p);
    gather(P, &P->o, o);
    for (i = 0; i < n; ++i) L += o[i] * dout[i];
    free(o);
    return L;
}

static void test_fd(const cfg *c)
{
    prob P;
    tens *ins[3];
    tens *grads[3];
    const char *names[3] = {"q", "k", "v"};
    double *dout;
    int t;
    prob_init(&P, c, FA_F32);
    P.p.p = NULL;
    ins[0] = &P.q; ins[1] = &P.k; ins[2] = &P.v;
    grads[0] = &P.dq; grads[1] = &P.dk; grads[2] = &P.dv;
    dout = malloc((size_t)(tens_count(&P, &P.o) + 1) * sizeof(double));
    gather(&P, &P.dout, dout);
    fa_fwd_cpu_reference(&P.p);
    fa_bwd_cpu_reference(&P.p);
    for (t = 0; t < 3; ++t) {
        int64_t n = tens_count(&P, ins[t]), b, hh, i, cc, e = 0;
        double *g = malloc((size_t)(n + 1) * sizeof(double)), *fd = malloc((size_t)(n + 1) * sizeof(double)), err;
        float *data = (float *)ins[t]->data;
        gather(&P, grads[t], g);
        for (b = 0; b < c->b; ++b)
            for (hh = 0; hh < ins[t]->heads; ++hh)
                for (i = 0; i < seq_len(&P, ins[t]->is_k, b); ++i)
                    for (cc = 0; cc < c->d; ++cc, ++e) {
                        int64_t off = tens_off(&P, ins[t], b, i, hh, cc);
                        float x0 = data[off], xp = x0 + 3e-3f, xm = x0 - 3e-3f;
                        double lp, lm;
                        data[off] = xp;
                        lp = fd_loss(&P, dout);
                        data[off] = xm;
                        lm = fd_loss(&P, dout);
                        data[off] = x0;
                        fd[e] = (lp - lm) / ((double)xp - (double)xm);
                    }
        err = rel_err(fd, g, n);
        if (g_verbose) printf("    fd %-25s d%s %.2e\n", c->name, names[t], err);
        check(err >= 0.0 && err <= 2e-3, "%s: reference d%s vs central differences rel err %.3g (tol 2e-3)", c->name,
              names[t], err);
        free(g);
        free(fd);
    }
    free(dout);
    prob_free(&P);
}

/* ================================ bad parameters ========================================== */
static void test_bad_params(void)
{
    static const int32_t lq[2] = {3, 4}, lk[2] = {4, 2};
    cfg c;
    prob P;
    fa_params p;
    int32_t cu_bad[3];
    int s, distinct = 1;
    printf("bad parameters\n");
    memset(&c, 0, sizeof c);
    c.name = "bad";
    c.b = 1; c.sq = 4; c.sk = 4; c.h = 2; c.hk = 1; c.d = 8; c.wl = -1; c.wr = -1;
    prob_init(&P, &c, FA_F32);
    check(fa_check_params(&P.p, 0) == FA_OK && fa_check_params(&P.p, 1) == FA_OK, "valid params pass");
    check(fa_check_params(NULL, 0) == FA_ERR_NULL_POINTER, "NULL params");
#define BAD(field_stmt, bwd, code, what)                                              \
    do {                                                                              \
        p = P.p;                                                                      \
        field_stmt;                                                                   \
        s = (int)fa_check_params(&p, bwd);                                            \
        check(s == (int)(code), "%s -> %s (got %d: %s)", what, #code, s, fa_status_string((fa_status)s)); \
    } while (0)
    BAD(p.dtype = (fa_dtype)7, 0, FA_ERR_DTYPE, "dtype 7");
    BAD(p.batch = -1, 0, FA_ERR_SHAPE, "batch -1");
    BAD(p.seqlen_q = -1, 0, FA_ERR_SHAPE, "seqlen_q -1");
    BAD(p.seqlen_k = 3000000000LL, 0, FA_ERR_SHAPE, "seqlen_k 3e9");
    BAD(p.heads = 0, 0, FA_ERR_SHAPE, "heads 0");
    BAD(p.heads_k = 0, 0, FA_ERR_SHAPE, "heads_k 0");
    BAD((p.heads = 3, p.heads_k = 2), 0, FA_ERR_HEADS, "heads 3, heads_k 2");
    BAD(p.head_dim = 0, 0, FA_ERR_HEAD_DIM, "head_dim 0");
    BAD(p.head_dim = 257, 0, FA_ERR_HEAD_DIM, "head_dim 257");
    BAD(p.window_left = -2, 0, FA_ERR_WINDOW, "window_left -2");
    BAD(p.window_right = -7, 0, FA_ERR_WINDOW, "window_right -7");
    BAD(p.dropout_p = 1.0f, 0, FA_ERR_DROPOUT, "dropout 1");
    BAD(p.dropout_p = -0.1f, 0, FA_ERR_DROPOUT, "dropout -0.1");
    BAD(p.dropout_p = NAN, 0, FA_ERR_DROPOUT, "dropout NaN");
    BAD(p.softcap = -1.0f, 0, FA_ERR_SOFTCAP, "softcap -1");
    BAD(p.softcap = NAN, 0, FA_ERR_SOFTCAP, "softcap NaN");
    BAD(p.softcap = INFINITY, 0, FA_ERR_SOFTCAP, "softcap inf");
    BAD(p.softcap = 3e38f, 0, FA_ERR_SOFTCAP, "softcap 3e38 (softcap log2e overflows)");
    BAD(p.softcap = 1e-40f, 0, FA_ERR_SOFTCAP, "softcap subnormal");
    BAD(p.softmax_scale = NAN, 0, FA_ERR_SOFTCAP, "softmax_scale NaN");
    BAD(p.softmax_scale = -INFINITY, 0, FA_ERR_SOFTCAP, "softmax_scale -inf");
    BAD(p.softmax_scale = 3e38f, 0, FA_ERR_SOFTCAP, "softmax_scale 3e38 (scale log2e overflows)");
    BAD((p.batch = 1LL << 40, p.seqlen_q = 2147483647LL), 0, FA_ERR_SHAPE, "batch x seqlen_q past 2^31");
    BAD(p.q = NULL, 0, FA_ERR_NULL_POINTER, "q NULL");
    BAD(p.v = NULL, 0, FA_ERR_NULL_POINTER, "v NULL");
    BAD(p.o = NULL, 0, FA_ERR_NULL_POINTER, "o NULL");
    BAD(p.lse = NULL, 0, FA_ERR_NULL_POINTER, "lse NULL");
    BAD(p.dq = NULL, 0, FA_OK, "dq NULL in the forward");
    BAD(p.dq = NULL, 1, FA_ERR_NULL_POINTER, "dq NULL in the backward");
    BAD(p.dout = NULL, 1, FA_ERR_NULL_POINTER, "dout NULL in the backward");
    BAD(p.dv = NULL, 1, FA_ERR_NULL_POINTER, "dv NULL in the backward");
    BAD(p.cu_seqlens_q = lq, 0, FA_ERR_SEQLENS, "only cu_seqlens_q");
    BAD(p.q_row_stride = -1, 0, FA_ERR_STRIDE, "negative q stride");
    BAD(p.dk_head_stride = -1, 1, FA_ERR_STRIDE, "negative dk stride");
    BAD((p.alibi_slopes = P.slopes, p.alibi_batch_stride = 1), 0, FA_ERR_SHAPE, "alibi batch stride 1 < heads");
    BAD((p.batch = 0, p.q = NULL, p.k = NULL, p.v = NULL, p.o = NULL, p.lse = NULL), 0, FA_OK,
        "batch 0 needs no pointers");

    /* CPU entry points: host cu_seqlens, workspace, phase */
    p = P.p;
    p.cu_seqlens_q = cu_bad;
    p.cu_seqlens_k = cu_bad;
    p.total_q = 4;
    p.batch = 2;
    cu_bad[0] = 0; cu_bad[1] = 3; cu_bad[2] = 2;
    check(fa_fwd_cpu(&p, 0, 100) == FA_ERR_SEQLENS, "decreasing cu_seqlens -> FA_ERR_SEQLENS (tiled)");
    check(fa_fwd_cpu_reference(&p) == FA_ERR_SEQLENS, "decreasing cu_seqlens -> FA_ERR_SEQLENS (reference)");
    cu_bad[0] = 0; cu_bad[1] = 1; cu_bad[2] = 7; /* a length-6 sequence, max_seqlen 4 */
    check(fa_fwd_cpu(&p, 0, 100) == FA_ERR_SEQLENS, "sequence longer than max_seqlen -> FA_ERR_SEQLENS");
    cu_bad[0] = 0; cu_bad[1] = 3; cu_bad[2] = 6; /* 6 rows > total_q 4 */
    check(fa_fwd_cpu(&p, 0, 100) == FA_ERR_SEQLENS, "cu_seqlens_q past total_q -> FA_ERR_SEQLENS");
    check(fa_varlen_zero_uncovered_cpu(&p, 0) == FA_ERR_SEQLENS,
          "the uncovered-rows pass checks the parameters too (it may run before the items)");
    {
        /* cu_seqlens_k past total_k: keys (and dk / dv rows) past the buffers */
        static const int32_t cq_ok[3] = {0, 2, 4}, ck_far[3] = {0, 4, 8};
        p.cu_seqlens_q = cq_ok;
        p.cu_seqlens_k = ck_far;
        p.total_k = 5;
        check(fa_fwd_cpu(&p, 0, 100) == FA_ERR_SEQLENS && fa_fwd_cpu_reference(&p) == FA_ERR_SEQLENS,
              "cu_seqlens_k past total_k -> FA_ERR_SEQLENS");
        p.total_k = -7;
        check(fa_fwd_cpu(&p, 0, 100) == FA_ERR_SEQLENS, "total_k < 0 -> FA_ERR_SEQLENS");
    }
    check(fa_fwd_cpu_work_items(&p) == 2 * 2 * 1, "work items of a valid call");
    p = P.p;
    p.head_dim = 0;
    check(fa_fwd_cpu_work_items(&p) == 0 && fa_bwd_cpu_work_items(&p, 1) == 0 && fa_bwd_cpu_workspace_bytes(&p) == 0,
          "invalid params: 0 work items, 0 workspace");
    check(fa_fwd_cpu(&p, 0, 1) == FA_ERR_HEAD_DIM && fa_bwd_cpu(&p, 0, 0, 1) == FA_ERR_HEAD_DIM,
          "entry points return the fa_check_params code");
    p = P.p;
    p.workspace = NULL;
    check(fa_bwd_cpu(&p, 0, 0, 1) == FA_ERR_WORKSPACE, "missing workspace -> FA_ERR_WORKSPACE");
    p.workspace = P.ws;
    p.workspace_bytes = P.ws_bytes - 4;
    check(fa_bwd_cpu(&p, 0, 0, 1) == FA_ERR_WORKSPACE, "small workspace -> FA_ERR_WORKSPACE");
    p.workspace = (char *)P.ws + 4; /* a float-unaligned start */
    p.workspace_bytes = P.ws_bytes - 4;
    check(fa_bwd_cpu(&p, 0, 0, 1) == FA_ERR_WORKSPACE, "unaligned workspace -> FA_ERR_WORKSPACE");
    p = P.p;
    check(fa_bwd_cpu(&p, 3, 0, 1) == FA_ERR_SHAPE && fa_bwd_cpu(&p, -1, 0, 1) == FA_ERR_SHAPE,
          "backward phase outside [0, 3) -> FA_ERR_SHAPE");
    /* D (b h sq = 8 floats, rounded up to 16) + one dQ partial sum (one key block -> one chunk)
     * of b h sq rows x head_dim 8 padded to whole GEMM tiles (FA_GEMM_NB columns) */
    check(fa_bwd_cpu_workspace_bytes(&p) ==
              (size_t)(16 + 1 * 2 * 4 * ((8 + FA_GEMM_NB - 1) / FA_GEMM_NB * FA_GEMM_NB)) * sizeof(float),
          "workspace bytes = D + dQ partial sums, fp32");
    for (s = 0; s < FA_STATUS_COUNT; ++s) {
        int t;
        const char *m = fa_status_string((fa_status)s);
        if (m == NULL || strstr(m, "unknown") != NULL) distinct = 0;
        for (t = 0; t < s; ++t)
            if (strcmp(m, fa_status_string((fa_status)t)) == 0) distinct = 0;
    }
    check(distinct, "every status has its own message");
    check(strstr(fa_status_string(FA_STATUS_COUNT), "unknown") != NULL &&
              strstr(fa_status_string((fa_status)1234), "unknown") != NULL,
          "out-of-range status -> 'unknown'");
    (void)lk;
#undef BAD
    prob_free(&P);
}

/* ================================ main ==================================================== */
static const int32_t LQ1[6] = {0, 17, 64, 1, 0, 130}, LK1[6] = {5, 0, 64, 33, 0, 100};
static const int32_t LQ2[3] = {65, 3, 0}, LK2[3] = {1, 70, 9};
static const int32_t LQ3[2] = {3, 2}, LK3[2] = {4, 5};

#define DENSE(name, b, sq, sk, h, hk, d) name, b, sq, sk, h, hk, d, NULL, NULL
#define VARLEN(name, b, lq, lk, h, hk, d) name, b, 0, 0, h, hk, d, lq, lk

/*  name/sizes                                          wl  wr  cap  scale drop alibi probs pad */
static const cfg CASES[] = {
    {DENSE("basic", 2, 97, 97, 3, 3, 64),                  -1, -1, 0, 0, 0, 0, 0, 0},
    {DENSE("sq<sk", 1, 17, 130, 2, 2, 40),                 -1, -1, 0, 0, 0, 0, 0, 0},
    {DENSE("sq>sk causal (empty rows)", 1, 130, 17, 2, 2, 59), -1, 0, 0, 0, 0, 0, 1, 0},
    {DENSE("causal", 2, 255, 255, 2, 1, 80),               -1, 0, 0, 0, 0, 0, 0, 0},
    {DENSE("causal sq<sk", 1, 65, 300, 2, 2, 32),          -1, 0, 0, 0, 0, 0, 0, 0},
    {DENSE("sq=1 causal", 2, 1, 1025, 2, 2, 8),            -1, 0, 0, 0, 0, 0, 0, 0},
    {DENSE("window (32,0)", 1, 200, 200, 2, 2, 111),       32, 0, 0, 0, 0, 0, 0, 0},
    {DENSE("window (16,16)", 1, 150, 170, 2, 2, 16),       16, 16, 0, 0, 0, 0, 1, 0},
    {DENSE("window (0,0)", 1, 70, 70, 1, 1, 8),            0, 0, 0, 0, 0, 0, 0, 0},
    {DENSE("window (-1,5)", 1, 100, 77, 2, 2, 24),         -1, 5, 0, 0, 0, 0, 0, 0},
    {DENSE("window (7,-1)", 1, 90, 130, 2, 2, 24),         7, -1, 0, 0, 0, 0, 0, 0},
    {DENSE("causal+window (20,0)", 1, 129, 300, 2, 1, 64), 20, 0, 0, 0, 0, 0, 0, 0},
    {DENSE("gqa 6/2", 2, 33, 45, 6, 2, 48),                -1, -1, 0, 0, 0, 0, 0, 0},
    {DENSE("mqa 4/1 causal", 1, 80, 80, 4, 1, 72),         -1, 0, 0, 0, 0, 0, 0, 0},
    {VARLEN("varlen gqa causal", 6, LQ1, LK1, 4, 2, 40),   -1, 0, 0, 0, 0, 0, 1, 0},
    {VARLEN("varlen window (5,3)", 3, LQ2, LK2, 2, 1, 17), 5, 3, 0, 0, 0, 0, 1, 0},
    {DENSE("alibi (h) causal", 2, 70, 90, 4, 2, 32),       -1, 0, 0, 0, 0, 1, 0, 0},
    {DENSE("alibi (b,h)", 2, 40, 60, 3, 3, 16),            -1, -1, 0, 0, 0, 2, 0, 0},
    {DENSE("softcap", 1, 100, 120, 2, 2, 64),              -1, -1, 3.0f, 0.5f, 0, 0, 0, 0},
    {DENSE("softcap causal gqa", 2, 66, 66, 4, 2, 24),     -1, 0, 2.0f, 0.7f, 0, 0, 0, 0},
    {DENSE("dropout", 1, 90, 100, 2, 2, 32),               -1, -1, 0, 0, 0.17f, 0, 1, 0},
    {VARLEN("dropout varlen causal gqa", 6, LQ1, LK1, 4, 2, 24), -1, 0, 0, 0, 0.3f, 0, 1, 0},
    {DENSE("probs causal gqa", 2, 50, 77, 2, 1, 16),       -1, 0, 0, 0, 0, 0, 1, 0},
    {DENSE("d=256", 1, 70, 66, 1, 1, 256),                 -1, -1, 0, 0, 0, 0, 0, 0},
    {DENSE("d=1 causal", 1, 20, 30, 2, 2, 1),              -1, 0, 0, 0, 0, 0, 0, 0},
    {DENSE("strided layout", 2, 40, 50, 3, 1, 24),         -1, -1, 0, 0, 0, 0, 0, 5},
    {DENSE("sk=0", 2, 10, 0, 2, 2, 8),                     -1, -1, 0, 0, 0, 0, 1, 0},
    {DENSE("sq=0", 2, 0, 10, 2, 2, 8),                     -1, -1, 0, 0, 0, 0, 1, 0},
    {VARLEN("everything", 6, LQ1, LK1, 4, 2, 36),          40, 0, 4.0f, 0, 0.25f, 2, 1, 3},
};

/* finite differences: fp32 in/out, tiny sizes, one feature at a time and together */
static const cfg FD_CASES[] = {
    {DENSE("fd plain", 1, 3, 4, 2, 2, 3),               -1, -1, 0, 0, 0, 0, 0, 0},
    {DENSE("fd causal gqa", 1, 4, 3, 2, 1, 3),          -1, 0, 0, 0, 0, 0, 0, 0},
    {DENSE("fd window (1,1)", 1, 5, 5, 1, 1, 2),        1, 1, 0, 0, 0, 0, 0, 0},
    {DENSE("fd softcap", 1, 3, 4, 1, 1, 4),             -1, -1, 1.5f, 1.0f, 0, 0, 0, 0},
    {DENSE("fd alibi (b,h)", 2, 3, 4, 2, 2, 2),         -1, -1, 0, 0, 0, 2, 0, 0},
    {DENSE("fd dropout", 1, 4, 6, 2, 1, 3),             -1, -1, 0, 0, 0.4f, 0, 0, 0},
    {VARLEN("fd varlen all", 2, LQ3, LK3, 2, 1, 3),     2, 0, 2.0f, 0, 0.3f, 1, 0, 1},
};

int main(int argc, char **argv)
{
    size_t i;
    int dt, a;
    char name[32];
    /* -v: print every check and the measured errors;  -s N: another random seed */
    for (a = 1; a < argc; ++a) {
        if (strcmp(argv[a], "-v") == 0) g_verbose = 1;
        if (strcmp(argv[a], "-s") == 0 && a + 1 < argc) g_rng ^= strtoull(argv[++a], NULL, 0) * 0x9e3779b97f4a7c15ull;
    }
    printf("flash_attn_c C harness (vector path: %s, %d lanes)\n", FA_SIMD_NAME, FA_VL);
    test_philox();
    test_dropout_mask();
    test_conversions();
    test_exp2_tanh();
    test_bad_params();
    printf("finite differences of the reference backward\n");
    for (i = 0; i < sizeof FD_CASES / sizeof FD_CASES[0]; ++i) test_fd(&FD_CASES[i]);
    printf("tiled forward / backward vs reference\n");
    for (i = 0; i < sizeof CASES / sizeof CASES[0]; ++i)
        for (dt = 0; dt < 3; ++dt) {
            test_forward(&CASES[i], (fa_dtype)dt);
            test_backward(&CASES[i], (fa_dtype)dt);
        }
    /* random configurations: every feature switched on and off at random, random sizes */
    printf("random configurations\n");
    for (i = 0; i < 40; ++i) {
        static int32_t lq[4], lk[4];
        static const int64_t hks[3] = {1, 2, 3};
        cfg c;
        int64_t bi, maxlen = 1 + rng_int(150);
        memset(&c, 0, sizeof c);
        snprintf(name, sizeof name, "random #%d", (int)i);
        c.name = name;
        c.b = 1 + rng_int(3);
        c.hk = hks[rng_int(3)];
        c.h = c.hk * (1 + rng_int(3));
        c.d = 1 + rng_int(96);
        c.sq = rng_int(maxlen + 1);
        c.sk = rng_int(maxlen + 1);
        if (rng_int(3) == 0) {
            for (bi = 0; bi < c.b; ++bi) {
                lq[bi] = (int32_t)rng_int(maxlen + 1);
                lk[bi] = (int32_t)rng_int(maxlen + 1);
            }
            c.lq = lq;
            c.lk = lk;
        }
        c.wl = rng_int(3) == 0 ? rng_int(40) : -1;
        c.wr = rng_int(2) == 0 ? rng_int(3) == 0 ? rng_int(40) : 0 : -1;
        c.softcap = rng_int(4) == 0 ? (float)(1.0 + 5.0 * rng_uniform()) : 0.0f;
        c.dropout = rng_int(4) == 0 ? (float)(0.5 * rng_uniform()) : 0.0f;
        c.alibi = (int)rng_int(3);
        c.probs = rng_int(3) == 0;
        c.pad = rng_int(3) == 0 ? rng_int(4) : 0;
        /* dtypes cycle; fp16 / bf16 cases get no dropout, at least 16 keys per sequence and
         * no window narrower than 8: when rows see only one or two keys (or dropout rescales a
         * single key) the exact dK / dQ cancel to ~0, while the tiled backward's
         * D = rowsum(dO o O) carries the rounding of the stored O (as in FlashAttention), so
         * a max-normalised error means nothing there. fp32 cases stay fully random; the fixed
         * cases above cover dropout and narrow windows in every dtype. */
        dt = (int)(i % 3);
        if (dt != 0) {
            c.dropout = 0.0f;
            if (c.sk < 16) c.sk = 16;
            for (bi = 0; bi < c.b; ++bi)
                if (lk[bi] < 16) lk[bi] = 16;
            if (c.wl >= 0 && c.wl < 8) c.wl = 8;
        }
        if (g_verbose)
            printf("    random %d: b %lld sq %lld sk %lld h %lld hk %lld d %lld varlen %d window (%lld,%lld) "
                   "softcap %.2f dropout %.2f alibi %d probs %d pad %lld\n",
                   (int)i, (long long)c.b, (long long)c.sq, (long long)c.sk, (long long)c.h, (long long)c.hk,
                   (long long)c.d, c.lq != NULL, (long long)c.wl, (long long)c.wr, c.softcap, c.dropout, c.alibi,
                   c.probs, (long long)c.pad);
        test_forward(&c, (fa_dtype)dt);
        test_backward(&c, (fa_dtype)dt);
    }
    printf("%d passed, %d failed\n", g_pass, g_fail);
    return g_fail ? 1 : 0;
}
