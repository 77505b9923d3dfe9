"""VidTAB's tasks and the reader of its layout (and of a user's own tasks in the same layout).

VidTAB, the Video Task Adaptation Benchmark of VideoEval (arXiv 2407.06491, repository MCG-NJU/VideoEval), on
which the ZeroI2V paper reports few-shot results, has 8 tasks; each ships, under its own folder::

    <Task>/label_map.txt                        one class name per line (or "index name" lines)
    <Task>/test.txt                             mmaction list "relative/path.mp4 label" (or test_list.txt, val.txt)
    <Task>/train_4_fold{1,2,3}.txt, train_16_fold{1,2,3}.txt     exactly K clips per class
    <Task>/train_100.txt                        one fold only
    <Task>/train_4.txt, train_16.txt            older copies: fold 1 of that K
    <Task>/train.txt                            Medical_Surgery: 4 per class, the 4-shot fold 1

``find_tasks`` reads that layout under a root: a missing task, label map or test list is one problem line and
that task is skipped, the others load. Any other sub-folder with a label map and a test list is a user's own
task, found with no code change. ``task_from_lists`` turns one mmaction train list into such a task by
sampling its folds (``zeroi2v.fewshot.split``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from zeroi2v.data.formats import read_class_names
from zeroi2v.files import read_text

PathLike = str | os.PathLike


@dataclass(frozen=True)
class TaskInfo:
    """What the benchmark ships for one task (VidTAB's table, as in the issue and the VideoEval paper)."""

    name: str
    """Folder name under the VidTAB root, e.g. "AR_in_Dark"."""
    source: str
    """The data set the task's clips come from, e.g. "ARID"."""
    classes: int
    """Number of classes (lines of label_map.txt)."""
    test_clips: int
    """Number of clips in the test list."""
    shots: tuple[int, ...] = (4, 16, 100)
    """Clips per class of the training splits it ships."""
    folds: tuple[int, ...] = (1, 2, 3)
    """Folds it ships for its smaller shots (100 shots: always one fold)."""


SHOTS = (4, 16, 100)
FOLDS = (1, 2, 3)
VIDTAB: dict[str, TaskInfo] = {t.name: t for t in (
    TaskInfo("AR_in_Dark", "ARID", 11, 2011),
    TaskInfo("AR_in_Long_Video", "Breakfast", 10, 821),
    TaskInfo("Animal_Behavior", "Animal Kingdom", 12, 2268),
    TaskInfo("Medical_Surgery", "SurgicalActions160", 16, 96, shots=(4,), folds=(1,)),
    TaskInfo("Harmful_Content", "MOB", 3, 1661),
    TaskInfo("Fake_Face", "FaceForensics++", 2, 1800),
    TaskInfo("Quality_Access", "DOVER", 2, 724),
    TaskInfo("Emotion_Analysis", "CAER", 7, 3952),
)}

LABEL_MAP = "label_map.txt"
TEST_LISTS = ("test.txt", "test_list.txt", "val.txt")  # the first one found is the test list


class FewShotError(ValueError):
    """A problem with a few-shot task or split; the message names the file and says the fix."""


def split_file_names(shots: int, fold: int, info: TaskInfo | None = None) -> list[str]:
    """The file names that can hold the (shots, fold) split, in order of preference: train_K_foldF.txt; for
    fold 1 also the older train_K.txt; for a task that ships 4 shots only (Medical_Surgery), train.txt."""
    names = [f"train_{shots}_fold{fold}.txt"]
    if fold == 1:
        names.append(f"train_{shots}.txt")
        if info is not None and info.shots == (shots,):
            names.append("train.txt")
    return names


@dataclass
class Task:
    """One task found on disk: its class names, test list, video root and the training splits it has."""

    name: str
    folder: Path
    classes: list[str]
    """From label_map.txt: classes[label] is the name of `label`."""
    test_list: Path
    video_root: Path
    """The folder the lists' relative video paths are joined to."""
    splits: dict[tuple[int, int], Path] = field(default_factory=dict)
    """(shots, fold) -> a list file that exists."""

    def has(self, shots: int, fold: int) -> bool:
        """Whether the task has the (shots, fold) split on disk."""
        return (shots, fold) in self.splits

    def split(self, shots: int, fold: int) -> Path:
        """The list file of the (shots, fold) split; a FewShotError naming the missing file and the fix."""
        if self.has(shots, fold):
            return self.splits[(shots, fold)]
        wanted = self.folder / split_file_names(shots, fold)[0]
        have = ", ".join(f"{k}-shot fold {f}" for k, f in sorted(self.splits)) or "no training split"
        info = VIDTAB.get(self.name)
        if info is not None and shots not in info.shots:
            why = f"VidTAB's {self.name} ships {'/'.join(map(str, info.shots))}-shot splits only"
        else:
            why = f"the task has {have}"
        raise FewShotError(f"{wanted} not found ({why}); sample it from a full train list with `zeroi2v "
                           f"fewshot-split --list TRAIN_LIST --shots {shots} --folds {max(fold, 3)} --out "
                           f"{self.folder}`, or leave {shots}-shot fold {fold} out of the run")


def find_splits(folder: Path, info: TaskInfo | None = None) -> dict[tuple[int, int], Path]:
    """Every (shots, fold) split file in a task folder: train_K_foldF.txt, plus the older names for fold 1."""
    found: dict[tuple[int, int], Path] = {}
    for path in sorted(folder.glob("train_*.txt")):
        parts = path.stem.split("_")  # train, K[, foldF]
        if len(parts) == 2 and parts[1].isdigit():
            key = (int(parts[1]), 1)
        elif len(parts) == 3 and parts[1].isdigit() and parts[2].startswith("fold") and parts[2][4:].isdigit():
            key = (int(parts[1]), int(parts[2][4:]))
        else:
            continue  # train_pool.txt and the like: not a split
        if key not in found or path.name == split_file_names(*key)[0]:  # the foldF name wins
            found[key] = path
    if info is not None and (folder / "train.txt").is_file():
        for shots in info.shots:
            if "train.txt" in split_file_names(shots, 1, info):
                found.setdefault((shots, 1), folder / "train.txt")
    return found


def _count_lines(path: Path) -> int:
    return sum(1 for line in read_text(path).splitlines() if line.strip())


def load_task(folder: PathLike, video_root: str | None = None) -> tuple[Task | None, list[str]]:
    """One task folder -> (Task or None, problem lines). None when the label map or the test list is
    missing; a class or test-clip count that differs from the registry's, or missing splits, are notes."""
    folder = Path(folder)
    name, info = folder.name, VIDTAB.get(folder.name)
    problems: list[str] = []
    test = next((folder / n for n in TEST_LISTS if (folder / n).is_file()), None)
    if not (folder / LABEL_MAP).is_file():
        problems.append(f"{name}: skipped, no {folder / LABEL_MAP} (one class name per line, line i = label i)")
    if test is None:
        problems.append(f"{name}: skipped, no test list in {folder} (looked for {', '.join(TEST_LISTS)})")
    if problems:
        return None, problems
    classes = read_class_names(folder / LABEL_MAP)
    if not classes:
        return None, [f"{name}: skipped, {folder / LABEL_MAP} has no class names (one per line, line i = label i)"]
    root = Path(video_root.replace("{task}", name)) if video_root else folder
    task = Task(name, folder, classes, test, root, find_splits(folder, info))
    if info is not None:
        if len(classes) != info.classes:
            problems.append(f"{name}: note, {folder / LABEL_MAP} has {len(classes)} classes, VidTAB's has "
                            f"{info.classes}")
        clips = _count_lines(test)
        if clips != info.test_clips:
            problems.append(f"{name}: note, {test} has {clips} clips, VidTAB's has {info.test_clips}")
        expected = [(k, f) for k in info.shots for f in (info.folds if k != 100 else (1,))]
        missing = [split_file_names(k, f)[0] for k, f in expected if not task.has(k, f)]
        if missing:
            problems.append(f"{name}: no {', '.join(missing)} in {folder} (those rows cannot run)")
    elif not task.splits:
        problems.append(f"{name}: no train_K_foldF.txt in {folder}; sample them from a full train list with "
                        f"`zeroi2v fewshot-split --list TRAIN_LIST --shots 4 16 --folds 3 --out {folder}`")
    return task, problems


def find_tasks(root: PathLike, names: str | Sequence[str] = "all", video_root: str | None = None
               ) -> tuple[list[Task], list[str]]:
    """Tasks under root and one line per problem; a missing task is reported and skipped, the others load.

    names: "all" (VidTAB's tasks present, in the table's order, then every other sub-folder with a label
    map and a test list: a user's own task) or a list of folder names. With "all", a VidTAB task missing
    from a root that has some of them is reported; a root with none of them is a user's own benchmark.
    video_root: where the lists' relative paths point ("{task}" is replaced by the task name; default: the
    task folder itself)."""
    root = Path(root)
    if not root.is_dir():
        raise FewShotError(f"{root}: no such folder; give the folder that holds the task folders "
                           f"(e.g. {', '.join(list(VIDTAB)[:2])}, ...)")
    if isinstance(names, str) and names == "all":
        present = [n for n in VIDTAB if (root / n).is_dir()]
        wanted = list(VIDTAB) if present else []
        wanted += sorted(d.name for d in root.iterdir() if d.is_dir() and d.name not in VIDTAB
                         and (d / LABEL_MAP).is_file() and any((d / n).is_file() for n in TEST_LISTS))
    else:
        wanted = [names] if isinstance(names, str) else list(names)
    tasks, problems = [], []
    for name in wanted:
        if not (root / name).is_dir():
            known = sorted(d.name for d in root.iterdir() if d.is_dir())
            problems.append(f"{name}: skipped, no folder {root / name} (folders there: "
                            f"{', '.join(known[:10]) or 'none'})")
            continue
        task, notes = load_task(root / name, video_root)
        problems += notes
        if task is not None:
            tasks.append(task)
    return tasks, problems


def task_from_lists(name: str, train_list: PathLike, test_list: PathLike, label_map: PathLike | None,
                    shots: Sequence[int], folds: Sequence[int], seed: int, out_dir: PathLike,
                    video_root: PathLike | None = None) -> Task:
    """A user's own task from one mmaction train list (+ shots): samples folds 1..max(folds) of every K with
    ``split.write_splits`` into out_dir/<name>/, beside a copy of the test list (test.txt) and the label
    map, and returns the Task. Video paths stay as in the lists, relative to video_root (default: the train
    list's folder). Files already there are kept when identical and never silently replaced."""
    from zeroi2v.fewshot.split import refuse_changes, write_once, write_splits

    folder = Path(out_dir) / name
    test = read_text(test_list)
    refuse_changes({folder / "test.txt": test}, force=False)  # before anything is written
    write_splits(train_list, list(shots), max(folds), seed, folder, classes=label_map)
    write_once(folder / "test.txt", test)
    task, problems = load_task(folder, str(Path(video_root or Path(train_list).parent).resolve()))
    if task is None:
        raise FewShotError("; ".join(problems))
    return task
