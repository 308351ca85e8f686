// fa_glue.h - the one place where at::Tensor meets the plain C API.
//
// Validates tensors (messages name the argument), fills fa_params (sizes, strides, pointers) and
// allocates outputs. Shared by the CPU and CUDA op implementations, which differ only in how the
// work is launched and where the dropout seed comes from.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

extern "C" {
#include "flash_attn_c.h"
}

namespace fa {

using FwdResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
using BwdResult = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

// Everything fwd and bwd share, validated and converted to plain values.
struct Problem {
    fa_params params;   // sizes, strides, pointers of q/k/v (+ semantics fields)
    bool varlen;
    bool empty;         // nothing to compute (no query rows, or no key at all)
};

// Builds a Problem from the op's tensor arguments; throws c10::Error with a message naming the
// bad argument. Does not read cu_seqlens contents (they may live on the GPU).
Problem make_problem(const at::Tensor &q, const at::Tensor &k, const at::Tensor &v,
                     const std::optional<at::Tensor> &cu_seqlens_q,
                     const std::optional<at::Tensor> &cu_seqlens_k, int64_t max_seqlen_q,
                     int64_t max_seqlen_k, double dropout_p, double softmax_scale,
                     int64_t window_left, int64_t window_right, double softcap,
                     const std::optional<at::Tensor> &alibi_slopes, bool cuda);

// alibi_slopes (h,) or (p.batch, h) float32 on device -> p.alibi_slopes / alibi_batch_stride (p.batch
// set first); raises naming alibi_slopes on a wrong dtype, device or shape, or overlapping rows. One
// check for every op that takes slopes (make_problem, the KV-cache op).
void set_alibi_slopes(fa_params &p, const at::Tensor &a, int64_t h, const at::Device &device);

// Heads, head_dim, pointers and row / head strides of q (..., h, d), k and v (..., hk, d): the part of
// fa_params every op fills the same way (dim 0 and the batch strides are the caller's).
void fill_qkv(fa_params &p, const at::Tensor &q, const at::Tensor &k, const at::Tensor &v);

// Allocates the CUDA forward's scratch (fa_fwd_cuda_workspace_bytes: the split-KV partials) from
// the caching allocator (no sync, capturable) and points p at it; an undefined tensor when none is
// needed. Keep the returned tensor alive until the launch.
at::Tensor attach_fwd_workspace(fa_params &p, const at::Tensor &like);

// Checks host-resident cu_seqlens: (b+1,) non-decreasing from 0, last entry <= rows, every length
// <= max_seqlen. Used by the CPU path (the Python layer does the same for CUDA in eager mode).
void check_cu_seqlens_host(const at::Tensor &cu, int64_t rows, int64_t max_seqlen, const char *name,
                           const char *rows_name, const char *max_name);

// Allocates out / lse / probs / rng_state for a forward and points params at them.
struct FwdOutputs {
    at::Tensor out, lse, probs, rng_state;
};
FwdOutputs alloc_fwd_outputs(Problem &pr, const at::Tensor &q, bool return_probs);

// Points params at dout / out / lse / dlse (the optional gradient of the lse output: shape,
// dtype and layout of lse, on its device) and at freshly allocated dq, dk, dv (like q, k, v).
struct BwdOutputs {
    at::Tensor dq, dk, dv;
};
BwdOutputs alloc_bwd_outputs(Problem &pr, const at::Tensor &dout, const at::Tensor &q,
                             const at::Tensor &k, const at::Tensor &v, const at::Tensor &out,
                             const at::Tensor &lse, const std::optional<at::Tensor> &dlse);

// Fills outputs for a call with nothing to compute: out = 0, lse = -inf, probs = 0.
void finish_empty_fwd(FwdOutputs &o);

// Throws a readable error for a non-OK status from the C backends.
void throw_on_error(fa_status st, const char *what);

// Rotary tables cos, sin (seqlen_ro, rotary_dim / 2): floating point, 2-D, one shape, on
// `device`, rotary_dim <= head_dim; the errors name them cos_name / sin_name. The rotary op and
// the KV-cache append share it (fa_glue.cpp).
void check_rotary_tables(const at::Tensor &cos, const at::Tensor &sin, const at::Device &device,
                         int64_t head_dim, const char *cos_name, const char *sin_name);

// The (seed, offset) of an explicit rng_state tensor (2,) int64 on the CPU.
void read_rng_state_cpu(const at::Tensor &rng_state, uint64_t *seed, uint64_t *offset);

// Backend entry points (fa_cpu.cpp, fa_cuda.cpp).
FwdResult fwd_cpu(const at::Tensor &q, const at::Tensor &k, const at::Tensor &v,
                  const std::optional<at::Tensor> &cu_seqlens_q,
                  const std::optional<at::Tensor> &cu_seqlens_k, int64_t max_seqlen_q,
                  int64_t max_seqlen_k, double dropout_p, double softmax_scale, int64_t window_left,
                  int64_t window_right, double softcap, const std::optional<at::Tensor> &alibi_slopes,
                  bool return_probs, const std::optional<at::Tensor> &rng_state, bool deterministic);
BwdResult bwd_cpu(const at::Tensor &dout, const at::Tensor &q, const at::Tensor &k,
                  const at::Tensor &v, const at::Tensor &out, const at::Tensor &lse,
                  const std::optional<at::Tensor> &cu_seqlens_q,
                  const std::optional<at::Tensor> &cu_seqlens_k, int64_t max_seqlen_q,
                  int64_t max_seqlen_k, double dropout_p, double softmax_scale, int64_t window_left,
                  int64_t window_right, double softcap, const std::optional<at::Tensor> &alibi_slopes,
                  bool deterministic, const at::Tensor &rng_state,
                  const std::optional<at::Tensor> &dlse);
at::Tensor dropout_mask_cpu(int64_t batch, int64_t heads, int64_t seqlen_q, int64_t seqlen_k,
                            double dropout_p, int64_t seed, int64_t offset);

#ifdef FA_WITH_CUDA
// Refuses GPUs below compute capability 8.0 with a message saying so (fa_cuda.cpp).
void check_arch(const at::Tensor &t);
// The kernels' 16-byte vector access: last dim contiguous, other strides multiples of 8 elements,
// a 16-byte aligned start (fa_cuda.cpp).
bool vector_layout_ok(const at::Tensor &t);
FwdResult fwd_cuda(const at::Tensor &q, const at::Tensor &k, const at::Tensor &v,
                   const std::optional<at::Tensor> &cu_seqlens_q,
                   const std::optional<at::Tensor> &cu_seqlens_k, int64_t max_seqlen_q,
                   int64_t max_seqlen_k, double dropout_p, double softmax_scale,
                   int64_t window_left, int64_t window_right, double softcap,
                   const std::optional<at::Tensor> &alibi_slopes, bool return_probs,
                   const std::optional<at::Tensor> &rng_state, bool deterministic);
BwdResult bwd_cuda(const at::Tensor &dout, const at::Tensor &q, const at::Tensor &k,
                   const at::Tensor &v, const at::Tensor &out, const at::Tensor &lse,
                   const std::optional<at::Tensor> &cu_seqlens_q,
                   const std::optional<at::Tensor> &cu_seqlens_k, int64_t max_seqlen_q,
                   int64_t max_seqlen_k, double dropout_p, double softmax_scale,
                   int64_t window_left, int64_t window_right, double softcap,
                   const std::optional<at::Tensor> &alibi_slopes, bool deterministic,
                   const at::Tensor &rng_state, const std::optional<at::Tensor> &dlse);
at::Tensor dropout_mask_cuda(int64_t batch, int64_t heads, int64_t seqlen_q, int64_t seqlen_k,
                             double dropout_p, int64_t seed, int64_t offset, c10::Device device);
#endif

}  // namespace fa
