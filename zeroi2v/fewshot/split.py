"""K-shot fold sampling: ``zeroi2v fewshot-split --list train.txt --shots K --folds N --seed S --out DIR``.

VidTAB (VideoEval, arXiv 2407.06491) trains every task from K clips per class, on three folds
(train_K_fold{1,2,3}.txt). This module draws such folds from any mmaction list, reproducibly from a seed,
so a user's own data gets the benchmark's protocol, and so does the offline suite (``fewshot.suite``).
"""
from __future__ import annotations

import os
import zlib
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np

from zeroi2v.data.formats import Sample, read_class_names, read_mmaction_list
from zeroi2v.fewshot.tasks import LABEL_MAP, FewShotError
from zeroi2v.files import atomic_write_text, read_text

PathLike = str | os.PathLike
NAME_FILES = (LABEL_MAP, "classes.txt")  # class names found beside a list when --classes is not given


def sample_folds(samples: Sequence[Sample], shots: int, folds: int, seed: int,
                 classes: Sequence[str] | None = None) -> list[list[Sample]]:
    """`folds` folds of exactly `shots` samples per class, sorted by label then path.

    Reproducible: the same samples (in any order) and seed give the same folds; each class draws from its
    own generator seeded by (seed, shots, label), so adding a class leaves the others' draws unchanged.
    A class with at least shots × folds clips gets disjoint folds (one permutation, cut in consecutive
    blocks); a class with fewer clips is drawn independently per fold (folds may then share clips).
    classes: the class names (every label 0..len-1 must have `shots` clips, also one absent from the list);
    default: the labels present. A class with fewer than `shots` clips is a FewShotError naming every such
    class and its count.
    """
    if shots < 1 or folds < 1:
        raise FewShotError(f"shots and folds must be at least 1, got shots={shots}, folds={folds}")
    by_label: dict[int, list[Sample]] = defaultdict(list)
    for s in samples:
        by_label[s.label].append(s)
    labels = range(len(classes)) if classes is not None else sorted(by_label)
    short = [lab for lab in labels if len(by_label[lab]) < shots]
    if short:
        named = ", ".join(f"{_class_name(lab, classes)} ({len(by_label[lab])} clips)" for lab in short)
        raise FewShotError(f"{len(short)} class{'es' * (len(short) > 1)} with fewer than {shots} clips: {named}; "
                           f"lower --shots to at most {min(len(by_label[lab]) for lab in short)} or add clips "
                           f"to {'them' if len(short) > 1 else 'it'}")
    out: list[list[Sample]] = [[] for _ in range(folds)]
    for lab in labels:
        pool = sorted(by_label[lab], key=lambda s: (s.path, s.num_frames or 0))
        rng = np.random.default_rng([seed, shots, lab, zlib.crc32(b"fewshot-split")])
        if len(pool) >= shots * folds:
            order = rng.permutation(len(pool))
            picks = [order[f * shots:(f + 1) * shots] for f in range(folds)]
        else:
            picks = [rng.choice(len(pool), shots, replace=False) for _ in range(folds)]
        for fold, pick in zip(out, picks):
            fold += sorted((pool[i] for i in pick), key=lambda s: s.path)
    return out


def _class_name(label: int, classes: Sequence[str] | None) -> str:
    return f"{classes[label]!r} (label {label})" if classes is not None else f"label {label}"


def _lines(samples: Sequence[Sample]) -> str:
    """mmaction lines; a rawframe list's "dir frames" was read as the path, so it is written back as is."""
    return "".join(f"{s.path} {s.label}\n" for s in samples)


def refuse_changes(files: dict[Path, str], force: bool) -> None:
    """Refuse (naming them) to replace existing files whose text differs, unless `force`."""
    differ = [p for p, text in files.items() if p.is_file() and read_text(p) != text]
    if differ and not force:
        raise FewShotError(f"{', '.join(map(str, differ))} already exist{'s' * (len(differ) == 1)} with other "
                           f"content; nothing written: pass --force to replace, or choose another --out")


def write_once(path: PathLike, text: str, force: bool = False) -> bool:
    """Write `text` atomically unless the file holds it already (returns whether it wrote); a file with
    other text is a FewShotError unless `force`."""
    path = Path(path)
    refuse_changes({path: text}, force)
    if path.is_file() and read_text(path) == text:
        return False
    atomic_write_text(path, text)
    return True


def class_names_for(list_file: PathLike, classes: PathLike | Sequence[str] | None) -> list[str] | None:
    """The class names: `classes` (names or a names file) when given, else label_map.txt or classes.txt
    beside the list, else None."""
    if classes is not None:
        return read_class_names(classes)
    beside = [Path(list_file).parent / n for n in NAME_FILES]
    return next((read_class_names(p) for p in beside if p.is_file()), None)


def write_folds(list_file: PathLike, shots: int, folds: int, seed: int, out_dir: PathLike,
                classes: PathLike | Sequence[str] | None = None, force: bool = False) -> list[Path]:
    """Write out_dir/train_{shots}_fold{f}.txt for f = 1..folds (atomic), paths as in the input list.

    classes: names or a names file (every class must have `shots` clips); see `sample_folds`. Existing
    files with other content are an error naming them unless `force`; nothing is written on any error."""
    return write_splits(list_file, [shots], folds, seed, out_dir, classes, force, label_map=False)


def write_splits(list_file: PathLike, shots: Sequence[int], folds: int, seed: int, out_dir: PathLike,
                 classes: PathLike | Sequence[str] | None = None, force: bool = False,
                 label_map: bool | None = True) -> list[Path]:
    """`write_folds` for several K at once, checked for all K before anything is written, plus
    out_dir/label_map.txt: the given or derivable names (`class_names_for`); label_map=True also writes
    "0", "1", ... when none are found, None writes it only when found, False never. Returns what it wrote
    or found identical, label map last."""
    if not Path(list_file).is_file():
        raise FewShotError(f"{list_file}: no such file; give an mmaction train list (`relative/path.mp4 label` "
                           f"per line)")
    names = class_names_for(list_file, classes)
    annotation = read_mmaction_list(list_file, classes=names)
    out = Path(out_dir)
    files: dict[Path, str] = {}
    for k in shots:
        try:
            drawn = sample_folds(annotation.samples, k, folds, seed, annotation.classes)
        except FewShotError as e:
            raise FewShotError(f"{list_file}: {e}") from None
        files.update({out / f"train_{k}_fold{f}.txt": _lines(s) for f, s in enumerate(drawn, 1)})
    if label_map or (label_map is None and names is not None):
        files[out / LABEL_MAP] = "".join(f"{n}\n" for n in annotation.classes)
    refuse_changes(files, force)
    for path, text in files.items():
        write_once(path, text, force=True)
    return list(files)


def add_cli(sub) -> None:
    """Register ``zeroi2v fewshot-split``."""
    p = sub.add_parser("fewshot-split", help="sample K-shot training folds from an mmaction list",
                       description="Write OUT/train_K_fold1.txt ... train_K_foldN.txt with exactly K clips per "
                                   "class drawn from an mmaction list (`path label` lines), reproducibly from "
                                   "--seed: the VidTAB few-shot layout. A class with at least K x N clips gets "
                                   "disjoint folds. Also writes OUT/label_map.txt from --classes, or from a "
                                   "label_map.txt / classes.txt beside the list.")
    p.add_argument("--list", required=True, help="mmaction train list (`relative/path.mp4 label` per line)")
    p.add_argument("--shots", type=int, nargs="+", required=True, metavar="K", help="clips per class, e.g. 4 16")
    p.add_argument("--folds", type=int, default=3, help="folds per K (default 3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="the task folder to write into")
    p.add_argument("--classes", default=None, help="class names file (one per line, or `index name`), "
                                                   "copied to OUT/label_map.txt")
    p.add_argument("--force", action="store_true", help="replace existing fold files that differ")
    p.set_defaults(func=cmd_fewshot_split)


def cmd_fewshot_split(a) -> int:
    written = write_splits(a.list, a.shots, a.folds, a.seed, a.out, a.classes, a.force, label_map=None)
    for path in written:
        lines = sum(1 for ln in read_text(path).splitlines() if ln.strip())
        print(f"{path}: {lines} {'class names' if path.name == LABEL_MAP else 'clips'}")
    if not any(p.name == LABEL_MAP for p in written):
        print(f"note: no class names given or found beside {a.list}; write {Path(a.out) / LABEL_MAP} "
              f"(one name per line) or pass --classes")
    return 0
