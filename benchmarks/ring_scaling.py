"""Context-parallel scaling of ring / zigzag ring attention over 1..8 GPUs (issue #16), one call.

Worker (one process per GPU):
    torchrun --standalone --nproc_per_node=N benchmarks/ring_scaling.py --out DIR [--check] [...]
Driver (runs the worker under torchrun for each world size in turn, then merges):
    python benchmarks/ring_scaling.py --driver --worlds 1,2,4,8 --out DIR [--budget-s 540] [--check]
Merge only (per-world JSON files of earlier calls, e.g. one call per world size):
    python benchmarks/ring_scaling.py --merge DIR [DIR ...] --out DIR

For each (total sequence length S in a doubling list, layout ring / zigzag, causal or not,
direction fwd / fwdbwd): b=1, h=16, d=128, bf16 on CUDA over NCCL (fp32 over gloo with
``--device cpu``, tiny sizes, to test the flow). Every rank holds S/world tokens. Time: warm-up,
then the median of a few reps per rank (CUDA events; ranks start each rep together after a barrier),
the slowest rank's median reported. TFLOP/s per GPU: the bench's convention (forward
4*b*h*S*S*d, halved when causal; fwd+bwd 3.5x the forward) divided by world.
At world 1 the ring is flash_attn_func itself (both layouts are the same call): measured once
(layout "ring") and used as the baseline of both layouts.

Communication hidden under compute (world > 1):
  t_ring:    the ring call as above;
  t_compute: the same call with every ring exchange replaced by a local copy of the send
             buffers into the receive buffers (same per-rank kernel calls, merges and buffers,
             no NCCL traffic; the copies cost < 0.1 % of a block's compute at the sizes of interest);
  t_comm:    the ring's traffic alone: the same exchanges (K/V forward ring; for fwd+bwd also the
             backward's K/V ring and the float32 dK/dV ring) on buffers of the same shapes;
  overlap = 1 - (t_ring - t_compute) / t_comm, clipped to [0, 1]: the fraction of the
             communication time that does not show in the ring's time.
Scaling (merge step), per (layout, causal, direction):
  strong efficiency at the largest S measured on 1 GPU and on `world` GPUs:
             t_1(S) / (world * t_world(S)) (= per-GPU TFLOP/s at world / TFLOP/s on 1 GPU; the issue's
             "time on 1 GPU x world / time on world GPUs" read as t_1 / (world * t_world));
  weak ratio: per-GPU TFLOP/s at world and S / TFLOP/s of 1 GPU at S/world (the same tokens per
             GPU; the issue's target: zigzag causal fwd+bwd at 128k tokens per GPU on 8 GPUs >= 0.85).
A series (layout, causal, direction) stops at its first OOM (recorded with the free memory) or
when its next size (predicted 4.2x the previous one's cost) would overrun the time budget.

Correctness (``--check``, world > 1), before the timings, with the ranks' results gathered to rank 0:
  * out, dq, dk, dv of ring and zigzag (causal and not) at --check-seqlen tokens against the
    float64 reference (flash_attn_c.testing) by the project's error-ratio rule (tests/oracle.py:
    <= 2x, gradients 3x, torch's own error in the low precision, + floor); the distance to
    single-GPU flash_attn_func on the same sequence is recorded too;
  * 5 SGD steps of a tiny attention-only language model (fixed seed) whose per-step losses must
    match the 1-rank run (flash_attn_func on the whole sequence) within 2e-2 relative (bf16) /
    1e-4 (fp32).
NCCL's NVLink multicast stays off (NCCL_NVLS_ENABLE=0 and its peers, set for every child).
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import glob
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parent.parent
# The device documentation requires NVLink multicast off (a program using it can take the host's
# GPUs out of service); set before torch / NCCL start, inherited by torchrun's children.
NO_MULTICAST = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
                "NVSHMEM_DISABLE_NVLS": "1"}
os.environ.update(NO_MULTICAST)

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
import oracle  # noqa: E402  (the error-ratio rule of the test suite)
from flash_attn_c import flash_attn_func  # noqa: E402
from flash_attn_c.bench.cases import BenchCase  # noqa: E402
from flash_attn_c.bench.env import collect_header  # noqa: E402
from flash_attn_c.bench.measure import is_oom, short_reason  # noqa: E402
from flash_attn_c.bench.report import seqlen_axis, throughput_unit  # noqa: E402
from flash_attn_c.distributed import (ring_flash_attn_func, ring_shard, ring_unshard,  # noqa: E402
                                      zigzag_ring_flash_attn_func, zigzag_shard, zigzag_unshard)
from flash_attn_c.distributed._comm import GRAD_TAG, KV_TAG, Ring, wait  # noqa: E402

LAYOUTS = {"ring": (ring_flash_attn_func, ring_shard, ring_unshard),
           "zigzag": (zigzag_ring_flash_attn_func, zigzag_shard, zigzag_unshard)}
# most valuable first: the target series, then the rest of each size
ORDER = [(lay, c, dr) for c in (True, False) for lay in ("zigzag", "ring")
         for dr in ("fwdbwd", "fwd")]
LOSS_RTOL = {torch.bfloat16: 2e-2, torch.float16: 1e-2, torch.float32: 1e-4}
GROWTH = 4.2  # cost of the next doubling of S relative to this one (quadratic, plus margin)


# ------------------------------------------------------------------------------------ timing
class _Clock:
    """Per-rank time of one call in ms: CUDA events on CUDA, perf_counter on the CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        if self.cuda:
            self.a = torch.cuda.Event(enable_timing=True)
            self.b = torch.cuda.Event(enable_timing=True)

    def __call__(self, fn: Callable[[], Any]) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        dist.barrier()  # every rank starts the rep together (the ring runs in lockstep anyway)
        if self.cuda:
            torch.cuda.synchronize()
            self.a.record()
            fn()
            self.b.record()
            self.b.synchronize()
            return self.a.elapsed_time(self.b)
        t0 = time.perf_counter()
        fn()
        return 1e3 * (time.perf_counter() - t0)


def _all_max(x: float, device: torch.device) -> float:
    t = torch.tensor([x], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def _timed(fn: Callable[[], Any], clock: _Clock, reps: int, max_s: float,
           device: torch.device) -> Tuple[float, int]:
    """Warm-up, then the median of up to ``reps`` calls (fewer when a call is long: about
    ``max_s`` seconds in all); returns (slowest rank's median ms, reps)."""
    first = _all_max(clock(fn), device)
    n = max(1, min(reps, int(max_s * 1e3 / max(first, 1e-3))))
    times = [clock(fn) for _ in range(n)]
    return _all_max(statistics.median(times), device), n


@contextlib.contextmanager
def _no_sends():
    """The ring with every exchange replaced by a local copy (compute-only variant)."""
    orig = Ring.exchange

    def local(self: Ring, sends: Sequence[torch.Tensor], recvs: Sequence[torch.Tensor],
              tag: int) -> List[Any]:
        for s, r in zip(sends, recvs):
            r.copy_(s)
        return []

    Ring.exchange = local  # type: ignore[method-assign]
    try:
        yield
    finally:
        Ring.exchange = orig  # type: ignore[method-assign]


def _comm_only(k: torch.Tensor, v: torch.Tensor, direction: str) -> None:
    """The ring's traffic alone, in the order of ring.py: k/v (1, s_local, hk, d) blocks forward,
    and for fwd+bwd the backward's k/v ring plus the float32 dK/dV accumulators (world sends)."""
    ring = Ring.of(None)
    bufs = [(torch.empty_like(k), torch.empty_like(v)) for _ in range(2)]
    kc, vc = k, v
    for t in range(ring.world - 1):
        wait(ring.exchange([kc, vc], list(bufs[t % 2]), KV_TAG))
        kc, vc = bufs[t % 2]
    if direction == "fwd":
        return
    acc = [torch.zeros_like(k, dtype=torch.float32), torch.zeros_like(v, dtype=torch.float32)]
    into = [torch.empty_like(a) for a in acc]
    kc, vc = k, v
    for t in range(ring.world):
        reqs = ring.exchange(acc, into, GRAD_TAG)
        if t + 1 < ring.world:
            reqs += ring.exchange([kc, vc], list(bufs[t % 2]), KV_TAG)
            kc, vc = bufs[t % 2]
        wait(reqs)
        acc, into = into, acc


# ------------------------------------------------------------------------------ correctness
def _err_ratio_ok(ours: torch.Tensor, ref: torch.Tensor, base: torch.Tensor, dtype: torch.dtype,
                  factor: float) -> Dict[str, float]:
    """The suite's error-ratio rule: max|ours - ref| <= factor * max|base - ref| + floor."""
    err, base_err = oracle.max_abs_err(ours, ref), oracle.max_abs_err(base, ref)
    bound = factor * base_err + oracle._FLOOR[dtype] * oracle._magnitude(ref)
    return dict(err=err, torch_err=base_err, bound=bound, ok=bool(err <= bound))


def _check_attention(args: argparse.Namespace, device: torch.device, dtype: torch.dtype,
                     world: int, rank: int) -> List[Dict[str, Any]]:
    from flash_attn_c.testing import ref_forward_backward
    s, h, d = args.check_seqlen, args.check_heads, args.headdim
    rows = []
    for li, layout in enumerate(("ring", "zigzag")):
        fn, shard, unshard = LAYOUTS[layout]
        for causal in (False, True):  # the same seed on every rank: the same whole tensors
            g = torch.Generator().manual_seed(1000 + 2 * li + causal)
            q, k, v, dout = (torch.randn(1, s, h, d, generator=g).to(device, dtype)
                             for _ in range(4))
            leaves = [shard(t).clone().requires_grad_() for t in (q, k, v)]
            out = fn(*leaves, causal=causal)
            out.backward(shard(dout))
            ring = [unshard(out.detach())] + [unshard(t.grad) for t in leaves]
            if rank != 0:
                continue
            single = [t.clone().requires_grad_() for t in (q, k, v)]
            o1 = flash_attn_func(*single, causal=causal)
            o1.backward(dout)
            one = [o1.detach()] + [t.grad for t in single]
            ref = ref_forward_backward([q, k, v], dout, causal=causal)
            base = ref_forward_backward([q, k, v], dout, upcast=False, causal=causal)
            row: Dict[str, Any] = dict(layout=layout, causal=causal, seqlen=s, heads=h, world=world)
            ok = True
            for i, name in enumerate(("out", "dq", "dk", "dv")):
                r64 = ref.out if i == 0 else ref.grads[i - 1]
                rb = base.out if i == 0 else base.grads[i - 1]
                res = _err_ratio_ok(ring[i], r64, rb, dtype,
                                    oracle.FWD_FACTOR if i == 0 else oracle.GRAD_FACTOR)
                res["vs_1gpu"] = oracle.max_abs_err(ring[i], one[i])
                row[name] = res
                ok &= res["ok"]
            row["ok"] = ok
            rows.append(row)
            del ref, base, single, one
    return rows


class _TinyLM(torch.nn.Module):
    """Embedding -> one causal self-attention (ring or whole sequence) -> logits."""

    def __init__(self, vocab: int, heads: int, head_dim: int) -> None:
        super().__init__()
        e = heads * head_dim
        self.heads, self.head_dim = heads, head_dim
        self.emb = torch.nn.Embedding(vocab, e)
        self.qkv = torch.nn.Linear(e, 3 * e)
        self.proj = torch.nn.Linear(e, vocab)

    def forward(self, tokens: torch.Tensor, attn: Callable[..., torch.Tensor],
                dtype: torch.dtype) -> torch.Tensor:
        """tokens (1, s) -> logits (1, s, vocab) float32; attention in ``dtype``."""
        x = self.emb(tokens)
        q, k, v = self.qkv(x).unflatten(-1, (3, self.heads, self.head_dim)).to(dtype).unbind(2)
        return self.proj(attn(q, k, v, causal=True).float().flatten(-2))


def _train(args: argparse.Namespace, device: torch.device, dtype: torch.dtype, layout: Optional[str],
           steps: int = 5) -> List[float]:
    """Per-step losses (mean next-token cross entropy over the whole sequence) of SGD on a fixed
    random token sequence; layout None = one process, flash_attn_func on the whole sequence."""
    s, vocab = args.check_seqlen, 64
    torch.manual_seed(7)
    model = _TinyLM(vocab, args.check_heads, args.headdim).to(device)
    g = torch.Generator().manual_seed(8)
    tokens = torch.randint(0, vocab, (1, s + 1), generator=g).to(device)
    inp, tgt = tokens[:, :-1], tokens[:, 1:]
    attn: Callable[..., torch.Tensor] = flash_attn_func
    if layout is not None:
        fn, shard, _ = LAYOUTS[layout]
        inp, tgt, attn = shard(inp, 1), shard(tgt, 1), fn
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        logits = model(inp, attn, dtype)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tgt.flatten(),
                                                 reduction="sum") / s
        loss.backward()
        total = loss.detach().clone()
        if layout is not None:  # each rank saw S/world tokens: sum the losses and gradients
            dist.all_reduce(total)
            for p in model.parameters():
                dist.all_reduce(p.grad)
        losses.append(float(total.item()))
        opt.step()
    return losses


def run_check(args: argparse.Namespace, device: torch.device, dtype: torch.dtype, world: int,
              rank: int) -> Optional[Dict[str, Any]]:
    attn = _check_attention(args, device, dtype, world, rank)
    train = {}
    for layout in ("ring", "zigzag"):
        train[layout] = _train(args, device, dtype, layout)
    if rank != 0:
        return None
    single = _train(args, device, dtype, None)
    tol = LOSS_RTOL[dtype]
    tr = {"single": single, "rtol": tol}
    ok = all(r["ok"] for r in attn)
    for layout, losses in train.items():
        dev = max(abs(a - b) / abs(b) for a, b in zip(losses, single))
        tr[layout] = dict(losses=losses, max_rel_diff=dev, ok=bool(dev <= tol))
        ok &= dev <= tol
    tr["loss_decreased"] = bool(single[-1] < single[0])
    ok &= tr["loss_decreased"]
    return dict(attention=attn, training=tr, ok=bool(ok))


# ---------------------------------------------------------------------------------- bench
def _flops(s: int, h: int, d: int, causal: bool, direction: str) -> float:
    return BenchCase(batch=1, seqlen=s, heads=h, kv_heads=h, head_dim=d, causal=causal,
                     dtype="bf16").flops(direction)


def _free_bytes(device: torch.device) -> Optional[int]:
    if device.type != "cuda":
        return None
    return int(torch.cuda.mem_get_info(device)[0])


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def bench_config(args: argparse.Namespace, device: torch.device, dtype: torch.dtype, world: int,
                 layout: str, causal: bool, s: int, direction: str) -> Dict[str, Any]:
    fn = LAYOUTS[layout][0]
    shape = (1, s // world, args.heads, args.headdim)
    gen = torch.Generator(device=device).manual_seed(s + 17 * dist.get_rank())
    q, k, v, dout = (torch.randn(shape, device=device, dtype=dtype, generator=gen)
                     for _ in range(4))
    if direction == "fwd":
        def call() -> Any:
            with torch.no_grad():
                return fn(q, k, v, causal=causal)
    else:
        leaves = [t.requires_grad_() for t in (q, k, v)]

        def call() -> Any:
            return torch.autograd.grad(fn(*leaves, causal=causal), leaves, dout)
    clock = _Clock(device)
    ms, reps = _timed(call, clock, args.reps, args.max_config_s, device)
    row: Dict[str, Any] = dict(ms=ms, reps=reps)
    row["tflops_per_gpu"] = _flops(s, args.heads, args.headdim, causal, direction) / world / (
        ms * 1e-3) / 1e12
    if world > 1 and args.overlap:
        with _no_sends():
            row["ms_compute"], _ = _timed(call, clock, args.reps, args.max_config_s, device)
        row["ms_comm"], _ = _timed(lambda: _comm_only(k.detach(), v.detach(), direction), clock,
                                   args.reps, args.max_config_s, device)
        exposed = ms - row["ms_compute"]
        row["overlap"] = min(1.0, max(0.0, 1.0 - exposed / row["ms_comm"])) if row["ms_comm"] > 0 \
            else None
    return row


def _nccl_version() -> str:
    try:
        v = torch.cuda.nccl.version()
        return ".".join(str(x) for x in v) if isinstance(v, tuple) else str(v)
    except Exception:  # noqa: BLE001  no CUDA build / no NCCL
        return "n.a."


def worker(args: argparse.Namespace) -> int:
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    t_start = time.monotonic()
    if args.device == "cuda":
        torch.cuda.set_device(local)
        device, dtype, backend = torch.device("cuda", local), torch.bfloat16, "nccl"
    else:
        torch.set_num_threads(args.cpu_threads)
        device, dtype, backend = torch.device("cpu"), torch.float32, "gloo"
    dist.init_process_group(backend, timeout=timedelta(seconds=args.pg_timeout_s),
                            device_id=device if backend == "nccl" else None)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"world{world}.json"
    header = collect_header(device, sys.argv[1:])
    header.update(nccl=_nccl_version() if backend == "nccl" else "n.a. (gloo)", backend=backend,
                  world=world, dtype=str(dtype)[6:], heads=args.heads, headdim=args.headdim,
                  no_multicast={k: os.environ.get(k) for k in NO_MULTICAST})
    rec: Dict[str, Any] = dict(header=header, world=world, rows=[], check=None, budget_s=args.budget_s)

    def save() -> None:
        if rank == 0:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(rec, indent=1, allow_nan=False))
            tmp.replace(path)

    save()
    if args.check and world > 1:
        rec["check"] = run_check(args, device, dtype, world, rank)
        if rank == 0:
            print(f"[world {world}] check: {'PASS' if rec['check']['ok'] else 'FAIL'}", flush=True)
        save()
        _release(device)
    series = [o for o in ORDER if world > 1 or o[0] == "ring"]
    done: Dict[Tuple[str, bool, str], str] = {}
    cost: Dict[Tuple[str, bool, str], float] = {}
    for s in args.seqlens:
        if s % (2 * world):
            continue
        for key in series:
            if key in done:
                continue
            layout, causal, direction = key
            row: Dict[str, Any] = dict(world=world, layout=layout, causal=causal,
                                       direction=direction, seqlen=s)
            elapsed = time.monotonic() - t_start
            over = elapsed + GROWTH * cost.get(key, 0.0) > args.budget_s
            if _all_max(float(over), device) > 0:
                row["status"] = done[key] = "time budget"
                rec["rows"].append(row)
                save()
                continue
            t0 = time.monotonic()
            err = ""
            try:
                row.update(bench_config(args, device, dtype, world, layout, causal, s, direction))
            except Exception as e:  # noqa: BLE001  OOM (or any failure) ends this series only
                err = ("OOM: " if is_oom(e) else "") + short_reason(e)
            _release(device)
            failed = _all_max(float(bool(err)), device) > 0
            if failed:
                row["status"] = done[key] = err.split(":")[0] if err.startswith("OOM") else \
                    (err or "failed on another rank")
                row["error"] = err
                row["free_gib_after"] = (_free_bytes(device) or 0) / 2**30
            else:
                row["status"] = "ok"
            cost[key] = _all_max(time.monotonic() - t0, device)
            rec["rows"].append(row)
            if rank == 0:
                print(f"[world {world}] {layout:6s} causal={causal!s:5s} {direction:6s} S={s}: "
                      + (f"{row['ms']:.2f} ms, {row['tflops_per_gpu']:.3g} TFLOP/s/GPU"
                         + (f", overlap {row['overlap']:.2f}" if row.get("overlap") is not None
                            else "") if not failed else row["status"]), flush=True)
            save()
    rec["elapsed_s"] = time.monotonic() - t_start
    save()
    dist.barrier()
    dist.destroy_process_group()
    return 0


# --------------------------------------------------------------------------------- driver
def driver(args: argparse.Namespace, passthrough: List[str]) -> int:
    env = dict(os.environ, **NO_MULTICAST, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    worlds = [int(w) for w in args.worlds.split(",")]
    have = torch.cuda.device_count() if args.device == "cuda" else max(worlds)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + args.budget_s
    log: List[str] = []
    runnable = [w for w in worlds if w <= have]
    for w in worlds:
        if w > have:
            log.append(f"world {w}: skipped, {have} GPUs here")
    for i, w in enumerate(runnable):
        share = (deadline - time.monotonic()) / (len(runnable) - i)
        if share < args.startup_s + 5:
            log.append(f"world {w}: skipped, no time left")
            continue
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={w}", str(Path(__file__).resolve()), "--out", str(out),
               "--budget-s", f"{share - args.startup_s:.0f}"] + passthrough
        print(f"[driver] world {w}: {share:.0f} s: {' '.join(cmd)}", flush=True)
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, env=env, start_new_session=True)
        try:
            rc = proc.wait(timeout=share + args.grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)  # the torchrun we started and its workers (their own session)
            proc.wait()
            rc = "killed (time)"
        log.append(f"world {w}: exit {rc} after {time.monotonic() - t0:.0f} s")
    print("\n".join(log), flush=True)
    return merge([str(out)], out, log)


# ---------------------------------------------------------------------------------- merge
def _fmt(x: Optional[float], spec: str = ".3g") -> str:
    return "-" if x is None else format(x, spec)


def _seq(s: int) -> str:
    return f"{s // 1024}k" if s >= 1024 and s % 1024 == 0 else str(s)


def summarize(recs: Dict[int, Dict[str, Any]]) -> Dict[str, Any]:
    """Scaling efficiencies, longest sequences, overlaps from the per-world records."""
    ok = {(r["world"], r["layout"], r["causal"], r["direction"], r["seqlen"]): r
          for rec in recs.values() for r in rec["rows"] if r.get("status") == "ok"}

    def one(layout: str, causal: bool, direction: str, s: int) -> Optional[Dict[str, Any]]:
        return ok.get((1, "ring", causal, direction, s))  # world 1: one call for both layouts

    eff = []
    for w in sorted(recs):
        if w == 1:
            continue
        for layout, causal, direction in ORDER:
            both = [s for (w_, l_, c_, d_, s) in ok if (w_, l_, c_, d_) == (w, layout, causal,
                                                                              direction)
                    and one(layout, causal, direction, s)]
            weak = [s for (w_, l_, c_, d_, s) in ok if (w_, l_, c_, d_) == (w, layout, causal,
                                                                              direction)
                    and one(layout, causal, direction, s // w)]
            e: Dict[str, Any] = dict(world=w, layout=layout, causal=causal, direction=direction)
            if both:
                s = max(both)
                e.update(strong_seqlen=s, strong=one(layout, causal, direction, s)["ms"] / (
                    w * ok[(w, layout, causal, direction, s)]["ms"]))
            if weak:
                s = max(weak)
                e.update(weak_seqlen=s, weak=ok[(w, layout, causal, direction, s)][
                    "tflops_per_gpu"] / one(layout, causal, direction, s // w)["tflops_per_gpu"])
            if len(e) > 4:
                eff.append(e)
    longest = {w: max([r["seqlen"] for r in rec["rows"] if r.get("status") == "ok"], default=None)
               for w, rec in recs.items()}
    return dict(efficiency=eff, longest=longest)


def _plot(recs: Dict[int, Dict[str, Any]], path: Path) -> str:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "plot skipped: matplotlib is not installed"
    rows = [r for rec in recs.values() for r in rec["rows"] if r.get("status") == "ok"]
    if not rows:
        return "plot skipped: no successful measurement"
    unit, f = throughput_unit([r["tflops_per_gpu"] for r in rows])
    panels = [(d, c) for d in ("fwd", "fwdbwd") for c in (False, True)]
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.6), squeeze=False)
    for ax, (direction, causal) in zip(axes[0], panels):
        sel = [r for r in rows if r["direction"] == direction and r["causal"] == causal]
        for w in sorted({r["world"] for r in sel}):
            for layout in ("ring", "zigzag"):
                pts = sorted((r["seqlen"], r["tflops_per_gpu"] * f) for r in sel
                             if r["world"] == w and r["layout"] == layout)
                if pts:
                    label = "1 GPU" if w == 1 else f"{w} GPUs {layout}"
                    ax.plot(*zip(*pts), marker="o", ls="-" if layout == "zigzag" else "--",
                            label=label)
        if sel:
            seqlen_axis(ax, sorted({r["seqlen"] for r in sel}))
        ax.set_title(f"{direction}, {'causal' if causal else 'non-causal'}")
        ax.set_ylabel(f"{unit} per GPU")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"plot: {path.name}"


def merge(dirs: Sequence[str], out: Path, log: Sequence[str] = ()) -> int:
    """Per-world JSON of ``dirs`` (a later directory wins per world) -> results.json/.md/.png."""
    recs: Dict[int, Dict[str, Any]] = {}
    for d in dirs:
        for p in sorted(glob.glob(os.path.join(d, "world*.json"))):
            rec = json.loads(Path(p).read_text())
            recs[rec["world"]] = rec
    out.mkdir(parents=True, exist_ok=True)
    if not recs:
        print("[merge] no world*.json found", file=sys.stderr)
        return 1
    summary = summarize(recs)
    worlds = sorted(recs)
    h0 = recs[worlds[-1]]["header"]
    lines = ["# Context-parallel scaling (benchmarks/ring_scaling.py)", "",
             f"- device: {h0.get('device_name')} ({h0.get('compute_capability', '')}), backend "
             f"{h0['backend']}, NCCL {h0['nccl']}, multicast env {h0['no_multicast']}",
             f"- torch {h0['torch']}, CUDA {h0['cuda']}, flash_attn_c git {h0['git_commit']}, "
             f"date {h0['date_utc']} UTC",
             f"- b=1, h={h0['heads']}, d={h0['headdim']}, {h0['dtype']}; worlds {worlds}; time "
             "= slowest rank's median; TFLOP/s per GPU = FLOPs (fwd 4bhS^2d, /2 causal, fwd+bwd "
             "x3.5) / world / time",
             *[f"- {x}" for x in log], ""]
    checks = [(w, recs[w]["check"]) for w in worlds if recs[w].get("check")]
    if checks:
        lines += ["## Correctness (vs float64 reference, error-ratio rule; vs 1-GPU flash_attn_func)",
                  "", "| world | layout | causal | S | out err / bound | dq | dk | dv | max diff vs "
                  "1 GPU | ok |", "|---|---|---|---|---|---|---|---|---|---|"]
        for w, c in checks:
            for a in c["attention"]:
                cells = [f"{a[n]['err']:.2e} / {a[n]['bound']:.2e}" for n in ("out", "dq", "dk", "dv")]
                vs1 = max(a[n]["vs_1gpu"] for n in ("out", "dq", "dk", "dv"))
                lines.append(f"| {w} | {a['layout']} | {a['causal']} | {a['seqlen']} | "
                             + " | ".join(cells) + f" | {vs1:.2e} | {a['ok']} |")
            t = c["training"]
            lines += ["", f"Training, world {w}: 1-rank losses {[round(x, 5) for x in t['single']]}; "
                      + "; ".join(f"{lay} max rel diff {t[lay]['max_rel_diff']:.2e} "
                                  f"({'ok' if t[lay]['ok'] else 'FAIL'})" for lay in ("ring", "zigzag"))
                      + f" (tolerance {t['rtol']:g}); loss decreased: {t['loss_decreased']}. "
                      f"**check {'PASS' if c['ok'] else 'FAIL'}**", ""]
    lines += ["## TFLOP/s per GPU (ms), slowest rank", "",
              "| layout | causal | pass | S | " + " | ".join(f"world {w}" for w in worlds) + " |",
              "|---|---|---|---|" + "---|" * len(worlds)]
    by = {(r["world"], r["layout"], r["causal"], r["direction"], r["seqlen"]): r
          for w in worlds for r in recs[w]["rows"]}
    seqs = sorted({r["seqlen"] for w in worlds for r in recs[w]["rows"]})
    for layout, causal, direction in sorted(ORDER, key=lambda o: (o[2], o[1], o[0])):
        for s in seqs:
            cells = []
            for w in worlds:
                r = by.get((w, "ring" if w == 1 else layout, causal, direction, s))
                if r is None:
                    cells.append("")
                elif r.get("status") != "ok":
                    cells.append(r["status"])
                else:
                    cells.append(f"{r['tflops_per_gpu']:.3g} ({r['ms']:.3g})")
            if any(cells):
                lines.append(f"| {layout} | {causal} | {direction} | {_seq(s)} | "
                             + " | ".join(cells) + " |")
    ov = [r for w in worlds if w > 1 for r in recs[w]["rows"] if r.get("overlap") is not None]
    if ov:
        lines += ["", "## Communication hidden under compute (world > 1)", "",
                  "overlap = 1 - (t_ring - t_compute) / t_comm (clipped to [0, 1]); t_compute: "
                  "the same calls with local copies instead of sends; t_comm: the ring's traffic "
                  "alone.", "", "| world | layout | causal | pass | S | t_ring ms | t_compute ms | "
                  "t_comm ms | overlap |", "|---|---|---|---|---|---|---|---|---|"]
        for r in ov:
            lines.append(f"| {r['world']} | {r['layout']} | {r['causal']} | {r['direction']} | "
                         f"{_seq(r['seqlen'])} | {r['ms']:.3g} | {r['ms_compute']:.3g} | "
                         f"{r['ms_comm']:.3g} | {r['overlap']:.2f} |")
    if summary["efficiency"]:
        lines += ["", "## Scaling", "", "strong = t_1(S) / (world x t_world(S)) at the largest S "
                  "measured on both; weak = TFLOP/s per GPU at world and S / TFLOP/s of 1 GPU at "
                  "S/world.", "", "| world | layout | causal | pass | strong (S) | weak (S) |",
                  "|---|---|---|---|---|---|"]
        for e in summary["efficiency"]:
            st = f"{e['strong']:.2f} ({_seq(e['strong_seqlen'])})" if "strong" in e else "-"
            wk = f"{e['weak']:.2f} ({_seq(e['weak_seqlen'])})" if "weak" in e else "-"
            lines.append(f"| {e['world']} | {e['layout']} | {e['causal']} | {e['direction']} | "
                         f"{st} | {wk} |")
    lines += ["", "Longest sequence run per world size: "
              + ", ".join(f"{w}: {_seq(s) if s else 'none'}" for w, s in summary["longest"].items()),
              "", _plot(recs, out / "results.png"), ""]
    (out / "results.md").write_text("\n".join(lines))
    (out / "results.json").write_text(json.dumps(dict(worlds=recs, summary=summary), indent=1,
                                                 allow_nan=False))
    print("\n".join(lines))
    return 0 if all(c["ok"] for _, c in checks) else 2


# ----------------------------------------------------------------------------------- main
def parse(argv: Optional[Sequence[str]] = None) -> Tuple[argparse.Namespace, List[str]]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder for world*.json and the merged results")
    ap.add_argument("--driver", action="store_true", help="run torchrun for each of --worlds")
    ap.add_argument("--merge", nargs="+", metavar="DIR", help="only merge world*.json of DIRs")
    ap.add_argument("--worlds", default="1,2,4,8")
    ap.add_argument("--budget-s", type=float, default=540.0,
                    help="driver: for all worlds together; worker: for this world's timings")
    ap.add_argument("--startup-s", type=float, default=30.0,
                    help="driver: the part of each world's share left for start-up and checks")
    ap.add_argument("--grace-s", type=float, default=20.0,
                    help="driver: a world's torchrun is killed this long after its share")
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--seqlens", default=None,
                    help="comma list of total lengths (default cuda 32k..1M doubling)")
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--headdim", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--max-config-s", type=float, default=6.0,
                    help="fewer reps when one call is long: about this many seconds per timing")
    ap.add_argument("--no-overlap", dest="overlap", action="store_false",
                    help="skip the compute-only and comm-only timings")
    ap.add_argument("--check", action="store_true", help="correctness at world > 1 first")
    ap.add_argument("--check-seqlen", type=int, default=None, help="default cuda 4096, cpu 64")
    ap.add_argument("--check-heads", type=int, default=4)
    ap.add_argument("--pg-timeout-s", type=float, default=300.0)
    ap.add_argument("--cpu-threads", type=int, default=1)
    args = ap.parse_args(argv)
    # what the driver hands on to every worker: everything but the driver's own options
    own = {"--driver", "--merge", "--worlds", "--budget-s", "--out", "--startup-s", "--grace-s"}
    raw, passthrough, skip = list(sys.argv[1:] if argv is None else argv), [], False
    for i, a in enumerate(raw):
        if skip:
            skip = False
            continue
        name = a.split("=")[0]
        if name in own:
            skip = "=" not in a and name not in ("--driver",) and i + 1 < len(raw)
            if name == "--merge":
                skip = False  # nargs=+: merge mode never passes anything on
            continue
        passthrough.append(a)
    cuda = args.device == "cuda"
    args.seqlens = ([int(x) for x in args.seqlens.split(",")] if args.seqlens else
                    [2 ** i * 32768 for i in range(6)] if cuda else [256, 512])
    args.check_seqlen = args.check_seqlen or (4096 if cuda else 64)
    return args, passthrough


def main(argv: Optional[Sequence[str]] = None) -> int:
    args, passthrough = parse(argv)
    if args.merge:
        return merge(args.merge, Path(args.out))
    if args.driver:
        return driver(args, passthrough)
    if "RANK" not in os.environ:
        print("launch under torchrun (or use --driver / --merge)", file=sys.stderr)
        return 2
    return worker(args)


if __name__ == "__main__":
    sys.exit(main())
