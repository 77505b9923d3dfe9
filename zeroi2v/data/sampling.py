"""Which frames of a video make a clip: TSN-style uniform sampling and dense (strided) sampling.

A sampler is a pure function of (total_frames, train, rng) -> int64 indices of shape (num_clips, num_frames),
so the dataset can make every epoch reproducible by handing it a Generator seeded from (seed, epoch, index).
Testing never touches the rng. Videos shorter than a clip still give valid indices, deterministically:
the uniform sampler repeats frames, the dense sampler loops (index modulo length) as mmaction does.
"""

from __future__ import annotations

import numpy as np


class UniformSampler:
    """TSN: split the video into `num_frames` equal segments and take one frame from each.

    Training takes a random frame in each segment; testing the middle one. With `num_clips` N > 1 (testing),
    clip k takes the frame at offset (k + 1/2)/N of each segment, so the clips are evenly spread inside the
    segments (N=1 gives the middle). This is what the paper uses for SSv2, UCF101 and HMDB51.
    """

    def __init__(self, num_frames: int, num_clips: int = 1):
        # num_frames: frames per clip (T, the model's temporal length); num_clips: views per video.
        if num_frames < 1 or num_clips < 1:
            raise ValueError(f"num_frames and num_clips must be >= 1, got {num_frames}, {num_clips}")
        self.num_frames, self.num_clips = num_frames, num_clips

    def __call__(self, total_frames: int, train: bool, rng: np.random.Generator | None = None) -> np.ndarray:
        _check_total(total_frames)
        t, n = self.num_frames, self.num_clips
        seg = np.arange(t)
        if total_frames < t:
            # Segments shorter than one frame: take each segment's middle in both modes, so every frame
            # appears floor(T/total) or ceil(T/total) times, in order.
            return np.tile((2 * seg + 1) * total_frames // (2 * t), (n, 1)).astype(np.int64)
        start = seg * total_frames // t  # integer segment bounds: [start_i, end_i), never empty here
        length = (seg + 1) * total_frames // t - start
        if train:
            offsets = np.floor(rng.random((n, t)) * length).astype(np.int64)
        else:
            offsets = (2 * np.arange(n)[:, None] + 1) * length // (2 * n)
        return (start + offsets).astype(np.int64)

    def __repr__(self) -> str:
        return f"UniformSampler(num_frames={self.num_frames}, num_clips={self.num_clips})"


class DenseSampler:
    """Dense sampling (mmaction SampleFrames): `num_frames` frames every `interval` frames.

    A clip covers num_frames × interval frames (each sampled frame stands for `interval` frames, as in
    mmaction). Training starts it at a random offset; testing places `num_clips` clips evenly from the
    first possible offset to the last (one clip: centred). Frames past the end loop back to the start.
    The paper uses 8×16 (8 frames, interval 16) for Kinetics-400, tested with 3 clips.
    """

    def __init__(self, num_frames: int, interval: int, num_clips: int = 1):
        # num_frames: frames per clip; interval: stride between sampled frames; num_clips: views per video.
        if num_frames < 1 or interval < 1 or num_clips < 1:
            raise ValueError(f"num_frames, interval and num_clips must be >= 1, got "
                             f"{num_frames}, {interval}, {num_clips}")
        self.num_frames, self.interval, self.num_clips = num_frames, interval, num_clips

    def __call__(self, total_frames: int, train: bool, rng: np.random.Generator | None = None) -> np.ndarray:
        _check_total(total_frames)
        n, span = self.num_clips, self.num_frames * self.interval
        max_offset = max(total_frames - span, 0)
        room = (max_offset + 1) // n  # training: one random start in each of n equal ranges (mmaction)
        if train and room > 0:
            offsets = np.arange(n) * room + rng.integers(0, room, size=n)
        elif n == 1:
            offsets = np.array([max_offset // 2])
        else:
            offsets = np.round(np.arange(n) * (max_offset / (n - 1)))
        frames = offsets.astype(np.int64)[:, None] + np.arange(self.num_frames) * self.interval
        return frames % total_frames

    def __repr__(self) -> str:
        return (f"DenseSampler(num_frames={self.num_frames}, interval={self.interval}, "
                f"num_clips={self.num_clips})")


def _check_total(total_frames: int) -> None:
    if total_frames < 1:
        raise ValueError(f"cannot sample from a video with {total_frames} frames")
