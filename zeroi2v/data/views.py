"""From a video to the model's input: the one path every consumer takes.

    source ─ sampler (which frames) ─ one decode pass ─ transform (clip tensors) ─> views

The training and evaluation data sets (``VideoDataset``: ``decode_clips`` in its retry loop, then
``transform_clips``), ``zeroi2v eval`` and ``predict``, the demo and Grad-CAM (``zeroi2v.explain``) and the
quickstart all go through these functions; ``model_views`` is the evaluation form for a model (its frame
count, image size and pixel statistics), and ``make_sampler`` the one place a sampler is chosen by name.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from zeroi2v.data.sampling import DenseSampler, UniformSampler

SAMPLERS = {"uniform": UniformSampler, "dense": DenseSampler}


def make_sampler(kind: str, num_frames: int, interval: int = 1, clips: int = 1):
    """'uniform' (TSN segments) or 'dense' (consecutive frames every ``interval``-th), ``clips`` per video."""
    if kind not in SAMPLERS:
        raise ValueError(f"unknown sampler {kind!r}; samplers: {sorted(SAMPLERS)}")
    return DenseSampler(num_frames, interval, clips) if kind == "dense" else UniformSampler(num_frames, clips)


def decode_clips(source, sampler, train: bool = False, rng: np.random.Generator | None = None,
                 deadline: float | None = None) -> tuple[torch.Tensor, np.ndarray]:
    """The frames ``sampler`` picks from ``source`` (a ``VideoSource``), decoded in one pass: uint8
    (clips, T, C, H, W) and their indices (clips, T). ``deadline`` (a ``time.monotonic()`` value) stops
    decoding between frames with ``DecodeTimeout``."""
    indices = sampler(source.num_frames, train, rng)
    frames = source.get(indices.reshape(-1), deadline=deadline)
    return frames.view(*indices.shape, *frames.shape[1:]), indices


def transform_clips(clips: torch.Tensor, transform, train: bool = False, label: Any = None,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, Any]:
    """Training: the one clip through ``transform(clip, label, generator=...)`` (a ``TrainTransform``, which
    may change the label, e.g. a flip). Evaluation: every clip through ``transform`` (a ``TestTransform``,
    ``crops`` views each), concatenated to (clips*crops, C, T, H, W). Returns (video, label)."""
    if train:
        return transform(clips[0], label, generator=generator)
    return torch.cat([transform(c) for c in clips]), label


def clip_views(source, sampler, transform, train: bool = False, rng: np.random.Generator | None = None,
               label: Any = None, generator: torch.Generator | None = None, deadline: float | None = None):
    """``decode_clips`` then ``transform_clips``: returns (video or views, label, indices)."""
    clips, indices = decode_clips(source, sampler, train, rng, deadline)
    return (*transform_clips(clips, transform, train, label, generator), indices)


def model_views(model, source, clips: int = 1, crops: int = 1, short_side: int | None = None,
                deadline: float | None = None) -> tuple[torch.Tensor, np.ndarray]:
    """Test views of a video for ``model``: ``clips`` uniform clips × ``crops`` crops at its image size.

    The short side is resized to ``short_side`` (default: the model's input size, so a centre crop keeps
    the whole short side); a source opened with ``open_video(path, short_side=...)`` comes out of the
    decoder at that size already. Returns (views float (clips*crops, C, T, H, W), indices (clips, T)).
    """
    from zeroi2v.data.transforms import TestTransform
    size = model.image_size
    transform = TestTransform(size=size, short_side=short_side or size, crops=crops, mean=model.cfg.mean,
                              std=model.cfg.std)
    views, _, indices = clip_views(source, make_sampler("uniform", model.num_frames, clips=clips), transform,
                                   deadline=deadline)
    return views, indices
