import json

import pytest
import torch

from zeroi2v.bench import PlainViT, backbone_params, count_flops, count_params
from zeroi2v.merge import load_merged, merge_adapters, save_merged
from zeroi2v.model import create_model


def _random_adapters(model, seed=0):
    """Non-zero adapters (they start as identity) and temporal embedding, as after training."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".adapters." in name or name == "temporal_embedding":
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model


@pytest.mark.parametrize("placement", ["4", "6", "3", ["q_in", "v_in", "mlp_out"]])
@pytest.mark.parametrize("scale", [0.5, 1.0])
def test_merged_equals_unmerged(placement, scale):
    torch.manual_seed(0)
    model = _random_adapters(create_model(backbone="zeroi2v-tiny", num_classes=7, num_frames=8,
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
    model = _random_adapters(create_model(backbone="zeroi2v-micro", num_classes=3, num_frames=4,
                                          offsets="1x1,-1x1", boundary="zero")).eval()
    merged = merge_adapters(model)
    save_merged(merged, tmp_path, extra={"class_names": ["a", "b", "c"]})
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model"]["adapter"] is None and config["class_names"] == ["a", "b", "c"]
    assert config["offsets_per_layer"] == [[1, -1, 0, 0, 0, 0]] * 2
    from safetensors.torch import load_file
    keys = set(load_file(str(tmp_path / "model.safetensors")))
    assert not any("adapters" in k for k in keys)
    assert {"temporal_embedding", "head.weight", "head.bias", "visual.conv1.weight"} <= keys
    loaded = load_merged(tmp_path)
    assert loaded.cfg.boundary == "zero" and loaded.offsets == merged.offsets
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
    model = _random_adapters(create_model(backbone="zeroi2v-tiny", num_classes=4, num_frames=8, offsets="1x2,-1x2")).eval()
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
