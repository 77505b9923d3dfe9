"""CAM methods (issue 11, item 8): every method gives proper maps, the default points at the object at the
last block (the demo's default), and the quickstart and the demo use and report it."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.test_explain import MOVES, _clip, _micro, trained  # noqa: F401  (trained: a module fixture)
from zeroi2v.explain import (CAM_METHODS, DEFAULT_METHOD, GROUPS, box_clips, explain_views, gradcam,
                             localisation, upsample)


@pytest.fixture(scope="module")
def micro():
    return _micro()


@pytest.mark.parametrize("method", sorted(CAM_METHODS))
def test_every_method_gives_maps_of_the_right_shape(micro, method):
    r = gradcam(micro, _clip(0), method=method)
    assert r["method"] == method
    for g in GROUPS:
        m, grid = r[g], r["grid"][g]
        assert m.shape == (8, 32, 32) and m.dtype == np.float32 and grid.shape == (8, 4, 4)
        assert np.isfinite(m).all() and 0 <= m.min() and m.max() <= 1
        np.testing.assert_allclose(upsample(grid, (32, 32)), m, atol=1e-6)
        if g not in r["messages"]:  # not zero everywhere: scaled per clip, peak at 1
            assert grid.max() == pytest.approx(1.0, abs=1e-5)


def test_methods_differ_and_unknown_method_is_named(micro):
    x = _clip(1)
    a, b = gradcam(micro, x, target_class=0, method="gradcam"), gradcam(micro, x, target_class=0)
    assert b["method"] == DEFAULT_METHOD != "gradcam"
    assert not np.allclose(a["all"], b["all"], atol=1e-3)
    with pytest.raises(ValueError, match="unknown CAM method 'nope'.*gradcam-elementwise"):
        gradcam(micro, x, method="nope")
    views = torch.cat([x, _clip(2)])
    assert explain_views(micro, views, method="layercam")["method"] == "layercam"


@pytest.mark.slow
def test_default_method_points_at_the_moving_object_at_the_last_block(trained):  # noqa: F811
    """The demo's maps (last block, default method) put >= 2x chance of their mass in the object's box
    for spatial and for temporal heads; classic Grad-CAM on the same clips does worse."""
    model, root, meta, ema = trained
    assert ema < 0.5, f"the toy model did not train (loss {ema:.2f})"
    clips = box_clips(model, root, meta)
    best = localisation(model, clips, block=-1)
    classic = localisation(model, clips, block=-1, method="gradcam")
    chance = best["chance"]
    assert best["block"] == len(model.blocks) - 1 and best["method"] == DEFAULT_METHOD
    for g in ("spatial", "temporal"):
        assert best["clips"][g] >= 0.75 * len(meta)
        assert best[f"{g}_mass_in_box"] >= 2 * chance, (g, best, chance)
        assert best[f"{g}_mass_in_box"] > classic[f"{g}_mass_in_box"], (g, best, classic)


def test_box_clips_follow_the_resize_and_crop(micro, tmp_path):
    from zeroi2v.data.synthetic import make_synthetic_videos
    make_synthetic_videos(tmp_path, seed=3, classes=MOVES[:1], videos_per_class={"test": 1}, num_frames=8, size=64)
    item = json.loads((tmp_path / "test_meta.json").read_text())[0]
    [(view, boxes)] = box_clips(micro, tmp_path, [item])
    assert view.shape == (3, 8, 32, 32)
    # the 64-px video is halved to the model's 32 px: boxes halve too
    np.testing.assert_allclose(boxes, np.clip(np.asarray(item["boxes"]) / 2, 0, 32), atol=1e-6)


def test_quickstart_reports_and_checks_both_head_groups(micro, tmp_path, monkeypatch):
    from zeroi2v.data.synthetic import make_synthetic_videos
    from zeroi2v.quickstart import _checks, _explain_check, _explain_checks, format_report
    make_synthetic_videos(tmp_path, seed=1, classes=MOVES, videos_per_class={"test": 1}, num_frames=8, size=32)
    e = _explain_check(micro, tmp_path, n=4)
    assert e["method"] == DEFAULT_METHOD and e["block"] == len(micro.blocks) - 1
    assert set(e["clips"]) == {"spatial", "temporal"} and 0 < e["chance"] < 1
    for g in ("spatial", "temporal"):
        assert 0 <= e[f"{g}_mass_in_box"] <= 1
    ok = {"spatial_mass_in_box": 0.25, "temporal_mass_in_box": 0.2, "chance": 0.1}
    assert all(_explain_checks(ok).values()) and len(_explain_checks(ok)) == 2
    assert _explain_checks({**ok, "temporal_mass_in_box": 0.19}) == {
        "explain.spatial_mass_in_box >= 2 x chance": True, "explain.temporal_mass_in_box >= 2 x chance": False}
    assert not any(_explain_checks({"temporal_mass_in_box": None, "spatial_mass_in_box": None, "chance": 0.1}).values())
    report = {"top1": {"zeroi2v": 0.95, "linear_probe": 0.3},
              "top1_by_kind": {"zeroi2v": {"relation": 0.9}, "no_stdha": {"relation": 0.2}},
              "merge": {"prediction_agreement": 1.0, "max_abs_logit_diff": 0.0},
              "params": {"merged": 3, "plain": 1, "temporal_embedding": 1, "classifier": 1},
              "gflops": {"merged": 1.0, "plain": 1.0}, "explain": {**ok, "spatial_mass_in_box": 0.15}}
    checks = _checks(report)
    assert checks["explain.temporal_mass_in_box >= 2 x chance"] and not checks["explain.spatial_mass_in_box >= 2 x chance"]
    report.update(checks=checks, latency_ms={"plain": 1.0, "merged": 1.0}, latency_ratio={"merged": 1.0},
                  seconds=1.0, stage_seconds={}, outputs={"merged": "m"})
    report["gflops"].update(views=1, unmerged=1.0)
    report["params"]["merged"], report["top1"]["zeroi2v_merged"] = 3, 0.95
    for k in ("zeroi2v_merged", "no_stdha", "linear_probe"):
        report["top1"].setdefault(k, 0.5)
        report["top1_by_kind"].setdefault(k, {"order": 0.5, "relation": 0.5})
    report["explain"].update(method=DEFAULT_METHOD, block=3)
    text = format_report(report)
    assert f"Grad-CAM ({DEFAULT_METHOD}, block 3): spatial heads 0.15, temporal heads 0.20" in text
    assert "NOT MET: explain.spatial_mass_in_box >= 2 x chance" in text


def test_demo_uses_the_default_method(tmp_path):
    from zeroi2v.data.decode import write_video
    from zeroi2v.demo.backend import DemoBackend
    from zeroi2v.merge import merge_adapters, save_merged
    ckpt = save_merged(merge_adapters(_micro()), tmp_path / "merged")
    backend = DemoBackend(ckpt, warmup=False)
    assert backend.cam_method == DEFAULT_METHOD
    frames = np.zeros((12, 32, 32, 3), np.uint8)
    for t in range(12):
        frames[t, 8:16, 2 * t:2 * t + 8] = (255, 120, 0)
    write_video(tmp_path / "clip.mp4", frames)
    assert backend.analyse(tmp_path / "clip.mp4")["method"] == DEFAULT_METHOD
    with pytest.raises(ValueError, match="unknown CAM method"):
        DemoBackend(ckpt, warmup=False, cam_method="nope")
    assert DemoBackend(ckpt, warmup=False, cam_method="gradcam").analyse(tmp_path / "clip.mp4")["method"] == "gradcam"
