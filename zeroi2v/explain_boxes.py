"""How well a CAM points at the object: mass inside the object's box against chance (issue 11, item 8).

``box_clips`` gives test views with object boxes that follow the resize and crop; ``localisation``
averages the mass inside the box per head group over them. The quickstart's report and
``benchmarks/cam_localisation.py`` measure the same way.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

def _box_masks(boxes: np.ndarray, hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Pixel masks (T, H, W) of boxes (T, 4) = (x0, y0, x1, y1); a pixel is in when its centre is.

    Rows with a NaN (object absent in that frame) are marked invalid.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be (T, 4) as (x0, y0, x1, y1), got {boxes.shape}")
    h, w = hw
    ys = np.arange(h)[None, :, None] + 0.5
    xs = np.arange(w)[None, None, :] + 0.5
    x0, y0, x1, y1 = (boxes[:, i][:, None, None] for i in range(4))
    with np.errstate(invalid="ignore"):
        masks = (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)
    valid = ~np.isnan(boxes).any(axis=1)
    return masks, valid


def mass_in_boxes(cam: np.ndarray, boxes: np.ndarray) -> float:
    """Fraction of CAM mass inside the object's box, averaged over frames.

    ``cam`` is (T, H, W) (non-negative); ``boxes`` is (T, 4) as (x0, y0, x1, y1) in the CAM's pixel
    coordinates (x1, y1 exclusive; NaN rows = no object, skipped). Frames whose CAM is zero are
    skipped. Compare with :func:`chance_in_boxes` (a uniform map scores exactly that).
    Returns NaN when no frame counts.
    """
    cam = np.asarray(cam, dtype=np.float64)
    if cam.ndim != 3 or len(cam) != len(boxes):
        raise ValueError(f"cam must be (T, H, W) with one box per frame; got cam {cam.shape}, {len(boxes)} boxes")
    masks, valid = _box_masks(boxes, cam.shape[1:])
    fractions = []
    for t in range(len(cam)):
        total = cam[t].sum()
        if valid[t] and total > 0:
            fractions.append(float(cam[t][masks[t]].sum() / total))
    return float(np.mean(fractions)) if fractions else float("nan")


def chance_in_boxes(boxes: np.ndarray, hw: tuple[int, int]) -> float:
    """Chance level of :func:`mass_in_boxes`: box area / frame area, averaged over frames."""
    masks, valid = _box_masks(boxes, hw)
    if not valid.any():
        return float("nan")
    return float(masks[valid].reshape(int(valid.sum()), -1).mean(axis=1).mean())


def transform_boxes(boxes: np.ndarray, src_hw: tuple[int, int], short_side: int, crop: int) -> np.ndarray:
    """Map boxes from source-frame pixels through resize(short side) + centre crop to the model input."""
    boxes = np.asarray(boxes, dtype=np.float64).copy()
    h, w = src_hw
    if h <= w:  # torchvision's resize of the short side: the long side is truncated, not rounded
        nh, nw = short_side, int(short_side * w / h)
    else:
        nh, nw = int(short_side * h / w), short_side
    top, left = (nh - crop) // 2, (nw - crop) // 2
    boxes[:, [0, 2]] = boxes[:, [0, 2]] * (nw / w) - left
    boxes[:, [1, 3]] = boxes[:, [1, 3]] * (nh / h) - top
    return np.clip(boxes, 0, crop)


def box_clips(model, video_dir: str | Path, items: Iterable[dict]) -> list[tuple[torch.Tensor, np.ndarray]]:
    """The model's view of each clip of a synthetic set and the object's boxes in that view.

    ``items`` are entries of ``zeroi2v.data.synthetic``'s ``*_meta.json`` (``path`` relative to
    ``video_dir``, ``boxes`` (frames, 4) in source pixels). One uniform clip per video, through the one
    input path (``model_views``); boxes follow the resize and centre crop. Returns [(view (C, T, H, W),
    boxes (T, 4))].
    """
    from zeroi2v.data.decode import open_video
    from zeroi2v.data.views import model_views
    size = model.image_size
    out = []
    for item in items:
        source = open_video(Path(video_dir) / item["path"], short_side=size)
        views, indices = model_views(model, source)
        boxes = np.asarray(item["boxes"], dtype=np.float64)[indices[0]]
        stored = getattr(source, "stored_size", (size, size))
        if tuple(stored) != (size, size):
            boxes = transform_boxes(boxes, stored, short_side=size, crop=size)
        out.append((views[0], boxes))
    return out


def localisation(model, clips: Sequence[tuple[torch.Tensor, np.ndarray]], method: str | None = None,
                 block: int = -1, groups: Iterable[str] = ("spatial", "temporal")) -> dict[str, Any]:
    """Mean CAM mass inside the object's box per head group over ``clips`` (from :func:`box_clips`).

    Each clip is explained for the model's top prediction on it (as the demo does). Returns
    ``{"<group>_mass_in_box": mean or None, "chance": mean box area fraction, "clips": {group: clips
    counted}, "method", "block"}``; a clip whose map is zero everywhere (no positive evidence) has no
    mass to place and is skipped (NaN), an empty group gives None.
    """
    from zeroi2v.explain import DEFAULT_METHOD, _block_index, gradcam  # explain re-exports this module
    method = method or DEFAULT_METHOD
    groups = tuple(groups)
    masses: dict[str, list[float]] = {g: [] for g in groups}
    chances = []
    for view, boxes in clips:
        r = gradcam(model, view, block=block, groups=groups, method=method)
        for g in groups:
            masses[g].append(float("nan") if r[g] is None else mass_in_boxes(r[g], boxes))
        chances.append(chance_in_boxes(boxes, tuple(view.shape[-2:])))
    out: dict[str, Any] = {}
    for g in groups:
        m = np.asarray(masses[g], dtype=np.float64)
        out[f"{g}_mass_in_box"] = round(float(np.nanmean(m)), 4) if np.isfinite(m).any() else None
    out.update(chance=round(float(np.mean(chances)), 4) if chances else None,
               clips={g: int(np.isfinite(masses[g]).sum()) for g in groups}, method=method,
               block=_block_index(model, block))
    return out
