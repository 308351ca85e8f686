"""The CPU forward's row path (csrc/cpu/fa_fwd.c, FWD_ROWS_DIRECT): work items of at most 4 query
rows (a decode step, a few speculative tokens) compute q.k as dot products along d, the softmax
with the keys along the vector lanes and O by rows, instead of the transposed GEMMs. Parity against the float64 oracle (error-ratio rule) on those
shapes, across the features the path shares with the block path (masks, windows, softcap, ALiBi,
GQA, empty rows, the probabilities output), head dims that are not a multiple of the vector width,
and 5 rows (just past the threshold: the block path) for contrast."""
from __future__ import annotations

import pytest
import torch

from conftest import dev_cases
from oracle import check_dense

# (sq, sk, h, hk, d, feature kwargs)
CASES = [
    (1, 300, 4, 4, 64, dict()),
    (1, 300, 4, 2, 40, dict(causal=True)),           # d = 40: a tail past the vector width
    (2, 257, 4, 1, 72, dict(causal=True)),
    (3, 130, 2, 2, 64, dict(window=(17, 0))),
    (4, 513, 4, 2, 128, dict(softcap=5.0, causal=True)),
    (3, 200, 4, 4, 24, dict(alibi="bh")),
    (1, 1, 2, 2, 64, dict()),
    (4, 3, 2, 2, 32, dict(causal=True)),             # sq > sk: rows that see no key (lse -inf)
    (5, 300, 2, 2, 64, dict(causal=True, softcap=3.0)),  # past the threshold
    (2, 1030, 2, 2, 256, dict(window=(100, 100), alibi="h")),
]


@pytest.mark.parametrize("device,dtype,sq,sk,h,hk,d,kw", dev_cases(CASES))
def test_cpu_decode_rows_forward(device, dtype, sq, sk, h, hk, d, kw):
    check_dense(device, dtype, 2, sq, sk, h, hk, d, **kw)


@pytest.mark.parametrize("device,dtype", dev_cases([()]))
def test_cpu_decode_rows_backward(device, dtype):
    """The backward recomputes from the forward's LSE: the row path's LSE feeds it."""
    check_dense(device, dtype, 2, 3, 150, 4, 2, 40, causal=True, softcap=4.0, grad=True)


@pytest.mark.parametrize("device,dtype", dev_cases([()]))
def test_cpu_decode_rows_dropout_probs(device, dtype):
    """Dropout and return_attn_probs on a 2-row item: the probabilities output re-scores through
    the row path; the returned S_dmask's magnitudes are P (sign = dropped), rows sum to 1."""
    import flash_attn_c

    torch.manual_seed(0)
    q = torch.randn(1, 2, 2, 48, dtype=dtype)
    k, v = torch.randn(1, 70, 2, 48, dtype=dtype), torch.randn(1, 70, 2, 48, dtype=dtype)
    out, lse, probs = flash_attn_c.flash_attn_func(q, k, v, dropout_p=0.25, causal=True, return_attn_probs=True)
    p = probs.abs().double()[..., :2, :70]
    torch.testing.assert_close(p.sum(-1), torch.ones_like(p.sum(-1)), atol=2e-3, rtol=0)
    # the undropped reference: P from the oracle's scores
    s = torch.einsum("bqhd,bkhd->bhqk", q.double(), k.double()) / 48 ** 0.5
    i = torch.arange(2)[:, None] + 70 - 2
    s = s.masked_fill(torch.arange(70)[None, :] > i, float("-inf"))
    torch.testing.assert_close(p, torch.softmax(s, -1), atol=2e-2, rtol=0)
    assert torch.isfinite(out).all() and torch.isfinite(lse).all()
