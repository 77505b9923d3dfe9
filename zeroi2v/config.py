"""A training run's configuration as plain data: five dataclasses read from one YAML file.

    model:  ModelConfig (model_config)  what network (backbone, temporal operator, adapters, what trains)
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
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

import yaml

from zeroi2v.model_config import (CLIP_MEAN, CLIP_STD, FINETUNE_MODES, ModelConfig, _component_specs,  # noqa: F401
                                   check_model_config, model_config_from_data, upgrade_model_dict)

SAMPLERS = ("uniform", "dense")
AMP_MODES = ("none", "bf16", "fp16")
ON_MISSING = ("drop", "error")
FLIP_LABEL_MAPS = ("ssv2", "none")
FLIP_PAIR_FILES = (".txt", ".tsv", ".csv", ".yaml", ".yml", ".json")
"""The endings of a ``data.flip_label_map`` file of class-name pairs."""
PAPER_RESIZE = 256 / 224
"""The paper's short side over its crop size (frames resized to 256, cropped to 224)."""


@dataclass
class DataConfig:
    """Where the videos are and how clips are made from them (see ``zeroi2v.data``)."""

    format: str = "mmaction"
    """Annotation format read by ``zeroi2v.data.formats.read_annotation``: 'mmaction' (``path label`` lists),
    'kinetics' (csv), 'ssv2' (json), 'ucf101', 'hmdb51' (official split files), 'diving48' (json), 'folder'
    (one folder per class)."""
    format_args: dict = field(default_factory=dict)
    """Extra keyword arguments for the format reader, e.g. ``{split: 1}`` for UCF101/HMDB51,
    ``{labels_json: /data/ssv2/labels.json}`` for SSv2, or ``{classes: classes.txt}`` (a file, one name per
    line, or a list) to name the classes of an mmaction or Kinetics list."""
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
    short_side: int | None = None
    """Frames are resized so their short side is this many pixels before the random crop; None: derived
    from the crop size with the paper's ratio, size × 256/224 (256 for 224, 37 for a 32-pixel backbone)."""
    crop_scale: tuple[float, float] = (0.08, 1.0)
    """RandomResizedCrop's area range (min, max), as fractions of the resized frame: 0 < min <= max <= 1
    ([1, 1]: always the whole frame, only resized to ``size``)."""
    crop_ratio: tuple[float, float] = (0.75, 4 / 3)
    """RandomResizedCrop's aspect-ratio range (min, max) of the crop box before it is resized to a square:
    0 < min <= max."""
    randaugment: tuple[int, int] | None = (7, 4)
    """RandAugment (magnitude, num_ops), the same ops for every frame of a clip; None: off."""
    flip: float = 0.5
    """Probability of a horizontal flip of the whole clip while training."""
    flip_label_map: Any = None
    """Classes a horizontal flip turns into each other (the flipped clip takes the other label): 'ssv2'
    (classes 86↔87, 93↔94, 166↔167), a list of class-name pairs (``[[move_left, move_right], [rotate_cw,
    rotate_ccw]]``, names of the training set's classes), the path of a file of such pairs (one pair per line,
    the two names separated by a comma or a tab; or a .yaml/.json list of pairs), or None / 'none' (no label
    changes). With ``flip > 0``, no map and class names that look directional, training warns once."""
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
    min_lr: float = 0.0
    """Learning rate the cosine ends at, for the head (other groups keep their multiplier): 0 in the paper's
    recipe, 1e-6 in VidTAB's few-shot one."""
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

    def short_side_for(self, size: int) -> int:
        """``data.short_side``, or derived from the crop ``size`` with the paper's ratio when it is None."""
        return self.data.short_side or round(size * PAPER_RESIZE)

    def validate(self) -> "Config":
        """Cross-field checks; raises ValueError with the offending key."""
        d, o, t, s = self.data, self.optim, self.train, self.test
        _choice("data.sampler", d.sampler, SAMPLERS)
        _choice("data.on_missing", d.on_missing, ON_MISSING)
        _choice("train.amp", t.amp, AMP_MODES)
        _choice("train.device", t.device, ("auto", "cpu", "cuda"))
        _check_flip_label_map(d.flip_label_map)
        lo, hi = d.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"data.crop_scale must be [min, max] with 0 < min <= max <= 1, got {list(d.crop_scale)}")
        lo, hi = d.crop_ratio
        if not 0 < lo <= hi:
            raise ValueError(f"data.crop_ratio must be [min, max] with 0 < min <= max, got {list(d.crop_ratio)}")
        if d.num_frames is not None and d.num_frames != self.model.num_frames:
            raise ValueError(f"data.num_frames={d.num_frames} differs from model.num_frames="
                             f"{self.model.num_frames}; set one (data.num_frames may be null)")
        for key, value, low in (("data.interval", d.interval, 1), ("data.short_side", 1 if d.short_side is None else d.short_side, 1),
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
        if not 0.0 <= o.min_lr <= o.lr:
            raise ValueError(f"optim.min_lr must be in [0, optim.lr={o.lr}], got {o.min_lr}")
        if t.max_steps is not None and t.max_steps < 1:
            raise ValueError(f"train.max_steps must be >= 1 or null, got {t.max_steps}")
        facts = check_model_config(self.model)
        if d.size is not None and d.size != facts["image_size"]:
            raise ValueError(f"data.size={d.size} but the backbone {self.model.backbone} takes {facts['image_size']}-px "
                             f"images (its positional embedding is fixed); set data.size: null to use the "
                             f"backbone's size, or pick a backbone made for {d.size}-px images")
        return self


def _check_flip_label_map(value: Any) -> None:
    """The shape of ``data.flip_label_map`` (its names are checked against the training classes when the
    training set is built, ``zeroi2v.data.transforms.resolve_flip_label_map``)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in FLIP_LABEL_MAPS):
        return
    if isinstance(value, str):
        if not value.lower().endswith(FLIP_PAIR_FILES):
            raise ValueError(f"data.flip_label_map must be one of {list(FLIP_LABEL_MAPS)}, null, a list of class-name "
                             f"pairs like [[left, right]] or the path of a file of pairs "
                             f"({', '.join(FLIP_PAIR_FILES)}); got {value!r}")
        return
    pairs = value if isinstance(value, (list, tuple)) else None
    bad = next((p for p in pairs if not (isinstance(p, (list, tuple)) and len(p) == 2)), None) if pairs is not None else value
    if pairs is None or bad is not None:
        raise ValueError(f"data.flip_label_map must be 'ssv2', null, a list of class-name pairs like "
                         f"[[left, right]] or the path of a file of pairs; got {bad!r}")


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


def config_from_data(data: Any, notice: bool = True) -> Config:
    """A typed Config from nested plain data (old flat model keys upgraded, with a notice unless ``notice``
    is False), not validated."""
    from zeroi2v.config_files import to_structured
    model, start = None, None
    if isinstance(data, dict) and isinstance(data.get("model"), dict):
        model, specs = _component_specs(upgrade_model_dict(data["model"], notice), "model.")
        data, start = {**data, "model": model}, Config(model=ModelConfig(**specs))
    return to_structured(Config, data, start=start)


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
