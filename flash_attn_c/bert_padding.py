"""Padding helpers with flash-attn's names and returns: move between padded (b, s, ...) batches
and the packed (total, ...) layout of the varlen functions."""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F


def index_first_axis(x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """x[indices] along dim 0: x (n, ...), indices int64 (m,) -> (m, ...). Differentiable."""
    return torch.index_select(x, 0, indices)


def index_put_first_axis(values: torch.Tensor, indices: torch.Tensor,
                         first_axis_dim: int) -> torch.Tensor:
    """Scatters values (m, ...) into zeros (first_axis_dim, ...) at rows indices. Differentiable."""
    out = values.new_zeros((first_axis_dim, *values.shape[1:]))
    return out.index_copy(0, indices, values)


def unpad_input(hidden_states: torch.Tensor, attention_mask: torch.Tensor,
                unused_mask: Optional[torch.Tensor] = None
                ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, torch.Tensor]:
    """Packs the rows of a padded batch that the mask marks.

    hidden_states (b, s, ...), attention_mask (b, s) bool/int with 1 = real token; unused_mask
    (b, s) marks tokens that are allocated but not attended (they are kept in the packing).
    Returns (x_unpad (total, ...), indices int64 (total,) into the flattened (b*s) rows,
    cu_seqlens int32 (b + 1,), max_seqlen int, seqused int32 (b,) = real tokens per sequence).
    """
    used = attention_mask.to(torch.int32)
    kept = used + unused_mask.to(torch.int32) if unused_mask is not None else used
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
    out = index_put_first_axis(hidden_states, indices, batch * seqlen)
    return out.reshape(batch, seqlen, *hidden_states.shape[1:])
