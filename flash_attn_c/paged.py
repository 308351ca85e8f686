"""flash_attn_varlen_func with block_table (flash-attn 2.8 semantics): attention over a paged KV
cache.

Layout (d = head dim, h % hk == 0):
    q            (total_q, h, d), packed like any varlen q, cu_seqlens_q int32 (b + 1,)
    k, v         paged caches (num_blocks, page_block_size, hk, d), any page_block_size >= 1
    block_table  int32 (b, max_blocks_per_seq): physical block of each logical block
    cu_seqlens_k int32 (b + 1,): only its differences matter; the key length of sequence i is
                 cu_seqlens_k[i + 1] - cu_seqlens_k[i], and its key at logical position p is
                 k[block_table[i, p // page_block_size], p % page_block_size]
Entries of block_table past a sequence's last key are never read (they may be -1 or anything).
Returns what flash_attn_varlen_func returns: out (total_q, h, d), or (out, softmax_lse
(h, total_q), S_dmask (b, h, max_seqlen_q, max_seqlen_k)) with return_attn_probs.

Implementation. CUDA decode-style calls (max_seqlen_q <= 16, no dropout, no probabilities, no
gradient to track, head_dim a multiple of 8) read the pages in place on the split-KV kernel
(ops.fwd_kvcache with block_table and cu_seqlens_k). Otherwise the visible keys of every sequence are gathered on q's device into one packed
(rows, hk, d) pair, laid out as a plain varlen batch (sequence i at rows [cu_seqlens_k[i] -
cu_seqlens_k[0], cu_seqlens_k[i + 1] - cu_seqlens_k[0])), and handed to the normal varlen op. The
number of rows is a static bound, b * min(max_seqlen_k, max_blocks_per_seq * page_block_size),
so that no sequence length is read on the host; the rows past the last sequence are zero filler
that no sequence covers. Every index is clamped into range, so a -1 (or any
bad entry) is never dereferenced. The gather is differentiable: gradients flow to q, k and v.

Checks: shapes, dtypes and devices always. The values (each length within the block_table's
capacity and max_seqlen_k, every block_table entry a sequence reads in [0, num_blocks)) are
checked on CPU, where they are free to read; on CUDA the usual eager cu_seqlens validation of
flash_attn_varlen_func runs (lengths <= max_seqlen_k, and on the in-place path <= the block
table's capacity) and nothing else is read on the host. Bad block indices are not reported (as in
flash-attn): the gather clamps them into range, the in-place kernel reads their keys as zeros.
"""
from typing import Tuple, Union

import torch

from . import _ops
from .interface import (_check_cu_seqlens_on_device, _check_like_q, _check_scalars, _check_tensor,
                        _max_seqlen, _softmax_scale, _vector_ready, _window, attention_with_lse)

_PAGED = "(num_blocks, page_block_size, nheads_k, headdim)"


def _check_index_vector(x: object, name: str, device: torch.device) -> torch.Tensor:
    x = _check_tensor(x, name)
    if x.dtype != torch.int32:
        raise TypeError(f"{name} must have dtype torch.int32, got {x.dtype}")
    if x.dim() != 1 or x.numel() == 0:
        raise ValueError(f"{name} must be 1-D (batch + 1,), got shape {tuple(x.shape)}")
    if x.device != device:
        raise ValueError(f"{name} must be on {device} like q, got {x.device}")
    return x


def _check_paged_inputs(q: torch.Tensor, k: object, v: object, cu_seqlens_q: object,
                        cu_seqlens_k: object, block_table: object
                        ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Shape / dtype / device checks, each error naming the argument. Returns (k, v, cu_k, bt)."""
    dev = q.device
    for name, t in (("k", k), ("v", v)):
        _check_like_q(_check_tensor(t, name), name, q,
                      f"{_PAGED} when block_table is given (a paged KV cache)")
    if v.shape != k.shape:
        raise ValueError(f"v shape {tuple(v.shape)} must equal k shape {tuple(k.shape)} (paged "
                         f"caches {_PAGED})")
    if k.shape[1] < 1:
        raise ValueError(f"k's page_block_size (k.shape[1]) must be >= 1, got {k.shape[1]}")
    cu_q = _check_index_vector(cu_seqlens_q, "cu_seqlens_q", dev)
    cu_k = _check_index_vector(cu_seqlens_k, "cu_seqlens_k", dev)
    if cu_k.numel() != cu_q.numel():
        raise ValueError(f"cu_seqlens_k must have the {cu_q.numel()} entries of cu_seqlens_q "
                         f"(batch + 1), got {cu_k.numel()}")
    bt = _check_tensor(block_table, "block_table")
    if bt.dtype != torch.int32:
        raise TypeError(f"block_table must have dtype torch.int32, got {bt.dtype}")
    b = cu_q.numel() - 1
    if bt.dim() != 2 or bt.shape[0] != b:
        raise ValueError(f"block_table must be 2-D (batch={b}, max_blocks_per_seq), got shape "
                         f"{tuple(bt.shape)}")
    if bt.device != dev:
        raise ValueError(f"block_table must be on {dev} like q, got {bt.device}")
    return k, v, cu_k, bt


def _check_values_on_host(cu_k: torch.Tensor, bt: torch.Tensor, num_blocks: int, page: int,
                          max_seqlen_k: int) -> None:
    """CPU only (free to read): lengths within max_seqlen_k and the table's capacity, and every
    block a sequence reads in [0, num_blocks)."""
    c = cu_k.tolist()
    capacity = bt.shape[1] * page
    for i in range(len(c) - 1):
        n = c[i + 1] - c[i]
        if n < 0:
            raise ValueError(f"cu_seqlens_k must be non-decreasing, got {c}")
        if n > max_seqlen_k:
            raise ValueError(f"max_seqlen_k={max_seqlen_k} is smaller than the longest sequence in "
                             f"cu_seqlens_k ({n}, sequence {i})")
        if n > capacity:
            raise ValueError(f"cu_seqlens_k: sequence {i} has {n} keys but block_table holds "
                             f"max_blocks_per_seq * page_block_size = {bt.shape[1]} * {page} = "
                             f"{capacity}")
        used = bt[i, :(n + page - 1) // page]
        bad = ((used < 0) | (used >= num_blocks)).nonzero()
        if bad.numel():
            j = int(bad[0, 0])
            raise ValueError(f"block_table[{i}, {j}] = {int(used[j])} is read by sequence {i} but "
                             f"is not a block of k (must be in [0, {num_blocks}))")


def gather_paged(cache: torch.Tensor, cu_k: torch.Tensor, block_table: torch.Tensor,
                 rows: Union[int, torch.SymInt]) -> torch.Tensor:
    """The visible keys (or values) of every sequence, packed: (rows, hk, d).

    cache (num_blocks, page, hk, d); cu_k int32 (b + 1,); block_table int32 (b, max_blocks);
    rows >= cu_k[-1] - cu_k[0] (a static bound). Row t of sequence i's range is its logical
    position t - (cu_k[i] - cu_k[0]); rows past the last sequence are zeros. All indices are
    clamped, so no entry outside the sequences' keys is dereferenced."""
    num_blocks, page = cache.shape[0], cache.shape[1]
    b, max_blocks = block_table.shape
    dev = cache.device
    ends = (cu_k[1:] - cu_k[0]).long()                       # (b,) packed end of each sequence
    t = torch.arange(rows, device=dev)                       # (rows,)
    seq = torch.searchsorted(ends, t, right=True)            # (rows,) in [0, b]; b = filler row
    valid = seq < b
    seq = seq.clamp(max=max(b - 1, 0))
    start = torch.cat([ends.new_zeros(1), ends[:-1]])        # (b,) packed start of each sequence
    pos = (t - start[seq]).clamp(min=0)                      # logical key position
    col = (pos // page).clamp(max=max(max_blocks - 1, 0))
    blk = block_table.long()[seq, col]
    blk = torch.where(valid, blk, torch.zeros_like(blk)).clamp(0, max(num_blocks - 1, 0))
    off = torch.where(valid, pos % page, torch.zeros_like(pos))
    # filler rows are zeroed: no value of an unread page (NaN, stale data) enters the op's input
    return torch.where(valid[:, None, None], cache[blk, off], cache.new_zeros(()))


def paged_varlen_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                           dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                           softcap=0.0, alibi_slopes=None, deterministic=False,
                           return_attn_probs=False, *, block_table):
    """flash_attn_varlen_func over paged k/v (num_blocks, page_block_size, hk, d) addressed by
    block_table int32 (b, max_blocks_per_seq); q (total_q, h, d). Same returns and masks as
    flash_attn_varlen_func (see the module docstring for the layout)."""
    q = _check_tensor(q, "q")
    k, v, cu_k, bt = _check_paged_inputs(q, k, v, cu_seqlens_q, cu_seqlens_k, block_table)
    max_seqlen_k = _max_seqlen(max_seqlen_k, "max_seqlen_k")
    num_blocks, page = k.shape[0], k.shape[1]
    b, max_blocks = bt.shape
    if not q.is_cuda and not torch.compiler.is_compiling():
        _check_values_on_host(cu_k, bt, num_blocks, page, max_seqlen_k)
    capacity = max_blocks * page
    dropout_p, softcap = _check_scalars(dropout_p, softcap)
    # CUDA, eager: lengths within max_seqlen_k and the block table (only differences matter), on
    # both routes: the gather below would otherwise clamp a too long sequence's block column and
    # read another position's keys
    _check_cu_seqlens_on_device(cu_k, 1 << 62, min(max_seqlen_k, capacity), "cu_seqlens_k",
                                "min(max_seqlen_k, max_blocks_per_seq * page_block_size)")
    if _native(q, k, v, max_seqlen_q, dropout_p, return_attn_probs):
        left, right = _window(window_size, causal)
        _check_cu_seqlens_on_device(cu_seqlens_q, q.shape[0], max_seqlen_q, "cu_seqlens_q",
                                    "max_seqlen_q")
        out, lse = _ops.ops.fwd_kvcache(q, k, v, None, None, None, bt, cu_seqlens_q, cu_k,
                                        max_seqlen_q, max_seqlen_k,
                                        _softmax_scale(softmax_scale, q.shape[-1]), left, right,
                                        softcap, alibi_slopes, 0)
        return (out, lse, q.new_empty((0,))) if return_attn_probs else out
    # a static bound on the packed rows; max_seqlen_k may be a SymInt under torch.compile
    per_seq = min(max_seqlen_k, capacity) if isinstance(max_seqlen_k, int) \
        else torch.sym_min(max_seqlen_k, capacity)
    rows = 0 if num_blocks == 0 else b * per_seq
    cu_packed = cu_k - cu_k[:1]  # sequence i at packed rows [cu_packed[i], cu_packed[i + 1])
    k_packed = gather_paged(k, cu_k, bt, rows)
    v_packed = gather_paged(v, cu_k, bt, rows)
    out, lse, probs = attention_with_lse(q, k_packed, v_packed, cu_seqlens_q, cu_packed,
                                         max_seqlen_q, max_seqlen_k, dropout_p, softmax_scale,
                                         causal, window_size, softcap, alibi_slopes,
                                         deterministic, return_attn_probs)
    return (out, lse, probs) if return_attn_probs else out


def _native(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, max_seqlen_q, dropout_p,
            return_attn_probs) -> bool:
    """Whether a paged call reads the pages in place on the CUDA split-KV kernel: inference
    (nothing requires grad), a short query block (decode, speculative decoding), no dropout or
    probabilities, head_dim a multiple of 8 (caches are never padded)."""
    if not q.is_cuda or q.shape[-1] % 8 or return_attn_probs or not isinstance(max_seqlen_q, int):
        return False
    if not all(_vector_ready(t) for t in (q, k, v)):  # the kernel reads them in place
        return False
    if max_seqlen_q > 16 or dropout_p > 0.0:  # dropout_p: the checked float
        return False
    return not (torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or
                                              v.requires_grad))
