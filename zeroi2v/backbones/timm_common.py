"""What every timm backbone family shares: names with keyword arguments, architectures as data, weights.

A timm backbone is named ``timm:MODEL[.TAG][?key=value&key=value]``: a timm model name, optionally its
pretrained tag (``vit_base_patch16_224.augreg_in21k``, the ImageNet-21K weights of the paper's Table 13
rows) and keyword arguments for timm's model constructor (``?img_size=64&depth=2``: small test towers,
other input sizes). The architecture is stored as data, ``{"model_name", "kwargs", "width", "layers",
"heads", "image_size", "mean", "std"}``; ``build`` re-creates the tower from it with random weights, no
download (a merged checkpoint holds every weight).

Weights (``pretrained``):
- None: random weights;
- a local file: a timm state dict as safetensors (what the timm hub repos hold, ``model.safetensors``)
  or a ``torch.save`` file read with ``torch.load(weights_only=True)`` (``zeroi2v.backbones.weights``);
  the classifier (``head.*``) is dropped, anything else must fit exactly;
- ``timm``: the pretrained weights of the name's tag (timm's default tag when the name has none),
  downloaded by timm when a hub is reachable; any other word is a tag (``pretrained: augreg_in21k``).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from zeroi2v.backbones.base import Backbone
from zeroi2v.backbones.weights import load_state_dict_file

HUB = "timm"
"""``pretrained`` value that asks timm for the name's own pretrained tag."""
_NAME = re.compile(r"^([A-Za-z0-9_]+)(?:\.([A-Za-z0-9_]+))?(?:\?(.*))?$")


def _value(text: str) -> Any:
    """A keyword value of a backbone name: int, float, true/false/none, a tuple ``(2,2,6,2)``, or the text."""
    low = text.lower()
    if low[:1] in "([" and low[-1:] in ")]":  # a tuple: depths=(2,2,6,2)
        return tuple(_value(t.strip()) for t in text[1:-1].split(",") if t.strip())
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_name(name: str) -> tuple[str, dict[str, Any]]:
    """``'vit_tiny_patch16_224.augreg_in21k?img_size=64&depth=2'`` -> (model name with tag, kwargs)."""
    m = _NAME.match(name.strip())
    if not m:
        raise ValueError(f"malformed timm backbone name {name!r}; write timm:MODEL[.TAG][?key=value&key=value], "
                         f"e.g. timm:vit_base_patch16_224.augreg_in21k")
    model = m[1] + (f".{m[2]}" if m[2] else "")
    kwargs = {}
    for part in filter(None, (m[3] or "").split("&")):
        key, eq, text = part.partition("=")
        if not eq or not key.isidentifier():
            raise ValueError(f"malformed keyword {part!r} in timm backbone name {name!r}; write key=value")
        kwargs[key] = _value(text)
    return model, kwargs


def is_swin(name: str) -> bool:
    """Whether a timm name (``MODEL[.TAG][?...]``) is a Swin Transformer's: the ``timm:`` prefix serves both
    the ViT and the Swin family, and timm names every Swin ``swin*`` (v2 ones are refused by the family)."""
    return name.strip().lower().startswith("swin")


def _timm():
    import timm
    return timm


def create_tower(model_name: str, kwargs: dict[str, Any], pretrained: bool = False,
                 device: str | torch.device | None = None) -> nn.Module:
    """``timm.create_model`` without a classifier; unknown names and bad keywords are one-line ValueErrors."""
    timm = _timm()
    arch = model_name.split(".")[0]
    if not timm.is_model(arch):
        close = timm.list_models(f"*{arch.split('_')[0]}*")[:8]
        raise ValueError(f"unknown timm model {arch!r}; similar: {', '.join(close) or 'none'}")
    try:
        return timm.create_model(model_name, pretrained=pretrained, **{**kwargs, "num_classes": 0},
                                 **({"device": device} if device is not None else {}))
    except TypeError as e:
        raise ValueError(f"timm model {model_name} does not take the keywords {sorted(kwargs)} ({e})") from None


def architecture(name: str, facts: Callable[[nn.Module], dict[str, int]]) -> dict[str, Any]:
    """A name's architecture as data: the tower is built on the meta device (no memory, no weights) and
    checked and measured by ``facts`` (the family's; it raises ValueError for towers it cannot wrap)."""
    model_name, kwargs = parse_name(name)
    tower = create_tower(model_name, kwargs, device="meta")
    cfg = getattr(tower, "pretrained_cfg", {}) or {}
    mean = [round(255 * float(v), 3) for v in cfg.get("mean", (0.485, 0.456, 0.406))]
    std = [round(255 * float(v), 3) for v in cfg.get("std", (0.229, 0.224, 0.225))]
    return {"model_name": model_name, "kwargs": kwargs, **facts(tower), "mean": mean, "std": std}


def arch_facts(arch: dict[str, Any]) -> dict[str, int]:
    """``width``, ``layers``, ``heads``, ``image_size`` stored in a timm architecture (checked types)."""
    out = {}
    for key in ("width", "layers", "heads", "image_size"):
        value = arch.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"timm architecture data needs '{key}' (a whole number >= 1), got {value!r}")
        out[key] = value
    if not isinstance(arch.get("model_name"), str) or not isinstance(arch.get("kwargs", {}), dict):
        raise ValueError("timm architecture data needs 'model_name' (a string) and 'kwargs' (an object)")
    return out


def _tagged(model_name: str, pretrained: str) -> str:
    """The timm name whose weights ``pretrained`` ('timm' or a tag) asks for."""
    if pretrained == HUB:
        return model_name
    base, _, tag = model_name.partition(".")
    if tag and tag != pretrained:
        raise ValueError(f"the backbone name asks for the tag {tag!r} but pretrained={pretrained!r}; "
                         f"write pretrained: {HUB} to use the name's tag, or drop the tag from the name")
    return f"{base}.{pretrained}"


def _looks_like_path(text: str) -> bool:
    return "/" in text or "\\" in text or Path(text).suffix in (".safetensors", ".bin", ".pth", ".pt", ".ckpt")


def build_tower(arch: dict[str, Any], check: Callable[[nn.Module], Any]) -> nn.Module:
    """A tower with random weights from architecture data, checked by the family's ``check``."""
    arch_facts(arch)
    tower = create_tower(arch["model_name"], dict(arch.get("kwargs", {})))
    check(tower)
    return tower


def load_tower(arch: dict[str, Any], pretrained: str | None, check: Callable[[nn.Module], Any]) -> nn.Module:
    """The tower of ``arch`` with the weights ``pretrained`` names (see the module docstring)."""
    if not pretrained:
        return build_tower(arch, check)
    if Path(pretrained).is_file():
        tower = build_tower(arch, check)
        sd = {k: v for k, v in load_state_dict_file(pretrained).items() if not k.startswith("head.")}
        missing, unexpected = tower.load_state_dict(sd, strict=False)
        if missing or unexpected:
            raise ValueError(f"{pretrained} does not fit timm model {arch['model_name']}: missing {missing[:4]}"
                             f"{'...' if len(missing) > 4 else ''}, unexpected {unexpected[:4]}"
                             f"{'...' if len(unexpected) > 4 else ''}; pass the weights of this model (timm's layout)")
        return tower
    if _looks_like_path(pretrained):
        raise FileNotFoundError(f"weights file not found: {pretrained}")
    name = _tagged(arch["model_name"], pretrained)
    try:
        tower = create_tower(name, dict(arch.get("kwargs", {})), pretrained=True)
    except ValueError:
        raise
    except Exception as e:
        raise RuntimeError(
            f"could not get timm's pretrained weights of {name} ({type(e).__name__}); no hub is reachable "
            f"(HF_HUB_OFFLINE set or no network) or the tag is unknown. Pass a local file instead: "
            f"pretrained=/path/to/model.safetensors (timm's layout, as on the hub repo timm/{name})") from None
    check(tower)
    return tower


class TimmTower(Backbone):
    """What the timm families share: the architecture read from the name, the tower with its weights, and
    a random build from the architecture data. ``check`` validates a built tower and gives its facts
    (``check_vit``, ``check_swin``); a family sets it with ``staticmethod``."""

    check: Callable[[nn.Module], dict[str, Any]]

    @classmethod
    def arch(cls, name: str) -> dict[str, Any]:
        return architecture(name, cls.check)

    @classmethod
    def create(cls, name: str, pretrained: str | None) -> tuple[nn.Module, dict[str, Any]]:
        arch = cls.arch(name)
        return load_tower(arch, pretrained, cls.check), arch

    @classmethod
    def build(cls, arch: dict[str, Any]) -> nn.Module:
        return build_tower(arch, cls.check)
