"""flash_attn_c.bert_padding, flash-attn 2.8 compatible: unpad_input's 5 returns (x_unpad,
indices, cu_seqlens, max_seqlen, seqused), pad_input round trip, index_first_axis and
index_put_first_axis with their gradients; and unpad -> varlen attention -> pad equals padded
attention with a key mask."""
from __future__ import annotations

import pytest
import torch

from conftest import dev_cases, devices
from oracle import FWD_FACTOR, assert_ratio, ref_forward_backward

import flash_attn_c
from flash_attn_c.bert_padding import index_first_axis, index_put_first_axis, pad_input, unpad_input


def _mask(lens, s, device):
    return torch.arange(s, device=device)[None, :] < torch.tensor(lens, device=device)[:, None]


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.int32, torch.int64])
def test_unpad_input_returns(device, mask_dtype):
    b, s = 4, 7
    lens = [3, 7, 0, 5]
    x = torch.randn(b, s, 2, 8, device=device)
    mask = _mask(lens, s, device).to(mask_dtype)
    res = unpad_input(x, mask)
    assert len(res) == 5
    x_unpad, indices, cu, max_s, seqused = res
    flat = mask.flatten().bool()
    assert torch.equal(indices.cpu(), torch.nonzero(flat.cpu()).flatten())
    assert torch.equal(x_unpad, x.reshape(b * s, 2, 8)[flat])
    assert cu.dtype == torch.int32 and cu.tolist() == [0, 3, 10, 10, 15]
    assert isinstance(max_s, int) and max_s == 7
    assert seqused.dtype == torch.int32 and seqused.tolist() == lens


@pytest.mark.parametrize("device", devices())
def test_unpad_input_unused_mask(device):
    """unused_mask marks allocated-but-unused tokens: they are kept in x_unpad / cu_seqlens, while
    seqused counts only attention_mask's tokens."""
    b, s = 2, 6
    attn = _mask([2, 4], s, device)
    unused = torch.zeros(b, s, dtype=torch.bool, device=device)
    unused[0, 2:4] = True
    unused[1, 4] = True
    x = torch.randn(b, s, 3, device=device)
    x_unpad, indices, cu, max_s, seqused = unpad_input(x, attn, unused)
    assert cu.tolist() == [0, 4, 9]
    assert max_s == 5
    assert seqused.tolist() == [2, 4]
    assert indices.tolist() == [0, 1, 2, 3, 6, 7, 8, 9, 10]
    assert torch.equal(x_unpad, x.reshape(b * s, 3)[indices])


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [torch.bool, torch.int32])
def test_unpad_input_overlapping_masks(device, dtype):
    """A token both masks mark is packed once: cu_seqlens count it once, as the indices do (an int
    sum counted it twice and the lengths no longer matched the packed rows)."""
    b, s = 1, 6
    attn = _mask([4], s, device).to(dtype)
    unused = torch.zeros(b, s, dtype=dtype, device=device)
    unused[0, 2:6] = 1  # overlaps tokens 2, 3
    x = torch.randn(b, s, 3, device=device)
    x_unpad, indices, cu, max_s, seqused = unpad_input(x, attn, unused)
    assert indices.tolist() == [0, 1, 2, 3, 4, 5]
    assert cu.tolist() == [0, 6] and max_s == 6 and x_unpad.shape[0] == 6
    assert seqused.tolist() == [4]


@pytest.mark.parametrize("device", devices())
def test_pad_input_round_trip(device):
    b, s = 3, 9
    lens = [9, 1, 4]
    x = torch.randn(b, s, 4, 5, device=device)
    mask = _mask(lens, s, device)
    x_unpad, indices, *_ = unpad_input(x, mask)
    back = pad_input(x_unpad, indices, b, s)
    assert back.shape == x.shape
    assert torch.equal(back[mask], x[mask])
    assert (back[~mask] == 0).all()


@pytest.mark.parametrize("device", devices())
def test_index_first_axis_forward_and_grad(device):
    x = torch.randn(10, 3, 4, device=device, requires_grad=True)
    idx = torch.tensor([7, 0, 3, 9], device=device)
    y = index_first_axis(x, idx)
    assert torch.equal(y, x.detach()[idx])
    g = torch.randn_like(y)
    (gx,) = torch.autograd.grad(y, (x,), g)
    expect = torch.zeros_like(x)
    expect[idx] = g
    assert torch.equal(gx, expect)


@pytest.mark.parametrize("device", devices())
def test_index_put_first_axis_forward_and_grad(device):
    vals = torch.randn(4, 3, 2, device=device, requires_grad=True)
    idx = torch.tensor([5, 1, 8, 2], device=device)
    y = index_put_first_axis(vals, idx, 10)
    assert y.shape == (10, 3, 2)
    expect = torch.zeros(10, 3, 2, device=device)
    expect[idx] = vals.detach()
    assert torch.equal(y, expect)
    g = torch.randn_like(y)
    (gv,) = torch.autograd.grad(y, (vals,), g)
    assert torch.equal(gv, g[idx])


@pytest.mark.parametrize("device,dtype", dev_cases([()], [()], marks=[pytest.mark.parity_fwd]))
def test_unpad_varlen_pad_equals_masked_attention(device, dtype):
    """The bert_padding workflow: padded batch -> unpad -> varlen attention -> pad. Valid rows
    match the oracle on each sequence's valid tokens; padded rows are 0."""
    b, s, h, d = 3, 20, 2, 32
    lens = [20, 7, 13]
    mask = _mask(lens, s, device)
    q, k, v = (torch.randn(b, s, h, d, device=device, dtype=dtype) for _ in range(3))
    qu, idx, cu, ms, _ = unpad_input(q, mask)
    ku, _, _, _, _ = unpad_input(k, mask)
    vu, _, _, _, _ = unpad_input(v, mask)
    out = pad_input(flash_attn_c.flash_attn_varlen_func(qu, ku, vu, cu, cu, ms, ms, causal=True),
                    idx, b, s)
    assert (out[~mask] == 0).all()
    kw = dict(causal=True, cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=ms, max_seqlen_k=ms)
    ref = ref_forward_backward((qu, ku, vu), None, upcast=True, **kw)
    base = ref_forward_backward((qu, ku, vu), None, upcast=False, **kw)
    assert_ratio("out", out[mask], ref.out, base.out, dtype, FWD_FACTOR)
