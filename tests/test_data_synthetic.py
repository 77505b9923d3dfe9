"""The synthetic set: reproducible, decodable, and built so that relation pairs match frame by frame."""

import json

import numpy as np
import pytest

from zeroi2v.data import DEFAULT_CLASSES, REGISTRY, flip_label_map, make_synthetic_images, make_synthetic_videos
from zeroi2v.data.decode import open_video
from zeroi2v.data.synthetic import PALETTE, SHAPES, make_clip, render, random_background, video_rng

T, S, N = 16, 32, 400
RELATION_PAIRS = [("colour_change", "colour_same"), ("fast", "slow"), ("move_then_stop", "stop_then_move"),
                  ("return", "keep_going"), ("still", "jitter"), ("still", "fast"), ("colour_same", "colour_flicker")]
ORDER_PAIRS = [("move_left", "move_right"), ("move_up", "move_down"), ("grow", "shrink"),
               ("rotate_cw", "rotate_ccw")]


def frame_marginals(name, n=N):
    """Per frame: histograms of x and y (4 bins, on the torus), colour, shape, radius and angle (4 bins)."""
    rng = np.random.default_rng(123)
    tracks = [REGISTRY[name].make(rng, T, S) for _ in range(n)]
    x = np.stack([tr.x % S for tr in tracks])
    y = np.stack([tr.y % S for tr in tracks])
    radius = np.stack([tr.radius for tr in tracks])
    angle = np.stack([tr.angle % 360 for tr in tracks])
    colour = np.stack([tr.colour for tr in tracks])
    shape = np.stack([[SHAPES.index(s) for s in tr.shape] for tr in tracks])

    def hist(values, bins):  # (n, T) -> (T, bins) proportions
        return np.stack([np.bincount(values[:, t], minlength=bins)[:bins] / n for t in range(T)])

    return {"x": hist((x / S * 4).astype(int), 4), "y": hist((y / S * 4).astype(int), 4),
            "colour": hist(colour, len(PALETTE)), "shape": hist(shape, len(SHAPES)),
            "radius": hist(np.clip(((radius / S - 0.08) / 0.24 * 4).astype(int), 0, 3), 4),
            "angle": hist((angle / 90).astype(int), 4)}


def differences(a, b, n=N, z=5.0):
    """Cells where two per-frame histograms differ by more than z standard errors of a difference."""
    out = []
    for key in a:
        p = (a[key] + b[key]) / 2
        se = np.sqrt(2 * p * (1 - p) / n) + 1e-9
        frames = np.nonzero((np.abs(a[key] - b[key]) > z * se).any(axis=1))[0]
        if len(frames):
            out.append((key, frames.tolist()))
    return out


@pytest.mark.parametrize("pair", RELATION_PAIRS)
def test_relation_pairs_have_the_same_distribution_frame_by_frame(pair):
    assert differences(frame_marginals(pair[0]), frame_marginals(pair[1])) == []


@pytest.mark.parametrize("pair", ORDER_PAIRS)
def test_order_pairs_differ_frame_by_frame_so_the_check_has_power(pair):
    found = dict(differences(frame_marginals(pair[0]), frame_marginals(pair[1])))
    attribute = {"move_left": "x", "move_up": "y", "grow": "radius", "rotate_cw": "angle"}[pair[0]]
    assert 0 in found.get(attribute, []) and T - 1 in found[attribute]


def test_relation_pair_pixels_match_frame_by_frame():
    """Same check on rendered pixels: per-frame mean colour over many clips agrees within noise."""
    means = {}
    for name in ("colour_change", "colour_same", "move_left", "move_right"):
        rng = np.random.default_rng(7)
        clips = np.stack([make_clip(name, rng, T, S)[0] for _ in range(150)]).astype(np.float32)
        # right half minus whole frame (cancels the background level), per frame and channel: (n, T, 3)
        per_clip = clips[:, :, :, S // 2:].mean(axis=(2, 3)) - clips.mean(axis=(2, 3))
        means[name] = (per_clip.mean(0), per_clip.std(0) / np.sqrt(len(clips)))
    (ma, sa), (mb, sb) = means["colour_change"], means["colour_same"]
    assert np.all(np.abs(ma - mb) < 5 * np.hypot(sa, sb))
    (ml, sl), (mr, sr) = means["move_left"], means["move_right"]
    assert np.any(np.abs(ml - mr) > 5 * np.hypot(sl, sr))  # the same statistic sees an order pair


def test_fast_and_slow_visit_the_same_positions():
    (a, _, fast), (b, _, slow) = (make_clip(n, np.random.default_rng(0), T, S) for n in ("fast", "slow"))
    assert np.allclose(np.sort(fast.x % S), np.sort(slow.x % S))
    assert not np.allclose(fast.x % S, slow.x % S)


def test_default_classes_kinds_and_flip_map():
    kinds = [REGISTRY[c].kind for c in DEFAULT_CLASSES]
    assert len(DEFAULT_CLASSES) == 16 and kinds.count("order") == 8 and kinds.count("relation") == 8
    flips = flip_label_map(list(DEFAULT_CLASSES))
    i = DEFAULT_CLASSES.index
    assert flips == {i("move_left"): i("move_right"), i("move_right"): i("move_left"),
                     i("rotate_cw"): i("rotate_ccw"), i("rotate_ccw"): i("rotate_cw")}


def test_renderer_wraps_around_the_torus_and_boxes_follow():
    frames, boxes, track = make_clip("colour_same", np.random.default_rng(3), 2, S)
    track.x[:] = 1.0  # centre at the left edge: half the object appears on the right
    track.y[:] = 16.0
    frames, boxes = render(track, random_background(np.random.default_rng(0), S), np.random.default_rng(0),
                           noise=0)
    colour = np.array(PALETTE[list(PALETTE)[track.colour[0]]])
    near = np.abs(frames[0].astype(int) - colour).sum(-1) < 30
    assert near[:, :4].any() and near[:, -3:].any()
    x0, y0, x1, y1 = boxes[0]
    assert x0 < 0 < x1 and y0 < 16 < y1


def test_writer_is_reproducible_and_decodes_close_to_the_render(tmp_path):
    kw = dict(classes=["move_left", "fast", "colour_change"], videos_per_class={"train": 2, "val": 1},
              num_frames=8, size=32)
    summary = make_synthetic_videos(tmp_path / "a", seed=3, **kw)
    make_synthetic_videos(tmp_path / "b", seed=3, **kw)
    make_synthetic_videos(tmp_path / "c", seed=4, **kw)
    assert summary["videos"] == {"train": 2, "val": 1} and summary["kinds"]["fast"] == "relation"
    for name in ("train.txt", "val.txt", "classes.txt", "kinds.json", "train_meta.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    lines = (tmp_path / "a" / "train.txt").read_text().splitlines()
    assert lines[0] == "train/move_left/move_left_0000.mp4 0" and len(lines) == 6
    assert json.loads((tmp_path / "a" / "kinds.json").read_text())["move_left"] == "order"
    for line in lines + (tmp_path / "a" / "val.txt").read_text().splitlines():
        rel = line.split()[0]
        a, b, c = (open_video(tmp_path / d / rel).get_all().numpy() for d in "abc")
        assert a.shape == (8, 3, 32, 32)
        assert np.array_equal(a, b) and not np.array_equal(a, c)
    # decoded frames are close to what was rendered (4:2:0 chroma and rounding; lossless otherwise)
    split, name, i = "train", "fast", 1
    rendered, boxes, _ = make_clip(name, video_rng(3, split, name, i), 8, 32)
    decoded = open_video(tmp_path / "a" / f"{split}/{name}/{name}_{i:04d}.mp4").get_all()
    assert np.abs(decoded.permute(0, 2, 3, 1).numpy().astype(float) - rendered).mean() < 4
    meta = {m["path"]: m for m in json.loads((tmp_path / "a" / "train_meta.json").read_text())}
    entry = meta[f"{split}/{name}/{name}_{i:04d}.mp4"]
    assert np.allclose(entry["boxes"], boxes, atol=0.01) and len(entry["colours"]) == 8
    assert entry["kind"] == "relation" and entry["params"]["speed"] == pytest.approx(3 * 32 / 8)


def test_unknown_class_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown"):
        make_synthetic_videos(tmp_path, classes=["moonwalk"], videos_per_class={"train": 1})


def test_images_for_what_and_where(tmp_path):
    info = make_synthetic_images(tmp_path / "a", seed=1, n=300)
    make_synthetic_images(tmp_path / "b", seed=1, n=300)
    data, again = np.load(info["path"]), np.load(tmp_path / "b" / "images.npz")
    assert data["images"].shape == (300, 32, 32, 3) and data["images"].dtype == np.uint8
    assert np.array_equal(data["images"], again["images"])
    for head in data["heads"]:
        names = data[f"{head}_names"]
        assert list(names) == info["heads"][head]
        labels = data[head]
        assert labels.shape == (300,) and labels.max() == len(names) - 1
        assert set(np.unique(labels)) >= set(range(len(names)))  # every bin is used
    circles = data["shape"] == SHAPES.index("circle")
    assert np.all((data["orientation_bin"] == -1) == circles)
