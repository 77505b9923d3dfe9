"""The linear probe on features computed once trains the same head as ``train`` through the whole model."""
import copy
import dataclasses
import json

import pytest
import torch

from zeroi2v.data.build import test_transform
from zeroi2v.data.dataset import VideoDataset
from zeroi2v.data.formats import read_annotation
from zeroi2v.data.synthetic import make_synthetic_videos
from zeroi2v.data.views import make_sampler
from zeroi2v.probe import train_feature_probe
from zeroi2v.quickstart import QuickstartSettings, _run_config
from zeroi2v.run_folder import load_checkpoint, load_run
from zeroi2v.train import train

CLASSES = ["move_left", "move_right", "still"]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe_videos")
    make_synthetic_videos(root, seed=0, classes=CLASSES, videos_per_class={"train": 6, "test": 2}, num_frames=8)
    return root


def _cfg(out, flip=0.0):
    s = QuickstartSettings(batch_size=4, lr=1e-2)
    cfg = _run_config(s, "zeroi2v-micro", CLASSES, out, seed=0, epochs=2, temporal={"kind": "stdha", "offsets": None},
                      adapter=None, finetune="linear_probe")
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, flip=flip, flip_label_map=None))


def _set(videos, cfg, split, train):
    from zeroi2v.data.build import train_transform
    transform = train_transform(cfg, 32, CLASSES) if train else test_transform(cfg, 32)
    return VideoDataset(read_annotation("mmaction", videos / f"{split}.txt"), videos, classes=CLASSES,
                        sampler=make_sampler("uniform", 8), train=train, seed=0, transform=transform)


def test_the_feature_probe_trains_the_head_train_trains_through_the_model(videos, tmp_path):
    through = _cfg(tmp_path / "through")
    out = train(through, train_set=_set(videos, through, "train", True), test_set=_set(videos, through, "test", False),
                force=True)
    cached = _cfg(tmp_path / "cached", flip=0.5)  # the probe replays no augmentation: it sets flip 0 itself
    probe = train_feature_probe(cached, _set(videos, cached, "train", False), _set(videos, cached, "test", False),
                                batch_size=5)  # another batching of the feature forwards: same features
    assert probe["global_step"] == out["global_step"] == 2 * (18 // 4)  # 18 clips in full batches of 4, 2 epochs
    a = load_checkpoint(tmp_path / "through" / "checkpoint.pt")["model"]
    b = load_checkpoint(tmp_path / "cached" / "checkpoint.pt")["model"]
    assert set(b) == {"head.weight", "head.bias"}
    assert (a["head.weight"] - a["head.weight"].mean()).abs().max() > 1e-3  # the head moved from its init
    for k in b:
        torch.testing.assert_close(b[k], a[k], atol=1e-5, rtol=1e-4)
    ta, tb = (json.loads((tmp_path / r / "results" / "test.json").read_text()) for r in ("through", "cached"))
    assert tb["top1"] == ta["top1"] and tb["confusion"] == ta["confusion"]
    assert [h["loss"] for h in probe["history"]] == pytest.approx([h["loss"] for h in out["history"]], abs=1e-5)
    # the probe's run folder loads as a whole video model, the same as the run trained through the model
    clip = _set(videos, through, "test", False)[0]["video"]  # (views, C, T, H, W): one view per row
    with torch.no_grad():
        torch.testing.assert_close(load_run(tmp_path / "cached")(clip), load_run(tmp_path / "through")(clip),
                                   atol=1e-4, rtol=1e-4)


def test_the_feature_probe_keeps_every_test_view(videos, tmp_path):
    """With several test views the probe averages the views' probabilities, as ``evaluate`` does."""
    cfg = _cfg(tmp_path / "probe")
    views = _set(videos, cfg, "test", False)
    views3 = copy.copy(views)
    views3.sampler = make_sampler("uniform", 8, clips=3)
    assert views3[0]["video"].shape[0] == 3
    out = train_feature_probe(cfg, _set(videos, cfg, "train", False), views3)
    assert out["test"]["num_samples"] == len(views)


def test_the_feature_probe_refuses_a_model_that_trains_more_than_its_head(videos, tmp_path):
    cfg = _cfg(tmp_path / "probe")
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, finetune="adapters"))
    with pytest.raises(ValueError, match="linear_probe"):
        train_feature_probe(cfg, _set(videos, cfg, "train", False), _set(videos, cfg, "test", False))


def test_a_probe_head_that_does_not_fit_is_a_one_line_error(videos, tmp_path):
    from zeroi2v.run_folder import save_checkpoint
    cfg = _cfg(tmp_path / "probe")
    train_feature_probe(cfg, _set(videos, cfg, "train", False), _set(videos, cfg, "test", False))
    path = tmp_path / "probe" / "checkpoint.pt"
    ckpt = load_checkpoint(path)
    ckpt["model"]["head.weight"] = ckpt["model"]["head.weight"][:, :-1]  # a head for another feature width
    save_checkpoint(path, ckpt)
    with pytest.raises(ValueError, match=r"checkpoint\.pt: its weights do not fit its model config"):
        load_run(tmp_path / "probe")
