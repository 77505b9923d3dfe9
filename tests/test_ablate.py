"""``zeroi2v ablate``: a user's own grid over their own config through the CLI, resume, the table's columns for
a mergeable and a non-mergeable row, bad grid keys, and the shipped grids (checked, not trained).

The fixture is a user's setup: a micro ViT with random weights and a few synthetic videos of two classes.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from zeroi2v.ablate import SYNTHETIC_BASE, base_data, plan_rows, read_grid
from zeroi2v.cli import main
from zeroi2v.config import load_config
from zeroi2v.data.synthetic import make_synthetic_videos

ROOT = Path(__file__).resolve().parents[1]
FRAMES, WIDTH = 4, 48  # zeroi2v-micro: width 48


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ablate")
    videos = tmp / "videos"
    make_synthetic_videos(videos, seed=0, classes=["move_left", "move_right"], num_frames=FRAMES, size=32,
                          videos_per_class={"train": 3, "test": 2})
    config = tmp / "mine.yaml"
    config.write_text(f"""
model: {{backbone: zeroi2v-micro, pretrained: null, num_classes: 2, num_frames: {FRAMES}, head_dropout: 0.0,
        temporal: {{kind: stdha, offsets: "1x1,-1x1"}}, adapter: {{kind: linear, placement: '4', ratio: 0.25}}}}
data: {{root: {videos}, train_ann: {videos / 'train.txt'}, test_ann: {videos / 'test.txt'}, size: 32, short_side: 32,
       randaugment: null, flip: 0.0, workers: 0, crop_scale: [1.0, 1.0]}}
optim: {{epochs: 1, warmup_epochs: 0, lr: 1.0e-3}}
train: {{batch_size: 2, total_batch: 2, device: cpu, eval_every: 0, save_every: 1}}
test: {{clips: 2, crops: 1, batch_size: 4, short_side: 32}}
""")
    grid = tmp / "my_grid.yaml"
    grid.write_text("title: my three rows\npaper: {source: made up, top1: {linear: 50.0}}\nrows:\n"
                    "  linear: {}\n"
                    "  gelu: {model.adapter.kind: gelu}\n"
                    "  no_temporal: {model.temporal.kind: none}\n")
    return tmp, config, grid


def _rows(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((out / "rows").glob("*.json"))}


def _adapter_params(config: Path, **changes) -> tuple[int, int]:
    """(parameters inside adapters, trainable parameters) of a freshly built model of the config."""
    from zeroi2v.model import create_model
    cfg = load_config(config, [f"{k}={v}" for k, v in changes.items()])
    model = create_model(cfg.model)
    return (sum(p.numel() for n, p in model.named_parameters() if ".adapters." in n),
            sum(p.numel() for p in model.parameters() if p.requires_grad))


def test_user_grid_runs_resumes_and_tables_its_columns(setup, capsys):
    tmp, config, grid = setup
    out = tmp / "out"
    args = ["ablate", "--config", str(config), "--grid", str(grid), "--out", str(out)]
    assert main([*args, "--seeds", "0"]) == 0
    first = _rows(out)
    assert sorted(first) == ["gelu__seed0", "linear__seed0", "no_temporal__seed0"]
    stamps = {k: (out / "rows" / f"{k}.json").stat().st_mtime_ns for k in first}
    capsys.readouterr()
    # resume: a second seed runs the new rows only; the finished ones are skipped, never rewritten
    assert main([*args, "--seeds", "0", "1"]) == 0
    log = capsys.readouterr().out
    assert "6 rows" in log and "3 finished earlier, 3 to run" in log
    rows = _rows(out)
    assert len(rows) == 6 and all((out / "rows" / f"{k}.json").stat().st_mtime_ns == t for k, t in stamps.items())
    assert all(rows[k] == v for k, v in first.items())
    assert main([*args, "--seeds", "0", "1"]) == 0 and "6 finished earlier, 0 to run" in capsys.readouterr().out

    embedding = FRAMES * WIDTH
    lin, gelu, none = rows["linear__seed0"], rows["gelu__seed0"], rows["no_temporal__seed0"]
    # mergeable: after merging, the only new inference parameters are the temporal embedding
    assert lin["mergeable"] is True and lin["new_params"] == lin["temporal_embedding_params"] == embedding
    assert lin["extra_gflops"] == 0 and lin["gflops"] > 0
    # not mergeable: deployed unmerged, its adapters are new parameters and cost FLOPs
    gelu_adapters, gelu_trainable = _adapter_params(config, **{"model.adapter.kind": "gelu"})
    assert gelu["mergeable"] is False and "not mergeable" in gelu["merge_note"] and "GELU" in gelu["merge_note"]
    assert gelu["new_params"] == embedding + gelu_adapters > embedding and gelu["extra_gflops"] > 0
    assert gelu["tunable_params"] == gelu_trainable
    assert lin["tunable_params"] == _adapter_params(config)[1] == none["tunable_params"]  # operators: 0 params
    assert lin["views"] == 2 and lin["test_clips"] == 4 and lin["train_clips"] == 6

    md = (out / "results.md").read_text()
    for text in ("my three rows", "tunable params", "new inference params", "GFLOPs", "paper top-1", "not mergeable",
                 "| linear |", "| gelu |", "| no_temporal |", "50.0", "made up"):
        assert text in md
    table = {r["row"]: r for r in csv.DictReader((out / "results.csv").open())}
    assert list(table) == ["linear", "gelu", "no_temporal"]  # grid order
    top1 = [rows[f"gelu__seed{s}"]["top1"] for s in (0, 1)]
    assert table["gelu"]["seeds"] == "0 1" and float(table["gelu"]["top1_mean"]) == pytest.approx(sum(top1) / 2)
    assert int(table["gelu"]["new_params"]) == gelu["new_params"] and table["linear"]["paper_top1"] == "50.0"
    assert (out / "top1.png").stat().st_size > 0
    assert not list((out / "runs").glob("*/checkpoint.pt"))  # no checkpoints kept without --keep-checkpoints
    assert (out / "runs" / "linear__seed1" / "train.log").read_text().strip()


@pytest.mark.parametrize("row, key", [("typo: {model.temporl.kind: stdha}", "model.temporl.kind"),
                                      ("bad_kind: {model.adapter.kind: lora, model.adapter.rnak: 4}",
                                       "model.adapter.rnak"),
                                      ("bad_value: {optim.epochs: 0, model.num_frames: 4}", "optim.epochs")])
def test_a_bad_grid_key_names_file_row_and_key(setup, tmp_path, capsys, row, key):
    _, config, _ = setup
    grid = tmp_path / "bad.yaml"
    grid.write_text(f"rows:\n  fine: {{}}\n  {row}\n")
    rc = main(["ablate", "--config", str(config), "--grid", str(grid), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    name = row.split(":")[0]
    assert rc == 2 and len(err.splitlines()) == 1
    assert str(grid) in err and f"row {name!r}" in err and repr(key) in err
    assert not (tmp_path / "out" / "rows").exists()  # nothing ran


def test_the_shipped_grids_validate_against_the_synthetic_base(tmp_path):
    base = base_data(SYNTHETIC_BASE)
    grids = {p.stem: read_grid(p) for p in sorted((ROOT / "configs" / "ablations").glob("*.yaml"))}
    assert set(grids) == {"table1a_temporal", "table1b_heads", "table2_adapters", "table3_placement"}
    for name, grid in grids.items():
        rows = plan_rows(grid, base, [0, 1, 2], tmp_path)  # every row checked, nothing trained
        assert len(rows) == 3 * len(grid.rows) >= 6 and grid.paper and set(grid.paper) <= set(grid.rows)
        kinds = {(r.kwargs["config"]["model"]["temporal"]["kind"], (r.kwargs["config"]["model"]["adapter"] or {})
                  .get("kind"), r.kwargs["config"]["model"]["finetune"]) for r in rows}
        if name == "table1a_temporal":
            assert {k[0] for k in kinds} == {"stdha", "token_shift", "channel_shift", "none"}
        if name == "table3_placement":
            assert {k[1] for k in kinds} == {"linear", "lora", "gelu", "st_adapter", None}
            assert {k[2] for k in kinds} == {"adapters", "full", "linear_probe", "temporal_heads"}
