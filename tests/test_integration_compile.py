"""torch.compile and CUDA graphs around flash_attn_c in real use.

- A whole training step (forward, loss, backward, SGD update) of a tiny transformers Llama that
  uses our attention implementation compiles with fullgraph=True (so: no graph break anywhere),
  our op is inside the graph, and the losses and weights match eager step for step, also with
  attention dropout (same torch seed -> same masks). CPU uses the
  aot_eager backend (Dynamo + AOTAutograd with our fake kernels; inductor's C++ codegen alone
  would take about a minute on the 2-core CI machine); CUDA uses inductor.
- The integration's sync-free formulations (padding mask, position_ids packing, cu_seq_lens
  kwargs) compile with fullgraph=True and match eager.
- CUDA graphs: forward + backward of flash_attn_func with dropout captured once and replayed
  reproduces eager results for the same generator state, and advances the Philox offset exactly
  as eager calls do.
"""
from __future__ import annotations

import copy

import pytest
import torch

transformers = pytest.importorskip("transformers")

from transformers import AutoModelForCausalLM, LlamaConfig  # noqa: E402

import flash_attn_c  # noqa: E402
from flash_attn_c.integrations import transformers as fa_tf  # noqa: E402
from flash_attn_c.testing import capture_cuda_graph  # noqa: E402

NAME = fa_tf.register()
HAS_CUDA = torch.cuda.is_available()
GPU = (pytest.mark.gpu, pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA"))


# tiny models: one intra-op thread (conftest.one_cpu_thread)
pytestmark = pytest.mark.usefixtures("one_cpu_thread")


def _llama(device: str, dtype: torch.dtype, training: bool) -> torch.nn.Module:
    cfg = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      pad_token_id=0, tie_word_embeddings=False, attention_dropout=0.0)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation=NAME).to(device=device, dtype=dtype)
    return model.train(training)


class _GraphRecorder:
    """A torch.compile backend that keeps the Dynamo graphs and hands them to aot_eager/inductor."""

    def __init__(self, inner: str):
        self.inner = inner
        self.graphs: list[torch.fx.GraphModule] = []

    def __call__(self, gm: torch.fx.GraphModule, example_inputs):
        self.graphs.append(gm)
        if self.inner == "inductor":
            from torch._inductor.compile_fx import compile_fx

            return compile_fx(gm, example_inputs)
        from torch._dynamo.backends.debugging import aot_eager

        return aot_eager(gm, example_inputs)

    def op_calls(self, name: str) -> int:
        return sum(1 for gm in self.graphs for n in gm.graph.nodes
                   if n.op == "call_function" and name in str(n.target))


def _train_step(model: torch.nn.Module, params: list, input_ids: torch.Tensor, labels: torch.Tensor,
                lr: float) -> torch.Tensor:
    """Forward, loss, backward, SGD update. (torch.optim's Optimizer.step wrapper calls
    torch._dynamo.graph_break() on purpose, so a fullgraph step writes the update itself.)"""
    loss = model(input_ids=input_ids, labels=labels).loss
    loss.backward()
    with torch.no_grad():
        for p in params:
            p.sub_(p.grad, alpha=lr)
            p.grad = None
    return loss.detach()


@pytest.mark.parametrize("dropout", [0.0, 0.3])
@pytest.mark.parametrize("device,dtype,backend", [
    pytest.param("cpu", torch.float32, "aot_eager", id="cpu-fp32-aot_eager"),
    pytest.param("cuda", torch.bfloat16, "inductor", id="cuda-bf16-inductor", marks=GPU),
])
def test_training_step_compiles_fullgraph_and_matches_eager(device, dtype, backend, dropout):
    """With attention dropout, each step reseeds torch before the eager and the compiled call:
    the op draws its Philox state from torch's generator at run time, so both see the same
    masks."""
    torch._dynamo.reset()
    eager_model = _llama(device, dtype, training=True)
    for layer in eager_model.model.layers:
        layer.self_attn.attention_dropout = dropout
    compiled_model = copy.deepcopy(eager_model)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 128, (2, 16), generator=g).to(device)
    recorder = _GraphRecorder(backend)
    with torch._dynamo.config.patch(trace_autograd_ops=True):  # lets Dynamo trace loss.backward()
        step = torch.compile(_train_step, fullgraph=True, backend=recorder)
        pe, pc = list(eager_model.parameters()), list(compiled_model.parameters())
        initial = [p.detach().clone() for p in pe]
        losses = []
        for i in range(3):
            torch.manual_seed(100 + i)
            le = _train_step(eager_model, pe, ids, ids, 0.05)
            torch.manual_seed(100 + i)
            lc = step(compiled_model, pc, ids, ids, 0.05)
            losses.append(float(le))
            if dtype == torch.float32:
                torch.testing.assert_close(lc, le, rtol=1e-5, atol=1e-6, msg=lambda m: f"step {i}: {m}")
            else:  # inductor re-fuses the bf16 elementwise ops around the attention
                torch.testing.assert_close(lc.float(), le.float(), rtol=2e-2, atol=2e-2, msg=lambda m: f"step {i}: {m}")
    assert recorder.op_calls("flash_attn_c.fwd") >= 2, "our attention op is not in the compiled graph"
    assert recorder.op_calls("scaled_dot_product_attention") == 0, "a layer fell back to SDPA"
    # What the three steps changed in every weight agrees (relative to the size of the change).
    # fp32 only: in bf16 an update lr * grad is below one ulp of most weights (a LayerNorm weight
    # of 1.0 does not move at all), so the bf16 weight deltas are rounding noise of the weights
    # themselves (measured 5-9% on an H200), not a property of the attention op; there the loss
    # trajectory above is the comparison.
    for (name, _), a, b, p0 in zip(eager_model.named_parameters(), pc, pe, initial):
        da, db = (a.detach() - p0).float(), (b.detach() - p0).float()
        if dtype == torch.float32:
            assert db.norm() > 0, name
            assert float((da - db).norm() / db.norm()) <= 1e-4, name
    assert losses[-1] < losses[0], losses  # the steps really trained
    if dropout > 0:  # dropout really is on: another seed gives another loss
        with torch.no_grad():
            torch.manual_seed(7)
            a = eager_model(input_ids=ids, labels=ids).loss
            torch.manual_seed(8)
            b = eager_model(input_ids=ids, labels=ids).loss
        assert float(a) != float(b)


def _forward_cases(device: str):
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(1, 128, (2, 20), generator=g).to(device)
    mask = torch.ones(2, 20, dtype=torch.long, device=device)
    mask[0, :6] = 0   # left padding
    mask[1, 15:] = 0  # right padding
    packed_ids = ids[:1]
    pos = torch.cat([torch.arange(n) for n in (7, 9, 4)])[None].to(device)
    cu = torch.tensor([0, 7, 16, 20], dtype=torch.int32, device=device)
    return {
        "padding": (dict(input_ids=ids, attention_mask=mask), mask.bool()),
        "packed_position_ids": (dict(input_ids=packed_ids, position_ids=pos), None),
        "cu_seq_lens": (dict(input_ids=packed_ids, position_ids=pos, cu_seq_lens_q=cu, cu_seq_lens_k=cu,
                             max_length_q=9, max_length_k=9), None),
    }


@pytest.mark.parametrize("case", ["padding", "packed_position_ids", "cu_seq_lens"])
def test_forward_backward_with_padding_or_packing_compiles_fullgraph(case):
    """The integration's compile-time formulations (no host syncs, static shapes) give the same
    logits and gradients as the eager unpad / exact-packing paths."""
    torch._dynamo.reset()
    model = _llama("cpu", torch.float32, training=False)
    kw, real = _forward_cases("cpu")[case]

    def loss_fn(m, kw):
        logits = m(**kw, use_cache=False).logits
        w = torch.linspace(-1, 1, logits.shape[-1])
        per_token = (logits * w).sum(-1)
        return per_token[real].sum() if real is not None else per_token.sum(), logits

    recorder = _GraphRecorder("aot_eager")
    compiled = torch.compile(loss_fn, fullgraph=True, backend=recorder)
    m_c = copy.deepcopy(model)
    lc, logits_c = compiled(m_c, kw)
    lc.backward()
    le, logits_e = loss_fn(model, kw)
    le.backward()
    sel = real if real is not None else torch.ones(logits_e.shape[:2], dtype=torch.bool)
    torch.testing.assert_close(logits_c[sel], logits_e[sel], rtol=1e-5, atol=1e-5)
    for (n, a), (_, b) in zip(m_c.named_parameters(), model.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5 * float(b.grad.abs().max()),
                                   msg=lambda m: f"grad of {n}: {m}")
    assert recorder.op_calls("flash_attn_c.fwd") == 2
    assert recorder.op_calls("scaled_dot_product_attention") == 0, "a layer fell back to SDPA"


def test_sliding_window_model_with_padding_compiles_fullgraph():
    """Mistral (sliding window) with a left- and right-padded batch: fullgraph=True compiles (the
    mask function touched the overlay closure's __closure__ while tracing, which Dynamo refused)
    and the logits of the real tokens equal eager."""
    from transformers import MistralConfig

    torch._dynamo.reset()
    cfg = MistralConfig(sliding_window=4, vocab_size=128, hidden_size=64, intermediate_size=128,
                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                        max_position_embeddings=64, initializer_range=0.3, pad_token_id=0,
                        tie_word_embeddings=False)
    torch.manual_seed(0)
    m = AutoModelForCausalLM.from_config(cfg, attn_implementation=NAME).eval()
    ids = torch.randint(1, 128, (2, 10), generator=torch.Generator().manual_seed(3))
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[0, :3] = 0
    mask[1, 8:] = 0
    fwd = torch.compile(lambda x, a: m(input_ids=x, attention_mask=a, use_cache=False).logits, fullgraph=True)
    with torch.no_grad():
        got, want = fwd(ids, mask), m(input_ids=ids, attention_mask=mask, use_cache=False).logits
    real = mask.bool()
    # compiled, padding takes the static (no host sync) path, eager the unpadded one: fp32 sums in
    # another order (3e-5 at most on logits of ~1 here)
    torch.testing.assert_close(got[real], want[real], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("model", ["mistral", "gemma2"])
def test_sliding_window_and_softcap_models_compile_fullgraph(model):
    """Mistral (sliding window) and Gemma 2 (softcap, alternating window / full layers): the
    whole forward compiles with fullgraph=True, every layer uses our op (no SDPA fallback: while
    tracing, the mask function cannot open transformers' mask closures and must still accept
    them), and the logits equal eager."""
    from transformers import Gemma2Config, MistralConfig

    torch._dynamo.reset()
    common = dict(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                  initializer_range=0.3, pad_token_id=0, tie_word_embeddings=False)
    if model == "mistral":
        cfg = MistralConfig(sliding_window=8, **common)
    else:
        cfg = Gemma2Config(head_dim=16, query_pre_attn_scalar=16, attn_logit_softcapping=2.0,
                           final_logit_softcapping=None, sliding_window=8,
                           layer_types=["sliding_attention", "full_attention"], **common)
    torch.manual_seed(0)
    m = AutoModelForCausalLM.from_config(cfg, attn_implementation=NAME).eval()
    ids = torch.randint(1, 128, (2, 24), generator=torch.Generator().manual_seed(3))
    recorder = _GraphRecorder("aot_eager")
    fwd = torch.compile(lambda x: m(input_ids=x, use_cache=False).logits, fullgraph=True, backend=recorder)
    with torch.no_grad():
        got, want = fwd(ids), m(input_ids=ids, use_cache=False).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert recorder.op_calls("flash_attn_c.fwd") == 2
    assert recorder.op_calls("scaled_dot_product_attention") == 0, "a layer fell back to SDPA"


# ---------------------------------------------------------------------------------------------
# CUDA graphs with dropout
# ---------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_cuda_graph_dropout_forward_backward_replays_like_eager():
    """How torch's Philox state moves: in eager, each dropout call reserves an offset increment
    from the default CUDA generator (seed, offset += increment). Under torch.cuda.graph capture
    the generator hands out offsets relative to a per-graph base held in device memory and records
    the total increment; every replay first reads the generator's current (seed, offset) into that
    device memory, then advances the generator by the recorded total. So, from the same
    torch.cuda.manual_seed: replay #1 == eager call #1, replay #2 == eager call #2 (fresh masks,
    not a baked-in one), and the backward inside the graph must read the forward's rng_state from
    device memory. Checked bit for bit (deterministic=True) together with controls that dropout
    is active and that the replays differ from each other."""
    torch.manual_seed(0)
    dev, dt = "cuda", torch.bfloat16
    q = torch.randn(2, 96, 4, 64, device=dev, dtype=dt, requires_grad=True)
    k = torch.randn(2, 80, 2, 64, device=dev, dtype=dt, requires_grad=True)
    v = torch.randn(2, 80, 2, 64, device=dev, dtype=dt, requires_grad=True)
    dout = torch.randn(2, 96, 4, 64, device=dev, dtype=dt)
    p = 0.25

    def step():
        out = flash_attn_c.flash_attn_func(q, k, v, dropout_p=p, causal=True, deterministic=True)
        dq, dk, dv = torch.autograd.grad(out, (q, k, v), dout)
        return out, dq, dk, dv

    graph, static = capture_cuda_graph(step, warmup=2)

    def replay():
        graph.replay()
        return [t.clone() for t in static]

    torch.cuda.manual_seed(1234)
    eager1 = [t.clone() for t in step()]
    eager2 = [t.clone() for t in step()]
    torch.cuda.manual_seed(1234)
    rep1 = replay()
    rep2 = replay()
    torch.cuda.synchronize()
    names = ("out", "dq", "dk", "dv")
    for n, a, b in zip(names, rep1, eager1):
        assert torch.equal(a, b), f"replay 1 != eager call 1 ({n})"
    for n, a, b in zip(names, rep2, eager2):
        assert torch.equal(a, b), f"replay 2 != eager call 2 ({n})"
    # controls: the two calls used different masks, and dropout is really on
    assert not torch.equal(rep1[0], rep2[0])
    no_drop = flash_attn_c.flash_attn_func(q, k, v, dropout_p=0.0, causal=True)
    assert not torch.allclose(rep1[0].float(), no_drop.float(), atol=1e-2)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_cuda_dropout_draws_seed_and_offset_from_the_generator():
    """What the graph test relies on: an eager CUDA dropout call right after
    torch.cuda.manual_seed(s) uses Philox (seed, offset) = (s, 0), i.e. the same mask as
    dropout_mask(..., seed=s, offset=0) / fixed_dropout_seed(s, 0)."""
    torch.manual_seed(0)
    q = torch.randn(2, 64, 4, 64, device="cuda", dtype=torch.float16)
    k = torch.randn(2, 64, 2, 64, device="cuda", dtype=torch.float16)
    v = torch.randn(2, 64, 2, 64, device="cuda", dtype=torch.float16)
    torch.cuda.manual_seed(4321)
    drawn = flash_attn_c.flash_attn_func(q, k, v, dropout_p=0.3, causal=True)
    with flash_attn_c.fixed_dropout_seed(4321, 0):
        pinned = flash_attn_c.flash_attn_func(q, k, v, dropout_p=0.3, causal=True)
    assert torch.equal(drawn, pinned)
