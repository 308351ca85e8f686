"""The decode path of flash_attn_with_kvcache: a wide matrix of the scenarios a split-KV decode
kernel must get right, every case through run_case of tests/test_kvcache.py (float64 oracle per
sequence, error-ratio rule on out and lse, the whole cache compared before/after: exactly the slots
[cache_seqlens[b], cache_seqlens[b] + s_new) written, bit-for-bit nothing else).

Every case poisons the cache (KV.poison): slots before cache_leftpad, from cache_seqlens on, the
cache rows no batch row uses and the pages no sequence owns hold NaN in k_cache and +inf in
v_cache, so a masked slot that reaches a sum shows up as a non-finite out / lse.

Covered: paged caches with page sizes 1, 16, 48, 256; num_splits 0 / 1 / 3 / 64 (each within
output rounding of num_splits=0, and each against the oracle); cache_leftpad; cache_batch_idx;
rotary on 0, half or all of head_dim, interleaved or not; s_new in {1, 3, 16} x sq in
{1, 2, 8, 16}; cache length 0 and mixed lengths; GQA/MQA 8/1, 8/2, 4/4 x head dims 40, 64,
80, 128, 256; causal, sliding windows, softcap, ALiBi; with and without return_softmax_lse.
CPU runs a reduced set (the CPU is the gather-based oracle path); the gpu-marked set is the full
one. Last: greedy transformers generate() through flash_attn_c's attention equals sdpa's.
"""
from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from conftest import dev_cases
from test_kvcache import KV, run_case

SPLITS = (0, 1, 3, 64)


def _p(c: KV) -> KV:
    return replace(c, poison=True)


# --------------------------------------------------------------------------------------------
# page sizes (paged flash_attn_with_kvcache)
# --------------------------------------------------------------------------------------------


def _paged_cases(page: int, capacity: int, big: bool) -> list:
    """Decode, chunked prefill with leftpad, attention only and a non-causal softcap step, on a
    paged cache of the given page size; lengths 0, 1, mid, capacity - s_new."""
    h, hk, d = (8, 2, 128) if big else (4, 2, 32)
    mid = capacity // 2 + 3
    return [_p(c) for c in (
        KV(b=4, sq=1, s_new=1, h=h, hk=hk, d=d, capacity=capacity, page=page,
           seqlens=(0, 1, mid, capacity - 1), causal=True, rotary="neox"),
        KV(b=3, sq=16 if big else 5, s_new=16 if big else 5, h=4, hk=4, d=64 if big else 32,
           capacity=capacity, page=page, seqlens=(0, mid, capacity - (16 if big else 5)),
           leftpad=(0, mid // 3, 2), causal=True, rotary="inter", rotary_dim=32 if big else 16),
        KV(b=2, sq=8 if big else 3, s_new=0, h=8, hk=1, d=256 if big else 32, capacity=capacity,
           page=page, seqlens=(capacity, 5), causal=True),
        KV(b=2, sq=2, s_new=1, h=h, hk=hk, d=d, capacity=capacity, page=page,
           seqlens=(mid, 0), softcap=30.0, alibi="h"),
    )]


CPU_PAGED = [c for p, cap in ((1, 20), (16, 96), (48, 96), (256, 256))
             for c in _paged_cases(p, cap, big=False)]
GPU_PAGED = [c for p, cap in ((1, 300), (16, 768), (48, 768), (256, 768))
             for c in _paged_cases(p, cap, big=True)]


@pytest.mark.parametrize("device,dtype,case",
                         dev_cases(CPU_PAGED, GPU_PAGED, cpu_dtypes=(torch.bfloat16,),
                                   marks=[pytest.mark.parity_fwd]))
def test_decode_paged(device, dtype, case):
    run_case(device, dtype, case)


@pytest.mark.parametrize("device,dtype,case",
                         dev_cases([], [c for c in GPU_PAGED if c.d >= 128],
                                   marks=[pytest.mark.parity_fwd]))
def test_decode_small_shared_memory_variant(device, dtype, case, monkeypatch):
    """The 2-slot ring that GPUs with 99 KB of shared memory per block run at d >= 128
    (sm_86 / 89 / 120), forced on this GPU: the same oracle checks as the default variant."""
    monkeypatch.setenv("FLASH_ATTN_C_SPLITKV_SMALL_SMEM", "1")
    run_case(device, dtype, case)


# --------------------------------------------------------------------------------------------
# num_splits: every value is exact to output rounding against num_splits=0 and to the oracle
# --------------------------------------------------------------------------------------------

CPU_SPLITS = [
    KV(b=2, sq=1, s_new=1, h=4, hk=1, d=32, capacity=80, seqlens=(70, 0), causal=True),
    KV(b=3, sq=3, s_new=3, h=4, hk=2, d=32, capacity=96, page=16, seqlens=(50, 3, 90),
       causal=True, rotary="neox"),
]
GPU_SPLITS = [
    KV(b=2, sq=1, s_new=1, h=8, hk=1, d=128, capacity=4096, seqlens=(4000, 0), causal=True),
    KV(b=3, sq=4, s_new=4, h=4, hk=2, d=64, capacity=2048, page=256, seqlens=(1500, 31, 2000),
       causal=True, rotary="neox"),
    KV(b=2, sq=1, s_new=0, h=16, hk=2, d=256, capacity=1024, seqlens=(1024, 700), causal=True,
       window=(200, 0)),
    KV(b=4, sq=1, s_new=1, h=4, hk=4, d=80, capacity=576, page=48, seqlens=(10, 574, 300, 0),
       leftpad=(3, 100, 0, 0), causal=True, softcap=20.0, alibi="bh"),
    KV(b=2, sq=2, s_new=1, h=8, hk=2, d=64, capacity=64, seqlens=(3, 0)),   # splits > key blocks
    KV(b=2, sq=16, s_new=16, h=8, hk=8, d=128, capacity=3072, page=16, seqlens=(2900, 1000),
       causal=True, rotary="inter", rotary_dim=64),
]


@pytest.mark.parametrize("device,dtype,case",
                         dev_cases([_p(c) for c in CPU_SPLITS], [_p(c) for c in GPU_SPLITS],
                                   cpu_dtypes=(torch.bfloat16,), marks=[pytest.mark.parity_fwd]))
def test_decode_num_splits(device, dtype, case):
    """The same inputs (same seed) with num_splits 0, 1, 3, 64: each passes the oracle check,
    and out is close to num_splits=0's: within a quarter of the dtype's epsilon times the output
    scale (P enters the P V product in the input dtype, normalised by each split's own running
    max, so the splits round P differently: measured on the H100 up to 1 bf16 ulp at 0.125-0.25,
    a wrong merge is off by O(0.1)); lse within fp32 rounding."""
    res = {}
    for ns in SPLITS:
        torch.manual_seed(20240)
        res[ns] = run_case(device, dtype, replace(case, num_splits=ns), full=True)
    out0, lse0 = res[0]
    scale = max(1.0, float(out0.abs().max()))
    for ns in SPLITS[1:]:
        out, lse = res[ns]
        torch.testing.assert_close(out, out0, rtol=torch.finfo(dtype).eps,
                                   atol=0.25 * torch.finfo(dtype).eps * scale,
                                   msg=lambda m: f"num_splits={ns} vs 0: {m}")
        torch.testing.assert_close(lse, lse0, rtol=1e-5, atol=1e-5,
                                   msg=lambda m: f"lse, num_splits={ns} vs 0: {m}")


# --------------------------------------------------------------------------------------------
# cache_leftpad, cache_batch_idx, empty caches, mixed lengths
# --------------------------------------------------------------------------------------------

CPU_LAYOUT = [
    KV(b=3, sq=1, s_new=1, h=4, hk=2, d=32, capacity=48, seqlens=(10, 5, 47), leftpad=(4, 5, 0),
       causal=True, rotary="inter"),
    KV(b=3, sq=2, s_new=0, h=4, hk=2, d=32, capacity=48, seqlens=(10, 5, 48), leftpad=(10, 1, 47),
       causal=True),                                    # leftpad == seqlen: an empty row
    KV(b=3, sq=1, s_new=1, h=4, hk=1, d=32, capacity=40, seqlens=(4, 0, 39), b_cache=6,
       batch_idx=(5, 0, 2), causal=True, rotary="neox"),
    KV(b=2, sq=3, s_new=3, h=4, hk=2, d=32, capacity=40, seqlens=(8, 30), b_cache=4,
       batch_idx=(3, 1), leftpad=(2, 29), causal=True),
    KV(b=3, sq=1, s_new=0, h=4, hk=2, d=32, capacity=16, seqlens=(0, 0, 0)),       # all empty
    KV(b=3, sq=4, s_new=0, h=4, hk=2, d=32, capacity=16, seqlens=(0, 0, 0), causal=True),
    KV(b=3, sq=2, s_new=2, h=4, hk=2, d=32, capacity=16, seqlens=(0, 0, 0), causal=True,
       rotary="inter"),                                 # empty caches, only the new tokens
    KV(b=5, sq=1, s_new=1, h=4, hk=2, d=32, capacity=64, seqlens=(0, 63, 1, 32, 17),
       causal=True),                                    # mixed lengths in one batch
]
GPU_LAYOUT = [
    KV(b=3, sq=1, s_new=1, h=8, hk=2, d=128, capacity=2048, seqlens=(400, 5, 2047),
       leftpad=(160, 5, 0), causal=True, rotary="inter"),
    KV(b=3, sq=8, s_new=0, h=8, hk=2, d=128, capacity=2048, seqlens=(400, 5, 2048),
       leftpad=(400, 1, 2000), causal=True),
    KV(b=3, sq=1, s_new=1, h=8, hk=1, d=128, capacity=1600, seqlens=(160, 0, 1599), b_cache=6,
       batch_idx=(5, 0, 2), causal=True, rotary="neox"),
    KV(b=2, sq=16, s_new=16, h=8, hk=2, d=64, capacity=1600, seqlens=(320, 1200), b_cache=4,
       batch_idx=(3, 1), leftpad=(80, 1199), causal=True),
    KV(b=3, sq=1, s_new=0, h=8, hk=2, d=128, capacity=640, seqlens=(0, 0, 0)),
    KV(b=3, sq=4, s_new=0, h=8, hk=2, d=128, capacity=640, seqlens=(0, 0, 0), causal=True),
    KV(b=3, sq=2, s_new=2, h=8, hk=2, d=128, capacity=640, seqlens=(0, 0, 0), causal=True,
       rotary="inter"),
    KV(b=5, sq=1, s_new=1, h=8, hk=2, d=128, capacity=2560, seqlens=(0, 2559, 1, 1280, 680),
       causal=True),
    KV(b=8, sq=1, s_new=1, h=32, hk=8, d=128, capacity=8192, b_cache=12,
       batch_idx=(11, 0, 3, 4, 9, 1, 2, 7), seqlens=(8000, 0, 1, 4096, 129, 7, 8191, 2500),
       leftpad=(100, 0, 0, 4096, 0, 3, 8000, 0), causal=True, rotary="neox"),
]


@pytest.mark.parametrize("device,dtype,case",
                         dev_cases([_p(c) for c in CPU_LAYOUT], [_p(c) for c in GPU_LAYOUT],
                                   cpu_dtypes=(torch.float16,), marks=[pytest.mark.parity_fwd]))
def test_decode_layout(device, dtype, case):
    run_case(device, dtype, case)


# --------------------------------------------------------------------------------------------
# rotary: fraction of head_dim 0 / 0.5 / 1, interleaved or not, causal (q positions advance)
# or not (all of q at cache_seqlens)
# --------------------------------------------------------------------------------------------


def _rotary_cases(d: int, capacity: int, seqlens, h: int, hk: int) -> list:
    out = []
    for frac in (0, 0.5, 1):
        for inter in (True, False):
            if frac == 0 and not inter:
                continue  # no rotary: nothing to interleave
            for causal, sq, s_new in ((True, 4, 4), (False, 3, 3), (True, 1, 1)):
                out.append(_p(KV(b=len(seqlens), sq=sq, s_new=s_new, h=h, hk=hk, d=d,
                                 capacity=capacity, seqlens=seqlens, causal=causal,
                                 rotary=None if frac == 0 else ("inter" if inter else "neox"),
                                 rotary_dim=int(d * frac) if frac else 0)))
    return out


@pytest.mark.parametrize("device,dtype,case",
                         dev_cases(_rotary_cases(32, 40, (0, 17, 36), 4, 2),
                                   _rotary_cases(128, 1024, (0, 17, 1000, 511), 8, 2),
                                   cpu_dtypes=(torch.bfloat16,), marks=[pytest.mark.parity_fwd]))
def test_decode_rotary(device, dtype, case):
    run_case(device, dtype, case)


# --------------------------------------------------------------------------------------------
# new tokens x queries: s_new in {1, 3, 16}, sq in {1, 2, 8, 16}
# --------------------------------------------------------------------------------------------


def _grid(big: bool) -> list:
    out = []
    for s_new in (1, 3, 16):
        for sq in (1, 2, 8, 16):
            cap = 1024 if big else 48
            out.append(_p(KV(b=3, sq=sq, s_new=s_new, h=8 if big else 4, hk=2,
                             d=128 if big else 32, capacity=cap, page=16 if (sq + s_new) % 2 else 0,
                             seqlens=(0, 5, cap - s_new), causal=True,
                             rotary="neox" if sq == s_new else None)))
    return out


@pytest.mark.parametrize("device,dtype,case",
                         dev_cases(_grid(False), _grid(True), cpu_dtypes=(torch.bfloat16,),
                                   marks=[pytest.mark.parity_fwd]))
def test_decode_new_tokens_and_queries(device, dtype, case):
    run_case(device, dtype, case)


# --------------------------------------------------------------------------------------------
# GQA / MQA x head dims
# --------------------------------------------------------------------------------------------

HEADS = ((8, 1), (8, 2), (4, 4))
CPU_HEADS = [_p(KV(b=2, sq=sq, s_new=1, h=h, hk=hk, d=d, capacity=40, seqlens=(0, 33),
                   causal=True))
             for h, hk in HEADS for d, sq in ((40, 1), (64, 2))]
GPU_HEADS = [_p(KV(b=3, sq=sq, s_new=1, h=h, hk=hk, d=d, capacity=2048, page=page,
                   seqlens=(0, 33, 2000), causal=True, rotary="inter"))
             for h, hk in HEADS for d in (40, 64, 80, 128, 256) for sq, page in ((1, 0), (2, 256))]


@pytest.mark.parametrize("device,dtype,case",
                         dev_cases(CPU_HEADS, GPU_HEADS, cpu_dtypes=(torch.bfloat16,),
                                   marks=[pytest.mark.parity_fwd]))
def test_decode_heads(device, dtype, case):
    run_case(device, dtype, case)


# --------------------------------------------------------------------------------------------
# masks and score modifiers: causal, windows, softcap, ALiBi
# --------------------------------------------------------------------------------------------

MASKS = [
    dict(causal=True),
    dict(causal=False),
    dict(causal=True, window=(7, 0)),
    dict(causal=False, window=(5, 2)),
    dict(causal=False, window=(0, 0)),
    dict(causal=True, softcap=5.0),
    dict(causal=True, alibi="h"),
    dict(causal=False, alibi="bh", softcap=2.0, window=(9, 1)),
]


@pytest.mark.parametrize("device,dtype,case", dev_cases(
    [_p(KV(b=3, sq=sq, s_new=sq, h=4, hk=2, d=32, capacity=48, seqlens=(0, 12, 40), **m))
     for m in MASKS for sq in (1, 4)],
    [_p(KV(b=3, sq=sq, s_new=sq, h=8, hk=2, d=128, capacity=2048, page=page,
           seqlens=(0, 300, 2000), **{**m, "window": tuple(w * 37 if w > 0 else w
                                                          for w in m.get("window", (-1, -1)))}))
     for m in MASKS for sq, page in ((1, 0), (4, 16), (16, 0))],
    cpu_dtypes=(torch.bfloat16,), marks=[pytest.mark.parity_fwd]))
def test_decode_masks(device, dtype, case):
    run_case(device, dtype, case)


@pytest.mark.parametrize("device,dtype", dev_cases([()], [()], cpu_dtypes=(torch.float16,)))
@pytest.mark.parametrize("page", [0, 16])
def test_decode_without_lse(device, dtype, page):
    """return_softmax_lse=False returns only out (same checks on out and the cache)."""
    out = run_case(device, dtype, _p(KV(b=3, sq=1, s_new=1, h=8, hk=2, d=64, capacity=64,
                                        page=page, seqlens=(0, 9, 63), causal=True,
                                        rotary="neox")), lse=False)
    assert isinstance(out, torch.Tensor)


# --------------------------------------------------------------------------------------------
# the fused step: append + rotary + lengths in one kernel, bit for bit the composed ops
# --------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("table_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("d,rd,interleaved,page", [(64, 64, False, 0), (80, 40, False, 16),
                                                    (80, 40, True, 0), (128, 64, True, 16)])
@pytest.mark.parametrize("sq,causal", [(1, True), (3, True), (3, False)])
def test_decode_fused_rotary_append(table_dtype, d, rd, interleaved, page, sq, causal):
    """The CUDA path rotates the new keys on their way into the cache and q in the same kernel
    as the append: the cache and the output equal, bit for bit, apply_rotary_emb (the rotary op)
    followed by an append-free call on a cache holding the rotated keys; rd / 2 = 20 puts pair
    partners in different 16-byte chunks; fp32 and bf16 tables. The step launches no kernel but
    the append, the attention and the combine (no table conversion, no copy, no length update)."""
    from torch.profiler import ProfilerActivity, profile

    from flash_attn_c import apply_rotary_emb, flash_attn_with_kvcache
    torch.manual_seed(0)
    b, h, hk, cap, dt = 3, 8, 2, 96, torch.bfloat16
    dev = "cuda"
    seqlens = torch.tensor([0, 37, cap - sq], dtype=torch.int32, device=dev)
    q = torch.randn(b, sq, h, d, device=dev, dtype=dt)
    k_new, v_new = (torch.randn(b, sq, hk, d, device=dev, dtype=dt) for _ in range(2))
    ang = torch.rand(cap + 4, rd // 2, dtype=torch.float64) * 6.0
    cos, sin = (f(ang).to(table_dtype).to(dev) for f in (torch.cos, torch.sin))
    if page:
        kc = torch.randn(b * cap // page, page, hk, d, device=dev, dtype=dt)
        table = torch.randperm(b * cap // page, device=dev).to(torch.int32).reshape(b, cap // page)
    else:
        kc, table = torch.randn(b, cap, hk, d, device=dev, dtype=dt), None
    vc = torch.randn_like(kc)
    kc_ref, vc_ref = kc.clone(), vc.clone()
    kw = dict(block_table=table, causal=causal, return_softmax_lse=True)

    def step():
        return flash_attn_with_kvcache(q, kc, vc, k_new, v_new, rotary_cos=cos, rotary_sin=sin,
                                       cache_seqlens=seqlens, rotary_interleaved=interleaved, **kw)

    out, lse = step()
    # the composition: rotary op on k and q, the rotated keys written by hand, attention only
    k_rot = apply_rotary_emb(k_new, cos, sin, interleaved, seqlen_offsets=seqlens)
    if causal or sq == 1:  # query i at cache_seqlens + i
        q_rot = apply_rotary_emb(q, cos, sin, interleaved, seqlen_offsets=seqlens)
    else:  # every query at cache_seqlens
        q_rot = apply_rotary_emb(q.reshape(b * sq, 1, h, d), cos, sin, interleaved,
                                 seqlen_offsets=seqlens.repeat_interleave(sq)).reshape(b, sq, h, d)
    for i in range(b):
        for t in range(sq):
            pos = int(seqlens[i]) + t
            blk, row = (int(table[i, pos // page]), pos % page) if page else (i, pos)
            kc_ref[blk, row] = k_rot[i, t]
            vc_ref[blk, row] = v_new[i, t]
    assert torch.equal(kc, kc_ref) and torch.equal(vc, vc_ref), "cache differs from rotary op + append"
    out_ref, lse_ref = flash_attn_with_kvcache(q_rot, kc_ref, vc_ref, cache_seqlens=seqlens + sq, **kw)
    assert torch.equal(out, out_ref) and torch.equal(lse, lse_ref)

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    names = [e.name for e in prof.events() if e.device_type.name == "CUDA"]
    assert all("fa_" in n for n in names) and len(names) <= 3, names


@pytest.mark.gpu
def test_decode_fused_rotary_odd_tables_and_aliased_k():
    """Review helper-19: float64 tables, and cos / sin of different dtypes, are read as fp32
    (as the rotary op did), so they equal fp32 tables bit for bit instead of raising; a k that
    is a view of the very cache slots it is appended to (rotary partners sit in other 16-byte
    chunks, rd / 2 = 20) is copied before the kernel overwrites it, so the result equals the
    call with a separate k."""
    from flash_attn_c import flash_attn_with_kvcache
    torch.manual_seed(1)
    b, h, hk, d, rd, cap, pos, dt = 2, 4, 2, 80, 40, 64, 20, torch.bfloat16
    q = torch.randn(b, 1, h, d, device="cuda", dtype=dt)
    kc, vc = (torch.randn(b, cap, hk, d, device="cuda", dtype=dt) for _ in range(2))
    ang = torch.rand(cap, rd // 2, dtype=torch.float64, device="cuda") * 6.0
    kw = dict(cache_seqlens=pos, causal=True, rotary_interleaved=False)

    def call(cos, sin, k_of):  # a fresh copy of the caches per call; k_of picks k from them
        kc1, vc1 = kc.clone(), vc.clone()
        k, v = k_of(kc1), vc1[:, pos:pos + 1].clone()
        out = flash_attn_with_kvcache(q, kc1, vc1, k, v, rotary_cos=cos, rotary_sin=sin, **kw)
        return out, kc1

    separate = lambda c: c[:, pos:pos + 1].clone()  # noqa: E731
    ref_out, ref_cache = call(torch.cos(ang).float(), torch.sin(ang).float(), separate)
    for cos, sin in ((torch.cos(ang), torch.sin(ang)), (torch.cos(ang).float(), torch.sin(ang).to(dt))):
        out, cache = call(cos, sin, separate)
        if sin.dtype == dt:  # a bf16 sin is not the fp32 one: compare with that table instead
            ref_out, ref_cache = call(cos, sin.float(), separate)
        assert torch.equal(out, ref_out) and torch.equal(cache, ref_cache), (cos.dtype, sin.dtype)
    cos, sin = torch.cos(ang).float(), torch.sin(ang).float()
    ref_out, ref_cache = call(cos, sin, separate)
    out, cache = call(cos, sin, lambda c: c[:, pos:pos + 1])  # k aliases the slots written
    assert torch.equal(out, ref_out) and torch.equal(cache, ref_cache)


# --------------------------------------------------------------------------------------------
# end to end: greedy generate() of a tiny Llama through flash_attn_c equals sdpa's
# --------------------------------------------------------------------------------------------

GEN_TOKENS = 16
PROMPT = 10


@pytest.mark.usefixtures("one_cpu_thread")  # a tiny model: one intra-op thread is fastest
@pytest.mark.parametrize("device,dtype", dev_cases([()], [()], cpu_dtypes=(torch.float32,)))
@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_generate_tiny_llama_matches_sdpa(device, dtype, cache):
    """2 layers, hidden 128, 4 heads / 2 kv heads, vocab 128, random init (seed 0, std 0.3 so the
    attention is peaked); a batch of two prompts, one left-padded. fp32 (CPU): the tokens equal
    sdpa's. fp16/bf16 (CUDA): near-ties may legitimately flip, so every token we choose must be
    a greedy choice of the sdpa model (teacher-forced on our sequence) within the dtype's
    tolerance."""
    pytest.importorskip("transformers")
    from transformers import AutoModelForCausalLM, LlamaConfig

    from flash_attn_c.integrations.transformers import register

    name = register()
    cfg = LlamaConfig(vocab_size=128, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      initializer_range=0.3, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                      tie_word_embeddings=False)
    torch.manual_seed(0)
    ref = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa")
    ref = ref.to(device=device, dtype=dtype).eval()
    ours = copy.deepcopy(ref)
    ours.set_attn_implementation(name)
    assert ours.config._attn_implementation == name
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(3, 128, (2, PROMPT), generator=g).to(device)
    mask = torch.ones(2, PROMPT, dtype=torch.long, device=device)
    ids[0, :3], mask[0, :3] = 0, 0
    gen = dict(max_new_tokens=GEN_TOKENS, min_new_tokens=GEN_TOKENS, do_sample=False,
               pad_token_id=0, cache_implementation=None if cache == "dynamic" else cache)
    with torch.no_grad():
        r = ref.generate(ids, attention_mask=mask, **gen)
        o = ours.generate(ids, attention_mask=mask, **gen)
    assert r.shape == o.shape == (2, PROMPT + GEN_TOKENS)
    assert torch.equal(o[:, :PROMPT], ids)
    if dtype == torch.float32:
        assert torch.equal(o, r), f"tokens differ:\n{o}\n{r}"
        return
    full = torch.cat([mask, torch.ones(2, GEN_TOKENS, dtype=mask.dtype, device=device)], dim=1)
    pos = (full.cumsum(-1) - 1).masked_fill(full == 0, 1)
    with torch.no_grad():
        logits = ref(input_ids=o, attention_mask=full, position_ids=pos,
                     use_cache=False).logits.float()
    pred = logits[:, PROMPT - 1:PROMPT + GEN_TOKENS - 1]  # position p predicts token p + 1
    chosen = pred.gather(-1, o[:, PROMPT:, None]).squeeze(-1)
    best = pred.max(-1).values
    magnitude = float(pred.abs().max())
    tol = (3e-2 if dtype == torch.bfloat16 else 5e-3) * magnitude + 1e-2 * best.abs()
    assert bool((best - chosen <= tol).all()), f"a token is not a greedy choice: {best - chosen}"
