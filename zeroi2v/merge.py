"""Structural re-parameterisation (paper Eq. 11): fold every adapter into its projection.

For an affine adapter ``(W_A, b_A)`` (see ``LinearAdapter.as_affine``) next to a projection ``(W_P, b_P)``:
    adapter *before* P:  W' = W_P · W_A,   b' = W_P · b_A + b_P
    adapter *after*  P:  W' = W_A · W_P,   b' = W_A · b_P + b_A
and for a parallel ("delta") adapter ``P(x) + x·ΔWᵀ + Δb``:  W' = W_P + ΔW,  b' = b_P + Δb.
Projections are found through the backbone family's protocol (``zeroi2v.backbones``).
The merged model is the plain image ViT plus STDHA (no parameters) plus the temporal embedding and
classifier. A merged checkpoint is a directory: ``model.safetensors`` + ``config.json``.
"""
from __future__ import annotations

import copy
import json
import typing
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from zeroi2v.adapters import SLOTS
from zeroi2v.backbones import BACKBONES, DEFAULT_FAMILY, Backbone, Projection, display_name, family_of
from zeroi2v.files import atomic_write, atomic_write_text
from zeroi2v.model import ModelConfig, ZeroI2V, build_from_backbone_cfg

FORMAT = "zeroi2v-merged"
FORMAT_VERSION = 2
"""1: the first layout (flat STDHA keys, ``offsets_per_layer``, the backbone's path). 2: ``model.temporal``
holds the complete temporal-operator spec (per layer), and ``model.backbone`` and ``model.pretrained``
hold display names (``image_model (local folder)``), never a path on the machine that merged. Both load."""
RESERVED = ("format", "version", "model", "backbone_cfg", "offsets_per_layer", "image_size")
"""Keys of config.json that ``save_merged``'s ``extra`` may not overwrite."""
REMAKE = "re-create the checkpoint with `zeroi2v merge RUN --out DIR`"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def _fold(weight: torch.Tensor, bias: torch.Tensor | None, adapter: nn.Module, side: str):
    """Eq. (11): an affine adapter (W_A, b_A) folded into the input ("before") or output ("after") side."""
    w_a, b_a = adapter.as_affine()
    w = weight.double()
    b = bias.double() if bias is not None else torch.zeros(w.shape[0], dtype=torch.float64, device=w.device)
    if side == "before":
        return w @ w_a, w @ b_a + b
    return w_a @ w, w_a @ b + b_a


def _add_delta(weight: torch.Tensor, bias: torch.Tensor | None, delta: tuple[torch.Tensor, torch.Tensor],
               rows: slice):
    """A parallel adapter's (ΔW, Δb) added to the projection (``rows``: this projection's share)."""
    d_w, d_b = delta
    b = bias.double() if bias is not None else torch.zeros(weight.shape[0], dtype=torch.float64)
    return weight.double() + d_w.double()[rows], b + d_b.double()[rows]


def _assign(p: Projection, new_w: torch.Tensor, new_b: torch.Tensor) -> None:
    if p.bias is None:
        raise ValueError("cannot fold an adapter bias into a projection without bias")
    p.weight.data[p.rows] = new_w.to(p.weight.dtype)
    p.bias.data[p.rows] = new_b.to(p.bias.dtype)


def _targets(family: type[Backbone], projection: str) -> list[str]:
    """The projections a slot's adapter acts on: a shared 'qkv' slot of separate Q/K/V is all three."""
    return ["q", "k", "v"] if projection == "qkv" and "qkv" not in family.layout.projections else [projection]


@torch.no_grad()
def merge_adapters(model: ZeroI2V) -> ZeroI2V:
    """A copy of ``model`` with every adapter folded into its projection (eval mode).

    Each adapter kind declares its rule (``Adapter.merge``): 'affine' adapters fold into the side of
    the projection their slot names, 'delta' adapters add their weight delta; others are refused.
    """
    refusal = merge_refusal(model)
    if refusal:
        raise ValueError(refusal)
    merged = copy.deepcopy(model).eval()
    family = merged.family
    for i, blk in enumerate(merged.blocks):
        for slot, adapter in blk.adapters.items():
            rule = adapter.merge
            where = SLOTS[slot]
            delta = adapter.as_delta() if rule == "delta" else None
            start = 0
            for name in _targets(family, where.projection):
                p = family.projection(blk, name)
                w, b = p.weight[p.rows], p.bias[p.rows] if p.bias is not None else None
                rows = slice(start, start + w.shape[0])
                start += w.shape[0]
                _assign(p, *(_fold(w, b, adapter, where.side) if rule == "affine" else _add_delta(w, b, delta, rows)))
        blk.adapters = nn.ModuleDict()
    merged.cfg = replace(model.cfg, adapter=None, finetune="linear_probe")  # frozen: nothing left to tune
    merged.adapter_spec = None
    merged.set_finetune("linear_probe")
    for p in merged.parameters():
        p.requires_grad_(False)
    return merged


def merge_refusal(model: ZeroI2V) -> str | None:
    """Why ``model`` cannot be merged, in one line naming its adapter kind (None: it can). Checked before
    anything is copied or written; the run stays usable unmerged (``zeroi2v eval/predict/demo --run``)."""
    for i, blk in enumerate(model.blocks):
        for slot, adapter in blk.adapters.items():
            if getattr(adapter, "merge", None) not in ("affine", "delta"):
                kind = getattr(adapter, "registry_name", type(adapter).__name__)
                why = getattr(adapter, "not_mergeable", "it declares no merge rule")
                return (f"adapter kind {kind!r} (block {i}, slot {slot}) cannot be merged: {why}. Use the run "
                        f"unmerged instead: `zeroi2v eval CONFIG --run RUN`, `zeroi2v predict --run RUN`, "
                        f"`zeroi2v demo --run RUN`")
    return None


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
    model_data = {**model.cfg.to_dict(), "temporal": model.temporal_spec,  # the complete spec, per layer
                  "backbone": display_name(model.cfg.backbone), "pretrained": display_name(model.cfg.pretrained)}
    config = {"format": FORMAT, "version": FORMAT_VERSION, "model": model_data,
              "backbone_cfg": model.backbone_cfg, "image_size": model.image_size, **(extra or {})}
    check_merged_config(config, f"cannot write {folder / CONFIG}")
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(folder / WEIGHTS, lambda tmp: save_file(tensors, tmp))
    atomic_write_text(folder / CONFIG, json.dumps(config, indent=2))
    return folder


def read_merged_config(folder: str | Path) -> dict[str, Any]:
    """A merged checkpoint's config.json, checked (``check_merged_config``): a damaged or tampered file is
    a one-line ValueError naming the file, the key and the fix, never a KeyError later on."""
    return _read(folder)[0]


def load_merged(folder: str | Path, device: str | torch.device = "cpu") -> ZeroI2V:
    """Load a merged checkpoint: the plain ViT + temporal operator + temporal embedding + head, no adapters.
    The model's ``cfg.class_names`` are the names the checkpoint records (its "class_names" entry first)."""
    from safetensors.torch import load_file
    folder = Path(folder)
    config, cfg = _read(folder)
    weights = folder / WEIGHTS
    try:
        model = build_from_backbone_cfg(cfg, config["backbone_cfg"])
    except (TypeError, ValueError, KeyError, NotImplementedError) as e:
        raise ValueError(f"{folder / CONFIG}: backbone_cfg does not describe a ViT this version can build "
                         f"({e}); {REMAKE}") from None
    _check_weight_shapes(weights, model, config["backbone_cfg"])
    model.load_state_dict(load_file(str(weights)))
    if config.get("class_names"):  # checked against the classifier by check_merged_config
        model.cfg = replace(model.cfg, class_names=list(config["class_names"]))
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


def _check_weight_shapes(weights: Path, model: ZeroI2V, arch: dict[str, Any]) -> None:
    """The safetensors header against the model its config describes, before any weight is read."""
    from safetensors import safe_open
    try:
        with safe_open(str(weights), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:  # SafetensorError (bad header), OSError
        raise ValueError(f"{weights} is not a readable safetensors file ({e}); {REMAKE}") from None
    config, differ = weights.with_name(CONFIG), f"the two files belong to different models; {REMAKE}"
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if shapes.get("head.weight") != want["head.weight"]:
        head = shapes.get("head.weight")
        raise ValueError(f"{config} describes a classifier of shape {list(want['head.weight'])} (model.num_classes x "
                         f"width) but {weights} holds {list(head) if head else 'none'}: {differ}")
    missing, unexpected = sorted(set(want) - set(shapes)), sorted(set(shapes) - set(want))
    if missing or unexpected:
        layers = model.family.facts(arch)["layers"]
        raise ValueError(f"{config} describes {layers} layers (backbone_cfg) but {weights} holds other tensors "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]}): {differ}")
    wrong = next((k for k in want if shapes[k] != want[k]), None)
    if wrong is not None:
        raise ValueError(f"size mismatch between {config} and {weights} for {wrong}: {list(want[wrong])} vs "
                         f"{list(shapes[wrong])}: {differ}")


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
    layers, heads = _check_arch(config, bad)
    offsets = config.get("offsets_per_layer")
    if offsets is not None and not (isinstance(offsets, list) and len(offsets) == layers and all(
            isinstance(o, list) and len(o) == heads and all(_whole(x) for x in o) for o in offsets)):
        bad(f"'offsets_per_layer' must be {layers} lists (one per layer) of {heads} whole numbers (one Δt per "
            f"head), got {json.dumps(offsets)[:80]}; {REMAKE}")
    from zeroi2v.config import check_model_config, model_config_from_data
    model = {**config["model"], "pretrained": None, "adapter": None}
    if offsets is not None:  # format 1: STDHA's offsets beside the model's flat keys
        model["offsets"] = offsets
    try:
        cfg = model_config_from_data(model, notice=False)
        check_model_config(cfg, config["backbone_cfg"])
    except ValueError as e:
        message = str(e).replace("model.temporal.offsets:", "'offsets_per_layer':", 1) if offsets is not None else str(e)
        bad(f"{message}; {REMAKE}")
    _check_extras(config, cfg, bad)
    return cfg


def _whole(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_arch(config: dict[str, Any], bad) -> tuple[int, int]:
    """Layers and heads of the stored architecture, checked by the backbone's family (open_clip's own
    config checks below; other families check their data in ``facts``)."""
    backbone = config["model"].get("backbone")
    family = family_of(backbone if isinstance(backbone, str) else "")[0]
    if family is BACKBONES[DEFAULT_FAMILY]:
        vision = _check_vision(config["backbone_cfg"], bad)
        return vision["layers"], vision["width"] // vision.get("head_width", 64)
    try:
        facts = family.facts(config["backbone_cfg"])
    except (ValueError, KeyError, TypeError) as e:
        bad(f"'backbone_cfg': {e}; {REMAKE}")
    return facts["layers"], facts["heads"]


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
