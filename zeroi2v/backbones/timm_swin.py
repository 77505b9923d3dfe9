"""timm Swin Transformers (v1) through the backbone protocol: ``timm:swin_base_patch4_window7_224``.

The paper's Table 14 runs ZeroI2V on Swin-B (IN21K weights), with STDHA inside the window attention and
one Δt multiset per stage (Table 11b; ``zeroi2v.stdha.STAGE_PRESETS``). ``TimmSwin`` gives the
``BlockLayout`` of timm's ``SwinTransformerBlock`` (window attention with a fused qkv, relative position
bias, Mlp), so ``zeroi2v.swin_video.SwinVideoBlock`` reuses the ViT's projections, adapter slots and merge
rules, and the stages (patch merging, then blocks) that ``ZeroI2V.forward_features`` runs on (B*T, H, W, C)
tokens. The temporal embedding is added to the patch embedding's tokens (stage 0's width); pooling is timm's
(final norm, average over the last stage's tokens).

Limits, each refused with the reason: patch merging and the patch embedding get no adapters; adapter kinds
that read the token grid (ST-Adapter) and the head-group Grad-CAM need one token grid with a class token,
which Swin's per-stage windows do not have; temporal operators on tokens ([cls]-token shift) need a class
token. Swin v2 and other block types are refused by ``check_swin``.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn

from zeroi2v.backbones.base import BACKBONES, BlockLayout
from zeroi2v.backbones.timm_common import TimmTower, arch_facts, is_swin

NO_GRID = ("Swin has no single token grid with a class token (each stage has its own grid, attention runs in "
           "windows)")


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
    stage_heads = [int(s.blocks[0].attn.num_heads) for s in tower.layers]
    if any(int(b.attn.num_heads) != h for s, h in zip(tower.layers, stage_heads) for b in s.blocks):
        raise ValueError("the blocks of a stage have different head counts; only one head count per stage")
    return {"width": int(tower.num_features), "layers": sum(len(s.blocks) for s in tower.layers),
            "heads": stage_heads[0], "image_size": int(size[0]), "stages": [len(s.blocks) for s in tower.layers],
            "stage_heads": stage_heads}


class StageBlocks(Sequence):
    """Every block of a Swin tower in order, as one list: reading or replacing block i reaches its stage."""

    def __init__(self, tower: nn.Module):
        self._where = [(stage.blocks, j) for stage in tower.layers for j in range(len(stage.blocks))]

    def __len__(self) -> int:
        return len(self._where)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(len(self))[i]]
        seq, j = self._where[i]
        return seq[j]

    def __setitem__(self, i: int, block: nn.Module) -> None:
        seq, j = self._where[i]
        seq[j] = block


@BACKBONES.register("timm_swin")
class TimmSwin(TimmTower):
    """timm's ``SwinTransformer`` (v1), named ``timm:swin_...[.TAG][?key=value...]`` as in ``timm_common``.

    Parameters keep timm's names (``visual.layers.2.blocks.5.attn.qkv.weight``), so a merged checkpoint is
    timm's state dict (minus the classifier) plus ``temporal_embedding`` and ``head``.
    """

    prefix = "timm:"
    layout = BlockLayout(
        norm1="norm1", ls1=("attn.proj_drop", "drop_path1"), norm2="norm2", ls2=("mlp.drop2", "drop_path2"),
        act=("mlp.act", "mlp.drop1", "mlp.norm"), heads="attn",
        projections={"qkv": ("attn.qkv", "weight", "bias"), "attn_out": ("attn.proj", "weight", "bias"),
                     "fc1": ("mlp.fc1", "weight", "bias"), "fc2": ("mlp.fc2", "weight", "bias")})
    pool_norm = "norm"
    check = staticmethod(check_swin)
    no_weight_decay = ("absolute_pos_embed", "relative_position_bias_table")
    gradcam_limit = f"{NO_GRID}; Grad-CAM runs on ViT backbones"

    @classmethod
    def claims(cls, name: str) -> bool:
        return is_swin(name)

    @classmethod
    def facts(cls, arch: dict[str, Any]) -> dict[str, Any]:
        """``arch_facts`` plus ``stages`` (blocks per stage) and ``stage_heads`` (heads per stage)."""
        facts = arch_facts(arch)
        stages, heads = arch.get("stages"), arch.get("stage_heads")
        if not (isinstance(stages, list) and isinstance(heads, list) and stages and len(stages) == len(heads)
                and all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in stages + heads)
                and sum(stages) == facts["layers"]):
            raise ValueError(f"timm Swin architecture data needs 'stages' (blocks per stage, adding up to "
                             f"'layers') and 'stage_heads' (heads per stage), got {stages!r} and {heads!r}")
        return {**facts, "stages": stages, "stage_heads": heads}

    @classmethod
    def temporal_shape(cls, facts: dict[str, Any]) -> dict[str, Any]:
        heads = [h for n, h in zip(facts["stages"], facts["stage_heads"]) for _ in range(n)]
        return {"num_heads": heads, "num_layers": facts["layers"], "stages": list(facts["stages"])}

    @classmethod
    def blocks(cls, tower: nn.Module) -> StageBlocks:
        return StageBlocks(tower)

    @classmethod
    def stages(cls, tower: nn.Module) -> list[tuple[nn.Module | None, Sequence[nn.Module]]]:
        """timm's ``SwinTransformerStage.forward``: patch merging (none in stage 0), then the blocks."""
        return [(None if isinstance(s.downsample, nn.Identity) else s.downsample, s.blocks) for s in tower.layers]

    @classmethod
    def video_block(cls) -> type[nn.Module]:
        from zeroi2v.swin_video import SwinVideoBlock
        return SwinVideoBlock

    @classmethod
    def embed(cls, tower: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, h, w, width) patch tokens: timm's ``patch_embed`` (Swin v1 has no class token and
        no absolute positional embedding; position lives in each window's relative position bias)."""
        return tower.patch_embed(images)

    @classmethod
    def pre_blocks(cls, tower: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return x

    @classmethod
    def pool(cls, tower: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """timm's final norm, then its head's average over the (h, w) tokens (pre-logits)."""
        return tower.forward_head(tower.norm(x), pre_logits=True)

    @classmethod
    def grid(cls, tower: nn.Module) -> tuple[int, int]:
        raise ValueError(f"{NO_GRID}: adapter kinds that read the token grid (ST-Adapter) cannot run on Swin; "
                         f"use adapter kind linear, lora or gelu")

    @classmethod
    def embed_width(cls, tower: nn.Module) -> int:
        return int(tower.patch_embed.proj.out_channels)

    @classmethod
    def image_features(cls, tower: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return tower.forward_head(tower.forward_features(images), pre_logits=True)

    @classmethod
    def image_size(cls, tower: nn.Module) -> int:
        return int(tower.patch_embed.img_size[0])

    @classmethod
    def width(cls, tower: nn.Module) -> int:
        return int(tower.num_features)
