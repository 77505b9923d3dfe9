"""Issue 11, items 3 and 4: flip label maps by class names (pairs, files, none), the once-only warning for
directional classes, and every augmentation setting (crop scale and ratio, a derived short side) in YAML,
with the quickstart's augmentation taken from its Config."""
from pathlib import Path

import pytest
import torch
from torchvision.transforms import v2

from zeroi2v.config import Config, load_config, read_config
from zeroi2v.data import build
from zeroi2v.data.build import build_datasets
from zeroi2v.data.synthetic import make_synthetic_videos
from zeroi2v.data.transforms import SSV2_FLIP_LABEL_MAP, directional_classes, mirror_pairs

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["move_left", "move_right", "grow"]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    out = tmp_path_factory.mktemp("flips")
    make_synthetic_videos(out, classes=CLASSES, videos_per_class={"train": 1}, num_frames=8, size=32)
    return out


def _train_set(videos, *overrides):
    cfg = load_config(None, ["model.backbone=zeroi2v-micro", "model.num_frames=4", "model.num_classes=3",
                             "model.offsets=1x1,-1x1", "data.workers=0", f"data.root={videos}",
                             f"data.train_ann={videos}/train.txt",
                             f"data.format_args={{classes: {videos}/classes.txt}}", *overrides])
    return build_datasets(cfg, 32, splits=("train",))[0]


def _resized_crop(transform) -> v2.RandomResizedCrop:
    return next(t for t in transform.spatial.transforms if isinstance(t, v2.RandomResizedCrop))


def test_flip_label_map_takes_class_name_pairs_files_ssv2_and_none(videos, tmp_path):
    swap = {0: 1, 1: 0}
    assert _train_set(videos, "data.flip_label_map=[[move_left, move_right]]").transform.flip_label_map == swap
    pairs = {"pairs.txt": "# mirrored classes\nmove_left,move_right\n", "pairs.tsv": "move_right\tmove_left\n",
             "pairs.yaml": "- [move_left, move_right]\n", "pairs.json": '[["move_left", "move_right"]]'}
    for name, text in pairs.items():
        (tmp_path / name).write_text(text)
        assert _train_set(videos, f"data.flip_label_map={tmp_path / name}").transform.flip_label_map == swap, name
    assert _train_set(videos, "data.flip_label_map=ssv2").transform.flip_label_map == SSV2_FLIP_LABEL_MAP
    for off in ("none", "null"):
        assert _train_set(videos, f"data.flip_label_map={off}").transform.flip_label_map == {}


def test_flip_label_map_errors_name_the_key_and_the_name(videos, tmp_path):
    with pytest.raises(ValueError, match=r"data\.flip_label_map.*'move_sideways'.*not a class"):
        _train_set(videos, "data.flip_label_map=[[move_left, move_sideways]]")
    with pytest.raises(ValueError, match=r"data\.flip_label_map"):
        load_config(None, ["data.flip_label_map=[[move_left]]"])
    with pytest.raises(FileNotFoundError, match=r"data\.flip_label_map.*nowhere\.txt"):
        _train_set(videos, f"data.flip_label_map={tmp_path / 'nowhere.txt'}")
    (tmp_path / "typo.txt").write_text("move_left,move_rihgt\n")
    with pytest.raises(ValueError, match=r"data\.flip_label_map \(.*typo\.txt\): 'move_rihgt' is not a class"):
        _train_set(videos, f"data.flip_label_map={tmp_path / 'typo.txt'}")
    (tmp_path / "bad.txt").write_text("move_left move_right\n")
    with pytest.raises(ValueError, match=r"bad\.txt:1 .*comma or a tab"):
        _train_set(videos, f"data.flip_label_map={tmp_path / 'bad.txt'}")


def test_directional_classes_warn_once_when_flips_have_no_map(videos, monkeypatch, capsys):
    monkeypatch.setattr(build, "_WARNED", set())
    _train_set(videos)
    _train_set(videos)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "look directional" in ln]
    assert len(lines) == 1 and "move_left" in lines[0] and "move_right" in lines[0] and "grow" not in lines[0]
    monkeypatch.setattr(build, "_WARNED", set())
    _train_set(videos, "data.flip_label_map=[[move_left, move_right]]")
    _train_set(videos, "data.flip=0")
    assert "look directional" not in capsys.readouterr().err


def test_direction_words_and_mirror_pairs():
    names = ["MoveLeft", "MoveRight", "rotate counter-clockwise", "rotate clockwise", "Pushing something",
             "opening door", "jump", "ApplyEyeMakeup", "sweep_up"]
    # what a horizontal mirror changes; pushing, opening or 'up' look the same mirrored (UCF101's PushUps)
    assert directional_classes(names) == ["MoveLeft", "MoveRight", "rotate counter-clockwise", "rotate clockwise"]
    assert directional_classes(["PushUps", "PullUps", "pushing car", "opening present"]) == []
    assert mirror_pairs(names) == [["MoveLeft", "MoveRight"], ["rotate counter-clockwise", "rotate clockwise"]]


def test_crop_scale_and_ratio_come_from_yaml(videos):
    crop = _resized_crop(_train_set(videos, "data.crop_scale=[0.5, 0.9]", "data.crop_ratio=[0.9, 1.1]").transform)
    assert tuple(crop.scale) == (0.5, 0.9) and tuple(crop.ratio) == (0.9, 1.1)
    for bad in ("data.crop_scale=[0, 1]", "data.crop_scale=[0.9, 0.5]", "data.crop_scale=[0.5, 1.5]",
                "data.crop_ratio=[2, 1]", "data.crop_ratio=[0, 1]"):
        with pytest.raises(ValueError, match=bad.split("=")[0].replace(".", r"\.")):
            load_config(None, [bad])


def test_short_side_null_is_derived_from_the_crop_size(videos):
    assert Config().data.short_side is None
    resize = _train_set(videos).transform.spatial.transforms[0]  # micro backbone: 32-pixel crops
    assert isinstance(resize, v2.Resize) and resize.size == [round(32 * 256 / 224)]
    assert _train_set(videos, "data.short_side=40").transform.spatial.transforms[0].size == [40]
    for path in sorted((ROOT / "configs").glob("*.yaml")):  # the paper configs keep their 256 for 224 crops
        cfg = read_config(path)
        assert cfg.data.short_side == 256 and cfg.short_side_for(cfg.data.size) == round(cfg.data.size * 256 / 224)


def test_the_quickstart_takes_its_augmentation_from_its_config():
    """The quickstart's transforms, now built from its Config, draw exactly what its Python-only transforms
    drew before (same crops, flips and labels for the same generator)."""
    from zeroi2v.data.build import test_transform, train_transform
    from zeroi2v.data.synthetic import flip_label_map
    from zeroi2v.data.transforms import TestTransform, TrainTransform
    from zeroi2v.quickstart import QuickstartSettings, _run_config
    s = QuickstartSettings()
    classes = list(s.classes)
    cfg = _run_config(s, "zeroi2v-micro", classes, Path("unused"), seed=0, epochs=1)
    d = cfg.data
    assert (tuple(d.crop_scale), d.randaugment, d.flip, d.short_side) == ((1.0, 1.0), None, 0.5, s.size)
    assert cfg.validate() is cfg
    new, old = train_transform(cfg, s.size, classes), TrainTransform(
        size=s.size, short_side=None, randaugment=None, flip=0.5, flip_label_map=flip_label_map(classes),
        crop_scale=(1.0, 1.0))
    assert new.flip_label_map == old.flip_label_map and new.flip_label_map
    clip = torch.randint(0, 256, (8, 3, s.size, s.size), dtype=torch.uint8)
    for seed in range(12):
        label = seed % 2  # move_left / move_right
        (a, la), (b, lb) = (t(clip, label, generator=torch.Generator().manual_seed(seed)) for t in (new, old))
        assert torch.equal(a, b) and la == lb
    views = test_transform(cfg, s.size, full=True)(clip)
    assert torch.equal(views, TestTransform(size=s.size, short_side=s.size, crops=1)(clip))
