"""Tables, summary, targets and files (CSV, PNG, markdown) of the decode mode.

A decode row is a flat dict, one per config x backend (see ``DECODE_ROW_FIELDS``). Backends:
"ours" (contiguous cache), "ours_page<P>" (paged cache, pages of P tokens) and the SDPA peers.
``status``: "ok", "OOM", "n.a." (a peer refused or failed) or "ERR" (ours failed); ``check``:
"ok" or "mismatch" (see :func:`flash_attn_c.bench.decode.check_output`).
"""
from __future__ import annotations

import csv
import math
import os
import statistics
from typing import Any, Optional, Sequence

from .decode import LARGE_CACHE_BYTES
from .report import _format_table, figure_legend, fmt_sig, header_md_lines

DECODE_ROW_FIELDS = [
    "config_id", "dtype", "head_dim", "heads", "kv_heads", "batch", "cache_len", "q_tokens",
    "kv_bytes", "bytes", "backend", "page_size", "layout", "status", "reason", "check",
    "err_vs_ref", "err_vs_ours", "ms", "gbps", "frac_copy", "ratio_to_best_sdpa",
    "ratio_to_contiguous", "ms_view", "ms_contiguous",
]
MIB = 2 ** 20
# The done-when numbers.
TARGET_COPY_FRACTION = 0.85
TARGET_GEOMEAN_VS_SDPA = 1.25
TARGET_MIN_VS_SDPA = 1.0
TARGET_PAGED_VS_CONTIGUOUS = 0.90
TARGET_PAGES = (16, 256)


# ------------------------------------------------------------------------------------ helpers
def geometric_mean_or_none(values: Sequence[Optional[float]]) -> Optional[float]:
    """Geometric mean of the positive finite values, None when there are none."""
    vals = [v for v in values if v is not None and v > 0 and math.isfinite(v)]
    if not vals:
        return None
    return math.exp(sum(math.log(v) for v in vals) / len(vals))


def decode_label(r: dict[str, Any]) -> str:
    """Short config description of a row, e.g. ``bf16 d=128 h=32 hk=8 n=1 b=16 s=4096``."""
    return (f"{r['dtype']} d={r['head_dim']} h={r['heads']} hk={r['kv_heads']} n={r['q_tokens']} "
            f"b={r['batch']} s={r['cache_len']}")


def backend_order(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Backend names in first-seen order (ours variants first, as the sweep adds them)."""
    names: list[str] = []
    for r in rows:
        if r["backend"] not in names:
            names.append(r["backend"])
    return names


def configs(rows: Sequence[dict[str, Any]]) -> list[dict[str, dict[str, Any]]]:
    """Rows grouped by config_id (in order): backend -> row."""
    groups: dict[int, dict[str, dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["config_id"], {})[r["backend"]] = r
    return list(groups.values())


def is_ours(name: str) -> bool:
    return name.startswith("ours")


def _stats(pairs: Sequence[tuple[float, dict[str, Any]]]) -> dict[str, Any]:
    """n, geomean, min (and its config), median, max of (value, row) pairs."""
    if not pairs:
        return {"n": 0, "geomean": None, "min": None, "min_config": None, "median": None,
                "max": None}
    worst, row = min(pairs, key=lambda p: p[0])
    vals = [v for v, _ in pairs]
    return {"n": len(vals), "geomean": geometric_mean_or_none(vals), "min": worst,
            "min_config": decode_label(row), "median": statistics.median(vals),
            "max": max(vals)}


# ------------------------------------------------------------------------------------ summary
def summarize_decode(rows: Sequence[dict[str, Any]], copy_gbps: Optional[float]
                     ) -> dict[str, Any]:
    """Per ours variant: ours / best SDPA (GB/s ratio), fraction of the copy bandwidth over the
    caches of at least 256 MiB (K+V), and for paged variants paged / contiguous."""
    summary: dict[str, Any] = {"copy_gbps": copy_gbps, "large_cache_bytes": LARGE_CACHE_BYTES,
                               "variants": {}}
    for name in [n for n in backend_order(rows) if is_ours(n)]:
        mine = [r for r in rows if r["backend"] == name]
        ok = [r for r in mine if r["status"] == "ok"]
        entry = {
            "configs": len(mine), "ok": len(ok),
            "mismatches": sum(1 for r in mine if r["check"] == "mismatch"),
            "vs_best_sdpa": _stats([(r["ratio_to_best_sdpa"], r) for r in ok
                                    if r["ratio_to_best_sdpa"]]),
            "frac_copy_large": _stats([(r["frac_copy"], r) for r in ok if r["frac_copy"]
                                       and r["kv_bytes"] >= LARGE_CACHE_BYTES]),
        }
        if name != "ours":
            entry["vs_contiguous"] = _stats([(r["ratio_to_contiguous"], r) for r in ok
                                             if r["ratio_to_contiguous"]])
        summary["variants"][name] = entry
    summary["peer_mismatches"] = sum(1 for r in rows if not is_ours(r["backend"])
                                     and r["check"] == "mismatch")
    return summary


def _fmt(x: Optional[float], spec: str = ".3f", suffix: str = "") -> str:
    return "n.a." if x is None else f"{x:{spec}}{suffix}"


def format_decode_summary(summary: dict[str, Any]) -> str:
    """The summary lines (console and results.md)."""
    lines = [f"copy bandwidth {_fmt(summary['copy_gbps'], '.1f')} GB/s (read + write)"]
    for name, e in summary["variants"].items():
        s = e["vs_best_sdpa"]
        text = f"{name:>13}: "
        if s["n"]:
            text += (f"geomean ours/best SDPA = {s['geomean']:.3f} over {s['n']} configs, min "
                     f"{s['min']:.3f} ({s['min_config']}), max {s['max']:.3f}")
        else:
            text += "ours/best SDPA n.a. (no config where both ran)"
        f = e["frac_copy_large"]
        if f["n"]:
            text += (f"; K+V >= {summary['large_cache_bytes'] // MIB} MiB: fraction of copy "
                     f"bandwidth min {f['min']:.3f} ({f['min_config']}), median "
                     f"{f['median']:.3f}, max {f['max']:.3f} over {f['n']}")
        else:
            text += f"; no timed config with K+V >= {summary['large_cache_bytes'] // MIB} MiB"
        if "vs_contiguous" in e:
            c = e["vs_contiguous"]
            text += (f"; paged/contiguous geomean {_fmt(c['geomean'])}, min {_fmt(c['min'])}"
                     + (f" ({c['min_config']})" if c["min_config"] else "")
                     + f", max {_fmt(c['max'])}")
        if e["ok"] != e["configs"]:
            text += f"; failed on {e['configs'] - e['ok']} of {e['configs']}"
        if e["mismatches"]:
            text += f"; {e['mismatches']} MISMATCHES"
        lines.append(text)
    if summary["peer_mismatches"]:
        lines.append(f"peers: {summary['peer_mismatches']} outputs mismatched the oracle or ours "
                     "(marked '!')")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ targets
def decode_targets(rows: Sequence[dict[str, Any]], summary: dict[str, Any]
                   ) -> list[dict[str, Any]]:
    """The issue's done-when targets, each with goal, value, pass (None = nothing to judge)."""
    targets: list[dict[str, Any]] = []

    # ours wrong or failed anywhere: no target passes (the ratios would flatter a wrong kernel)
    broken = [r for r in rows if is_ours(r["backend"])
              and (r["status"] != "ok" or r["check"] == "mismatch")]

    def add(name: str, goal: str, stats: dict[str, Any], key: str, bound: float) -> None:
        value = stats[key] if stats["n"] else None
        ok = None if value is None else bool(value >= bound) and not broken
        targets.append({"target": name, "goal": goal, "value": value, "n": stats["n"],
                        "worst": stats["min_config"], "pass": ok,
                        "note": (f"{len(broken)} of ours' rows failed or mismatched"
                                 if broken else "")})

    sel = [r for r in rows if r["backend"] == "ours" and r["status"] == "ok"
           and r["dtype"] == "bf16" and r["head_dim"] == 128 and r["heads"] == 32
           and r["kv_heads"] == 8 and r["q_tokens"] == 1 and r["frac_copy"]
           and r["kv_bytes"] >= LARGE_CACHE_BYTES]
    add("bf16 d=128 h/hk=32/8 n=1, K+V >= 256 MiB: ours GB/s / copy GB/s (min)",
        f">= {TARGET_COPY_FRACTION}", _stats([(r["frac_copy"], r) for r in sel]), "min",
        TARGET_COPY_FRACTION)
    ours = summary["variants"].get("ours")
    vs = ours["vs_best_sdpa"] if ours else _stats([])
    add("ours / best SDPA over the sweep (geomean)", f">= {TARGET_GEOMEAN_VS_SDPA}", vs,
        "geomean", TARGET_GEOMEAN_VS_SDPA)
    add("ours / best SDPA over the sweep (min)", f">= {TARGET_MIN_VS_SDPA}", vs, "min",
        TARGET_MIN_VS_SDPA)
    for page in TARGET_PAGES:
        e = summary["variants"].get(f"ours_page{page}")
        stats = e["vs_contiguous"] if e else _stats([])
        add(f"paged (page {page}) / contiguous GB/s (min)", f">= {TARGET_PAGED_VS_CONTIGUOUS}",
            stats, "min", TARGET_PAGED_VS_CONTIGUOUS)
    return targets


def format_targets(targets: Sequence[dict[str, Any]]) -> str:
    """One line per target: PASS / FAIL / n.a., value, goal, worst config."""
    lines = []
    for t in targets:
        verdict = {True: "PASS", False: "FAIL", None: "n.a."}[t["pass"]]
        text = f"  {verdict:<4}  {t['target']}: {_fmt(t['value'])} (goal {t['goal']}"
        text += f", {t['n']} configs" if t["n"] else ", no config in this run"
        text += f"; worst {t['worst']})" if t["worst"] else ")"
        if t.get("note"):
            text += f" [{t['note']}]"
        lines.append(text)
    return "\n".join(lines)


# -------------------------------------------------------------------------------------- table
def _cell(r: Optional[dict[str, Any]]) -> str:
    """'µs / GB/s', 'c' when a peer ran on the contiguous copy, '!' on a mismatch."""
    if r is None:
        return "-"
    if r["status"] != "ok":
        return r["status"]
    text = f"{fmt_sig(r['ms'] * 1e3, 4)} / {fmt_sig(r['gbps'])}"
    if r["layout"] == "contiguous":
        text += "c"
    if r["check"] == "mismatch":
        text += "!"
    return text


def _config_cells(r: dict[str, Any]) -> list[str]:
    return [r["dtype"], str(r["head_dim"]), f"{r['heads']}/{r['kv_heads']}", str(r["q_tokens"]),
            str(r["batch"]), str(r["cache_len"]), fmt_sig(r["kv_bytes"] / MIB)]


CONFIG_HEADER = ["dtype", "d", "h/hk", "n", "b", "cache", "K+V MiB"]


def _best_peer(group: dict[str, dict[str, Any]]) -> Optional[dict[str, Any]]:
    peers = [r for n, r in group.items() if not is_ours(n) and r["status"] == "ok" and r["gbps"]]
    return max(peers, key=lambda r: r["gbps"], default=None)


def _ratio(x: Optional[float]) -> str:
    return "n.a." if x is None else f"{x:.2f}x"


def format_decode_table(rows: Sequence[dict[str, Any]]) -> str:
    """Console table: per config 'µs / GB/s' per backend, best SDPA, ours/best, ours' fraction
    of the copy bandwidth and each paged variant over contiguous."""
    names = backend_order(rows)
    pages = [n for n in names if is_ours(n) and n != "ours"]
    header = (CONFIG_HEADER + names + ["best SDPA", "ours/best", "ours %copy"]
              + [f"{n[5:]}/contig" for n in pages])
    body = []
    for g in configs(rows):
        first = next(iter(g.values()))
        best = _best_peer(g)
        ours = g.get("ours", {})
        body.append(_config_cells(first) + [_cell(g.get(n)) for n in names] + [
            best["backend"] if best else "n.a.", _ratio(ours.get("ratio_to_best_sdpa")),
            _fmt(None if ours.get("frac_copy") is None else 100 * ours["frac_copy"], ".1f", "%")]
            + [_ratio(g.get(n, {}).get("ratio_to_contiguous")) for n in pages])
    return "\n== decode: time µs / GB/s ('c': peer on a contiguous K/V copy) ==\n" + \
        _format_table(header, body)


def decode_failure_notes(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Distinct (backend, status, reason) of rows that did not run, and every mismatch."""
    seen: dict[tuple[str, str, str], int] = {}
    for r in rows:
        if r["status"] != "ok":
            key = (r["backend"], r["status"], r["reason"] or "")
            seen[key] = seen.get(key, 0) + 1
    notes = [f"{b}: {s} x{n}: {reason}" for (b, s, reason), n in seen.items()]
    for r in rows:
        if r["check"] == "mismatch":
            notes.append(f"{r['backend']}: MISMATCH on {decode_label(r)}: rel. error vs oracle "
                         f"{_fmt(r['err_vs_ref'], '.2e')}, vs ours {_fmt(r['err_vs_ours'], '.2e')}"
                         + (f" ({r['reason']})" if r["reason"] else ""))
    return notes


# -------------------------------------------------------------------------------------- files
def write_decode_csv(path: str, rows: Sequence[dict[str, Any]]) -> None:
    """One line per row, columns ``DECODE_ROW_FIELDS``; empty cells for missing values."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=DECODE_ROW_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: ("" if r.get(k) is None else r.get(k))
                             for k in DECODE_ROW_FIELDS})


def _length_label(s: int) -> str:
    return f"{s // 1024}k" if s >= 1024 and s % 1024 == 0 else str(s)


def write_decode_plot(out_dir: str, rows: Sequence[dict[str, Any]], copy_gbps: Optional[float],
                      device_label: str) -> Optional[str]:
    """decode_gbps.png: GB/s vs cache length, one panel per (head config, batch): a row of
    panels per (dtype, d, h/hk, n), a column per batch; a line per backend (ours variants solid,
    peers dashed), the copy bandwidth as a horizontal dotted line; one legend below.
    Returns the path, or None when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:
        return None
    names = backend_order(rows)
    colors = {n: plt.get_cmap("tab10")(i % 10) for i, n in enumerate(names)}
    groups: list[tuple[Any, ...]] = []  # in sweep order
    for r in rows:
        key = (r["dtype"], r["head_dim"], r["heads"], r["kv_heads"], r["q_tokens"])
        if key not in groups:
            groups.append(key)
    batches = sorted({r["batch"] for r in rows})
    lengths = sorted({r["cache_len"] for r in rows})
    top = max([r["gbps"] for r in rows if r["status"] == "ok" and r["gbps"]] + [copy_gbps or 0])
    fig, axes = plt.subplots(len(groups), len(batches), squeeze=False, sharey=True,
                             figsize=(max(3.6 * len(batches), 6.6), 3.2 * len(groups) + 0.6))
    for gi, (dt, d, h, hk, n) in enumerate(groups):
        for bi, b in enumerate(batches):
            ax = axes[gi][bi]
            for name in names:
                pts = sorted((r["cache_len"], r["gbps"]) for r in rows
                             if r["backend"] == name and r["batch"] == b and r["dtype"] == dt
                             and r["head_dim"] == d and r["heads"] == h and r["kv_heads"] == hk
                             and r["q_tokens"] == n and r["status"] == "ok" and r["gbps"])
                if pts:  # distinct markers: the ours variants often overlap
                    ax.plot([p[0] for p in pts], [p[1] for p in pts],
                            marker="os^vDP*X"[names.index(name) % 8], markersize=5,
                            color=colors[name], label=name,
                            linestyle="-" if is_ours(name) else "--",
                            linewidth=2.2 if is_ours(name) else 1.4)
            if copy_gbps:  # labelled once, on the last panel: it ends the shared legend
                last = gi == len(groups) - 1 and bi == len(batches) - 1
                ax.axhline(copy_gbps, color="black", linestyle=":", linewidth=1.2,
                           label=f"device copy ({copy_gbps:.0f} GB/s, read + write)" if last
                           else "_nolegend_")
            ax.set_xscale("log", base=2)
            ax.set_xticks(lengths)
            ax.set_xticklabels([_length_label(s) for s in lengths])
            ax.minorticks_off()
            ax.set_ylim(0, top * 1.08 if top else 1)
            ax.grid(True, alpha=0.3)
            ax.set_title(f"h/hk={h}/{hk} d={d} n={n}, b={b}", fontsize=10)
            if gi == len(groups) - 1:
                ax.set_xlabel("cache length (tokens)")
            if bi == 0:
                ax.set_ylabel("GB/s")
    dtypes = ", ".join(sorted({str(g[0]) for g in groups}))
    fig.suptitle(f"decode: GB/s (K+V + q + out) vs cache length, {dtypes} ({device_label})",
                 fontsize=12)
    figure_legend(fig, axes)
    path = os.path.join(out_dir, "decode_gbps.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def decode_markdown(header: dict[str, Any], notes: Sequence[str], rows: Sequence[dict[str, Any]],
                    summary: dict[str, Any], targets: Sequence[dict[str, Any]],
                    check: Sequence[dict[str, Any]], copy: dict[str, Any]) -> str:
    """results.md: header, notes, summary, targets and a GB/s table."""
    lines = ["# flash_attn_c decode benchmark", ""] + header_md_lines(
        header, [f"- copy bandwidth: {copy['gbps']:.1f} GB/s ({copy['method']})"])
    if check:
        n_ok = sum(1 for c in check if c.get("ok"))
        lines += [f"Self-check: {n_ok}/{len(check)} decode configs passed (fp64 oracle).", ""]
    lines += ["Notes:", ""] + [f"- {n}" for n in notes] + [""]
    lines += ["## Summary", "", "```", format_decode_summary(summary), "```", ""]
    lines += ["## Targets", "", "```", format_targets(targets), "```", ""]
    names = backend_order(rows)
    pages = [n for n in names if is_ours(n) and n != "ours"]
    hdr = (CONFIG_HEADER + [f"{n} GB/s" for n in names]
           + ["ours/best SDPA", "ours %copy"] + [f"{n[5:]}/contig" for n in pages])
    lines += ["## GB/s ('c': peer on a contiguous K/V copy, '!': mismatch)", "",
              "| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    for g in configs(rows):
        first = next(iter(g.values()))
        cells = _config_cells(first)
        for n in names:
            r = g.get(n)
            if r is None:
                cells.append("-")
            elif r["status"] != "ok":
                cells.append(r["status"])
            else:
                cells.append(fmt_sig(r["gbps"]) + ("c" if r["layout"] == "contiguous" else "")
                             + ("!" if r["check"] == "mismatch" else ""))
        ours = g.get("ours", {})
        cells.append(_ratio(ours.get("ratio_to_best_sdpa")))
        cells.append(_fmt(None if ours.get("frac_copy") is None else 100 * ours["frac_copy"],
                          ".1f", "%"))
        cells += [_ratio(g.get(n, {}).get("ratio_to_contiguous")) for n in pages]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    fails = decode_failure_notes(rows)
    if fails:
        lines += ["## Not run / mismatches", ""] + [f"- {f}" for f in fails] + [""]
    return "\n".join(lines)
