"""The public API is flash-attn 2.8's: names, parameter names, order, kinds and defaults of the six
functions; window_size accepted as a tuple, a list or a 2-element tensor; return conventions."""
from __future__ import annotations

import inspect

import pytest
import torch

from conftest import dev_cases
from oracle import cu_from_lens

import flash_attn_c

_E = inspect.Parameter.empty
_TAIL = [("dropout_p", 0.0), ("softmax_scale", None), ("causal", False), ("window_size", (-1, -1)),
         ("softcap", 0.0), ("alibi_slopes", None), ("deterministic", False),
         ("return_attn_probs", False)]

# flash-attn 2.8 (flash_attn/flash_attn_interface.py), written out: (name, default) in order.
EXPECTED = {
    "flash_attn_func": [("q", _E), ("k", _E), ("v", _E)] + _TAIL,
    "flash_attn_qkvpacked_func": [("qkv", _E)] + _TAIL,
    "flash_attn_kvpacked_func": [("q", _E), ("kv", _E)] + _TAIL,
    "flash_attn_varlen_func": [("q", _E), ("k", _E), ("v", _E), ("cu_seqlens_q", _E),
                               ("cu_seqlens_k", _E), ("max_seqlen_q", _E), ("max_seqlen_k", _E)]
                              + _TAIL + [("block_table", None)],
    "flash_attn_varlen_qkvpacked_func": [("qkv", _E), ("cu_seqlens", _E), ("max_seqlen", _E)] + _TAIL,
    "flash_attn_varlen_kvpacked_func": [("q", _E), ("kv", _E), ("cu_seqlens_q", _E),
                                        ("cu_seqlens_k", _E), ("max_seqlen_q", _E),
                                        ("max_seqlen_k", _E)] + _TAIL,
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_signature_matches_flash_attn_2_8(name):
    """Names, order, kinds (all positional-or-keyword) and defaults; annotations may differ."""
    sig = inspect.signature(getattr(flash_attn_c, name))
    got = [(p.name, p.default) for p in sig.parameters.values()]
    assert got == EXPECTED[name]
    assert all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in sig.parameters.values())


def test_exports():
    for name in list(EXPECTED) + ["dropout_mask", "fixed_dropout_seed"]:
        assert callable(getattr(flash_attn_c, name, None)), name
    import flash_attn_c.bert_padding as bp  # a submodule, as in flash-attn
    for name in ("unpad_input", "pad_input", "index_first_axis", "index_put_first_axis"):
        assert callable(getattr(bp, name, None)), name


@pytest.mark.parametrize("device,dtype", dev_cases([()], [()]))
@pytest.mark.parametrize("form", ["tuple", "list", "tensor", "tensor_int32"])
def test_window_size_forms(device, dtype, form):
    """window_size as tuple, list, 2-element tensor: identical results."""
    q, k, v = (torch.randn(1, 40, 2, 32, device=device, dtype=dtype) for _ in range(3))
    w = {"tuple": (5, 3), "list": [5, 3], "tensor": torch.tensor([5, 3]),
         "tensor_int32": torch.tensor([5, 3], dtype=torch.int32)}[form]
    expect = flash_attn_c.flash_attn_func(q, k, v, window_size=(5, 3))
    assert torch.equal(flash_attn_c.flash_attn_func(q, k, v, window_size=w), expect)
    assert not torch.equal(expect, flash_attn_c.flash_attn_func(q, k, v))
    cu = cu_from_lens([40], device)
    var = flash_attn_c.flash_attn_varlen_func(q[0], k[0], v[0], cu, cu, 40, 40, window_size=w)
    torch.testing.assert_close(var, expect[0], rtol=0, atol=2 * torch.finfo(dtype).eps)


@pytest.mark.parametrize("device,dtype", dev_cases([()], [()]))
def test_positional_arguments_in_flash_attn_order(device, dtype):
    """A call written positionally for flash-attn means the same thing here."""
    q, k, v = (torch.randn(1, 24, 2, 32, device=device, dtype=dtype) for _ in range(3))
    a = flash_attn_c.flash_attn_func(q, k, v, 0.0, 0.3, True, (4, -1), 0.0, None, False, False)
    b = flash_attn_c.flash_attn_func(q, k, v, softmax_scale=0.3, causal=True, window_size=(4, -1))
    assert torch.equal(a, b)


@pytest.mark.parametrize("device,dtype", dev_cases([()], [()]))
def test_output_layout_and_types(device, dtype):
    q = torch.randn(2, 5, 4, 40, device=device, dtype=dtype, requires_grad=True)
    k = torch.randn(2, 9, 2, 40, device=device, dtype=dtype, requires_grad=True)
    v = torch.randn(2, 9, 2, 40, device=device, dtype=dtype, requires_grad=True)
    out, lse, s = flash_attn_c.flash_attn_func(q, k, v, return_attn_probs=True)
    assert out.shape == q.shape and out.dtype == dtype and out.device == q.device
    assert out.requires_grad and out.grad_fn is not None
    assert lse.shape == (2, 4, 5) and lse.dtype == torch.float32
    assert s.shape == (2, 4, 5, 9) and s.dtype == dtype
    with torch.no_grad():
        assert not flash_attn_c.flash_attn_func(q, k, v).requires_grad


@pytest.mark.parametrize("device,dtype", dev_cases([()], [()]))
def test_deterministic_flag_does_not_change_forward(device, dtype):
    q, k, v = (torch.randn(1, 24, 2, 32, device=device, dtype=dtype) for _ in range(3))
    assert torch.equal(flash_attn_c.flash_attn_func(q, k, v, deterministic=True),
                       flash_attn_c.flash_attn_func(q, k, v))


@pytest.mark.parametrize("device,dtype", dev_cases([()], [()]))
def test_gradient_only_for_inputs_that_require_it(device, dtype):
    """Only q requires grad: backward works and k/v get no .grad."""
    q = torch.randn(1, 12, 2, 32, device=device, dtype=dtype, requires_grad=True)
    k, v = (torch.randn(1, 12, 2, 32, device=device, dtype=dtype) for _ in range(2))
    flash_attn_c.flash_attn_func(q, k, v).sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()
    assert k.grad is None and v.grad is None
