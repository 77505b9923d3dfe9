"""``zeroi2v ablate``: the paper's comparison tables as one resumable command over a grid of config changes.

    zeroi2v ablate --config configs/ssv2_vit_b16_8f.yaml --grid configs/ablations/table1a_temporal.yaml \\
        --seeds 0 1 2 --out runs/table1a --workers 4
    zeroi2v ablate --synthetic runs/ablate_data --grid configs/ablations/table3_placement.yaml --workers 2

A **grid file** (YAML) holds a ``title``, ``rows`` (each a name and a mapping of dotted config keys to values,
applied over the base config; ``{}`` is the base as it is) and, optionally, ``paper`` (``source``, a line
naming the table, and ``top1``: the paper's top-1 per row name, printed beside ours)::

    title: "Table 1a: zero-cost temporal operators"
    paper: {source: "ZeroI2V Table 1a (SSv2, ViT-B/16, 8 frames)", top1: {stdha: 66.0}}
    rows:
      stdha: {model.temporal.kind: stdha, model.temporal.offsets: "1x1,-1x1"}
      token_shift: {model.temporal.kind: token_shift}

A row's keys are merged into the base as a nested mapping (``zeroi2v.config_files.merge_data``), so a row
that names another ``kind`` of temporal operator or adapter replaces that whole spec (its other keys belong
to the old kind), and ``model.adapter: null`` removes the adapters. Each row is checked before anything
runs; a bad one fails with the grid file, the row and the dotted key.

**Rows.** One result row per (row, seed) through ``zeroi2v.rows`` (the few-shot runner's store, resume and
``--workers``/``--launcher``): ``OUT/rows/<row>__seed<S>.json`` is written when its run ends, a rerun skips
it; each run trains in ``OUT/runs/<row>__seed<S>/`` (config, ``train.log``, results; the checkpoint only
with ``--keep-checkpoints``). What a row measures: ``zeroi2v.ablate_row``. The table: ``OUT/results.md``,
``results.csv`` and ``top1.png`` (``zeroi2v.ablate_report``).

**Synthetic set.** ``--synthetic DIR`` builds (or reuses, cached) the quickstart's image model and a small
synthetic temporal video set in DIR (``zeroi2v.quickstart.ensure_image_model``, ``ensure_videos``) and runs
the grid over ``zeroi2v/configs/ablations/synthetic.yaml`` (unless ``--config`` names another base).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from zeroi2v.config_files import PACKAGE_DIR

SYNTHETIC_BASE = PACKAGE_DIR / "configs" / "ablations" / "synthetic.yaml"
GRID_KEYS = ("title", "paper", "rows")
PAPER_KEYS = ("source", "top1")
VOLATILE = (("train", "out_dir"), ("train", "progress"))
"""Config keys that do not change a row's result: left out of its config hash (a moved --out resumes)."""

SYNTHETIC_SIZES: dict[str, dict[str, Any]] = {
    "default": {"image": {}, "videos_per_class": (40, 20), "set": {}},
    "small": {"image": {"backbone": "zeroi2v-micro", "images": 600, "pretrain_epochs": 1},
              "videos_per_class": (6, 4), "set": {"optim.epochs": 1, "optim.warmup_epochs": 0}},
}
"""``--synthetic-size``. default: the quickstart's own image model (the tiny ViT, so ``--synthetic`` on a
quickstart folder reuses its cached model) and 40 train / 20 test videos per class of its ten classes, sized
so one row trains in well under a minute on one core; small: the micro ViT, a handful of videos and one
epoch, for tests and the notebook's quick mode (its numbers mean nothing)."""


@dataclass
class Grid:
    """A grid file, read and checked for shape (``read_grid``)."""
    path: Path
    title: str
    rows: dict[str, dict[str, Any]]
    """Row name -> {dotted key: value}."""
    paper: dict[str, float] = field(default_factory=dict)
    """Row name -> the paper's top-1 (%)."""
    source: str = ""
    """Where the paper's numbers come from (table, data set, backbone)."""


def read_grid(path: str | Path) -> Grid:
    """A grid file, its shape checked: one-line errors naming the file (and the row)."""
    from zeroi2v.config_files import read_yaml
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"grid file not found: {path}")
    data = read_yaml(path)
    if not isinstance(data, dict) or not isinstance(data.get("rows"), dict) or not data["rows"]:
        raise ValueError(f"{path}: a grid file holds 'rows:', a mapping of row names to mappings of dotted "
                         f"config keys (e.g. stdha: {{model.temporal.kind: stdha}})")
    unknown = sorted(set(data) - set(GRID_KEYS))
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {unknown}; a grid file has {list(GRID_KEYS)}")
    rows = {}
    for name, changes in data["rows"].items():
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{path}: row name {name!r} must be a non-empty string")
        changes = {} if changes is None else changes
        if not isinstance(changes, dict) or not all(isinstance(k, str) and k.strip() for k in changes):
            raise ValueError(f"{path}: row {name!r} must map dotted config keys to values "
                             f"(e.g. model.temporal.kind: stdha), got {changes!r}")
        rows[name] = changes
    paper = data.get("paper") or {}
    if not isinstance(paper, dict) or set(paper) - set(PAPER_KEYS):
        raise ValueError(f"{path}: 'paper' takes {list(PAPER_KEYS)} (source: a line naming the table; top1: "
                         f"row name -> the paper's top-1 in percent)")
    top1 = paper.get("top1") or {}
    bad = [k for k, v in top1.items() if k not in rows or isinstance(v, bool) or not isinstance(v, (int, float))]
    if bad:
        raise ValueError(f"{path}: paper.top1 entries {bad} must be row names of this grid with a number")
    return Grid(path, str(data.get("title") or path.stem), rows, {k: float(v) for k, v in top1.items()},
                str(paper.get("source") or ""))


def nest(changes: dict[str, Any]) -> dict[str, Any]:
    """{"model.temporal.kind": "stdha"} -> {"model": {"temporal": {"kind": "stdha"}}}."""
    out: dict[str, Any] = {}
    for key, value in changes.items():
        node, parts = out, key.strip().split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"{key!r} sets inside {part!r}, which another key of the row sets to a value")
            node = child
        if isinstance(node.get(parts[-1]), dict) and isinstance(value, dict):
            from zeroi2v.config_files import merge_data
            value = merge_data(node[parts[-1]], value)
        node[parts[-1]] = value
    return out


def row_data(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """The base config data with a row's dotted changes merged in (see the module docstring)."""
    from zeroi2v.config_files import merge_data
    return merge_data(base, nest(changes))


def _config(data: dict[str, Any]):
    from zeroi2v.config import config_from_data
    return config_from_data(data, notice=False).validate()


def check_row(grid: Grid, name: str, base: dict[str, Any]):
    """The row's validated ``Config``; a bad row names the grid file, the row and the dotted key at fault
    (the key whose removal makes the row valid; every key of the row when no single one does)."""
    changes = grid.rows[name]
    try:
        return _config(row_data(base, changes))
    except ValueError as e:
        error = " ".join(str(e).split())
    culprits = []
    for key in changes:
        try:
            _config(row_data(base, {k: v for k, v in changes.items() if k != key}))
            culprits.append(key)
        except ValueError:
            continue
    keys = culprits[:1] or list(changes) or ["(none: the base config itself)"]
    raise ValueError(f"{grid.path}: row {name!r}, key {', '.join(map(repr, keys))}: {error}") from None


def base_data(config: str | Path, overrides: Sequence[str] = (), changes: dict[str, Any] | None = None
              ) -> dict[str, Any]:
    """The base config's data (its ``base:`` chain merged), then dotted ``changes`` (``prepare_synthetic``'s),
    then the ``--set`` overrides; not yet validated (``check_row`` validates each row)."""
    from zeroi2v.config import Config
    from zeroi2v.config_files import apply_overrides, read_chain
    try:
        return apply_overrides(row_data(read_chain(config), changes or {}), overrides, Config)
    except ValueError as e:
        raise ValueError(f"{config}: {e}") from None


def _hashable(cfg_dict: dict[str, Any]) -> dict[str, Any]:
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in cfg_dict.items()}
    for section, key in VOLATILE:
        out.get(section, {}).pop(key, None)
    return out


def plan_rows(grid: Grid, base: dict[str, Any], seeds: Sequence[int], out: Path,
              keep_checkpoints: bool = False) -> list[Any]:
    """One ``zeroi2v.rows.Row`` per (row, seed), every row checked first (``check_row``)."""
    from zeroi2v.rows import Row, config_hash
    if not seeds:
        raise ValueError("--seeds needs at least one seed")
    checked = {name: check_row(grid, name, base) for name in grid.rows}
    rows = []
    for name, cfg in checked.items():
        for seed in seeds:
            key = {"row": name, "seed": int(seed)}
            run = replace(cfg, train=replace(cfg.train, seed=int(seed), progress=False))
            defining = _hashable(run.to_dict())
            rid = Row(key=key, fn="").id
            run = replace(run, train=replace(run.train, out_dir=str(out / "runs" / rid)))
            rows.append(Row(key=key, fn="zeroi2v.ablate_row:run_row", config_hash=config_hash(defining),
                            kwargs={"name": name, "config": run.to_dict(), "keep_checkpoint": keep_checkpoints}))
    return rows


def prepare_synthetic(folder: str | Path, size: str = "default", seed: int = 0,
                      log: Callable[[str], None] = print) -> dict[str, Any]:
    """Build (or reuse) the image model and the video set in ``folder``; returns the dotted changes that point
    the synthetic base config at them (backbone, data lists, classes), then the size's own."""
    from zeroi2v.quickstart import QuickstartSettings, ensure_image_model, ensure_videos
    if size not in SYNTHETIC_SIZES:
        raise ValueError(f"--synthetic-size {size!r}: use one of {list(SYNTHETIC_SIZES)}")
    preset = SYNTHETIC_SIZES[size]
    folder = Path(folder)
    s = replace(QuickstartSettings(), **preset["image"], videos_per_class=tuple(preset["videos_per_class"]))
    image_dir = folder / ("image_model" if size == "default" else f"image_model_{size}")
    ensure_image_model(s, folder, image_dir, seed, log)
    videos = folder / f"ablation_videos_{size}"
    ensure_videos(s, videos, seed, log)
    classes = (videos / "classes.txt").read_text().split()
    return {"model.backbone": f"local-dir:{image_dir}", "model.num_classes": len(classes),
            "data.root": str(videos), "data.train_ann": str(videos / "train.txt"),
            "data.test_ann": str(videos / "test.txt"), "data.format_args": {"classes": classes}, **preset["set"]}


def describe(result: dict[str, Any]) -> str:
    return f"top-1 {result['top1']:.3f}, {result['train_clips_per_s']:.1f} clips/s"


def run_ablate(grid: str | Path, out: str | Path, config: str | Path | None = None, seeds: Sequence[int] = (0,),
               overrides: Sequence[str] = (), synthetic: str | Path | None = None, synthetic_size: str = "default",
               workers: int = 1, launcher: str = "local", launcher_options: dict | None = None,
               keep_checkpoints: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Check every row, run the pending (row, seed) pairs, write the table; returns the run summary, the
    number of rows and the report paths."""
    from zeroi2v.ablate_report import write_reports
    from zeroi2v.rows import ResultStore, run_rows
    out, grid = Path(out), read_grid(grid)
    if config is None and synthetic is None:
        raise ValueError("give the base config (--config FILE), or --synthetic DIR for the synthetic set")
    changes = prepare_synthetic(synthetic, synthetic_size, log=log) if synthetic is not None else {}
    base = base_data(config or SYNTHETIC_BASE, overrides, changes)
    rows = plan_rows(grid, base, seeds, out, keep_checkpoints)
    log(f"[ablate] {grid.title}: {len(grid.rows)} rows × seeds {list(seeds)} in {out}")
    store = ResultStore(out)
    summary = run_rows(rows, store, workers=workers, launcher=launcher, launcher_options=launcher_options,
                       log=log, describe=describe)
    finished = [r for r in store.rows() if r.get("key", {}).get("row") in grid.rows]
    reports = write_reports(finished, out, grid) if finished else {}
    if reports:
        log(f"[ablate] results: {reports['md']} (+ {reports['csv'].name}, {reports['png'].name})")
    return {"summary": summary, "rows": len(rows), "reports": reports}


def add_cli(sub) -> None:
    from zeroi2v.rows_cli import add_runner_options
    p = sub.add_parser("ablate", help="a grid of config changes × seeds as resumable rows, tabled like the "
                                      "paper's Table 3",
                       description="Train every (grid row, seed) over a base config as resumable rows; writes "
                                   "OUT/rows/*.json, OUT/results.md, results.csv and top1.png.")
    p.add_argument("--grid", required=True, help="grid file (configs/ablations/*.yaml, or your own)")
    p.add_argument("--config", help="base config every row changes (default with --synthetic: "
                                    "zeroi2v/configs/ablations/synthetic.yaml)")
    p.add_argument("--synthetic", metavar="DIR", help="build or reuse the synthetic set and image model in DIR")
    p.add_argument("--synthetic-size", choices=tuple(SYNTHETIC_SIZES), default="default",
                   help="default: the quickstart's tiny ViT, 40/20 videos per class; small: a quick try")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="train.seed of each run (default: 0)")
    p.add_argument("--out", default=None, help="output folder (default: runs/ablate/<grid name>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a base config value for every row, e.g. --set optim.epochs=5 (repeatable)")
    add_runner_options(p)
    p.set_defaults(func=cmd_ablate)


def cmd_ablate(a: argparse.Namespace) -> int:
    from zeroi2v.rows_cli import runner_options
    result = run_ablate(a.grid, a.out or Path("runs/ablate") / Path(a.grid).stem, config=a.config, seeds=a.seeds,
                        overrides=a.overrides, synthetic=a.synthetic, synthetic_size=a.synthetic_size,
                        **runner_options(a))
    failed = result["summary"].failed
    if failed:
        print(f"[ablate] {len(failed)} row(s) failed: " + "; ".join(f"{rid}: {msg}" for rid, msg in failed))
        return 1
    return 0
