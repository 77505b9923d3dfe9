"""Efficiency, measured: parameters, FLOPs and latency of the plain image ViT against ZeroI2V.

FLOPs follow the paper (fvcore convention: one multiply-add = one FLOP), so the totals of
``torch.utils.flop_counter`` (which counts two) are halved. Latencies are medians of interleaved
runs in one process and are reported as ratios to the plain ViT: noisy machines give honest ratios,
not honest absolute numbers.
"""
from __future__ import annotations

import contextlib
import copy
import statistics
import time
from typing import Callable

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode, register_flop_formula, sdpa_flop_count

from zeroi2v.model import ZeroI2V

_aten = torch.ops.aten
if hasattr(_aten, "_scaled_dot_product_flash_attention_for_cpu"):
    # torch counts the CUDA SDPA kernels but not the CPU one; same arithmetic, same formula.
    try:
        @register_flop_formula(_aten._scaled_dot_product_flash_attention_for_cpu)
        def _sdpa_cpu_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
            return sdpa_flop_count(query_shape, key_shape, value_shape)
    except RuntimeError:  # already registered (a newer torch, or a re-import)
        pass


class PlainViT(nn.Module):
    """The image model as it would run on video without ZeroI2V: open_clip's own visual forward on
    every frame, mean of class features, the same linear head. The reference for zero extra cost."""

    def __init__(self, model: ZeroI2V):
        super().__init__()
        from zeroi2v.backbones import build_visual
        self.visual = build_visual(model.backbone_cfg)
        self.visual.proj = None
        plain_keys = self.visual.state_dict().keys()
        state = {k[len("visual."):]: v for k, v in model.state_dict().items() if k.startswith("visual.")}
        self.visual.load_state_dict({k: state[k] for k in plain_keys})
        self.head = copy.deepcopy(model.head)
        self.num_frames = model.num_frames
        self.eval()

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = video.shape
        feats = self.visual(video.transpose(1, 2).reshape(b * t, c, h, w)).view(b, t, -1)
        return self.head(feats.mean(dim=1))


def count_params(module: nn.Module, trainable: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)


def backbone_params(model: ZeroI2V) -> int:
    """Parameters of the image backbone alone (no adapters, temporal embedding or head)."""
    return sum(p.numel() for n, p in model.visual.named_parameters() if ".adapters." not in n)


@contextlib.contextmanager
def _visible_attention():
    """Turn off nn.MultiheadAttention's fused fast path, which hides its projections from counters."""
    enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(enabled)


@torch.no_grad()
def count_flops(model: nn.Module, video: torch.Tensor) -> int:
    """Multiply-adds of one forward pass (the paper's 'FLOPs')."""
    with _visible_attention(), FlopCounterMode(display=False) as counter:
        model(video)
    return counter.get_total_flops() // 2


@torch.no_grad()
def measure_latency(models: dict[str, Callable], video: torch.Tensor, repeats: int = 10,
                    warmup: int = 2) -> dict[str, float]:
    """Median seconds per forward of each model, runs interleaved so drift hits all alike."""
    sync = torch.cuda.synchronize if video.is_cuda else (lambda: None)
    for _ in range(warmup):
        for fn in models.values():
            fn(video)
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(repeats):
        for name, fn in models.items():
            sync()
            start = time.perf_counter()
            fn(video)
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def zero_cost_report(model: ZeroI2V, merged: ZeroI2V, video: torch.Tensor, views: int = 1,
                     repeats: int = 10, latency: bool = True) -> dict:
    """Params, GFLOPs (× views) and latency of plain ViT, unmerged and merged ZeroI2V on one input."""
    plain = PlainViT(merged).to(video.device, video.dtype)
    model, merged = model.eval(), merged.eval()
    report = {
        "params": {"plain": backbone_params(merged), "merged": count_params(merged), "unmerged": count_params(model),
                   "temporal_embedding": merged.temporal_embedding.numel() if merged.temporal_embedding is not None else 0,
                   "classifier": count_params(merged.head)},
        "gflops": {name: count_flops(m, video) * views / 1e9 for name, m in
                   (("plain", plain), ("unmerged", model), ("merged", merged))},
    }
    if latency:
        lat = measure_latency({"plain": plain, "unmerged": model, "merged": merged}, video, repeats=repeats)
        report["latency_ms"] = {k: v * 1e3 for k, v in lat.items()}
        report["latency_ratio"] = {k: v / lat["plain"] for k, v in lat.items()}
    return report
