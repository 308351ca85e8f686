/* fa_smem_tile.cuh - swizzled shared-memory tiles of b16 elements and their cp.async loaders.
 *
 * A tile is [R][D] fp16/bf16, D a multiple of 32 (a head-dim bucket), stored in 16-byte chunks
 * (8 elements). Chunk c of row r lives at physical chunk phys(r, c) of that row:
 *   in a complete group of 8 chunks (128 bytes):      phys = (c & ~7) | ((c ^ r) & 7)
 *   in a trailing group of 4 (D % 64 == 32):          phys = (c & ~3) | ((c ^ (r >> 1)) & 3)
 * Why: ldmatrix makes 8 lanes read 8 consecutive rows at the same logical chunk. Without the XOR
 * every row starts at the same bank when the row pitch is a multiple of 128 bytes (8-way
 * conflict). With it the 8 reads land in 8 different 16-byte bank groups for every D used here
 * (pitch 128*k bytes: rows differ in c ^ r; pitch 64 + 128*k bytes: odd rows are shifted by 64
 * bytes, so (r >> 1) separates the 4 rows of each parity). The same holds for the 8 rows a quad
 * of lanes writes when an accumulator tile is staged through shared memory.
 */
#ifndef FA_SMEM_TILE_CUH
#define FA_SMEM_TILE_CUH

#include <stdint.h>
#include "fa_mma.cuh"

/* Pure index arithmetic: host-callable too, so dev/fwd/tile_check.cu can verify it on the CPU. */
#define FA_TILE_HD static __host__ __device__ __forceinline__

/* Element offset of (row, chunk c) inside a swizzled [R][D] tile (the element is c * 8). */
template <int D>
FA_TILE_HD int fa_tile_offset(int row, int c)
{
    constexpr int kChunks = D / 8;
    constexpr int kFull = kChunks & ~7;  /* chunks in complete groups of 8 */
    int phys;
    if (kChunks % 8 == 0 || c < kFull)
        phys = (c & ~7) | ((c ^ row) & 7);
    else
        phys = (c & ~3) | ((c ^ (row >> 1)) & 3);
    return row * D + phys * 8;
}

/* A run-time zero that neither nvcc nor ptxas can see through: a volatile shared-memory load
 * of a slot the kernel set to 0 (before a barrier). Why: the loaders' per-thread offsets
 * (row * stride, predicates, swizzled destinations) are loop-invariant, so the compilers hoist
 * all of them out of the key loop and keep dozens of them live in registers, which spilled in
 * kernels whose accumulators already need ~200 registers. Adding this zero inside the loop
 * makes them cheap per-tile recomputations instead (one LDS + a few integer ops per tile). */
static __device__ __forceinline__ int fa_opaque_zero(const int *smem_zero)
{
    int v;
    asm volatile("ld.volatile.shared.b32 %0, [%1];\n" : "=r"(v) : "r"(fa_smem_u32(smem_zero)));
    return v;
}

/* A block-uniform pointer parked in shared memory, re-read with a volatile load (so the
 * compiler neither hoists nor caches it in a register across a loop). */
static __device__ __forceinline__ const uint16_t *fa_ld_volatile_shared_ptr(const uint16_t *const *slot)
{
    uint64_t v;
    asm volatile("ld.volatile.shared.u64 %0, [%1];\n" : "=l"(v) : "r"(fa_smem_u32(slot)));
    return (const uint16_t *)v;
}

/* Block-collective: starts cp.async copies of a [R][D] tile from global memory.
 * gmem: element (0, 0) of the tile, rows row_stride elements apart, 16-byte aligned rows.
 * Rows >= rows_valid and columns >= d_valid (d_valid % 8 == 0) are zero-filled, so padding
 * never carries stale shared memory (possibly NaN bit patterns) into the products.
 * Consecutive threads take consecutive 16-byte chunks of a row: coalesced global reads.
 * The caller commits the group and waits (fa_cp_async_commit / fa_cp_async_wait).
 * zero: 0, from fa_opaque_zero when called inside a loop (keeps offsets out of registers). */
template <int D, int R, int kThreads>
static __device__ __forceinline__ void block_load_tile_async(
    uint16_t *smem /* [R][D] swizzled */, const uint16_t *gmem /* [rows_valid][row_stride] */,
    int64_t row_stride, int rows_valid, int d_valid, int tid, int zero /* 0, see fa_opaque_zero */)
{
    constexpr int kChunks = D / 8;
    constexpr int kTotal = R * kChunks;
    constexpr int kIters = (kTotal + kThreads - 1) / kThreads;
    const uint32_t base = fa_smem_u32(smem);
    row_stride += zero;
    tid += zero;
    if (kThreads % kChunks == 0 && (kThreads / kChunks) % 8 == 0) {
        /* every pass covers kRows whole rows, and the swizzle repeats every 8 rows: one
         * address per thread, advanced by constants (few registers live across the loop) */
        constexpr int kRows = kThreads / kChunks;
        const int row = tid / kChunks;
        const int c = tid % kChunks;
        const bool c_ok = c * 8 < d_valid;
        const int rows_left = rows_valid - row;  /* pass `it` loads row `row + it kRows` */
        const uint16_t *src = gmem + (int64_t)row * row_stride + c * 8;
        const int64_t step = (int64_t)kRows * row_stride;
        const uint32_t dst = base + 2u * (uint32_t)fa_tile_offset<D>(row, c);
#pragma unroll
        for (int it = 0; it < kIters; ++it) {
            if (kTotal % kThreads == 0 || row + it * kRows < R) {
                const bool pred = c_ok && it * kRows < rows_left;
                fa_cp_async_16(dst + 2u * (uint32_t)(it * kRows * D), pred ? src : gmem, pred);
            }
            src += step;
        }
    } else {
        /* general case (D % 64 == 32 with an odd number of passes per row): walk the chunk
         * index idx = tid + it * kThreads with incremental (row, c) */
        int row = tid / kChunks;
        int c = tid % kChunks;
#pragma unroll
        for (int it = 0; it < kIters; ++it) {
            if (kTotal % kThreads == 0 || tid + it * kThreads < kTotal) {
                const bool pred = row < rows_valid && c * 8 < d_valid;
                const uint16_t *src = pred ? gmem + (int64_t)row * row_stride + c * 8 : gmem;
                fa_cp_async_16(base + 2u * (uint32_t)fa_tile_offset<D>(row, c), src, pred);
            }
            row += kThreads / kChunks;
            c += kThreads % kChunks;
            if (c >= kChunks) {
                c -= kChunks;
                ++row;
            }
        }
    }
}

/* ---- ldmatrix addressing of a swizzled tile ---------------------------------------------
 * An ldmatrix lane reads row (row_off + lrow) at chunk (2 cp + lc), where row_off (a multiple
 * of 8) and cp are compile-time loop indices and lrow, lc depend on the lane only. Because the
 * swizzle XORs the low chunk bits with the low row bits, the address is
 *   bases.full[cp & 3] + row_off * 2D + ((2 cp) & ~7) * 16        (complete groups of 8)
 *   bases.rem[cp & 1]  + row_off * 2D + ((2 cp) & ~3) * 16        (trailing group of 4)
 * i.e. one of at most 6 per-lane registers plus an immediate. Why this exists: written
 * directly, the compilers turn the disjoint-bit additions into ORs, cannot fold the constants
 * into the instruction's offset, and keep one address register per (row, chunk) combination
 * (dozens of registers, which spilled). The bases contain the shared-memory base address, so
 * the additions stay additions. */
template <int D>
struct fa_ldsm_bases {
    uint32_t full[4];
    uint32_t rem[2];
};

/* tile: byte address of the [R][D] tile; lrow: this lane's row within a 16-row (or 8-row)
 * step; lc: this lane's chunk parity (0 or 1). */
template <int D>
FA_TILE_HD fa_ldsm_bases<D> fa_ldsm_make_bases(uint32_t tile, int lrow, int lc)
{
    constexpr int kFull = (D / 8) & ~7;
    fa_ldsm_bases<D> bs;
#pragma unroll
    for (int j = 0; j < 4; ++j) bs.full[j] = tile + 2u * (uint32_t)fa_tile_offset<D>(lrow, 2 * j + lc);
#pragma unroll
    for (int j = 0; j < 2; ++j)
        bs.rem[j] = tile + 2u * (uint32_t)(lrow * D + 8 * (kFull | ((2 * j + lc) ^ (lrow >> 1)) & 3));
    return bs;
}

/* Address of (row_off + lrow, chunk 2 cp + lc); row_off % 8 == 0, both compile-time. */
template <int D>
FA_TILE_HD uint32_t fa_ldsm_addr(const fa_ldsm_bases<D> &bs, int row_off, int cp)
{
    constexpr int kFull = (D / 8) & ~7;
    if (2 * cp < kFull) return bs.full[cp & 3] + (uint32_t)(row_off * D * 2 + ((2 * cp) & ~7) * 16);
    return bs.rem[cp & 1] + (uint32_t)(row_off * D * 2 + (((2 * cp) & ~3) - kFull) * 16);
}

#endif /* FA_SMEM_TILE_CUH */
