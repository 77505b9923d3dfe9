"""timm Swin Transformers: where a Swin block's parts are, and which towers can be wrapped exactly.

``TimmSwin`` gives the ``BlockLayout`` of timm's ``SwinTransformerBlock`` (window attention with a fused qkv,
relative position bias, Mlp) so that ``zeroi2v.swin_video.SwinVideoBlock`` reuses the ViT's projections,
adapter slots and merge rules. It is not registered in ``BACKBONES`` yet: ``ZeroI2V`` runs its blocks as one
flat sequence of same-width global-attention blocks with one head count, while Swin has stages of
different widths and head counts with patch merging between them. Until the model runs a family's own
stage loop, a Swin video tower is built with ``zeroi2v.swin_video.video_swin``.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from zeroi2v.backbones.base import Backbone, BlockLayout
from zeroi2v.backbones.timm_common import architecture, arch_facts, build_tower, load_tower


def check_swin(tower: nn.Module) -> dict[str, int]:
    """Facts of a timm SwinTransformer the video blocks can wrap exactly; ValueError saying why not."""
    from timm.layers import Mlp
    from timm.models.swin_transformer import SwinTransformer, SwinTransformerBlock, WindowAttention
    if not isinstance(tower, SwinTransformer):
        raise ValueError(f"{type(tower).__name__} is not a timm SwinTransformer (v1); use e.g. swin_tiny_patch4_window7_224")
    for s, stage in enumerate(tower.layers):
        for i, blk in enumerate(stage.blocks):
            if type(blk) is not SwinTransformerBlock or type(blk.attn) is not WindowAttention or type(blk.mlp) is not Mlp:
                raise ValueError(f"stage {s} block {i} is a {type(blk).__name__}; only timm's SwinTransformerBlock")
            if blk.attn.attn_drop.p:
                raise ValueError(f"attention dropout {blk.attn.attn_drop.p} (build it with attn_drop_rate=0)")
    size = tower.patch_embed.img_size
    return {"width": int(tower.num_features), "layers": sum(len(s.blocks) for s in tower.layers),
            "heads": int(tower.layers[0].blocks[0].attn.num_heads), "image_size": int(size[0])}


class TimmSwin(Backbone):
    """timm's ``SwinTransformer``; names ``MODEL[.TAG][?key=value...]`` as in ``timm_common``."""

    prefix = "timm-swin:"
    layout = BlockLayout(
        norm1="norm1", ls1=("attn.proj_drop", "drop_path1"), norm2="norm2", ls2=("mlp.drop2", "drop_path2"),
        act=("mlp.act", "mlp.drop1", "mlp.norm"), heads="attn",
        projections={"qkv": ("attn.qkv", "weight", "bias"), "attn_out": ("attn.proj", "weight", "bias"),
                     "fc1": ("mlp.fc1", "weight", "bias"), "fc2": ("mlp.fc2", "weight", "bias")})
    pool_norm = "norm"
    no_weight_decay = ("relative_position_bias_table",)

    @classmethod
    def arch(cls, name: str) -> dict[str, Any]:
        return architecture(name, check_swin)

    @classmethod
    def facts(cls, arch: dict[str, Any]) -> dict[str, int]:
        return arch_facts(arch)

    @classmethod
    def create(cls, name: str, pretrained: str | None) -> tuple[nn.Module, dict[str, Any]]:
        arch = cls.arch(name)
        return load_tower(arch, pretrained, check_swin), arch

    @classmethod
    def build(cls, arch: dict[str, Any]) -> nn.Module:
        return build_tower(arch, check_swin)

    @classmethod
    def stage_heads(cls, tower: nn.Module) -> list[int]:
        return [int(stage.blocks[0].attn.num_heads) for stage in tower.layers]

    @classmethod
    def image_features(cls, tower: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return tower.forward_head(tower.forward_features(images), pre_logits=True)

    @classmethod
    def image_size(cls, tower: nn.Module) -> int:
        return int(tower.patch_embed.img_size[0])

    @classmethod
    def width(cls, tower: nn.Module) -> int:
        return int(tower.num_features)
