"""Backends timed by ``python -m flash_attn_c.bench``: ours and the peers.

Every backend turns (case, inputs) into a :class:`Prepared`: differentiable leaf tensors, a
``forward()`` closure returning the attention output, the output gradient to feed backward, and a
context (e.g. ``sdpa_kernel``) to hold while it runs. Copies and masks are made in ``prepare``,
outside every timed region.

Mask semantics (printed in the run's notes): our causal is bottom-right aligned, SDPA's is_causal
top-left; the sweep keeps sq == sk where both agree. Window and varlen cases give SDPA/eager an
explicit boolean mask (varlen: padded batch); SDPA FLASH_ATTENTION takes no mask, so it is n.a.
there.
"""
from __future__ import annotations

import contextlib
import dataclasses
import warnings
from typing import Callable, ContextManager, Optional

import torch
import torch.nn.functional as F

from ..testing import visible_mask
from .cases import BenchCase, BenchInputs, peer_attn_mask


@dataclasses.dataclass
class Prepared:
    """A backend ready to run one case.

    leaves: tensors the backward differentiates with respect to (q, k, v in the backend's layout).
    forward: () -> output tensor (layout of the backend).
    dout: gradient of the output, same shape as forward()'s result.
    context: () -> context manager held around every call (backend selection).
    """

    leaves: tuple[torch.Tensor, ...]
    forward: Callable[[], torch.Tensor]
    dout: torch.Tensor
    context: Callable[[], ContextManager] = contextlib.nullcontext


@dataclasses.dataclass
class Backend:
    """A named attention implementation.

    unsupported(case) returns a reason string when the backend cannot run the case (reported as
    n.a.), or None. prepare(case, inputs) builds the :class:`Prepared`.
    """

    name: str
    is_ours: bool
    unsupported: Callable[[BenchCase], Optional[str]]
    prepare: Callable[[BenchCase, BenchInputs], Prepared]
    semantics: str = ""


def _leaf(x: torch.Tensor) -> torch.Tensor:
    """A differentiable leaf sharing x's storage (no copy)."""
    return x.detach().requires_grad_(True)


# ----------------------------------------------------------------------------------------- ours
def _prepare_ours(case: BenchCase, inputs: BenchInputs) -> Prepared:
    import flash_attn_c  # imported lazily: --help must work without the compiled extension

    q, k, v = _leaf(inputs.q), _leaf(inputs.k), _leaf(inputs.v)
    window = case.window
    if case.varlen:
        cu, max_s = inputs.cu_seqlens, inputs.max_seqlen

        def forward() -> torch.Tensor:
            return flash_attn_c.flash_attn_varlen_func(
                q, k, v, cu, cu, max_s, max_s, dropout_p=case.dropout,
                softmax_scale=case.softmax_scale, causal=case.causal, window_size=window)
    else:
        def forward() -> torch.Tensor:
            return flash_attn_c.flash_attn_func(
                q, k, v, dropout_p=case.dropout, softmax_scale=case.softmax_scale,
                causal=case.causal, window_size=window)
    return Prepared((q, k, v), forward, inputs.dout)


def ours_backend() -> Backend:
    return Backend("ours", True, lambda case: None, _prepare_ours,
                   "flash_attn_c (bottom-right causal; varlen via flash_attn_varlen_func)")


# ---------------------------------------------------------------------------------------- peers
def _peer_tensors(inputs: BenchInputs) -> tuple[torch.Tensor, ...]:
    """(b, h, s, d) contiguous copies of the padded inputs: q, k, v (leaves) and dout."""
    with torch.no_grad():
        q, k, v, do = (x.transpose(1, 2).contiguous() for x in
                       (inputs.padded_q, inputs.padded_k, inputs.padded_v, inputs.padded_dout))
    return _leaf(q), _leaf(k), _leaf(v), do


def _sdpa_prepare(sdpa_backend: Optional[object]) -> Callable[[BenchCase, BenchInputs], Prepared]:
    """prepare() for torch SDPA restricted to ``sdpa_backend`` (None: torch's own choice)."""

    def prepare(case: BenchCase, inputs: BenchInputs) -> Prepared:
        q, k, v, do = _peer_tensors(inputs)
        mask = peer_attn_mask(case, q.device)
        is_causal = case.causal and mask is None
        gqa = case.kv_heads != case.heads
        extra = {"enable_gqa": True} if gqa else {}

        def forward() -> torch.Tensor:
            return F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=case.dropout, is_causal=is_causal,
                scale=case.softmax_scale, **extra)

        def context() -> ContextManager:
            stack = contextlib.ExitStack()
            # A backend that cannot take the case raises (shown n.a. with its reason); its
            # per-call "why not" UserWarnings would only flood the console.
            stack.enter_context(warnings.catch_warnings())
            warnings.simplefilter("ignore", UserWarning)
            if sdpa_backend is not None:
                from torch.nn.attention import sdpa_kernel
                stack.enter_context(sdpa_kernel([sdpa_backend]))
            return stack

        return Prepared((q, k, v), forward, do, context)

    return prepare


def _flash_unsupported(case: BenchCase) -> Optional[str]:
    if case.needs_explicit_peer_mask:
        return "SDPA FLASH_ATTENTION takes no attn_mask (window/varlen need one)"
    return None


def _eager_unsupported_factory(max_bytes: int) -> Callable[[BenchCase], Optional[str]]:
    def unsupported(case: BenchCase) -> Optional[str]:
        nbytes = case.score_matrix_bytes(4)
        if nbytes > max_bytes:
            return (f"skipped: fp32 (b,h,s,s) scores {nbytes / 2**30:.1f} GiB > "
                    f"{max_bytes / 2**30:.1f} GiB (--eager-max-gib)")
        return None
    return unsupported


def eager_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    blocked: Optional[torch.Tensor], scale: float,
                    dropout_p: float) -> torch.Tensor:
    """Materialized-softmax attention, as model code without a fused kernel does it.

    q (b, h, s, d), k/v (b, hk, s, d), blocked bool broadcastable to (b, h, s, s) (True = masked)
    or None -> (b, h, s, d). GQA repeats K/V; softmax runs in fp32 and is cast back.
    """
    group = q.shape[1] // k.shape[1]
    if group > 1:
        k = k.repeat_interleave(group, dim=1)
        v = v.repeat_interleave(group, dim=1)
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale
    if blocked is not None:
        scores = scores.masked_fill(blocked, float("-inf"))
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    if dropout_p > 0:
        probs = F.dropout(probs, p=dropout_p, training=True)
    return torch.matmul(probs, v)


def _prepare_eager(case: BenchCase, inputs: BenchInputs) -> Prepared:
    q, k, v, do = _peer_tensors(inputs)
    mask = peer_attn_mask(case, q.device)
    if mask is None and case.causal:
        s = case.seqlen
        mask = visible_mask(s, s, causal=True, device=q.device).view(1, 1, s, s)
    blocked = None if mask is None else ~mask

    def forward() -> torch.Tensor:
        return eager_attention(q, k, v, blocked, case.softmax_scale, case.dropout)

    return Prepared((q, k, v), forward, do)


# ----------------------------------------------------------------------------------- test hooks
def failing_backend(kind: str) -> Backend:
    """A peer whose forward always raises (test hook for the CLI's error handling).

    kind "raise": RuntimeError (shown n.a.); kind "oom": MemoryError (shown OOM).
    """

    def prepare(case: BenchCase, inputs: BenchInputs) -> Prepared:
        def forward() -> torch.Tensor:
            if kind == "oom":
                raise MemoryError("injected out-of-memory (test hook)")
            raise RuntimeError("injected failure (test hook)")
        return Prepared((), forward, inputs.dout)

    return Backend(f"test_{kind}", False, lambda case: None, prepare, "test hook, always fails")


# ------------------------------------------------------------------------------------- registry
CUDA_PEERS = ("sdpa_flash", "sdpa_cudnn", "sdpa_efficient", "eager")
CPU_PEERS = ("sdpa", "eager")
REFERENCE_PEER = {"cuda": "sdpa_flash", "cpu": "sdpa"}


def make_peer(name: str, device_type: str, eager_max_bytes: int) -> Backend:
    """Build the peer called ``name`` for ``device_type`` ("cuda" or "cpu")."""
    if name == "eager":
        return Backend("eager", False, _eager_unsupported_factory(eager_max_bytes), _prepare_eager,
                       "eager math: QK^T, explicit mask, fp32 softmax, PV")
    if device_type == "cpu":
        if name == "sdpa":
            return Backend("sdpa", False, lambda case: None, _sdpa_prepare(None),
                           "torch SDPA on CPU, torch's choice of kernel")
        raise ValueError(f"unknown CPU peer {name!r}; choose from {', '.join(CPU_PEERS)}")
    from torch.nn.attention import SDPBackend

    table = {
        "sdpa_flash": (SDPBackend.FLASH_ATTENTION, _flash_unsupported),
        "sdpa_cudnn": (SDPBackend.CUDNN_ATTENTION, lambda case: None),
        "sdpa_efficient": (SDPBackend.EFFICIENT_ATTENTION, lambda case: None),
    }
    if name not in table:
        raise ValueError(f"unknown CUDA peer {name!r}; choose from {', '.join(CUDA_PEERS)}")
    sdpa_backend, unsupported = table[name]
    return Backend(name, False, unsupported, _sdpa_prepare(sdpa_backend),
                   f"torch SDPA restricted to SDPBackend.{sdpa_backend.name}")
