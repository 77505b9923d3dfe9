"""timm Vision Transformers through the backbone protocol: ``timm:vit_base_patch16_224.augreg_in21k``.

The paper's Table 13 compares CLIP weights with ImageNet-21K ones (``vit_base_patch16_224.augreg_in21k``);
with this family the same model, adapters, merge, Grad-CAM and benchmark run on timm's ViTs.

Supported: class-token ViTs built from timm's ``VisionTransformer`` with its standard ``Block``
(``Attention`` with fused qkv, ``Mlp``), learned positional embeddings that include the class token,
class-token pooling with the final norm before it. Refused, with the reason: register or distillation
tokens, ``no_embed_class``, ``dynamic_img_size``, average or attention pooling (``fc_norm``), QK norm,
attention output norm or gate, attention dropout, and other block types (parallel, post-norm, SwiGLU).
Names, architectures and weights: ``zeroi2v.backbones.timm_common``.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from zeroi2v.backbones.base import BACKBONES, BlockLayout
from zeroi2v.backbones.timm_common import TimmTower, arch_facts, is_swin

PREFIX = "timm:"


def _refuse(tower: nn.Module, why: str) -> None:
    name = (getattr(tower, "pretrained_cfg", None) or {}).get("architecture")
    raise ValueError(f"timm model {name or type(tower).__name__} is not supported by the 'timm' ViT family: "
                     f"{why}; use a class-token ViT such as timm:vit_base_patch16_224")


def check_vit(tower: nn.Module) -> dict[str, int]:
    """The tower's facts if the video model can wrap it exactly; ValueError saying what is not supported."""
    from timm.layers import Attention, Mlp
    from timm.models.vision_transformer import Block, VisionTransformer
    if not isinstance(tower, VisionTransformer):
        _refuse(tower, f"it is a {type(tower).__name__}, not a VisionTransformer")
    if tower.cls_token is None or tower.global_pool != "token":
        _refuse(tower, f"it pools with {tower.global_pool!r}, not its class token")
    if tower.num_prefix_tokens != 1:
        _refuse(tower, f"it has {tower.num_prefix_tokens - 1} register or distillation token(s) beside the class token")
    if tower.no_embed_class or tower.pos_embed is None:
        _refuse(tower, "its positional embedding leaves out the class token (no_embed_class) or is not learned")
    if tower.dynamic_img_size:
        _refuse(tower, "dynamic_img_size is on")
    if not isinstance(tower.fc_norm, nn.Identity) or getattr(tower, "attn_pool", None) is not None:
        _refuse(tower, "its final norm comes after pooling (fc_norm) or it pools by attention")
    for i, blk in enumerate(tower.blocks):
        if type(blk) is not Block or type(blk.attn) is not Attention or type(blk.mlp) is not Mlp:
            _refuse(tower, f"block {i} is a {type(blk).__name__} with {type(blk.attn).__name__} and "
                           f"{type(blk.mlp).__name__}; only timm's Block with Attention and Mlp")
        attn = blk.attn
        if not (isinstance(attn.q_norm, nn.Identity) and isinstance(attn.k_norm, nn.Identity)):
            _refuse(tower, "its attention normalises Q and K (qk_norm)")
        if not isinstance(attn.norm, nn.Identity) or getattr(attn, "gate", None) is not None:
            _refuse(tower, "its attention has an output norm (scale_attn_norm) or a gate")
        if attn.attn_drop.p:
            _refuse(tower, f"attention dropout {attn.attn_drop.p} (build it with attn_drop_rate=0)")
    size = tower.patch_embed.img_size
    return {"width": int(tower.embed_dim), "layers": len(tower.blocks),
            "heads": int(tower.blocks[0].attn.num_heads), "image_size": int(size[0])}


@BACKBONES.register("timm")
class TimmViT(TimmTower):
    """timm's ``VisionTransformer`` (class-token ViTs), named ``timm:MODEL[.TAG][?key=value...]``.

    Parameters keep timm's names (``visual.blocks.0.attn.qkv.weight``), so a merged checkpoint is timm's
    state dict (minus the classifier) plus ``temporal_embedding`` and ``head``.
    """

    prefix = PREFIX
    layout = BlockLayout(
        norm1="norm1", ls1=("attn.proj_drop", "ls1", "drop_path1"), norm2="norm2",
        ls2=("mlp.drop2", "ls2", "drop_path2"), act=("mlp.act", "mlp.drop1", "mlp.norm"), heads="attn",
        projections={"qkv": ("attn.qkv", "weight", "bias"), "attn_out": ("attn.proj", "weight", "bias"),
                     "fc1": ("mlp.fc1", "weight", "bias"), "fc2": ("mlp.fc2", "weight", "bias")})
    pool_norm = "norm"
    check = staticmethod(check_vit)
    no_weight_decay = ("cls_token", "pos_embed")

    @classmethod
    def claims(cls, name: str) -> bool:
        return not is_swin(name)  # timm's Swin names go to ``TimmSwin``

    @classmethod
    def facts(cls, arch: dict[str, Any]) -> dict[str, int]:
        return arch_facts(arch)

    @classmethod
    def blocks(cls, tower: nn.Module) -> nn.Sequential:
        return tower.blocks

    @classmethod
    def embed(cls, tower: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """timm's own ``patch_embed`` + ``_pos_embed`` (class token first, positional embedding, pos_drop)."""
        return tower._pos_embed(tower.patch_embed(images))

    @classmethod
    def pre_blocks(cls, tower: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return tower.norm_pre(tower.patch_drop(x))

    @classmethod
    def pool(cls, tower: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return tower.norm(x[:, 0])  # per-token norm: the same as timm's norm-then-pool

    @classmethod
    def image_features(cls, tower: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return tower.forward_head(tower.forward_features(images), pre_logits=True)

    @classmethod
    def image_size(cls, tower: nn.Module) -> int:
        return int(tower.patch_embed.img_size[0])

    @classmethod
    def grid(cls, tower: nn.Module) -> tuple[int, int]:
        h, w = tower.patch_embed.grid_size
        return int(h), int(w)

    @classmethod
    def width(cls, tower: nn.Module) -> int:
        return int(tower.embed_dim)
