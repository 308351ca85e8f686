/* fwd_check.cu - self-checking harness of the CUDA forward (csrc/cuda) against the C reference
 * fa_fwd_cpu_reference (csrc/cpu, float64 inside), no torch.
 *
 *   ./fwd_check                 every correctness case; last line "N passed, N failed"
 *   ./fwd_check -k substring    only cases whose name contains substring
 *   ./fwd_check --bench         timing: bf16, d 64/128/256, seqlen 512..16k at 16k tokens per
 *                               batch, h * d = 2048, causal and not; median of CUDA-event timings
 *                               after warm-up, TFLOP/s = 4 b h sq sk d / t (halved when causal)
 *
 * Every case draws fresh random inputs (normal, never zeros), poisons the GPU outputs with NaN
 * bytes before the call, runs the reference and the GPU, and compares O, LSE (and P when the
 * case asks for probabilities) element by element. Errors printed: max |gpu - ref| and the
 * relative L2 error of O.
 */
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vector>
#include <algorithm>

#include "flash_attn_c.h"

#define CK(call)                                                                          \
    do {                                                                                  \
        cudaError_t e_ = (call);                                                          \
        if (e_ != cudaSuccess) {                                                          \
            fprintf(stderr, "%s:%d CUDA error %s\n", __FILE__, __LINE__, cudaGetErrorString(e_)); \
            exit(2);                                                                      \
        }                                                                                 \
    } while (0)

/* ---- host helpers ---------------------------------------------------------------------- */

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static double rng_uniform(void)
{
    g_rng ^= g_rng >> 12;
    g_rng ^= g_rng << 25;
    g_rng ^= g_rng >> 27;
    return (double)((g_rng * 0x2545F4914F6CDD1Dull) >> 11) * (1.0 / 9007199254740992.0);
}
static float rng_normal(void)
{
    double u1 = rng_uniform(), u2 = rng_uniform();
    if (u1 < 1e-300) u1 = 1e-300;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

static uint16_t f2h(fa_dtype dt, float x)
{
    if (dt == FA_BF16) return __bfloat16_as_ushort(__float2bfloat16_rn(x));
    return __half_as_ushort(__float2half_rn(x));
}
static float h2f(fa_dtype dt, uint16_t x)
{
    if (dt == FA_BF16) return __bfloat162float(__ushort_as_bfloat16(x));
    return __half2float(__ushort_as_half(x));
}

/* ---- test cases ---------------------------------------------------------------------------- */

enum { LAYOUT_SEPARATE = 0, LAYOUT_QKV_PACKED = 1 };

typedef struct tcase {
    char name[160];
    fa_dtype dt;
    int b, h, hk, d;
    int sq, sk;                 /* dense sizes (varlen: filled from lens) */
    int varlen;
    std::vector<int> lens_q, lens_k;
    int left, right;
    float softcap;
    int alibi;                  /* 0 none, 1 (h,), 2 (b, h) */
    float dropout;
    int probs;
    int layout;
    float scale;                /* 0 = d^-0.5 */
    int seed_ptr;               /* 1: seed/offset from device pointers (graph-capture mode) */
} tcase;

static tcase make_case(const char *tag, fa_dtype dt, int b, int h, int hk, int d, int sq, int sk)
{
    tcase c;
    c.dt = dt;
    c.b = b; c.h = h; c.hk = hk; c.d = d; c.sq = sq; c.sk = sk;
    c.varlen = 0;
    c.left = -1; c.right = -1;
    c.softcap = 0.f; c.alibi = 0; c.dropout = 0.f; c.probs = 0;
    c.layout = LAYOUT_SEPARATE; c.scale = 0.f; c.seed_ptr = 0;
    snprintf(c.name, sizeof c.name, "%s %s b%d h%d/%d d%d sq%d sk%d", tag, dt == FA_BF16 ? "bf16" : "fp16",
             b, h, hk, d, sq, sk);
    return c;
}

static void append_name(tcase *c)
{
    size_t n = strlen(c->name);
    if (c->left >= 0 || c->right >= 0) n += snprintf(c->name + n, sizeof c->name - n, " win(%d,%d)", c->left, c->right);
    if (c->softcap > 0) n += snprintf(c->name + n, sizeof c->name - n, " softcap%g", c->softcap);
    if (c->alibi) n += snprintf(c->name + n, sizeof c->name - n, " alibi%s", c->alibi == 1 ? "(h)" : "(b,h)");
    if (c->dropout > 0) n += snprintf(c->name + n, sizeof c->name - n, " drop%g", c->dropout);
    if (c->probs) n += snprintf(c->name + n, sizeof c->name - n, " probs");
    if (c->layout == LAYOUT_QKV_PACKED) n += snprintf(c->name + n, sizeof c->name - n, " qkvpacked");
    if (c->scale != 0.f) n += snprintf(c->name + n, sizeof c->name - n, " scale%g", c->scale);
    if (c->seed_ptr) n += snprintf(c->name + n, sizeof c->name - n, " seedptr");
}

/* ---- one run ------------------------------------------------------------------------------- */

typedef struct run_result {
    int ok;
    double o_max_err, o_rel_l2, lse_max_err, p_max_err;
} run_result;

static int g_failed = 0, g_passed = 0;

static run_result run_case(const tcase &c, int verbose)
{
    run_result res = {1, 0, 0, 0, 0};
    const fa_dtype dt = c.dt;
    const int d = c.d, h = c.h, hk = c.hk, b = c.b;
    int sq = c.sq, sk = c.sk;
    std::vector<int32_t> cu_q(1, 0), cu_k(1, 0);
    int64_t total_q, total_k;
    if (c.varlen) {
        sq = 0;
        sk = 0;
        for (int i = 0; i < b; ++i) {
            cu_q.push_back(cu_q.back() + c.lens_q[i]);
            cu_k.push_back(cu_k.back() + c.lens_k[i]);
            sq = std::max(sq, c.lens_q[i]);
            sk = std::max(sk, c.lens_k[i]);
        }
        total_q = cu_q.back();
        total_k = cu_k.back();
    } else {
        total_q = (int64_t)b * sq;
        total_k = (int64_t)b * sk;
    }

    /* inputs */
    fa_params p;
    memset(&p, 0, sizeof p);
    p.dtype = dt;
    p.batch = b;
    p.seqlen_q = sq;
    p.seqlen_k = sk;
    p.heads = h;
    p.heads_k = hk;
    p.head_dim = d;
    p.total_q = total_q;
    p.softmax_scale = c.scale != 0.f ? c.scale : 1.f / sqrtf((float)d);
    p.softcap = c.softcap;
    p.window_left = c.left;
    p.window_right = c.right;
    p.dropout_p = c.dropout;
    p.seed = 0x1234abcd5678ull + (uint64_t)c.d;
    p.offset = 4096 + 16 * (uint64_t)c.sq;

    size_t q_elems, k_elems, v_elems;
    int64_t q_off = 0, k_off = 0, v_off = 0;  /* element offsets inside the buffers */
    if (c.layout == LAYOUT_QKV_PACKED) {
        /* one (b, s, 3, h, d) buffer: q, k, v interleaved per row */
        q_elems = (size_t)b * sq * 3 * h * d;
        k_elems = v_elems = 0;
        p.q_batch_stride = p.k_batch_stride = p.v_batch_stride = (int64_t)sq * 3 * h * d;
        p.q_row_stride = p.k_row_stride = p.v_row_stride = 3 * h * d;
        p.q_head_stride = p.k_head_stride = p.v_head_stride = d;
        k_off = (int64_t)h * d;
        v_off = 2 * (int64_t)h * d;
    } else {
        q_elems = (size_t)total_q * h * d;
        k_elems = v_elems = (size_t)total_k * hk * d;
        p.q_batch_stride = (int64_t)sq * h * d;
        p.q_row_stride = (int64_t)h * d;
        p.q_head_stride = d;
        p.k_batch_stride = p.v_batch_stride = (int64_t)sk * hk * d;
        p.k_row_stride = p.v_row_stride = (int64_t)hk * d;
        p.k_head_stride = p.v_head_stride = d;
    }
    p.o_batch_stride = (int64_t)sq * h * d;
    p.o_row_stride = (int64_t)h * d;
    p.o_head_stride = d;
    const size_t o_elems = (size_t)total_q * h * d;
    const size_t lse_elems = c.varlen ? (size_t)h * total_q : (size_t)b * h * sq;
    const size_t p_elems = c.probs ? (size_t)b * h * sq * sk : 0;

    std::vector<uint16_t> hq(q_elems + 1), hk_(k_elems + 1), hv(v_elems + 1);
    for (auto &x : hq) x = f2h(dt, rng_normal());
    for (auto &x : hk_) x = f2h(dt, rng_normal());
    for (auto &x : hv) x = f2h(dt, rng_normal());
    std::vector<float> slopes;
    if (c.alibi) {
        slopes.resize((size_t)(c.alibi == 2 ? b : 1) * h);
        for (auto &s : slopes) s = (float)(0.05 + 0.5 * rng_uniform());
        p.alibi_batch_stride = c.alibi == 2 ? h : 0;
    }

    /* reference (host pointers) */
    std::vector<uint16_t> ro(o_elems + 1), rp(p_elems + 1);
    std::vector<float> rlse(lse_elems + 1);
    fa_params pr = p;
    if (c.layout == LAYOUT_QKV_PACKED) {
        pr.q = hq.data() + q_off;
        pr.k = hq.data() + k_off;
        pr.v = hq.data() + v_off;
    } else {
        pr.q = hq.data();
        pr.k = hk_.data();
        pr.v = hv.data();
    }
    pr.o = ro.data();
    pr.lse = rlse.data();
    pr.p = c.probs ? rp.data() : NULL;
    pr.alibi_slopes = c.alibi ? slopes.data() : NULL;
    if (c.varlen) {
        pr.cu_seqlens_q = cu_q.data();
        pr.cu_seqlens_k = cu_k.data();
    }
    fa_status st = fa_fwd_cpu_reference(&pr);
    if (st != FA_OK) {
        printf("FAIL %s: reference returned %s\n", c.name, fa_status_string(st));
        res.ok = 0;
        return res;
    }

    /* device */
    uint16_t *dq = NULL, *dk = NULL, *dv = NULL, *dO = NULL, *dP = NULL;
    float *dlse = NULL, *dslopes = NULL;
    int32_t *dcu_q = NULL, *dcu_k = NULL;
    int64_t *drng = NULL, *dseed = NULL;
    CK(cudaMalloc(&dq, hq.size() * 2));
    CK(cudaMemcpy(dq, hq.data(), hq.size() * 2, cudaMemcpyHostToDevice));
    if (c.layout != LAYOUT_QKV_PACKED) {
        CK(cudaMalloc(&dk, hk_.size() * 2));
        CK(cudaMalloc(&dv, hv.size() * 2));
        CK(cudaMemcpy(dk, hk_.data(), hk_.size() * 2, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(dv, hv.data(), hv.size() * 2, cudaMemcpyHostToDevice));
    }
    CK(cudaMalloc(&dO, (o_elems + 1) * 2));
    CK(cudaMalloc(&dlse, (lse_elems + 1) * 4));
    CK(cudaMemset(dO, 0xff, (o_elems + 1) * 2));  /* NaN poison */
    CK(cudaMemset(dlse, 0xff, (lse_elems + 1) * 4));
    if (c.probs) {
        CK(cudaMalloc(&dP, (p_elems + 1) * 2));
        CK(cudaMemset(dP, 0xff, (p_elems + 1) * 2));
    }
    if (c.alibi) {
        CK(cudaMalloc(&dslopes, slopes.size() * 4));
        CK(cudaMemcpy(dslopes, slopes.data(), slopes.size() * 4, cudaMemcpyHostToDevice));
    }
    if (c.varlen) {
        CK(cudaMalloc(&dcu_q, cu_q.size() * 4));
        CK(cudaMalloc(&dcu_k, cu_k.size() * 4));
        CK(cudaMemcpy(dcu_q, cu_q.data(), cu_q.size() * 4, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(dcu_k, cu_k.data(), cu_k.size() * 4, cudaMemcpyHostToDevice));
    }
    CK(cudaMalloc(&drng, 2 * sizeof(int64_t)));
    CK(cudaMemset(drng, 0xff, 2 * sizeof(int64_t)));
    fa_params pg = p;
    if (c.layout == LAYOUT_QKV_PACKED) {
        pg.q = dq + q_off;
        pg.k = dq + k_off;
        pg.v = dq + v_off;
    } else {
        pg.q = dq;
        pg.k = dk;
        pg.v = dv;
    }
    pg.o = dO;
    pg.lse = dlse;
    pg.p = dP;
    pg.alibi_slopes = dslopes;
    pg.cu_seqlens_q = dcu_q;
    pg.cu_seqlens_k = dcu_k;
    pg.rng_state = drng;
    if (c.seed_ptr) {
        /* graph-capture mode: seed = *seed_ptr, offset = *offset_ptr + add */
        int64_t so[2] = {(int64_t)p.seed, (int64_t)p.offset - 7};
        CK(cudaMalloc(&dseed, 2 * sizeof(int64_t)));
        CK(cudaMemcpy(dseed, so, sizeof so, cudaMemcpyHostToDevice));
        pg.philox_seed_ptr = dseed;
        pg.philox_offset_ptr = dseed + 1;
        pg.philox_offset_add = 7;
        pg.seed = 1;  /* must be ignored */
        pg.offset = 2;
    }
    cudaStream_t stream;
    CK(cudaStreamCreate(&stream));
    st = fa_fwd_cuda(&pg, stream);
    CK(cudaStreamSynchronize(stream));
    CK(cudaGetLastError());
    if (st != FA_OK) {
        printf("FAIL %s: fa_fwd_cuda returned %s\n", c.name, fa_status_string(st));
        res.ok = 0;
    }

    std::vector<uint16_t> go(o_elems + 1), gp(p_elems + 1);
    std::vector<float> glse(lse_elems + 1);
    int64_t grng[2];
    CK(cudaMemcpy(go.data(), dO, (o_elems + 1) * 2, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(glse.data(), dlse, (lse_elems + 1) * 4, cudaMemcpyDeviceToHost));
    if (c.probs) CK(cudaMemcpy(gp.data(), dP, (p_elems + 1) * 2, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(grng, drng, sizeof grng, cudaMemcpyDeviceToHost));

    /* second run: the forward must be bitwise deterministic */
    if (res.ok) {
        CK(cudaMemset(dO, 0xff, (o_elems + 1) * 2));
        st = fa_fwd_cuda(&pg, stream);
        CK(cudaStreamSynchronize(stream));
        std::vector<uint16_t> go2(o_elems + 1);
        CK(cudaMemcpy(go2.data(), dO, (o_elems + 1) * 2, cudaMemcpyDeviceToHost));
        if (st != FA_OK || memcmp(go.data(), go2.data(), o_elems * 2) != 0) {
            printf("FAIL %s: second run differs bitwise\n", c.name);
            res.ok = 0;
        }
    }

    /* compare */
    const double o_tol_abs = dt == FA_BF16 ? 2.5e-2 : 4e-3;   /* plus a relative part below */
    const double o_tol_rel = dt == FA_BF16 ? 2e-2 : 4e-3;
    const double p_tol = dt == FA_BF16 ? 1e-2 : 2e-3;
    double num = 0, den = 0;
    int64_t bad_o = 0, bad_lse = 0, bad_p = 0;
    for (size_t i = 0; i < o_elems; ++i) {
        const double r = h2f(dt, ro[i]), g = h2f(dt, go[i]);
        const double e = fabs(g - r);
        if (!(e <= o_tol_abs + o_tol_rel * fabs(r))) {  /* NaN fails */
            if (bad_o < 3 && verbose) printf("   O[%zu] gpu %g ref %g\n", i, g, r);
            ++bad_o;
        }
        if (e == e) res.o_max_err = std::max(res.o_max_err, e);
        num += (g - r) * (g - r);
        den += r * r;
    }
    res.o_rel_l2 = den > 0 ? sqrt(num / den) : sqrt(num);
    for (size_t i = 0; i < lse_elems; ++i) {
        const double r = rlse[i], g = glse[i];
        if (isinf(r) || isinf(g)) {
            if (!(isinf(r) && isinf(g) && (r < 0) == (g < 0))) {
                if (bad_lse < 3 && verbose) printf("   LSE[%zu] gpu %g ref %g\n", i, g, r);
                ++bad_lse;
            }
            continue;
        }
        const double e = fabs(g - r);
        if (!(e <= 2e-3 + 1e-4 * fabs(r))) {
            if (bad_lse < 3 && verbose) printf("   LSE[%zu] gpu %g ref %g\n", i, g, r);
            ++bad_lse;
        }
        if (e == e) res.lse_max_err = std::max(res.lse_max_err, e);
    }
    for (size_t i = 0; i < p_elems; ++i) {
        const double r = h2f(dt, rp[i]), g = h2f(dt, gp[i]);
        const double e = fabs(g - r);
        const int sign_bad = fabs(r) > 2 * p_tol && ((r < 0) != (g < 0));
        if (!(e <= p_tol + 2e-2 * fabs(r)) || sign_bad) {
            if (bad_p < 3 && verbose) printf("   P[%zu] gpu %g ref %g\n", i, g, r);
            ++bad_p;
        }
        if (e == e) res.p_max_err = std::max(res.p_max_err, e);
    }
    const uint64_t want_seed = p.seed, want_off = p.offset;
    const int rng_bad = (uint64_t)grng[0] != want_seed || (uint64_t)grng[1] != want_off;
    if (bad_o || bad_lse || bad_p || rng_bad) res.ok = 0;

    printf("%s %-90s O maxerr %.3e relL2 %.3e | LSE maxerr %.3e%s", res.ok ? "ok  " : "FAIL", c.name,
           res.o_max_err, res.o_rel_l2, res.lse_max_err, c.probs ? "" : "\n");
    if (c.probs) printf(" | P maxerr %.3e\n", res.p_max_err);
    if (bad_o || bad_lse || bad_p) printf("     bad elements: O %lld, LSE %lld, P %lld\n", (long long)bad_o,
                                          (long long)bad_lse, (long long)bad_p);
    if (rng_bad) printf("     rng_state {%lld, %lld}, want {%llu, %llu}\n", (long long)grng[0], (long long)grng[1],
                        (unsigned long long)want_seed, (unsigned long long)want_off);

    cudaFree(dq); cudaFree(dk); cudaFree(dv); cudaFree(dO); cudaFree(dP); cudaFree(dlse);
    cudaFree(dslopes); cudaFree(dcu_q); cudaFree(dcu_k); cudaFree(drng); cudaFree(dseed);
    CK(cudaStreamDestroy(stream));
    return res;
}

/* ---- extra checks that are not (O, LSE, P) comparisons ----------------------------------- */

static int check_dropout_mask(int64_t b, int64_t h, int64_t sq, int64_t sk, float pdrop)
{
    const size_t n = (size_t)(b * h * sq * sk);
    std::vector<uint8_t> cpu(n + 1), gpu(n + 1);
    uint8_t *dm;
    CK(cudaMalloc(&dm, n + 1));
    CK(cudaMemset(dm, 0x77, n + 1));
    fa_dropout_mask_cpu(42, 1000, pdrop, b, h, sq, sk, cpu.data());
    fa_status st = fa_dropout_mask_cuda(42, 1000, pdrop, b, h, sq, sk, dm, NULL);
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(gpu.data(), dm, n, cudaMemcpyDeviceToHost));
    cudaFree(dm);
    size_t kept = 0;
    for (size_t i = 0; i < n; ++i) kept += gpu[i];
    const int ok = st == FA_OK && memcmp(cpu.data(), gpu.data(), n) == 0;
    printf("%s dropout_mask b%lld h%lld sq%lld sk%lld p%g: keep rate %.4f (want %.4f), %s\n", ok ? "ok  " : "FAIL",
           (long long)b, (long long)h, (long long)sq, (long long)sk, pdrop, (double)kept / (double)n, 1.0 - pdrop,
           ok ? "bit-identical to CPU" : "DIFFERS from CPU");
    return ok;
}

/* Contract checks: what fa_fwd_cuda must refuse (instead of reading out of bounds). */
static int check_refusals(void)
{
    int ok = 1;
    uint16_t *buf;
    float *lse;
    CK(cudaMalloc(&buf, 1 << 20));
    CK(cudaMalloc(&lse, 1 << 16));
    fa_params p;
    memset(&p, 0, sizeof p);
    p.dtype = FA_BF16;
    p.batch = 1; p.seqlen_q = 16; p.seqlen_k = 16; p.heads = 2; p.heads_k = 2; p.head_dim = 60;
    p.q = p.k = p.v = buf; p.o = buf; p.lse = lse;
    p.q_row_stride = p.k_row_stride = p.v_row_stride = p.o_row_stride = 2 * 64;
    p.q_head_stride = p.k_head_stride = p.v_head_stride = p.o_head_stride = 64;
    p.q_batch_stride = p.k_batch_stride = p.v_batch_stride = p.o_batch_stride = 16 * 2 * 64;
    p.softmax_scale = 0.125f;
    p.window_left = p.window_right = -1;
    fa_status st = fa_fwd_cuda(&p, NULL);
    if (st != FA_ERR_UNSUPPORTED) { printf("FAIL refusal: d=60 gave %s\n", fa_status_string(st)); ok = 0; }
    p.head_dim = 64;
    p.q = buf + 1;  /* 2-byte aligned only */
    st = fa_fwd_cuda(&p, NULL);
    if (st != FA_ERR_UNSUPPORTED) { printf("FAIL refusal: misaligned q gave %s\n", fa_status_string(st)); ok = 0; }
    p.q = buf;
    p.dtype = FA_F32;
    st = fa_fwd_cuda(&p, NULL);
    if (st != FA_ERR_DTYPE) { printf("FAIL refusal: fp32 gave %s\n", fa_status_string(st)); ok = 0; }
    CK(cudaDeviceSynchronize());
    cudaFree(buf);
    cudaFree(lse);
    printf("%s refusals (d %% 8 != 0, misaligned pointer, fp32)\n", ok ? "ok  " : "FAIL");
    return ok;
}

/* ---- case list ----------------------------------------------------------------------------- */

static std::vector<tcase> build_cases(void)
{
    std::vector<tcase> v;
    const fa_dtype dts[2] = {FA_F16, FA_BF16};
    for (fa_dtype dt : dts) {
        /* shapes: every bucket, awkward lengths, sq != sk both ways, causal and not */
        const int dims[] = {8, 40, 64, 80, 96, 128, 160, 192, 224, 256};
        const int shapes[][2] = {{1, 1}, {17, 17}, {97, 33}, {33, 97}, {130, 257}};
        for (int d : dims)
            for (auto &s : shapes)
                for (int causal = 0; causal < 2; ++causal) {
                    tcase c = make_case("shape", dt, 2, 3, 3, d, s[0], s[1]);
                    if (causal) c.right = 0;
                    append_name(&c);
                    v.push_back(c);
                }
        const int big_dims[] = {64, 128, 256};
        for (int d : big_dims)
            for (int causal = 0; causal < 2; ++causal) {
                tcase c = make_case("long", dt, 1, 2, 1, d, 1025, 1025);
                if (causal) c.right = 0;
                append_name(&c);
                v.push_back(c);
            }
        /* features */
        const int fdims[] = {40, 64, 128, 256};
        for (int d : fdims) {
            struct { int left, right; } wins[] = {{16, 8}, {0, 0}, {32, -1}, {-1, 5}, {200, 0}};
            for (auto &w : wins) {
                tcase c = make_case("window", dt, 2, 2, 2, d, 257, 300);
                c.left = w.left; c.right = w.right;
                append_name(&c);
                v.push_back(c);
            }
            {
                tcase c = make_case("softcap", dt, 2, 2, 2, d, 97, 130);
                c.softcap = 5.f;  /* small enough that it changes the result */
                append_name(&c);
                v.push_back(c);
            }
            for (int al = 1; al <= 2; ++al) {
                tcase c = make_case("alibi", dt, 2, 4, 2, d, 130, 97);
                c.alibi = al;
                c.right = al == 2 ? 0 : -1;
                append_name(&c);
                v.push_back(c);
            }
            {
                tcase c = make_case("all", dt, 2, 4, 1, d, 200, 200);
                c.softcap = 8.f; c.alibi = 2; c.left = 50; c.right = 0; c.dropout = 0.2f; c.probs = 1;
                append_name(&c);
                v.push_back(c);
            }
            for (int hk : {1, 2}) {
                tcase c = make_case("gqa", dt, 2, 8, hk, d, 65, 190);
                c.right = 0;
                append_name(&c);
                v.push_back(c);
            }
            for (float pd : {0.1f, 0.5f}) {
                tcase c = make_case("dropout", dt, 2, 3, 3, d, 97, 131);
                c.dropout = pd; c.probs = 1;
                append_name(&c);
                v.push_back(c);
            }
            {
                tcase c = make_case("probs", dt, 2, 2, 2, d, 70, 90);
                c.probs = 1; c.right = 0;
                append_name(&c);
                v.push_back(c);
            }
            {
                tcase c = make_case("packed", dt, 2, 3, 3, d, 129, 129);
                c.layout = LAYOUT_QKV_PACKED; c.right = 0;
                append_name(&c);
                v.push_back(c);
            }
            {
                tcase c = make_case("negscale", dt, 1, 2, 2, d, 33, 64);
                c.scale = -0.05f;
                append_name(&c);
                v.push_back(c);
            }
            {
                /* sq > sk causal: the first sq - sk rows see nothing: O = 0, LSE = -inf */
                tcase c = make_case("emptyrows", dt, 2, 2, 2, d, 200, 37);
                c.right = 0;
                append_name(&c);
                v.push_back(c);
            }
            {
                tcase c = make_case("sk0", dt, 2, 2, 2, d, 20, 0);
                append_name(&c);
                v.push_back(c);
            }
            for (int mode = 0; mode < 3; ++mode) {
                tcase c = make_case("varlen", dt, 5, 4, 2, d, 0, 0);
                c.varlen = 1;
                c.lens_q = {17, 0, 97, 1, 150};
                c.lens_k = {33, 5, 0, 1, 129};
                if (mode >= 1) c.right = 0;
                if (mode == 2) { c.dropout = 0.3f; c.probs = 1; c.left = 40; c.alibi = 1; }
                append_name(&c);
                v.push_back(c);
            }
            {
                tcase c = make_case("seedptr", dt, 2, 2, 2, d, 64, 80);
                c.dropout = 0.25f; c.seed_ptr = 1; c.probs = 1;
                append_name(&c);
                v.push_back(c);
            }
        }
    }
    return v;
}

/* ---- benchmark ----------------------------------------------------------------------------- */

static void bench(void)
{
    const int dims[] = {64, 128, 256};
    const int seqs[] = {512, 1024, 2048, 4096, 8192, 16384};
    printf("%-6s %-5s %-7s %-6s %-4s %-6s %10s %10s\n", "dtype", "d", "seqlen", "batch", "h", "causal", "ms",
           "TFLOP/s");
    std::vector<double> all;
    for (int d : dims)
        for (int causal = 0; causal < 2; ++causal)
            for (int s : seqs) {
                const int b = 16384 / s, h = 2048 / d;
                const size_t n = (size_t)b * s * h * d;
                uint16_t *q, *k, *vv, *o;
                float *lse;
                CK(cudaMalloc(&q, n * 2));
                CK(cudaMalloc(&k, n * 2));
                CK(cudaMalloc(&vv, n * 2));
                CK(cudaMalloc(&o, n * 2));
                CK(cudaMalloc(&lse, (size_t)b * h * s * 4));
                {
                    std::vector<uint16_t> hbuf(n);
                    for (auto &x : hbuf) x = f2h(FA_BF16, rng_normal());
                    CK(cudaMemcpy(q, hbuf.data(), n * 2, cudaMemcpyHostToDevice));
                    for (auto &x : hbuf) x = f2h(FA_BF16, rng_normal());
                    CK(cudaMemcpy(k, hbuf.data(), n * 2, cudaMemcpyHostToDevice));
                    for (auto &x : hbuf) x = f2h(FA_BF16, rng_normal());
                    CK(cudaMemcpy(vv, hbuf.data(), n * 2, cudaMemcpyHostToDevice));
                }
                fa_params p;
                memset(&p, 0, sizeof p);
                p.dtype = FA_BF16;
                p.batch = b; p.seqlen_q = s; p.seqlen_k = s; p.heads = h; p.heads_k = h; p.head_dim = d;
                p.total_q = (int64_t)b * s;
                p.q = q; p.k = k; p.v = vv; p.o = o; p.lse = lse;
                p.q_batch_stride = p.k_batch_stride = p.v_batch_stride = p.o_batch_stride = (int64_t)s * h * d;
                p.q_row_stride = p.k_row_stride = p.v_row_stride = p.o_row_stride = (int64_t)h * d;
                p.q_head_stride = p.k_head_stride = p.v_head_stride = p.o_head_stride = d;
                p.softmax_scale = 1.f / sqrtf((float)d);
                p.window_left = -1;
                p.window_right = causal ? 0 : -1;
                cudaEvent_t e0, e1;
                CK(cudaEventCreate(&e0));
                CK(cudaEventCreate(&e1));
                for (int w = 0; w < 3; ++w) fa_fwd_cuda(&p, NULL);
                CK(cudaDeviceSynchronize());
                std::vector<float> ts;
                for (int r = 0; r < 15; ++r) {
                    CK(cudaEventRecord(e0));
                    fa_status st = fa_fwd_cuda(&p, NULL);
                    CK(cudaEventRecord(e1));
                    CK(cudaEventSynchronize(e1));
                    if (st != FA_OK) {
                        printf("fa_fwd_cuda failed: %s\n", fa_status_string(st));
                        exit(1);
                    }
                    float ms;
                    CK(cudaEventElapsedTime(&ms, e0, e1));
                    ts.push_back(ms);
                }
                std::sort(ts.begin(), ts.end());
                const double ms = ts[ts.size() / 2];
                double flops = 4.0 * b * h * (double)s * s * d;
                if (causal) flops *= 0.5;
                const double tf = flops / (ms * 1e-3) / 1e12;
                all.push_back(tf);
                printf("%-6s %-5d %-7d %-6d %-4d %-6d %10.3f %10.1f\n", "bf16", d, s, b, h, causal, ms, tf);
                cudaEventDestroy(e0);
                cudaEventDestroy(e1);
                cudaFree(q); cudaFree(k); cudaFree(vv); cudaFree(o); cudaFree(lse);
            }
    double lg = 0;
    for (double t : all) lg += log(t);
    printf("geometric mean %.1f TFLOP/s over %zu shapes\n", exp(lg / all.size()), all.size());
}

int main(int argc, char **argv)
{
    const char *filter = NULL;
    for (int i = 1; i < argc; ++i) {
        if (!strcmp(argv[i], "--bench")) {
            bench();
            return 0;
        }
        if (!strcmp(argv[i], "-k") && i + 1 < argc) filter = argv[++i];
    }
    if (!fa_cuda_available()) {
        printf("fa_cuda_available() == 0\n0 passed, 1 failed\n");
        return 1;
    }
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("device: %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);

    std::vector<tcase> cases = build_cases();
    for (const tcase &c : cases) {
        if (filter && !strstr(c.name, filter)) continue;
        run_result r = run_case(c, 1);
        if (r.ok) ++g_passed; else ++g_failed;
    }
    if (!filter || strstr("dropout_mask", filter)) {
        const int64_t shp[][4] = {{2, 3, 17, 33}, {1, 2, 100, 257}, {3, 1, 1, 5}};
        for (auto &s : shp)
            for (float pd : {0.f, 0.1f, 0.7f}) {
                if (check_dropout_mask(s[0], s[1], s[2], s[3], pd)) ++g_passed; else ++g_failed;
            }
    }
    if (!filter || strstr("refusals", filter)) {
        if (check_refusals()) ++g_passed; else ++g_failed;
    }
    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed ? 1 : 0;
}
