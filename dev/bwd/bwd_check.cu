/* bwd_check.cu - self-checking harness of the CUDA backward (fa_bwd_cuda), no torch.
 *
 *   bwd_check                 every test case, non-deterministic and deterministic backward;
 *                             last line "N passed, N failed" (exit status 1 if any failed)
 *   bwd_check --filter STR    only cases whose name contains STR
 *   bwd_check --no-gpu        CPU side only: oracle vs low-precision baseline (checks the harness)
 *   bwd_check --bench [--det] timing: bf16, d in {64,128,256}, 16k tokens, h*d = 2048, seqlen
 *                             512..16k, causal and not; median of CUDA-event timings after
 *                             warm-up; TFLOP/s with backward = 2.5 x forward FLOPs
 *
 * Built with -DBWD_SIM against sim/bwd_sim.cpp (make sim), the same cases run the kernel
 * bodies on the CPU (see there), without a GPU.
 *
 * Per case: random inputs (normal, drawn fresh, rounded to the dtype), the fp32 CPU reference
 * forward (fa_fwd_cpu_reference) gives O (rounded to the dtype, as a GPU forward would store it)
 * and LSE; the oracle is fa_bwd_cpu_reference in fp32 on the same rounded inputs (double inside).
 * The bar, after FlashAttention's test rule: our max error against the oracle must be at most
 * 3x the error of a low-precision baseline computing the same thing with the same roundings
 * (P and dS rounded to the dtype before the products, D from the rounded O, fp32 sums, outputs
 * rounded) plus half an ulp of the largest gradient (of 0.01 at least). Outputs (and every gap of strided
 * layouts) are poisoned with 0xFF bytes before the call, the workspace too; any NaN, or any
 * write outside the logical tensors, fails. Deterministic runs are repeated and compared with
 * memcmp. The machinery shared with dev/bwd_sm90/bwd_sm90_check.cu (problem setup, layouts,
 * baseline, pass rule, the run of one case, the benchmark problem) is in dev/common/bwd_*.h.
 */
#ifdef BWD_SIM
#include "sim/sim_cuda.h" /* CPU simulator build: host memory, simulated kernels */
#else
#include <cuda_runtime.h>
#endif

#include <stdio.h>
#include <string.h>

#include <algorithm>

#include "flash_attn_c.h"
#include "../common/check_host.h"
#include "../common/check_cuda.h"
#include "../common/bwd_problem.h"
#include "../common/bwd_run.h"
#ifndef BWD_SIM
#include "../common/bwd_bench.h"
#endif

static check_rng g_rng = {0x9E3779B97F4A7C15ull};

/* ---- test cases --------------------------------------------------------------------------- */
#define BF FA_BF16
#define HF FA_F16
#define VL1 "0,17,97,0,1,255|0,33,97,5,0,255"
#define VL2 "130,1,64,0,77|200,64,1,3,0"
static const bwd_case g_cases[] = {
    /* name                              dt  b   sq    sk   h hk   d   wl  wr  cap al drop sp st lens scale */
    {"dense d64",                        BF, 2,  97,   97,  4, 4,  64, -1, -1, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"dense d64 fp16",                   HF, 2,  97,   97,  4, 4,  64, -1, -1, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"causal d40",                       BF, 2,  97,   97,  3, 3,  40, -1,  0, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"causal d80 sq<sk",                 BF, 2,  17,   97,  2, 2,  80, -1,  0, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"causal d128 sq>sk masked rows",    BF, 2,  97,   17,  2, 2, 128, -1,  0, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"dense d256 fp16",                  HF, 1,  97,   97,  2, 2, 256, -1, -1, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"causal d256 sq<sk",                BF, 1,  97,  300,  2, 2, 256, -1,  0, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"causal d192 fp16",                 HF, 1, 150,  150,  2, 2, 192, -1,  0, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"causal d160 gqa",                  BF, 2,  97,  130,  4, 2, 160, -1,  0, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"dense d112 window 20,20",          BF, 2, 150,  150,  2, 2, 112, 20, 20, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"dense d96 fp16",                   HF, 2, 130,   97,  3, 3,  96, -1, -1, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"seqlen 1 d128",                    BF, 3,   1,    1,  2, 2, 128, -1, -1, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"sq1 sk1025 causal d64",            BF, 2,   1, 1025,  2, 2,  64, -1,  0, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"sq1025 causal d64",                BF, 1, 1025, 1025, 2, 2,  64, -1,  0, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"sq1025 sk17 d128 gqa",             BF, 1, 1025,  17,  2, 1, 128, -1, -1, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"sq17 sk1025 d128 fp16",            HF, 2,  17, 1025,  2, 2, 128, -1, -1, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"window 32,8 d64",                  BF, 2, 255,  255,  2, 2,  64, 32,  8, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"window 0,0 d128",                  BF, 1, 200,  255,  2, 2, 128,  0,  0, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"window -1,5 d64 sq>sk",            BF, 1, 255,  130,  2, 2,  64, -1,  5, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"window 7,-1 d256 fp16",            HF, 1,  97,  200,  2, 2, 256,  7, -1, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"softcap 5 d128",                   BF, 2,  97,   97,  2, 2, 128, -1, -1, 5.f, 0, 0.f, 0, 0, NULL, 4.f},
    {"softcap 2 causal d64 fp16",        HF, 2, 130,  130,  2, 2,  64, -1,  0, 2.f, 0, 0.f, 0, 0, NULL, 2.f},
    {"alibi (h) causal d64",             BF, 2,  97,  120,  4, 4,  64, -1,  0, 0.f, 1, 0.f, 0, 0, NULL, 1.f},
    {"alibi (b,h) d128 gqa",             BF, 2,  97,   97,  4, 2, 128, -1, -1, 0.f, 2, 0.f, 0, 0, NULL, 1.f},
    {"gqa 8/2 causal d64",               BF, 2,  97,   97,  8, 2,  64, -1,  0, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"mqa 4/1 d128",                     BF, 2, 129,  129,  4, 1, 128, -1, -1, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"mqa 4/1 causal d256",              BF, 1,  97,   97,  4, 1, 256, -1,  0, 0.f, 0, 0.f, 0, 0, NULL, 1.f},
    {"varlen d64",                       BF, 6,   0,    0,  2, 2,  64, -1, -1, 0.f, 0, 0.f, 0, 0, VL1,  1.f},
    {"varlen causal gqa d128 fp16",      HF, 6,   0,    0,  4, 2, 128, -1,  0, 0.f, 0, 0.f, 0, 0, VL1,  1.f},
    {"varlen window d256",               BF, 5,   0,    0,  2, 2, 256, 32,  0, 0.f, 0, 0.f, 0, 0, VL2,  1.f},
    {"varlen no queries d64",            BF, 3,   0,    0,  2, 1,  64, -1, -1, 0.f, 0, 0.f, 0, 0, "0,0,0|5,0,70", 1.f},
    {"varlen no keys causal d128",       BF, 3,   0,    0,  2, 2, 128, -1,  0, 0.f, 0, 0.f, 0, 0, "3,0,70|0,0,0", 1.f},
    {"dropout 0.9 d128",                 BF, 1,  97,   97,  2, 2, 128, -1, -1, 0.f, 0, .9f, 0, 0, NULL, 1.f},
    {"dropout d64",                      BF, 2,  97,   97,  2, 2,  64, -1, -1, 0.f, 0, .17f, 0, 0, NULL, 1.f},
    {"dropout causal gqa d128 seedptr",  BF, 2,  97,  130,  4, 2, 128, -1,  0, 0.f, 0, .3f, 1, 0, NULL, 1.f},
    {"dropout varlen d256 fp16",         HF, 6,   0,    0,  2, 2, 256, -1, -1, 0.f, 0, .1f, 0, 0, VL1,  1.f},
    {"strided causal gqa d128",          BF, 2,  97,   97,  4, 2, 128, -1,  0, 0.f, 0, 0.f, 0, 1, NULL, 1.f},
    {"strided varlen d64",               BF, 5,   0,    0,  2, 1,  64, -1, -1, 0.f, 0, 0.f, 0, 1, VL2,  1.f},
    {"all features varlen d80",          BF, 6,   0,    0,  4, 2,  80, 40,  3, 10.f, 2, .2f, 1, 1, VL1, 1.5f},
    {"all features dense d256 fp16",     HF, 2, 130,  100,  4, 1, 256, -1,  0, 8.f, 1, .15f, 0, 1, NULL, 1.f},
    {"all features dense d96",           BF, 2, 100,  130,  6, 3,  96, 50, 20, 6.f, 2, .25f, 1, 0, NULL, 1.f},
};

/* ---- under test: fa_bwd_cuda, atomic dQ, then deterministic dQ run twice ------------------- */
static const bwd_mode g_modes[] = {
    {"atomic", 0, 0},
    {"det", 1, 1},
};
static const bwd_target g_target = {fa_bwd_cuda, fa_bwd_cuda_workspace_bytes, NULL, g_modes, 2};

#ifndef BWD_SIM
/* ---- timing ------------------------------------------------------------------------------- */
static void bench(int deterministic)
{
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("bench: %s, bf16, backward only (%s dQ), 16k tokens, h*d = 2048\n", prop.name,
           deterministic ? "deterministic" : "atomic");
    printf("%4s %6s %4s %4s %6s %10s %9s\n", "d", "seqlen", "b", "h", "causal", "ms", "TFLOP/s");
    const int dims[3] = {64, 128, 256};
    const int lens[6] = {512, 1024, 2048, 4096, 8192, 16384};
    for (int di = 0; di < 3; ++di)
        for (int li = 0; li < 6; ++li)
            for (int causal = 0; causal <= 1; ++causal) {
                const int d = dims[di], s = lens[li], b = 16384 / s, h = 2048 / d;
                fa_params p;
                bwd_bench_setup(b, s, h, d, causal, &p);
                p.deterministic = deterministic;
                p.workspace_bytes = fa_bwd_cuda_workspace_bytes(&p);
                CK(cudaMalloc(&p.workspace, std::max<size_t>(p.workspace_bytes, 16)));
                fa_status st;
                const double med = bwd_bench_median_ms(fa_bwd_cuda, &p, &st);
                if (st != FA_OK) {
                    printf("%4d %6d %4d %4d %6d  error: %s\n", d, s, b, h, causal, fa_status_string(st));
                } else {
                    const double flops = 2.5 * 4.0 * b * h * (double)s * s * d * (causal ? 0.5 : 1.0);
                    printf("%4d %6d %4d %4d %6d %10.3f %9.1f\n", d, s, b, h, causal, med,
                           flops / (med * 1e-3) / 1e12);
                }
                fflush(stdout);
                CK(cudaFree(p.workspace));
                bwd_bench_free(&p);
            }
}
#endif /* BWD_SIM */

int main(int argc, char **argv)
{
    check_cli cli;
    const unsigned opts = CHECK_OPT_FILTER | CHECK_OPT_NO_GPU | CHECK_OPT_BENCH | CHECK_OPT_DET | CHECK_OPT_STRICT;
    if (!check_parse_cli(argc, argv, opts, "[--filter STR] [--no-gpu] [--bench [--det]]", &cli))
        return 2;
    if (cli.bench) {
#ifndef BWD_SIM
        bench(cli.det);
        return 0;
#else
        fprintf(stderr, "--bench needs the GPU build\n");
        return 2;
#endif
    }
    if (!cli.no_gpu) check_print_device();
    check_tally tally = {0, 0};
    for (size_t i = 0; i < sizeof g_cases / sizeof g_cases[0]; ++i) {
        if (!check_selected(&cli, g_cases[i].name)) continue;
        bwd_run_case(&g_cases[i], cli.no_gpu, &g_target, &g_rng, &tally);
    }
    return check_summary(&tally);
}
