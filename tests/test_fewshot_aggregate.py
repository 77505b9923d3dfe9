"""zeroi2v.fewshot.aggregate: hand-made result rows give hand-computed means and sample stds."""
import csv

import pytest

from zeroi2v.fewshot.aggregate import aggregate, markdown_table, report_markdown, task_means, write_reports

# (method, shots, task) -> top-1 per fold 1, 2, 3 (None: that fold has no row)
TOP1 = {
    ("zeroi2v", 4, "A"): (0.40, 0.42, 0.44),
    ("zeroi2v", 4, "B"): (0.60, 0.60, 0.66),
    ("zeroi2v", 4, "C"): (0.30, 0.36, 0.33),        # C: a 4-shot-only task (as Medical_Surgery)
    ("linear_probe", 4, "A"): (0.30, 0.34, 0.32),
    ("linear_probe", 4, "B"): (0.50, 0.50, 0.50),   # no C for the linear probe: an incomplete mean
    ("zero_shot", 4, "A"): (0.20, 0.20, 0.20),      # no best epoch (nothing trains)
    ("zeroi2v", 16, "A"): (0.70, 0.72, 0.74),
    ("zeroi2v", 16, "B"): (0.80, 0.84, 0.82),
    ("linear_probe", 16, "A"): (0.50, 0.56, 0.53),
    ("linear_probe", 16, "B"): (0.70, 0.74, None),  # fold 3 missing: marked (2/3)
    ("zeroi2v", 100, "A"): (0.90, None, None),      # 100 shots: one fold
}


def _rows():
    rows = []
    for (method, shots, task), values in TOP1.items():
        for fold, top1 in enumerate(values, 1):
            if top1 is None:
                continue
            rows.append({"id": f"{task}__shots{shots}__fold{fold}__{method}",
                         "key": {"task": task, "shots": shots, "fold": fold, "method": method}, "top1": top1,
                         "best_top1": None if method == "zero_shot" else top1 + 0.05,
                         "seconds": 10.0 + fold if method == "zeroi2v" else 2.0,
                         "trainable_params": (1_234_567 if task == "A" else 1_234_600) if method == "zeroi2v" else 99,
                         "config_hash": "abc"})
    return rows


def _cell(cells, method, shots, task):
    [c] = [c for c in cells if (c["method"], c["shots"], c["task"]) == (method, shots, task)]
    return c


def test_per_task_mean_and_sample_std_over_folds():
    cells = aggregate(_rows())
    # zeroi2v 4 A: mean 0.42; deviations -0.02, 0, 0.02 -> (0.0004 + 0 + 0.0004) / (3 - 1) = 0.0004 -> std 0.02
    c = _cell(cells, "zeroi2v", 4, "A")
    assert (c["mean"], c["std"], c["n"], c["n_expected"]) == (pytest.approx(0.42), pytest.approx(0.02), 3, 3)
    # zeroi2v 4 B: mean 0.62; deviations -0.02, -0.02, 0.04 -> 0.0024 / 2 = 0.0012 -> std 0.034641
    c = _cell(cells, "zeroi2v", 4, "B")
    assert (c["mean"], c["std"]) == (pytest.approx(0.62), pytest.approx(0.0012 ** 0.5))
    # linear_probe 16 B: folds 1, 2 only: mean 0.72; deviations +-0.02 -> 0.0008 / (2 - 1) -> std 0.028284
    c = _cell(cells, "linear_probe", 16, "B")
    assert (c["mean"], c["std"], c["n"], c["n_expected"], c["folds"]) == (
        pytest.approx(0.72), pytest.approx(0.0008 ** 0.5), 2, 3, [1, 2])
    # one fold: std 0
    c = _cell(cells, "zeroi2v", 100, "A")
    assert (c["mean"], c["std"], c["n"], c["n_expected"]) == (pytest.approx(0.90), 0.0, 1, 1)
    # the best-epoch column is its own metric; zero_shot has none
    c = _cell(aggregate(_rows(), "best_top1"), "zeroi2v", 4, "A")
    assert (c["mean"], c["std"]) == (pytest.approx(0.47), pytest.approx(0.02))
    assert not [c for c in aggregate(_rows(), "best_top1") if c["method"] == "zero_shot"]


def test_mean_over_tasks_and_its_std_over_folds():
    means = {(m["method"], m["shots"]): m for m in task_means(_rows())}
    # zeroi2v 4: tasks A, B, C: (0.42 + 0.62 + 0.33) / 3 = 0.456667; per-fold averages over tasks:
    # f1 (0.40+0.60+0.30)/3 = 0.433333, f2 (0.42+0.60+0.36)/3 = 0.46, f3 (0.44+0.66+0.33)/3 = 0.476667
    # deviations -0.023333, 0.003333, 0.02 -> squares 0.00054444 + 0.00001111 + 0.0004 = 0.00095556, /2 -> 0.021858
    m = means[("zeroi2v", 4)]
    assert (m["mean"], m["std"], m["tasks"], m["tasks_total"]) == (
        pytest.approx(1.37 / 3), pytest.approx(0.021858, abs=1e-6), 3, 3)
    # linear_probe 4: A and B only (2 of 3 tasks): (0.32 + 0.50) / 2 = 0.41; per fold 0.40, 0.42, 0.41 -> std 0.01
    m = means[("linear_probe", 4)]
    assert (m["mean"], m["std"], m["tasks"], m["tasks_total"]) == (pytest.approx(0.41), pytest.approx(0.01), 2, 3)
    # linear_probe 16: (0.53 + 0.72) / 2 = 0.625; folds in every task: 1, 2: per fold 0.60, 0.65 -> std 0.05/sqrt(2)
    m = means[("linear_probe", 16)]
    assert (m["mean"], m["std"], m["folds"]) == (pytest.approx(0.625), pytest.approx(0.05 / 2 ** 0.5), [1, 2])
    assert means[("zeroi2v", 100)]["std"] == 0.0


def test_markdown_is_paper_shaped_with_marked_incomplete_cells():
    md = markdown_table(_rows())
    lines = md.splitlines()
    assert "| method | mean top-1 over tasks | A | B | C |" in lines
    assert "| zeroi2v | 45.7 ± 2.2 | 42.0 ± 2.0 | 62.0 ± 3.5 | 33.0 ± 3.0 |" in lines
    assert "| linear_probe | 41.0 ± 1.0 (2/3 tasks) | 32.0 ± 2.0 | 50.0 ± 0.0 | – |" in lines
    assert "| zero_shot | 20.0 ± 0.0 (1/3 tasks) | 20.0 ± 0.0 | – | – |" in lines
    assert "| method | mean top-1 over tasks | A | B |" in lines  # 16 shots: no C column
    assert "| zeroi2v | 77.0 ± 1.7 | 72.0 ± 2.0 | 82.0 ± 2.0 |" in lines
    assert "| linear_probe | 62.5 ± 3.5 | 53.0 ± 3.0 | 72.0 ± 2.8 (2/3) |" in lines
    assert "| zeroi2v | 90.0 | 90.0 |" in lines  # one fold: no ±, no mark
    assert [ln.split(":")[0] for ln in lines if ln.startswith("**")] == ["**4 shots**", "**16 shots**", "**100 shots**"]
    # a given method order is kept
    ordered = markdown_table(_rows(), methods=["zero_shot", "linear_probe"]).splitlines()
    firsts = [ln.split(" | ")[0] for ln in ordered[4:7]]
    assert firsts == ["| zero_shot", "| linear_probe", "| zeroi2v"]
    full = report_markdown(_rows())
    assert "Best epoch, selected on the test list (optimistic)" in full
    assert "| zeroi2v | 50.7 ± 2.2 | 47.0 ± 2.0 | 67.0 ± 3.5 | 38.0 ± 3.0 |" in full.splitlines()  # best: +5 each
    assert "| zeroi2v | 4 | 9 | 12.0 | 1,234,567–1,234,600 |" in full.splitlines()  # seconds 11, 12, 13 per fold
    assert "TA-score" not in md


def test_write_reports_writes_the_table_the_csv_and_the_plot(tmp_path):
    paths = write_reports(_rows(), tmp_path / "report")
    assert sorted(p.name for p in paths.values()) == ["accuracy_vs_shots.png", "results.csv", "results.md"]
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths["png"].stat().st_size > 5000
    with open(paths["csv"], newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(TOP1)
    row = [r for r in table if (r["method"], r["shots"], r["task"]) == ("linear_probe", "16", "B")][0]
    assert (row["folds"], row["folds_expected"], float(row["top1_mean"]), float(row["top1_std"])) == (
        "2", "3", pytest.approx(0.72), pytest.approx(0.0008 ** 0.5, abs=1e-6))
    assert row["best_top1_mean"] == "0.770000" and row["seconds_mean"] == "2.00" and row["trainable_params"] == "99"
    assert "## Top-1 at the last epoch" in paths["md"].read_text()
    with pytest.raises(ValueError, match="no finished result rows"):
        write_reports([], tmp_path / "empty")


def test_two_results_for_one_fold_are_refused():
    rows = _rows()
    with pytest.raises(ValueError, match="two results for"):
        aggregate(rows + rows[:1])
