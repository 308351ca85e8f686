"""Correctness self-check run before the benchmark: ours vs a float64 oracle, fwd and bwd.

Error metric: relative Frobenius error ||x - ref|| / ||ref|| against the float64 oracle
(flash_attn_c.testing.attention_ref: bottom-right masks, GQA). Pass rule, after the tests'
error-ratio rule (tests/oracle.py): our error must be at most 2x (forward) / 3x (gradients) the
error of PyTorch eager attention computed in the same dtype, or below a per-dtype floor,
whichever is larger (the floor keeps fp32 from failing on rounding noise when eager happens to
be exceptionally accurate).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import torch

from ..testing import attention_ref, visible_mask
from .backends import eager_attention
from .cases import DTYPES

# Per-dtype floors of the relative error (forward, gradients), about 2x / 3x what eager attention
# reaches in that dtype (measured on CPU: eager fp16 ~5e-4 fwd / 6e-4 grads, bf16 ~4e-3 / 5e-3;
# ours fp16 ~2e-4 / 2e-4, bf16 ~1.7e-3 / 1.6e-3). A broken kernel lands at 1e-1..1.
ERROR_FLOORS: dict[str, tuple[float, float]] = {
    "fp32": (1e-5, 1e-4),
    "fp16": (1e-3, 2e-3),
    "bf16": (8e-3, 1.6e-2),
}
FWD_FACTOR, BWD_FACTOR = 2.0, 3.0


@dataclasses.dataclass
class CheckConfig:
    """One self-check shape: q (b, sq, h, d), k/v (b, sk, hk, d)."""

    dtype: str
    head_dim: int
    seqlen_q: int
    seqlen_k: int
    causal: bool
    window: tuple[int, int] = (-1, -1)
    batch: int = 2
    heads: int = 4
    kv_heads: int = 2

    def label(self) -> str:
        text = (f"{self.dtype} d={self.head_dim} sq={self.seqlen_q} sk={self.seqlen_k} "
                f"b={self.batch} h={self.heads} hk={self.kv_heads} "
                f"{'causal' if self.causal else 'full'}")
        if self.window != (-1, -1):
            text += f" win={self.window[0]},{self.window[1]}"
        return text


def default_check_configs(dtypes: Sequence[str], head_dims: Sequence[int],
                          window: tuple[int, int]) -> list[CheckConfig]:
    """Odd lengths, GQA, causal with sq < sk (tests the bottom-right alignment), per dtype and
    head dim of the sweep; plus the sweep's window when one is set."""
    configs = []
    for dt in dtypes:
        for d in head_dims:
            configs += [CheckConfig(dt, d, 257, 257, False), CheckConfig(dt, d, 257, 257, True),
                        CheckConfig(dt, d, 131, 257, True)]
            if window != (-1, -1):
                configs.append(CheckConfig(dt, d, 257, 257, False, window))
    return configs


def _rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    ref = ref.double()
    denom = ref.norm().item()
    return (x.double() - ref).norm().item() / max(denom, 1e-300)


def _eager_low_precision(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                         cfg: CheckConfig) -> torch.Tensor:
    """PyTorch eager attention in q's dtype; (b, sq, h, d) in, (b, sq, h, d) out."""
    blocked = ~visible_mask(cfg.seqlen_q, cfg.seqlen_k, cfg.window, cfg.causal, q.device)
    out = eager_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), blocked,
                          cfg.head_dim ** -0.5, 0.0)
    return out.transpose(1, 2)


def _fwd_bwd(fn: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
             dout: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    leaves = [x.detach().clone().requires_grad_(True) for x in (q, k, v)]
    out = fn(*leaves)
    grads = torch.autograd.grad(out, leaves, dout.to(out.dtype))
    return out.detach(), grads


def run_check_config(cfg: CheckConfig, device: torch.device, seed: int,
                     perturb: float = 0.0) -> dict[str, Any]:
    """Run one config; returns errors, thresholds and ``ok``. ``perturb`` (test hook) scales our
    output by (1 + perturb) to prove that a wrong kernel fails the check."""
    import flash_attn_c

    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    dt = DTYPES[cfg.dtype]
    b, h, hk, d = cfg.batch, cfg.heads, cfg.kv_heads, cfg.head_dim
    q = torch.randn(b, cfg.seqlen_q, h, d, generator=gen, device=device, dtype=dt)
    k = torch.randn(b, cfg.seqlen_k, hk, d, generator=gen, device=device, dtype=dt)
    v = torch.randn(b, cfg.seqlen_k, hk, d, generator=gen, device=device, dtype=dt)
    dout = torch.randn(b, cfg.seqlen_q, h, d, generator=gen, device=device, dtype=dt)

    def ours(q_: torch.Tensor, k_: torch.Tensor, v_: torch.Tensor) -> torch.Tensor:
        out = flash_attn_c.flash_attn_func(q_, k_, v_, causal=cfg.causal, window_size=cfg.window)
        return out * (1.0 + perturb) if perturb else out

    def oracle(q_: torch.Tensor, k_: torch.Tensor, v_: torch.Tensor) -> torch.Tensor:
        return attention_ref(q_, k_, v_, causal=cfg.causal, window=cfg.window,
                             softmax_scale=d ** -0.5).out

    def eager(q_: torch.Tensor, k_: torch.Tensor, v_: torch.Tensor) -> torch.Tensor:
        return _eager_low_precision(q_, k_, v_, cfg)

    ref_out, ref_grads = _fwd_bwd(oracle, q, k, v, dout.double())
    our_out, our_grads = _fwd_bwd(ours, q, k, v, dout)
    eag_out, eag_grads = _fwd_bwd(eager, q, k, v, dout)

    fwd_err = _rel_err(our_out, ref_out)
    fwd_base = _rel_err(eag_out, ref_out)
    bwd_err = max(_rel_err(g, r) for g, r in zip(our_grads, ref_grads))
    bwd_base = max(_rel_err(g, r) for g, r in zip(eag_grads, ref_grads))
    floor_f, floor_b = ERROR_FLOORS[cfg.dtype]
    fwd_tol = max(floor_f, FWD_FACTOR * fwd_base)
    bwd_tol = max(floor_b, BWD_FACTOR * bwd_base)
    finite = bool(torch.isfinite(our_out).all()) and all(bool(torch.isfinite(g).all())
                                                         for g in our_grads)
    return {
        "config": cfg.label(), "fwd_err": fwd_err, "fwd_eager_err": fwd_base, "fwd_tol": fwd_tol,
        "bwd_err": bwd_err, "bwd_eager_err": bwd_base, "bwd_tol": bwd_tol, "finite": finite,
        "ok": finite and fwd_err <= fwd_tol and bwd_err <= bwd_tol,
    }


def format_check_row(r: dict[str, Any]) -> str:
    """One line per config for the console."""
    if "error" in r:
        return f"  FAIL  {r['config']}: {r['error']}"
    status = "ok  " if r["ok"] else "FAIL"
    return (f"  {status}  {r['config']:<46} fwd {r['fwd_err']:.2e} (tol {r['fwd_tol']:.1e}, "
            f"eager {r['fwd_eager_err']:.1e})  bwd {r['bwd_err']:.2e} (tol {r['bwd_tol']:.1e}, "
            f"eager {r['bwd_eager_err']:.1e})" + ("" if r["finite"] else "  NON-FINITE"))


def run_check(configs: Sequence[CheckConfig], device: torch.device, seed: int,
              perturb: float = 0.0) -> list[dict[str, Any]]:
    """Run every config; a config that raises is recorded as failed with its error."""
    results = []
    for i, cfg in enumerate(configs):
        try:
            results.append(run_check_config(cfg, device, seed + i, perturb))
        except Exception as exc:  # report, and let the caller stop with exit code != 0
            results.append({"config": cfg.label(), "ok": False,
                            "error": f"{type(exc).__name__}: {exc}".splitlines()[0]})
    return results
