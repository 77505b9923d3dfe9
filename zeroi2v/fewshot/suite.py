"""The offline few-shot suite: a small synthetic benchmark in VidTAB's layout, built in seconds.

VidTAB (VideoEval, arXiv 2407.06491) tests adaptation to domains far from pre-training: action recognition
in the dark, in long videos, fake-face detection... Each "domain" here mimics one such difficulty with the
synthetic video generator (``zeroi2v.data.synthetic``), so the few-shot protocol (4/16 shots x 3 folds) runs
end to end offline, on CPU, with the quickstart's image model as backbone:

- ``Dark_Scene`` (AR_in_Dark): left/right/up/down moves, the scene dimmed to 25-35% under more noise;
- ``Long_Video`` (AR_in_Long_Video): grow/shrink/rotate, 32-frame clips of which the model reads 8;
- ``Fine_Motion``: still/slow/fast/jitter, told apart only by how neighbouring frames relate;
- ``Small_Objects``: a small moving object whose shape is the class: an appearance task;
- ``Fake_Frame`` (Fake_Face): "real" clips vs "manipulated" ones where exactly one middle frame is altered
  (the object jumps, or changes colour); each frame alone has the same distribution in both classes.

Per task: label_map.txt, test.txt, train_pool.txt (the clips the folds are drawn from),
train_{K}_fold{f}.txt sampled with ``zeroi2v.fewshot.split`` and lossless H.264 clips under videos/.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from zeroi2v.data.decode import write_video
from zeroi2v.data.synthetic import (PALETTE, REGISTRY, SHAPES, ObjectTrack, _object, random_background, render,
                                    video_rng)
from zeroi2v.fewshot.split import write_splits
from zeroi2v.fewshot.tasks import LABEL_MAP, FewShotError
from zeroi2v.files import atomic_write_text, read_json

PathLike = str | os.PathLike
Generator = Callable[[np.random.Generator, int, int], ObjectTrack]
SUITE_VERSION = 3  # part of the cache key: bump when a generator changes what it draws


@dataclass(frozen=True)
class SuiteTask:
    """One synthetic domain of the suite."""

    name: str
    """Task folder name."""
    mimics: str
    """The VidTAB task whose difficulty it imitates ("" when none)."""
    classes: tuple[str, ...]
    """Class names, also the generators' names: SUITE_CLASSES first, else zeroi2v.data.synthetic.REGISTRY.
    They become text prompts ("move_left" -> "move left"), so they are readable words."""
    frames: int = 8
    """Frames per clip (the model reads 8, uniformly sampled)."""
    brightness: tuple[float, float] = (1.0, 1.0)
    """Scene brightness drawn uniformly per clip from this range (see synthetic.render)."""
    noise: float = 3.0
    """Pixel noise sigma on 0-255."""
    look: tuple[str, str] | None = None
    """(shape, colour) every clip of the task is drawn with, or None: random per clip. A few-shot task holds
    4-16 clips per class: with shape and colour drawn at random as well, the clips are mostly nuisance and
    every method memorises them (measured: 16-shot motion tasks stayed at chance). Position, background,
    brightness and noise still vary. Colour changes within a clip are kept (shifted round the palette)."""
    about: str = ""
    """What the domain tests, in one line."""


def _small(shape: str) -> Generator:
    """A small object (radius 7-10% of the frame) of one shape, moving 0.5-1.5 px per frame in a random
    direction on the torus; colour, angle and start uniform."""
    def make(rng: np.random.Generator, t: int, size: int) -> ObjectTrack:
        o = _object(rng, t, size, shapes=(shape,), radius=(0.07, 0.10))
        heading, speed = rng.uniform(0, 2 * np.pi), rng.uniform(0.5, 1.5)
        steps = np.arange(t)
        o.x, o.y = o.x + speed * np.cos(heading) * steps, o.y + speed * np.sin(heading) * steps
        o.params = {"heading": float(heading), "speed": float(speed)}
        return o
    return make


def _manipulated(rng: np.random.Generator, t: int, size: int) -> ObjectTrack:
    """A "real" clip (the synthetic `still` class: the object stays put) with exactly one middle frame
    altered: there the object sits half a frame away (on the torus, as far as it can be). Frame by frame the
    position stays uniform, as in a real clip: only the relation between frames differs."""
    o = REGISTRY["still"].make(rng, t, size)
    frame = int(rng.integers(t // 2 - 1, t // 2 + 1))
    o.x, o.y = o.x.copy(), o.y.copy()
    o.x[frame] += size / 2 * rng.choice([-1.0, 1.0])
    o.y[frame] += size / 2 * rng.choice([-1.0, 1.0])
    o.params.update(altered="position", frame=frame)
    return o


def _small_of_colour(colour: str) -> Generator:
    """A small object (any shape but the ell) of one colour, moving as ``_small`` does."""
    def make(rng: np.random.Generator, t: int, size: int) -> ObjectTrack:
        o = _small(str(rng.choice(SHAPES[:4])))(rng, t, size)
        o.colour = np.full(t, list(PALETTE).index(colour))
        return o
    return make


SUITE_CLASSES: dict[str, Generator] = {
    **{f"{colour}_object": _small_of_colour(colour) for colour in ("red", "green", "blue", "yellow")},
    "real": REGISTRY["still"].make,
    "manipulated": _manipulated,
}

SUITE_TASKS: dict[str, SuiteTask] = {t.name: t for t in (
    SuiteTask("Dark_Scene", "AR_in_Dark", ("move_left", "move_right", "move_up", "move_down"),
              brightness=(0.25, 0.35), noise=6.0, look=("square", "white"),
              about="direction of motion in a dim, noisy scene"),
    SuiteTask("Long_Video", "AR_in_Long_Video", ("grow", "shrink", "rotate_cw", "rotate_ccw"), frames=32,
              look=("ell", "yellow"), about="order of events in 32-frame clips read as 8 sparse frames"),
    SuiteTask("Fine_Motion", "", ("still", "slow", "fast", "jitter"), look=("circle", "cyan"),
              about="speed of motion: only neighbouring frames tell the classes apart"),
    SuiteTask("Small_Objects", "", ("red_object", "green_object", "blue_object", "yellow_object"),
              about="colour of a small moving object: appearance, named in words the text tower knows"),
    SuiteTask("Fake_Frame", "Fake_Face", ("real", "manipulated"), look=("cross", "orange"),
              about="one altered frame in the middle of the clip"),
)}


def _generator(name: str) -> Generator:
    if name in SUITE_CLASSES:
        return SUITE_CLASSES[name]
    if name in REGISTRY:
        return REGISTRY[name].make
    raise FewShotError(f"suite class {name!r} is neither in SUITE_CLASSES nor in the synthetic REGISTRY")


def suite_clip(task: SuiteTask, name: str, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """One clip of class `name` of `task`: uint8 (T, S, S, 3)."""
    brightness = rng.uniform(*task.brightness) if task.brightness != (1.0, 1.0) else 1.0
    track = _generator(name)(rng, task.frames, size)
    if task.look is not None:
        shape, colour = task.look
        track.shape = np.full(len(track.shape), shape)
        track.colour = (track.colour - track.colour[0] + list(PALETTE).index(colour)) % len(PALETTE)
    return render(track, random_background(rng, size), rng, task.noise, brightness=brightness)[0]


def _task_key(task: SuiteTask, seed: int, pool: int, test: int, shots: Sequence[int], folds: int,
              size: int) -> str:
    """What defines a task's files: its definition and the suite's settings (sha256, 12 hex digits)."""
    spec = {"version": SUITE_VERSION, "task": asdict(task), "seed": seed, "pool": pool, "test": test,
            "shots": list(shots), "folds": folds, "size": size}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def _write_videos(task: SuiteTask, folder: Path, split: str, per_class: int, seed: int, size: int) -> str:
    """Write per_class clips of every class under folder/videos/<split>/<class>/; the mmaction list text."""
    lines = []
    for label, name in enumerate(task.classes):
        for i in range(per_class):
            path = f"videos/{split}/{name}/{name}_{i:04d}.mp4"
            frames = suite_clip(task, name, video_rng(seed, task.name, split, name, i), size)
            write_video(folder / path, frames, fps=8, crf=0, preset="veryfast")
            lines.append(f"{path} {label}\n")
    return "".join(lines)


def _build_task(task: SuiteTask, folder: Path, seed: int, pool: int, test: int, shots: Sequence[int],
                folds: int, size: int) -> dict:
    """Write one task's videos and lists; its summary entry (without the key)."""
    start = time.perf_counter()
    atomic_write_text(folder / LABEL_MAP, "".join(f"{c}\n" for c in task.classes))
    atomic_write_text(folder / "test.txt", _write_videos(task, folder, "test", test, seed, size))
    atomic_write_text(folder / "train_pool.txt", _write_videos(task, folder, "pool", pool, seed, size))
    splits = write_splits(folder / "train_pool.txt", list(shots), folds, seed, folder, folder / LABEL_MAP,
                          force=True)
    return {"mimics": task.mimics, "classes": list(task.classes), "frames": task.frames, "pool": pool,
            "test": test, "splits": sorted(p.name for p in splits if p.name != LABEL_MAP),
            "seconds": round(time.perf_counter() - start, 2)}


def make_suite(out_dir: PathLike, seed: int = 0, tasks: Sequence[str] | None = None, pool_per_class: int = 48,
               test_per_class: int = 16, shots: Sequence[int] = (4, 16), folds: int = 3, size: int = 32,
               log: Callable[[str], object] = print) -> dict:
    """Write the suite under out_dir/<Task>/ in VidTAB's layout; returns the summary (also summary.json).

    tasks: names from SUITE_TASKS (default: all). pool_per_class: clips per class the folds are drawn from
    (48 = 16 shots x 3 folds: disjoint folds); test_per_class: clips per class of test.txt. Cached: a task
    whose key (its definition and these settings) is in summary.json is not written again, so a second
    call with the same settings writes nothing. A task folder that summary.json does not record is never
    overwritten (an error names it)."""
    names = list(SUITE_TASKS) if tasks is None else list(tasks)
    unknown = [n for n in names if n not in SUITE_TASKS]
    if unknown:
        raise FewShotError(f"unknown suite task(s) {', '.join(unknown)}; known: {', '.join(SUITE_TASKS)}")
    if size % 2:
        raise FewShotError(f"size must be even (H.264 4:2:0), got {size}")
    out = Path(out_dir)
    summary_file = out / "summary.json"
    summary = read_json(summary_file) if summary_file.is_file() else {"tasks": {}}
    start, built = time.perf_counter(), []
    for name in names:
        task, folder = SUITE_TASKS[name], out / name
        key = _task_key(task, seed, pool_per_class, test_per_class, shots, folds, size)
        if summary["tasks"].get(name, {}).get("key") == key and (folder / "train_pool.txt").is_file():
            continue
        if name not in summary["tasks"] and folder.is_dir() and any(folder.iterdir()):
            raise FewShotError(f"{folder} exists and {summary_file} does not record it as written by the suite; "
                               f"choose another output folder or move it away")
        entry = _build_task(task, folder, seed, pool_per_class, test_per_class, shots, folds, size)
        summary["tasks"][name] = {"key": key, **entry}
        atomic_write_text(summary_file, json.dumps(summary, indent=1) + "\n")  # after each task: resumable
        built.append(name)
        log(f"suite: {name} ({len(task.classes)} classes, {task.frames} frames): "
            f"{(pool_per_class + test_per_class) * len(task.classes)} clips in {entry['seconds']:.1f} s")
    seconds = round(time.perf_counter() - start, 2)
    if not built:
        log(f"suite: {', '.join(names)} already in {out} (same settings): nothing written")
    return {"root": str(out), "seed": seed, "tasks": {n: summary["tasks"][n] for n in names}, "built": built,
            "seconds": seconds}
