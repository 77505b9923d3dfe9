import time

import open_clip
import pytest
import torch

from zeroi2v.backbones import create_visual, save_local_dir
from zeroi2v.model import ModelConfig, create_model


def _open_clip_visual(name):
    """open_clip's own visual tower, created by open_clip itself (not by our builder)."""
    return open_clip.create_model(name, pretrained=None).visual.eval()


@pytest.mark.parametrize("name,frames", [("zeroi2v-tiny", 8), ("ViT-B-32", 2)])
def test_identity_init_equals_open_clip(name, frames):
    """Zero-init adapters and Δt = 0: per-frame features are open_clip's visual forward of each frame."""
    torch.manual_seed(0)
    ref = _open_clip_visual(name)
    proj = ref.proj.detach().clone()
    model = create_model(backbone=name, num_classes=3, num_frames=frames, offsets=None).eval()
    missing, unexpected = model.visual.load_state_dict(ref.state_dict(), strict=False)
    assert unexpected == ["proj"] and all(".adapters." in k for k in missing)
    size = model.image_size
    video = torch.randn(2, 3, frames, size, size)
    with torch.no_grad():
        ours = model.forward_features(video) @ proj
        theirs = ref(video.transpose(1, 2).reshape(2 * frames, 3, size, size)).view(2, frames, -1)
    assert (ours - theirs).abs().max().item() <= 1e-5


def test_stdha_changes_the_function_and_spatial_heads_do_not():
    torch.manual_seed(0)
    base = create_model(backbone="zeroi2v-micro", num_classes=3, num_frames=4, offsets=None).eval()
    shifted = create_model(backbone="zeroi2v-micro", num_classes=3, num_frames=4, offsets="1x1,-1x1").eval()
    shifted.load_state_dict(base.state_dict())
    video = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(base(video), shifted(video))
        # a clip of identical frames: every head sees the same K/V either way
        still = video[:, :, :1].expand(-1, -1, 4, -1, -1)
        assert torch.allclose(base(still), shifted(still), atol=1e-5)


def test_trainable_parameters_follow_the_paper():
    model = create_model(backbone="zeroi2v-micro", num_classes=5, num_frames=4, offsets="1x1,-1x1")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable, "nothing trains"
    assert all(".adapters." in n or n.startswith(("head.", "temporal_embedding", "visual.ln_post.")) for n in trainable)
    assert any(".adapters." in n for n in trainable) and "temporal_embedding" in trainable
    assert not any(n.startswith("visual.conv1") or ".attn.in_proj" in n for n in trainable)
    assert len([n for n in trainable if ".adapters." in n]) == 2 * 4 * 4  # 2 blocks x 4 adapters x (down, up) x (weight, bias)
    probe = create_model(backbone="zeroi2v-micro", num_classes=5, num_frames=4, finetune="linear_probe")
    assert {n for n, p in probe.named_parameters() if p.requires_grad} == {"head.weight", "head.bias"}
    full = create_model(backbone="zeroi2v-micro", num_classes=5, num_frames=4, finetune="full")
    assert all(p.requires_grad for p in full.parameters())


def test_per_layer_offsets():
    model = create_model(backbone="zeroi2v-micro", num_classes=2, num_frames=4,
                         offsets=["1x1,0x5", [0, 0, 0, 0, -1, 0]])
    assert model.offsets == [(1, 0, 0, 0, 0, 0), (-1, 0, 0, 0, 0, 0)]
    assert model.blocks[1].temporal.temporal_heads == [0]


def test_wrong_inputs_are_clear_errors():
    model = create_model(backbone="zeroi2v-micro", num_classes=2, num_frames=4)
    with pytest.raises(ValueError, match="4 frames"):
        model(torch.randn(1, 3, 8, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, C, T, H, W\)"):
        model(torch.randn(3, 4, 32, 32))
    with pytest.raises(ValueError, match="unknown model config key"):
        ModelConfig.from_dict({"backbone": "zeroi2v-micro", "num_frame": 8})
    with pytest.raises(ValueError, match="unknown backbone"):
        create_model(backbone="ViT-Q-99")
    with pytest.raises(ValueError, match="outside"):
        create_model(backbone="zeroi2v-micro", num_frames=2, offsets="2x1")
    with pytest.raises(ValueError, match="placement"):
        create_model(backbone="zeroi2v-micro", adapter_placement="5")


def test_offline_pretrained_tag_fails_fast_with_advice(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match="local file"):
        create_visual("ViT-B-32", pretrained="openai")
    assert time.perf_counter() - start < 20


def test_local_weights_paths(tmp_path):
    """A saved open_clip directory and a plain weights file both load into the video model."""
    torch.manual_seed(1)
    visual, cfg = create_visual("zeroi2v-micro")
    name = save_local_dir(visual, cfg, tmp_path / "clip")
    model = create_model(backbone=name, num_classes=2, num_frames=4)
    assert torch.equal(model.visual.conv1.weight, visual.conv1.weight)
    # an open_clip-style full-model state dict saved with torch.save
    torch.save({"state_dict": {f"visual.{k}": v for k, v in visual.state_dict().items()}}, tmp_path / "w.pt")
    model = create_model(backbone="zeroi2v-micro", pretrained=str(tmp_path / "w.pt"), num_classes=2, num_frames=4)
    assert torch.equal(model.visual.positional_embedding, visual.positional_embedding)


def test_untrusted_pickles_are_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    torch.save({"state_dict": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="refused"):
        create_model(backbone="zeroi2v-micro", pretrained=str(tmp_path / "evil.pt"))
    (tmp_path / "wrong.safetensors").write_bytes(b"")
    with pytest.raises(Exception):
        create_model(backbone="zeroi2v-micro", pretrained=str(tmp_path / "wrong.safetensors"))
