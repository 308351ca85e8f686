/* tile_check.cu - CPU-only checks of the forward's shared-memory layout and warp fragments.
 *
 * Runs without a GPU (host code only; built by the same Makefile: make tile_check). It checks,
 * for every head-dim bucket:
 *   1. the swizzle is a permutation of the chunks of every row;
 *   2. fa_ldsm_addr (per-lane bases + immediates) equals the direct fa_tile_offset address for
 *      every lane and every (row step, chunk pair) the kernel uses, for Q, K and V;
 *   3. each 8-lane ldmatrix phase touches 8 distinct 16-byte bank groups (conflict-free);
 *   4. an emulation of ldmatrix.x4 (+ .trans) and mma.m16n8k16 per the PTX ISA fragment
 *      layouts, driven by the kernel's addressing and loop structure (warp_gemm_qk,
 *      fa_pack_c_to_a + warp_gemm_pv), reproduces S = Q K^T and O = P V exactly.
 * Last line: "N passed, N failed".
 */
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <vector>

#include "fa_fwd_kernel.cuh"
#include "../common/check_host.h"

static check_tally g_tally = {0, 0};

static void report(int ok, const char *what, int d)
{
    printf("%s %s d=%d\n", ok ? "ok  " : "FAIL", what, d);
    check_count(&g_tally, ok);
}

/* ---- emulated warp instructions (values are floats; a "register" holds 2 of them) ---------- */
typedef struct { float lo, hi; } reg2;

/* smem: element array of the tile, addr: byte addresses relative to the tile (per lane). */
static void emu_ldmatrix_x4(const std::vector<float> &smem, const uint32_t addr[32], bool trans, reg2 out[32][4])
{
    for (int m = 0; m < 4; ++m) {
        /* matrix m: rows given by lanes 8m .. 8m+7, each 8 consecutive elements */
        float mat[8][8];
        for (int r = 0; r < 8; ++r)
            for (int c = 0; c < 8; ++c) mat[r][c] = smem[addr[8 * m + r] / 2 + c];
        for (int lane = 0; lane < 32; ++lane) {
            const int g = lane / 4, t = lane % 4;
            if (!trans) {
                out[lane][m].lo = mat[g][2 * t];
                out[lane][m].hi = mat[g][2 * t + 1];
            } else {
                out[lane][m].lo = mat[2 * t][g];
                out[lane][m].hi = mat[2 * t + 1][g];
            }
        }
    }
}

/* D += A B for one m16n8k16, fragments as documented in fa_mma.cuh. */
static void emu_mma(float d[32][4], const reg2 a[32][4], const reg2 b[32][2])
{
    float A[16][16], B[16][8];
    for (int lane = 0; lane < 32; ++lane) {
        const int g = lane / 4, t = lane % 4;
        A[g][2 * t] = a[lane][0].lo;      A[g][2 * t + 1] = a[lane][0].hi;
        A[g + 8][2 * t] = a[lane][1].lo;  A[g + 8][2 * t + 1] = a[lane][1].hi;
        A[g][2 * t + 8] = a[lane][2].lo;  A[g][2 * t + 9] = a[lane][2].hi;
        A[g + 8][2 * t + 8] = a[lane][3].lo; A[g + 8][2 * t + 9] = a[lane][3].hi;
        B[2 * t][g] = b[lane][0].lo;      B[2 * t + 1][g] = b[lane][0].hi;
        B[2 * t + 8][g] = b[lane][1].lo;  B[2 * t + 9][g] = b[lane][1].hi;
    }
    for (int lane = 0; lane < 32; ++lane) {
        const int g = lane / 4, t = lane % 4;
        for (int e = 0; e < 4; ++e) {
            const int row = g + 8 * (e >> 1), col = 2 * t + (e & 1);
            double acc = 0;
            for (int k = 0; k < 16; ++k) acc += (double)A[row][k] * B[k][col];
            d[lane][e] += (float)acc;
        }
    }
}

/* an ldmatrix.x4 result (per lane 4 registers: matrices 0..3) as the two B fragments of
 * mma.m16n8k16 it holds: b0 = matrices 0, 1 and b1 = matrices 2, 3 */
static void emu_split_b(const reg2 x4[32][4], reg2 b0[32][2], reg2 b1[32][2])
{
    for (int lane = 0; lane < 32; ++lane) {
        b0[lane][0] = x4[lane][0]; b0[lane][1] = x4[lane][1];
        b1[lane][0] = x4[lane][2]; b1[lane][1] = x4[lane][3];
    }
}

static float small_int(void)
{
    return (float)(rand() % 7 - 3);  /* exact in float: sums below stay exact */
}

template <int D>
static void check_bucket(void)
{
    constexpr int R = 128, kChunks = D / 8;
    /* 1. permutation */
    {
        int ok = 1;
        for (int row = 0; row < R && ok; ++row) {
            std::vector<int> seen(kChunks, 0);
            for (int c = 0; c < kChunks; ++c) {
                const int off = fa_tile_offset<D>(row, c) - row * D;
                if (off % 8 || off < 0 || off / 8 >= kChunks || seen[off / 8]++) ok = 0;
            }
        }
        report(ok, "swizzle is a per-row permutation", D);
    }
    /* 2 + 3: addresses and banks for Q (A), K (B), V (B trans) */
    {
        int ok_addr = 1, ok_bank = 1;
        const uint32_t tile = 0x400;  /* any 128-byte aligned base */
        for (int op = 0; op < 2; ++op) {  /* 0: A/V layout, 1: K layout */
            fa_ldsm_bases<D> bs[32];
            int lrow[32], lc[32];
            for (int lane = 0; lane < 32; ++lane) {
                bs[lane] = op == 0 ? fa_fwd_bases_a<D>(tile, lane) : fa_fwd_bases_k<D>(tile, lane);
                lrow[lane] = op == 0 ? (lane & 15) : (lane & 7) + ((lane >> 4) << 3);
                lc[lane] = op == 0 ? (lane >> 4) : ((lane >> 3) & 1);
            }
            for (int row_off = 0; row_off + 16 <= R; row_off += 16)
                for (int cp = 0; cp < kChunks / 2; ++cp) {
                    uint32_t addr[32];
                    for (int lane = 0; lane < 32; ++lane) {
                        addr[lane] = fa_ldsm_addr<D>(bs[lane], row_off, cp);
                        const uint32_t want = tile + 2u * (uint32_t)fa_tile_offset<D>(row_off + lrow[lane], 2 * cp + lc[lane]);
                        if (addr[lane] != want) ok_addr = 0;
                    }
                    for (int m = 0; m < 4; ++m) {
                        int used = 0;
                        for (int r = 0; r < 8; ++r) {
                            const int grp = (addr[8 * m + r] / 16) % 8;
                            if (used & (1 << grp)) ok_bank = 0;
                            used |= 1 << grp;
                        }
                    }
                }
        }
        report(ok_addr, "ldmatrix bases + immediates == direct swizzled address", D);
        report(ok_bank, "ldmatrix phases are bank-conflict free", D);
    }
    /* 4. emulated S = Q K^T (one warp, 2 m-tiles at warp_row 32, Bc = 32) and O = P V */
    {
        constexpr int kMT = 2, Bc = 32, kNB = Bc / 8, warp_row = 32;
        std::vector<float> q(R * D), k(Bc * D), sQ(R * D), sK(Bc * D);
        for (int i = 0; i < R * D; ++i) q[i] = small_int();
        for (int i = 0; i < Bc * D; ++i) k[i] = small_int();
        for (int r = 0; r < R; ++r)
            for (int c = 0; c < D; ++c) sQ[fa_tile_offset<D>(r, c / 8) + c % 8] = q[r * D + c];
        for (int r = 0; r < Bc; ++r)
            for (int c = 0; c < D; ++c) sK[fa_tile_offset<D>(r, c / 8) + c % 8] = k[r * D + c];
        static float s[kMT][kNB][32][4];
        memset(s, 0, sizeof s);
        fa_ldsm_bases<D> qb[32], kb[32];
        for (int lane = 0; lane < 32; ++lane) {
            qb[lane] = fa_fwd_bases_a<D>(2u * (uint32_t)(warp_row * D), lane);
            kb[lane] = fa_fwd_bases_k<D>(0, lane);
        }
        for (int kk = 0; kk < D / 16; ++kk) {
            reg2 af[kMT][32][4];
            for (int mt = 0; mt < kMT; ++mt) {
                uint32_t addr[32];
                for (int lane = 0; lane < 32; ++lane) addr[lane] = fa_ldsm_addr<D>(qb[lane], 16 * mt, kk);
                emu_ldmatrix_x4(sQ, addr, false, af[mt]);
            }
            for (int nb2 = 0; nb2 < kNB / 2; ++nb2) {
                uint32_t addr[32];
                reg2 bf[32][4], b0[32][2], b1[32][2];
                for (int lane = 0; lane < 32; ++lane) addr[lane] = fa_ldsm_addr<D>(kb[lane], 16 * nb2, kk);
                emu_ldmatrix_x4(sK, addr, false, bf);
                emu_split_b(bf, b0, b1);
                for (int mt = 0; mt < kMT; ++mt) {
                    emu_mma(s[mt][2 * nb2], af[mt], b0);
                    emu_mma(s[mt][2 * nb2 + 1], af[mt], b1);
                }
            }
        }
        int ok = 1;
        for (int mt = 0; mt < kMT; ++mt)
            for (int nb = 0; nb < kNB; ++nb)
                for (int lane = 0; lane < 32; ++lane)
                    for (int e = 0; e < 4; ++e) {
                        const int row = warp_row + 16 * mt + lane / 4 + 8 * (e >> 1);
                        const int col = 8 * nb + 2 * (lane % 4) + (e & 1);
                        double want = 0;
                        for (int c = 0; c < D; ++c) want += (double)q[row * D + c] * k[col * D + c];
                        if (s[mt][nb][lane][e] != (float)want) ok = 0;
                    }
        report(ok, "emulated warp_gemm_qk == Q K^T", D);

        /* O = P V with P in the C layout of S, packed like fa_pack_c_to_a */
        std::vector<float> v(Bc * D), sV(Bc * D), pfull(32 * Bc);
        for (int i = 0; i < Bc * D; ++i) v[i] = small_int();
        for (int r = 0; r < Bc; ++r)
            for (int c = 0; c < D; ++c) sV[fa_tile_offset<D>(r, c / 8) + c % 8] = v[r * D + c];
        for (auto &x : pfull) x = small_int();
        static float pfrag[kMT][kNB][32][4];
        for (int mt = 0; mt < kMT; ++mt)
            for (int nb = 0; nb < kNB; ++nb)
                for (int lane = 0; lane < 32; ++lane)
                    for (int e = 0; e < 4; ++e)
                        pfrag[mt][nb][lane][e] =
                            pfull[(16 * mt + lane / 4 + 8 * (e >> 1)) * Bc + 8 * nb + 2 * (lane % 4) + (e & 1)];
        static float o[kMT][D / 8][32][4];
        memset(o, 0, sizeof o);
        fa_ldsm_bases<D> vb[32];
        for (int lane = 0; lane < 32; ++lane) vb[lane] = fa_fwd_bases_a<D>(0, lane);
        for (int kk = 0; kk < kNB / 2; ++kk) {
            reg2 pa[kMT][32][4];
            for (int mt = 0; mt < kMT; ++mt)
                for (int lane = 0; lane < 32; ++lane) {
                    /* fa_pack_c_to_a(a, c0 = p[mt][2kk], c1 = p[mt][2kk+1]) */
                    const float *c0 = pfrag[mt][2 * kk][lane], *c1 = pfrag[mt][2 * kk + 1][lane];
                    pa[mt][lane][0] = {c0[0], c0[1]};
                    pa[mt][lane][1] = {c0[2], c0[3]};
                    pa[mt][lane][2] = {c1[0], c1[1]};
                    pa[mt][lane][3] = {c1[2], c1[3]};
                }
            for (int db2 = 0; db2 < D / 16; ++db2) {
                uint32_t addr[32];
                reg2 bf[32][4], b0[32][2], b1[32][2];
                for (int lane = 0; lane < 32; ++lane) addr[lane] = fa_ldsm_addr<D>(vb[lane], 16 * kk, db2);
                emu_ldmatrix_x4(sV, addr, true, bf);
                emu_split_b(bf, b0, b1);
                for (int mt = 0; mt < kMT; ++mt) {
                    emu_mma(o[mt][2 * db2], pa[mt], b0);
                    emu_mma(o[mt][2 * db2 + 1], pa[mt], b1);
                }
            }
        }
        ok = 1;
        for (int mt = 0; mt < kMT; ++mt)
            for (int db = 0; db < D / 8; ++db)
                for (int lane = 0; lane < 32; ++lane)
                    for (int e = 0; e < 4; ++e) {
                        const int row = 16 * mt + lane / 4 + 8 * (e >> 1);
                        const int col = 8 * db + 2 * (lane % 4) + (e & 1);
                        double want = 0;
                        for (int j = 0; j < Bc; ++j) want += (double)pfull[row * Bc + j] * v[j * D + col];
                        if (o[mt][db][lane][e] != (float)want) ok = 0;
                    }
        report(ok, "emulated fa_pack_c_to_a + warp_gemm_pv == P V", D);
    }
}

int main(void)
{
    srand(1234);
    check_bucket<32>();
    check_bucket<64>();
    check_bucket<96>();
    check_bucket<128>();
    check_bucket<160>();
    check_bucket<192>();
    check_bucket<224>();
    check_bucket<256>();
    return check_summary(&g_tally);
}
