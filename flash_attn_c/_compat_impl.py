"""What flash_attn_c.compat serves under flash-attn's private names: the plain forward / backward
calls of flash_attn.flash_attn_interface (flash-attn 2.8 signatures and returns, used by
ring-attention and TransformerEngine-style code that runs its own autograd), and the bert_padding
helpers our flash_attn_c.bert_padding does not have.

These are NOT differentiable: the forward returns (out, softmax_lse, S_dmask, rng_state) and the
backward writes dq / dk / dv into the tensors it is given and returns softmax_d, exactly like
flash-attn's. Shapes (d = head dim, h % hk == 0):
    dense:  q (b, sq, h, d), k/v (b, sk, hk, d); out like q; softmax_lse fp32 (b, h, sq)
    varlen: q (total_q, h, d), k/v (total_k, hk, d); softmax_lse fp32 (h, total_q)
    softmax_d: fp32, shaped like softmax_lse: (1 - dropout_p) * rowsum(dout * out), the dP_sum
            flash-attn's backward computes (flash-attn pads it: (b, h, round128(sq)) dense,
            (h, total_q + 128 * b) varlen; the entries past ours are its padding).
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from . import _ops
from ._dropout import fixed_rng_state
from .bert_padding import index_first_axis
from .interface import _check_cu_seqlens_on_device, _op_input, pad_head_dim_for_cuda

ops = _ops.ops

FwdReturn = Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def _unsupported(**kwargs) -> None:
    for name, value in kwargs.items():
        if value is not None:
            raise NotImplementedError(f"{name} is not supported by flash_attn_c (flash_attn_c.compat "
                                      f"serves flash-attn's private functions without it); pass "
                                      f"{name}=None")


def _window_right(causal: bool, window_size_right: int) -> int:
    return 0 if causal else int(window_size_right)


def _forward(q, k, v, cu_q, cu_k, max_sq, max_sk, dropout_p, softmax_scale, causal, wl, wr,
             softcap, alibi_slopes, return_softmax) -> FwdReturn:
    # flash-attn's maybe_contiguous: a copy only where the last dim is strided
    q, k, v = (_op_input(t, n).detach() for t, n in ((q, "q"), (k, "k"), (v, "v")))
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}")
    if cu_q is not None:
        _check_cu_seqlens_on_device(cu_q, q.shape[0], max_sq, "cu_seqlens_q", "max_seqlen_q")
        _check_cu_seqlens_on_device(cu_k, k.shape[0], max_sk, "cu_seqlens_k", "max_seqlen_k")
    d = q.shape[-1]
    scale = d ** -0.5 if softmax_scale is None else float(softmax_scale)
    rng_in = fixed_rng_state(q.device) if dropout_p > 0.0 else None
    (q, k, v), pad = pad_head_dim_for_cuda(q, k, v)
    out, lse, probs, rng_state = ops.fwd(
        q, k, v, cu_q, cu_k, int(max_sq), int(max_sk), float(dropout_p), scale, int(wl),
        _window_right(causal, wr), float(softcap), alibi_slopes, bool(return_softmax), rng_in, False)
    if pad:
        out = out[..., :d]
    return out, lse, probs, rng_state


def _flash_attn_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float,
                        softmax_scale: float, causal: bool, window_size_left: int,
                        window_size_right: int, softcap: float,
                        alibi_slopes: Optional[torch.Tensor], return_softmax: bool) -> FwdReturn:
    """Dense forward, no autograd. Returns (out (b, sq, h, d), softmax_lse fp32 (b, h, sq),
    S_dmask ((b, h, sq, sk) when return_softmax, else an empty tensor), rng_state int64 (2,)
    {seed, offset}: pass it to _flash_attn_backward to replay the dropout mask)."""
    return _forward(q, k, v, None, None, 0, 0, dropout_p, softmax_scale, causal, window_size_left,
                    window_size_right, softcap, alibi_slopes, return_softmax)


def _flash_attn_varlen_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                               cu_seqlens_q: torch.Tensor, cu_seqlens_k: torch.Tensor,
                               max_seqlen_q: int, max_seqlen_k: int, dropout_p: float,
                               softmax_scale: float, causal: bool, window_size_left: int = -1,
                               window_size_right: int = -1, softcap: float = 0.0,
                               alibi_slopes: Optional[torch.Tensor] = None,
                               return_softmax: bool = False,
                               block_table: Optional[torch.Tensor] = None,
                               leftpad_k: Optional[torch.Tensor] = None,
                               seqused_k: Optional[torch.Tensor] = None,
                               zero_tensors: bool = False) -> FwdReturn:
    """Varlen forward, no autograd: q (total_q, h, d), k/v (total_k, hk, d), cu_seqlens int32
    (b + 1,). Returns (out (total_q, h, d), softmax_lse fp32 (h, total_q), S_dmask
    ((b, h, max_seqlen_q, max_seqlen_k) or empty), rng_state (2,)). zero_tensors: rows of q past
    cu_seqlens_q[-1] get out = 0 and lse = -inf (one host read of cu_seqlens_q[-1]).
    block_table, leftpad_k and seqused_k are not supported (NotImplementedError)."""
    _unsupported(block_table=block_table, leftpad_k=leftpad_k, seqused_k=seqused_k)
    if cu_seqlens_q is None or cu_seqlens_k is None:
        raise ValueError("cu_seqlens_q and cu_seqlens_k are required (int32 tensors of shape (b + 1,))")
    res = _forward(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p,
                   softmax_scale, causal, window_size_left, window_size_right, softcap,
                   alibi_slopes, return_softmax)
    if zero_tensors:
        out, lse = res[0], res[1]
        n = int(cu_seqlens_q[-1])
        out[n:].zero_()
        lse[:, n:] = float("-inf")
    return res


def _backward(dout, q, k, v, out, softmax_lse, dq, dk, dv, cu_q, cu_k, max_sq, max_sk, dropout_p,
              softmax_scale, causal, wl, wr, softcap, alibi_slopes, deterministic, rng_state
              ) -> torch.Tensor:
    dout, q, k, v, out = (_ops.unbroadcast(_op_input(t, n).detach())
                          for t, n in ((dout, "dout"), (q, "q"), (k, "k"), (v, "v"), (out, "out")))
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}")
    if dropout_p > 0.0 and rng_state is None:
        raise ValueError("rng_state is required when dropout_p > 0: pass the rng_state the forward "
                         "returned, so the backward replays the same dropout mask")
    for name, given, like in (("dq", dq, q), ("dk", dk, k), ("dv", dv, v)):
        if given is not None and given.shape != like.shape:
            raise ValueError(f"{name} must have shape {tuple(like.shape)}, got {tuple(given.shape)}")
    if rng_state is None:
        rng_state = torch.zeros(2, dtype=torch.int64, device=q.device)  # read only with dropout
    d = q.shape[-1]
    scale = d ** -0.5 if softmax_scale is None else float(softmax_scale)
    (qp, kp, vp), pad = pad_head_dim_for_cuda(q, k, v)
    doutp, outp = (F.pad(dout, (0, qp.shape[-1] - d)), F.pad(out, (0, qp.shape[-1] - d))) if pad else (dout, out)
    gq, gk, gv = ops.bwd(doutp, qp, kp, vp, outp, softmax_lse.detach(), cu_q, cu_k, int(max_sq),
                         int(max_sk), float(dropout_p), scale, int(wl), _window_right(causal, wr),
                         float(softcap), alibi_slopes, bool(deterministic), rng_state)
    for given, got in ((dq, gq), (dk, gk), (dv, gv)):
        if given is not None:
            given.copy_(got[..., :d] if pad else got)
    # D = (1 - p) rowsum(dO * O) per (row, head), laid out like softmax_lse.
    dsum = (dout.float() * out.float()).sum(-1) * (1.0 - float(dropout_p))
    return dsum.transpose(-1, -2).contiguous() if cu_q is None else dsum.t().contiguous()


def _flash_attn_backward(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                         out: torch.Tensor, softmax_lse: torch.Tensor, dq: Optional[torch.Tensor],
                         dk: Optional[torch.Tensor], dv: Optional[torch.Tensor], dropout_p: float,
                         softmax_scale: float, causal: bool, window_size_left: int,
                         window_size_right: int, softcap: float,
                         alibi_slopes: Optional[torch.Tensor], deterministic: bool,
                         rng_state: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Dense backward, no autograd: writes the gradients into dq (like q), dk, dv (like k, v)
    when given (None: computed and dropped, as in flash-attn) and returns softmax_d fp32
    (b, h, sq)."""
    return _backward(dout, q, k, v, out, softmax_lse, dq, dk, dv, None, None, 0, 0, dropout_p,
                     softmax_scale, causal, window_size_left, window_size_right, softcap,
                     alibi_slopes, deterministic, rng_state)


def _flash_attn_varlen_backward(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor,
                                v: torch.Tensor, out: torch.Tensor, softmax_lse: torch.Tensor,
                                dq: Optional[torch.Tensor], dk: Optional[torch.Tensor],
                                dv: Optional[torch.Tensor], cu_seqlens_q: torch.Tensor,
                                cu_seqlens_k: torch.Tensor, max_seqlen_q: int, max_seqlen_k: int,
                                dropout_p: float, softmax_scale: float, causal: bool,
                                window_size_left: int, window_size_right: int, softcap: float,
                                alibi_slopes: Optional[torch.Tensor], deterministic: bool,
                                rng_state: Optional[torch.Tensor] = None,
                                zero_tensors: bool = False) -> torch.Tensor:
    """Varlen backward, no autograd: writes dq (total_q, h, d), dk, dv (total_k, hk, d) when given
    and returns softmax_d fp32 (h, total_q). zero_tensors is accepted (our backward writes every
    gradient row it owns)."""
    if cu_seqlens_q is None or cu_seqlens_k is None:
        raise ValueError("cu_seqlens_q and cu_seqlens_k are required (int32 tensors of shape (b + 1,))")
    return _backward(dout, q, k, v, out, softmax_lse, dq, dk, dv, cu_seqlens_q, cu_seqlens_k,
                     max_seqlen_q, max_seqlen_k, dropout_p, softmax_scale, causal,
                     window_size_left, window_size_right, softcap, alibi_slopes, deterministic,
                     rng_state)


# ---- bert_padding extras --------------------------------------------------------------------


class _IndexFirstAxisResidual(torch.autograd.Function):
    """(x[indices], x.detach()); the backward adds the residual's gradient and scatters the
    output's gradient into it."""

    @staticmethod
    def forward(ctx, x, indices):
        ctx.save_for_backward(indices)
        return x[indices], x.detach()

    @staticmethod
    def backward(ctx, grad_out, grad_residual):
        (indices,) = ctx.saved_tensors
        grad = grad_residual.clone()
        grad.index_add_(0, indices, grad_out)
        return grad, None


def index_first_axis_residual(x: torch.Tensor, indices: torch.Tensor
                              ) -> Tuple[torch.Tensor, torch.Tensor]:
    """x (n, ...), indices int64 (m,) -> (x[indices] (m, ...), x detached (n, ...))."""
    return _IndexFirstAxisResidual.apply(x, indices)


def unpad_input_for_concatenated_sequences(hidden_states: torch.Tensor,
                                           attention_mask_in_length: torch.Tensor
                                           ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Packs batch rows that each hold several concatenated samples.

    hidden_states (b, s, ...); attention_mask_in_length int (b, s): row b's nonzero entries are
    the lengths of the samples packed at the start of that row, in order (zeros after).
    Returns (x_unpad (total, ...), indices int64 (total,) into the flattened (b*s) rows,
    cu_seqlens int32 (samples + 1,), max_seqlen int), one varlen sequence per sample.
    """
    lens2d = attention_mask_in_length
    s = lens2d.shape[-1]
    used = lens2d.sum(dim=-1)  # tokens at the start of each row
    keep = torch.arange(s, device=lens2d.device).unsqueeze(0) < used.unsqueeze(1)
    sample_lens = lens2d.flatten()[lens2d.flatten() != 0]
    indices = torch.nonzero(keep.flatten(), as_tuple=False).flatten()
    max_seqlen = int(sample_lens.max().item()) if sample_lens.numel() else 0
    cu = F.pad(torch.cumsum(sample_lens, dim=0, dtype=torch.int32), (1, 0))
    flat = hidden_states.reshape(-1, *hidden_states.shape[2:])
    return index_first_axis(flat, indices), indices, cu, max_seqlen


def _function_class(name: str, fn, params: str) -> type:
    """A stand-in for flash-attn's torch.autograd.Function `name` behind `fn`, for code that calls
    `name.apply(...)` directly (flash_attn_interface.FlashAttnFunc and the like): apply takes the
    positional arguments `params` (flash-attn 2.8's order) plus, optionally, the is_grad_enabled
    flag flash-attn >= 2.6 appends (ignored: autograd follows torch's grad mode through fn).
    Any other count is a TypeError, not a silent shift of arguments (older flash-attn releases had
    no softcap). Only .apply is served; it is not a torch.autograd.Function subclass."""
    n = len(params.split(","))

    def apply(*args):
        if len(args) not in (n, n + 1):
            raise TypeError(f"{name}.apply takes ({params}[, is_grad_enabled]) as in flash-attn 2.8: "
                            f"{n} or {n + 1} positional arguments, got {len(args)}")
        return fn(*args[:n])

    return type(name, (), {"apply": staticmethod(apply), "__doc__": f"{name}.apply({params}) -> "
                           f"{fn.__module__}.{fn.__name__}(...) (flash_attn_c.compat stand-in)"})
