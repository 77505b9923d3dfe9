"""Config: strict keys and types, --set coercion, YAML round trip, and every file in configs/."""
import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from zeroi2v.config import Config, check_model_config, load_config, save_config
from zeroi2v.stdha import PRESETS, parse_offsets

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def write(tmp_path, data, name="c.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_overrides_are_coerced_by_field_type():
    cfg = load_config(None, ["optim.lr=1e-4", "model.offsets=1x2,-1x2,0x8", "data.flip_label_map=null",
                             "data.randaugment=9,2", "optim.betas=0.8,0.99", "train.deterministic=true",
                             "train.max_steps=7", "data.format_args.split=2", "model.pretrained=none",
                             "optim.clip_grad=1", "model.adapter_placement=6"])
    assert cfg.optim.lr == 1e-4 and isinstance(cfg.optim.lr, float)
    assert cfg.model.temporal["offsets"] == "1x2,-1x2,0x8"
    assert cfg.data.flip_label_map is None
    assert cfg.data.randaugment == (9, 2) and cfg.optim.betas == (0.8, 0.99)
    assert cfg.train.deterministic is True and cfg.train.max_steps == 7
    assert cfg.data.format_args == {"split": 2}
    assert cfg.model.pretrained is None and cfg.optim.clip_grad == 1.0
    assert str(cfg.model.adapter["placement"]) == "6"
    assert load_config(None, ["data.randaugment=null"]).data.randaugment is None


def test_yaml_round_trip(tmp_path):
    cfg = load_config(None, ["model.backbone=zeroi2v-micro", "model.offsets=1x1,-1x1", "data.format_args.split=3",
                             "optim.lr=2.5e-4", "data.randaugment=null", "model.class_names=[a, b]"])
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    again = load_config(path)
    assert again == cfg
    assert again.to_dict() == cfg.to_dict()
    assert yaml.safe_load(path.read_text())["optim"]["lr"] == 2.5e-4


def test_yaml_scientific_notation_is_a_float(tmp_path):
    # PyYAML reads "3e-4" (no dot) as a string; the config still gets a float.
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 3e-4\n  weight_decay: 5e-2\n")
    cfg = load_config(path)
    assert cfg.optim.lr == pytest.approx(3e-4) and cfg.optim.weight_decay == pytest.approx(0.05)


@pytest.mark.parametrize("data, key, hint", [
    ({"optim": {"lrr": 1}}, "optim.lrr", "weight_decay"),
    ({"bogus": {}}, "bogus", "optim"),
    ({"model": {"num_heads": 3}}, "model.num_heads", "temporal_embedding"),
    ({"data": {"format_args": {"split": 1}, "roots": "/x"}}, "data.roots", "train_ann"),
])
def test_unknown_keys_name_the_dotted_key_and_known_keys(tmp_path, data, key, hint):
    with pytest.raises(ValueError) as e:
        load_config(write(tmp_path, data))
    assert repr(key) in str(e.value) and hint in str(e.value)


@pytest.mark.parametrize("data, key, expected", [
    ({"train": {"batch_size": "eight"}}, "train.batch_size", "int"),
    ({"train": {"deterministic": 3}}, "train.deterministic", "bool"),
    ({"optim": {"betas": [0.9]}}, "optim.betas", "2 values"),
    ({"data": {"root": 5}}, "data.root", "str"),
    ({"optim": {"lr": [1]}}, "optim.lr", "float"),
    ({"model": {"num_frames": None}}, "model.num_frames", "int"),
    ({"train": "fast"}, "train", "mapping"),
])
def test_wrong_types_name_key_expected_and_got(tmp_path, data, key, expected):
    with pytest.raises(ValueError) as e:
        load_config(write(tmp_path, data))
    msg = str(e.value)
    assert key in msg and expected in msg


def test_wrong_type_message_shows_the_value():
    with pytest.raises(ValueError, match=r"'optim.lr' expects float, got str 'fast'"):
        load_config(None, ["optim.lr=fast"])


@pytest.mark.parametrize("override, key", [
    ("train.amp=fp8", "train.amp"),
    ("data.sampler=random", "data.sampler"),
    ("data.flip_label_map=kinetics", "data.flip_label_map"),
    ("model.temporal.offsets=1x20", "model.temporal.offsets"),   # more temporal heads than ViT-B has
    ("model.temporal.offsets=9x1", "model.temporal.offsets"),    # |Δt| beyond an 8-frame clip
    ("model.backbone=ViT-Q-99", "model.backbone"),
    ("data.num_frames=16", "data.num_frames"),           # disagrees with model.num_frames
    ("test.crops=2", "test.crops"),
    ("data.flip=1.5", "data.flip"),
    ("model.adapter.placement=5", "model.adapter.placement"),
    ("noequals", "key.sub=value"),
])
def test_invalid_values_are_rejected(override, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        load_config(None, [override])


def test_at_least_one_config_per_paper_setting():
    names = {p.stem for p in CONFIGS}
    for want in ("k400_vit_b16_8f", "k400_vit_b16_16f", "k400_vit_b16_32f", "ssv2_vit_b16_8f", "ssv2_vit_b16_16f",
                 "ssv2_vit_b16_32f", "ssv2_vit_l14_8f", "ssv2_vit_l14_16f", "ssv2_vit_l14_32f",
                 "ucf101_vit_b16_8f", "hmdb51_vit_b16_8f", "diving48_vit_b16_32f"):
        assert want in names


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_shipped_config_is_valid_and_follows_the_recipe(path):
    cfg = load_config(path)
    m, d, o, t = cfg.model, cfg.data, cfg.optim, cfg.test
    facts = check_model_config(m)  # resolves the backbone config and the Δt preset, builds no weights
    heads = {"ViT-B-16": 12, "ViT-L-14": 16}[m.backbone]
    offsets = facts["temporal"]["offsets"]
    assert facts["heads"] == heads and len(offsets) == facts["layers"]
    assert m.temporal["kind"] == "stdha" and m.temporal["offsets"] in PRESETS
    assert tuple(offsets[0]) == parse_offsets(PRESETS[m.temporal["offsets"]], heads, m.num_frames)
    temporal = [x for x in offsets[0] if x]
    assert 2 <= len(temporal) <= heads // 2 and max(abs(x) for x in temporal) < m.num_frames
    assert m.pretrained == "openai" and m.finetune == "adapters" and m.adapter["kind"] == "linear"
    assert o.lr == pytest.approx(3e-4) and o.weight_decay == pytest.approx(0.05) and o.betas == (0.9, 0.999)
    assert o.warmup_epochs == 2.5 and o.warmup_start_factor == 0.1 and cfg.train.total_batch == 64
    assert o.backbone_lr_mult == (0.1 if m.backbone == "ViT-L-14" else 1.0)
    assert d.randaugment == (7, 4) and d.flip == 0.5 and d.short_side == 256 and d.size == 224
    assert m.temporal["offsets"].startswith(f"{path.stem.split('_')[0]}_vit_{'l' if 'vit_l' in path.stem else 'b'}_") \
        or path.stem.split("_")[0] in ("ucf101", "hmdb51", "diving48")
    dataset = path.stem.split("_")[0]
    if dataset == "k400":
        assert d.sampler == "dense" and d.interval * m.num_frames == 128  # 8x16, 16x8, 32x4
        assert (t.clips, t.crops) == (3, 1) and m.adapter['scale'] == 0.5 and m.adapter['dropout'] == 0.1
        assert o.epochs == 40 and o.label_smoothing == 0 and d.random_erasing == 0 and d.flip_label_map is None
        assert m.num_classes == 400
    elif dataset == "ssv2":
        assert d.sampler == "uniform" and (t.clips, t.crops) == (1, 3) and m.adapter['scale'] == 1.0
        assert o.label_smoothing == 0.1 and d.random_erasing == 0.25 and d.flip_label_map == "ssv2"
        assert o.epochs == 50 and m.num_classes == 174
        six = m.backbone == "ViT-B-16" and m.num_frames == 8
        assert facts["adapter"]["placement"] == (["q_in", "k_in", "v_in", "attn_out", "mlp_in", "mlp_out"] if six
                                                 else ["attn_in", "attn_out", "mlp_in", "mlp_out"])
        assert m.adapter['dropout'] == (0.0 if m.backbone == "ViT-B-16" else 0.1)
    elif dataset in ("ucf101", "hmdb51"):
        assert d.sampler == "uniform" and (t.clips, t.crops) == (1, 3) and m.adapter['scale'] == 0.5
        assert m.num_classes == {"ucf101": 101, "hmdb51": 51}[dataset] and d.format == dataset
        assert d.format_args["split"] == 1
    else:
        assert dataset == "diving48" and d.sampler == "uniform" and m.adapter['scale'] == 1.0 and m.num_classes == 48
        assert "no Diving48 config" in path.read_text()
    assert Config.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("text, line, phrase", [
    ("optim:\n  lr: 1e-4\n  betas: [0.9, 0.99\ntrain:\n  seed: 1\n", 4, "expected ',' or ']'"),
    ("model:\n  num_frames: 8\n num_classes: 3\n", 3, "expected <block end>"),
    ("optim:\n  lr: a: b\n", 2, "mapping values are not allowed"),
    ("model:\n\tnum_frames: 8\n", 2, "cannot start any token"),
    ("model: !!python/object/apply:os.system [ls]\n", 1, "tags (!!...) are not allowed"),
    ("model:\n  backbone: a\x07b\n", 2, "special characters are not allowed"),
])
def test_yaml_syntax_error_names_the_file_and_line(tmp_path, text, line, phrase):
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(ValueError) as e:
        load_config(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}, line {line}") and phrase in msg, msg
    assert "<unicode string>" not in msg and "\n" not in msg


def test_non_utf8_config_names_the_file_and_line(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("model:\n  class_names: [caf\u00e9]\n".encode("latin-1"))
    with pytest.raises(ValueError, match=re.escape(f"{path}, line 2: not UTF-8 text") + ".*save it as UTF-8"):
        load_config(path)


# --- configs that inherit (base:), read without torch -----------------------------------------------

def test_a_child_overriding_one_nested_key_resolves_to_its_base_with_that_key_changed(tmp_path):
    base = CONFIGS[0]
    child = tmp_path / "child.yaml"
    child.write_text(f"base: {os.path.relpath(base, tmp_path)}\noptim:\n  lr: 1.0e-3\n")
    want = load_config(base)
    got = load_config(child)
    assert got.optim.lr == 1e-3 and got != want
    assert got == dataclasses.replace(want, optim=dataclasses.replace(want.optim, lr=1e-3))


def test_a_child_naming_another_kind_replaces_the_spec_of_its_base(tmp_path):
    (tmp_path / "a.yaml").write_text("model:\n  backbone: zeroi2v-micro\n  num_frames: 4\n"
                                     "  adapter: {kind: linear, placement: '6', scale: 0.5}\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\nmodel:\n  adapter: {scale: 2.0}\n")
    assert load_config(tmp_path / "b.yaml").model.adapter == {"kind": "linear", "placement": "6", "scale": 2.0,
                                                           "ratio": 0.25, "dropout": 0.0}
    from zeroi2v.config_files import merge_data
    merged = merge_data({"adapter": {"kind": "linear", "placement": "6", "scale": 0.5}},
                        {"adapter": {"kind": "lora", "rank": 4}})
    assert merged == {"adapter": {"kind": "lora", "rank": 4}}


def test_a_base_cycle_or_a_missing_base_is_a_clear_error_naming_the_file(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\noptim: {lr: 1}\n")
    with pytest.raises(ValueError, match=r"b\.yaml: 'base: a\.yaml' makes a cycle"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("base: ../nowhere/d.yaml\n")
    with pytest.raises(FileNotFoundError, match=r"c\.yaml: 'base: \.\./nowhere/d\.yaml' names .*d\.yaml, which does not exist"):
        load_config(tmp_path / "c.yaml")
    (tmp_path / "e.yaml").write_text("base: [a.yaml]\n")
    with pytest.raises(ValueError, match=r"e\.yaml: 'base' must be the path of another config file"):
        load_config(tmp_path / "e.yaml")


def test_reading_a_config_imports_neither_torch_nor_open_clip():
    code = ("import sys; from zeroi2v.config import read_config; "
            f"c = read_config({str(CONFIGS[0])!r}, ['optim.lr=1e-4']); assert c.optim.lr == 1e-4; "
            "print(sorted(m for m in ('torch', 'open_clip', 'torchvision') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_shipped_configs_hold_only_what_differs_from_their_base():
    from zeroi2v.config_files import _base_path, read_chain, read_yaml
    for path in sorted([*CONFIGS[0].parent.rglob("*.yaml"), *(ROOT / "zeroi2v" / "configs").rglob("*.yaml")]):
        data = read_yaml(path)
        if "base" not in data:
            continue
        parent = read_chain(_base_path(path, data["base"]))
        for section, values in data.items():
            if section == "base":
                continue
            same = [k for k, v in values.items() if parent.get(section, {}).get(k) == v]
            assert not same, f"{path.name} repeats its base's {section}.{same}"


def test_a_spec_of_another_kind_does_not_inherit_the_default_kinds_keys():
    from zeroi2v.config import config_from_data
    cfg = config_from_data({"model": {"temporal": {"kind": "token_shift", "fraction": 0.25}, "adapter": None}})
    assert cfg.model.temporal == {"kind": "token_shift", "fraction": 0.25} and cfg.model.adapter is None
    cfg = config_from_data({"model": {"temporal": {"offsets": "1x2"}}})
    assert cfg.model.temporal == {"kind": "stdha", "offsets": "1x2", "boundary": "self"}


def test_config_show_prints_the_resolved_validated_config(capsys):
    from zeroi2v.cli import main
    path = CONFIGS[0].parent / "k400_vit_l14_16f.yaml"
    assert main(["config", "show", str(path), "--set", "optim.lr=1e-4"]) == 0
    out = capsys.readouterr().out
    shown = yaml.safe_load(out)
    want = load_config(path, ["optim.lr=1e-4"]).to_dict()
    assert shown == want and shown["model"]["backbone"] == "ViT-L-14" and shown["data"]["format"] == "kinetics"
    assert main(["config", "show", str(path), "--set", "model.temporal.offsets=1x40"]) == 2
    assert "model.temporal.offsets" in capsys.readouterr().err
