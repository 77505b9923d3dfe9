"""Drawing Grad-CAM maps (``zeroi2v.explain``): heat-map overlays, frame strips, model input back to pixels."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def _resize(img: np.ndarray, hw: tuple[int, int], smooth: bool = True) -> np.ndarray:
    import cv2
    if img.shape[:2] == tuple(hw):
        return img
    return cv2.resize(img, (int(hw[1]), int(hw[0])), interpolation=cv2.INTER_LINEAR if smooth else cv2.INTER_NEAREST)


def overlay(frames: np.ndarray, cam: np.ndarray, image_weight: float = 0.5) -> np.ndarray:
    """Heat-map ``cam`` (T, h, w) in [0, 1] over ``frames`` uint8 (T, H, W, 3) -> uint8 (T, H, W, 3).

    The map is resized (bilinear) to the frames when sizes differ; colours are OpenCV's JET, blended
    by ``pytorch_grad_cam.utils.image.show_cam_on_image``.
    """
    from pytorch_grad_cam.utils.image import show_cam_on_image
    frames = np.asarray(frames)
    cam = np.asarray(cam, dtype=np.float32)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames.shape}")
    if cam.ndim != 3 or cam.shape[0] != frames.shape[0]:
        raise ValueError(f"cam must be (T, h, w) with T={frames.shape[0]}, got {cam.shape}")
    hw = frames.shape[1:3]
    out = np.empty_like(frames, dtype=np.uint8)
    for t in range(frames.shape[0]):
        mask = np.clip(_resize(cam[t], hw), 0.0, 1.0)
        out[t] = show_cam_on_image(frames[t].astype(np.float32) / 255.0, mask, use_rgb=True,
                                   image_weight=image_weight)
    return out


def strip(frames: np.ndarray, cam: np.ndarray | None = None, height: int | None = None, gap: int = 2,
          image_weight: float = 0.5) -> np.ndarray:
    """T frames side by side as one uint8 image (H, T*W + (T-1)*gap, 3), optionally with a CAM overlay.

    ``height`` scales every frame to that height first (bilinear), so a 32-pixel model input
    displays at a readable size; the CAM is resized to the scaled frames before blending.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames.shape}")
    t, h, w, _ = frames.shape
    if height is not None and height != h:
        w = max(1, round(w * height / h))
        h = int(height)
        frames = np.stack([_resize(f, (h, w)) for f in frames])
    if cam is not None:
        frames = overlay(frames, cam, image_weight=image_weight)
    canvas = np.full((h, t * w + (t - 1) * gap, 3), 255, dtype=np.uint8)
    for i, f in enumerate(frames):
        canvas[:, i * (w + gap): i * (w + gap) + w] = f
    return canvas


def to_uint8_frames(video: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Normalised clip (C, T, H, W) (or (1, C, T, H, W)) back to uint8 frames (T, H, W, 3)."""
    if video.ndim == 5:
        video = video[0]
    m = torch.as_tensor(mean, dtype=torch.float32).view(-1, 1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32).view(-1, 1, 1, 1)
    x = video.detach().float().cpu() * s + m
    return x.clamp(0, 255).round().to(torch.uint8).permute(1, 2, 3, 0).numpy()
