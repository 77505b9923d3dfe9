"""Issue 11, item 6: one unit for accuracy. Fractions (0-1) everywhere: metrics, results JSON, log.csv,
the lines train and ``eval`` print ("top-1 0.604"), the quickstart's report."""
import csv
import json
import re

import torch

from zeroi2v.cli import main
from zeroi2v.merge import merge_adapters, save_merged
from zeroi2v.model import create_model


def test_eval_prints_labelled_fractions_that_match_results_json(tmp_path, capsys):
    data = tmp_path / "data"
    assert main(["make-synthetic", "--out", str(data), "--per-class", "1,1,2", "--frames", "8",
                 "--classes", "move_left,move_right,colour_change"]) == 0
    torch.manual_seed(0)
    model = create_model(backbone="zeroi2v-micro", num_classes=3, num_frames=4, offsets="1x1,-1x1").eval()
    save_merged(merge_adapters(model), tmp_path / "merged")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"""
model: {{backbone: zeroi2v-micro, num_classes: 3, num_frames: 4}}
data: {{format: mmaction, root: {data}, test_ann: {data}/test.txt, short_side: 32, workers: 0}}
test: {{clips: 1, crops: 1}}
""")
    capsys.readouterr()
    assert main(["eval", str(cfg), "--checkpoint", str(tmp_path / "merged")]) == 0
    out = capsys.readouterr().out
    assert "%" not in out
    top1, top5 = (float(x) for x in re.search(r"top-1 (\S+)\s+top-3 (\S+)", out).groups())
    saved = json.loads((tmp_path / "merged" / "eval" / "results.json").read_text())
    assert top5 == saved["top5"] == 1.0  # 3 classes: the top-3 always holds the label
    assert 0.0 <= top1 <= 1.0 and abs(top1 - saved["top1"]) < 1e-3
    assert all(a is None or 0.0 <= a <= 1.0 for a in saved["per_class_accuracy"].values())


def test_training_logs_and_prints_fractions(tmp_path, capsys):
    from tests.test_train import NoisyClips, micro_cfg
    from zeroi2v.train import train
    result = train(micro_cfg(tmp_path / "run", "optim.epochs=1"), train_set=NoisyClips(8),
                   val_set=NoisyClips(6, seed=1), test_set=NoisyClips(6, seed=2))
    assert result["val"]["top5"] == result["test"]["top5"] == 1.0  # 3 classes: top-3 always right
    with open(tmp_path / "run" / "log.csv", newline="") as f:
        epoch = [r for r in csv.DictReader(f) if r["kind"] == "epoch"]
    assert [float(r["val_top5"]) for r in epoch] == [1.0]
    assert 0.0 <= float(epoch[0]["val_top1"]) <= 1.0
    out = capsys.readouterr().out
    assert re.search(r"val top-1 [01]\.\d{3},", out) and re.search(r"test: top-1 [01]\.\d{3}\s+top-3 1\.000", out)
    assert "%" not in out
