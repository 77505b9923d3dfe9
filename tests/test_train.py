"""Training engine on a micro model, CPU, in-memory data: recipe, exact resume, NaN stop, DDP, data package."""
import copy
import dataclasses
import csv
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

from zeroi2v.bench import measure_step
from zeroi2v.cli import main
from zeroi2v.config import Config, load_config, save_config
from zeroi2v.model import create_model
from zeroi2v.optim import lr_factor, param_groups
from zeroi2v.run_folder import load_checkpoint
from zeroi2v.train import NonFiniteLossError, train

ROOT = Path(__file__).resolve().parents[1]


class NoisyClips(Dataset):
    """Fixed random clips plus augmentation noise from torch's global RNG (so RNG restore matters on
    resume); every 5th item reports one decode failure; ``poison`` turns the clips into NaN."""

    def __init__(self, n, classes=3, frames=4, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 3, frames, 32, 32, generator=g)
        self.y = torch.randint(0, classes, (n,), generator=g)
        self.classes = [f"class{i}" for i in range(classes)]
        self.poison = False

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        video = self.x[i] + 0.05 * torch.randn_like(self.x[i])
        if self.poison:
            video = video * float("nan")
        return {"video": video, "label": int(self.y[i]), "index": i, "decode_failures": int(i % 5 == 0)}


def micro_cfg(out_dir, *extra):
    # 28 clips, batch 4 -> 7 micro-batches; accumulation 2 -> 4 steps/epoch, the last one with 1 micro-batch
    return load_config(None, [
        "model.backbone=zeroi2v-micro", "model.num_frames=4", "model.num_classes=3", "model.offsets=1x1,-1x1",
        "model.adapter_dropout=0.1", "model.head_dropout=0.5", "train.batch_size=4", "train.total_batch=8",
        "optim.epochs=2", "optim.warmup_epochs=0.5", "data.workers=0", "train.device=cpu", "train.progress=false",
        "train.log_every=1", "test.batch_size=4", f"train.out_dir={out_dir}", *extra])


def named(cfg, names=NoisyClips(1).classes):
    """``cfg`` as its run records it: with the class names of its training data (issue 11, item 1)."""
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, class_names=list(names)))


def read_log(folder):
    with open(Path(folder) / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_param_groups_follow_the_recipe():
    model = create_model(backbone="zeroi2v-micro", num_frames=4, num_classes=3, offsets="1x1,-1x1")
    groups = {g["name"]: g for g in param_groups(model, lr=1e-3, weight_decay=0.05, backbone_lr_mult=0.1)}
    names = {id(p): n for n, p in model.named_parameters()}
    members = {k: {names[id(p)] for p in g["params"]} for k, g in groups.items()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set().union(*members.values()) == trainable and sum(map(len, members.values())) == len(trainable)
    assert "temporal_embedding" in members["head_no_decay"]                      # 2-D but an embedding
    assert {"head.weight"} == members["head_decay"] and "head.bias" in members["head_no_decay"]
    assert all(".adapters." in n and n.endswith("weight") for n in members["backbone_decay"])
    assert "visual.ln_post.weight" in members["backbone_no_decay"]
    assert groups["backbone_decay"]["lr"] == pytest.approx(1e-4) and groups["head_decay"]["lr"] == pytest.approx(1e-3)
    assert groups["backbone_no_decay"]["weight_decay"] == 0 and groups["head_decay"]["weight_decay"] == 0.05
    assert not any(n.startswith("visual.conv1") or ".attn.in_proj" in n for n in trainable)  # frozen ViT
    model.set_finetune("full")
    full = {n for g in param_groups(model, 1e-3, 0.05) for n in (names[id(p)] for p in g["params"])}
    assert {"visual.positional_embedding", "visual.class_embedding", "visual.conv1.weight"} <= full
    no_decay = {names[id(p)] for g in param_groups(model, 1e-3, 0.05) if g["weight_decay"] == 0 for p in g["params"]}
    assert {"visual.positional_embedding", "visual.class_embedding"} <= no_decay
    assert "visual.conv1.weight" not in no_decay


def test_lr_factor_warmup_then_cosine():
    f = [lr_factor(s, 10, 110, 0.1) for s in range(111)]
    assert f[0] == pytest.approx(0.1) and f[5] == pytest.approx(0.55) and f[10] == pytest.approx(1.0)
    assert f[60] == pytest.approx(0.5) and f[110] == pytest.approx(0.0)
    assert all(a < b for a, b in zip(f[:10], f[1:11])) and all(a > b for a, b in zip(f[10:110], f[11:111]))
    assert lr_factor(0, 0, 10, 0.1) == pytest.approx(1.0)  # no warm-up


def test_lr_factor_ends_at_min_lr():
    """VidTAB's recipe: cosine to 1e-6 at lr 3e-4 (optim.min_lr), reached at the last step and not before."""
    end = 1e-6 / 3e-4
    f = [lr_factor(s, 5, 25, 0.1, end) for s in range(26)]
    assert f[25] == pytest.approx(end) and f[24] > end and f[5] == pytest.approx(1.0)
    assert f[15] == pytest.approx(end + (1 - end) * 0.5)
    with pytest.raises(ValueError, match="optim.min_lr"):
        Config.from_dict({"optim": {"lr": 1e-3, "min_lr": 1e-2}})


def test_training_run_schedule_groups_failures_and_run_folder(tmp_path):
    seen = []
    cfg = micro_cfg(tmp_path / "run", "optim.backbone_lr_mult=0.1", "optim.epochs=3")
    torch.manual_seed(0)
    model = create_model(cfg.model)
    before = copy.deepcopy(model.state_dict())
    result = train(cfg, model=model, train_set=NoisyClips(28), val_set=NoisyClips(9, seed=1),
                   callbacks=[lambda event, info: seen.append((event, info))])
    steps = [info for event, info in seen if event == "step"]
    assert result["steps_per_epoch"] == 4 and result["accumulation"] == 2 and len(steps) == 12
    for info in steps:  # the optimiser's own learning rates, per group, at every step
        factor = lr_factor(info["global_step"] - 1, round(0.5 * 4), 12, 0.1)
        assert info["group_lrs"]["head_decay"] == pytest.approx(3e-4 * factor)
        assert info["group_lrs"]["backbone_decay"] == pytest.approx(3e-5 * factor)
    assert steps[0]["group_lrs"]["head_decay"] == pytest.approx(3e-5)
    # frozen backbone untouched; adapters (zero-initialised W_up), temporal embedding and head trained
    after = result["model"].state_dict()
    assert torch.equal(before["visual.conv1.weight"], after["visual.conv1.weight"])
    assert torch.equal(before["visual.transformer.resblocks.0.attn.in_proj_weight"],
                       after["visual.transformer.resblocks.0.attn.in_proj_weight"])
    up = [k for k in after if ".adapters." in k and "up.weight" in k]
    assert up and all(after[k].abs().sum() > 0 and before[k].abs().sum() == 0 for k in up)
    assert not torch.equal(before["head.weight"], after["head.weight"])
    assert after["temporal_embedding"].abs().sum() > 0
    # decode failures: items 0, 5, 10, 15, 20, 25 each report one, every epoch
    assert [h["decode_failures"] for h in result["history"]] == [6, 6, 6] and result["decode_failures"] == 18
    rows = read_log(tmp_path / "run")
    epoch_rows = [r for r in rows if r["kind"] == "epoch"]
    assert [r["decode_failures"] for r in epoch_rows] == ["6", "6", "6"]
    assert all(r["val_top1"] != "" and 0 <= float(r["val_top1"]) <= 1 for r in epoch_rows)  # fractions
    assert [int(r["step"]) for r in rows if r["kind"] == "train"] == list(range(1, 13))
    # run folder: exact config, checkpoint loadable with weights_only, validation results
    assert load_config(tmp_path / "run" / "config.yaml") == named(cfg)  # + the names the data gave (issue 11)
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 12 and ckpt["epoch"] == 3 and ckpt["step_in_epoch"] == 0
    assert torch.equal(ckpt["model"]["head.weight"], after["head.weight"])
    assert {"optimizer", "scheduler", "scaler", "rng"} <= set(ckpt)
    assert result["val"]["num_samples"] == 9 and list(result["val"]["per_class_accuracy"]) == NoisyClips(1).classes
    assert (tmp_path / "run" / "results" / "val.json").is_file()
    assert (tmp_path / "run" / "results" / "val_confusion.png").stat().st_size > 1000


@pytest.mark.parametrize("interruption", ["crash", "max_steps"])
def test_resume_continues_exactly(tmp_path, interruption):
    data = dict(train_set=NoisyClips(28), val_set=NoisyClips(6, seed=1))
    reference = train(micro_cfg(tmp_path / "a"), **data)

    class Kill(RuntimeError):
        pass

    def kill_after_7(event, info):
        if event == "step" and info["global_step"] == 7:
            raise Kill("simulated kill")

    if interruption == "crash":  # checkpoints at steps 3 and 6 (mid-epoch); killed after step 7
        cfg = micro_cfg(tmp_path / "b", "train.save_every_steps=3")
        with pytest.raises(Kill):
            train(cfg, callbacks=[kill_after_7], **data)
        assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["global_step"] == 6
    else:  # a time-boxed run stopping mid-epoch 1, then resumed
        stopped = train(micro_cfg(tmp_path / "b", "train.max_steps=3"), **data)
        assert stopped["stopped_at_max_steps"] and not stopped["finished"] and stopped["global_step"] == 3
        cfg = micro_cfg(tmp_path / "b")
    resumed = train(cfg, resume=True, **data)
    assert resumed["finished"] and resumed["global_step"] == reference["global_step"] == 8
    a, b = reference["model"].state_dict(), resumed["model"].state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert resumed["history"][-1]["val_top1"] == reference["history"][-1]["val_top1"]
    steps = [int(r["step"]) for r in read_log(tmp_path / "b") if r["kind"] == "train"]
    assert steps == list(range(1, 9))  # rows after the checkpoint were dropped, none duplicated


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    data = NoisyClips(28)

    def poison_after_2(event, info):
        if event == "step" and info["global_step"] == 2:
            data.poison = True

    cfg = micro_cfg(tmp_path / "nan", "train.save_every_steps=1")
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, step 3/4") as e:
        train(cfg, train_set=data, callbacks=[poison_after_2])
    assert "checkpoint.pt" in str(e.value)
    ckpt = load_checkpoint(tmp_path / "nan" / "checkpoint.pt")
    assert ckpt["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_too_little_data_for_one_batch_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="do not fill one batch"):
        train(micro_cfg(tmp_path / "small"), train_set=NoisyClips(3))


def test_measure_step_zeroi2v_vs_full(tmp_path):
    cfg = micro_cfg(tmp_path)
    zero = measure_step(cfg, batch_size=2, steps=2)
    full = measure_step(create_model(cfg.model, adapter=None), batch_size=2, steps=2, finetune="full")
    for r in (zero, full):
        assert r["step_time_s"] > 0 and r["clips_per_s"] > 0 and r["peak_mem_mb"] > 0
        assert r["peak_mem_mb"] >= r["baseline_mem_mb"] and r["device"] == "cpu"
    assert zero["trainable_params"] < zero["total_params"] and zero["mode"] == "adapters" and zero["adapters"]
    assert full["trainable_params"] == full["total_params"] and not full["adapters"]
    assert zero["total_params"] > full["total_params"]  # the adapters themselves


def test_trains_from_video_files_through_the_data_package(tmp_path):
    import numpy as np

    from zeroi2v.data.decode import write_video

    rng = np.random.default_rng(0)
    for c, name in enumerate(("left", "right")):
        for i in range(3):
            frames = rng.integers(0, 255, (10, 40, 48, 3), dtype=np.uint8)
            write_video(tmp_path / "videos" / name / f"{name}{i}.mp4", frames)
    cfg = micro_cfg(tmp_path / "run", "model.num_classes=2", "data.format=folder", f"data.train_ann={tmp_path / 'videos'}",
                    f"data.val_ann={tmp_path / 'videos'}", "data.short_side=36", "train.batch_size=2",
                    "train.total_batch=2", "optim.epochs=1", "data.randaugment=2,1", "test.clips=2", "test.crops=3",
                    "test.short_side=36")
    path = save_config(cfg, tmp_path / "cfg.yaml")
    assert main(["train", str(path), "--set", "optim.epochs=1"]) == 0  # `zeroi2v train cfg.yaml --set ...`
    run = tmp_path / "run"
    rows = read_log(run)
    assert [int(r["step"]) for r in rows if r["kind"] == "train"] == [1, 2, 3]  # 6 videos, batch 2, no accumulation
    assert [r["decode_failures"] for r in rows if r["kind"] == "epoch"] == ["0"]
    val = json.loads((run / "results" / "val.json").read_text())
    test = json.loads((run / "results" / "test.json").read_text())
    assert val["num_samples"] == test["num_samples"] == 6 and test["class_names"] == ["left", "right"]
    assert sum(map(sum, test["confusion"])) == 6
    assert load_checkpoint(run / "checkpoint.pt")["global_step"] == 3


def test_the_old_module_command_line_points_to_zeroi2v_train(tmp_path):
    """`python -m zeroi2v.train` is no second command line: it fails in one line naming `zeroi2v train`."""
    proc = subprocess.run([sys.executable, "-m", "zeroi2v.train", str(tmp_path / "cfg.yaml")], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    err = proc.stderr.strip()
    assert proc.returncode == 1 and "\n" not in err and "Traceback" not in err
    assert "`zeroi2v train CONFIG" in err and "-m zeroi2v train CONFIG" in err


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_processes_end_with_identical_weights(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(ROOT / "tests" / "ddp_worker.py"), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    w0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    init = torch.load(tmp_path / "init.pt", weights_only=True)
    assert w0.keys() == w1.keys() == init.keys()
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    assert not torch.equal(w0["head.weight"], init["head.weight"])  # it trained
    facts = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for f in facts:
        assert f["world_size"] == 2 and f["global_step"] == 4 and f["accumulation"] == 2
        assert f["val_samples"] == 7  # 7 validation clips over 2 ranks: the padded duplicate is dropped
    assert facts[0]["val_top1"] == facts[1]["val_top1"]
    assert (tmp_path / "run" / "log.csv").is_file() and (tmp_path / "run" / "checkpoint.pt").is_file()
    assert not math.isnan(facts[0]["val_top1"])


# --- run folders: never overwritten by accident, honest resumes (issue 9: D4, D5, D6) -------------------

def _snapshot(folder):
    """Every file under ``folder`` with its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def test_a_finished_run_is_refused_without_resume_and_overwritten_with_force(tmp_path):
    run = tmp_path / "run"
    train(micro_cfg(run), train_set=NoisyClips(28), val_set=NoisyClips(6, seed=1))
    before = _snapshot(run)
    assert {"checkpoint.pt", "log.csv", "config.yaml", "results/val.json"} <= set(before)
    again = micro_cfg(run, "optim.epochs=1")
    with pytest.raises(ValueError, match=r"already holds.*--resume.*--force.*train\.out_dir") as e:
        train(again, train_set=NoisyClips(28))
    assert str(run) in str(e.value) and "\n" not in str(e.value)
    assert _snapshot(run) == before  # byte-identical: nothing was written
    result = train(again, force=True, train_set=NoisyClips(28))
    steps = result["steps_per_epoch"]
    assert result["finished"] and load_checkpoint(run / "checkpoint.pt")["global_step"] == steps
    assert [int(r["step"]) for r in read_log(run) if r["kind"] == "train"] == list(range(1, steps + 1))
    assert load_config(run / "config.yaml") == named(again)
    assert not (run / "results").exists()  # the previous run's results went with it: no mixed folder
    with pytest.raises(ValueError, match="exclude each other"):
        train(again, resume=True, force=True, train_set=NoisyClips(28))
    (tmp_path / "empty").mkdir()  # an empty folder holds no work
    assert train(micro_cfg(tmp_path / "empty", "train.max_steps=1"), train_set=NoisyClips(28))["stopped_at_max_steps"]


def test_a_failed_start_leaves_the_previous_run_intact(tmp_path):
    run = tmp_path / "run"
    train(micro_cfg(run, "optim.epochs=1"), train_set=NoisyClips(28))
    before = _snapshot(run)
    missing = tmp_path / "missing.txt"
    bad_path = micro_cfg(run, "optim.epochs=1", f"data.train_ann={missing}")
    other_run = micro_cfg(run, "optim.epochs=1", "model.num_classes=5", f"data.train_ann={missing}")
    for cfg, kwargs in ((other_run, {}), (other_run, {"force": True}), (bad_path, {"resume": True})):
        with pytest.raises((OSError, ValueError)):
            train(cfg, **kwargs)
        assert _snapshot(run) == before, kwargs
    from zeroi2v.run_folder import load_run
    assert load_run(run).head.out_features == 3  # config.yaml still matches checkpoint.pt


def test_a_resume_with_changed_run_settings_is_refused(tmp_path):
    run = tmp_path / "run"
    first = train(micro_cfg(run, "train.max_steps=3"), train_set=NoisyClips(28))
    assert first["stopped_at_max_steps"] and first["steps_per_epoch"] == 4  # 7 micro-batches, accumulation 2
    before = _snapshot(run)
    with pytest.raises(ValueError, match=r"train\.batch_size 4 -> 2") as e:
        train(micro_cfg(run, "train.batch_size=2", "train.total_batch=4"), resume=True, train_set=NoisyClips(28))
    assert "train.total_batch 8 -> 4" in str(e.value) and "train.out_dir" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ValueError, match=r"optim\.epochs 2 -> 3"):  # a longer cosine schedule
        train(micro_cfg(run, "optim.epochs=3"), resume=True, train_set=NoisyClips(28))
    with pytest.raises(ValueError, match=r"steps per epoch 4 -> 3"):  # 20 clips: 5 micro-batches, 3 steps
        train(micro_cfg(run), resume=True, train_set=NoisyClips(20))
    with pytest.raises(ValueError, match=r"training clips 28 -> 29"):  # same steps, another data order
        train(micro_cfg(run), resume=True, train_set=NoisyClips(29))
    assert _snapshot(run) == before
    # settings that do not change the run (logging, workers, testing) may differ
    resumed = train(micro_cfg(run, "train.log_every=5", "test.crops=1"), resume=True, train_set=NoisyClips(28))
    assert resumed["finished"] and resumed["global_step"] == 2 * first["steps_per_epoch"]


# --- checkpoints that are not ours; runs that need only their own folder ---------------------------

class NeedsCode:
    """Any class: unpickling it would need code."""


def _one_line_naming(message, path):
    return str(path) in message and "\n" not in message and "weights_only" not in message


def test_broken_checkpoints_are_one_line_that_names_the_file(tmp_path):
    from zeroi2v.run_folder import load_run
    cfg = micro_cfg(tmp_path / "run", "train.max_steps=1")
    train(cfg, train_set=NoisyClips(8))
    run, ckpt = tmp_path / "run", tmp_path / "run" / "checkpoint.pt"
    good = ckpt.read_bytes()

    torch.save({"model": {"x": torch.ones(1)}, "extra": NeedsCode()}, tmp_path / "code.pt")
    torch.save({"weights": {"x": torch.ones(1)}}, tmp_path / "other.pt")
    cases = {"empty": b"", "text": b"101 not a checkpoint\n", "truncated": good[: len(good) // 2],
             "refused": (tmp_path / "code.pt").read_bytes(), "not a checkpoint written by": (tmp_path / "other.pt").read_bytes()}
    for says, content in cases.items():
        ckpt.write_bytes(content)
        for load, arg in ((load_checkpoint, ckpt), (load_run, run)):
            with pytest.raises(ValueError) as e:
                load(arg)
            assert _one_line_naming(str(e.value), ckpt) and says in str(e.value), (says, str(e.value))


def _local_backbone_run(tmp_path, *extra):
    from zeroi2v.backbones import create_visual, save_local_dir
    torch.manual_seed(5)
    visual, model_cfg = create_visual("zeroi2v-micro")
    name = save_local_dir(visual, model_cfg, tmp_path / "image_model")
    cfg = micro_cfg(tmp_path / "run", f"model.backbone={name}", "train.max_steps=2", *extra)
    return train(cfg, train_set=NoisyClips(16))["model"].eval(), tmp_path / "image_model"


def test_run_loads_and_merges_after_its_local_backbone_folder_is_gone(tmp_path):
    import shutil

    from zeroi2v.merge import merge_adapters
    from zeroi2v.run_folder import load_run
    trained, folder = _local_backbone_run(tmp_path)
    shutil.rmtree(folder)  # moved or deleted: checkpoint.pt holds every weight and the architecture
    model = load_run(tmp_path / "run")
    a, b = trained.state_dict(), model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    clip = torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(merge_adapters(model)(clip), trained(clip), atol=1e-5)


def test_old_checkpoint_without_architecture_names_the_missing_folder(tmp_path):
    import shutil

    from zeroi2v.run_folder import load_run, save_checkpoint
    trained, folder = _local_backbone_run(tmp_path)
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    del ckpt["backbone_cfg"]  # as written before checkpoints recorded it
    save_checkpoint(tmp_path / "run" / "checkpoint.pt", ckpt)
    assert torch.equal(load_run(tmp_path / "run").head.weight, trained.head.weight)  # folder there: still loads
    shutil.rmtree(folder)
    with pytest.raises(FileNotFoundError) as e:
        load_run(tmp_path / "run")
    message = str(e.value)
    assert str(folder) in message and "checkpoint.pt" in message and "put" in message and "\n" not in message
