/* fa_mask.cuh - the bottom-right causal / sliding-window / key-length mask on a register tile.
 *
 * Works on accumulator tiles in the mma.sync C layout (fa_mma.cuh): s[mt][nb][e] holds
 *   row = row0 + 16 * mt + 8 * (e >> 1),  col = col0 + 8 * nb + (e & 1)
 * where for a lane (g = lane / 4, t = lane % 4) row0 = first tile row + g and
 * col0 = first tile column + 2 t. Rows and columns are sequence-local (i, j).
 * Semantics (docs/conventions.md, fa_mask_bounds): i sees j iff
 *   i + sk - sq - left <= j <= i + sk - sq + right  (left/right < 0: unbounded)  and  j < sk.
 * Invisible entries become -inf, so exp2 turns them into exact zeros.
 */
#ifndef FA_MASK_CUH
#define FA_MASK_CUH

#include <math.h>

/* Sequence-local mask of one (sequence, head) problem. left/right: -1 = unbounded. Callers keep
 * sq, sk < 2^30 and turn windows wider than the sequences into -1 (equivalent), so the int
 * arithmetic below cannot overflow. */
typedef struct fa_mask_t {
    int sq;     /* query rows of this sequence */
    int sk;     /* key rows of this sequence */
    int left;   /* window left, -1 = unbounded */
    int right;  /* window right, -1 = unbounded (causal: 0) */
} fa_mask_t;

/* Visible key range [*lo, *hi] of row i (may be empty: *lo > *hi): fa_mask_bounds (fa_common.h)
 * in int, without its clamp of *lo to 0 (columns are >= 0 anyway). Kept as its own int form:
 * this runs per row on every edge tile, and calling the int64 fa_mask_bounds here cost the
 * d = 64 sm80 forward 6 registers (229 -> 235). Tile bands use fa_mask_bounds (fa_seq.cuh). */
static __device__ __forceinline__ void fa_mask_row_range(const fa_mask_t mk, int i, int *lo, int *hi)
{
    const int diag = i + mk.sk - mk.sq;
    const int l = mk.left < 0 ? 0 : diag - mk.left;
    const int h = mk.right < 0 ? mk.sk - 1 : min(diag + mk.right, mk.sk - 1);
    *lo = l;
    *hi = h;
}

/* True when every (row, col) of rows [r_begin, r_end) x cols [c_begin, c_end) is visible, so a
 * tile can skip masking. Uniform across the block when the arguments are. */
static __device__ __forceinline__ bool fa_mask_tile_is_full(const fa_mask_t mk, int r_begin, int r_end,
                                                           int c_begin, int c_end)
{
    if (c_end > mk.sk) return false;
    const int diag_off = mk.sk - mk.sq;
    if (mk.left >= 0 && (r_end - 1) + diag_off - mk.left > c_begin) return false;
    if (mk.right >= 0 && r_begin + diag_off + mk.right < c_end - 1) return false;
    return true;
}

/* Per-thread: sets invisible entries of the register tile to -inf (layout above). */
template <int kMT, int kNB>
static __device__ __forceinline__ void thread_mask_tile(float (*s)[kNB][4], const fa_mask_t mk,
                                                       int row0, int col0)
{
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            int lo, hi;
            fa_mask_row_range(mk, row0 + 16 * mt + 8 * half, &lo, &hi);
#pragma unroll
            for (int nb = 0; nb < kNB; ++nb) {
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    const int col = col0 + 8 * nb + e;
                    if (col < lo || col > hi) s[mt][nb][2 * half + e] = -INFINITY;
                }
            }
        }
    }
}

#endif /* FA_MASK_CUH */
