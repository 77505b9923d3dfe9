"""Issue 11 item 5: undecodable files are counted as distinct files, named, and logged once per run."""
import csv
import logging

import numpy as np
import pytest
from torch.utils.data import DataLoader

from zeroi2v.config import load_config
from zeroi2v.data import Sample, TrainTransform, UniformSampler, VideoDataset, make_clip, write_video
from zeroi2v.data.dataset import batch_failures
from zeroi2v.run_folder import load_checkpoint
from zeroi2v.train import train

BAD = ("truncated.mp4", "text.mp4")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """6 good 12-frame clips and 2 broken files (half an MP4, a text file) in an mmaction list."""
    root = tmp_path_factory.mktemp("clips")
    lines = []
    for i in range(6):
        frames, _, _ = make_clip("slow", np.random.default_rng(i), num_frames=12, size=32)
        write_video(root / f"good{i}.mp4", frames)
        lines.append(f"good{i}.mp4 {i % 2}")
    whole = (root / "good0.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(whole[: len(whole) // 2])
    (root / "text.mp4").write_text("not a video\n")
    lines += [f"{name} {n}" for n, name in enumerate(BAD)]
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize("workers", [0, 1])
def test_two_broken_files_over_three_epochs_are_two_distinct_named_files(data, tmp_path, capfd, workers):
    out = tmp_path / "run"
    cfg = load_config(None, [
        "model.backbone=zeroi2v-micro", "model.num_frames=4", "model.num_classes=2", "model.offsets=1x1,-1x1",
        "data.format=mmaction", f"data.train_ann={data / 'train.txt'}", f"data.root={data}", "data.short_side=32",
        f"data.workers={workers}", "train.batch_size=4", "train.total_batch=4", "optim.epochs=3",
        "optim.warmup_epochs=0", "train.device=cpu", "train.progress=false", f"train.out_dir={out}"])
    result = train(cfg)
    bad = {str(data / name) for name in BAD}
    # every epoch visits both broken items (8 clips, batch 4); replacements may hit them again: still 2 files
    assert result["decode_failures"] == 2 and set(result["undecodable_files"]) == bad
    assert [h["decode_failures"] for h in result["history"]] == [2, 2, 2]
    assert all(set(h["undecodable_files"]) == bad for h in result["history"])
    # the checkpoint keeps them (read with weights_only), so a resumed run still knows its failed files
    assert set(load_checkpoint(out / "checkpoint.pt")["history"][-1]["undecodable_files"]) == bad
    with open(out / "log.csv", newline="") as f:
        assert [r["decode_failures"] for r in csv.DictReader(f) if r["kind"] == "epoch"] == ["2", "2", "2"]
    said, err = capfd.readouterr()
    epoch_lines = [line for line in said.splitlines() if "] epoch " in line]
    assert len(epoch_lines) == 3
    assert all("2 undecodable files skipped" in line and all(p in line for p in bad) for line in epoch_lines)
    # no decoder line reaches stderr (decord's "ERROR opening", C++ source locations)
    assert "ERROR" not in err and ".cc:" not in err


@pytest.mark.parametrize("persistent", [True, False])
def test_each_broken_file_is_logged_once_across_epochs_and_workers(data, tmp_path, persistent):
    samples = [Sample(f"good{i}.mp4", i % 2) for i in range(6)] + [Sample(name, 0) for name in BAD]
    ds = VideoDataset(samples, data, sampler=UniformSampler(4), transform=TrainTransform(size=32, short_side=None),
                      train=True)
    # forked workers inherit this handler and append to the same file
    handler = logging.FileHandler(tmp_path / "log.txt")
    logger = logging.getLogger("zeroi2v.data.dataset")
    logger.addHandler(handler)
    try:
        loader = DataLoader(ds, batch_size=2, num_workers=2, persistent_workers=persistent)
        named, anonymous = [], 0
        for epoch in range(3):
            ds.set_epoch(epoch)
            for batch in loader:
                files, unnamed = batch_failures(batch)
                named += files
                anonymous += unnamed
    finally:
        logger.removeHandler(handler)
        handler.close()
    bad = {str(data / name) for name in BAD}
    lines = (tmp_path / "log.txt").read_text().splitlines()
    assert sorted(line.split("'")[1] for line in lines) == sorted(bad)  # once each, whatever the workers
    assert set(ds.undecodable) == bad and set(named) == bad and anonymous == 0  # the main process knows


def test_batches_without_file_names_count_as_reported():
    assert batch_failures({"video": None, "decode_failures": [1, 0, 2]}) == ([], 3)
    assert batch_failures({"undecodable_files": ["a.mp4\nb.mp4", "", "a.mp4"], "decode_failures": [2, 0, 1]}) == \
        (["a.mp4", "b.mp4"], 0)
    assert batch_failures((None, None)) == ([], 0)
