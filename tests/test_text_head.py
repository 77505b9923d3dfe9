"""The text-initialised head: CLIP's zero-shot classifier as the video model's plain linear head.

It ranks classes exactly as open_clip's own image-text similarity (its logits are a positive multiple of
CLIP's), says clearly when the backbone has no text tower, reads text weights as data only, and the
offline image model gets a text tower by locked-image tuning (LiT) that beats chance zero-shot."""
import json

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F

from zeroi2v.backbones import OpenCLIP, get_model_config, load_state_dict_file, save_local_dir
from zeroi2v.backbones.text import tokenizer_for
from zeroi2v.model import create_model
from zeroi2v.text_head import TEMPLATES, NoTextTowerError, class_phrase, init_head_from_text

pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning"),
              pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")]

CLASSES = ["red circle", "blue_square", "move left", "a small cat", "jump", "dark room"]


def _clip(seed=0, **kwargs):
    torch.manual_seed(seed)
    return open_clip.create_model("zeroi2v-micro", **kwargs).eval()


def _clip_dir(clip, folder):
    """A whole CLIP (image and text towers) in open_clip's directory layout."""
    text = {k: v for k, v in clip.state_dict().items() if not k.startswith("visual.")}
    return save_local_dir(clip.visual, get_model_config("zeroi2v-micro"), folder, extra_tensors=text)


def _clip_similarity(clip, images, names):
    """open_clip's own zero-shot scores: normalised image embeddings against template-averaged text ones."""
    tok = tokenizer_for(get_model_config("zeroi2v-micro"))
    with torch.no_grad():
        image = clip.encode_image(images, normalize=True)
        text = torch.stack([F.normalize(clip.encode_text(tok([t.format(class_phrase(c)) for t in TEMPLATES]),
                                                         normalize=True).mean(0), dim=-1) for c in names])
    return image @ text.T


@pytest.mark.parametrize("frames", [1, 3])
def test_text_head_ranks_classes_as_clip_does(tmp_path, frames):
    clip = _clip()
    name = _clip_dir(clip, tmp_path / "clip")
    model = create_model(backbone=name, num_classes=len(CLASSES), num_frames=frames, adapter=None,
                         temporal={"kind": "stdha", "offsets": None}).eval()
    init_head_from_text(model, CLASSES)
    assert torch.count_nonzero(model.head.bias) == 0
    torch.manual_seed(1)
    images = torch.randn(8, 3, 32, 32) * 2
    with torch.no_grad():  # one frame, or T copies of it (STDHA then reads the same frame from every offset)
        logits = model(images[:, :, None].expand(-1, -1, frames, -1, -1).contiguous())
    sim = _clip_similarity(clip, images, CLASSES)
    assert torch.equal(logits.argsort(dim=1), sim.argsort(dim=1))
    ratio = logits / sim  # per image one positive factor s' * |f| for every class
    assert (ratio > 0).all()
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), rtol=1e-4)
    # the factor is s' * |ln_post(x_cls) @ P| with s' = logit_scale / feature_norm (text_head's docstring)
    with torch.no_grad():
        f = clip.encode_image(images)
    encoder = OpenCLIP.text_encoder(name, None)
    expected = encoder.logit_scale / encoder.feature_norm * f.norm(dim=1)
    assert torch.allclose(ratio[:, 0], expected, rtol=1e-4)
    assert encoder.logit_scale == pytest.approx(clip.logit_scale.exp().item())
    assert 0.3 < float(expected.mean() / encoder.logit_scale) < 3  # CLIP's logit magnitude, roughly


def test_no_text_tower_is_a_clear_error(tmp_path):
    visual = _clip().visual  # what the quickstart's image pre-training saves: visual.* only
    name = save_local_dir(visual, get_model_config("zeroi2v-micro"), tmp_path / "image_model")
    assert OpenCLIP.text_encoder(name, None) is None
    model = create_model(backbone=name, num_classes=3, num_frames=1, temporal={"kind": "stdha", "offsets": None})
    before = model.head.weight.clone()
    with pytest.raises(NoTextTowerError) as e:
        init_head_from_text(model, ["a", "b", "c"])
    message = str(e.value)
    assert isinstance(e.value, ValueError) and "\n" not in message
    assert "backbone 'image_model (local folder)' has no text tower" in message
    assert "head_init 'random'" in message and "full CLIP checkpoint" in message and str(tmp_path) not in message
    assert torch.equal(model.head.weight, before)
    with pytest.raises(NoTextTowerError, match="random initialisation"):
        init_head_from_text(create_model(backbone="zeroi2v-micro", num_classes=2, num_frames=2), ["a", "b"])


def test_head_shape_mismatch_names_the_counts(tmp_path):
    name = _clip_dir(_clip(), tmp_path / "clip")
    model = create_model(backbone=name, num_classes=4, num_frames=2)
    with pytest.raises(ValueError, match="head has 4 classes but 3 class names"):
        init_head_from_text(model, ["a", "b", "c"])


def test_text_weights_are_read_as_data(tmp_path, monkeypatch):
    """An OpenAI-style TorchScript CLIP gives its text tower without torch.jit.load (QuickGELU, as
    OpenAI's models are), and every text weight goes through the safe reader."""
    clip = _clip(force_quick_gelu=True)
    tok = tokenizer_for(get_model_config("zeroi2v-micro"))
    torch.jit.trace(clip, (torch.randn(1, 3, 32, 32), tok(["a cat"])), check_trace=False).save(str(tmp_path / "c.pt"))
    read = []

    def refuse(*args, **kwargs):
        raise AssertionError("torch.jit.load was called")

    def reader(path):
        read.append(str(path))
        return load_state_dict_file(path)
    monkeypatch.setattr(torch.jit, "load", refuse)
    monkeypatch.setattr("zeroi2v.backbones.text.load_state_dict_file", reader)
    encoder = OpenCLIP.text_encoder("zeroi2v-micro", str(tmp_path / "c.pt"))
    assert read == [str(tmp_path / "c.pt")]
    with torch.no_grad():
        expected = clip.encode_text(tok(CLASSES), normalize=True)
    assert torch.allclose(encoder.encode(CLASSES), expected, atol=1e-5)
    assert torch.equal(encoder.visual_proj, clip.visual.proj)


def test_hostile_archive_in_a_clip_folder_runs_nothing(tmp_path):
    from test_backbones import Evil
    target = tmp_path / "PWNED"
    folder = tmp_path / "clip_dir"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": get_model_config("zeroi2v-micro")}))
    torch.jit.script(Evil(str(target))).save(str(folder / "open_clip_pytorch_model.bin"))
    with pytest.raises(ValueError, match="refused"):
        OpenCLIP.text_encoder(f"local-dir:{folder}", None)
    assert not target.exists()


def test_lit_text_tower_beats_chance_and_loads_as_clip(tmp_path):
    from safetensors.torch import load_file

    from zeroi2v.data.synthetic import make_synthetic_images
    from zeroi2v.pretrain import pretrain_image_model
    from zeroi2v.pretrain_text import SUMMARY_FILE, pretrain_text_tower
    data = np.load(make_synthetic_images(tmp_path / "stills", seed=0, n=480)["path"])
    labels = {h: data[h] for h in data["heads"]}
    folder = tmp_path / "image_model"
    pretrain_image_model(data["images"], labels, folder, backbone="zeroi2v-micro", epochs=6, batch_size=64, seed=0,
                         log=lambda s: None)
    image_weights = load_state_dict_file(folder / "open_clip_model.safetensors")
    summary = pretrain_text_tower(folder, data["images"], labels, epochs=15, batch_size=64, seed=0,
                                  log=lambda s: None, val_fraction=0.25)
    zs = summary["zero_shot"]  # on 120 held-out stills; 0.49-0.70 for colour over seeds 0-2
    assert zs["colour"]["chance"] == 1 / 8 and zs["shape"]["chance"] == 1 / 5
    assert zs["colour"]["accuracy"] > 2.5 * zs["colour"]["chance"]
    assert json.loads((folder / SUMMARY_FILE).read_text()) == summary
    # the folder is now a whole CLIP: open_clip loads it strictly, the image tower is unchanged
    saved = load_file(folder / "open_clip_model.safetensors")
    clip = open_clip.create_model("zeroi2v-micro")
    clip.load_state_dict(saved, strict=True)
    assert all(torch.equal(saved[k], v) for k, v in image_weights.items())
    # and the text head starts from it: stills classified by colour name with no training
    model = create_model(backbone=f"local-dir:{folder}", num_classes=8, num_frames=1,
                         temporal={"kind": "stdha", "offsets": None}).eval()
    names = [f"{c} object" for c in data["colour_names"]]
    init_head_from_text(model, names)
    from zeroi2v.pretrain import normalize_images
    with torch.no_grad():
        pred = model(normalize_images(torch.from_numpy(data["images"][:240]))[:, :, None]).argmax(1)
    assert (pred.numpy() == data["colour"][:240]).mean() > 2 / 8


def test_text_only_without_an_image_model_is_one_line(tmp_path, capsys):
    from zeroi2v.cli import main
    from zeroi2v.data.synthetic import make_synthetic_images
    stills = make_synthetic_images(tmp_path / "stills", seed=0, n=8)["path"]
    assert main(["pretrain-image", "--images", stills, "--out", str(tmp_path / "empty"), "--text-only"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(tmp_path / "empty" / "open_clip_config.json") in err and "not found" in err
