"""Grad-CAM of spatial vs temporal heads (paper Fig. 3 / appendix 6.3), overlays, and a localisation score.

``gradcam(model, clip)`` explains one class of one clip with a ``pytorch_grad_cam`` method three times,
once per head group of one block: the *spatial* heads (Δt = 0), the *temporal* heads (Δt ≠ 0) and
*all* heads. The CAM math (weights from the gradients, ReLU, min-max scaling) is the library's; ours
are the choice of hooked tensor, its reshape and the final upsampling.

Which method, and why (``method=``, ``CAM_METHODS``)
----------------------------------------------------
The default is ``"gradcam-elementwise"`` (ReLU of gradient x activation per token and channel, summed
over channels), not classic Grad-CAM. The pooled feature is the class token after the last block, so
at the last block (the demo's default) the gradient reaching a patch's value is the class token's
attention weight on that patch times one vector per head: it says *which tokens the class token
read*. Grad-CAM averages the gradient over every token and frame into one weight per channel, which
throws that attention weight away, and then scores every token by how its value aligns with the
average, read or not: on the quickstart model (300 test clips) its maps put 0.18 (spatial) / 0.17
(temporal) of their mass in the moving object's box against 0.096 by chance. The element-wise methods
keep the per-token weight (at the last block the map is each token's positive contribution to the
class token through the group's heads) and measured best at every block: 0.27 / 0.21 at the last
block (2.8x / 2.2x chance), 0.36 / 0.45 at the first. ``benchmarks/cam_localisation.py`` has the table for every
method and block and the bound a 4x4-token map can reach.

Which tensor is hooked, and why
-------------------------------
The target layer is the block's ``v_probe``: an identity on the per-head values
``V`` of shape (B*T, heads, 1 + h*w, head_dim) *before* STDHA's time shift. Our
``reshape_transform`` (:class:`HeadsToVolume`) keeps only the group's heads, drops the class token
and returns a video volume (B, heads_in_group * head_dim, T, h, w), so channels separate by head
and Grad-CAM treats the clip as one 3-D "image": one channel weight per value channel for the whole
clip, one normalisation across all frames (a frame with less evidence looks dimmer than the others).

For a spatial head the value at (frame t, patch p) is read by the queries of frame t. For a temporal
head with offset Δt, the value at frame t' is read by the queries of frame t' − Δt (STDHA: head i of
frame t attends to the K/V of frame t + Δt_i). Hooking before the shift therefore puts the map *in
the frame the content comes from*: the temporal-head map at frame t' shows where in frame t' the
temporal heads take content from. The gradient there is non-zero (the shift is a gather; its
backward scatters the gradient to the source frame), so these maps carry signal whenever the block
has temporal heads (a map that is zero everywhere means "no positive evidence for this class" and
comes with a message). After the shift the same tensor would be indexed by the reading frame, and a
boundary frame read twice (``boundary='self'``) would mix two frames' content in one map.

A block whose every Δt is 0 has no temporal group: it is reported as ``None`` with a message, never
as a blank map (likewise the spatial group of a block whose every head is temporal).

The library resizes a 3-D CAM with ``scipy.ndimage.zoom`` (cubic, corner-aligned: on a 4x4 token grid
the border patches' centres land up to half a patch off). We ask it for the CAM at the token grid
(:class:`VideoGradCAM`) and upsample each frame bilinearly with half-pixel alignment ourselves, so a
patch's value stays centred on that patch; the token-grid maps are returned too.

Merged and unmerged models compute the same function, so they give the same maps (up to float
rounding). Grad-CAM needs a gradient, not trainable weights: during the call every parameter is
frozen and the input carries the gradient instead, so no ``.grad`` of the model is touched; the
model's train/eval mode and ``requires_grad`` flags are restored afterwards.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from zeroi2v.explain_draw import overlay, strip, to_uint8_frames  # noqa: F401  (re-exported)

GROUPS = ("spatial", "temporal", "all")
GROUP_TITLES = {"spatial": "Spatial heads", "temporal": "Temporal heads", "all": "All heads"}


# --------------------------------------------------------------------------------------------- CAM
class HeadsToVolume:
    """``reshape_transform`` for ``v_probe``: (B*T, heads, 1+h*w, d) -> (B, len(heads)*d, T, h, w).

    Keeps the listed heads (channels ordered head by head), drops the class token (token 0) and
    unfolds the frames from the batch into a time axis.
    """

    def __init__(self, heads: Sequence[int], num_frames: int, grid: tuple[int, int]):
        if not heads:
            raise ValueError("a head group needs at least one head")
        self.heads = list(heads)
        self.num_frames = int(num_frames)
        self.grid = (int(grid[0]), int(grid[1]))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        bt, _, n, d = x.shape
        h, w = self.grid
        if n != 1 + h * w:
            raise ValueError(f"expected 1 + {h}x{w} tokens, got {n}")
        if bt % self.num_frames:
            raise ValueError(f"{bt} frames is not a multiple of num_frames={self.num_frames}")
        g, t = len(self.heads), self.num_frames
        x = x[:, self.heads, 1:, :]                                   # (B*T, g, h*w, d)
        x = x.reshape(bt // t, t, g, h, w, d).permute(0, 2, 5, 1, 3, 4)  # (B, g, d, T, h, w)
        return x.reshape(bt // t, g * d, t, h, w)


CAM_METHODS = {  # name -> pytorch_grad_cam class; all share BaseCAM (hooks, ReLU, min-max scaling)
    "gradcam": "GradCAM",                     # channel weight = mean gradient over the clip
    "gradcam++": "GradCAMPlusPlus",           # channel weight from 2nd/3rd-order gradient terms
    "xgradcam": "XGradCAM",                   # channel weight = activation-weighted mean gradient
    "layercam": "LayerCAM",                   # per token: ReLU(gradient) x activation
    "hirescam": "HiResCAM",                   # per token: gradient x activation (signed, then ReLU)
    "gradcam-elementwise": "GradCAMElementWise",  # per token: ReLU(gradient x activation)
}
DEFAULT_METHOD = "gradcam-elementwise"  # measured best: see the module docstring


def _video_cam_class(method: str = DEFAULT_METHOD):
    """The ``pytorch_grad_cam`` class of ``method``, answering maps at the token grid (B, T, h, w)."""
    if method not in CAM_METHODS:
        raise ValueError(f"unknown CAM method {method!r}; methods: {sorted(CAM_METHODS)}")
    import pytorch_grad_cam
    base = getattr(pytorch_grad_cam, CAM_METHODS[method])

    class VideoCAM(base):
        """``base`` on a (B, C, T, H, W) clip that returns maps at the token grid (B, T, h, w).

        Everything but the output size is the library's (weights, ReLU, scaling).
        """

        def __init__(self, model, target_layers, reshape_transform, grid: tuple[int, int]):
            super().__init__(model, target_layers, reshape_transform)
            self.grid = grid

        def get_target_width_height(self, input_tensor):
            # the library's 3-D order is (W, H, T), reversed before resizing: ask for the grid itself
            return self.grid[1], self.grid[0], input_tensor.size(2)

    VideoCAM.__name__ = VideoCAM.__qualname__ = f"Video{base.__name__}"
    return VideoCAM


def upsample(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(T, h, w) token-grid maps -> (T, H, W), bilinear with half-pixel centres (stays in [0, 1])."""
    x = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32))[:, None]
    out = torch.nn.functional.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
    return out[:, 0].numpy()


def head_groups(model, block: int = -1) -> dict[str, list[int]]:
    """Head indices of each group of block ``block``: spatial (Δt = 0), temporal (Δt ≠ 0), all."""
    blk = model.blocks[_block_index(model, block)]
    offsets = blk.temporal.head_offsets or (0,) * blk.num_heads
    return {"spatial": [i for i, o in enumerate(offsets) if o == 0],
            "temporal": [i for i, o in enumerate(offsets) if o != 0],
            "all": list(range(blk.num_heads))}


def _block_index(model, block: int) -> int:
    n = len(model.blocks)
    if not -n <= int(block) < n:
        raise IndexError(f"block {block} out of range: the model has {n} blocks (0..{n - 1}, or -1 for the last)")
    return int(block) % n


def _grid(model) -> tuple[int, int]:
    return model.family.grid(model.visual)


@contextlib.contextmanager
def _frozen(model):
    """Freeze every parameter (and eval mode) for the duration; restore flags and mode after."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    was_training = model.training
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        model.eval()
        yield
    finally:
        for p, f in flags:
            p.requires_grad_(f)
        model.train(was_training)


def _group_cam(cam_class, model, blk, heads: list[int], video: torch.Tensor, target_class: int | None):
    """``pytorch_grad_cam`` on one head group's values of ``blk``: token-grid maps and the clip's logits."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    grid = _grid(model)
    cam = cam_class(model, [blk.v_probe], HeadsToVolume(heads, model.num_frames, grid), grid)
    try:
        targets = None if target_class is None else [ClassifierOutputTarget(int(target_class))]
        maps = cam(input_tensor=video.clone().requires_grad_(True), targets=targets)
        return maps, cam.outputs.detach().float().cpu()[0]
    finally:
        cam.activations_and_grads.release()


def gradcam(model, video: torch.Tensor, target_class: int | None = None, block: int = -1,
            groups: Iterable[str] = GROUPS, method: str = DEFAULT_METHOD) -> dict[str, Any]:
    """Grad-CAM of one clip for the spatial, temporal and all heads of one block.

    Args:
        model: a ``ZeroI2V`` (with adapters or merged).
        video: one normalised clip, (1, C, T, H, W) or (C, T, H, W).
        target_class: class to explain; None = the model's top prediction.
        block: which block (negative counts from the end; -1 = last, as in the paper's Fig. 3).
        groups: subset of ``("spatial", "temporal", "all")`` to compute.
        method: a name in ``CAM_METHODS`` (default ``DEFAULT_METHOD``, the best measured by
            ``benchmarks/cam_localisation.py``).

    Returns a dict:
        ``"spatial"``, ``"temporal"``, ``"all"``: float32 (T, H, W) maps in [0, 1] at the input
        resolution, or None for an empty group (see ``messages``);
        ``"target_class"`` (int), ``"class_name"`` (str or None), ``"probability"`` (softmax prob of
        the explained class), ``"probs"`` (all classes), ``"block"`` (non-negative index),
        ``"offsets"`` (Δt per head of that block), ``"heads"`` (head indices per group),
        ``"messages"`` (group -> why it is empty or flat), ``"grid"`` (group -> the same maps at the
        token grid, (T, h, w), before upsampling).
    """
    if model.family.gradcam_limit:  # e.g. Swin: no class token, windows instead of one token grid
        from zeroi2v.backbones import display_name
        raise ValueError(f"Grad-CAM of head groups cannot run on {display_name(model.cfg.backbone)}: "
                         f"{model.family.gradcam_limit}")
    cam_class = _video_cam_class(method)

    groups = tuple(groups)
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        raise ValueError(f"unknown head group(s) {unknown}; groups are {GROUPS}")
    if video.ndim == 4:
        video = video.unsqueeze(0)
    if video.ndim != 5 or video.shape[0] != 1:
        raise ValueError(f"expected one clip (1, C, T, H, W) or (C, T, H, W), got shape {tuple(video.shape)}")
    idx = _block_index(model, block)
    blk = model.blocks[idx]
    heads = head_groups(model, idx)
    offsets = blk.temporal.head_offsets or (0,) * blk.num_heads
    device = next(model.parameters()).device
    video = video.detach().to(device=device, dtype=next(model.parameters()).dtype)
    num_classes = model.head.out_features
    if target_class is not None and not 0 <= int(target_class) < num_classes:
        raise ValueError(f"target_class {target_class} out of range (model has {num_classes} classes)")

    out: dict[str, Any] = {g: None for g in GROUPS}
    messages: dict[str, str] = {}
    grid_maps: dict[str, np.ndarray | None] = {g: None for g in GROUPS}
    probs = None
    with _frozen(model):
        for g in groups:
            if not heads[g]:
                messages[g] = (f"block {idx} has no temporal heads (every Δt = 0): nothing to show"
                               if g == "temporal" else
                               f"block {idx} has no spatial heads (every head has Δt ≠ 0): nothing to show")
                continue
            maps, logits = _group_cam(cam_class, model, blk, heads[g], video, target_class)
            if probs is None:
                probs = torch.softmax(logits, dim=-1).numpy()
                target_class = int(logits.argmax()) if target_class is None else target_class
            m = np.clip(np.nan_to_num(np.asarray(maps[0], dtype=np.float32)), 0.0, 1.0)
            grid_maps[g] = m
            m = np.clip(upsample(m, video.shape[-2:]), 0.0, 1.0)
            out[g] = m
            if not m.any():
                messages[g] = f"Grad-CAM of the {g} heads is zero everywhere (no positive evidence for this class)"
    if probs is None:  # every requested group was empty: still say what the model predicts
        with torch.no_grad(), _frozen(model):
            logits = model(video).float().cpu()[0]
        probs = torch.softmax(logits, dim=-1).numpy()
        target_class = int(logits.argmax()) if target_class is None else int(target_class)
    names = getattr(model.cfg, "class_names", None)
    out.update({
        "target_class": int(target_class),
        "class_name": names[int(target_class)] if names and int(target_class) < len(names) else None,
        "probability": float(probs[int(target_class)]),
        "probs": probs, "block": idx, "offsets": offsets, "heads": heads, "messages": messages,
        "grid": grid_maps, "method": method,
    })
    return out


# ------------------------------------------------------------------------------------ whole videos
def explain_video(model, source, num_clips: int = 1, target_class: int | None = None, block: int = -1,
                  display_height: int | None = 96, short_side: int | None = None,
                  method: str = DEFAULT_METHOD) -> dict[str, Any]:
    """Classify a video (mean softmax over ``num_clips`` views) and Grad-CAM its middle view.

    ``source`` is a path (decoded straight to the model's size) or a ``VideoSource``. The explained
    class defaults to the top-1 of the view-averaged prediction. Returns ``gradcam``'s dict plus
    ``"probs"`` (view-averaged),
    ``"view_probability"`` (the explained class on the CAM view), ``"frames"`` (uint8 (T, H, W, 3),
    the CAM view as the model saw it), ``"strips"`` (group -> uint8 image or None, plus
    ``"frames"``), ``"indices"``, ``"video"`` (num_frames, fps, path) and ``"timings"`` in seconds
    (decode: open + sample + decode + transform; inference: the forward pass over all views; cam:
    Grad-CAM of the three groups + drawing).
    """
    t0 = time.perf_counter()
    if isinstance(source, (str, Path)):
        from zeroi2v.data.decode import open_video
        source = open_video(source, short_side=short_side or model.image_size)
    from zeroi2v.data.views import model_views
    views, indices = model_views(model, source, clips=num_clips, short_side=short_side)
    decode = time.perf_counter() - t0
    result = explain_views(model, views, target_class=target_class, block=block, display_height=display_height,
                           method=method)
    result["timings"].update(decode=decode, total=decode + result["timings"]["total"])
    result.update(indices=indices, video={"num_frames": int(source.num_frames), "fps": float(source.fps),
                                          "path": str(source.path)})
    return result


def explain_views(model, views: torch.Tensor, target_class: int | None = None, block: int = -1,
                  display_height: int | None = 96, method: str = DEFAULT_METHOD) -> dict[str, Any]:
    """The model part of ``explain_video``, on views from ``zeroi2v.data.views.model_views`` (the demo decodes outside
    its model lock, then calls this under it). ``"timings"``: inference, cam and their total."""
    t1 = time.perf_counter()
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            probs = torch.softmax(model(views.to(device)).float(), dim=-1).mean(0).cpu().numpy()
    finally:
        model.train(was_training)
    t2 = time.perf_counter()
    target = int(probs.argmax()) if target_class is None else int(target_class)
    cam_view = views[len(views) // 2]
    result = gradcam(model, cam_view, target_class=target, block=block, method=method)
    frames = to_uint8_frames(cam_view, model.cfg.mean, model.cfg.std)
    strips = {"frames": strip(frames, height=display_height)}
    for g in GROUPS:
        strips[g] = None if result[g] is None else strip(frames, result[g], height=display_height)
    t3 = time.perf_counter()
    result.update({
        "view_probability": result["probability"], "probability": float(probs[target]), "probs": probs,
        "frames": frames, "strips": strips,
        "timings": {"inference": t2 - t1, "cam": t3 - t2, "total": t3 - t1},
    })
    return result


from zeroi2v.explain_boxes import (box_clips, chance_in_boxes, localisation, mass_in_boxes,  # noqa: E402,F401
                                   transform_boxes)  # re-exported: the box measures live beside the CAMs' users
