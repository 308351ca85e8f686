"""Benchmark and self-check CLI: ``python -m flash_attn_c.bench --help``.

1. Detects the device (CUDA GPU if present, else CPU) and prints a header.
2. Self-check: ours vs a float64 oracle, forward and backward; exit code 1 if it fails.
3. Sweeps configurations (direction x dtype x head dim x causal x seqlen [x GQA], optional window,
   dropout, varlen) timing ours and the peers on the same inputs, with a progress bar.
4. Prints tables (ms, TFLOP/s, ratio to the best peer, peak memory) and summary lines, and writes
   results.json, results.csv, tflops_<direction>.png and memory.png (and results.md for
   ``--preset sweep``, ``--long`` or ``--markdown``) into ``--out``.

Exit codes: 0 ok, 1 self-check failed, 2 bad arguments, 3 ours failed (ERR) on some config.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from typing import Any, Iterator, Optional, Sequence

import torch

from . import backends as backends_mod
from . import decode as decode_mod
from .cases import (DIRECTIONS, DTYPES, BenchCase, BenchInputs, build_cases, make_inputs,
                    resolve_kernel_flags)
from .check import default_check_configs, format_check_row, run_check
from .env import collect_header, format_header, pick_device
from .measure import (TimingSettings, direction_fn, is_oom, memory_method, peak_memory_bytes,
                      pin_malloc_for_rss, release_memory, short_reason, time_ms, timing_method)
from .progress import make_progress
from .report import (failure_notes, fill_ratios, format_summary, format_tables, markdown_results,
                     report_self_check, summarize, write_csv, write_json, write_plots)

EXIT_OK, EXIT_CHECK_FAILED, EXIT_USAGE, EXIT_OURS_FAILED = 0, 1, 2, 3

# Sweep presets, named for what they measure. "quick" (the default) finishes in about a minute on
# a GPU and a few minutes on a 2-core CPU; "sweep" is the standard GPU sweep that the records in
# benchmarks/results/ come from.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "quick": {
        "cuda": dict(dtypes=["bf16"], head_dims=[64, 128], seqlens=[1024, 4096], tokens=16384,
                     hidden=2048, causal="both", directions=list(DIRECTIONS),
                     peers=list(backends_mod.CUDA_PEERS), eager_max_gib=8.0),
        "cpu": dict(dtypes=["fp32"], head_dims=[64, 128], seqlens=[128, 256, 512, 1024],
                    tokens=1024, hidden=512, causal="both", directions=list(DIRECTIONS),
                    peers=list(backends_mod.CPU_PEERS), eager_max_gib=2.0),
    },
    # The standard GPU sweep: 16k tokens per batch, h * d = 2048, d up to 256, seqlen to 16k.
    "sweep": {
        "cuda": dict(dtypes=["bf16"], head_dims=[64, 128, 256], seqlens=[512, 2048, 8192, 16384],
                     tokens=16384, hidden=2048, causal="both", directions=list(DIRECTIONS),
                     peers=list(backends_mod.CUDA_PEERS), eager_max_gib=8.0),
    },
}
# Former preset names, still accepted with a one-line note (older records and scripts use them).
OLD_PRESET_NAMES: dict[str, str] = {"default": "quick", "issue": "sweep"}
# --long: forward at 128k and forward+backward at 64k, b=1, h=16, d=128, bf16.
LONG_DEFAULTS = dict(batch=1, heads=16, head_dim=128, dtype="bf16", seqlens=(131072, 65536))


# ------------------------------------------------------------------------------- arguments
def _int_with_suffix(text: str) -> int:
    """'2048', '2k' (= 2048), '128K' (= 131072)."""
    t = text.strip().lower()
    mult = 1024 if t.endswith("k") else 1
    t = t[:-1] if t.endswith("k") else t
    try:
        value = int(t) * mult
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    return value


def _list_of(kind: str, choices: Optional[Sequence[str]] = None, minimum: int = 1):
    """argparse type: a comma separated list of ints (with k suffix) or of choices; repeats are
    dropped (first occurrence kept)."""

    def parse(text: str) -> list[Any]:
        items = [x.strip() for x in text.split(",") if x.strip()]
        if not items:
            raise argparse.ArgumentTypeError("empty list")
        if kind == "int":
            values = [_int_with_suffix(x) for x in items]
            bad = [v for v in values if v < minimum]
            if bad:
                raise argparse.ArgumentTypeError(f"values must be >= {minimum}, got {bad}")
            return list(dict.fromkeys(values))  # a repeated value would time its rows twice
        bad = [x for x in items if choices is not None and x not in choices]
        if bad:
            raise argparse.ArgumentTypeError(
                f"invalid choice(s) {', '.join(bad)} (choose from {', '.join(choices or [])})")
        return list(dict.fromkeys(items))

    parse.__name__ = f"{kind} list"
    return parse


def _window(text: str) -> tuple[int, int]:
    parts = text.split(",")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"window must be 'L,R' integers, got {text!r}") from None
    if len(values) != 2 or min(values) < -1:
        raise argparse.ArgumentTypeError(f"window must be 'L,R' with L, R >= -1, got {text!r}")
    return values[0], values[1]


def _dropout(text: str) -> float:
    try:
        p = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= p < 1.0:
        raise argparse.ArgumentTypeError(f"dropout must be in [0, 1), got {p}")
    return p


def _positive_int(text: str) -> int:
    value = _int_with_suffix(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser (every option defaults to None = take it from the preset)."""
    all_peers = sorted(set(backends_mod.CUDA_PEERS) | set(backends_mod.CPU_PEERS))
    p = argparse.ArgumentParser(
        prog="python -m flash_attn_c.bench",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Self-check flash_attn_c against a float64 oracle, then benchmark it against the\n"
            "torch SDPA backends and eager attention on the same inputs.\n\n"
            "Presets (explicit flags override them):\n"
            "  quick    the default. CUDA: bf16, d 64,128, seqlen 1k,4k, 16k tokens, h*d=2048\n"
            "           (~1 min). CPU: fp32, d 64,128, seqlen 128..1024, 1k tokens, h*d=512\n"
            "           (a few min)\n"
            "  sweep    the standard sweep, CUDA only: bf16, d 64,128,256, seqlen 512,2k,8k,16k,\n"
            "           batch=16384//s, h=2048//d, causal and not, fwd/bwd/fwdbwd, SDPA\n"
            "           flash/cudnn/efficient + eager where its fp32 (b,h,s,s) scores fit\n"
            "           --eager-max-gib; writes results.md for benchmarks/results/\n"
            "           (older names: default = quick, issue = sweep)\n"
            "  decode   the decode sweep (same as --decode): flash_attn_with_kvcache, one query\n"
            "           token over a K/V cache, contiguous and paged, vs SDPA backends; GB/s\n"
            "           and fraction of the measured copy bandwidth (options: see 'decode')\n"
            "  --long   forward at 128k and fwd+bwd at 64k (b=1, h=16, d=128, bf16): peak\n"
            "           memory vs output+LSE size and eager's theoretical memory\n\n"
            "TFLOP/s: fwd 4*b*h*sq*sk*d (halved when causal), bwd 2.5x, fwd+bwd 3.5x; window and\n"
            "varlen count exact unmasked pairs. Ratios are ours/peer TFLOP/s (> 1: ours faster).\n"
            "Our causal is bottom-right aligned, SDPA's is_causal top-left: the sweep keeps\n"
            "sq == sk where they agree. Window/varlen peers get an explicit mask\n"
            "(SDPA flash: n.a.).\n"
            "Exit codes: 0 ok, 1 self-check failed, 2 bad arguments, 3 ours failed on a config."),
    )
    g = p.add_argument_group("device and preset")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="device to run on (default: auto = CUDA if available, else CPU)")
    g.add_argument("--preset", choices=list(PRESETS) + ["decode"] + list(OLD_PRESET_NAMES),
                   default="quick", metavar="{" + ",".join(list(PRESETS) + ["decode"]) + "}",
                   help="sweep preset (default: quick); see above")
    g.add_argument("--long", action="store_true",
                   help="long-sequence mode instead of the sweep (see above)")
    g.add_argument("--long-seqlens", type=_list_of("int"), metavar="FWD,FWDBWD",
                   help="--long sequence lengths (default 131072,65536; required on CPU)")

    g = p.add_argument_group("sweep (comma separated lists)")
    g.add_argument("--directions", type=_list_of("str", DIRECTIONS), metavar="LIST",
                   help="subset of fwd,bwd,fwdbwd (default: all)")
    g.add_argument("--dtypes", type=_list_of("str", list(DTYPES)), metavar="LIST",
                   help="subset of fp32,fp16,bf16 (CUDA: fp16/bf16; default bf16 CUDA, fp32 CPU)")
    g.add_argument("--head-dims", type=_list_of("int"), metavar="LIST",
                   help="head dims, each 1..256")
    g.add_argument("--seqlens", type=_list_of("int"), metavar="LIST",
                   help="sequence lengths (sq == sk), 'k' suffix allowed: 512,2k,8k")
    g.add_argument("--causal", choices=["both", "yes", "no"],
                   help="causal, non-causal or both (default both)")
    g.add_argument("--batch", type=_positive_int, help="fixed batch (default tokens // seqlen)")
    g.add_argument("--tokens", type=_positive_int,
                   help="tokens per batch: batch = max(1, tokens // seqlen)")
    g.add_argument("--heads", type=_positive_int, help="fixed query heads (default hidden // d)")
    g.add_argument("--hidden", type=_positive_int, help="h * d: heads = max(1, hidden // d)")
    g.add_argument("--gqa", type=_list_of("int"), metavar="LIST", default=None,
                   help="GQA group sizes h/hk to sweep (default 1 = MHA), e.g. 1,4")
    g.add_argument("--window", type=_window, metavar="L,R", default=(-1, -1),
                   help="sliding window (left,right), -1 = unbounded; causal forces right=0 "
                        "(write --window=-1,0 when L is negative)")
    g.add_argument("--dropout", type=_dropout, default=0.0, metavar="P",
                   help="dropout probability in [0, 1) (default 0)")
    g.add_argument("--varlen", action="store_true",
                   help="variable lengths: per-sequence lengths uniform in [s/2, s], run "
                        "through flash_attn_varlen_func; peers get a padded, masked batch")

    decode_mod.add_decode_arguments(p, _list_of("int"), _list_of("str", decode_mod.PEER_LAYOUTS),
                                    _positive_int, _positive_float)

    g = p.add_argument_group("peers")
    g.add_argument("--peers", metavar="LIST",
                   help=f"peers to time, or 'none'. CUDA: {','.join(backends_mod.CUDA_PEERS)}; "
                        f"CPU: {','.join(backends_mod.CPU_PEERS)}; --decode: "
                        f"{','.join(decode_mod.CUDA_DECODE_PEERS)} (CUDA), "
                        f"{','.join(decode_mod.CPU_DECODE_PEERS)} (CPU) (default: all for the "
                        "device)")
    g.add_argument("--eager-max-gib", type=_positive_float, metavar="GIB",
                   help="skip eager (n.a.) when its fp32 (b,h,s,s) scores exceed this "
                        "(default 8 CUDA, 2 CPU)")

    g = p.add_argument_group("timing and memory")
    g.add_argument("--warmup", type=_positive_int, default=None,
                   help="CPU / CUDA-events warm-up runs (default 1 CPU, 5 CUDA events)")
    g.add_argument("--reps", type=_positive_int, default=None,
                   help="maximum timed runs on CPU / CUDA events (default 10 / 20)")
    g.add_argument("--cpu-budget", type=_positive_float, default=1.0, metavar="SEC",
                   help="CPU: stop timing a measurement after this long, min 3 runs (default 1)")
    g.add_argument("--cuda-rep-ms", type=_positive_float, default=100.0, metavar="MS",
                   help="do_bench measurement budget per measurement (default 100)")
    g.add_argument("--threads", type=_positive_int, help="torch.set_num_threads on CPU")
    g.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    g.add_argument("--seed", type=int, default=0, help="seed for inputs and varlen lengths")

    g = p.add_argument_group("self-check")
    g.add_argument("--skip-check", action="store_true", help="do not run the self-check")
    g.add_argument("--check-only", action="store_true", help="run the self-check and exit")

    g = p.add_argument_group("output")
    g.add_argument("--out", default="bench_out", help="output folder (default ./bench_out)")
    g.add_argument("--no-plots", action="store_true", help="do not write PNG plots")
    g.add_argument("--markdown", action="store_true",
                   help="also write results.md (always on for --preset sweep and --long)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")

    g = p.add_argument_group("testing hooks (for tests/test_bench_cli.py)")
    g.add_argument("--inject-failing-peer", choices=["raise", "oom"],
                   help="add a peer that always raises RuntimeError (raise) or MemoryError (oom)")
    g.add_argument("--inject-check-failure", action="store_true",
                   help="scale our output by 1.05 inside the self-check (it must then fail)")
    return p


@dataclasses.dataclass
class Plan:
    """Resolved run settings (preset merged with flags)."""

    device: torch.device
    dtypes: list[str]
    head_dims: list[int]
    seqlens: list[int]
    causal_values: list[bool]
    directions: list[str]
    peers: list[str]
    batch: Optional[int]
    tokens: int
    heads: Optional[int]
    hidden: int
    gqa: list[int]
    eager_max_bytes: int
    timing: TimingSettings


def resolve_plan(args: argparse.Namespace, device: torch.device) -> Plan:
    """Merge the preset with explicit flags and validate against the device (ValueError)."""
    dev = device.type
    if args.preset not in PRESETS or dev not in PRESETS[args.preset]:
        raise ValueError(f"--preset {args.preset} is a GPU sweep (needs CUDA); on CPU use the "
                         "quick preset or explicit --seqlens/--head-dims")
    preset = PRESETS[args.preset][dev]
    valid = backends_mod.CUDA_PEERS if dev == "cuda" else backends_mod.CPU_PEERS
    dtypes, head_dims, peers = resolve_kernel_flags(args, preset, dev, valid)
    causal = args.causal or preset["causal"]
    causal_values = {"both": [False, True], "yes": [True], "no": [False]}[causal]
    eager_gib = args.eager_max_gib or preset["eager_max_gib"]
    timing = TimingSettings.from_args(args, dev)
    return Plan(device=device, dtypes=dtypes, head_dims=head_dims,
                seqlens=args.seqlens or preset["seqlens"], causal_values=causal_values,
                directions=args.directions or preset["directions"], peers=peers,
                batch=args.batch, tokens=args.tokens or preset["tokens"], heads=args.heads,
                hidden=args.hidden or preset["hidden"], gqa=args.gqa or [1],
                eager_max_bytes=int(eager_gib * 2**30), timing=timing)


# --------------------------------------------------------------------------------- the sweep
def make_backends(plan: Plan, args: argparse.Namespace) -> list[backends_mod.Backend]:
    """Ours first, then the peers (and the test hook's failing peer)."""
    result = [backends_mod.ours_backend()]
    result += [backends_mod.make_peer(n, plan.device.type, plan.eager_max_bytes)
               for n in plan.peers]
    if args.inject_failing_peer:
        result.append(backends_mod.failing_backend(args.inject_failing_peer))
    return result


def _base_row(case: BenchCase, direction: str, backend: str, config_id: int) -> dict[str, Any]:
    flops = case.flops(direction)
    return {
        "config_id": config_id, "direction": direction, "dtype": case.dtype,
        "head_dim": case.head_dim, "seqlen": case.seqlen, "batch": case.batch,
        "heads": case.heads, "kv_heads": case.kv_heads, "causal": case.causal,
        "window_left": case.window[0], "window_right": case.window[1], "varlen": case.varlen,
        "total_tokens": case.total_tokens, "dropout": case.dropout, "flops": flops,
        "backend": backend, "status": "ok", "reason": "", "ms": None, "tflops": None,
        "peak_mem_bytes": None, "ratio_to_best_peer": None,
    }


def _mark_failed(row: dict[str, Any], exc: BaseException, is_ours: bool) -> None:
    if is_oom(exc):
        row["status"] = "OOM"
    else:
        row["status"] = "ERR" if is_ours else "n.a."
    row["reason"] = short_reason(exc)


def _walk(cases: Sequence[BenchCase], backends: Sequence[backends_mod.Backend],
          directions: Sequence[str], device: torch.device, seed: int
          ) -> Iterator[tuple[int, BenchCase, backends_mod.Backend, str,
                              Optional[backends_mod.Prepared], Optional[str],
                              Optional[BaseException], dict[str, bool]]]:
    """Yield (config_id, case, backend, direction, prepared, n.a. reason, error, outcome) for
    every measurement. Inputs are drawn once per case (same values for every backend: seed +
    case index); each backend is prepared once per case and released before the next one. The
    consumer sets outcome["failed"] = True when its measurement raised (then the release also
    runs the garbage collector)."""
    for ci, case in enumerate(cases):
        inputs: Optional[BenchInputs] = None
        input_error: Optional[BaseException] = None
        try:
            inputs = make_inputs(case, device, seed + ci)
        except Exception as exc:  # e.g. OOM allocating the inputs: every backend is affected
            input_error = exc
        for backend in backends:
            prepared = None
            reason = backend.unsupported(case) if input_error is None else None
            error: Optional[BaseException] = input_error
            if reason is None and error is None:
                try:
                    assert inputs is not None
                    prepared = backend.prepare(case, inputs)
                except Exception as exc:
                    error = exc
            failed = error is not None
            for di, direction in enumerate(directions):
                outcome: dict[str, bool] = {}
                yield (ci * len(directions) + di, case, backend, direction, prepared, reason,
                       error, outcome)
                failed = failed or outcome.get("failed", False)
            del prepared
            error = None
            try:
                release_memory(device, collect=failed)
            except Exception:  # a sticky CUDA error surfaces in the next measurement anyway
                pass
        del inputs


def run_sweep(cases: Sequence[BenchCase], backends: Sequence[backends_mod.Backend],
              directions: Sequence[str], device: torch.device, timing: TimingSettings,
              seed: int, progress: Any) -> list[dict[str, Any]]:
    """Timing pass: every case x backend x direction; failures become OOM / n.a. / ERR rows."""
    rows: list[dict[str, Any]] = []
    for cid, case, backend, direction, prepared, reason, error, outcome in _walk(
            cases, backends, directions, device, seed):
        row = _base_row(case, direction, backend.name, cid)
        progress.set_postfix_str(f"{backend.name} {direction} {case.label()}", refresh=False)
        if reason is not None:
            row["status"], row["reason"] = "n.a.", reason
        elif error is not None:
            _mark_failed(row, error, backend.is_ours)
        else:
            try:
                assert prepared is not None
                with prepared.context(), torch.enable_grad():
                    fn, keep_alive = direction_fn(prepared, direction)
                    ms = time_ms(fn, device, timing)
                    del fn, keep_alive
                row["ms"] = ms
                row["tflops"] = row["flops"] / (ms * 1e-3) / 1e12
            except Exception as exc:
                _mark_failed(row, exc, backend.is_ours)
                outcome["failed"] = True
        rows.append(row)
        progress.update(1)
    return rows


def run_memory_pass(cases: Sequence[BenchCase], backends: Sequence[backends_mod.Backend],
                    directions: Sequence[str], device: torch.device, seed: int,
                    rows: Sequence[dict[str, Any]], progress: Any) -> None:
    """Memory pass, after all timing (so the allocator tweak for exact CPU RSS cannot affect
    timings): one more call per measurement that timed ok; fills ``peak_mem_bytes``."""
    by_key = {(r["config_id"], r["backend"]): r for r in rows}
    if device.type == "cpu":
        pin_malloc_for_rss()
    for cid, case, backend, direction, prepared, reason, error, outcome in _walk(
            cases, backends, directions, device, seed):
        row = by_key.get((cid, backend.name))
        if row is None or row["status"] != "ok" or prepared is None:
            continue
        progress.set_postfix_str(f"{backend.name} {direction} {case.label()}", refresh=False)
        try:
            with prepared.context(), torch.enable_grad():
                fn, keep_alive = direction_fn(prepared, direction)
                row["peak_mem_bytes"] = peak_memory_bytes(fn, device)
                del fn, keep_alive
        except Exception as exc:  # timed fine but the extra run failed: keep the time
            row["reason"] = f"memory run: {short_reason(exc)}"
            outcome["failed"] = True
        progress.update(1)


def run_cases(cases: Sequence[BenchCase], backends: Sequence[backends_mod.Backend],
              directions: Sequence[str], plan: Plan, args: argparse.Namespace,
              desc: str) -> list[dict[str, Any]]:
    """Timing pass then (unless --no-memory) memory pass, each with a progress bar."""
    total = len(cases) * len(backends) * len(directions)
    progress = make_progress(total, f"{desc} time", not args.no_progress)
    rows = run_sweep(cases, backends, directions, plan.device, plan.timing, args.seed, progress)
    progress.close()
    if not args.no_memory:
        n_ok = sum(1 for r in rows if r["status"] == "ok")
        progress = make_progress(n_ok, f"{desc} memory", not args.no_progress)
        run_memory_pass(cases, backends, directions, plan.device, args.seed, rows, progress)
        progress.close()
    return rows


def sweep_notes(cases: Sequence[BenchCase], plan: Plan) -> list[str]:
    """What the numbers mean: masks, FLOPs, timing and memory methods."""
    notes = [
        "causal: ours is bottom-right aligned, SDPA is_causal top-left; every case has "
        "sq == sk, where the two agree (SDPA peers use is_causal=True)",
        "TFLOP/s: fwd 4*b*h*sq*sk*d (halved when causal), bwd 2.5x fwd, fwd+bwd 3.5x; window "
        "and varlen cases count exact unmasked pairs; every backend is credited the same FLOPs",
        f"timing: {timing_method(plan.device)} after warm-up; bwd times only the backward "
        "(forward run once outside the timed region, retain_graph=True)",
        f"peak memory: {memory_method(plan.device)} of one call, over what was allocated "
        "before it (inputs excluded)",
    ]
    if any(c.needs_explicit_peer_mask for c in cases):
        notes.append("window/varlen: SDPA peers and eager get an explicit boolean attn_mask "
                     "(varlen: padded to max_seqlen, padding masked); SDPA FLASH_ATTENTION "
                     "takes no mask and is n.a.")
    if any(c.kv_heads != c.heads for c in cases):
        notes.append("GQA: SDPA peers use enable_gqa=True (n.a. where a backend rejects it); "
                     "eager repeats K/V")
    if any(c.dropout > 0 for c in cases):
        notes.append("dropout: every backend draws its own mask (timing only)")
    if "eager" in plan.peers:
        notes.append("eager: materialized softmax; n.a. when its fp32 (b,h,s,s) scores exceed "
                     f"{plan.eager_max_bytes / 2**30:.1f} GiB")
    return notes


# ------------------------------------------------------------------------------------ --long
def run_long(args: argparse.Namespace, plan: Plan, backends: Sequence[backends_mod.Backend]
             ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Forward at the first --long seqlen, fwd+bwd at the second; returns (rows, memory facts)."""
    b, h, d = LONG_DEFAULTS["batch"], LONG_DEFAULTS["heads"], LONG_DEFAULTS["head_dim"]
    dtype = (args.dtypes or [LONG_DEFAULTS["dtype"] if plan.device.type == "cuda" else "fp32"])[0]
    long_seqlens = args.long_seqlens or list(LONG_DEFAULTS["seqlens"])
    s_fwd, s_fb = long_seqlens[0], long_seqlens[-1]
    jobs = [("fwd", s_fwd), ("fwdbwd", s_fb)]
    long_backends = [bk for bk in backends if bk.name != "eager"]
    rows: list[dict[str, Any]] = []
    facts: list[dict[str, Any]] = []
    elem = DTYPES[dtype].itemsize
    for direction, s in jobs:
        cases = [BenchCase(batch=b, seqlen=s, heads=h, kv_heads=h, head_dim=d, causal=causal,
                           dtype=dtype) for causal in plan.causal_values]
        part = run_cases(cases, long_backends, [direction], plan, args, f"long {direction}")
        for r in part:
            r["config_id"] += len(facts)
        rows += part
        for case in cases:
            ours = next(r for r in part if r["backend"] == "ours" and r["causal"] == case.causal)
            out_lse = b * s * h * d * elem + b * h * s * 4
            # what the call must hand back: out + LSE, plus dq, dk, dv for fwd+bwd
            returned = out_lse + (3 * b * s * h * d * elem if direction == "fwdbwd" else 0)
            peak = ours["peak_mem_bytes"]
            facts.append({
                "direction": direction, "seqlen": s, "causal": case.causal, "dtype": dtype,
                "output_plus_lse_bytes": out_lse, "returned_bytes": returned,
                "ours_peak_over_returned": peak / returned if peak else None,
                "eager_scores_bytes": b * h * s * s * elem,
                "ours_peak_bytes": peak,
                "ours_peak_over_output_lse": peak / out_lse if peak else None,
                "ours_status": ours["status"],
            })
    return rows, facts


def _human_bytes(n: Optional[float]) -> str:
    if n is None:
        return "n.a."
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{int(n)} B"


def format_long(facts: Sequence[dict[str, Any]]) -> str:
    """Markdown table of the --long memory facts (console and results.md)."""
    lines = ["| direction | seqlen | causal | ours peak | output+LSE | peak/(out+LSE) | "
             "returned (out+LSE, +dq,dk,dv for fwdbwd) | peak/returned | "
             "eager (b,h,s,s) scores, one matrix in dtype (theory) |",
             "|---|---|---|---|---|---|---|---|---|"]

    def ratio(x: Optional[float]) -> str:
        return "n.a." if x is None else f"{x:.2f}"

    for f in facts:
        lines.append(f"| {f['direction']} | {f['seqlen']} | {'yes' if f['causal'] else 'no'} | "
                     f"{_human_bytes(f['ours_peak_bytes'])} | "
                     f"{_human_bytes(f['output_plus_lse_bytes'])} | "
                     f"{ratio(f['ours_peak_over_output_lse'])} | "
                     f"{_human_bytes(f['returned_bytes'])} | "
                     f"{ratio(f['ours_peak_over_returned'])} | "
                     f"{_human_bytes(f['eager_scores_bytes'])} |")
    return "\n".join(lines)


# -------------------------------------------------------------------------------------- main
def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point; returns the exit code (see module docstring)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.check_only and args.skip_check:
        parser.error("--check-only and --skip-check contradict each other")
    if args.preset in OLD_PRESET_NAMES:
        print(f"note: --preset {args.preset} is now called --preset "
              f"{OLD_PRESET_NAMES[args.preset]}", file=sys.stderr)
        args.preset = OLD_PRESET_NAMES[args.preset]
    decode_error = decode_mod.check_decode_flags(args)
    if decode_error:
        parser.error(decode_error)
    if args.decode or args.preset == "decode":
        try:
            device = pick_device(args.device)
        except ValueError as exc:
            parser.error(str(exc))
        return decode_mod.main_decode(args, parser, device, argv)
    try:
        device = pick_device(args.device)
        plan = resolve_plan(args, device)
        if args.long and device.type == "cpu" and args.long_seqlens is None:
            raise ValueError("--long on CPU needs explicit --long-seqlens FWD,FWDBWD "
                             "(131072/65536 would take hours)")
    except ValueError as exc:
        parser.error(str(exc))
    if args.threads and device.type == "cpu":
        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    header = collect_header(device, argv)
    print(format_header(header, {"timing": timing_method(device),
                                 "memory": memory_method(device)}), flush=True)
    os.makedirs(args.out, exist_ok=True)

    check_results: list[dict[str, Any]] = []
    if not args.skip_check:
        check_dims = sorted(set(plan.head_dims)) if not args.long else [LONG_DEFAULTS["head_dim"]]
        check_dtypes = plan.dtypes if not args.long else (
            args.dtypes or [LONG_DEFAULTS["dtype"] if device.type == "cuda" else "fp32"])[:1]
        configs = default_check_configs(check_dtypes, check_dims, args.window)
        print(f"\nself-check: ours vs float64 oracle, forward and backward "
              f"({len(configs)} configs, dense, no dropout; rel. Frobenius errors)", flush=True)
        check_results = run_check(configs, device, args.seed,
                                  perturb=0.05 if args.inject_check_failure else 0.0)
        if not report_self_check(check_results, format_check_row, header, args.out):
            return EXIT_CHECK_FAILED
        if args.check_only:
            return EXIT_OK

    backends = make_backends(plan, args)
    reference = backends_mod.REFERENCE_PEER[device.type]
    if args.long:
        rows, facts = run_long(args, plan, backends)
        directions = ["fwd", "fwdbwd"]
        notes = sweep_notes([], plan)
        notes.append("--long: eager is not run; its memory is given in theory (one (b,h,s,s) "
                     "matrix in the input dtype; fwd+bwd needs several)")
    else:
        try:
            cases = build_cases(dtypes=plan.dtypes, head_dims=plan.head_dims, seqlens=plan.seqlens,
                                causal_values=plan.causal_values, batch=plan.batch,
                                tokens=plan.tokens, heads=plan.heads, hidden=plan.hidden,
                                gqa=plan.gqa, window=args.window, dropout=args.dropout,
                                varlen=args.varlen, seed=args.seed)
        except ValueError as e:
            parser.error(str(e))
        directions = list(plan.directions)
        notes = sweep_notes(cases, plan)
        facts = []
        print(f"\nsweep: {len(cases)} cases x {len(directions)} directions x "
              f"{len(backends)} backends ({', '.join(b.name for b in backends)})", flush=True)
        rows = run_cases(cases, backends, directions, plan, args, "bench")

    fill_ratios(rows)
    summary = summarize(rows, directions, reference)
    print("\nnotes:\n" + "\n".join(f"  - {n}" for n in notes))
    print(format_tables(rows, directions))
    fails = failure_notes(rows)
    if fails:
        print("\nnot run (OOM / n.a. / ERR):\n" + "\n".join(f"  - {f}" for f in fails))
    if facts:
        print("\n--long memory:\n" + format_long(facts))
    print("\nsummary (TFLOP/s ratios, > 1 = ours faster):\n" + format_summary(summary))

    payload = {"header": header, "settings": {k: v for k, v in vars(args).items()},
               "plan": {"dtypes": plan.dtypes, "head_dims": plan.head_dims,
                        "seqlens": plan.seqlens, "causal": plan.causal_values,
                        "directions": directions, "peers": plan.peers,
                        "eager_max_bytes": plan.eager_max_bytes},
               "notes": notes, "check": check_results, "results": rows, "summary": summary}
    if facts:
        payload["long"] = facts
    written = [os.path.join(args.out, "results.json"), os.path.join(args.out, "results.csv")]
    write_json(written[0], payload)
    write_csv(written[1], rows)
    if not args.no_plots and not args.long:
        dev_label = (header["device_name"] if device.type == "cuda"
                     else f"CPU, {header.get('torch_threads')} threads")
        plots = write_plots(args.out, rows, directions, dev_label)
        if not plots:
            print("plots: matplotlib not available, no PNG written")
        written += plots
    if args.markdown or args.preset == "sweep" or args.long:
        md = markdown_results(header, notes, rows, directions, summary, check_results)
        if facts:
            md += "\n## --long memory\n\n" + format_long(facts) + "\n"
        written.append(os.path.join(args.out, "results.md"))
        with open(written[-1], "w") as f:
            f.write(md)
    print(f"\nwrote {', '.join(written)}")
    print(f"total time {time.perf_counter() - t_start:.1f} s")
    ours_errors = [r for r in rows if r["backend"] == "ours" and r["status"] == "ERR"]
    if ours_errors:
        print(f"\nours failed (ERR) on {len(ours_errors)} measurements; see the table",
              file=sys.stderr)
        return EXIT_OURS_FAILED
    return EXIT_OK

