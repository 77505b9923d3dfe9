"""Issue 11, item 2: `zeroi2v init` writes a commented starter config for one's own clips that trains as
written, with flips off for directional classes, inheriting the packaged recipe (``base: zeroi2v:...``)."""
from pathlib import Path

import pytest
import yaml

from zeroi2v.cli import main
from zeroi2v.config import load_config, read_config
from zeroi2v.data.synthetic import make_synthetic_videos

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    out = tmp_path_factory.mktemp("own_clips")
    make_synthetic_videos(out, classes=["move_left", "move_right", "grow"], videos_per_class={"train": 2, "val": 1},
                          num_frames=8, size=32)
    return out


def test_init_on_directional_class_folders_writes_a_config_that_trains(clips, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["init", "--data", str(clips), "--backbone", "zeroi2v-micro", "--out", "mine.yaml"]) == 0
    text = Path("mine.yaml").read_text()
    assert yaml.safe_load(text)["base"] == "zeroi2v:configs/base/clip_vit_b16.yaml"
    cfg = load_config("mine.yaml")
    assert cfg.data.flip == 0 and "look directional (move_left, move_right)" in text
    assert (cfg.data.format, cfg.model.num_classes, cfg.model.backbone) == ("folder", 3, "zeroi2v-micro")
    assert Path(cfg.data.train_ann) == clips / "train" and Path(cfg.data.val_ann) == clips / "val"
    assert (cfg.data.size, cfg.data.short_side, cfg.test.short_side) == (32, round(32 * 256 / 224), 32)
    assert cfg.data.sampler == "uniform" and "median 8 frames" in text
    capsys.readouterr()
    assert main(["train", "mine.yaml", "--set", "train.max_steps=1"]) == 0  # the file as written
    assert '"stopped_at_max_steps": true' in capsys.readouterr().out
    assert (tmp_path / "runs" / "mine" / "checkpoint.pt").is_file()


def test_init_on_an_mmaction_list_fills_in_the_class_names_beside_it(clips, tmp_path):
    out = tmp_path / "list.yaml"
    assert main(["init", "--data", str(clips / "train.txt"), "--out", str(out)]) == 0
    cfg = read_config(out)
    assert cfg.data.format == "mmaction" and Path(cfg.data.root) == clips
    assert cfg.data.format_args == {"classes": (clips / "classes.txt").read_text().split()}
    assert Path(cfg.data.val_ann) == clips / "val.txt" and cfg.data.flip == 0
    assert (cfg.model.backbone, cfg.data.size, cfg.data.short_side) == ("ViT-B-16", 224, 256)


def test_init_keeps_flips_for_classes_that_are_not_directional(tmp_path):
    make_synthetic_videos(tmp_path / "v", classes=["grow", "still"], videos_per_class={"train": 1}, num_frames=8)
    out = tmp_path / "c.yaml"
    assert main(["init", "--data", str(tmp_path / "v" / "train"), "--backbone", "zeroi2v-micro", "--out", str(out)]) == 0
    assert read_config(out).data.flip == 0.5 and "val_ann: null" in out.read_text()


def test_init_refuses_to_overwrite_without_force(clips, tmp_path, capsys):
    out = tmp_path / "c.yaml"
    out.write_text("mine\n")
    assert main(["init", "--data", str(clips), "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err and out.read_text() == "mine\n"
    assert main(["init", "--data", str(clips), "--out", str(out), "--force"]) == 0
    assert read_config(out).model.num_classes == 3
    assert main(["init", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "d.yaml")]) == 2
    assert "nowhere" in capsys.readouterr().err and not (tmp_path / "d.yaml").exists()


def test_long_clips_get_dense_sampling():
    from zeroi2v.init import DENSE_FROM, _sampler_lines
    assert "sampler: dense" in _sampler_lines([DENSE_FROM + 10] * 3)[0]
    assert "sampler: uniform" in _sampler_lines([DENSE_FROM - 10] * 3)[0]


def test_a_packaged_base_resolves_like_the_repository_file(tmp_path):
    (tmp_path / "a.yaml").write_text("base: zeroi2v:configs/base/clip_vit_b16.yaml\noptim: {lr: 1.0e-4}\n")
    (tmp_path / "b.yaml").write_text(f"base: {ROOT / 'zeroi2v/configs/base/clip_vit_b16.yaml'}\noptim: {{lr: 1.0e-4}}\n")
    assert read_config(tmp_path / "a.yaml") == read_config(tmp_path / "b.yaml")
    (tmp_path / "c.yaml").write_text("base: zeroi2v:configs/base/nope.yaml\n")
    with pytest.raises(FileNotFoundError, match="zeroi2v:configs/base/clip_vit_b16.yaml"):
        read_config(tmp_path / "c.yaml")
