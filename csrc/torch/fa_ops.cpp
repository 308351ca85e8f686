// fa_ops.cpp - the op schemas (declared once) and their per-device registrations.
//
// Autograd and fake (meta) kernels live in Python (flash_attn_c/_ops.py) through torch.library,
// so torch.compile traces these ops without graph breaks.
#include <Python.h>
#include <torch/library.h>

#include "fa_glue.h"

namespace fa {

static at::Tensor dropout_mask(int64_t batch, int64_t heads, int64_t seqlen_q, int64_t seqlen_k,
                               double dropout_p, int64_t seed, int64_t offset, c10::Device device)
{
    TORCH_CHECK(batch >= 0 && heads >= 0 && seqlen_q >= 0 && seqlen_k >= 0,
                "flash_attn_c: dropout_mask sizes must be >= 0");
    TORCH_CHECK(dropout_p >= 0.0 && dropout_p < 1.0,
                "flash_attn_c: dropout_p must be in [0, 1), got ", dropout_p);
    if (device.is_cpu()) return dropout_mask_cpu(batch, heads, seqlen_q, seqlen_k, dropout_p, seed, offset);
#ifdef FA_WITH_CUDA
    if (device.is_cuda())
        return dropout_mask_cuda(batch, heads, seqlen_q, seqlen_k, dropout_p, seed, offset, device);
#endif
    TORCH_CHECK(false, "flash_attn_c: dropout_mask: device ", device, " is not supported",
#ifdef FA_WITH_CUDA
                ""
#else
                " (this build has no CUDA kernels)"
#endif
    );
    return at::Tensor();
}

static bool cuda_available() { return fa_cuda_available() != 0; }

}  // namespace fa

// max_seqlen_q/k are SymInt so that torch.compile keeps them symbolic: one graph serves every
// packed batch's maximum length. The kernels take int64_t; the dispatcher hands them concrete
// values when the op runs.
TORCH_LIBRARY(flash_attn_c, m)
{
    m.def("fwd(Tensor q, Tensor k, Tensor v, Tensor? cu_seqlens_q, Tensor? cu_seqlens_k, "
          "SymInt max_seqlen_q, SymInt max_seqlen_k, float dropout_p, float softmax_scale, "
          "int window_left, int window_right, float softcap, Tensor? alibi_slopes, "
          "bool return_probs, Tensor? rng_state, bool deterministic=False) "
          "-> (Tensor out, Tensor lse, Tensor probs, Tensor rng_state_out)");
    m.def("bwd(Tensor dout, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, "
          "Tensor? cu_seqlens_q, Tensor? cu_seqlens_k, SymInt max_seqlen_q, SymInt max_seqlen_k, "
          "float dropout_p, float softmax_scale, int window_left, int window_right, float softcap, "
          "Tensor? alibi_slopes, bool deterministic, Tensor rng_state, Tensor? dlse=None) "
          "-> (Tensor dq, Tensor dk, Tensor dv)");
    m.def("dropout_mask(int batch, int heads, int seqlen_q, int seqlen_k, float dropout_p, "
          "int seed, int offset, Device device) -> Tensor");
    m.def("cuda_available() -> bool");
    m.impl("dropout_mask", c10::DispatchKey::CompositeExplicitAutograd, TORCH_FN(fa::dropout_mask));
    m.impl("cuda_available", c10::DispatchKey::CompositeExplicitAutograd,
           TORCH_FN(fa::cuda_available));
}

TORCH_LIBRARY_IMPL(flash_attn_c, CPU, m)
{
    m.impl("fwd", TORCH_FN(fa::fwd_cpu));
    m.impl("bwd", TORCH_FN(fa::bwd_cpu));
}

#ifdef FA_WITH_CUDA
TORCH_LIBRARY_IMPL(flash_attn_c, CUDA, m)
{
    m.impl("fwd", TORCH_FN(fa::fwd_cuda));
    m.impl("bwd", TORCH_FN(fa::bwd_cuda));
}
#endif

// A Python module with no functions: importing flash_attn_c._C runs the registrations above.
extern "C" PyObject *PyInit__C(void)
{
    static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "_C", "flash_attn_c op registrations",
                                     -1, nullptr, nullptr, nullptr, nullptr, nullptr};
    return PyModule_Create(&def);
}
