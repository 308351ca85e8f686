/* bwd_sim.cpp - runs the real backward kernel bodies (csrc/cuda/sm80/fa_bwd_*.cuh) on the CPU.
 *
 * Why: the kernels are written where no GPU exists; this checks their index arithmetic,
 * fragment layouts, masks, bands, GQA loops, varlen offsets, dropout coordinates, pipelining
 * and barriers against the CPU reference before a GPU ever runs them. It is a test tool, not a
 * model of performance.
 *
 * How: every CUDA thread of a block is a fiber (ucontext start, _setjmp/_longjmp switches),
 * scheduled round-robin; a fiber yields only at __syncthreads and at warp-collective operations
 * (shuffles, ldmatrix, mma), which complete when all 32 lanes arrive (and must be the same
 * operation in every lane: divergence aborts). The PTX primitives of fa_mma.cuh and the other
 * asm helpers are replaced by emulations written from the PTX ISA definitions:
 *   ldmatrix .x4: lane 8 m + r gives the address of row r of matrix m; lane l receives word
 *                 (l % 4) of row l / 4 of every matrix (.trans: of the transposed matrix);
 *   mma.m16n8k16: the fragment layouts documented in fa_mma.cuh;
 *   cp.async:     copies are queued per thread and land at cp.async.wait_group (SIM_CP_EARLY=1:
 *                 at issue instead), so a read before the wait, or a refill before the other
 *                 warps are done with a buffer, shows up as wrong results; SIM_SKEW=1 gives
 *                 every warp a random speed, so warps drift apart between barriers and
 *                 missing barriers become visible.
 * Shared memory starts as 0xFF bytes (NaN in fp16/bf16/fp32), so reads of never-written
 * shared memory poison the results. Out-of-bounds or misaligned shared accesses abort.
 * Compiled twice, with __CUDA_ARCH__ 800 and 900, to cover both rows of the tuning table.
 */
#include <math.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>

#include <deque>
#include <functional>
#include <vector>

#include "../../common/half_host.h"
#include "sim_cuda.h"

#ifndef SIM_ARCH
#define SIM_ARCH 900
#endif

/* ---- fiber scheduler ---------------------------------------------------------------------- */
namespace sim {

struct dim3s {
    unsigned x, y, z;
};

struct Fiber {
    ucontext_t uc;
    jmp_buf jb;
    char *stack;
    bool started, done;
};

static const size_t kStack = 512 * 1024;
static std::vector<Fiber> g_fib;
static jmp_buf g_sched_jb;
static ucontext_t g_sched_uc;
static int g_cur = 0;          /* current thread index */
static int g_nthreads = 0;
static int g_alive = 0;
static dim3s g_block_idx = {0, 0, 0};
static dim3s g_grid_dim = {1, 1, 1};
static std::function<void()> g_body;

/* block barrier */
static int g_bar_arrived = 0;
static unsigned g_bar_gen = 0;

static void fail(const char *what)
{
    fprintf(stderr, "SIM ERROR: %s (block %u,%u,%u thread %d)\n", what, g_block_idx.x, g_block_idx.y,
            g_block_idx.z, g_cur);
    exit(3);
}

static void yield()
{
    if (!_setjmp(g_fib[g_cur].jb)) _longjmp(g_sched_jb, 1);
}

static void fiber_entry()
{
    g_body();
    g_fib[g_cur].done = true;
    --g_alive;
    /* a barrier the remaining threads wait at may now be complete */
    if (g_bar_arrived > 0 && g_bar_arrived == g_alive) {
        g_bar_arrived = 0;
        ++g_bar_gen;
    }
    _longjmp(g_sched_jb, 1);
}

static void syncthreads()
{
    const unsigned gen = g_bar_gen;
    if (++g_bar_arrived == g_alive) {
        g_bar_arrived = 0;
        ++g_bar_gen;
        return;
    }
    while (g_bar_gen == gen) yield();
}

/* ---- warp collectives --------------------------------------------------------------------- */
struct Lane {
    uint64_t in[10];
    uint64_t out[4];
    const char *tag;
};
struct Warp {
    Lane lane[32];
    int arrived;
    unsigned gen;
};
static std::vector<Warp> g_warps;

/* The caller has filled g_warps[w].lane[l].in; when the 32nd lane arrives, compute(w) fills
 * every lane's out. Requires all 32 lanes (the kernels only use full-warp collectives). */
template <class F>
static void warp_collective(const char *tag, F compute)
{
    Warp &w = g_warps[g_cur / 32];
    w.lane[g_cur % 32].tag = tag;
    const unsigned gen = w.gen;
    if (++w.arrived == 32) {
        for (int l = 0; l < 32; ++l)
            if (w.lane[l].tag != tag) fail("warp divergence: lanes in different collectives");
        compute(w);
        w.arrived = 0;
        ++w.gen;
        return;
    }
    while (w.gen == gen) yield();
}

/* ---- shared memory and cp.async ----------------------------------------------------------- */
static const size_t kSmemMax = 256 * 1024;
static size_t g_smem_limit = 0; /* dynamic bytes of the current launch */

struct Copy {
    uint32_t dst;
    const void *src;
    int bytes, src_bytes;
};
struct ThreadState {
    std::vector<Copy> open;
    std::deque<std::vector<Copy>> groups;
};
static std::vector<ThreadState> g_ts;
static bool g_cp_early = false;
static bool g_skew = false;
static uint64_t g_rng = 12345;
static std::vector<double> g_speed; /* per warp, SIM_SKEW */
static double sim_rand01()
{
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(g_rng >> 11) * (1.0 / 9007199254740992.0);
}

} /* namespace sim */

/* the dynamic shared memory of the (one) running block */
__attribute__((aligned(256))) unsigned char fa_bwd_smem[sim::kSmemMax];

namespace sim {
static void check_smem(uint32_t addr, int bytes, int align)
{
    if (addr % (uint32_t)align) fail("misaligned shared-memory access");
    if ((size_t)addr + (size_t)bytes > g_smem_limit) fail("shared-memory access out of bounds");
}

static void land(const Copy &c)
{
    check_smem(c.dst, c.bytes, c.bytes);
    if (c.src_bytes) memcpy(fa_bwd_smem + c.dst, c.src, (size_t)c.src_bytes);
    if (c.src_bytes < c.bytes) memset(fa_bwd_smem + c.dst + c.src_bytes, 0, (size_t)(c.bytes - c.src_bytes));
}

static void cp_async(uint32_t dst, const void *src, int bytes, int src_bytes)
{
    if (src_bytes && ((uintptr_t)src % (uintptr_t)bytes)) fail("misaligned cp.async source");
    Copy c = {dst, src, bytes, src_bytes};
    check_smem(dst, bytes, bytes);
    if (g_cp_early)
        land(c);
    else
        g_ts[g_cur].open.push_back(c);
}
} /* namespace sim */

/* ---- the CUDA device-side vocabulary the kernels use -------------------------------------- */
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __CUDA_ARCH__ SIM_ARCH
#define __CUDACC__ 1 /* the kernel headers see a CUDA compilation */

struct sim_uint3 {
    unsigned x, y, z;
};
static inline sim_uint3 sim_thread_idx() { return {(unsigned)sim::g_cur, 0u, 0u}; }
#define threadIdx (sim_thread_idx())
#define blockIdx (sim::g_block_idx)
#define gridDim (sim::g_grid_dim)

struct uint4 {
    uint32_t x, y, z, w;
};
struct float2 {
    float x, y;
};
struct float4 {
    float x, y, z, w;
};
static inline float2 make_float2(float x, float y) { return {x, y}; }
static inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }

static inline int min(int a, int b) { return a < b ? a : b; }
static inline int max(int a, int b) { return a > b ? a : b; }
static inline int64_t min(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t max(int64_t a, int64_t b) { return a > b ? a : b; }

static inline void __syncthreads() { sim::syncthreads(); }

template <typename T>
static inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask)
{
    static_assert(sizeof(T) <= 8, "shuffle of a scalar");
    if (mask != 0xffffffffu) sim::fail("partial-mask shuffle");
    sim::Warp &w = sim::g_warps[sim::g_cur / 32];
    const int lane = sim::g_cur % 32;
    uint64_t bits = 0;
    memcpy(&bits, &v, sizeof(T));
    w.lane[lane].in[0] = bits;
    w.lane[lane].in[1] = (uint64_t)lane_mask;
    sim::warp_collective("shfl_xor", [](sim::Warp &ww) {
        for (int l = 0; l < 32; ++l) {
            if (ww.lane[l].in[1] != ww.lane[0].in[1]) sim::fail("shuffle masks differ across lanes");
            ww.lane[l].out[0] = ww.lane[l ^ (int)ww.lane[l].in[1]].in[0];
        }
    });
    T r;
    memcpy(&r, &w.lane[lane].out[0], sizeof(T));
    return r;
}

static inline float atomicAdd(float *p, float v)
{
    const float old = *p;
    *p = old + v;
    return old;
}
static inline float2 atomicAdd(float2 *p, float2 v)
{
    if ((uintptr_t)p % 8) sim::fail("misaligned float2 atomic");
    const float2 old = *p;
    p->x += v.x;
    p->y += v.y;
    return old;
}

/* ---- replacements of fa_mma.cuh (include guard pre-defined) ------------------------------ */
#define FA_MMA_CUH
static inline uint32_t fa_smem_u32(const void *p)
{
    const unsigned char *c = (const unsigned char *)p;
    if (c < fa_bwd_smem || c >= fa_bwd_smem + sim::kSmemMax) sim::fail("fa_smem_u32 of a non-shared pointer");
    return (uint32_t)(c - fa_bwd_smem);
}

template <bool kBf16>
static inline float sim_h2f(uint16_t h)
{
    return kBf16 ? host_bf16_to_f32(h) : host_f16_to_f32(h);
}
template <bool kBf16>
static inline uint16_t sim_f2h(float f)
{
    return kBf16 ? host_f32_to_bf16(f) : host_f32_to_f16(f);
}

template <bool kBf16>
static inline uint32_t fa_pack_f32x2(float lo, float hi)
{
    return (uint32_t)sim_f2h<kBf16>(lo) | ((uint32_t)sim_f2h<kBf16>(hi) << 16);
}
template <bool kBf16>
static inline float2 fa_unpack_f32x2(uint32_t x)
{
    return {sim_h2f<kBf16>((uint16_t)(x & 0xffffu)), sim_h2f<kBf16>((uint16_t)(x >> 16))};
}
template <bool kBf16>
static inline void fa_pack_c_to_a(uint32_t a[4], const float c0[4], const float c1[4])
{
    a[0] = fa_pack_f32x2<kBf16>(c0[0], c0[1]);
    a[1] = fa_pack_f32x2<kBf16>(c0[2], c0[3]);
    a[2] = fa_pack_f32x2<kBf16>(c1[0], c1[1]);
    a[3] = fa_pack_f32x2<kBf16>(c1[2], c1[3]);
}

/* D = A B + D, m16n8k16, fragment layouts of fa_mma.cuh (g = lane / 4, t = lane % 4) */
template <bool kBf16>
static inline void warp_mma_m16n8k16(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1)
{
    sim::Warp &w = sim::g_warps[sim::g_cur / 32];
    const int lane = sim::g_cur % 32;
    for (int i = 0; i < 4; ++i) w.lane[lane].in[i] = a[i];
    w.lane[lane].in[4] = b0;
    w.lane[lane].in[5] = b1;
    for (int i = 0; i < 4; ++i) {
        uint32_t u;
        memcpy(&u, &d[i], 4);
        w.lane[lane].in[6 + i] = u;
    }
    sim::warp_collective(kBf16 ? "mma.bf16" : "mma.f16", [](sim::Warp &ww) {
        float A[16][16], B[16][8], C[16][8];
        for (int l = 0; l < 32; ++l) {
            const int g = l / 4, t = l % 4;
            const uint64_t *in = ww.lane[l].in;
            const int ar[4] = {g, g + 8, g, g + 8}, ac[4] = {2 * t, 2 * t, 2 * t + 8, 2 * t + 8};
            for (int r = 0; r < 4; ++r) {
                A[ar[r]][ac[r]] = sim_h2f<kBf16>((uint16_t)(in[r] & 0xffff));
                A[ar[r]][ac[r] + 1] = sim_h2f<kBf16>((uint16_t)(in[r] >> 16));
            }
            B[2 * t][g] = sim_h2f<kBf16>((uint16_t)(in[4] & 0xffff));
            B[2 * t + 1][g] = sim_h2f<kBf16>((uint16_t)(in[4] >> 16));
            B[2 * t + 8][g] = sim_h2f<kBf16>((uint16_t)(in[5] & 0xffff));
            B[2 * t + 9][g] = sim_h2f<kBf16>((uint16_t)(in[5] >> 16));
            float c[4];
            for (int i = 0; i < 4; ++i) {
                const uint32_t u = (uint32_t)in[6 + i];
                memcpy(&c[i], &u, 4);
            }
            C[g][2 * t] = c[0];
            C[g][2 * t + 1] = c[1];
            C[g + 8][2 * t] = c[2];
            C[g + 8][2 * t + 1] = c[3];
        }
        for (int i = 0; i < 16; ++i)
            for (int j = 0; j < 8; ++j) {
                float acc = C[i][j];
                for (int k = 0; k < 16; ++k) acc += A[i][k] * B[k][j];
                C[i][j] = acc;
            }
        for (int l = 0; l < 32; ++l) {
            const int g = l / 4, t = l % 4;
            const float c[4] = {C[g][2 * t], C[g][2 * t + 1], C[g + 8][2 * t], C[g + 8][2 * t + 1]};
            for (int i = 0; i < 4; ++i) {
                uint32_t u;
                memcpy(&u, &c[i], 4);
                ww.lane[l].out[i] = u;
            }
        }
    });
    for (int i = 0; i < 4; ++i) {
        const uint32_t u = (uint32_t)w.lane[lane].out[i];
        memcpy(&d[i], &u, 4);
    }
}

/* fa_mma.cuh's pair of m16n8k16 products against the two n8 halves of an x4 B fragment, and
 * its accumulator zeroing: the same definitions on top of the simulated warp_mma_m16n8k16 */
template <bool kBf16>
static inline void warp_mma_m16n16k16(float d0[4], float d1[4], const uint32_t a[4], const uint32_t b[4])
{
    warp_mma_m16n8k16<kBf16>(d0, a, b[0], b[1]);
    warp_mma_m16n8k16<kBf16>(d1, a, b[2], b[3]);
}
template <int kMT, int kNT>
static inline void thread_zero_tile(float (*acc)[kNT][4])
{
    for (int mt = 0; mt < kMT; ++mt)
        for (int nt = 0; nt < kNT; ++nt)
            for (int e = 0; e < 4; ++e) acc[mt][nt][e] = 0.f;
}

static inline uint16_t sim_smem_h(uint32_t addr)
{
    uint16_t h;
    memcpy(&h, fa_bwd_smem + addr, 2);
    return h;
}

/* ldmatrix .x{n}: lanes 8 m + r (m < n) give the address of row r of matrix m */
template <int kN, bool kTrans>
static inline void sim_ldmatrix(uint32_t *r, uint32_t addr)
{
    sim::Warp &w = sim::g_warps[sim::g_cur / 32];
    const int lane = sim::g_cur % 32;
    w.lane[lane].in[0] = addr;
    sim::warp_collective(kTrans ? "ldmatrix.trans" : "ldmatrix", [](sim::Warp &ww) {
        for (int m = 0; m < kN; ++m)
            for (int rr = 0; rr < 8; ++rr) sim::check_smem((uint32_t)ww.lane[8 * m + rr].in[0], 16, 16);
        for (int l = 0; l < 32; ++l)
            for (int m = 0; m < kN; ++m) {
                uint32_t word;
                if (!kTrans) {
                    const uint32_t row = (uint32_t)ww.lane[8 * m + l / 4].in[0];
                    memcpy(&word, fa_bwd_smem + row + 4 * (l % 4), 4);
                } else {
                    /* element (row 2 (l % 4) + e, column l / 4) of the stored matrix */
                    const uint32_t r0 = (uint32_t)ww.lane[8 * m + 2 * (l % 4)].in[0];
                    const uint32_t r1 = (uint32_t)ww.lane[8 * m + 2 * (l % 4) + 1].in[0];
                    word = (uint32_t)sim_smem_h(r0 + 2 * (l / 4)) |
                           ((uint32_t)sim_smem_h(r1 + 2 * (l / 4)) << 16);
                }
                ww.lane[l].out[m] = word;
            }
    });
    for (int m = 0; m < kN; ++m) r[m] = (uint32_t)w.lane[lane].out[m];
}
static inline void warp_ldmatrix_x4(uint32_t r[4], uint32_t a) { sim_ldmatrix<4, false>(r, a); }
static inline void warp_ldmatrix_x4_trans(uint32_t r[4], uint32_t a) { sim_ldmatrix<4, true>(r, a); }
static inline void warp_ldmatrix_x2(uint32_t r[2], uint32_t a) { sim_ldmatrix<2, false>(r, a); }
static inline void warp_ldmatrix_x2_trans(uint32_t r[2], uint32_t a) { sim_ldmatrix<2, true>(r, a); }

static inline void fa_cp_async_16(uint32_t smem_addr, const void *gmem_ptr, bool pred)
{
    sim::cp_async(smem_addr, gmem_ptr, 16, pred ? 16 : 0);
}
static inline void fa_cp_async_commit(void)
{
    sim::ThreadState &ts = sim::g_ts[sim::g_cur];
    ts.groups.push_back(ts.open);
    ts.open.clear();
}
template <int kPending>
static inline void fa_cp_async_wait(void)
{
    sim::ThreadState &ts = sim::g_ts[sim::g_cur];
    while ((int)ts.groups.size() > kPending) {
        for (const sim::Copy &c : ts.groups.front()) sim::land(c);
        ts.groups.pop_front();
    }
}

/* ---- the real headers; their remaining asm helpers renamed away and re-provided --------- */
#define fa_opaque_zero fa_opaque_zero_asm_unused
#define fa_exp2 fa_exp2_asm_unused
#include "fa_smem_tile.cuh"
#include "fa_softmax.cuh"
#undef fa_opaque_zero
#undef fa_exp2
static inline int fa_opaque_zero(const int *p)
{
    const uint32_t a = fa_smem_u32(p);
    sim::check_smem(a, 4, 4);
    return *p;
}
static inline float fa_exp2(float x)
{
    const float y = exp2f(x);
    return (y != 0.f && fabsf(y) < 1.17549435e-38f) ? 0.f : y; /* .ftz */
}
#define FA_BWD_CP_ASYNC_CUH
static inline void fa_cp_async_4(uint32_t smem_addr, const void *gmem_ptr, bool pred)
{
    sim::cp_async(smem_addr, gmem_ptr, 4, pred ? 4 : 0);
}

#include "fa_bwd_dkdv.cuh"
#include "fa_bwd_dq.cuh"
#include "fa_bwd_host.h"
#include "fa_bwd_prep.cuh"

/* ---- launching ---------------------------------------------------------------------------- */
static void sim_launch(unsigned gx, unsigned gy, unsigned gz, int threads, size_t smem,
                       const std::function<void()> &body)
{
    using namespace sim;
    if (smem > kSmemMax) fail("launch asks for more shared memory than the simulator has");
    g_fib.assign((size_t)threads, Fiber());
    for (Fiber &f : g_fib) f.stack = (char *)malloc(kStack);
    g_warps.assign((size_t)(threads + 31) / 32, Warp());
    g_nthreads = threads;
    g_body = body;
    g_grid_dim = {gx, gy, gz};
    for (unsigned z = 0; z < gz; ++z)
        for (unsigned y = 0; y < gy; ++y)
            for (unsigned x = 0; x < gx; ++x) {
                g_block_idx = {x, y, z};
                g_smem_limit = smem;
                memset(fa_bwd_smem, 0xFF, kSmemMax); /* NaN everywhere */
                g_ts.assign((size_t)threads, ThreadState());
                for (Warp &w : g_warps) {
                    w.arrived = 0;
                    w.gen = 0;
                }
                g_bar_arrived = 0;
                g_alive = threads;
                g_speed.assign((size_t)(threads + 31) / 32, 1.0);
                for (double &sp : g_speed) sp = 0.02 + 0.98 * sim_rand01();
                for (int t = 0; t < threads; ++t) {
                    Fiber &f = g_fib[(size_t)t];
                    f.started = false;
                    f.done = false;
                    getcontext(&f.uc);
                    f.uc.uc_stack.ss_sp = f.stack;
                    f.uc.uc_stack.ss_size = kStack;
                    f.uc.uc_link = NULL;
                    makecontext(&f.uc, fiber_entry, 0);
                }
                unsigned long long sweeps = 0;
                while (g_alive > 0) {
                    int progressed = 0;
                    /* SIM_SKEW: every warp has its own random speed (the chance it runs in a
                     * sweep), so warps drift apart linearly between barriers, and a missing
                     * barrier lets one warp's writes hit another's reads */
                    uint64_t run_mask = ~(uint64_t)0;
                    if (g_skew) {
                        run_mask = 0;
                        for (int w = 0; w < (threads + 31) / 32; ++w)
                            if (sim_rand01() < g_speed[(size_t)w]) run_mask |= 1ull << w;
                    }
                    for (int t = 0; t < threads; ++t) {
                        Fiber &f = g_fib[(size_t)t];
                        if (f.done) continue;
                        if (!((run_mask >> (t / 32)) & 1)) continue;
                        g_cur = t;
                        ++progressed;
                        if (!_setjmp(g_sched_jb)) {
                            if (!f.started) {
                                f.started = true;
                                swapcontext(&g_sched_uc, &f.uc);
                            } else {
                                _longjmp(f.jb, 1);
                            }
                        }
                    }
                    if (!progressed && !g_skew) break;
                    if (++sweeps > 200000000ull) fail("no progress: barrier deadlock?");
                }
            }
    for (Fiber &f : g_fib) free(f.stack);
    g_fib.clear();
}

template <bool kBf16, int kD>
static void sim_main(const fa_bwd_args &a)
{
    typedef fa_bwd_dkdv_cfg<kD, SIM_ARCH / 10> C;
    if (a.seqlen_k > 0 && a.batch > 0)
        sim_launch((unsigned)((a.seqlen_k + C::kBc - 1) / C::kBc), (unsigned)a.heads_k, (unsigned)a.batch,
                   C::kThreads, C::kSmem, [&] { fa_bwd_dkdv_kernel<kBf16, kD>(a); });
    if (!a.atomic_dq && a.seqlen_q > 0 && a.batch > 0) {
        typedef fa_bwd_dq_cfg<kD> Q;
        sim_launch((unsigned)((a.seqlen_q + Q::kBr - 1) / Q::kBr), (unsigned)a.heads, (unsigned)a.batch,
                   Q::kThreads, Q::kSmem, [&] { fa_bwd_dq_kernel<kBf16, kD>(a); });
    }
}

template <bool kBf16>
static void sim_run(const fa_bwd_args &a)
{
    const int64_t pairs = a.total_q * a.heads;
    const int64_t blocks = (pairs * FA_BWD_PREP_LANES + FA_BWD_PREP_THREADS - 1) / FA_BWD_PREP_THREADS;
    if (blocks > 0)
        sim_launch((unsigned)blocks, 1, 1, FA_BWD_PREP_THREADS, 0, [&] { fa_bwd_dot_do_o_kernel<kBf16>(a, 0); });
    if (a.head_dim <= 64)
        sim_main<kBf16, 64>(a);
    else if (a.head_dim <= 96)
        sim_main<kBf16, 96>(a);
    else if (a.head_dim <= 128)
        sim_main<kBf16, 128>(a);
    else if (a.head_dim <= 192)
        sim_main<kBf16, 192>(a);
    else
        sim_main<kBf16, 256>(a);
    if (a.atomic_dq && blocks > 0)
        sim_launch((unsigned)blocks, 1, 1, FA_BWD_PREP_THREADS, 0, [&] { fa_bwd_dq_convert_kernel<kBf16>(a); });
}

extern "C" size_t fa_bwd_cuda_workspace_bytes(const fa_params *p) { return fa_bwd_workspace_need(p); }

extern "C" fa_status fa_bwd_cuda(const fa_params *p, void *stream)
{
    (void)stream;
    const fa_status st = fa_bwd_validate(p);
    if (st != FA_OK) return st;
    sim::g_cp_early = getenv("SIM_CP_EARLY") && atoi(getenv("SIM_CP_EARLY"));
    sim::g_skew = getenv("SIM_SKEW") && atoi(getenv("SIM_SKEW"));
    fa_bwd_args a;
    fa_bwd_fill_args(p, &a);
    if (p->dtype == FA_BF16)
        sim_run<true>(a);
    else
        sim_run<false>(a);
    return FA_OK;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *prop, int dev)
{
    (void)dev;
    snprintf(prop->name, sizeof prop->name, "CPU simulator (kernel bodies compiled for sm_%d)",
             SIM_ARCH / 10);
    prop->major = SIM_ARCH / 100;
    prop->minor = (SIM_ARCH / 10) % 10;
    return cudaSuccess;
}
