"""Tests of the decode mode of ``python -m flash_attn_c.bench`` (``--decode``; CPU, < 20 s).

Argument handling (bad flags exit 2 naming the flag), the paged cache construction (logical
content equals the contiguous cache), the bytes / GB/s / ratio arithmetic, the summary and the
issue's targets, the float64 reference the checks rest on, and tiny CPU runs that must write
well-formed JSON, CSV, PNG and markdown, catch a wrong peer or a wrong ours, and stop on a failed
self-check. One GPU test runs a tiny grid on CUDA.
"""
from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path
from typing import Any, Optional

import pytest
import torch

from flash_attn_c.bench import cli, decode
from flash_attn_c.bench.decode import (DecodeCase, fill_rates, gather_paged, make_paged_cache,
                                       math_peer_bytes, merge_layouts, peer_unsupported,
                                       row_attention)
from flash_attn_c.bench.decode_report import (DECODE_ROW_FIELDS, decode_targets,
                                              format_decode_summary, format_decode_table,
                                              format_targets, summarize_decode)
from flash_attn_c.testing import attention_ref

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TINY = ["--decode", "--device", "cpu", "--decode-caches", "64,100", "--decode-batches", "2",
        "--decode-heads", "4/2", "--head-dims", "16", "--decode-pages", "16,32",
        "--reps", "3", "--cpu-budget", "0.005", "--decode-copy-gib", "0.004", "--no-progress"]


# --------------------------------------------------------------------------- argument handling
def test_help_documents_the_decode_flags() -> None:
    text = cli.build_parser().format_help()
    for flag in ("--decode", "--decode-batches", "--decode-caches", "--decode-heads",
                 "--decode-pages", "--decode-layouts", "--decode-q-tokens", "--decode-max-gib",
                 "--decode-copy-gib", "decode   the decode sweep"):
        assert flag in text, flag


@pytest.mark.parametrize("argv, flag, message", [
    (["--decode", "--decode-heads", "32/5"], "--decode-heads", "multiple of hk"),
    (["--decode", "--decode-heads", "32:8"], "--decode-heads", "h/hk pairs"),
    (["--decode", "--decode-pages", "0"], "--decode-pages", "must be >= 1"),
    (["--decode", "--decode-pages", "big"], "--decode-pages", "integers >= 1 or 'none'"),
    (["--decode", "--decode-q-tokens", "0"], "--decode-q-tokens", "must be >= 1"),
    (["--decode", "--decode-max-gib", "-1"], "--decode-max-gib", "must be > 0"),
    (["--decode", "--decode-layouts", "rows"], "--decode-layouts", "invalid choice(s) rows"),
    (["--decode", "--decode-caches", "1x"], "--decode-caches", "not an integer"),
    (["--decode", "--decode-batches", "0"], "--decode-batches", "values must be >= 1"),
    (["--decode-batches", "4"], "--decode-batches", "needs --decode"),
    (["--decode-q-tokens", "2", "--preset", "quick"], "--decode-q-tokens", "needs --decode"),
    (["--decode", "--seqlens", "1k"], "--seqlens", "does not apply to --decode"),
    (["--preset", "decode", "--long"], "--long", "does not apply to --decode"),
    (["--decode", "--preset", "sweep"], "--preset sweep", "training sweep"),
    (["--decode", "--device", "cpu", "--peers", "sdpa_flash"], "--peers",
     "unknown decode peer(s) sdpa_flash"),
    (["--decode", "--device", "cpu", "--decode-q-tokens", "5000"], "--decode-q-tokens",
     "exceeds the shortest cache"),
    (["--decode", "--device", "cpu", "--head-dims", "300"], "--head-dims", "<= 256"),
    (["--decode", "--device", "cpu", "--decode-max-gib", "1e-9"], "--decode-max-gib",
     "exceeds the memory budget"),
    (["--decode", "--device", "cpu", "--decode-generate", "-1"], "--decode-generate", ">= 0"),
])
def test_bad_decode_arguments_exit_2_naming_the_flag(argv: list[str], flag: str, message: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and message in err, err


def test_preset_decode_resolves_the_cpu_grid() -> None:
    args = cli.build_parser().parse_args(["--preset", "decode"])
    plan = decode.resolve_decode_plan(args, torch.device("cpu"))
    preset = decode.DECODE_PRESETS["cpu"]
    assert (plan.heads, plan.batches, plan.caches, plan.pages, plan.peers) == (
        preset["heads"], preset["batches"], preset["caches"], preset["pages"], preset["peers"])
    assert plan.q_tokens == 1 and plan.layouts == ["view", "contiguous"]
    args = cli.build_parser().parse_args(["--decode", "--decode-pages", "none",
                                          "--decode-heads", "8,8/2"])
    plan = decode.resolve_decode_plan(args, torch.device("cpu"))
    assert plan.pages == [] and plan.heads == [(8, 8), (8, 2)]


def test_cuda_preset_grid_and_memory_trim() -> None:
    """The standard sweep: 75 configs, the 24 GiB budget trims 10 (128k for b>16 with hk=8,
    b>4 with hk=32, and hk=32 at 32k for b>16 and at 16k for b>64)."""
    p = decode.DECODE_PRESETS["cuda"]
    plan = decode.DecodePlan(device=torch.device("cpu"), dtypes=p["dtypes"],
                             head_dims=p["head_dims"], heads=p["heads"], batches=p["batches"],
                             caches=p["caches"], pages=p["pages"], peers=p["peers"],
                             layouts=p["layouts"], q_tokens=1, max_bytes=int(24 * 2**30),
                             copy_bytes=2**30, timing=decode.TimingSettings())
    run, skipped = decode.build_decode_cases(plan)
    assert len(run) + len(skipped) == 75 and len(run) == 65
    assert all(c.kv_bytes > 24 * 2**30 for c in skipped)
    assert {(c.kv_heads, c.batch, c.cache_len) for c in skipped} == {
        (8, 64, 131072), (8, 128, 131072), (32, 16, 131072), (32, 64, 131072),
        (32, 128, 131072), (32, 64, 32768), (32, 128, 32768), (32, 128, 16384)}
    assert len([c for c in skipped if c.kv_heads == 8]) == 4  # 32/8 and 64/8


# ------------------------------------------------------------------------- what numbers rest on
def test_bytes_per_call() -> None:
    case = DecodeCase("bf16", 128, 32, 8, 16, 4096, 1)
    assert case.kv_bytes == 16 * 4096 * 8 * 128 * 2 * 2 == 256 * 2**20
    assert case.io_bytes == 2 * 16 * 1 * 32 * 128 * 2
    assert case.bytes_moved == case.kv_bytes + case.io_bytes
    spec = DecodeCase("fp32", 64, 4, 4, 3, 1000, 5)
    assert spec.kv_bytes == 3 * 1000 * 4 * 64 * 2 * 4 and spec.io_bytes == 2 * 3 * 5 * 4 * 64 * 4


def _row(cid: int, backend: str, ms: Optional[float], status: str = "ok",
         page: Optional[int] = None, **config: Any) -> dict[str, Any]:
    case = DecodeCase(**{**dict(dtype="bf16", head_dim=128, heads=32, kv_heads=8, batch=16,
                                cache_len=4096, q_tokens=1), **config})
    row = decode.base_row(case, backend, cid, page)
    row.update(status=status, ms=ms, check="ok" if status == "ok" else "")
    return row


def test_gbps_fraction_and_ratios() -> None:
    rows = [_row(0, "ours", 0.1), _row(0, "ours_page16", 0.125, page=16),
            _row(0, "sdpa_flash", 0.2), _row(0, "sdpa_cudnn", 0.15),
            _row(0, "sdpa_efficient", None, "n.a.")]
    fill_rates(rows, copy_gbps=3000.0)
    nbytes = rows[0]["bytes"]
    assert rows[0]["gbps"] == pytest.approx(nbytes / 1e-4 / 1e9)
    assert rows[0]["frac_copy"] == pytest.approx(rows[0]["gbps"] / 3000.0)
    assert rows[0]["ratio_to_best_sdpa"] == pytest.approx(0.15 / 0.1)       # vs cuDNN, the best
    assert rows[1]["ratio_to_best_sdpa"] == pytest.approx(0.15 / 0.125)
    assert rows[1]["ratio_to_contiguous"] == pytest.approx(0.1 / 0.125)
    assert rows[0]["ratio_to_contiguous"] is None
    assert rows[2]["ratio_to_best_sdpa"] is None and rows[4]["gbps"] is None


def test_summary_and_targets_judge_the_issue_numbers() -> None:
    big = dict(batch=64, cache_len=4096)  # 1 GiB of K+V
    rows = []
    for cid, (cfg, ours_ms, p16_ms, p256_ms, peer_ms) in enumerate([
            (big, 1.0, 1.05, 1.02, 1.5), (dict(batch=1, cache_len=1024), 0.01, 0.0105, 0.0115,
                                           0.0125)]):
        rows += [_row(cid, "ours", ours_ms, **cfg), _row(cid, "ours_page16", p16_ms, page=16, **cfg),
                 _row(cid, "ours_page256", p256_ms, page=256, **cfg),
                 _row(cid, "sdpa_flash", peer_ms, **cfg)]
    nbytes = rows[0]["bytes"]
    copy = nbytes / 1e-3 / 1e9 / 0.9  # ours on the big config reaches exactly 90% of it
    fill_rates(rows, copy)
    summary = summarize_decode(rows, copy)
    ours = summary["variants"]["ours"]
    assert ours["vs_best_sdpa"]["geomean"] == pytest.approx((1.5 * 1.25) ** 0.5)
    assert ours["vs_best_sdpa"]["min"] == pytest.approx(1.25)
    assert ours["frac_copy_large"]["n"] == 1
    assert ours["frac_copy_large"]["min"] == pytest.approx(0.9)
    assert summary["variants"]["ours_page256"]["vs_contiguous"]["min"] == pytest.approx(0.01 / 0.0115)
    targets = {t["target"].split(":")[0]: t for t in decode_targets(rows, summary)}
    verdicts = [t["pass"] for t in targets.values()]
    assert verdicts == [True, True, True, True, False]   # page 256 reaches 0.87 < 0.90
    assert targets["paged (page 256) / contiguous GB/s (min)"]["value"] == pytest.approx(0.01 / 0.0115)
    text = format_targets(decode_targets(rows, summary))
    assert text.count("PASS") == 4 and "FAIL" in text and "worst" in text
    assert "geomean ours/best SDPA = 1.369" in format_decode_summary(summary)
    table = format_decode_table(rows)
    assert "page256/contig" in table and "90.0%" in table


def test_targets_without_matching_configs_are_not_judged() -> None:
    rows = [_row(0, "ours", 0.1, dtype="fp16"), _row(0, "sdpa_flash", None, "n.a.", dtype="fp16")]
    fill_rates(rows, 100.0)
    targets = decode_targets(rows, summarize_decode(rows, 100.0))
    assert [t["pass"] for t in targets] == [None] * 5
    assert "no config in this run" in format_targets(targets)


@pytest.mark.parametrize("s, page", [(64, 16), (100, 16), (100, 32), (37, 64), (5, 1)])
def test_paged_cache_holds_the_contiguous_content(s: int, page: int) -> None:
    b, hk, d = 3, 2, 8
    k, v = torch.randn(b, s, hk, d), torch.randn(b, s, hk, d)
    kp, vp, bt = make_paged_cache(k, v, page, seed=7)
    nb = -(-s // page)
    assert bt.dtype == torch.int32 and tuple(bt.shape) == (b, nb)
    assert tuple(kp.shape) == tuple(vp.shape) == (b * nb, page, hk, d)
    assert sorted(bt.flatten().tolist()) == list(range(b * nb))  # a permutation of the blocks
    if b * nb > 8:
        assert bt.flatten().tolist() != list(range(b * nb))    # shuffled, not the identity
    assert torch.equal(gather_paged(kp, bt, s), k) and torch.equal(gather_paged(vp, bt, s), v)
    for i in range(b):                                            # the documented indexing rule
        for t in (0, s // 2, s - 1):
            assert torch.equal(kp[bt[i, t // page], t % page], k[i, t])
    assert bool(torch.isfinite(kp).all()) and (kp != 0).any(dim=-1).all()  # tails: random


def test_paged_and_contiguous_give_ours_the_same_answer() -> None:
    case = DecodeCase("fp32", 16, 4, 2, 2, 100, 1)
    inputs = decode.make_decode_inputs(case, torch.device("cpu"), seed=1)
    out = decode.ours_fn(inputs, None)()
    paged = make_paged_cache(inputs.k_cache, inputs.v_cache, 32, seed=2)
    torch.testing.assert_close(decode.ours_fn(inputs, paged)(), out, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("n, length, h, hk", [(1, 50, 4, 2), (3, 50, 4, 4), (4, 37, 6, 2),
                                              (3, 2, 2, 1)])
def test_row_reference_matches_the_library_oracle(n: int, length: int, h: int, hk: int) -> None:
    """The per-row float64 reference (bottom-right causal, GQA by head loop, a query that sees
    no key gives 0) equals flash_attn_c.testing.attention_ref on the first ``length`` keys."""
    q = torch.randn(n, h, 8, dtype=torch.float64)
    k, v = torch.randn(60, hk, 8, dtype=torch.float64), torch.randn(60, hk, 8, dtype=torch.float64)
    got = row_attention(q, k, v, length, 0.3)
    want = attention_ref(q[None], k[None, :length], v[None, :length], causal=True,
                         softmax_scale=0.3).out[0]
    torch.testing.assert_close(got, want.double(), atol=1e-12, rtol=1e-12)
    low = row_attention(q.float(), k.float(), v.float(), length, 0.3, exact=False)
    assert low.dtype == torch.float32 and decode.rel_err(low, want) < 1e-5


def test_check_output_flags_a_wrong_output() -> None:
    out = torch.randn(2, 1, 4, 8)
    refs = {0: out[0].double(), 1: out[1].double()}
    row: dict[str, Any] = {}
    decode.check_output(row, out.clone(), refs, out, 1e-4)
    assert row["check"] == "ok" and row["err_vs_ref"] == 0 and row["err_vs_ours"] == 0
    decode.check_output(row, out * 1.01, refs, out, 1e-4)
    assert row["check"] == "mismatch" and row["err_vs_ref"] == pytest.approx(0.01, rel=1e-4)
    bad = out.clone()
    bad[0, 0, 0, 0] = float("nan")
    decode.check_output(row, bad, refs, None, 1e-4)
    assert row["check"] == "mismatch" and row["err_vs_ours"] is None


def test_merge_layouts_keeps_the_faster_and_explains_failures() -> None:
    ok_view = {"status": "ok", "ms": 2.0, "check": "ok", "err_vs_ref": 1e-3, "err_vs_ours": 2e-3}
    ok_contig = dict(ok_view, ms=1.0, err_vs_ref=5e-4)
    row = _row(0, "sdpa_cudnn", None, "n.a.")
    merge_layouts(row, {"view": ok_view, "contiguous": ok_contig})
    assert (row["status"], row["layout"], row["ms"], row["ms_view"], row["ms_contiguous"],
            row["err_vs_ref"]) == ("ok", "contiguous", 1.0, 2.0, 1.0, 5e-4)
    row = _row(0, "sdpa_cudnn", None, "n.a.")
    merge_layouts(row, {"view": {"status": "n.a.", "reason": "strides"}, "contiguous": ok_contig})
    assert row["layout"] == "contiguous" and row["reason"] == "view: strides"
    row = _row(0, "sdpa_cudnn", None, "n.a.")
    merge_layouts(row, {"view": dict(ok_view, check="mismatch", err_vs_ref=0.5),
                        "contiguous": ok_contig})
    assert row["layout"] == "contiguous" and row["check"] == "mismatch"
    assert row["reason"] == "view: mismatch (rel. error vs oracle 5.00e-01)"
    row = _row(0, "sdpa_efficient", None)
    merge_layouts(row, {"view": {"status": "n.a.", "reason": "no gqa"},
                        "contiguous": {"status": "n.a.", "reason": "no gqa"}})
    assert row["status"] == "n.a." and row["reason"] == "no gqa" and row["ms"] is None
    merge_layouts(row, {"view": {"status": "OOM", "reason": "a"},
                        "contiguous": {"status": "OOM", "reason": "b"}})
    assert row["status"] == "OOM" and row["reason"] == "view: a; contiguous: b"


def test_peer_context_forces_one_sdpa_backend() -> None:
    """The backend restriction is held around the check call and the whole timing (entered
    once, not per call)."""
    cuda = torch.backends.cuda
    before = (cuda.math_sdp_enabled(), cuda.flash_sdp_enabled())
    with decode.peer_context("sdpa_math"):
        assert cuda.math_sdp_enabled() and not cuda.flash_sdp_enabled()
        assert not cuda.mem_efficient_sdp_enabled() and not cuda.cudnn_sdp_enabled()
    with decode.peer_context("sdpa_efficient"):
        assert cuda.mem_efficient_sdp_enabled() and not cuda.math_sdp_enabled()
    assert (cuda.math_sdp_enabled(), cuda.flash_sdp_enabled()) == before
    for name in ("ours", "ours_page16", "sdpa", "test_raise"):   # no restriction
        with decode.peer_context(name):
            assert (cuda.math_sdp_enabled(), cuda.flash_sdp_enabled()) == before


def test_refusal_reason_carries_torch_warnings() -> None:
    def refuse() -> torch.Tensor:
        warnings.warn("Flash attention requires q, k, v to have the same number of heads")
        raise RuntimeError("No available kernel. Aborting execution.")

    with pytest.raises(RuntimeError, match="No available kernel.*same number of heads"):
        decode.first_call_with_reason(refuse)


# ----------------------------------------------------------------------------- tiny CPU runs
def test_tiny_cpu_decode_run_writes_wellformed_files(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(TINY + ["--inject-failing-peer", "raise", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "self-check passed" in out and "copy bandwidth:" in out and "targets (issue)" in out
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["mode"] == "decode" and data["header"]["device_type"] == "cpu"
    assert all(c["ok"] for c in data["check"]) and len(data["check"]) == 3  # contiguous, 16, 32
    copy = data["copy_bandwidth"]
    assert copy["gbps"] == pytest.approx(copy["bytes"] / (copy["ms"] * 1e-3) / 1e9)
    rows = data["results"]
    names = ["ours", "ours_page16", "ours_page32", "sdpa", "sdpa_math", "test_raise"]
    assert [r["backend"] for r in rows] == names * 2
    for r in rows:
        assert r["batch"] == 2 and r["heads"] == 4 and r["kv_heads"] == 2 and r["q_tokens"] == 1
        assert r["bytes"] == 2 * r["cache_len"] * 2 * 16 * 2 * 4 + 2 * 2 * 1 * 4 * 16 * 4
        if r["backend"] == "test_raise":
            assert r["status"] == "n.a." and "injected failure" in r["reason"]
            assert r["gbps"] is None and r["ms_view"] is None
            continue
        assert r["status"] == "ok" and r["check"] == "ok", r
        assert r["err_vs_ref"] < 2e-5
        assert r["gbps"] == pytest.approx(r["bytes"] / (r["ms"] * 1e-3) / 1e9)
        assert r["frac_copy"] == pytest.approx(r["gbps"] / copy["gbps"])
        if r["backend"].startswith("sdpa"):
            assert r["layout"] in ("view", "contiguous") and r["ms_view"] and r["ms_contiguous"]
            assert r["ms"] == min(r["ms_view"], r["ms_contiguous"])
            assert r["err_vs_ours"] < 4e-5
        else:
            assert r["ratio_to_best_sdpa"] > 0
        if r["backend"].startswith("ours_page"):
            assert r["page_size"] == int(r["backend"][9:]) and r["ratio_to_contiguous"] > 0
    assert set(data["summary"]["variants"]) == {"ours", "ours_page16", "ours_page32"}
    assert len(data["targets"]) == 5

    with open(tmp_path / "results.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == DECODE_ROW_FIELDS
        csv_rows = list(reader)
    assert [c["backend"] for c in csv_rows] == [r["backend"] for r in rows]
    for c, r in zip(csv_rows, rows):
        assert (c["gbps"] == "") == (r["gbps"] is None)
        if r["gbps"] is not None:
            assert float(c["gbps"]) == pytest.approx(r["gbps"])
    blob = (tmp_path / "decode_gbps.png").read_bytes()
    assert blob[:8] == PNG_SIGNATURE and len(blob) > 5000
    md = (tmp_path / "results.md").read_text()
    for text in ("geomean ours/best SDPA", "## Targets", "K+V >= 256 MiB", "test_raise",
                 "paged/contiguous", "| ours GB/s |"):
        assert text in md, text


def test_generate_timing_beside_sdpa(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--decode-generate N: a tiny Llama's greedy generate() with flash_attn_c and with sdpa
    (fp32 on CPU: the tokens must be equal), timed, in the JSON and in results.md."""
    pytest.importorskip("transformers")
    code = cli.main(TINY + ["--decode-generate", "4", "--decode-pages", "16", "--skip-check",
                            "--no-plots", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    gen = json.loads((tmp_path / "results.json").read_text())["generate"]
    assert gen["error"] is None, gen
    assert [r["backend"] for r in gen["rows"]] == ["sdpa", "ours"]
    for r in gen["rows"]:
        assert r["ms"] > 0 and r["tokens_per_s"] == pytest.approx(
            gen["model"]["batch"] * 4 / (r["ms"] * 1e-3))
        assert r["tokens_equal_sdpa"] and r["first_difference"] is None
    assert "generate(): Llama" in out and "tokens equal sdpa's" in out
    assert "## generate()" in (tmp_path / "results.md").read_text()


def test_speculative_tokens_use_the_bottom_right_mask(tmp_path: Path) -> None:
    """n = 3 query tokens: the peers' explicit bottom-right mask and ours agree with the oracle
    (a top-left causal mask would fail the per-config check)."""
    code = cli.main(TINY + ["--decode-q-tokens", "3", "--decode-pages", "16",
                            "--decode-layouts", "view", "--skip-check", "--no-plots",
                            "--out", str(tmp_path)])
    assert code == 0
    rows = json.loads((tmp_path / "results.json").read_text())["results"]
    assert {r["backend"] for r in rows} == {"ours", "ours_page16", "sdpa", "sdpa_math"}
    assert all(r["status"] == "ok" and r["check"] == "ok" and r["q_tokens"] == 3 for r in rows)


def test_a_wrong_peer_is_flagged_and_a_wrong_ours_fails(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    real_peer, real_ours = decode.peer_fn, decode.ours_fn

    def scaled_peer(name: str, case: DecodeCase, q: torch.Tensor, k: torch.Tensor,
                      v: torch.Tensor) -> Any:
        fn = real_peer(name, case, q, k, v)
        return (lambda: fn() * 1.05) if name == "sdpa_math" else fn

    monkeypatch.setattr(decode, "peer_fn", scaled_peer)
    argv = TINY + ["--decode-caches", "64", "--decode-pages", "none", "--no-plots",
                   "--skip-check"]
    assert cli.main(argv + ["--out", str(tmp_path / "a")]) == 0  # a peer's fault: flagged only
    out = capsys.readouterr().out
    assert "MISMATCH on" in out and "sdpa_math" in out
    rows = json.loads((tmp_path / "a" / "results.json").read_text())["results"]
    checks = {r["backend"]: r["check"] for r in rows}
    assert checks == {"ours": "ok", "sdpa": "ok", "sdpa_math": "mismatch"}

    monkeypatch.setattr(decode, "peer_fn", real_peer)

    def wrong_ours(inputs: Any, paged: Any) -> Any:
        fn = real_ours(inputs, paged)
        return lambda: fn() * 1.05

    monkeypatch.setattr(decode, "ours_fn", wrong_ours)
    assert cli.main(argv + ["--out", str(tmp_path / "b")]) == cli.EXIT_OURS_FAILED
    assert "mismatched the oracle" in capsys.readouterr().err


def test_failed_decode_self_check_stops_with_exit_1(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(TINY + ["--check-only", "--inject-check-failure", "--out", str(tmp_path)])
    assert code == cli.EXIT_CHECK_FAILED
    assert "SELF-CHECK FAILED" in capsys.readouterr().err
    check = json.loads((tmp_path / "check.json").read_text())["check"]
    assert check and not any(c["ok"] for c in check)
    assert not (tmp_path / "results.json").exists()
    assert cli.main(TINY + ["--check-only", "--out", str(tmp_path)]) == 0


def test_oom_peer_is_reported_not_raised(tmp_path: Path) -> None:
    code = cli.main(TINY + ["--decode-caches", "64", "--decode-pages", "none", "--peers", "none",
                            "--inject-failing-peer", "oom", "--skip-check", "--no-plots",
                            "--out", str(tmp_path)])
    assert code == 0
    rows = json.loads((tmp_path / "results.json").read_text())["results"]
    assert [(r["backend"], r["status"]) for r in rows] == [("ours", "ok"), ("test_oom", "OOM")]


# ------------------------------------------------------------------------------------ GPU
@pytest.mark.gpu
def test_tiny_cuda_decode_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """bf16 on the GPU: every ours variant checks ok; each SDPA peer runs (and checks ok) or is
    n.a. with a reason; at h/hk = 8/8 (no GQA) FLASH and CUDNN must run, so ours has a ratio to
    the best SDPA backend there."""
    code = cli.main(["--decode", "--device", "cuda", "--decode-caches", "1k,4k",
                     "--decode-batches", "1,8", "--decode-heads", "32/8,8/8",
                     "--decode-pages", "16,256", "--cuda-rep-ms", "10", "--no-progress",
                     "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out[-4000:]
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["copy_bandwidth"]["gbps"] > 100
    for r in data["results"]:
        if r["backend"].startswith("ours"):
            assert r["status"] == "ok" and r["check"] == "ok", r
        elif r["status"] == "ok":
            assert r["check"] == "ok", r
        else:
            assert r["reason"], r
    mha = [r for r in data["results"] if r["heads"] == r["kv_heads"] == 8]
    for r in mha:
        if r["backend"] in ("sdpa_flash", "sdpa_cudnn"):
            assert r["status"] == "ok" and r["check"] == "ok", r
        if r["backend"] == "ours":
            assert r["ratio_to_best_sdpa"], r
    assert (tmp_path / "decode_gbps.png").exists() and (tmp_path / "results.md").exists()


def test_plot_has_one_legend_ending_with_the_copy_line(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """GB/s vs cache length, a panel per (head config, batch), the copy bandwidth as a
    horizontal line, one figure legend (readable size) whose last entry is the copy line."""
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from flash_attn_c.bench.decode_report import write_decode_plot
    figures = []
    monkeypatch.setattr(plt.Figure, "savefig", lambda self, *a, **k: figures.append(self))
    rows = []
    for cid, (b, s, hk) in enumerate([(1, 1024, 8), (1, 4096, 8), (4, 1024, 8), (1, 1024, 32)]):
        rows += [_row(cid, "ours", 0.05, batch=b, cache_len=s, kv_heads=hk),
                 _row(cid, "sdpa_flash", 0.08, batch=b, cache_len=s, kv_heads=hk)]
    fill_rates(rows, 2500.0)
    assert Path(write_decode_plot(str(tmp_path), rows, 2500.0, "H100")).name == "decode_gbps.png"
    fig = figures[0]
    assert len(fig.axes) == 4                        # 2 head configs x 2 batches
    assert "bf16" in fig._suptitle.get_text() and "H100" in fig._suptitle.get_text()
    assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert texts == ["ours", "sdpa_flash", "device copy (2500 GB/s, read + write)"]
    assert fig.legends[0].get_texts()[0].get_fontsize() >= 9
    assert all(any(line.get_ydata()[0] == 2500.0 for line in ax.lines) for ax in fig.axes)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["1k", "4k"]


def test_math_peer_that_would_not_fit_is_not_tried() -> None:
    """SDPA MATH expands K/V to h heads in fp32: a config where that exceeds free memory is n.a.
    with the numbers (its OOM slowed the next config's first timing on the GPU, runs 22-24);
    other peers, and MATH where it fits or with no memory figure (CPU), are tried."""
    case = DecodeCase("bf16", 128, 32, 8, 64, 32768, 1)
    need = math_peer_bytes(case)
    assert need == 2 * 64 * 32 * 32768 * 128 * 4 + 3 * 64 * 32 * 32768 * 4
    reason = peer_unsupported("sdpa_math", case, free_bytes=need)
    assert reason is not None and "SDPA MATH would need about 64.8 GiB" in reason
    assert peer_unsupported("sdpa_math", case, free_bytes=2 * need) is None
    assert peer_unsupported("sdpa_math", case, free_bytes=None) is None
    assert peer_unsupported("sdpa_cudnn", case, free_bytes=1) is None
