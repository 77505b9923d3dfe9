"""timm ViTs through the backbone protocol (issue 13, item 4): with zero adapters and Δt = 0 the video model
is timm's own image model frame by frame; adapters merge exactly; checkpoints, Grad-CAM, FLOPs and local
weights work; towers the video model cannot wrap exactly are refused with the reason."""
import pytest
import torch

from zeroi2v.bench import PlainViT, count_flops, count_params
from zeroi2v.config import check_model_config
from zeroi2v.merge import load_merged, merge_adapters, save_merged
from zeroi2v.model import ModelConfig, create_model
from adapter_helpers import random_adapters

timm = pytest.importorskip("timm")

TINY = "timm:vit_tiny_patch16_224?img_size=32&depth=2"  # 192 wide, 3 heads, 2 blocks, 2x2 patches



def _timm_reference(model):
    """timm's own model with the video model's backbone weights: forward_features -> pooled features."""
    ref = timm.create_model("vit_tiny_patch16_224", img_size=32, depth=2, num_classes=0).eval()
    state = {k[len("visual."):]: v for k, v in model.state_dict().items()
             if k.startswith("visual.") and ".adapters." not in k}
    ref.load_state_dict(state)
    return lambda images: ref.forward_head(ref.forward_features(images), pre_logits=True)


@pytest.mark.parametrize("placement", ["4", "6"])
def test_zero_adapters_and_no_shift_reproduce_timm_features(placement):
    torch.manual_seed(0)
    model = create_model(backbone=TINY, num_classes=5, num_frames=4, temporal={"kind": "stdha", "offsets": None},
                         adapter={"kind": "linear", "placement": placement}).eval()
    with torch.no_grad():  # random tower weights: make the final norm's affine non-trivial too
        model.visual.norm.weight.normal_(1.0, 0.2)
    video = torch.randn(2, 3, 4, 32, 32)
    reference = _timm_reference(model)
    with torch.no_grad():
        ours = model.forward_features(video)
        theirs = reference(video.transpose(1, 2).reshape(8, 3, 32, 32)).view(2, 4, -1)
        shifted = create_model(backbone=TINY, num_classes=5, num_frames=4,
                               temporal={"kind": "stdha", "offsets": "1x1,-1x1"},
                               adapter={"kind": "linear", "placement": placement})
        shifted.load_state_dict(model.state_dict())
        moved = shifted.eval().forward_features(video)
    assert ours.shape == (2, 4, 192)
    assert (ours - theirs).abs().max().item() <= 1e-5
    assert (moved - theirs).abs().max().item() > 1e-3  # the check can see a temporal head


@pytest.mark.parametrize("placement", ["4", "6", "3"])
def test_merged_equals_unmerged_and_round_trips(placement, tmp_path):
    torch.manual_seed(0)
    model = random_adapters(create_model(backbone=TINY, num_classes=3, num_frames=4,
                                          temporal={"kind": "stdha", "offsets": "1x1,-1x1"},
                                          adapter={"kind": "linear", "placement": placement})).eval()
    merged = merge_adapters(model)
    video = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        before, after = model(video), merged(video)
    assert (before - after).abs().max().item() <= 1e-4
    assert not any(len(b.adapters) for b in merged.blocks)
    assert count_params(merged) == count_params(PlainViT(merged).visual) + 4 * 192 + 192 * 3 + 3
    loaded = load_merged(save_merged(merged, tmp_path / "ckpt"))
    with torch.no_grad():
        assert torch.equal(loaded(video), after)
    assert loaded.backbone_cfg["kwargs"] == {"img_size": 32, "depth": 2}


def test_merged_flops_equal_the_plain_timm_model_and_gradcam_runs():
    from zeroi2v.explain import gradcam
    torch.manual_seed(0)
    model = random_adapters(create_model(backbone=TINY, num_classes=3, num_frames=4,
                                          temporal={"kind": "stdha", "offsets": "1x1,-1x1"})).eval()
    merged = merge_adapters(model)
    video = torch.randn(1, 3, 4, 32, 32)
    assert count_flops(merged, video) == count_flops(PlainViT(merged), video)
    assert count_flops(model, video) > count_flops(merged, video)
    out = gradcam(merged, video[0])
    assert out["grid"]["temporal"].shape == (4, 2, 2) and out["temporal"].shape == (4, 32, 32)
    assert out["heads"]["temporal"] == [0, 1]


def test_vit_b16_flops_match_timms_published_gmacs():
    """timm publishes 17.6 GMACs for vit_base_patch16_224 at 224 px (model card of
    timm/vit_base_patch16_224.augreg2_in21k_ft_in1k, 'Model Stats'); ours: torch's counter / 2."""
    with torch.device("meta"):
        model = create_model(backbone="timm:vit_base_patch16_224.augreg_in21k", num_classes=1000, num_frames=1,
                             temporal={"kind": "stdha", "offsets": None}, adapter=None).eval()
        video = torch.empty(1, 3, 1, 224, 224)
    gmacs = count_flops(model, video) / 1e9
    assert abs(gmacs - 17.6) / 17.6 <= 0.01, gmacs


def test_local_weights_files_load_and_bad_ones_are_one_named_line(tmp_path):
    from safetensors.torch import save_file
    torch.manual_seed(1)
    source = timm.create_model("vit_tiny_patch16_224", img_size=32, depth=2, num_classes=10)  # with a classifier
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "model.safetensors"))
    torch.save(source.state_dict(), tmp_path / "model.pth")
    for name in ("model.safetensors", "model.pth"):
        model = create_model(backbone=TINY, pretrained=str(tmp_path / name), num_classes=3, num_frames=2)
        assert torch.equal(model.visual.blocks[1].attn.qkv.weight, source.blocks[1].attn.qkv.weight)
        assert torch.equal(model.visual.pos_embed, source.pos_embed)
    with pytest.raises(ValueError, match="model.pth does not fit timm model vit_tiny_patch16_224"):
        create_model(backbone="timm:vit_tiny_patch16_224?img_size=32&depth=3", pretrained=str(tmp_path / "model.pth"))
    (tmp_path / "broken.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="broken.safetensors is not a readable safetensors file"):
        create_model(backbone=TINY, pretrained=str(tmp_path / "broken.safetensors"))
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        create_model(backbone=TINY, pretrained=str(tmp_path / "missing.safetensors"))


def test_hub_tags_offline_say_to_pass_a_local_file(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="could not get timm's pretrained weights of vit_tiny_patch16_224.augreg_in21k.*local file"):
        create_model(backbone=TINY, pretrained="augreg_in21k")
    with pytest.raises(ValueError, match="asks for the tag 'augreg_in21k' but pretrained='orig_in21k'"):
        create_model(backbone="timm:vit_tiny_patch16_224.augreg_in21k?img_size=32&depth=2", pretrained="orig_in21k")


@pytest.mark.parametrize("name,says", [
    ("vit_base_patch16_reg4_gap_256", "pools with 'avg'"),
    ("vit_small_patch16_224?reg_tokens=4", "4 register or distillation token"),
    ("deit_base_distilled_patch16_224", "register or distillation token"),
    ("vit_base_patch16_siglip_224", "pools with 'map'"),
    ("vit_small_patch16_224?qk_norm=true", "normalises Q and K"),
    ("vit_small_patch16_224?class_token=false&global_pool=avg", "pools with 'avg'"),
    ("vit_small_patch16_224?fc_norm=true", "after pooling"),
    ("resnet18", "not a VisionTransformer"),  # Swin names go to the Swin family (test_timm_swin.py)
    ("vit_nosuch_patch16", "unknown timm model 'vit_nosuch_patch16'"),
    ("vit_small_patch16_224?depth", "malformed keyword 'depth'"),
])
def test_towers_that_cannot_be_wrapped_are_refused_with_the_reason(name, says):
    with pytest.raises(ValueError, match=f"model.backbone: .*{says}"):
        check_model_config(ModelConfig(backbone=f"timm:{name}", num_classes=3))


def test_config_facts_come_from_the_timm_architecture():
    facts = check_model_config(ModelConfig(backbone="timm:vit_base_patch16_224.augreg_in21k", num_classes=3,
                                           temporal={"kind": "stdha", "offsets": "k400_vit_b_8"}))
    assert (facts["width"], facts["layers"], facts["heads"], facts["image_size"]) == (768, 12, 12, 224)
    with pytest.raises(ValueError, match="model.temporal.offsets: .*16 temporal heads but the attention has only 12"):
        check_model_config(ModelConfig(backbone="timm:vit_base_patch16_224", temporal={"offsets": "1x16"}))


def test_a_timm_tower_trained_with_other_pixel_statistics_is_noted(capsys, monkeypatch):
    """timm records the mean/std its tower was trained with; CLIP's defaults differ for augreg ViTs (0.5, 0.5):
    a one-line note says so, and nothing is said when model.mean/std match."""
    from zeroi2v import model_config
    from zeroi2v.model_config import ModelConfig, check_model_config
    monkeypatch.setattr(model_config, "_noticed", set())
    name = "timm:vit_base_patch16_224.augreg_in21k"
    check_model_config(ModelConfig(backbone=name, num_classes=5, mean=(127.5,) * 3, std=(127.5,) * 3))
    assert "note" not in capsys.readouterr().err
    check_model_config(ModelConfig(backbone=name, num_classes=5))
    err = capsys.readouterr().err
    assert "trained with pixel mean [127.5, 127.5, 127.5]" in err and "set model.mean and model.std" in err
