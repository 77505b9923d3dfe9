"""The video dataset: sample -> decode -> sample frames -> transform, robust to bad files, reproducible.

Two failure modes are handled differently on purpose. Files missing at construction are a setup problem:
they are listed and either dropped with a warning or raised at once. Files that exist but fail to decode
are found only while iterating: the item is replaced by another sample chosen from the item's own random
stream, and the files it could not decode travel in the item (`undecodable_files`, `decode_failures`), so
the training loop can tell distinct files apart over an epoch and a run even across DataLoader worker
processes (``batch_failures`` reads them from a batch). Each undecodable file is logged once per data set,
whatever the number of epochs, attempts or workers: which samples failed is kept in shared memory, seen by
every worker (persistent or not) and by the main process.

Randomness comes from a numpy Generator seeded by (seed, epoch, index), so an item's frames and
augmentation do not depend on worker count, worker order or what was drawn before.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from zeroi2v.data.decode import DEFAULT_FRAME_TEMPLATE, TensorSource, VideoDecodeError, VideoSource, open_video
from zeroi2v.data.formats import Annotation, Sample
from zeroi2v.data.views import decode_clips, transform_clips

log = logging.getLogger(__name__)


UNDECODABLE_SEP = "\n"
"""Joins the paths in an item's ``undecodable_files`` (annotation formats are line-based: no path holds
one)."""


def batch_failures(batch: object) -> tuple[list[str], int]:
    """(undecodable files named in ``batch``, distinct and in order; decode failures it reports without a
    name). A batch of ``VideoDataset`` items names every failure; a data set whose items carry only a
    ``decode_failures`` count (or nothing) gives ([], that count): such failures cannot be told apart."""
    if not isinstance(batch, dict):
        return [], 0
    if "undecodable_files" in batch:
        texts = batch["undecodable_files"]
        texts = [texts] if isinstance(texts, str) else texts
        return list(dict.fromkeys(p for text in texts for p in text.split(UNDECODABLE_SEP) if p)), 0
    failures = batch.get("decode_failures")
    return [], int(torch.as_tensor(failures).sum()) if failures is not None else 0


def describe_failures(files: Sequence[str], failures: int, shown: int = 3) -> str:
    """"2 undecodable files skipped: a.mp4, b.mp4": ``failures`` decode failures, of which ``files`` are the
    distinct named files (the first ``shown`` are named)."""
    if not files:
        return f"{failures} decode failures"
    more = f" and {len(files) - shown} more" if len(files) > shown else ""
    unnamed = f" (+{failures - len(files)} unnamed)" if failures > len(files) else ""
    return f"{len(files)} undecodable file{'s' * (len(files) > 1)} skipped: {', '.join(files[:shown])}{more}{unnamed}"


class UndecodableDataError(RuntimeError):
    """Every attempt to decode an item failed: the data root is wrong or the files are broken.

    Raised in a DataLoader worker, it reaches the main process rebuilt by torch from one text that holds
    the worker's whole traceback (``ExceptionWrapper.reraise`` calls ``type(e)(text)``). The constructor
    keeps only the original one-line message from that text, so the error reads the same whatever
    ``data.workers`` is.
    """

    def __init__(self, message: str):
        super().__init__(_from_worker(message, type(self)))


def _from_worker(text: str, cls: type) -> str:
    """The message of a ``cls`` error raised in a DataLoader worker, out of torch's re-raise text
    ("Caught X in DataLoader worker process 0.\nOriginal Traceback ...\nmodule.X: message"); other text
    unchanged."""
    if "\nOriginal Traceback" not in text:
        return text
    head, _, rest = text.partition("\n")
    marker = f"{cls.__module__}.{cls.__qualname__}: "
    original = rest.rpartition(marker)[2] if marker in rest else rest.strip().splitlines()[-1]
    where = head.removeprefix(f"Caught {cls.__name__} ").rstrip(".")
    return f"{' '.join(original.split())} ({where})"


class VideoDataset(Dataset):
    """Items are dicts: video (float (C, T, H, W) when training; (V, C, T, H, W) when testing, V = clips ×
    crops, clip-major), label (int), index (the requested index), source_index (the sample actually decoded:
    differs from index only after a decode failure), decode_failures (failed decode attempts for this item)
    and undecodable_files (the distinct files those attempts could not decode, as opened, one string joined by
    UNDECODABLE_SEP: empty when none; a list would not batch)."""

    def __init__(self, samples: Sequence[Sample] | Annotation, root: str | os.PathLike | None = None, *,
                 sampler: Callable[..., np.ndarray], transform: Callable, train: bool, seed: int = 0,
                 on_missing: str = "drop", classes: Sequence[str] | None = None,
                 cache_decoded: bool = False, cache_max_bytes: int = 16 * 2**20,
                 frame_template: str = DEFAULT_FRAME_TEMPLATE, max_failures_per_item: int = 50):
        # samples: a list of Sample or an Annotation (then its classes are used unless `classes` is given).
        # root: folder that relative sample paths are joined to. sampler: UniformSampler/DenseSampler.
        # transform: TrainTransform when train (called (clip, label, generator)), else TestTransform.
        # train: training mode (random sampling/augmentation, one clip) or test mode (all views).
        # seed: base seed; with set_epoch(e), item i uses Generator(seed, e, i).
        # on_missing: "drop" (warn and drop missing files) or "error" (raise FileNotFoundError).
        # cache_decoded: keep all decoded frames of videos up to cache_max_bytes each in memory (per
        #   process: use persistent_workers=True with a DataLoader, or the cache is rebuilt every epoch).
        # frame_template: file names inside rawframe folders. max_failures_per_item: give up (raise) after
        #   this many consecutive decode failures for one item, e.g. when the data root is wrong.
        if isinstance(samples, Annotation):
            classes = samples.classes if classes is None else classes
            samples = samples.samples
        if on_missing not in ("drop", "error"):
            raise ValueError(f"on_missing must be 'drop' or 'error', got {on_missing!r}")
        if train and getattr(sampler, "num_clips", 1) != 1:
            raise ValueError("training takes one clip per video: use a sampler with num_clips=1")
        self.root = None if root is None else str(root)
        self.sampler, self.transform, self.train, self.seed = sampler, transform, train, seed
        self.classes = list(classes) if classes is not None else None
        self.cache_decoded, self.cache_max_bytes = cache_decoded, cache_max_bytes
        self.frame_template, self.max_failures_per_item = frame_template, max_failures_per_item
        # The epoch lives in shared memory so set_epoch reaches persistent DataLoader workers too.
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()
        self._cache: dict[int, TensorSource] = {}
        self._too_big_to_cache: set[int] = set()

        found = [os.path.exists(self.path_of(s)) for s in samples]
        missing = [s for s, ok in zip(samples, found) if not ok]
        if missing:
            shown = ", ".join(repr(self.path_of(s)) for s in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            message = f"{len(missing)} of {len(samples)} videos are missing: {shown}{more}"
            if on_missing == "error":
                raise FileNotFoundError(message)
            warnings.warn(message + " (dropped)", stacklevel=2)
            samples = [s for s, ok in zip(samples, found) if ok]
        if not samples:
            raise ValueError(f"no videos to load (root={self.root!r})")
        self.samples: list[Sample] = list(samples)
        self.missing: list[Sample] = missing
        # Samples found undecodable (and logged), shared like the epoch: each file is logged once per data set.
        self._failed = torch.zeros(len(self.samples), dtype=torch.bool).share_memory_()

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's random stream (call before iterating, as with DistributedSampler)."""
        self._epoch[0] = epoch

    def own_shared_state(self) -> None:
        """Give this copy its own epoch and undecodable-file flags (still shared with its own loader workers).

        A process forked with this data set (the quickstart trains two runs in forked processes on one
        decoded set) would otherwise share them with its sibling: the sibling's ``set_epoch`` would switch
        this run's random stream in the middle of an epoch, and the runs would depend on timing."""
        self._epoch = self._epoch.clone().share_memory_()
        self._failed = self._failed.clone().share_memory_()

    @property
    def undecodable(self) -> list[str]:
        """The files found undecodable so far, by any process iterating this data set (as opened)."""
        return [self.path_of(self.samples[i]) for i in self._failed.nonzero().flatten().tolist()]

    def path_of(self, sample: Sample) -> str:
        return sample.path if self.root is None else os.path.join(self.root, sample.path)

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng((self.seed, self.epoch, index))
        source_index, failures, failed = index, 0, {}
        while True:
            try:
                clip = self._load(source_index, rng)
                break
            except VideoDecodeError as e:
                failures += 1
                failed[self.path_of(self.samples[source_index])] = None
                self._note_failure(source_index, e)
                known = int(self._failed.sum())
                if known >= len(self.samples) or failures >= self.max_failures_per_item:
                    raise UndecodableDataError(
                        f"{failures} decode failures in a row while loading item {index} and "
                        f"{known} of {len(self.samples)} videos undecodable so far; "
                        f"is the data readable? last error: {' '.join(str(e).split())}") from e
                # Another sample, drawn from this item's stream: deterministic, never the same one.
                source_index = int((source_index + rng.integers(1, len(self.samples))) % len(self.samples))
        sample = self.samples[source_index]
        generator = torch.Generator().manual_seed(int(rng.integers(2**62))) if self.train else None
        video, label = transform_clips(clip, self.transform, self.train, sample.label, generator)
        return {"video": video, "label": label, "index": index, "source_index": source_index,
                "decode_failures": failures, "undecodable_files": UNDECODABLE_SEP.join(failed)}

    def _note_failure(self, i: int, error: VideoDecodeError) -> None:
        """Log sample i's decode failure the first time any process of this data set meets it (the flag is
        not a lock: two workers failing on the same new file within the same microseconds could both log it)."""
        if not bool(self._failed[i]):
            self._failed[i] = True
            log.warning("skipping undecodable video (sample %d): %s", i, error)

    def _load(self, i: int, rng: np.random.Generator) -> torch.Tensor:
        """Decode the sampler's clips of sample i: uint8 (clips, T, C, H, W)."""
        return decode_clips(self._cache.get(i) or self._open(i), self.sampler, self.train, rng)[0]

    def _open(self, i: int) -> VideoSource:
        sample = self.samples[i]
        source = open_video(self.path_of(sample), self.frame_template, num_frames=sample.num_frames)
        if self.cache_decoded and i not in self._too_big_to_cache:
            h, w = source.get([0]).shape[-2:]
            if source.num_frames * 3 * h * w <= self.cache_max_bytes:
                source = self._cache[i] = TensorSource(source.get_all(), source.fps, source.path)
            else:
                self._too_big_to_cache.add(i)
        return source

    def __repr__(self) -> str:
        return (f"VideoDataset({len(self)} videos, root={self.root!r}, train={self.train}, "
                f"sampler={self.sampler}, transform={self.transform})")
