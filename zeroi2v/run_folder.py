"""Guards of a run folder (``train.out_dir``): a run's work is never overwritten by accident, and a resume
continues the same run or is refused.

A run folder holds ``config.yaml`` (the exact config), ``log.csv``, ``checkpoint.pt`` and ``results/``.

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
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import yaml

from zeroi2v.config import Config, save_config

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
})
"""Settings a resume may change. Every other key is run-defining: all of ``model.*`` (the network and its
weights), the data format and how clips are sampled and augmented (``data.format``, ``format_args``,
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
            same = yaml.safe_load(config.read_text()) == cfg.to_dict()
        except (yaml.YAMLError, UnicodeDecodeError):
            same = False
        if not same:
            found.append("config.yaml of another config")
    return found


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


def start_run(folder: Path, cfg: Config, resumed: bool, previous: list[str]) -> None:
    """The run is starting: remove the ``previous`` run's files (``force``), then write the config,
    atomically: ``config.yaml``, or ``config.resumed.yaml`` beside it when resuming."""
    folder.mkdir(parents=True, exist_ok=True)
    if previous:
        for name in PREVIOUS_RUN:
            path = folder / name
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    save_config(cfg, folder / ("config.resumed.yaml" if resumed else "config.yaml"))


def add_run_folder_arguments(parser) -> None:
    """--resume | --force, for ``python -m zeroi2v.train`` and ``zeroi2v train``."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="continue the run in train.out_dir from its "
                       "checkpoint.pt (refused when a run-defining setting changed)")
    group.add_argument("--force", action="store_true", help="start afresh even when train.out_dir already "
                       "holds a run, removing its checkpoint, log and results")


def _show(value: Any) -> str:
    return json.dumps(value, default=str)
