"""Non-contiguous q/k/v (and dout, packed, varlen and KV-cache inputs) are accepted, as flash-attn
accepts them: the op takes any strides except in the last dimension, so a view whose last
dimension is contiguous (e.g. a (b, h, s, d) tensor transposed to (b, s, h, d)) goes through with
no copy at all, and only a view strided in d (x[..., ::2]) is copied once. Values and gradients
equal the call on contiguous copies bit for bit (the same kernels on the same numbers; the
backward runs with deterministic=True, since the default atomic dQ / GQA sums of the Hopper
kernels add in a run-dependent order; a broadcast view, stride 0 as from expand, is copied before
the CUDA backward, flash_attn_c._ops.unbroadcast, since the Hopper backward's TMA loads need
positive strides and another kernel would sum dQ in another order), and each gradient comes back
in its input's shape."""
from __future__ import annotations

from typing import Callable, List

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from conftest import devices
from oracle import cu_from_lens

import flash_attn_c

COPY_OPS = ("clone", "contiguous", "copy_", "_to_copy")


def _dtype(device):
    return torch.float32 if device == "cpu" else torch.float16


def _leaves(*shapes, device):
    return [torch.randn(*s, device=device, dtype=_dtype(device), requires_grad=True)
            for s in shapes]


def _fresh(ts: List[torch.Tensor]) -> List[torch.Tensor]:
    """Contiguous leaf copies with the same values."""
    return [t.detach().contiguous().requires_grad_(True) for t in ts]


def _compare(fn: Callable, leaves: List[torch.Tensor], views: Callable, dout_view=None):
    """fn(*views(leaves)) against fn(*contiguous copies of the views): outputs and the gradients of
    the leaves (through the views) are equal, and have the leaves' shapes."""
    got_in = views(*leaves)
    assert any(not t.is_contiguous() for t in got_in)
    ref_leaves = _fresh(leaves)
    ref_in = [t.contiguous() for t in views(*ref_leaves)]
    assert all(t.is_contiguous() for t in ref_in)
    got, ref = fn(*got_in), fn(*ref_in)
    assert torch.equal(got, ref)
    dout = torch.randn_like(ref)
    if dout_view is not None:
        dout = dout_view(dout)
        assert not dout.is_contiguous()
    g_got = torch.autograd.grad(got, leaves, dout)
    g_ref = torch.autograd.grad(ref, ref_leaves, dout.contiguous())
    for a, b, leaf in zip(g_got, g_ref, leaves):
        assert a.shape == leaf.shape
        assert torch.equal(a, b)


def _dense(q, k, v):
    return flash_attn_c.flash_attn_func(q, k, v, causal=True, deterministic=True)


@pytest.mark.parametrize("device", devices())
def test_transposed_bhsd_views(device):
    b, h, s, d = 2, 4, 9, 32
    leaves = _leaves((b, h, s, d), (b, 2, s, d), (b, 2, s, d), device=device)
    _compare(_dense, leaves, lambda q, k, v: [t.transpose(1, 2) for t in (q, k, v)])


@pytest.mark.parametrize("device", devices())
def test_head_dim_strided_views(device):
    """stride(-1) == 2: the one layout the op cannot read; copied once in the Python layer."""
    leaves = _leaves((2, 7, 4, 64), (2, 5, 4, 64), (2, 5, 4, 64), device=device)
    _compare(_dense, leaves, lambda q, k, v: [t[..., ::2] for t in (q, k, v)])


@pytest.mark.parametrize("device", devices())
def test_expanded_batch_kv(device):
    """k/v shared by the batch through expand (batch stride 0): dk/dv sum over the batch."""
    q, k1, v1 = _leaves((3, 6, 4, 16), (1, 6, 2, 16), (1, 6, 2, 16), device=device)
    _compare(_dense, [q, k1, v1], lambda q, k, v: [q.transpose(1, 2).transpose(1, 2),
                                                  k.expand(3, -1, -1, -1), v.expand(3, -1, -1, -1)])


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("layout", ["transposed", "head_dim_strided", "expanded"])
def test_dout_any_layout(device, layout):
    dout_view = {"transposed": lambda x: x.transpose(1, 2).contiguous().transpose(1, 2),
                 "head_dim_strided": lambda x: torch.stack((x, x), -1)[..., 0],
                 "expanded": lambda x: x[:1].expand_as(x)}[layout]
    leaves = _leaves((2, 4, 8, 16), (2, 4, 8, 16), (2, 4, 8, 16), device=device)
    _compare(_dense, leaves, lambda q, k, v: [t.transpose(1, 2) for t in (q, k, v)],
             dout_view=dout_view)


@pytest.mark.parametrize("device", devices())
def test_varlen_views(device):
    """q transposed from (h, total, d), k also strided in d, v one slice of (total, hk, 2, d)."""
    lens = [3, 0, 6]
    total = sum(lens)
    cu = cu_from_lens(lens, device)

    def fn(q, k, v):
        return flash_attn_c.flash_attn_varlen_func(q, k, v, cu, cu, max(lens), max(lens),
                                                   causal=True, deterministic=True)
    leaves = _leaves((4, total, 32), (2, total, 64), (total, 2, 2, 32), device=device)
    _compare(fn, leaves, lambda q, k, v: [q.transpose(0, 1), k.transpose(0, 1)[..., ::2],
                                          v[:, :, 1]])


@pytest.mark.parametrize("device", devices())
def test_varlen_cu_seqlens_strided(device):
    """cu_seqlens taken every other entry of a longer tensor."""
    q, k, v = _leaves((9, 2, 16), (9, 2, 16), (9, 2, 16), device=device)
    wide = torch.tensor([0, -1, 3, -1, 9, -1], dtype=torch.int32, device=device)
    cu = wide[::2]
    assert not cu.is_contiguous()
    got = flash_attn_c.flash_attn_varlen_func(q, k, v, cu, cu, 6, 6)
    want = flash_attn_c.flash_attn_varlen_func(q, k, v, cu.contiguous(), cu.contiguous(), 6, 6)
    assert torch.equal(got, want)


@pytest.mark.parametrize("device", devices())
def test_packed_views(device):
    """qkv packed as (b, s, h, 3, d) and permuted to (b, s, 3, h, d); kv likewise."""
    (qkv,) = _leaves((2, 7, 4, 3, 16), device=device)
    _compare(lambda x: flash_attn_c.flash_attn_qkvpacked_func(x, causal=True, deterministic=True), [qkv],
             lambda x: [x.permute(0, 1, 3, 2, 4)])
    (q, kv) = _leaves((2, 4, 7, 16), (2, 2, 7, 2, 16), device=device)
    _compare(lambda a, b: flash_attn_c.flash_attn_kvpacked_func(a, b, deterministic=True), [q, kv],
             lambda a, b: [a.transpose(1, 2), b.permute(0, 2, 3, 1, 4)])


@pytest.mark.parametrize("device", devices())
def test_kvcache_views(device):
    """q and the caches as transposed views, head-dim-strided new k/v: the append lands in the
    caller's cache storage and the output equals the contiguous call."""
    dt = _dtype(device)
    b, h, hk, s_cache, d = 2, 4, 2, 12, 16
    q = torch.randn(b, h, 3, d, device=device, dtype=dt).transpose(1, 2)
    k_base = torch.randn(b, hk, s_cache, d, device=device, dtype=dt)
    v_base = torch.randn(b, hk, s_cache, d, device=device, dtype=dt)
    k_new = torch.randn(b, 3, hk, 2 * d, device=device, dtype=dt)[..., ::2]
    v_new = torch.randn(b, 3, hk, 2 * d, device=device, dtype=dt)[..., ::2]
    seqlens = torch.tensor([4, 9], dtype=torch.int32, device=device)
    k_ref, v_ref = k_base.transpose(1, 2).contiguous(), v_base.transpose(1, 2).contiguous()
    want = flash_attn_c.flash_attn_with_kvcache(q.contiguous(), k_ref, v_ref, k_new.contiguous(),
                                                v_new.contiguous(), cache_seqlens=seqlens,
                                                causal=True)
    got = flash_attn_c.flash_attn_with_kvcache(q, k_base.transpose(1, 2), v_base.transpose(1, 2),
                                               k_new, v_new, cache_seqlens=seqlens, causal=True)
    assert torch.equal(got, want)
    assert torch.equal(k_base.transpose(1, 2), k_ref)  # appended in place, like the reference
    assert torch.equal(v_base.transpose(1, 2), v_ref)


class _RecordOps(TorchDispatchMode):
    """Records the name of every op dispatched from Python (the op's own C++ internals are not
    seen: the profiler check below covers those)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: List[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def _transposed_step(device):
    b, h, s, d = 2, 4, 9, 32
    q, k, v = _leaves((b, h, s, d), (b, 2, s, d), (b, 2, s, d), device=device)
    dout = torch.randn(b, h, s, d, device=device, dtype=_dtype(device)).transpose(1, 2)

    def step():
        out = _dense(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return out, torch.autograd.grad(out, (q, k, v), dout)
    return step


@pytest.mark.parametrize("device", devices())
def test_transposed_views_are_not_copied(device):
    """(b, h, s, d) -> transpose(1, 2) views: no clone / contiguous / copy_ anywhere, neither in
    the Python layer (dispatch mode) nor inside the ops (profiler, which sees ops the C++ kernels
    dispatch), forward or backward."""
    step = _transposed_step(device)
    step()  # warm-up
    with _RecordOps() as rec:
        step()
    assert "flash_attn_c.fwd.default" in rec.ops and "flash_attn_c.bwd.default" in rec.ops
    copies = [o for o in rec.ops if any(c in o for c in COPY_OPS)]
    assert copies == [], copies
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    names = {e.name for e in prof.events()}
    assert "flash_attn_c::fwd" in names and "flash_attn_c::bwd" in names
    copies = sorted(n for n in names if any(n == f"aten::{c}" for c in COPY_OPS))
    assert copies == [], copies


def test_profiler_sees_copies_inside_the_op():
    """The profiler check above can fail: a dout strided in d is copied inside the CPU backward op,
    and the profiler reports that copy."""
    q, k, v = _leaves((2, 5, 2, 16), (2, 5, 2, 16), (2, 5, 2, 16), device="cpu")
    out = _dense(q, k, v)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        torch.autograd.grad(out, (q, k, v), torch.randn(2, 5, 2, 32)[..., ::2])
    assert "aten::clone" in {e.name for e in prof.events()}
