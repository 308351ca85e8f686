"""Dropout reproducibility helpers.

The keep bit of element (b, h, i, j) is a pure function of (seed, offset, b, h, i, j) through
Philox4x32-10 (csrc/include/fa_common.h), identical on CPU and CUDA, forward and backward: one
Philox call per 16 keys, one random byte per key, kept iff the byte >= t = round(256 p) (clamped
to [1, 255] for p > 0). The kernels therefore drop with probability t / 256 and scale kept
entries by 256 / (256 - t) (``dropout_keep_prob``), so the output stays unbiased.
"""
import contextlib
import numbers
import operator
import struct
import threading
from typing import Iterator, Optional, Union

import torch

from ._ops import ops

_state = threading.local()


def dropout_threshold(dropout_p: float) -> int:
    """The byte threshold t of fa_dropout_threshold (fa_common.h): round(256 p) of p as a float32,
    clamped to [1, 255] for p > 0; 0 (keep everything) for p <= 0."""
    p32 = struct.unpack("f", struct.pack("f", float(dropout_p)))[0]
    if not p32 > 0.0:
        return 0
    t = p32 * 256.0 + 0.5
    return 1 if t < 1.0 else 255 if t >= 255.0 else int(t)


def dropout_keep_prob(dropout_p: float) -> float:
    """The probability that an element is kept, (256 - t) / 256 (p quantised to 1/256); kept
    entries are scaled by its inverse."""
    return (256 - dropout_threshold(dropout_p)) / 256.0


def _as_int(x: object, name: str) -> int:
    """operator.index(x) (int, numpy integer; not float, str or tensor), else a TypeError naming
    x."""
    try:
        return operator.index(x)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(x).__name__} {x!r}") from None


def _as_int64(x: int, name: str = "seed") -> int:
    """Reinterprets an unsigned 64-bit value as the int64 the op schemas carry."""
    x = _as_int(x, name) & 0xFFFFFFFFFFFFFFFF
    return x - (1 << 64) if x >= (1 << 63) else x


def dropout_mask(batch: int, heads: int, seqlen_q: int, seqlen_k: int, dropout_p: float,
                 seed: int, offset: int = 0,
                 device: Union[str, torch.device] = "cpu") -> torch.Tensor:
    """The keep mask flash_attn_c's dropout uses for a given (seed, offset).

    Returns a bool tensor (batch, heads, seqlen_q, seqlen_k), True where the element is kept.
    Coordinates are logical: sequence index, query head, and sequence-local row i and column j
    (for varlen, slice [b, :, :len_q(b), :len_k(b)]). The same on every device.
    """
    sizes = {}
    for name, n in (("batch", batch), ("heads", heads), ("seqlen_q", seqlen_q),
                    ("seqlen_k", seqlen_k)):
        sizes[name] = _as_int(n, name)
        if sizes[name] < 0:
            raise ValueError(f"{name} must be >= 0, got {sizes[name]}")
    if not isinstance(dropout_p, numbers.Real):  # int, float, numpy floats; not str or bool-likes
        raise TypeError(f"dropout_p must be a real number, got {type(dropout_p).__name__}")
    dropout_p = float(dropout_p)
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}")
    return ops.dropout_mask(sizes["batch"], sizes["heads"], sizes["seqlen_q"], sizes["seqlen_k"],
                            dropout_p, _as_int64(seed, "seed"), _as_int64(offset, "offset"),
                            torch.device(device))


@contextlib.contextmanager
def fixed_dropout_seed(seed: int, offset: int = 0) -> Iterator[None]:
    """Within this context, dropout uses the given Philox (seed, offset) instead of drawing one
    from torch's generator, so the mask equals dropout_mask(..., seed, offset)."""
    prev = getattr(_state, "fixed", None)
    _state.fixed = (_as_int64(seed, "seed"), _as_int64(offset, "offset"))
    try:
        yield
    finally:
        _state.fixed = prev


def fixed_rng_state(device: torch.device) -> Optional[torch.Tensor]:
    """The explicit (2,) int64 rng_state for the op when fixed_dropout_seed is active, else None."""
    fixed = getattr(_state, "fixed", None)
    if fixed is None:
        return None
    return torch.tensor(fixed, dtype=torch.int64, device=device)
