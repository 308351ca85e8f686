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
 * relative L2 error of O. The pieces shared with dev/fwd_sm90/sm90_check.cu (random inputs,
 * call geometry, tolerance rule, benchmark timer) are in dev/common/.
 */
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vector>
#include <algorithm>

#include "flash_attn_c.h"
#include "../common/check_host.h"
#include "../common/check_cuda.h"
#include "../common/fwd_problem.h"
#include "../common/fwd_compare.h"
#include "../common/fwd_bench.h"

static check_rng g_rng = {0x9E3779B97F4A7C15ull};

/* ---- test cases ---------------------------------------------------------------------------- */

/* the feature suffixes of the name */
static void append_name(fwd_case *c)
{
    size_t n = strlen(c->name);
    if (c->left >= 0 || c->right >= 0) n += snprintf(c->name + n, sizeof c->name - n, " win(%d,%d)", c->left, c->right);
    if (c->softcap > 0) n += snprintf(c->name + n, sizeof c->name - n, " softcap%g", c->softcap);
    if (c->alibi) n += snprintf(c->name + n, sizeof c->name - n, " alibi%s", c->alibi == 1 ? "(h)" : "(b,h)");
    if (c->dropout > 0) n += snprintf(c->name + n, sizeof c->name - n, " drop%g", c->dropout);
    if (c->probs) n += snprintf(c->name + n, sizeof c->name - n, " probs");
    if (c->packed) n += snprintf(c->name + n, sizeof c->name - n, " qkvpacked");
    if (c->scale != 0.f) n += snprintf(c->name + n, sizeof c->name - n, " scale%g", c->scale);
    if (c->seed_ptr) n += snprintf(c->name + n, sizeof c->name - n, " seedptr");
}

/* ---- one run ------------------------------------------------------------------------------- */

static check_tally g_tally = {0, 0};

/* One case: random inputs, the reference, fa_fwd_cuda twice (bitwise determinism), comparison
 * of O, LSE, P and rng_state. Returns 1 when it passes. */
static int run_case(const fwd_case &c)
{
    int ok = 1;
    const fa_dtype dt = c.dt;
    fwd_geom g;
    fa_params p;
    fwd_geom_init(&c, &g, &p);
    p.softmax_scale = c.scale != 0.f ? c.scale : 1.f / sqrtf((float)c.d);
    p.softcap = c.softcap;
    p.window_left = c.left;
    p.window_right = c.right;
    p.dropout_p = c.dropout;
    p.seed = 0x1234abcd5678ull + (uint64_t)c.d;
    p.offset = 4096 + 16 * (uint64_t)c.sq;

    /* inputs (one spare element each; k and v are drawn even when packed) */
    std::vector<uint16_t> hq(g.q_elems + 1), hk_(g.kv_elems + 1), hv(g.kv_elems + 1);
    check_fill_normal(&g_rng, dt, hq.data(), hq.size());
    check_fill_normal(&g_rng, dt, hk_.data(), hk_.size());
    check_fill_normal(&g_rng, dt, hv.data(), hv.size());
    std::vector<float> slopes;
    if (c.alibi) {
        slopes.resize((size_t)(c.alibi == 2 ? c.b : 1) * c.h);
        for (auto &s : slopes) s = (float)(0.05 + 0.5 * check_rng_uniform(&g_rng));
        p.alibi_batch_stride = c.alibi == 2 ? c.h : 0;
    }

    /* reference (host pointers) */
    std::vector<uint16_t> ro(g.o_elems + 1), rp(g.p_elems + 1);
    std::vector<float> rlse(g.lse_elems + 1);
    fa_params pr = p;
    fwd_bind_qkv(&g, &pr, hq.data(), hk_.data(), hv.data());
    pr.o = ro.data();
    pr.lse = rlse.data();
    pr.p = c.probs ? rp.data() : NULL;
    pr.alibi_slopes = c.alibi ? slopes.data() : NULL;
    if (c.varlen) {
        pr.cu_seqlens_q = g.cu_q.data();
        pr.cu_seqlens_k = g.cu_k.data();
    }
    fa_status st = fa_fwd_cpu_reference(&pr);
    if (st != FA_OK) {
        printf("FAIL %s: reference returned %s\n", c.name, fa_status_string(st));
        return 0;
    }

    /* device: outputs poisoned with NaN bytes (one spare element behind each) */
    uint16_t *dO = NULL, *dP = NULL;
    float *dlse = NULL, *dslopes = NULL;
    int64_t *drng = NULL, *dseed = NULL;
    fa_params pg = p;
    fwd_dev_inputs din;
    fwd_upload_inputs(&g, hq, hk_, hv, &din, &pg);
    CK(cudaMalloc(&dO, (g.o_elems + 1) * 2));
    CK(cudaMalloc(&dlse, (g.lse_elems + 1) * 4));
    check_poison(dO, (g.o_elems + 1) * 2);
    check_poison(dlse, (g.lse_elems + 1) * 4);
    if (c.probs) {
        CK(cudaMalloc(&dP, (g.p_elems + 1) * 2));
        check_poison(dP, (g.p_elems + 1) * 2);
    }
    if (c.alibi) dslopes = (float *)check_to_device(slopes.data(), slopes.size(), 4);
    CK(cudaMalloc(&drng, 2 * sizeof(int64_t)));
    check_poison(drng, 2 * sizeof(int64_t));
    pg.o = dO;
    pg.lse = dlse;
    pg.p = dP;
    pg.alibi_slopes = dslopes;
    pg.rng_state = drng;
    if (c.seed_ptr) dseed = fwd_use_seed_ptr(&pg, &p); /* graph-capture mode */
    /* scratch of the split-KV kernel (short query blocks), as the torch glue allocates it */
    void *dws = NULL;
    pg.workspace_bytes = fa_fwd_cuda_workspace_bytes(&pg);
    if (pg.workspace_bytes > 0) CK(cudaMalloc(&dws, pg.workspace_bytes));
    pg.workspace = dws;
    cudaStream_t stream;
    CK(cudaStreamCreate(&stream));
    st = fa_fwd_cuda(&pg, stream);
    CK(cudaStreamSynchronize(stream));
    CK(cudaGetLastError());
    if (st != FA_OK) {
        printf("FAIL %s: fa_fwd_cuda returned %s\n", c.name, fa_status_string(st));
        ok = 0;
    }

    std::vector<uint16_t> go(g.o_elems + 1), gp(g.p_elems + 1);
    std::vector<float> glse(g.lse_elems + 1);
    int64_t grng[2];
    CK(cudaMemcpy(go.data(), dO, (g.o_elems + 1) * 2, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(glse.data(), dlse, (g.lse_elems + 1) * 4, cudaMemcpyDeviceToHost));
    if (c.probs) CK(cudaMemcpy(gp.data(), dP, (g.p_elems + 1) * 2, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(grng, drng, sizeof grng, cudaMemcpyDeviceToHost));

    /* second run: the forward must be bitwise deterministic */
    if (ok) {
        check_poison(dO, (g.o_elems + 1) * 2);
        st = fa_fwd_cuda(&pg, stream);
        CK(cudaStreamSynchronize(stream));
        std::vector<uint16_t> go2(g.o_elems + 1);
        CK(cudaMemcpy(go2.data(), dO, (g.o_elems + 1) * 2, cudaMemcpyDeviceToHost));
        if (st != FA_OK || memcmp(go.data(), go2.data(), g.o_elems * 2) != 0) {
            printf("FAIL %s: second run differs bitwise\n", c.name);
            ok = 0;
        }
    }

    /* compare */
    fwd_errors e;
    memset(&e, 0, sizeof e);
    fwd_compare(&g, dt, go.data(), ro.data(), glse.data(), rlse.data(), gp.data(), rp.data(), &e);
    const uint64_t want_seed = p.seed, want_off = p.offset;
    const int rng_bad = (uint64_t)grng[0] != want_seed || (uint64_t)grng[1] != want_off;
    if (e.bad_o || e.bad_lse || e.bad_p || rng_bad) ok = 0;

    fwd_print_result(ok, c.name, 90, &e, c.probs);
    if (e.bad_o || e.bad_lse || e.bad_p)
        printf("     bad elements: O %lld, LSE %lld, P %lld\n", (long long)e.bad_o, (long long)e.bad_lse,
               (long long)e.bad_p);
    if (rng_bad) printf("     rng_state {%lld, %lld}, want {%llu, %llu}\n", (long long)grng[0], (long long)grng[1],
                        (unsigned long long)want_seed, (unsigned long long)want_off);

    fwd_free_inputs(&din);
    cudaFree(dO); cudaFree(dP); cudaFree(dlse); cudaFree(dslopes); cudaFree(drng); cudaFree(dseed);
    cudaFree(dws);
    CK(cudaStreamDestroy(stream));
    return ok;
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
           (long long)b, (long long)h, (long long)sq, (long long)sk, pdrop, (double)kept / (double)n,
           1.0 - fa_dropout_threshold(pdrop) / 256.0 /* p quantised to 1/256 */,
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

static std::vector<fwd_case> build_cases(void)
{
    std::vector<fwd_case> v;
    const fa_dtype dts[2] = {FA_F16, FA_BF16};
    for (fa_dtype dt : dts) {
        /* shapes: every bucket, awkward lengths, sq != sk both ways, causal and not */
        const int dims[] = {8, 40, 64, 80, 96, 128, 160, 192, 224, 256};
        const int shapes[][2] = {{1, 1}, {17, 17}, {97, 33}, {33, 97}, {130, 257}};
        for (int d : dims)
            for (auto &s : shapes)
                for (int causal = 0; causal < 2; ++causal) {
                    fwd_case c = fwd_make_case("shape", dt, 2, 3, 3, d, s[0], s[1]);
                    if (causal) c.right = 0;
                    append_name(&c);
                    v.push_back(c);
                }
        const int big_dims[] = {64, 128, 256};
        for (int d : big_dims)
            for (int causal = 0; causal < 2; ++causal) {
                fwd_case c = fwd_make_case("long", dt, 1, 2, 1, d, 1025, 1025);
                if (causal) c.right = 0;
                append_name(&c);
                v.push_back(c);
            }
        /* features */
        const int fdims[] = {40, 64, 128, 256};
        for (int d : fdims) {
            struct { int left, right; } wins[] = {{16, 8}, {0, 0}, {32, -1}, {-1, 5}, {200, 0}};
            for (auto &w : wins) {
                fwd_case c = fwd_make_case("window", dt, 2, 2, 2, d, 257, 300);
                c.left = w.left; c.right = w.right;
                append_name(&c);
                v.push_back(c);
            }
            {
                fwd_case c = fwd_make_case("softcap", dt, 2, 2, 2, d, 97, 130);
                c.softcap = 5.f;  /* small enough that it changes the result */
                append_name(&c);
                v.push_back(c);
            }
            for (int al = 1; al <= 2; ++al) {
                fwd_case c = fwd_make_case("alibi", dt, 2, 4, 2, d, 130, 97);
                c.alibi = al;
                c.right = al == 2 ? 0 : -1;
                append_name(&c);
                v.push_back(c);
            }
            {
                fwd_case c = fwd_make_case("all", dt, 2, 4, 1, d, 200, 200);
                c.softcap = 8.f; c.alibi = 2; c.left = 50; c.right = 0; c.dropout = 0.2f; c.probs = 1;
                append_name(&c);
                v.push_back(c);
            }
            for (int hk : {1, 2}) {
                fwd_case c = fwd_make_case("gqa", dt, 2, 8, hk, d, 65, 190);
                c.right = 0;
                append_name(&c);
                v.push_back(c);
            }
            for (float pd : {0.1f, 0.5f}) {
                fwd_case c = fwd_make_case("dropout", dt, 2, 3, 3, d, 97, 131);
                c.dropout = pd; c.probs = 1;
                append_name(&c);
                v.push_back(c);
            }
            {
                fwd_case c = fwd_make_case("probs", dt, 2, 2, 2, d, 70, 90);
                c.probs = 1; c.right = 0;
                append_name(&c);
                v.push_back(c);
            }
            {
                fwd_case c = fwd_make_case("packed", dt, 2, 3, 3, d, 129, 129);
                c.packed = 1; c.right = 0;
                append_name(&c);
                v.push_back(c);
            }
            {
                fwd_case c = fwd_make_case("negscale", dt, 1, 2, 2, d, 33, 64);
                c.scale = -0.05f;
                append_name(&c);
                v.push_back(c);
            }
            {
                /* sq > sk causal: the first sq - sk rows see nothing: O = 0, LSE = -inf */
                fwd_case c = fwd_make_case("emptyrows", dt, 2, 2, 2, d, 200, 37);
                c.right = 0;
                append_name(&c);
                v.push_back(c);
            }
            {
                fwd_case c = fwd_make_case("sk0", dt, 2, 2, 2, d, 20, 0);
                append_name(&c);
                v.push_back(c);
            }
            for (int mode = 0; mode < 3; ++mode) {
                fwd_case c = fwd_make_case("varlen", dt, 5, 4, 2, d, 0, 0);
                c.varlen = 1;
                c.lens_q = {17, 0, 97, 1, 150};
                c.lens_k = {33, 5, 0, 1, 129};
                if (mode >= 1) c.right = 0;
                if (mode == 2) { c.dropout = 0.3f; c.probs = 1; c.left = 40; c.alibi = 1; }
                append_name(&c);
                v.push_back(c);
            }
            {
                fwd_case c = fwd_make_case("seedptr", dt, 2, 2, 2, d, 64, 80);
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
                fa_params p;
                fwd_bench_setup(&g_rng, b, s, h, d, causal, &p);
                const double ms = fwd_bench_median_ms(fa_fwd_cuda, &p);
                double flops = 4.0 * b * h * (double)s * s * d;
                if (causal) flops *= 0.5;
                const double tf = flops / (ms * 1e-3) / 1e12;
                all.push_back(tf);
                printf("%-6s %-5d %-7d %-6d %-4d %-6d %10.3f %10.1f\n", "bf16", d, s, b, h, causal, ms, tf);
                fwd_bench_free(&p);
            }
    double lg = 0;
    for (double t : all) lg += log(t);
    printf("geometric mean %.1f TFLOP/s over %zu shapes\n", exp(lg / all.size()), all.size());
}

int main(int argc, char **argv)
{
    check_cli cli;
    check_parse_cli(argc, argv, CHECK_OPT_K | CHECK_OPT_BENCH, "", &cli);
    if (cli.bench) {
        bench();
        return 0;
    }
    if (!fa_cuda_available()) {
        printf("fa_cuda_available() == 0\n0 passed, 1 failed\n");
        return 1;
    }
    check_print_device();

    std::vector<fwd_case> cases = build_cases();
    for (const fwd_case &c : cases) {
        if (!check_selected(&cli, c.name)) continue;
        check_count(&g_tally, run_case(c));
    }
    /* the extra checks run when the filter is part of their name */
    if (!cli.filter || strstr("dropout_mask", cli.filter)) {
        const int64_t shp[][4] = {{2, 3, 17, 33}, {1, 2, 100, 257}, {3, 1, 1, 5}};
        for (auto &s : shp)
            for (float pd : {0.f, 0.1f, 0.7f}) check_count(&g_tally, check_dropout_mask(s[0], s[1], s[2], s[3], pd));
    }
    if (!cli.filter || strstr("refusals", cli.filter)) check_count(&g_tally, check_refusals());
    return check_summary(&g_tally);
}
