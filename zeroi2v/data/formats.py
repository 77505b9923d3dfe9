"""Annotation readers: each dataset's split files -> one `Annotation(samples, classes)`.

Every reader returns paths relative to the dataset's video root (the dataset joins them with `root`), integer
labels and the class names in label order, so training and evaluation never see a format's quirks.
`read_annotation(format, ...)` picks the reader by name; `FORMATS` lists them.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from zeroi2v.files import read_json, read_text  # noqa: F401  (re-exported: the readers below use them)

PathLike = str | os.PathLike
VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v")


@dataclass(frozen=True)
class Sample:
    """One video: its path (relative to the root, or absolute), its label, and for rawframe folders the
    frame count from the list file (None for video files: the decoder knows it)."""

    path: str
    label: int
    num_frames: int | None = None


@dataclass
class Annotation:
    """The samples of one split and the class names (classes[label] is the name of `label`)."""

    samples: list[Sample]
    classes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.samples)


def read_class_names(classes: PathLike | Sequence[str] | None, num_labels: int = 0) -> list[str]:
    """Class names from a list, from a text file (one name per line, or mmaction-style `index name`
    lines as in UCF101's classInd.txt), or "0", "1", ... when none are given."""
    if classes is None:
        return [str(i) for i in range(num_labels)]
    if isinstance(classes, (str, os.PathLike)):
        lines = [ln.strip() for ln in read_text(classes).splitlines() if ln.strip()]
        numbered = all(re.fullmatch(r"\d+\s+\S.*", ln) for ln in lines)
        return [ln.split(maxsplit=1)[1] for ln in lines] if numbered else lines
    return list(classes)


def _checked(samples: list[Sample], classes: list[str], source: PathLike) -> Annotation:
    bad = [s for s in samples if not 0 <= s.label < len(classes)]
    if bad:
        raise ValueError(f"{source}: label {bad[0].label} of {bad[0].path!r} is outside the "
                         f"{len(classes)} classes")
    return Annotation(samples, classes)


def read_mmaction_list(list_file: PathLike, rawframes: bool = False,
                       classes: PathLike | Sequence[str] | None = None) -> Annotation:
    """mmaction list: `path label` per line, or `frame_dir num_frames label` when `rawframes`.

    Paths may contain spaces (the numbers are taken from the end). classes: names or a names file;
    without it, classes are "0" … str(max label).
    """
    samples = []
    for n, line in enumerate(read_text(list_file).splitlines(), 1):
        if not line.strip():
            continue
        parts = line.rsplit(maxsplit=2 if rawframes else 1)
        try:
            if rawframes:
                samples.append(Sample(parts[0], int(parts[2]), int(parts[1])))
            else:
                samples.append(Sample(parts[0], int(parts[1])))
        except (IndexError, ValueError):
            want = "frame_dir num_frames label" if rawframes else "path label"
            raise ValueError(f"{list_file}:{n}: expected `{want}`, got {line!r}") from None
    num_labels = max((s.label for s in samples), default=-1) + 1
    return _checked(samples, read_class_names(classes, num_labels), list_file)


def read_kinetics_csv(csv_file: PathLike, class_folders: bool = True, ext: str = ".mp4",
                      classes: PathLike | Sequence[str] | None = None) -> Annotation:
    """Kinetics CSV (`label,youtube_id,time_start,time_end,split`) as released by DeepMind.

    Files are named `{youtube_id}_{start:06d}_{end:06d}{ext}`, inside a folder named after the class when
    `class_folders` (the layout of the common download scripts), else all in one folder. Classes are the
    sorted label names unless `classes` fixes the order (e.g. the 400 names of the train split).
    """
    reader = csv.DictReader(io.StringIO(read_text(csv_file), newline=""))
    missing = [c for c in ("label", "youtube_id", "time_start", "time_end") if c not in (reader.fieldnames or ())]
    if missing:
        raise ValueError(f"{csv_file}: no column(s) {', '.join(missing)} in the header line {reader.fieldnames}; "
                         f"a Kinetics CSV starts with `label,youtube_id,time_start,time_end,split`")
    rows = list(reader)
    names = read_class_names(classes) if classes is not None else sorted({r["label"] for r in rows})
    index = {name: i for i, name in enumerate(names)}
    samples = []
    for r in rows:
        name = f"{r['youtube_id']}_{int(float(r['time_start'])):06d}_{int(float(r['time_end'])):06d}{ext}"
        if r["label"] not in index:
            raise ValueError(f"{csv_file}: class {r['label']!r} is not in the given classes")
        samples.append(Sample(f"{r['label']}/{name}" if class_folders else name, index[r["label"]]))
    return _checked(samples, names, csv_file)


def read_ssv2(labels_json: PathLike, split_json: PathLike, ext: str = ".webm") -> Annotation:
    """Something-Something v2: `labels.json` ({template: "index"}) + `train.json` / `validation.json`.

    An entry's template with its brackets removed ("Putting [something] on [something]" -> "Putting
    something on something") is its class; the video is `{id}{ext}`.
    """
    label_of = {name: int(i) for name, i in read_json(labels_json).items()}
    names = sorted(label_of, key=label_of.get)
    samples = []
    for n, entry in enumerate(read_json(split_json)):
        video, template = _fields(entry, ("id", "template"), split_json, n)
        template = str(template).replace("[", "").replace("]", "")
        if template not in label_of:
            raise ValueError(f"{split_json}: template {template!r} of video {video} not in {labels_json}")
        samples.append(Sample(f"{video}{ext}", label_of[template]))
    return _checked(samples, names, split_json)


def read_ucf101(annotation_dir: PathLike, split: int = 1, subset: str = "train") -> Annotation:
    """UCF101 "ucfTrainTestlist": classInd.txt (`1 ApplyEyeMakeup`, 1-based), trainlist0N.txt
    (`Class/v_..avi 1`) and testlist0N.txt (`Class/v_..avi`, labelled by its folder). subset: train | test."""
    root = Path(annotation_dir)
    names = read_class_names(root / "classInd.txt")
    index = {name.lower(): i for i, name in enumerate(names)}  # folder case varies (HandstandPushups)
    list_file = root / f"{_subset(subset)}list{split:02d}.txt"
    samples = []
    for line in read_text(list_file).splitlines():
        parts = line.split()
        if parts:
            label = int(parts[1]) - 1 if len(parts) > 1 else index[parts[0].split("/")[0].lower()]
            samples.append(Sample(parts[0], label))
    return _checked(samples, names, list_file)


def read_hmdb51(split_dir: PathLike, split: int = 1, subset: str = "train") -> Annotation:
    """HMDB51 "testTrainMulti_7030_splits": one `<class>_test_split<N>.txt` per class with lines
    `video.avi 1|2|0` (1 = train, 2 = test, 0 = unused). Classes sorted by name; paths `<class>/<video>`."""
    wanted = {"train": "1", "test": "2"}[_subset(subset)]
    files = sorted(Path(split_dir).glob(f"*_test_split{split}.txt"))
    if not files:
        raise FileNotFoundError(f"no *_test_split{split}.txt files in {split_dir}")
    names = [f.name[: -len(f"_test_split{split}.txt")] for f in files]
    samples = []
    for label, (name, file) in enumerate(zip(names, files)):
        for line in read_text(file).splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1] == wanted:
                samples.append(Sample(f"{name}/{parts[0]}", label))
    return _checked(samples, names, split_dir)


def read_diving48(json_file: PathLike, vocab_json: PathLike | None = None, ext: str = ".mp4") -> Annotation:
    """Diving48 (V2 lists): a JSON list of {"vid_name", "label", ...}; the video is `{vid_name}{ext}`.

    vocab_json: Diving48_vocab.json (per class [takeoff, somersault, twist, flight]) for readable names.
    """
    entries = read_json(json_file)
    samples = []
    for n, entry in enumerate(entries):
        name, label = _fields(entry, ("vid_name", "label"), json_file, n)
        samples.append(Sample(f"{name}{ext}", int(label)))
    if vocab_json is not None:
        names = [" ".join(parts) for parts in read_json(vocab_json)]
    else:
        names = read_class_names(None, max((s.label for s in samples), default=-1) + 1)
    return _checked(samples, names, json_file)


def read_folder(root: PathLike, extensions: Sequence[str] = VIDEO_EXTENSIONS,
                classes: Sequence[str] | None = None) -> Annotation:
    """Folder per class: `root/<class>/*.mp4`; paths relative to root. Classes are the sorted folder names,
    or ``classes`` (the training split's order, so that a validation folder missing a class keeps every
    other label); a folder that is not one of ``classes`` is an error naming it."""
    root = Path(root)
    found = sorted(d.name for d in root.iterdir() if d.is_dir())
    names = list(classes) if classes is not None else found
    unknown = [n for n in found if n not in names]
    if unknown:
        raise ValueError(f"{root}: class folder(s) {unknown[:5]} are not among the training classes; "
                         f"rename or remove them, or add them to the training folder")
    samples = [Sample(f"{name}/{f.name}", label)
               for label, name in enumerate(names) if (root / name).is_dir()
               for f in sorted((root / name).iterdir()) if f.suffix.lower() in extensions]
    return Annotation(samples, names)


def _fields(entry, keys: Sequence[str], source: PathLike, n: int) -> tuple:
    """The values of ``keys`` in entry ``n`` of a JSON list; a missing one is an error naming the file."""
    if not isinstance(entry, dict) or any(k not in entry for k in keys):
        raise ValueError(f"{source}: entry {n} is {json.dumps(entry)[:80]}; each entry needs "
                         f"{', '.join(map(repr, keys))}")
    return tuple(entry[k] for k in keys)


def _subset(subset: str) -> str:
    if subset not in ("train", "test"):
        raise ValueError(f"subset must be 'train' or 'test', got {subset!r}")
    return subset


FORMATS: dict[str, Callable[..., Annotation]] = {
    "mmaction": read_mmaction_list,
    "kinetics": read_kinetics_csv,
    "ssv2": read_ssv2,
    "ucf101": read_ucf101,
    "hmdb51": read_hmdb51,
    "diving48": read_diving48,
    "folder": read_folder,
}


def read_annotation(format: str, *args, **kwargs) -> Annotation:
    """Read an annotation with the reader registered as `format` (see FORMATS); args go to the reader."""
    if format not in FORMATS:
        raise ValueError(f"unknown annotation format {format!r}; known formats: {', '.join(FORMATS)}")
    return FORMATS[format](*args, **kwargs)
