"""Rotary embedding (flash_attn_c.rotary, ops flash_attn_c::rotary / rotary_) against a float64
oracle written with complex numbers: pair (x0, x1) at position p becomes (x0 + i x1) * e^{i theta},
e^{i theta} = cos[p] + i sin[p]; positions outside [0, seqlen_ro) are not rotated. Error-ratio rule
(tests/oracle.py): ours <= 2x (3x for gradients) the error of the same formula in x's dtype. The
dims past rotary_dim must come back bit for bit."""
from __future__ import annotations

from typing import Optional, Sequence

import pytest
import torch

from conftest import dev_cases, devices, poison_allocator
from oracle import FWD_FACTOR, GRAD_FACTOR, assert_ratio, cu_from_lens

import flash_attn_c
from flash_attn_c.rotary import (RotaryEmbedding, apply_rotary_emb, apply_rotary_emb_func,
                                 apply_rotary_emb_kv_, apply_rotary_emb_qkv_)

OPS = torch.ops.flash_attn_c


# --------------------------------------------------------------------------------------------
# the oracle
# --------------------------------------------------------------------------------------------


def row_positions(batch: int, seqlen: int, offsets, cu: Optional[Sequence[int]] = None,
                  rows: Optional[int] = None) -> torch.Tensor:
    """Position of every row of x, int64 (rows,): dense rows b * seqlen + j -> j + off[b]; varlen
    rows of sequence b -> r - cu[b] + off[b]; rows outside every sequence -> -1 (unrotated)."""
    offs = [int(o) for o in offsets.tolist()] if isinstance(offsets, torch.Tensor) else [offsets] * batch
    if cu is None:
        return torch.tensor([j + offs[b] for b in range(batch) for j in range(seqlen)], dtype=torch.long)
    pos = [-1] * rows
    for b in range(batch):
        for r in range(cu[b], cu[b + 1]):
            pos[r] = r - cu[b] + offs[b]
    return torch.tensor(pos, dtype=torch.long)


def _split(x: torch.Tensor, rd: int, interleaved: bool):
    """The pair members (..., rd/2) of the rotary part of x."""
    xr = x[..., :rd]
    if interleaved:
        return xr[..., 0::2], xr[..., 1::2]
    return xr[..., :rd // 2], xr[..., rd // 2:]


def _merge(o0: torch.Tensor, o1: torch.Tensor, interleaved: bool) -> torch.Tensor:
    return torch.stack((o0, o1), dim=-1).flatten(-2) if interleaved else torch.cat((o0, o1), dim=-1)


def _tables(cos, sin, pos: torch.Tensor, dtype):
    """cos / sin rows per position (rows, 1, rd/2) in dtype; unrotated rows get (1, 0)."""
    valid = (pos >= 0) & (pos < cos.shape[0])
    idx = pos.clamp(0, max(cos.shape[0] - 1, 0)).to(cos.device)
    v = valid.to(cos.device).unsqueeze(1)
    c = torch.where(v, cos.to(dtype)[idx], torch.ones((), dtype=dtype, device=cos.device))
    s = torch.where(v, sin.to(dtype)[idx], torch.zeros((), dtype=dtype, device=cos.device))
    return c.unsqueeze(1), s.unsqueeze(1)


def rotary_ref(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, pos: torch.Tensor,
               interleaved: bool, conjugate: bool = False) -> torch.Tensor:
    """float64 oracle. x (..., h, d) whose leading dims flatten to the rows of pos."""
    rd = 2 * cos.shape[1]
    xf = x.detach().to(torch.float64).reshape(-1, *x.shape[-2:])
    c, s = _tables(cos.to(torch.float64), sin.to(torch.float64), pos, torch.float64)
    z = torch.complex(*_split(xf, rd, interleaved)) * torch.complex(c, -s if conjugate else s)
    out = torch.cat((_merge(z.real, z.imag, interleaved), xf[..., rd:]), dim=-1)
    return out.reshape(x.shape)


def rotary_lowp(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, pos: torch.Tensor,
                interleaved: bool, conjugate: bool = False) -> torch.Tensor:
    """The same rotation with ordinary torch ops in x's dtype (the baseline of the ratio rule)."""
    rd = 2 * cos.shape[1]
    xf = x.detach().reshape(-1, *x.shape[-2:])
    c, s = _tables(cos, sin, pos, x.dtype)
    if conjugate:
        s = -s
    x0, x1 = _split(xf, rd, interleaved)
    out = torch.cat((_merge(x0 * c - x1 * s, x0 * s + x1 * c, interleaved), xf[..., rd:]), dim=-1)
    return out.reshape(x.shape)


def _tables_for(seqlen_ro: int, rd: int, device, dtype=torch.float32):
    """Random angles: cos / sin of real rotations (seqlen_ro, rd / 2)."""
    theta = torch.rand(seqlen_ro, rd // 2, device=device, dtype=torch.float64) * 6.3
    return theta.cos().to(dtype), theta.sin().to(dtype)


def _make_x(shape, device, dtype, layout: str) -> torch.Tensor:
    """Random x of shape (..., h, d): contiguous, or a strided view (heads sliced from a larger
    tensor and the sequence dim not adjacent to batch) with a contiguous last dim."""
    if layout == "contiguous":
        return torch.randn(shape, device=device, dtype=dtype)
    big = torch.randn(*shape[:-2], shape[-2] + 3, shape[-1] + 8, device=device, dtype=dtype)
    return big[..., 1:1 + shape[-2], 4:4 + shape[-1]]


def _check_forward(out, x, cos, sin, pos, interleaved, dtype, conjugate=False):
    rd = 2 * cos.shape[1]
    ref = rotary_ref(x, cos, sin, pos, interleaved, conjugate)
    base = rotary_lowp(x, cos, sin, pos, interleaved, conjugate)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert_ratio("out", out, ref, base, dtype, FWD_FACTOR)
    assert torch.equal(out[..., rd:], x[..., rd:]), "dims past rotary_dim must pass through exactly"
    unrot = pos < 0
    if unrot.any():
        flat_o, flat_x = out.reshape(-1, *x.shape[-2:]), x.reshape(-1, *x.shape[-2:])
        assert torch.equal(flat_o[unrot.to(x.device)], flat_x[unrot.to(x.device)]), \
            "rows without a position must pass through exactly"


def _poison_like(x: torch.Tensor) -> None:
    poison_allocator(x.device, [x.numel() * x.element_size()])


# --------------------------------------------------------------------------------------------
# dense
# --------------------------------------------------------------------------------------------

# (b, s, h, d, rotary_dim, seqlen_ro, interleaved, offsets: "0" | "int" | "tensor32" | "tensor64", layout)
DENSE_CPU = [
    (2, 7, 3, 64, 64, 7, False, "0", "contiguous"),
    (2, 7, 3, 64, 64, 7, True, "0", "contiguous"),
    (2, 9, 2, 80, 32, 20, False, "int", "contiguous"),
    (2, 9, 2, 80, 32, 20, True, "int", "strided"),
    (3, 5, 4, 40, 24, 16, False, "tensor64", "strided"),
    (3, 5, 4, 40, 24, 16, True, "tensor32", "contiguous"),
    (1, 4, 1, 6, 2, 4, False, "0", "contiguous"),
    (2, 3, 2, 16, 0, 5, False, "int", "contiguous"),  # rotary_dim 0: a pure copy
]
DENSE_GPU = DENSE_CPU + [
    (2, 1000, 8, 128, 128, 1024, False, "tensor64", "strided"),
    (2, 513, 16, 96, 64, 600, True, "int", "contiguous"),
    (4, 4096, 32, 128, 128, 4096, False, "0", "contiguous"),  # > 65536 blocks: grid-stride loop
]


def _offsets(kind: str, batch: int, seqlen: int, seqlen_ro: int, device):
    if kind == "0":
        return 0
    if kind == "int":
        return seqlen_ro - seqlen
    dt = torch.int32 if kind == "tensor32" else torch.int64
    # per-sequence offsets, some running past seqlen_ro (those rows stay unrotated)
    return torch.randint(0, seqlen_ro, (batch,), dtype=dt).to(device)


@pytest.mark.parametrize("device,dtype,b,s,h,d,rd,sro,interleaved,offs,layout",
                         dev_cases(DENSE_CPU, DENSE_GPU))
def test_dense_forward(device, dtype, b, s, h, d, rd, sro, interleaved, offs, layout):
    x = _make_x((b, s, h, d), device, dtype, layout)
    cos, sin = _tables_for(sro, rd, device)
    off = _offsets(offs, b, s, sro, device)
    pos = row_positions(b, s, off.cpu() if isinstance(off, torch.Tensor) else off)
    x_before = x.clone()
    _poison_like(x)
    out = apply_rotary_emb(x, cos, sin, interleaved=interleaved, seqlen_offsets=off)
    assert torch.equal(x, x_before), "the out-of-place call must not modify x"
    _check_forward(out, x, cos, sin, pos, interleaved, dtype)


@pytest.mark.parametrize("device,dtype,interleaved", dev_cases([False, True]))
def test_cos_sin_any_float_dtype(device, dtype, interleaved):
    """cos / sin in x's dtype (as RotaryEmbedding caches them) are read as fp32: same result as
    passing their fp32 values."""
    x = torch.randn(2, 6, 3, 32, device=device, dtype=dtype)
    cos, sin = _tables_for(6, 32, device, dtype)
    out = apply_rotary_emb(x, cos, sin, interleaved=interleaved)
    assert torch.equal(out, apply_rotary_emb(x, cos.float(), sin.float(), interleaved=interleaved))
    _check_forward(out, x, cos.float(), sin.float(), row_positions(2, 6, 0), interleaved, dtype)


# --------------------------------------------------------------------------------------------
# varlen
# --------------------------------------------------------------------------------------------

# (lens, extra rows after cu[-1], h, d, rotary_dim, seqlen_ro, interleaved, offsets kind)
VARLEN_CPU = [
    ([5, 0, 12, 1], 0, 3, 64, 64, 12, False, "0"),
    ([5, 0, 12, 1], 3, 3, 64, 48, 20, True, "int"),
    ([7, 3, 9], 2, 2, 48, 32, 16, False, "tensor64"),
    ([7, 3, 9], 0, 2, 48, 32, 16, True, "tensor32"),
]
VARLEN_GPU = VARLEN_CPU + [([300, 1, 0, 777, 64], 5, 8, 128, 128, 1024, True, "tensor64")]


@pytest.mark.parametrize("device,dtype,lens,extra,h,d,rd,sro,interleaved,offs",
                         dev_cases(VARLEN_CPU, VARLEN_GPU))
def test_varlen_forward(device, dtype, lens, extra, h, d, rd, sro, interleaved, offs):
    rows = sum(lens) + extra
    x = torch.randn(rows, h, d, device=device, dtype=dtype)
    cos, sin = _tables_for(sro, rd, device)
    cu = cu_from_lens(lens, device)
    off = _offsets(offs, len(lens), max(lens), sro, device)
    cu_list = [int(c) for c in cu.tolist()]
    pos = row_positions(len(lens), 0, off.cpu() if isinstance(off, torch.Tensor) else off, cu_list, rows)
    _poison_like(x)
    out = apply_rotary_emb(x, cos, sin, interleaved=interleaved, seqlen_offsets=off,
                           cu_seqlens=cu, max_seqlen=max(lens))
    _check_forward(out, x, cos, sin, pos, interleaved, dtype)


# --------------------------------------------------------------------------------------------
# in place, gradients
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device,dtype,interleaved,layout",
                         dev_cases([(False, "contiguous"), (True, "strided")]))
def test_inplace_matches_out_of_place(device, dtype, interleaved, layout):
    x = _make_x((2, 11, 3, 40), device, dtype, layout)
    cos, sin = _tables_for(16, 32, device)
    off = torch.tensor([0, 5], device=device)
    expected = apply_rotary_emb(x, cos, sin, interleaved=interleaved, seqlen_offsets=off)
    y = x.clone() if layout == "contiguous" else _make_x((2, 11, 3, 40), device, dtype, layout)
    y.copy_(x)
    ptr = y.data_ptr()
    got = apply_rotary_emb(y, cos, sin, interleaved=interleaved, inplace=True, seqlen_offsets=off)
    assert got is y and y.data_ptr() == ptr
    assert torch.equal(y, expected), "in-place and out-of-place results differ"


@pytest.mark.parametrize("device,dtype,interleaved,inplace,varlen",
                         dev_cases([(False, False, False), (True, False, False), (False, True, False),
                                    (True, True, False), (False, False, True), (True, True, True)]))
def test_gradient(device, dtype, interleaved, inplace, varlen):
    """dx = the inverse rotation of dout (vs the float64 autograd of the oracle)."""
    rd, sro = 48, 24
    cos, sin = _tables_for(sro, rd, device)
    if varlen:
        lens = [6, 0, 9]
        cu = cu_from_lens(lens, device)
        shape, kw = (sum(lens) + 2, 3, 64), dict(cu_seqlens=cu, max_seqlen=9)
        off = torch.tensor([2, 0, 20], device=device)  # the last sequence runs past seqlen_ro
        pos = row_positions(3, 0, off.cpu(), [int(c) for c in cu.tolist()], shape[0])
    else:
        shape, kw = (2, 10, 3, 64), {}
        off = 3
        pos = row_positions(2, 10, off)
    x = torch.randn(shape, device=device, dtype=dtype)
    dout = torch.randn(shape, device=device, dtype=dtype)
    leaf = x.clone().requires_grad_()
    inp = leaf * 1 if inplace else leaf  # in place needs a non-leaf
    _poison_like(x)
    out = apply_rotary_emb(inp, cos, sin, interleaved=interleaved, inplace=inplace,
                           seqlen_offsets=off, **kw)
    (dx,) = torch.autograd.grad(out, leaf, dout)
    x64 = x.detach().to(torch.float64).requires_grad_()
    (ref,) = torch.autograd.grad(rotary_ref_diff(x64, cos, sin, pos, interleaved), x64,
                                 dout.to(torch.float64))
    base = rotary_lowp(dout, cos, sin, pos, interleaved, conjugate=True)
    assert dx.dtype == dtype
    assert_ratio("dx", dx, ref, base, dtype, GRAD_FACTOR)
    assert torch.equal(dx[..., rd:], dout[..., rd:]), "gradient past rotary_dim must pass through"


def rotary_ref_diff(x64, cos, sin, pos, interleaved):
    """rotary_ref without the detach (differentiable), float64."""
    rd = 2 * cos.shape[1]
    xf = x64.reshape(-1, *x64.shape[-2:])
    c, s = _tables(cos.to(torch.float64), sin.to(torch.float64), pos, torch.float64)
    x0, x1 = _split(xf, rd, interleaved)
    out = torch.cat((_merge(x0 * c - x1 * s, x0 * s + x1 * c, interleaved), xf[..., rd:]), dim=-1)
    return out.reshape(x64.shape)


# --------------------------------------------------------------------------------------------
# packed qkv / kv, RotaryEmbedding
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device,dtype,layout,xpos", dev_cases(
    [("qkv5", False), ("qkv5", True), ("gqa4", False), ("gqa4", True)]))
def test_qkv_inplace(device, dtype, layout, xpos):
    b, s, h, hk, d, rd = 2, 7, 4, 2, 32, 24
    cos, sin = _tables_for(10, rd, device)
    ck, sk = _tables_for(10, rd, device) if xpos else (None, None)
    qkv = torch.randn((b, s, 3, h, d) if layout == "qkv5" else (b, s, h + 2 * hk, d),
                      device=device, dtype=dtype)
    orig = qkv.clone()
    out = apply_rotary_emb_qkv_(qkv, cos, sin, ck, sk, seqlen_offsets=2,
                                num_heads_q=None if layout == "qkv5" else h)
    assert out is qkv
    pos = row_positions(b, s, 2)
    if layout == "qkv5":
        q0, k0, v0, q1, k1, v1 = orig[:, :, 0], orig[:, :, 1], orig[:, :, 2], qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    else:
        q0, k0, v0 = orig[:, :, :h], orig[:, :, h:h + hk], orig[:, :, h + hk:]
        q1, k1, v1 = qkv[:, :, :h], qkv[:, :, h:h + hk], qkv[:, :, h + hk:]
    _check_forward(q1, q0, cos, sin, pos, False, dtype)
    _check_forward(k1, k0, ck if xpos else cos, sk if xpos else sin, pos, False, dtype)
    assert torch.equal(v1, v0), "V must not change"


@pytest.mark.parametrize("device", devices())
def test_kv_inplace_and_grad(device):
    dtype = torch.float32 if device == "cpu" else torch.float16
    cos, sin = _tables_for(8, 16, device)
    leaf = torch.randn(2, 8, 2, 3, 16, device=device, dtype=dtype, requires_grad=True)
    kv = leaf * 1
    out = apply_rotary_emb_kv_(kv, cos, sin, interleaved=True)
    assert out is kv
    pos = row_positions(2, 8, 0)
    _check_forward(kv[:, :, 0].detach(), leaf[:, :, 0].detach(), cos, sin, pos, True, dtype)
    assert torch.equal(kv[:, :, 1], leaf[:, :, 1])
    g = torch.randn_like(kv)
    (dl,) = torch.autograd.grad(kv, leaf, g)
    expected_k = rotary_ref(g[:, :, 0], cos, sin, pos, True, conjugate=True)
    assert_ratio("dk", dl[:, :, 0], expected_k, rotary_lowp(g[:, :, 0], cos, sin, pos, True, True),
                 dtype, GRAD_FACTOR)
    assert torch.equal(dl[:, :, 1], g[:, :, 1])


def _rope_tables_ref(dim: int, base: float, seqlen: int, scale_base=None):
    """RoFormer tables in float64: theta[p, i] = p * base^(-2i/dim); XPos scale per (p, i)."""
    i = torch.arange(0, dim, 2, dtype=torch.float64)
    inv = base ** (-i / dim)
    theta = torch.arange(seqlen, dtype=torch.float64).unsqueeze(1) * inv
    if scale_base is None:
        return theta.cos(), theta.sin(), theta.cos(), theta.sin()
    sc = ((i + 0.4 * dim) / (1.4 * dim)) ** ((torch.arange(seqlen, dtype=torch.float64) - seqlen // 2)
                                              / scale_base).unsqueeze(1)
    return theta.cos() * sc, theta.sin() * sc, theta.cos() / sc, theta.sin() / sc


@pytest.mark.parametrize("device,dtype,mode,interleaved,xpos", dev_cases(
    [("qkv", False, False), ("qkv", True, True), ("q_kv", False, True), ("q_kv", True, False)]))
def test_rotary_embedding_module(device, dtype, mode, interleaved, xpos):
    b, s, h, d, off = 2, 9, 3, 32, 4
    rope = RotaryEmbedding(d, base=500.0, interleaved=interleaved,
                           scale_base=64.0 if xpos else None, device=device)
    pos = row_positions(b, s, off)
    if mode == "qkv":
        qkv = torch.randn(b, s, 3, h, d, device=device, dtype=dtype)
        orig = qkv.clone()
        assert rope(qkv, seqlen_offset=off) is qkv
        q1, k1, q0, k0 = qkv[:, :, 0], qkv[:, :, 1], orig[:, :, 0], orig[:, :, 1]
        assert torch.equal(qkv[:, :, 2], orig[:, :, 2])
    else:
        q = torch.randn(b, s, h, d, device=device, dtype=dtype)
        kv = torch.randn(b, s, 2, 1, d, device=device, dtype=dtype)
        q0, k0 = q.clone(), kv[:, :, 0].clone()
        q1, kv1 = rope(q, kv, seqlen_offset=off)
        assert q1 is q and kv1 is kv
        k1 = kv[:, :, 0]
    # the tables the module cached (in x's dtype, as flash-attn caches them) are RoFormer's / XPos'
    # to rounding; the rotation is then checked with exactly those tables
    refs = _rope_tables_ref(d, 500.0, s + off, 64.0 if xpos else None)
    cached = (rope._cos_cached, rope._sin_cached) + ((rope._cos_k_cached, rope._sin_k_cached)
                                                      if xpos else (rope._cos_cached, rope._sin_cached))
    for name, got, want in zip(("cos", "sin", "cos_k", "sin_k"), cached, refs):
        assert got.dtype == dtype and got.shape == want.shape, name
        # rounding to dtype, plus the fp32 angle p * inv_freq (p < s + off) the module computes
        tol = (2 * torch.finfo(dtype).eps * max(1.0, want.abs().max().item())
               + 4 * torch.finfo(torch.float32).eps * (s + off))
        torch.testing.assert_close(got.cpu().double(), want, rtol=0, atol=tol, msg=name)
    tq = [t.float() for t in cached]
    _check_forward(q1, q0, tq[0], tq[1], pos, interleaved, dtype)
    _check_forward(k1, k0, tq[2], tq[3], pos, interleaved, dtype)


def test_rotary_embedding_tensor_offsets_need_max_seqlen():
    rope = RotaryEmbedding(16)
    qkv = torch.randn(2, 4, 3, 2, 16)
    with pytest.raises(ValueError, match="max_seqlen"):
        rope(qkv, seqlen_offset=torch.tensor([0, 3]))
    rope(qkv, seqlen_offset=torch.tensor([0, 3]), max_seqlen=8)  # ok with max_seqlen
    assert rope._cos_cached.shape == (8, 8)


# --------------------------------------------------------------------------------------------
# torch.compile, opcheck
# --------------------------------------------------------------------------------------------


def test_compile_fullgraph_cpu():
    """apply_rotary_emb traces without graph breaks (fake kernel + autograd of the op) and the
    compiled forward and backward give the eager bits."""
    torch._dynamo.reset()
    x = torch.randn(2, 6, 3, 32)
    cos, sin = _tables_for(10, 24, "cpu")
    off = torch.tensor([1, 4])

    def f(t):
        return apply_rotary_emb(t, cos, sin, interleaved=True, seqlen_offsets=off) * 2

    fc = torch.compile(f, fullgraph=True, backend="aot_eager")
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = f(a), fc(b)
    assert torch.equal(ya, yb)
    g = torch.randn_like(ya)
    ya.backward(g)
    yb.backward(g)
    assert torch.equal(a.grad, b.grad)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("varlen", [False, True])
def test_opcheck(device, varlen):
    cos, sin = _tables_for(12, 16, device)
    if varlen:
        x = torch.randn(10, 2, 24, device=device)
        args = (cos, sin, torch.tensor([1, 0], device=device), 0, cu_from_lens([4, 6], device), True)
    else:
        x = torch.randn(2, 5, 2, 24, device=device)
        args = (cos, sin, None, 3, None, False)
    torch.library.opcheck(OPS.rotary, (x.requires_grad_(), *args, False))
    torch.library.opcheck(OPS.rotary_, (x.detach().clone(), *args, False))


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------


def _bad_cases():
    x = torch.randn(2, 5, 3, 16)
    cos, sin = _tables_for(8, 16, "cpu")
    return [
        ("x must be 4-D", dict(x=torch.randn(5, 3, 16))),
        ("x must be 3-D", dict(x=x, cu_seqlens=torch.tensor([0, 5], dtype=torch.int32), max_seqlen=5)),
        ("max_seqlen is required", dict(x=torch.randn(5, 3, 16), cu_seqlens=torch.tensor([0, 5], dtype=torch.int32))),
        ("sin must have the shape of cos", dict(sin=sin[:, :4])),
        ("cos must be 2-D", dict(cos=cos[None], sin=sin[None])),
        ("rotary_dim", dict(cos=torch.ones(8, 9), sin=torch.zeros(8, 9))),
        ("seqlen_ro", dict(cos=cos[:4], sin=sin[:4])),
        ("seqlen_offsets", dict(seqlen_offsets=4)),
        ("seqlen_offsets", dict(seqlen_offsets=-1)),
        ("seqlen_offsets", dict(seqlen_offsets=1.5)),
        ("seqlen_offsets", dict(seqlen_offsets=torch.tensor([1, 2, 3]))),
        ("seqlen_offsets", dict(seqlen_offsets=torch.tensor([1.0, 2.0]))),
        ("x must be float32, float16 or bfloat16", dict(x=torch.ones(2, 5, 3, 16, dtype=torch.float64))),
        ("contiguous last dimension", dict(x=torch.randn(2, 5, 3, 32)[..., ::2], inplace=True)),
        ("cu_seqlens must be non-decreasing", dict(x=torch.randn(9, 3, 16), max_seqlen=5,
                                                   cu_seqlens=torch.tensor([0, 5, 4, 9], dtype=torch.int32))),
        ("cu_seqlens must be a 1-D int32", dict(x=torch.randn(9, 3, 16), max_seqlen=5,
                                                cu_seqlens=torch.tensor([0, 5, 9]))),
        ("exceeds", dict(x=torch.randn(9, 3, 16), max_seqlen=8,
                         cu_seqlens=torch.tensor([0, 5, 12], dtype=torch.int32))),
        # positions 4..6 of the second sequence would pass the table check unrotated
        ("max_seqlen=4 is smaller than the longest sequence", dict(x=torch.randn(9, 3, 16), max_seqlen=4,
                                                              cu_seqlens=torch.tensor([0, 2, 9], dtype=torch.int32))),
    ], x, cos, sin


@pytest.mark.parametrize("idx", range(18))
def test_bad_input_names_the_argument(idx):
    cases, x, cos, sin = _bad_cases()
    match, kw = cases[idx]
    args = dict(x=x, cos=cos, sin=sin)
    args.update(kw)
    with pytest.raises((ValueError, TypeError, RuntimeError), match=match):
        apply_rotary_emb(**args)


def test_numpy_integer_offset_and_empty_strided_x():
    """seqlen_offsets may be any integer (numpy.int64 as flash-attn takes it); an empty x whose last
    dim is strided comes back empty out of place (x.contiguous() would have kept its strides)."""
    import numpy as np
    _, x, cos, sin = _bad_cases()
    torch.testing.assert_close(apply_rotary_emb(x, cos, sin, seqlen_offsets=np.int64(2)),
                               apply_rotary_emb(x, cos, sin, seqlen_offsets=2), rtol=0, atol=0)
    empty = torch.randn(0, 5, 3, 32)[..., ::2]
    assert apply_rotary_emb(empty, cos, sin).shape == (0, 5, 3, 16)


def test_strided_head_dim_out_of_place_and_overlap_in_place():
    """Out of place, a head_dim-strided x is read like a contiguous one (flash-attn accepts it);
    in place, an x whose elements share memory is refused (it would be rotated twice)."""
    _, x, cos, sin = _bad_cases()
    wide = torch.randn(2, 5, 3, 32)
    torch.testing.assert_close(apply_rotary_emb(wide[..., ::2], cos, sin),
                               apply_rotary_emb(wide[..., ::2].contiguous(), cos, sin), rtol=0, atol=0)
    shared = torch.randn(1, 5, 3, 16).expand(2, 5, 3, 16)
    with pytest.raises(RuntimeError, match="single memory location"):
        apply_rotary_emb(shared, cos, sin, inplace=True)


@pytest.mark.gpu
def test_bad_device_cuda():
    x = torch.randn(2, 5, 3, 16, device="cuda", dtype=torch.float16)
    cos, sin = _tables_for(8, 16, "cpu")
    with pytest.raises(RuntimeError, match="cos must be on cuda"):
        apply_rotary_emb(x, cos, sin)
    with pytest.raises(RuntimeError, match="seqlen_offsets must be on cuda"):
        apply_rotary_emb(x, cos.cuda(), sin.cuda(), seqlen_offsets=torch.tensor([0, 1]))


def test_public_names():
    assert apply_rotary_emb_func is apply_rotary_emb
    assert flash_attn_c.apply_rotary_emb is apply_rotary_emb
    assert flash_attn_c.RotaryEmbedding is RotaryEmbedding
