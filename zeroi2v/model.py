"""The ZeroI2V video model: an open_clip image ViT that reads clips.

Frames fold into the batch and run through the image ViT; three things make it a video model:
a zero-initialised temporal embedding (T × width, added to every token of frame t after the
positional embedding), STDHA inside every attention (``zeroi2v.stdha``), and linear adapters around
every projection (``zeroi2v.adapters``; they fold away with ``zeroi2v.merge``). The head is the
paper's: per-frame class token after ln_post, mean over frames, dropout, linear classifier.

The open_clip parameters keep their names (``visual.conv1.weight``, ``visual.transformer.resblocks.0.
attn.in_proj_weight`` ...), so a merged checkpoint is open_clip's visual state dict plus
``temporal_embedding`` and ``head``.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import PurePath
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from zeroi2v.adapters import build_adapter, placement_slots
from zeroi2v.backbones import LOCAL_DIR, build_visual, create_visual
from zeroi2v.data.transforms import CLIP_MEAN, CLIP_STD
from zeroi2v.stdha import STDHA, parse_offsets

FINETUNE_MODES = ("adapters", "full", "linear_probe")


@dataclass
class ModelConfig:
    """Everything that defines a video model, as plain data (YAML/JSON round-trips)."""

    backbone: str = "ViT-B-16"
    """open_clip model name, one of ours (``zeroi2v/model_configs``), or ``local-dir:/path``."""
    pretrained: str | None = None
    """open_clip tag ('openai', 'laion2b_s34b_b88k'...), a weights file, or None (random init)."""
    num_classes: int = 400
    num_frames: int = 8
    offsets: Any = "1x1,-1x1"
    """Δt multiset for every layer (string, preset name or list), or a list with one spec per layer."""
    boundary: str = "self"
    """STDHA at the clip ends: 'self' (keep own K/V, the authors' choice) or 'zero' (zero padding)."""
    adapter: str | None = "linear"
    """Adapter kind (see ``zeroi2v.adapters.ADAPTERS``) or None: no adapters (a merged model)."""
    adapter_placement: Any = "4"
    """'4' (before qkv, after out-proj, before fc1, after fc2), '6' (separate Q/K/V), '3', or slot names."""
    adapter_ratio: float = 0.25
    adapter_scale: float = 1.0
    adapter_dropout: float = 0.0
    temporal_embedding: bool = True
    head_dropout: float = 0.5
    finetune: str = "adapters"
    """What trains: 'adapters' (paper: adapters, temporal embedding, ln_post, head), 'full', 'linear_probe' (head)."""
    grad_checkpointing: bool = False
    """Recompute block activations in backward (less memory, ~30% slower steps)."""
    mean: tuple = CLIP_MEAN
    std: tuple = CLIP_STD
    class_names: list | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown model config key(s) {unknown}; known keys: {sorted(known)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d


def _probe(probe: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Call an identity probe only when something hooks it: a module call costs microseconds that
    show in small models (module-global hooks do not see the probes)."""
    return probe(x) if probe._forward_hooks or probe._forward_pre_hooks else x


class VideoBlock(nn.Module):
    """One ViT block reading a clip: open_clip's weights, a temporal operator, optional adapters.

    ``x = x + ls_1(A_out(attn(A_in(ln_1(x)))))`` and ``x = x + ls_2(M_out(mlp(M_in(ln_2(x)))))``,
    with STDHA between the K/V projections and the attention. ``q_probe``, ``k_probe`` and
    ``v_probe`` are identity modules on the per-head Q/K/V (B*T, heads, tokens, head_dim) *before*
    the time shift: forward hooks (Grad-CAM, analysis) read each head's own frame there.
    """

    def __init__(self, block: nn.Module, temporal: nn.Module, adapters: dict[str, nn.Module] | None = None):
        super().__init__()
        for name in ("ln_1", "attn", "ls_1", "ln_2", "mlp", "ls_2"):
            setattr(self, name, getattr(block, name))
        if getattr(block, "ln_attn", None) is not None and not isinstance(block.ln_attn, nn.Identity):
            raise NotImplementedError("blocks with an inner attention norm are not supported")
        self.num_heads = self.attn.num_heads
        self.temporal = temporal
        self.adapters = nn.ModuleDict(adapters or {})
        self.q_probe, self.k_probe, self.v_probe = nn.Identity(), nn.Identity(), nn.Identity()

    def _adapt(self, slot: str, x: torch.Tensor) -> torch.Tensor:
        return self.adapters[slot](x) if slot in self.adapters else x

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        bt, n, c = x.shape
        w, b = self.attn.in_proj_weight, self.attn.in_proj_bias
        if "q_in" in self.adapters or "k_in" in self.adapters or "v_in" in self.adapters:
            bias = b.chunk(3) if b is not None else (None,) * 3
            qkv = torch.cat([F.linear(self._adapt(s, x), wi, bi)
                             for s, wi, bi in zip(("q_in", "k_in", "v_in"), w.chunk(3), bias)], dim=-1)
        else:
            qkv = F.linear(self._adapt("attn_in", x), w, b)
        q, k, v = qkv.view(bt, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        q, k, v = self.temporal(_probe(self.q_probe, q), _probe(self.k_probe, k), _probe(self.v_probe, v))
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(bt, n, c)
        return self._adapt("attn_out", self.attn.out_proj(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls_1(self.attention(self.ln_1(x)))
        return x + self.ls_2(self._adapt("mlp_out", self.mlp(self._adapt("mlp_in", self.ln_2(x)))))


class ZeroI2V(nn.Module):
    """A video classifier around an open_clip VisionTransformer. Input (B, C, T, H, W), output logits."""

    def __init__(self, visual: nn.Module, cfg: ModelConfig, backbone_cfg: dict[str, Any]):
        super().__init__()
        if getattr(visual, "attn_pool", None) is not None or getattr(visual, "pool_type", "tok") != "tok":
            raise NotImplementedError("only class-token ViTs are supported (no attention pooling)")
        if cfg.finetune not in FINETUNE_MODES:
            raise ValueError(f"finetune must be one of {FINETUNE_MODES}, got {cfg.finetune!r}")
        self.cfg, self.backbone_cfg = cfg, backbone_cfg
        visual.proj = None  # the classifier reads the class token after ln_post, not CLIP's embedding
        self.visual = visual
        blocks = visual.transformer.resblocks
        width = visual.class_embedding.shape[-1]
        specs = cfg.offsets if isinstance(cfg.offsets, (list, tuple)) and len(cfg.offsets) == len(blocks) \
            and not all(isinstance(o, int) for o in cfg.offsets) else [cfg.offsets] * len(blocks)
        self.offsets = [parse_offsets(s, blocks[0].attn.num_heads, cfg.num_frames) for s in specs]
        slots = placement_slots(cfg.adapter_placement) if cfg.adapter else ()
        for i, blk in enumerate(list(blocks)):
            adapters = {s: build_adapter(cfg.adapter, width, ratio=cfg.adapter_ratio, scale=cfg.adapter_scale,
                                         dropout=cfg.adapter_dropout) for s in slots}
            blocks[i] = VideoBlock(blk, STDHA(self.offsets[i], cfg.num_frames, cfg.boundary), adapters)
        self.temporal_embedding = nn.Parameter(torch.zeros(cfg.num_frames, width)) if cfg.temporal_embedding else None
        self.head_drop = nn.Dropout(cfg.head_dropout)
        self.head = nn.Linear(width, cfg.num_classes)
        nn.init.normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)
        self.set_finetune(cfg.finetune)

    @property
    def blocks(self) -> Sequence[VideoBlock]:
        return self.visual.transformer.resblocks

    @property
    def num_frames(self) -> int:
        return self.cfg.num_frames

    @property
    def image_size(self) -> int:
        size = self.visual.image_size
        return size[0] if isinstance(size, (tuple, list)) else int(size)

    def set_finetune(self, mode: str) -> None:
        """Freeze as the paper does for ``mode`` (see ``ModelConfig.finetune``)."""
        for name, p in self.named_parameters():
            if mode == "full":
                p.requires_grad = True
            elif mode == "linear_probe":
                p.requires_grad = name.startswith("head.")
            else:
                p.requires_grad = (".adapters." in name or name.startswith(("head.", "temporal_embedding", "visual.ln_post.")))

    def forward_features(self, video: torch.Tensor) -> torch.Tensor:
        """Per-frame class tokens after ln_post: (B, C, T, H, W) -> (B, T, width)."""
        if video.ndim != 5:
            raise ValueError(f"expected a clip batch (B, C, T, H, W), got shape {tuple(video.shape)}")
        b, c, t, h, w = video.shape
        if t != self.num_frames:
            raise ValueError(f"model was built for {self.num_frames} frames, got {t}")
        v = self.visual
        x = v.conv1(video.transpose(1, 2).reshape(b * t, c, h, w)).flatten(2).transpose(1, 2)
        x = torch.cat([v.class_embedding.to(x.dtype).expand(b * t, 1, -1), x], dim=1)
        x = x + v.positional_embedding.to(x.dtype)
        if self.temporal_embedding is not None:
            n, d = x.shape[1:]
            x = (x.view(b, t, n, d) + self.temporal_embedding.to(x.dtype)[None, :, None, :]).view(b * t, n, d)
        x = v.ln_pre(v.patch_dropout(x))
        for blk in self.blocks:
            x = checkpoint(blk, x, use_reentrant=False) if self.cfg.grad_checkpointing and self.training else blk(x)
        return v.ln_post(x[:, 0]).view(b, t, -1)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_drop(self.forward_features(video).mean(dim=1)))

    def extra_facts(self) -> dict[str, Any]:
        """What a report or the demo app says about this model."""
        from zeroi2v.stdha import format_offsets
        return {
            "backbone": display_name(self.cfg.backbone), "frames": self.num_frames, "image_size": self.image_size,
            "heads": self.blocks[0].num_heads, "layers": len(self.blocks),
            "offsets": [format_offsets(o) for o in self.offsets], "boundary": self.cfg.boundary,
            "adapters": (f"{self.cfg.adapter} x{len(self.blocks[0].adapters)}/block" if self.cfg.adapter else "merged"),
        }


def display_name(source: str | None) -> str | None:
    """A backbone or weights name fit to show and to store: a local folder or file by its own name, never
    the path on this machine (``local-dir:/srv/x/image_model`` -> ``image_model (local folder)``,
    ``/srv/w/clip.pt`` -> ``clip.pt (local file)``); hub names and tags are returned as they are."""
    if not isinstance(source, str):
        return source
    folder = source.startswith(LOCAL_DIR)
    path = source[len(LOCAL_DIR):] if folder else source
    if not folder and not (("/" in path or "\\" in path) and not re.match(r"[A-Za-z][\w+.-]+:", path)):
        return source  # a name or tag ('ViT-B-16', 'openai', 'hf-hub:org/repo'), not a path
    name = PurePath(path.replace("\\", "/")).name
    kind = "local folder" if folder else "local file"
    return f"{name} ({kind})" if name else kind


def create_model(cfg: ModelConfig | dict[str, Any] | None = None, **overrides: Any) -> ZeroI2V:
    """Build a ZeroI2V model from a config (dataclass or dict) and keyword overrides."""
    cfg = cfg if isinstance(cfg, ModelConfig) else ModelConfig.from_dict(dict(cfg or {}))
    if overrides:
        cfg = ModelConfig.from_dict({**cfg.to_dict(), **overrides})
    visual, backbone_cfg = create_visual(cfg.backbone, cfg.pretrained)
    return ZeroI2V(visual, cfg, backbone_cfg)


def build_from_backbone_cfg(cfg: ModelConfig, backbone_cfg: dict[str, Any]) -> ZeroI2V:
    """A model with random weights from stored config data (no name lookup, no download)."""
    return ZeroI2V(build_visual(backbone_cfg), cfg, backbone_cfg)
