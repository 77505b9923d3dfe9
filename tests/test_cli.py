import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from zeroi2v.cli import main
from zeroi2v.merge import load_merged, merge_adapters, save_merged
from zeroi2v.model import create_model

ROOT = Path(__file__).resolve().parents[1]
VERBS = ["make-synthetic", "pretrain-image", "init", "train", "eval", "merge", "predict", "config", "bench", "quickstart",
         "demo", "fewshot-split", "fewshot", "ablate", "export"]


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_has_help(verb, capsys):
    with pytest.raises(SystemExit) as e:
        main([verb, "--help"])
    assert e.value.code == 0
    assert f"usage: zeroi2v {verb}" in capsys.readouterr().out


def test_installed_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "zeroi2v", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and all(v in out.stdout for v in VERBS)


def test_errors_are_one_readable_line(tmp_path, capsys):
    code = main(["predict", "--checkpoint", str(tmp_path / "nowhere"), str(tmp_path / "x.mp4")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "not a merged checkpoint" in err and "Traceback" not in err
    with pytest.raises(FileNotFoundError):
        main(["--debug", "predict", "--checkpoint", str(tmp_path / "nowhere"), str(tmp_path / "x.mp4")])


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    assert main(["make-synthetic", "--out", str(out), "--per-class", "2,1,1", "--frames", "8",
                 "--classes", "move_left,move_right,colour_change"]) == 0
    return out


def test_predict_reports_good_and_bad_files(synthetic, tmp_path, capsys):
    model = create_model(backbone="zeroi2v-micro", num_classes=3, num_frames=4, offsets="1x1,-1x1").eval()
    save_merged(merge_adapters(model), tmp_path / "merged", extra={"class_names": ["left", "right", "colour"]})
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    capsys.readouterr()
    code = main(["predict", "--checkpoint", str(tmp_path / "merged"), "--json", "--top", "2",
                 str(synthetic / "test/move_left/move_left_0000.mp4"), str(bad)])
    out = json.loads(capsys.readouterr().out)
    assert code == 1  # one file failed
    good = out[str(synthetic / "test/move_left/move_left_0000.mp4")]
    assert len(good) == 2 and {r["class"] for r in good} <= {"left", "right", "colour"}
    probs = [r["probability"] for r in good]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
    assert "error" in out[str(bad)] and "bad.mp4" in out[str(bad)]["error"]


def test_train_merge_verify_eval(synthetic, tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"""
model: {{backbone: zeroi2v-micro, num_classes: 3, num_frames: 4, offsets: "1x1,-1x1"}}
data: {{format: mmaction, root: {synthetic}, train_ann: {synthetic}/train.txt, test_ann: {synthetic}/test.txt,
        randaugment: null, short_side: 32, workers: 0}}
optim: {{epochs: 1, warmup_epochs: 0}}
train: {{batch_size: 2, total_batch: 2, out_dir: {tmp_path}/run, progress: false}}
test: {{clips: 1, crops: 1}}
""")
    assert main(["train", str(cfg)]) == 0
    assert main(["merge", str(tmp_path / "run"), "--out", str(tmp_path / "merged"), "--verify"]) == 0
    out = capsys.readouterr().out
    diff = float(out.split("merged vs unmerged:")[1].split()[0])
    assert diff <= 1e-3
    assert load_merged(tmp_path / "merged").offsets == [(1, -1, 0, 0, 0, 0)] * 2
    assert main(["eval", str(cfg), "--checkpoint", str(tmp_path / "merged")]) == 0
    assert (tmp_path / "merged" / "eval" / "results.json").is_file()
    assert main(["train", str(cfg), "--set", "optim.lr=oops"]) == 2
    assert "optim.lr" in capsys.readouterr().err


def test_eval_of_a_merged_checkpoint_does_not_load_the_training_module(synthetic, tmp_path):
    """eval reads its data with zeroi2v.data.build and its model with zeroi2v.merge: a merged checkpoint is
    evaluated without importing the training loop (issue 10, item 4)."""
    model = create_model(backbone="zeroi2v-micro", num_classes=3, num_frames=4, offsets="1x1,-1x1").eval()
    save_merged(merge_adapters(model), tmp_path / "merged")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"""
model: {{backbone: zeroi2v-micro, num_classes: 3, num_frames: 4, offsets: "1x1,-1x1"}}
data: {{format: mmaction, root: {synthetic}, test_ann: {synthetic}/test.txt, short_side: 32, workers: 0}}
test: {{clips: 1, crops: 1}}
""")
    code = ("import json, sys; from zeroi2v.cli import main; "
            f"rc = main(['eval', {str(cfg)!r}, '--checkpoint', {str(tmp_path / 'merged')!r}]); "
            "print(json.dumps([rc, sorted(m for m in sys.modules if m.startswith('zeroi2v'))]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    rc, modules = json.loads(proc.stdout.strip().splitlines()[-1])
    assert rc == 0 and (tmp_path / "merged" / "eval" / "results.json").is_file()
    assert "zeroi2v.train" not in modules and "zeroi2v.data.build" in modules


def test_bench_prints_ratios(capsys, tmp_path):
    assert main(["bench", "--backbone", "zeroi2v-micro", "--frames", "4", "--repeats", "2",
                 "--json", str(tmp_path / "b.json")]) == 0
    out = capsys.readouterr().out
    assert "merged / plain latency" in out
    report = json.loads((tmp_path / "b.json").read_text())
    assert report["gflops"]["merged"] == report["gflops"]["plain"] < report["gflops"]["unmerged"]


def test_quickstart_fast_smoke(tmp_path):
    """The whole quickstart path at toy size: outputs exist and the exactness promises hold."""
    from zeroi2v.quickstart import run_quickstart
    report = run_quickstart(tmp_path / "qs", fast=True, log=lambda *_: None)
    for key in ("zeroi2v", "zeroi2v_merged", "linear_probe", "no_stdha"):
        assert 0.0 <= report["top1"][key] <= 1.0
        assert set(report["top1_by_kind"][key]) == {"order", "relation"}
    assert report["merge"]["prediction_agreement"] == 1.0
    # the training run's own test and the merged model's pass over the same views agree
    assert report["top1"]["zeroi2v_merged"] == pytest.approx(report["top1"]["zeroi2v"], abs=1e-6)  # JSON keeps 6 decimals
    assert report["merge"]["max_abs_logit_diff"] <= 1e-3
    p = report["params"]
    assert p["merged"] - p["plain"] == p["temporal_embedding"] + p["classifier"]
    assert report["gflops"]["merged"] == report["gflops"]["plain"]
    saved = json.loads((tmp_path / "qs" / "report.json").read_text())
    assert saved["top1"] == report["top1"]
    merged = load_merged(tmp_path / "qs" / "merged")
    examples = sorted((tmp_path / "qs" / "examples").glob("*.mp4"))
    kinds = json.loads((tmp_path / "qs" / "videos" / "kinds.json").read_text())
    assert merged.cfg.class_names and len(examples) == 2  # FAST: 2 examples, spread over the class list
    assert {kinds[e.stem.rsplit("_", 1)[0]] for e in examples} == {"order", "relation"}
    with torch.no_grad():
        assert merged(torch.zeros(1, 3, 8, 32, 32)).shape == (1, len(report["settings"]["classes"]))
    # a second run reuses the image model and the videos
    again = run_quickstart(tmp_path / "qs", fast=True, log=lambda *_: None)
    assert again["stage_seconds"]["image model"] < report["stage_seconds"]["image model"] + 1
    assert (tmp_path / "qs" / "image_model" / "pretrain.json").is_file()


# --- train: run folders and data errors (issue 9: D4, D7) ----------------------------------------------

def _train_yaml(path, root, train_ann, out_dir, workers=0):
    path.write_text(f"""
model: {{backbone: zeroi2v-micro, num_classes: 3, num_frames: 4, offsets: "1x1,-1x1"}}
data: {{format: mmaction, root: {root}, train_ann: {train_ann}, randaugment: null, short_side: 32, workers: {workers}}}
optim: {{epochs: 1, warmup_epochs: 0}}
train: {{batch_size: 2, total_batch: 2, out_dir: {out_dir}, progress: false, device: cpu}}
""")
    return str(path)


def test_train_refuses_a_run_folder_with_work_and_force_overwrites(synthetic, tmp_path, capsys):
    run = tmp_path / "run"
    cfg = _train_yaml(tmp_path / "cfg.yaml", synthetic, synthetic / "train.txt", run)
    assert main(["train", cfg]) == 0
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    capsys.readouterr()
    assert main(["train", cfg, "--set", "optim.lr=1e-3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(run) in err and "--resume" in err and "--force" in err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    assert main(["train", cfg, "--set", "optim.lr=1e-3", "--force"]) == 0
    assert "lr: 0.001" in (run / "config.yaml").read_text()
    with pytest.raises(SystemExit):  # argparse: not allowed with each other
        main(["train", cfg, "--resume", "--force"])


def test_train_on_undecodable_videos_with_workers_is_one_line(tmp_path, capsys):
    for i in range(4):
        (tmp_path / f"v{i}.mp4").write_text("not a video")
    (tmp_path / "train.txt").write_text("".join(f"v{i}.mp4 {i % 3}\n" for i in range(4)))
    cfg = _train_yaml(tmp_path / "cfg.yaml", tmp_path, tmp_path / "train.txt", tmp_path / "run", workers=1)
    assert main(["train", cfg]) == 2
    err = capsys.readouterr().err
    # per-video notices may come first (logged once per file); the error itself is one line
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("skipping undecodable video")]
    assert len(lines) == 1 and lines[0].startswith("zeroi2v train: error: ") and "Traceback" not in err
    assert "decode failures" in lines[0] and str(tmp_path) in lines[0]


# --- files that are not what they claim; runs that need only their own folder ---------------------

def _micro_run(tmp_path, backbone="zeroi2v-micro"):
    from test_train import NoisyClips, micro_cfg
    from zeroi2v.train import train
    cfg = micro_cfg(tmp_path / "run", f"model.backbone={backbone}", "train.max_steps=2")
    return train(cfg, train_set=NoisyClips(16))["model"].eval(), tmp_path / "run"


@pytest.mark.parametrize("content, says", [(b"", "empty"), (b"101\n", "text")])
def test_merge_of_a_broken_checkpoint_is_one_line(tmp_path, capsys, content, says):
    _, run = _micro_run(tmp_path)
    (run / "checkpoint.pt").write_bytes(content)
    capsys.readouterr()
    assert main(["merge", str(run), "--out", str(tmp_path / "merged")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(run / "checkpoint.pt") in err and says in err and "weights_only" not in err
    assert not (tmp_path / "merged").exists()


def _local_dir(tmp_path):
    from zeroi2v.backbones import create_visual, save_local_dir
    torch.manual_seed(5)
    visual, model_cfg = create_visual("zeroi2v-micro")
    return save_local_dir(visual, model_cfg, tmp_path / "image_model"), tmp_path / "image_model"


def test_merge_after_the_local_backbone_folder_moved(tmp_path, capsys):
    name, folder = _local_dir(tmp_path)
    trained, run = _micro_run(tmp_path, name)
    folder.rename(tmp_path / "moved_away")
    assert main(["merge", str(run), "--out", str(tmp_path / "merged"), "--verify"]) == 0
    assert float(capsys.readouterr().out.split("merged vs unmerged:")[1].split()[0]) <= 1e-3
    clip = torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(load_merged(tmp_path / "merged")(clip), trained(clip), atol=1e-5)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_torchscript_that_runs_code_runs_nothing_through_the_cli(tmp_path, synthetic, capsys):
    from test_backbones import Evil
    target = tmp_path / "PWNED"
    evil = tmp_path / "evil.pt"
    torch.jit.script(Evil(str(target))).save(str(evil))
    # merge of a run whose local-dir backbone now holds the evil file: the run's own weights are used
    name, folder = _local_dir(tmp_path)
    _, run = _micro_run(tmp_path, name)
    (folder / "open_clip_model.safetensors").unlink()
    (folder / "open_clip_pytorch_model.bin").write_bytes(evil.read_bytes())
    assert main(["merge", str(run), "--out", str(tmp_path / "merged")]) == 0
    # train with the evil file as pretrained weights: refused in one line that names it
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"""
model: {{backbone: zeroi2v-micro, num_classes: 3, num_frames: 4, offsets: "1x1,-1x1"}}
data: {{format: mmaction, root: {synthetic}, train_ann: {synthetic}/train.txt, randaugment: null, short_side: 32, workers: 0}}
train: {{batch_size: 2, total_batch: 2, out_dir: {tmp_path}/run2, progress: false}}
""")
    capsys.readouterr()
    assert main(["train", str(cfg), "--set", f"model.pretrained={evil}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(evil) in err and "refused" in err
    assert not target.exists()


# ------------------------------------------------------------------ predict's input rules (issue 9)
@pytest.fixture(scope="module")
def merged_micro(tmp_path_factory):
    out = tmp_path_factory.mktemp("predict") / "merged"
    torch.manual_seed(0)
    model = create_model(backbone="zeroi2v-micro", num_classes=3, num_frames=4, offsets="1x1,-1x1").eval()
    save_merged(merge_adapters(model), out, extra={"class_names": ["left", "right", "colour"]})
    return out


@pytest.mark.parametrize("flag, value", [("--top", "0"), ("--top", "-3"), ("--clips", "0")])
def test_predict_refuses_counts_below_one(merged_micro, synthetic, flag, value, capsys):
    """--top 0 printed only the paths and --top -3 crashed."""
    code = main(["predict", "--checkpoint", str(merged_micro), flag, value,
                 str(synthetic / "test/move_left/move_left_0000.mp4")])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert captured.err.strip() == f"zeroi2v predict: error: {flag} must be at least 1 " \
                                   f"({'classes to print' if flag == '--top' else 'views'} per video), got {value}"


def test_predict_applies_the_demos_frame_rule_and_reads_gifs(merged_micro, synthetic, tmp_path, capfd):
    """The demo refused a 1-frame video that predict classified: one rule now, defined once."""
    import numpy as np
    from PIL import Image

    from zeroi2v.data.decode import write_video

    one = tmp_path / "one.mp4"
    write_video(one, np.full((1, 32, 32, 3), 90, np.uint8))
    gif = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (32, 32), (30 * i, 0, 200)) for i in range(6)]
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100, loop=0)
    notes = tmp_path / "notes.mp4"
    notes.write_text("not a video\n")
    capfd.readouterr()
    code = main(["predict", "--checkpoint", str(merged_micro), "--json", str(one), str(gif), str(notes)])
    captured = capfd.readouterr()
    out = json.loads(captured.out)
    assert code == 1
    assert out[str(one)] == {"error": f"{str(one)!r} has 1 frame; a clip needs at least 2 (a still image cannot "
                                      f"show motion)"}
    from zeroi2v.data.decode import MIN_FRAMES, too_few_frames
    assert MIN_FRAMES == 2 and out[str(one)]["error"].endswith(too_few_frames(1))  # the demo's own words
    assert len(out[str(gif)]) == 3 and {r["class"] for r in out[str(gif)]} == {"left", "right", "colour"}
    assert out[str(notes)] == {"error": f"cannot decode video {str(notes)!r}: Invalid data found when processing input"}
    assert "ERROR opening" not in captured.err  # decord's own log line stays off stderr


def test_predict_errors_do_not_quote_decoder_internals(merged_micro, synthetic, monkeypatch, capsys):
    import decord

    def fail(self, indices):
        raise decord.base.DECORDError(
            "[06:44:47] /github/workspace/src/video/ffmpeg/filter_graph.cc:61: Check failed: "
            "avfilter_graph_create_filter(&buffersrc_ctx_, buffersrc, \"in\", args, NULL, filter_graph_.get()) >= 0 "
            "(-22 vs. 0) : Cannot create buffer source\n\nStack trace:\n  [bt] (0) libdecord.so(+0x1d1d) [0x7f]")

    monkeypatch.setattr(decord.VideoReader, "get_batch", fail)
    video = str(synthetic / "test/move_left/move_left_0000.mp4")
    assert main(["predict", "--checkpoint", str(merged_micro), "--json", video]) == 1
    assert json.loads(capsys.readouterr().out)[video] == {
        "error": f"cannot decode video {video!r}: Cannot create buffer source"}


def test_predict_does_not_load_the_explanation_or_training_modules(tmp_path):
    """One input path (zeroi2v.data.views): predicting needs neither Grad-CAM nor the training loop."""
    from zeroi2v.data.decode import write_video
    import numpy as np
    video = tmp_path / "clip.mp4"
    write_video(video, np.random.default_rng(0).integers(0, 255, (8, 32, 32, 3), dtype=np.uint8))
    fixture = Path(__file__).parent / "fixtures" / "merged_v1"
    code = ("import sys; from zeroi2v.cli import main; "
            f"rc = main(['predict', '--checkpoint', {str(fixture)!r}, {str(video)!r}]); "
            "print(rc, sorted(m for m in ('zeroi2v.explain', 'zeroi2v.train', 'pytorch_grad_cam') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip().splitlines()[-1] == "0 []", out.stdout + out.stderr
