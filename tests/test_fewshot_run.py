"""``zeroi2v fewshot``: rows of every method on a micro suite, resume after a kill, failures, text init.

The fixture builds the offline suite at micro size: the quickstart's micro image model with a LiT text
tower (``ensure_clip_model``) and two synthetic tasks with 2-shot folds (``make_suite``).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from zeroi2v.cli import main
from zeroi2v.fewshot.offline import ensure_clip_model
from zeroi2v.fewshot.run import load_recipe, run_fewshot
from zeroi2v.fewshot.suite import make_suite
from zeroi2v.fewshot.tasks import find_tasks

ROOT = Path(__file__).resolve().parents[1]
MICRO = dict(backbone="zeroi2v-micro", images=600, pretrain_epochs=1)
TASKS = ["Dark_Scene", "Small_Objects"]


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    out = tmp_path_factory.mktemp("fewshot")
    image_dir = ensure_clip_model(out, seed=0, image=MICRO, log=lambda *_: None)
    make_suite(out / "data", seed=0, tasks=TASKS, pool_per_class=4, test_per_class=3, shots=(2,), folds=2,
               log=lambda *_: None)
    recipe = out / "recipe.yaml"
    recipe.write_text(f"base: zeroi2v:configs/fewshot/synthetic.yaml\nmodel:\n  backbone: local-dir:{image_dir}\n"
                      "optim:\n  epochs: 2\n  warmup_epochs: 1\ntrain:\n  batch_size: 4\n  total_batch: 4\n")
    return out, image_dir, recipe


def _rows(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "rows").glob("*.json"))]


def test_every_method_gives_its_row_and_the_report(suite, tmp_path):
    root, image_dir, recipe = suite
    tasks, problems = find_tasks(root / "data", TASKS)
    assert not problems
    result = run_fewshot(tasks, tmp_path, shots=[2], folds=[1, 2],
                         methods=["zeroi2v", "no_stdha", "full_finetune", "linear_probe", "zero_shot"],
                         config=recipe, log=lambda *_: None)
    assert result["summary"].failed == [] and result["summary"].done == 2 * 2 * 5
    rows = _rows(tmp_path)
    assert len(rows) == 20 and len({json.dumps(r["key"], sort_keys=True) for r in rows}) == 20
    width = 48  # zeroi2v-micro
    for r in rows:
        k, classes = r["key"], r["classes"]
        assert classes == tasks[TASKS.index(k["task"])].classes and len(r["confusion"]) == len(classes)
        assert sum(map(sum, r["confusion"])) == r["test_clips"] == 3 * len(classes)
        assert r["best_top1"] >= r["top1"] - 1e-9 and r["seconds"] > 0
        if k["method"] in ("zeroi2v", "no_stdha", "full_finetune"):
            assert r["train_clips"] == 2 * len(classes) and r["top1_curve"][-1] == [2, pytest.approx(r["top1"])]
            assert r["best_top1"] == pytest.approx(max(a for _, a in r["top1_curve"]))
            assert not (tmp_path / "runs" / r["id"] / "checkpoint.pt").exists()  # rows keep no checkpoint
            assert (tmp_path / "runs" / r["id"] / "train.log").read_text().count("epoch 2/2") == 1
        elif k["method"] == "linear_probe":
            assert r["trainable_params"] == (width + 1) * len(classes)
        else:
            assert r["trainable_params"] == 0 and r["best_top1"] == r["top1"]
    params = {r["key"]["method"]: r["trainable_params"] for r in rows if r["key"]["task"] == "Dark_Scene"}
    assert params["full_finetune"] > params["zeroi2v"] > params["linear_probe"] > 0
    assert params["no_stdha"] == params["zeroi2v"]  # STDHA adds no parameter
    # zero-shot is the same for every fold (no training) and reads the text tower: Small_Objects' classes are
    # shape words the LiT tower learnt, so it is not at chance there (4 classes, 12 clips)
    shots = [r["top1"] for r in rows if r["key"]["method"] == "zero_shot" and r["key"]["task"] == "Small_Objects"]
    assert shots[0] == shots[1]
    md = (tmp_path / "results.md").read_text()
    for name in ("zeroi2v", "no_stdha", "full_finetune", "linear_probe", "zero_shot", "Dark_Scene", "Small_Objects",
                 "mean top-1 over tasks"):
        assert name in md
    assert (tmp_path / "accuracy_vs_shots.png").stat().st_size > 1000
    # the features were computed once per list: one file per (train fold list, test list) of each task
    assert len(list((tmp_path / "features").glob("*.safetensors"))) == 2 * 3


def test_zero_shot_equals_the_text_head_on_the_model(suite, tmp_path):
    """zero_shot's top-1 is the text-initialised head of the video model (no adapters, spatial heads)."""
    from zeroi2v.data.build import build_datasets
    from zeroi2v.evaluate import evaluate
    from zeroi2v.fewshot.methods import FeatureMethod  # noqa: F401  (the method reads the cached features)
    from zeroi2v.model import create_model
    from zeroi2v.text_head import init_head_from_text
    from zeroi2v.config import config_from_data
    root, image_dir, recipe = suite
    tasks, _ = find_tasks(root / "data", ["Small_Objects"])
    run_fewshot(tasks, tmp_path, shots=[2], folds=[1], methods=["zero_shot"], config=recipe, log=lambda *_: None)
    (row,) = _rows(tmp_path)
    task = tasks[0]
    cfg = config_from_data(load_recipe(recipe, [f"data.val_ann={task.test_list}", f"data.root={task.video_root}",
                                                "data.format_args={classes: " + json.dumps(task.classes) + "}",
                                                f"model.num_classes={len(task.classes)}"]))
    model = create_model(cfg.model, adapter=None, temporal={"kind": "stdha", "offsets": None}, temporal_embedding=False)
    init_head_from_text(model, task.classes)
    _, val_set, _ = build_datasets(cfg, model.image_size, splits=("val",))
    res = evaluate(model.eval(), val_set, len(task.classes))
    assert row["top1"] == pytest.approx(res["top1"], abs=1e-6)
    assert row["confusion"] == res["confusion"].tolist()


def test_text_head_init_rows_are_their_own_method(suite, tmp_path):
    root, image_dir, recipe = suite
    tasks, _ = find_tasks(root / "data", ["Small_Objects"])
    common = dict(shots=[2], folds=[1], config=recipe, log=lambda *_: None)
    run_fewshot(tasks, tmp_path, methods=["linear_probe"], **common)
    run_fewshot(tasks, tmp_path, methods=["linear_probe"], head_init="text", **common)
    rows = {r["key"]["method"]: r for r in _rows(tmp_path)}
    assert set(rows) == {"linear_probe", "linear_probe+text"}
    assert rows["linear_probe+text"]["head_init"] == "text" and rows["linear_probe"]["head_init"] == "random"
    md = (tmp_path / "results.md").read_text()
    assert "linear_probe+text" in md  # the report covers both invocations' rows


def test_a_method_that_fails_costs_its_row_only(suite, tmp_path):
    """zero_shot on an image-only backbone (no text tower) fails with the reason; the other rows are written
    and the command exits 1."""
    root, image_dir, recipe = suite
    image_only = tmp_path / "image_only"
    image_only.mkdir()
    from safetensors.torch import load_file, save_file
    sd = load_file(str(image_dir / "open_clip_model.safetensors"))
    save_file({k: v for k, v in sd.items() if k.startswith("visual.")}, str(image_only / "open_clip_model.safetensors"))
    (image_only / "open_clip_config.json").write_text((image_dir / "open_clip_config.json").read_text())
    out = tmp_path / "out"
    code = main(["fewshot", "--root", str(root / "data"), "--tasks", "Small_Objects", "--shots", "2", "--folds", "1",
                 "--methods", "linear_probe", "zero_shot", "--config", str(recipe),
                 "--set", f"model.backbone=local-dir:{image_only}", "--out", str(out)])
    assert code == 1
    assert [r["key"]["method"] for r in _rows(out)] == ["linear_probe"]


def test_missing_task_is_reported_and_the_others_run(suite, tmp_path, capsys):
    root, image_dir, recipe = suite
    code = main(["fewshot", "--root", str(root / "data"), "--tasks", "Small_Objects", "AR_in_Dark", "--shots", "2",
                 "--folds", "1", "--methods", "linear_probe", "--config", str(recipe), "--out", str(tmp_path)])
    assert code == 0
    assert "AR_in_Dark" in capsys.readouterr().out
    assert [r["key"]["task"] for r in _rows(tmp_path)] == ["Small_Objects"]


def test_the_runner_resumes_after_a_kill(suite, tmp_path):
    """Kill ``zeroi2v fewshot`` once its first row is written; the rerun skips it (the file is untouched),
    runs the rest, and no row is written twice."""
    root, image_dir, recipe = suite
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "zeroi2v", "fewshot", "--root", str(root / "data"), "--tasks", "Dark_Scene",
           "--shots", "2", "--folds", "1", "2", "--methods", "zeroi2v", "no_stdha", "--config", str(recipe),
           "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not list((out / "rows").glob("*.json")) and proc.poll() is None:
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    first = list((out / "rows").glob("*.json"))
    assert len(first) == 1, "the run was not killed after its first row"
    before = (first[0].read_bytes(), first[0].stat().st_mtime_ns)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "1 finished earlier, 3 to run" in done.stdout
    rows = _rows(out)
    assert len(rows) == 4 and len({json.dumps(r["key"], sort_keys=True) for r in rows}) == 4
    assert (first[0].read_bytes(), first[0].stat().st_mtime_ns) == before
    assert torch.tensor([r["top1"] for r in rows]).ge(0).all()


def test_your_own_list_runs_with_no_code_change(suite, tmp_path, capsys):
    """One mmaction list + --shots: the folds are sampled into OUT/splits and the rows run, with no note about
    shots the command was not asked for."""
    root, image_dir, recipe = suite
    task = root / "data" / "Small_Objects"
    code = main(["fewshot", "--train-list", str(task / "train_pool.txt"), "--test-list", str(task / "test.txt"),
                 "--label-map", str(task / "label_map.txt"), "--video-root", str(task), "--name", "mine",
                 "--shots", "2", "--folds", "1", "2", "--methods", "linear_probe", "--config", str(recipe),
                 "--out", str(tmp_path)])
    assert code == 0 and "note:" not in capsys.readouterr().out
    assert sorted((r["key"]["task"], r["key"]["fold"]) for r in _rows(tmp_path)) == [("mine", 1), ("mine", 2)]
    assert sorted(p.name for p in (tmp_path / "splits" / "mine").glob("train_*.txt")) == \
        ["train_2_fold1.txt", "train_2_fold2.txt"]
