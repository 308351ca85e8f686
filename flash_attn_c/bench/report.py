"""Tables, summaries and files (JSON, CSV, PNG, markdown) of ``python -m flash_attn_c.bench``.

A result row is a flat dict (one per config x direction x backend); see ``ROW_FIELDS``.
``status`` is "ok", "OOM", "n.a." (peer failed or cannot express the case) or "ERR" (ours failed).
``ratio_to_best_peer`` = this backend's TFLOP/s / the best peer's TFLOP/s for the same config.
"""
from __future__ import annotations

import csv
import json
import math
import os
from typing import Any, Callable, Iterable, Optional, Sequence

from .cases import geometric_mean

ROW_FIELDS = [
    "config_id", "direction", "dtype", "head_dim", "seqlen", "batch", "heads", "kv_heads",
    "causal", "window_left", "window_right", "varlen", "total_tokens", "dropout", "flops",
    "backend", "status", "reason", "ms", "tflops", "peak_mem_bytes", "ratio_to_best_peer",
]
CONFIG_FIELDS = ["dtype", "head_dim", "seqlen", "batch", "heads", "kv_heads", "causal",
                 "window_left", "window_right", "varlen", "dropout"]
MIB = 2 ** 20


# ------------------------------------------------------------------------------------ helpers
def backends_in(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Backend names in first-seen order (ours first)."""
    names: list[str] = []
    for r in rows:
        if r["backend"] not in names:
            names.append(r["backend"])
    return names


def group_configs(rows: Sequence[dict[str, Any]]) -> dict[int, dict[str, dict[str, Any]]]:
    """config_id -> backend -> row (config_id identifies one case x direction)."""
    groups: dict[int, dict[str, dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["config_id"], {})[r["backend"]] = r
    return groups


def fill_ratios(rows: Sequence[dict[str, Any]], ours: str = "ours") -> None:
    """Set ``ratio_to_best_peer`` on every ok row whose config has at least one ok peer."""
    for group in group_configs(rows).values():
        peer_best = max((r["tflops"] for name, r in group.items()
                         if name != ours and r["status"] == "ok" and r["tflops"]), default=None)
        for r in group.values():
            ok = r["status"] == "ok" and r["tflops"] and peer_best
            r["ratio_to_best_peer"] = r["tflops"] / peer_best if ok else None


def fmt_sig(x: float, digits: int = 3) -> str:
    """``x`` with about ``digits`` significant digits, no exponent for 1e-4 <= x < 1e6."""
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    decimals = max(0, digits - 1 - int(math.floor(math.log10(abs(x)))))
    return f"{x:.{decimals}f}"


def _cell(r: Optional[dict[str, Any]], ok_text: Callable[[dict[str, Any]], str]) -> str:
    """A table cell: "-" without a row, the status (OOM, n.a., ERR) unless ok, else ok_text(r)."""
    if r is None:
        return "-"
    if r["status"] != "ok":
        return r["status"]
    return ok_text(r)


def _cell_time(r: Optional[dict[str, Any]]) -> str:
    return _cell(r, lambda r: f"{fmt_sig(r['ms'], 4)} / {fmt_sig(r['tflops'])}")


def _cell_mem(r: Optional[dict[str, Any]]) -> str:
    return _cell(r, lambda r: "n.a." if r["peak_mem_bytes"] is None
                 else f"{r['peak_mem_bytes'] / MIB:.1f}")


def _config_cells(r: dict[str, Any]) -> list[str]:
    cells = [r["dtype"], str(r["head_dim"]), "yes" if r["causal"] else "no", str(r["seqlen"]),
             str(r["batch"]), str(r["heads"])]
    return cells


def _extra_axes(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Config axes that vary or are non-default (shown as extra columns)."""
    extra = []
    if any(r["kv_heads"] != r["heads"] for r in rows):
        extra.append("kv_heads")
    if any(r["window_left"] != -1 or r["window_right"] != -1 for r in rows):
        extra.append("window")
    if any(r["varlen"] for r in rows):
        extra.append("total_tokens")
    if any(r["dropout"] for r in rows):
        extra.append("dropout")
    return extra


def _extra_cells(r: dict[str, Any], extra: Sequence[str]) -> list[str]:
    out = []
    for name in extra:
        if name == "window":
            out.append(f"{r['window_left']},{r['window_right']}")
        else:
            out.append(str(r[name]))
    return out


def _format_table(header: list[str], body: list[list[str]]) -> str:
    widths = [max(len(h), *(len(row[i]) for row in body)) if body else len(h)
              for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in body]
    return "\n".join(lines)


def _fmt_ratio(x: Optional[float]) -> str:
    return "n.a." if x is None else f"{x:.2f}x"


# ------------------------------------------------------------------------------------- tables
def format_tables(rows: Sequence[dict[str, Any]], directions: Sequence[str]) -> str:
    """Console tables: per direction, 'ms / TFLOP/s' per backend with best peer and ratio, then
    peak memory (MiB) per backend."""
    out: list[str] = []
    names = backends_in(rows)
    extra = _extra_axes(rows)
    for direction in directions:
        groups = [g for g in group_configs([r for r in rows if r["direction"] == direction])
                  .values()]
        if not groups:
            continue
        base_hdr = ["dtype", "d", "causal", "seqlen", "b", "h"] + extra
        body_t, body_m = [], []
        for g in groups:
            first = next(iter(g.values()))
            cfg = _config_cells(first) + _extra_cells(first, extra)
            peers_ok = [r for n, r in g.items() if n != "ours" and r["status"] == "ok"]
            best = max(peers_ok, key=lambda r: r["tflops"], default=None)
            ours = g.get("ours")
            ratio = ours.get("ratio_to_best_peer") if ours else None
            body_t.append(cfg + [_cell_time(g.get(n)) for n in names]
                          + [best["backend"] if best else "n.a.", _fmt_ratio(ratio)])
            body_m.append(cfg + [_cell_mem(g.get(n)) for n in names])
        out.append(f"\n== {direction}: time ms / TFLOP/s ==")
        out.append(_format_table(base_hdr + names + ["best peer", "ours/best"], body_t))
        out.append(f"\n== {direction}: peak memory MiB ==")
        out.append(_format_table(base_hdr + names, body_m))
    return "\n".join(out)


def failure_notes(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Distinct (backend, status, reason) of the rows that did not run, for the console/files."""
    seen: dict[tuple[str, str, str], int] = {}
    for r in rows:
        if r["status"] != "ok":
            key = (r["backend"], r["status"], r["reason"] or "")
            seen[key] = seen.get(key, 0) + 1
    return [f"{b}: {s} x{n}: {reason}" for (b, s, reason), n in seen.items()]


# ------------------------------------------------------------------------------------ summary
def summarize(rows: Sequence[dict[str, Any]], directions: Sequence[str],
              reference_peer: str) -> dict[str, Any]:
    """Per direction: geometric mean and minimum of ours / reference peer (TFLOP/s ratio, > 1 =
    ours faster) and geometric mean of ours / best peer."""
    summary: dict[str, Any] = {"reference_peer": reference_peer, "directions": {}}
    for direction in directions:
        groups = group_configs([r for r in rows if r["direction"] == direction]).values()
        vs_ref: list[tuple[float, dict[str, Any]]] = []
        vs_best: list[float] = []
        ours_ok = ours_total = 0
        for g in groups:
            ours = g.get("ours")
            if ours is None:
                continue
            ours_total += 1
            if ours["status"] != "ok":
                continue
            ours_ok += 1
            ref = g.get(reference_peer)
            if ref is not None and ref["status"] == "ok" and ref["tflops"]:
                vs_ref.append((ours["tflops"] / ref["tflops"], ours))
            if ours.get("ratio_to_best_peer"):
                vs_best.append(ours["ratio_to_best_peer"])
        entry: dict[str, Any] = {
            "configs": ours_total, "ours_ok": ours_ok, "compared_with_reference": len(vs_ref),
            "geomean_vs_reference": geometric_mean([x for x, _ in vs_ref]) if vs_ref else None,
            "geomean_vs_best_peer": geometric_mean(vs_best) if vs_best else None,
        }
        if vs_ref:
            worst, row = min(vs_ref, key=lambda t: t[0])
            entry["min_vs_reference"] = worst
            entry["min_vs_reference_config"] = config_label(row)
        summary["directions"][direction] = entry
    return summary


def config_label(r: dict[str, Any]) -> str:
    """Short config description of a row."""
    text = (f"{r['dtype']} d={r['head_dim']} s={r['seqlen']} b={r['batch']} h={r['heads']} "
            f"{'causal' if r['causal'] else 'full'}")
    if r["kv_heads"] != r["heads"]:
        text += f" hk={r['kv_heads']}"
    if r["window_left"] != -1 or r["window_right"] != -1:
        text += f" win={r['window_left']},{r['window_right']}"
    if r["varlen"]:
        text += " varlen"
    if r["dropout"]:
        text += f" drop={r['dropout']:g}"
    return text


def format_summary(summary: dict[str, Any]) -> str:
    """The summary lines printed after the tables (and put in results.md)."""
    ref = summary["reference_peer"]
    lines = []
    for direction, e in summary["directions"].items():
        if e["geomean_vs_reference"] is None:
            text = f"{direction:>6}: ours/{ref} n.a. (no config where both ran)"
        else:
            text = (f"{direction:>6}: geomean ours/{ref} = {e['geomean_vs_reference']:.3f} over "
                    f"{e['compared_with_reference']} configs, min {e['min_vs_reference']:.3f} "
                    f"({e['min_vs_reference_config']})")
        if e["geomean_vs_best_peer"] is not None:
            text += f"; geomean ours/best peer = {e['geomean_vs_best_peer']:.3f}"
        if e["ours_ok"] != e["configs"]:
            text += f"; ours failed on {e['configs'] - e['ours_ok']} of {e['configs']} configs"
        lines.append(text)
    return "\n".join(lines)


# -------------------------------------------------------------------------------------- files
def _json_safe(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def report_self_check(results: Sequence[dict[str, Any]], format_row: Callable[[dict[str, Any]], str],
                      header: dict[str, Any], out_dir: str, what: str = "configs") -> bool:
    """Prints the self-check rows, writes out_dir/check.json; on a failure prints the SELF-CHECK
    FAILED line (to stderr) and returns False. Shared by the sweep and the decode mode."""
    import sys  # noqa: PLC0415  (stderr only here)
    for r in results:
        print(format_row(r), flush=True)
    path = os.path.join(out_dir, "check.json")
    write_json(path, {"header": header, "check": list(results)})
    failed = [r for r in results if not r["ok"]]
    if failed:
        print(f"\nSELF-CHECK FAILED: {len(failed)} of {len(results)} {what} exceed their error "
              f"threshold (or raised); not benchmarking. Details above and in {path}",
              file=sys.stderr, flush=True)
        return False
    print("self-check passed", flush=True)
    return True


def header_md_lines(header: dict[str, Any], extra: Sequence[str] = ()) -> list[str]:
    """The device / software / command lines that open every results.md (extra lines appended)."""
    dev = (f"{header['device_name']} ({header.get('compute_capability', '')}, "
           f"{header.get('sm_count', '?')} SMs)" if header["device_type"] == "cuda"
           else f"CPU {header['cpu_model']}, {header.get('torch_threads')} threads")
    return [f"- device: {dev}",
            f"- torch {header['torch']}, CUDA {header['cuda']}, cuDNN {header['cudnn']}, "
            f"triton {header['triton']}",
            f"- flash_attn_c {header['flash_attn_c']}, git {header['git_commit']}",
            f"- date (UTC): {header['date_utc']}", f"- command: `{header['command']}`",
            *extra, ""]


def write_json(path: str, payload: dict[str, Any]) -> None:
    """Strict JSON (NaN/inf written as null)."""
    with open(path, "w") as f:
        json.dump(_json_safe(payload), f, indent=2, allow_nan=False)
        f.write("\n")


def write_csv(path: str, rows: Iterable[dict[str, Any]]) -> None:
    """One line per row, columns ``ROW_FIELDS``; empty cells for missing values."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=ROW_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in ROW_FIELDS})


def throughput_unit(tflops: Sequence[Optional[float]]) -> tuple[str, float]:
    """The axis unit for these TFLOP/s values and the factor that converts to it: GFLOP/s when
    the largest is below 1 TFLOP/s (a CPU: "0.02 TFLOP/s" reads badly), else TFLOP/s."""
    top = max((t for t in tflops if t is not None), default=0.0)
    return ("GFLOP/s", 1000.0) if top < 1.0 else ("TFLOP/s", 1.0)


def seqlen_axis(ax: Any, seqlens: Sequence[int]) -> None:
    """Log2 seqlen axis labelled with the measured lengths as 512, 2k, 16k (not 2^9)."""
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(seqlens))
    ax.set_xticklabels([f"{s // 1024}k" if s >= 1024 and s % 1024 == 0 else str(s) for s in seqlens])
    ax.minorticks_off()
    ax.set_xlabel("seqlen")


def figure_legend(fig: Any, axes: Any) -> None:
    """One legend for the whole figure, below the panels, in readable type: the panels share
    their lines, and per-panel legends in small type covered the data."""
    handles: dict[str, Any] = {}
    for ax in [a for row in axes for a in row]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    ncol = max(1, min(len(handles), int(fig.get_figwidth() / 2.2)))
    rows = (len(handles) + ncol - 1) // ncol
    bottom = 0.04 + 0.045 * rows * 3.4 / fig.get_figheight()
    fig.tight_layout(rect=(0, bottom, 1, 0.96))
    if handles:
        fig.legend(list(handles.values()), list(handles.keys()), loc="lower center", ncol=ncol,
                   fontsize=10, frameon=False)


def write_plots(out_dir: str, rows: Sequence[dict[str, Any]], directions: Sequence[str],
                device_label: str) -> list[str]:
    """PNG plots; returns the written paths ([] when matplotlib is missing).

    tflops_<dir>.png: TFLOP/s vs seqlen, a line per backend (and dtype/GQA/... variant), one
    panel per (head dim, causal). memory.png: peak memory vs seqlen, a row of panels per
    direction, one column per head dim, solid = non-causal, dashed = causal.
    """
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib import ticker
    except Exception:
        return []
    written: list[str] = []
    names = backends_in(rows)
    colors = {n: plt.get_cmap("tab10")(i % 10) for i, n in enumerate(names)}
    head_dims = sorted({r["head_dim"] for r in rows})
    causals = sorted({r["causal"] for r in rows})
    seqlens = sorted({r["seqlen"] for r in rows})

    def variant(r: dict[str, Any]) -> str:
        parts = [r["dtype"]]
        if r["kv_heads"] != r["heads"]:
            parts.append(f"g{r['heads'] // r['kv_heads']}")
        return " ".join(parts)

    variants = sorted({variant(r) for r in rows})
    dtypes = ", ".join(sorted({r["dtype"] for r in rows}))

    def series(sel: Sequence[dict[str, Any]], key: str) -> list[tuple[int, float]]:
        pts = sorted((r["seqlen"], r[key]) for r in sel if r["status"] == "ok"
                     and r.get(key) is not None)
        return pts

    def panels(n_rows: int) -> tuple[Any, Any]:
        """A figure with n_rows x (one column per head dim) panels."""
        return plt.subplots(n_rows, len(head_dims), squeeze=False,
                            figsize=(max(4.2 * len(head_dims), 6.6), 3.4 * n_rows))

    def save(fig: Any, axes: Any, title: str, name: str) -> None:
        fig.suptitle(title, fontsize=12)
        figure_legend(fig, axes)
        path = os.path.join(out_dir, name)
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)

    for direction in directions:
        drows = [r for r in rows if r["direction"] == direction]
        if not drows:
            continue
        unit, scale = throughput_unit([r.get("tflops") for r in drows if r["status"] == "ok"])
        fig, axes = panels(len(causals))
        for ci, causal in enumerate(causals):
            for di, d in enumerate(head_dims):
                ax = axes[ci][di]
                for name in names:
                    for vi, var in enumerate(variants):
                        sel = [r for r in drows if r["backend"] == name and r["head_dim"] == d
                               and r["causal"] == causal and variant(r) == var]
                        pts = series(sel, "tflops")
                        if not pts:
                            continue
                        label = name if len(variants) == 1 else f"{name} {var}"
                        ax.plot([p[0] for p in pts], [p[1] * scale for p in pts], marker="o",
                                color=colors[name], label=label,
                                linestyle=["-", "--", ":", "-."][vi % 4],
                                linewidth=2.4 if name == "ours" else 1.4)
                seqlen_axis(ax, seqlens)
                ax.set_title(f"d={d}, {'causal' if causal else 'non-causal'}", fontsize=10)
                ax.set_ylabel(unit)
                ax.set_ylim(bottom=0)
                ax.grid(True, alpha=0.3)
        save(fig, axes, f"{direction}: {unit} vs seqlen, {dtypes} ({device_label})",
             f"tflops_{direction}.png")

    mem_dirs = [d for d in directions if any(r["direction"] == d for r in rows)]
    if mem_dirs:
        fig, axes = panels(len(mem_dirs))
        for ri, direction in enumerate(mem_dirs):
            for di, d in enumerate(head_dims):
                ax = axes[ri][di]
                for name in names:
                    for causal in causals:
                        sel = [r for r in rows if r["direction"] == direction
                               and r["backend"] == name and r["head_dim"] == d
                               and r["causal"] == causal]
                        pts = [(s, m / MIB) for s, m in series(sel, "peak_mem_bytes") if m > 0]
                        if not pts:
                            continue
                        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o",
                                color=colors[name], linestyle="--" if causal else "-",
                                label=f"{name}{' causal' if causal else ''}")
                seqlen_axis(ax, seqlens)
                if ax.lines:
                    ax.set_yscale("log")
                    # plain numbers (4, 10, 60) instead of 4x10^0 on log axes
                    ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
                    ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
                    ax.yaxis.set_minor_formatter(ticker.NullFormatter())
                else:
                    ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center")
                ax.set_title(f"{direction}, d={d}", fontsize=10)
                ax.set_ylabel("peak extra memory (MiB)")
                ax.grid(True, alpha=0.3)
        save(fig, axes, f"peak memory vs seqlen, {dtypes} ({device_label})", "memory.png")
    return written


def markdown_results(header: dict[str, Any], notes: Sequence[str], rows: Sequence[dict[str, Any]],
                     directions: Sequence[str], summary: dict[str, Any],
                     check: Sequence[dict[str, Any]]) -> str:
    """results.md: header, notes, a TFLOP/s table per direction and the summary lines."""
    names = backends_in(rows)
    ref = summary["reference_peer"]
    lines = ["# flash_attn_c benchmark", ""] + header_md_lines(header)
    if check:
        n_ok = sum(1 for c in check if c.get("ok"))
        lines += [f"Self-check: {n_ok}/{len(check)} configs passed (fp64 oracle, fwd+bwd).", ""]
    lines += ["Notes:", ""] + [f"- {n}" for n in notes] + [""]
    lines += ["## Summary", "", "```", format_summary(summary), "```", ""]
    extra = _extra_axes(rows)
    for direction in directions:
        groups = list(group_configs([r for r in rows if r["direction"] == direction]).values())
        if not groups:
            continue
        lines += [f"## {direction} (TFLOP/s; ours/{ref} and ours/best peer)", ""]
        hdr = ["dtype", "d", "causal", "seqlen", "b", "h"] + extra + names + [
            f"ours/{ref}", "ours/best", "ours MiB"]
        lines.append("| " + " | ".join(hdr) + " |")
        lines.append("|" + "---|" * len(hdr))
        for g in groups:
            first = next(iter(g.values()))
            cells = _config_cells(first) + _extra_cells(first, extra)
            for n in names:
                r = g.get(n)
                cells.append("-" if r is None else (fmt_sig(r["tflops"]) if r["status"] == "ok"
                                                    else r["status"]))
            ours, peer = g.get("ours"), g.get(ref)
            ratio_ref = (ours["tflops"] / peer["tflops"] if ours and peer and ours["status"] == "ok"
                         and peer["status"] == "ok" and peer["tflops"] else None)
            cells.append(_fmt_ratio(ratio_ref))
            cells.append(_fmt_ratio(ours.get("ratio_to_best_peer") if ours else None))
            cells.append(_cell_mem(ours))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    fails = failure_notes(rows)
    if fails:
        lines += ["## Not run", ""] + [f"- {f}" for f in fails] + [""]
    return "\n".join(lines)
