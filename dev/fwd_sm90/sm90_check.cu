/* sm90_check.cu - self-checking harness of the Hopper forward (csrc/cuda/fa_fwd_sm90*) against the
 * C reference fa_fwd_cpu_reference (csrc/cpu, float64 inside), no torch. Needs an sm_90 GPU.
 *
 *   ./sm90_check                 every correctness case; last line "N passed, N failed"
 *   ./sm90_check -k substring    only cases whose name contains substring
 *   ./sm90_check --bench         bf16, d 64/128/256, seqlen 512..16k at 16k tokens per batch,
 *                                h * d = 2048, causal and not: TFLOP/s of the sm90 kernel and, in
 *                                the same run on the same inputs, of the sm80 (mma.sync) kernel;
 *                                median of CUDA-event timings after warm-up
 *
 * Every case calls fa_fwd_sm90() directly (and fails if fa_fwd_sm90_can_run() refuses it), draws
 * fresh random inputs (normal, never zeros), poisons O and LSE with NaN bytes plus a guard region
 * behind O, compares O and LSE element by element with the reference, checks that the guard is
 * untouched, that a second run is bitwise identical, and that rng_state was written. The
 * "dispatch" checks go through fa_fwd_cuda() with FLASH_ATTN_C_SM90=1: the plain path must give
 * the sm90 kernel's bits, and calls outside its scope (probabilities, dropout, softcap, d = 32)
 * must fall back to the sm80 kernels and still be right.
 */
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <algorithm>
#include <vector>

#include "flash_attn_c.h"
#include "fa_fwd_sm90.cuh"

#define CK(call)                                                                                   \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "%s:%d CUDA error %s\n", __FILE__, __LINE__, cudaGetErrorString(e_));  \
            exit(2);                                                                               \
        }                                                                                          \
    } while (0)

/* ---- host helpers ---------------------------------------------------------------------- */

static uint64_t g_rng = 0x2545F4914F6CDD1Dull;
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

static void set_sm90_env(int on)
{
    if (on) setenv("FLASH_ATTN_C_SM90", "1", 1);
    else unsetenv("FLASH_ATTN_C_SM90");
}

/* ---- cases ----------------------------------------------------------------------------- */

enum { LAYOUT_SEPARATE = 0, LAYOUT_QKV_PACKED = 1 };
enum { PATH_SM90 = 0, PATH_DISPATCH = 1 };  /* fa_fwd_sm90 directly / fa_fwd_cuda with the env on */

typedef struct tcase {
    char name[200];
    fa_dtype dt;
    int b, h, hk, d;
    int sq, sk;
    int varlen;
    std::vector<int> lens_q, lens_k;
    int left, right;
    int layout;
    /* dispatch checks only: features the sm90 kernel does not take */
    float softcap, dropout;
    int probs;
    int path;
    int expect_sm90;  /* dispatch: 1 = fa_fwd_sm90_supported must say yes, 0 = must say no */
} tcase;

static tcase make_case(const char *tag, fa_dtype dt, int b, int h, int hk, int d, int sq, int sk)
{
    tcase c;
    c.dt = dt;
    c.b = b; c.h = h; c.hk = hk; c.d = d; c.sq = sq; c.sk = sk;
    c.varlen = 0;
    c.left = -1; c.right = -1;
    c.layout = LAYOUT_SEPARATE;
    c.softcap = 0.f; c.dropout = 0.f; c.probs = 0;
    c.path = PATH_SM90;
    c.expect_sm90 = 1;
    snprintf(c.name, sizeof c.name, "%s %s b%d h%d/%d d%d sq%d sk%d", tag, dt == FA_BF16 ? "bf16" : "fp16", b, h,
             hk, d, sq, sk);
    return c;
}

static void finish_name(tcase *c)
{
    size_t n = strlen(c->name);
    if (c->varlen) {
        n += snprintf(c->name + n, sizeof c->name - n, " lens");
        for (size_t i = 0; i < c->lens_q.size(); ++i)
            n += snprintf(c->name + n, sizeof c->name - n, "%s%d/%d", i ? "," : " ", c->lens_q[i], c->lens_k[i]);
    }
    if (c->left >= 0 || c->right >= 0) n += snprintf(c->name + n, sizeof c->name - n, " win(%d,%d)", c->left, c->right);
    if (c->layout == LAYOUT_QKV_PACKED) n += snprintf(c->name + n, sizeof c->name - n, " qkvpacked");
    if (c->softcap > 0) n += snprintf(c->name + n, sizeof c->name - n, " softcap%g", c->softcap);
    if (c->dropout > 0) n += snprintf(c->name + n, sizeof c->name - n, " drop%g", c->dropout);
    if (c->probs) n += snprintf(c->name + n, sizeof c->name - n, " probs");
    if (c->path == PATH_DISPATCH) n += snprintf(c->name + n, sizeof c->name - n, " [dispatch]");
}

static int g_passed = 0, g_failed = 0;

static void run_case(const tcase &c)
{
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
    p.softmax_scale = 1.f / sqrtf((float)d);
    p.softcap = c.softcap;
    p.window_left = c.left;
    p.window_right = c.right;
    p.dropout_p = c.dropout;
    p.seed = 0x5eed0000ull + (uint64_t)d;
    p.offset = 64 + 16 * (uint64_t)sq;

    size_t q_elems, kv_elems;
    int64_t k_off = 0, v_off = 0;
    if (c.layout == LAYOUT_QKV_PACKED) {
        q_elems = (size_t)b * sq * 3 * h * d;  /* one (b, s, 3, h, d) buffer */
        kv_elems = 0;
        p.q_batch_stride = p.k_batch_stride = p.v_batch_stride = (int64_t)sq * 3 * h * d;
        p.q_row_stride = p.k_row_stride = p.v_row_stride = 3 * h * d;
        p.q_head_stride = p.k_head_stride = p.v_head_stride = d;
        k_off = (int64_t)h * d;
        v_off = 2 * (int64_t)h * d;
    } else {
        q_elems = (size_t)total_q * h * d;
        kv_elems = (size_t)total_k * hk * d;
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
    const size_t kGuard = 64;  /* poisoned elements behind O that nobody may write */

    /* inputs: exactly sized device buffers (varlen K/V end at the last key row, so a read past
     * a sequence's end at the tensor end would leave the allocation) */
    std::vector<uint16_t> hq(std::max<size_t>(q_elems, 1)), hkv_k(std::max<size_t>(kv_elems, 1)),
        hkv_v(std::max<size_t>(kv_elems, 1));
    for (auto &x : hq) x = f2h(dt, rng_normal());
    for (auto &x : hkv_k) x = f2h(dt, rng_normal());
    for (auto &x : hkv_v) x = f2h(dt, rng_normal());

    /* reference */
    std::vector<uint16_t> ro(o_elems + 1), rp(p_elems + 1);
    std::vector<float> rlse(lse_elems + 1);
    fa_params pr = p;
    if (c.layout == LAYOUT_QKV_PACKED) {
        pr.q = hq.data();
        pr.k = hq.data() + k_off;
        pr.v = hq.data() + v_off;
    } else {
        pr.q = hq.data();
        pr.k = hkv_k.data();
        pr.v = hkv_v.data();
    }
    pr.o = ro.data();
    pr.lse = rlse.data();
    pr.p = c.probs ? rp.data() : NULL;
    if (c.varlen) {
        pr.cu_seqlens_q = cu_q.data();
        pr.cu_seqlens_k = cu_k.data();
    }
    fa_status st = fa_fwd_cpu_reference(&pr);
    if (st != FA_OK) {
        printf("FAIL %s: reference returned %s\n", c.name, fa_status_string(st));
        ++g_failed;
        return;
    }

    /* device */
    uint16_t *dq = NULL, *dk = NULL, *dv = NULL, *dO = NULL, *dP = NULL;
    float *dlse = NULL;
    int32_t *dcu_q = NULL, *dcu_k = NULL;
    int64_t *drng = NULL;
    CK(cudaMalloc(&dq, hq.size() * 2));
    CK(cudaMemcpy(dq, hq.data(), hq.size() * 2, cudaMemcpyHostToDevice));
    if (c.layout != LAYOUT_QKV_PACKED) {
        CK(cudaMalloc(&dk, hkv_k.size() * 2));
        CK(cudaMalloc(&dv, hkv_v.size() * 2));
        CK(cudaMemcpy(dk, hkv_k.data(), hkv_k.size() * 2, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(dv, hkv_v.data(), hkv_v.size() * 2, cudaMemcpyHostToDevice));
    }
    CK(cudaMalloc(&dO, (o_elems + kGuard) * 2));
    CK(cudaMalloc(&dlse, (lse_elems + 1) * 4));
    if (c.probs) CK(cudaMalloc(&dP, (p_elems + 1) * 2));
    if (c.varlen) {
        CK(cudaMalloc(&dcu_q, cu_q.size() * 4));
        CK(cudaMalloc(&dcu_k, cu_k.size() * 4));
        CK(cudaMemcpy(dcu_q, cu_q.data(), cu_q.size() * 4, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(dcu_k, cu_k.data(), cu_k.size() * 4, cudaMemcpyHostToDevice));
    }
    CK(cudaMalloc(&drng, 2 * sizeof(int64_t)));
    fa_params pg = p;
    if (c.layout == LAYOUT_QKV_PACKED) {
        pg.q = dq;
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
    pg.cu_seqlens_q = dcu_q;
    pg.cu_seqlens_k = dcu_k;
    pg.rng_state = drng;
    cudaStream_t stream;
    CK(cudaStreamCreate(&stream));

    int ok = 1;
    char why[160] = "";
    set_sm90_env(c.path == PATH_DISPATCH);
    if (c.path == PATH_SM90 && !fa_fwd_sm90_can_run(&pg)) {
        snprintf(why, sizeof why, "fa_fwd_sm90_can_run() refused the case");
        ok = 0;
    }
    if (c.path == PATH_DISPATCH && fa_fwd_sm90_supported(&pg) != c.expect_sm90) {
        snprintf(why, sizeof why, "fa_fwd_sm90_supported() = %d, want %d", !c.expect_sm90, c.expect_sm90);
        ok = 0;
    }

    std::vector<uint16_t> go(o_elems + kGuard), go2(o_elems + kGuard), gp(p_elems + 1);
    std::vector<float> glse(lse_elems + 1);
    int64_t grng[2] = {0, 0};
    for (int rep = 0; rep < 2 && ok; ++rep) {
        CK(cudaMemset(dO, 0xff, (o_elems + kGuard) * 2));  /* NaN poison + guard */
        CK(cudaMemset(dlse, 0xff, (lse_elems + 1) * 4));
        CK(cudaMemset(drng, 0xff, 2 * sizeof(int64_t)));
        if (c.probs) CK(cudaMemset(dP, 0xff, (p_elems + 1) * 2));
        st = c.path == PATH_SM90 ? fa_fwd_sm90(&pg, stream) : fa_fwd_cuda(&pg, stream);
        const cudaError_t ce = cudaStreamSynchronize(stream);
        if (ce != cudaSuccess) {
            printf("FAIL %s: CUDA error %s (sticky: stopping)\n", c.name, cudaGetErrorString(ce));
            printf("%d passed, %d failed\n", g_passed, g_failed + 1);
            exit(1);
        }
        if (st != FA_OK) {
            snprintf(why, sizeof why, "%s returned %s", c.path == PATH_SM90 ? "fa_fwd_sm90" : "fa_fwd_cuda",
                     fa_status_string(st));
            ok = 0;
            break;
        }
        CK(cudaMemcpy(rep == 0 ? go.data() : go2.data(), dO, (o_elems + kGuard) * 2, cudaMemcpyDeviceToHost));
        if (rep == 0) {
            CK(cudaMemcpy(glse.data(), dlse, (lse_elems + 1) * 4, cudaMemcpyDeviceToHost));
            CK(cudaMemcpy(grng, drng, sizeof grng, cudaMemcpyDeviceToHost));
            if (c.probs) CK(cudaMemcpy(gp.data(), dP, (p_elems + 1) * 2, cudaMemcpyDeviceToHost));
        } else if (memcmp(go.data(), go2.data(), o_elems * 2) != 0) {
            snprintf(why, sizeof why, "second run differs bitwise");
            ok = 0;
        }
    }

    /* with the env on, the plain path must be the sm90 kernel's bits exactly */
    if (ok && c.path == PATH_DISPATCH && c.expect_sm90) {
        CK(cudaMemset(dO, 0xff, (o_elems + kGuard) * 2));
        st = fa_fwd_sm90(&pg, stream);
        CK(cudaStreamSynchronize(stream));
        CK(cudaMemcpy(go2.data(), dO, o_elems * 2, cudaMemcpyDeviceToHost));
        if (st != FA_OK || memcmp(go.data(), go2.data(), o_elems * 2) != 0) {
            snprintf(why, sizeof why, "fa_fwd_cuda (env on) is not bitwise fa_fwd_sm90");
            ok = 0;
        }
    }
    set_sm90_env(0);

    /* compare */
    double o_max = 0, num = 0, den = 0, lse_max = 0, p_max = 0;
    int64_t bad_o = 0, bad_lse = 0, bad_p = 0, bad_guard = 0;
    if (ok) {
        const double o_abs = dt == FA_BF16 ? 2.5e-2 : 4e-3, o_rel = dt == FA_BF16 ? 2e-2 : 4e-3;
        for (size_t i = 0; i < o_elems; ++i) {
            const double r = h2f(dt, ro[i]), g = h2f(dt, go[i]);
            const double e = fabs(g - r);
            if (!(e <= o_abs + o_rel * fabs(r))) {  /* NaN (unwritten) fails */
                if (bad_o < 3) printf("   O[%zu] (row %zu, head %zu, col %zu) gpu %g ref %g\n", i, i / ((size_t)h * d),
                                      i / d % h, i % d, g, r);
                ++bad_o;
            }
            if (e == e) o_max = std::max(o_max, e);
            num += (g - r) * (g - r);
            den += r * r;
        }
        for (size_t i = o_elems; i < o_elems + kGuard; ++i) bad_guard += go[i] != 0xffff;
        for (size_t i = 0; i < lse_elems; ++i) {
            const double r = rlse[i], g = glse[i];
            if (isinf(r) || isinf(g)) {
                if (!(isinf(r) && isinf(g) && (r < 0) == (g < 0))) {
                    if (bad_lse < 3) printf("   LSE[%zu] gpu %g ref %g\n", i, g, r);
                    ++bad_lse;
                }
                continue;
            }
            const double e = fabs(g - r);
            if (!(e <= 2e-3 + 1e-4 * fabs(r))) {
                if (bad_lse < 3) printf("   LSE[%zu] gpu %g ref %g\n", i, g, r);
                ++bad_lse;
            }
            if (e == e) lse_max = std::max(lse_max, e);
        }
        const double p_tol = dt == FA_BF16 ? 1e-2 : 2e-3;
        for (size_t i = 0; i < p_elems; ++i) {
            const double r = h2f(dt, rp[i]), g = h2f(dt, gp[i]);
            const double e = fabs(g - r);
            if (!(e <= p_tol + 2e-2 * fabs(r)) || (fabs(r) > 2 * p_tol && (r < 0) != (g < 0))) ++bad_p;
            if (e == e) p_max = std::max(p_max, e);
        }
        if (bad_o || bad_lse || bad_p || bad_guard) ok = 0;
        if ((uint64_t)grng[0] != p.seed || (uint64_t)grng[1] != p.offset) {
            snprintf(why, sizeof why, "rng_state {%lld, %lld}, want {%llu, %llu}", (long long)grng[0],
                     (long long)grng[1], (unsigned long long)p.seed, (unsigned long long)p.offset);
            ok = 0;
        }
    }
    printf("%s %-100s O maxerr %.3e relL2 %.3e | LSE maxerr %.3e", ok ? "ok  " : "FAIL", c.name, o_max,
           den > 0 ? sqrt(num / den) : sqrt(num), lse_max);
    if (c.probs) printf(" | P maxerr %.3e", p_max);
    printf("\n");
    if (bad_o || bad_lse || bad_p || bad_guard)
        printf("     bad elements: O %lld, LSE %lld, P %lld, guard behind O %lld\n", (long long)bad_o,
               (long long)bad_lse, (long long)bad_p, (long long)bad_guard);
    if (why[0]) printf("     %s\n", why);
    if (ok) ++g_passed; else ++g_failed;

    cudaFree(dq); cudaFree(dk); cudaFree(dv); cudaFree(dO); cudaFree(dP); cudaFree(dlse);
    cudaFree(dcu_q); cudaFree(dcu_k); cudaFree(drng);
    CK(cudaStreamDestroy(stream));
}

static std::vector<tcase> build_cases(void)
{
    std::vector<tcase> v;
    const fa_dtype dts[2] = {FA_BF16, FA_F16};
    for (fa_dtype dt : dts) {
        /* shapes: every sm90 bucket (+ 40, 80, 200 through zero-filled columns), awkward lengths,
         * sq != sk both ways, causal and not */
        const int dims[] = {40, 64, 80, 128, 200, 256};
        /* {sq, sk, b, h}: the reference is a naive float64 loop, so the long shape is 1 x 2 heads */
        const int shapes[][4] = {{1, 1, 2, 3}, {17, 17, 2, 3}, {97, 33, 2, 3}, {33, 97, 2, 3}, {130, 257, 2, 3},
                                 {1025, 1025, 1, 2}};
        for (int d : dims)
            for (auto &s : shapes)
                for (int causal = 0; causal < 2; ++causal) {
                    tcase c = make_case("shape", dt, s[2], s[3], s[3], d, s[0], s[1]);
                    if (causal) c.right = 0;
                    finish_name(&c);
                    v.push_back(c);
                }
        /* long: many key tiles through the 2-slot ring, and the intra-warpgroup overlap (4096 in
         * bf16 only: the float64 reference is the slow part of this harness) */
        const int long_s = dt == FA_BF16 ? 4096 : 2048;
        for (int d : {64, 128})
            for (int causal = 0; causal < 2; ++causal) {
                tcase c = make_case("long", dt, 1, 1, 1, d, long_s, long_s);
                if (causal) c.right = 0;
                finish_name(&c);
                v.push_back(c);
            }
        {
            tcase c = make_case("long", dt, 1, 2, 1, 256, 1500, 2100);
            c.right = 0;
            finish_name(&c);
            v.push_back(c);
        }
        for (int d : {64, 128, 256}) {
            /* sliding windows, incl. ones whose band skips whole key tiles on both sides */
            struct { int left, right; } wins[] = {{16, 8}, {0, 0}, {200, -1}, {-1, 5}, {300, 0}, {130, 130}};
            for (auto &w : wins) {
                tcase c = make_case("window", dt, 1, 2, 2, d, 700, 900);
                c.left = w.left; c.right = w.right;
                finish_name(&c);
                v.push_back(c);
            }
            for (int hk : {1, 2}) {
                tcase c = make_case("gqa", dt, 2, 8, hk, d, 200, 333);
                c.right = 0;
                finish_name(&c);
                v.push_back(c);
            }
            {
                tcase c = make_case("packed", dt, 2, 3, 3, d, 257, 257);
                c.layout = LAYOUT_QKV_PACKED;
                c.right = 0;
                finish_name(&c);
                v.push_back(c);
            }
            {
                /* sq > sk causal: the first sq - sk rows see nothing: O = 0, LSE = -inf */
                tcase c = make_case("emptyrows", dt, 2, 2, 2, d, 300, 37);
                c.right = 0;
                finish_name(&c);
                v.push_back(c);
            }
            /* varlen: empty q and k sequences, sequences shorter than a key tile (the end-aligned
             * tile reads before the first row: TMA zeros), the last sequence ending at the end of
             * the K/V allocation with a partial tile */
            for (int mode = 0; mode < 3; ++mode) {
                tcase c = make_case("varlen", dt, 6, 4, 2, d, 0, 0);
                c.varlen = 1;
                c.lens_q = {17, 0, 97, 1, 150, 300};
                c.lens_k = {33, 5, 0, 1, 129, 517};
                if (mode == 1) c.right = 0;
                if (mode == 2) { c.left = 100; c.right = 20; }
                finish_name(&c);
                v.push_back(c);
            }
            {
                tcase c = make_case("varlen", dt, 3, 2, 1, d, 0, 0);
                c.varlen = 1;
                c.lens_q = {1025, 64, 200};
                c.lens_k = {1100, 300, 129};
                c.right = 0;
                finish_name(&c);
                v.push_back(c);
            }
        }
        /* dispatch through fa_fwd_cuda with FLASH_ATTN_C_SM90=1 */
        {
            tcase c = make_case("dispatch", dt, 2, 4, 2, 128, 300, 300);
            c.right = 0; c.path = PATH_DISPATCH; c.expect_sm90 = 1;
            finish_name(&c);
            v.push_back(c);
        }
        {
            tcase c = make_case("dispatch", dt, 2, 2, 2, 64, 70, 90);
            c.probs = 1; c.path = PATH_DISPATCH; c.expect_sm90 = 0;
            finish_name(&c);
            v.push_back(c);
        }
        {
            tcase c = make_case("dispatch", dt, 2, 2, 2, 128, 70, 90);
            c.softcap = 5.f; c.path = PATH_DISPATCH; c.expect_sm90 = 0;
            finish_name(&c);
            v.push_back(c);
        }
        {
            tcase c = make_case("dispatch", dt, 2, 2, 2, 32, 70, 90);
            c.path = PATH_DISPATCH; c.expect_sm90 = 0;
            finish_name(&c);
            v.push_back(c);
        }
    }
    return v;
}

/* ---- benchmark ------------------------------------------------------------------------- */

typedef fa_status (*fwd_fn)(const fa_params *, void *);

static fa_status run_sm80(const fa_params *p, void *s)
{
    return fa_fwd_cuda(p, s);  /* FLASH_ATTN_C_SM90 unset: the mma.sync kernels */
}

static double time_ms(fwd_fn fn, const fa_params *p)
{
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    for (int w = 0; w < 3; ++w) fn(p, NULL);
    CK(cudaDeviceSynchronize());
    std::vector<float> ts;
    for (int r = 0; r < 15; ++r) {
        CK(cudaEventRecord(e0));
        const fa_status st = fn(p, NULL);
        CK(cudaEventRecord(e1));
        CK(cudaEventSynchronize(e1));
        if (st != FA_OK) {
            printf("forward failed: %s\n", fa_status_string(st));
            exit(1);
        }
        float ms;
        CK(cudaEventElapsedTime(&ms, e0, e1));
        ts.push_back(ms);
    }
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    std::sort(ts.begin(), ts.end());
    return ts[ts.size() / 2];
}

static void bench(void)
{
    set_sm90_env(0);
    printf("%-6s %-5s %-7s %-6s %-4s %-6s %10s %12s %12s\n", "dtype", "d", "seqlen", "batch", "h", "causal",
           "sm90 ms", "sm90 TFLOP/s", "sm80 TFLOP/s");
    double lg90 = 0, lg80 = 0;
    int n = 0;
    for (int d : {64, 128, 256})
        for (int causal = 0; causal < 2; ++causal)
            for (int s : {512, 1024, 2048, 4096, 8192, 16384}) {
                const int b = 16384 / s, h = 2048 / d;
                const size_t elems = (size_t)b * s * h * d;
                uint16_t *q, *k, *vv, *o;
                float *lse;
                CK(cudaMalloc(&q, elems * 2));
                CK(cudaMalloc(&k, elems * 2));
                CK(cudaMalloc(&vv, elems * 2));
                CK(cudaMalloc(&o, elems * 2));
                CK(cudaMalloc(&lse, (size_t)b * h * s * 4));
                {
                    std::vector<uint16_t> hb(elems);
                    for (auto &x : hb) x = f2h(FA_BF16, rng_normal());
                    CK(cudaMemcpy(q, hb.data(), elems * 2, cudaMemcpyHostToDevice));
                    for (auto &x : hb) x = f2h(FA_BF16, rng_normal());
                    CK(cudaMemcpy(k, hb.data(), elems * 2, cudaMemcpyHostToDevice));
                    for (auto &x : hb) x = f2h(FA_BF16, rng_normal());
                    CK(cudaMemcpy(vv, hb.data(), elems * 2, cudaMemcpyHostToDevice));
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
                double flops = 4.0 * b * h * (double)s * s * d;
                if (causal) flops *= 0.5;
                if (!fa_fwd_sm90_can_run(&p)) {
                    printf("sm90 kernel refused d=%d s=%d (not an sm_90a build / device?)\n", d, s);
                    exit(1);
                }
                const double ms90 = time_ms(fa_fwd_sm90, &p);
                const double ms80 = time_ms(run_sm80, &p);
                const double tf90 = flops / (ms90 * 1e-3) / 1e12, tf80 = flops / (ms80 * 1e-3) / 1e12;
                lg90 += log(tf90);
                lg80 += log(tf80);
                ++n;
                printf("%-6s %-5d %-7d %-6d %-4d %-6d %10.3f %12.1f %12.1f\n", "bf16", d, s, b, h, causal, ms90, tf90,
                       tf80);
                fflush(stdout);
                cudaFree(q); cudaFree(k); cudaFree(vv); cudaFree(o); cudaFree(lse);
            }
    printf("geometric mean over %d shapes: sm90 %.1f TFLOP/s, sm80 %.1f TFLOP/s\n", n, exp(lg90 / n), exp(lg80 / n));
}

int main(int argc, char **argv)
{
    const char *filter = NULL;
    int do_bench = 0;
    for (int i = 1; i < argc; ++i) {
        if (!strcmp(argv[i], "--bench")) do_bench = 1;
        else if (!strcmp(argv[i], "-k") && i + 1 < argc) filter = argv[++i];
    }
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("device: %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
    if (prop.major != 9 || prop.minor != 0) {
        printf("FAIL: the sm90 kernels need a compute capability 9.0 GPU\n0 passed, 1 failed\n");
        return 1;
    }
    if (do_bench) {
        bench();
        return 0;
    }
    const std::vector<tcase> cases = build_cases();
    for (const tcase &c : cases) {
        if (filter && !strstr(c.name, filter)) continue;
        run_case(c);
        fflush(stdout);
    }
    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed ? 1 : 0;
}
