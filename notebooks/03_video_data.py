# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · Video data: from a file to a clip tensor
#
# Everything the model sees comes through `zeroi2v.data`: **decode** a video (decord, or a folder of
# frames), **sample** which frames make a clip (TSN-uniform or dense), **augment** the clip with one set of
# random parameters for all its frames, and **normalise** it with CLIP's statistics into
# `(C, T, H, W)`. This notebook walks through each step on the offline synthetic set that the quickstart
# trains on, so it needs no download.

# %%
import os
import tempfile
from pathlib import Path

# SMALL: fewer videos (tests, CI, 2 CPU cores). Run with ZEROI2V_NB_SMALL=1 to get it.
SMALL = os.environ.get("ZEROI2V_NB_SMALL", "0") == "1"

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import display

from zeroi2v.data import (DenseSampler, TestTransform, TrainTransform, UniformSampler, VideoDataset,
                          denormalize, make_synthetic_videos, open_video, read_annotation, write_video)
from zeroi2v.data.synthetic import REGISTRY, make_clip


def show(fig):
    """Show a figure once (inline in Jupyter; nothing to see under a headless Agg backend)."""
    display(fig)
    plt.close(fig)


def strip(frames, titles=None, title=None, height=1.3):
    """A row of frames (T, H, W, 3) uint8 as one figure."""
    fig, axes = plt.subplots(1, len(frames), figsize=(height * len(frames), height * 1.25), squeeze=False)
    for i, (ax, frame) in enumerate(zip(axes[0], frames)):
        ax.imshow(np.asarray(frame), interpolation="nearest")
        ax.set_axis_off()
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10, x=0.01, ha="left")
    return fig


WORK = Path(tempfile.mkdtemp(prefix="zeroi2v_nb03_"))
print("SMALL =", SMALL, "| data in", WORK)

# %% [markdown]
# ## The synthetic set
#
# Sixteen classes of one moving object, 16 frames of 32×32 px, written as real H.264 MP4s with an
# mmaction list per split. Half are **order** classes (mirror pairs such as moving left / right: frame *t*
# alone depends on *t*, so a temporal embedding is enough), half are **relation** classes (pairs such as
# colour changes / stays, or fast / slow in a random direction, built so that every single frame has the
# same distribution in both classes of a pair: only comparing frames tells them apart, which is what
# STDHA's shifted heads do). One example per class:

# %%
per_class = {"train": 2, "val": 1} if SMALL else {"train": 8, "val": 4}
summary = make_synthetic_videos(WORK / "synthetic", seed=0, videos_per_class=per_class)
print(f"{sum(per_class.values()) * len(summary['classes'])} videos in {summary['seconds']} s")

train = read_annotation("mmaction", WORK / "synthetic" / "train.txt", classes=WORK / "synthetic" / "classes.txt")
first = {}
for sample in train.samples:
    first.setdefault(sample.label, sample)
fig, axes = plt.subplots(len(first), 8, figsize=(8 * 0.9, len(first) * 0.95))
for row, (label, sample) in zip(axes, sorted(first.items())):
    video = open_video(WORK / "synthetic" / sample.path)
    frames = video.get(np.arange(0, video.num_frames, 2)).permute(0, 2, 3, 1)
    for ax, frame in zip(row, frames):
        ax.imshow(frame, interpolation="nearest")
        ax.set_axis_off()
    name = train.classes[label]
    row[0].set_title(f"{name} ({REGISTRY[name].kind})", fontsize=7, loc="left")
fig.tight_layout(pad=0.2)
show(fig)

# %% [markdown]
# ## Decoding
#
# `open_video` returns a `VideoSource`: `num_frames`, `fps` and `get(indices)` giving uint8
# `(T, C, H, W)`. It reads any file decord reads, or a folder of numbered images; a file that cannot be
# read (missing, empty, truncated, not a video) raises `VideoDecodeError`, which the dataset turns into
# a logged skip. To make sampling visible we write one longer clip: an object rotating clockwise over 48
# frames.

# %%
frames, boxes, track = make_clip("rotate_cw", np.random.default_rng(1), num_frames=48, size=32)
write_video(WORK / "rotate.mp4", frames, fps=8)
video = open_video(WORK / "rotate.mp4")
print(video)
clip = video.get(range(video.num_frames))
print("decoded", tuple(clip.shape), clip.dtype,
      "| mean |decoded - rendered| =", float((clip.permute(0, 2, 3, 1).float() - torch.from_numpy(frames)).abs().mean()))

# %% [markdown]
# ## Sampling frames
#
# A sampler maps `(total_frames, train, rng)` to indices of shape `(clips, frames)`. **Uniform** (TSN, used
# for SSv2/UCF101/HMDB51) cuts the video into *T* segments: one random frame per segment when training,
# the middle when testing. **Dense** (Kinetics) takes *T* frames every `interval`, from a random start
# when training, evenly spaced clips when testing. Videos shorter than a clip repeat or loop frames.

# %%
rng = np.random.default_rng(0)
samplers = {
    "uniform 8, train": UniformSampler(8)(video.num_frames, True, rng)[0],
    "uniform 8, test": UniformSampler(8)(video.num_frames, False)[0],
    "dense 8x4, train": DenseSampler(8, 4)(video.num_frames, True, rng)[0],
    "dense 8x4, 2 test clips (2nd)": DenseSampler(8, 4, num_clips=2)(video.num_frames, False)[1],
}
for name, idx in samplers.items():
    show(strip(video.get(idx).permute(0, 2, 3, 1), titles=idx.tolist(), title=name))

# %% [markdown]
# ## Training augmentation, one draw per clip
#
# `TrainTransform` follows the paper's recipe (short side, RandAugment m7 n4, RandomResizedCrop, flip,
# optional random erasing) built from `torchvision.transforms.v2`. The clip goes in as one `Video`
# tensor, so every random parameter is drawn once and applied to all frames: the augmentation never
# invents motion. With a flip label map, mirrored clips get the mirrored label (SSv2's left/right classes;
# here rotate_cw becomes rotate_ccw). Each row is one draw, shown back in pixels with `denormalize`.

# %%
from zeroi2v.data import flip_label_map

classes = summary["classes"]
augment = TrainTransform(size=32, short_side=None, randaugment=(7, 4), flip=0.5,
                         flip_label_map=flip_label_map(classes), random_erasing=0.25, crop_scale=(0.4, 1.0))
idx = UniformSampler(8)(video.num_frames, False)[0]
show(strip(video.get(idx).permute(0, 2, 3, 1), title="original (rotate_cw)"))
for seed in range(3):
    x, label = augment(video.get(idx), classes.index("rotate_cw"), generator=torch.Generator().manual_seed(seed))
    show(strip(denormalize(x), title=f"draw {seed}: label -> {classes[label]}, tensor {tuple(x.shape)}"))

# %% [markdown]
# ## Test views and the dataset
#
# `TestTransform` resizes and takes 1 centre crop or 3 crops along the long side; the dataset stacks
# clips × crops into `V` views. `VideoDataset` ties it together: missing files are reported at
# construction, undecodable ones are replaced by another sample and counted in `decode_failures`, and
# the randomness of item *i* comes from `(seed, epoch, i)` only, so results do not depend on the number
# of DataLoader workers.

# %%
from torch.utils.data import DataLoader

root = WORK / "synthetic"
train_set = VideoDataset(train, root, sampler=UniformSampler(8), transform=augment, train=True,
                         cache_decoded=True)
test_set = VideoDataset(read_annotation("mmaction", root / "val.txt", classes=root / "classes.txt"), root,
                        sampler=UniformSampler(8, num_clips=2),
                        transform=TestTransform(size=32, short_side=None, crops=3), train=False)
batch = next(iter(DataLoader(train_set, batch_size=8, shuffle=True)))
print("train batch:", tuple(batch["video"].shape), "labels", batch["label"].tolist(),
      "decode failures", int(batch["decode_failures"].sum()))
item = test_set[0]
print("test item:", tuple(item["video"].shape), "= (clips x crops, C, T, H, W)")

# %% [markdown]
# ## Scrub through a clip
#
# A slider over the frames of the 48-frame clip (needs a live Jupyter frontend with ipywidgets). Where
# widgets cannot render — headless runs, static viewers — every frame is drawn instead.

# %%
all_frames = clip.permute(0, 2, 3, 1).numpy()


def show_frame(t=0):
    fig, ax = plt.subplots(figsize=(2.5, 2.5))
    ax.imshow(all_frames[t], interpolation="nearest")
    ax.set_title(f"frame {t}, box {np.round(boxes[t], 1).tolist()}", fontsize=8)
    ax.set_axis_off()
    show(fig)


try:
    import ipywidgets as widgets
except ImportError:
    widgets = None
# Widgets need a live frontend; a headless run (MPLBACKEND=Agg, as in the tests) cannot show them.
live = widgets is not None and "agg" not in plt.get_backend().lower()
if live:
    widgets.interact(show_frame, t=widgets.IntSlider(value=0, min=0, max=len(all_frames) - 1))
else:  # static fallback: all frames, 16 per row
    for start in range(0, len(all_frames), 16):
        show(strip(all_frames[start:start + 16], titles=list(range(start, start + 16)), height=0.8))
