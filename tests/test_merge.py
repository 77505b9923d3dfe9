import json

import pytest
import torch

from zeroi2v.backbones import create_visual, save_local_dir
from zeroi2v.bench import PlainViT, backbone_params, count_flops, count_params
from zeroi2v.merge import load_merged, merge_adapters, read_merged_config, save_merged
from zeroi2v.model import create_model, display_name
from adapter_helpers import random_adapters



@pytest.mark.parametrize("placement", ["4", "6", "3", ["q_in", "v_in", "mlp_out"]])
@pytest.mark.parametrize("scale", [0.5, 1.0])
def test_merged_equals_unmerged(placement, scale):
    torch.manual_seed(0)
    model = random_adapters(create_model(backbone="zeroi2v-tiny", num_classes=7, num_frames=8,
                                          offsets="1x2,-1x1,2x1,0x4", adapter_placement=placement,
                                          adapter_scale=scale, adapter_dropout=0.1)).eval()
    merged = merge_adapters(model)
    video = torch.randn(3, 3, 8, 32, 32)
    with torch.no_grad():
        before, after = model(video), merged(video)
    assert (before - after).abs().max().item() <= 1e-4
    assert (before.argmax(1) == after.argmax(1)).all()
    # exactly the backbone + temporal embedding + classifier
    assert count_params(merged) == backbone_params(model) + 8 * 128 + (128 * 7 + 7)
    assert not any(len(b.adapters) for b in merged.blocks)
    assert any(len(b.adapters) for b in model.blocks)  # the original is untouched


def test_merged_checkpoint_round_trip(tmp_path):
    model = random_adapters(create_model(backbone="zeroi2v-micro", num_classes=3, num_frames=4,
                                          offsets="1x1,-1x1", boundary="zero")).eval()
    merged = merge_adapters(model)
    save_merged(merged, tmp_path, extra={"class_names": ["a", "b", "c"]})
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model"]["adapter"] is None and config["class_names"] == ["a", "b", "c"]
    assert config["model"]["temporal"] == {"kind": "stdha", "offsets": [[1, -1, 0, 0, 0, 0]] * 2, "boundary": "zero"}
    from safetensors.torch import load_file
    keys = set(load_file(str(tmp_path / "model.safetensors")))
    assert not any("adapters" in k for k in keys)
    assert {"temporal_embedding", "head.weight", "head.bias", "visual.conv1.weight"} <= keys
    loaded = load_merged(tmp_path)
    assert loaded.temporal_spec["boundary"] == "zero" and loaded.offsets == merged.offsets
    video = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        assert (loaded(video) - model(video)).abs().max().item() <= 1e-4


def test_save_refuses_unmerged_and_load_refuses_non_checkpoints(tmp_path):
    model = create_model(backbone="zeroi2v-micro", num_classes=3, num_frames=4)
    with pytest.raises(ValueError, match="merge_adapters"):
        save_merged(model, tmp_path / "x")
    with pytest.raises(FileNotFoundError, match="not a merged checkpoint"):
        load_merged(tmp_path / "nothing-here")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text('{"format": "something-else"}')
    (tmp_path / "bad" / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="format"):
        load_merged(tmp_path / "bad")


def test_merged_flops_equal_plain_vit():
    model = random_adapters(create_model(backbone="zeroi2v-tiny", num_classes=4, num_frames=8, offsets="1x2,-1x2")).eval()
    merged = merge_adapters(model)
    video = torch.randn(1, 3, 8, 32, 32)
    plain = PlainViT(merged)
    assert count_flops(merged, video) == count_flops(plain, video)
    assert count_flops(model, video) > count_flops(merged, video)  # the adapters did cost before merging
    with torch.no_grad():  # and the plain model really is the image model with the same head
        assert plain(video).shape == (1, 4)


@pytest.mark.parametrize("backbone,preset,expected", [
    ("ViT-B-16", "k400_vit_b_8", 422), ("ViT-L-14", "k400_vit_l_8", 1946)])
def test_paper_gflops(backbone, preset, expected):
    """Table 4: 8 frames x 3 views; random weights on the meta device (shapes only)."""
    with torch.device("meta"):
        model = create_model(backbone=backbone, num_classes=400, num_frames=8, offsets=preset, adapter=None).eval()
        video = torch.empty(1, 3, 8, 224, 224)
    gflops = count_flops(model, video) * 3 / 1e9
    assert abs(gflops - expected) / expected <= 0.01, gflops


# --- a merged checkpoint's config.json is checked on load, and names no server path -------------------

def _merged_dir(tmp_path, class_names=("a", "b", "c")):
    torch.manual_seed(0)
    merged = merge_adapters(create_model(backbone="zeroi2v-micro", num_classes=3, num_frames=4))
    return save_merged(merged, tmp_path / "ckpt", extra={"class_names": list(class_names)})


def _tampered(folder, change):
    """config.json after ``change(config)``; a returned str/bytes replaces the whole file."""
    path = folder / "config.json"
    config = json.loads(path.read_text())
    new = change(config)
    if isinstance(new, bytes):
        path.write_bytes(new)
    else:
        path.write_text(new if isinstance(new, str) else json.dumps(config))
    return path


@pytest.mark.parametrize("change, key, fix", [
    (lambda c: c.pop("model"), "'model'", "re-create"),                                   # was KeyError 'model'
    (lambda c: c.pop("backbone_cfg"), "'backbone_cfg'", "re-create"),
    (lambda c: c.__setitem__("offsets_per_layer", [[1, -1]]), "offsets_per_layer", "re-create"),
    (lambda c: c.__setitem__("offsets_per_layer", [[1, -1, 0, 0, 0, 0, 0, 0]] * 2), "offsets_per_layer", "re-create"),
    (lambda c: c.__setitem__("offsets_per_layer", [[9, 0, 0, 0, 0, 0]] * 2), "offsets_per_layer", "re-create"),
    (lambda c: "this is { not json", "not valid JSON", "re-create"),
    (lambda c: '{"model": {"backbone": "caf\u00e9"}}'.encode("latin-1"), "not UTF-8", "re-create"),
    (lambda c: "[1, 2]", "JSON list", "re-create"),
    (lambda c: c.__setitem__("class_names", ["a"]), "'class_names' has 1 name but the classifier has 3", "remove"),
    (lambda c: c["model"].__setitem__("class_names", ["a", "b", "c", "d"]), "'model.class_names' has 4", "remove"),
    (lambda c: c.__setitem__("class_names", "abc"), "'class_names'", "remove"),
    (lambda c: c["model"].__setitem__("num_classes", "x"), "model.num_classes", "re-create"),
    (lambda c: c["model"].__setitem__("num_frames", 0), "model.num_frames", "re-create"),
    (lambda c: c["model"].__setitem__("colour", 1), "model.colour", "re-create"),
    (lambda c: c.__setitem__("version", 99), "newer zeroi2v", "upgrade"),
    (lambda c: c.pop("version"), "'version'", "re-create"),
    (lambda c: c.__setitem__("facts", [1, 2]), "'facts'", "remove"),
    (lambda c: c.__setitem__("examples", {"a": 1}), "'examples'", "remove"),
    (lambda c: c["backbone_cfg"]["vision_cfg"].pop("width") and None, "vision_cfg.width", "re-create"),
])
def test_a_damaged_config_is_one_clear_error_naming_the_file_and_key(tmp_path, change, key, fix):
    folder = _merged_dir(tmp_path)
    path = _tampered(folder, change)
    with pytest.raises(ValueError) as e:
        load_merged(folder)
    msg = str(e.value)
    assert str(path) in msg and key in msg and fix in msg and "\n" not in msg, msg
    with pytest.raises(ValueError, match="config.json"):  # predict and the app read it this way too
        read_merged_config(folder)


@pytest.mark.parametrize("change, phrase", [
    (lambda c: (c.pop("class_names"), c["model"].__setitem__("num_classes", 5)), "[5, 48]"),
    (lambda c: (c["backbone_cfg"]["vision_cfg"].__setitem__("layers", 3),
                c.__setitem__("offsets_per_layer", [[0] * 6] * 3)), "3 layers"),
    (lambda c: c["backbone_cfg"]["vision_cfg"].__setitem__("patch_size", 4), "size mismatch"),
])
def test_a_config_that_does_not_fit_its_weights_names_both_files(tmp_path, change, phrase):
    folder = _merged_dir(tmp_path)
    _tampered(folder, change)
    with pytest.raises(ValueError) as e:
        load_merged(folder)
    msg = str(e.value)
    assert str(folder / "config.json") in msg and str(folder / "model.safetensors") in msg and phrase in msg
    assert "re-create" in msg and "\n" not in msg, msg


def test_damaged_weights_name_the_file(tmp_path):
    folder = _merged_dir(tmp_path)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"model\.safetensors is not a readable safetensors file.*re-create"):
        load_merged(folder)


def test_save_refuses_class_names_that_do_not_fit_and_writes_nothing(tmp_path):
    merged = merge_adapters(create_model(backbone="zeroi2v-micro", num_classes=3, num_frames=4))
    with pytest.raises(ValueError, match="'class_names' has 2 names but the classifier has 3"):
        save_merged(merged, tmp_path / "ckpt", extra={"class_names": ["a", "b"]})
    assert not (tmp_path / "ckpt").exists()
    with pytest.raises(ValueError, match="overwrite"):
        save_merged(merged, tmp_path / "ckpt", extra={"model": {}})


def _local_dir_model(tmp_path):
    torch.manual_seed(0)
    visual, cfg = create_visual("zeroi2v-micro")
    folder = tmp_path / "srv" / "secret-place" / "image_model"
    name = save_local_dir(visual, cfg, folder)
    return create_model(backbone=name, num_classes=3, num_frames=4), folder


def test_a_checkpoint_from_a_local_folder_stores_its_name_not_its_path(tmp_path):
    model, folder = _local_dir_model(tmp_path)
    out = save_merged(merge_adapters(model), tmp_path / "ckpt")
    text = (out / "config.json").read_text()
    assert str(folder) not in text and "secret-place" not in text and str(tmp_path) not in text
    config = json.loads(text)
    assert config["model"]["backbone"] == "image_model (local folder)" and config["version"] == 2
    loaded = load_merged(out)
    assert loaded.extra_facts()["backbone"] == "image_model (local folder)"
    video = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        assert (loaded(video) - model.eval()(video)).abs().max().item() <= 1e-4


def test_a_version_1_checkpoint_with_a_path_still_loads_and_shows_only_the_name(tmp_path):
    """What save_merged wrote before version 2: the local-dir path in model.backbone."""
    model, folder = _local_dir_model(tmp_path)
    out = save_merged(merge_adapters(model), tmp_path / "ckpt")
    _tampered(out, lambda c: (c.__setitem__("version", 1), c["model"].__setitem__("backbone", f"local-dir:{folder}")))
    loaded = load_merged(out)
    assert loaded.cfg.backbone == f"local-dir:{folder}"
    assert loaded.extra_facts()["backbone"] == "image_model (local folder)"


@pytest.mark.parametrize("source, shown", [
    ("local-dir:/x/y/image_model", "image_model (local folder)"),
    ("local-dir:/x/y/image_model/", "image_model (local folder)"),
    ("/srv/weights/clip.pt", "clip.pt (local file)"),
    ("ViT-B-16", "ViT-B-16"), ("openai", "openai"), ("hf-hub:org/repo", "hf-hub:org/repo"), (None, None),
])
def test_display_name(source, shown):
    assert display_name(source) == shown
