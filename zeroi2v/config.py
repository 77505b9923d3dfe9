"""A training run's configuration as plain data: five dataclasses read from one YAML file.

    model:  ModelConfig                 what network (backbone, temporal operator, adapters, what trains)
    data:   DataConfig                  where clips come from and how they are sampled/augmented
    optim:  OptimConfig                 AdamW + warm-up/cosine schedule + loss
    train:  TrainConfig                 batch, accumulation, AMP, seeding, logging, checkpoints
    test:   TestConfig                  multi-view testing

``load_config("configs/ssv2_vit_b16_8f.yaml", ["optim.lr=1e-4", "model.temporal.offsets=1x2,-1x2,0x8"])``
reads a file (and the ``base:`` files it inherits from, see ``zeroi2v.config_files``) and applies
``--set`` style overrides. Every key is checked (OmegaConf structured configs of the dataclasses below):
an unknown key anywhere is an error that names the full dotted key and the keys that exist; a value of
the wrong type is an error that names the key, the expected type and what was given. Each run folder gets
its exact config back with ``save_config`` (``Config.to_dict`` → YAML), and that file loads again.
``read_config`` does all that without importing torch; ``load_config`` also validates the components.

Every option is documented where it is defined (the docstring under each field).
"""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

import yaml

from zeroi2v.config_files import NULLS

CLIP_MEAN = (122.769, 116.74, 104.04)  # OpenAI CLIP pixel statistics, 0–255 scale, RGB
CLIP_STD = (68.493, 66.63, 70.321)
FINETUNE_MODES = ("adapters", "full", "linear_probe")
SAMPLERS = ("uniform", "dense")
AMP_MODES = ("none", "bf16", "fp16")
ON_MISSING = ("drop", "error")
FLIP_LABEL_MAPS = ("ssv2",)


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
    past the clip ends: 'self' (own K/V, the authors' choice) or 'zero'."""
    adapter: dict | None = field(default_factory=lambda: {"kind": "linear", "placement": "4", "ratio": 0.25,
                                                          "scale": 1.0, "dropout": 0.0})
    """Adapters (``zeroi2v.adapters.ADAPTERS``) and their spec, or None: no adapters (a merged model).
    ``placement``: '4' (before qkv, after out-proj, before fc1, after fc2), '6' (separate Q/K/V), '3',
    or a list of slot names. The linear adapter (Sec. 3.3) takes ``ratio`` (bottleneck width / width),
    ``scale`` (s) and ``dropout``."""
    temporal_embedding: bool = True
    """A zero-initialised T × width embedding added to every token of frame t."""
    head_dropout: float = 0.5
    """Dropout before the classifier."""
    finetune: str = "adapters"
    """What trains: 'adapters' (paper: adapters, temporal embedding, ln_post, head), 'full', 'linear_probe' (head)."""
    grad_checkpointing: bool = False
    """Recompute block activations in backward (less memory, ~30% slower steps)."""
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


@dataclass
class DataConfig:
    """Where the videos are and how clips are made from them (see ``zeroi2v.data``)."""

    format: str = "mmaction"
    """Annotation format read by ``zeroi2v.data.formats.read_annotation``: 'mmaction' (``path label`` lists),
    'kinetics' (csv), 'ssv2' (json), 'ucf101', 'hmdb51' (official split files), 'diving48' (json), 'folder'
    (one folder per class)."""
    format_args: dict = field(default_factory=dict)
    """Extra keyword arguments for the format reader, e.g. ``{split: 1}`` for UCF101/HMDB51 or
    ``{labels: /data/ssv2/labels.json}`` for SSv2."""
    root: str | None = None
    """Folder the video paths of the annotation files are relative to (None: paths are used as written)."""
    train_ann: str | None = None
    """Training annotation (file or folder, per ``format``); None: no training data (evaluation only)."""
    val_ann: str | None = None
    """Validation annotation, evaluated every ``train.eval_every`` epochs; None: no validation."""
    test_ann: str | None = None
    """Test annotation for the final multi-view test (``test.clips`` × ``test.crops``); None: skip."""
    sampler: str = "uniform"
    """'uniform' (TSN: T segments, a random frame in each when training, the middle one when testing; SSv2,
    UCF101, HMDB51) or 'dense' (T consecutive frames every ``interval``-th; K400)."""
    num_frames: int | None = None
    """Frames per clip; None: the model's ``model.num_frames`` (must equal it when set)."""
    interval: int = 16
    """Dense sampling: take every ``interval``-th frame (paper: 16 for 8 frames, 8 for 16, 4 for 32)."""
    size: int | None = None
    """Crop size fed to the model; None: the backbone's image size (224 for ViT-B/16 and ViT-L/14)."""
    short_side: int = 256
    """Frames are resized so their short side is this many pixels before cropping."""
    randaugment: tuple[int, int] | None = (7, 4)
    """RandAugment (magnitude, num_ops), the same ops for every frame of a clip; None: off."""
    flip: float = 0.5
    """Probability of a horizontal flip of the whole clip while training."""
    flip_label_map: str | None = None
    """Labels swapped by a flip: 'ssv2' (left/right classes 86↔87, 93↔94, 166↔167) or None."""
    random_erasing: float = 0.0
    """Probability of random erasing per clip (paper: 0.25 for SSv2, 0 elsewhere)."""
    on_missing: str = "drop"
    """A video that is missing or cannot be decoded: 'drop' (skip it, count it in ``decode_failures``)
    or 'error' (stop)."""
    workers: int = 8
    """DataLoader worker processes per training process (0: decode in the main process)."""
    cache_decoded: bool = False
    """Keep decoded clips in memory (small data sets only, e.g. few-shot)."""


@dataclass
class OptimConfig:
    """AdamW, linear warm-up then cosine to 0 (stepped per optimiser step), cross-entropy."""

    lr: float = 3e-4
    """Peak learning rate for a total batch of ``train.total_batch`` (paper: 3e-4 at 64)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    weight_decay: float = 0.05
    """AdamW weight decay; never applied to 1-D parameters (biases, norms) or embeddings
    (class, positional, temporal)."""
    backbone_lr_mult: float = 1.0
    """Learning rate multiplier for trainable ``visual.*`` parameters (adapters, ln_post); the head and
    the temporal embedding keep the full rate (paper: 0.1 for ViT-L, 1.0 for ViT-B)."""
    warmup_epochs: float = 2.5
    """Linear warm-up length in epochs (fractional allowed; converted to optimiser steps)."""
    warmup_start_factor: float = 0.1
    """Warm-up starts at ``lr × warmup_start_factor``."""
    epochs: int = 40
    """Training epochs (paper: 40 for K400/UCF101/HMDB51, 50 for SSv2)."""
    label_smoothing: float = 0.0
    """Cross-entropy label smoothing (paper: 0.1 for SSv2)."""
    clip_grad: float | None = None
    """Clip the global gradient norm to this value; None: no clipping (the paper's recipe)."""


@dataclass
class TrainConfig:
    """Batching, precision, reproducibility, logging and checkpoints."""

    batch_size: int = 8
    """Clips per forward pass per process."""
    total_batch: int = 64
    """Clips per optimiser step over all processes; gradient accumulation =
    total_batch / (batch_size × world size) (paper: 64)."""
    amp: str = "bf16"
    """Mixed precision on CUDA: 'bf16' (autocast), 'fp16' (autocast + dynamic loss scaling) or 'none'.
    Ignored on CPU, which always trains in fp32."""
    device: str = "auto"
    """'auto' (CUDA when available, else CPU), 'cpu' or 'cuda'."""
    seed: int = 0
    """Seed for model init, data order, augmentation and dropout (each process adds its rank)."""
    deterministic: bool = False
    """Deterministic kernels (``torch.use_deterministic_algorithms``, no cuDNN autotuning); slower on GPU."""
    log_every: int = 20
    """Write a training log row (CSV, TensorBoard, progress bar) every this many optimiser steps."""
    eval_every: int = 1
    """Validate every this many epochs (and after the last); 0: only after the last."""
    save_every: int = 1
    """Write the resumable checkpoint every this many epochs (and after the last)."""
    save_every_steps: int = 0
    """Also write it every this many optimiser steps (0: off); lets a killed run resume mid-epoch."""
    max_steps: int | None = None
    """Stop after this many optimiser steps in total (a smoke test or a time-boxed run; the schedule
    still spans ``optim.epochs``, so a resumed run continues it). None: run all epochs."""
    out_dir: str = "runs/default"
    """Run folder: config.yaml, log.csv, checkpoint.pt, results/."""
    progress: bool = True
    """Show a tqdm progress bar (only on rank 0 and only when stderr is a terminal)."""


@dataclass
class TestConfig:
    """Multi-view testing: each video gives ``clips`` temporal clips × ``crops`` spatial crops, whose
    softmax probabilities are averaged."""

    clips: int = 1
    """Temporal clips per video (paper: 3 for K400, 1 for SSv2/UCF101/HMDB51)."""
    crops: int = 3
    """Spatial crops per clip: 1 (centre) or 3 (paper: 1 for K400, 3 for SSv2/UCF101/HMDB51)."""
    batch_size: int = 4
    """Videos per forward pass when testing (each brings clips × crops views)."""
    short_side: int | None = None
    """Short side the test frames are resized to before cropping; None: the crop size (mmaction's test
    pipelines: resize to 224, then 1 centre crop or 3 crops covering the long side)."""
    val_full_views: bool = False
    """Validate during training with all clips × crops (slow); False: 1 clip × 1 centre crop, and the
    full multi-view test runs once after training (on ``data.test_ann``, else ``data.val_ann``)."""


@dataclass
class Config:
    """One training run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    test: TestConfig = field(default_factory=TestConfig)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        """Build and validate a config from nested plain data (what YAML gives)."""
        return config_from_data(d or {}).validate()

    def to_dict(self) -> dict[str, Any]:
        """Nested plain data (lists, no tuples) that ``yaml.safe_dump`` writes and ``from_dict`` reads."""
        return _plain({f.name: dataclasses.asdict(getattr(self, f.name)) for f in fields(self)})

    @property
    def num_frames(self) -> int:
        return self.data.num_frames or self.model.num_frames

    def validate(self) -> "Config":
        """Cross-field checks; raises ValueError with the offending key."""
        d, o, t, s = self.data, self.optim, self.train, self.test
        _choice("data.sampler", d.sampler, SAMPLERS)
        _choice("data.on_missing", d.on_missing, ON_MISSING)
        _choice("train.amp", t.amp, AMP_MODES)
        _choice("train.device", t.device, ("auto", "cpu", "cuda"))
        if d.flip_label_map is not None:
            _choice("data.flip_label_map", d.flip_label_map, FLIP_LABEL_MAPS)
        if d.num_frames is not None and d.num_frames != self.model.num_frames:
            raise ValueError(f"data.num_frames={d.num_frames} differs from model.num_frames="
                             f"{self.model.num_frames}; set one (data.num_frames may be null)")
        for key, value, low in (("data.interval", d.interval, 1), ("data.short_side", d.short_side, 1),
                                ("data.workers", d.workers, 0), ("optim.epochs", o.epochs, 1),
                                ("train.batch_size", t.batch_size, 1), ("train.total_batch", t.total_batch, 1),
                                ("train.log_every", t.log_every, 1), ("train.eval_every", t.eval_every, 0),
                                ("train.save_every", t.save_every, 1), ("train.save_every_steps", t.save_every_steps, 0),
                                ("test.clips", s.clips, 1), ("test.batch_size", s.batch_size, 1),
                                ("test.short_side", s.short_side or 1, 1), ("data.size", d.size or 1, 1)):
            if value < low:
                raise ValueError(f"{key} must be >= {low}, got {value}")
        _choice("test.crops", s.crops, (1, 3))
        for key, value in (("data.flip", d.flip), ("data.random_erasing", d.random_erasing),
                           ("optim.label_smoothing", o.label_smoothing), ("optim.warmup_start_factor", o.warmup_start_factor)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{key} must be in [0, 1], got {value}")
        if o.lr <= 0 or o.weight_decay < 0 or o.warmup_epochs < 0 or o.backbone_lr_mult < 0:
            raise ValueError("optim.lr must be > 0; optim.weight_decay, optim.warmup_epochs and "
                             "optim.backbone_lr_mult must be >= 0")
        if t.max_steps is not None and t.max_steps < 1:
            raise ValueError(f"train.max_steps must be >= 1 or null, got {t.max_steps}")
        check_model_config(self.model)
        return self


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
        facts = family.facts(arch if arch is not None else family.arch(name))
    except (ValueError, FileNotFoundError, KeyError) as e:
        raise ValueError(f"model.backbone: {e}") from None
    try:
        temporal = resolve_temporal(mc.temporal, num_heads=facts["heads"], num_layers=facts["layers"],
                                    num_frames=mc.num_frames)
    except ValueError as e:
        raise ValueError(f"model.temporal.{e}") from None
    try:
        adapter = resolve_adapter(mc.adapter)
    except ValueError as e:
        raise ValueError(f"model.adapter.{e}") from None
    _choice("model.finetune", mc.finetune, FINETUNE_MODES)
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


def _choice(key: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise ValueError(f"{key} must be one of {list(choices)}, got {value!r}")


def read_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML config (None: the defaults) with its ``base:`` chain and ``key.sub=value`` overrides
    into a typed Config: every key and type checked, the components not yet (see ``load_config``).
    Imports neither torch nor open_clip."""
    from zeroi2v.config_files import apply_overrides, read_chain
    data = read_chain(path) if path is not None else {}
    try:
        return config_from_data(apply_overrides(data, overrides, Config))
    except ValueError as e:
        raise ValueError(f"{path}: {e}" if path is not None else str(e)) from None


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """``read_config``, then ``Config.validate``: ranges, choices, and the backbone, temporal operator and
    adapter specs checked by their own components (this imports them, and so torch)."""
    cfg = read_config(path, overrides)
    try:
        return cfg.validate()
    except ValueError as e:
        raise ValueError(f"{path}: {e}" if path is not None else str(e)) from None


def config_from_data(data: Any) -> Config:
    """A typed Config from nested plain data (old flat model keys upgraded), not validated."""
    from zeroi2v.config_files import to_structured
    model, start = None, None
    if isinstance(data, dict) and isinstance(data.get("model"), dict):
        model, specs = _component_specs(upgrade_model_dict(data["model"]), "model.")
        data, start = {**data, "model": model}, Config(model=ModelConfig(**specs))
    return to_structured(Config, data, start=start)


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


def save_config(cfg: Config, path: str | Path) -> Path:
    """Write ``cfg`` as YAML (loads back to an equal Config), atomically."""
    from zeroi2v.files import atomic_write_text
    return atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x
