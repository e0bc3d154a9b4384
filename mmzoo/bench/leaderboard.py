"""Render results (JSONL rows) as a leaderboard: markdown, a self-contained
sortable HTML page, and matplotlib plots (accuracy vs throughput with the
Pareto front marked; accuracy vs robustness to a missing input; corruption
curves).

Each entry (one model, task and configuration) shows accuracy as mean ± std
over seeds with a 95% bootstrap interval over seeds and test samples
(:mod:`mmzoo.bench.stats`), and whether its difference from the task's best
entry is within noise (the paired bootstrap interval of the difference
contains 0)."""

from __future__ import annotations

import html
import math
import statistics
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from mmzoo._io import atomic_write_text
from mmzoo.bench.results import decode_classes, fill_gain, read_rows, row_key
from mmzoo.errors import MMZooError

__all__ = ["aggregate", "render_markdown", "render_html", "render_plots", "render", "short_name"]


def short_name(name: str) -> str:
    """``"cnn(channels=(16, 32))+lstm(...)/concat"`` -> ``"cnn+lstm/concat"``."""
    import mmzoo

    try:
        parsed = mmzoo.parse_name(name)
    except (MMZooError, TypeError):
        return str(name)
    return "+".join(e.name for e in parsed.encoders) + "/" + parsed.fusion.name


def _mean(values: Iterable[float | None]) -> float | None:
    values = [v for v in values if isinstance(v, (int, float)) and not math.isnan(v)]
    return statistics.fmean(values) if values else None


def _std(values: Iterable[float | None]) -> float | None:
    values = [v for v in values if isinstance(v, (int, float)) and not math.isnan(v)]
    return statistics.stdev(values) if len(values) > 1 else (0.0 if values else None)


def _median(values: Iterable[float | None]) -> float | None:
    values = [v for v in values if isinstance(v, (int, float)) and not math.isnan(v)]
    return statistics.median(values) if values else None


def aggregate(rows: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Latest row per (name, task, seed, config) -> one entry per (task, name,
    config) with mean/std over seeds, bootstrap intervals and the comparison
    with the task's best entry; returns ``(entries, failed_rows)``."""
    latest: dict[tuple, dict[str, Any]] = {}
    for row in rows:
        latest[row_key(row)] = dict(row)
    rows = list(latest.values())
    for row in rows:
        if row.get("status") == "ok" and row.get("multimodal_gain") is None:
            fill_gain(row, rows)
    groups: dict[tuple, list[dict[str, Any]]] = {}
    failed = []
    for row in rows:
        if row.get("status") != "ok":
            failed.append(row)
            continue
        groups.setdefault((row["task"], row["name"], row.get("config_id")), []).append(row)
    entries, draws = [], []
    for (task, name, config), members in groups.items():
        first = members[0]
        slots = sorted({s for m in members for s in (m.get("missing_accuracy") or {})})
        entry = {
            "task": task, "name": name, "short": short_name(name), "config_id": config,
            "kind": first.get("kind", "model"), "seeds": len(members),
            "accuracy": _mean(m["accuracy"] for m in members), "accuracy_std": _std(m["accuracy"] for m in members),
            "macro_f1": _mean(m["macro_f1"] for m in members), "macro_f1_std": _std(m["macro_f1"] for m in members),
            "multimodal_gain": _mean(m.get("multimodal_gain") for m in members),
            "missing_accuracy": {s: _mean((m.get("missing_accuracy") or {}).get(s) for m in members) for s in slots},
            "missing_accuracy_mean": _mean(m.get("missing_accuracy_mean") for m in members),
            "params_total": first.get("params_total"), "params_trainable": first.get("params_trainable"),
            "params_fusion": first.get("params_fusion"), "flops_per_sample": first.get("flops_per_sample"),
            "latency_ms_p50": _median(m.get("latency_ms_p50") for m in members),
            "latency_ms_p95": _median(m.get("latency_ms_p95") for m in members),
            "throughput_per_s": _median(m.get("throughput_per_s") for m in members),
            "train_samples_per_s": _median(m.get("train_samples_per_s") for m in members),
            "peak_memory_mb": _median(m.get("peak_memory_mb") for m in members),
            "weights_mb": first.get("weights_mb"),
            "train_peak_tensor_mb": _median(m.get("train_peak_tensor_mb") for m in members),
            "infer_peak_tensor_mb": _median(m.get("infer_peak_tensor_mb") for m in members),
            "process_max_rss_mb": _median(m.get("process_max_rss_mb") for m in members),
            "mfu": _median(m.get("mfu") for m in members),
            "compile_s": _median(m.get("compile_s") for m in members),
            "env": first.get("env", {}),
            **_robustness(members),
        }
        draws.append(_bootstrap(entry, members))
        entries.append(entry)
    order = sorted(range(len(entries)), key=lambda i: (entries[i]["task"], -(entries[i]["accuracy"] or 0.0),
                                                       entries[i]["name"]))
    entries, draws = [entries[i] for i in order], [draws[i] for i in order]
    _compare_with_best(entries, draws)  # on a tie the first row shown is the best
    return entries, failed


def _bootstrap(entry: dict[str, Any], members: Sequence[Mapping[str, Any]]):
    """Fill the 95% intervals of accuracy and macro-F1 (over seeds and test
    samples); returns the accuracy draws, or None for rows recorded without
    per-sample predictions."""
    entry["accuracy_ci"] = entry["macro_f1_ci"] = None
    if not all(m.get("test_labels") is not None and m.get("test_predictions") is not None for m in members):
        return None
    from mmzoo.bench import stats

    samples = {m["seed"]: (decode_classes(m["test_labels"]), decode_classes(m["test_predictions"]))
               for m in members}
    num_classes = members[0].get("num_classes") or 1 + max(max(y + p) for y, p in samples.values())
    draws = stats.bootstrap(samples, num_classes=num_classes)
    entry["accuracy_ci"] = stats.interval(draws["accuracy"])
    entry["macro_f1_ci"] = stats.interval(draws["macro_f1"])
    return draws["accuracy"]


def _compare_with_best(entries: Sequence[dict[str, Any]], draws: Sequence[Any]) -> None:
    """``vs_best`` per entry: "best", "within noise" (the paired bootstrap
    interval of the accuracy difference to the best entry of the task
    contains 0), "below", or None without per-sample predictions."""
    from mmzoo.bench import stats

    best: dict[str, int] = {}
    for i, e in enumerate(entries):  # entries are sorted best first within each task
        if draws[i] is not None and e["task"] not in best:
            best[e["task"]] = i
    for i, e in enumerate(entries):
        e["vs_best"] = e["difference_ci"] = None
        top = best.get(e["task"])
        if draws[i] is None or top is None:
            continue
        if i == top:
            e["vs_best"] = "best"
            continue
        low, high = stats.interval(draws[top] - draws[i])
        e["difference_ci"] = (low, high)
        e["vs_best"] = "within noise" if low <= 0 <= high else "below"


def _robustness(members: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean over seeds of the robustness fields (corruption AUC and
    mismatched-pair accuracy per input, curves per input and corruption)."""
    reports = [m["robustness"] for m in members if m.get("robustness")]
    if not reports:
        return {"corruption_auc": {}, "mismatched_accuracy": {}, "corruption_curves": {}, "corruption_levels": None}
    levels = reports[0]["levels"]
    curves: dict[str, dict[str, list[float]]] = {}
    for slot, by_name in reports[0]["curves"].items():
        for name in by_name:
            runs = [r["curves"][slot][name] for r in reports
                    if r["levels"] == levels and name in r["curves"].get(slot, {})]
            curves.setdefault(slot, {})[name] = [_mean(values) for values in zip(*runs)]

    def per_input(field: str) -> dict[str, float | None]:
        slots = sorted({s for r in reports for s in r.get(field) or {}})
        return {s: _mean((r.get(field) or {}).get(s) for r in reports) for s in slots}

    return {"corruption_auc": per_input("corruption_auc"), "mismatched_accuracy": per_input("mismatched_accuracy"),
            "corruption_curves": curves, "corruption_levels": levels}


# ------------------------------------------------------------------ formatting
def _fmt(value: Any, kind: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if kind == "pct":
        return f"{100 * value:.1f}"
    if kind == "ci":
        return f"{100 * value[0]:.1f}–{100 * value[1]:.1f}"
    if kind == "gain":
        return f"{100 * value:+.1f}"
    if kind == "count":
        return _si(value)
    if kind == "ms":
        return f"{value:.2f}"
    if kind == "rate":
        return f"{value:,.0f}"
    if kind == "mb":
        return f"{value:,.0f}"
    return str(value)


def _si(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{unit}"
    return f"{value:.0f}"


def _columns(entries: Sequence[Mapping[str, Any]]) -> list[tuple[str, Any, str]]:
    """(header, getter, kind) for the table; one missing-input column per input."""
    slots = sorted({s for e in entries for s in e["missing_accuracy"]})
    cols: list[tuple[str, Any, str]] = [
        ("model", lambda e: e["short"] + (" (single input)" if e["kind"] == "baseline" else ""), "text"),
        ("acc %", lambda e: e["accuracy"], "pct"),
        ("± std", lambda e: e["accuracy_std"], "pct"),
        ("acc 95% CI", lambda e: e.get("accuracy_ci"), "ci"),
        ("vs best", lambda e: e.get("vs_best") or "–", "text"),
        ("macro-F1 %", lambda e: e["macro_f1"], "pct"),
        ("F1 95% CI", lambda e: e.get("macro_f1_ci"), "ci"),
        ("gain vs best single (pts)", lambda e: e["multimodal_gain"], "gain"),
    ]
    for slot in slots:
        cols.append((f"acc w/o {slot} %", lambda e, s=slot: e["missing_accuracy"].get(s), "pct"))
    for slot in sorted({s for e in entries for s in e.get("corruption_auc") or {}}):
        cols.append((f"corruption AUC {slot} %", lambda e, s=slot: (e.get("corruption_auc") or {}).get(s), "pct"))
    for slot in sorted({s for e in entries for s in e.get("mismatched_accuracy") or {}}):
        cols.append((f"mismatched, {slot} kept %",
                     lambda e, s=slot: (e.get("mismatched_accuracy") or {}).get(s), "pct"))
    cols += [
        ("params", lambda e: e["params_total"], "count"),
        ("fusion params", lambda e: e["params_fusion"], "count"),
        ("FLOPs/sample", lambda e: e["flops_per_sample"], "count"),
        ("latency p50 ms", lambda e: e["latency_ms_p50"], "ms"),
        ("latency p95 ms", lambda e: e["latency_ms_p95"], "ms"),
        ("infer samples/s", lambda e: e["throughput_per_s"], "rate"),
        ("train samples/s", lambda e: e["train_samples_per_s"], "rate"),
    ]
    if any(e.get("train_peak_tensor_mb") is not None for e in entries):  # the model's own tensors
        cols += [("weights MB", lambda e: e.get("weights_mb"), "mb"),
                 ("train step tensors MB", lambda e: e.get("train_peak_tensor_mb"), "mb"),
                 ("inference tensors MB", lambda e: e.get("infer_peak_tensor_mb"), "mb")]
    if any(e.get("peak_memory_mb") is not None for e in entries):  # GPU allocator peak
        cols.append(("CUDA peak allocated MB", lambda e: e["peak_memory_mb"], "mb"))
    cols.append(("process max RSS MB", lambda e: e.get("process_max_rss_mb"), "mb"))
    if any(e.get("mfu") is not None for e in entries):
        cols.append(("MFU %", lambda e: e["mfu"], "pct"))
    if any(e.get("compile_s") is not None for e in entries):
        cols.append(("compile s", lambda e: e["compile_s"], "ms"))
    cols.append(("seeds", lambda e: e["seeds"], "text"))
    return cols


_NOTES = ("Accuracy is on the test split after the fixed training budget (mean ± std over seeds); "
          "95% CI: bootstrap over seeds and test samples; 'vs best': 'within noise' when the paired bootstrap "
          "interval of the accuracy difference to the best row contains 0; "
          "gain = accuracy minus the best single-input model trained the same way; "
          "'acc w/o X' = accuracy with input X omitted at test time (a sample left with no input counts as "
          "wrong); 'corruption AUC X' = area under the "
          "accuracy-vs-corruption-level curve of input X relative to clean accuracy (100: no loss); "
          "'mismatched, X kept' = accuracy when every input but X is shuffled across test samples (X keeps "
          "its labels; a model using only X loses nothing, one using the pairing falls). FLOPs: forward pass, counted by torch.utils.flop_counter. "
          "Throughput and latency: eval mode, no grad, after warm-up. "
          "Memory: 'train step tensors' / 'inference tensors' = peak MB of the tensors one training "
          "step's forward + backward / one inference batch allocates (batch size as in training), on top "
          "of the weights; 'process max RSS' is the whole worker process, mostly torch itself.")


def _env_line(entries: Sequence[Mapping[str, Any]]) -> str:
    if not entries:
        return ""
    env = entries[0].get("env") or {}
    keys = [("device_name", "device"), ("torch", "torch"), ("cuda", "CUDA"), ("precision", "precision"),
            ("batch_size", "batch"), ("compile", "compile"), ("mmzoo", "mmzoo"), ("git_sha", "git")]
    return ", ".join(f"{label} {env.get(k)}" for k, label in keys if env.get(k) not in (None, ""))


def _by_task(entries):
    tasks: dict[str, list] = {}
    for e in entries:
        tasks.setdefault(e["task"], []).append(e)
    return tasks


def render_markdown(entries: Sequence[Mapping[str, Any]], failed: Sequence[Mapping[str, Any]] = ()) -> str:
    lines = ["# mmzoo leaderboard", ""]
    for task, group in _by_task(entries).items():
        cols = _columns(group)
        lines += [f"## {task}", "", f"Environment: {_env_line(group)}", "",
                  "| # | " + " | ".join(h for h, _, _ in cols) + " |",
                  "|---|" + "|".join("---" if k == "text" else "---:" for _, _, k in cols) + "|"]
        for i, e in enumerate(group, 1):
            cells = [str(_fmt(get(e), kind)) if kind != "text" else str(get(e)) for _, get, kind in cols]
            lines.append(f"| {i} | " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        lines.append("")
    if failed:
        lines += ["## Failed runs", "", "| model | task | seed | error |", "|---|---|---|---|"]
        for r in failed:
            error = str(r.get("error", "")).replace("|", "\\|").replace("\n", " ")[:200]
            lines.append(f"| {short_name(r.get('name', ''))} | {r.get('task')} | {r.get('seed')} | {error} |")
        lines.append("")
    lines += [_NOTES, ""]
    return "\n".join(lines)


_SCRIPT = """
document.querySelectorAll('table.lb').forEach(function (table) {
  table.querySelectorAll('th').forEach(function (th, col) {
    th.addEventListener('click', function () {
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var asc = th.getAttribute('data-dir') !== 'asc';
      table.querySelectorAll('th').forEach(function (h) { h.removeAttribute('data-dir'); });
      th.setAttribute('data-dir', asc ? 'asc' : 'desc');
      rows.sort(function (a, b) {
        var x = a.cells[col].getAttribute('data-v'), y = b.cells[col].getAttribute('data-v');
        var nx = parseFloat(x), ny = parseFloat(y);
        var cmp = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : String(x).localeCompare(String(y));
        if (x === '' && y !== '') return 1; if (y === '' && x !== '') return -1;
        return asc ? cmp : -cmp;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table.lb { border-collapse: collapse; font-size: 13px; margin-bottom: 2em; }
table.lb th, table.lb td { border: 1px solid #ccc; padding: 4px 8px; }
table.lb th { background: #f3f3f3; cursor: pointer; user-select: none; position: sticky; top: 0; }
table.lb th[data-dir=asc]::after { content: " \\25B2"; } table.lb th[data-dir=desc]::after { content: " \\25BC"; }
table.lb td.n { text-align: right; font-variant-numeric: tabular-nums; }
table.lb tr.baseline td { color: #666; font-style: italic; }
.env { color: #555; font-size: 13px; } code { font-size: 12px; }
"""


def render_html(entries: Sequence[Mapping[str, Any]], failed: Sequence[Mapping[str, Any]] = (),
                title: str = "mmzoo leaderboard") -> str:
    """A self-contained page (inline CSS and JS, no CDN); click a header to sort."""
    out = ["<!doctype html>", "<html><head><meta charset='utf-8'>", f"<title>{html.escape(title)}</title>",
           f"<style>{_STYLE}</style></head><body>", f"<h1>{html.escape(title)}</h1>"]
    for task, group in _by_task(entries).items():
        cols = _columns(group)
        out.append(f"<h2>{html.escape(task)}</h2><p class='env'>{html.escape(_env_line(group))}</p>")
        out.append("<table class='lb'><thead><tr><th>#</th>"
                   + "".join(f"<th>{html.escape(h)}</th>" for h, _, _ in cols) + "</tr></thead><tbody>")
        for i, e in enumerate(group, 1):
            cells = [f"<td class='n' data-v='{i}'>{i}</td>"]
            for _, get, kind in cols:
                value = get(e)
                if kind == "text":
                    title_attr = f" title='{html.escape(e['name'])}'" if _ == "model" else ""
                    cells.append(f"<td data-v='{html.escape(str(value))}'{title_attr}>{html.escape(str(value))}</td>")
                else:
                    sort_value = "" if value is None or (isinstance(value, float) and math.isnan(value)) else value
                    if isinstance(sort_value, tuple):  # an interval sorts by its lower end
                        sort_value = sort_value[0]
                    cells.append(f"<td class='n' data-v='{sort_value}'>{html.escape(_fmt(value, kind))}</td>")
            cls = " class='baseline'" if e["kind"] == "baseline" else ""
            out.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
        out.append("</tbody></table>")
    if failed:
        out.append("<h2>Failed runs</h2><table class='lb'><thead><tr><th>model</th><th>task</th><th>seed</th>"
                   "<th>error</th></tr></thead><tbody>")
        for r in failed:
            out.append("<tr>" + "".join(f"<td data-v='{html.escape(str(v))}'>{html.escape(str(v))}</td>" for v in
                                        (r.get("name"), r.get("task"), r.get("seed"), str(r.get("error", ""))[:300]))
                       + "</tr>")
        out.append("</tbody></table>")
    out.append(f"<p class='env'>{html.escape(_NOTES)} Hover a model for its full name.</p>")
    out.append(f"<script>{_SCRIPT}</script></body></html>")
    return "\n".join(out)


# ------------------------------------------------------------------ plots
def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated when both coordinates are maximised."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any((x2 >= x and y2 >= y) and (x2 > x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def render_plots(entries: Sequence[Mapping[str, Any]], directory: str | Path) -> list[Path]:
    """Per task: ``<task>-accuracy-vs-throughput.png``,
    ``<task>-accuracy-vs-robustness.png`` and, with robustness rows,
    ``<task>-corruption-curves.png``; returns the written paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for task, group in _by_task(entries).items():
        pts = [e for e in group if e.get("throughput_per_s") and e.get("accuracy") is not None]
        if pts:
            fig, ax = plt.subplots(figsize=(8, 5.5))
            xy = [(e["throughput_per_s"], 100 * e["accuracy"]) for e in pts]
            front = pareto_front(xy)
            for i, (e, (x, y)) in enumerate(zip(pts, xy)):
                on_front = i in front
                marker = "s" if e["kind"] == "baseline" else "o"
                ax.scatter([x], [y], marker=marker, s=60 if on_front else 35,
                           c="tab:red" if on_front else ("tab:gray" if e["kind"] == "baseline" else "tab:blue"),
                           zorder=3, edgecolors="black" if on_front else "none")
                ax.annotate(e["short"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
            fx = [xy[i][0] for i in front]
            fy = [xy[i][1] for i in front]
            ax.step(fx, fy, where="post", color="tab:red", linewidth=1.2, label="Pareto front", zorder=2)
            ax.set_xscale("log")
            ax.set_xlabel("inference throughput (samples/s, log scale)")
            ax.set_ylabel("test accuracy (%)")
            ax.set_title(f"{task}: accuracy vs throughput (squares: single-input)")
            ax.grid(True, alpha=0.3)
            ax.legend(loc="lower left")
            fig.tight_layout()
            path = directory / f"{task}-accuracy-vs-throughput.png"
            fig.savefig(path, dpi=120)
            plt.close(fig)
            written.append(path)
        pts = [e for e in group if e.get("missing_accuracy_mean") is not None and e.get("accuracy") is not None]
        if pts:
            fig, ax = plt.subplots(figsize=(8, 5.5))
            for e in pts:
                x, y = 100 * e["missing_accuracy_mean"], 100 * e["accuracy"]
                ax.scatter([x], [y], c="tab:blue", zorder=3)
                ax.annotate(e["short"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
            for e in group:
                if e["kind"] == "baseline" and e.get("accuracy") is not None:
                    ax.axhline(100 * e["accuracy"], color="tab:gray", linestyle=":", linewidth=1)
                    ax.annotate(f"{e['short']} alone", (0.01, 100 * e["accuracy"]), xycoords=("axes fraction", "data"),
                                fontsize=7, color="tab:gray", va="bottom")
            ax.set_xlabel("mean test accuracy with one input missing (%)")
            ax.set_ylabel("test accuracy, all inputs (%)")
            ax.set_title(f"{task}: accuracy vs robustness to a missing input")
            ax.grid(True, alpha=0.3)
            fig.tight_layout()
            path = directory / f"{task}-accuracy-vs-robustness.png"
            fig.savefig(path, dpi=120)
            plt.close(fig)
            written.append(path)
        pts = [e for e in group if e.get("corruption_curves")]
        if pts:
            written.append(_plot_corruption_curves(plt, task, pts, directory))
    return written


def _plot_corruption_curves(plt, task: str, entries: Sequence[Mapping[str, Any]], directory: Path) -> Path:
    """One panel per (input, corruption): accuracy against corruption level,
    a line per model (dashed: single-input models)."""
    panels = sorted({(slot, name) for e in entries for slot, by_name in e["corruption_curves"].items()
                     for name in by_name})
    cols = min(len(panels), 3)
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.6 * rows), squeeze=False)
    colors = {e["name"]: f"C{i % 10}" for i, e in enumerate(entries)}  # one colour per model in every panel
    for ax, (slot, name) in zip(axes.flat, panels):
        for e in entries:
            curve = e["corruption_curves"].get(slot, {}).get(name)
            if curve:
                ax.plot(e["corruption_levels"], [100 * v for v in curve], marker="o", markersize=3,
                        color=colors[e["name"]], linestyle="--" if e["kind"] == "baseline" else "-")
        ax.set_title(f"{slot}: {name}", fontsize=9)
        ax.set_xlabel("corruption level")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colors[e["name"]], marker="o", markersize=3,
                      linestyle="--" if e["kind"] == "baseline" else "-") for e in entries]
    fig.legend(handles, [e["short"] for e in entries], loc="lower center", ncol=min(4, len(entries)), fontsize=7)
    fig.suptitle(f"{task}: accuracy under corruption (dashed: single-input)")
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    path = directory / f"{task}-corruption-curves.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def render(results: str | Path, *, md: str | Path | None = None, html_path: str | Path | None = None,
           plots: str | Path | None = None) -> tuple[str, list[Path]]:
    """Read ``results`` and write the requested outputs; returns the markdown
    and the paths written."""
    rows = read_rows(results)
    entries, failed = aggregate(rows)
    markdown = render_markdown(entries, failed)
    written: list[Path] = []
    if md:
        written.append(atomic_write_text(md, markdown))
    if html_path:
        written.append(atomic_write_text(html_path, render_html(entries, failed)))
    if plots:
        written += render_plots(entries, plots)
    return markdown, written
