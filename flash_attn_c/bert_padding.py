"""Padding helpers with flash-attn's names and returns: move between padded (b, s, ...) batches
and the packed (total, ...) layout of the varlen functions."""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F


def _check_mask(hidden_states: object, mask: object, name: str) -> None:
    """mask must be a (b, s) tensor matching hidden_states (b, s, ...)."""
    if not isinstance(hidden_states, torch.Tensor) or hidden_states.dim() < 2:
        raise ValueError("hidden_states must be a tensor of shape (batch, seqlen, ...), got "
                         f"{getattr(hidden_states, 'shape', type(hidden_states).__name__)}")
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor (batch, seqlen), got {type(mask).__name__}")
    if tuple(mask.shape) != tuple(hidden_states.shape[:2]):
        raise ValueError(f"{name} must have shape (batch, seqlen) = "
                         f"{tuple(hidden_states.shape[:2])} like hidden_states, got "
                         f"{tuple(mask.shape)}")
    if mask.device != hidden_states.device:
        raise ValueError(f"{name} must be on {hidden_states.device} like hidden_states, got "
                         f"{mask.device}")


def _check_indices(indices: object, rows: int) -> None:
    """indices must be an integer (rows,) tensor."""
    if not isinstance(indices, torch.Tensor):
        raise TypeError(f"indices must be a torch.Tensor, got {type(indices).__name__}")
    if indices.dtype not in (torch.int64, torch.int32) or indices.dim() != 1:
        raise ValueError(f"indices must be a 1-D int64 (or int32) tensor, got {indices.dtype} of "
                         f"shape {tuple(indices.shape)}")
    if indices.shape[0] != rows:
        raise ValueError(f"indices has {indices.shape[0]} entries but there are {rows} rows to "
                         "place (hidden_states.shape[0])")


def index_first_axis(x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """x[indices] along dim 0: x (n, ...), indices int64 (m,) -> (m, ...). Differentiable."""
    return torch.index_select(x, 0, indices)


def index_put_first_axis(values: torch.Tensor, indices: torch.Tensor,
                         first_axis_dim: int) -> torch.Tensor:
    """Scatters values (m, ...) into zeros (first_axis_dim, ...) at rows indices (int64 or int32
    (m,)). Differentiable."""
    out = values.new_zeros((first_axis_dim, *values.shape[1:]))
    return out.index_copy(0, indices.long(), values)  # index_copy takes int64 only


def unpad_input(hidden_states: torch.Tensor, attention_mask: torch.Tensor,
                unused_mask: Optional[torch.Tensor] = None
                ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, torch.Tensor]:
    """Packs the rows of a padded batch that the mask marks.

    hidden_states (b, s, ...), attention_mask (b, s) bool/int with 1 = real token; unused_mask
    (b, s) marks tokens that are allocated but not attended (they are kept in the packing).
    Returns (x_unpad (total, ...), indices int64 (total,) into the flattened (b*s) rows,
    cu_seqlens int32 (b + 1,), max_seqlen int, seqused int32 (b,) = real tokens per sequence).
    """
    _check_mask(hidden_states, attention_mask, "attention_mask")
    if unused_mask is not None:
        _check_mask(hidden_states, unused_mask, "unused_mask")
    used = attention_mask.to(torch.int32)
    # a token is packed when either mask marks it (with bool masks flash-attn's sum is this OR; a
    # sum of int masks would count a token both mark twice in seqlens but once in the indices)
    kept = (used != 0) | (unused_mask != 0) if unused_mask is not None else used != 0
    seqlens = kept.sum(dim=-1, dtype=torch.int32)
    indices = torch.nonzero(kept.flatten(), as_tuple=False).flatten()
    max_seqlen = int(seqlens.max().item()) if seqlens.numel() else 0
    cu_seqlens = F.pad(torch.cumsum(seqlens, dim=0, dtype=torch.int32), (1, 0))
    flat = hidden_states.reshape(-1, *hidden_states.shape[2:])
    return (index_first_axis(flat, indices), indices, cu_seqlens, max_seqlen,
            used.sum(dim=-1, dtype=torch.int32))


def pad_input(hidden_states: torch.Tensor, indices: torch.Tensor, batch: int,
              seqlen: int) -> torch.Tensor:
    """Inverse of unpad_input: (total, ...) -> (batch, seqlen, ...), zeros at padding."""
    if not isinstance(hidden_states, torch.Tensor) or hidden_states.dim() < 1:
        raise ValueError("hidden_states must be a tensor of shape (total, ...)")
    _check_indices(indices, hidden_states.shape[0])
    for name, n in (("batch", batch), ("seqlen", seqlen)):
        if isinstance(n, int) and n < 0:
            raise ValueError(f"{name} must be >= 0, got {n}")
    out = index_put_first_axis(hidden_states, indices, batch * seqlen)
    return out.reshape(batch, seqlen, *hidden_states.shape[1:])
