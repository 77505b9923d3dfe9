"""Image backbones: families of towers behind one protocol (``base.Backbone``), named with a prefix.

    open_clip:ViT-B-16   ViT-B-16   local-dir:/path   zeroi2v-tiny      -> ``OpenCLIP`` (the default family)
    timm:vit_base_patch16_224.augreg_in21k                              -> ``TimmViT``
    timm:swin_base_patch4_window7_224                                   -> ``TimmSwin`` (timm names swin*)

A name without a known family prefix is an open_clip name, so configs written before families existed
keep working. ``family_of(name)`` gives the family class and the name inside the family.
"""
from __future__ import annotations

import re
from pathlib import PurePath

from zeroi2v.backbones.base import BACKBONES, PROJECTIONS, Backbone, BlockLayout, Projection
from zeroi2v.backbones.openclip import (CONFIG_DIR, CONFIG_FILE, LOCAL_DIR, WEIGHTS_FILE, OpenCLIP,
                                        backbone_architecture, build_visual, create_visual, get_model_config,
                                        list_backbones, save_local_dir)
from zeroi2v.backbones.weights import (describe_contents, is_torchscript_archive, load_state_dict_file,
                                       load_torch_data, read_torchscript_tensors)
from zeroi2v.backbones.timm_vit import TimmViT
from zeroi2v.backbones.timm_swin import TimmSwin

DEFAULT_FAMILY = "open_clip"

__all__ = ["BACKBONES", "PROJECTIONS", "Backbone", "BlockLayout", "Projection", "OpenCLIP", "TimmViT", "TimmSwin",
           "family_of", "display_name", "CONFIG_DIR", "CONFIG_FILE", "LOCAL_DIR", "WEIGHTS_FILE", "build_visual", "create_visual",
           "get_model_config", "list_backbones", "load_state_dict_file", "save_local_dir", "backbone_architecture",
           "describe_contents", "is_torchscript_archive", "load_torch_data", "read_torchscript_tensors"]


def family_of(name: str) -> tuple[type[Backbone], str]:
    """(family class, name inside the family) for a backbone name, prefix optional for open_clip."""
    for family in BACKBONES.values():
        if family.prefix and name.startswith(family.prefix) and family.claims(name[len(family.prefix):]):
            return family, name[len(family.prefix):]
    return BACKBONES[DEFAULT_FAMILY], name


def display_name(source: str | None) -> str | None:
    """A backbone or weights name fit to show and to store: a local folder or file by its own name, never
    the path on this machine (``local-dir:/srv/x/image_model`` -> ``image_model (local folder)``,
    ``/srv/w/clip.pt`` -> ``clip.pt (local file)``); hub names and tags are returned as they are, and a
    family prefix other than the default one is kept."""
    if not isinstance(source, str):
        return source
    family, inner = family_of(source)
    prefix = source[:len(source) - len(inner)] if BACKBONES.get_class(DEFAULT_FAMILY) is not family else ""
    folder = inner.startswith(LOCAL_DIR)
    path = inner[len(LOCAL_DIR):] if folder else inner
    if not folder and not (("/" in path or "\\" in path) and not re.match(r"[A-Za-z][\w+.-]+:", path)):
        return source  # a name or tag ('ViT-B-16', 'openai', 'hf-hub:org/repo'), not a path
    name = PurePath(path.replace("\\", "/")).name
    kind = "local folder" if folder else "local file"
    return prefix + (f"{name} ({kind})" if name else kind)
