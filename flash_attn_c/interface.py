"""The flash-attn 2.8 compatible functions: same names, parameter order, defaults and returns.

Shapes (d = head dim <= 256, h % hk == 0):
    dense:  q (b, sq, h, d), k/v (b, sk, hk, d) -> out (b, sq, h, d), lse (b, h, sq)
    varlen: q (total_q, h, d), k/v (total_k, hk, d), cu_seqlens_* int32 (b + 1,)
            -> out (total_q, h, d), lse (h, total_q)
    return_attn_probs=True: (out, softmax_lse, S_dmask) with S_dmask (b, h, sq, sk) in q's dtype:
            the softmax probabilities (pre-dropout), negated where dropout dropped them, 0 where
            masked. Computed in a slow extra pass: for tests and debugging.
Causal and windows are aligned to the bottom-right corner of the (sq, sk) score matrix. Rows that
see no key give out = 0 and lse = -inf.
Inputs may have any strides: only a tensor whose last dimension is strided is copied (once, here).
Bad arguments raise ValueError / TypeError / RuntimeError naming the argument. Double backward
raises (see _ops.DOUBLE_BACKWARD_MESSAGE).
"""
import math
import numbers
import operator
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from . import _ops
from ._dropout import fixed_rng_state

WindowSize = Union[Tuple[int, int], Sequence[int], torch.Tensor]


def _check_tensor(x: object, name: str) -> torch.Tensor:
    """x itself when it is a tensor (any layout), else a TypeError naming the argument."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def _op_input(x: object, name: str) -> torch.Tensor:
    """A tensor the op can read: the C API takes any strides except in the last dimension, so x is
    copied (differentiable) only when its last dimension is strided; a view such as a (b, h, s, d)
    tensor transposed to (b, s, h, d) goes through without a copy. The copy names its layout:
    x.contiguous() returns an empty tensor as it is (torch calls every empty tensor contiguous),
    strides and all."""
    x = _check_tensor(x, name)
    if x.dim() >= 1 and x.shape[-1] > 1 and x.stride(-1) != 1:
        return x.clone(memory_format=torch.contiguous_format)
    return x


def _alibi_input(x: object, b: int, h: int) -> torch.Tensor:
    """alibi_slopes as the op reads them, checked here first so a bad call raises in Python on every
    device (before any cache is written): float32 (h,) or (b, h), else ValueError naming it; a copy
    when a (b, h) view's rows overlap (0 < stride(0) < h, e.g. an as_strided view), since the
    kernels take a row stride of 0 (one row for every sequence) or >= h, and the copy holds the
    values torch shows for the view."""
    a = _op_input(x, "alibi_slopes")
    if a.dtype != torch.float32 or tuple(a.shape) not in ((h,), (b, h)):
        raise ValueError(f"alibi_slopes must be float32 of shape ({h},) or ({b}, {h}), got "
                         f"{a.dtype} {tuple(a.shape)}")
    if a.dim() == 2 and b > 1 and 0 < a.stride(0) < h:
        return a.contiguous()
    return a


def _check_rank(x: torch.Tensor, name: str, rank: int, layout: str) -> None:
    if x.dim() != rank:
        raise ValueError(f"{name} must be {rank}-D {layout}, got shape {tuple(x.shape)}")


def _vector_ready(t: torch.Tensor) -> bool:
    """16-byte vector access without a copy: last dim contiguous, other strides multiples of 8
    elements, a 16-byte aligned start (how the CUDA kernels read caches they must not copy).
    Under torch.compile the start address is not known while tracing: the layout decides, and
    the op checks the address when it runs (a misaligned cache is an error naming it)."""
    aligned = torch.compiler.is_compiling() or t.data_ptr() % 16 == 0
    return t.stride(-1) == 1 and aligned and all(
        n <= 1 or st % 8 == 0 for n, st in zip(t.shape[:-1], t.stride()[:-1]))


def _check_like_q(t: torch.Tensor, name: str, q: torch.Tensor, layout: str) -> None:
    """t is a 4-D tensor `layout` on q's device with q's dtype (the K/V caches of the KV-cache and
    paged paths), else an error naming t."""
    if t.dim() != 4:
        raise ValueError(f"{name} must be 4-D {layout}, got shape {tuple(t.shape)}")
    if t.device != q.device:
        raise ValueError(f"{name} must be on {q.device} like q, got {t.device}")
    if t.dtype != q.dtype:
        raise TypeError(f"{name} must have q's dtype {q.dtype}, got {t.dtype}")


def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, varlen: bool) -> None:
    """The op's dtype / shape agreement checks on q, k, v (ranks already checked), made here first
    with the op's messages and its (and flash-attn's) RuntimeError: a check failing inside the C++ op
    ended the process on the lent GPU machine (run 87, README limitations)."""
    if q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise RuntimeError(f"flash_attn_c: q must be float16, bfloat16 or float32, got {q.dtype}")
    for name, t in (("k", k), ("v", v)):
        if t.dtype != q.dtype:
            raise RuntimeError(f"flash_attn_c: {name} must have the dtype of q ({q.dtype}), got {t.dtype}")
    if k.shape[-1] != q.shape[-1]:
        raise RuntimeError(f"flash_attn_c: k.shape[-1] must equal q's head_dim {q.shape[-1]}, got {k.shape[-1]}")
    if not varlen and k.shape[0] != q.shape[0]:
        raise RuntimeError(f"flash_attn_c: k must have the batch size of q ({q.shape[0]}), got {k.shape[0]}")
    for name, t in (("q", q), ("k", k)):
        if t.shape[-2] < 1:
            raise RuntimeError(f"flash_attn_c: {name} must have at least one head ({name}.shape[-2] >= 1), "
                               f"got {t.shape[-2]}")
    if v.shape != k.shape:
        raise RuntimeError(f"flash_attn_c: v must have the shape of k {tuple(k.shape)}, got {tuple(v.shape)}")
    if q.shape[-2] % k.shape[-2] != 0:
        raise RuntimeError(f"flash_attn_c: the number of query heads ({q.shape[-2]}) must be a multiple of "
                           f"the number of key/value heads ({k.shape[-2]})")


def _check_head_dim(d: int, name: str = "q") -> None:
    """Checked before softmax_scale = d ** -0.5 is formed (d = 0 would divide by zero)."""
    if not 1 <= d <= 256:
        raise ValueError(f"head_dim ({name}.shape[-1]) must be in [1, 256], got {d}")


def _window(window_size: WindowSize, causal: bool) -> Tuple[int, int]:
    if type(window_size) is tuple and len(window_size) == 2 and type(window_size[0]) is int \
            and type(window_size[1]) is int and window_size[0] >= -1 and window_size[1] >= -1:
        return window_size[0], (0 if causal else window_size[1])  # the common call, checked fast
    if isinstance(window_size, torch.Tensor):
        window_size = window_size.tolist()
    try:
        left, right = (operator.index(w) for w in window_size)
    except (TypeError, ValueError):
        raise TypeError("window_size must be a pair (left, right) of ints (tuple, list or a "
                        f"2-element integer tensor), got {window_size!r}") from None
    if left < -1 or right < -1:
        raise ValueError(f"window_size values must be >= -1 (-1 = unbounded), got ({left}, {right})")
    return left, (0 if causal else right)


def _real(x: object, name: str) -> float:
    """float(x) for a real number (int, float, numpy scalar, 0-d tensor), else a TypeError
    naming x."""
    if type(x) is float or type(x) is int:  # the common call, before the slower ABC check
        return float(x)
    if isinstance(x, numbers.Real) or isinstance(x, torch.Tensor) and x.dim() == 0:
        return float(x)
    raise TypeError(f"{name} must be a real number, got {type(x).__name__} {x!r}")


_SCALAR_MAX = 3.4028234663852886e38 / 2  # half the largest float32: the kernels multiply by log2(e)
_SOFTCAP_MIN = 1.1754943508222875e-38  # the smallest normal float32


def _check_scalars(dropout_p: float, softcap: float) -> Tuple[float, float]:
    dropout_p, softcap = _real(dropout_p, "dropout_p"), _real(softcap, "softcap")
    if not 0.0 <= dropout_p < 1.0:  # also rejects NaN
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}")
    if not softcap >= 0.0:
        raise ValueError(f"softcap must be >= 0 (0 = off), got {softcap}")
    # the kernels take it as a float32 and multiply it by log2(e): inf or past half its range would
    # give NaN, a value that rounds to 0 would switch softcap off, a subnormal one flushes to 0 on
    # the GPU
    if softcap != 0.0 and not _SOFTCAP_MIN <= softcap <= _SCALAR_MAX:
        raise ValueError(f"softcap must be 0 (off) or a normal float32 in [{_SOFTCAP_MIN:.3g}, {_SCALAR_MAX:.3g}], "
                         f"got {softcap}")
    return dropout_p, softcap


def _softmax_scale(softmax_scale: Optional[float], d: int) -> float:
    """softmax_scale, or d ** -0.5 when None; any finite real (flash-attn accepts negative ones)."""
    if softmax_scale is None:
        return d ** -0.5
    scale = _real(softmax_scale, "softmax_scale")
    if not math.isfinite(scale) or abs(scale) > _SCALAR_MAX:  # a float32, times log2(e) in the kernels
        raise ValueError(f"softmax_scale must be finite as a float32 (|scale| <= {_SCALAR_MAX:.3g}), got {scale}")
    return scale


def _max_seqlen(val: object, name: str) -> Union[int, torch.SymInt]:
    """A max_seqlen argument: a Python int (or numpy integer) >= 0. Under torch.compile it may be a
    SymInt: it is passed on untouched, with no guard on its value (the op checks it when it runs),
    so one graph serves every length."""
    if isinstance(val, torch.Tensor):
        if (val.numel() == 1 and not val.is_floating_point() and not val.is_complex()
                and not torch.compiler.is_compiling()):
            val = int(val)  # e.g. position_ids.max() + 1: flash-attn accepts it (one host sync)
        else:
            raise TypeError(f"{name} must be a Python int (a one-element integer tensor in eager "
                            f"mode), got a tensor of shape {tuple(val.shape)} and dtype {val.dtype}")
    if isinstance(val, (int, torch.SymInt)):
        n = val
    else:
        try:
            n = operator.index(val)
        except TypeError:
            raise TypeError(f"{name} must be a Python int, got {type(val).__name__}") from None
    if not torch.compiler.is_compiling() and not 0 <= n < 2**31:
        raise ValueError(f"{name} must be in [0, 2**31) (the kernels index rows in int32), got {n}")
    return n


def _check_cu_seqlens_on_device(cu: torch.Tensor, rows: int, max_seqlen: int, name: str,
                                max_name: str, cpu_too: bool = False) -> None:
    """CUDA cu_seqlens are validated in eager mode with one small copy to the host; the CPU op
    validates its own (cpu_too: here as well, for an op that does not take max_seqlen, the rotary
    one). Skipped while compiling or capturing a CUDA graph (no host syncs there)."""
    if not (cu.is_cuda or cpu_too) or cu.dtype != torch.int32 or cu.dim() != 1:
        return  # the op reports dtype / rank / device problems with the argument's name
    if torch.compiler.is_compiling() or (cu.is_cuda and torch.cuda.is_current_stream_capturing()):
        return
    c = cu.cpu()
    lens = c[1:] - c[:-1]
    if c.numel() and int(c[0]) < 0:
        raise ValueError(f"{name}[0] must be >= 0, got {int(c[0])}")
    if lens.numel() and int(lens.min()) < 0:
        raise ValueError(f"{name} must be non-decreasing, got {c.tolist()}")
    if lens.numel() and int(lens.max()) > max_seqlen:
        raise ValueError(f"{max_name}={max_seqlen} is smaller than the longest sequence in {name} "
                         f"({int(lens.max())})")
    if c.numel() and int(c[-1]) > rows:
        raise ValueError(f"{name}[-1] = {int(c[-1])} exceeds the {rows} rows of the input")


def _attention(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p,
               softmax_scale, causal, window_size, softcap, alibi_slopes, deterministic,
               return_attn_probs):
    out, lse, probs = attention_with_lse(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                                         max_seqlen_k, dropout_p, softmax_scale, causal,
                                         window_size, softcap, alibi_slopes, deterministic,
                                         return_attn_probs)
    return (out, lse, probs) if return_attn_probs else out


def attention_with_lse(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p,
                       softmax_scale, causal, window_size, softcap, alibi_slopes, deterministic,
                       return_attn_probs=False
                       ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The checked, differentiable call behind flash_attn_func / flash_attn_varlen_func (dense
    when cu_seqlens_q is None). Always returns (out, softmax_lse, S_dmask); S_dmask is an empty
    tensor unless return_attn_probs. Shapes: see the module docstring."""
    varlen = cu_seqlens_q is not None
    rank, layout = (3, "(total, nheads, headdim)") if varlen else \
        (4, "(batch, seqlen, nheads, headdim)")
    q, k, v = _op_input(q, "q"), _op_input(k, "k"), _op_input(v, "v")
    for name, t in (("q", q), ("k", k), ("v", v)):
        _check_rank(t, name, rank, layout)
    _check_head_dim(q.shape[-1])
    _check_qkv(q, k, v, varlen)
    if varlen:
        cu_seqlens_q = _op_input(cu_seqlens_q, "cu_seqlens_q")
        cu_seqlens_k = _op_input(cu_seqlens_k, "cu_seqlens_k")
        max_seqlen_q = _max_seqlen(max_seqlen_q, "max_seqlen_q")
        max_seqlen_k = _max_seqlen(max_seqlen_k, "max_seqlen_k")
    for name, t in (("k", k), ("v", v), ("alibi_slopes", alibi_slopes),
                    ("cu_seqlens_q", cu_seqlens_q), ("cu_seqlens_k", cu_seqlens_k)):
        if isinstance(t, torch.Tensor) and t.device != q.device:
            raise ValueError(f"{name} must be on {q.device} like q, got {t.device}")
    dropout_p, softcap = _check_scalars(dropout_p, softcap)
    left, right = _window(window_size, causal)
    if varlen:
        _check_cu_seqlens_on_device(cu_seqlens_q, q.shape[0], max_seqlen_q, "cu_seqlens_q",
                                    "max_seqlen_q")
        _check_cu_seqlens_on_device(cu_seqlens_k, k.shape[0], max_seqlen_k, "cu_seqlens_k",
                                    "max_seqlen_k")
    if alibi_slopes is not None:
        alibi_slopes = _alibi_input(alibi_slopes, cu_seqlens_q.shape[0] - 1 if varlen else q.shape[0],
                                    q.shape[-2])
    d = q.shape[-1]
    softmax_scale = _softmax_scale(softmax_scale, d)
    rng_state = fixed_rng_state(q.device) if dropout_p > 0.0 else None
    (q, k, v), pad = pad_head_dim_for_cuda(q, k, v)
    out, lse, probs, _ = _ops.fwd(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                                  dropout_p, softmax_scale, left, right, softcap, alibi_slopes,
                                  bool(return_attn_probs), rng_state, bool(deterministic))
    if pad:
        out = out[..., :d]
    return out, lse, probs


def pad_head_dim_for_cuda(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
                          ) -> Tuple[Tuple[torch.Tensor, torch.Tensor, torch.Tensor], bool]:
    """CUDA kernels load 16-byte vectors: zero-pad the head dim d of q (..., d), k, v (..., d) to
    a multiple of 8 (scores and the first d output columns are unchanged). Returns the tensors and
    whether they were padded (then slice the output back with out[..., :d]). Shapes that do not
    agree, or d > 256, are left alone for the op's own error."""
    d = q.shape[-1]
    if q.is_cuda and d % 8 != 0 and d <= 256 and k.shape[-1] == d and v.shape[-1] == d:
        extra = 8 - d % 8
        return (F.pad(q, (0, extra)), F.pad(k, (0, extra)), F.pad(v, (0, extra))), True
    return (q, k, v), False


def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                    softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Exact attention on dense batches.

    q: (b, sq, h, d); k, v: (b, sk, hk, d) with h % hk == 0 (GQA/MQA); fp16/bf16 (CUDA) or
    fp32/fp16/bf16 (CPU). alibi_slopes: fp32 (h,) or (b, h). window_size: (left, right), -1 =
    unbounded; causal sets right = 0. Returns out (b, sq, h, d), or (out, softmax_lse (b, h, sq),
    S_dmask (b, h, sq, sk)) when return_attn_probs.
    """
    return _attention(q, k, v, None, None, 0, 0, dropout_p, softmax_scale, causal, window_size,
                      softcap, alibi_slopes, deterministic, return_attn_probs)


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                           dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                           softcap=0.0, alibi_slopes=None, deterministic=False,
                           return_attn_probs=False, block_table=None):
    """Exact attention on packed variable-length sequences.

    q: (total_q, h, d); k, v: (total_k, hk, d); cu_seqlens_q/k: int32 (b + 1,) prefix sums of the
    sequence lengths (length 0 allowed); max_seqlen_q/k: ints >= every length. Masks use each
    sequence's own lengths. Returns out (total_q, h, d), or (out, softmax_lse (h, total_q),
    S_dmask (b, h, max_seqlen_q, max_seqlen_k)). Under torch.compile max_seqlen_q/k stay symbolic
    (one graph serves every packed batch). block_table int32 (b, max_blocks_per_seq): k/v are
    then paged caches (num_blocks, page_block_size, hk, d), any page size >= 1, and sequence i's
    key p is k[block_table[i, p // page_block_size], p % page_block_size] (flash_attn_c.paged).
    """
    if cu_seqlens_q is None or cu_seqlens_k is None:
        raise ValueError("cu_seqlens_q and cu_seqlens_k are required (int32 tensors of shape (b + 1,))")
    if block_table is not None:  # paged KV cache: see flash_attn_c/paged.py
        from .paged import paged_varlen_attention  # local import: paged imports this module
        return paged_varlen_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                                      max_seqlen_k, dropout_p, softmax_scale, causal, window_size,
                                      softcap, alibi_slopes, deterministic, return_attn_probs,
                                      block_table=block_table)
    return _attention(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p,
                      softmax_scale, causal, window_size, softcap, alibi_slopes, deterministic,
                      return_attn_probs)


def _unpack(x: object, name: str, dim: int, n: int, rank: int) -> Tuple[torch.Tensor, ...]:
    """The n views of x along dim (no copy: the op takes their strides; _attention copies a view
    only when its last dimension is strided)."""
    x = _check_tensor(x, name)
    if x.dim() != rank or x.shape[dim] != n:
        raise ValueError(f"{name} must be {rank}-D with size {n} at dim {dim}, got shape "
                         f"{tuple(x.shape)}")
    return x.unbind(dim)


def flash_attn_qkvpacked_func(qkv, dropout_p=0.0, softmax_scale=None, causal=False,
                              window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                              deterministic=False, return_attn_probs=False):
    """flash_attn_func on qkv (b, s, 3, h, d); the gradient is (b, s, 3, h, d) too."""
    q, k, v = _unpack(qkv, "qkv", 2, 3, 5)
    return flash_attn_func(q, k, v, dropout_p, softmax_scale, causal, window_size, softcap,
                           alibi_slopes, deterministic, return_attn_probs)


def flash_attn_kvpacked_func(q, kv, dropout_p=0.0, softmax_scale=None, causal=False,
                             window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                             deterministic=False, return_attn_probs=False):
    """flash_attn_func on q (b, sq, h, d) and kv (b, sk, 2, hk, d)."""
    k, v = _unpack(kv, "kv", 2, 2, 5)
    return flash_attn_func(q, k, v, dropout_p, softmax_scale, causal, window_size, softcap,
                           alibi_slopes, deterministic, return_attn_probs)


def flash_attn_varlen_qkvpacked_func(qkv, cu_seqlens, max_seqlen, dropout_p=0.0,
                                     softmax_scale=None, causal=False, window_size=(-1, -1),
                                     softcap=0.0, alibi_slopes=None, deterministic=False,
                                     return_attn_probs=False):
    """flash_attn_varlen_func on qkv (total, 3, h, d) with one cu_seqlens (b + 1,) for q and k."""
    q, k, v = _unpack(qkv, "qkv", 1, 3, 4)
    return flash_attn_varlen_func(q, k, v, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen,
                                  dropout_p, softmax_scale, causal, window_size, softcap,
                                  alibi_slopes, deterministic, return_attn_probs)


def flash_attn_varlen_kvpacked_func(q, kv, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                                    dropout_p=0.0, softmax_scale=None, causal=False,
                                    window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                                    deterministic=False, return_attn_probs=False):
    """flash_attn_varlen_func on q (total_q, h, d) and kv (total_k, 2, hk, d)."""
    k, v = _unpack(kv, "kv", 1, 2, 4)
    return flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                                  dropout_p, softmax_scale, causal, window_size, softcap,
                                  alibi_slopes, deterministic, return_attn_probs)
