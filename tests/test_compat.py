"""flash_attn_c.compat: `import flash_attn` code runs unchanged on flash_attn_c.

Every check runs a fresh Python in a subprocess (so this test process never registers the
flash_attn aliases). USER_SCRIPT imports only `flash_attn` names after `import flash_attn_c.compat`,
computes what flash-attn user code would (public functions, the private forward / backward that
ring-attention style code calls, bert_padding, rotary), and saves the results; the test compares
them with flash_attn_c's own functions (bit-exact: the same code underneath) and with the float64
oracle (error-ratio rule). The refusal is checked with a fake `flash_attn` package directory and a
fake flash_attn dist-info on sys.path.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from conftest import devices
from oracle import (FWD_FACTOR, GRAD_FACTOR, assert_grads, assert_lse, assert_ratio, cu_from_lens,
                    ref_forward_backward)

import flash_attn_c
from flash_attn_c import _dropout

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

USER_SCRIPT = textwrap.dedent('''
    import sys
    import torch
    import flash_attn_c.compat  # noqa: F401  (the only flash_attn_c line)
    import flash_attn
    from flash_attn import flash_attn_func, flash_attn_qkvpacked_func, flash_attn_varlen_func
    from flash_attn.bert_padding import pad_input, unpad_input
    from flash_attn.flash_attn_interface import (_flash_attn_backward, _flash_attn_forward,
                                                 _flash_attn_varlen_backward,
                                                 _flash_attn_varlen_forward)
    from flash_attn.layers.rotary import RotaryEmbedding, apply_rotary_emb

    path = sys.argv[1]
    t = torch.load(path + ".in")
    q, k, v, dout, scale = t["q"], t["k"], t["v"], t["dout"], t["scale"]
    nan = float("nan")
    r = {"version": flash_attn.__version__}

    r["func"] = flash_attn_func(q, k, v, causal=True)
    r["qkvpacked"] = flash_attn_qkvpacked_func(t["qkv"], causal=False)

    # private dense forward / backward (ring-attention style)
    qg = q.clone().requires_grad_()
    out, lse, S, rng = _flash_attn_forward(qg, k, v, 0.0, scale, True, -1, -1, 0.0, None, False)
    r["private_out_requires_grad"] = out.requires_grad
    dq, dk, dv = (torch.full_like(x, nan) for x in (q, k, v))
    sd = _flash_attn_backward(dout, q, k, v, out, lse, dq, dk, dv, 0.0, scale, True, -1, -1, 0.0,
                              None, False, rng)
    r.update(out=out, lse=lse, S=S, rng=rng, dq=dq, dk=dk, dv=dv, softmax_d=sd)
    out_s, lse_s, S_s, _ = _flash_attn_forward(q, k, v, 0.0, scale, True, -1, -1, 0.0, None, True)
    r["S_dmask"] = S_s

    # private forward / backward with dropout: the backward replays the forward's mask
    out_p, lse_p, _, rng_p = _flash_attn_forward(q, k, v, 0.25, scale, False, -1, -1, 0.0, None, False)
    dq_p, dk_p, dv_p = (torch.full_like(x, nan) for x in (q, k, v))
    sd_p = _flash_attn_backward(dout, q, k, v, out_p, lse_p, dq_p, dk_p, dv_p, 0.25, scale, False,
                                -1, -1, 0.0, None, True, rng_p)  # deterministic: compared bitwise
    r.update(out_p=out_p, rng_p=rng_p, dq_p=dq_p, dk_p=dk_p, dv_p=dv_p, softmax_d_p=sd_p)

    # varlen through bert_padding, and the private varlen forward / backward
    mask = t["mask"]
    q_u, idx, cu, maxlen, _ = unpad_input(q, mask)
    k_u, _, _, _, _ = unpad_input(k, mask)
    v_u, _, _, _, _ = unpad_input(v, mask)
    o_u = flash_attn_varlen_func(q_u, k_u, v_u, cu, cu, maxlen, maxlen, causal=True)
    r["varlen_padded"] = pad_input(o_u, idx, q.shape[0], q.shape[1])
    ov, lv, _, rv = _flash_attn_varlen_forward(q_u, k_u, v_u, cu, cu, maxlen, maxlen, 0.0, scale,
                                               False, window_size_left=3, window_size_right=1)
    dq_u, dk_u, dv_u = (torch.full_like(x, nan) for x in (q_u, k_u, v_u))
    do_u, _, _, _, _ = unpad_input(dout, mask)
    sd_u = _flash_attn_varlen_backward(do_u, q_u, k_u, v_u, ov, lv, dq_u, dk_u, dv_u, cu, cu,
                                       maxlen, maxlen, 0.0, scale, False, 3, 1, 0.0, None, False, rv)
    r.update(q_u=q_u, k_u=k_u, v_u=v_u, do_u=do_u, cu=cu, maxlen=maxlen, out_u=ov, lse_u=lv,
             dq_u=dq_u, dk_u=dk_u, dv_u=dv_u, softmax_d_u=sd_u)
    for name, kw in (("leftpad_k", dict(leftpad_k=cu[:-1])), ("seqused_k", dict(seqused_k=cu[1:])),
                     ("block_table", dict(block_table=cu[None]))):
        try:
            _flash_attn_varlen_forward(q_u, k_u, v_u, cu, cu, maxlen, maxlen, 0.0, scale, False, **kw)
            r["unsupported_" + name] = "no error"
        except NotImplementedError as e:
            r["unsupported_" + name] = str(e)

    # rotary: the function and the module (in place on packed qkv)
    r["rotary"] = apply_rotary_emb(q, t["cos"], t["sin"], seqlen_offsets=t["offsets"])
    qkv = t["qkv"].clone()
    RotaryEmbedding(q.shape[-1], interleaved=True, device=q.device)(qkv, seqlen_offset=2)
    r["rope_qkv"] = qkv
    try:
        import flash_attn.modules.mha  # noqa: F401  (not served)
        r["missing_module"] = "imported"
    except ModuleNotFoundError as e:
        r["missing_module"] = str(e)
    import importlib.util
    r["probe"] = importlib.util.find_spec("flash_attn.ops")  # optional-module probes get None
    torch.save(r, path + ".out")
''')


def _run(code: str, *args: str, extra_path: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    parts = [p for p in (extra_path, ROOT, env.get("PYTHONPATH")) if p]
    env["PYTHONPATH"] = os.pathsep.join(parts)
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=env, timeout=600)


def _inputs(device, dtype, b=2, s=9, h=4, hk=2, d=40):
    q = torch.randn(b, s, h, d, device=device, dtype=dtype)
    k = torch.randn(b, s, hk, d, device=device, dtype=dtype)
    v = torch.randn(b, s, hk, d, device=device, dtype=dtype)
    lens = torch.tensor([6, s])
    mask = (torch.arange(s).unsqueeze(0) < lens.unsqueeze(1)).to(device)
    theta = torch.rand(16, 16, dtype=torch.float64) * 6.3
    return dict(q=q, k=k, v=v, dout=torch.randn_like(q), scale=0.3, mask=mask,
                qkv=torch.randn(b, s, 3, h, d, device=device, dtype=dtype),
                cos=theta.cos().float().to(device), sin=theta.sin().float().to(device),
                offsets=torch.tensor([0, 5], device=device))


CASES = [pytest.param("cpu", torch.float32, id="cpu-fp32"),
         pytest.param("cpu", torch.bfloat16, id="cpu-bf16"),
         pytest.param("cuda", torch.float16, marks=pytest.mark.gpu, id="cuda-fp16"),
         pytest.param("cuda", torch.bfloat16, marks=pytest.mark.gpu, id="cuda-bf16")]


@pytest.mark.parametrize("device,dtype", CASES)
def test_user_script_runs_on_flash_attn_c(tmp_path, device, dtype):
    t = _inputs(device, dtype)
    path = str(tmp_path / "io")
    torch.save(t, path + ".in")
    proc = _run(USER_SCRIPT, path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    r = torch.load(path + ".out")
    q, k, v, dout, scale = t["q"], t["k"], t["v"], t["dout"], t["scale"]
    assert r["version"] == "2.8.3"

    # public functions: the very functions of flash_attn_c
    assert torch.equal(r["func"], flash_attn_c.flash_attn_func(q, k, v, causal=True))
    assert torch.equal(r["qkvpacked"], flash_attn_c.flash_attn_qkvpacked_func(t["qkv"]))

    # private dense forward / backward vs the float64 oracle
    kw = dict(causal=True, softmax_scale=scale)
    ref = ref_forward_backward((q, k, v), dout, upcast=True, **kw)
    base = ref_forward_backward((q, k, v), dout, upcast=False, **kw)
    assert r["private_out_requires_grad"] is False, "the private forward must not be differentiable"
    assert_ratio("out", r["out"], ref.out, base.out, dtype, FWD_FACTOR)
    assert_lse("softmax_lse", r["lse"], ref.lse, base.lse, dtype)
    assert r["S"].numel() == 0 and r["rng"].shape == (2,) and r["rng"].dtype == torch.int64
    assert_grads((r["dq"], r["dk"], r["dv"]), ref.grads, base.grads, dtype)
    d_ref = (dout.double() * ref.out).sum(-1).transpose(1, 2)  # (b, h, sq)
    d_base = (dout * base.out).float().sum(-1).transpose(1, 2)
    assert r["softmax_d"].dtype == torch.float32
    assert_ratio("softmax_d", r["softmax_d"], d_ref, d_base, dtype, GRAD_FACTOR)
    assert r["S_dmask"].shape == (2, 4, 9, 9)
    assert_ratio("S_dmask", r["S_dmask"], ref.probs, base.probs, dtype, FWD_FACTOR)

    # dropout: the private pair equals flash_attn_c's autograd with the same (seed, offset)
    seed, offset = (int(x) for x in r["rng_p"].tolist())
    leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    with _dropout.fixed_dropout_seed(seed, offset):
        out_p = flash_attn_c.flash_attn_func(*leaves, dropout_p=0.25, softmax_scale=scale,
                                             deterministic=True)
    grads = torch.autograd.grad(out_p, leaves, dout)
    assert torch.equal(r["out_p"], out_p.detach())
    for name, got, want in zip(("dq", "dk", "dv"), (r["dq_p"], r["dk_p"], r["dv_p"]), grads):
        assert torch.equal(got, want), f"{name} with dropout differs from flash_attn_c's autograd"
    want_d = (dout.float() * out_p.detach().float()).sum(-1).transpose(1, 2) * 0.75
    torch.testing.assert_close(r["softmax_d_p"], want_d, rtol=1e-5, atol=1e-5)

    # varlen via bert_padding: same as flash_attn_c, padding rows zero
    padded = r["varlen_padded"]
    assert (padded[0, 6:] == 0).all()
    cu, mx = r["cu"], r["maxlen"]
    assert torch.equal(cu.cpu(), cu_from_lens([6, 9], "cpu")) and mx == 9
    o_u = flash_attn_c.flash_attn_varlen_func(r["q_u"], r["k_u"], r["v_u"], cu, cu, mx, mx, causal=True)
    assert torch.equal(padded[t["mask"]], o_u)

    # private varlen forward / backward (window (3, 1)) vs the oracle
    kwv = dict(window=(3, 1), softmax_scale=scale, cu_seqlens_q=cu, cu_seqlens_k=cu,
               max_seqlen_q=mx, max_seqlen_k=mx)
    inputs = (r["q_u"], r["k_u"], r["v_u"])
    ref = ref_forward_backward(inputs, r["do_u"], upcast=True, **kwv)
    base = ref_forward_backward(inputs, r["do_u"], upcast=False, **kwv)
    assert_ratio("varlen out", r["out_u"], ref.out, base.out, dtype, FWD_FACTOR)
    assert_lse("varlen softmax_lse", r["lse_u"], ref.lse, base.lse, dtype)
    assert_grads((r["dq_u"], r["dk_u"], r["dv_u"]), ref.grads, base.grads, dtype)
    d_ref = (r["do_u"].double() * ref.out).sum(-1).t()  # (h, total_q)
    d_base = (r["do_u"] * base.out).float().sum(-1).t()
    assert_ratio("varlen softmax_d", r["softmax_d_u"], d_ref, d_base, dtype, GRAD_FACTOR)
    for name in ("leftpad_k", "seqused_k", "block_table"):
        assert name in r["unsupported_" + name], r["unsupported_" + name]

    # rotary: our fused function / module
    assert torch.equal(r["rotary"], flash_attn_c.apply_rotary_emb(q, t["cos"], t["sin"],
                                                                  seqlen_offsets=t["offsets"]))
    qkv = t["qkv"].clone()
    flash_attn_c.RotaryEmbedding(q.shape[-1], interleaved=True, device=device)(qkv, seqlen_offset=2)
    assert torch.equal(r["rope_qkv"], qkv)
    assert not torch.equal(qkv, t["qkv"])
    assert "flash_attn.modules" in r["missing_module"], r["missing_module"]
    assert r["probe"] is None


def test_function_classes_apply_like_the_functions():
    """flash-attn's autograd.Function names (FlashAttnFunc, ..., ApplyRotaryEmbQKV_, IndexFirstAxis)
    whose .apply some code calls directly: the same results as the functions, flash-attn 2.8's
    trailing is_grad_enabled accepted, an argument count from another release refused (TypeError),
    not shifted into the wrong parameters."""
    proc = _run(textwrap.dedent('''
        import torch
        import flash_attn_c.compat  # noqa: F401
        from flash_attn import flash_attn_func, flash_attn_varlen_kvpacked_func
        from flash_attn.flash_attn_interface import FlashAttnFunc, FlashAttnVarlenKVPackedFunc
        from flash_attn.bert_padding import IndexFirstAxis, index_first_axis
        from flash_attn.layers.rotary import ApplyRotaryEmbQKV_, apply_rotary_emb_qkv_
        torch.manual_seed(0)
        q, k, v = (torch.randn(2, 9, 4, 16, requires_grad=True) for _ in range(3))
        a = FlashAttnFunc.apply(q, k, v, 0.0, None, True, (-1, -1), 0.0, None, False, True, True)
        b = flash_attn_func(q, k, v, causal=True, return_attn_probs=True)
        assert all(torch.equal(x, y) for x, y in zip(a, b))
        a[0].sum().backward()  # autograd goes through
        assert q.grad is not None and q.grad.abs().sum() > 0
        qv, kv = torch.randn(9, 4, 16), torch.randn(12, 2, 2, 16)
        cq, ck = torch.tensor([0, 4, 9], dtype=torch.int32), torch.tensor([0, 5, 12], dtype=torch.int32)
        a = FlashAttnVarlenKVPackedFunc.apply(qv, kv, cq, ck, 5, 7, 0.0, 0.3, False, (2, 1), 0.0, None, False, False)
        b = flash_attn_varlen_kvpacked_func(qv, kv, cq, ck, 5, 7, softmax_scale=0.3, window_size=(2, 1))
        assert torch.equal(a, b)
        x, idx = torch.randn(7, 3), torch.tensor([5, 0, 2])
        assert torch.equal(IndexFirstAxis.apply(x, idx), index_first_axis(x, idx))
        qkv = torch.randn(2, 9, 3, 4, 16)
        cos, sin = torch.randn(9, 4), torch.randn(9, 4)
        r1 = ApplyRotaryEmbQKV_.apply(qkv.clone(), cos, sin, None, None, False, 0, None)
        r2 = apply_rotary_emb_qkv_(qkv.clone(), cos, sin)
        assert torch.equal(r1, r2)
        try:  # flash-attn 2.5's order (no softcap): would put alibi_slopes into softcap
            FlashAttnFunc.apply(q, k, v, 0.0, None, True, (-1, -1), None, False, False)
        except TypeError as e:
            assert "FlashAttnFunc.apply takes" in str(e), e
        else:
            raise AssertionError("a shifted argument list was accepted")
        print("ok")
        '''))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "ok"


def test_nothing_happens_without_compat():
    proc = _run("import sys, flash_attn_c\n"
                "assert 'flash_attn' not in sys.modules\n"
                "try:\n    import flash_attn\nexcept ModuleNotFoundError:\n    print('absent')\n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "absent"


def test_import_twice_is_a_noop():
    proc = _run("import importlib, sys\n"
                "import flash_attn_c.compat as c\n"
                "first = sys.modules['flash_attn']\n"
                "import flash_attn_c.compat\n"
                "importlib.reload(c)\n"
                "assert sys.modules['flash_attn'] is first\n"
                "import flash_attn.layers.rotary as r\n"
                "assert r.apply_rotary_emb.__module__ == 'flash_attn_c.rotary'\n"
                "print('ok')\n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "ok"


REFUSAL = ("import sys\n"
           "try:\n    import flash_attn_c.compat\n"
           "except ImportError as e:\n    print('REFUSED:', e)\n"
           "print('registered' if 'flash_attn' in sys.modules else 'clean')\n")


def test_refuses_real_flash_attn_package(tmp_path):
    pkg = tmp_path / "flash_attn"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise RuntimeError('the real flash_attn was imported')\n")
    proc = _run(REFUSAL, extra_path=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "REFUSED: flash_attn_c.compat refuses to shadow a real flash-attn" in proc.stdout
    assert str(pkg) in proc.stdout, proc.stdout
    assert proc.stdout.strip().endswith("clean"), "nothing may be registered after a refusal"


def test_refuses_installed_distribution(tmp_path):
    dist = tmp_path / "flash_attn-2.8.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: flash_attn\nVersion: 2.8.3\n")
    proc = _run(REFUSAL, extra_path=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "REFUSED:" in proc.stdout and "flash_attn 2.8.3 is installed" in proc.stdout, proc.stdout
    assert proc.stdout.strip().endswith("clean")


def test_refuses_already_imported_flash_attn():
    proc = _run("import sys, types\nsys.modules['flash_attn'] = types.ModuleType('flash_attn')\n"
                + REFUSAL.replace("'registered' if 'flash_attn' in sys.modules",
                                  "'registered' if hasattr(sys.modules['flash_attn'], 'flash_attn_func')"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "REFUSED:" in proc.stdout and "already imported" in proc.stdout
    assert proc.stdout.strip().endswith("clean")


@pytest.mark.parametrize("device", devices())
def test_private_backward_needs_rng_state_with_dropout(device):
    """Run in process through the implementation module (no flash_attn aliases here)."""
    from flash_attn_c import _compat_impl as impl
    dtype = torch.float32 if device == "cpu" else torch.float16
    q = torch.randn(1, 4, 2, 16, device=device, dtype=dtype)
    out, lse, _, _ = impl._flash_attn_forward(q, q, q, 0.1, 0.25, False, -1, -1, 0.0, None, False)
    with pytest.raises(ValueError, match="rng_state"):
        impl._flash_attn_backward(q, q, q, q, out, lse, None, None, None, 0.1, 0.25, False, -1, -1,
                                  0.0, None, False)
    with pytest.raises(ValueError, match="dq must have shape"):
        impl._flash_attn_backward(q, q, q, q, out, lse, q[:, :2].clone(), None, None, 0.0, 0.25,
                                  False, -1, -1, 0.0, None, False)
