"""Issue 11, item 1: class names survive from the training annotation to the run's config and checkpoint,
the merged checkpoint, ``predict``, ``eval`` and the demo; explicit ``model.class_names`` win when they fit;
a run without names says so once and shows 'class N'."""
import json
from pathlib import Path

import pytest
import torch
import yaml

from zeroi2v.cli import main

CLASSES = ["move_left", "move_right", "colour_change"]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    assert main(["make-synthetic", "--out", str(out), "--per-class", "2,1,1", "--frames", "8",
                 "--classes", ",".join(CLASSES)]) == 0
    assert (out / "classes.txt").read_text().split() == CLASSES
    return out


def class_file(synthetic: Path) -> str:
    """The data keys that name the classes of the synthetic mmaction lists (its classes.txt)."""
    return f", format_args: {{classes: {synthetic}/classes.txt}}"


def write_cfg(path: Path, synthetic: Path, out_dir: Path, data_extra: str = "", model_extra: str = "") -> Path:
    """A one-epoch micro run on the synthetic mmaction lists (labels are numbers; names only from extras)."""
    path.write_text(f"""
model: {{backbone: zeroi2v-micro, num_classes: 3, num_frames: 4, temporal: {{offsets: "1x1,-1x1"}}{model_extra}}}
data: {{format: mmaction, root: {synthetic}, train_ann: {synthetic}/train.txt, test_ann: {synthetic}/test.txt,
        randaugment: null, short_side: 32, workers: 0{data_extra}}}
optim: {{epochs: 1, warmup_epochs: 0}}
train: {{batch_size: 2, total_batch: 2, out_dir: {out_dir}, progress: false, device: cpu}}
test: {{clips: 1, crops: 1}}
""")
    return path


def test_names_from_an_mmaction_class_file_reach_predict_eval_and_the_demo(synthetic, tmp_path, capsys):
    from zeroi2v.demo.backend import DemoBackend
    from zeroi2v.run_folder import load_checkpoint, load_run
    run, merged = tmp_path / "run", tmp_path / "merged"
    cfg = write_cfg(tmp_path / "cfg.yaml", synthetic, run, data_extra=class_file(synthetic))
    assert main(["train", str(cfg)]) == 0
    assert "no class names" not in capsys.readouterr().out
    # the run folder records them: config.yaml, checkpoint.pt, and the model load_run rebuilds
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["class_names"] == CLASSES
    assert load_checkpoint(run / "checkpoint.pt")["config"]["model"]["class_names"] == CLASSES
    assert load_run(run).cfg.class_names == CLASSES
    # merge writes them
    assert main(["merge", str(run), "--out", str(merged)]) == 0
    config = json.loads((merged / "config.json").read_text())
    assert config["class_names"] == CLASSES and config["model"]["class_names"] == CLASSES
    # predict --json shows them
    video = synthetic / "test" / "move_left" / "move_left_0000.mp4"
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(merged), "--json", str(video)]) == 0
    rows = json.loads(capsys.readouterr().out)[str(video)]
    assert sorted(r["class"] for r in rows) == sorted(CLASSES)
    # eval prints them (per class) and keys results.json by them
    assert main(["eval", str(cfg), "--checkpoint", str(merged)]) == 0
    printed = capsys.readouterr().out
    assert all(name in printed for name in CLASSES)
    assert list(json.loads((merged / "eval" / "results.json").read_text())["per_class_accuracy"]) == CLASSES
    # the demo's class list and its top-5 of an analysed video
    backend = DemoBackend(merged, warmup=False)
    assert backend.class_names == CLASSES
    result = backend.analyse(video)
    top5 = [backend.class_names[i] for i in torch.as_tensor(result["probs"]).topk(3).indices.tolist()]
    assert sorted(top5) == sorted(CLASSES) and result["class_name"] in CLASSES


def test_explicit_names_win_and_a_wrong_length_is_refused(synthetic, tmp_path, capsys):
    classes_file = class_file(synthetic)
    bad = write_cfg(tmp_path / "bad.yaml", synthetic, tmp_path / "bad", data_extra=classes_file,
                    model_extra=", class_names: [a, b]")
    assert main(["train", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "model.class_names has 2 names" in err and "3 classes" in err
    assert not (tmp_path / "bad" / "config.yaml").exists()  # refused before the run started
    good = write_cfg(tmp_path / "good.yaml", synthetic, tmp_path / "good", data_extra=classes_file,
                     model_extra=", class_names: [left, right, colour]")
    assert main(["train", str(good), "--set", "train.max_steps=1"]) == 0
    assert yaml.safe_load((tmp_path / "good" / "config.yaml").read_text())["model"]["class_names"] == \
        ["left", "right", "colour"]


def test_a_run_without_names_says_so_once_and_shows_class_n(synthetic, tmp_path, capsys):
    run, merged = tmp_path / "run", tmp_path / "merged"
    cfg = write_cfg(tmp_path / "cfg.yaml", synthetic, run, model_extra="")
    assert main(["train", str(cfg), "--set", "optim.epochs=2", "--set", "train.max_steps=2"]) == 0
    captured = capsys.readouterr()
    assert (captured.out + captured.err).count("no class names") == 1
    # a resume keeps going although config.yaml now records what the run found (no names: null)
    assert main(["train", str(cfg), "--set", "optim.epochs=2", "--resume"]) == 0
    assert main(["merge", str(run), "--out", str(merged)]) == 0
    assert json.loads((merged / "config.json").read_text())["class_names"] is None
    video = synthetic / "test" / "move_left" / "move_left_0000.mp4"
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(merged), "--json", str(video)]) == 0
    captured = capsys.readouterr()
    assert sorted(r["class"] for r in json.loads(captured.out)[str(video)]) == ["class 0", "class 1", "class 2"]
    assert captured.err.count("no class names") == 1


def test_resuming_a_named_run_is_not_refused(synthetic, tmp_path, capsys):
    """The names a run records in its checkpoint are not a change of the run on resume (the user's config
    has none: they come from the annotation)."""
    run = tmp_path / "run"
    cfg = write_cfg(tmp_path / "cfg.yaml", synthetic, run, data_extra=class_file(synthetic))
    assert main(["train", str(cfg), "--set", "optim.epochs=2", "--set", "train.max_steps=2"]) == 0
    assert main(["train", str(cfg), "--set", "optim.epochs=2", "--resume"]) == 0
    assert yaml.safe_load((run / "config.resumed.yaml").read_text())["model"]["class_names"] == CLASSES


def test_load_run_finds_the_names_of_a_run_that_predates_them(synthetic, tmp_path):
    """A checkpoint written before runs recorded their names: load_run (so merge) reads them again from the
    run's training annotation."""
    from zeroi2v.run_folder import load_checkpoint, load_run, save_checkpoint
    run = tmp_path / "run"
    cfg = write_cfg(tmp_path / "cfg.yaml", synthetic, run, data_extra=class_file(synthetic))
    assert main(["train", str(cfg), "--set", "train.max_steps=1"]) == 0
    ckpt = load_checkpoint(run / "checkpoint.pt")
    ckpt["config"]["model"]["class_names"] = None  # as an older zeroi2v wrote it
    save_checkpoint(run / "checkpoint.pt", ckpt)
    assert load_run(run).cfg.class_names == CLASSES
    ckpt["config"]["data"]["format_args"] = {}  # its annotation has label numbers only: no names
    save_checkpoint(run / "checkpoint.pt", ckpt)
    assert load_run(run).cfg.class_names is None
