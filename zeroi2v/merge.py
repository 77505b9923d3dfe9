"""Structural re-parameterisation (paper Eq. 11): fold every linear adapter into its projection.

For an adapter ``(W_A, b_A)`` (see ``LinearAdapter.as_affine``) next to a projection ``(W_P, b_P)``:
    adapter *before* P:  W' = W_P · W_A,   b' = W_P · b_A + b_P
    adapter *after*  P:  W' = W_A · W_P,   b' = W_A · b_P + b_A
The merged model is the plain image ViT plus STDHA (no parameters) plus the temporal embedding and
classifier. A merged checkpoint is a directory: ``model.safetensors`` + ``config.json``.
"""
from __future__ import annotations

import copy
import json
import os
import typing
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from zeroi2v.model import ModelConfig, ZeroI2V, build_from_backbone_cfg, display_name

FORMAT = "zeroi2v-merged"
FORMAT_VERSION = 2
"""1: the first layout. 2: ``model.backbone`` and ``model.pretrained`` hold display names
(``image_model (local folder)``), never a path on the machine that merged. Both load."""
RESERVED = ("format", "version", "model", "backbone_cfg", "offsets_per_layer", "image_size")
"""Keys of config.json that ``save_merged``'s ``extra`` may not overwrite."""
REMAKE = "re-create the checkpoint with `zeroi2v merge RUN --out DIR`"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def _fold_before(weight: torch.Tensor, bias: torch.Tensor | None, adapter: nn.Module):
    w_a, b_a = adapter.as_affine()
    w = weight.double()
    new_w = w @ w_a
    new_b = w @ b_a + (bias.double() if bias is not None else 0)
    return new_w, new_b


def _fold_after(weight: torch.Tensor, bias: torch.Tensor | None, adapter: nn.Module):
    w_a, b_a = adapter.as_affine()
    new_w = w_a @ weight.double()
    new_b = w_a @ (bias.double() if bias is not None else torch.zeros(weight.shape[0], dtype=torch.float64)) + b_a
    return new_w, new_b


def _assign(weight: nn.Parameter, bias: nn.Parameter | None, new_w: torch.Tensor, new_b: torch.Tensor,
            rows: slice = slice(None)) -> None:
    weight.data[rows] = new_w.to(weight.dtype)
    if bias is None:
        raise ValueError("cannot fold an adapter bias into a projection without bias")
    bias.data[rows] = new_b.to(bias.dtype)


@torch.no_grad()
def merge_adapters(model: ZeroI2V) -> ZeroI2V:
    """A copy of ``model`` with every adapter folded into its neighbouring projection (eval mode)."""
    merged = copy.deepcopy(model).eval()
    for blk in merged.blocks:
        for slot, adapter in blk.adapters.items():
            if not getattr(adapter, "mergeable", False):
                raise ValueError(f"adapter {type(adapter).__name__} in slot {slot} is not linear; it cannot be merged")
            attn, mlp = blk.attn, blk.mlp
            if slot == "attn_in":
                _assign(attn.in_proj_weight, attn.in_proj_bias, *_fold_before(attn.in_proj_weight, attn.in_proj_bias, adapter))
            elif slot in ("q_in", "k_in", "v_in"):
                c = attn.embed_dim
                rows = slice(c * "qkv".index(slot[0]), c * ("qkv".index(slot[0]) + 1))
                _assign(attn.in_proj_weight, attn.in_proj_bias,
                        *_fold_before(attn.in_proj_weight[rows], attn.in_proj_bias[rows], adapter), rows)
            elif slot == "attn_out":
                p = attn.out_proj
                _assign(p.weight, p.bias, *_fold_after(p.weight, p.bias, adapter))
            elif slot == "mlp_in":
                p = mlp.c_fc
                _assign(p.weight, p.bias, *_fold_before(p.weight, p.bias, adapter))
            elif slot == "mlp_out":
                p = mlp.c_proj
                _assign(p.weight, p.bias, *_fold_after(p.weight, p.bias, adapter))
            else:
                raise ValueError(f"no merge rule for adapter slot {slot!r}")
        blk.adapters = nn.ModuleDict()
    merged.cfg = replace(model.cfg, adapter=None, finetune="linear_probe")  # frozen: nothing left to tune
    merged.set_finetune("linear_probe")
    for p in merged.parameters():
        p.requires_grad_(False)
    return merged


def save_merged(model: ZeroI2V, folder: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write a merged checkpoint directory; refuses a model that still has adapters, and a config that
    would not load back (``check_merged_config``). The backbone and weights are stored by their display
    names (``image_model (local folder)``), never by a path on this machine: the checkpoint holds every
    weight, and it may be served or shared."""
    from safetensors.torch import save_file
    if any(len(b.adapters) for b in model.blocks):
        raise ValueError("model still has adapters: call merge_adapters(model) first")
    clash = sorted(set(extra or {}) & set(RESERVED))
    if clash:
        raise ValueError(f"extra key(s) {clash} would overwrite the checkpoint's own entries; rename them")
    folder = Path(folder)
    model_data = {**model.cfg.to_dict(), "backbone": display_name(model.cfg.backbone),
                  "pretrained": display_name(model.cfg.pretrained)}
    config = {"format": FORMAT, "version": FORMAT_VERSION, "model": model_data,
              "backbone_cfg": model.backbone_cfg, "offsets_per_layer": [list(o) for o in model.offsets],
              "image_size": model.image_size, **(extra or {})}
    check_merged_config(config, f"cannot write {folder / CONFIG}")
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    _atomic_write(folder / WEIGHTS, lambda tmp: save_file(tensors, tmp))
    _atomic_write(folder / CONFIG, lambda tmp: Path(tmp).write_text(json.dumps(config, indent=2), encoding="utf-8"))
    return folder


def read_merged_config(folder: str | Path) -> dict[str, Any]:
    """A merged checkpoint's config.json, checked (``check_merged_config``): a damaged or tampered file is
    a one-line ValueError naming the file, the key and the fix, never a KeyError later on."""
    return _read(folder)[0]


def load_merged(folder: str | Path, device: str | torch.device = "cpu") -> ZeroI2V:
    """Load a merged checkpoint: the plain ViT + STDHA + temporal embedding + head, no adapter code."""
    from safetensors.torch import load_file
    folder = Path(folder)
    config, cfg = _read(folder)
    weights = folder / WEIGHTS
    _check_weight_shapes(weights, cfg, config["backbone_cfg"]["vision_cfg"])
    try:
        model = build_from_backbone_cfg(cfg, config["backbone_cfg"])
    except (TypeError, ValueError, KeyError, NotImplementedError) as e:
        raise ValueError(f"{folder / CONFIG}: backbone_cfg does not describe a ViT this version can build "
                         f"({e}); {REMAKE}") from None
    try:
        missing, unexpected = model.load_state_dict(load_file(str(weights)), strict=False)
    except RuntimeError as e:  # a size mismatch the shape check above did not cover
        detail = next((ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln), str(e).splitlines()[0])
        raise ValueError(f"{weights} does not match {folder / CONFIG} ({detail}); {REMAKE}") from None
    if missing or unexpected:
        raise ValueError(f"{weights} does not match {folder / CONFIG}: missing {missing[:5]}, unexpected "
                         f"{unexpected[:5]}; {REMAKE}")
    model.set_finetune("linear_probe")
    return model.to(device).eval()


def _read(folder: str | Path) -> tuple[dict[str, Any], ModelConfig]:
    folder = Path(folder)
    path = folder / CONFIG
    if not path.is_file() or not (folder / WEIGHTS).is_file():
        raise FileNotFoundError(f"{folder} is not a merged checkpoint (needs {CONFIG} and {WEIGHTS}); "
                                f"make one with `zeroi2v merge` or `zeroi2v quickstart`")
    from zeroi2v.data.formats import read_json
    try:
        config = read_json(path)
    except ValueError as e:  # not UTF-8, not JSON: named by file and line
        raise ValueError(f"{e}; the file is damaged: {REMAKE}") from None
    return config, check_merged_config(config, str(path))


def _check_weight_shapes(weights: Path, cfg: ModelConfig, vision: dict[str, Any]) -> None:
    """The safetensors header against the config, before any weights are built or read."""
    from safetensors import safe_open
    try:
        with safe_open(str(weights), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:  # SafetensorError (bad header), OSError
        raise ValueError(f"{weights} is not a readable safetensors file ({e}); {REMAKE}") from None
    config = weights.with_name(CONFIG)
    head, want = shapes.get("head.weight"), (cfg.num_classes, int(vision["width"]))
    if head != want:
        raise ValueError(f"{config} describes a classifier of shape {list(want)} (model.num_classes x width) but "
                         f"{weights} holds {list(head) if head else 'none'}: the two files belong to different "
                         f"models; {REMAKE}")
    blocks = {k.split(".")[3] for k in shapes if k.startswith("visual.transformer.resblocks.")}
    if len(blocks) != int(vision["layers"]):
        raise ValueError(f"{config} describes {vision['layers']} layers (backbone_cfg.vision_cfg.layers) but "
                         f"{weights} holds {len(blocks)}: the two files belong to different models; {REMAKE}")


def check_merged_config(config: Any, where: str) -> ModelConfig:
    """Check a merged checkpoint's config.json data: format and version, the required keys and their
    types, the offsets' shape (one Δt per head for every layer), class names (one per class, or none)
    and the extras the CLI and app read. Returns the model config it describes, with the stored offsets.

    Every problem is a ValueError ``"{where}: {what is wrong}; {the fix}"``; ``where`` names the file.
    """
    def bad(message: str) -> typing.NoReturn:
        raise ValueError(f"{where}: {message}")

    if not isinstance(config, dict):
        bad(f"holds a JSON {type(config).__name__}, not an object with format, version, model, ...; {REMAKE}")
    if config.get("format") != FORMAT:
        bad(f"'format' is {config.get('format')!r}, not {FORMAT!r}: not a merged ZeroI2V checkpoint; point at a "
            f"folder written by `zeroi2v merge` or `zeroi2v quickstart`")
    version = config.get("version")
    if not _whole(version) or version < 1:
        bad(f"'version' must be a whole number >= 1, got {version!r}; {REMAKE}")
    if version > FORMAT_VERSION:
        bad(f"'version' {version} was written by a newer zeroi2v (this one reads up to {FORMAT_VERSION}); "
            f"upgrade zeroi2v")
    for key in ("model", "backbone_cfg"):
        if key not in config:
            bad(f"the required key {key!r} is missing; {REMAKE}")
        if not isinstance(config[key], dict):
            bad(f"{key!r} must be a JSON object, got a JSON {type(config[key]).__name__}; {REMAKE}")
    vision = _check_vision(config["backbone_cfg"], bad)
    layers, heads = vision["layers"], vision["width"] // vision.get("head_width", 64)
    offsets = config.get("offsets_per_layer")
    if offsets is not None and not (isinstance(offsets, list) and len(offsets) == layers and all(
            isinstance(o, list) and len(o) == heads and all(_whole(x) for x in o) for o in offsets)):
        bad(f"'offsets_per_layer' must be {layers} lists (one per layer) of {heads} whole numbers (one Δt per "
            f"head), got {json.dumps(offsets)[:80]}; {REMAKE}")
    from zeroi2v.config import check_model_config, model_config_from_data
    try:
        cfg = model_config_from_data({**config["model"], "pretrained": None, "adapter": None})
        cfg = replace(cfg, offsets=offsets) if offsets is not None else cfg
        check_model_config(cfg, vision)
    except ValueError as e:
        message = str(e).replace("model.offsets:", "'offsets_per_layer':", 1) if offsets is not None else str(e)
        bad(f"{message}; {REMAKE}")
    _check_extras(config, cfg, bad)
    return cfg


def _whole(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_vision(backbone_cfg: dict[str, Any], bad) -> dict[str, Any]:
    vision = backbone_cfg.get("vision_cfg")
    if not isinstance(vision, dict) or not _whole(backbone_cfg.get("embed_dim")):
        bad(f"'backbone_cfg' needs 'embed_dim' (a whole number) and 'vision_cfg' (an object), as open_clip "
            f"model configs have them; {REMAKE}")
    for key in ("width", "layers", "head_width"):
        value = vision.get(key, 64 if key == "head_width" else None)  # open_clip's default head width
        if not _whole(value) or value < 1:
            bad(f"'backbone_cfg.vision_cfg.{key}' must be a whole number >= 1, got {value!r}; {REMAKE}")
    if vision["width"] % vision.get("head_width", 64):
        bad(f"'backbone_cfg.vision_cfg.width' {vision['width']} is not a multiple of head_width "
            f"{vision.get('head_width', 64)}; {REMAKE}")
    return vision


def _check_extras(config: dict[str, Any], cfg: ModelConfig, bad) -> None:
    """The entries beside the model that ``predict`` and the demo read."""
    for key, names in (("class_names", config.get("class_names")), ("model.class_names", cfg.class_names)):
        if not names:
            continue  # absent: the classes are shown by number
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, (str, int, float)) for n in names):
            bad(f"{key!r} must be a list of class names, got {repr(names)[:80]}; list one name per class "
                f"or remove {key!r}")
        if len(names) != cfg.num_classes:
            bad(f"{key!r} has {len(names)} name{'s' * (len(names) != 1)} but the classifier has "
                f"{cfg.num_classes} classes (model.num_classes); list one name per class, in label order, "
                f"or remove {key!r}")
    examples, facts, size = config.get("examples"), config.get("facts"), config.get("image_size")
    if examples is not None and not (isinstance(examples, list) and all(
            isinstance(e, str) or (isinstance(e, dict) and isinstance(e.get("path"), str)) for e in examples)):
        bad("'examples' must be a list of video paths (relative to the checkpoint folder); fix or remove it")
    if facts is not None and not isinstance(facts, dict):
        bad(f"'facts' must be a JSON object (name: value), got a JSON {type(facts).__name__}; fix or remove it")
    if size is not None and (not _whole(size) or size < 1):
        bad(f"'image_size' must be a whole number >= 1, got {size!r}; {REMAKE}")


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(str(tmp))
    os.replace(tmp, path)
