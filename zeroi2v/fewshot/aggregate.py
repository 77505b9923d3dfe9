"""Few-shot results, aggregated: mean ± std over folds per (method, shots, task), the mean over tasks, the
paper-shaped Markdown table (methods × [mean over tasks, tasks], one table per shots, as the few-shot table of
the ZeroI2V paper), a CSV and a plot of accuracy against shots.

Input: the result rows ``zeroi2v.rows.ResultStore.rows()`` returns, each with ``key: {task, shots, fold,
method}`` and ``top1`` (last epoch: the headline), ``best_top1`` (best epoch, selected on the test list:
optimistic, reported apart and labelled so), ``seconds``, ``trainable_params``.

- **Per task**: mean and *sample* standard deviation (n - 1) over the folds present; 0 with one fold. A cell
  with fewer folds than the most any cell of its shots has is marked "(2/3)".
- **"mean top-1 over tasks"** per (method, shots): the mean over tasks of the per-task means, over the tasks
  that have that (method, shots) (the count is shown when some are missing: "(7/8 tasks)"). Its ± is the
  sample std over folds of the per-fold averages over tasks, taken over the folds present in *every* one of
  those tasks (so it measures how the whole protocol moves with the draw of the shots; 0 with one such fold).
- **Not a "TA-score".** VidTAB's README mentions a TA-score, but the benchmark's code (MCG-NJU/VideoEval)
  defines none, so this module names its aggregate plainly and claims no equivalence.
"""
from __future__ import annotations

import csv
import io
import statistics
from pathlib import Path
from typing import Iterable, Sequence

from zeroi2v.files import atomic_write, atomic_write_text
from zeroi2v.tables import mean_std as _stats, ordered as _ordered, pct as _pct

MEAN_OVER_TASKS = "mean top-1 over tasks"
LABELS = {"top1": "top-1 (%) at the last epoch",
          "best_top1": "best-epoch top-1 (%), the epoch selected on the test list (optimistic)"}
HEADERS = {"top1": MEAN_OVER_TASKS, "best_top1": "mean best-epoch top-1 over tasks"}


def _cells(rows: Iterable[dict], metric: str) -> dict[tuple, dict[int, float]]:
    """(method, shots, task) -> {fold: value}, in the order met; rows without ``metric`` are left out."""
    cells: dict[tuple, dict[int, float]] = {}
    for row in rows:
        key, value = row.get("key") or {}, row.get(metric)
        missing = [k for k in ("method", "shots", "task", "fold") if k not in key]
        if missing:
            raise ValueError(f"result row {row.get('id', key)}: its key has no {missing}; few-shot rows are keyed "
                             f"by task, shots, fold and method")
        if value is None:
            continue
        folds = cells.setdefault((key["method"], int(key["shots"]), key["task"]), {})
        if int(key["fold"]) in folds:
            raise ValueError(f"two results for {key}: aggregate the rows of one results folder (or remove one)")
        folds[int(key["fold"])] = float(value)
    return cells


def aggregate(rows: Iterable[dict], metric: str = "top1", methods: Sequence[str] | None = None,
              tasks: Sequence[str] | None = None) -> list[dict]:
    """Per (method, shots, task): ``mean``, ``std`` (sample, over folds), ``n`` folds, ``n_expected`` (the most
    folds any cell of that shots has), ``folds``; ordered by shots, then method, then task."""
    cells = _cells(rows, metric)
    method_order = _ordered((m for m, _, _ in cells), methods)
    task_order = _ordered((t for _, _, t in cells), tasks)
    expected: dict[int, int] = {}
    for (_, shots, _), folds in cells.items():
        expected[shots] = max(expected.get(shots, 0), len(folds))
    out = []
    for (method, shots, task), folds in cells.items():
        mean, std = _stats([folds[f] for f in sorted(folds)])
        out.append({"method": method, "shots": shots, "task": task, "mean": mean, "std": std, "n": len(folds),
                    "n_expected": expected[shots], "folds": sorted(folds)})
    return sorted(out, key=lambda c: (c["shots"], method_order.index(c["method"]), task_order.index(c["task"])))


def task_means(rows: Iterable[dict], metric: str = "top1", methods: Sequence[str] | None = None,
               tasks: Sequence[str] | None = None) -> list[dict]:
    """Per (method, shots): "mean top-1 over tasks" (``mean``, ``std``; see the module docstring), ``tasks``
    (how many were averaged), ``tasks_total`` (how many that shots' table has), ``folds`` (those used for the std)."""
    rows = list(rows)
    cells = _cells(rows, metric)
    per_task = aggregate(rows, metric, methods, tasks)
    total: dict[int, set] = {}
    for _, shots, task in cells:
        total.setdefault(shots, set()).add(task)
    groups: dict[tuple, list[dict]] = {}
    for c in per_task:
        groups.setdefault((c["method"], c["shots"]), []).append(c)
    out = []
    for (method, shots), group in groups.items():
        fold_sets = [set(c["folds"]) for c in group]
        common = sorted(set.intersection(*fold_sets))
        per_fold = [statistics.fmean(cells[(method, shots, c["task"])][f] for c in group) for f in common]
        out.append({"method": method, "shots": shots, "mean": statistics.fmean(c["mean"] for c in group),
                    "std": _stats(per_fold)[1] if per_fold else None, "tasks": len(group),
                    "tasks_total": len(total[shots]), "folds": common})
    return out


def markdown_table(rows: Iterable[dict], metric: str = "top1", methods: Sequence[str] | None = None,
                   tasks: Sequence[str] | None = None) -> str:
    """One table per shots: rows = methods, columns = "mean top-1 over tasks" then the tasks; cells "41.3 ± 1.2"
    (percent, mean ± sample std over folds), "(2/3)" when a cell has fewer folds than the others, "–" when absent."""
    rows = list(rows)
    per_task = aggregate(rows, metric, methods, tasks)
    means = {(m["method"], m["shots"]): m for m in task_means(rows, metric, methods, tasks)}
    blocks = []
    for shots in sorted({c["shots"] for c in per_task}):
        cells = [c for c in per_task if c["shots"] == shots]
        task_cols = _ordered((c["task"] for c in cells), tasks)
        method_rows = _ordered((c["method"] for c in cells), methods)
        n = cells[0]["n_expected"]
        lines = [f"**{shots} shots**: {LABELS.get(metric, metric)}, mean ± sample std over "
                 f"{n} fold{'s' if n > 1 else ''}", "",
                 "| method | " + " | ".join([HEADERS.get(metric, f"mean {metric} over tasks"), *task_cols]) + " |",
                 "|---|" + "---:|" * (len(task_cols) + 1)]
        by_key = {(c["method"], c["task"]): c for c in cells}
        for method in method_rows:
            m = means[(method, shots)]
            head = _pct(m["mean"], m["std"], len(m["folds"]))
            if m["tasks"] < m["tasks_total"]:
                head += f" ({m['tasks']}/{m['tasks_total']} tasks)"
            row = [head]
            for task in task_cols:
                c = by_key.get((method, task))
                row.append("–" if c is None else _pct(c["mean"], c["std"], c["n"])
                           + (f" ({c['n']}/{c['n_expected']})" if c["n"] < c["n_expected"] else ""))
            lines.append(f"| {method} | " + " | ".join(row) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def cost_table(rows: Iterable[dict], methods: Sequence[str] | None = None) -> str:
    """Seconds per row (mean) and trainable parameters per (method, shots)."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["key"]["method"], int(row["key"]["shots"])), []).append(row)
    order = _ordered((m for m, _ in groups), methods)
    lines = ["| method | shots | rows | seconds per row (mean) | trainable parameters |", "|---|---:|---:|---:|---:|"]
    for method, shots in sorted(groups, key=lambda g: (order.index(g[0]), g[1])):
        group = groups[(method, shots)]
        secs = [r["seconds"] for r in group if r.get("seconds") is not None]
        params = sorted({int(r["trainable_params"]) for r in group if r.get("trainable_params") is not None})
        p = "–" if not params else f"{params[0]:,}" + (f"–{params[-1]:,}" if len(params) > 1 else "")
        lines.append(f"| {method} | {shots} | {len(group)} | {statistics.fmean(secs):.1f} | {p} |" if secs
                     else f"| {method} | {shots} | {len(group)} | – | {p} |")
    return "\n".join(lines) + "\n"


def report_markdown(rows: Iterable[dict], methods: Sequence[str] | None = None,
                    tasks: Sequence[str] | None = None) -> str:
    """The whole ``results.md``: the headline tables, the best-epoch tables, the cost table."""
    rows = list(rows)
    parts = ["# Few-shot results", "",
             f"Top-1 in percent, mean ± sample std (n - 1) over folds. \"{MEAN_OVER_TASKS}\" is the mean of the "
             "per-task means over the tasks that have the row (their count is shown when some are missing); its ± "
             "is the sample std over the folds present in every task of the per-fold averages over tasks. "
             "\"(2/3)\": a cell with fewer folds than the others. This is not VidTAB's \"TA-score\" (its code "
             "defines none).", "", "## Top-1 at the last epoch", "", markdown_table(rows, "top1", methods, tasks)]
    if any(r.get("best_top1") is not None for r in rows):
        parts += ["## Best epoch, selected on the test list (optimistic)", "",
                  markdown_table(rows, "best_top1", methods, tasks)]
    parts += ["## Time and trainable parameters", "", cost_table(rows, methods)]
    return "\n".join(parts)


def _csv(rows: list[dict], methods, tasks) -> str:
    metrics = {m: {(c["method"], c["shots"], c["task"]): c for c in aggregate(rows, m, methods, tasks)}
               for m in ("top1", "best_top1", "seconds")}
    params: dict[tuple, set] = {}
    for r in rows:
        if r.get("trainable_params") is not None:
            params.setdefault((r["key"]["method"], int(r["key"]["shots"]), r["key"]["task"]), set()).add(
                int(r["trainable_params"]))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["method", "shots", "task", "folds", "folds_expected", "top1_mean", "top1_std",
                     "best_top1_mean", "best_top1_std", "seconds_mean", "trainable_params"])
    for key, c in metrics["top1"].items():
        best, secs, ps = metrics["best_top1"].get(key), metrics["seconds"].get(key), sorted(params.get(key, ()))
        writer.writerow([*key, c["n"], c["n_expected"], f"{c['mean']:.6f}", f"{c['std']:.6f}",
                         f"{best['mean']:.6f}" if best else "", f"{best['std']:.6f}" if best else "",
                         f"{secs['mean']:.2f}" if secs else "", "-".join(map(str, ps[:1] + ps[1:][-1:]))])
    return buf.getvalue()


def plot_vs_shots(rows: Iterable[dict], path: str | Path, metric: str = "top1",
                  methods: Sequence[str] | None = None) -> Path:
    """Mean top-1 over tasks against shots (log x), one line per method, ± std over folds as error bars."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state is touched
    means = task_means(rows, metric, methods)
    fig = Figure(figsize=(6, 4.2), dpi=100)
    ax = fig.subplots()
    shots_all = sorted({m["shots"] for m in means})
    for method in _ordered((m["method"] for m in means), methods):
        pts = sorted((m for m in means if m["method"] == method), key=lambda m: m["shots"])
        ax.errorbar([m["shots"] for m in pts], [100 * m["mean"] for m in pts],
                    yerr=[100 * (m["std"] or 0) for m in pts], marker="o", capsize=3, label=method)
    ax.set_xscale("log")
    ax.set_xticks(shots_all, labels=[str(s) for s in shots_all])
    ax.minorticks_off()
    ax.set_xlabel("shots (clips per class)")
    ax.set_ylabel(f"{MEAN_OVER_TASKS} (%)")
    ax.set_title("few-shot accuracy against shots (± std over folds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def write_reports(rows: Iterable[dict], out_dir: str | Path, methods: Sequence[str] | None = None,
                  tasks: Sequence[str] | None = None) -> dict[str, Path]:
    """Write ``results.md``, ``results.csv`` (per method, shots, task; fractions) and ``accuracy_vs_shots.png``."""
    rows, out = list(rows), Path(out_dir)
    if not rows:
        raise ValueError(f"no finished result rows to aggregate into {out}; run the rows first")
    return {"md": atomic_write_text(out / "results.md", report_markdown(rows, methods, tasks)),
            "csv": atomic_write_text(out / "results.csv", _csv(rows, methods, tasks)),
            "png": plot_vs_shots(rows, out / "accuracy_vs_shots.png", "top1", methods)}
