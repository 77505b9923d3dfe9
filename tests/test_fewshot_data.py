"""Few-shot data: K-shot folds, the VidTAB layout reader, `zeroi2v fewshot-split` and the offline suite."""
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from zeroi2v.cli import main
from zeroi2v.data import TestTransform, UniformSampler, VideoDataset
from zeroi2v.data.decode import open_video
from zeroi2v.data.formats import Sample, read_mmaction_list
from zeroi2v.data.synthetic import REGISTRY
from zeroi2v.fewshot.split import sample_folds, write_folds
from zeroi2v.fewshot.suite import SUITE_TASKS, _manipulated, make_suite
from zeroi2v.fewshot.tasks import VIDTAB, FewShotError, find_tasks, task_from_lists

NAMES = ["open door", "close door", "wave"]


def write_list(path: Path, counts: dict[int, int], shuffle_seed: int | None = None) -> Path:
    """An mmaction list with counts[label] clips per label (clips c<label>_<i>.mp4)."""
    lines = [f"clips/c{label}_{i:03d}.mp4 {label}\n" for label, n in counts.items() for i in range(n)]
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(lines))
    return path


def fold_bytes(out: Path, shots: int, folds: int) -> list[bytes]:
    return [(out / f"train_{shots}_fold{f}.txt").read_bytes() for f in range(1, folds + 1)]


def test_folds_have_k_per_class_reproducible_from_the_seed_and_order_free(tmp_path):
    full = write_list(tmp_path / "train.txt", {0: 15, 1: 13, 2: 20})
    paths = write_folds(full, 4, 3, seed=0, out_dir=tmp_path / "a")
    assert [p.name for p in paths] == ["train_4_fold1.txt", "train_4_fold2.txt", "train_4_fold3.txt"]
    folds = [read_mmaction_list(p).samples for p in paths]
    for fold in folds:
        assert Counter(s.label for s in fold) == {0: 4, 1: 4, 2: 4}
    every = [s.path for fold in folds for s in fold]
    assert len(set(every)) == len(every)  # >= K x folds clips per class: disjoint folds
    shuffled = write_list(tmp_path / "shuffled" / "train.txt", {0: 15, 1: 13, 2: 20}, shuffle_seed=3)
    write_folds(full, 4, 3, seed=0, out_dir=tmp_path / "b")
    write_folds(shuffled, 4, 3, seed=0, out_dir=tmp_path / "c")
    write_folds(full, 4, 3, seed=1, out_dir=tmp_path / "d")
    assert fold_bytes(tmp_path / "a", 4, 3) == fold_bytes(tmp_path / "b", 4, 3) == fold_bytes(tmp_path / "c", 4, 3)
    assert fold_bytes(tmp_path / "a", 4, 3) != fold_bytes(tmp_path / "d", 4, 3)


def test_a_class_short_of_k_times_folds_is_drawn_per_fold_still_k_each():
    samples = [Sample(f"c0_{i}.mp4", 0) for i in range(5)] + [Sample(f"c1_{i}.mp4", 1) for i in range(30)]
    folds = sample_folds(samples, 4, 3, seed=0)
    assert all(Counter(s.label for s in fold) == {0: 4, 1: 4} for fold in folds)
    class0 = [s.path for fold in folds for s in fold if s.label == 0]
    assert len(set(class0)) < len(class0) <= 12  # 5 clips, 12 draws: folds share clips of class 0


def test_classes_with_fewer_than_k_clips_are_named_and_nothing_is_written(tmp_path):
    full = write_list(tmp_path / "train.txt", {0: 10, 1: 2, 2: 3})
    (tmp_path / "classes.txt").write_text("".join(f"{n}\n" for n in NAMES))
    out = tmp_path / "out"
    with pytest.raises(FewShotError) as e:
        write_folds(full, 4, 3, seed=0, out_dir=out, classes=tmp_path / "classes.txt")
    message = str(e.value)
    assert "'close door' (label 1) (2 clips)" in message and "'wave' (label 2) (3 clips)" in message
    assert "'open door'" not in message and "--shots" in message and str(full) in message
    assert not out.exists()


def test_a_class_absent_from_the_list_is_named_too():
    with pytest.raises(FewShotError, match=r"'wave' \(label 2\) \(0 clips\)"):
        sample_folds([Sample(f"{lab}_{i}", lab) for lab in (0, 1) for i in range(4)], 4, 1, 0, classes=NAMES)


def test_fewshot_split_cli_end_to_end(tmp_path, capsys):
    full = write_list(tmp_path / "data" / "train.txt", {0: 20, 1: 20, 2: 20})
    names = tmp_path / "names.txt"
    names.write_text("".join(f"{i} {n}\n" for i, n in enumerate(NAMES)))  # "index name" lines
    out = tmp_path / "task"

    def args(seed="0", shots=("4", "16"), *more):
        return ["fewshot-split", "--list", str(full), "--shots", *shots, "--folds", "3", "--seed", seed,
                "--out", str(out), *more]

    assert main(args("0", ("4", "16"), "--classes", str(names))) == 0
    printed = capsys.readouterr().out
    written = sorted(p.name for p in out.iterdir())
    assert written == ["label_map.txt"] + [f"train_{k}_fold{f}.txt" for k in (16, 4) for f in (1, 2, 3)]
    assert all(str(out / name) in printed for name in written)
    assert (out / "label_map.txt").read_text().splitlines() == NAMES
    assert Counter(s.label for s in read_mmaction_list(out / "train_16_fold2.txt").samples) == {0: 16, 1: 16, 2: 16}
    before = fold_bytes(out, 4, 3)
    assert main(args("0", ("4", "16"), "--classes", str(names))) == 0  # same files: fine, unchanged
    assert main(args("1")) == 2  # would replace them: refused
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "train_4_fold1.txt" in err and "--force" in err
    assert fold_bytes(out, 4, 3) == before
    assert main(args("1", ("4", "16"), "--force")) == 0
    assert fold_bytes(out, 4, 3) != before
    assert main(args("0", ("40",))) == 2  # 40 shots of 20 clips
    assert "with fewer than 40 clips" in capsys.readouterr().err
    full.unlink()
    assert main(args()) == 2
    assert f"{full}: no such file; give an mmaction train list" in capsys.readouterr().err


def make_task(root: Path, name: str, classes: int, splits: dict[str, dict[int, int]],
              test: str = "test.txt") -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "label_map.txt").write_text("".join(f"class_{i}\n" for i in range(classes)))
    write_list(folder / test, {label: 2 for label in range(classes)})
    for file, counts in splits.items():
        write_list(folder / file, counts)
    return folder


def test_a_missing_task_is_reported_and_skipped_while_the_others_load(tmp_path):
    four = {label: 4 for label in range(11)}
    make_task(tmp_path, "AR_in_Dark", 11, {f"train_4_fold{f}.txt": four for f in (1, 2, 3)})
    make_task(tmp_path, "Fake_Face", 2, {"train_4.txt": {0: 4, 1: 4}, "train_16.txt": {0: 16, 1: 16},
                                         "train_100.txt": {0: 100, 1: 100}})
    make_task(tmp_path, "Medical_Surgery", 16, {"train.txt": {label: 4 for label in range(16)}}, test="val.txt")
    (tmp_path / "Harmful_Content").mkdir()  # no label map, no test list
    make_task(tmp_path, "Quality_Access", 0, {})  # an empty label map
    tasks, problems = find_tasks(tmp_path, ["AR_in_Dark", "Emotion_Analysis", "Fake_Face"])
    assert [t.name for t in tasks] == ["AR_in_Dark", "Fake_Face"]
    assert any(p.startswith("Emotion_Analysis: skipped, no folder") for p in problems)

    tasks, problems = find_tasks(tmp_path, "all")
    assert [t.name for t in tasks] == ["AR_in_Dark", "Medical_Surgery", "Fake_Face"]  # table order
    skipped = {p.split(":")[0] for p in problems if "skipped" in p}
    assert skipped == set(VIDTAB) - {"AR_in_Dark", "Medical_Surgery", "Fake_Face"}
    assert any("Harmful_Content: skipped, no" in p and "label_map.txt" in p for p in problems)
    assert any("Quality_Access: skipped" in p and "no class names" in p for p in problems)
    assert any("AR_in_Dark: note" in p and "2011" in p for p in problems)  # 22 test clips here: a note
    assert any("AR_in_Dark: no train_16_fold1.txt" in p for p in problems)


def test_old_style_splits_and_medical_surgery_train_txt_are_fold_1(tmp_path):
    fake = make_task(tmp_path, "Fake_Face", 2, {"train_4.txt": {0: 4, 1: 4}, "train_16.txt": {0: 16, 1: 16},
                                                "train_100.txt": {0: 100, 1: 100}})
    surgery = make_task(tmp_path, "Medical_Surgery", 16, {"train.txt": {label: 4 for label in range(16)}},
                        test="val.txt")
    tasks = {t.name: t for t in find_tasks(tmp_path)[0]}
    face, med = tasks["Fake_Face"], tasks["Medical_Surgery"]
    assert face.split(4, 1) == fake / "train_4.txt" and face.split(16, 1) == fake / "train_16.txt"
    assert face.split(100, 1) == fake / "train_100.txt" and not face.has(4, 2)
    with pytest.raises(FewShotError, match=r"train_4_fold2\.txt not found.*fewshot-split"):
        face.split(4, 2)
    assert med.split(4, 1) == surgery / "train.txt" and med.test_list == surgery / "val.txt"
    assert sorted(med.splits) == [(4, 1)]
    with pytest.raises(FewShotError, match="ships 4-shot splits only"):
        med.split(16, 1)


def test_fold_files_win_over_the_older_names(tmp_path):
    folder = make_task(tmp_path, "Fake_Face", 2, {"train_4.txt": {0: 4, 1: 4}, "train_4_fold1.txt": {0: 4, 1: 4}})
    (task,), _ = find_tasks(tmp_path)
    assert task.split(4, 1) == folder / "train_4_fold1.txt"


def test_a_users_own_task_folder_is_found_with_its_video_root(tmp_path):
    make_task(tmp_path, "My_Gestures", 3, {f"train_4_fold{f}.txt": {0: 4, 1: 4, 2: 4} for f in (1, 2)})
    (tmp_path / "scratch").mkdir()  # not a task: no label map
    tasks, problems = find_tasks(tmp_path, "all", video_root=str(tmp_path / "videos" / "{task}"))
    assert [t.name for t in tasks] == ["My_Gestures"] and problems == []  # no VidTAB task there: no noise
    assert tasks[0].classes == ["class_0", "class_1", "class_2"]
    assert sorted(tasks[0].splits) == [(4, 1), (4, 2)]
    assert tasks[0].video_root == tmp_path / "videos" / "My_Gestures"


def test_task_from_lists_samples_folds_beside_the_test_list(tmp_path):
    train = write_list(tmp_path / "data" / "train.txt", {0: 12, 1: 12})
    test = write_list(tmp_path / "data" / "test.txt", {0: 3, 1: 3})
    (tmp_path / "data" / "names.txt").write_text("left\nright\n")
    task = task_from_lists("Mine", train, test, tmp_path / "data" / "names.txt", [4], [1, 2, 3], 0, tmp_path / "out")
    assert task.classes == ["left", "right"] and sorted(task.splits) == [(4, 1), (4, 2), (4, 3)]
    assert task.video_root == (tmp_path / "data").resolve()
    assert task.test_list.read_text() == test.read_text()
    write_list(test, {0: 2, 1: 2})  # a different test list must not silently replace the copy
    before = {p: p.read_bytes() for p in (tmp_path / "out" / "Mine").iterdir()}
    with pytest.raises(FewShotError, match=r"test\.txt already exists"):
        task_from_lists("Mine", train, test, tmp_path / "data" / "names.txt", [4, 2], [1], 0, tmp_path / "out")
    assert {p: p.read_bytes() for p in (tmp_path / "out" / "Mine").iterdir()} == before  # nothing written


def test_a_manipulated_clip_differs_from_a_real_one_in_exactly_one_middle_frame():
    t, size = 8, 32
    for seed in range(6):
        fake = _manipulated(np.random.default_rng(seed), t, size)
        real = REGISTRY["still"].make(np.random.default_rng(seed), t, size)  # same draws before the change
        changed = (fake.x != real.x) | (fake.y != real.y) | (fake.colour != real.colour)
        assert np.flatnonzero(changed).tolist() in ([t // 2 - 1], [t // 2])
        f = np.flatnonzero(changed)[0]  # half a frame away on both axes: as far as the torus allows
        assert np.allclose(np.abs([fake.x[f] - real.x[f], fake.y[f] - real.y[f]]), size / 2)


def test_make_suite_writes_the_layout_find_tasks_reads_and_caches_it(tmp_path):
    out = tmp_path / "suite"
    kw = dict(tasks=["Long_Video", "Fake_Frame"], pool_per_class=4, test_per_class=2, shots=(2,), folds=2)
    summary = make_suite(out, seed=0, log=lambda line: None, **kw)
    assert summary["built"] == ["Long_Video", "Fake_Frame"]
    tasks, problems = find_tasks(out)
    assert [t.name for t in tasks] == ["Fake_Frame", "Long_Video"] and problems == []
    for task in tasks:
        assert task.classes == list(SUITE_TASKS[task.name].classes)
        assert sorted(task.splits) == [(2, 1), (2, 2)]
        fold = read_mmaction_list(task.split(2, 2), classes=task.classes)
        assert Counter(s.label for s in fold.samples) == {label: 2 for label in range(len(task.classes))}
        test = read_mmaction_list(task.test_list, classes=task.classes)
        first = open_video(task.video_root / test.samples[0].path)
        assert first.num_frames == SUITE_TASKS[task.name].frames
    long_video = next(t for t in tasks if t.name == "Long_Video")
    dataset = VideoDataset(read_mmaction_list(long_video.test_list, classes=long_video.classes),
                           long_video.video_root, sampler=UniformSampler(8),
                           transform=TestTransform(size=32, short_side=None, crops=1), train=False, on_missing="error")
    item = dataset[len(dataset) - 1]
    assert tuple(item["video"].shape) == (1, 3, 8, 32, 32) and item["label"] == 3
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    again = make_suite(out, seed=0, log=lambda line: None, **kw)
    assert again["built"] == [] and {p: p.stat().st_mtime_ns for p in out.rglob("*")} == stamps


def test_make_suite_never_overwrites_a_folder_it_did_not_write(tmp_path):
    (tmp_path / "Fake_Frame").mkdir()
    (tmp_path / "Fake_Frame" / "notes.txt").write_text("mine")
    with pytest.raises(FewShotError, match="does not record it"):
        make_suite(tmp_path, tasks=["Fake_Frame"], pool_per_class=2, test_per_class=1, shots=(1,), folds=1,
                   log=lambda line: None)
    assert (tmp_path / "Fake_Frame" / "notes.txt").read_text() == "mine"


def test_dark_scene_is_dim():
    from zeroi2v.fewshot.suite import suite_clip
    dark, plain = SUITE_TASKS["Dark_Scene"], SUITE_TASKS["Fine_Motion"]
    rng = np.random.default_rng(0)
    dark_mean = np.mean([suite_clip(dark, "move_left", rng).mean() for _ in range(20)])
    plain_mean = np.mean([suite_clip(plain, "still", rng).mean() for _ in range(20)])
    assert dark_mean < 0.5 * plain_mean
