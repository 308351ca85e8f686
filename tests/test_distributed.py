"""flash_attn_c.distributed: ring / zigzag / varlen ring attention over gloo, forward and backward
(the loss uses out and the returned lse, so the lse gradient is checked too).

One spawn of 4 gloo processes runs every case at world sizes 2 and 3 (subgroups of ranks
[0, 1] and [0, 1, 2], passed as ``group``) and 4 (the default group): process start-up is the slow
part on a 2-core machine. Each case compares this rank's output, LSE and dq/dk/dv shards with
(a) the float64 oracle by the error-ratio rule (fp32: 2x / 3x torch's own fp32 error + floor) and
(b) single-process flash_attn_func / flash_attn_varlen_func on the whole sequence. Bad input must
raise on EVERY rank (never hang: the process group and the join have timeouts), after which the
group still works. World size 1 (no process group) must be flash_attn_func bit for bit.
"""
from __future__ import annotations

import faulthandler
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
import zlib
from datetime import timedelta
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import oracle
from flash_attn_c import flash_attn_func, flash_attn_varlen_func
from flash_attn_c.distributed import (attn_backward_with_lse, attn_forward_with_lse, block_window,
                                      merge_attn_outputs, ring_flash_attn_func,
                                      ring_flash_attn_varlen_func, ring_shard, ring_unshard,
                                      varlen_shard, zigzag_ring_flash_attn_func, zigzag_shard,
                                      zigzag_unshard)

ROOT = Path(__file__).resolve().parents[1]
JOIN_TIMEOUT_S = 150  # a hung ring fails the test instead of hanging CI
PG_TIMEOUT_S = 60

S_LOCAL, B, D = 8, 2, 16
# name: (layout, causal, window, h, hk, softcap, varlen sequence lengths in units of world size,
#        [CPU dtype, default float32])
CASES = {
    "ring_full": ("ring", False, (-1, -1), 4, 4, 0.0, None),
    "ring_causal_gqa": ("ring", True, (-1, -1), 4, 2, 0.0, None),
    "ring_window_mqa_softcap": ("ring", False, (5, 3), 4, 1, 2.0, None),
    "ring_window_causal": ("ring", True, (11, -1), 2, 2, 0.0, None),
    "zigzag_causal_gqa": ("zigzag", True, (-1, -1), 4, 2, 0.0, None),
    "zigzag_full": ("zigzag", False, (-1, -1), 2, 1, 0.0, None),
    "zigzag_window": ("zigzag", False, (3, 6), 4, 2, 0.0, None),
    "varlen_causal_gqa": ("varlen", True, (-1, -1), 4, 2, 0.0, (3, 0, 5, 1)),
    "varlen_full": ("varlen", False, (-1, -1), 2, 2, 0.0, (2, 4, 1)),
    "varlen_window": ("varlen", True, (4, -1), 4, 2, 0.0, (3, 1, 6)),
    # low precision on the CPU (block outputs rounded before the merge): the ratio rule (a) only
    "ring_causal_gqa_bf16": ("ring", True, (-1, -1), 4, 2, 0.0, None, torch.bfloat16),
    "zigzag_window_fp16": ("zigzag", True, (9, -1), 4, 1, 0.0, None, torch.float16),
}


def _gen(name: str) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(name.encode()))


def _check_case(name: str, world: int, group, device: str = "cpu",
                dtype: torch.dtype = torch.float32) -> None:
    """Runs one CASES entry on this rank and asserts its shards (called in every rank). The
    references run on the CPU; (b) is checked for float32 only."""
    layout, causal, window, h, hk, softcap, lens, *cpu_dtype = CASES[name]
    if device == "cpu" and cpu_dtype:
        dtype = cpu_dtype[0]
    g = _gen(name)
    if layout == "varlen":
        lens = [n * world for n in lens]
        total = sum(lens)
        cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32)
        shape_q, shape_k = (total, h, D), (total, hk, D)
    else:
        shape_q, shape_k = (B, S_LOCAL * world, h, D), (B, S_LOCAL * world, hk, D)
    q, dout = torch.randn(shape_q, generator=g), torch.randn(shape_q, generator=g)
    k, v = torch.randn(shape_k, generator=g), torch.randn(shape_k, generator=g)
    q, k, v, dout = (t.to(device, dtype) for t in (q, k, v, dout))
    kw = dict(causal=causal, window_size=window, softcap=softcap)
    if layout == "varlen":
        def shard(x: torch.Tensor, dim: int = 0) -> torch.Tensor:
            return varlen_shard(x.transpose(0, dim), cu, group).transpose(0, dim)
        mx, cu_dev = max(lens), cu.to(device)
        ring = lambda a, b_, c: ring_flash_attn_varlen_func(a, b_, c, cu_dev, mx, group=group,
                                                             return_attn_probs=True, **kw)
        full = lambda a, b_, c: flash_attn_varlen_func(a, b_, c, cu_dev, cu_dev, mx, mx,
                                                       return_attn_probs=True, **kw)
        ref_kw = dict(cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=mx, max_seqlen_k=mx)
        lse_dim = 1
    else:
        split = zigzag_shard if layout == "zigzag" else ring_shard
        fn = zigzag_ring_flash_attn_func if layout == "zigzag" else ring_flash_attn_func

        def shard(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
            return split(x, dim, group)
        ring = lambda a, b_, c: fn(a, b_, c, return_attn_probs=True, group=group, **kw)
        full = lambda a, b_, c: flash_attn_func(a, b_, c, return_attn_probs=True, **kw)
        ref_kw = {}
        lse_dim = 2
    # the loss uses out and the returned lse (its gradient flows as through flash_attn_func's)
    lse_shape = (h, shape_q[0]) if layout == "varlen" else (B, h, S_LOCAL * world)
    dlse = torch.randn(lse_shape, generator=g).to(device)
    leaves = [shard(t).clone().requires_grad_() for t in (q, k, v)]
    oracle._poison(device, leaves)
    out, lse, probs = ring(*leaves)
    assert probs is None and lse.requires_grad
    torch.autograd.backward([out, lse], [shard(dout), shard(dlse, lse_dim)])
    ours = [out.detach(), lse.detach()] + [t.grad for t in leaves]

    # (b) single-process flash_attn_c on the whole sequence, sharded the same way
    if dtype == torch.float32:
        fl = [t.clone().requires_grad_() for t in (q, k, v)]
        f_out, f_lse, _ = full(*fl)
        torch.autograd.backward([f_out, f_lse], [dout, dlse])
        theirs = [shard(f_out.detach()), shard(f_lse.detach(), lse_dim)] + [shard(t.grad) for t in fl]
        for n, a, b_ in zip(("out", "lse", "dq", "dk", "dv"), ours, theirs):
            torch.testing.assert_close(a, b_, atol=2e-5, rtol=1e-5,
                                       msg=lambda m: f"{name} {n}: {m}")

    # (a) the float64 oracle and torch's own error in the same dtype (on the CPU)
    ours = [x.cpu() for x in ours]
    rkw = dict(causal=causal, window=window, softcap=softcap, **ref_kw)
    inputs, dout, dlse = [t.cpu() for t in (q, k, v)], dout.cpu(), dlse.cpu()
    ref = oracle.ref_forward_backward(inputs, dout, upcast=True, dlse=dlse, **rkw)
    base = oracle.ref_forward_backward(inputs, dout, upcast=False, dlse=dlse, **rkw)
    oracle.assert_ratio(f"{name} out", ours[0], shard(ref.out), shard(base.out), dtype,
                        oracle.FWD_FACTOR)
    oracle.assert_lse(f"{name} lse", ours[1], shard(ref.lse, lse_dim), shard(base.lse, lse_dim),
                      dtype)
    oracle.assert_grads(ours[2:], [shard(x) for x in ref.grads], [shard(x) for x in base.grads],
                        dtype)


def _expect_error(exc: type, text: str, fn: Callable[[], object]) -> None:
    try:
        fn()
    except exc as e:
        assert text in str(e), f"expected {text!r} in the {exc.__name__}: {e}"
        return
    raise AssertionError(f"no {exc.__name__} ({text!r}) on this rank")


def _check_bad_input(world: int, group) -> None:
    """Every bad input raises the expected error on every rank, and the group is still usable."""
    rank = dist.get_rank(group)
    g = _gen("bad")
    q = torch.randn(1, S_LOCAL, 2, D, generator=g)
    odd = torch.randn(1, S_LOCAL - 1, 2, D, generator=g)
    # one rank's shard has the wrong shape (no local error: the ranks disagree)
    x = odd if rank == 1 else q
    _expect_error(ValueError, "disagree on q_shape",
                  lambda: ring_flash_attn_func(x, x, x, group=group))
    # one rank's k does not match its q (a local error, reported on every rank)
    k = odd if rank == world - 1 else q
    _expect_error(ValueError, "k must have q's", lambda: ring_flash_attn_func(q, k, k, group=group))
    # a dtype the kernels refuse, on one rank only
    q64 = q.double() if rank == 0 else q
    _expect_error(TypeError, "q must be", lambda: ring_flash_attn_func(q64, q64, q64, group=group))
    # zigzag needs an even local length; the shard helpers need divisible lengths
    _expect_error(ValueError, "even local sequence length",
                  lambda: zigzag_ring_flash_attn_func(odd, odd, odd, group=group))
    _expect_error(ValueError, "divisible by",
                  lambda: zigzag_shard(torch.randn(1, 2 * world + 1, 2, D), 1, group))
    _expect_error(ValueError, "divisible by",
                  lambda: ring_shard(torch.randn(1, world + 1, 2), 1, group))
    # arguments that differ between ranks
    _expect_error(ValueError, "disagree on window",
                  lambda: ring_flash_attn_func(q, q, q, causal=(rank == 0), group=group))
    # ranks calling different layouts (it returned wrong shards, no error)
    mixed = ring_flash_attn_func if rank == 0 else zigzag_ring_flash_attn_func
    _expect_error(ValueError, "disagree on layout", lambda: mixed(q, q, q, group=group))
    # unsupported features, even when only one rank asks for them
    _expect_error(NotImplementedError, "dropout_p",
                  lambda: ring_flash_attn_func(q, q, q, dropout_p=0.1 if rank == 0 else 0.0,
                                               group=group))
    slopes = torch.rand(2) if rank == world - 1 else None
    _expect_error(NotImplementedError, "alibi_slopes",
                  lambda: ring_flash_attn_func(q, q, q, alibi_slopes=slopes, group=group))
    # varlen: lengths not divisible by the world size; a shard made for another world size
    vq = torch.randn(2 * world, 2, D, generator=g)
    bad_cu = torch.tensor([0, 2 * world * world - 1, 2 * world * world], dtype=torch.int32)
    _expect_error(ValueError, "divisible by the world size",
                  lambda: ring_flash_attn_varlen_func(vq, vq, vq, bad_cu, 2 * world * world,
                                                          group=group))
    cu_other = torch.tensor([0, 4 * world * world], dtype=torch.int32)  # sharded for 2x the world
    _expect_error(ValueError, "another world size",
                  lambda: ring_flash_attn_varlen_func(vq, vq, vq, cu_other, 4 * world * world,
                                                          group=group))
    # still in step: a good call works afterwards
    out = ring_flash_attn_func(q, q, q, causal=True, group=group)
    full = ring_unshard(q, 1, group)
    ref = flash_attn_func(full, full, full, causal=True)
    torch.testing.assert_close(out, ring_shard(ref, 1, group), atol=2e-5, rtol=1e-5)
    assert torch.equal(zigzag_unshard(zigzag_shard(full, 1, group), 1, group), full)


WORLDS = (2, 3, 4)


def _worker(rank: int, store_path: str, names: List[str], out_dir: str, backend: str,
            worlds: Tuple[int, ...]) -> None:
    # A rank that dies of a signal prints its Python stacks: twice in full-suite runs (once in CI)
    # a rank died of SIGABRT ("terminate called without an active exception") in both attempts;
    # never in this file alone (12 runs, also two at once). This says where, next time.
    faulthandler.enable()
    torch.set_num_threads(1)
    world = max(worlds)
    device = "cpu"
    if backend == "nccl":
        torch.cuda.set_device(rank)
        device = "cuda"
    store = dist.FileStore(store_path, world)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world,
                            timeout=timedelta(seconds=PG_TIMEOUT_S))
    # every process takes part in creating every group, members or not
    groups = {w: None if w == world else dist.new_group(list(range(w))) for w in worlds}
    results: Dict[str, str] = {}
    for w in worlds:
        if rank >= w:
            continue
        for name in names:
            key, t0 = f"{w}:{name}", time.perf_counter()
            try:
                if name == "bad_input":
                    _check_bad_input(w, groups[w])
                elif device == "cuda":
                    _check_case(name, w, groups[w], device, torch.bfloat16)
                else:
                    _check_case(name, w, groups[w])
                results[key] = "ok"
            except Exception:  # noqa: BLE001  (reported to the parent, which fails the test)
                results[key] = traceback.format_exc()
            results[key + ":seconds"] = f"{time.perf_counter() - t0:.2f}"
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(results))
    dist.destroy_process_group()


def _run_all(names: List[str], backend: str = "gloo",
             worlds: Tuple[int, ...] = WORLDS) -> List[Dict[str, str]]:
    world = max(worlds)
    with tempfile.TemporaryDirectory() as tmp:
        # the spawned ranks read OMP_NUM_THREADS at start: set it for them only
        previous = os.environ.get("OMP_NUM_THREADS")
        os.environ["OMP_NUM_THREADS"] = "1"
        try:
            ctx = mp.start_processes(_worker, args=(os.path.join(tmp, "store"), names, tmp, backend,
                                                    worlds),
                                     nprocs=world, join=False, start_method="spawn")
        finally:
            if previous is None:
                os.environ.pop("OMP_NUM_THREADS", None)
            else:
                os.environ["OMP_NUM_THREADS"] = previous
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        try:
            while not ctx.join(timeout=max(1.0, deadline - time.monotonic())):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the {world} ranks did not finish in {JOIN_TIMEOUT_S} s "
                                       "(a hang)")
        finally:
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
        return [json.loads(Path(tmp, f"rank{r}.json").read_text()) for r in range(world)]


_RESULTS: List[Dict[str, str]] = []
_FAILURE: List[BaseException] = []  # a failed spawn (e.g. a hang) fails every case at once


def _results() -> List[Dict[str, str]]:
    if _FAILURE:
        raise RuntimeError(f"the gloo ranks failed earlier in this session: {_FAILURE[0]!r}")
    if not _RESULTS:
        for attempt in range(3):  # retries: a spawn can fail for reasons of the machine
            try:
                _RESULTS.extend(_run_all(list(CASES) + ["bad_input"]))
                break
            except Exception as e:  # noqa: BLE001
                if attempt == 2:
                    _FAILURE.append(e)
                    raise
                time.sleep(2.0 * (attempt + 1))  # let a busy machine settle first
    return _RESULTS


@pytest.mark.parametrize("name", list(CASES) + ["bad_input"])
@pytest.mark.parametrize("world", WORLDS)
def test_ring_gloo(world: int, name: str) -> None:
    results = _results()[:world]
    key = f"{world}:{name}"
    failures = [f"rank {r}:\n{res[key]}" for r, res in enumerate(results) if res[key] != "ok"]
    assert not failures, "\n".join(failures)


_NCCL_RESULTS: List[Dict[str, str]] = []


@pytest.mark.gpu
@pytest.mark.parametrize("name", list(CASES))
def test_ring_nccl_two_gpus(name: str) -> None:
    """The same cases on CUDA tensors in bf16 over NCCL, world 2 (needs 2 GPUs)."""
    if torch.cuda.device_count() < 2:
        pytest.skip("needs 2 GPUs")
    if not _NCCL_RESULTS:
        _NCCL_RESULTS.extend(_run_all(list(CASES), "nccl", (2,)))
    key = f"2:{name}"
    failures = [f"rank {r}:\n{res[key]}" for r, res in enumerate(_NCCL_RESULTS)
                if res[key] != "ok"]
    assert not failures, "\n".join(failures)


# ---- world size 1 (no process group): flash_attn_func bit for bit -------------------------------


@pytest.mark.parametrize("causal,window,hk", [(False, (-1, -1), 4), (True, (-1, -1), 2),
                                              (False, (3, 5), 1)])
@pytest.mark.parametrize("fn", ["ring", "zigzag"])
def test_world_size_1_is_flash_attn_func(fn: str, causal: bool, window, hk: int) -> None:
    g = _gen(f"w1{fn}{causal}{window}")
    q, dout = torch.randn(2, 12, 4, D, generator=g), torch.randn(2, 12, 4, D, generator=g)
    k, v = torch.randn(2, 12, hk, D, generator=g), torch.randn(2, 12, hk, D, generator=g)
    ring = ring_flash_attn_func if fn == "ring" else zigzag_ring_flash_attn_func
    a = [t.clone().requires_grad_() for t in (q, k, v)]
    b = [t.clone().requires_grad_() for t in (q, k, v)]
    out, lse, _ = ring(*a, causal=causal, window_size=window, return_attn_probs=True)
    out.backward(dout)
    r_out, r_lse, _ = flash_attn_func(*b, causal=causal, window_size=window,
                                      return_attn_probs=True)
    r_out.backward(dout)
    for x, y in zip([out, lse] + [t.grad for t in a], [r_out, r_lse] + [t.grad for t in b]):
        assert torch.equal(x, y)


def test_world_size_1_varlen_is_flash_attn_varlen_func() -> None:
    g = _gen("w1varlen")
    cu = torch.tensor([0, 5, 5, 12], dtype=torch.int32)
    q, k, v, dout = (torch.randn(12, 2, D, generator=g) for _ in range(4))
    a = [t.clone().requires_grad_() for t in (q, k, v)]
    b = [t.clone().requires_grad_() for t in (q, k, v)]
    out = ring_flash_attn_varlen_func(*a, cu, 7, causal=True)
    out.backward(dout)
    ref = flash_attn_varlen_func(*b, cu, cu, 7, 7, causal=True)
    ref.backward(dout)
    for x, y in zip([out] + [t.grad for t in a], [ref] + [t.grad for t in b]):
        assert torch.equal(x, y)


@pytest.mark.parametrize("fn", ["ring", "zigzag", "varlen"])
def test_world_size_1_skips_the_ring_bookkeeping(fn: str, monkeypatch) -> None:
    """One rank goes straight to the flash_attn_func call: no plans, no accumulators, no
    autograd.Function of its own (their host time cost the GPU 5-7 % of a 16k forward)."""
    from flash_attn_c.distributed import ring as ring_mod

    def refuse(*_a, **_k):
        raise AssertionError("world size 1 went through the ring's bookkeeping")
    monkeypatch.setattr(ring_mod, "_plans", refuse)
    monkeypatch.setattr(ring_mod._RingAttnFunc, "apply", refuse)
    g = _gen(f"w1direct{fn}")
    if fn == "varlen":
        cu = torch.tensor([0, 4, 10], dtype=torch.int32)
        q, k, v = (torch.randn(10, 2, D, generator=g) for _ in range(3))
        out = ring_flash_attn_varlen_func(q, k, v, cu, 6, causal=True)
        ref = flash_attn_varlen_func(q, k, v, cu, cu, 6, 6, causal=True)
    else:
        q, k, v = (torch.randn(1, 8, 2, D, generator=g) for _ in range(3))
        ring = ring_flash_attn_func if fn == "ring" else zigzag_ring_flash_attn_func
        out = ring(q, k, v, causal=True)
        ref = flash_attn_func(q, k, v, causal=True)
    assert torch.equal(out, ref)


@pytest.mark.parametrize("kwargs,err", [(dict(dropout_p=0.1), NotImplementedError),
                                        (dict(alibi_slopes=torch.ones(2)), NotImplementedError)])
def test_world_size_1_refuses_what_the_ring_refuses(kwargs, err) -> None:
    q = torch.randn(1, 8, 2, D)
    with pytest.raises(err, match="ring_flash_attn_func"):
        ring_flash_attn_func(q, q, q, **kwargs)
    with pytest.raises(ValueError, match="even local sequence length"):
        zigzag_ring_flash_attn_func(q[:, :7], q[:, :7], q[:, :7])


@pytest.mark.gpu
@pytest.mark.parametrize("causal", [False, True])
def test_world_size_1_gpu_is_flash_attn_func(causal: bool) -> None:
    g = torch.Generator(device="cuda").manual_seed(1)
    shape = (2, 300, 4, 64)
    q, k, v, dout = (torch.randn(shape, generator=g, device="cuda", dtype=torch.bfloat16)
                     for _ in range(4))
    a = [t.clone().requires_grad_() for t in (q, k, v)]
    b = [t.clone().requires_grad_() for t in (q, k, v)]
    out, lse, _ = ring_flash_attn_func(*a, causal=causal, return_attn_probs=True)
    out.backward(dout)
    r_out = flash_attn_func(*b, causal=causal)
    r_out.backward(dout)
    assert torch.equal(out, r_out)
    # flash_attn_func returns the LSE only with the probabilities, which on Hopper run another
    # kernel (the sm80 one with its probabilities pass): same values up to fp32 rounding
    _, r_lse, _ = flash_attn_func(*(t.detach() for t in b), causal=causal, return_attn_probs=True)
    torch.testing.assert_close(lse, r_lse, atol=1e-5, rtol=1e-5)
    for x, y in zip(a, b):  # dq through float atomics is not bitwise reproducible
        torch.testing.assert_close(x.grad, y.grad, atol=2e-2, rtol=1e-2)


# ---- the primitives ---------------------------------------------------------------------------


def test_block_window_reproduces_the_global_mask() -> None:
    """Every (offsets, lengths, window) of a small grid: the call's local bottom-right mask on its
    sub-rectangle equals the global band there, and nothing visible lies outside it."""
    for window in [(-1, -1), (-1, 0), (3, 0), (0, 2), (2, 5), (-1, 4), (6, -1), (0, 0)]:
        for qp in range(0, 13, 3):
            for kp in range(0, 13, 2):
                for sq, sk in [(4, 4), (3, 5), (6, 2)]:
                    i = torch.arange(qp, qp + sq).unsqueeze(1)
                    j = torch.arange(kp, kp + sk).unsqueeze(0)
                    vis = torch.ones(sq, sk, dtype=torch.bool)
                    if window[0] >= 0:
                        vis &= j >= i - window[0]
                    if window[1] >= 0:
                        vis &= j <= i + window[1]
                    bc = block_window(qp, sq, kp, sk, window)
                    if bc is None:
                        assert not vis.any(), (window, qp, kp, sq, sk)
                        continue
                    got = torch.zeros_like(vis)
                    got[bc.q0:bc.q1, bc.k0:bc.k1] = oracle.visible_mask(
                        bc.q1 - bc.q0, bc.k1 - bc.k0, (bc.left, bc.right))
                    assert torch.equal(got, vis), (window, qp, kp, sq, sk, bc)


def test_masked_blocks_are_skipped_and_zigzag_balances_causal_work() -> None:
    """The ring's plan: causal (and windows) skip every fully masked block; zigzag gives every
    rank the same causal work (same number of fully visible blocks and diagonal blocks)."""
    from flash_attn_c.distributed._comm import Ring
    from flash_attn_c.distributed.ring import _plans

    world, rows = 4, 8

    def plans(layout, rank, window):
        return _plans(layout, Ring(None, world, rank, 0, 0), rows, window, None)

    for rank in range(world):
        causal = plans("ring", rank, (-1, 0))
        assert [len(p) > 0 for p in causal] == [t <= rank for t in range(world)]
        # window (5, 0): queries see at most 5 keys back, so only the own and previous block
        assert [len(p) > 0 for p in plans("ring", rank, (5, 0))] == \
            [t <= min(rank, 1) for t in range(world)]
        assert all(len(p) == 1 for p in plans("ring", rank, (-1, -1)))
    work = []
    for rank in range(world):
        calls = [c for p in plans("zigzag", rank, (-1, 0)) for c in p]
        full = sum(c.left == -1 and c.right == -1 for c in calls)
        diag = sum(c.right == 0 for c in calls)
        assert full + diag == len(calls)
        work.append((full, diag))
    assert work == [(1 + 2 * (world - 1), 2)] * world, work


def test_merge_and_backward_with_lse_compose_to_full_attention() -> None:
    """Attention split into key blocks with the public primitives: merged forward and summed
    backward-with-global-LSE equal the whole attention (and -inf rows stay 0, not NaN)."""
    g = _gen("primitives")
    q, dout = torch.randn(1, 6, 2, D, generator=g), torch.randn(1, 6, 2, D, generator=g)
    k, v = torch.randn(1, 9, 1, D, generator=g), torch.randn(1, 9, 1, D, generator=g)
    # causal with sq < sk splits into keys [0, 3) (all visible) and [3, 9) (bottom-right causal)
    o1, l1 = attn_forward_with_lse(q, k[:, :3], v[:, :3])
    o2, l2 = attn_forward_with_lse(q, k[:, 3:], v[:, 3:], causal=True)
    # bottom-right causal with sq = 4, sk = 1: rows 0..2 see no key, row 3 sees it
    o3, l3 = attn_forward_with_lse(q[:, :4], k[:, 8:], v[:, 8:], causal=True)
    assert torch.isneginf(l3[..., :3]).all() and (o3[:, :3] == 0).all()
    out, lse = merge_attn_outputs([o1, o2], [l1, l2])
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    r_out, r_lse, _ = flash_attn_func(*leaves, causal=True, return_attn_probs=True)
    r_out.backward(dout)
    torch.testing.assert_close(out, r_out.detach(), atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(lse, r_lse, atol=2e-6, rtol=1e-5)
    out_q = out.to(q.dtype)
    dq1, dk1, dv1 = attn_backward_with_lse(dout, q, k[:, :3], v[:, :3], out_q, lse)
    dq2, dk2, dv2 = attn_backward_with_lse(dout, q, k[:, 3:], v[:, 3:], out_q, lse, causal=True)
    torch.testing.assert_close(dq1 + dq2, leaves[0].grad, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(torch.cat([dk1, dk2], 1), leaves[1].grad, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(torch.cat([dv1, dv2], 1), leaves[2].grad, atol=2e-6, rtol=1e-5)
    m_out, m_lse = merge_attn_outputs([o3, o3], [l3, l3])
    assert not m_out.isnan().any() and not m_lse.isnan().any()
    assert (m_out[:, :3] == 0).all() and torch.isneginf(m_lse[..., :3]).all()
    torch.testing.assert_close(m_out[:, 3:], o3[:, 3:], atol=1e-6, rtol=1e-6)
    # shapes that would broadcast into a wrong answer are refused, naming the argument
    with pytest.raises(ValueError, match=r"outs\[1\]"):
        merge_attn_outputs([o1, o3], [l1, l3])
    with pytest.raises(ValueError, match=r"lses\[0\]"):
        merge_attn_outputs([o1], [l1.transpose(-1, -2)])
    with pytest.raises(ValueError, match=r"lses\[1\]"):
        merge_attn_outputs([o1, o2], [l1, l1[..., :1]])


# ---- the README example, as users run it -------------------------------------------------------


def test_example_runs_with_torchrun_on_cpu() -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    example = str(ROOT / "examples" / "ring_attention_cpu.py")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", "2", example],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "matches flash_attn_func" in proc.stdout, proc.stdout
