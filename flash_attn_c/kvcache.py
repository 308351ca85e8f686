"""flash_attn_with_kvcache (flash-attn 2.8 signature): inference attention over a KV cache.

What one call does, per batch row b (q row b, cache row r = cache_batch_idx[b] or b):
  1. rotary (only when k/v are given and rotary_cos/sin are): rotate the first rotary_dim channels
     of the new k at absolute cache positions cache_seqlens[b] + [0, s_new), and of q at
     cache_seqlens[b] + [0, sq) when causal or local, else all of q at cache_seqlens[b];
  2. append (k/v given): write the (rotated) new k and v IN PLACE into the cache at absolute
     positions cache_seqlens[b] .. cache_seqlens[b] + s_new - 1;
  3. attend: q over the keys at absolute positions [cache_leftpad[b], cache_seqlens[b] + s_new)
     of that cache row (paged: through block_table[b]), with causal / window / ALiBi aligned to
     the bottom-right corner of that (sq, seqlen_k) matrix, seqlen_k = cache_seqlens[b] + s_new -
     cache_leftpad[b].
Implementation. CUDA (head_dim a multiple of 8, no gradients needed): one kernel appends the new
keys (rotated by their positions, read from the device cache_seqlens) and values and rotates q
(ops.kvcache_append_), then the attention runs on the
split-KV kernel (ops.fwd_kvcache: key splits merged by LSE, GQA-packed rows, paged caches of any
page size read in place): nothing is read on the host, so a decode step can be captured in a
CUDA graph or compiled with torch.compile(fullgraph=True). Otherwise (CPU, the oracle; a call
that needs gradients; an odd head_dim) the visible keys of every row are gathered into one packed
(total_k, hk, d) pair for the varlen forward op, with the lengths read on the host.

Shapes (d = head dim, h % hk == 0):
    q           (b, sq, h, d)
    k_cache     (b_cache, s_cache, hk, d), or paged (num_blocks, page_block_size, hk, d)
    v_cache     like k_cache
    k, v        (b, s_new, hk, d), optional, appended to the cache in place
    rotary_cos  (seqlen_ro, rotary_dim / 2), rotary_sin likewise
    cache_seqlens  int or int32 (b,): cache length before the append (absolute end position)
    cache_batch_idx  int32 (b,): cache row of each batch row (non-paged caches only)
    cache_leftpad  int32 (b,): first visible cache position of each row
    block_table  int32 (b, max_blocks_per_seq): physical block of each logical block
    -> out (b, sq, h, d); with return_softmax_lse also lse fp32 (b, h, sq)

Differences from flash-attn (documented, none changes a result flash-attn accepts):
  * num_splits = 0 picks the split count by the heuristic of csrc/cuda/common/fa_tuning.h; n > 0
    is honoured on CUDA (capped at 128 and at the number of key tiles); the CPU ignores it;
  * page_block_size may be any size >= 1 (flash-attn needs a multiple of 256), and paged caches
    work together with cache_leftpad;
  * on CUDA the device values (cache_seqlens, cache_leftpad, block_table, cache_batch_idx) are
    not validated (that would need a host sync): lengths are clamped to the cache, a block index
    outside the cache reads as zero keys, a cache_batch_idx outside it gives that row no keys
    (out 0, lse -inf), appends to either are skipped; the CPU path validates them and raises.
    The rotary table is checked from sizes alone there: it must cover the cache capacity (as
    flash-attn requires), or with an int cache_seqlens the positions used;
  * block_table entries that no sequence reads or appends to are never looked at (flash-attn's
    -1 padding is fine on both paths).
Like flash-attn, rotary_cos/sin need k/v (an error naming rotary_cos otherwise), and without
cache_seqlens the whole cache (s_cache, or max_blocks_per_seq * page_block_size) is attended to.
Rows that see no key give out = 0 and lse = -inf.
"""
import operator
from typing import List, Optional, Tuple, Union

import torch

from . import _ops
from .interface import (WindowSize, _alibi_input, _check_like_q, _check_scalars, _check_tensor,
                        _op_input, _softmax_scale, _vector_ready, _window, pad_head_dim_for_cuda)

_INDEX_DTYPE = torch.int32


def _check_index(x: Optional[torch.Tensor], name: str, shape: Tuple[int, ...],
                 device: torch.device) -> Optional[torch.Tensor]:
    """Validates an optional int32 index tensor of the given shape on q's device."""
    if x is None:
        return None
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor (int32) or None, got {type(x).__name__}")
    if x.dtype != _INDEX_DTYPE:
        raise TypeError(f"{name} must have dtype torch.int32, got {x.dtype}")
    if tuple(x.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(x.shape)}")
    if x.device != device:
        raise ValueError(f"{name} must be on {device} like q, got {x.device}")
    return x


def _apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                  interleaved: bool) -> torch.Tensor:
    """Rotates the first rotary_dim channels of x, computing in fp32 and rounding once.

    x (b, s, heads, d); cos/sin (b, s, rotary_dim / 2), already gathered at each token's position.
    Non-interleaved (GPT-NeoX): channel i pairs with i + rotary_dim / 2. Interleaved (GPT-J):
    channel 2i pairs with 2i + 1. Returns a new tensor like x; channels >= rotary_dim unchanged.
    """
    half = cos.shape[-1]
    rd = 2 * half
    xr = x[..., :rd].float()
    c = cos.float().unsqueeze(2)  # (b, s, 1, rd / 2): one angle per pair, shared by the heads
    s = sin.float().unsqueeze(2)
    if interleaved:
        x1, x2 = xr[..., 0::2], xr[..., 1::2]
        rot = torch.stack((x1 * c - x2 * s, x1 * s + x2 * c), dim=-1).flatten(-2)
    else:
        x1, x2 = xr[..., :half], xr[..., half:]
        rot = torch.cat((x1 * c - x2 * s, x1 * s + x2 * c), dim=-1)
    return torch.cat((rot.to(x.dtype), x[..., rd:]), dim=-1)


def _seqlens_arg(cache_seqlens: Union[int, torch.Tensor, None], b: int, capacity: int,
                 device: torch.device) -> Tuple[Optional[torch.Tensor], int]:
    """cache_seqlens checked without reading a device value: (the int32 (b,) tensor, or None
    with the one length for every row: the int given, or the capacity when None)."""
    if cache_seqlens is None:
        return None, capacity
    if isinstance(cache_seqlens, torch.Tensor):
        return _check_index(cache_seqlens, "cache_seqlens", (b,), device), capacity
    if isinstance(cache_seqlens, bool):
        raise TypeError("cache_seqlens must be an int or an int32 tensor, got bool")
    try:
        return None, operator.index(cache_seqlens)  # int, numpy integers; not floats
    except TypeError:
        raise TypeError("cache_seqlens must be an int or an int32 tensor of shape (batch,), "
                        f"got {type(cache_seqlens).__name__}") from None


def _lengths(cache_seqlens: Union[int, torch.Tensor, None], b: int, capacity: int,
             device: torch.device) -> Tuple[Optional[torch.Tensor], List[int]]:
    """(cache_seqlens as an int32 (b,) tensor or None, its values on the host)."""
    seq_t, n = _seqlens_arg(cache_seqlens, b, capacity, device)
    return seq_t, ([n] * b if seq_t is None else [int(x) for x in seq_t.tolist()])


def _check_rotary(rotary_cos: torch.Tensor, rotary_sin: torch.Tensor, d: int, device: torch.device,
                  need: int) -> None:
    """rotary_cos/sin (seqlen_ro, rotary_dim / 2): 2-D floating tensors of one shape on q's
    device, 1 <= rotary_dim / 2 <= headdim / 2, and at least `need` positions (the largest
    position a key or query rotates by, plus one)."""
    for name, t in (("rotary_cos", rotary_cos), ("rotary_sin", rotary_sin)):
        _check_tensor(t, name)
        if t.dim() != 2:
            raise ValueError(f"{name} must be 2-D (seqlen_ro, rotary_dim / 2), got shape "
                             f"{tuple(t.shape)}")
        if t.device != device:
            raise ValueError(f"{name} must be on {device} like q, got {t.device}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be floating point, got {t.dtype}")
    if rotary_sin.shape != rotary_cos.shape:
        raise ValueError(f"rotary_sin shape {tuple(rotary_sin.shape)} must equal rotary_cos "
                         f"shape {tuple(rotary_cos.shape)}")
    seqlen_ro, half = rotary_cos.shape
    if half == 0 or 2 * half > d:
        raise ValueError(f"rotary_cos.shape[1] = rotary_dim / 2 must be in [1, headdim / 2 = "
                         f"{d // 2}], got {half}")
    if seqlen_ro < need:
        raise ValueError(f"rotary_cos/rotary_sin have {seqlen_ro} positions but positions up "
                         f"to {need - 1} are needed (cache_seqlens + new tokens / queries)")


def _cache_window(window_size: WindowSize, causal: bool, capacity: int) -> Tuple[int, int]:
    """(left, right) of the mask; as flash-attn, a side at least as long as the cache is
    unbounded (-1)."""
    left, right = _window(window_size, causal)
    return (-1 if left >= capacity else left), (-1 if right >= capacity else right)


def flash_attn_with_kvcache(q, k_cache, v_cache, k=None, v=None, rotary_cos=None, rotary_sin=None,
                            cache_seqlens=None, cache_batch_idx=None, cache_leftpad=None,
                            block_table=None, softmax_scale=None, causal=False,
                            window_size: WindowSize = (-1, -1), softcap=0.0,
                            rotary_interleaved=True, alibi_slopes=None, num_splits=0,
                            return_softmax_lse=False):
    """Attention of q over a KV cache, optionally appending k/v (in place) and applying rotary.

    q (b, sq, h, d); k_cache/v_cache (b_cache, s_cache, hk, d) or, with block_table int32
    (b, max_blocks), paged (num_blocks, page_block_size, hk, d); k/v (b, s_new, hk, d) written
    into the cache at cache_seqlens[b] .. + s_new; rotary_cos/sin (seqlen_ro, rotary_dim / 2);
    cache_seqlens int or int32 (b,); cache_batch_idx int32 (b,); cache_leftpad int32 (b,);
    alibi_slopes fp32 (h,) or (b, h); num_splits 0 = heuristic, n = n key splits (CUDA). See the
    module docstring for the exact semantics. Returns out (b, sq, h, d), or (out, softmax_lse fp32 (b, h, sq)).
    """
    q = _check_tensor(q, "q")
    k_cache = _check_tensor(k_cache, "k_cache")
    v_cache = _check_tensor(v_cache, "v_cache")
    dev = q.device
    if q.dim() != 4:
        raise ValueError("q must be 4-D (batch, seqlen_q, nheads, headdim), got shape "
                         f"{tuple(q.shape)}")
    b, sq, h, d = q.shape
    # q's dtype first, so that a wrong q is not blamed on the caches compared with it
    allowed = (torch.float16, torch.bfloat16) if q.is_cuda else (torch.float32, torch.float16,
                                                                  torch.bfloat16)
    if q.dtype not in allowed:
        raise TypeError(f"q must be one of {[str(t) for t in allowed]} on {dev.type}, got {q.dtype}")
    paged = block_table is not None
    layout = ("(num_blocks, page_block_size, nheads_k, headdim)" if paged
              else "(batch_size_cache, seqlen_cache, nheads_k, headdim)")
    for name, t in (("k_cache", k_cache), ("v_cache", v_cache)):
        _check_like_q(t, name, q, layout)
    if v_cache.shape != k_cache.shape:
        raise ValueError(f"v_cache shape {tuple(v_cache.shape)} must equal k_cache shape "
                         f"{tuple(k_cache.shape)}")
    n_rows, rows_len, hk, dk = k_cache.shape
    if dk != d:
        raise ValueError(f"k_cache head dim {dk} must equal q's head dim {d}")
    if hk == 0 or h % hk != 0:
        raise ValueError(f"q's nheads ({h}) must be a multiple of k_cache's nheads_k ({hk})")
    _, softcap = _check_scalars(0.0, softcap)
    # Checks the op would also make, done here so that a rejected call never writes the cache.
    if not 0 < d <= 256:
        raise ValueError(f"q's head dim must be in [1, 256], got {d}")
    if alibi_slopes is not None:
        alibi_slopes = _alibi_input(alibi_slopes, b, h)
        if alibi_slopes.device != dev:
            raise ValueError(f"alibi_slopes must be on {dev} like q, got {alibi_slopes.device}")

    if (rotary_cos is None) != (rotary_sin is None):
        raise ValueError("rotary_cos and rotary_sin must be given together")
    if rotary_cos is not None and k is None:
        raise ValueError("rotary_cos/rotary_sin need new keys and values (k, v) to append, as in "
                         "flash-attn: the rotation is applied to q and the new k at cache_seqlens")
    if isinstance(num_splits, bool) or not isinstance(num_splits, int) or num_splits < 0:
        raise ValueError(f"num_splits must be an int >= 0 (0 = heuristic), got {num_splits!r}")

    # ---- the cache layout: capacity per sequence and the (row, position) -> storage map ----
    if paged:
        block_table = _check_tensor(block_table, "block_table")
        if block_table.dim() != 2 or block_table.shape[0] != b:
            raise ValueError(f"block_table must be 2-D (batch={b}, max_blocks_per_seq), got shape "
                             f"{tuple(block_table.shape)}")
        _check_index(block_table, "block_table", tuple(block_table.shape), dev)
        if cache_batch_idx is not None:
            raise ValueError("cache_batch_idx cannot be used with a paged cache (block_table "
                             "already maps each batch row to its blocks)")
        page = rows_len
        if page < 1:
            raise ValueError(f"k_cache.shape[1] (page_block_size) must be >= 1, got {page}")
        capacity = block_table.shape[1] * page
    else:
        capacity = rows_len
        _check_index(cache_batch_idx, "cache_batch_idx", (b,), dev)
        if cache_batch_idx is None and n_rows < b:
            raise ValueError(f"k_cache has {n_rows} rows but q has batch {b}: pass cache_batch_idx "
                             "or a cache with at least batch rows (a 2-D block_table makes the "
                             "cache paged)")

    # ---- new tokens ----
    if (k is None) != (v is None):
        raise ValueError("k and v must be given together (both None for attention only)")
    s_new = 0
    if k is not None:
        k, v = _check_tensor(k, "k"), _check_tensor(v, "v")
        for name, t in (("k", k), ("v", v)):
            if tuple(t.shape[:1]) + tuple(t.shape[2:]) != (b, hk, d) or t.dim() != 4:
                raise ValueError(f"{name} must be (batch={b}, seqlen_new, nheads_k={hk}, "
                                 f"headdim={d}), got shape {tuple(t.shape)}")
            if t.device != dev:
                raise ValueError(f"{name} must be on {dev} like q, got {t.device}")
            if t.dtype != q.dtype:
                raise TypeError(f"{name} must have q's dtype {q.dtype}, got {t.dtype}")
        if v.shape != k.shape:
            raise ValueError(f"v shape {tuple(v.shape)} must equal k shape {tuple(k.shape)}")
        if cache_seqlens is None:
            raise ValueError("cache_seqlens is required when k and v are given (it says where "
                             "the new tokens go)")
        s_new = k.shape[1]
        for name, t in (("k_cache", k_cache), ("v_cache", v_cache)):
            # an expanded (stride-0) cache stores several rows in one place: an append into one row
            # would show up in the others (torch's in-place ops refuse such tensors the same way)
            if _ops.is_broadcast(t):
                raise ValueError(f"{name} has a dimension of stride 0 (an expanded tensor, shape "
                                 f"{tuple(t.shape)} strides {t.stride()}): appending k / v would write "
                                 f"several of its rows at once; pass a cache that owns its memory "
                                 f"(e.g. .contiguous())")

    if _fast_cuda(q, k_cache, v_cache, k, v, capacity):
        return _kvcache_cuda(q, k_cache, v_cache, k, v, rotary_cos, rotary_sin, cache_seqlens,
                             cache_batch_idx, cache_leftpad, block_table, softmax_scale, causal,
                             window_size, softcap, rotary_interleaved, alibi_slopes, num_splits,
                             return_softmax_lse, capacity)

    # ---- per-row lengths (host copies: the packed sizes depend on them) ----
    seqlens_t, seqlens = _lengths(cache_seqlens, b, capacity, dev)
    _check_index(cache_leftpad, "cache_leftpad", (b,), dev)
    leftpad = [0] * b if cache_leftpad is None else [int(x) for x in cache_leftpad.tolist()]
    for i in range(b):
        if seqlens[i] < 0:
            raise ValueError(f"cache_seqlens must be >= 0, got {seqlens[i]} for batch row {i}")
        if seqlens[i] + s_new > capacity:
            what = ("max_blocks_per_seq * page_block_size" if paged else "seqlen_cache")
            raise ValueError(f"cache too small: cache_seqlens[{i}] + seqlen_new = {seqlens[i]} + "
                             f"{s_new} > {what} = {capacity}")
        if not 0 <= leftpad[i] <= seqlens[i]:
            raise ValueError(f"cache_leftpad[{i}] = {leftpad[i]} must be in [0, cache_seqlens[{i}] "
                             f"= {seqlens[i]}]")
    if paged and block_table.numel():
        # only the entries a sequence reads or appends to (flash-attn pads tables with -1)
        cols = torch.arange(block_table.shape[1], device=dev)
        first = torch.tensor([lp // page for lp in leftpad], device=dev)
        end = torch.tensor([-(-(n + s_new) // page) for n in seqlens], device=dev)
        used = (cols[None, :] >= first[:, None]) & (cols[None, :] < end[:, None])
        bad = (used & ((block_table < 0) | (block_table >= n_rows))).nonzero()
        if bad.numel():
            i, j = (int(x) for x in bad[0])
            raise ValueError(f"block_table[{i}, {j}] = {int(block_table[i, j])} is used by batch "
                             f"row {i} but is not a block of k_cache (must be in [0, {n_rows}))")
    if cache_batch_idx is not None:
        rows = [int(x) for x in cache_batch_idx.tolist()]
        bad = [r for r in rows if not 0 <= r < n_rows]
        if bad:
            raise ValueError(f"cache_batch_idx entries must be in [0, {n_rows}), got {bad[0]}")
        if s_new > 0 and len(set(rows)) != len(rows):
            raise ValueError("cache_batch_idx has repeated rows while k/v are appended: two batch "
                             "rows would write the same cache row")

    # ---- window: flash-attn treats windows at least as long as the cache as unbounded ----
    left, right = _cache_window(window_size, causal, capacity)
    positional_q = left >= 0 or right >= 0  # causal or local: q token i sits at seqlen + i

    # ---- rotary (given only together with k/v, checked above) ----
    use_rotary = rotary_cos is not None
    if use_rotary:
        _check_rotary(rotary_cos, rotary_sin, d, dev,
                      max([s + max(s_new, sq if positional_q else 1) for s in seqlens] + [0]))

    softmax_scale = _softmax_scale(softmax_scale, d)
    seq_t = torch.tensor(seqlens, dtype=torch.int64, device=dev) if seqlens_t is None \
        else seqlens_t.to(torch.int64)

    if use_rotary:
        pos_k = seq_t[:, None] + torch.arange(s_new, device=dev)  # (b, s_new)
        k = _apply_rotary(k, rotary_cos[pos_k], rotary_sin[pos_k], rotary_interleaved)
        steps = torch.arange(sq, device=dev) if positional_q else torch.zeros(sq, dtype=torch.int64,
                                                                                device=dev)
        pos_q = seq_t[:, None] + steps  # (b, sq)
        q = _apply_rotary(q, rotary_cos[pos_q], rotary_sin[pos_q], rotary_interleaved)

    def storage(batch: torch.Tensor, pos: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(cache dim-0 index, dim-1 index) of logical position pos of batch row batch."""
        if paged:
            return block_table[batch, pos // page].long(), pos % page
        row = batch if cache_batch_idx is None else cache_batch_idx.long()[batch]
        return row, pos

    # ---- append in place ----
    if k is not None and s_new > 0:
        batch = torch.arange(b, device=dev)[:, None].expand(b, s_new)
        pos = seq_t[:, None] + torch.arange(s_new, device=dev)
        r, p = storage(batch, pos)
        if paged and torch.unique(r * page + p).numel() != r.numel():
            raise ValueError("block_table maps positions that two batch rows append to onto the same "
                             "cache slot (a block shared by rows that both append): each appended "
                             "token needs its own slot")
        k_cache[r, p] = k  # advanced-index assignment: any cache strides, autograd-aware
        v_cache[r, p] = v

    # ---- gather each row's visible keys into one packed varlen batch ----
    lens_k = [seqlens[i] + s_new - leftpad[i] for i in range(b)]
    total_k = sum(lens_k)
    lens_t = torch.tensor(lens_k, dtype=torch.int64, device=dev)
    batch = torch.repeat_interleave(torch.arange(b, device=dev), lens_t, output_size=total_k)
    starts = torch.cumsum(lens_t, 0) - lens_t  # packed offset of each row's first key
    lp = torch.tensor(leftpad, dtype=torch.int64, device=dev)
    pos = torch.arange(total_k, device=dev) - starts[batch] + lp[batch]
    r, p = storage(batch, pos)
    k_packed = k_cache[r, p]  # (total_k, hk, d)
    v_packed = v_cache[r, p]
    cu_k = torch.zeros(b + 1, dtype=torch.int32, device=dev)
    cu_k[1:] = torch.cumsum(lens_t, 0).to(torch.int32)
    cu_q = (torch.arange(b + 1, device=dev) * sq).to(torch.int32)
    q_packed = _op_input(q.reshape(b * sq, h, d), "q")  # any q layout; a copy only if strided in d

    (q_packed, k_packed, v_packed), pad = pad_head_dim_for_cuda(q_packed, k_packed, v_packed)
    out, lse, _, _ = _ops.fwd(q_packed, k_packed, v_packed, cu_q, cu_k, sq, max(lens_k + [0]), 0.0,
                              softmax_scale, left, right, softcap, alibi_slopes,
                              False, None, False)
    if pad:
        out = out[..., :d]
    out = out.reshape(b, sq, h, d)
    if return_softmax_lse:
        return out, lse.reshape(h, b, sq).permute(1, 0, 2).contiguous()  # (h, b * sq) -> (b, h, sq)
    return out


def _fast_cuda(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
               k: Optional[torch.Tensor], v: Optional[torch.Tensor], capacity: int) -> bool:
    """Whether a call takes the fused CUDA path (split-KV kernel, on-device append and rotary,
    no host sync): CUDA tensors, head_dim a multiple of 8 and caches laid out for 16-byte
    access (they are never padded or copied), sizes within the kernel's grid (batch and heads
    <= 65535, capacity (positions per sequence, paged or not) < 2^30, group * seqlen_q <= 16 *
    65535: checked here, before anything is appended),
    and no gradient to track (the path is inference only; a call that needs gradients takes the
    differentiable gather path)."""
    if not q.is_cuda or q.shape[-1] % 8 != 0 or q.dim() != 4 or k_cache.dim() != 4:
        return False
    if not (_vector_ready(k_cache) and _vector_ready(v_cache)):
        return False
    b, sq, h = q.shape[0], q.shape[1], q.shape[2]
    hk = max(1, k_cache.shape[2])
    if b > 65535 or h > 65535 or capacity >= (1 << 30) or (h // hk) * sq > 16 * 65535:
        return False
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                       for t in (q, k_cache, v_cache, k, v)):
        return False
    return True


def _kvcache_cuda(q, k_cache, v_cache, k, v, rotary_cos, rotary_sin, cache_seqlens,
                  cache_batch_idx, cache_leftpad, block_table, softmax_scale, causal, window_size,
                  softcap, rotary_interleaved, alibi_slopes, num_splits, return_softmax_lse,
                  capacity: int):
    """The CUDA path of flash_attn_with_kvcache: the append with rotary on the new keys and q
    (ops.kvcache_append_, one kernel, positions from the device cache_seqlens) and the attention
    (ops.fwd_kvcache: split-KV, paged or not) are all launched on the current stream; nothing
    reads a device value on the host, so a decode step can be captured in a CUDA graph or
    compiled with fullgraph=True. Shapes were checked by the caller; device values are not
    validated (no sync): the kernels clamp lengths to the cache and skip bad block indices."""
    b, sq, h, d = q.shape
    dev = q.device
    ops = _ops.ops
    s_new = 0 if k is None else k.shape[1]
    seq_t, seq_int = _seqlens_arg(cache_seqlens, b, capacity, dev)
    if seq_t is None and cache_seqlens is not None and not 0 <= seq_int <= capacity - s_new:
        raise ValueError(f"cache_seqlens = {seq_int} with {s_new} new tokens must fit the "
                         f"cache of {capacity} positions")
    _check_index(cache_leftpad, "cache_leftpad", (b,), dev)
    left, right = _cache_window(window_size, causal, capacity)
    softmax_scale = _softmax_scale(softmax_scale, d)
    # index tensors as the op reads them (flash-attn makes them contiguous too; no sync)
    cache_batch_idx, block_table, cache_leftpad = (
        None if t is None else t.contiguous() for t in (cache_batch_idx, block_table, cache_leftpad))
    if seq_t is not None:
        seq_t = seq_t.contiguous()

    positional_q = left >= 0 or right >= 0  # causal or local: q token i sits at seqlen + i
    if rotary_cos is not None:  # k/v are given (checked by the caller)
        # from sizes only (no device value is read): with an int cache_seqlens the positions
        # rotated, as on the CPU path; with a tensor, flash-attn's rule: the table covers the
        # cache capacity (every key position; queries past it, possible only with more queries
        # than new tokens, stay unrotated there)
        _check_rotary(rotary_cos, rotary_sin, d, dev,
                      seq_int + max(s_new, sq if positional_q else 1) if seq_t is None else capacity)
    used = seq_t  # the lengths the attention sees (None: the whole cache)
    if (k is not None and s_new > 0) or rotary_cos is not None:
        # one launch: the append (each new key rotated by its position), q rotated (otherwise
        # every query at cache_seqlens: flash-attn's non-causal convention) and the new lengths
        rotary = rotary_cos is not None
        q_rot, seqused = ops.kvcache_append_(k_cache, v_cache, k, v, seq_t,
                                             0 if seq_t is not None else seq_int, cache_batch_idx,
                                             block_table, q if rotary else None, rotary_cos,
                                             rotary_sin, bool(rotary_interleaved), positional_q)
        if rotary:
            q = q_rot
        if cache_seqlens is not None:
            used = seqused
    elif seq_t is None and cache_seqlens is not None:
        used = torch.full((b,), seq_int, dtype=torch.int32, device=dev)
    out, lse = ops.fwd_kvcache(q, k_cache, v_cache, used, cache_leftpad, cache_batch_idx,
                               block_table, None, None, sq, 0, softmax_scale, left, right,
                               float(softcap), alibi_slopes, num_splits)
    return (out, lse) if return_softmax_lse else out
