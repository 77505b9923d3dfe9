"""Grad-CAM of spatial / temporal / all heads: checks that fail when the maps are wrong."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from zeroi2v.data.decode import write_video
from zeroi2v.explain import (GROUPS, HeadsToVolume, chance_in_boxes, explain_video, gradcam, head_groups,
                             mass_in_boxes, overlay, strip, to_uint8_frames, transform_boxes, upsample)
from zeroi2v.merge import load_merged, merge_adapters, save_merged
from zeroi2v.model import create_model


def _micro(offsets="1x1,-1x1,0x4", seed=0, num_classes=5):
    torch.manual_seed(seed)
    m = create_model(backbone="zeroi2v-micro", num_classes=num_classes, num_frames=8, offsets=offsets,
                     class_names=[f"c{i}" for i in range(num_classes)])
    with torch.no_grad():  # non-identity adapters and temporal embedding: merging must matter
        for name, p in m.named_parameters():
            if ".adapters." in name or name == "temporal_embedding":
                p.normal_(0, 0.05)
        m.head.weight.normal_(0, 0.3)
    return m.eval()


def _clip(seed):
    return torch.randn(1, 3, 8, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def micro():
    return _micro()


def test_maps_shape_range_and_not_blank(micro):
    for seed in range(3):
        x = _clip(seed)
        r = gradcam(micro, x)
        with torch.no_grad():
            probs = torch.softmax(micro(x), -1)[0]
        assert r["target_class"] == int(probs.argmax())  # default: the top prediction
        assert r["probability"] == pytest.approx(float(probs.max()), abs=1e-5)
        assert r["class_name"] == f"c{r['target_class']}"
        assert r["block"] == 1 and r["offsets"] == (1, -1, 0, 0, 0, 0)
        for g in GROUPS:
            m = r[g]
            assert isinstance(m, np.ndarray) and m.shape == (8, 32, 32) and m.dtype == np.float32
            assert np.isfinite(m).all() and m.min() >= 0 and m.max() <= 1
            assert m.max() > 0.5, f"{g} map is blank (max {m.max()})"  # scaled per clip: peak near 1
            assert m.std() > 1e-3, f"{g} map is flat"
            assert g not in r["messages"]
            grid = r["grid"][g]  # the token-grid map (4x4 patches of 8 px) the full map is upsampled from
            assert grid.shape == (8, 4, 4) and grid.max() == pytest.approx(1.0, abs=1e-5)
            np.testing.assert_allclose(upsample(grid, (32, 32)), m, atol=1e-6)


def test_upsampling_keeps_patches_in_place():
    grid = np.zeros((1, 4, 4), np.float32)
    grid[0, 1, 2] = 1.0  # patch row 1, col 2: pixels y 8..15, x 16..23, centre (11.5, 19.5)
    up = upsample(grid, (32, 32))[0]
    ys, xs = np.mgrid[0:32, 0:32]
    cy, cx = (up * ys).sum() / up.sum(), (up * xs).sum() / up.sum()
    assert (cy, cx) == (pytest.approx(11.5), pytest.approx(19.5))  # corner-aligned zoom gives (10.3, 20.7)
    assert up.reshape(4, 8, 4, 8).mean(axis=(1, 3)).argmax() == 1 * 4 + 2
    assert 0 <= up.min() and up.max() <= 1


def test_groups_use_their_own_heads(micro):
    x = _clip(0)
    r = gradcam(micro, x)
    assert r["heads"] == {"spatial": [2, 3, 4, 5], "temporal": [0, 1], "all": [0, 1, 2, 3, 4, 5]}
    assert not np.allclose(r["spatial"], r["temporal"], atol=1e-3)
    assert not np.allclose(r["all"], r["temporal"], atol=1e-3)
    # the reshape keeps exactly the group's heads, head by head, and drops the class token
    v = torch.arange(2 * 8 * 6 * 17 * 4, dtype=torch.float32).reshape(2 * 8, 6, 17, 4)
    vol = HeadsToVolume([4, 1], num_frames=8, grid=(4, 4))(v)
    assert vol.shape == (2, 2 * 4, 8, 4, 4)
    # group head 0 is model head 4: channel (0, dim 2) of video 1, frame 5, patch (row 2, col 3)
    assert vol[1, 0 * 4 + 2, 5, 2, 3] == v[1 * 8 + 5, 4, 1 + 2 * 4 + 3, 2]
    # group head 1 is model head 1: channel (1, dim 3) of video 0, frame 7, patch (0, 0)
    assert vol[0, 1 * 4 + 3, 7, 0, 0] == v[7, 1, 1, 3]


def test_gradcam_hooks_each_group_with_its_heads(micro, monkeypatch):
    import zeroi2v.explain as ex
    seen = []

    class Spy(ex.HeadsToVolume):
        def __init__(self, heads, *args, **kw):
            seen.append(list(heads))
            super().__init__(heads, *args, **kw)

    monkeypatch.setattr(ex, "HeadsToVolume", Spy)
    m = _micro()
    m.blocks[-1].temporal.offsets = (0, 0, 2, 0, -1, 0)  # temporal heads in the middle, not first
    r = ex.gradcam(m, _clip(0))
    assert seen == [[0, 1, 3, 5], [2, 4], [0, 1, 2, 3, 4, 5]]
    assert r["heads"]["temporal"] == [2, 4]


def test_class_and_block_are_honoured(micro):
    x = _clip(1)
    a = gradcam(micro, x, target_class=0)
    b = gradcam(micro, x, target_class=3)
    assert a["target_class"] == 0 and b["target_class"] == 3
    assert a["probability"] == pytest.approx(float(a["probs"][0])) and not np.allclose(a["all"], b["all"], atol=1e-3)
    first = gradcam(micro, x, target_class=0, block=0)
    assert first["block"] == 0 and not np.allclose(first["all"], a["all"], atol=1e-3)
    only = gradcam(micro, x, groups=("temporal",))
    assert only["spatial"] is None and only["all"] is None and only["temporal"] is not None
    with pytest.raises(IndexError):
        gradcam(micro, x, block=2)
    with pytest.raises(ValueError):
        gradcam(micro, x, target_class=5)
    with pytest.raises(ValueError):
        gradcam(micro, torch.randn(2, 3, 8, 32, 32))


def test_model_state_is_left_alone(micro):
    micro.train()
    flags = {n: p.requires_grad for n, p in micro.named_parameters()}
    gradcam(micro, _clip(2))
    assert micro.training
    assert flags == {n: p.requires_grad for n, p in micro.named_parameters()}
    assert all(p.grad is None for p in micro.parameters())
    assert not any(blk.v_probe._forward_hooks for blk in micro.blocks)  # hooks released
    micro.eval()


def test_no_temporal_heads_reports_empty_group():
    m = _micro(offsets="0x6")
    r = gradcam(m, _clip(0))
    assert r["temporal"] is None
    assert "no temporal heads" in r["messages"]["temporal"] and "Δt = 0" in r["messages"]["temporal"]
    assert r["heads"]["temporal"] == []
    assert r["spatial"] is not None and np.allclose(r["spatial"], r["all"])  # all heads are the spatial heads
    assert head_groups(m, 0)["temporal"] == []


def test_merged_and_unmerged_give_the_same_maps(micro, tmp_path):
    merged = merge_adapters(micro)
    reloaded = load_merged(save_merged(merged, tmp_path / "merged"))
    assert not any(len(b.adapters) for b in reloaded.blocks) and any(len(b.adapters) for b in micro.blocks)
    x = _clip(3)
    a, b = gradcam(micro, x), gradcam(reloaded, x)
    assert a["target_class"] == b["target_class"]
    np.testing.assert_allclose(a["probs"], b["probs"], atol=1e-5)
    for g in GROUPS:
        np.testing.assert_allclose(a[g], b[g], atol=2e-3, err_msg=g)


def test_mass_in_boxes_and_chance():
    t, h, w = 4, 20, 30
    boxes = np.array([[5, 2, 15, 12]] * t, dtype=float)  # 10 x 10 of 20 x 30
    assert chance_in_boxes(boxes, (h, w)) == pytest.approx(100 / 600)
    assert mass_in_boxes(np.ones((t, h, w)), boxes) == pytest.approx(100 / 600)  # uniform map = chance
    inside = np.zeros((t, h, w))
    inside[:, 2:12, 5:15] = 1
    assert mass_in_boxes(inside, boxes) == pytest.approx(1.0)
    assert mass_in_boxes(1 - inside, boxes) == pytest.approx(0.0)
    half = inside.copy()
    half[:, 0, 0] = 100  # as much mass in one pixel outside as in the 100 pixels inside
    assert mass_in_boxes(half, boxes) == pytest.approx(0.5)
    nan_boxes = boxes.copy()
    nan_boxes[1] = np.nan  # object absent in frame 1: skipped
    cam = inside.copy()
    cam[1] = 1 - inside[1]
    assert mass_in_boxes(cam, nan_boxes) == pytest.approx(1.0)
    assert np.isnan(mass_in_boxes(np.zeros((t, h, w)), boxes))
    # boxes through resize(short side) + centre crop: 40x60 -> 20x30 -> crop 20 (5 px cut left and right)
    mapped = transform_boxes(np.array([[10, 4, 30, 24]], float), (40, 60), short_side=20, crop=20)
    np.testing.assert_allclose(mapped, [[0, 2, 10, 12]])


def test_overlay_and_strip():
    frames = np.full((3, 8, 10, 3), 128, np.uint8)
    cam = np.zeros((3, 4, 5), np.float32)
    cam[:, :2, :2] = 1.0
    out = overlay(frames, cam)
    assert out.shape == frames.shape and out.dtype == np.uint8
    assert out[0, 0, 0, 0] > out[0, 7, 9, 0] and out[0, 7, 9, 2] > out[0, 0, 0, 2]  # hot = red, cold = blue
    s = strip(frames, cam, height=16, gap=2)
    assert s.shape == (16, 3 * 20 + 2 * 2, 3) and s.dtype == np.uint8
    assert (s[:, 20:22] == 255).all()  # the gap between frames
    plain = strip(frames)
    assert plain.shape == (8, 34, 3) and (plain[:, :10] == 128).all()
    with pytest.raises(ValueError):
        overlay(frames, cam[:2])


def test_explain_video_on_an_mp4(micro, tmp_path):
    frames = np.zeros((20, 48, 64, 3), np.uint8)
    for t in range(20):
        frames[t, 16:32, 2 * t:2 * t + 16] = (255, 120, 0)
    write_video(tmp_path / "clip.mp4", frames)
    r = explain_video(micro, tmp_path / "clip.mp4", num_clips=3, display_height=64)
    assert r["indices"].shape == (3, 8) and r["video"]["num_frames"] == 20
    assert abs(float(r["probs"].sum()) - 1) < 1e-5 and r["target_class"] == int(r["probs"].argmax())
    assert r["frames"].shape == (8, 32, 32, 3)
    # the frames shown are what the model saw: the orange square is there (short side 48 -> 32, centre crop)
    assert r["frames"][..., 0].max() > 200
    for g in ("frames", *GROUPS):
        assert r["strips"][g].shape == (64, 8 * 64 + 7 * 2, 3)
    assert r["timings"]["total"] >= r["timings"]["cam"] > 0
    x = torch.randn(1, 3, 8, 32, 32)
    back = to_uint8_frames(x.clamp(-1, 1), micro.cfg.mean, micro.cfg.std)
    assert back.shape == (8, 32, 32, 3) and back.dtype == np.uint8


# ---------------------------------------------------------------- a trained model looks at the object
# The toy task: the direction a synthetic object moves (left / right / up / down), which needs the
# temporal heads or the temporal embedding. From a random init the loss sits at ln 4 for ~200-400 steps,
# then drops: ~20-35 s on 2 loaded cores. Measured while writing this test over training seeds 0-2
# (48 held-out clips each): the temporal-head CAM put 2.7-3.5x chance of its mass inside the object's
# box in block 0, and 1.9-3.5x in block 1 (the last of two: its tokens already mix the whole frame).
MOVES = ["move_left", "move_right", "move_up", "move_down"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A micro ZeroI2V trained briefly (in memory) on synthetic moving objects, and test MP4s + metadata."""
    from zeroi2v.data.synthetic import make_clip, make_synthetic_videos
    from zeroi2v.data.transforms import normalize

    rng = np.random.default_rng(0)
    xs, ys = [], []
    for i in range(768):
        frames, _, _ = make_clip(MOVES[i % 4], rng, num_frames=8, size=32)
        xs.append(normalize(torch.from_numpy(frames).permute(0, 3, 1, 2)).permute(1, 0, 2, 3))
        ys.append(i % 4)
    x, y = torch.stack(xs), torch.tensor(ys)
    torch.manual_seed(0)
    model = create_model(backbone="zeroi2v-micro", num_classes=len(MOVES), num_frames=8,
                         offsets="1x1,-1x1,0x4", finetune="full", head_dropout=0.0, class_names=MOVES)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    g = torch.Generator().manual_seed(0)
    model.train()
    ema = None
    for _ in range(700):
        idx = torch.randint(0, len(x), (32,), generator=g)
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema = loss.item() if ema is None else 0.9 * ema + 0.1 * loss.item()
        if ema < 0.25:
            break
    model.eval()
    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic_videos(root, seed=7, classes=MOVES, videos_per_class={"test": 4}, num_frames=8, size=32)
    meta = json.loads((root / "test_meta.json").read_text())
    return model, root, meta, ema


@pytest.mark.slow
def test_trained_temporal_heads_look_at_the_object(trained):
    model, root, meta, ema = trained
    assert ema < 0.5, f"the toy model did not train (loss {ema:.2f})"
    assert len(meta) == 16
    masses = {b: {g: [] for g in GROUPS} for b in (0, 1)}
    chances, correct = [], 0
    for item in meta:  # through the app's path: decode the MP4, sample its 8 frames, CAM
        for b in (0, 1):
            r = explain_video(model, root / item["path"], num_clips=1, target_class=item["label"], block=b)
            boxes = np.asarray(item["boxes"])[r["indices"][0]]  # 32 px video = model input: boxes as they are
            for g in GROUPS:
                masses[b][g].append(mass_in_boxes(r[g], boxes))
        correct += int(r["probs"].argmax() == item["label"])
        chances.append(chance_in_boxes(boxes, (32, 32)))
    chance = float(np.mean(chances))
    assert correct >= 0.75 * len(meta), f"only {correct}/{len(meta)} test clips right"
    for b, factor in ((0, 1.5), (1, 1.2)):
        temporal = masses[b]["temporal"]
        assert np.isfinite(temporal).mean() >= 0.75  # few clips without positive evidence (all-zero map)
        mean = float(np.nanmean(temporal))
        assert mean > factor * chance, \
            f"block {b}: temporal-head CAM mass in box {mean:.3f}, chance {chance:.3f} (want > {factor}x)"
