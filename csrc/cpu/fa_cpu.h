/* fa_cpu.h - shared internals of the CPU backend: sequence lookup, addressing, mask tiles,
 * block sizes and work-item numbering. Internal to csrc/cpu (not part of the public API).
 */
#ifndef FA_CPU_H
#define FA_CPU_H

#include <stddef.h>
#include <stdint.h>

#include "flash_attn_c.h"
#include "fa_convert.h"

/* Block sizes of the tiled kernels (queries per block Br, keys per block Bc); both must be
 * multiples of FA_GEMM_NB (64 on AVX-512; checked at compile time in fa_scores.c).
 * Why 64 x 64: the inner products run as register-blocked GEMMs whose streamed operand is a
 * d x 64 fp32 panel (Q^T in the forward: 16 KiB at d = 64, 32 KiB at d = 128) next to a 64 x 64
 * fp32 score tile (16 KiB); together they fit the 32-48 KiB L1d of current x86 cores at the
 * common head dims, while the other per-item buffers (O^T accumulator, converted K/V blocks)
 * live in L2. 64 query rows per item amortise the per-item work (packing Q^T, transposing O
 * back) over 64 x sk x d multiply-adds and still give b*h*sq/64 items for the threads; 64 keys
 * per block keep the O^T read-rescale-write at one per 64 x 64 x d FMAs. Measured on the
 * 2-core Zen 5 dev machine (fp32, s = 2048, d = 64 and 128, one thread): Bc = 32 or 128 and
 * Br = Bc = 128 land within 3% of 64 x 64; Br = 128 is 5-10% slower at d = 128 (its 64 KiB
 * Q^T panel leaves L1). Both can be overridden with -DFA_CPU_BR= / -DFA_CPU_BC= to re-tune.
 * Br = 128 since issue 10: on the 2-core Zen 4 machine (32 KiB L1d, 1 MiB L2) under load from
 * other processes, every forward item streams all of its head's K and V from L3, and halving the
 * number of items per head halves that traffic: fp32 non-causal forward, 2 threads, load ~7,
 * SDPA time / ours over five long-sequence shapes went from 0.89x (Br = 64) to 0.99x (Br = 128);
 * one thread on an idle core: within +-10% either way (noise), forward + backward unchanged. */
#ifndef FA_CPU_BR
#define FA_CPU_BR 128
#endif
#ifndef FA_CPU_BC
#define FA_CPU_BC 64
#endif

/* One sequence of one call, in sequence-local coordinates. */
typedef struct fa_seq {
    int64_t sq, sk;    /* this sequence's lengths */
    int64_t q_row0;    /* varlen: first row of the sequence in q / o / lse; dense: 0 */
    int64_t k_row0;    /* varlen: first row in k / v; dense: 0 */
} fa_seq;

static inline int fa_is_varlen(const fa_params *p) { return p->cu_seqlens_q != NULL; }

static inline fa_seq fa_get_seq(const fa_params *p, int64_t b)
{
    fa_seq s;
    if (fa_is_varlen(p)) {
        s.q_row0 = p->cu_seqlens_q[b];
        s.k_row0 = p->cu_seqlens_k[b];
        s.sq = p->cu_seqlens_q[b + 1] - s.q_row0;
        s.sk = p->cu_seqlens_k[b + 1] - s.k_row0;
    } else {
        s.q_row0 = 0;
        s.k_row0 = 0;
        s.sq = p->seqlen_q;
        s.sk = p->seqlen_k;
    }
    return s;
}

/* Element offset of row 0 of (sequence b, head h) in a (b, s, h, d) / (total, h, d) tensor. */
static inline int64_t fa_base_off(const fa_params *p, int64_t b, int64_t row0, int64_t h,
                                  int64_t batch_stride, int64_t row_stride, int64_t head_stride)
{
    return (fa_is_varlen(p) ? row0 * row_stride : b * batch_stride) + h * head_stride;
}

/* Byte pointer to element offset `off` of a dtype array. */
static inline const void *fa_cptr(const fa_params *p, const void *base, int64_t off)
{
    return (const char *)base + off * fa_dtype_size(p->dtype);
}
static inline void *fa_ptr(const fa_params *p, void *base, int64_t off)
{
    return (char *)base + off * fa_dtype_size(p->dtype);
}

/* Index of row 0 of (b, h) in lse-shaped fp32 arrays: (b, h, sq) dense, (h, total_q) varlen. */
static inline int64_t fa_lse_off(const fa_params *p, int64_t b, int64_t h, const fa_seq *s)
{
    return fa_is_varlen(p) ? h * p->total_q + s->q_row0 : (b * p->heads + h) * p->seqlen_q;
}

static inline float fa_alibi_slope(const fa_params *p, int64_t b, int64_t h)
{
    return p->alibi_slopes ? p->alibi_slopes[b * p->alibi_batch_stride + h] : 0.0f;
}

/* Classification of the tile rows [i0, i1) x keys [j0, j1) of one sequence (i1 <= sq,
 * j1 <= sk, both non-empty): no visible pair, every pair visible, or some of each. */
enum { FA_TILE_EMPTY = 0, FA_TILE_FULL = 1, FA_TILE_PARTIAL = 2 };

static inline int fa_tile_class(const fa_params *p, const fa_seq *s, int64_t i0, int64_t i1,
                                int64_t j0, int64_t j1)
{
    int64_t lo_first, hi_first, lo_last, hi_last;
    /* lo and hi are nondecreasing in i, so the first and last rows bound every row */
    fa_mask_bounds(i0, s->sq, s->sk, p->window_left, p->window_right, &lo_first, &hi_first);
    fa_mask_bounds(i1 - 1, s->sq, s->sk, p->window_left, p->window_right, &lo_last, &hi_last);
    if (hi_last < j0 || lo_first > j1 - 1) return FA_TILE_EMPTY;
    if (lo_last <= j0 && hi_first >= j1 - 1) return FA_TILE_FULL;
    return FA_TILE_PARTIAL;
}

/* Work items of the forward, phase 0 and phase 2: (b, h, query block), b slowest. Within one
 * (b, h) the query blocks are visited zig-zag (0, n-1, 1, n-2, ...), so that any contiguous
 * [begin, end) range mixes cheap and expensive blocks of a causal mask: a plain split of the
 * item range between threads is then balanced. */
static inline int64_t fa_zigzag(int64_t t, int64_t n)
{
    return (t & 1) ? n - 1 - (t >> 1) : (t >> 1);
}

static inline int64_t fa_num_blocks(int64_t len, int64_t block) { return (len + block - 1) / block; }

/* Host-side validation shared by every CPU entry point: fa_check_params plus cu_seqlens
 * (host memory here) and the dtype. */
fa_status fa_cpu_check(const fa_params *p, int backward);

/* Rows [r0, r0 + n) of a (rows, d) dtype matrix whose row 0 sits at element offset off, as
 * fp32: fp32 inputs are used in place (returns the tensor's pointer, *ms = row_stride); fp16 /
 * bf16 are converted into buf (n, d) (*ms = d). */
const float *fa_rows_f32(const fa_params *p, const void *base, int64_t off, int64_t row_stride,
                         int64_t r0, int64_t n, float *buf, int64_t *ms);

/* Aligned scratch (64-byte lines); NULL on failure. fa_cpu_free(NULL) is a no-op. */
void *fa_cpu_alloc(size_t bytes);
void fa_cpu_free(void *ptr);

/* Float buffers carved out of one zeroed fa_cpu_alloc block, each on a 64-byte boundary. A
 * layout function takes every buffer of its scratch struct with fa_cpu_arena_take;
 * fa_cpu_arena_build runs it twice, first on a counting arena (base NULL: takes return NULL
 * and only add up the sizes), then on the allocated block, so no total is written by hand. */
typedef struct fa_cpu_arena {
    float *base; /* NULL while counting */
    size_t used; /* floats taken so far, each piece rounded up to 16 floats */
} fa_cpu_arena;
float *fa_cpu_arena_take(fa_cpu_arena *a, size_t n);
typedef void (*fa_cpu_layout_fn)(void *scratch, fa_cpu_arena *a, int64_t d);
/* The block holding every buffer layout() took for head dim d (free it with fa_cpu_free), or
 * NULL when out of memory. */
void *fa_cpu_arena_build(fa_cpu_layout_fn layout, void *scratch, int64_t d);

/* Fill a dropout factor tile for rows i in [i0, i0 + ni) and keys j in [j0, j0 + nj) of
 * (sequence b, query head h): factor = kept ? fa_dropout_rescale(p) (1 / (1 - p_q)) : 0.
 * transposed == 0: z[(i - i0) * ldz + (j - j0)];  transposed != 0: z[(j - j0) * ldz + (i - i0)],
 * where vector builds may also write the lanes i0 + ni .. up to the next multiple of FA_VL
 * (ldz must be a multiple of FA_VL and leave room for them: FA_CPU_BR does). */
void fa_dropout_tile(const fa_params *p, int64_t b, int64_t h, int64_t i0, int64_t ni, int64_t j0,
                     int64_t nj, float *z, int64_t ldz, int transposed);

#endif /* FA_CPU_H */
