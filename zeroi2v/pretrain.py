"""Pre-train a small open_clip image ViT on synthetic stills: our offline stand-in for CLIP.

No CLIP weights can be downloaded offline, so the quickstart makes its own image model. It must
learn *what* is in a still (shape, colour) and *where* (position, size, orientation bins): an image
model that knows only *what* leaves video adapters little to build on (see the quickstart notes).
The result is saved in open_clip's directory layout and loaded back through the same
``local-dir:`` path a downloaded CLIP takes.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from zeroi2v.backbones import build_visual, get_model_config, save_local_dir
from zeroi2v.model import CLIP_MEAN, CLIP_STD


def normalize_images(images_uint8: torch.Tensor, mean=CLIP_MEAN, std=CLIP_STD) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float, CLIP-normalised (0-255 scale statistics)."""
    x = images_uint8.permute(0, 3, 1, 2).float()
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


class MultiTaskImageModel(nn.Module):
    """The visual tower with one linear head per label group, reading the CLIP image embedding."""

    def __init__(self, visual: nn.Module, groups: dict[str, int]):
        super().__init__()
        self.visual = visual
        dim = visual.proj.shape[1] if visual.proj is not None else visual.class_embedding.shape[-1]
        self.heads = nn.ModuleDict({name: nn.Linear(dim, n) for name, n in groups.items()})

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.visual(images)
        return {name: head(feats) for name, head in self.heads.items()}


def pretrain_image_model(images: np.ndarray, labels: dict[str, np.ndarray], out_dir: str | Path,
                         backbone: str = "zeroi2v-tiny", epochs: int = 12, batch_size: int = 128,
                         lr: float = 2e-3, weight_decay: float = 0.05, val_fraction: float = 0.1,
                         seed: int = 0, log=print) -> dict:
    """Train ``backbone`` from scratch on (images, labels per group); save it as an open_clip dir.

    A label of -1 means "not defined for this image" (a circle has no orientation) and is ignored.

    Returns a summary with the ``local-dir:`` name, per-group validation accuracy and seconds.
    """
    start = time.perf_counter()
    torch.manual_seed(seed)
    model_cfg = get_model_config(backbone)
    groups = {name: int(arr.max()) + 1 for name, arr in labels.items()}
    model = MultiTaskImageModel(build_visual(model_cfg), groups)
    x = normalize_images(torch.from_numpy(images))
    y = {name: torch.from_numpy(np.asarray(arr)).long() for name, arr in labels.items()}
    n_val = max(1, int(len(x) * val_fraction))
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * math.ceil(len(train_idx) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(seed + 1)
    for epoch in range(epochs):
        model.train()
        order = train_idx[torch.randperm(len(train_idx), generator=gen)]
        total = 0.0
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            out = model(x[idx])
            loss = sum(F.cross_entropy(out[name], y[name][idx], ignore_index=-1) for name in groups)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        acc = _accuracy(model, x[val_idx], {k: v[val_idx] for k, v in y.items()})
        log(f"  image pre-training epoch {epoch + 1}/{epochs}: loss {total / len(order):.3f}, "
            + ", ".join(f"{k} {v:.2f}" for k, v in acc.items()))
    name = save_local_dir(model.visual, model_cfg, out_dir)
    summary = {"backbone": name, "val_accuracy": acc, "seconds": time.perf_counter() - start,
               "images": len(x), "groups": groups}
    (Path(out_dir) / "pretrain.json").write_text(json.dumps(summary, indent=2))
    return summary


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: dict[str, torch.Tensor]) -> dict[str, float]:
    model.eval()
    out = model(x)
    return {name: (out[name].argmax(1) == y[name])[y[name] >= 0].float().mean().item() for name in y}
