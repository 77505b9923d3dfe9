"""Image backbones: open_clip visual towers, their configs as data, and where their weights come from.

Weights come from one of:
- nothing (random init; shape, FLOP and exactness checks),
- an open_clip pretrained tag (``pretrained="openai"``; downloads when a hub is reachable),
- a local file: an open_clip checkpoint (``.bin``/``.pth``/``.safetensors``) or an OpenAI CLIP ``.pt``
  (TorchScript archive),
- a local directory in open_clip's own layout (``open_clip_config.json`` + weights), named as
  ``backbone="local-dir:/path"``: what a Hugging Face CLIP repo looks like, and what the offline
  quickstart saves its small pre-trained image model as.
Weights files are read as data and never run code (``zeroi2v.backbones.weights``).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn as nn
from open_clip.model import _build_vision_tower  # the one builder open_clip uses for every ViT tower

from zeroi2v.backbones.base import BACKBONES, Backbone, BlockLayout
from zeroi2v.backbones.text import TextEncoder, open_clip_text_encoder
from zeroi2v.backbones.weights import is_torchscript_archive, load_state_dict_file
from zeroi2v.files import atomic_write, atomic_write_text

CONFIG_DIR = Path(__file__).parent.parent / "model_configs"
LOCAL_DIR = "local-dir:"
CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"

open_clip.add_model_config(CONFIG_DIR)  # our small configs become ordinary open_clip model names


def list_backbones() -> list[str]:
    ours = sorted(p.stem for p in CONFIG_DIR.glob("*.json"))
    return ours + [m for m in open_clip.list_models() if m not in ours]


def get_model_config(name: str) -> dict[str, Any]:
    """open_clip model config (embed_dim, quick_gelu, vision_cfg, ...) for a name or a local dir."""
    if name.startswith(LOCAL_DIR):
        path = Path(name[len(LOCAL_DIR):]) / CONFIG_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: a local backbone directory needs {CONFIG_FILE} "
                                    f"(open_clip's layout) beside its weights")
        return json.loads(path.read_text())["model_cfg"]
    ours = CONFIG_DIR / f"{name}.json"
    if ours.is_file():
        return json.loads(ours.read_text())
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(list_backbones()[:12])}, ... "
                         f"(or 'local-dir:/path/to/open_clip_dir')")
    return copy.deepcopy(cfg)


def build_visual(model_cfg: dict[str, Any]) -> nn.Module:
    """An open_clip VisionTransformer from config data (no text tower, random weights)."""
    vision_cfg = model_cfg["vision_cfg"]
    if "timm_model_name" in vision_cfg:
        raise NotImplementedError("timm towers are not wrapped yet; use an open_clip ViT config")
    return _build_vision_tower(model_cfg["embed_dim"], vision_cfg, quick_gelu=model_cfg.get("quick_gelu", False))


def _visual_part(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    visual = {k[len("visual."):]: v for k, v in sd.items() if k.startswith("visual.")}
    return visual or sd


def backbone_architecture(name: str, pretrained: str | None = None) -> dict[str, Any]:
    """The model config ``create_visual(name, pretrained)`` builds, without reading any weights: an
    open_clip tag may switch on QuickGELU (``openai``), and so does an OpenAI CLIP ``.pt`` (TorchScript):
    OpenAI's CLIP models are QuickGELU models, as open_clip's ``load_openai_model`` builds them."""
    model_cfg = get_model_config(name)
    if pretrained and not name.startswith(LOCAL_DIR):
        if Path(pretrained).is_file():
            if is_torchscript_archive(pretrained):
                model_cfg["quick_gelu"] = True
        elif tag_cfg := open_clip.get_pretrained_cfg(name, pretrained):
            model_cfg["quick_gelu"] = tag_cfg.get("quick_gelu", model_cfg.get("quick_gelu", False))
    return model_cfg


def _resolve_weights(name: str, pretrained: str | None) -> Path | None:
    if name.startswith(LOCAL_DIR):
        folder = Path(name[len(LOCAL_DIR):])
        for candidate in (WEIGHTS_FILE, "open_clip_pytorch_model.bin", "model.safetensors", "pytorch_model.bin"):
            if (folder / candidate).is_file():
                return folder / candidate
        raise FileNotFoundError(f"no weights in {folder} (looked for {WEIGHTS_FILE}, open_clip_pytorch_model.bin)")
    if not pretrained:
        return None
    if Path(pretrained).is_file():
        return Path(pretrained)
    tag_cfg = open_clip.get_pretrained_cfg(name, pretrained)
    if not tag_cfg:
        raise ValueError(f"pretrained={pretrained!r} is neither a file nor a known tag of {name}; "
                         f"tags: {open_clip.list_pretrained_tags_by_model(name)}")
    try:
        return Path(open_clip.download_pretrained(tag_cfg))
    except Exception as e:
        raise RuntimeError(
            f"could not download the '{pretrained}' weights of {name} ({type(e).__name__}); no hub is "
            f"reachable (HF_HUB_OFFLINE set or no network). Pass a local file instead: pretrained="
            f"/path/to/open_clip_pytorch_model.bin (or .safetensors, or OpenAI's ViT-B-16.pt), or an "
            f"open_clip directory as backbone='local-dir:/path'") from e


def create_visual(name: str, pretrained: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """The visual tower of backbone ``name`` with its weights, and the model config it was built from."""
    model_cfg = backbone_architecture(name, pretrained)
    weights = _resolve_weights(name, pretrained)
    visual = build_visual(model_cfg)
    if weights is not None:
        sd = _visual_part(load_state_dict_file(weights))
        missing, unexpected = visual.load_state_dict(sd, strict=False)
        if missing or unexpected:
            raise ValueError(f"{weights} does not fit {name}: missing {missing[:5]}{'...' if len(missing) > 5 else ''}"
                             f", unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
    return visual, model_cfg


def save_local_dir(visual: nn.Module, model_cfg: dict[str, Any], folder: str | Path,
                   extra_tensors: dict[str, torch.Tensor] | None = None) -> str:
    """Save a visual tower in open_clip's directory layout; returns the ``local-dir:`` name to load it."""
    from safetensors.torch import save_file
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"visual.{k}": v.detach().contiguous() for k, v in visual.state_dict().items()}
    tensors.update(extra_tensors or {})
    atomic_write(folder / WEIGHTS_FILE, lambda tmp: save_file(tensors, tmp))
    atomic_write_text(folder / CONFIG_FILE, json.dumps({"model_cfg": model_cfg}, indent=2))
    return f"{LOCAL_DIR}{folder}"


# --- the backbone protocol (zeroi2v.backbones.base) ---------------------------------------------------

@BACKBONES.register("open_clip")
class OpenCLIP(Backbone):
    """open_clip's ``VisionTransformer`` (class-token ViTs: CLIP ViT-B/16, ViT-L/14, our small configs).

    Names: an open_clip model name ('ViT-B-16'), one of ours in ``model_configs/``, or
    ``local-dir:/path`` (open_clip's directory layout), with an optional ``open_clip:`` prefix.
    """

    prefix = "open_clip:"
    layout = BlockLayout(
        norm1="ln_1", ls1=("ls_1",), norm2="ln_2", ls2=("ls_2",), act=("mlp.gelu",), heads="attn",
        projections={"qkv": ("attn", "in_proj_weight", "in_proj_bias"),
                     "attn_out": ("attn.out_proj", "weight", "bias"),
                     "fc1": ("mlp.c_fc", "weight", "bias"), "fc2": ("mlp.c_proj", "weight", "bias")})
    pool_norm = "ln_post"
    no_weight_decay = ("class_embedding", "positional_embedding")

    @classmethod
    def arch(cls, name: str) -> dict[str, Any]:
        return get_model_config(name)

    @classmethod
    def facts(cls, arch: dict[str, Any]) -> dict[str, int]:
        vision = arch["vision_cfg"]
        width = int(vision["width"])
        size = vision.get("image_size", 224)
        return {"width": width, "layers": int(vision["layers"]), "heads": width // int(vision.get("head_width", 64)),
                "image_size": int(size[0] if isinstance(size, (list, tuple)) else size)}

    @classmethod
    def create(cls, name: str, pretrained: str | None) -> tuple[nn.Module, dict[str, Any]]:
        tower, arch = create_visual(name, pretrained)
        return _checked(tower), arch

    @classmethod
    def build(cls, arch: dict[str, Any]) -> nn.Module:
        return _checked(build_visual(arch))

    @classmethod
    def text_encoder(cls, name: str, pretrained: str | None) -> TextEncoder | None:
        return open_clip_text_encoder(name, pretrained)

    @classmethod
    def blocks(cls, tower: nn.Module) -> nn.ModuleList:
        return tower.transformer.resblocks

    @classmethod
    def embed(cls, tower: nn.Module, images: torch.Tensor) -> torch.Tensor:
        x = tower.conv1(images).flatten(2).transpose(1, 2)
        x = torch.cat([tower.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1), x], dim=1)
        return x + tower.positional_embedding.to(x.dtype)

    @classmethod
    def pre_blocks(cls, tower: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return tower.ln_pre(tower.patch_dropout(x))

    @classmethod
    def pool(cls, tower: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return tower.ln_post(x[:, 0])

    @classmethod
    def image_features(cls, tower: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return tower(images)

    @classmethod
    def image_size(cls, tower: nn.Module) -> int:
        size = tower.image_size
        return size[0] if isinstance(size, (tuple, list)) else int(size)

    @classmethod
    def grid(cls, tower: nn.Module) -> tuple[int, int]:
        grid = tower.grid_size
        return (int(grid[0]), int(grid[1])) if isinstance(grid, (tuple, list)) else (int(grid), int(grid))

    @classmethod
    def width(cls, tower: nn.Module) -> int:
        return tower.class_embedding.shape[-1]


def _checked(tower: nn.Module) -> nn.Module:
    """The tower as the video model uses it: class-token pooling, no image-text projection."""
    if getattr(tower, "attn_pool", None) is not None or getattr(tower, "pool_type", "tok") != "tok":
        raise NotImplementedError("only class-token ViTs are supported (no attention or average pooling)")
    for blk in tower.transformer.resblocks:
        if getattr(blk, "ln_attn", None) is not None and not isinstance(blk.ln_attn, nn.Identity):
            raise NotImplementedError("blocks with an inner attention norm are not supported")
    tower.proj = None
    return tower
