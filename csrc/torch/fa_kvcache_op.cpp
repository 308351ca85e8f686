// fa_kvcache_op.cpp - the KV-cache ops: schemas (every build) and their CUDA implementations.
//
//   fwd_kvcache(q, k_cache, v_cache, ...) -> (out, lse)   attention over a (paged) KV cache on the
//       split-KV kernel: fa_params' KV-cache fields (flash_attn_c.h); no host sync.
//   kvcache_append_(k_cache!, v_cache!, k, v, ..., q?, rotary_cos?, ...) -> (q_rot, seqused)
//       what a decode step does before its attention, in one launch: the in-place append of new
//       keys (rotated when tables are given) and values, q rotated into q_rot (empty when q is not
//       given), seqused = cache_seqlens + seqlen_new.
// The CPU has no implementation: flash_attn_c/kvcache.py gathers the visible keys there (the CPU
// path is the oracle). Fake kernels: flash_attn_c/_ops.py.
#include <torch/library.h>

#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>

#include "fa_glue.h"

#ifdef FA_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <ATen/MemoryOverlap.h>
#include <c10/cuda/CUDAGuard.h>

namespace fa {

static const int32_t *index_ptr(const std::optional<at::Tensor> &t, const at::Tensor &q, const char *name,
                                int64_t dim0, int rank)
{
    if (!t.has_value()) return nullptr;
    const at::Tensor &x = *t;
    TORCH_CHECK(x.scalar_type() == at::kInt, "flash_attn_c: ", name, " must be int32, got ", x.scalar_type());
    TORCH_CHECK(x.device() == q.device(), "flash_attn_c: ", name, " must be on ", q.device(), " like q, got ",
                x.device());
    TORCH_CHECK(x.dim() == rank && x.size(0) == dim0, "flash_attn_c: ", name, " must be ", rank,
                "-D with ", dim0, " rows, got shape ", x.sizes());
    TORCH_CHECK(x.stride(-1) == 1 || x.size(-1) <= 1, "flash_attn_c: ", name,
                " must be contiguous in its last dimension");
    return x.data_ptr<int32_t>();
}

// 16-byte vector access (see fa_cuda.cpp's vector_ready): caches are never copied, so a cache
// that is not laid out that way is an error rather than a silent copy of the whole cache.
static void check_vector_layout(const at::Tensor &t, const char *name)
{
    TORCH_CHECK(t.size(-1) % 8 == 0, "flash_attn_c: ", name, ".shape[-1] must be a multiple of 8 on CUDA");
    TORCH_CHECK(vector_layout_ok(t), "flash_attn_c: ", name, " must be contiguous in its last dimension with strides that are "
                "multiples of 8 elements and a 16-byte aligned start, got strides ", t.strides());
}

// Batch (or block), row and head strides of a 4-D (b, s, h, d) tensor.
static void strides3(const at::Tensor &t, int64_t *batch, int64_t *row, int64_t *head)
{
    *batch = t.stride(0);
    *row = t.stride(1);
    *head = t.stride(2);
}

std::tuple<at::Tensor, at::Tensor> fwd_kvcache_cuda(
    const at::Tensor &q_in, const at::Tensor &k_cache, const at::Tensor &v_cache,
    const std::optional<at::Tensor> &seqused_k, const std::optional<at::Tensor> &leftpad_k,
    const std::optional<at::Tensor> &cache_batch_idx, const std::optional<at::Tensor> &block_table,
    const std::optional<at::Tensor> &cu_seqlens_q, const std::optional<at::Tensor> &cu_seqlens_k,
    int64_t max_seqlen_q, int64_t max_seqlen_k, double softmax_scale, int64_t window_left,
    int64_t window_right, double softcap, const std::optional<at::Tensor> &alibi_slopes, int64_t num_splits)
{
    c10::cuda::CUDAGuard guard(q_in.device());
    check_arch(q_in);
    // q is small: any layout is copied once into the kernels' 16-byte vector layout (flash-attn
    // takes any q whose last dim is contiguous); only the caches must arrive in it
    const at::Tensor q = vector_layout_ok(q_in) ? q_in : q_in.clone(at::MemoryFormat::Contiguous);
    fa_params p;
    std::memset(&p, 0, sizeof(p));
    TORCH_CHECK(q.scalar_type() == at::kHalf || q.scalar_type() == at::kBFloat16,
                "flash_attn_c: q must be float16 or bfloat16 on CUDA, got ", q.scalar_type());
    p.dtype = q.scalar_type() == at::kHalf ? FA_F16 : FA_BF16;
    for (const auto &[t, name] : {std::pair{&k_cache, "k_cache"}, std::pair{&v_cache, "v_cache"}}) {
        TORCH_CHECK(t->scalar_type() == q.scalar_type(), "flash_attn_c: ", name, " must have q's dtype ",
                    q.scalar_type(), ", got ", t->scalar_type());
        TORCH_CHECK(t->device() == q.device(), "flash_attn_c: ", name, " must be on ", q.device(), ", got ",
                    t->device());
    }
    const bool varlen = cu_seqlens_q.has_value(), paged = block_table.has_value();
    const bool packed = cu_seqlens_k.has_value() && !paged;
    TORCH_CHECK(!cu_seqlens_k.has_value() || varlen, "flash_attn_c: cu_seqlens_k needs cu_seqlens_q");
    TORCH_CHECK(q.dim() == (varlen ? 3 : 4), "flash_attn_c: q must be ", varlen ? 3 : 4, "-D, got shape ",
                q.sizes());
    TORCH_CHECK(k_cache.dim() == (packed ? 3 : 4), "flash_attn_c: k_cache must be ", packed ? 3 : 4,
                "-D, got shape ", k_cache.sizes());
    TORCH_CHECK(v_cache.sizes() == k_cache.sizes(), "flash_attn_c: v_cache must have the shape of k_cache ",
                k_cache.sizes(), ", got ", v_cache.sizes());
    const int64_t d = q.size(-1), h = q.size(-2), hk = k_cache.size(-2);
    TORCH_CHECK(k_cache.size(-1) == d, "flash_attn_c: k_cache head_dim must equal q's ", d);
    TORCH_CHECK(hk >= 1 && h % hk == 0, "flash_attn_c: q's heads (", h, ") must be a multiple of k_cache's (",
                hk, ")");
    check_vector_layout(k_cache, "k_cache");
    check_vector_layout(v_cache, "v_cache");
    fill_qkv(p, q, k_cache, v_cache);
    if (varlen) {
        const at::Tensor &cq = *cu_seqlens_q;
        TORCH_CHECK(cq.scalar_type() == at::kInt && cq.dim() == 1 && cq.numel() >= 1 && cq.is_contiguous() &&
                        cq.device() == q.device(),
                    "flash_attn_c: cu_seqlens_q must be a contiguous 1-D int32 tensor on ", q.device());
        p.batch = cq.numel() - 1;
        p.seqlen_q = max_seqlen_q;
        p.total_q = q.size(0);
        p.cu_seqlens_q = cq.data_ptr<int32_t>();
        if (cu_seqlens_k.has_value()) p.cu_seqlens_k = index_ptr(cu_seqlens_k, q, "cu_seqlens_k", p.batch + 1, 1);
    } else {
        p.batch = q.size(0);
        p.seqlen_q = q.size(1);
        p.total_q = p.batch * p.seqlen_q;
        p.q_batch_stride = q.stride(0);
    }
    TORCH_CHECK(p.seqlen_q >= 0 && max_seqlen_k >= 0, "flash_attn_c: max_seqlen_q/k must be >= 0");
    if (paged) {
        p.block_table = index_ptr(block_table, q, "block_table", p.batch, 2);
        p.block_table_batch_stride = block_table->stride(0);
        p.page_block_size = k_cache.size(1);
        p.seqlen_k = block_table->size(1) * k_cache.size(1);
        p.kv_cache_rows = k_cache.size(0);
        p.k_batch_stride = k_cache.stride(0);
        p.v_batch_stride = v_cache.stride(0);
        TORCH_CHECK(p.page_block_size >= 1, "flash_attn_c: page_block_size (k_cache.shape[1]) must be >= 1");
    } else if (packed) {
        p.seqlen_k = max_seqlen_k;
    } else {
        p.seqlen_k = k_cache.size(1);
        p.kv_cache_rows = k_cache.size(0);
        p.k_batch_stride = k_cache.stride(0);
        p.v_batch_stride = v_cache.stride(0);
        TORCH_CHECK(cache_batch_idx.has_value() || k_cache.size(0) >= p.batch, "flash_attn_c: k_cache has ",
                    k_cache.size(0), " rows but the batch is ", p.batch, " (pass cache_batch_idx)");
    }
    p.seqused_k = index_ptr(seqused_k, q, "seqused_k", p.batch, 1);
    p.leftpad_k = index_ptr(leftpad_k, q, "cache_leftpad", p.batch, 1);
    p.cache_batch_idx = index_ptr(cache_batch_idx, q, "cache_batch_idx", p.batch, 1);
    TORCH_CHECK(window_left >= -1 && window_right >= -1, "flash_attn_c: window_size values must be >= -1");
    TORCH_CHECK(softcap >= 0.0, "flash_attn_c: softcap must be >= 0, got ", softcap);
    /* float32 in the kernel: as make_problem (fa_glue.cpp) */
    TORCH_CHECK(softcap == 0.0 || (softcap >= FLT_MIN && softcap <= FLT_MAX / 2),
                "flash_attn_c: softcap must be 0 (off) or a normal float32 up to FLT_MAX / 2, got ", softcap);
    TORCH_CHECK(std::isfinite(softmax_scale) && std::fabs(softmax_scale) <= FLT_MAX / 2,
                "flash_attn_c: softmax_scale must be finite with |softmax_scale| <= FLT_MAX / 2, got ", softmax_scale);
    TORCH_CHECK(num_splits >= 0, "flash_attn_c: num_splits must be >= 0 (0 = heuristic), got ", num_splits);
    p.window_left = window_left;
    p.window_right = window_right;
    p.softcap = static_cast<float>(softcap);
    p.softmax_scale = static_cast<float>(softmax_scale);
    p.num_splits = static_cast<int>(std::min<int64_t>(num_splits, 1 << 20));
    if (alibi_slopes.has_value()) set_alibi_slopes(p, *alibi_slopes, h, q.device());
    at::Tensor out = at::empty(q.sizes(), q.options());
    at::Tensor lse = varlen ? at::empty({h, p.total_q}, q.options().dtype(at::kFloat))
                            : at::empty({p.batch, h, p.seqlen_q}, q.options().dtype(at::kFloat));
    if (!varlen) p.o_batch_stride = out.stride(0);
    p.o_row_stride = out.stride(-3);
    p.o_head_stride = out.stride(-2);
    p.o = out.data_ptr();
    p.lse = lse.data_ptr<float>();
    if (q.numel() == 0 || p.batch == 0 || p.seqlen_q == 0) {  // no attention row: 0 and -inf
        out.zero_();
        lse.fill_(-std::numeric_limits<float>::infinity());
        return {out, lse};
    }
    throw_on_error(fa_check_params(&p, 0), "KV-cache forward");
    const at::Tensor ws = attach_fwd_workspace(p, q);
    throw_on_error(fa_fwd_cuda(&p, at::cuda::getCurrentCUDAStream().stream()), "CUDA KV-cache forward");
    return {out, lse};
}

std::tuple<at::Tensor, at::Tensor> kvcache_append_cuda(
    const at::Tensor &k_cache, const at::Tensor &v_cache, const at::Tensor &k, const at::Tensor &v,
    const std::optional<at::Tensor> &cache_seqlens, int64_t cache_seqlen,
    const std::optional<at::Tensor> &cache_batch_idx, const std::optional<at::Tensor> &block_table,
    const std::optional<at::Tensor> &q_in, const std::optional<at::Tensor> &rotary_cos,
    const std::optional<at::Tensor> &rotary_sin, bool rotary_interleaved, bool q_positional)
{
    c10::cuda::CUDAGuard guard(k_cache.device());
    check_arch(k_cache);
    TORCH_CHECK(!(block_table.has_value() && cache_batch_idx.has_value()),
                "flash_attn_c: cache_batch_idx cannot be used with a paged cache (block_table)");
    TORCH_CHECK(k_cache.dim() == 4 && v_cache.sizes() == k_cache.sizes(),
                "flash_attn_c: k_cache / v_cache must be 4-D and of one shape");
    TORCH_CHECK(k.dim() == 4 && v.sizes() == k.sizes() && k.size(2) == k_cache.size(2) &&
                    k.size(3) == k_cache.size(3),
                "flash_attn_c: k / v must be (batch, seqlen_new, nheads_k, headdim) matching the cache, got ",
                k.sizes(), " and cache ", k_cache.sizes());
    for (const at::Tensor *t : {&v_cache, &k, &v})
        TORCH_CHECK(t->scalar_type() == k_cache.scalar_type() && t->device() == k_cache.device(),
                    "flash_attn_c: k, v and the caches must share dtype and device");
    TORCH_CHECK(k_cache.scalar_type() == at::kHalf || k_cache.scalar_type() == at::kBFloat16,
                "flash_attn_c: the KV cache must be float16 or bfloat16 on CUDA");
    TORCH_CHECK(rotary_cos.has_value() == rotary_sin.has_value(),
                "flash_attn_c: rotary_cos and rotary_sin must be given together");
    TORCH_CHECK(!q_in.has_value() || rotary_cos.has_value(), "flash_attn_c: q is only rotated (rotary_cos)");
    check_vector_layout(k_cache, "k_cache");
    check_vector_layout(v_cache, "v_cache");
    // the new tokens and q are small: copied into the 16-byte vector layout when they are not in it
    // k may not share memory with the caches: the kernel reads a key's rotary partner from
    // another 16-byte chunk than the one it writes (non-interleaved), so a k that is a view of
    // the slots being written would race; such a k is copied first
    const bool k_aliases = at::get_overlap_status(k, k_cache) != at::MemOverlapStatus::No ||
                           at::get_overlap_status(k, v_cache) != at::MemOverlapStatus::No;
    const at::Tensor kn = vector_layout_ok(k) && !k_aliases ? k : k.clone(at::MemoryFormat::Contiguous);
    const at::Tensor vn = vector_layout_ok(v) ? v : v.clone(at::MemoryFormat::Contiguous);
    fa_kvcache_append_params p;
    std::memset(&p, 0, sizeof(p));
    p.dtype = k_cache.scalar_type() == at::kHalf ? FA_F16 : FA_BF16;
    p.batch = k.size(0);
    p.seqlen_new = k.size(1);
    p.heads_k = k.size(2);
    p.head_dim = k.size(3);
    p.k_new = kn.data_ptr();
    p.v_new = vn.data_ptr();
    p.k_cache = k_cache.data_ptr();
    p.v_cache = v_cache.data_ptr();
    strides3(kn, &p.kn_batch_stride, &p.kn_row_stride, &p.kn_head_stride);
    strides3(vn, &p.vn_batch_stride, &p.vn_row_stride, &p.vn_head_stride);
    strides3(k_cache, &p.kc_batch_stride, &p.kc_row_stride, &p.kc_head_stride);
    strides3(v_cache, &p.vc_batch_stride, &p.vc_row_stride, &p.vc_head_stride);
    p.cache_rows = k_cache.size(0);
    p.capacity = k_cache.size(1);
    p.cache_seqlens = index_ptr(cache_seqlens, k, "cache_seqlens", p.batch, 1);
    p.cache_seqlen = cache_seqlen;
    p.cache_batch_idx = index_ptr(cache_batch_idx, k, "cache_batch_idx", p.batch, 1);
    if (block_table.has_value()) {
        p.block_table = index_ptr(block_table, k, "block_table", p.batch, 2);
        p.block_table_batch_stride = block_table->stride(0);
        p.page_block_size = k_cache.size(1);
        p.capacity = block_table->size(1) * k_cache.size(1);
    }
    at::Tensor cos, sin, q, q_out = at::empty({0}, k.options());
    if (rotary_cos.has_value()) {
        check_rotary_tables(*rotary_cos, *rotary_sin, k.device(), p.head_dim, "rotary_cos", "rotary_sin");
        // read in their own dtype when both share one of fp32 / fp16 / bf16; anything else (float64,
        // mixed) as fp32, which is how the rotary op reads every table (the same values)
        const at::ScalarType st = rotary_cos->scalar_type();
        const bool native = st == rotary_sin->scalar_type() && (st == at::kFloat || st == at::kHalf || st == at::kBFloat16);
        cos = (native ? *rotary_cos : rotary_cos->to(at::kFloat)).contiguous();
        sin = (native ? *rotary_sin : rotary_sin->to(at::kFloat)).contiguous();
        p.rotary_cos = cos.data_ptr();
        p.rotary_sin = sin.data_ptr();
        p.rotary_dtype = cos.scalar_type() == at::kFloat ? FA_F32 : cos.scalar_type() == at::kHalf ? FA_F16 : FA_BF16;
        p.seqlen_ro = cos.size(0);
        p.rotary_dim = 2 * cos.size(1);
        p.rotary_interleaved = rotary_interleaved ? 1 : 0;
        p.q_positional = q_positional ? 1 : 0;
    }
    if (q_in.has_value()) {
        TORCH_CHECK(q_in->dim() == 4 && q_in->size(0) == p.batch && q_in->size(3) == p.head_dim &&
                        q_in->scalar_type() == k.scalar_type() && q_in->device() == k.device(),
                    "flash_attn_c: q must be (batch, seqlen_q, nheads, headdim) like k, got ", q_in->sizes());
        q = vector_layout_ok(*q_in) ? *q_in : q_in->clone(at::MemoryFormat::Contiguous);
        q_out = at::empty(q.sizes(), q.options());
        p.q = q.data_ptr();
        p.q_out = q_out.data_ptr();
        strides3(q, &p.q_batch_stride, &p.q_row_stride, &p.q_head_stride);
        p.seqlen_q = q.size(1);
        p.heads = q.size(2);
    }
    at::Tensor seqused = at::empty({p.batch}, k.options().dtype(at::kInt));
    p.seqused_out = seqused.data_ptr<int32_t>();
    throw_on_error(fa_kvcache_append_cuda(&p, at::cuda::getCurrentCUDAStream().stream()), "KV-cache append");
    return {q_out, seqused};
}

}  // namespace fa
#endif

TORCH_LIBRARY_FRAGMENT(flash_attn_c, m)
{
    m.def("fwd_kvcache(Tensor q, Tensor k_cache, Tensor v_cache, Tensor? seqused_k, Tensor? leftpad_k, "
          "Tensor? cache_batch_idx, Tensor? block_table, Tensor? cu_seqlens_q, Tensor? cu_seqlens_k, "
          "SymInt max_seqlen_q, SymInt max_seqlen_k, float softmax_scale, int window_left, int window_right, "
          "float softcap, Tensor? alibi_slopes, int num_splits) -> (Tensor out, Tensor lse)");
    m.def("kvcache_append_(Tensor(a!) k_cache, Tensor(b!) v_cache, Tensor k, Tensor v, Tensor? cache_seqlens, "
          "int cache_seqlen, Tensor? cache_batch_idx, Tensor? block_table, Tensor? q, Tensor? rotary_cos, "
          "Tensor? rotary_sin, bool rotary_interleaved, bool q_positional) -> (Tensor q_rot, Tensor seqused)");
}

#ifdef FA_WITH_CUDA
TORCH_LIBRARY_IMPL(flash_attn_c, CUDA, m)
{
    m.impl("fwd_kvcache", TORCH_FN(fa::fwd_kvcache_cuda));
    m.impl("kvcache_append_", TORCH_FN(fa::kvcache_append_cuda));
}
#endif
