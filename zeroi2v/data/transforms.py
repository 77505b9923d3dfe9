"""Clip transforms: training augmentation and test-time views, on uint8 clips (T, C, H, W).

Built from torchvision.transforms.v2 with the clip wrapped as a `tv_tensors.Video`: v2 then draws ONE set of
random parameters per call and applies it to every frame, so RandAugment, the crop, the flip and the
erased box are consistent over time (a per-frame augmentation would invent motion). Outputs follow the
model's layout, float (C, T, H, W), normalised with CLIP's mean/std on the 0–255 scale.
"""

from __future__ import annotations

import contextlib
import os
import re
from typing import Mapping, Sequence

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from zeroi2v.model_config import CLIP_MEAN, CLIP_STD  # noqa: E402,F401  (one definition, torch-free)

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
                 crop_scale: tuple[float, float] = (0.08, 1.0), crop_ratio: tuple[float, float] = (0.75, 4 / 3)):
        # size: output side (square crop). short_side: resize the short side to this first (None: keep).
        # randaugment: (magnitude, num_ops) as in the paper's "m7 n4", None to disable.
        # flip: probability of a horizontal flip. flip_label_map: {label: mirrored label}, give both
        #   directions (SSV2_FLIP_LABEL_MAP); labels not in it keep their value.
        # random_erasing: probability of erasing one box with random values, after normalisation (SSv2: 0.25).
        # mean, std: normalisation on the 0–255 scale. crop_scale, crop_ratio: area and aspect-ratio ranges
        #   of RandomResizedCrop (data.crop_scale, data.crop_ratio).
        self.flip, self.flip_label_map = flip, dict(flip_label_map or {})
        self.mean, self.std = tuple(mean), tuple(std)
        steps = [v2.Resize(short_side, antialias=True)] if short_side else []
        if randaugment is not None:
            magnitude, num_ops = randaugment
            steps.append(v2.RandAugment(num_ops=num_ops, magnitude=magnitude))
        steps.append(v2.RandomResizedCrop(size, scale=tuple(crop_scale), ratio=tuple(crop_ratio), antialias=True))
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


# --- flips and direction classes ---------------------------------------------------------------------------

DIRECTION_WORDS = {"left": "right", "right": "left", "leftward": "rightward", "rightward": "leftward",
                   "leftwards": "rightwards", "rightwards": "leftwards", "clockwise": "anticlockwise",
                   "anticlockwise": "clockwise", "counterclockwise": "clockwise", "cw": "ccw", "ccw": "cw"}
"""Words whose meaning a horizontal mirror changes, each with its mirror (for suggesting ``flip_label_map``
pairs). Only these make a class name 'directional' for flips: up/down, before/after, push/pull or open/close
survive a left-right mirror unchanged (UCF101's PushUps stays PushUps), so they turn no flip off."""


def name_words(name: str) -> list[str]:
    """The lower-case words of a class name: 'move_left', 'Move left', 'MoveLeft', 'counter-clockwise' ->
    [move, left] / [counterclockwise]."""
    name = re.sub(r"(?i)(counter|anti)[-\s_]+(clockwise)", r"\1\2", str(name))
    return [w.lower() for w in re.findall(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+", name)]


def directional_classes(classes: Sequence[str]) -> list[str]:
    """The class names that a horizontal flip may turn into another class: those with a left/right or
    clockwise/anticlockwise word (``DIRECTION_WORDS``)."""
    return [c for c in classes if any(w in DIRECTION_WORDS for w in name_words(c))]


def mirror_pairs(classes: Sequence[str]) -> list[list[str]]:
    """Pairs of classes whose names differ by mirrored words only (move_left / move_right, rotate_cw /
    rotate_ccw): candidates for ``data.flip_label_map``."""
    by_words = {tuple(name_words(c)): c for c in classes}
    pairs = []
    for words, name in by_words.items():
        mirrored = tuple(DIRECTION_WORDS.get(w) or w for w in words)
        other = by_words.get(mirrored)
        if other is not None and mirrored != words and [other, name] not in pairs:
            pairs.append([name, other])
    return pairs


def read_flip_pairs(path: str) -> list[list[str]]:
    """Pairs of class names from a file: a .yaml/.yml/.json list of pairs, or one pair per line with the two
    names separated by a comma or a tab (blank lines and lines starting with # skipped)."""
    from zeroi2v.config_files import read_yaml
    from zeroi2v.files import read_text
    if str(path).lower().endswith((".yaml", ".yml", ".json")):
        pairs = read_yaml(path)
        if not isinstance(pairs, list):
            raise ValueError(f"{path} (data.flip_label_map): expected a list of class-name pairs like "
                             f"[[left, right]], got {type(pairs).__name__}")
        return pairs
    pairs = []
    for n, line in enumerate(read_text(path).splitlines(), 1):
        if line.strip() and not line.lstrip().startswith("#"):
            parts = [p.strip() for p in re.split(r"[,\t]", line)]
            if len(parts) != 2 or not all(parts):
                raise ValueError(f"{path}:{n} (data.flip_label_map): expected two class names separated by a "
                                 f"comma or a tab, got {line.strip()!r}")
            pairs.append(parts)
    return pairs


def resolve_flip_label_map(spec, classes: Sequence[str], key: str = "data.flip_label_map") -> dict[int, int]:
    """``data.flip_label_map`` as {label: mirrored label} for ``classes`` (the training set's names):
    'ssv2', None / 'none' (no map), a list of name pairs, or a file of them (``read_flip_pairs``). Each pair
    swaps both ways; a name that is not a class is an error naming ``key`` and the name."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("none", "null")):
        return {}
    if isinstance(spec, str) and spec.strip().lower() == "ssv2":
        return dict(SSV2_FLIP_LABEL_MAP)
    if isinstance(spec, str):
        if not os.path.isfile(spec):
            raise FileNotFoundError(f"{key}: {spec!r} is neither 'ssv2', 'none' nor an existing file of class-name "
                                    f"pairs; fix the path or write the pairs in the config ([[left, right]])")
        spec, key = read_flip_pairs(spec), f"{key} ({spec})"
    index = {str(name): i for i, name in enumerate(classes)}
    out: dict[int, int] = {}
    for pair in spec:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ValueError(f"{key}: each entry is a pair of class names like [left, right], got {pair!r}")
        unknown = [str(n) for n in pair if str(n) not in index]
        if unknown:
            shown = ", ".join(list(index)[:12]) + (", ..." if len(index) > 12 else "")
            fix = ("the training set's classes have no names: give them (data.format_args.classes) or write "
                   "labels" if all(str(c).isdigit() for c in classes) else "fix the name")
            raise ValueError(f"{key}: {unknown[0]!r} is not a class of the training set (classes: {shown}); {fix}")
        a, b = (index[str(n)] for n in pair)
        out[a], out[b] = b, a
    return out
