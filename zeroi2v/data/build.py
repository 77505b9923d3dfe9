"""The data of a run: ``build_datasets(cfg, image_size)`` turns ``cfg.data`` and ``cfg.test`` into the
training, validation and test ``VideoDataset``s (used by ``train`` and ``zeroi2v eval``); ``ShardLoader``
gives one process its batches of the training set, epoch by epoch."""
from __future__ import annotations

import itertools
import os
import sys
from typing import TYPE_CHECKING, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler

from zeroi2v.data.dataset import VideoDataset
from zeroi2v.data.formats import read_annotation
from zeroi2v.data.views import make_sampler
from zeroi2v.data.transforms import TestTransform, TrainTransform, directional_classes, resolve_flip_label_map

if TYPE_CHECKING:
    from zeroi2v.config import Config

_ANNOTATION_ARG = {"mmaction": "list_file", "kinetics": "csv_file", "ssv2": "split_json", "ucf101": "annotation_dir",
                   "hmdb51": "split_dir", "diving48": "json_file", "folder": "root"}
"""The argument of each ``zeroi2v.data.formats`` reader that takes the split's annotation path."""


def build_datasets(cfg: Config, image_size: int, splits: Sequence[str] = ("train", "val", "test")
                   ) -> tuple[Dataset | None, Dataset | None, Dataset | None]:
    """(train, val, test) VideoDatasets from ``cfg.data`` (None where no annotation is given or the split
    is not in ``splits``; evaluation-only callers pass ``splits=("test",)`` and skip scanning the
    training videos).

    Validation during training uses 1 clip × 1 centre crop unless ``test.val_full_views``; the test set
    (``data.test_ann``, else ``data.val_ann`` again) uses ``test.clips`` × ``test.crops`` views.
    """
    d, t = cfg.data, cfg.test
    size = d.size or image_size
    frames = cfg.num_frames
    if d.format not in _ANNOTATION_ARG:
        raise ValueError(f"data.format must be one of {list(_ANNOTATION_ARG)}, got {d.format!r}")

    def sampler(clips: int):
        return make_sampler(d.sampler, frames, d.interval, clips)

    def annotation(path: str, subset: str, classes: list[str] | None):
        kwargs = {_ANNOTATION_ARG[d.format]: path, **d.format_args}
        if d.format in ("ucf101", "hmdb51"):
            kwargs.setdefault("subset", subset)
        if classes is not None and d.format in ("mmaction", "kinetics", "folder") and "classes" not in kwargs:
            kwargs["classes"] = classes  # validation/test labels follow the training class order
        return read_annotation(d.format, **kwargs)

    def root_of(path: str) -> str | None:
        return d.root or (path if d.format == "folder" else None)

    train_set = val_set = test_set = None
    classes = None
    common = dict(seed=cfg.train.seed, on_missing=d.on_missing, cache_decoded=d.cache_decoded)
    if d.train_ann and "train" not in splits:  # evaluation only: the training list gives the class order,
        try:                                     # its videos are neither needed nor checked
            classes = annotation(d.train_ann, "train", None).classes
        except FileNotFoundError:
            classes = None  # no training annotation here: the evaluation split's own order
    if d.train_ann and "train" in splits:
        ann = annotation(d.train_ann, "train", None)
        classes = ann.classes
        transform = train_transform(cfg, size, classes)
        train_set = VideoDataset(ann, root_of(d.train_ann), sampler=sampler(1), transform=transform, train=True, **common)

    def evaluation_set(path: str, full: bool):
        return VideoDataset(annotation(path, "test", classes), root_of(path), sampler=sampler(t.clips if full else 1),
                            transform=test_transform(cfg, size, full), train=False, **common)

    if d.val_ann and "val" in splits:
        val_set = evaluation_set(d.val_ann, t.val_full_views)
    if d.test_ann and "test" in splits:
        test_set = evaluation_set(d.test_ann, True)
    elif d.val_ann and "test" in splits:  # no test split: the final multi-view test runs on the validation split
        test_set = val_set if val_set is not None and t.val_full_views else evaluation_set(d.val_ann, True)
    return train_set, val_set, test_set


def train_transform(cfg: Config, size: int, classes: Sequence[str]) -> TrainTransform:
    """The training augmentation of ``cfg.data`` at crop ``size`` (every setting from the config: short
    side, RandAugment, crop scale and ratio, flip and its label map resolved against the training
    ``classes``, random erasing). Warns once when flips may corrupt direction classes (``warn_directional``)."""
    d = cfg.data
    flip_map = resolve_flip_label_map(d.flip_label_map, classes)
    if d.flip > 0 and not flip_map:
        warn_directional(classes, d.flip)
    return TrainTransform(size=size, short_side=cfg.short_side_for(size), randaugment=d.randaugment, flip=d.flip,
                          flip_label_map=flip_map, random_erasing=d.random_erasing, mean=cfg.model.mean,
                          std=cfg.model.std, crop_scale=d.crop_scale, crop_ratio=d.crop_ratio)


def test_transform(cfg: Config, size: int, full: bool = True) -> TestTransform:
    """The test views of ``cfg.test`` at crop ``size``: ``test.crops`` crops when ``full``, else 1 centre crop."""
    t = cfg.test
    return TestTransform(size=size, short_side=t.short_side or size, crops=t.crops if full else 1,
                         mean=cfg.model.mean, std=cfg.model.std)


test_transform.__test__ = False  # not a pytest test, despite the name

_WARNED: set[tuple[str, ...]] = set()


def warn_directional(classes: Sequence[str], flip: float) -> None:
    """One line on stderr (once per process and set of classes, rank 0 only) when class names look
    directional but flips are on with no ``data.flip_label_map``: a mirrored "left" clip trains as "left"."""
    names = directional_classes(classes)
    if not names or tuple(classes) in _WARNED or int(os.environ.get("RANK", "0")) != 0:
        return
    _WARNED.add(tuple(classes))
    shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
    print(f"[zeroi2v] warning: data.flip={flip} mirrors training clips but classes {shown} look directional and "
          f"data.flip_label_map is not set, so a mirrored clip keeps its label; set data.flip_label_map to the "
          f"pairs a flip swaps ([[left_class, right_class]]) or data.flip: 0", file=sys.stderr)


class SkipSampler(Sampler):
    """Wraps a sampler and drops its first ``skip`` indices: resuming in the middle of an epoch."""

    def __init__(self, sampler: DistributedSampler):
        self.sampler, self.skip = sampler, 0

    def __iter__(self):
        return itertools.islice(iter(self.sampler), self.skip, None)

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)


class ShardLoader:
    """One process's batches of the training set: its shard of a ``DistributedSampler`` (``drop_last``), in
    an order that is a function of (seed, epoch) only, so that a resumed epoch skips exactly the clips its
    checkpoint had done. ``batches_per_epoch`` full batches per epoch; loader workers (and their decode
    caches) live across epochs."""

    def __init__(self, dataset: Dataset, batch_size: int, rank: int, world: int, seed: int, workers: int,
                 pin_memory: bool):
        self.shard = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.sampler, self.generator, self.seed = SkipSampler(self.shard), torch.Generator(), seed
        self.loader = DataLoader(dataset, batch_size=batch_size, sampler=self.sampler, num_workers=workers,
                                 pin_memory=pin_memory, drop_last=True, generator=self.generator,
                                 persistent_workers=workers > 0)
        self.batches_per_epoch = len(self.shard) // batch_size

    def epoch(self, epoch: int, skip: int = 0) -> Iterator:
        """The batches of ``epoch``, after its first ``skip`` clips."""
        self.shard.set_epoch(epoch)
        self.sampler.skip = skip
        self.generator.manual_seed(self.seed * 1_000_003 + epoch)
        return iter(self.loader)
