"""Autograd and fake (meta) kernels for the C++ ops torch.ops.flash_attn_c.{fwd, bwd, dropout_mask}.

The schemas and the CPU/CUDA kernels are registered in csrc/torch/fa_ops.cpp; this file adds what
torch.compile and autograd need, so the public functions are plain calls of the op.
"""
from typing import Optional, Tuple, Union

import torch

from . import _C  # noqa: F401  (importing registers the ops)

ops = torch.ops.flash_attn_c


# max_seqlen_q/k may be SymInts under torch.compile: the fake kernels use them only as sizes (no
# int(), no branching), so one compiled graph serves every value.
@torch.library.register_fake("flash_attn_c::fwd")
def _fwd_fake(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p,
              softmax_scale, window_left, window_right, softcap, alibi_slopes, return_probs,
              rng_state, deterministic=False):
    h = q.shape[-2]
    if cu_seqlens_q is not None:
        b, sq, sk = cu_seqlens_q.shape[0] - 1, max_seqlen_q, max_seqlen_k
        lse = q.new_empty((h, q.shape[0]), dtype=torch.float32)
    else:
        b, sq, sk = q.shape[0], q.shape[1], k.shape[1]
        lse = q.new_empty((b, h, sq), dtype=torch.float32)
    probs = q.new_empty((b, h, sq, sk)) if return_probs else q.new_empty((0,))
    return q.new_empty(q.shape), lse, probs, q.new_empty((2,), dtype=torch.int64)


@torch.library.register_fake("flash_attn_c::bwd")
def _bwd_fake(dout, q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
              dropout_p, softmax_scale, window_left, window_right, softcap, alibi_slopes,
              deterministic, rng_state, dlse=None):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


@torch.library.register_fake("flash_attn_c::dropout_mask")
def _dropout_mask_fake(batch, heads, seqlen_q, seqlen_k, dropout_p, seed, offset, device):
    return torch.empty((batch, heads, seqlen_q, seqlen_k), dtype=torch.bool, device=device)


@torch.library.register_fake("flash_attn_c::fwd_kvcache")
def _fwd_kvcache_fake(q, k_cache, v_cache, seqused_k, leftpad_k, cache_batch_idx, block_table,
                      cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale,
                      window_left, window_right, softcap, alibi_slopes, num_splits):
    h = q.shape[-2]
    if cu_seqlens_q is not None:
        lse = q.new_empty((h, q.shape[0]), dtype=torch.float32)
    else:
        lse = q.new_empty((q.shape[0], h, q.shape[1]), dtype=torch.float32)
    return q.new_empty(q.shape), lse


@torch.library.register_fake("flash_attn_c::kvcache_append_")
def _kvcache_append_fake(k_cache, v_cache, k, v, cache_seqlens, cache_seqlen, cache_batch_idx,
                         block_table, q, rotary_cos, rotary_sin, rotary_interleaved, q_positional):
    q_rot = k.new_empty((0,)) if q is None else q.new_empty(q.shape)
    return q_rot, k.new_empty((k.shape[0],), dtype=torch.int32)


def _fwd_setup_context(ctx, inputs, output) -> None:
    (q, k, v, cu_q, cu_k, max_sq, max_sk, dropout_p, scale, wl, wr, softcap, alibi, _return_probs,
     _rng_in, *rest) = inputs
    out, lse, probs, rng_state = output
    ctx.save_for_backward(q, k, v, out, lse, cu_q, cu_k, alibi, rng_state)
    # Gradients that do not flow reach the backward as None, not as zero tensors (an unused lse
    # costs no zeros pass); probs (return_attn_probs' S_dmask: P with the dropped entries negated,
    # for tests) has no gradient: marked so, its requires_grad is False instead of a silent zero.
    ctx.set_materialize_grads(False)
    ctx.mark_non_differentiable(probs)
    ctx.args = (max_sq, max_sk, dropout_p, scale, wl, wr, softcap, bool(rest[0]) if rest else False)


DOUBLE_BACKWARD_MESSAGE = (
    "flash_attn_c: double backward (gradients of gradients, e.g. torch.autograd.grad(..., "
    "create_graph=True) followed by a second backward, or gradgradcheck) through flash_attn_c "
    "attention is not supported; compute that part with a differentiable attention such as "
    "torch.nn.functional.scaled_dot_product_attention")


class _BwdWithoutDoubleBackward(torch.autograd.Function):
    """ops.bwd as an autograd node, used only when a backward runs with create_graph=True: the
    gradients it returns are then differentiable, and differentiating them raises instead of
    silently treating ops.bwd as a constant (which gives wrong second-order gradients)."""

    @staticmethod
    def forward(ctx, *args):  # the arguments of ops.bwd
        return ops.bwd(*args)

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError(DOUBLE_BACKWARD_MESSAGE)


def is_broadcast(t: torch.Tensor) -> bool:
    """Whether t is broadcast along a dimension: stride 0 where the extent is > 1 (an expanded
    tensor, several logical elements in one place)."""
    return any(st == 0 and n > 1 for n, st in zip(t.shape, t.stride()))


def unbroadcast(t: torch.Tensor) -> torch.Tensor:
    """t, or a dense copy when t is a CUDA tensor broadcast along a dimension (stride 0 where the
    extent is > 1, e.g. k.expand(b, -1, -1, -1) or a dout from out.sum()). The Hopper backward
    reads q, k, v, out and dout through TMA, whose strides must be positive: a broadcast view
    would send the call to a slower kernel and, with deterministic=True, to a dQ summed in
    another order, so its gradients would differ in the last bits from those of the same values
    in a dense tensor. The copy costs one pass over the view's elements (O(s d) per head against
    the backward's O(s^2 d))."""
    if t.is_cuda and is_broadcast(t):
        return t.contiguous()
    return t


def _fwd_backward(ctx, dout, dlse, _dprobs, _drng):
    """dq, dk, dv from dout (the gradient of out) and dlse (of lse: d lse_i / d s_ij = P_ij, which
    the kernels add as D_i - dlse_i); either may be None when that output got no gradient."""
    q, k, v, out, lse, cu_q, cu_k, alibi, rng_state = ctx.saved_tensors
    if dout is None and dlse is None:
        return (None,) * 16
    if dout is None:
        dout = torch.zeros_like(out)  # only lse reached the loss
    dout, q, k, v, out = (unbroadcast(t) for t in (dout, q, k, v, out))
    if dlse is not None:
        dlse = dlse.contiguous()  # e.g. expanded from .sum(): the kernels read it like lse
    max_sq, max_sk, dropout_p, scale, wl, wr, softcap, deterministic = ctx.args
    args = (dout, q, k, v, out, lse, cu_q, cu_k, max_sq, max_sk, dropout_p, scale, wl, wr,
            softcap, alibi, deterministic, rng_state, dlse)
    # Grad mode is on inside a backward only with create_graph=True; the common first-order
    # backward calls the op directly, with no extra node.
    if torch.is_grad_enabled():
        dq, dk, dv = _BwdWithoutDoubleBackward.apply(*args)
    else:
        dq, dk, dv = ops.bwd(*args)
    return (dq, dk, dv) + (None,) * 13


torch.library.register_autograd("flash_attn_c::fwd", _fwd_backward, setup_context=_fwd_setup_context)


def fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens_q: Optional[torch.Tensor],
        cu_seqlens_k: Optional[torch.Tensor], max_seqlen_q: Union[int, torch.SymInt],
        max_seqlen_k: Union[int, torch.SymInt],
        dropout_p: float, softmax_scale: float, window_left: int, window_right: int,
        softcap: float, alibi_slopes: Optional[torch.Tensor], return_probs: bool,
        rng_state: Optional[torch.Tensor], deterministic: bool
        ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Differentiable forward op: returns (out, lse, probs, rng_state).

    A call with nothing to differentiate (grad mode off, or no q/k/v that requires grad) in eager
    mode dispatches below the autograd layer: the registered Python autograd kernel would only
    find that out and redispatch, about 6 us of host time per call (measured on the CPU with tiny
    shapes: 15.2 -> 8.5 us for the op), which is what bounds small decode steps."""
    args = (q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p,
            softmax_scale, window_left, window_right, softcap, alibi_slopes, return_probs,
            rng_state, deterministic)
    if _BELOW_AUTOGRAD is not None and not _needs_grad(q, k, v) and not torch.compiler.is_compiling():
        with _BELOW_AUTOGRAD():
            return ops.fwd.default(*args)
    return ops.fwd(*args)


# torch's guard that skips the Autograd dispatch keys (private; absent -> the plain call above).
_BELOW_AUTOGRAD = getattr(torch._C, "_AutoDispatchBelowAutograd", None)


def _needs_grad(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    """Whether autograd must record this call (alibi_slopes get no gradient)."""
    return torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
