"""Decode mode of ``python -m flash_attn_c.bench`` (``--decode`` or ``--preset decode``).

Decoding is memory bound: one (or a few) query tokens per sequence read the whole K/V cache. The
mode times ``flash_attn_c.flash_attn_with_kvcache`` (attention only, no append, ``causal=True``)
on a contiguous cache and on paged copies of it, beside torch SDPA backends reading the same
cache contents, and reports GB/s and the fraction of the device's copy bandwidth measured in
the same run.

Layouts (n = query tokens per sequence, 1 for plain decoding, > 1 for speculative decoding):
    q                (b, n, h, d)            ours; peers get a (b, h, n, d) contiguous copy
    k_cache/v_cache  (b, s_cache, hk, d)     contiguous; every row filled up to s_cache
    paged k/v        (num_blocks, page, hk, d), num_blocks = b * ceil(s_cache / page)
    block_table      int32 (b, ceil(s_cache / page)), a random permutation of the blocks, so that
                     logical position t of row i lives in block block_table[i, t // page] at
                     offset t % page; the logical content equals the contiguous cache
    cache_seqlens    int32 (b,), all equal to s_cache
    peers' k/v       (b, hk, s_cache, d): ``view`` = k_cache.transpose(1, 2) (the same memory,
                     strided) or ``contiguous`` = a copy made outside the timed region
    out              (b, n, h, d) ours, (b, h, n, d) peers

Bytes per call (what a decode kernel has to move): K and V of every row, b * s_cache * hk * d
* 2 * element size, plus q and out, 2 * b * n * h * d * element size (the int32 lengths and
block table are left out). GB/s = bytes / time / 1e9; "copy" = a device-to-device
``dst.copy_(src)`` of a large buffer timed once at the start, counted as read + write bytes.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import time
import warnings
from typing import Any, Callable, ContextManager, Optional, Sequence

import torch
import torch.nn.functional as F

from ..testing import visible_mask
from .cases import DTYPES, resolve_kernel_flags
from .check import ERROR_FLOORS, FWD_FACTOR
from .env import collect_header, format_header
from .measure import TimingSettings, is_oom, release_memory, short_reason, time_ms, timing_method
from .generate import format_generate, time_generate
from .progress import make_progress
from .report import report_self_check

# ------------------------------------------------------------------------------------- presets
CUDA_DECODE_PEERS = ("sdpa_flash", "sdpa_cudnn", "sdpa_efficient", "sdpa_math")
CPU_DECODE_PEERS = ("sdpa", "sdpa_math")
PEER_LAYOUTS = ("view", "contiguous")
GIB = 2 ** 30
EXIT_CHECK_FAILED, EXIT_OURS_FAILED = 1, 3  # the CLI's exit codes (cli.py's docstring)
# "caches of 256 MB or more" in the summary and the targets: K + V bytes of the whole batch.
LARGE_CACHE_BYTES = 256 * 2 ** 20

DECODE_PRESETS: dict[str, dict[str, Any]] = {
    # The standard decode sweep (about 3 minutes on an H100): bf16, d 128, h/hk 32/8, 64/8,
    # 32/32, b 1..128, cache 1k..128k, contiguous + pages of 16 and 256. Configs whose K + V
    # exceed max_gib are skipped (with hk=8 that drops b=64,128 at 128k; with hk=32 b>=16 at
    # 128k, b>=64 at 32k and b=128 at 16k).
    "cuda": dict(dtypes=["bf16"], head_dims=[128], heads=[(32, 8), (64, 8), (32, 32)],
                 batches=[1, 4, 16, 64, 128], caches=[1024, 4096, 16384, 32768, 131072],
                 pages=[16, 256], peers=list(CUDA_DECODE_PEERS), layouts=list(PEER_LAYOUTS),
                 max_gib=24.0, copy_gib=1.0, generate=64),
    # A tiny grid that runs in seconds on a 2-core CPU (and exercises a partly filled last page:
    # 1000 is not a multiple of 16 or 64).
    "cpu": dict(dtypes=["fp32"], head_dims=[64], heads=[(4, 2), (4, 4)], batches=[1, 3],
                caches=[256, 1000], pages=[16, 64], peers=list(CPU_DECODE_PEERS),
                layouts=list(PEER_LAYOUTS), max_gib=1.0, copy_gib=1 / 16, generate=0),
}

# Flags of the training sweep that mean nothing in decode mode (and their "unset" values).
SWEEP_ONLY_FLAGS: dict[str, Any] = {
    "directions": None, "seqlens": None, "causal": None, "batch": None, "tokens": None,
    "heads": None, "hidden": None, "gqa": None, "window": (-1, -1), "dropout": 0.0,
    "varlen": False, "long": False, "long_seqlens": None, "eager_max_gib": None,
}
DECODE_FLAGS = ("decode_batches", "decode_caches", "decode_heads", "decode_pages",
                "decode_layouts", "decode_q_tokens", "decode_max_gib", "decode_copy_gib",
                "decode_generate")


# ------------------------------------------------------------------------------ argument types
def parse_head_pairs(text: str) -> list[tuple[int, int]]:
    """argparse type of --decode-heads: '32/8,64/8,32/32' -> [(32, 8), (64, 8), (32, 32)]."""
    pairs = []
    for item in [x.strip() for x in text.split(",") if x.strip()]:
        parts = item.split("/")
        try:
            h, hk = (int(p) for p in parts) if len(parts) == 2 else (int(item), int(item))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected h/hk pairs like 32/8, got {item!r}") from None
        if h < 1 or hk < 1 or h % hk != 0:
            raise argparse.ArgumentTypeError(
                f"h/hk needs h, hk >= 1 and h a multiple of hk, got {item!r}")
        pairs.append((h, hk))
    if not pairs:
        raise argparse.ArgumentTypeError("empty list")
    return pairs


def parse_pages(text: str) -> list[int]:
    """argparse type of --decode-pages: page sizes, e.g. '16,256'; 'none' = no paged variant
    (the contiguous cache always runs: it is what the paged ones are compared with)."""
    items = [x.strip().lower() for x in text.split(",") if x.strip()]
    pages = []
    for item in items:
        if item == "none":
            continue
        try:
            p = int(item)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"page sizes are integers >= 1 or 'none', got {item!r}") from None
        if p < 1:
            raise argparse.ArgumentTypeError(f"page sizes must be >= 1, got {p}")
        pages.append(p)
    if not items:
        raise argparse.ArgumentTypeError("empty list")
    return sorted(set(pages))


def add_decode_arguments(parser: argparse.ArgumentParser, int_list: Any, str_list: Any,
                         positive_int: Any, positive_float: Any) -> None:
    """The --decode option group (the list parsers are the CLI's own)."""
    g = parser.add_argument_group(
        "decode (--decode or --preset decode; comma separated lists)",
        "  Times flash_attn_with_kvcache (attention only, causal=True, cache_seqlens = the cache\n"
        "  length) on a contiguous (b, s, hk, d) cache and on paged copies of it (random\n"
        "  block_table), beside SDPA backends on the same cache contents. GB/s counts K+V of\n"
        "  every row plus q and out; 'copy' is a device-to-device copy timed at the start (read\n"
        "  + write bytes). Each config is checked (float64 oracle, and vs ours) before timing.\n"
        "  CUDA preset (about 3 min on an H100): bf16, d 128, h/hk 32/8,64/8,32/32,\n"
        "  b 1,4,16,64,128, cache 1k,4k,16k,32k,128k, pages 16,256, peers sdpa_flash,\n"
        "  sdpa_cudnn,sdpa_efficient,sdpa_math (MATH only where its fp32 K/V expanded to h\n"
        "  heads fit in free memory), each on the strided view and on a contiguous copy.\n"
        "  The whole grid of issue #12: --head-dims 64,128,256 --decode-pages 16,64,256.\n"
        "  Trimmed by --decode-max-gib 24 (K+V): 128k only for b<=16 (hk=8) and b<=4 (hk=32),\n"
        "  and for hk=32 also b<=16 at 32k and b<=64 at 16k (65 of 75 configs run).\n"
        "  CPU preset: fp32, d 64, h/hk 4/2,4/4, b 1,3, cache 256,1000, pages 16,64, peers\n"
        "  sdpa,sdpa_math (seconds). Writes results.json/.csv/.md and decode_gbps.png.")
    g.add_argument("--decode", action="store_true", help="decode mode (see above)")
    g.add_argument("--decode-batches", type=int_list, metavar="LIST", help="batch sizes")
    g.add_argument("--decode-caches", type=int_list, metavar="LIST",
                   help="cache lengths s_cache, 'k' suffix allowed: 1k,4k,128k")
    g.add_argument("--decode-heads", type=parse_head_pairs, metavar="LIST",
                   help="h/hk pairs: 32/8,64/8,32/32")
    g.add_argument("--decode-pages", type=parse_pages, metavar="LIST",
                   help="page sizes of the paged variants, e.g. 16,256; 'none' = contiguous "
                        "only (the contiguous cache always runs)")
    g.add_argument("--decode-layouts", type=str_list, metavar="LIST",
                   help="peers' K/V layouts: view (strided (b,hk,s,d) view of the cache), "
                        "contiguous (a copy made outside the timing); each peer keeps its faster "
                        "(default: both)")
    g.add_argument("--decode-q-tokens", type=positive_int, metavar="N",
                   help="query tokens per sequence (default 1; > 1 = speculative decoding, "
                        "bottom-right causal; SDPA peers then need an explicit mask)")
    g.add_argument("--decode-generate", type=int, metavar="N",
                   help="then time a transformers Llama's greedy generate() of N new tokens with "
                        "flash_attn_c vs sdpa (random weights, no download; default 64 on CUDA, "
                        "0 = off, the CPU default)")
    g.add_argument("--decode-max-gib", type=positive_float, metavar="GIB",
                   help="skip configs whose K+V exceed this (default 24 CUDA, 1 CPU); the run "
                        "holds at most two copies of a cache at once")
    g.add_argument("--decode-copy-gib", type=positive_float, metavar="GIB",
                   help="size of the copy-bandwidth buffer (default 1 CUDA, 1/16 CPU)")


# ------------------------------------------------------------------------------------- the plan
@dataclasses.dataclass(frozen=True)
class DecodeCase:
    """One decode shape: q (b, n, h, d) over a K/V cache of s_cache tokens per row."""

    dtype: str
    head_dim: int
    heads: int
    kv_heads: int
    batch: int
    cache_len: int
    q_tokens: int = 1

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def elem_bytes(self) -> int:
        return DTYPES[self.dtype].itemsize

    @property
    def kv_bytes(self) -> int:
        """K + V bytes of the whole batch: b * s_cache * hk * d * 2 * element size."""
        return self.batch * self.cache_len * self.kv_heads * self.head_dim * 2 * self.elem_bytes

    @property
    def io_bytes(self) -> int:
        """q + out bytes: 2 * b * n * h * d * element size."""
        return 2 * self.batch * self.q_tokens * self.heads * self.head_dim * self.elem_bytes

    @property
    def bytes_moved(self) -> int:
        """Bytes a decode call must move: K and V read, q read, out written."""
        return self.kv_bytes + self.io_bytes

    @property
    def softmax_scale(self) -> float:
        return self.head_dim ** -0.5

    def label(self) -> str:
        """e.g. ``bf16 d=128 h=32 hk=8 b=16 s=4096 n=1``."""
        return (f"{self.dtype} d={self.head_dim} h={self.heads} hk={self.kv_heads} "
                f"b={self.batch} s={self.cache_len} n={self.q_tokens}")


@dataclasses.dataclass
class DecodePlan:
    """Resolved decode settings (preset merged with flags)."""

    device: torch.device
    dtypes: list[str]
    head_dims: list[int]
    heads: list[tuple[int, int]]
    batches: list[int]
    caches: list[int]
    pages: list[int]
    peers: list[str]
    layouts: list[str]
    q_tokens: int
    max_bytes: int
    copy_bytes: int
    timing: TimingSettings
    budget_note: str = ""
    generate_tokens: int = 0


def check_decode_flags(args: argparse.Namespace) -> Optional[str]:
    """An error message when the decode and sweep flags are mixed, else None."""
    decode = args.decode or args.preset == "decode"
    if decode:
        if args.preset not in ("decode", "quick"):
            return (f"--decode runs the decode sweep; --preset {args.preset} is a training sweep "
                    "(use --preset decode or leave --preset out)")
        used = [f"--{name.replace('_', '-')}" for name, unset in SWEEP_ONLY_FLAGS.items()
                if getattr(args, name) != unset]
        if used:
            verb = "does" if len(used) == 1 else "do"
            return f"{', '.join(used)} {verb} not apply to --decode (training-sweep flags)"
        return None
    used = [f"--{name.replace('_', '-')}" for name in DECODE_FLAGS
            if getattr(args, name) is not None]
    if used:
        return f"{', '.join(used)} {'needs' if len(used) == 1 else 'need'} --decode (or --preset decode)"
    return None


def resolve_decode_plan(args: argparse.Namespace, device: torch.device) -> DecodePlan:
    """Merge the decode preset of ``device`` with the flags; ValueError names the bad flag."""
    dev = device.type
    preset = DECODE_PRESETS[dev]
    valid_peers = CUDA_DECODE_PEERS if dev == "cuda" else CPU_DECODE_PEERS
    dtypes, head_dims, peers = resolve_kernel_flags(args, preset, dev, valid_peers, "decode ")
    layouts = args.decode_layouts or preset["layouts"]
    bad = [x for x in layouts if x not in PEER_LAYOUTS]
    if bad:
        raise ValueError(f"--decode-layouts: unknown layout(s) {', '.join(bad)}; choose from "
                         f"{', '.join(PEER_LAYOUTS)}")
    caches = args.decode_caches or preset["caches"]
    q_tokens = args.decode_q_tokens or 1
    if q_tokens > min(caches):
        raise ValueError(f"--decode-q-tokens {q_tokens} exceeds the shortest cache "
                         f"({min(caches)}, --decode-caches)")
    max_gib = args.decode_max_gib or preset["max_gib"]
    max_bytes = int(max_gib * GIB)
    budget_note = f"configs whose K+V exceed {max_gib:g} GiB (--decode-max-gib) are skipped"
    if dev == "cuda":
        # The run holds two copies of a cache at once (paged copy, or the peers' contiguous
        # copy), plus do_bench's 256 MB L2 flush buffer: cap the budget at 45% of the device.
        total = torch.cuda.get_device_properties(device).total_memory
        if max_bytes > 0.45 * total:
            max_bytes = int(0.45 * total)
            budget_note = (f"configs whose K+V exceed {max_bytes / GIB:.1f} GiB (45% of the "
                           f"device's memory, below --decode-max-gib {max_gib:g}) are skipped")
    copy_gib = args.decode_copy_gib or preset["copy_gib"]
    generate = preset["generate"] if args.decode_generate is None else args.decode_generate
    if generate < 0:
        raise ValueError(f"--decode-generate must be >= 0 (0 = off), got {generate}")
    timing = TimingSettings.from_args(args, dev)
    return DecodePlan(device=device, dtypes=dtypes, head_dims=head_dims,
                      heads=args.decode_heads or preset["heads"],
                      batches=args.decode_batches or preset["batches"], caches=caches,
                      pages=preset["pages"] if args.decode_pages is None else args.decode_pages,
                      peers=peers, layouts=layouts, q_tokens=q_tokens, max_bytes=max_bytes,
                      copy_bytes=max(2 ** 20, int(copy_gib * GIB)), timing=timing,
                      budget_note=budget_note, generate_tokens=generate)


def build_decode_cases(plan: DecodePlan) -> tuple[list[DecodeCase], list[DecodeCase]]:
    """(cases to run, cases skipped for the memory budget), in sweep order: dtype, d, h/hk,
    batch, cache length."""
    run, skipped = [], []
    for dt in plan.dtypes:
        for d in plan.head_dims:
            for h, hk in plan.heads:
                for b in plan.batches:
                    for s in plan.caches:
                        case = DecodeCase(dt, d, h, hk, b, s, plan.q_tokens)
                        (skipped if case.kv_bytes > plan.max_bytes else run).append(case)
    return run, skipped


# ----------------------------------------------------------------------------- inputs and caches
@dataclasses.dataclass
class DecodeInputs:
    """q (b, n, h, d); k_cache, v_cache (b, s_cache, hk, d); cache_seqlens int32 (b,)."""

    q: torch.Tensor
    k_cache: torch.Tensor
    v_cache: torch.Tensor
    cache_seqlens: torch.Tensor


def make_decode_inputs(case: DecodeCase, device: torch.device, seed: int) -> DecodeInputs:
    """Random normal inputs (never zeros), every cache row filled to s_cache."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    b, s, h, hk, d, n = (case.batch, case.cache_len, case.heads, case.kv_heads, case.head_dim,
                         case.q_tokens)
    dt = case.torch_dtype
    q = torch.randn(b, n, h, d, generator=gen, device=device, dtype=dt)
    k = torch.randn(b, s, hk, d, generator=gen, device=device, dtype=dt)
    v = torch.randn(b, s, hk, d, generator=gen, device=device, dtype=dt)
    lens = torch.full((b,), s, dtype=torch.int32, device=device)
    return DecodeInputs(q, k, v, lens)


def make_paged_cache(k_cache: torch.Tensor, v_cache: torch.Tensor, page: int, seed: int
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Paged copies of a contiguous cache: the same logical content, blocks in random order.

    k_cache/v_cache (b, s, hk, d) -> k_paged/v_paged (b * nb, page, hk, d) and block_table int32
    (b, nb), nb = ceil(s / page), such that k_paged[block_table[i, t // page], t % page] ==
    k_cache[i, t] for every t < s. Slots past s in a row's last block hold random values (never
    read: the lengths stop at s).
    """
    b, s, hk, d = k_cache.shape
    nb = -(-s // page)
    gen = torch.Generator()
    gen.manual_seed(seed)
    perm = torch.randperm(b * nb, generator=gen).to(device=k_cache.device)
    block_table = perm.view(b, nb).to(torch.int32)
    pad = nb * page - s
    out = []
    for src in (k_cache, v_cache):
        paged = torch.empty(b * nb, page, hk, d, dtype=src.dtype, device=src.device)
        if pad:  # the tail of each row's last block: random (never read), not zeros
            blocks = torch.cat((src, paged.new_empty(b, pad, hk, d).normal_()), dim=1)
        else:
            blocks = src
        # logical block j of row i -> physical block perm[i * nb + j]
        paged.index_copy_(0, perm, blocks.reshape(b * nb, page, hk, d))
        del blocks
        out.append(paged)
    return out[0], out[1], block_table


def gather_paged(paged: torch.Tensor, block_table: torch.Tensor, length: int) -> torch.Tensor:
    """The logical (b, length, hk, d) cache a paged (num_blocks, page, hk, d) cache and its
    block_table (b, nb) describe (for tests and checks)."""
    b, nb = block_table.shape
    page = paged.shape[1]
    rows = paged[block_table.long().view(-1)].view(b, nb * page, *paged.shape[2:])
    return rows[:, :length]


# ---------------------------------------------------------------------------------- reference
def row_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, length: int, scale: float,
                  exact: bool = True) -> torch.Tensor:
    """Attention of one batch row, bottom-right causal, looping over K/V heads (GQA never
    repeats K/V, so a 128k-token row costs one head's keys in float64 at a time).

    q (n, h, d), k/v (s, hk, d) of which the first ``length`` keys are used -> (n, h, d).
    exact: float64 throughout (the oracle); else the matmuls in q's dtype and the softmax in
    fp32 (PyTorch eager in low precision, the error baseline). Query t sees key u iff
    u <= length - n + t; a query that sees no key gives 0.
    """
    n, h, d = q.shape
    hk = k.shape[1]
    g = h // hk
    ct = torch.float64 if exact else q.dtype
    visible = visible_mask(n, length, causal=True, device=q.device)  # (n, length)
    out = torch.empty(n, h, d, dtype=ct, device=q.device)
    for j in range(hk):
        qg = q[:, j * g:(j + 1) * g].transpose(0, 1).to(ct)  # (g, n, d)
        kj = k[:length, j].to(ct)                             # (length, d)
        vj = v[:length, j].to(ct)
        scores = (qg @ kj.transpose(0, 1)).to(torch.float64 if exact else torch.float32) * scale
        scores = scores.masked_fill(~visible, float("-inf"))
        probs = torch.softmax(scores, dim=-1).nan_to_num(0.0).to(ct)  # empty rows -> 0
        out[:, j * g:(j + 1) * g] = (probs @ vj).transpose(0, 1)
    return out


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    """Relative Frobenius error ||x - ref|| / ||ref|| in float64 (inf when x is not finite)."""
    x64, r64 = x.double(), ref.double()
    if not bool(torch.isfinite(x64).all()):
        return float("inf")
    return (x64 - r64).norm().item() / max(r64.norm().item(), 1e-300)


def decode_tolerance(dtype: str, eager_err: float) -> float:
    """Largest relative error vs the float64 oracle a correct decode output may have: the
    project's error-ratio rule, FWD_FACTOR x the error of PyTorch eager attention in ``dtype`` on
    the same rows (eager_err), plus an eighth of the dtype's floor for rows where eager is nearly
    exact."""
    return FWD_FACTOR * eager_err + 0.125 * ERROR_FLOORS[dtype][0]


# ------------------------------------------------------------------------------------- backends
def ours_fn(inputs: DecodeInputs, paged: Optional[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
            ) -> Callable[[], torch.Tensor]:
    """() -> out (b, n, h, d): flash_attn_with_kvcache on the contiguous cache (paged None) or on
    (k_paged, v_paged, block_table)."""
    import flash_attn_c  # lazily: --help works without the compiled extension

    if paged is None:
        kc, vc, bt = inputs.k_cache, inputs.v_cache, None
    else:
        kc, vc, bt = paged
    q, lens = inputs.q, inputs.cache_seqlens

    def run() -> torch.Tensor:
        return flash_attn_c.flash_attn_with_kvcache(q, kc, vc, cache_seqlens=lens,
                                                    block_table=bt, causal=True)
    return run


def _sdpa_backend(name: str) -> Optional[Any]:
    """The SDPBackend a peer is restricted to (None: torch's own choice)."""
    from torch.nn.attention import SDPBackend

    return {"sdpa": None, "sdpa_math": SDPBackend.MATH,
            "sdpa_flash": SDPBackend.FLASH_ATTENTION,
            "sdpa_cudnn": SDPBackend.CUDNN_ATTENTION,
            "sdpa_efficient": SDPBackend.EFFICIENT_ATTENTION}[name]


def math_peer_bytes(case: DecodeCase) -> int:
    """Memory the SDPA MATH backend takes on ``case`` (CUDA, low precision): K and V expanded to
    the h query heads and upcast to fp32, plus the fp32 scores and probabilities (b, h, n, s)."""
    kv = 2 * case.batch * case.heads * case.cache_len * case.head_dim * 4
    scores = 3 * case.batch * case.heads * case.q_tokens * case.cache_len * 4
    return kv + scores


def peer_unsupported(name: str, case: DecodeCase, free_bytes: Optional[int] = None
                     ) -> Optional[str]:
    """Why a peer cannot run ``case`` at all (n.a. without trying), or None. free_bytes: the
    device memory free now (CUDA); a MATH peer that would not fit is not tried, because its
    out-of-memory made the next config's first timing (ours) 13-19% slow (GPU runs 22-24)."""
    if name == "sdpa_flash" and case.q_tokens > 1:
        return ("SDPA FLASH_ATTENTION takes no attn_mask; > 1 query token needs the "
                "bottom-right causal mask")
    if name == "sdpa_math" and free_bytes is not None:
        need = math_peer_bytes(case)
        if need > 0.8 * free_bytes:
            return (f"SDPA MATH would need about {need / 2**30:.1f} GiB (fp32 K/V expanded to "
                    f"{case.heads} heads), {free_bytes / 2**30:.1f} GiB free: not tried")
    return None


def free_device_bytes(device: torch.device) -> Optional[int]:
    """Free memory of a CUDA device (None elsewhere)."""
    if device.type != "cuda":
        return None
    return int(torch.cuda.mem_get_info(device)[0])


def peer_kv(inputs: DecodeInputs, layout: str) -> tuple[torch.Tensor, torch.Tensor]:
    """K and V as (b, hk, s, d): the strided view of the cache or a contiguous copy."""
    k, v = inputs.k_cache.transpose(1, 2), inputs.v_cache.transpose(1, 2)
    if layout == "contiguous":
        return k.contiguous(), v.contiguous()
    return k, v


def peer_fn(name: str, case: DecodeCase, q_bhnd: torch.Tensor, k: torch.Tensor,
            v: torch.Tensor) -> Callable[[], torch.Tensor]:
    """() -> out (b, h, n, d): torch SDPA, to be called inside ``peer_context(name)``.

    q_bhnd (b, h, n, d); k/v (b, hk, s, d). One query token at the end of a fully filled cache
    sees every key, so no mask is needed (is_causal=False); n > 1 tokens get the bottom-right
    causal mask as a boolean (1, 1, n, s) attn_mask. GQA: enable_gqa=True.
    """
    n, s = case.q_tokens, case.cache_len
    mask = (visible_mask(n, s, causal=True, device=q_bhnd.device).view(1, 1, n, s)
            if n > 1 else None)
    extra = {"enable_gqa": True} if case.heads != case.kv_heads else {}

    def run() -> torch.Tensor:
        return F.scaled_dot_product_attention(q_bhnd, k, v, attn_mask=mask,
                                              scale=case.softmax_scale, **extra)
    return run


def peer_context(name: str) -> ContextManager:
    """The backend selection held around a peer's check call and its whole timing (entered once,
    not per call: its Python cost would count against small configs)."""
    backend = _sdpa_backend(name) if name in CUDA_DECODE_PEERS + CPU_DECODE_PEERS else None
    if backend is None:
        return contextlib.nullcontext()
    from torch.nn.attention import sdpa_kernel
    return sdpa_kernel([backend])


def failing_peer_fn(kind: str) -> Callable[[], torch.Tensor]:
    """Test hook (--inject-failing-peer): a peer that raises RuntimeError or MemoryError."""

    def run() -> torch.Tensor:
        if kind == "oom":
            raise MemoryError("injected out-of-memory (test hook)")
        raise RuntimeError("injected failure (test hook)")
    return run


def first_call_with_reason(fn: Callable[[], torch.Tensor]) -> torch.Tensor:
    """Call fn once; if it raises, re-raise with the warnings torch gave (SDPA says why a forced
    backend refused in UserWarnings, and only "No available kernel" in the error)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            return fn()
        except Exception as exc:
            why: list[str] = []
            for w in caught:
                line = " ".join(str(w.message).split())
                if line and line not in why:
                    why.append(line)
            if why and not is_oom(exc):
                text = short_reason(exc, 80) + " [" + " | ".join(why)[:240] + "]"
                raise RuntimeError(text) from exc
            raise


# ------------------------------------------------------------------------------ copy bandwidth
def measure_copy_bandwidth(device: torch.device, nbytes: int, timing: TimingSettings
                           ) -> dict[str, Any]:
    """Device copy bandwidth: ``dst.copy_(src)`` of nbytes, timed like every measurement,
    counted as read + write (2 * nbytes / time). Returns gbps, ms, bytes, method."""
    n = nbytes // 2
    src = torch.randn(n, dtype=torch.bfloat16, device=device)
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), device, timing)
    if not torch.equal(dst, src):
        raise RuntimeError("copy-bandwidth buffer: dst != src after the copy")
    moved = 2 * n * 2
    del src, dst
    release_memory(device)
    return {"gbps": moved / (ms * 1e-3) / 1e9, "ms": ms, "bytes": moved,
            "method": f"dst.copy_(src) of {n * 2 / GIB:.3g} GiB on {device.type}, "
                      f"read + write bytes / median time"}


# ------------------------------------------------------------------------------------ the rows
def base_row(case: DecodeCase, backend: str, cid: int, page: Optional[int]) -> dict[str, Any]:
    """A result row with every field of ``decode_report.DECODE_ROW_FIELDS``."""
    return {
        "config_id": cid, "dtype": case.dtype, "head_dim": case.head_dim, "heads": case.heads,
        "kv_heads": case.kv_heads, "batch": case.batch, "cache_len": case.cache_len,
        "q_tokens": case.q_tokens, "kv_bytes": case.kv_bytes, "bytes": case.bytes_moved,
        "backend": backend, "page_size": page, "layout": None, "status": "ok", "reason": "",
        "check": "", "err_vs_ref": None, "err_vs_ours": None, "ms": None, "gbps": None,
        "frac_copy": None, "ratio_to_best_sdpa": None, "ratio_to_contiguous": None,
        "ms_view": None, "ms_contiguous": None,
    }


def _fail(row: dict[str, Any], exc: BaseException, is_ours: bool) -> None:
    row["status"] = "OOM" if is_oom(exc) else ("ERR" if is_ours else "n.a.")
    row["reason"] = short_reason(exc)


def check_output(row: dict[str, Any], out: torch.Tensor, refs: dict[int, torch.Tensor],
                 ours_out: Optional[torch.Tensor], tol: float) -> None:
    """Fill err_vs_ref (rows of ``refs``, float64 oracle), err_vs_ours (whole output vs ours on
    the contiguous cache) and check = "ok" / "mismatch". out (b, n, h, d)."""
    idx = sorted(refs)
    got = torch.stack([out[i] for i in idx])
    want = torch.stack([refs[i] for i in idx])
    row["err_vs_ref"], row["err_vs_ours"] = rel_err(got, want), None
    ok = row["err_vs_ref"] <= tol
    if ours_out is not None and out is not ours_out:
        row["err_vs_ours"] = rel_err(out, ours_out)
        ok = ok and row["err_vs_ours"] <= 2 * tol
    row["check"] = "ok" if ok else "mismatch"


def run_decode_case(case: DecodeCase, cid: int, plan: DecodePlan, seed: int, progress: Any,
                    inject_peer: Optional[str] = None) -> list[dict[str, Any]]:
    """Check then time every backend on one case; returns one row per backend.

    Order (at most two caches alive at once): ours on the contiguous cache; each page size
    (paged copy built, measured, freed); then per peer layout (the contiguous copy made, every
    peer measured, freed). Each backend's first call is checked against the float64 oracle on
    batch rows 0 and b-1 and against ours on the whole output, then timed.
    """
    dev, timing = plan.device, plan.timing
    names = (["ours"] + [f"ours_page{p}" for p in plan.pages] + list(plan.peers)
             + ([f"test_{inject_peer}"] if inject_peer else []))
    rows = {name: base_row(case, name, cid, None) for name in names}
    for p in plan.pages:
        rows[f"ours_page{p}"]["page_size"] = p
    n_steps = 1 + len(plan.pages) + (len(names) - 1 - len(plan.pages)) * len(plan.layouts)
    try:
        inputs = make_decode_inputs(case, dev, seed)
        ref_rows = sorted({0, case.batch - 1})
        refs, eager = {}, []
        for i in ref_rows:
            args = (inputs.q[i], inputs.k_cache[i], inputs.v_cache[i], case.cache_len,
                    case.softmax_scale)
            refs[i] = row_attention(*args)
            eager.append(row_attention(*args, exact=False))
        tol = decode_tolerance(case.dtype, rel_err(torch.stack(eager),
                                                   torch.stack([refs[i] for i in ref_rows])))
        del eager
    except Exception as exc:  # inputs do not fit: every backend is affected alike
        for name, row in rows.items():
            _fail(row, exc, name.startswith("ours"))
        release_memory(dev, collect=True)
        progress.update(n_steps)
        return list(rows.values())

    def measure(row: dict[str, Any], fn: Callable[[], torch.Tensor],
                ours_out: Optional[torch.Tensor], to_bnhd: bool) -> Optional[torch.Tensor]:
        """Check call then timing, inside no_grad and the backend's context; returns the output
        (b, n, h, d) or None on failure."""
        name = row["backend"]
        progress.set_postfix_str(f"{name} {case.label()}", refresh=False)
        try:
            with torch.no_grad(), peer_context(name):
                out = first_call_with_reason(fn)
                if to_bnhd:
                    out = out.transpose(1, 2)
                check_output(row, out, refs, ours_out, tol)
                with warnings.catch_warnings():  # per-call UserWarnings would flood the console
                    warnings.simplefilter("ignore", UserWarning)
                    row["ms"] = time_ms(fn, dev, timing)
            return out
        except Exception as exc:
            _fail(row, exc, name.startswith("ours"))
            return None
        finally:
            progress.update(1)

    ours_out = measure(rows["ours"], ours_fn(inputs, None), None, False)
    for p in plan.pages:
        row = rows[f"ours_page{p}"]
        try:
            paged = make_paged_cache(inputs.k_cache, inputs.v_cache, p, seed + p)
        except Exception as exc:
            _fail(row, exc, True)
            progress.update(1)
            continue
        measure(row, ours_fn(inputs, paged), ours_out, False)
        del paged
        release_memory(dev)

    peer_names = [n for n in names if not n.startswith("ours")]
    per_layout: dict[str, dict[str, dict[str, Any]]] = {n: {} for n in peer_names}
    q_peer = inputs.q.transpose(1, 2).contiguous()  # (b, h, n, d)
    for layout in plan.layouts:
        try:
            k, v = peer_kv(inputs, layout)
        except Exception as exc:
            for name in peer_names:
                per_layout[name][layout] = {"status": "OOM" if is_oom(exc) else "n.a.",
                                            "reason": short_reason(exc)}
            progress.update(len(peer_names))
            continue
        for name in peer_names:
            trial = base_row(case, name, cid, None)
            reason = (None if name.startswith("test_")
                      else peer_unsupported(name, case, free_device_bytes(dev)))
            if reason is not None:
                trial["status"], trial["reason"] = "n.a.", reason
                progress.update(1)
            else:
                fn = (failing_peer_fn(inject_peer) if name.startswith("test_")
                      else peer_fn(name, case, q_peer, k, v))
                measure(trial, fn, ours_out, True)
            per_layout[name][layout] = trial
        del k, v
        release_memory(dev)
    for name in peer_names:
        merge_layouts(rows[name], per_layout[name])
    del inputs, ours_out, refs
    release_memory(dev)
    return list(rows.values())


def merge_layouts(row: dict[str, Any], trials: dict[str, dict[str, Any]]) -> None:
    """A peer's row from its per-layout trials: the fastest ok layout wins (its check results
    come along); no ok layout: n.a. (OOM if every failure was one) with each layout's reason."""
    for layout, t in trials.items():
        row[f"ms_{layout}"] = t.get("ms") if t.get("status") == "ok" else None
    ok = [(t["ms"], layout, t) for layout, t in trials.items()
          if t.get("status") == "ok" and t.get("ms") is not None]
    if ok:
        ms, layout, t = min(ok, key=lambda x: x[0])
        row.update(status="ok", layout=layout, ms=ms, check=t["check"],
                   err_vs_ref=t["err_vs_ref"], err_vs_ours=t["err_vs_ours"])
        failed = [f"{lay}: {x['reason']}" for lay, x in trials.items() if x.get("status") != "ok"]
        # a wrong answer on the slower layout is reported too
        failed += [f"{lay}: mismatch (rel. error vs oracle {x['err_vs_ref']:.2e})"
                   for lay, x in trials.items() if x.get("status") == "ok" and lay != layout
                   and x.get("check") == "mismatch"]
        if len(failed) > len([x for x in trials.values() if x.get("status") != "ok"]):
            row["check"] = "mismatch"
        row["reason"] = "; ".join(failed)
        return
    statuses = {t.get("status") for t in trials.values()}
    row["status"] = "OOM" if statuses == {"OOM"} else "n.a."
    reasons = {t.get("reason", "") for t in trials.values()}
    row["reason"] = (reasons.pop() if len(reasons) == 1
                     else "; ".join(f"{lay}: {t.get('reason', '')}" for lay, t in trials.items()))


def fill_rates(rows: Sequence[dict[str, Any]], copy_gbps: Optional[float]) -> None:
    """gbps and frac_copy of every timed row; ratio_to_best_sdpa (this row's GB/s over the best
    ok peer's of its config) and, for paged rows, ratio_to_contiguous (over ours')."""
    by_cfg: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        by_cfg.setdefault(r["config_id"], []).append(r)
        if r["status"] == "ok" and r["ms"]:
            r["gbps"] = r["bytes"] / (r["ms"] * 1e-3) / 1e9
            r["frac_copy"] = r["gbps"] / copy_gbps if copy_gbps else None
    for group in by_cfg.values():
        best = max((r["gbps"] for r in group if not r["backend"].startswith("ours")
                    and r["status"] == "ok" and r["gbps"] and r.get("check") != "mismatch"),
                   default=None)  # a peer with a wrong answer is no bar
        contiguous = next((r["gbps"] for r in group if r["backend"] == "ours"
                           and r["status"] == "ok"), None)
        for r in group:
            if not r["backend"].startswith("ours") or r["gbps"] is None:
                continue
            r["ratio_to_best_sdpa"] = r["gbps"] / best if best else None
            if r["page_size"] is not None and contiguous:
                r["ratio_to_contiguous"] = r["gbps"] / contiguous


# ---------------------------------------------------------------------------------- self-check
def decode_check_configs(plan: DecodePlan) -> list[dict[str, Any]]:
    """Small self-check shapes: every dtype, d and h/hk of the plan, 3 rows of different lengths
    (a row of q_tokens + 1 keys, a partly filled last page), contiguous and every page size."""
    n = plan.q_tokens
    configs = []
    for dt in plan.dtypes:
        for d in plan.head_dims:
            for h, hk in plan.heads:
                for page in [None] + list(plan.pages):
                    configs.append(dict(dtype=dt, head_dim=d, heads=h, kv_heads=hk, batch=3,
                                        cache_len=300, lengths=[300, 171, n + 1], q_tokens=n,
                                        page=page))
    return configs


def run_decode_check(configs: Sequence[dict[str, Any]], device: torch.device, seed: int,
                     perturb: float = 0.0) -> list[dict[str, Any]]:
    """Ours vs the float64 oracle on every config; pass rule: error <= max(floor, 2x the error
    of eager attention in the same dtype) (the suite's error-ratio rule). ``perturb`` (test
    hook) scales our output by (1 + perturb)."""
    results = []
    for i, c in enumerate(configs):
        label = (f"{c['dtype']} d={c['head_dim']} h={c['heads']} hk={c['kv_heads']} "
                 f"b={c['batch']} lens={','.join(map(str, c['lengths']))} n={c['q_tokens']} "
                 + ("contiguous" if c["page"] is None else f"page={c['page']}"))
        try:
            case = DecodeCase(c["dtype"], c["head_dim"], c["heads"], c["kv_heads"], c["batch"],
                              c["cache_len"], c["q_tokens"])
            inputs = make_decode_inputs(case, device, seed + i)
            inputs.cache_seqlens = torch.tensor(c["lengths"], dtype=torch.int32, device=device)
            paged = (None if c["page"] is None else
                     make_paged_cache(inputs.k_cache, inputs.v_cache, c["page"], seed + i))
            out = ours_fn(inputs, paged)()
            if perturb:
                out = out * (1.0 + perturb)
            ref, eager = [], []
            for bi, length in enumerate(c["lengths"]):
                args = (inputs.q[bi], inputs.k_cache[bi], inputs.v_cache[bi], length,
                        case.softmax_scale)
                ref.append(row_attention(*args))
                eager.append(row_attention(*args, exact=False))
            ref_t, eager_t = torch.stack(ref), torch.stack(eager)
            err, base = rel_err(out, ref_t), rel_err(eager_t, ref_t)
            tol = decode_tolerance(c["dtype"], base)
            results.append({"config": label, "err": err, "eager_err": base, "tol": tol,
                            "ok": err <= tol})
        except Exception as exc:  # recorded as failed; the run stops with exit code 1
            results.append({"config": label, "ok": False,
                            "error": f"{type(exc).__name__}: {exc}".splitlines()[0]})
    return results


def format_decode_check_row(r: dict[str, Any]) -> str:
    """One console line per self-check config."""
    if "error" in r:
        return f"  FAIL  {r['config']}: {r['error']}"
    return (f"  {'ok  ' if r['ok'] else 'FAIL'}  {r['config']:<58} err {r['err']:.2e} "
            f"(tol {r['tol']:.1e}, eager {r['eager_err']:.1e})")


# --------------------------------------------------------------------------------------- notes
def decode_notes(plan: DecodePlan, skipped: Sequence[DecodeCase], copy: dict[str, Any]
                 ) -> list[str]:
    """What the numbers mean, printed and written with the results."""
    notes = [
        "ours: flash_attn_c.flash_attn_with_kvcache(q, k_cache, v_cache, cache_seqlens=int32 "
        "(b,) = s_cache, block_table=None or int32 (b, ceil(s/page)), causal=True), attention "
        "only (no k/v append); paged caches (num_blocks, page, hk, d) hold the same logical "
        "content as the contiguous (b, s, hk, d) cache, blocks in random order",
        "SDPA peers: F.scaled_dot_product_attention forced to one backend (sdpa_kernel), q "
        "(b, h, n, d), K/V (b, hk, s, d) as the strided view of the same cache (view) or a "
        "contiguous copy made outside the timing (contiguous); each peer keeps its faster "
        "layout (the 'c' mark in the table: contiguous); enable_gqa=True when h != hk; one "
        "query token needs no mask, n > 1 get a bottom-right boolean mask (FLASH: n.a.)",
        "bytes per call: K+V of every row (b*s*hk*d*2*elem) + q + out (2*b*n*h*d*elem); "
        "GB/s = bytes / time / 1e9; every backend is credited the same bytes",
        f"copy bandwidth: {copy['gbps']:.0f} GB/s ({copy['method']}); %copy = GB/s / that",
        f"timing: {timing_method(plan.device)} after warm-up"
        + ("; do_bench flushes the L2 cache before every timed call, so small caches are read "
           "from memory too" if "do_bench" in timing_method(plan.device) else "")
        + ("; a call that syncs with the host (e.g. reads cache_seqlens) pays its launch "
           "latency in the time" if plan.device.type == "cuda" else ""),
        "check before timing: every backend vs the float64 oracle on batch rows 0 and b-1 and "
        "vs ours (contiguous) on the whole output; '!' marks a mismatch",
        "ours/best = ours' GB/s over the best SDPA peer's on the same config (> 1: ours "
        "faster); paged/contig = a paged variant over ours on the contiguous cache",
    ]
    if skipped:
        notes.append(f"{plan.budget_note}: {len(skipped)} skipped ("
                     + ", ".join(f"h/hk={c.heads}/{c.kv_heads} b={c.batch} s={c.cache_len}"
                                 for c in skipped[:12])
                     + (", ..." if len(skipped) > 12 else "") + ")")
    return notes


# ---------------------------------------------------------------------------------------- main
def main_decode(args: argparse.Namespace, parser: argparse.ArgumentParser,
                device: torch.device, argv: Optional[Sequence[str]]) -> int:
    """Decode mode's entry point (called by cli.main); returns the exit code."""
    from . import decode_report as rep
    from .report import write_json

    try:
        plan = resolve_decode_plan(args, device)
    except ValueError as exc:
        parser.error(str(exc))
    cases, skipped = build_decode_cases(plan)
    if not cases and not args.check_only:
        parser.error(f"--decode: every configuration exceeds the memory budget "
                     f"({plan.max_bytes / GIB:.2f} GiB, --decode-max-gib)")
    if args.threads and device.type == "cpu":
        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    header = collect_header(device, argv)
    print(format_header(header, {"mode": "decode", "timing": timing_method(device)}), flush=True)
    os.makedirs(args.out, exist_ok=True)

    check_results: list[dict[str, Any]] = []
    if not args.skip_check:
        configs = decode_check_configs(plan)
        print(f"\nself-check: ours vs float64 oracle, decode ({len(configs)} configs; rel. "
              "Frobenius errors)", flush=True)
        check_results = run_decode_check(configs, device, args.seed,
                                         perturb=0.05 if args.inject_check_failure else 0.0)
        if not report_self_check(check_results, format_decode_check_row, header, args.out,
                                 "decode configs"):
            return EXIT_CHECK_FAILED
        if args.check_only:
            return 0

    copy = measure_copy_bandwidth(device, plan.copy_bytes, plan.timing)
    print(f"\ncopy bandwidth: {copy['gbps']:.1f} GB/s ({copy['method']})", flush=True)
    n_peer = len(plan.peers) + (1 if args.inject_failing_peer else 0)
    per_case = 1 + len(plan.pages) + n_peer * len(plan.layouts)
    total = len(cases) * per_case
    print(f"\ndecode sweep: {len(cases)} configs x {per_case} measurements "
          f"(ours, pages {','.join(map(str, plan.pages)) or 'none'}, peers "
          f"{','.join(plan.peers) or 'none'} x layouts {','.join(plan.layouts)})"
          + (f"; {len(skipped)} skipped (memory budget)" if skipped else ""), flush=True)
    progress = make_progress(total, "decode", not args.no_progress)
    rows: list[dict[str, Any]] = []
    for cid, case in enumerate(cases):
        rows += run_decode_case(case, cid, plan, args.seed + cid, progress,
                                inject_peer=args.inject_failing_peer)
    progress.close()
    fill_rates(rows, copy["gbps"])

    notes = decode_notes(plan, skipped, copy)
    summary = rep.summarize_decode(rows, copy["gbps"])
    targets = rep.decode_targets(rows, summary)
    print("\nnotes:\n" + "\n".join(f"  - {n}" for n in notes))
    print(rep.format_decode_table(rows))
    fails = rep.decode_failure_notes(rows)
    if fails:
        print("\nnot run / mismatches:\n" + "\n".join(f"  - {f}" for f in fails))
    print("\nsummary:\n" + rep.format_decode_summary(summary))
    print("\ntargets (issue):\n" + rep.format_targets(targets))
    generated = None
    if plan.generate_tokens:
        generated = time_generate(device, plan.generate_tokens)
        print("\n" + format_generate(generated), flush=True)

    payload = {"header": header, "mode": "decode",
               "settings": {k: v for k, v in vars(args).items()},
               "plan": {"dtypes": plan.dtypes, "head_dims": plan.head_dims,
                        "heads": [list(x) for x in plan.heads], "batches": plan.batches,
                        "caches": plan.caches, "pages": plan.pages, "peers": plan.peers,
                        "layouts": plan.layouts, "q_tokens": plan.q_tokens,
                        "max_bytes": plan.max_bytes,
                        "skipped": [dataclasses.asdict(c) for c in skipped]},
               "copy_bandwidth": copy, "notes": notes, "check": check_results,
               "results": rows, "summary": summary, "targets": targets, "generate": generated}
    written = [os.path.join(args.out, "results.json"), os.path.join(args.out, "results.csv")]
    write_json(written[0], payload)
    rep.write_decode_csv(written[1], rows)
    if not args.no_plots:
        dev_label = (header["device_name"] if device.type == "cuda"
                     else f"CPU, {header.get('torch_threads')} threads")
        plot = rep.write_decode_plot(args.out, rows, copy["gbps"], dev_label)
        if plot is None:
            print("plots: matplotlib not available, no PNG written")
        else:
            written.append(plot)
    written.append(os.path.join(args.out, "results.md"))
    with open(written[-1], "w") as f:
        f.write(rep.decode_markdown(header, notes, rows, summary, targets, check_results, copy))
        if generated is not None:
            f.write("\n## generate()\n\n```\n" + format_generate(generated) + "\n```\n")
    print(f"\nwrote {', '.join(written)}")
    print(f"total time {time.perf_counter() - t_start:.1f} s")
    ours_bad = [r for r in rows if r["backend"].startswith("ours")
                and (r["status"] == "ERR" or r["check"] == "mismatch")]
    if ours_bad:
        print(f"\nours failed (ERR) or mismatched the oracle on {len(ours_bad)} measurements; "
              "see the table", file=sys.stderr)
        return EXIT_OURS_FAILED
    return 0

