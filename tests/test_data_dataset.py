"""VideoDataset: bad files never stop an epoch, failures are counted, items are reproducible."""

import logging

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from zeroi2v.data import (Sample, TestTransform, TrainTransform, UniformSampler, VideoDataset, make_clip,
                          write_video)

NUM_GOOD = 9


def good_video(path, seed):
    frames, _, _ = make_clip("slow", np.random.default_rng(seed), num_frames=12, size=32)
    write_video(path, frames)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """9 good videos, then a zero-byte file, a truncated MP4, a text file named .mp4, a missing path."""
    root = tmp_path_factory.mktemp("videos")
    samples = []
    for i in range(NUM_GOOD):
        good_video(root / f"good{i}.mp4", i)
        samples.append(Sample(f"good{i}.mp4", i % 3))
    (root / "empty.mp4").write_bytes(b"")
    data = (root / "good0.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (root / "text.mp4").write_text("not a video\n")
    samples += [Sample("empty.mp4", 0), Sample("truncated.mp4", 1), Sample("text.mp4", 2),
                Sample("missing.mp4", 0)]
    return root, samples


def train_set(root, samples, **kw):
    transform = TrainTransform(size=32, short_side=None, randaugment=(5, 2))
    return VideoDataset(samples, root, sampler=UniformSampler(8), transform=transform, train=True, **kw)


def test_missing_files_are_reported_then_dropped_or_raised(videos):
    root, samples = videos
    with pytest.warns(UserWarning, match=r"1 of 13 videos are missing: .*missing\.mp4"):
        ds = train_set(root, samples)
    assert len(ds) == 12 and [s.path for s in ds.missing] == ["missing.mp4"]
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        train_set(root, samples, on_missing="error")


def test_epoch_through_dataloader_completes_and_counts_decode_failures(videos):
    root, samples = videos
    with pytest.warns(UserWarning):
        ds = train_set(root, samples)
    bad = {i for i, s in enumerate(ds.samples) if not s.path.startswith("good")}
    assert len(bad) == 3
    loader = DataLoader(ds, batch_size=4, num_workers=1)
    batches = list(loader)
    index = torch.cat([b["index"] for b in batches])
    failures = torch.cat([b["decode_failures"] for b in batches])
    source = torch.cat([b["source_index"] for b in batches])
    assert sorted(index.tolist()) == list(range(12))
    assert int(failures.sum()) == len(bad)  # each bad item visited once, replaced by a good one
    for i, f, s in zip(index.tolist(), failures.tolist(), source.tolist()):
        assert f == (i in bad) and s not in bad and (s == i) == (i not in bad)
    assert all(b["video"].shape == (4, 3, 8, 32, 32) for b in batches)
    # labels follow the sample actually decoded
    labels = torch.cat([b["label"] for b in batches])
    assert labels.tolist() == [ds.samples[s].label for s in source.tolist()]


def test_each_bad_file_is_logged_once(videos, caplog):
    root, samples = videos
    with pytest.warns(UserWarning):
        ds = train_set(root, samples)
    with caplog.at_level(logging.WARNING, logger="zeroi2v.data.dataset"):
        for epoch in range(2):
            ds.set_epoch(epoch)
            for i in range(len(ds)):
                ds[i]
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3
    assert {m.split("'")[1].rsplit("/", 1)[-1] for m in messages} == {"empty.mp4", "truncated.mp4", "text.mp4"}


def test_all_files_bad_raises_instead_of_looping(videos):
    root, samples = videos
    bad = [s for s in samples if s.path in ("empty.mp4", "text.mp4")]
    ds = train_set(root, bad)
    with pytest.raises(RuntimeError, match="undecodable"):
        ds[0]


def test_items_depend_only_on_seed_epoch_index(videos):
    root, samples = videos
    good = samples[:4]
    ds = train_set(root, good, seed=1)
    a, b = ds[2]["video"], ds[2]["video"]
    assert torch.equal(a, b)
    ds.set_epoch(1)
    assert not torch.equal(a, ds[2]["video"])
    assert not torch.equal(a, train_set(root, good, seed=2)[2]["video"])
    # persistent workers see set_epoch (shared memory) and produce what the main process would
    loader = DataLoader(ds, batch_size=4, num_workers=1, persistent_workers=True)
    for epoch in (3, 4):
        ds.set_epoch(epoch)
        batch = next(iter(loader))
        assert torch.equal(batch["video"][2], ds[2]["video"])


def test_test_mode_returns_all_views(videos):
    root, samples = videos
    ds = VideoDataset(samples[:2], root, sampler=UniformSampler(8, num_clips=2),
                      transform=TestTransform(size=32, short_side=None, crops=3), train=False)
    item = ds[1]
    assert item["video"].shape == (6, 3, 8, 32, 32) and item["label"] == 1
    assert torch.equal(item["video"], ds[1]["video"])
    with pytest.raises(ValueError, match="one clip"):
        VideoDataset(samples[:2], root, sampler=UniformSampler(8, num_clips=2), transform=None, train=True)


def test_cache_keeps_decoded_frames(tmp_path):
    good_video(tmp_path / "a.mp4", 0)
    plain = train_set(tmp_path, [Sample("a.mp4", 0)])
    cached = train_set(tmp_path, [Sample("a.mp4", 0)], cache_decoded=True)
    first = cached[0]["video"]
    assert torch.equal(first, plain[0]["video"])
    (tmp_path / "a.mp4").unlink()  # served from memory from now on
    cached.set_epoch(1)
    plain.set_epoch(1)
    item = cached[0]
    assert item["decode_failures"] == 0 and item["video"].shape == (3, 8, 32, 32)
    with pytest.raises(RuntimeError):
        plain[0]


def test_rawframe_folder_samples(tmp_path):
    from PIL import Image

    frames, _, _ = make_clip("grow", np.random.default_rng(0), num_frames=10, size=32)
    (tmp_path / "v").mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(tmp_path / "v" / f"img_{i + 1:05d}.jpg")
    ds = train_set(tmp_path, [Sample("v", 1, num_frames=10)])
    item = ds[0]
    assert item["video"].shape == (3, 8, 32, 32) and item["label"] == 1 and item["decode_failures"] == 0


def test_a_forked_run_owns_its_epoch_once_it_asks(tmp_path):
    """The quickstart trains two runs in forked processes on one decoded data set: the epoch lives in shared
    memory (for loader workers), so a sibling's set_epoch moved this run's random stream mid-epoch."""
    import multiprocessing
    from zeroi2v.data.dataset import VideoDataset
    from zeroi2v.data.formats import Sample

    video = tmp_path / "a.mp4"
    video.write_bytes(b"not decoded in this test")
    ds = VideoDataset([Sample("a.mp4", 0)], tmp_path, sampler=None, transform=None, train=True)  # nothing decoded

    def sibling(own: bool) -> None:
        if own:
            ds.own_shared_state()
        ds.set_epoch(5)

    ctx = multiprocessing.get_context("fork")
    for own, expected in ((False, 5), (True, 0)):
        ds.set_epoch(0)
        if own:
            ds.own_shared_state()
        p = ctx.Process(target=sibling, args=(own,))
        p.start()
        p.join(30)
        assert p.exitcode == 0
        assert ds.epoch == expected  # shared before own_shared_state (the bug), private after
