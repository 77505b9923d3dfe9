"""Clip transforms: training augmentation and test-time views, on uint8 clips (T, C, H, W).

Built from torchvision.transforms.v2 with the clip wrapped as a `tv_tensors.Video`: v2 then draws ONE set of
random parameters per call and applies it to every frame, so RandAugment, the crop, the flip and the
erased box are consistent over time (a per-frame augmentation would invent motion). Outputs follow the
model's layout, float (C, T, H, W), normalised with CLIP's mean/std on the 0–255 scale.
"""

from __future__ import annotations

import contextlib
from typing import Mapping, Sequence

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

CLIP_MEAN = (122.769, 116.74, 104.04)  # OpenAI CLIP pixel statistics, 0–255 scale, RGB
CLIP_STD = (68.493, 66.63, 70.321)

# Something-Something v2 classes that a horizontal flip turns into each other
# ("Pushing something from left to right" <-> "... from right to left", and the two other pairs).
SSV2_FLIP_LABEL_MAP = {86: 87, 87: 86, 93: 94, 94: 93, 166: 167, 167: 166}


def normalize(frames: torch.Tensor, mean: Sequence[float] = CLIP_MEAN,
              std: Sequence[float] = CLIP_STD) -> torch.Tensor:
    """uint8 (or 0–255 float) frames (..., C, H, W) -> float32 (x - mean) / std, channels at dim -3."""
    m = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
    return (frames.float() - m) / s


def denormalize(clip: torch.Tensor, mean: Sequence[float] = CLIP_MEAN,
                std: Sequence[float] = CLIP_STD) -> torch.Tensor:
    """A normalised model input (..., C, T, H, W) -> displayable uint8 frames (..., T, H, W, C).

    The inverse of the training/test transforms' output layout, for notebooks and the app (plt.imshow).
    """
    m = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1, 1)
    pixels = (clip.detach().float().cpu() * s + m).round().clamp(0, 255).to(torch.uint8)
    return pixels.movedim(-4, -1)  # C to the end: (..., T, H, W, C)


@contextlib.contextmanager
def _torch_rng_from(generator: torch.Generator | None):
    """Run v2's random ops (which use torch's global CPU RNG) from `generator`, leaving the global RNG alone."""
    if generator is None:
        yield
        return
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield


class TrainTransform:
    """Training augmentation of the paper's configs, one parameter draw per clip.

    short side -> `short_side`, RandAugment(n, m), RandomResizedCrop to `size`, horizontal flip (swapping
    labels by `flip_label_map`), CLIP normalisation, random erasing. Returns (float (C, T, H, W), label).
    """

    def __init__(self, size: int = 224, short_side: int | None = 256,
                 randaugment: tuple[int, int] | None = (7, 4), flip: float = 0.5,
                 flip_label_map: Mapping[int, int] | None = None, random_erasing: float = 0.0,
                 mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD,
                 crop_scale: tuple[float, float] = (0.08, 1.0)):
        # size: output side (square crop). short_side: resize the short side to this first (None: keep).
        # randaugment: (magnitude, num_ops) as in the paper's "m7 n4", None to disable.
        # flip: probability of a horizontal flip. flip_label_map: {label: mirrored label}, give both
        #   directions (SSV2_FLIP_LABEL_MAP); labels not in it keep their value.
        # random_erasing: probability of erasing one box with random values, after normalisation (SSv2: 0.25).
        # mean, std: normalisation on the 0–255 scale. crop_scale: area range of RandomResizedCrop.
        self.flip, self.flip_label_map = flip, dict(flip_label_map or {})
        self.mean, self.std = tuple(mean), tuple(std)
        steps = [v2.Resize(short_side, antialias=True)] if short_side else []
        if randaugment is not None:
            magnitude, num_ops = randaugment
            steps.append(v2.RandAugment(num_ops=num_ops, magnitude=magnitude))
        steps.append(v2.RandomResizedCrop(size, scale=crop_scale, antialias=True))
        self.spatial = v2.Compose(steps)
        self.erase = v2.RandomErasing(p=random_erasing, value="random") if random_erasing > 0 else None

    def __call__(self, clip: torch.Tensor, label: int, generator: torch.Generator | None = None):
        """clip: uint8 (T, C, H, W). generator: makes the draw reproducible (the dataset seeds it)."""
        with _torch_rng_from(generator):
            video = self.spatial(tv_tensors.Video(clip))
            if self.flip > 0 and torch.rand(()) < self.flip:  # drawn here so the label can follow the flip
                video = F.horizontal_flip(video)
                label = self.flip_label_map.get(label, label)
            x = tv_tensors.Video(normalize(video, self.mean, self.std))
            if self.erase is not None:
                x = self.erase(x)
        return x.as_subclass(torch.Tensor).permute(1, 0, 2, 3).contiguous(), label

    def __repr__(self) -> str:
        return f"TrainTransform({self.spatial}, flip={self.flip}, erase={self.erase})"


class TestTransform:
    """Deterministic test views: short side -> `short_side`, then 1 centre crop or 3 crops.

    Three crops (mmaction ThreeCrop) are squares at the start, centre and end of the long side (left /
    centre / right for landscape video, top / centre / bottom for portrait), centred on the short side.
    The paper's SSv2/UCF101/HMDB51 3-crop testing resizes the short side to the crop size (short_side=224).
    Returns float (crops, C, T, H, W).
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, size: int = 224, short_side: int | None = 256, crops: int = 1,
                 mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD):
        # size: crop side; short_side: resize the short side to this first (None: keep); crops: 1 or 3.
        if crops not in (1, 3):
            raise ValueError(f"crops must be 1 or 3, got {crops}")
        self.size, self.short_side, self.crops = size, short_side, crops
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, clip: torch.Tensor) -> torch.Tensor:
        video = tv_tensors.Video(clip)
        if self.short_side:
            video = F.resize(video, [self.short_side], antialias=True)
        h, w = video.shape[-2:]
        if min(h, w) < self.size:
            raise ValueError(f"clip of {h}x{w} is smaller than the crop size {self.size}")
        top, left = (h - self.size) // 2, (w - self.size) // 2
        if self.crops == 1:
            boxes = [(top, left)]
        elif w >= h:
            boxes = [(top, 0), (top, left), (top, w - self.size)]
        else:
            boxes = [(0, left), (top, left), (h - self.size, left)]
        views = [F.crop(video, t, l, self.size, self.size) for t, l in boxes]
        x = normalize(torch.stack([v.as_subclass(torch.Tensor) for v in views]), self.mean, self.std)
        return x.permute(0, 2, 1, 3, 4).contiguous()  # (crops, T, C, H, W) -> (crops, C, T, H, W)

    def __repr__(self) -> str:
        return f"TestTransform(size={self.size}, short_side={self.short_side}, crops={self.crops})"
