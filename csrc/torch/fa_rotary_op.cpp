// fa_rotary_op.cpp - the rotary embedding ops: schemas and their CPU / CUDA registrations.
//
//   rotary(x, cos, sin, ...) -> out        functional (autograd and fake kernel: flash_attn_c/rotary.py)
//   rotary_(x!, cos, sin, ...) -> ()       in place on x
// Validates the tensors (messages name the argument), converts cos / sin to contiguous fp32 and
// seqlen_offsets to int64 on x's device (tiny tables), fills fa_rotary_params and runs the C
// backend (rows over at::parallel_for) or the CUDA kernel (current stream, no host sync).
#include <ATen/MemoryOverlap.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <limits>
#include <optional>

#ifdef FA_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#endif

#include "fa_glue.h"

namespace fa {
namespace {

// The converted side tensors must outlive the launch: they are held here next to the params.
struct RotaryCall {
    fa_rotary_params p;
    at::Tensor cos32, sin32, offsets64, cu;
};

fa_dtype rotary_dtype(const at::Tensor &x)
{
    switch (x.scalar_type()) {
    case at::kFloat: return FA_F32;
    case at::kHalf: return FA_F16;
    case at::kBFloat16: return FA_BF16;
    default:
        TORCH_CHECK(false, "flash_attn_c: rotary: x must be float32, float16 or bfloat16, got ",
                    x.scalar_type());
    }
    return FA_F32;
}

void check_side(const at::Tensor &t, const at::Tensor &x, const char *name)
{
    TORCH_CHECK(t.device() == x.device(), "flash_attn_c: rotary: ", name, " must be on ",
                x.device(), " like x, got ", t.device());
}

RotaryCall make_call(const at::Tensor &x, const at::Tensor &out, const at::Tensor &cos,
                     const at::Tensor &sin, const std::optional<at::Tensor> &seqlen_offsets,
                     int64_t seqlen_offset, const std::optional<at::Tensor> &cu_seqlens,
                     bool interleaved, bool conjugate)
{
    RotaryCall c;
    fa_rotary_params &p = c.p;
    p = fa_rotary_params{};
    p.dtype = rotary_dtype(x);
    const bool varlen = cu_seqlens.has_value();
    const int rank = varlen ? 3 : 4;
    TORCH_CHECK(x.dim() == rank, "flash_attn_c: rotary: x must be ", rank, "-D ",
                varlen ? "(total, nheads, headdim) with cu_seqlens"
                       : "(batch, seqlen, nheads, headdim)",
                ", got shape ", x.sizes());
    TORCH_CHECK(x.size(-1) <= 1 || x.stride(-1) == 1,
                "flash_attn_c: rotary: x must have a contiguous last dimension, got stride ",
                x.stride(-1));
    check_rotary_tables(cos, sin, x.device(), x.size(-1), "cos", "sin");
    p.heads = x.size(-2);
    p.head_dim = x.size(-1);
    p.rotary_dim = 2 * cos.size(1);
    p.seqlen_ro = cos.size(0);
    if (varlen) {
        const at::Tensor &cu = *cu_seqlens;
        check_side(cu, x, "cu_seqlens");
        TORCH_CHECK(cu.scalar_type() == at::kInt && cu.dim() == 1 && cu.numel() >= 1,
                    "flash_attn_c: rotary: cu_seqlens must be a 1-D int32 tensor (batch + 1,), got ",
                    cu.scalar_type(), " of shape ", cu.sizes());
        c.cu = cu.contiguous();
        p.batch = cu.numel() - 1;
        p.rows = x.size(0);
        p.cu_seqlens = c.cu.data_ptr<int32_t>();
        if (x.is_cpu())
            check_cu_seqlens_host(c.cu, p.rows, std::numeric_limits<int64_t>::max(), "cu_seqlens",
                                  "x", "max_seqlen");
    } else {
        p.batch = x.size(0);
        p.seqlen = x.size(1);
        p.rows = p.batch * p.seqlen;
        p.x_batch_stride = x.stride(0);
        p.out_batch_stride = out.stride(0);
    }
    if (seqlen_offsets.has_value()) {
        const at::Tensor &o = *seqlen_offsets;
        check_side(o, x, "seqlen_offsets");
        TORCH_CHECK((o.scalar_type() == at::kInt || o.scalar_type() == at::kLong) && o.dim() == 1 &&
                        o.size(0) == p.batch,
                    "flash_attn_c: rotary: seqlen_offsets must be an int32/int64 tensor of shape (",
                    p.batch, ",) (one offset per sequence), got ", o.scalar_type(), " of shape ",
                    o.sizes());
        c.offsets64 = o.to(at::kLong).contiguous();
        p.seqlen_offsets = c.offsets64.data_ptr<int64_t>();
    }
    p.seqlen_offset = seqlen_offset;
    p.x_row_stride = x.stride(-3);
    p.x_head_stride = x.stride(-2);
    p.out_row_stride = out.stride(-3);
    p.out_head_stride = out.stride(-2);
    c.cos32 = cos.to(at::kFloat).contiguous();
    c.sin32 = sin.to(at::kFloat).contiguous();
    p.cos = c.cos32.data_ptr<float>();
    p.sin = c.sin32.data_ptr<float>();
    p.x = x.data_ptr();
    p.out = out.data_ptr();
    p.interleaved = interleaved ? 1 : 0;
    p.conjugate = conjugate ? 1 : 0;
    return c;
}

void run_cpu(const fa_rotary_params &p)
{
    throw_on_error(fa_rotary_check(&p), "rotary");
    const int64_t per_row = std::max<int64_t>(1, p.heads * p.head_dim);
    const int64_t grain = std::max<int64_t>(1, 32768 / per_row);  // ~32K elements per task
    std::atomic<int> status{FA_OK};
    at::parallel_for(0, p.rows, grain, [&](int64_t begin, int64_t end) {
        const fa_status st = fa_rotary_cpu(&p, begin, end);
        int expected = FA_OK;
        if (st != FA_OK) status.compare_exchange_strong(expected, st);
    });
    throw_on_error(static_cast<fa_status>(status.load()), "rotary");
}

at::Tensor rotary_cpu(const at::Tensor &x, const at::Tensor &cos, const at::Tensor &sin,
                      const std::optional<at::Tensor> &seqlen_offsets, int64_t seqlen_offset,
                      const std::optional<at::Tensor> &cu_seqlens, bool interleaved, bool conjugate)
{
    at::Tensor out = at::empty(x.sizes(), x.options());
    RotaryCall c = make_call(x, out, cos, sin, seqlen_offsets, seqlen_offset, cu_seqlens,
                             interleaved, conjugate);
    if (x.numel() > 0) run_cpu(c.p);
    return out;
}

void rotary_inplace_cpu(const at::Tensor &x, const at::Tensor &cos, const at::Tensor &sin,
                        const std::optional<at::Tensor> &seqlen_offsets, int64_t seqlen_offset,
                        const std::optional<at::Tensor> &cu_seqlens, bool interleaved, bool conjugate)
{
    // in place: an x whose elements share memory (an expanded view) would be rotated twice
    at::assert_no_internal_overlap(x);
    RotaryCall c = make_call(x, x, cos, sin, seqlen_offsets, seqlen_offset, cu_seqlens,
                             interleaved, conjugate);
    if (x.numel() > 0) run_cpu(c.p);
}

#ifdef FA_WITH_CUDA
void run_cuda(const at::Tensor &x, const fa_rotary_params &p)
{
    throw_on_error(fa_rotary_cuda(&p, at::cuda::getCurrentCUDAStream(x.device().index()).stream()),
                   "rotary");
}

at::Tensor rotary_cuda(const at::Tensor &x, const at::Tensor &cos, const at::Tensor &sin,
                       const std::optional<at::Tensor> &seqlen_offsets, int64_t seqlen_offset,
                       const std::optional<at::Tensor> &cu_seqlens, bool interleaved, bool conjugate)
{
    c10::cuda::CUDAGuard guard(x.device());
    at::Tensor out = at::empty(x.sizes(), x.options());
    RotaryCall c = make_call(x, out, cos, sin, seqlen_offsets, seqlen_offset, cu_seqlens,
                             interleaved, conjugate);
    if (x.numel() > 0) run_cuda(x, c.p);
    return out;
}

void rotary_inplace_cuda(const at::Tensor &x, const at::Tensor &cos, const at::Tensor &sin,
                         const std::optional<at::Tensor> &seqlen_offsets, int64_t seqlen_offset,
                         const std::optional<at::Tensor> &cu_seqlens, bool interleaved,
                         bool conjugate)
{
    c10::cuda::CUDAGuard guard(x.device());
    // in place: an x whose elements share memory (an expanded view) would be rotated twice
    at::assert_no_internal_overlap(x);
    RotaryCall c = make_call(x, x, cos, sin, seqlen_offsets, seqlen_offset, cu_seqlens,
                             interleaved, conjugate);
    if (x.numel() > 0) run_cuda(x, c.p);
}
#endif

}  // namespace
}  // namespace fa

TORCH_LIBRARY_FRAGMENT(flash_attn_c, m)
{
    m.def("rotary(Tensor x, Tensor cos, Tensor sin, Tensor? seqlen_offsets, int seqlen_offset, "
          "Tensor? cu_seqlens, bool interleaved, bool conjugate) -> Tensor");
    m.def("rotary_(Tensor(a!) x, Tensor cos, Tensor sin, Tensor? seqlen_offsets, int seqlen_offset, "
          "Tensor? cu_seqlens, bool interleaved, bool conjugate) -> ()");
}

TORCH_LIBRARY_IMPL(flash_attn_c, CPU, m)
{
    m.impl("rotary", TORCH_FN(fa::rotary_cpu));
    m.impl("rotary_", TORCH_FN(fa::rotary_inplace_cpu));
}

#ifdef FA_WITH_CUDA
TORCH_LIBRARY_IMPL(flash_attn_c, CUDA, m)
{
    m.impl("rotary", TORCH_FN(fa::rotary_cuda));
    m.impl("rotary_", TORCH_FN(fa::rotary_inplace_cuda));
}
#endif
