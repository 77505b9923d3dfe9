"""What network a run builds, as plain data: ``ModelConfig`` (the ``model:`` section of a config), the
upgrade of the old flat keys, and its validation, in which each component checks its own spec.

Nothing here imports torch until ``check_model_config`` runs (it looks up the backbone's architecture and
the temporal operator and adapter classes).
"""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field, fields
from typing import Any

from zeroi2v.config_files import NULLS

CLIP_MEAN = (122.769, 116.74, 104.04)  # OpenAI CLIP pixel statistics, 0–255 scale, RGB
CLIP_STD = (68.493, 66.63, 70.321)
FINETUNE_MODES = ("adapters", "full", "linear_probe", "temporal_heads")

@dataclass
class ModelConfig:
    """Everything that defines a video model, as plain data (YAML/JSON round-trips)."""

    backbone: str = "ViT-B-16"
    """Backbone name with an optional family prefix (``zeroi2v.backbones``): an open_clip model name
    ('ViT-B-16', or 'open_clip:ViT-B-16'), one of ours (``zeroi2v/model_configs``), or ``local-dir:/path``."""
    pretrained: str | None = None
    """open_clip tag ('openai', 'laion2b_s34b_b88k'...), a weights file, or None (random init)."""
    num_classes: int = 400
    """Classifier outputs."""
    num_frames: int = 8
    """Frames per clip (T)."""
    temporal: dict = field(default_factory=lambda: {"kind": "stdha", "offsets": "1x1,-1x1", "boundary": "self"})
    """The temporal operator of every block (``zeroi2v.temporal.TEMPORAL``) and its spec. STDHA (paper
    Sec. 3.2): ``offsets``, the Δt multiset (string like '1x2,-1x2,0x8', a Table 11 preset name, a
    per-head list, or one spec per layer; null: all heads spatial), and ``boundary``, what a head reads
    past the clip ends: 'self' (own K/V, the authors' choice) or 'zero'. The other kinds (Table 1a):
    ``token_shift`` ([cls]-token shift before attention and MLP) and ``channel_shift`` (temporal channel
    shift in every head; ``targets: kv|qkv``) take ``fraction``, ``offsets`` and ``boundary``
    (``zeroi2v.shifts``); ``none`` takes no key (every head spatial)."""
    adapter: dict | None = field(default_factory=lambda: {"kind": "linear", "placement": "4", "ratio": 0.25,
                                                          "scale": 1.0, "dropout": 0.0})
    """Adapters (``zeroi2v.adapters.ADAPTERS``) and their spec, or None: no adapters (a merged model).
    ``placement``: '4' (before qkv, after out-proj, before fc1, after fc2), '6' (separate Q/K/V), '3',
    'qv', or a list of slot or projection names (q, k, v, qkv, o, fc1, fc2). ``kind``: 'linear' (Sec. 3.3;
    ``ratio`` = bottleneck width / width, ``scale`` s, ``dropout``), 'lora' (``rank`` or ``ratio``,
    ``alpha`` or ``scale``, ``dropout``), 'gelu' (as linear) or 'st_adapter' (as linear, plus ``kernel``
    [t, h, w]); only linear and lora merge (``zeroi2v.adapter_kinds`` documents each)."""
    temporal_embedding: bool = True
    """A zero-initialised T × width embedding added to every token of frame t."""
    head_dropout: float = 0.5
    """Dropout before the classifier."""
    finetune: str = "adapters"
    """What trains: 'adapters' (paper: adapters, temporal embedding, ln_post, head), 'full', 'linear_probe' (head),
    or 'temporal_heads' (Table 3's "only tuning temporal head": the Q/K/V rows and output columns of the heads
    whose Δt is not 0, by a gradient mask, plus what 'adapters' trains; the paper's row has ``adapter: null``;
    needs a temporal operator with per-head offsets, i.e. STDHA; see ``zeroi2v.tuning``)."""
    grad_checkpointing: bool = False
    """Recompute block activations in backward (less memory, ~30% slower steps)."""
    fused_adapters: bool = False
    """Train each linear adapter fused into its frozen neighbouring projection: one matrix product with the
    merged weight (Sec. 3.3, Eq. 11) and a backward that computes only the input and adapter gradients
    (``zeroi2v.fused``; the same loss and gradients as the plain form). Applies where the adapter's dropout
    is 0 and the projection is frozen; elsewhere the plain form runs. Off by default: see the README's
    training-cost table for when it pays."""
    mean: tuple = CLIP_MEAN
    """Pixel mean (0-255, RGB) the backbone was trained with."""
    std: tuple = CLIP_STD
    """Pixel standard deviation (0-255, RGB)."""
    class_names: list | None = None
    """Class names in label order (None: 'class N')."""

    @classmethod
    def from_dict(cls, d: dict[str, Any], notice: bool = True) -> "ModelConfig":
        d = upgrade_model_dict(d, notice)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown model config key(s) {unknown}; known keys: {sorted(known)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d


LEGACY_TEMPORAL = {"offsets": "offsets", "boundary": "boundary"}
LEGACY_ADAPTER = {"adapter_placement": "placement", "adapter_ratio": "ratio", "adapter_scale": "scale",
                  "adapter_dropout": "dropout"}
_noticed: set[str] = set()


def upgrade_model_dict(d: dict[str, Any], notice: bool = True) -> dict[str, Any]:
    """Model config data with the old flat keys (``offsets``, ``boundary``, ``adapter: linear``,
    ``adapter_placement``, ...) moved into ``temporal:`` and ``adapter:``; prints a one-line notice."""
    old = [k for k in d if k in LEGACY_TEMPORAL or k in LEGACY_ADAPTER or (k == "adapter" and isinstance(d[k], str))]
    if not old:
        return dict(d)
    d = dict(d)
    defaults = ModelConfig()
    temporal = dict(d.get("temporal") or defaults.temporal)
    for key in LEGACY_TEMPORAL:
        if key in d:
            temporal[LEGACY_TEMPORAL[key]] = d.pop(key)
    d["temporal"] = temporal
    adapter = d.get("adapter", defaults.adapter)
    if isinstance(adapter, str) and adapter.strip().lower() in NULLS:
        adapter = None
    elif isinstance(adapter, str):
        adapter = {**defaults.adapter, "kind": adapter}
    moved = {LEGACY_ADAPTER[k]: d.pop(k) for k in list(d) if k in LEGACY_ADAPTER}
    d["adapter"] = None if adapter is None else {**adapter, **moved}
    if notice and not set(old) <= _noticed:
        _noticed.update(old)
        print(f"[zeroi2v] note: model keys {', '.join(old)} are the old flat form; they still load. Write "
              f"model.temporal: {{kind, offsets, boundary}} and model.adapter: {{kind, placement, ratio, "
              f"scale, dropout}} instead.", file=sys.stderr)
    return d


def _note_pixel_statistics(mc: ModelConfig, arch: dict[str, Any]) -> None:
    """A one-line note (once per backbone) when the backbone records the pixel mean/std it was trained with
    (timm towers do; open_clip's are CLIP's, the defaults) and ``model.mean``/``model.std`` differ: frames
    normalised with another model's statistics lose accuracy without any error."""
    mean, std = arch.get("mean"), arch.get("std")
    if mean is None or std is None or mc.backbone in _noticed:
        return
    if any(abs(a - b) > 0.5 for a, b in zip([*mean, *std], [*mc.mean, *mc.std])):
        _noticed.add(mc.backbone)
        print(f"[zeroi2v] note: {mc.backbone} was trained with pixel mean {list(mean)} and std {list(std)} "
              f"(0-255), but model.mean is {list(mc.mean)} and model.std {list(mc.std)}; set model.mean and "
              f"model.std to the backbone's", file=sys.stderr)


def check_model_config(mc: ModelConfig, arch: dict[str, Any] | None = None) -> dict[str, Any]:
    """Validate a model config without building weights: the backbone exists, the temporal operator's
    and the adapter kind's specs fit it (each component checks its own spec), the modes are known.
    Returns the resolved facts (``temporal`` and ``adapter``: the complete specs the model is built from).

    arch: the backbone's architecture data when it is already known (a merged checkpoint stores it, and
    its ``backbone`` is only a display name); None: looked up by ``mc.backbone``."""
    from zeroi2v.adapters import resolve_adapter
    from zeroi2v.backbones import family_of
    from zeroi2v.temporal import resolve_temporal

    for key in ("num_frames", "num_classes"):
        if getattr(mc, key) < 1:
            raise ValueError(f"model.{key} must be >= 1, got {getattr(mc, key)}")
    try:
        family, name = family_of(mc.backbone)
        arch = arch if arch is not None else family.arch(name)
        facts = family.facts(arch)
    except (ValueError, FileNotFoundError, KeyError) as e:
        raise ValueError(f"model.backbone: {e}") from None
    _note_pixel_statistics(mc, arch)
    try:
        temporal = resolve_temporal(mc.temporal, **family.temporal_shape(facts), num_frames=mc.num_frames)
    except ValueError as e:
        raise ValueError(f"model.temporal.{e}") from None
    try:
        adapter = resolve_adapter(mc.adapter)
    except ValueError as e:
        raise ValueError(f"model.adapter.{e}") from None
    if mc.finetune not in FINETUNE_MODES:
        raise ValueError(f"model.finetune must be one of {list(FINETUNE_MODES)}, got {mc.finetune!r}")
    if mc.finetune == "temporal_heads":
        from zeroi2v.temporal import TEMPORAL
        from zeroi2v.tuning import check_temporal_heads
        check_temporal_heads(TEMPORAL[temporal["kind"]].layer_offsets(temporal), temporal["kind"])
    if not 0.0 <= mc.head_dropout <= 1.0:
        raise ValueError(f"model.head_dropout must be in [0, 1], got {mc.head_dropout}")
    if len(mc.mean) != 3 or len(mc.std) != 3:
        raise ValueError("model.mean and model.std need 3 values (RGB)")
    return {**facts, "temporal": temporal, "adapter": adapter}


def model_config_from_data(d: Any, prefix: str = "model.", notice: bool = True) -> ModelConfig:
    """A ModelConfig from plain data (a YAML section, a merged checkpoint's config.json) with the same
    key and type checks as a config file; errors name the key as ``prefix + key``. ``notice``: print the
    one-line notice for old flat keys (not for checkpoints of format 1, which are not the user's to edit)."""
    from zeroi2v.config_files import to_structured
    if not isinstance(d, dict):
        return to_structured(ModelConfig, d, prefix)
    d, specs = _component_specs(upgrade_model_dict(d, notice), prefix)
    return to_structured(ModelConfig, d, prefix, start=ModelConfig(**specs))


def _component_specs(model: dict[str, Any], prefix: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model data without ``temporal``/``adapter``, and those specs merged over the defaults by their
    own rule (a spec naming another ``kind`` replaces the default whole: its keys belong to that kind)."""
    from zeroi2v.config_files import merge_data
    model, specs, default = dict(model), {}, ModelConfig()
    for key in ("temporal", "adapter"):
        if key not in model:
            continue
        value = model.pop(key)
        if value is None and key == "adapter":
            specs[key] = None
        elif isinstance(value, dict):
            base = getattr(default, key)
            specs[key] = merge_data({key: base}, {key: value})[key]
        else:
            raise ValueError(f"config key {prefix + key!r} expects a mapping ({{kind: ..., ...}}), got "
                             f"{type(value).__name__} {value!r}")
    return model, specs
