"""The ablation table in the shape of the paper's Table 3: per grid row, tunable parameters, new inference
parameters after merging, GFLOPs of the deployed model, top-1 mean ± sample std over seeds (and the paper's
top-1 beside it when the grid gives one). Markdown (``results.md``), CSV (``results.csv``) and a plot
(``top1.png``). The statistics and cells are ``zeroi2v.tables``' (shared with the few-shot tables).

Input: the rows of ``zeroi2v.rows.ResultStore.rows()``, each with ``key: {row, seed}`` and the fields
``zeroi2v.ablate_row.run_row`` returns.
"""
from __future__ import annotations

import csv
import io
import statistics
from pathlib import Path
from typing import Any, Iterable

from zeroi2v.files import atomic_write, atomic_write_text
from zeroi2v.tables import mean_std, ordered, pct

NEW_PARAMS_NOTE = ("new inference params: parameters of the deployed model (merged when it merges) beyond the "
                   "plain image tower and the linear classifier; for a merged model that is the temporal "
                   "embedding (frames × width) alone")


def aggregate(rows: Iterable[dict], order: list[str] | None = None) -> list[dict[str, Any]]:
    """Per grid row (grid order first): the seeds, top-1 mean and std (sample, over seeds), and the
    measures (the same for every seed of a row; the first seed's is kept, seconds are averaged)."""
    groups: dict[str, dict[int, dict]] = {}
    for r in rows:
        key = r.get("key") or {}
        if "row" not in key or "seed" not in key:
            raise ValueError(f"result row {r.get('id', key)}: its key has no row/seed; ablation rows are keyed "
                             f"by grid row and seed")
        groups.setdefault(key["row"], {})[int(key["seed"])] = r
    out = []
    for name in ordered(groups, order):
        by_seed = groups[name]
        first = by_seed[min(by_seed)]
        mean, std = mean_std([by_seed[s]["top1"] for s in sorted(by_seed)])
        out.append({"row": name, "seeds": sorted(by_seed), "top1_mean": mean, "top1_std": std,
                    "row_seconds": statistics.fmean(r.get("row_seconds", r.get("seconds", 0)) for r in by_seed.values()),
                    **{k: first.get(k) for k in ("tunable_params", "new_params", "temporal_embedding_params",
                                                 "gflops", "extra_gflops", "views", "mergeable", "merge_note",
                                                 "train_clips_per_s")}})
    return out


def _params(n: int | None) -> str:
    return "–" if n is None else (f"{n / 1e6:.2f} M" if n >= 1e5 else f"{n:,}")


def markdown_table(rows: Iterable[dict], grid: Any = None) -> str:
    """The Table-3-shaped Markdown table (percent top-1, mean ± sample std over seeds)."""
    stats = aggregate(rows, list(grid.rows) if grid is not None else None)
    paper = getattr(grid, "paper", {}) or {}
    n = max((len(s["seeds"]) for s in stats), default=0)
    head = ["row", "tunable params", "new inference params", "GFLOPs", "merge", f"top-1 (%) over {n} seed(s)"]
    if paper:
        head.append("paper top-1 (%)")
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * 3 + "---|" + "---:|" * (len(head) - 5)]
    for s in stats:
        top1 = pct(s["top1_mean"], s["top1_std"], len(s["seeds"])) + (
            f" ({len(s['seeds'])}/{n})" if len(s["seeds"]) < n else "")
        cells = [s["row"], _params(s["tunable_params"]), _params(s["new_params"]),
                 "–" if s["gflops"] is None else f"{s['gflops']:.4g}",
                 "merged" if s["mergeable"] else "not mergeable", top1]
        if paper:
            cells.append(f"{paper[s['row']]:.1f}" if s["row"] in paper else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def report_markdown(rows: list[dict], grid: Any) -> str:
    """The whole ``results.md``: title, the table, what the columns mean, time per row."""
    stats = aggregate(rows, list(grid.rows))
    views = sorted({s["views"] for s in stats if s["views"]})
    parts = [f"# {grid.title}", "", markdown_table(rows, grid),
             f"Top-1 in percent, mean ± sample std (n - 1) over seeds; \"(2/3)\": a row with fewer seeds than the "
             f"others. GFLOPs: multiply-adds of the deployed model per video over its {'/'.join(map(str, views))} "
             f"test view(s). Tunable params: trainable parameters, classifier included. {NEW_PARAMS_NOTE}; "
             f"\"not mergeable\" rows deploy unmerged, their adapters counted.", ""]
    if grid.source:
        parts += [f"Paper numbers: {grid.source}. They come from the paper's data and backbone, not from this run: "
                  f"compare rankings, not values.", ""]
    parts += ["| row | seconds per run (mean) | training clips/s |", "|---|---:|---:|"]
    parts += [f"| {s['row']} | {s['row_seconds']:.1f} | {s['train_clips_per_s'] or 0:.1f} |" for s in stats]
    return "\n".join(parts) + "\n"


def _csv(rows: list[dict], grid: Any) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["row", "seeds", "top1_mean", "top1_std", "paper_top1", "tunable_params", "new_params",
                "temporal_embedding_params", "gflops", "extra_gflops", "views", "mergeable", "merge_note",
                "row_seconds_mean", "train_clips_per_s"])
    for s in aggregate(rows, list(grid.rows)):
        w.writerow([s["row"], " ".join(map(str, s["seeds"])), f"{s['top1_mean']:.6f}", f"{s['top1_std']:.6f}",
                    grid.paper.get(s["row"], ""), s["tunable_params"], s["new_params"],
                    s["temporal_embedding_params"], f"{s['gflops']:.6g}", f"{s['extra_gflops']:.6g}", s["views"],
                    s["mergeable"], s["merge_note"], f"{s['row_seconds']:.2f}", s["train_clips_per_s"]])
    return buf.getvalue()


def plot_top1(rows: list[dict], path: str | Path, grid: Any) -> Path:
    """Top-1 per row with ± std over seeds as error bars; the paper's top-1 on a second axis (its own
    scale: another data set and backbone) when the grid gives it."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state is touched
    stats = aggregate(rows, list(grid.rows))
    fig = Figure(figsize=(max(5.0, 0.9 * len(stats) + 2), 4.2), dpi=100)
    ax = fig.subplots()
    x = list(range(len(stats)))
    ax.bar(x, [100 * s["top1_mean"] for s in stats], yerr=[100 * s["top1_std"] for s in stats], capsize=4,
           color=["C0" if s["mergeable"] else "C1" for s in stats], label="ours (blue: merges, orange: does not)")
    ax.set_xticks(x, labels=[s["row"] for s in stats], rotation=30, ha="right")
    ax.set_ylabel("top-1 (%), mean ± std over seeds")
    ax.set_title(grid.title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    marked = [(i, grid.paper[s["row"]]) for i, s in enumerate(stats) if s["row"] in grid.paper]
    if marked:
        ax2 = ax.twinx()
        ax2.plot([i for i, _ in marked], [v for _, v in marked], "kD", label="paper")
        ax2.set_ylabel("paper top-1 (%)")
        ax2.legend(loc="upper right", fontsize=8)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def write_reports(rows: Iterable[dict], out_dir: str | Path, grid: Any) -> dict[str, Path]:
    """Write ``results.md``, ``results.csv`` and ``top1.png`` into ``out_dir``."""
    rows, out = list(rows), Path(out_dir)
    if not rows:
        raise ValueError(f"no finished result rows to table in {out}; run the rows first")
    return {"md": atomic_write_text(out / "results.md", report_markdown(rows, grid)),
            "csv": atomic_write_text(out / "results.csv", _csv(rows, grid)),
            "png": plot_top1(rows, out / "top1.png", grid)}
