/* sm90_check.cu - self-checking harness of the Hopper forward (csrc/cuda/sm90/fa_fwd_sm90*) against the
 * C reference fa_fwd_cpu_reference (csrc/cpu, float64 inside), no torch. Needs an sm_90 GPU.
 *
 *   ./sm90_check                 every correctness case; last line "N passed, N failed"
 *   ./sm90_check -k substring    only cases whose name contains substring
 *   ./sm90_check --bench         bf16, d 64/128/256, seqlen 512..16k at 16k tokens per batch,
 *                                h * d = 2048, causal and not: TFLOP/s of the sm90 kernel and, in
 *                                the same run on the same inputs, of the sm80 (mma.sync) kernel;
 *                                median of CUDA-event timings after warm-up; FA_BENCH_FEAT=softcap,
 *                                alibi or both times the kFeat instances (softcap 30, BLOOM slopes),
 *                                FA_BENCH_FEAT=dropout the kDrop instance (dropout_p 0.1; with
 *                                softcap / alibi / both after a comma: dropout,softcap);
 *                                FLASH_ATTN_C_SM90_FWD_D64_BR=128 / =192 times the plain d = 64
 *                                calls on the 128-row / the 192-row tile (unset: the row's rule)
 *   ./sm90_check -k d64br128     the 128-row d = 64 tile's cases (that variable set per case)
 *
 * Every case calls fa_fwd_sm90() directly (and fails if fa_fwd_sm90_can_run() refuses it), draws
 * fresh random inputs (normal, never zeros), poisons O and LSE with NaN bytes plus a guard region
 * behind O, compares O and LSE element by element with the reference, checks that the guard is
 * untouched, that a second run is bitwise identical, and that rng_state was written. The
 * "dispatch" checks go through fa_fwd_cuda() with FLASH_ATTN_C_SM90=1: the plain path must give
 * the sm90 kernel's bits, and calls outside its scope (probabilities, varlen dropout, dropout with
 * FLASH_ATTN_C_SM90_FWD_DROPOUT=0, d = 32, softcap with FLASH_ATTN_C_SM90_FEAT=0) must fall back to the sm80 kernels and still be right. The
 * "feat" cases run softcap and ALiBi on the sm90 kernel's kFeat variant directly; the "drop" cases
 * dropout on its kDrop instance (the switch unset for them: the default), against the
 * reference with the same Philox mask (fa_dropout_keep: same seed / offset). The pieces shared with
 * dev/fwd/fwd_check.cu (random inputs, call geometry, tolerance rule, benchmark timer) are in
 * dev/common/.
 */
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <algorithm>
#include <vector>

#include "flash_attn_c.h"
#include "fa_fwd_sm90.cuh"
#include "../common/check_host.h"
#include "../common/check_cuda.h"
#include "../common/fwd_problem.h"
#include "../common/fwd_compare.h"
#include "../common/fwd_bench.h"

static check_rng g_rng = {0x2545F4914F6CDD1Dull};

/* FLASH_ATTN_C_SM90 for the dispatch cases; FLASH_ATTN_C_SM90_FEAT unset (the default: softcap /
 * ALiBi on the sm90 kernel) where a case expects that kernel, else 0 (the sm80 kernels);
 * FLASH_ATTN_C_SM90_FWD_DROPOUT unset (the default since H100 run 54: dropout on the sm90 kernel) for
 * the dropout cases of the sm90 kernel, else 0 (the opt-out: dropout on the sm80 kernels), whatever
 * the caller's environment holds. */
static void set_sm90_env(int on, int feat, int drop)
{
    if (drop) unsetenv("FLASH_ATTN_C_SM90_FWD_DROPOUT");
    else setenv("FLASH_ATTN_C_SM90_FWD_DROPOUT", "0", 1);
    /* the sm90 path is the default: the sm80 reference runs need it off explicitly */
    setenv("FLASH_ATTN_C_SM90", on ? "1" : "0", 1);
    if (feat) unsetenv("FLASH_ATTN_C_SM90_FEAT");
    else setenv("FLASH_ATTN_C_SM90_FEAT", "0", 1);
}

/* ---- cases ----------------------------------------------------------------------------- */

/* fwd_case.path: fa_fwd_sm90 directly / fa_fwd_cuda with the env on. fwd_make_case gives
 * PATH_SM90 and expect_sm90 = 1; probabilities and varlen dropout appear only in the dispatch
 * checks (features the sm90 kernel does not take). */
enum { PATH_SM90 = 0, PATH_DISPATCH = 1 };

/* the feature suffixes of the name */
static void finish_name(fwd_case *c)
{
    size_t n = strlen(c->name);
    if (c->varlen) {
        n += snprintf(c->name + n, sizeof c->name - n, " lens");
        for (size_t i = 0; i < c->lens_q.size(); ++i)
            n += snprintf(c->name + n, sizeof c->name - n, "%s%d/%d", i ? "," : " ", c->lens_q[i], c->lens_k[i]);
    }
    if (c->left >= 0 || c->right >= 0) n += snprintf(c->name + n, sizeof c->name - n, " win(%d,%d)", c->left, c->right);
    if (c->packed) n += snprintf(c->name + n, sizeof c->name - n, " qkvpacked");
    if (c->softcap > 0) n += snprintf(c->name + n, sizeof c->name - n, " softcap%g", c->softcap);
    if (c->scale != 0.f) n += snprintf(c->name + n, sizeof c->name - n, " scale%g", c->scale);
    if (c->alibi) n += snprintf(c->name + n, sizeof c->name - n, " alibi%s", c->alibi == 1 ? "(h)" : "(b,h)");
    if (c->dropout > 0) n += snprintf(c->name + n, sizeof c->name - n, " drop%g", c->dropout);
    if (c->probs) n += snprintf(c->name + n, sizeof c->name - n, " probs");
    if (c->seed_ptr) n += snprintf(c->name + n, sizeof c->name - n, " seedptr");
    if (c->path == PATH_DISPATCH) n += snprintf(c->name + n, sizeof c->name - n, " [dispatch]");
    if (c->persist_group > 0) n += snprintf(c->name + n, sizeof c->name - n, " G%d", c->persist_group);
    if (c->persist < 0) n += snprintf(c->name + n, sizeof c->name - n, " one-block");
}

static check_tally g_tally = {0, 0};

static void run_case(const fwd_case &c)
{
    const fa_dtype dt = c.dt;
    const int d = c.d;
    fwd_geom g;
    fa_params p;
    fwd_geom_init(&c, &g, &p);
    p.softmax_scale = c.scale != 0.f ? c.scale : 1.f / sqrtf((float)d);
    p.softcap = c.softcap;
    p.window_left = c.left;
    p.window_right = c.right;
    p.dropout_p = c.dropout;
    p.seed = 0x5eed0000ull + (uint64_t)d;
    p.offset = 64 + 16 * (uint64_t)g.sq;
    const size_t o_elems = g.o_elems, lse_elems = g.lse_elems, p_elems = g.p_elems;
    const size_t kGuard = 64;  /* poisoned elements behind O that nobody may write */

    /* inputs: exactly sized device buffers (varlen K/V end at the last key row, so a read past
     * a sequence's end at the tensor end would leave the allocation) */
    std::vector<uint16_t> hq(std::max<size_t>(g.q_elems, 1)), hkv_k(std::max<size_t>(g.kv_elems, 1)),
        hkv_v(std::max<size_t>(g.kv_elems, 1));
    check_fill_normal(&g_rng, dt, hq.data(), hq.size());
    check_fill_normal(&g_rng, dt, hkv_k.data(), hkv_k.size());
    check_fill_normal(&g_rng, dt, hkv_v.data(), hkv_v.size());
    std::vector<float> slopes;  /* ALiBi: (h,) or (b, h) */
    if (c.alibi) {
        slopes.resize((size_t)(c.alibi == 2 ? c.b : 1) * c.h);
        for (auto &sl : slopes) sl = (float)(0.05 + 0.5 * check_rng_uniform(&g_rng));
        p.alibi_batch_stride = c.alibi == 2 ? c.h : 0;
    }

    /* reference */
    std::vector<uint16_t> ro(o_elems + 1), rp(p_elems + 1);
    std::vector<float> rlse(lse_elems + 1);
    fa_params pr = p;
    fwd_bind_qkv(&g, &pr, hq.data(), hkv_k.data(), hkv_v.data());
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
        check_count(&g_tally, 0);
        return;
    }

    /* device */
    uint16_t *dO = NULL, *dP = NULL;
    float *dlse = NULL, *dslopes = NULL;
    int64_t *drng = NULL, *dseed = NULL;
    fa_params pg = p;
    fwd_dev_inputs din;
    fwd_upload_inputs(&g, hq, hkv_k, hkv_v, &din, &pg);
    CK(cudaMalloc(&dO, (o_elems + kGuard) * 2));
    CK(cudaMalloc(&dlse, (lse_elems + 1) * 4));
    if (c.probs) CK(cudaMalloc(&dP, (p_elems + 1) * 2));
    CK(cudaMalloc(&drng, 2 * sizeof(int64_t)));
    pg.o = dO;
    pg.lse = dlse;
    pg.p = dP;
    pg.rng_state = drng;
    if (c.seed_ptr) dseed = fwd_use_seed_ptr(&pg, &p); /* graph-capture mode */
    if (c.alibi) dslopes = (float *)check_to_device(slopes.data(), slopes.size(), 4);
    pg.alibi_slopes = dslopes;
    void *dws = NULL;  /* scratch of the split-KV kernel (short query blocks) */
    pg.workspace_bytes = fa_fwd_cuda_workspace_bytes(&pg);
    if (pg.workspace_bytes > 0) CK(cudaMalloc(&dws, pg.workspace_bytes));
    pg.workspace = dws;
    cudaStream_t stream;
    CK(cudaStreamCreate(&stream));

    int ok = 1;
    char why[160] = "";
    set_sm90_env(c.path == PATH_DISPATCH, c.path == PATH_DISPATCH && c.expect_sm90 && (c.softcap > 0 || c.alibi),
                 c.dropout > 0 && (c.expect_sm90 || c.varlen));
    if (c.path == PATH_SM90 && !fa_fwd_sm90_can_run(&pg)) {
        snprintf(why, sizeof why, "fa_fwd_sm90_can_run() refused the case");
        ok = 0;
    }
    if (c.path == PATH_DISPATCH && fa_fwd_sm90_supported(&pg) != c.expect_sm90) {
        snprintf(why, sizeof why, "fa_fwd_sm90_supported() = %d, want %d", !c.expect_sm90, c.expect_sm90);
        ok = 0;
    }
    /* the switches the cases below set for themselves; the caller's values come back after the case */
    const check_env_saved saved[] = {
        check_env_save("FLASH_ATTN_C_SM90_FWD_D64_BR"), check_env_save("FLASH_ATTN_C_SM90_FWD_CAP_SLIM"),
        check_env_save("FLASH_ATTN_C_SM90_FWD_PERSIST"), check_env_save("FLASH_ATTN_C_SM90_FWD_PERSIST_GROUP"),
        check_env_save("FLASH_ATTN_C_SM90_FWD_PERSIST_FEAT")};
    /* "d64br128" cases: the plain d = 64 instance on the 128-row tile (FLASH_ATTN_C_SM90_FWD_D64_BR=128
     * for this case only; other cases run with the caller's setting, so a caller's =128 runs every
     * plain d = 64 case on it) */
    if (c.small_br) setenv("FLASH_ATTN_C_SM90_FWD_D64_BR", "128", 1);
    /* "capslim" cases: the CAP_SLIM instance (FLASH_ATTN_C_SM90_FWD_CAP_SLIM=1 for this case only; other
     * cases run with the caller's setting, so a caller's =1 runs every bf16 softcap-alone case on it) */
    if (c.cap_slim) {
        setenv("FLASH_ATTN_C_SM90_FWD_CAP_SLIM", "1", 1);
        if (ok && !fa_fwd_sm90_cap_slim(&pg)) {
            snprintf(why, sizeof why, "fa_fwd_sm90_cap_slim() = 0: the CAP_SLIM instance was not selected");
            ok = 0;
        }
    }
    /* "persist" cases: the persistent grid (FLASH_ATTN_C_SM90_FWD_PERSIST=1 for this case only;
     * other cases run with the caller's setting) must be what fa_fwd_sm90 launches; persist -1: the
     * one-block grid (=0) */
    if (c.persist < 0) {
        setenv("FLASH_ATTN_C_SM90_FWD_PERSIST", "0", 1);
        if (ok && fa_fwd_sm90_persist_ctas(&pg) != 0) {
            snprintf(why, sizeof why, "fa_fwd_sm90_persist_ctas() = %d: want the one-block grid",
                     fa_fwd_sm90_persist_ctas(&pg));
            ok = 0;
        }
    }
    if (c.persist > 0) {
        setenv("FLASH_ATTN_C_SM90_FWD_PERSIST", "1", 1);
        /* "persistfeat" cases: softcap, ALiBi or dropout alone take it only with this switch too */
        if (c.softcap > 0.f || c.alibi || c.dropout > 0.f) setenv("FLASH_ATTN_C_SM90_FWD_PERSIST_FEAT", "1", 1);
        if (c.persist_group > 0) {
            char gs[16];
            snprintf(gs, sizeof gs, "%d", c.persist_group);
            setenv("FLASH_ATTN_C_SM90_FWD_PERSIST_GROUP", gs, 1);
        }
        const int ctas = fa_fwd_sm90_persist_ctas(&pg), grp = fa_fwd_sm90_persist_group(&pg);
        const int bh = c.b * c.h, want = c.persist_group > 0 ? std::min(c.persist_group, bh) : 0;
        if (ok && ctas <= 0) {
            snprintf(why, sizeof why, "fa_fwd_sm90_persist_ctas() = 0: the persistent grid was not selected");
            ok = 0;
        } else if (ok && (grp < 1 || grp > bh || (want > 0 && grp != want))) {
            snprintf(why, sizeof why, "fa_fwd_sm90_persist_group() = %d, want %d (1..b h = %d)", grp, want, bh);
            ok = 0;
        } else if (ok) {
            printf("     persistent grid: %d CTAs, the %d (batch, head) pairs in groups of %d%s\n", ctas, bh, grp,
                   bh % grp ? " (the last one smaller)" : "");
        }
        /* the 128-row tile: the grid is min(items, SMs) CTAs, items counted in 128-row blocks (the
         * host's Br, so this fails if the switch was not taken where items < SMs) */
        int sms = 0;
        CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
        const int64_t items128 = (int64_t)(c.sq + 127) / 128 * bh;
        if (ok && c.small_br && ctas != (int)std::min<int64_t>(items128, sms)) {
            snprintf(why, sizeof why, "persistent grid of %d CTAs, want %lld (128-row items, %d SMs)", ctas,
                     (long long)std::min<int64_t>(items128, sms), sms);
            ok = 0;
        }
    }

    std::vector<uint16_t> go(o_elems + kGuard), go2(o_elems + kGuard), gp(p_elems + 1);
    std::vector<float> glse(lse_elems + 1);
    int64_t grng[2] = {0, 0};
    for (int rep = 0; rep < 2 && ok; ++rep) {
        check_poison(dO, (o_elems + kGuard) * 2);  /* NaN poison + guard */
        check_poison(dlse, (lse_elems + 1) * 4);
        check_poison(drng, 2 * sizeof(int64_t));
        if (c.probs) check_poison(dP, (p_elems + 1) * 2);
        st = c.path == PATH_SM90 ? fa_fwd_sm90(&pg, stream) : fa_fwd_cuda(&pg, stream);
        const cudaError_t ce = cudaStreamSynchronize(stream);
        if (ce != cudaSuccess) {
            printf("FAIL %s: CUDA error %s (sticky: stopping)\n", c.name, cudaGetErrorString(ce));
            check_count(&g_tally, 0);
            exit(check_summary(&g_tally));
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
        check_poison(dO, (o_elems + kGuard) * 2);
        st = fa_fwd_sm90(&pg, stream);
        CK(cudaStreamSynchronize(stream));
        CK(cudaMemcpy(go2.data(), dO, o_elems * 2, cudaMemcpyDeviceToHost));
        if (st != FA_OK || memcmp(go.data(), go2.data(), o_elems * 2) != 0) {
            snprintf(why, sizeof why, "fa_fwd_cuda (env on) is not bitwise fa_fwd_sm90");
            ok = 0;
        }
    }
    /* persist: the same math per item as the one-block kernel, so the same bits are expected (a
     * difference is reported, not failed: the two are compiled separately) */
    if (ok && c.persist > 0) {
        setenv("FLASH_ATTN_C_SM90_FWD_PERSIST", "0", 1);
        check_poison(dO, (o_elems + kGuard) * 2);
        st = fa_fwd_sm90(&pg, stream);
        CK(cudaStreamSynchronize(stream));
        CK(cudaMemcpy(go2.data(), dO, o_elems * 2, cudaMemcpyDeviceToHost));
        if (st != FA_OK || memcmp(go.data(), go2.data(), o_elems * 2) != 0)
            printf("     note: O differs bitwise from the one-block kernel's\n");
    }
    for (const check_env_saved &sw : saved) check_env_restore(&sw);
    set_sm90_env(0, 0, 0);

    /* compare (only what ran) */
    fwd_errors e;
    memset(&e, 0, sizeof e);
    int64_t bad_guard = 0;
    if (ok) {
        fwd_compare(&g, dt, go.data(), ro.data(), glse.data(), rlse.data(), gp.data(), rp.data(), &e);
        for (size_t i = o_elems; i < o_elems + kGuard; ++i) bad_guard += go[i] != 0xffff;
        if (e.bad_o || e.bad_lse || e.bad_p || bad_guard) ok = 0;
        if ((uint64_t)grng[0] != p.seed || (uint64_t)grng[1] != p.offset) {
            snprintf(why, sizeof why, "rng_state {%lld, %lld}, want {%llu, %llu}", (long long)grng[0],
                     (long long)grng[1], (unsigned long long)p.seed, (unsigned long long)p.offset);
            ok = 0;
        }
    }
    fwd_print_result(ok, c.name, 100, &e, c.probs);
    if (e.bad_o || e.bad_lse || e.bad_p || bad_guard)
        printf("     bad elements: O %lld, LSE %lld, P %lld, guard behind O %lld\n", (long long)e.bad_o,
               (long long)e.bad_lse, (long long)e.bad_p, (long long)bad_guard);
    if (why[0]) printf("     %s\n", why);
    check_count(&g_tally, ok);

    fwd_free_inputs(&din);
    cudaFree(dO); cudaFree(dP); cudaFree(dlse); cudaFree(dslopes); cudaFree(drng); cudaFree(dseed); cudaFree(dws);
    CK(cudaStreamDestroy(stream));
}

static std::vector<fwd_case> build_cases(void)
{
    std::vector<fwd_case> v;
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
                    fwd_case c = fwd_make_case("shape", dt, s[2], s[3], s[3], d, s[0], s[1]);
                    if (causal) c.right = 0;
                    finish_name(&c);
                    v.push_back(c);
                }
        /* long: many key tiles through the 2-slot ring, and the intra-warpgroup overlap (4096 in
         * bf16 only: the float64 reference is the slow part of this harness) */
        const int long_s = dt == FA_BF16 ? 4096 : 2048;
        for (int d : {64, 128})
            for (int causal = 0; causal < 2; ++causal) {
                fwd_case c = fwd_make_case("long", dt, 1, 1, 1, d, long_s, long_s);
                if (causal) c.right = 0;
                finish_name(&c);
                v.push_back(c);
            }
        {
            fwd_case c = fwd_make_case("long", dt, 1, 2, 1, 256, 1500, 2100);
            c.right = 0;
            finish_name(&c);
            v.push_back(c);
        }
        for (int d : {64, 128, 256}) {
            /* sliding windows, incl. ones whose band skips whole key tiles on both sides */
            struct { int left, right; } wins[] = {{16, 8}, {0, 0}, {200, -1}, {-1, 5}, {300, 0}, {130, 130}};
            for (auto &w : wins) {
                fwd_case c = fwd_make_case("window", dt, 1, 2, 2, d, 700, 900);
                c.left = w.left; c.right = w.right;
                finish_name(&c);
                v.push_back(c);
            }
            for (int hk : {1, 2}) {
                fwd_case c = fwd_make_case("gqa", dt, 2, 8, hk, d, 200, 333);
                c.right = 0;
                finish_name(&c);
                v.push_back(c);
            }
            {
                fwd_case c = fwd_make_case("packed", dt, 2, 3, 3, d, 257, 257);
                c.packed = 1;
                c.right = 0;
                finish_name(&c);
                v.push_back(c);
            }
            {
                /* sq > sk causal: the first sq - sk rows see nothing: O = 0, LSE = -inf */
                fwd_case c = fwd_make_case("emptyrows", dt, 2, 2, 2, d, 300, 37);
                c.right = 0;
                finish_name(&c);
                v.push_back(c);
            }
            /* varlen: empty q and k sequences, sequences shorter than a key tile (the end-aligned
             * tile reads before the first row: TMA zeros), the last sequence ending at the end of
             * the K/V allocation with a partial tile */
            for (int mode = 0; mode < 3; ++mode) {
                fwd_case c = fwd_make_case("varlen", dt, 6, 4, 2, d, 0, 0);
                c.varlen = 1;
                c.lens_q = {17, 0, 97, 1, 150, 300};
                c.lens_k = {33, 5, 0, 1, 129, 517};
                if (mode == 1) c.right = 0;
                if (mode == 2) { c.left = 100; c.right = 20; }
                finish_name(&c);
                v.push_back(c);
            }
            {
                fwd_case c = fwd_make_case("varlen", dt, 3, 2, 1, d, 0, 0);
                c.varlen = 1;
                c.lens_q = {1025, 64, 200};
                c.lens_k = {1100, 300, 129};
                c.right = 0;
                finish_name(&c);
                v.push_back(c);
            }
        }
        /* softcap and ALiBi (the kFeat variant, called directly): every bucket (softcap alone and
         * ALiBi alone run their own instances, FA_SM90_FEAT_CAP / ALIBI, on the plain tile; both
         * together the ANY instance, at d = 64 on its own 128-row tile, fa_tuning.h feat_br), causal and not, a window, GQA, varlen
         * with empty and end-aligned sequences */
        for (int d : {64, 80, 128, 256})
            for (int feat = 0; feat < 3; ++feat) {
                const float cap = feat != 1 ? 6.f : 0.f;
                const int alibi = feat == 0 ? 0 : feat;  /* 0: softcap; 1: ALiBi (h,); 2: both, (b,h) */
                for (int causal = 0; causal < 2; ++causal) {
                    fwd_case c = fwd_make_case("feat", dt, 2, 4, 2, d, 300, 517);
                    c.softcap = cap; c.alibi = alibi;
                    if (causal) c.right = 0;
                    finish_name(&c);
                    v.push_back(c);
                }
                fwd_case w = fwd_make_case("feat", dt, 1, 2, 2, d, 700, 900);
                w.softcap = cap; w.alibi = alibi; w.left = 130; w.right = 20;
                finish_name(&w);
                v.push_back(w);
                fwd_case vl = fwd_make_case("feat", dt, 6, 4, 2, d, 0, 0);
                vl.varlen = 1; vl.softcap = cap; vl.alibi = alibi; vl.right = 0;
                vl.lens_q = {17, 0, 97, 1, 150, 300};
                vl.lens_k = {33, 5, 0, 1, 129, 517};
                finish_name(&vl);
                v.push_back(vl);
            }
        /* softcap alone on the CAP_SLIM instance (bf16, FLASH_ATTN_C_SM90_FWD_CAP_SLIM=1): every bucket,
         * softcap 5 / 30 / 50 (50: P up to 2^44), causal and not, a window, GQA,
         * sq != sk both ways, varlen; scale 2 (16x to 32x the default) saturates tanh at both ends */
        if (dt == FA_BF16)
            for (int d : {64, 80, 128, 256})
                for (float cap : {5.f, 30.f, 50.f}) {
                    const int shp[][5] = {{2, 4, 2, 300, 517}, {1, 6, 3, 517, 300}, {1, 2, 1, 700, 2048}};
                    for (auto &sh : shp)
                        for (int mode = 0; mode < 3; ++mode) {  /* 0 none, 1 causal, 2 window */
                            fwd_case c = fwd_make_case("capslim", dt, sh[0], sh[1], sh[2], d, sh[3], sh[4]);
                            c.softcap = cap; c.cap_slim = 1;
                            if (mode == 1) c.right = 0;
                            if (mode == 2) { c.left = 130; c.right = 20; }
                            if (sh[3] == 700) c.scale = 2.f;
                            finish_name(&c);
                            v.push_back(c);
                        }
                    fwd_case vl = fwd_make_case("capslim", dt, 6, 4, 2, d, 0, 0);
                    vl.varlen = 1; vl.softcap = cap; vl.cap_slim = 1; vl.right = 0; vl.scale = 2.f;
                    vl.lens_q = {17, 0, 97, 1, 150, 300};
                    vl.lens_k = {33, 5, 0, 1, 129, 517};
                    finish_name(&vl);
                    v.push_back(vl);
                }
        /* dropout (the kDrop instances, called directly): every bucket, awkward shapes, causal and
         * not, a window, GQA (dropout alone: the DROP instance on the plain tile), with softcap /
         * ALiBi (the ANY instance, on its own tile at d = 64), the device seed */
        for (int d : {64, 80, 128, 256}) {
            const int ds[][4] = {{1, 1, 2, 3}, {17, 17, 2, 3}, {97, 33, 2, 3}, {33, 97, 2, 3}, {300, 517, 2, 4}};
            for (auto &s : ds)
                for (int causal = 0; causal < 2; ++causal) {
                    const int hk = s[3] % 2 ? s[3] : s[3] / 2;  /* 3 heads: MHA; 4 heads: GQA 4 / 2 */
                    fwd_case c = fwd_make_case("drop", dt, s[2], s[3], hk, d, s[0], s[1]);
                    c.dropout = causal ? 0.17f : 0.5f;
                    if (causal) c.right = 0;
                    finish_name(&c);
                    v.push_back(c);
                }
            fwd_case w = fwd_make_case("drop", dt, 1, 8, 2, d, 700, 900);
            w.dropout = 0.3f; w.left = 130; w.right = 20;
            finish_name(&w);
            v.push_back(w);
            fwd_case f = fwd_make_case("drop", dt, 2, 4, 2, d, 300, 517);
            f.dropout = 0.2f; f.softcap = 6.f; f.alibi = 2; f.right = 0;
            finish_name(&f);
            v.push_back(f);
            fwd_case fa = fwd_make_case("drop", dt, 2, 4, 2, d, 300, 517); /* ALiBi alone: ANY, not DROP */
            fa.dropout = 0.2f; fa.alibi = 2;
            finish_name(&fa);
            v.push_back(fa);
            fwd_case sp = fwd_make_case("drop", dt, 2, 2, 2, d, 64, 80);
            sp.dropout = 0.25f; sp.seed_ptr = 1;
            finish_name(&sp);
            v.push_back(sp);
        }
        if (dt == FA_BF16) {
            fwd_case c = fwd_make_case("drop", dt, 1, 2, 1, 128, 2048, 2048);  /* many key tiles */
            c.dropout = 0.1f; c.right = 0;
            finish_name(&c);
            v.push_back(c);
        }
        /* the persistent grid (d = 64: Br 192, d = 128: Br 128; H100 / H200: 132 SMs): work items
         * b h ceil(sq / Br) = 1, 131, 133 (one CTA with two items), 265 (two waves + 1), 1000+,
         * 2560 / 4800 short items (~20 / ~36 per CTA: both Q slots reused many times);
         * causal bottom-right with sq != sk both ways, rows / whole items without keys (sq > sk
         * causal: n_tiles = 0 items among the others), a window that skips key tiles, GQA / MQA */
        {
            struct { int b, h, hk, d, sq, sk, left, right; } ps[] = {
                {1, 1, 1, 64, 100, 300, -1, -1},     /*    1 item  */
                {1, 131, 1, 128, 128, 200, -1, 0},   /*  131 items, MQA, causal */
                {7, 19, 19, 64, 150, 150, -1, 0},    /*  133 items, causal */
                {5, 53, 53, 128, 1, 1, -1, -1},      /*  265 items, 1 row each */
                {64, 8, 2, 128, 130, 64, -1, -1},    /* 1024 items, GQA */
                {60, 9, 3, 64, 200, 200, -1, 0},     /* 1080 items, GQA, causal */
                {6, 8, 4, 128, 300, 1000, -1, 0},    /*  144 items, causal, sq < sk */
                {30, 5, 5, 128, 300, 37, -1, 0},     /*  450 items, causal, sq > sk: empty items */
                {2, 40, 40, 64, 700, 900, 130, 20},  /*  320 items, window */
                /* host rule: kv head 8192 x 128 x 4 B = 4 MB, 16 MB per group: G = 4 of 6 pairs */
                {1, 6, 6, 128, 129, 8192, -1, 0},    /*   12 items, causal, groups of 4 + 2 */
                /* the two Q slots: the producer runs up to 2 items ahead of short items, loading
                 * the next Q while the previous item's O is staged in the other slot */
                {64, 40, 8, 64, 1, 1, -1, -1},       /* 2560 items of 1 row (~19 per CTA), GQA */
                {200, 8, 8, 64, 400, 50, -1, 0},     /* 4800 items, causal sq > sk: 1 in 3 empty */
            };
            const int n_ps = dt == FA_BF16 ? (int)(sizeof ps / sizeof ps[0]) : 4;
            for (int i = 0; i < n_ps; ++i) {
                fwd_case c = fwd_make_case("persist", dt, ps[i].b, ps[i].h, ps[i].hk, ps[i].d, ps[i].sq, ps[i].sk);
                c.left = ps[i].left; c.right = ps[i].right; c.persist = 1;
                finish_name(&c);
                v.push_back(c);
            }
            /* softcap alone (CAP; bf16 also CAP_SLIM), ALiBi alone ((h,) and (b, h) slopes: each item
             * reads its own (batch, head) slope) and dropout alone (each item its own Philox counters)
             * on the persistent grid (FLASH_ATTN_C_SM90_FWD_PERSIST_FEAT=1): 1 item, 133 items, 265
             * one-row items, GQA 1080 items, empty items (sq > sk causal), window */
            for (int i : {0, 2, 3, 5, 7, 8})
                for (int feat = 0; feat < 5; ++feat) {  /* softcap 30, CAP_SLIM, ALiBi (h), (b, h), dropout 0.1 */
                    if (feat == 1 && dt != FA_BF16) continue;
                    fwd_case c = fwd_make_case("persistfeat", dt, ps[i].b, ps[i].h, ps[i].hk, ps[i].d, ps[i].sq,
                                               ps[i].sk);
                    c.left = ps[i].left; c.right = ps[i].right; c.persist = 1;
                    if (feat <= 1) c.softcap = 30.f;
                    c.cap_slim = feat == 1;
                    if (feat == 2 || feat == 3) c.alibi = feat - 1;
                    if (feat == 4) c.dropout = 0.1f;
                    finish_name(&c);
                    v.push_back(c);
                }
            /* the item order with a forced group size G (FLASH_ATTN_C_SM90_FWD_PERSIST_GROUP): b h
             * not a multiple of G (a smaller last group), G not a multiple of the GQA group (a
             * group's pairs straddle kv heads and batches), G = 1 (the one-block grid's order) */
            struct { int b, h, hk, d, sq, sk, right, g; } pg[] = {
                {30, 5, 5, 128, 300, 37, 0, 4},      /* 450 items, empty items, groups 37 x 4 + 2 */
                {60, 9, 3, 64, 200, 200, 0, 7},      /* 1080 items, GQA, groups 77 x 7 + 1 */
                {6, 8, 4, 128, 300, 1000, 0, 1},     /* 144 items, one pair per group */
                {7, 19, 19, 128, 150, 150, -1, 5},   /* 266 items, groups 26 x 5 + 3 */
            };
            const int n_pg = dt == FA_BF16 ? (int)(sizeof pg / sizeof pg[0]) : 1;
            for (int i = 0; i < n_pg; ++i) {
                fwd_case c = fwd_make_case("persist", dt, pg[i].b, pg[i].h, pg[i].hk, pg[i].d, pg[i].sq, pg[i].sk);
                c.right = pg[i].right; c.persist = 1; c.persist_group = pg[i].g;
                finish_name(&c);
                v.push_back(c);
            }
        }
        /* the plain d = 64 instance on the 128-row tile (FLASH_ATTN_C_SM90_FWD_D64_BR=128), each shape
         * on the persistent grid (its bits also compared with the one-block grid's) and on the
         * one-block grid: lengths around 128 / 192 (partial and exactly full blocks), causal
         * bottom-right with sq != sk both ways (sq > sk: items without keys), GQA / MQA, a window,
         * d = 40 (zero-filled columns), many short items, the target shape seqlen 512 */
        {
            struct { int b, h, hk, d, sq, sk, left, right; } bs[] = {
                {1, 1, 1, 64, 128, 128, -1, 0},      /* one full block, causal */
                {2, 4, 2, 64, 129, 200, -1, -1},     /* one row past a block, GQA */
                {1, 3, 1, 64, 191, 191, -1, 0},      /* MQA, causal, 2 blocks (1 at Br 192) */
                {2, 2, 2, 64, 192, 300, -1, 0},      /* causal sq < sk */
                {3, 4, 4, 64, 257, 130, -1, 0},      /* causal sq > sk: rows and items without keys */
                {1, 8, 2, 64, 512, 512, -1, 0},      /* the target shape, causal */
                {1, 8, 2, 64, 512, 512, -1, -1},     /* the target shape */
                {2, 6, 3, 64, 383, 383, 100, 20},    /* window */
                {1, 2, 2, 40, 200, 250, -1, 0},      /* d = 40 in the 64 bucket */
                {60, 9, 3, 64, 200, 200, -1, 0},     /* 1080 items, GQA, causal */
                {64, 40, 8, 64, 1, 1, -1, -1},       /* 2560 items of 1 row */
            };
            const int n_bs = dt == FA_BF16 ? (int)(sizeof bs / sizeof bs[0]) : 3;
            for (int i = 0; i < n_bs; ++i)
                for (int persist : {1, -1}) {
                    fwd_case c = fwd_make_case("d64br128", dt, bs[i].b, bs[i].h, bs[i].hk, bs[i].d, bs[i].sq, bs[i].sk);
                    c.left = bs[i].left; c.right = bs[i].right; c.persist = persist; c.small_br = 1;
                    finish_name(&c);
                    v.push_back(c);
                }
        }
        /* dispatch through fa_fwd_cuda with FLASH_ATTN_C_SM90=1 */
        {
            fwd_case c = fwd_make_case("dispatch", dt, 2, 4, 2, 128, 300, 300);
            c.right = 0; c.path = PATH_DISPATCH; c.expect_sm90 = 1;
            finish_name(&c);
            v.push_back(c);
        }
        {
            fwd_case c = fwd_make_case("dispatch", dt, 2, 2, 2, 64, 70, 90);
            c.probs = 1; c.path = PATH_DISPATCH; c.expect_sm90 = 0;
            finish_name(&c);
            v.push_back(c);
        }
        {
            fwd_case c = fwd_make_case("dispatch", dt, 2, 2, 2, 128, 70, 90);
            c.softcap = 5.f; c.path = PATH_DISPATCH; c.expect_sm90 = 0;
            finish_name(&c);
            v.push_back(c);
        }
        {
            /* by default (FLASH_ATTN_C_SM90_FEAT unset by run_case for expect_sm90 feature
             * cases) the dispatch must give the kFeat kernel's bits */
            fwd_case c = fwd_make_case("dispatch", dt, 2, 4, 2, 128, 300, 300);
            c.softcap = 5.f; c.alibi = 2; c.right = 0; c.path = PATH_DISPATCH; c.expect_sm90 = 1;
            finish_name(&c);
            v.push_back(c);
        }
        {
            /* dropout by default (FLASH_ATTN_C_SM90_FWD_DROPOUT unset by run_case): the kDrop kernel's bits */
            fwd_case c = fwd_make_case("dispatch", dt, 2, 4, 2, 128, 300, 300);
            c.dropout = 0.2f; c.right = 0; c.path = PATH_DISPATCH; c.expect_sm90 = 1;
            finish_name(&c);
            v.push_back(c);
        }
        {
            /* dropout opted out (FLASH_ATTN_C_SM90_FWD_DROPOUT=0): the sm80 kernels */
            fwd_case c = fwd_make_case("dispatch", dt, 2, 2, 2, 128, 70, 90);
            c.dropout = 0.2f; c.path = PATH_DISPATCH; c.expect_sm90 = 0;
            finish_name(&c);
            v.push_back(c);
        }
        {
            /* varlen dropout is not the kDrop instance's (its end-aligned tile): the sm80 kernels
             * even by default (run_case leaves the switch unset for varlen dropout cases) */
            fwd_case c = fwd_make_case("dispatch", dt, 6, 4, 2, 128, 0, 0);
            c.varlen = 1; c.dropout = 0.2f; c.right = 0; c.path = PATH_DISPATCH; c.expect_sm90 = 0;
            c.lens_q = {17, 0, 97, 1, 150, 300};
            c.lens_k = {33, 5, 0, 1, 129, 517};
            finish_name(&c);
            v.push_back(c);
        }
        {
            fwd_case c = fwd_make_case("dispatch", dt, 2, 2, 2, 32, 70, 90);
            c.path = PATH_DISPATCH; c.expect_sm90 = 0;
            finish_name(&c);
            v.push_back(c);
        }
    }
    return v;
}

/* ---- benchmark ------------------------------------------------------------------------- */

static fa_status run_sm80(const fa_params *p, void *s)
{
    return fa_fwd_cuda(p, s);  /* FLASH_ATTN_C_SM90=0 (bench sets it): the mma.sync kernels */
}

/* FA_BENCH_FEAT=softcap|alibi|both: the bench's calls with softcap 30 and / or ALiBi slopes
 * 2^(-8 (i + 1) / h) (BLOOM's), so A/B runs time the kFeat instances (gpu_harness_ab.sh);
 * FA_BENCH_FEAT=dropout (alone: the DROP instance) or dropout,softcap|alibi|both (the ANY kDrop
 * instance): dropout_p 0.1 as well (the sm80 column then times the sm80 dropout kernel) */
static void bench(void)
{
    const char *env = getenv("FA_BENCH_FEAT");
    const int drop = env != NULL && strncmp(env, "dropout", 7) == 0;
    const char *feat = drop ? (env[7] == ',' ? env + 8 : env[7] == 0 ? NULL : "?") : env;
    const int cap = feat != NULL && (strcmp(feat, "softcap") == 0 || strcmp(feat, "both") == 0);
    const int alibi = feat != NULL && (strcmp(feat, "alibi") == 0 || strcmp(feat, "both") == 0);
    if (feat != NULL && !cap && !alibi) {
        fprintf(stderr, "FA_BENCH_FEAT=%s: softcap, alibi, both, dropout or dropout,<one of the three>\n", env);
        exit(2);
    }
    set_sm90_env(0, cap || alibi, drop);
    if (cap || alibi || drop)
        printf("features: softcap %d, ALiBi %d, dropout %g (FA_BENCH_FEAT)\n", cap, alibi, drop ? 0.1 : 0.0);
    /* fa_fwd_sm90 reads it on every call: the plain d = 64 calls on the 128-row tile (A/B runs) */
    if (getenv("FLASH_ATTN_C_SM90_FWD_D64_BR") != NULL)
        printf("FLASH_ATTN_C_SM90_FWD_D64_BR=%s\n", getenv("FLASH_ATTN_C_SM90_FWD_D64_BR"));
    printf("%-6s %-5s %-7s %-6s %-4s %-6s %10s %12s %12s\n", "dtype", "d", "seqlen", "batch", "h", "causal",
           "sm90 ms", "sm90 TFLOP/s", "sm80 TFLOP/s");
    double lg90 = 0, lg80 = 0;
    int n = 0;
    for (int d : {64, 128, 256})
        for (int causal = 0; causal < 2; ++causal)
            for (int s : {512, 1024, 2048, 4096, 8192, 16384}) {
                const int b = 16384 / s, h = 2048 / d;
                fa_params p;
                fwd_bench_setup(&g_rng, b, s, h, d, causal, &p);
                float *slopes = NULL;
                if (cap) p.softcap = 30.f;
                if (drop) {
                    p.dropout_p = 0.1f;
                    p.seed = 0x5eed0000ull + (uint64_t)d;
                    p.offset = 64;
                }
                if (alibi) {
                    float hs[64];  /* h = 2048 / d <= 32 */
                    for (int i = 0; i < h; ++i) hs[i] = exp2f(-8.f * (float)(i + 1) / (float)h);
                    if (cudaMalloc(&slopes, (size_t)h * sizeof(float)) != cudaSuccess ||
                        cudaMemcpy(slopes, hs, (size_t)h * sizeof(float), cudaMemcpyHostToDevice) != cudaSuccess) {
                        fprintf(stderr, "bench: ALiBi slopes allocation failed\n");
                        exit(1);
                    }
                    p.alibi_slopes = slopes;
                }
                double flops = 4.0 * b * h * (double)s * s * d;
                if (causal) flops *= 0.5;
                if (!fa_fwd_sm90_can_run(&p)) {
                    printf("sm90 kernel refused d=%d s=%d (not an sm_90a build / device?)\n", d, s);
                    exit(1);
                }
                if (fa_fwd_sm90_persist_ctas(&p) > 0)  /* FLASH_ATTN_C_SM90_FWD_PERSIST=1; d = 64 by default */
                    printf("(persistent grid, %d CTAs, groups of %d of %d (batch, head) pairs)\n",
                           fa_fwd_sm90_persist_ctas(&p), fa_fwd_sm90_persist_group(&p), b * h);
                const double ms90 = fwd_bench_median_ms(fa_fwd_sm90, &p);
                /* FA_BENCH_SM90_ONLY set: no sm80 column (A/B runs of the sm90 kernel; prints nan) */
                const double ms80 = getenv("FA_BENCH_SM90_ONLY") != NULL ? NAN : fwd_bench_median_ms(run_sm80, &p);
                const double tf90 = flops / (ms90 * 1e-3) / 1e12, tf80 = flops / (ms80 * 1e-3) / 1e12;
                lg90 += log(tf90);
                lg80 += log(tf80);
                ++n;
                printf("%-6s %-5d %-7d %-6d %-4d %-6d %10.3f %12.1f %12.1f\n", "bf16", d, s, b, h, causal, ms90, tf90,
                       tf80);
                fflush(stdout);
                fwd_bench_free(&p);
                cudaFree(slopes);
            }
    printf("geometric mean over %d shapes: sm90 %.1f TFLOP/s, sm80 %.1f TFLOP/s\n", n, exp(lg90 / n), exp(lg80 / n));
}

int main(int argc, char **argv)
{
    check_cli cli;
    check_parse_cli(argc, argv, CHECK_OPT_K | CHECK_OPT_BENCH, "", &cli);
    if (check_print_device() != 90) {
        printf("FAIL: the sm90 kernels need a compute capability 9.0 GPU\n0 passed, 1 failed\n");
        return 1;
    }
    if (cli.bench) {
        bench();
        return 0;
    }
    /* The checks run the wide d128 tile (fa_tuning.h wide_bc) at every key length: the measured rule
     * (wide_min_sk) would leave the short cases, which cross its tile edges, on 128 keys. A caller's
     * FLASH_ATTN_C_SM90_FWD_WIDE=0 checks the 128-key tile instead; --bench above keeps the rule. */
    setenv("FLASH_ATTN_C_SM90_FWD_WIDE", "1", 0);
    const std::vector<fwd_case> cases = build_cases();
    for (const fwd_case &c : cases) {
        if (!check_selected(&cli, c.name)) continue;
        run_case(c);
        fflush(stdout);
    }
    return check_summary(&g_tally);
}
