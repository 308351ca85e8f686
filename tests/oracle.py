"""The error-ratio rule and the parity harness, on the float64 reference of flash_attn_c.testing.

Reference (``attention_ref``, ``visible_mask``, ``cu_from_lens``, re-exported from
:mod:`flash_attn_c.testing`): a direct, materializing implementation of docs/conventions.md with
explicit bottom-right masks. ``upcast=True`` computes in float64 (the oracle); ``upcast=False``
computes the same formula in the inputs' own precision with ordinary PyTorch ops (the "PyTorch in
the same low precision" baseline of the error-ratio rule). GQA is handled by repeating K/V heads
inside the reference only; the library must never do that. ``ref_forward_backward`` here is the
package's, run on one intra-op thread (``one_thread``).

The rule (FlashAttention's own): for every compared tensor T,

    max|T_ours - T_fp64| <= factor * max|T_torch_lowp - T_fp64| + floor

with factor 2 for forward quantities and 3 for gradients. ``floor`` is a tiny absolute term scaled
by the reference's magnitude; see ``_FLOOR`` for the justification of its size.

The parity harness (``check_dense`` / ``check_varlen``) builds fresh random inputs, poisons the
allocator, calls the library, and applies the rule to out, lse (and probs / gradients on request).
Feature test files parametrize it.
"""
from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from flash_attn_c import testing as _testing
# The reference math lives in the package (flash_attn_c.testing, shared with the bench and
# usable by anyone); the names stay importable from here for the test files.
from flash_attn_c.testing import RefResult, attention_ref, cu_from_lens, visible_mask  # noqa: F401


@contextlib.contextmanager
def one_thread():
    """Runs the reference's small CPU ops on one intra-op thread. On a loaded 2-core machine
    torch's thread pool makes each tiny op ~50x slower (spinning workers fight other processes);
    the reference does not need threads. The library under test keeps torch's setting."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _single_threaded(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with one_thread():
            return fn(*args, **kwargs)
    return wrapper


ref_forward_backward = _single_threaded(_testing.ref_forward_backward)


# --------------------------------------------------------------------------------------------
# the error-ratio rule
# --------------------------------------------------------------------------------------------

# Absolute floor, as a multiple of max(1, max|ref|). Only matters where the low-precision
# baseline happens to be (almost) exact:
#  * float32: PyTorch's fp32 baseline error is ~1e-7..1e-6, so a kernel with a different but
#    equally valid summation order (key tiles, online-softmax rescaling, a polynomial exp) can
#    legitimately be a few ulp worse; 2e-6 is ~16 ulp at 1.0 and still ~1000x below the error any
#    real bug produces (>= 1e-3 for a wrong mask element, scale or missed tile).
#  * float16 / bfloat16: ~1/10 of an ulp at 1.0 (ulp 9.8e-4 / 7.8e-3); it only keeps cases where
#    the baseline is exact (e.g. seqlen_k = 1: out == v) from demanding bit-exactness.
_FLOOR = {torch.float32: 2e-6, torch.float16: 1e-4, torch.bfloat16: 1e-3, torch.float64: 1e-12}

FWD_FACTOR = 2.0
GRAD_FACTOR = 3.0


def max_abs_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    """max |x - ref| in float64; NaN anywhere in x gives inf (so every comparison fails)."""
    if x.numel() == 0:
        return 0.0
    x = x.detach().to(torch.float64)
    ref = ref.detach().to(torch.float64)
    if not torch.isfinite(x[torch.isfinite(ref)]).all():
        return math.inf
    both_inf = torch.isinf(x) & torch.isinf(ref) & (torch.sign(x) == torch.sign(ref))
    diff = torch.where(both_inf, torch.zeros_like(x), (x - ref).abs())
    v = diff.max().item()
    return math.inf if math.isnan(v) else v


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    """Relative error max|x - ref| / max|ref| (max|ref| floored at 1e-30), float64."""
    denom = max(ref.detach().to(torch.float64).abs().max().item() if ref.numel() else 0.0, 1e-30)
    return max_abs_err(x, ref) / denom


@_single_threaded
def assert_ratio(name: str, ours: torch.Tensor, ref: torch.Tensor, base: torch.Tensor,
                 dtype: torch.dtype, factor: float, scale: Optional[float] = None) -> None:
    """Asserts max|ours - ref| <= factor * max|base - ref| + floor, floor = _FLOOR[dtype] *
    scale; scale defaults to max(1, max|ref|)."""
    assert ours.shape == ref.shape, f"{name}: shape {tuple(ours.shape)} != reference {tuple(ref.shape)}"
    # a NaN reference or a non-finite baseline error would make the bound infinite: every ours passes
    assert not torch.isnan(ref).any(), f"{name}: NaN in the float64 reference: the rule is undefined"
    assert torch.isfinite(ours[torch.isfinite(ref)]).all(), f"{name}: non-finite values (NaN/inf) where the reference is finite"
    err = max_abs_err(ours, ref)
    base_err = max_abs_err(base, ref)
    assert math.isfinite(base_err), (f"{name}: the torch-{str(dtype)[6:]} baseline is not finite where the "
                                     f"reference is: the rule is undefined")
    if scale is None:
        scale = _magnitude(ref)
    floor = _FLOOR[dtype] * scale
    bound = factor * base_err + floor
    assert err <= bound, (f"{name}: max abs err {err:.3e} > {factor:g} x torch-{str(dtype)[6:]} err "
                          f"{base_err:.3e} + floor {floor:.1e} (= {bound:.3e}); rel err {rel_err(ours, ref):.3e}")


def _magnitude(t: torch.Tensor) -> float:
    """max(1, max |finite entries of t|)."""
    if t.numel() == 0:
        return 1.0
    return max(1.0, t.detach().to(torch.float64).abs().nan_to_num(posinf=0, neginf=0).max().item())


@_single_threaded
def assert_grads(ours: Sequence[torch.Tensor], ref: Sequence[torch.Tensor],
                 base: Sequence[torch.Tensor], dtype: torch.dtype,
                 names: Sequence[str] = ("dq", "dk", "dv")) -> None:
    """The 3x rule for (dq, dk, dv), with the floor scaled by the largest of the three reference
    gradients. Why a shared scale: a FlashAttention backward computes D_i = rowsum(dO_i * O_i)
    from the stored O, while the exact dS_ij = P_ij (dP_ij - D_i) may cancel to ~0 (e.g. a key
    that a row sees alone: P = 1, dS = 0). The cancellation leaves ~eps * |dO||V| per row, summed
    over rows into dK/dQ exactly like dV's own entries are summed, so dV's magnitude (not the
    ~0 reference dK) is the scale that error lives on. Matters only for fp32 (floor 2e-6)."""
    scale = max(_magnitude(r) for r in ref)
    for name, g, r, b in zip(names, ours, ref, base):
        assert g.dtype == dtype, f"{name}: dtype {g.dtype}, expected {dtype}"
        assert_ratio(name, g, r, b, dtype, GRAD_FACTOR, scale=scale)


@_single_threaded
def assert_lse(name: str, ours: torch.Tensor, ref: torch.Tensor, base: torch.Tensor,
               dtype: torch.dtype) -> None:
    """LSE: -inf exactly where the reference row is empty, the rule elsewhere; fp32."""
    assert ours.dtype == torch.float32, f"{name}: lse dtype {ours.dtype}, expected float32"
    assert ours.shape == ref.shape, f"{name}: lse shape {tuple(ours.shape)} != {tuple(ref.shape)}"
    ref_inf = torch.isneginf(ref)
    assert torch.equal(torch.isneginf(ours).cpu(), ref_inf.cpu()), (
        f"{name}: lse is -inf at {int(torch.isneginf(ours).sum())} rows, reference at {int(ref_inf.sum())}")
    assert not torch.isnan(ours).any(), f"{name}: NaN in lse"
    fin = ~ref_inf
    assert_ratio(name, ours[fin], ref[fin], base[fin].float(), dtype, FWD_FACTOR)


# --------------------------------------------------------------------------------------------
# the parity harness
# --------------------------------------------------------------------------------------------


def make_alibi(kind: Optional[str], b: int, h: int, device) -> Optional[torch.Tensor]:
    """ALiBi slopes, fp32: None, 'h' -> (h,), 'bh' -> (b, h). Random in [0.05, 0.6)."""
    if kind is None:
        return None
    shape = (h,) if kind == "h" else (b, h)
    return (torch.rand(shape, device=device) * 0.55 + 0.05).float()


@dataclass
class Case:
    """Result of one harness call, for tests that want to look further."""
    ours_out: torch.Tensor
    ref: RefResult
    base: RefResult
    ours_lse: Optional[torch.Tensor] = None
    ours_probs: Optional[torch.Tensor] = None
    ours_grads: tuple = ()
    inputs: tuple = ()


def _poison(device, tensors: Sequence[torch.Tensor]) -> None:
    from conftest import poison_allocator  # local import: conftest owns the poisoning helper
    poison_allocator(device, [t.numel() * t.element_size() for t in tensors])


def check_dense(device, dtype, b: int, sq: int, sk: int, h: int, hk: int, d: int, *,
                causal: bool = False, window=(-1, -1), softcap: float = 0.0,
                alibi: Optional[str] = None, softmax_scale: Optional[float] = None,
                grad: bool = False, check_lse: bool = True,
                deterministic: bool = False) -> Case:
    """flash_attn_func vs the fp64 reference with the error-ratio rule.

    Forward: out (2x rule), and with return_attn_probs=True out again and lse (2x rule, -inf
    exactly on empty rows). grad=True: dq, dk, dv (3x rule) and exact zeros on empty rows;
    deterministic is passed through (it selects the ordered-dQ backward)."""
    import flash_attn_c

    q = torch.randn(b, sq, h, d, device=device, dtype=dtype)
    k = torch.randn(b, sk, hk, d, device=device, dtype=dtype)
    v = torch.randn(b, sk, hk, d, device=device, dtype=dtype)
    slopes = make_alibi(alibi, b, h, device)
    kw = dict(causal=causal, window=window, softcap=softcap, alibi_slopes=slopes,
              softmax_scale=softmax_scale)
    dout = torch.randn(b, sq, h, d, device=device, dtype=dtype) if grad else None
    ref = ref_forward_backward((q, k, v), dout, upcast=True, **kw)
    base = ref_forward_backward((q, k, v), dout, upcast=False, **kw)

    api_kw = dict(causal=causal, window_size=tuple(window), softcap=softcap, alibi_slopes=slopes,
                  softmax_scale=softmax_scale, deterministic=deterministic)
    qg, kg, vg = (t.clone().requires_grad_(grad) for t in (q, k, v))
    _poison(device, (q, q, k, v, k, v))
    out = flash_attn_c.flash_attn_func(qg, kg, vg, **api_kw)
    assert out.shape == q.shape and out.dtype == dtype and out.device == q.device
    assert_ratio("out", out, ref.out, base.out, dtype, FWD_FACTOR)
    empty_rows = torch.isneginf(ref.lse)  # (b, h, sq)
    if empty_rows.any():
        rows_out = out.detach().permute(0, 2, 1, 3)[empty_rows]
        assert (rows_out == 0).all(), "out must be exactly 0 on rows that see no key"
    case = Case(out, ref, base, inputs=(q, k, v))
    if grad:
        _poison(device, (q, k, v, q))
        grads = torch.autograd.grad(out, (qg, kg, vg), dout)
        assert_grads(grads, ref.grads, base.grads, dtype)
        if empty_rows.any():
            assert (grads[0].permute(0, 2, 1, 3)[empty_rows] == 0).all(), "dq must be 0 on empty rows"
        case.ours_grads = grads
    if check_lse:
        _poison(device, (q, q))
        with torch.no_grad():
            out2, lse, _ = flash_attn_c.flash_attn_func(q, k, v, return_attn_probs=True, **api_kw)
        assert_ratio("out (return_attn_probs=True)", out2, ref.out, base.out, dtype, FWD_FACTOR)
        assert_lse("lse", lse, ref.lse, base.lse, dtype)
        case.ours_lse = lse
    return case


def check_varlen(device, dtype, lens_q: Sequence[int], lens_k: Sequence[int], h: int, hk: int,
                 d: int, *, causal: bool = False, window=(-1, -1), softcap: float = 0.0,
                 alibi: Optional[str] = None, softmax_scale: Optional[float] = None,
                 grad: bool = False, extra_max: int = 0,
                 deterministic: bool = False) -> Case:
    """flash_attn_varlen_func vs the fp64 reference (per-sequence masks), error-ratio rule on
    out, lse (h, total_q) and, with grad=True, dq/dk/dv. extra_max is added to both max_seqlens
    (a larger max_seqlen than needed must not change anything)."""
    import flash_attn_c

    b = len(lens_q)
    tq, tk = sum(lens_q), sum(lens_k)
    q = torch.randn(tq, h, d, device=device, dtype=dtype)
    k = torch.randn(tk, hk, d, device=device, dtype=dtype)
    v = torch.randn(tk, hk, d, device=device, dtype=dtype)
    cq, ck = cu_from_lens(lens_q, device), cu_from_lens(lens_k, device)
    mq, mk = max(lens_q) + extra_max, max(lens_k) + extra_max
    slopes = make_alibi(alibi, b, h, device)
    kw = dict(causal=causal, window=window, softcap=softcap, alibi_slopes=slopes,
              softmax_scale=softmax_scale, cu_seqlens_q=cq, cu_seqlens_k=ck,
              max_seqlen_q=mq, max_seqlen_k=mk)
    dout = torch.randn(tq, h, d, device=device, dtype=dtype) if grad else None
    ref = ref_forward_backward((q, k, v), dout, upcast=True, **kw)
    base = ref_forward_backward((q, k, v), dout, upcast=False, **kw)

    api_kw = dict(causal=causal, window_size=tuple(window), softcap=softcap, alibi_slopes=slopes,
                  softmax_scale=softmax_scale, deterministic=deterministic)
    qg, kg, vg = (t.clone().requires_grad_(grad) for t in (q, k, v))
    _poison(device, (q, q, k, v))
    out = flash_attn_c.flash_attn_varlen_func(qg, kg, vg, cq, ck, mq, mk, **api_kw)
    assert out.shape == q.shape and out.dtype == dtype
    assert_ratio("out", out, ref.out, base.out, dtype, FWD_FACTOR)
    empty_rows = torch.isneginf(ref.lse)  # (h, total_q)
    if empty_rows.any():
        assert (out.detach().permute(1, 0, 2)[empty_rows] == 0).all(), "out must be 0 on empty rows"
    case = Case(out, ref, base, inputs=(q, k, v, cq, ck, mq, mk))
    if grad:
        _poison(device, (q, k, v, q))
        grads = torch.autograd.grad(out, (qg, kg, vg), dout)
        assert_grads(grads, ref.grads, base.grads, dtype)
        if empty_rows.any():
            assert (grads[0].permute(1, 0, 2)[empty_rows] == 0).all(), "dq must be 0 on empty rows"
        case.ours_grads = grads
    with torch.no_grad():
        _poison(device, (q, q))
        out2, lse, _ = flash_attn_c.flash_attn_varlen_func(q, k, v, cq, ck, mq, mk,
                                                           return_attn_probs=True, **api_kw)
    assert_ratio("out (return_attn_probs=True)", out2, ref.out, base.out, dtype, FWD_FACTOR)
    assert_lse("lse", lse, ref.lse, base.lse, dtype)
    case.ours_lse = lse
    return case
