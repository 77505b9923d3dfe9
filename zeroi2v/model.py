"""The ZeroI2V video model: an image ViT that reads clips.

Frames fold into the batch and run through the image ViT; three things make it a video model:
a zero-initialised temporal embedding (T × width, added to every token of frame t after the
positional embedding), a temporal operator inside every block (STDHA by default, ``zeroi2v.temporal``),
and adapters around the projections (``zeroi2v.adapters``; they fold away with ``zeroi2v.merge``).
The head is the paper's: per-frame pooled token after the final norm, mean over frames, dropout,
linear classifier.

The backbone is reached only through its family's protocol (``zeroi2v.backbones``), and its
parameters keep their own names (``visual.conv1.weight``, ``visual.transformer.resblocks.0.attn.
in_proj_weight`` for open_clip ...), so a merged checkpoint is the tower's state dict plus
``temporal_embedding`` and ``head``.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from zeroi2v.adapters import SLOTS, build_adapters, resolve_adapter
from zeroi2v.backbones import Backbone, display_name, family_of  # noqa: F401  (display_name re-exported)
from zeroi2v.config import CLIP_MEAN, CLIP_STD, FINETUNE_MODES, ModelConfig  # noqa: F401  (re-exported)
from zeroi2v.fused import fusable, fused_linear
from zeroi2v.temporal import build_temporal, resolve_temporal

_PROJECTION_SLOTS = {p: [s for s, slot in SLOTS.items() if slot.projection == p] for p in
                     ("qkv", "q", "k", "v", "attn_out", "fc1", "fc2")}


def _probe(probe: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Call an identity probe only when something hooks it: a module call costs microseconds that
    show in small models (module-global hooks do not see the probes)."""
    return probe(x) if probe._forward_hooks or probe._forward_pre_hooks else x


class VideoBlock(nn.Module):
    """One pre-norm ViT block reading a clip: the backbone's weights, a temporal operator, adapters.

    ``x = x + ls1(A_out(P_out(attn(T_qkv(P_qkv(A_in(T_tok(norm1(x)))))))))`` and
    ``x = x + ls2(M_out(fc2(act(fc1(M_in(T_mlp(norm2(x))))))))``: ``T_tok``/``T_qkv``/``T_mlp`` are the
    temporal operator's three places (called only when it declares them), ``A``/``M`` the series adapters of each slot (parallel "delta" adapters add
    to their projection's output). The block adopts the backbone block's submodules under their own
    names and finds them through the family's ``BlockLayout``. ``q_probe``, ``k_probe`` and
    ``v_probe`` are identity modules on the per-head Q/K/V (B*T, heads, tokens, head_dim) *before*
    the temporal operator: forward hooks (Grad-CAM, analysis) read each head's own frame there.
    """

    def __init__(self, block: nn.Module, family: type[Backbone], temporal: nn.Module,
                 adapters: dict[str, nn.Module] | None = None):
        super().__init__()
        for name, child in block.named_children():
            self.add_module(name, child)
        for name, param in block.named_parameters(recurse=False):
            self.register_parameter(name, param)
        layout = family.layout
        self.num_heads = self.get_submodule(layout.heads).num_heads
        self.temporal = temporal
        self.adapters = nn.ModuleDict(adapters or {})
        self.q_probe, self.k_probe, self.v_probe = nn.Identity(), nn.Identity(), nn.Identity()
        # Plain dicts (not registered again): the adopted modules, found once.
        self._parts = {"norm1": self.get_submodule(layout.norm1), "norm2": self.get_submodule(layout.norm2),
                       "ls1": [self.get_submodule(p) for p in layout.ls1], "ls2": [self.get_submodule(p) for p in layout.ls2],
                       "act": [self.get_submodule(p) for p in layout.act]}
        self._fused = "qkv" in layout.projections
        self._proj = {}
        for name in _PROJECTION_SLOTS:
            if name in layout.projections or (self._fused and name in ("q", "k", "v")):
                rows = family.projection(self, name).rows
                path, w, b = layout.projections["qkv" if self._fused and name in ("q", "k", "v") else name]
                self._proj[name] = (self.get_submodule(path), w, b, None if rows == slice(None) else rows)

    fuse_adapters = False
    """Run linear adapters fused into their frozen projections (``zeroi2v.fused``); set from
    ``ModelConfig.fused_adapters``. ``_adapt`` then skips a fused slot and ``_project`` applies it."""

    def _adapt(self, slot: str, x: torch.Tensor) -> torch.Tensor:
        a = self.adapters[slot] if slot in self.adapters else None
        return a(x) if a is not None and a.merge != "delta" and not (self.fuse_adapters and fusable(self, slot)) else x

    def _project(self, name: str, x: torch.Tensor) -> torch.Tensor:
        module, w, b, rows = self._proj[name]
        weight, bias = getattr(module, w), getattr(module, b) if b else None
        if rows is not None:
            weight, bias = weight[rows], bias[rows] if bias is not None else None
        y = fused_linear(self, _PROJECTION_SLOTS[name], x, weight, bias) if self.fuse_adapters else None
        y = F.linear(x, weight, bias) if y is None else y
        if self.adapters:
            for slot in _PROJECTION_SLOTS[name]:
                a = self.adapters[slot] if slot in self.adapters else None
                if a is not None and a.merge == "delta":
                    y = y + a(x)
        return y

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        bt, n, _ = x.shape
        x = self._adapt("attn_in", x)
        if self._fused and not any(s in self.adapters for s in ("q_in", "k_in", "v_in")):
            qkv = self._project("qkv", x)
        else:
            qkv = torch.cat([self._project(p, self._adapt(f"{p}_in", x)) for p in "qkv"], dim=-1)
        c = qkv.shape[-1] // 3
        qkv = qkv.view(bt, n, 3, self.num_heads, c // self.num_heads)
        probes = (self.q_probe, self.k_probe, self.v_probe)
        # In place when nothing reads Q/K/V before the operator (no probe hooks) and no ONNX trace records the
        # ops (the exported graph keeps the plain K/V gather).
        in_place = self.temporal.in_place_qkv and not torch.jit.is_tracing() and \
            not any(p._forward_hooks or p._forward_pre_hooks for p in probes)
        if in_place:
            self.temporal.qkv_(qkv)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        if not in_place:
            q, k, v = (_probe(p, x) for p, x in zip(probes, (q, k, v)))
            if self.temporal.on_qkv:
                q, k, v = self.temporal.qkv(q, k, v)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(bt, n, c)
        return self._adapt("attn_out", self._project("attn_out", out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = self._parts
        h = parts["norm1"](x)
        if self.temporal.on_tokens:
            h = self.temporal.tokens(h)
        h = self.attention(h)
        for m in parts["ls1"]:
            h = m(h)
        x = x + h
        h = parts["norm2"](x)
        if self.temporal.on_mlp_tokens:
            h = self.temporal.mlp_tokens(h)
        h = self._project("fc1", self._adapt("mlp_in", h))
        for m in parts["act"]:
            h = m(h)
        h = self._adapt("mlp_out", self._project("fc2", h))
        for m in parts["ls2"]:
            h = m(h)
        return x + h


class ZeroI2V(nn.Module):
    """A video classifier around an image tower. Input (B, C, T, H, W), output logits."""

    def __init__(self, visual: nn.Module, cfg: ModelConfig, backbone_cfg: dict[str, Any]):
        super().__init__()
        if cfg.finetune not in FINETUNE_MODES:
            raise ValueError(f"finetune must be one of {FINETUNE_MODES}, got {cfg.finetune!r}")
        self.family, _ = family_of(cfg.backbone)
        self.cfg, self.backbone_cfg = cfg, backbone_cfg
        self.visual = visual
        blocks = self.family.blocks(visual)
        # per-block head counts and layers per stage: one count and one stage on a ViT, 4/8/16/32 heads in
        # Swin-B's four stages; the family's video block class (``SwinVideoBlock`` for Swin's windows)
        heads = [blk.get_submodule(self.family.layout.heads).num_heads for blk in blocks]
        stages = [len(stage) for _, stage in self.family.stages(visual)]
        self.temporal_spec = resolve_temporal(cfg.temporal, num_heads=heads, num_layers=len(blocks),
                                              num_frames=cfg.num_frames, stages=stages)
        self.adapter_spec = resolve_adapter(cfg.adapter)
        video_block = self.family.video_block()
        for i, blk in enumerate(list(blocks)):
            temporal = build_temporal(self.temporal_spec, layer=i, num_heads=heads[i], num_frames=cfg.num_frames)
            adapters = build_adapters(self.adapter_spec, self.family.projection_dims(blk),
                                      clip={"num_frames": cfg.num_frames, "grid": lambda: self.family.grid(visual)})
            blocks[i] = video_block(blk, self.family, temporal, adapters)
            blocks[i].fuse_adapters = bool(cfg.fused_adapters)
        width = self.family.width(visual)
        self.temporal_embedding = nn.Parameter(torch.zeros(cfg.num_frames, self.family.embed_width(visual))) \
            if cfg.temporal_embedding else None
        self.head_drop = nn.Dropout(cfg.head_dropout)
        self.head = nn.Linear(width, cfg.num_classes)
        nn.init.normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)
        self.set_finetune(cfg.finetune)

    @property
    def blocks(self) -> Sequence[VideoBlock]:
        return self.family.blocks(self.visual)

    @property
    def num_frames(self) -> int:
        return self.cfg.num_frames

    @property
    def image_size(self) -> int:
        return self.family.image_size(self.visual)

    @property
    def offsets(self) -> list[tuple[int, ...]]:
        """Per block, the frame offset each head reads from (0 for every head of a non-per-head operator)."""
        return [blk.temporal.head_offsets or (0,) * blk.num_heads for blk in self.blocks]

    def no_weight_decay(self) -> set[str]:
        """Parameters that are not 1-D but get no weight decay: the embeddings (timm's convention), by path
        or by the last part of their name (Swin's per-block relative position bias tables)."""
        names = self.family.no_weight_decay
        return {"temporal_embedding", *(f"visual.{n}" for n, _ in self.visual.named_parameters()
                                        if n in names or n.rsplit(".", 1)[-1] in names)}

    def set_finetune(self, mode: str) -> None:
        """Freeze as the paper does for ``mode`` (see ``ModelConfig.finetune``); 'temporal_heads' masks the
        attention projections to the temporal heads' slices (``zeroi2v.tuning``)."""
        from zeroi2v.tuning import clear_masks, mask_temporal_heads
        clear_masks(self)
        trained = ("head.", "temporal_embedding", f"visual.{self.family.pool_norm}.")
        for name, p in self.named_parameters():
            if mode == "full":
                p.requires_grad = True
            elif mode == "linear_probe":
                p.requires_grad = name.startswith("head.")
            else:
                p.requires_grad = ".adapters." in name or name.startswith(trained)
        if mode == "temporal_heads":
            mask_temporal_heads(self)

    def forward_features(self, video: torch.Tensor) -> torch.Tensor:
        """Per-frame pooled tokens after the final norm: (B, C, T, H, W) -> (B, T, width)."""
        if video.ndim != 5:
            raise ValueError(f"expected a clip batch (B, C, T, H, W), got shape {tuple(video.shape)}")
        b, c, t, h, w = video.shape
        if t != self.num_frames:
            raise ValueError(f"model was built for {self.num_frames} frames, got {t}")
        fam, v = self.family, self.visual
        x = fam.embed(v, video.transpose(1, 2).reshape(b * t, c, h, w))  # (B*T, N, C), or (B*T, h, w, C) on Swin
        if self.temporal_embedding is not None:
            te = self.temporal_embedding.to(x.dtype).view(1, t, *([1] * (x.ndim - 2)), -1)
            x = (x.view(b, t, *x.shape[1:]) + te).view(x.shape)
        x = fam.pre_blocks(v, x)
        ckpt = self.cfg.grad_checkpointing and self.training
        for before, stage in fam.stages(v):  # one stage on a ViT; Swin: patch merging, then the stage's blocks
            if before is not None:
                x = before(x)
            for blk in stage:
                x = checkpoint(blk, x, use_reentrant=False) if ckpt else blk(x)
        return fam.pool(v, x).view(b, t, -1)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_drop(self.forward_features(video).mean(dim=1)))

    def extra_facts(self) -> dict[str, Any]:
        """What a report or the demo app says about this model."""
        from zeroi2v.stdha import format_offsets
        adapter = self.adapter_spec
        return {
            "backbone": display_name(self.cfg.backbone), "frames": self.num_frames, "image_size": self.image_size,
            "heads": self.blocks[0].num_heads, "layers": len(self.blocks), "temporal": self.temporal_spec["kind"],
            "offsets": [format_offsets(o) for o in self.offsets], "boundary": self.temporal_spec.get("boundary"),
            "adapters": (f"{adapter['kind']} x{len(self.blocks[0].adapters)}/block" if adapter else "merged"),
        }


def create_model(cfg: ModelConfig | dict[str, Any] | None = None, **overrides: Any) -> ZeroI2V:
    """Build a ZeroI2V model from a config (dataclass or dict) and keyword overrides."""
    cfg = cfg if isinstance(cfg, ModelConfig) else ModelConfig.from_dict(dict(cfg or {}))
    if overrides:
        cfg = ModelConfig.from_dict({**cfg.to_dict(), **overrides})
    family, name = family_of(cfg.backbone)
    visual, backbone_cfg = family.create(name, cfg.pretrained)
    return ZeroI2V(visual, cfg, backbone_cfg)


def build_from_backbone_cfg(cfg: ModelConfig, backbone_cfg: dict[str, Any]) -> ZeroI2V:
    """A model with random weights from stored architecture data (no name lookup, no download)."""
    return ZeroI2V(family_of(cfg.backbone)[0].build(backbone_cfg), cfg, backbone_cfg)
