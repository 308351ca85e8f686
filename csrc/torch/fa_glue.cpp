// fa_glue.cpp - tensor validation, fa_params filling and output allocation shared by CPU and CUDA.
#include "fa_glue.h"

#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>

namespace fa {

static fa_dtype to_fa_dtype(at::ScalarType t, bool cuda)
{
    switch (t) {
    case at::kHalf: return FA_F16;
    case at::kBFloat16: return FA_BF16;
    case at::kFloat:
        TORCH_CHECK(!cuda, "flash_attn_c: q must be float16 or bfloat16 on CUDA, got float32 "
                           "(float32 is supported on CPU only)");
        return FA_F32;
    default:
        TORCH_CHECK(false, "flash_attn_c: q must be float16, bfloat16",
                    cuda ? "" : " or float32", ", got ", t);
    }
    return FA_F32;
}

static void check_last_dim_contiguous(const at::Tensor &t, const char *name)
{
    // An empty tensor is never read (its strides may be anything, e.g. 0 for an expanded
    // gradient of an empty output).
    TORCH_CHECK(t.numel() == 0 || t.size(-1) <= 1 || t.stride(-1) == 1, "flash_attn_c: ", name,
                " must have a contiguous last dimension (stride(-1) == 1), got stride ",
                t.stride(-1));
}

static void check_cu_seqlens_tensor(const at::Tensor &cu, const at::Tensor &q, const char *name)
{
    TORCH_CHECK(cu.scalar_type() == at::kInt, "flash_attn_c: ", name, " must be int32, got ",
                cu.scalar_type());
    TORCH_CHECK(cu.dim() == 1, "flash_attn_c: ", name, " must be 1-D (batch + 1,), got ", cu.dim(),
                "-D");
    TORCH_CHECK(cu.numel() >= 1, "flash_attn_c: ", name, " must have at least one entry");
    TORCH_CHECK(cu.is_contiguous(), "flash_attn_c: ", name, " must be contiguous");
    TORCH_CHECK(cu.device() == q.device(), "flash_attn_c: ", name, " must be on ", q.device(),
                " like q, got ", cu.device());
}

void fill_qkv(fa_params &p, const at::Tensor &q, const at::Tensor &k, const at::Tensor &v)
{
    p.heads = q.size(-2);
    p.heads_k = k.size(-2);
    p.head_dim = q.size(-1);
    p.q_row_stride = q.stride(-3);
    p.q_head_stride = q.stride(-2);
    p.k_row_stride = k.stride(-3);
    p.k_head_stride = k.stride(-2);
    p.v_row_stride = v.stride(-3);
    p.v_head_stride = v.stride(-2);
    p.q = q.data_ptr();
    p.k = k.data_ptr();
    p.v = v.data_ptr();
}

at::Tensor attach_fwd_workspace(fa_params &p, const at::Tensor &like)
{
    const size_t bytes = fa_fwd_cuda_workspace_bytes(&p);
    if (bytes == 0) return at::Tensor();
    at::Tensor ws = at::empty({static_cast<int64_t>(bytes)}, like.options().dtype(at::kByte));
    p.workspace = ws.data_ptr();
    p.workspace_bytes = bytes;
    return ws;
}

void set_alibi_slopes(fa_params &p, const at::Tensor &a, int64_t h, const at::Device &device)
{
    TORCH_CHECK(a.scalar_type() == at::kFloat, "flash_attn_c: alibi_slopes must be float32, got ", a.scalar_type());
    TORCH_CHECK(a.device() == device, "flash_attn_c: alibi_slopes must be on ", device, ", got ", a.device());
    const bool per_head = a.dim() == 1 && a.size(0) == h;
    const bool per_batch = a.dim() == 2 && a.size(0) == p.batch && a.size(1) == h;
    TORCH_CHECK(per_head || per_batch, "flash_attn_c: alibi_slopes must have shape (", h, ",) or (", p.batch, ", ",
                h, "), got ", a.sizes());
    TORCH_CHECK(a.stride(-1) == 1, "flash_attn_c: alibi_slopes must be contiguous in its last dimension");
    /* stride 0 (one row expanded over the batch) reads as (h,); rows that overlap otherwise have
     * no layout in fa_params (alibi_batch_stride 0 or >= h) */
    TORCH_CHECK(!per_batch || a.size(0) == 1 || a.stride(0) == 0 || a.stride(0) >= h,
                "flash_attn_c: alibi_slopes of shape (", p.batch, ", ", h, ") must not have overlapping "
                "rows (stride(0) = ", a.stride(0), " < ", h, "); pass alibi_slopes.contiguous()");
    p.alibi_slopes = a.data_ptr<float>();
    p.alibi_batch_stride = per_batch ? a.stride(0) : 0;
}

Problem make_problem(const at::Tensor &q, const at::Tensor &k, const at::Tensor &v,
                     const std::optional<at::Tensor> &cu_seqlens_q,
                     const std::optional<at::Tensor> &cu_seqlens_k, int64_t max_seqlen_q,
                     int64_t max_seqlen_k, double dropout_p, double softmax_scale,
                     int64_t window_left, int64_t window_right, double softcap,
                     const std::optional<at::Tensor> &alibi_slopes, bool cuda)
{
    Problem pr;
    fa_params &p = pr.params;
    std::memset(&p, 0, sizeof(p));

    p.dtype = to_fa_dtype(q.scalar_type(), cuda);  // first: a bool/int q is q's fault, not k's
    TORCH_CHECK(k.scalar_type() == q.scalar_type(), "flash_attn_c: k must have the dtype of q (",
                q.scalar_type(), "), got ", k.scalar_type());
    TORCH_CHECK(v.scalar_type() == q.scalar_type(), "flash_attn_c: v must have the dtype of q (",
                q.scalar_type(), "), got ", v.scalar_type());
    TORCH_CHECK(k.device() == q.device(), "flash_attn_c: k must be on ", q.device(),
                " like q, got ", k.device());
    TORCH_CHECK(v.device() == q.device(), "flash_attn_c: v must be on ", q.device(),
                " like q, got ", v.device());

    TORCH_CHECK(cu_seqlens_q.has_value() == cu_seqlens_k.has_value(),
                "flash_attn_c: cu_seqlens_q and cu_seqlens_k must both be given or both be None");
    pr.varlen = cu_seqlens_q.has_value();
    const int rank = pr.varlen ? 3 : 4;
    const char *layout = pr.varlen ? "(total, heads, head_dim)" : "(batch, seqlen, heads, head_dim)";
    TORCH_CHECK(q.dim() == rank, "flash_attn_c: q must be ", rank, "-D ", layout, ", got ",
                q.dim(), "-D");
    TORCH_CHECK(k.dim() == rank, "flash_attn_c: k must be ", rank, "-D ", layout, ", got ",
                k.dim(), "-D");
    // k is compared with q first, then v with k, so each message names the tensor that is wrong.
    const int64_t d = q.size(-1);
    TORCH_CHECK(d >= 1 && d <= 256, "flash_attn_c: head_dim (q.shape[-1]) must be in [1, 256], got ",
                d);
    TORCH_CHECK(k.size(-1) == d, "flash_attn_c: k.shape[-1] must equal q's head_dim ", d, ", got ",
                k.size(-1));
    if (!pr.varlen)
        TORCH_CHECK(k.size(0) == q.size(0), "flash_attn_c: k must have the batch size of q (",
                    q.size(0), "), got ", k.size(0));
    const int64_t h = q.size(-2), hk = k.size(-2);
    TORCH_CHECK(h >= 1, "flash_attn_c: q must have at least one head (q.shape[-2] >= 1), got ",
                h);
    TORCH_CHECK(hk >= 1, "flash_attn_c: k must have at least one head (k.shape[-2] >= 1), got ",
                hk);
    TORCH_CHECK(v.sizes() == k.sizes(), "flash_attn_c: v must have the shape of k ", k.sizes(),
                ", got ", v.sizes());
    TORCH_CHECK(h % hk == 0, "flash_attn_c: the number of query heads (", h,
                ") must be a multiple of the number of key/value heads (", hk, ")");
    check_last_dim_contiguous(q, "q");
    check_last_dim_contiguous(k, "k");
    check_last_dim_contiguous(v, "v");

    fill_qkv(p, q, k, v);
    if (pr.varlen) {
        const at::Tensor &cq = *cu_seqlens_q, &ck = *cu_seqlens_k;
        check_cu_seqlens_tensor(cq, q, "cu_seqlens_q");
        check_cu_seqlens_tensor(ck, q, "cu_seqlens_k");
        TORCH_CHECK(cq.numel() == ck.numel(), "flash_attn_c: cu_seqlens_q and cu_seqlens_k must "
                    "have the same length (batch + 1), got ", cq.numel(), " and ", ck.numel());
        TORCH_CHECK(max_seqlen_q >= 0, "flash_attn_c: max_seqlen_q must be >= 0, got ", max_seqlen_q);
        TORCH_CHECK(max_seqlen_k >= 0, "flash_attn_c: max_seqlen_k must be >= 0, got ", max_seqlen_k);
        p.batch = cq.numel() - 1;
        p.seqlen_q = max_seqlen_q;
        p.seqlen_k = max_seqlen_k;
        p.total_q = q.size(0);
        p.total_k = k.size(0);
        p.cu_seqlens_q = cq.data_ptr<int32_t>();
        p.cu_seqlens_k = ck.data_ptr<int32_t>();
    } else {
        p.batch = q.size(0);
        p.seqlen_q = q.size(1);
        p.seqlen_k = k.size(1);
        p.total_q = p.batch * p.seqlen_q;
        p.total_k = p.batch * p.seqlen_k;
        p.q_batch_stride = q.stride(0);
        p.k_batch_stride = k.stride(0);
        p.v_batch_stride = v.stride(0);
    }

    TORCH_CHECK(window_left >= -1, "flash_attn_c: window_size[0] (left) must be >= -1, got ",
                window_left);
    TORCH_CHECK(window_right >= -1, "flash_attn_c: window_size[1] (right) must be >= -1, got ",
                window_right);
    TORCH_CHECK(dropout_p >= 0.0 && dropout_p < 1.0,
                "flash_attn_c: dropout_p must be in [0, 1), got ", dropout_p);
    TORCH_CHECK(softcap >= 0.0, "flash_attn_c: softcap must be >= 0, got ", softcap);
    /* both become float32: inf / past its range gives NaN, a softcap that rounds to 0 would switch
     * softcap off, a subnormal one flushes to 0 on the GPU */
    TORCH_CHECK(softcap == 0.0 || (softcap >= FLT_MIN && softcap <= FLT_MAX / 2),
                "flash_attn_c: softcap must be 0 (off) or a normal float32 up to FLT_MAX / 2, got ", softcap);
    TORCH_CHECK(std::isfinite(softmax_scale) && std::fabs(softmax_scale) <= FLT_MAX / 2,
                "flash_attn_c: softmax_scale must be finite with |softmax_scale| <= FLT_MAX / 2, got ", softmax_scale);
    p.window_left = window_left;
    p.window_right = window_right;
    p.dropout_p = static_cast<float>(dropout_p);
    p.softcap = static_cast<float>(softcap);
    p.softmax_scale = static_cast<float>(softmax_scale);

    if (alibi_slopes.has_value()) set_alibi_slopes(p, *alibi_slopes, h, q.device());

    pr.empty = q.numel() == 0 || k.numel() == 0 || p.batch == 0 || p.seqlen_q == 0;
    return pr;
}

void check_cu_seqlens_host(const at::Tensor &cu, int64_t rows, int64_t max_seqlen, const char *name,
                           const char *rows_name, const char *max_name)
{
    const int32_t *c = cu.data_ptr<int32_t>();
    const int64_t n = cu.numel();
    TORCH_CHECK(c[0] >= 0, "flash_attn_c: ", name, "[0] must be >= 0, got ", c[0]);
    for (int64_t i = 1; i < n; ++i) {
        TORCH_CHECK(c[i] >= c[i - 1], "flash_attn_c: ", name, " must be non-decreasing, but ", name,
                    "[", i, "] = ", c[i], " < ", name, "[", i - 1, "] = ", c[i - 1]);
        TORCH_CHECK(c[i] - c[i - 1] <= max_seqlen, "flash_attn_c: sequence ", i - 1, " has length ",
                    c[i] - c[i - 1], " (from ", name, ") but ", max_name, " is ", max_seqlen);
    }
    TORCH_CHECK(c[n - 1] <= rows, "flash_attn_c: ", name, "[-1] = ", c[n - 1], " exceeds the ",
                rows, " rows of ", rows_name);
}

FwdOutputs alloc_fwd_outputs(Problem &pr, const at::Tensor &q, bool return_probs)
{
    fa_params &p = pr.params;
    FwdOutputs o;
    // Fresh contiguous output even when q is a strided view (packed qkv): the kernel writes every row.
    o.out = at::empty(q.sizes(), q.options());
    o.lse = pr.varlen ? at::empty({p.heads, p.total_q}, q.options().dtype(at::kFloat))
                      : at::empty({p.batch, p.heads, p.seqlen_q}, q.options().dtype(at::kFloat));
    o.probs = return_probs ? at::empty({p.batch, p.heads, p.seqlen_q, p.seqlen_k}, q.options())
                           : at::empty({0}, q.options());
    o.rng_state = at::zeros({2}, q.options().dtype(at::kLong));
    if (!pr.varlen) p.o_batch_stride = o.out.stride(0);
    p.o_row_stride = o.out.stride(-3);
    p.o_head_stride = o.out.stride(-2);
    p.o = o.out.data_ptr();
    p.lse = o.lse.data_ptr<float>();
    p.p = return_probs && o.probs.numel() > 0 ? o.probs.data_ptr() : nullptr;
    p.rng_state = o.rng_state.data_ptr<int64_t>();
    return o;
}

BwdOutputs alloc_bwd_outputs(Problem &pr, const at::Tensor &dout, const at::Tensor &q,
                             const at::Tensor &k, const at::Tensor &v, const at::Tensor &out,
                             const at::Tensor &lse, const std::optional<at::Tensor> &dlse)
{
    fa_params &p = pr.params;
    TORCH_CHECK(dout.sizes() == q.sizes(), "flash_attn_c: dout must have the shape of q ",
                q.sizes(), ", got ", dout.sizes());
    TORCH_CHECK(out.sizes() == q.sizes(), "flash_attn_c: out must have the shape of q ", q.sizes(),
                ", got ", out.sizes());
    TORCH_CHECK(dout.scalar_type() == q.scalar_type() && out.scalar_type() == q.scalar_type(),
                "flash_attn_c: dout and out must have the dtype of q");
    check_last_dim_contiguous(dout, "dout");
    check_last_dim_contiguous(out, "out");
    const std::vector<int64_t> lse_shape =
        pr.varlen ? std::vector<int64_t>{p.heads, p.total_q}
                  : std::vector<int64_t>{p.batch, p.heads, p.seqlen_q};
    TORCH_CHECK(lse.sizes() == at::IntArrayRef(lse_shape) && lse.scalar_type() == at::kFloat &&
                    lse.is_contiguous(),
                "flash_attn_c: softmax_lse must be a contiguous float32 tensor of shape ",
                at::IntArrayRef(lse_shape), ", got ", lse.scalar_type(), " ", lse.sizes());
    if (dlse.has_value()) {
        TORCH_CHECK(dlse->sizes() == at::IntArrayRef(lse_shape) && dlse->scalar_type() == at::kFloat &&
                        dlse->is_contiguous() && dlse->device() == lse.device(),
                    "flash_attn_c: dlse (the gradient of softmax_lse) must be a contiguous float32 tensor "
                    "of shape ", at::IntArrayRef(lse_shape), " on ", lse.device(), ", got ",
                    dlse->scalar_type(), " ", dlse->sizes(), " on ", dlse->device());
        p.dlse = dlse->data_ptr<float>();
    }

    BwdOutputs g;
    g.dq = at::empty(q.sizes(), q.options());
    g.dk = at::empty(k.sizes(), k.options());
    g.dv = at::empty(v.sizes(), v.options());
    p.o = out.data_ptr();
    p.lse = lse.data_ptr<float>();
    p.dout = dout.data_ptr();
    p.dq = g.dq.data_ptr();
    p.dk = g.dk.data_ptr();
    p.dv = g.dv.data_ptr();
    if (!pr.varlen) {
        p.o_batch_stride = out.stride(0);
        p.do_batch_stride = dout.stride(0);
        p.dq_batch_stride = g.dq.stride(0);
        p.dk_batch_stride = g.dk.stride(0);
        p.dv_batch_stride = g.dv.stride(0);
    }
    p.o_row_stride = out.stride(-3);
    p.o_head_stride = out.stride(-2);
    p.do_row_stride = dout.stride(-3);
    p.do_head_stride = dout.stride(-2);
    p.dq_row_stride = g.dq.stride(-3);
    p.dq_head_stride = g.dq.stride(-2);
    p.dk_row_stride = g.dk.stride(-3);
    p.dk_head_stride = g.dk.stride(-2);
    p.dv_row_stride = g.dv.stride(-3);
    p.dv_head_stride = g.dv.stride(-2);
    return g;
}

void finish_empty_fwd(FwdOutputs &o)
{
    o.out.zero_();
    o.lse.fill_(-std::numeric_limits<float>::infinity());
    o.probs.zero_();
}

void throw_on_error(fa_status st, const char *what)
{
    TORCH_CHECK(st == FA_OK, "flash_attn_c: ", what, " failed: ", fa_status_string(st));
}

void check_rotary_tables(const at::Tensor &cos, const at::Tensor &sin, const at::Device &device,
                         int64_t head_dim, const char *cos_name, const char *sin_name)
{
    for (const auto &[t, name] : {std::pair{&cos, cos_name}, std::pair{&sin, sin_name}})
        TORCH_CHECK(t->device() == device, "flash_attn_c: ", name, " must be on ", device, ", got ", t->device());
    TORCH_CHECK(cos.dim() == 2, "flash_attn_c: ", cos_name, " must be 2-D (seqlen_ro, rotary_dim / 2), got shape ",
                cos.sizes());
    TORCH_CHECK(sin.sizes() == cos.sizes(), "flash_attn_c: ", sin_name, " must have the shape of ", cos_name, " ",
                cos.sizes(), ", got ", sin.sizes());
    TORCH_CHECK(at::isFloatingType(cos.scalar_type()) && at::isFloatingType(sin.scalar_type()), "flash_attn_c: ",
                cos_name, " and ", sin_name, " must be floating point, got ", cos.scalar_type(), " and ",
                sin.scalar_type());
    TORCH_CHECK(2 * cos.size(1) <= head_dim, "flash_attn_c: rotary_dim = 2 * ", cos_name, ".shape[1] = ",
                2 * cos.size(1), " exceeds headdim ", head_dim);
}

void read_rng_state_cpu(const at::Tensor &rng_state, uint64_t *seed, uint64_t *offset)
{
    TORCH_CHECK(rng_state.scalar_type() == at::kLong && rng_state.numel() == 2,
                "flash_attn_c: rng_state must be an int64 tensor with 2 elements {seed, offset}");
    at::Tensor r = rng_state.cpu().contiguous();
    *seed = static_cast<uint64_t>(r.data_ptr<int64_t>()[0]);
    *offset = static_cast<uint64_t>(r.data_ptr<int64_t>()[1]);
}

}  // namespace fa
