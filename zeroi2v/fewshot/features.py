"""The frozen backbone's frame features, computed once per (backbone, views, list) and cached.

The linear probe and zero-shot read a clip as the frozen image tower sees it: each frame's pooled class
token after the final norm (``ln_post``, the width-dimensional token the head reads, eq. (1) of CLIP's
image encoder before its projection), averaged over the frames: the paper's head on a model with no
adapters, no temporal operator and a zero temporal embedding. Those features do not depend on the fold or
the method, so they are computed once and the methods take seconds.

A cache file is ``<cache>/<key>.safetensors`` (features (N, width), labels (N,)); its key hashes what the
features depend on: the backbone and its weights, the frames and the views, and the list file's bytes.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch

from zeroi2v.config import Config


def feature_key(cfg: Config, list_file: str | Path, video_root: str | Path) -> str:
    """What the features of ``list_file`` depend on, hashed: backbone, weights, frames, views, the list."""
    from zeroi2v.rows import config_hash
    m, d, t = cfg.model, cfg.data, cfg.test
    weights = m.pretrained if m.pretrained and not Path(str(m.pretrained)).is_file() else _file_stamp(m.pretrained)
    backbone = m.backbone
    if backbone.startswith("local-dir:"):
        backbone = f"{backbone}@{_folder_stamp(backbone[len('local-dir:'):])}"
    return config_hash({"backbone": backbone, "weights": weights, "frames": m.num_frames, "sampler": d.sampler,
                        "interval": d.interval, "size": d.size, "short_side": t.short_side, "mean": list(m.mean),
                        "std": list(m.std), "list": hashlib.sha256(Path(list_file).read_bytes()).hexdigest(),
                        "root": str(Path(video_root).resolve())})


def _file_stamp(path: Any) -> str | None:
    if not path:
        return None
    st = Path(str(path)).stat()
    return f"{Path(str(path)).resolve()}:{st.st_size}:{st.st_mtime_ns}"


def _folder_stamp(folder: str) -> str:
    return ",".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in sorted(Path(folder).glob("*"))
                    if p.is_file())


def frame_features(cfg: Config, list_file: str | Path, video_root: str | Path, classes: list[str],
                   cache_dir: str | Path, device: str | torch.device = "cpu", log=print
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (N, width), labels (N,)) of the videos of ``list_file``: frame-averaged ``ln_post`` class
    tokens of the frozen backbone of ``cfg.model``, one centre clip per video (``cfg.test`` views with 1
    clip and 1 crop); read from the cache when there, else computed and cached (atomically)."""
    from safetensors.torch import load_file, save_file
    path = Path(cache_dir) / f"{feature_key(cfg, list_file, video_root)}.safetensors"
    if path.is_file():
        data = load_file(str(path))
        return data["features"], data["labels"]
    feats, labels = _compute(cfg, list_file, video_root, classes, device)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # several row workers may compute the same list
    try:
        save_file({"features": feats.contiguous(), "labels": labels}, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    log(f"[fewshot] cached the frame features of {list_file} ({len(labels)} videos): {path.name}")
    return feats, labels


def _compute(cfg: Config, list_file: str | Path, video_root: str | Path, classes: list[str],
             device: str | torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    from zeroi2v.data.build import test_transform
    from zeroi2v.data.dataset import VideoDataset
    from zeroi2v.data.formats import read_annotation
    from zeroi2v.data.views import make_sampler
    model = probe_model(cfg, len(classes)).to(device)
    one_view = Config(model=cfg.model, data=cfg.data, optim=cfg.optim, train=cfg.train,
                      test=type(cfg.test)(**{**cfg.test.__dict__, "clips": 1, "crops": 1}))
    data = VideoDataset(read_annotation("mmaction", list_file, classes=classes), video_root,
                        sampler=make_sampler(cfg.data.sampler, cfg.num_frames, cfg.data.interval, 1),
                        transform=test_transform(one_view, cfg.data.size or model.image_size), train=False,
                        seed=cfg.train.seed, on_missing=cfg.data.on_missing)
    return features_of(model, data, cfg.test.batch_size, device, cfg.data.workers)


def probe_model(cfg: Config, num_classes: int):
    """The model whose features a probe reads: ``cfg.model``'s backbone with no adapters, no temporal operator
    and no temporal embedding, only the head trainable (``finetune='linear_probe'``)."""
    from zeroi2v.model import create_model
    return create_model(cfg.model, adapter=None, temporal={"kind": "stdha", "offsets": None},
                        temporal_embedding=False, finetune="linear_probe", num_classes=num_classes)


@torch.no_grad()
def features_of(model, data, batch_size: int, device: str | torch.device = "cpu", workers: int = 0,
                keep_views: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (N, width), labels (N,)) of a data set of clips (items (V, C, T, H, W) or (C, T, H, W)):
    ``model.forward_features`` averaged over the frames (what its head reads), then over the views, or
    (N, V, width) with ``keep_views``; in item order."""
    was_training = model.training
    model.eval()
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, num_workers=workers)
    feats, labels = [], []
    try:
        for batch in loader:
            video = batch["video"]
            video = video[:, None] if video.ndim == 5 else video  # (B, V, C, T, H, W)
            b, v = video.shape[:2]
            f = model.forward_features(video.flatten(0, 1).to(device)).mean(dim=1)  # (B*V, width): frame average
            f = f.view(b, v, -1).float().cpu()
            feats.append(f if keep_views else f.mean(dim=1))
            labels.append(batch["label"])
    finally:
        model.train(was_training)
    return torch.cat(feats), torch.cat(labels).long()
