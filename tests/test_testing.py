"""flash_attn_c.testing: the reference attention the tests and the bench measure against.

Checked against independent definitions: torch SDPA's math backend in float64 where the two agree
(no mask, causal with sq == sk, GQA, explicit boolean or additive masks), and plain loops over
(i, j) for the masks, softcap, dropout and the varlen split. Everything here is float64 and CPU.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from flash_attn_c.testing import (alibi_distance, attention_ref, cu_from_lens,
                                  ref_forward_backward, visible_mask)

F64 = torch.float64


def _qkv(b: int, sq: int, sk: int, h: int, hk: int, d: int, dtype: torch.dtype = F64):
    """Random q (b, sq, h, d), k/v (b, sk, hk, d)."""
    return (torch.randn(b, sq, h, d, dtype=dtype), torch.randn(b, sk, hk, d, dtype=dtype),
            torch.randn(b, sk, hk, d, dtype=dtype))


def _sdpa_math(q, k, v, **kw) -> torch.Tensor:
    """torch SDPA (math backend) on (b, s, h, d) tensors, result (b, sq, h, d)."""
    with sdpa_kernel([SDPBackend.MATH]):
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                             v.transpose(1, 2), **kw)
    return out.transpose(1, 2)


def _loop_mask(sq: int, sk: int, left: int, right: int) -> torch.Tensor:
    """The bottom-right rule written out element by element."""
    m = torch.zeros(sq, sk, dtype=torch.bool)
    for i in range(sq):
        for j in range(sk):
            m[i, j] = ((left < 0 or j >= i + sk - sq - left)
                       and (right < 0 or j <= i + sk - sq + right))
    return m


@pytest.mark.parametrize("sq, sk, window, causal", [
    (7, 7, (-1, -1), False), (7, 7, (-1, -1), True), (2, 5, (-1, -1), True),
    (5, 2, (-1, -1), True), (4, 4, (1, 0), False), (6, 9, (2, 3), False), (9, 6, (0, -1), True),
    (5, 5, (-1, 2), False), (3, 8, (0, 0), False),
])
def test_visible_mask_matches_the_written_out_rule(sq, sk, window, causal) -> None:
    left, right = window[0], 0 if causal else window[1]
    assert torch.equal(visible_mask(sq, sk, window, causal), _loop_mask(sq, sk, left, right))


def test_visible_mask_causal_examples() -> None:
    """The pictures of docs/conventions.md: sq < sk sees everything on the last row; sq > sk
    leaves the first rows empty."""
    assert visible_mask(2, 5, causal=True).int().tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
    assert visible_mask(5, 2, causal=True).int().tolist() == [
        [0, 0], [0, 0], [0, 0], [1, 0], [1, 1]]


def test_alibi_distance_and_cu_from_lens() -> None:
    dist = alibi_distance(3, 5)
    assert dist.dtype == F64
    assert dist.tolist() == [[2, 1, 0, 1, 2], [3, 2, 1, 0, 1], [4, 3, 2, 1, 0]]
    cu = cu_from_lens([3, 0, 5])
    assert cu.dtype == torch.int32 and cu.tolist() == [0, 3, 3, 8]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("h, hk", [(4, 4), (4, 2), (6, 1)])
def test_matches_sdpa_math(causal: bool, h: int, hk: int) -> None:
    """sq == sk, where SDPA's top-left is_causal equals our bottom-right causal; GQA via
    enable_gqa; a non-default softmax_scale."""
    q, k, v = _qkv(2, 33, 33, h, hk, 16)
    ref = attention_ref(q, k, v, causal=causal, softmax_scale=0.3)
    sdpa = _sdpa_math(q, k, v, is_causal=causal, scale=0.3, enable_gqa=hk != h)
    assert ref.out.dtype == F64 and ref.out.shape == q.shape
    torch.testing.assert_close(ref.out, sdpa, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("sq, sk, window", [(17, 29, (-1, 0)), (29, 29, (4, 2)), (20, 12, (3, -1))])
def test_window_and_alibi_match_sdpa_with_explicit_masks(sq: int, sk: int, window) -> None:
    """Bottom-right windows as a boolean mask, ALiBi as an additive bias (every row here sees at
    least one key, so SDPA's softmax is defined)."""
    q, k, v = _qkv(2, sq, sk, 4, 2, 8)
    vis = visible_mask(sq, sk, window)
    assert vis.any(dim=-1).all()
    ref = attention_ref(q, k, v, window=window)
    torch.testing.assert_close(ref.out, _sdpa_math(q, k, v, attn_mask=vis, enable_gqa=True),
                               atol=1e-12, rtol=1e-12)
    slopes = torch.rand(2, 4, dtype=torch.float32) * 0.5 + 0.05
    bias = -slopes.double().view(2, 4, 1, 1) * alibi_distance(sq, sk)
    bias = bias.masked_fill(~vis, float("-inf"))
    ref = attention_ref(q, k, v, window=window, alibi_slopes=slopes)
    torch.testing.assert_close(ref.out, _sdpa_math(q, k, v, attn_mask=bias, enable_gqa=True),
                               atol=1e-12, rtol=1e-12)


def test_softcap_dropout_and_lse_by_loops() -> None:
    """One head, element by element: s = cap * tanh(q.k * scale / cap), lse over the visible keys,
    p = exp(s - lse), out = sum_j p * keep / (1 - p_drop) * v_j; probs are pre-dropout."""
    sq, sk, d, cap, p_drop, scale = 5, 7, 4, 2.0, 0.25, 0.7
    q, k, v = _qkv(1, sq, sk, 1, 1, d)
    keep = torch.rand(1, 1, sq, sk) > p_drop
    ref = attention_ref(q, k, v, causal=True, softcap=cap, softmax_scale=scale,
                        dropout_mask=keep, dropout_p=p_drop)
    vis = _loop_mask(sq, sk, -1, 0)
    for i in range(sq):
        s = [cap * math.tanh(float(q[0, i, 0] @ k[0, j, 0]) * scale / cap) for j in range(sk)]
        lse = math.log(sum(math.exp(s[j]) for j in range(sk) if vis[i, j]))
        p = [math.exp(s[j] - lse) if vis[i, j] else 0.0 for j in range(sk)]
        out = sum(p[j] * float(keep[0, 0, i, j]) / (1 - p_drop) * v[0, j, 0] for j in range(sk))
        assert ref.lse[0, 0, i].item() == pytest.approx(lse, rel=1e-12)
        torch.testing.assert_close(ref.probs[0, 0, i], torch.tensor(p, dtype=F64), atol=1e-12, rtol=1e-12)
        torch.testing.assert_close(ref.out[0, i, 0], out, atol=1e-12, rtol=1e-12)


def test_rows_that_see_no_key_are_zero_with_zero_gradients() -> None:
    q, k, v = _qkv(1, 6, 3, 2, 2, 4)
    dout = torch.randn(1, 6, 2, 4, dtype=F64)
    res = ref_forward_backward((q, k, v), dout, causal=True)   # rows 0..2 see nothing
    assert torch.isneginf(res.lse[..., :3]).all() and torch.isfinite(res.lse[..., 3:]).all()
    assert (res.out[:, :3] == 0).all() and (res.probs[..., :3, :] == 0).all()
    assert not any(torch.isnan(g).any() for g in res.grads)
    assert (res.grads[0][:, :3] == 0).all()
    assert (res.out[:, 3:] != 0).all()


def test_gradients_match_sdpa_math() -> None:
    q, k, v = _qkv(2, 11, 11, 4, 2, 8)
    dout = torch.randn(2, 11, 4, 8, dtype=F64)
    res = ref_forward_backward((q, k, v), dout, causal=True)
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
    sdpa = _sdpa_math(*leaves, is_causal=True, enable_gqa=True)
    for ours, theirs in zip(res.grads, torch.autograd.grad(sdpa, leaves, dout)):
        torch.testing.assert_close(ours, theirs, atol=1e-12, rtol=1e-12)


def test_varlen_is_the_dense_reference_per_sequence() -> None:
    """Per-sequence masks (bottom-right with each sequence's own sq/sk) and ALiBi slopes (b, h);
    an empty query sequence contributes no rows."""
    lens_q, lens_k = [3, 0, 7, 5], [6, 4, 7, 2]
    h, hk, d = 4, 2, 8
    q = torch.randn(sum(lens_q), h, d, dtype=F64)
    k, v = (torch.randn(sum(lens_k), hk, d, dtype=F64) for _ in range(2))
    slopes = torch.rand(4, h) * 0.5
    cq, ck = cu_from_lens(lens_q), cu_from_lens(lens_k)
    ref = attention_ref(q, k, v, causal=True, window=(2, -1), alibi_slopes=slopes,
                        cu_seqlens_q=cq, cu_seqlens_k=ck)
    assert ref.out.shape == q.shape and ref.lse.shape == (h, sum(lens_q))
    assert ref.probs.shape == (4, h, 7, 7)
    for i in range(4):
        a, b = int(cq[i]), int(cq[i + 1])
        c, e = int(ck[i]), int(ck[i + 1])
        dense = attention_ref(q[a:b][None], k[c:e][None], v[c:e][None], causal=True,
                              window=(2, -1), alibi_slopes=slopes[i:i + 1])
        assert torch.equal(ref.out[a:b], dense.out[0])
        assert torch.equal(ref.lse[:, a:b], dense.lse[0])
        assert torch.equal(ref.probs[i, :, :b - a, :e - c], dense.probs[0])
        assert (ref.probs[i, :, b - a:] == 0).all() and (ref.probs[i, :, :, e - c:] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_upcast_false_computes_in_the_input_dtype(dtype: torch.dtype) -> None:
    """The error-ratio rule's baseline: same formula in the inputs' precision, lse in fp32;
    upcast=True of the same inputs is float64 and closer to the float64 truth."""
    q, k, v = _qkv(1, 40, 40, 2, 2, 16, dtype)
    low = attention_ref(q, k, v, causal=True, upcast=False)
    assert low.out.dtype == dtype and low.lse.dtype == torch.float32
    exact = attention_ref(q, k, v, causal=True)
    truth = _sdpa_math(q.double(), k.double(), v.double(), is_causal=True)
    assert (exact.out - truth).abs().max() < 1e-12
    assert 0 < (low.out.double() - truth).abs().max() < 0.1


def test_varlen_rows_no_sequence_covers_are_zero_and_neg_inf() -> None:
    """cu_seqlens that start past row 0 or end before the last row leave rows to no sequence: the
    reference keeps the tensor's rows (out 0, lse -inf there, as the library does) instead of
    returning only the covered ones, shifted."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(6, 2, 4, dtype=torch.float64) for _ in range(3))
    cu = torch.tensor([1, 3, 5], dtype=torch.int32)
    ref = attention_ref(q, k, v, cu_seqlens_q=cu, cu_seqlens_k=cu)
    assert ref.out.shape == (6, 2, 4) and ref.lse.shape == (2, 6)
    assert (ref.out[0] == 0).all() and (ref.out[5] == 0).all()
    assert torch.isneginf(ref.lse[:, [0, 5]]).all() and torch.isfinite(ref.lse[:, 1:5]).all()
    dense = attention_ref(q[1:3].unsqueeze(0), k[1:3].unsqueeze(0), v[1:3].unsqueeze(0))
    assert torch.equal(ref.out[1:3], dense.out[0])
    with pytest.raises(ValueError, match="cu_seqlens_q"):
        attention_ref(q, k, v, cu_seqlens_q=torch.tensor([0, 4, 2], dtype=torch.int32), cu_seqlens_k=cu)
    with pytest.raises(ValueError, match="cu_seqlens_k"):
        attention_ref(q, k, v, cu_seqlens_q=cu)


def test_lse_alone_has_gradients() -> None:
    """ref_forward_backward with dlse and no dout: the gradients of sum(lse dlse) (v gets none)."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 5, 2, 8, dtype=torch.float64) for _ in range(3))
    dlse = torch.randn(1, 2, 5, dtype=torch.float64)
    res = ref_forward_backward((q, k, v), None, dlse=dlse)
    qg, kg = (t.clone().requires_grad_() for t in (q, k))
    s = torch.einsum("bqhd,bkhd->bhqk", qg, kg) * 8 ** -0.5
    want = torch.autograd.grad((torch.logsumexp(s, -1) * dlse).sum(), (qg, kg))
    torch.testing.assert_close(res.grads[0], want[0])
    torch.testing.assert_close(res.grads[1], want[1])
    assert (res.grads[2] == 0).all()
