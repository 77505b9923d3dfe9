"""Clips per second through the full training data pipeline: decode + sample + augment, via a DataLoader.

Two inputs, both generated in a temporary folder: the synthetic set (16-frame 32-px H.264 clips, the
quickstart's data; also with the decoded-clip cache) and one 224-px, 300-frame H.264 video read with the
Kinetics recipe (dense 8×16, short side 256, RandAugment m7 n4, crop 224, flip). Each row is measured after
the first batch (so worker start-up is excluded) with 0, 1 and 2 DataLoader workers.

    .venv/bin/python benchmarks/data_throughput.py            # about a minute on 2 cores
    .venv/bin/python benchmarks/data_throughput.py --quick    # a few seconds per row
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from zeroi2v.data import (DenseSampler, Sample, TrainTransform, UniformSampler, VideoDataset, make_synthetic_videos,
                          read_annotation, write_video)
from zeroi2v.data.synthetic import REGISTRY, ObjectTrack, random_background, render


def make_long_video(path: Path, num_frames: int = 300, size: int = 224, chunk: int = 50) -> None:
    """A 224-px moving-object video, rendered in chunks (full-size supersampling would need GBs)."""
    rng = np.random.default_rng(0)
    track = REGISTRY["fast"].make(rng, num_frames, size)
    background = random_background(rng, size)
    frames = []
    for lo in range(0, num_frames, chunk):
        part = ObjectTrack(*(a[lo:lo + chunk] for a in (track.shape, track.x, track.y, track.radius, track.angle,
                                                          track.colour)))
        frames.append(render(part, background, rng, noise=3.0, supersample=1)[0])
    write_video(path, np.concatenate(frames), fps=30, crf=18, preset="veryfast")


def clips_per_second(dataset: VideoDataset, workers: int, batch_size: int, batches: int) -> float:
    """Steady-state rate: the first batch (worker start-up) is not timed; with the decoded-clip cache, nor
    is the first epoch, which fills it (persistent workers keep their caches)."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                        persistent_workers=workers > 0, generator=torch.Generator().manual_seed(0))
    if dataset.cache_decoded:
        for _ in loader:
            pass
    done, start = 0, None
    for epoch in range(1, 1000):  # small sets: go on over epochs until enough batches were timed
        dataset.set_epoch(epoch)
        for batch in loader:
            if start is None:
                start = time.perf_counter()
                continue
            done += len(batch["label"])
            if done >= batches * batch_size:
                return done / (time.perf_counter() - start)
    raise RuntimeError("not enough batches")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer batches per row (a rough figure)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="DataLoader worker counts")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of the main process (workers always use 1, as DataLoader sets); "
                             "many small ops per clip gain nothing from more, and lose a lot on a busy CPU")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    small_batches, big_batches = (4, 2) if args.quick else (20, 6)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        make_synthetic_videos(tmp / "synthetic", videos_per_class={"train": 8})
        make_long_video(tmp / "long.mp4")
        print(f"generated inputs in {time.perf_counter() - start:.1f} s; torch threads {torch.get_num_threads()}\n")

        train = read_annotation("mmaction", tmp / "synthetic" / "train.txt")
        synthetic = TrainTransform(size=32, short_side=None, randaugment=(7, 4))
        kinetics = TrainTransform(size=224, short_side=256, randaugment=(7, 4))
        rows = [
            ("synthetic 32px, uniform 8", lambda: VideoDataset(
                train, tmp / "synthetic", sampler=UniformSampler(8), transform=synthetic, train=True), 16,
             small_batches),
            ("synthetic 32px, uniform 8, cached", lambda: VideoDataset(
                train, tmp / "synthetic", sampler=UniformSampler(8), transform=synthetic, train=True,
                cache_decoded=True), 16, small_batches),
            ("224px 300 frames, dense 8x16", lambda: VideoDataset(
                [Sample("long.mp4", 0)] * 64, tmp, sampler=DenseSampler(8, 16), transform=kinetics, train=True),
             4, big_batches),
        ]
        print(f"| {'pipeline (decode + sample + augment)':<36} | workers | clips/s | ms/clip |")
        print(f"|{'-' * 38}|---------|---------|---------|")
        for name, make, batch_size, batches in rows:
            for workers in args.workers:
                rate = clips_per_second(make(), workers, batch_size, batches)
                print(f"| {name:<36} | {workers:>7} | {rate:>7.1f} | {1000 / rate:>7.1f} |", flush=True)


if __name__ == "__main__":
    main()
