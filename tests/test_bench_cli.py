"""Tests of the benchmark / self-check CLI ``python -m flash_attn_c.bench`` (CPU only, < 60 s).

Argument handling (--help, bad flags), a tiny CPU run that must write well-formed JSON, CSV and
PNG files, failing peers shown as n.a. / OOM instead of crashing, the self-check's failure exit,
and the helpers the numbers depend on (FLOP counting, the peers' explicit masks).
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import flash_attn_c
from flash_attn_c.bench import cli
from flash_attn_c.bench.backends import make_peer
from flash_attn_c.bench.cases import BenchCase, count_visible_pairs, make_inputs
from flash_attn_c.bench.report import ROW_FIELDS
from flash_attn_c.testing import attention_ref, visible_mask

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Run the CLI against the same flash_attn_c this test process imported.
PKG_PARENT = str(Path(flash_attn_c.__file__).resolve().parent.parent)


def run_cli(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = PKG_PARENT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "flash_attn_c.bench", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


# --------------------------------------------------------------------------- argument handling
def test_help_exits_zero_and_documents_flags(tmp_path: Path) -> None:
    proc = run_cli(["--help"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    for flag in ("--device", "--preset", "--long", "--directions", "--dtypes", "--head-dims",
                 "--seqlens", "--causal", "--varlen", "--gqa", "--window", "--dropout", "--peers",
                 "--out", "--skip-check"):
        assert flag in proc.stdout, flag


def test_unknown_flag_exits_nonzero_with_message(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--bogus-flag"])
    assert info.value.code == 2
    assert "unrecognized arguments: --bogus-flag" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--directions", "sideways"], "invalid choice(s) sideways"),
    (["--dtypes", "fp8"], "invalid choice(s) fp8"),
    (["--seqlens", "12x"], "not an integer"),
    (["--head-dims", "0"], "values must be >= 1"),
    (["--dropout", "1.5"], "dropout must be in [0, 1)"),
    (["--window", "3"], "window must be 'L,R'"),
    (["--window=-2,0"], "window must be 'L,R'"),
    (["--device", "cpu", "--head-dims", "300"], "head dims must be <= 256"),
    (["--device", "cpu", "--preset", "sweep"], "GPU sweep"),
    (["--device", "cpu", "--peers", "sdpa_flash"], "unknown peer(s) sdpa_flash"),
    (["--device", "cpu", "--long"], "--long on CPU needs explicit --long-seqlens"),
    (["--check-only", "--skip-check"], "contradict"),
    (["--device", "cpu", "--heads", "4", "--gqa", "1,3"], "--gqa: group size 3 does not divide the 4 heads"),
])
def test_bad_arguments_exit_2_with_message(argv: list[str], message: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("old, new", [("issue", "sweep"), ("default", "quick")])
def test_old_preset_names_still_work_with_a_note(old: str, new: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Older records and scripts say --preset issue / default: same preset, one-line note."""
    args = cli.build_parser().parse_args(["--preset", old])
    assert args.preset == old and cli.OLD_PRESET_NAMES[old] == new and new in cli.PRESETS
    with pytest.raises(SystemExit) as info:   # CPU --long without --long-seqlens: stops (2)
        cli.main(["--preset", old, "--device", "cpu", "--long"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"note: --preset {old} is now called --preset {new}" in err
    # the new name is what the run resolves: the GPU-only sweep refuses the CPU under its new name
    assert ("--preset sweep is a GPU sweep" in err) == (new == "sweep")


def test_console_script_entry_point_resolves() -> None:
    """pyproject's flash-attn-c-bench names flash_attn_c.bench:main."""
    import importlib
    text = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    line = next(x for x in text.splitlines() if x.startswith("flash-attn-c-bench"))
    module, func = line.split("=", 1)[1].strip().strip('"').split(":")
    assert getattr(importlib.import_module(module), func) is cli.main


# ----------------------------------------------------------------------------- a tiny CPU run
def test_repeated_list_values_run_once() -> None:
    """--directions fwd,fwd (or a repeated dtype, head dim, seqlen, GQA size, peer) times its rows
    once: the parsed lists keep the first occurrence of each value."""
    args = cli.build_parser().parse_args(["--directions", "fwd,bwd,fwd", "--seqlens", "1k,1024,2k",
                                          "--gqa", "2,2"])
    assert args.directions == ["fwd", "bwd"] and args.seqlens == [1024, 2048] and args.gqa == [2]


def test_tiny_cpu_run_writes_wellformed_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run_cli(["--device", "cpu", "--seqlens", "48", "--head-dims", "16",
                    "--directions", "fwd,bwd", "--causal", "both", "--tokens", "96",
                    "--hidden", "32", "--reps", "3", "--cpu-budget", "0.05",
                    "--inject-failing-peer", "raise", "--no-progress", "--skip-check",
                    "--out", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "self-check passed" not in proc.stdout  # --skip-check; the check is tested below
    assert "n.a." in proc.stdout and "summary" in proc.stdout

    data = json.loads((out / "results.json").read_text())
    assert data["header"]["device_type"] == "cpu"
    assert data["header"]["flash_attn_c"]  # version string, "unknown" at worst
    assert data["check"] == []
    rows = data["results"]
    # 2 cases (causal no/yes) x 2 directions x 4 backends (ours, sdpa, eager, test_raise)
    assert len(rows) == 16
    assert {r["backend"] for r in rows} == {"ours", "sdpa", "eager", "test_raise"}
    for r in rows:
        if r["backend"] == "test_raise":
            assert r["status"] == "n.a." and "injected failure" in r["reason"]
            assert r["ms"] is None
            continue
        assert r["status"] == "ok", r
        assert r["ms"] > 0 and r["tflops"] > 0
        assert r["batch"] == 2 and r["heads"] == 2 and r["seqlen"] == 48
        full = 4 * 2 * 2 * 48 * 48 * 16 * {"fwd": 1.0, "bwd": 2.5}[r["direction"]]
        assert r["flops"] == pytest.approx(full / 2 if r["causal"] else full)
        assert r["tflops"] == pytest.approx(r["flops"] / (r["ms"] * 1e-3) / 1e12)
    ours = [r for r in rows if r["backend"] == "ours"]
    assert all(r["ratio_to_best_peer"] is not None and r["ratio_to_best_peer"] > 0 for r in ours)
    assert set(data["summary"]["directions"]) == {"fwd", "bwd"}
    assert data["summary"]["reference_peer"] == "sdpa"

    with open(out / "results.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ROW_FIELDS
        csv_rows = list(reader)
    assert len(csv_rows) == len(rows)
    for cr, jr in zip(csv_rows, rows):
        assert cr["backend"] == jr["backend"] and cr["status"] == jr["status"]
        if jr["ms"] is not None:
            assert float(cr["ms"]) == pytest.approx(jr["ms"])
        else:
            assert cr["ms"] == ""

    for name in ("tflops_fwd.png", "tflops_bwd.png", "memory.png"):
        blob = (out / name).read_bytes()
        assert blob[:8] == PNG_SIGNATURE, name
        assert len(blob) > 2000, name
    assert not (out / "results.md").exists()  # only for --preset sweep / --long / --markdown


def test_oom_peer_is_reported_not_raised(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["--device", "cpu", "--skip-check", "--seqlens", "32", "--head-dims", "8",
                       "--directions", "fwd", "--causal", "no", "--peers", "none",
                       "--tokens", "32", "--hidden", "16", "--reps", "3", "--cpu-budget", "0.01",
                       "--no-memory", "--no-plots", "--no-progress", "--markdown",
                       "--inject-failing-peer", "oom", "--out", str(tmp_path)])
    assert code == 0
    rows = json.loads((tmp_path / "results.json").read_text())["results"]
    assert [(r["backend"], r["status"]) for r in rows] == [("ours", "ok"), ("test_oom", "OOM")]
    assert "OOM" in capsys.readouterr().out
    md = (tmp_path / "results.md").read_text()
    assert "test_oom" in md and "| OOM |" in md


def test_failed_self_check_stops_with_exit_1(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["--device", "cpu", "--check-only", "--head-dims", "8",
                       "--inject-check-failure", "--out", str(tmp_path)])
    assert code == cli.EXIT_CHECK_FAILED
    captured = capsys.readouterr()
    assert "SELF-CHECK FAILED" in captured.err
    check = json.loads((tmp_path / "check.json").read_text())["check"]
    assert check and not any(c["ok"] for c in check)
    assert not (tmp_path / "results.json").exists()


def test_self_check_passes_without_injection(tmp_path: Path) -> None:
    code = cli.main(["--device", "cpu", "--check-only", "--head-dims", "8",
                       "--out", str(tmp_path)])
    assert code == 0
    check = json.loads((tmp_path / "check.json").read_text())["check"]
    assert all(c["ok"] for c in check)
    assert all(c["fwd_err"] < c["fwd_tol"] and c["bwd_err"] < c["bwd_tol"] for c in check)


# ------------------------------------------------------------------- what the numbers rest on
@pytest.mark.parametrize("sq, sk, left, right", [
    (7, 7, -1, -1), (7, 7, -1, 0), (5, 9, -1, 0), (9, 5, -1, 0), (16, 16, 3, 0),
    (16, 16, 2, 5), (12, 20, 4, -1), (1, 1, 0, 0), (10, 3, 0, 0),
    (4, 4, -1, 2**63 - 1), (4, 6, 2**63 - 1, 0), (6, 4, 2**63 - 1, 2**63 - 1),  # overflowed the sums
])
def test_count_visible_pairs_matches_mask(sq: int, sk: int, left: int, right: int) -> None:
    assert count_visible_pairs(sq, sk, left, right) == int(visible_mask(sq, sk, (left, right)).sum())


def test_flops_convention() -> None:
    dense = BenchCase(batch=2, seqlen=64, heads=4, kv_heads=4, head_dim=32, causal=False,
                      dtype="fp32")
    assert dense.flops("fwd") == 4 * 2 * 4 * 64 * 64 * 32
    assert dense.flops("bwd") == 2.5 * dense.flops("fwd")
    assert dense.flops("fwdbwd") == 3.5 * dense.flops("fwd")
    causal = BenchCase(batch=2, seqlen=64, heads=4, kv_heads=4, head_dim=32, causal=True,
                       dtype="fp32")
    assert causal.flops("fwd") == dense.flops("fwd") / 2
    window = BenchCase(batch=2, seqlen=64, heads=4, kv_heads=4, head_dim=32, causal=True,
                       dtype="fp32", window=(8, -1))
    pairs = int(visible_mask(64, 64, (8, 0)).sum())
    assert window.flops("fwd") == 4 * 4 * 32 * 2 * pairs
    varlen = BenchCase(batch=2, seqlen=64, heads=4, kv_heads=4, head_dim=32, causal=True,
                       dtype="fp32", lengths=(64, 40))
    assert varlen.flops("fwd") == 4 * 4 * 32 * (64 * 65 // 2 + 40 * 41 // 2)


@pytest.mark.parametrize("peer", ["sdpa", "eager"])
def test_peers_compute_the_same_attention(peer: str) -> None:
    """Window + causal + GQA + varlen: the peers' explicit padded masks reproduce the oracle on
    every valid row, so timing them compares like with like."""
    case = BenchCase(batch=3, seqlen=24, heads=4, kv_heads=2, head_dim=8, causal=True,
                     dtype="fp32", window=(5, -1), lengths=(24, 13, 20))
    inputs = make_inputs(case, torch.device("cpu"), seed=3)
    prepared = make_peer(peer, "cpu", 2**30).prepare(case, inputs)
    with torch.no_grad(), prepared.context():
        out = prepared.forward().transpose(1, 2)  # (b, s, h, d)
    cu = inputs.cu_seqlens
    ref = attention_ref(inputs.q, inputs.k, inputs.v, causal=True, window=(5, -1),
                        softmax_scale=case.softmax_scale, cu_seqlens_q=cu, cu_seqlens_k=cu).out
    for bi, n in enumerate(case.seq_lengths()):
        c = int(cu[bi])
        torch.testing.assert_close(out[bi, :n].double(), ref[c:c + n], atol=1e-5, rtol=1e-5)


# -------------------------------------------------- GPU-only code paths, fed synthetic data
def _row(cid: int, backend: str, tflops: float | None, status: str = "ok",
         seqlen: int = 1024) -> dict:
    return {"config_id": cid, "direction": "fwd", "dtype": "bf16", "head_dim": 128,
            "seqlen": seqlen, "batch": 16384 // seqlen, "heads": 16, "kv_heads": 16,
            "causal": False, "window_left": -1, "window_right": -1, "varlen": False,
            "total_tokens": 16384, "dropout": 0.0, "flops": 1e12, "backend": backend,
            "status": status, "reason": "" if status == "ok" else "why",
            "ms": None if tflops is None else 1e3 / tflops, "tflops": tflops,
            "peak_mem_bytes": 2**20 if status == "ok" else None, "ratio_to_best_peer": None}


def test_summary_geomean_min_and_markdown_for_a_gpu_run(tmp_path: Path) -> None:
    from flash_attn_c.bench.report import (fill_ratios, format_summary, format_tables,
                                           markdown_results, summarize, write_plots)
    rows = [_row(0, "ours", 400.0), _row(0, "sdpa_flash", 200.0), _row(0, "sdpa_cudnn", 500.0),
            _row(0, "eager", None, "n.a."),
            _row(1, "ours", 100.0, seqlen=2048), _row(1, "sdpa_flash", 200.0, seqlen=2048),
            _row(1, "sdpa_cudnn", None, "OOM", seqlen=2048),
            _row(1, "eager", None, "n.a.", seqlen=2048)]
    fill_ratios(rows)
    assert rows[0]["ratio_to_best_peer"] == pytest.approx(400 / 500)
    assert rows[4]["ratio_to_best_peer"] == pytest.approx(100 / 200)
    summary = summarize(rows, ["fwd"], "sdpa_flash")
    fwd = summary["directions"]["fwd"]
    assert fwd["geomean_vs_reference"] == pytest.approx(1.0)   # sqrt(2.0 * 0.5)
    assert fwd["min_vs_reference"] == pytest.approx(0.5)
    assert "s=2048" in fwd["min_vs_reference_config"]
    assert fwd["geomean_vs_best_peer"] == pytest.approx((0.8 * 0.5) ** 0.5)
    assert "geomean ours/sdpa_flash = 1.000" in format_summary(summary)
    table = format_tables(rows, ["fwd"])
    assert "OOM" in table and "n.a." in table and "sdpa_cudnn" in table
    header = {"device_type": "cuda", "device_name": "NVIDIA H100", "compute_capability": "sm_90",
              "sm_count": 132, "torch": "2.11", "cuda": "13.0", "cudnn": "91900",
              "triton": "3.6", "flash_attn_c": "0.1.0", "git_commit": "unknown",
              "date_utc": "now", "command": "python -m flash_attn_c.bench --preset sweep"}
    md = markdown_results(header, ["a note"], rows, ["fwd"], summary, [])
    assert "NVIDIA H100" in md and "132 SMs" in md and "| 2.00x |" in md and "| 0.50x |" in md
    assert {Path(p).name for p in write_plots(str(tmp_path), rows, ["fwd"], "H100")} == {
        "tflops_fwd.png", "memory.png"}


def test_header_never_crashes_without_git(monkeypatch: pytest.MonkeyPatch) -> None:
    from flash_attn_c.bench import env

    def no_git(*args: object, **kwargs: object) -> None:
        raise FileNotFoundError("git")

    monkeypatch.setattr(env.subprocess, "run", no_git)
    monkeypatch.delenv("FLASH_ATTN_C_GIT_COMMIT", raising=False)
    info = env.collect_header(torch.device("cpu"))
    assert info["git_commit"] == "unknown"
    text = env.format_header(info)
    assert "git unknown" in text and "CPU" in text
    cuda_like = dict(info, device_type="cuda", device_name="NVIDIA H200", sm_count=132,
                     compute_capability="sm_90", device_memory_gib=139.8)
    assert "NVIDIA H200 (sm_90, 132 SMs, 139.8 GiB)" in env.format_header(cuda_like)


def test_header_commit_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A tree copied without a current .git (the lent GPU machine) names the commit it was given."""
    from flash_attn_c.bench import env

    monkeypatch.setenv("FLASH_ATTN_C_GIT_COMMIT", "5cfb00c")
    assert env._git_commit() == "5cfb00c (FLASH_ATTN_C_GIT_COMMIT)"
    monkeypatch.setenv("FLASH_ATTN_C_GIT_COMMIT", "  ")
    assert "FLASH_ATTN_C_GIT_COMMIT" not in env._git_commit()


def test_header_commit_only_from_a_checkout_of_the_package(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The package copied into another repository (a project whose .venv holds the install) must
    not report that repository's commit as flash_attn_c's."""
    import shutil
    import subprocess

    import flash_attn_c
    from flash_attn_c.bench import env

    monkeypatch.delenv("FLASH_ATTN_C_GIT_COMMIT", raising=False)
    repo = tmp_path / "project"
    pkg = repo / "site" / "flash_attn_c"
    pkg.mkdir(parents=True)
    shutil.copy(flash_attn_c.__file__, pkg / "__init__.py")
    (repo / "app.py").write_text("x = 1\n")
    git = ["git", "-C", str(repo), "-c", "user.email=a@b", "-c", "user.name=a"]
    subprocess.run(git[:3] + ["init", "-q"], check=True)
    subprocess.run(git + ["add", "app.py"], check=True)
    subprocess.run(git + ["commit", "-qm", "project"], check=True)
    monkeypatch.setattr(flash_attn_c, "__file__", str(pkg / "__init__.py"))
    assert env._git_commit() == "unknown"


def test_simple_progress_without_tqdm() -> None:
    import io

    from flash_attn_c.bench.progress import SimpleProgress
    stream = io.StringIO()
    bar = SimpleProgress(20, "bench", stream=stream)
    for _ in range(20):
        bar.set_postfix_str("ours fwd")
        bar.update(1)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert 1 <= len(lines) <= 11          # not a terminal: one line per 10% step
    assert "20/20" in lines[-1] and "100%" in lines[-1]


def test_plot_unit_follows_magnitude() -> None:
    """A CPU's 0.02 TFLOP/s is plotted as 20 GFLOP/s; a GPU's hundreds stay TFLOP/s."""
    from flash_attn_c.bench.report import throughput_unit
    assert throughput_unit([0.02, 0.5, None]) == ("GFLOP/s", 1000.0)
    assert throughput_unit([0.3, 612.0]) == ("TFLOP/s", 1.0)
    assert throughput_unit([]) == ("GFLOP/s", 1000.0)


def test_plots_name_the_dtype_unit_and_share_one_legend(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Titles say the dtype and the unit; one figure legend (readable size), none per panel."""
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from flash_attn_c.bench import report
    figures = []
    monkeypatch.setattr(plt.Figure, "savefig", lambda self, *a, **k: figures.append(self))
    rows = []
    for backend, tflops in (("ours", 0.03), ("sdpa", 0.02)):
        for s in (128, 1024):
            rows.append(dict(backend=backend, direction="fwd", head_dim=64, causal=False,
                             seqlen=s, dtype="bf16", heads=8, kv_heads=8, status="ok",
                             tflops=tflops, peak_mem_bytes=2 ** 20 * s))
    report.write_plots(str(tmp_path), rows, ["fwd"], "CPU, 2 threads")
    assert len(figures) == 2  # tflops_fwd, memory
    for fig in figures:
        title = fig._suptitle.get_text()
        assert "bf16" in title, title
        assert all(ax.get_legend() is None for ax in fig.axes)
        assert len(fig.legends) == 1 and fig.legends[0].get_texts()[0].get_fontsize() >= 9
    assert "GFLOP/s" in figures[0]._suptitle.get_text()
    assert [t.get_text() for t in figures[0].axes[0].get_xticklabels()] == ["128", "1k"]


@pytest.mark.parametrize("window,causal", [((-1, -1), False), ((5, 3), True)])
def test_peers_compute_what_ours_computes_on_varlen(window, causal) -> None:
    """The peers time padded varlen batches: their out / dq / dk / dv on the valid rows must be
    ours (a random dout on the padding query rows leaked into their dk / dv, by 2.5)."""
    from flash_attn_c.bench import backends as B
    from flash_attn_c.bench.cases import build_cases

    case = build_cases(dtypes=["fp32"], head_dims=[8], seqlens=[24], causal_values=[causal], batch=3,
                       tokens=0, heads=4, hidden=0, gqa=[2], window=window, dropout=0.0, varlen=True,
                       seed=1)[0]
    inp = make_inputs(case, torch.device("cpu"), 0)
    valid = torch.zeros(case.batch, case.seqlen, dtype=torch.bool)
    for bi, n in enumerate(case.seq_lengths()):
        valid[bi, :n] = True
    got = {}
    for bk in (B.ours_backend(), B.make_peer("eager", "cpu", 1 << 30)):
        p = bk.prepare(case, inp)
        with p.context():
            o = p.forward()
            gr = torch.autograd.grad(o, p.leaves, p.dout)
        if bk.name != "ours":  # (b, h, s, d) padded -> ours' packed rows
            o, gr = o.transpose(1, 2)[valid], tuple(x.transpose(1, 2)[valid] for x in gr)
        got[bk.name] = (o.detach(),) + tuple(gr)
    for name, a, b in zip(("out", "dq", "dk", "dv"), got["ours"], got["eager"]):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4, msg=lambda m: f"{name}: {m}")
