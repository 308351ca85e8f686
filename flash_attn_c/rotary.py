"""Rotary position embedding (RoPE) with flash-attn 2.8's names, signatures and semantics
(``flash_attn.layers.rotary``), computed by our fused C (CPU) and CUDA kernels, forward and backward.

    from flash_attn_c.rotary import apply_rotary_emb, RotaryEmbedding
    q = apply_rotary_emb(q, cos, sin)   # q (b, s, h, d), cos/sin (seqlen_ro, rotary_dim / 2)

Semantics (the kernels': fa_rotary_params in csrc/include/flash_attn_c.h):
    the first rotary_dim = 2 * cos.shape[1] dims of each head are rotated pair by pair, pairs
    (i, i + rotary_dim / 2) (GPT-NeoX) or (2i, 2i + 1) when interleaved (GPT-J):
        o0 = x0 * cos[p, i] - x1 * sin[p, i],   o1 = x0 * sin[p, i] + x1 * cos[p, i]
    in fp32 (cos / sin of any float dtype are read as fp32), stored in x's dtype; the dims past
    rotary_dim are copied bit for bit. Position p of row j of sequence b is j + seqlen_offsets[b]
    (or + seqlen_offsets when an int); a position outside [0, seqlen_ro) is left unrotated, like
    flash-attn past the end of its tables. The backward is the same kernel with sin negated.
    cos and sin get no gradient (as in flash-attn).
"""
import operator
from typing import Optional, Tuple, Union

import torch

from . import _ops
from .interface import _check_cu_seqlens_on_device, _op_input

ops = _ops.ops

Offsets = Union[int, torch.Tensor]


# --------------------------------------------------------------------------------------------
# autograd and fake kernels of the ops (schemas: csrc/torch/fa_rotary_op.cpp)
# --------------------------------------------------------------------------------------------


@torch.library.register_fake("flash_attn_c::rotary")
def _rotary_fake(x, cos, sin, seqlen_offsets, seqlen_offset, cu_seqlens, interleaved, conjugate):
    return x.new_empty(x.shape)


@torch.library.register_fake("flash_attn_c::rotary_")
def _rotary_inplace_fake(x, cos, sin, seqlen_offsets, seqlen_offset, cu_seqlens, interleaved,
                         conjugate):
    return None


def _grad_ready(g: torch.Tensor) -> torch.Tensor:
    """Autograd may hand a gradient with a non-unit last stride (e.g. expanded): the op needs 1."""
    return g if g.shape[-1] <= 1 or g.stride(-1) == 1 else g.contiguous()


def _rotary_setup_context(ctx, inputs, output) -> None:
    _x, cos, sin, offsets, offset, cu, interleaved, conjugate = inputs
    ctx.save_for_backward(cos, sin, offsets, cu)
    ctx.args = (offset, interleaved, conjugate)


def _rotary_backward(ctx, grad):
    cos, sin, offsets, cu = ctx.saved_tensors
    offset, interleaved, conjugate = ctx.args
    # A rotation's adjoint is its inverse: the same kernel with sin negated.
    dx = ops.rotary(_grad_ready(grad), cos, sin, offsets, offset, cu, interleaved, not conjugate)
    return dx, None, None, None, None, None, None, None


torch.library.register_autograd("flash_attn_c::rotary", _rotary_backward,
                                setup_context=_rotary_setup_context)


class _RotaryInplace(torch.autograd.Function):
    """In-place rotation of x that autograd sees (mark_dirty); backward = inverse rotation."""

    @staticmethod
    def forward(ctx, x, cos, sin, offsets, offset, cu, interleaved):
        ops.rotary_(x, cos, sin, offsets, offset, cu, interleaved, False)
        ctx.mark_dirty(x)
        ctx.save_for_backward(cos, sin, offsets, cu)
        ctx.args = (offset, interleaved)
        return x

    @staticmethod
    def backward(ctx, grad):
        cos, sin, offsets, cu = ctx.saved_tensors
        offset, interleaved = ctx.args
        dx = ops.rotary(_grad_ready(grad), cos, sin, offsets, offset, cu, interleaved, True)
        return dx, None, None, None, None, None, None


# --------------------------------------------------------------------------------------------
# the public functions
# --------------------------------------------------------------------------------------------


def _check_args(x, cos, sin, seqlen_offsets, cu_seqlens, max_seqlen) -> Tuple[Optional[torch.Tensor], int]:
    """flash-attn's preconditions, as errors that name the argument. Returns the op's
    (seqlen_offsets tensor or None, seqlen_offset int)."""
    for name, t in (("x", x), ("cos", cos), ("sin", sin)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if cu_seqlens is None:
        if x.dim() != 4:
            raise ValueError(f"x must be 4-D (batch, seqlen, nheads, headdim) without cu_seqlens, "
                             f"got shape {tuple(x.shape)}")
        seqlen = x.shape[1]
    else:
        if x.dim() != 3:
            raise ValueError(f"x must be 3-D (total_seqlen, nheads, headdim) with cu_seqlens, got "
                             f"shape {tuple(x.shape)}")
        if max_seqlen is None:
            raise ValueError("max_seqlen is required when cu_seqlens is given")
        seqlen = max_seqlen
    if cos.dim() != 2:
        raise ValueError(f"cos must be 2-D (seqlen_ro, rotary_dim / 2), got shape {tuple(cos.shape)}")
    if sin.shape != cos.shape:
        raise ValueError(f"sin must have the shape of cos {tuple(cos.shape)}, got {tuple(sin.shape)}")
    seqlen_ro, rotary_dim = cos.shape[0], 2 * cos.shape[1]
    if rotary_dim > x.shape[-1]:
        raise ValueError(f"rotary_dim = 2 * cos.shape[1] = {rotary_dim} must be <= headdim = "
                         f"x.shape[-1] = {x.shape[-1]}")
    if seqlen_ro < seqlen:
        raise ValueError(f"cos / sin have seqlen_ro = {seqlen_ro} rows, fewer than the sequence "
                         f"length {seqlen} ({'max_seqlen' if cu_seqlens is not None else 'x.shape[1]'})")
    if isinstance(cu_seqlens, torch.Tensor):
        # the table check above trusts max_seqlen: one below the longest sequence would let positions
        # past the tables through unrotated (the shared check; the rotary op takes no max_seqlen)
        _check_cu_seqlens_on_device(cu_seqlens, x.shape[0], seqlen, "cu_seqlens", "max_seqlen", cpu_too=True)
    if isinstance(seqlen_offsets, torch.Tensor):
        return seqlen_offsets, 0
    try:  # an int, or an integer such as numpy.int64 (flash-attn takes those)
        if isinstance(seqlen_offsets, bool):
            raise TypeError
        seqlen_offsets = operator.index(seqlen_offsets)
    except TypeError:
        raise TypeError(f"seqlen_offsets must be an int or an int tensor of shape (batch,), got "
                        f"{type(seqlen_offsets).__name__}") from None
    if seqlen_offsets < 0 or seqlen_offsets + seqlen > seqlen_ro:
        raise ValueError(f"seqlen_offsets = {seqlen_offsets} must be >= 0 and seqlen_offsets + "
                         f"seqlen ({seqlen}) <= seqlen_ro = cos.shape[0] = {seqlen_ro}")
    return None, int(seqlen_offsets)


def apply_rotary_emb(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                     interleaved: bool = False, inplace: bool = False,
                     seqlen_offsets: Offsets = 0, cu_seqlens: Optional[torch.Tensor] = None,
                     max_seqlen: Optional[int] = None) -> torch.Tensor:
    """Rotates the first rotary_dim dims of every head of x; differentiable w.r.t. x.

    x: (batch, seqlen, nheads, headdim), or (total_seqlen, nheads, headdim) with cu_seqlens
    (int32 (batch + 1,)) and max_seqlen (int); last dim contiguous; fp32/fp16/bf16.
    cos, sin: (seqlen_ro, rotary_dim / 2), rotary_dim <= headdim, any float dtype.
    seqlen_offsets: int, or int32/int64 (batch,): each sequence's first position.
    interleaved: rotate pairs (2i, 2i + 1) (GPT-J) instead of (i, i + rotary_dim / 2) (GPT-NeoX).
    inplace: write into x and return it. Returns the rotated tensor, shape of x.
    """
    offsets, offset = _check_args(x, cos, sin, seqlen_offsets, cu_seqlens, max_seqlen)
    interleaved = bool(interleaved)
    if not inplace:
        # flash-attn accepts a strided head_dim: copied once, like the attention functions' inputs
        return ops.rotary(_op_input(x, "x"), cos, sin, offsets, offset, cu_seqlens, interleaved, False)
    if torch.is_grad_enabled() and x.requires_grad:
        return _RotaryInplace.apply(x, cos, sin, offsets, offset, cu_seqlens, interleaved)
    ops.rotary_(x, cos, sin, offsets, offset, cu_seqlens, interleaved, False)
    return x


# flash-attn's older name of the same function.
apply_rotary_emb_func = apply_rotary_emb


def rotate_half(x: torch.Tensor, interleaved: bool = False) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) over halves of the last dim (or over (even, odd) pairs when
    interleaved). Plain torch, for reference code."""
    if not interleaved:
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((-x2, x1), dim=-1)
    x1, x2 = x[..., ::2], x[..., 1::2]
    return torch.stack((-x2, x1), dim=-1).flatten(-2)


def apply_rotary_emb_torch(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                           interleaved: bool = False) -> torch.Tensor:
    """The rotation in plain torch ops, in x's precision: x (batch, seqlen, nheads, headdim),
    cos/sin (seqlen, rotary_dim / 2) or (batch, seqlen, rotary_dim / 2). A reference, not fused."""
    ro = 2 * cos.shape[-1]
    if ro > x.shape[-1]:
        raise ValueError(f"rotary_dim = {ro} must be <= headdim = {x.shape[-1]}")
    if interleaved:
        c, s = cos.repeat_interleave(2, dim=-1), sin.repeat_interleave(2, dim=-1)
    else:
        c, s = torch.cat((cos, cos), dim=-1), torch.cat((sin, sin), dim=-1)
    c, s = c.unsqueeze(-2), s.unsqueeze(-2)  # broadcast over heads
    xr = x[..., :ro]
    return torch.cat((xr * c + rotate_half(xr, interleaved) * s, x[..., ro:]), dim=-1)


def _rotate_view_(x: torch.Tensor, cos, sin, interleaved: bool, seqlen_offsets: Offsets) -> None:
    """In-place rotation of a (batch, seqlen, heads, headdim) view (autograd-aware)."""
    apply_rotary_emb(x, cos, sin, interleaved=interleaved, inplace=True,
                     seqlen_offsets=seqlen_offsets)


def apply_rotary_emb_qkv_(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                          cos_k: Optional[torch.Tensor] = None, sin_k: Optional[torch.Tensor] = None,
                          interleaved: bool = False, seqlen_offsets: Offsets = 0,
                          num_heads_q: Optional[int] = None) -> torch.Tensor:
    """Rotates Q and K of a packed qkv in place and returns qkv; differentiable.

    qkv: (batch, seqlen, 3, nheads, headdim), or (batch, seqlen, num_heads_q + 2 * num_heads_k,
    headdim) with num_heads_q given (GQA/MQA). cos, sin: (seqlen_ro, rotary_dim / 2) for Q (and
    K unless cos_k / sin_k are given, e.g. XPos). V is untouched.
    """
    if not isinstance(qkv, torch.Tensor):
        raise TypeError(f"qkv must be a torch.Tensor, got {type(qkv).__name__}")
    if qkv.dim() == 5:
        if qkv.shape[2] != 3:
            raise ValueError(f"qkv must be (batch, seqlen, 3, nheads, headdim), got {tuple(qkv.shape)}")
        hq = hk = qkv.shape[3]
        q, k = qkv[:, :, 0], qkv[:, :, 1]
        qk = qkv[:, :, :2].flatten(2, 3) if qkv.is_contiguous() else None  # a view then
    elif qkv.dim() == 4:
        if num_heads_q is None:
            raise ValueError("num_heads_q is required for qkv of shape (batch, seqlen, "
                             "num_heads_q + 2 * num_heads_k, headdim)")
        hq = num_heads_q
        hk = (qkv.shape[2] - hq) // 2
        if hq <= 0 or hk <= 0 or qkv.shape[2] != hq + 2 * hk:
            raise ValueError(f"qkv.shape[2] = {qkv.shape[2]} is not num_heads_q ({num_heads_q}) + "
                             "2 * num_heads_k")
        q, k = qkv[:, :, :hq], qkv[:, :, hq:hq + hk]
        qk = qkv[:, :, :hq + hk]
    else:
        raise ValueError(f"qkv must be 5-D or 4-D, got shape {tuple(qkv.shape)}")
    if cos_k is None and sin_k is None and qk is not None:
        _rotate_view_(qk, cos, sin, interleaved, seqlen_offsets)  # Q and K in one launch
    else:
        _rotate_view_(q, cos, sin, interleaved, seqlen_offsets)
        _rotate_view_(k, cos if cos_k is None else cos_k, sin if sin_k is None else sin_k,
                      interleaved, seqlen_offsets)
    return qkv


def apply_rotary_emb_kv_(kv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                         interleaved: bool = False, seqlen_offsets: Offsets = 0) -> torch.Tensor:
    """Rotates K of kv (batch, seqlen, 2, nheads, headdim) in place and returns kv; differentiable."""
    if not isinstance(kv, torch.Tensor) or kv.dim() != 5 or kv.shape[2] != 2:
        raise ValueError("kv must be a (batch, seqlen, 2, nheads, headdim) tensor, got "
                         f"{tuple(kv.shape) if isinstance(kv, torch.Tensor) else type(kv).__name__}")
    _rotate_view_(kv[:, :, 0], cos, sin, interleaved, seqlen_offsets)
    return kv


class RotaryEmbedding(torch.nn.Module):
    """RoPE (Su et al., RoFormer) on packed qkv or (q, kv), in place, with cached cos / sin tables;
    scale_base enables XPos (Sun et al.): Q scaled by scale ** (pos / scale_base), K divided.

    flash-attn 2.8's signature; pos_idx_in_fp32 (keyword only) is accepted for code written for
    older flash-attn: True (the only 2.8 behaviour) builds positions in fp32, False in
    inv_freq's dtype.
    """

    def __init__(self, dim: int, base: float = 10000.0, interleaved: bool = False,
                 scale_base: Optional[float] = None, device=None, *, pos_idx_in_fp32: bool = True):
        super().__init__()
        if dim <= 0 or dim % 2 != 0:
            raise ValueError(f"dim must be a positive even number, got {dim}")
        self.dim = dim
        self.base = float(base)
        self.interleaved = interleaved
        self.scale_base = scale_base
        self.pos_idx_in_fp32 = pos_idx_in_fp32
        self.register_buffer("inv_freq", self._compute_inv_freq(device), persistent=False)
        scale = None
        if scale_base is not None:
            scale = (torch.arange(0, dim, 2, device=device, dtype=torch.float32) + 0.4 * dim) / (1.4 * dim)
        self.register_buffer("scale", scale, persistent=False)
        self._seq_len_cached = 0
        self._cos_cached = self._sin_cached = None
        self._cos_k_cached = self._sin_k_cached = None

    def _compute_inv_freq(self, device=None) -> torch.Tensor:
        """(dim / 2,) fp32: base ** (-2i / dim)."""
        exps = torch.arange(0, self.dim, 2, device=device, dtype=torch.float32) / self.dim
        return 1.0 / (self.base ** exps)

    def _update_cos_sin_cache(self, seqlen: int, device=None, dtype=None) -> None:
        """Rebuilds the (seqlen, dim / 2) tables when longer ones, another device or dtype, or
        (in training) non-inference tensors are needed. Computed in fp32, stored in dtype."""
        c = self._cos_cached
        if not (seqlen > self._seq_len_cached or c is None or c.device != device or c.dtype != dtype
                or (self.training and c.is_inference())):
            return
        self._seq_len_cached = seqlen
        inv_freq = self.inv_freq
        if inv_freq.dtype != torch.float32:  # e.g. the module was cast to bf16: recompute in fp32
            inv_freq = self._compute_inv_freq(device)
        t_dtype = torch.float32 if self.pos_idx_in_fp32 else self.inv_freq.dtype
        t = torch.arange(seqlen, device=device, dtype=t_dtype).to(torch.float32)
        freqs = torch.outer(t, inv_freq.to(device))
        if self.scale is None:
            self._cos_cached = torch.cos(freqs).to(dtype)
            self._sin_cached = torch.sin(freqs).to(dtype)
            return
        power = (torch.arange(seqlen, dtype=self.scale.dtype, device=self.scale.device)
                 - seqlen // 2) / self.scale_base
        scale = (self.scale.to(device=power.device) ** power.unsqueeze(1)).to(freqs.device)
        self._cos_cached = (torch.cos(freqs) * scale).to(dtype)
        self._sin_cached = (torch.sin(freqs) * scale).to(dtype)
        self._cos_k_cached = (torch.cos(freqs) / scale).to(dtype)
        self._sin_k_cached = (torch.sin(freqs) / scale).to(dtype)

    def forward(self, qkv: torch.Tensor, kv: Optional[torch.Tensor] = None,
                seqlen_offset: Offsets = 0, max_seqlen: Optional[int] = None,
                num_heads_q: Optional[int] = None
                ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        """In place. kv None: qkv (batch, seqlen, 3, nheads, headdim) or (batch, seqlen,
        num_heads_q + 2 * num_heads_k, headdim) -> qkv. Else qkv is q (batch, seqlen, nheads,
        headdim) and kv (batch, seqlen, 2, nheads_k, headdim) -> (q, kv). seqlen_offset: int or
        (batch,) tensor; with a tensor pass max_seqlen so the tables cover every position."""
        seqlen = qkv.shape[1]
        if max_seqlen is not None:
            self._update_cos_sin_cache(max_seqlen, device=qkv.device, dtype=qkv.dtype)
        elif isinstance(seqlen_offset, int):
            self._update_cos_sin_cache(seqlen + seqlen_offset, device=qkv.device, dtype=qkv.dtype)
        elif self._cos_cached is None:
            raise ValueError("max_seqlen is required with a tensor seqlen_offset (the cos / sin "
                             "tables must cover every position)")
        xpos = self.scale is not None
        if kv is None:
            return apply_rotary_emb_qkv_(
                qkv, self._cos_cached, self._sin_cached,
                self._cos_k_cached if xpos else None, self._sin_k_cached if xpos else None,
                interleaved=self.interleaved, seqlen_offsets=seqlen_offset,
                num_heads_q=num_heads_q)
        q = apply_rotary_emb(qkv, self._cos_cached, self._sin_cached, interleaved=self.interleaved,
                             inplace=True, seqlen_offsets=seqlen_offset)
        kv = apply_rotary_emb_kv_(kv, self._cos_k_cached if xpos else self._cos_cached,
                                  self._sin_k_cached if xpos else self._sin_cached,
                                  interleaved=self.interleaved, seqlen_offsets=seqlen_offset)
        return q, kv


__all__ = [
    "apply_rotary_emb",
    "apply_rotary_emb_func",
    "apply_rotary_emb_qkv_",
    "apply_rotary_emb_kv_",
    "apply_rotary_emb_torch",
    "rotate_half",
    "RotaryEmbedding",
]
