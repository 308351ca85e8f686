"""torch.compile(fullgraph=True) of flash_attn_varlen_func (and its packed forms) over many distinct
max_seqlen values, as packed training sees: max_seqlen_q/k are SymInt in the op schemas, so one
graph serves every length (the first call compiles static, the second dynamic, then no more
recompiles). Forward and backward equal eager's."""
from __future__ import annotations

import random

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

from conftest import devices
from oracle import cu_from_lens

import flash_attn_c

N_LENGTHS = 20
MAX_COMPILES = 2


def _varlen_loss(q, k, v, cu_q, cu_k, max_q: int, max_k: int):
    out = flash_attn_c.flash_attn_varlen_func(q, k, v, cu_q, cu_k, max_q, max_k, causal=True)
    return (out.float() ** 2).sum()


def _qkvpacked_loss(qkv, cu, max_len: int):
    out = flash_attn_c.flash_attn_varlen_qkvpacked_func(qkv, cu, max_len, causal=True)
    return (out.float() ** 2).sum()


def _kvpacked_loss(q, kv, cu_q, cu_k, max_q: int, max_k: int):
    out = flash_attn_c.flash_attn_varlen_kvpacked_func(q, kv, cu_q, cu_k, max_q, max_k)
    return (out.float() ** 2).sum()


def _batches(n: int):
    """n packed batches of 3 sequences whose longest q sequence has length 2, 3, ..., n + 1 (all
    distinct) and longest k sequence one more; the other lengths, and so the total lengths, vary
    at random. The first two batches differ in every size (torch.compile's automatic dynamic
    shapes make a value symbolic once it has been seen changing: a size equal in the first two
    calls would be static in the second graph and cost a third compile when it changes later,
    which says nothing about the op)."""
    rng = random.Random(0)
    yield [2, 1, 2], [3, 2, 1]
    yield [3, 3, 2], [4, 4, 2]
    for i in range(2, n):
        longest = 2 + i
        lens_q = [longest, rng.randint(0, longest), rng.randint(1, longest)]
        lens_k = [longest + 1, rng.randint(1, longest + 1), rng.randint(0, longest + 1)]
        rng.shuffle(lens_q)
        rng.shuffle(lens_k)
        yield lens_q, lens_k


def _grads(fn, args):
    loss = fn(*args)
    leaves = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    return [loss.detach()] + list(torch.autograd.grad(loss, leaves))


def _run(fn, make_args, device, backend):
    torch._dynamo.reset()
    counter = CompileCounterWithBackend(backend)
    compiled = torch.compile(fn, fullgraph=True, dynamic=None, backend=counter)
    maxima = set()
    for lens_q, lens_k in _batches(N_LENGTHS):
        args = make_args(lens_q, lens_k, device)
        maxima.add(max(lens_q))
        got = _grads(compiled, args)
        want = _grads(fn, args)
        for g, w in zip(got, want):
            # the same kernels on the same inputs; inductor may fuse the fp32 sum differently
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)
    assert len(maxima) == N_LENGTHS
    assert counter.frame_count <= MAX_COMPILES, \
        f"{counter.frame_count} compiles for {N_LENGTHS} lengths"


def _dtype(device):
    return torch.float32 if device == "cpu" else torch.bfloat16


def _varlen_args(lens_q, lens_k, device):
    dt = _dtype(device)
    q = torch.randn(sum(lens_q), 4, 16, device=device, dtype=dt, requires_grad=True)
    k = torch.randn(sum(lens_k), 2, 16, device=device, dtype=dt, requires_grad=True)
    v = torch.randn(sum(lens_k), 2, 16, device=device, dtype=dt, requires_grad=True)
    return (q, k, v, cu_from_lens(lens_q, device), cu_from_lens(lens_k, device), max(lens_q),
            max(lens_k))


def _qkvpacked_args(lens_q, _lens_k, device):
    qkv = torch.randn(sum(lens_q), 3, 2, 16, device=device, dtype=_dtype(device),
                      requires_grad=True)
    return qkv, cu_from_lens(lens_q, device), max(lens_q)


def _kvpacked_args(lens_q, lens_k, device):
    dt = _dtype(device)
    q = torch.randn(sum(lens_q), 4, 16, device=device, dtype=dt, requires_grad=True)
    kv = torch.randn(sum(lens_k), 2, 2, 16, device=device, dtype=dt, requires_grad=True)
    return (q, kv, cu_from_lens(lens_q, device), cu_from_lens(lens_k, device), max(lens_q),
            max(lens_k))


# CPU: aot_eager (Dynamo + AOTAutograd with our fake kernels; inductor's C++ codegen would take
# about a minute on the 2-core CI machine, test_compile.py covers it); CUDA: both.
BACKENDS = [pytest.param("cpu", "aot_eager", id="cpu-aot_eager"),
            pytest.param("cuda", "aot_eager", marks=pytest.mark.gpu, id="cuda-aot_eager"),
            pytest.param("cuda", "inductor", marks=pytest.mark.gpu, id="cuda-inductor")]


@pytest.mark.usefixtures("one_cpu_thread")
@pytest.mark.parametrize("device,backend", BACKENDS)
def test_varlen_twenty_max_seqlens_one_graph(device, backend):
    _run(_varlen_loss, _varlen_args, device, backend)


@pytest.mark.usefixtures("one_cpu_thread")
@pytest.mark.parametrize("device", devices())
def test_varlen_qkvpacked_twenty_max_seqlens(device):
    _run(_qkvpacked_loss, _qkvpacked_args, device, "aot_eager")


@pytest.mark.usefixtures("one_cpu_thread")
@pytest.mark.parametrize("device", devices())
def test_varlen_kvpacked_twenty_max_seqlens(device):
    _run(_kvpacked_loss, _kvpacked_args, device, "aot_eager")


@pytest.mark.usefixtures("one_cpu_thread")
@pytest.mark.parametrize("packing", ["cu_seq_lens", "position_ids"])
def test_transformers_packed_training_twenty_lengths(packing):
    """A tiny transformers Llama using our attention, trained on packed batches (cu_seq_lens_q/k
    with integer max_length_q/k as DataCollatorWithFlattening gives, or restarting position_ids),
    with a different longest sequence every batch: at most 2 compiles, loss and gradients equal
    eager's."""
    pytest.importorskip("transformers")
    from transformers import AutoModelForCausalLM, LlamaConfig
    from flash_attn_c.integrations import transformers as fa_tf

    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      pad_token_id=0, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation=fa_tf.register()).train()
    params = list(model.parameters())

    def loss_fn(ids, pos, cu, max_len: int):
        kw = dict(cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=max_len,
                  max_length_k=max_len) if packing == "cu_seq_lens" else {}
        return model(input_ids=ids, position_ids=pos, **kw).logits.float().pow(2).mean()

    torch._dynamo.reset()
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(loss_fn, fullgraph=True, dynamic=None, backend=counter)
    for lens, _ in _batches(N_LENGTHS):
        lens = [n + 1 for n in lens]  # no empty sequence: position_ids cannot express one
        ids = torch.randint(1, cfg.vocab_size, (1, sum(lens)))
        pos = torch.cat([torch.arange(n) for n in lens])[None]
        cu = cu_from_lens(lens, "cpu")
        got = compiled(ids, pos, cu, max(lens))
        g_got = torch.autograd.grad(got, params)
        want = loss_fn(ids, pos, cu, max(lens))
        g_want = torch.autograd.grad(want, params)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        for a, b in zip(g_got, g_want):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert counter.frame_count <= MAX_COMPILES, counter.frame_count
