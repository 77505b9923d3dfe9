"""The quickstart's stages 1 and 2 run in other processes and make exactly what they make in this one."""
import hashlib
import json
from dataclasses import replace

from zeroi2v.data.synthetic import make_synthetic_videos
from zeroi2v.quickstart import FAST, QuickstartSettings
from zeroi2v.quickstart_data import ensure_image_model, finish_image_model, start_image_model


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != "pretrain.json":  # pretrain.json records the seconds it took
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_videos_made_by_two_workers_are_the_videos_one_makes(tmp_path):
    classes = ["move_left", "still", "fast"]
    summaries = {w: make_synthetic_videos(tmp_path / f"w{w}", seed=4, classes=classes, num_frames=8,
                                          videos_per_class={"train": 3, "test": 2}, workers=w) for w in (1, 2)}
    assert _digest(tmp_path / "w1") == _digest(tmp_path / "w2")
    assert summaries[1]["videos"] == summaries[2]["videos"] == {"train": 3, "test": 2}
    meta = json.loads((tmp_path / "w2" / "train_meta.json").read_text())
    assert [m["path"] for m in meta] == [line.split()[0] for line in (tmp_path / "w2" / "train.txt").read_text().splitlines()]


def test_the_image_model_pretrained_in_a_forked_process_is_the_one_pretrained_here(tmp_path):
    s = replace(QuickstartSettings(), **{**FAST, "images": 200})
    logs = []
    ensure_image_model(s, tmp_path / "here", tmp_path / "here" / "image_model", 0, logs.append)
    proc = start_image_model(s, tmp_path / "forked", tmp_path / "forked" / "image_model", 0, logs.append)
    assert proc is not None  # not cached: it trains in another process
    finish_image_model(proc, s, tmp_path / "forked", tmp_path / "forked" / "image_model", 0, logs.append)
    assert proc.exitcode == 0 and logs[-1].endswith("cached: " + str(tmp_path / "forked" / "image_model"))
    assert _digest(tmp_path / "here" / "image_model") == _digest(tmp_path / "forked" / "image_model")
    # cached: nothing to start
    assert start_image_model(s, tmp_path / "forked", tmp_path / "forked" / "image_model", 0, logs.append) is None
