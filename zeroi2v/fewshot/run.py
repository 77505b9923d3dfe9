"""``zeroi2v fewshot``: the VidTAB protocol as one resumable command.

    zeroi2v fewshot --root /data/VidTAB --tasks all --shots 4 16 100 --folds 1 2 3 \\
        --methods zeroi2v linear_probe full_finetune zero_shot --out runs/vidtab --workers 4

One result row per (task, shots, fold, method), written as ``OUT/rows/<row>.json`` the moment its run
ends (``zeroi2v.rows``): a rerun skips finished rows and never writes one twice, so a crash costs at most
the rows in flight. Each trained row keeps its run folder (``OUT/runs/<row>/``: config, log, results; the
checkpoint only with ``--keep-checkpoints``); the frozen backbone's features live in ``OUT/features/``.
After the rows, ``OUT/results.md`` (mean ± std over folds per task and shots, the mean over tasks, shaped
like the paper's Table 8), ``results.csv`` and ``accuracy_vs_shots.png`` (``zeroi2v.fewshot.aggregate``).

Every row starts from the recipe (``--config``, default ``zeroi2v/configs/fewshot/vidtab.yaml``) with
``--set`` overrides, then the method's own changes (``zeroi2v.fewshot.methods``).
"""
from __future__ import annotations

import argparse
import hashlib
from pathlib import Path
from typing import Any, Callable, Sequence

from zeroi2v.config_files import PACKAGE_DIR
from zeroi2v.rows_cli import add_runner_options, runner_options

RECIPE = PACKAGE_DIR / "configs" / "fewshot" / "vidtab.yaml"
DEFAULT_METHODS = ("zeroi2v", "linear_probe", "zero_shot")


def method_label(method: str, head_init: str) -> str:
    """The method's name in rows and tables: ``zeroi2v``, or ``zeroi2v+text`` for a text-initialised head."""
    return method if head_init == "random" or method == "zero_shot" else f"{method}+{head_init}"


def report_order(labels: Sequence[str]) -> list[str]:
    """Method labels in the tables' order: the registry's (``METHODS``: trained methods first, then those on
    cached features), each followed by its text-initialised variant; unknown labels last, as met."""
    from zeroi2v.fewshot.methods import METHODS
    rank = {m: i for i, m in enumerate(METHODS)}

    def key(label: str) -> tuple[int, int]:
        base, _, init = label.partition("+")
        return rank.get(base, len(rank)), int(bool(init))
    return sorted(dict.fromkeys(labels), key=key)


def plan_rows(tasks: Sequence[Any], shots: Sequence[int], folds: Sequence[int], methods: Sequence[str],
              head_init: str, recipe: dict[str, Any], out: Path, keep_checkpoints: bool = False
              ) -> tuple[list[Any], list[str]]:
    """The rows of every (task, shots, fold, method) whose split exists, and one note per split that does
    not (a 100-shot list has one fold; Medical_Surgery is 4-shot only)."""
    from zeroi2v.fewshot.methods import METHODS, RowSpec
    from zeroi2v.rows import Row, config_hash
    for m in methods:
        METHODS.get_class(m)
    rows, notes = [], []
    for task in tasks:
        test_sha = _sha(task.test_list)
        for k in shots:
            for fold in folds:
                if not task.has(k, fold):
                    notes.append(f"{task.name}: no {k}-shot fold {fold} list; those rows are skipped")
                    continue
                train_list = task.split(k, fold)
                for m in methods:
                    label = method_label(m, head_init)
                    spec = RowSpec(task=task.name, shots=k, fold=fold, method=m, head_init=head_init,
                                   train_list=str(train_list), test_list=str(task.test_list),
                                   classes=list(task.classes), video_root=str(task.video_root), config=recipe,
                                   run_dir="", cache_dir=str(out / "features"), keep_checkpoint=keep_checkpoints)
                    key = {"task": task.name, "shots": k, "fold": fold, "method": label}
                    defining = {"method": m, "head_init": head_init, "config": recipe, "classes": spec.classes,
                                "train": _sha(train_list), "test": test_sha}
                    row = Row(key=key, fn="zeroi2v.fewshot.methods:run_row", kwargs=vars(spec),
                              config_hash=config_hash(defining))
                    spec.run_dir = str(out / "runs" / row.id)  # the id depends on the key only
                    rows.append(row)
    return rows, notes


def _sha(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def load_recipe(config: str | Path | None, overrides: Sequence[str]) -> dict[str, Any]:
    """The recipe every row starts from, resolved and validated, as plain data."""
    from zeroi2v.config import load_config
    return load_config(config or RECIPE, overrides).to_dict()


def describe(result: dict[str, Any]) -> str:
    return f"top-1 {result['top1']:.3f} (best epoch {result['best_top1']:.3f})"


def run_fewshot(tasks: Sequence[Any], out: str | Path, shots: Sequence[int] = (4, 16, 100),
                folds: Sequence[int] = (1, 2, 3), methods: Sequence[str] = DEFAULT_METHODS, head_init: str = "random",
                config: str | Path | None = None, overrides: Sequence[str] = (), workers: int = 1,
                launcher: str = "local", launcher_options: dict | None = None, keep_checkpoints: bool = False,
                log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every pending row, then write the reports; returns the run summary, the notes and report paths."""
    from zeroi2v.fewshot.aggregate import write_reports
    from zeroi2v.rows import ResultStore, run_rows
    out = Path(out)
    recipe = load_recipe(config, overrides)
    rows, notes = plan_rows(tasks, shots, folds, methods, head_init, recipe, out, keep_checkpoints)
    labels = report_order([*(method_label(m, head_init) for m in methods),
                           *(r["key"]["method"] for r in ResultStore(out).rows())])
    for note in dict.fromkeys(notes):
        log(f"[fewshot] note: {note}")
    store = ResultStore(out)
    log(f"[fewshot] {len(rows)} rows ({len(tasks)} tasks × shots {list(shots)} × folds {list(folds)} × "
        f"{len(methods)} methods) in {out}")
    summary = run_rows(rows, store, workers=workers, launcher=launcher, launcher_options=launcher_options,
                       log=log, describe=describe)
    finished = store.rows()  # the report covers every row of the folder, earlier invocations' too
    reports = write_reports(finished, out, methods=labels) if finished else {}
    if reports:
        log(f"[fewshot] results: {reports['md']} (+ {reports['csv'].name}, {reports['png'].name})")
    return {"summary": summary, "notes": notes, "reports": reports, "rows": len(rows)}


def add_cli(sub) -> None:
    p = sub.add_parser("fewshot", help="few-shot VidTAB: one resumable result row per (task, shots, fold, method)",
                       description="Run the VidTAB few-shot protocol (or the offline synthetic suite, --suite) "
                                   "as resumable rows; writes OUT/rows/*.json, OUT/results.md, results.csv and "
                                   "accuracy_vs_shots.png.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--root", help="VidTAB root: one folder per task (label_map.txt, test list, train_K_foldF.txt)")
    src.add_argument("--train-list", help="your own task: an mmaction list to sample --shots per class from")
    src.add_argument("--suite", action="store_true", help="the offline synthetic suite (generated, then run)")
    p.add_argument("--test-list", help="with --train-list: the test list")
    p.add_argument("--label-map", help="with --train-list: class names, one per line")
    p.add_argument("--name", default="my_task", help="with --train-list: the task's name")
    p.add_argument("--video-root", help="folder the lists' video paths are relative to ('{task}' is replaced)")
    p.add_argument("--tasks", nargs="+", default=["all"], help="task names, or 'all'")
    p.add_argument("--shots", nargs="+", type=int, default=None, help="default: 4 16 100 (suite: 4 16)")
    p.add_argument("--folds", nargs="+", type=int, default=[1, 2, 3])
    p.add_argument("--methods", nargs="+", default=None,
                   help=f"default: {' '.join(DEFAULT_METHODS)} (suite: zeroi2v no_stdha linear_probe zero_shot)")
    p.add_argument("--head-init", choices=("random", "text"), default="random",
                   help="start trained heads from the class names through CLIP's text tower")
    p.add_argument("--config", help="the recipe (default: zeroi2v/configs/fewshot/vidtab.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value, e.g. --set model.backbone=ViT-B-16 (repeatable)")
    p.add_argument("--out", default=None, help="output folder (default: runs/fewshot, suite: runs/fewshot_suite)")
    p.add_argument("--seed", type=int, default=0, help="fold sampling (--train-list) and the suite's data")
    add_runner_options(p)
    p.set_defaults(func=cmd_fewshot)


def cmd_fewshot(a: argparse.Namespace) -> int:
    from zeroi2v.fewshot.tasks import find_tasks, task_from_lists
    common = dict(folds=a.folds, head_init=a.head_init, **runner_options(a))
    if a.suite:
        from zeroi2v.fewshot.offline import run_suite
        result = run_suite(a.out or "runs/fewshot_suite", seed=a.seed, shots=a.shots or (4, 16), methods=a.methods,
                           tasks=None if a.tasks == ["all"] else a.tasks, config=a.config, overrides=a.overrides,
                           **common)
    else:
        out = Path(a.out or "runs/fewshot")
        shots = a.shots or ([4, 16] if a.train_list else [4, 16, 100])
        if a.train_list:
            if not a.test_list:
                raise ValueError("--train-list needs --test-list (and --label-map for class names)")
            tasks = [task_from_lists(a.name, a.train_list, a.test_list, a.label_map, shots, a.folds,
                                     a.seed, out / "splits", video_root=a.video_root)]
        else:
            tasks, problems = find_tasks(a.root, a.tasks if a.tasks != ["all"] else "all", video_root=a.video_root)
            for line in problems:
                print(f"[fewshot] {line}")
            if not tasks:
                raise FileNotFoundError(f"no task found under {a.root}: see the lines above")
        result = run_fewshot(tasks, out, shots=shots, methods=a.methods or DEFAULT_METHODS,
                             config=a.config, overrides=a.overrides, **common)
    failed = result["summary"].failed
    if failed:
        print(f"[fewshot] {len(failed)} row(s) failed: " + "; ".join(f"{rid}: {msg}" for rid, msg in failed))
        return 1
    return 0
