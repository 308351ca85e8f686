/* bwd_run.h - one test case of the backward harnesses (dev/bwd/bwd_check.cu,
 * dev/bwd_sm90/bwd_sm90_check.cu), end to end: random inputs, the fp32 reference forward (O, LSE)
 * and oracle backward, the low-precision baseline, then the backward under test on the device in
 * every mode the harness lists (outputs, strided gaps and workspace poisoned before each call),
 * judged by the rule of bwd_oracle.h. What differs between the harnesses (entry point, workspace
 * size, scope check, modes) comes in a bwd_target.
 *
 * Include <cuda_runtime.h> (or, for the CPU simulator build, sim/sim_cuda.h) first. */
#ifndef DEV_BWD_RUN_H
#define DEV_BWD_RUN_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <algorithm>
#include <vector>

#include "flash_attn_c.h"
#include "check_host.h"
#include "check_cuda.h"
#include "bwd_problem.h"
#include "bwd_oracle.h"

/* ---- what is under test ------------------------------------------------------------------- */
typedef fa_status (*bwd_entry_fn)(const fa_params *p, void *stream);
typedef size_t (*bwd_workspace_fn)(const fa_params *p);
typedef int (*bwd_supported_fn)(const fa_params *p);

/* one run of the backward per case and mode */
typedef struct bwd_mode {
    const char *name;   /* the mode column of the result line */
    int deterministic;  /* fa_params.deterministic */
    int repeat;         /* 1: run a second time; the outputs must be identical bit for bit */
} bwd_mode;

typedef struct bwd_target {
    bwd_entry_fn run;                  /* the backward under test */
    bwd_workspace_fn workspace_bytes;  /* its workspace size */
    bwd_supported_fn supported;        /* NULL, or a scope check: a case it rejects fails */
    const bwd_mode *modes;             /* (n_modes,) */
    int n_modes;
} bwd_target;

/* ---- one GPU backward --------------------------------------------------------------------- */
typedef struct bwd_gpu_inputs {
    bwd_layout lq, lk, lv, lo, ldo, ldq, ldk, ldv;
    uint16_t *q, *k, *v, *o, *dout, *dq, *dk, *dv;
    float *lse, *alibi;
    int32_t *cu_q, *cu_k;
    int64_t *rng; /* {seed, offset - add} for the seed-pointer path */
} bwd_gpu_inputs;

static const uint64_t BWD_OFFSET_ADD = 12;

/* Runs t->run once on the device inputs g (dq, dk, dv and the workspace poisoned first) and
 * copies back the whole dq, dk, dv buffers, gaps included. */
static inline fa_status bwd_gpu_backward(const bwd_problem &P, bwd_gpu_inputs &g, const bwd_target *t,
                                         int deterministic,
                                         std::vector<uint16_t> &hdq /* (ldq.elems,) out */,
                                         std::vector<uint16_t> &hdk /* (ldk.elems,) out */,
                                         std::vector<uint16_t> &hdv /* (ldv.elems,) out */)
{
    const bwd_case *c = P.c;
    fa_params p;
    bwd_params_sizes(P, c->dt, p);
    p.q = g.q; p.k = g.k; p.v = g.v; p.o = g.o; p.lse = g.lse;
    p.q_batch_stride = g.lq.bs; p.q_row_stride = g.lq.rs; p.q_head_stride = g.lq.hs;
    p.k_batch_stride = g.lk.bs; p.k_row_stride = g.lk.rs; p.k_head_stride = g.lk.hs;
    p.v_batch_stride = g.lv.bs; p.v_row_stride = g.lv.rs; p.v_head_stride = g.lv.hs;
    p.o_batch_stride = g.lo.bs; p.o_row_stride = g.lo.rs; p.o_head_stride = g.lo.hs;
    p.dout = g.dout; p.dq = g.dq; p.dk = g.dk; p.dv = g.dv;
    p.do_batch_stride = g.ldo.bs; p.do_row_stride = g.ldo.rs; p.do_head_stride = g.ldo.hs;
    p.dq_batch_stride = g.ldq.bs; p.dq_row_stride = g.ldq.rs; p.dq_head_stride = g.ldq.hs;
    p.dk_batch_stride = g.ldk.bs; p.dk_row_stride = g.ldk.rs; p.dk_head_stride = g.ldk.hs;
    p.dv_batch_stride = g.ldv.bs; p.dv_row_stride = g.ldv.rs; p.dv_head_stride = g.ldv.hs;
    p.cu_seqlens_q = P.varlen ? g.cu_q : NULL;
    p.cu_seqlens_k = P.varlen ? g.cu_k : NULL;
    p.softmax_scale = P.scale;
    p.softcap = c->softcap;
    p.window_left = c->wl;
    p.window_right = c->wr;
    p.alibi_slopes = g.alibi;
    p.alibi_batch_stride = c->alibi == 2 ? P.h : 0;
    p.dropout_p = c->dropout;
    if (c->seed_ptr) {
        p.seed = 0xDEADBEEF; /* must be ignored */
        p.offset = 77;
        p.philox_seed_ptr = g.rng;
        p.philox_offset_ptr = g.rng + 1;
        p.philox_offset_add = BWD_OFFSET_ADD;
    } else {
        p.seed = P.seed;
        p.offset = P.offset;
    }
    p.deterministic = deterministic;

    const size_t ws_bytes = t->workspace_bytes(&p);
    void *ws = NULL;
    if (ws_bytes) CK(cudaMalloc(&ws, ws_bytes));
    if (ws_bytes) check_poison(ws, ws_bytes); /* uninitialized workspace: NaN poison */
    check_poison(g.dq, (size_t)g.ldq.elems * 2);
    check_poison(g.dk, (size_t)g.ldk.elems * 2);
    check_poison(g.dv, (size_t)g.ldv.elems * 2);
    p.workspace = ws;
    p.workspace_bytes = ws_bytes;
    if (t->supported && !t->supported(&p)) { /* every case is in scope: a refusal is a failure */
        if (ws) CK(cudaFree(ws));
        return FA_ERR_UNSUPPORTED;
    }
    const fa_status st = t->run(&p, NULL);
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
    hdq.resize((size_t)g.ldq.elems);
    hdk.resize((size_t)g.ldk.elems);
    hdv.resize((size_t)g.ldv.elems);
    CK(cudaMemcpy(hdq.data(), g.dq, hdq.size() * 2, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(hdk.data(), g.dk, hdk.size() * 2, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(hdv.data(), g.dv, hdv.size() * 2, cudaMemcpyDeviceToHost));
    if (ws) CK(cudaFree(ws));
    return st;
}

/* x (rows, heads, d) packed into layout L (gaps 0xFFFF), on the device */
static inline uint16_t *bwd_upload(const bwd_problem &P, const bwd_layout &L, int seqlen, int heads,
                                   const std::vector<float> &x /* (rows, heads, d) */, fa_dtype dt)
{
    const std::vector<uint16_t> buf = bwd_pack(P, L, seqlen, heads, x, dt);
    return (uint16_t *)check_to_device(buf.data(), buf.size(), 2);
}

/* ---- one test case ------------------------------------------------------------------------ */
static inline void bwd_report(check_tally *tally, const char *name, const char *mode, int ok, const char *why)
{
    printf("%-4s %-36s %-6s %s\n", ok ? "ok" : "FAIL", name, mode, why);
    fflush(stdout);
    check_count(tally, ok);
}

/* One result line per mode of t (no_gpu: one line for the CPU side alone: oracle vs baseline). */
static inline void bwd_run_case(const bwd_case *c, int no_gpu, const bwd_target *t, check_rng *rng, check_tally *tally)
{
    bwd_problem P;
    bwd_make_problem(c, rng, P);
    const fa_dtype dt = c->dt;
    const int d = P.d;
    const size_t nq = (size_t)(P.rows_q * P.h * d), nk = (size_t)(P.rows_k * P.hk * d);

    /* inputs, rounded to the dtype */
    std::vector<float> q(nq), k(nk), v(nk), dout(nq);
    for (auto &x : q) x = check_round(dt, check_rng_normal(rng));
    for (auto &x : k) x = check_round(dt, check_rng_normal(rng));
    for (auto &x : v) x = check_round(dt, check_rng_normal(rng));
    for (auto &x : dout) x = check_round(dt, check_rng_normal(rng));

    /* fp32 reference forward: O, LSE; then the oracle backward */
    const size_t nlse = (size_t)P.h * (size_t)P.rows_q;
    std::vector<float> o(nq), lse(nlse + 1), rdq(nq), rdk(nk), rdv(nk);
    fa_params rp;
    bwd_ref_params(P, rp);
    rp.q = q.data(); rp.k = k.data(); rp.v = v.data(); rp.o = o.data(); rp.lse = lse.data();
    fa_status st = fa_fwd_cpu_reference(&rp);
    if (st != FA_OK) {
        bwd_report(tally, c->name, "ref", 0, fa_status_string(st));
        return;
    }
    rp.dout = dout.data(); rp.dq = rdq.data(); rp.dk = rdk.data(); rp.dv = rdv.data();
    st = fa_bwd_cpu_reference(&rp);
    if (st != FA_OK) {
        bwd_report(tally, c->name, "ref", 0, fa_status_string(st));
        return;
    }
    std::vector<float> o_lp(nq);
    for (size_t i = 0; i < nq; ++i) o_lp[i] = check_round(dt, o[i]);

    /* low-precision baseline */
    std::vector<float> bdq, bdk, bdv;
    bwd_lowp_backward(P, dt, q, k, v, o_lp, dout, lse, bdq, bdk, bdv);
    const bwd_errstat be[3] = {bwd_compare(bdq, rdq), bwd_compare(bdk, rdk), bwd_compare(bdv, rdv)};
    const double eps = check_half_ulp(dt);
    int base_ok = 1;
    char why[512];
    for (int i = 0; i < 3; ++i) base_ok = base_ok && bwd_baseline_ok(&be[i], eps);
    snprintf(why, sizeof why, "base err dq %.2e dk %.2e dv %.2e (max |g| %.2e %.2e %.2e)", be[0].max_err,
             be[1].max_err, be[2].max_err, be[0].max_ref, be[1].max_ref, be[2].max_ref);
    if (no_gpu) {
        bwd_report(tally, c->name, "cpu", base_ok, why);
        return;
    }
    if (!base_ok) {
        bwd_report(tally, c->name, "cpu", 0, why);
        return;
    }

    /* device inputs */
    const int s_q = P.max_sq, s_k = P.max_sk;
    bwd_gpu_inputs g;
    g.lq = bwd_make_layout(P, P.rows_q, s_q, P.h, c->strided, 0);
    g.lk = bwd_make_layout(P, P.rows_k, s_k, P.hk, c->strided, 1);
    g.lv = bwd_make_layout(P, P.rows_k, s_k, P.hk, c->strided, 2);
    g.lo = bwd_make_layout(P, P.rows_q, s_q, P.h, c->strided, 3);
    g.ldo = bwd_make_layout(P, P.rows_q, s_q, P.h, c->strided, 4);
    g.ldq = bwd_make_layout(P, P.rows_q, s_q, P.h, c->strided, 5);
    g.ldk = bwd_make_layout(P, P.rows_k, s_k, P.hk, c->strided, 6);
    g.ldv = bwd_make_layout(P, P.rows_k, s_k, P.hk, c->strided, 7);
    g.q = bwd_upload(P, g.lq, s_q, P.h, q, dt);
    g.k = bwd_upload(P, g.lk, s_k, P.hk, k, dt);
    g.v = bwd_upload(P, g.lv, s_k, P.hk, v, dt);
    g.o = bwd_upload(P, g.lo, s_q, P.h, o_lp, dt);
    g.dout = bwd_upload(P, g.ldo, s_q, P.h, dout, dt);
    CK(cudaMalloc(&g.dq, (size_t)g.ldq.elems * 2));
    CK(cudaMalloc(&g.dk, (size_t)g.ldk.elems * 2));
    CK(cudaMalloc(&g.dv, (size_t)g.ldv.elems * 2));
    lse.resize(nlse);
    g.lse = (float *)check_to_device(lse.data(), lse.size(), sizeof(float));
    g.alibi = P.alibi.empty() ? NULL : (float *)check_to_device(P.alibi.data(), P.alibi.size(), sizeof(float));
    g.cu_q = P.varlen ? (int32_t *)check_to_device(P.cu_q.data(), P.cu_q.size(), sizeof(int32_t)) : NULL;
    g.cu_k = P.varlen ? (int32_t *)check_to_device(P.cu_k.data(), P.cu_k.size(), sizeof(int32_t)) : NULL;
    const int64_t rng_state[2] = {(int64_t)P.seed, (int64_t)(P.offset - BWD_OFFSET_ADD)};
    g.rng = (int64_t *)check_to_device(rng_state, 2, sizeof(int64_t));

    for (int mi = 0; mi < t->n_modes; ++mi) {
        const bwd_mode *mode = &t->modes[mi];
        std::vector<uint16_t> hdq, hdk, hdv;
        st = bwd_gpu_backward(P, g, t, mode->deterministic, hdq, hdk, hdv);
        if (st != FA_OK) {
            bwd_report(tally, c->name, mode->name, 0, fa_status_string(st));
            continue;
        }
        int64_t gaps[3];
        std::vector<float> gdq = bwd_unpack(P, g.ldq, s_q, P.h, P.rows_q, hdq, dt, &gaps[0]);
        std::vector<float> gdk = bwd_unpack(P, g.ldk, s_k, P.hk, P.rows_k, hdk, dt, &gaps[1]);
        std::vector<float> gdv = bwd_unpack(P, g.ldv, s_k, P.hk, P.rows_k, hdv, dt, &gaps[2]);
        const bwd_errstat ge[3] = {bwd_compare(gdq, rdq), bwd_compare(gdk, rdk), bwd_compare(gdv, rdv)};
        int ok = 1;
        const char *names[3] = {"dq", "dk", "dv"};
        char msg[768];
        int m = 0;
        for (int i = 0; i < 3; ++i) {
            const double bar = bwd_bar(&be[i], eps);
            const int tok = ge[i].nonfinite == 0 && gaps[i] == 0 && ge[i].max_err <= bar;
            ok = ok && tok;
            m += snprintf(msg + m, sizeof msg - (size_t)m, "%s %.2e/%.2e%s ", names[i], ge[i].max_err, bar,
                          tok ? "" : "!");
            if (ge[i].nonfinite)
                m += snprintf(msg + m, sizeof msg - (size_t)m, "(%lld non-finite) ", (long long)ge[i].nonfinite);
            if (gaps[i]) m += snprintf(msg + m, sizeof msg - (size_t)m, "(%lld writes outside) ", (long long)gaps[i]);
        }
        if (mode->repeat) {
            std::vector<uint16_t> hdq2, hdk2, hdv2;
            st = bwd_gpu_backward(P, g, t, mode->deterministic, hdq2, hdk2, hdv2);
            const int same = st == FA_OK && hdq == hdq2 && hdk == hdk2 && hdv == hdv2;
            m += snprintf(msg + m, sizeof msg - (size_t)m, "%s", same ? "repeat identical" : "REPEAT DIFFERS");
            ok = ok && same;
        }
        bwd_report(tally, c->name, mode->name, ok, msg);
    }
    CK(cudaFree(g.q)); CK(cudaFree(g.k)); CK(cudaFree(g.v)); CK(cudaFree(g.o)); CK(cudaFree(g.dout));
    CK(cudaFree(g.dq)); CK(cudaFree(g.dk)); CK(cudaFree(g.dv)); CK(cudaFree(g.lse));
    if (g.alibi) CK(cudaFree(g.alibi));
    if (g.cu_q) CK(cudaFree(g.cu_q));
    if (g.cu_k) CK(cudaFree(g.cu_k));
    CK(cudaFree(g.rng));
}

#endif /* DEV_BWD_RUN_H */
