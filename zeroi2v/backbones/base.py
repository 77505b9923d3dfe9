"""The backbone protocol: what a family of image towers (open_clip, timm, ...) tells the video model.

A family is a stateless class registered in ``BACKBONES``. It turns a name into a tower with its
weights, and says where the tower's parts are, so that ``zeroi2v.model``, ``zeroi2v.merge``, the
plain-ViT reference of ``zeroi2v.bench`` and the Grad-CAM of ``zeroi2v.explain`` never name a
family's attributes:

- the embedding: ``embed`` (patches + class token + positional embedding) and ``pre_blocks``
  (patch dropout, pre-norm); the video model adds its temporal embedding in between;
- the blocks (``blocks``), each described by a ``BlockLayout``: its norms and layer scales, its
  projection slots (fused or separate Q/K/V, attention out, fc1, fc2) and the MLP's activation;
- the final norm and the pooled token (``pool``), and the tower's own image forward
  (``image_features``), the reference for "zero extra cost".

Hierarchical towers (Swin) say more: ``stages`` (the blocks of each stage and the module before it, patch
merging), ``temporal_shape`` (a head count per layer and the layers per stage, for the temporal operator's
spec), ``embed_width`` (the width of the embedded tokens the temporal embedding is added to) and
``video_block`` (their own video block class). The defaults describe a plain ViT: one stage, one head count.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, Sequence

import torch
import torch.nn as nn

from zeroi2v.registry import Registry

if TYPE_CHECKING:
    from zeroi2v.backbones.text import TextEncoder

BACKBONES = Registry("backbone family")
PROJECTIONS = ("qkv", "q", "k", "v", "attn_out", "fc1", "fc2")


class BlockLayout(NamedTuple):
    """Where the parts of one pre-norm transformer block are, as paths of its submodules.

    ``x = x + ls1(attn_out(attention(qkv(norm1(x)))))``, ``x = x + ls2(fc2(act(fc1(norm2(x)))))``;
    ``ls1``, ``ls2`` and ``act`` are chains applied in order (layer scale, drop path, dropout...).
    """
    norm1: str
    ls1: tuple[str, ...]
    norm2: str
    ls2: tuple[str, ...]
    act: tuple[str, ...]
    """Modules between fc1 and fc2."""
    heads: str
    """Path of the attention module, whose ``num_heads`` attribute gives the head count."""
    projections: dict[str, tuple[str, str, str | None]]
    """Projection -> (module path, weight attribute, bias attribute or None). 'qkv' is fused (Q, K, V
    stacked by rows); a family with separate projections gives 'q', 'k' and 'v' instead."""


class Projection(NamedTuple):
    """A projection's parameters; ``rows`` selects its part of a fused weight (Q, K or V of 'qkv')."""
    weight: torch.Tensor
    bias: torch.Tensor | None
    rows: slice = slice(None)


class Backbone:
    """Base class of backbone families. Every method is a classmethod over a tower or a block."""

    prefix: ClassVar[str] = ""
    """The family's name prefix ('open_clip:'); optional for the default family."""
    layout: ClassVar[BlockLayout]
    pool_norm: ClassVar[str] = ""
    """Path of the final norm in the tower: trained with the adapters (paper), frozen otherwise."""
    no_weight_decay: ClassVar[tuple[str, ...]] = ()
    """Tower parameters that are not 1-D but get no weight decay (class and positional embeddings): paths
    in the tower, or the last part of a name that every block repeats ('relative_position_bias_table')."""
    gradcam_limit: ClassVar[str | None] = None
    """Why the head-group Grad-CAM of ``zeroi2v.explain`` cannot run on this family (None: it can)."""

    @classmethod
    def claims(cls, name: str) -> bool:
        """Whether this family serves ``name`` (the part after ``prefix``): families sharing a prefix
        ('timm:' for ViT and Swin) split the names between them."""
        return True

    # --- names, architectures and weights
    @classmethod
    def arch(cls, name: str) -> dict[str, Any]:
        """The architecture as data (JSON-able), no weights: what ``build`` takes back."""
        raise NotImplementedError

    @classmethod
    def facts(cls, arch: dict[str, Any]) -> dict[str, int]:
        """``width``, ``layers``, ``heads`` and ``image_size`` of an architecture (no torch needed)."""
        raise NotImplementedError

    @classmethod
    def create(cls, name: str, pretrained: str | None) -> tuple[nn.Module, dict[str, Any]]:
        """The tower of ``name`` with its weights, and its architecture."""
        raise NotImplementedError

    @classmethod
    def build(cls, arch: dict[str, Any]) -> nn.Module:
        """A tower with random weights and no image-text projection."""
        raise NotImplementedError

    @classmethod
    def text_encoder(cls, name: str, pretrained: str | None) -> TextEncoder | None:
        """CLIP's text tower from the weights ``create(name, pretrained)`` reads (``zeroi2v.backbones.text``),
        for a head initialised from class names (``zeroi2v.text_head``); None when the family or its
        weights have none (the default)."""
        return None

    # --- structure
    @classmethod
    def blocks(cls, tower: nn.Module) -> nn.ModuleList:
        raise NotImplementedError

    @classmethod
    def stages(cls, tower: nn.Module) -> list[tuple[nn.Module | None, Sequence[nn.Module]]]:
        """The blocks in stages, each with the module that runs before its first block (patch merging;
        None: nothing). ``ZeroI2V.forward_features`` runs them; a plain ViT is one stage."""
        return [(None, cls.blocks(tower))]

    @classmethod
    def temporal_shape(cls, facts: dict[str, Any]) -> dict[str, Any]:
        """``num_heads`` (one count, or one per layer), ``num_layers`` and ``stages`` (layers per stage, None:
        one stage) of an architecture's ``facts``: the keywords of ``zeroi2v.temporal.resolve_temporal``."""
        return {"num_heads": facts["heads"], "num_layers": facts["layers"], "stages": None}

    @classmethod
    def video_block(cls) -> type[nn.Module]:
        """The class that wraps one block of this family for clips: ``cls(block, family, temporal, adapters)``."""
        from zeroi2v.model import VideoBlock
        return VideoBlock

    @classmethod
    def embed(cls, tower: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> tokens (N, 1 + h*w, width): patches, class token, positional embedding."""
        raise NotImplementedError

    @classmethod
    def pre_blocks(cls, tower: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """What runs between the embedding and the first block (patch dropout, pre-norm)."""
        raise NotImplementedError

    @classmethod
    def pool(cls, tower: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Tokens after the last block -> pooled features (N, width): final norm, class token."""
        raise NotImplementedError

    @classmethod
    def image_features(cls, tower: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """The tower's own forward on images: the plain image model the video model must cost the same as."""
        raise NotImplementedError

    @classmethod
    def image_size(cls, tower: nn.Module) -> int:
        raise NotImplementedError

    @classmethod
    def grid(cls, tower: nn.Module) -> tuple[int, int]:
        """Patches per side (h, w) of the token grid."""
        raise NotImplementedError

    @classmethod
    def width(cls, tower: nn.Module) -> int:
        """Width of the pooled features (the classifier's input)."""
        raise NotImplementedError

    @classmethod
    def embed_width(cls, tower: nn.Module) -> int:
        """Width of the tokens ``embed`` returns (the temporal embedding's); the pooled width by default."""
        return cls.width(tower)

    @classmethod
    def projection(cls, block: nn.Module, name: str) -> Projection:
        """The parameters of projection ``name`` (one of ``PROJECTIONS``) of a block with ``layout``."""
        fused = "qkv" in cls.layout.projections
        if name in ("q", "k", "v") and fused:
            qkv = cls.projection(block, "qkv")
            c = qkv.weight.shape[0] // 3
            i = "qkv".index(name)
            return Projection(qkv.weight, qkv.bias, slice(c * i, c * (i + 1)))
        if name not in cls.layout.projections:
            raise ValueError(f"{cls.__name__} blocks have no {name!r} projection")
        path, w, b = cls.layout.projections[name]
        module = block.get_submodule(path)
        return Projection(getattr(module, w), getattr(module, b) if b else None)

    @classmethod
    def projection_dims(cls, block: nn.Module) -> dict[str, tuple[int, int]]:
        """Projection -> (in features, out features), for every projection of ``PROJECTIONS``."""
        dims = {}
        for name in PROJECTIONS:
            if name != "qkv" or "qkv" in cls.layout.projections:
                p = cls.projection(block, name)
                dims[name] = (p.weight.shape[1], p.weight[p.rows].shape[0])
        if "qkv" not in dims:  # separate Q/K/V: a shared 'before qkv' adapter feeds all three
            dims["qkv"] = (dims["q"][0], dims["q"][1] + dims["k"][1] + dims["v"][1])
        return dims
