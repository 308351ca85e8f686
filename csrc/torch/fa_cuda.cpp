// fa_cuda.cpp - CUDA implementations of the ops: validate, allocate, pick the dropout stream from
// torch's CUDA generator (graph-capture safe), launch on the current stream. No host syncs here.
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <ATen/cuda/PhiloxUtils.cuh>
#include <c10/cuda/CUDAGuard.h>

#include <mutex>

#include "fa_glue.h"

namespace fa {

// The kernels use 16-byte vector loads: head_dim % 8 == 0 (the Python layer pads), strides that are
// multiples of 8 elements and 16-byte aligned base pointers. A tensor that is not laid out that way
// (a misaligned view, an expanded dout) is copied once here rather than rejected.
bool vector_layout_ok(const at::Tensor &t)
{
    bool ok = reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0 && t.stride(-1) == 1;
    for (int i = 0; i < t.dim() - 1; ++i) ok = ok && (t.size(i) <= 1 || t.stride(i) % 8 == 0);
    return ok;
}

static at::Tensor vector_ready(const at::Tensor &t, const char *name)
{
    TORCH_CHECK(t.size(-1) % 8 == 0, "flash_attn_c: ", name, ".shape[-1] must be a multiple of 8 on "
                "CUDA (the Python functions pad head_dim; call them instead of torch.ops.flash_attn_c)");
    return vector_layout_ok(t) ? t : t.clone(at::MemoryFormat::Contiguous);
}

void check_arch(const at::Tensor &q)
{
    const cudaDeviceProp *prop = at::cuda::getDeviceProperties(q.device().index());
    TORCH_CHECK(prop->major >= 8, "flash_attn_c: CUDA kernels need compute capability 8.0 or newer "
                "(Ampere+), got ", prop->major, ".", prop->minor);
}

// Where the kernels read the Philox (seed, offset) from: an explicit rng_state on the device, or
// torch's CUDA generator. Under graph capture the generator hands out device pointers that replay
// updates; the kernel reads them, and the forward writes the values it used into rng_state.
static void set_dropout_stream(fa_params &p, const std::optional<at::Tensor> &rng_state,
                               const at::Tensor &q)
{
    if (rng_state.has_value()) {
        const at::Tensor &r = *rng_state;
        TORCH_CHECK(r.scalar_type() == at::kLong && r.numel() == 2 && r.is_contiguous() &&
                        r.device() == q.device(),
                    "flash_attn_c: rng_state must be a contiguous int64 tensor of 2 elements on ",
                    q.device());
        p.philox_seed_ptr = r.data_ptr<int64_t>();
        p.philox_offset_ptr = r.data_ptr<int64_t>() + 1;
        p.philox_offset_add = 0;
        return;
    }
    auto gen = at::get_generator_or_default<at::CUDAGeneratorImpl>(
        std::nullopt, at::cuda::detail::getDefaultCUDAGenerator());
    at::PhiloxCudaState st;
    {
        std::lock_guard<std::mutex> lock(gen->mutex_);
        // Each call takes one counter slot of 4 (the generator's granularity): our offset only has
        // to differ between calls, the per-element counter lives in the other Philox words.
        st = gen->philox_cuda_state(4);
    }
    if (st.captured_) {
        p.philox_seed_ptr = reinterpret_cast<const int64_t *>(st.seed_.ptr);
        p.philox_offset_ptr = reinterpret_cast<const int64_t *>(st.offset_.ptr);
        p.philox_offset_add = st.offset_intragraph_;
    } else {
        p.seed = st.seed_.val;
        p.offset = st.offset_.val;
    }
}

FwdResult fwd_cuda(const at::Tensor &q_in, const at::Tensor &k_in, const at::Tensor &v_in,
                   const std::optional<at::Tensor> &cu_seqlens_q,
                   const std::optional<at::Tensor> &cu_seqlens_k, int64_t max_seqlen_q,
                   int64_t max_seqlen_k, double dropout_p, double softmax_scale,
                   int64_t window_left, int64_t window_right, double softcap,
                   const std::optional<at::Tensor> &alibi_slopes, bool return_probs,
                   const std::optional<at::Tensor> &rng_state, bool deterministic)
{
    (void)deterministic;
    c10::cuda::CUDAGuard guard(q_in.device());
    check_arch(q_in);
    const at::Tensor q = vector_ready(q_in, "q"), k = vector_ready(k_in, "k"), v = vector_ready(v_in, "v");
    Problem pr = make_problem(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                              dropout_p, softmax_scale, window_left, window_right, softcap,
                              alibi_slopes, /*cuda=*/true);
    FwdOutputs o = alloc_fwd_outputs(pr, q, return_probs);
    fa_params &p = pr.params;
    if (dropout_p > 0.0) set_dropout_stream(p, rng_state, q);
    if (pr.empty) {
        finish_empty_fwd(o);
        return {o.out, o.lse, o.probs, o.rng_state};
    }
    throw_on_error(fa_check_params(&p, 0), "forward");
    const at::Tensor ws = attach_fwd_workspace(p, q);  // short query blocks: split-KV partials
    throw_on_error(fa_fwd_cuda(&p, at::cuda::getCurrentCUDAStream().stream()), "CUDA forward");
    return {o.out, o.lse, o.probs, o.rng_state};
}

BwdResult bwd_cuda(const at::Tensor &dout_in, const at::Tensor &q_in, const at::Tensor &k_in,
                   const at::Tensor &v_in, const at::Tensor &out_in, const at::Tensor &lse,
                   const std::optional<at::Tensor> &cu_seqlens_q,
                   const std::optional<at::Tensor> &cu_seqlens_k, int64_t max_seqlen_q,
                   int64_t max_seqlen_k, double dropout_p, double softmax_scale,
                   int64_t window_left, int64_t window_right, double softcap,
                   const std::optional<at::Tensor> &alibi_slopes, bool deterministic,
                   const at::Tensor &rng_state,
                   const std::optional<at::Tensor> &dlse)
{
    c10::cuda::CUDAGuard guard(q_in.device());
    check_arch(q_in);
    const at::Tensor q = vector_ready(q_in, "q"), k = vector_ready(k_in, "k"), v = vector_ready(v_in, "v");
    const at::Tensor out = vector_ready(out_in, "out"), dout = vector_ready(dout_in, "dout");
    Problem pr = make_problem(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                              dropout_p, softmax_scale, window_left, window_right, softcap,
                              alibi_slopes, /*cuda=*/true);
    BwdOutputs g = alloc_bwd_outputs(pr, dout, q, k, v, out, lse, dlse);
    fa_params &p = pr.params;
    p.deterministic = deterministic ? 1 : 0;
    if (dropout_p > 0.0) set_dropout_stream(p, rng_state, q);
    if (pr.empty) {
        g.dq.zero_();
        g.dk.zero_();
        g.dv.zero_();
        return {g.dq, g.dk, g.dv};
    }
    throw_on_error(fa_check_params(&p, 1), "backward");
    const size_t bytes = fa_bwd_cuda_workspace_bytes(&p);
    at::Tensor ws = at::empty({static_cast<int64_t>(bytes)}, q.options().dtype(at::kByte));
    p.workspace = bytes ? ws.data_ptr() : nullptr;
    p.workspace_bytes = bytes;
    throw_on_error(fa_bwd_cuda(&p, at::cuda::getCurrentCUDAStream().stream()), "CUDA backward");
    return {g.dq, g.dk, g.dv};
}

at::Tensor dropout_mask_cuda(int64_t batch, int64_t heads, int64_t seqlen_q, int64_t seqlen_k,
                             double dropout_p, int64_t seed, int64_t offset, c10::Device device)
{
    c10::cuda::CUDAGuard guard(device);
    at::Tensor m = at::empty({batch, heads, seqlen_q, seqlen_k},
                             at::dtype(at::kByte).device(device));
    if (m.numel() > 0)
        throw_on_error(fa_dropout_mask_cuda(static_cast<uint64_t>(seed),
                                            static_cast<uint64_t>(offset),
                                            static_cast<float>(dropout_p), batch, heads, seqlen_q,
                                            seqlen_k, m.data_ptr<uint8_t>(),
                                            at::cuda::getCurrentCUDAStream().stream()),
                       "CUDA dropout_mask");
    return m.to(at::kBool);
}

}  // namespace fa
