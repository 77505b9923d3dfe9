"""A run folder (``train.out_dir``): its guards, its log and its checkpoint. A run's work is never overwritten
by accident, a resume continues the same run or is refused, and a resumed run continues exactly.

A run folder holds ``config.yaml`` (the exact config), ``log.csv`` (``RunLog``, + TensorBoard when
installed), ``checkpoint.pt`` (``checkpoint_state``: everything a resume needs) and ``results/``.

- **Fresh start.** A folder that already holds work (``checkpoint.pt``, ``log.csv``, ``results/``, or a
  ``config.yaml`` of another config) is refused: continue it with ``--resume``, overwrite it with
  ``--force``, or choose a new ``train.out_dir``. With ``--force`` the previous run's files are removed
  just before the new run writes its own, so a folder never mixes two runs. An empty or missing folder is fine.
- **Resume.** The checkpoint stores the config it was trained with. A resume whose run-defining settings
  differ (see ``HARMLESS`` for the rest) is refused with the dotted keys and old -> new values: the restored
  optimiser and scheduler would silently keep the old learning rate, and a changed batch or schedule would
  resume "step 9 of 6" and skip the rest of the epoch. So is a resume whose training set gives another
  number of clips or steps per epoch (the data order and the position inside the epoch would be wrong).
- **Writing.** ``config.yaml`` (``config.resumed.yaml`` when resuming) is written only once every check has
  passed and the data and model are built, and atomically (``save_config``).
- **Resuming exactly.** The checkpoint holds the model, optimiser, scheduler and loss-scaler states, every
  rank's RNG states and the position inside the epoch (``Position``); ``restore`` puts them all back and
  ``RunLog`` drops the log rows written after the checkpoint.

``load_run`` rebuilds a run's trained model from the folder alone (merge, eval); ``load_checkpoint`` reads
a checkpoint as data and names a broken one.
"""
from __future__ import annotations

import csv
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from zeroi2v.config import Config, load_config, save_config
from zeroi2v.distributed import set_rng_state
from zeroi2v.files import atomic_write

CHECKPOINT = "checkpoint.pt"
PRIOR_WORK = (CHECKPOINT, "log.csv", "results")
"""What a run leaves behind: a folder holding any of these holds work."""
PREVIOUS_RUN = (CHECKPOINT, "results", "config.resumed.yaml", "tensorboard")
"""Removed by ``force`` before a new run starts (``log.csv`` and ``config.yaml`` are rewritten anyway)."""

HARMLESS = frozenset({
    # where the data lives (data sets move between disks) and what to do with missing files: what the
    # training set holds is checked by its number of clips and steps per epoch (FACTS)
    "data.root", "data.train_ann", "data.val_ann", "data.test_ann", "data.on_missing",
    # how the data is read, not what is read
    "data.workers", "data.cache_decoded",
    # the hardware and kernels the run uses, not what it computes (CPU always trains in fp32; train.amp
    # is run-defining: it changes the numerics and the loss-scaler state the checkpoint holds)
    "train.device", "train.deterministic",
    # bookkeeping: logs, progress, checkpoints, when to stop or validate, and the folder itself (it may move)
    "train.log_every", "train.eval_every", "train.save_every", "train.save_every_steps", "train.max_steps",
    "train.out_dir", "train.progress",
    # labels for display: a run records the names it found in its training annotation (``zeroi2v.train``)
    "model.class_names",
})
"""Settings a resume may change. Every other key is run-defining: all of ``model.*`` but its class names (the
network and its weights), the data format and how clips are sampled and augmented (``data.format``, ``format_args``,
``sampler``, ``num_frames``, ``interval``, ``size``, ``short_side``, ``randaugment``, ``flip``,
``flip_label_map``, ``random_erasing``), all of ``optim.*`` (learning rate, schedule, epochs, loss) and
``train.batch_size``, ``train.total_batch``, ``train.amp``, ``train.seed``. A key added to the config later is
run-defining until listed here."""
HARMLESS_SECTIONS = ("test",)
"""Sections a resume may change as a whole: testing happens after training and does not alter it."""


class RunFolderError(ValueError):
    """A run folder cannot be used as asked; the message names the folder and what to do instead."""


def prior_work(folder: Path, cfg: Config) -> list[str]:
    """What in ``folder`` is a previous run's work: the names of ``PRIOR_WORK`` present (``results/`` when
    not empty), and ``config.yaml`` when it holds another config."""
    found = [name for name in PRIOR_WORK if (folder / name).is_file()
             or ((folder / name).is_dir() and any((folder / name).iterdir()))]
    config = folder / "config.yaml"
    if config.is_file():
        try:
            same = _without_names(yaml.safe_load(config.read_text())) == _without_names(cfg.to_dict())
        except (yaml.YAMLError, UnicodeDecodeError):
            same = False
        if not same:
            found.append("config.yaml of another config")
    return found


def _without_names(d: Any) -> Any:
    """A config's data without ``model.class_names``: a run fills them in from its annotation, so a config
    without them is the same run."""
    if isinstance(d, dict) and isinstance(d.get("model"), dict):
        d = {**d, "model": {k: v for k, v in d["model"].items() if k != "class_names"}}
    return d


def check_fresh_start(folder: Path, cfg: Config, force: bool, resume: bool) -> list[str]:
    """Refuse to start a new run over ``folder``'s work unless ``force`` (the message names the command-line
    switches; ``train(resume=True)`` and ``train(force=True)`` are the same); returns the work found (which
    ``start_run`` removes). ``resume`` without a checkpoint starts afresh: its ``log.csv`` only holds rows
    of steps no checkpoint kept, which a resume drops anyway."""
    found = [name for name in prior_work(folder, cfg) if not (resume and name == "log.csv")]
    if found and not force:
        advice = ("it has no checkpoint.pt to resume from" if resume else "continue it with --resume")
        raise RunFolderError(
            f"{folder} already holds a training run ({', '.join(found)}); {advice}, overwrite it with --force, "
            f"or set a new train.out_dir")
    return found


def config_changes(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """'key old -> new' for every run-defining setting that differs between two ``Config.to_dict()``s.
    Keys present on one side only (a config written by another version) are not compared."""
    def flat(d: dict[str, Any]) -> dict[str, Any]:
        return {f"{section}.{key}": value for section, values in d.items() if isinstance(values, dict)
                for key, value in values.items()}

    if not old:
        return []
    from zeroi2v.config import config_from_data
    try:  # a checkpoint of an older version: its config in today's form (flat model keys upgraded)
        old = config_from_data(old, notice=False).to_dict()
    except ValueError:
        pass  # keys this version does not know: compare the ones both sides have
    before, after = flat(old), flat(new)
    return [f"{key} {_show(before[key])} -> {_show(after[key])}" for key in after
            if key in before and before[key] != after[key] and key not in HARMLESS
            and key.split(".")[0] not in HARMLESS_SECTIONS]


FACTS = {"train_clips": "training clips", "steps_per_epoch": "steps per epoch"}
"""What the checkpoint records of the training set, by the name shown when a resume finds it changed."""


def fact_changes(ckpt: dict[str, Any], **facts: int) -> list[str]:
    """'name old -> new' for each fact of ``FACTS`` (``steps_per_epoch=4``) the checkpoint records otherwise
    (checkpoints that predate a fact are not compared on it)."""
    return [f"{FACTS[name]} {ckpt[name]} -> {value}" for name, value in facts.items()
            if ckpt.get(name) is not None and ckpt[name] != value]


def check_resume(folder: Path, changes: list[str], undo: str = "undo the change") -> None:
    """Refuse a resume that would not continue the same run, listing ``changes`` and how to proceed."""
    if changes:
        raise RunFolderError(
            f"cannot resume {folder}: it differs from its checkpoint in {'; '.join(changes)}. {undo.capitalize()} "
            f"(the run's config is {folder / 'config.yaml'}), or train a new run in a new train.out_dir (or "
            f"overwrite this one with --force)")


def check_run_folder(folder: Path, cfg: Config, ckpt: dict[str, Any] | None, resume: bool, force: bool,
                     say: Callable[[str], None] = print) -> list[str]:
    """Check ``folder`` before anything is built or written: a fresh start (no checkpoint ``ckpt`` to resume
    from) over another run's work needs ``force``; a resume must keep every run-defining setting. Returns the
    previous run's work that ``start_run`` removes. (The training set is checked later, by ``fact_changes``.)"""
    if ckpt is not None:
        check_resume(folder, config_changes(ckpt.get("config"), cfg.to_dict()))
        return []
    previous = check_fresh_start(folder, cfg, force, resume)
    if resume:
        say(f"[zeroi2v] resume: no checkpoint at {folder / CHECKPOINT}, starting from scratch")
    return previous


def start_run(folder: Path, cfg: Config, resumed: bool, previous: list[str]) -> None:
    """The run is starting: remove the ``previous`` run's files (``force``), then write the config,
    atomically: ``config.yaml``, or ``config.resumed.yaml`` beside it when resuming."""
    folder.mkdir(parents=True, exist_ok=True)
    if previous:
        for name in PREVIOUS_RUN:
            path = folder / name
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    save_config(cfg, folder / ("config.resumed.yaml" if resumed else "config.yaml"))


def class_names_for(explicit: Sequence[str] | None, found: Sequence[str] | None, num_classes: int
                    ) -> list[str] | None:
    """The class names a run records (``model.class_names`` in ``config.yaml`` and ``checkpoint.pt``, then
    in merged checkpoints): ``explicit`` (the config's ``model.class_names``) when given, which must hold one
    name per class; else ``found``, the training annotation's (class-index files, label maps, folder names,
    ``data.format_args.classes``), padded with 'class N' for outputs the data does not use. Names that are only
    the label numbers ('0', '1', ...: an mmaction list without ``classes``) are no names: None."""
    if explicit:
        if len(explicit) != num_classes:
            raise ValueError(f"model.class_names has {len(explicit)} name{'s' * (len(explicit) != 1)} but the model "
                             f"has {num_classes} classes (model.num_classes): list one name per class, in label "
                             f"order, or remove model.class_names to take the names from the training annotation")
        return [str(n) for n in explicit]
    found = [str(n) for n in found or ()]
    if not found or found == [str(i) for i in range(len(found))]:
        return None
    return found + [f"class {i}" for i in range(len(found), num_classes)]


def add_run_folder_arguments(parser) -> None:
    """--resume | --force, for ``zeroi2v train``."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="continue the run in train.out_dir from its "
                       "checkpoint.pt (refused when a run-defining setting changed)")
    group.add_argument("--force", action="store_true", help="start afresh even when train.out_dir already "
                       "holds a run, removing its checkpoint, log and results")


def _show(value: Any) -> str:
    return json.dumps(value, default=str)


# --- the checkpoint: everything a resume needs --------------------------------------------------------

@dataclass
class Position:
    """Where a run is: ``epoch`` epochs done, ``step_in_epoch`` optimiser steps into the next one,
    ``global_step`` steps in all, and ``history``, one dict per finished epoch."""
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


def checkpoint_state(parts: dict[str, Any], at: Position, rngs: list[dict[str, Any]], cfg: Config,
                     steps_per_epoch: int, train_clips: int, skip: int) -> dict[str, Any]:
    """The checkpoint's content: the ``state_dict()`` of each of ``parts`` (model, optimizer, scheduler,
    scaler) under its key, every rank's RNG states (``zeroi2v.distributed.rng_states``), the position,
    the training-set facts a resume checks (``FACTS``), the sampler's place (``skip`` clips of the epoch's
    order done) and the config."""
    return {**{key: part.state_dict() for key, part in parts.items()}, "rng": rngs,
            "epoch": at.epoch, "step_in_epoch": at.step_in_epoch, "global_step": at.global_step,
            "steps_per_epoch": steps_per_epoch, "train_clips": train_clips, "world_size": len(rngs),
            "history": at.history, "sampler": {"seed": cfg.train.seed, "epoch": at.epoch, "skip": skip},
            "backbone_cfg": getattr(parts["model"], "backbone_cfg", None), "config": cfg.to_dict()}


def restore(ckpt: dict[str, Any], parts: dict[str, Any], rank: int) -> Position:
    """Load each of ``parts`` from a ``checkpoint_state`` and this rank's RNG states (rank modulo the
    checkpoint's world size); returns the position to continue from."""
    for key, part in parts.items():
        part.load_state_dict(ckpt[key])
    set_rng_state(ckpt["rng"][rank % len(ckpt["rng"])])
    return Position(ckpt["epoch"], ckpt["step_in_epoch"], ckpt["global_step"], list(ckpt.get("history", [])))


# --- checkpoints ----------------------------------------------------------------------------------

def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """``torch.save``, atomically: a reader never sees half a checkpoint. ``train`` stores ``model``
    (weights), ``config`` and ``backbone_cfg`` (the backbone's architecture), so that ``load_run`` needs
    nothing but the run folder."""
    import torch
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


RUN_CHECKPOINT = "a checkpoint written by `zeroi2v train`"


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint written by ``train``: tensors and plain types only (``weights_only=True``); anything
    else (empty, text, truncated, pickled code, another program's file) is a one-line error naming it."""
    from zeroi2v.backbones import describe_contents, load_torch_data
    state = load_torch_data(path, RUN_CHECKPOINT)
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise ValueError(f"{path} holds {describe_contents(state)} without model weights: it is not {RUN_CHECKPOINT}")
    return state


def load_run(run: str | Path):
    """The trained model of a run folder, in eval mode, from the folder alone: ``checkpoint.pt`` holds the
    weights, the config and the backbone's architecture, so a ``local-dir:`` backbone that has moved or a
    hub that is out of reach does not matter (checkpoints from before ``backbone_cfg`` was recorded look the
    backbone's config up by the name in the run's config). Its ``cfg.class_names`` are the run's (checkpoints
    from before runs recorded them: read again from the run's training annotation when it is still there)."""
    import torch

    from zeroi2v.model import ModelConfig, build_from_backbone_cfg, create_model
    run = Path(run)
    path = run / CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"{run} is not a training run folder (needs {CHECKPOINT}, written by `zeroi2v train`)")
    ckpt = load_checkpoint(path)
    try:
        cfg = ModelConfig.from_dict(ckpt["config"]["model"], notice=False) if isinstance(ckpt.get("config"), dict) \
            else _run_config(run).model
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path} holds a model config this version cannot read ({e})") from e
    if cfg.class_names is None:  # a run from before runs recorded their class names
        cfg.class_names = _annotation_names(ckpt.get("config"), cfg.num_classes)
    state = ckpt["model"]
    if cfg.finetune == "linear_probe" and state and all(k.startswith("head.") for k in state):
        # a probe trained on cached features (zeroi2v.probe) saves its head; the backbone is the config's own,
        # built as the probe built it (after seeding with the run's seed: a backbone without weights is random)
        seed = (ckpt.get("config") or {}).get("train", {}).get("seed", 0)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = create_model(cfg)
        target, state = model.head, {k[len("head."):]: v for k, v in state.items()}
    else:
        model = build_from_backbone_cfg(cfg, ckpt.get("backbone_cfg") or _old_backbone_cfg(path, cfg))
        target = model
    try:
        target.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"{path}: its weights do not fit its model config "
                         f"({' '.join(str(e).split())[:300]})") from e
    return model.eval()


def _annotation_names(config: Any, num_classes: int) -> list[str] | None:
    """The class names of a run's training annotation (``data`` of its config), read again; None when it
    has none or cannot be read any more (the run then shows 'class N')."""
    from zeroi2v.data.build import _ANNOTATION_ARG
    from zeroi2v.data.formats import read_annotation
    data = config.get("data") if isinstance(config, dict) else None
    if not isinstance(data, dict) or not data.get("train_ann") or data.get("format") not in _ANNOTATION_ARG:
        return None
    kwargs = {_ANNOTATION_ARG[data["format"]]: data["train_ann"], **(data.get("format_args") or {})}
    if data["format"] in ("ucf101", "hmdb51"):
        kwargs.setdefault("subset", "train")
    try:
        found = read_annotation(data["format"], **kwargs).classes
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return class_names_for(None, found, num_classes) if len(found) <= num_classes else None


def _run_config(run: Path) -> Config:
    if not (run / "config.yaml").is_file():
        raise FileNotFoundError(f"{run / CHECKPOINT} holds no config and {run / 'config.yaml'} is missing")
    return load_config(run / "config.yaml")


def _old_backbone_cfg(path: Path, cfg) -> dict[str, Any]:
    """The architecture of a checkpoint written before ``backbone_cfg`` was recorded, looked up by name as
    training did then (a pretrained tag could switch QuickGELU on; a weights file did not)."""
    from zeroi2v.backbones import backbone_architecture
    tag = None if cfg.pretrained is None or Path(cfg.pretrained).is_file() else cfg.pretrained
    try:
        return backbone_architecture(cfg.backbone, tag)
    except (FileNotFoundError, ValueError) as e:
        raise FileNotFoundError(
            f"{path} predates checkpoints that record their backbone's architecture, and its backbone "
            f"{cfg.backbone} cannot be read ({e}). Fix: put that folder back (only its open_clip_config.json "
            f"is read), then merge or evaluate again") from e


# --- the log ------------------------------------------------------------------------------------------

LOG_FIELDS = ("kind", "epoch", "step", "loss", "lr", "val_top1", "val_top5", "clips_per_s", "decode_failures", "time_s")
"""The columns of ``log.csv``: 'train' rows every ``train.log_every`` steps, an 'epoch' row per epoch."""


class RunLog:
    """log.csv (+ TensorBoard when installed) on rank 0; a no-op elsewhere. ``keep_until=(epochs, step)``
    (resuming) keeps the rows up to the checkpoint and drops those written after it."""

    def __init__(self, folder: Path, active: bool, keep_until: tuple[int, int] | None = None):
        self.active, self.path, self.tb = active, folder / "log.csv", None
        if not active:
            return
        rows = []
        if keep_until is not None and self.path.is_file():  # resuming: drop rows written after the checkpoint
            with open(self.path, newline="") as f:
                for row in csv.DictReader(f):
                    done_epochs, step = keep_until
                    keep = int(row["epoch"]) <= done_epochs if row["kind"] == "epoch" else int(row["step"]) <= step
                    rows.append(row) if keep else None
        with open(self.path, "w", newline="") as f:
            writer = csv.DictWriter(f, LOG_FIELDS)
            writer.writeheader()
            writer.writerows(rows)
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(folder / "tensorboard"))
        except Exception:  # tensorboard not installed: the CSV is the log
            self.tb = None

    def write(self, **row: Any) -> None:
        """Append one row (``LOG_FIELDS`` by name; missing ones stay empty)."""
        if not self.active:
            return
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, LOG_FIELDS).writerow({k: ("" if row.get(k) is None else row[k]) for k in LOG_FIELDS})
        if self.tb is not None:
            for key in ("loss", "lr", "val_top1", "val_top5", "clips_per_s", "decode_failures"):
                if row.get(key) is not None:
                    self.tb.add_scalar(f"{row['kind']}/{key}", row[key], row["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
