"""A linear probe trained by ``zeroi2v.train.train`` on features computed once, not by the backbone each epoch.

A linear probe (``finetune='linear_probe'``) trains only the head: the frozen backbone's frame-averaged
features (``zeroi2v.fewshot.features.features_of``) are the same every epoch for the same clip, so they are
computed once and the run trains ``FeatureHead`` (the model's own head dropout and head) on them, with
the run's whole recipe unchanged: the same initial head (the model is built under the same seed), batches,
dropout draws, optimiser, schedule, clipping, run folder and results. Only augmentation cannot be
replayed on fixed features: the probe sees every training clip as its test view (``data.flip = 0``).
``tests/test_probe.py`` checks that it trains the same head as ``train`` through the whole model.

The run folder's checkpoint holds the head only (``head.weight``, ``head.bias``); the backbone is the
image model the config names, unchanged.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn as nn
from torch.utils.data import Dataset

from zeroi2v.config import Config


class FeatureHead(nn.Module):
    """ZeroI2V's classifier (head dropout, then the linear head, eq. (1)'s last step) on a frame-averaged
    feature passed as a (width, 1, 1, 1) "clip", so ``train`` and ``evaluate`` run it as a video model."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.cfg = model.cfg
        self.head_drop, self.head = model.head_drop, model.head

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_drop(video.flatten(1)))


class FeatureSet(Dataset):
    """Cached features as a data set of "clips" with their labels and class names: features (N, width) give
    (width, 1, 1, 1) items, (N, V, width) give (V, width, 1, 1, 1) items, V views that ``evaluate`` averages."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, classes: list[str] | None = None):
        self.features, self.labels, self.classes = features, labels, classes

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"video": self.features[index][..., None, None, None], "label": int(self.labels[index]), "index": index}


def train_feature_probe(cfg: Config, train_views: Dataset, test_views: Dataset, batch_size: int = 16) -> dict[str, Any]:
    """Train the linear probe ``cfg`` (``finetune='linear_probe'``) on the features of ``train_views`` (a
    one-view data set: each training clip as the model sees it) and test it on ``test_views`` (every test view,
    probabilities averaged as ``evaluate`` does); returns ``train``'s summary. ``batch_size``: clips per
    feature forward."""
    from zeroi2v.distributed import seed_everything
    from zeroi2v.fewshot.features import features_of
    from zeroi2v.model import create_model
    from zeroi2v.train import train
    if cfg.model.finetune != "linear_probe":
        raise ValueError(f"a feature probe trains the head only: model.finetune must be 'linear_probe', "
                         f"got {cfg.model.finetune!r}")
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, flip=0.0, flip_label_map=None))
    seed_everything(cfg.train.seed, cfg.train.deterministic)  # as train() does before it builds the model
    model = create_model(cfg.model)
    classes = getattr(train_views, "classes", None)
    sets = [FeatureSet(*features_of(model, views, batch_size, keep_views=test), classes)
            for views, test in ((train_views, False), (test_views, True))]
    return train(cfg, model=FeatureHead(model), train_set=sets[0], test_set=sets[1], force=True)
