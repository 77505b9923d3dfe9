"""Image backbones: open_clip visual towers, their configs as data, and where their weights come from.

Weights come from one of:
- nothing (random init; shape, FLOP and exactness checks),
- an open_clip pretrained tag (``pretrained="openai"``; downloads when a hub is reachable),
- a local file: an open_clip checkpoint (``.bin``/``.pth``/``.safetensors``) or an OpenAI CLIP ``.pt``
  (TorchScript archive),
- a local directory in open_clip's own layout (``open_clip_config.json`` + weights), named as
  ``backbone="local-dir:/path"``: what a Hugging Face CLIP repo looks like, and what the offline
  quickstart saves its small pre-trained image model as.
Untrusted files are never unpickled: safetensors, ``torch.load(weights_only=True)`` or TorchScript.
"""
from __future__ import annotations

import copy
import json
import zipfile
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn as nn
from open_clip.model import _build_vision_tower  # the one builder open_clip uses for every ViT tower

CONFIG_DIR = Path(__file__).parent / "model_configs"
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


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a weights file, without unpickling arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path))
    if zipfile.is_zipfile(path) and any(n.endswith("constants.pkl") for n in zipfile.ZipFile(path).namelist()):
        return torch.jit.load(str(path), map_location="cpu").state_dict()  # OpenAI CLIP .pt archive
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle with custom classes, or not a checkpoint at all
        raise ValueError(f"{path} is not a loadable weights file (safetensors, TorchScript, or a plain "
                         f"tensor state dict; arbitrary pickles are refused): {e}") from e
    if isinstance(sd, dict) and "state_dict" in sd:
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise ValueError(f"{path} holds a {type(sd).__name__}, not a state dict")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def _visual_part(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    visual = {k[len("visual."):]: v for k, v in sd.items() if k.startswith("visual.")}
    return visual or sd


def _resolve_weights(name: str, pretrained: str | None, model_cfg: dict) -> Path | None:
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
    model_cfg["quick_gelu"] = tag_cfg.get("quick_gelu", model_cfg.get("quick_gelu", False))
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
    model_cfg = get_model_config(name)
    weights = _resolve_weights(name, pretrained, model_cfg)
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
    tmp = folder / (WEIGHTS_FILE + ".tmp")
    save_file(tensors, str(tmp))
    tmp.replace(folder / WEIGHTS_FILE)
    (folder / CONFIG_FILE).write_text(json.dumps({"model_cfg": model_cfg}, indent=2))
    return f"{LOCAL_DIR}{folder}"
