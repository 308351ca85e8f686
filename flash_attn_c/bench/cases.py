"""Benchmark cases for ``python -m flash_attn_c.bench``: configurations, inputs, masks, FLOPs.

Layouts used throughout (flash-attn's, docs/conventions.md):
    ours, dense:   q (b, s, h, d), k/v (b, s, hk, d), dout like q
    ours, varlen:  q (total, h, d), k/v (total, hk, d), cu_seqlens int32 (b + 1,)
    peers (SDPA, eager): (b, h, s, d) contiguous copies of the same values; varlen batches are
                   padded to (b, h, max_seqlen, d) and masked explicitly.
"""
from __future__ import annotations

import dataclasses
import math
import random
from typing import Any, Optional, Sequence

import torch

from ..testing import cu_from_lens, visible_mask, window_sides

DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}
DIRECTIONS: tuple[str, ...] = ("fwd", "bwd", "fwdbwd")
# FLOP multipliers relative to the forward (FlashAttention's convention: the backward's five
# matmuls count 2.5x the forward's two).
DIRECTION_FLOP_FACTOR: dict[str, float] = {"fwd": 1.0, "bwd": 2.5, "fwdbwd": 3.5}


@dataclasses.dataclass(frozen=True)
class BenchCase:
    """One attention shape of the sweep (sq == sk for every case; see module docstring).

    For varlen cases ``seqlen`` is the maximum length and ``lengths`` holds the per-sequence
    lengths (q and k share them, so each sequence is square and causal alignments agree).
    """

    batch: int
    seqlen: int
    heads: int
    kv_heads: int
    head_dim: int
    causal: bool
    dtype: str
    window: tuple[int, int] = (-1, -1)
    dropout: float = 0.0
    lengths: Optional[tuple[int, ...]] = None  # varlen only, len == batch

    @property
    def varlen(self) -> bool:
        """True when the case runs through flash_attn_varlen_func."""
        return self.lengths is not None

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def softmax_scale(self) -> float:
        return self.head_dim ** -0.5

    def effective_window(self) -> tuple[int, int]:
        """(left, right) after applying causal (flash-attn: causal forces right = 0)."""
        left, right = self.window
        if self.causal:
            right = 0
        return left, right

    @property
    def has_window(self) -> bool:
        """True when a sliding window is set (beyond what causal alone means)."""
        return self.window != (-1, -1)

    @property
    def needs_explicit_peer_mask(self) -> bool:
        """Peers cannot express this case with is_causal alone (window or varlen padding)."""
        return self.has_window or self.varlen

    def seq_lengths(self) -> list[int]:
        """Per-sequence lengths (dense: ``batch`` copies of ``seqlen``)."""
        return list(self.lengths) if self.lengths is not None else [self.seqlen] * self.batch

    @property
    def total_tokens(self) -> int:
        return sum(self.seq_lengths())

    def fwd_flops(self) -> float:
        """Forward FLOPs, FlashAttention's convention (two matmuls, 2*d FLOPs per (i, j) pair each).

        Dense without window: 4*b*h*sq*sk*d, halved when causal. Window or varlen: 4*h*d times
        the exact number of unmasked (i, j) pairs.
        """
        if not self.needs_explicit_peer_mask:
            flops = 4.0 * self.batch * self.heads * self.seqlen * self.seqlen * self.head_dim
            return flops / 2 if self.causal else flops
        left, right = self.effective_window()
        pairs = sum(count_visible_pairs(n, n, left, right) for n in self.seq_lengths())
        return 4.0 * self.heads * self.head_dim * pairs

    def flops(self, direction: str) -> float:
        """FLOPs of ``direction`` in {"fwd", "bwd", "fwdbwd"}."""
        return self.fwd_flops() * DIRECTION_FLOP_FACTOR[direction]

    def score_matrix_bytes(self, element_bytes: int = 4) -> int:
        """Bytes of one (b, h, s, s) score matrix (padded for varlen), default fp32 elements."""
        return self.batch * self.heads * self.seqlen * self.seqlen * element_bytes

    def label(self) -> str:
        """Short human readable description, e.g. ``bf16 d=128 s=2048 b=8 h=16 causal``."""
        parts = [self.dtype, f"d={self.head_dim}", f"s={self.seqlen}", f"b={self.batch}",
                 f"h={self.heads}"]
        if self.kv_heads != self.heads:
            parts.append(f"hk={self.kv_heads}")
        parts.append("causal" if self.causal else "full")
        if self.has_window:
            parts.append(f"win={self.window[0]},{self.window[1]}")
        if self.varlen:
            parts.append(f"varlen(total={self.total_tokens})")
        if self.dropout > 0:
            parts.append(f"drop={self.dropout:g}")
        return " ".join(parts)


def count_visible_pairs(sq: int, sk: int, left: int, right: int) -> int:
    """Number of (i, j) with query i allowed to see key j under the bottom-right aligned mask.

    Query i sees key j iff i + sk - sq - left <= j <= i + sk - sq + right (-1 = unbounded),
    0 <= j < sk (docs/conventions.md; the same rule as flash_attn_c.testing.visible_mask).
    """
    if sq <= 0 or sk <= 0:
        return 0
    left, right = window_sides(sq, sk, left, right)  # a side near 2**63 overflowed the sums below
    i = torch.arange(sq, dtype=torch.int64)
    diag = i + (sk - sq)
    lo = (diag - left).clamp(min=0) if left >= 0 else torch.zeros_like(i)
    hi = (diag + right).clamp(max=sk - 1) if right >= 0 else torch.full_like(i, sk - 1)
    return int((hi - lo + 1).clamp(min=0).sum())


def random_lengths(batch: int, max_len: int, rng: random.Random) -> tuple[int, ...]:
    """Varlen lengths drawn uniformly from [ceil(max_len / 2), max_len]; the first is max_len
    so that ``max_seqlen`` equals the case's nominal seqlen."""
    lo = max(1, (max_len + 1) // 2)
    lengths = [max_len] + [rng.randint(lo, max_len) for _ in range(batch - 1)]
    return tuple(lengths)


@dataclasses.dataclass
class BenchInputs:
    """Random inputs of one case, shared by every backend (same values).

    q, k, v, dout: ours' layout (dense (b, s, h|hk, d) or varlen (total, h|hk, d)).
    padded_q/k/v/dout: dense (b, s, h|hk, d) views/tensors holding the same values (for varlen,
        the packed rows scattered into a padded batch; padding rows hold random values that every
        peer masks out).
    cu_seqlens: int32 (b + 1,) for varlen, else None.
    """

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    dout: torch.Tensor
    padded_q: torch.Tensor
    padded_k: torch.Tensor
    padded_v: torch.Tensor
    padded_dout: torch.Tensor
    cu_seqlens: Optional[torch.Tensor]
    max_seqlen: int


def make_inputs(case: BenchCase, device: torch.device, seed: int) -> BenchInputs:
    """Draw torch.randn inputs for ``case`` on ``device`` (never zeros: timing zeros flatters
    kernels whose speed depends on data, and hides NaN paths)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    dt = case.torch_dtype
    b, s, h, hk, d = case.batch, case.seqlen, case.heads, case.kv_heads, case.head_dim

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, device=device, dtype=dt)

    pq, pk, pv, pdo = randn(b, s, h, d), randn(b, s, hk, d), randn(b, s, hk, d), randn(b, s, h, d)
    if not case.varlen:
        return BenchInputs(pq, pk, pv, pdo, pq, pk, pv, pdo, None, s)
    lengths = case.seq_lengths()
    valid = torch.zeros(b, s, dtype=torch.bool, device=device)
    for bi, n in enumerate(lengths):
        valid[bi, :n] = True
    cu = cu_from_lens(lengths, device)
    # the peers' padding query rows see their sequence's keys (peer_attn_mask): with a zero dout
    # there, their throwaway rows add nothing to the peers' dK / dV, which equal ours
    pdo = pdo * valid[:, :, None, None].to(pdo.dtype)
    return BenchInputs(pq[valid].contiguous(), pk[valid].contiguous(), pv[valid].contiguous(),
                       pdo[valid].contiguous(), pq, pk, pv, pdo, cu, max(lengths))


def peer_attn_mask(case: BenchCase, device: torch.device) -> Optional[torch.Tensor]:
    """Explicit SDPA/eager mask, or None when is_causal (or nothing) expresses the case.

    Returns bool (b, 1, s, s) (varlen) or (1, 1, s, s) (window), True = attend. sq == sk per
    sequence, so the bottom-right aligned window equals the top-left one. Padding query rows of a
    varlen batch are allowed to see their sequence's valid keys (never a fully masked row, which
    some SDPA backends turn into NaN); their outputs are ignored.
    """
    if not case.needs_explicit_peer_mask:
        return None
    left, right = case.effective_window()
    s = case.seqlen
    base = visible_mask(s, s, (left, right), device=device)
    if not case.varlen:
        return base.view(1, 1, s, s)
    masks = []
    j = torch.arange(s, device=device)
    for n in case.seq_lengths():
        key_ok = (j < n).unsqueeze(0)                   # (1, s)
        row_pad = (torch.arange(s, device=device) >= n).unsqueeze(1)  # (s, 1)
        masks.append((base & key_ok) | (row_pad & key_ok))
    return torch.stack(masks).unsqueeze(1)


def build_cases(*, dtypes: Sequence[str], head_dims: Sequence[int], seqlens: Sequence[int],
                causal_values: Sequence[bool], batch: Optional[int], tokens: int,
                heads: Optional[int], hidden: int, gqa: Sequence[int], window: tuple[int, int],
                dropout: float, varlen: bool, seed: int) -> list[BenchCase]:
    """Cartesian product of the sweep axes.

    batch = ``batch`` or max(1, tokens // seqlen); heads = ``heads`` or max(1, hidden // d);
    kv_heads = heads // g for each GQA group size g (ValueError naming --gqa when g does not divide
    heads).
    """
    rng = random.Random(seed)
    cases: list[BenchCase] = []
    for dt in dtypes:
        for d in head_dims:
            for causal in causal_values:
                for s in seqlens:
                    b = batch if batch is not None else max(1, tokens // s)
                    h = heads if heads is not None else max(1, hidden // d)
                    for g in gqa:
                        if h % g != 0:
                            raise ValueError(f"--gqa: group size {g} does not divide the {h} heads of "
                                             f"head dim {d} (heads = --heads or --hidden // d)")
                        lengths = random_lengths(b, s, rng) if varlen else None
                        cases.append(BenchCase(batch=b, seqlen=s, heads=h, kv_heads=h // g,
                                               head_dim=d, causal=causal, dtype=dt,
                                               window=window, dropout=dropout, lengths=lengths))
    return cases


def geometric_mean(values: Sequence[float]) -> float:
    """Geometric mean of positive values (nan for an empty sequence)."""
    vals = [v for v in values if v > 0 and math.isfinite(v)]
    if not vals:
        return float("nan")
    return math.exp(sum(math.log(v) for v in vals) / len(vals))


def resolve_kernel_flags(args: Any, preset: dict[str, Any], dev: str, valid_peers: Sequence[str],
                         what: str = "") -> tuple[list[str], list[int], list[str]]:
    """The flags the training sweep and the decode mode read alike: (dtypes, head_dims, peers),
    each the flag or the preset's value, checked against the device; ValueError names the flag.
    what: a word for the peer error ("decode ")."""
    dtypes = args.dtypes or preset["dtypes"]
    if dev == "cuda" and "fp32" in dtypes:
        raise ValueError("--dtypes: CUDA kernels support fp16 and bf16 only")
    head_dims = args.head_dims or preset["head_dims"]
    if any(d > 256 for d in head_dims):
        raise ValueError(f"--head-dims: head dims must be <= 256, got {head_dims}")
    if args.peers is None:
        return dtypes, head_dims, list(preset["peers"])
    if args.peers.strip() == "none":
        return dtypes, head_dims, []
    peers = list(dict.fromkeys(x.strip() for x in args.peers.split(",") if x.strip()))
    bad = [x for x in peers if x not in valid_peers]
    if bad:
        raise ValueError(f"--peers: unknown {what}peer(s) {', '.join(bad)} for {dev}; "
                         f"choose from {', '.join(valid_peers)} or 'none'")
    return dtypes, head_dims, peers
