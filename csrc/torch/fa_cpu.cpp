// fa_cpu.cpp - CPU implementations of the ops: validate, allocate, then run the C backend's
// independent work items through at::parallel_for (so torch.set_num_threads is honoured).
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <atomic>
#include <mutex>

#include "fa_glue.h"

namespace fa {

// Runs items [0, n) of one stage on torch's intra-op thread pool; the first error wins.
template <typename Fn>
static fa_status parallel_items(int64_t n, Fn run_range)
{
    std::atomic<int> status{FA_OK};
    at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
        fa_status st = run_range(begin, end);
        int expected = FA_OK;
        if (st != FA_OK) status.compare_exchange_strong(expected, st);
    });
    return static_cast<fa_status>(status.load());
}

static void check_varlen_host(const Problem &pr, const at::Tensor &q, const at::Tensor &k,
                              const std::optional<at::Tensor> &cu_q,
                              const std::optional<at::Tensor> &cu_k)
{
    if (!pr.varlen) return;
    check_cu_seqlens_host(*cu_q, q.size(0), pr.params.seqlen_q, "cu_seqlens_q", "q", "max_seqlen_q");
    check_cu_seqlens_host(*cu_k, k.size(0), pr.params.seqlen_k, "cu_seqlens_k", "k", "max_seqlen_k");
}

// The dropout stream of one CPU call: an explicit rng_state, or a fresh 64-bit seed from torch's
// default CPU generator (offset 0), so torch.manual_seed reproduces the mask bit for bit.
static void cpu_seed_offset(const std::optional<at::Tensor> &rng_state, uint64_t *seed,
                            uint64_t *offset)
{
    if (rng_state.has_value()) {
        read_rng_state_cpu(*rng_state, seed, offset);
        return;
    }
    auto *gen = at::check_generator<at::CPUGeneratorImpl>(at::detail::getDefaultCPUGenerator());
    std::lock_guard<std::mutex> lock(gen->mutex_);
    *seed = gen->random64();
    *offset = 0;
}

FwdResult fwd_cpu(const at::Tensor &q, const at::Tensor &k, const at::Tensor &v,
                  const std::optional<at::Tensor> &cu_seqlens_q,
                  const std::optional<at::Tensor> &cu_seqlens_k, int64_t max_seqlen_q,
                  int64_t max_seqlen_k, double dropout_p, double softmax_scale, int64_t window_left,
                  int64_t window_right, double softcap, const std::optional<at::Tensor> &alibi_slopes,
                  bool return_probs, const std::optional<at::Tensor> &rng_state, bool deterministic)
{
    (void)deterministic;  // the forward is always deterministic; the flag travels to backward
    Problem pr = make_problem(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                              dropout_p, softmax_scale, window_left, window_right, softcap,
                              alibi_slopes, /*cuda=*/false);
    check_varlen_host(pr, q, k, cu_seqlens_q, cu_seqlens_k);
    FwdOutputs o = alloc_fwd_outputs(pr, q, return_probs);
    fa_params &p = pr.params;
    if (dropout_p > 0.0) {
        cpu_seed_offset(rng_state, &p.seed, &p.offset);
        o.rng_state.data_ptr<int64_t>()[0] = static_cast<int64_t>(p.seed);
        o.rng_state.data_ptr<int64_t>()[1] = static_cast<int64_t>(p.offset);
    }
    if (pr.empty) {
        finish_empty_fwd(o);
        return {o.out, o.lse, o.probs, o.rng_state};
    }
    p.rng_state = nullptr;  // written above on the host; the C backend needs not touch it
    throw_on_error(fa_check_params(&p, 0), "forward");
    const int64_t n = fa_fwd_cpu_work_items(&p);
    throw_on_error(parallel_items(n, [&](int64_t b, int64_t e) { return fa_fwd_cpu(&p, b, e); }),
                   "forward");
    throw_on_error(fa_varlen_zero_uncovered_cpu(&p, 0), "forward");
    return {o.out, o.lse, o.probs, o.rng_state};
}

BwdResult bwd_cpu(const at::Tensor &dout_in, const at::Tensor &q, const at::Tensor &k,
                  const at::Tensor &v, const at::Tensor &out, const at::Tensor &lse,
                  const std::optional<at::Tensor> &cu_seqlens_q,
                  const std::optional<at::Tensor> &cu_seqlens_k, int64_t max_seqlen_q,
                  int64_t max_seqlen_k, double dropout_p, double softmax_scale, int64_t window_left,
                  int64_t window_right, double softcap, const std::optional<at::Tensor> &alibi_slopes,
                  bool deterministic, const at::Tensor &rng_state,
                  const std::optional<at::Tensor> &dlse)
{
    // Autograd may hand any layout (e.g. an expanded gradient of .sum()): only the last dim matters.
    const at::Tensor dout = dout_in.size(-1) <= 1 || dout_in.stride(-1) == 1 ? dout_in
                                                                             : dout_in.contiguous();
    Problem pr = make_problem(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                              dropout_p, softmax_scale, window_left, window_right, softcap,
                              alibi_slopes, /*cuda=*/false);
    check_varlen_host(pr, q, k, cu_seqlens_q, cu_seqlens_k);
    BwdOutputs g = alloc_bwd_outputs(pr, dout, q, k, v, out, lse, dlse);
    fa_params &p = pr.params;
    p.deterministic = 1;  // the CPU backward has no atomics: always reproducible
    if (dropout_p > 0.0) read_rng_state_cpu(rng_state, &p.seed, &p.offset);
    if (pr.empty) {
        g.dq.zero_();
        g.dk.zero_();
        g.dv.zero_();
        return {g.dq, g.dk, g.dv};
    }
    (void)deterministic;
    throw_on_error(fa_check_params(&p, 1), "backward");
    at::Tensor ws = at::empty({static_cast<int64_t>(fa_bwd_cpu_workspace_bytes(&p))},
                              q.options().dtype(at::kByte));
    p.workspace = ws.numel() ? ws.data_ptr() : nullptr;
    p.workspace_bytes = static_cast<size_t>(ws.numel());
    for (int phase = 0; phase < FA_BWD_CPU_PHASES; ++phase) {
        const int64_t n = fa_bwd_cpu_work_items(&p, phase);
        throw_on_error(parallel_items(n, [&](int64_t b, int64_t e) {
                           return fa_bwd_cpu(&p, phase, b, e);
                       }),
                       "backward");
    }
    throw_on_error(fa_varlen_zero_uncovered_cpu(&p, 1), "backward");
    return {g.dq, g.dk, g.dv};
}

at::Tensor dropout_mask_cpu(int64_t batch, int64_t heads, int64_t seqlen_q, int64_t seqlen_k,
                            double dropout_p, int64_t seed, int64_t offset)
{
    at::Tensor m = at::empty({batch, heads, seqlen_q, seqlen_k}, at::dtype(at::kByte));
    if (m.numel() > 0)
        fa_dropout_mask_cpu(static_cast<uint64_t>(seed), static_cast<uint64_t>(offset),
                            static_cast<float>(dropout_p), batch, heads, seqlen_q, seqlen_k,
                            m.data_ptr<uint8_t>());
    return m.to(at::kBool);
}

}  // namespace fa
