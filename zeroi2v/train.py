"""Training: ``train(cfg)``, plain PyTorch, readable top to bottom.

    zeroi2v train configs/ssv2_vit_b16_8f.yaml --set train.out_dir=runs/ssv2 [--resume | --force]
    torchrun --nproc_per_node 8 -m zeroi2v train configs/k400_vit_b16_8f.yaml      # same code, DDP

The recipe is the paper's (Table 12; every knob in ``zeroi2v.config``): AdamW with no weight decay on 1-D
parameters and embeddings, backbone learning rate × ``backbone_lr_mult``, linear warm-up then cosine to
0 stepped per optimiser step (``zeroi2v.optim``), gradient accumulation up to ``total_batch`` clips per
step, AMP on CUDA (bf16, or fp16 with loss scaling), label smoothing.

``train`` runs in phases (``_Run``): the set-up (run folder checks, model, data, optimiser, resume), then
per epoch ``train_epoch`` (its optimiser steps) and ``end_epoch`` (validation, log row, checkpoint), and
``finish`` (validation and multi-view test results, the summary).

The run folder is ``zeroi2v.run_folder``: never overwritten without ``force``; a resume continues exactly
where the last checkpoint was written, or is refused when it would change the run. A NaN or infinite loss
stops the run before the weights are touched; the last good checkpoint stays on disk.

Undecodable videos are skipped (``zeroi2v.data.dataset``) and counted as distinct files, not attempts:
an epoch's ``decode_failures`` (its log line, its log.csv row, its ``history`` entry, which also lists them
as ``undecodable_files``) is the number of distinct files that failed in that epoch; the result's
``decode_failures`` and ``undecodable_files`` are the distinct files that failed in the whole run (first
met first). Failures a data set reports without naming the file are added as reported.
"""
from __future__ import annotations

import dataclasses
import math
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import Dataset

from zeroi2v.config import Config, ModelConfig
from zeroi2v.data.build import ShardLoader, build_datasets
from zeroi2v.data.dataset import batch_failures, describe_failures
from zeroi2v.distributed import DistEnv, init_distributed, rng_states, seed_everything
from zeroi2v.evaluate import _split_batch, accuracy_lines, evaluate, save_results, summary
from zeroi2v.model import create_model
from zeroi2v.optim import build_optimiser
from zeroi2v.tuning import count_trainable
from zeroi2v.run_folder import (CHECKPOINT, Position, RunLog, check_resume, check_run_folder, checkpoint_state,
                                class_names_for, fact_changes, load_checkpoint, restore, save_checkpoint, start_run)

Callback = Callable[[str, dict], None]
"""``callback(event, info)``; events: 'step' (after every optimiser step: epoch, step, global_step, loss,
lr, group_lrs = the rate each parameter group used) and 'epoch' (after every epoch: its metrics). A
callback may raise to stop the run (tests do)."""


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the weights were not updated with it."""


# --- the training loop: set-up, then per epoch its optimiser steps and its end, then the finish ------------

def train(cfg: Config, resume: bool = False, model: nn.Module | None = None, train_set: Dataset | None = None,
          val_set: Dataset | None = None, callbacks: Sequence[Callback] | None = None,
          test_set: Dataset | None = None, force: bool = False) -> dict[str, Any]:
    """Train ``cfg``; returns a summary dict (see ``_Run.finish``).

    Args:
        cfg: the run (``zeroi2v.config.load_config``).
        resume: continue from ``<out_dir>/checkpoint.pt`` when it exists (otherwise start afresh); refused
            when a run-defining setting or the number of training clips differs from the checkpoint's.
        force: start afresh even when ``out_dir`` already holds a run, removing that run's files (without
            it such a folder is refused: see ``zeroi2v.run_folder``).
        model: a ready model (e.g. built from local weights); default ``create_model(cfg.model)``.
        train_set, val_set, test_set: ready data sets (items ``{"video", "label", ...}`` dicts or
            ``(video, label)`` pairs); when ``train_set`` is None all three come from ``cfg.data``.
        callbacks: ``callback(event, info)`` functions, see ``Callback``.
    """
    cfg.validate()
    if resume and force:
        raise ValueError("resume and force exclude each other: resume continues the run in train.out_dir, "
                         "force replaces it")
    env = init_distributed(cfg.train.device)
    try:
        run = _Run(cfg, env, resume, force, model, (train_set, val_set, test_set), list(callbacks or []))
        stopped = False
        for epoch in range(run.at.epoch, run.cfg.optim.epochs):
            meter = run.train_epoch(epoch)
            if meter is None:  # stopped at train.max_steps
                stopped = True
                break
            run.end_epoch(epoch, meter)
        return run.finish(stopped)
    finally:
        if env.owns_group and dist.is_initialized():
            dist.destroy_process_group()


class _Run:
    """One training run. ``__init__`` is the set-up; ``train_epoch`` (its ``optimiser_step``s),
    ``end_epoch`` and ``finish`` are the phases after it. ``at`` is where the run is (``Position``)."""

    def __init__(self, cfg: Config, env: DistEnv, resume: bool, force: bool, model: nn.Module | None, sets: tuple,
                 callbacks: list[Callback]):
        """Check the run folder, build the model, data, loader and optimiser, restore a checkpoint, start."""
        self.env, self.callbacks = env, callbacks
        self.say = say = print if env.main else (lambda *a, **k: None)
        if isinstance(getattr(model, "cfg", None), ModelConfig) and model.cfg != cfg.model:
            say("[zeroi2v] note: the model passed in differs from cfg.model; config.yaml records the model's own "
                "config")
            cfg = dataclasses.replace(cfg, model=model.cfg)
        self.cfg, t, out = cfg, cfg.train, Path(cfg.train.out_dir)
        self.ckpt_path = out / CHECKPOINT
        # The run folder is checked before anything is built or written (every rank reads; rank 0 writes only
        # after the DDP constructor's collectives, i.e. once every rank has passed these checks).
        ckpt = load_checkpoint(self.ckpt_path) if resume and self.ckpt_path.is_file() else None
        previous = check_run_folder(out, cfg, ckpt, resume, force, say)
        self.model, self.sets, self.num_classes = _model_and_data(cfg, env, model, sets)
        self.cfg = cfg = _with_class_names(cfg, self.model, self.sets[0], self.num_classes, say)
        # accum: micro-batches per optimiser step
        self.loader, self.accum, self.steps_per_epoch = _loader(cfg, env, self.sets[0], say)
        if ckpt is not None:
            check_resume(out, fact_changes(ckpt, train_clips=len(self.sets[0]), steps_per_epoch=self.steps_per_epoch),
                         undo=f"resume on the same training data with {ckpt['world_size']} process(es)")
        self.opt = build_optimiser(self.model, cfg.optim, self.steps_per_epoch, env.device.type, t.amp)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.optim.label_smoothing)
        self.net = DDP(self.model, device_ids=[env.device.index] if env.device.type == "cuda" else None) \
            if env.world > 1 else self.model
        self.at, self.last_val = Position(), None
        if ckpt is not None:
            if ckpt["world_size"] != env.world:
                say(f"[zeroi2v] warning: checkpoint written with {ckpt['world_size']} processes, resuming with "
                    f"{env.world}: the data order of the interrupted epoch changes")
            self.at = restore(ckpt, {"model": self.model, **self.opt.parts}, env.rank)
            say(f"[zeroi2v] resumed {self.ckpt_path} at epoch {self.at.epoch + 1}, step {self.at.step_in_epoch}/"
                f"{self.steps_per_epoch} (global step {self.at.global_step})")
        if env.main:  # every check passed, data and model are built: the run starts here
            start_run(out, cfg, resumed=ckpt is not None, previous=previous)
        self.log = RunLog(out, env.main, keep_until=(self.at.epoch, self.at.global_step) if ckpt is not None else None)
        say(f"[zeroi2v] {len(self.sets[0])} clips, {env.world} process(es) × batch {t.batch_size} × accumulation "
            f"{self.accum} = {self.accum * t.batch_size * env.world} per step; {self.steps_per_epoch} steps/epoch, "
            f"{cfg.optim.epochs} epochs; device {env.device}, amp {self.opt.amp}; "
            f"{count_trainable(self.model):,} trainable parameters")

    def train_epoch(self, epoch: int) -> _Meter | None:
        """The optimiser steps of one epoch (from the resume position in the first); returns its sums, or
        None when ``train.max_steps`` stopped the run (a checkpoint is written first)."""
        t, at = self.cfg.train, self.at
        for ds in self.sets:
            if hasattr(ds, "set_epoch"):
                ds.set_epoch(epoch)
        first = at.step_in_epoch  # 0, or where a resumed epoch was interrupted
        self.net.train()
        batches = self.loader.epoch(epoch, skip=first * self.accum * t.batch_size)
        meter = _Meter(self.opt.head_lr(at.global_step))
        bar = None
        if t.progress and self.env.main and sys.stderr.isatty():
            from tqdm.auto import tqdm
            bar = tqdm(total=self.steps_per_epoch, initial=first, desc=f"epoch {epoch + 1}/{self.cfg.optim.epochs}",
                       dynamic_ncols=True)
        for step in range(first, self.steps_per_epoch):
            loss_value = self.optimiser_step(batches, meter, epoch, step)
            meter.lr = self.opt.head_lr(at.global_step)  # the rates this step used
            group_lrs = {g["name"]: g["lr"] for g in self.opt.optimizer.param_groups}
            self.opt.scheduler.step()
            at.global_step += 1
            at.step_in_epoch = step + 1
            meter.add_step(loss_value)
            if bar is not None:
                bar.update(1)
            if at.global_step % t.log_every == 0 or step == self.steps_per_epoch - 1:
                self.log_window(epoch, meter, bar)
            for cb in self.callbacks:
                cb("step", {"epoch": epoch, "step": step + 1, "global_step": at.global_step, "loss": loss_value,
                            "lr": meter.lr, "group_lrs": group_lrs})
            if t.save_every_steps and at.global_step % t.save_every_steps == 0:
                self.checkpoint()
            if t.max_steps is not None and at.global_step >= t.max_steps:
                if bar is not None:
                    bar.close()
                self.checkpoint()
                self.say(f"[zeroi2v] stopped at train.max_steps={t.max_steps} (epoch {epoch + 1}, step {step + 1}); "
                         f"resume=True continues")
                return None
        if bar is not None:
            bar.close()
        return meter

    def optimiser_step(self, batches: Iterator, meter: _Meter, epoch: int, step: int) -> float:
        """One optimiser step: forward and backward over up to ``accum`` micro-batches (gradients synchronised
        on the last), then clip, step and update (``Optimiser.step``); returns the loss, averaged over the
        processes. A non-finite loss stops the run before the weights are touched (``NonFiniteLossError``)."""
        env, device = self.env, self.env.device
        n_micro = min(self.accum, self.loader.batches_per_epoch - step * self.accum)
        step_loss = torch.zeros((), device=device)
        for micro in range(n_micro):
            batch = next(batches)
            meter.add_failures(*batch_failures(batch))
            video, label, _, _ = _split_batch(batch)
            video, label = video.to(device, non_blocking=True), label.to(device, non_blocking=True)
            sync = micro == n_micro - 1
            with (self.net.no_sync() if env.world > 1 and not sync else nullcontext()):
                with self.opt.autocast():
                    logits = self.net(video)
                loss = self.criterion(logits.float(), label)
                self.opt.backward(loss / n_micro)
            step_loss += loss.detach() / n_micro
            meter.window_clips += video.shape[0]
            meter.clips += video.shape[0]
        # One scalar all-reduce per step: the mean loss over ranks, NaN if any rank diverged.
        if env.world > 1:
            dist.all_reduce(step_loss)
            step_loss /= env.world
        loss_value = step_loss.item()
        if not math.isfinite(loss_value):
            self.opt.optimizer.zero_grad(set_to_none=True)
            where = f"epoch {epoch + 1}, step {step + 1}/{self.steps_per_epoch} (global step {self.at.global_step + 1})"
            kept = (f"the last good checkpoint is {self.ckpt_path}" if self.ckpt_path.is_file()
                    else "no checkpoint was written yet")
            self.say(f"[zeroi2v] loss is {loss_value} at {where}; stopping, weights not updated; {kept}")
            raise NonFiniteLossError(f"non-finite loss ({loss_value}) at {where}; the weights were not updated "
                                     f"and {kept}. Try a lower optim.lr or train.amp=bf16 or none in a new "
                                     f"train.out_dir (a resume keeps the run's settings), or check the data.")
        self.opt.step(self.model.parameters())
        return loss_value

    def log_window(self, epoch: int, meter: _Meter, bar: Any) -> None:
        """A 'train' row of log.csv: the mean loss and the speed (over every process) since the last one."""
        elapsed = time.perf_counter() - meter.window_start
        clips = self.env.reduce(meter.window_clips)[0]
        speed = clips / max(elapsed, 1e-9)
        mean_loss = meter.window_loss / meter.window_steps
        self.log.write(kind="train", epoch=epoch + 1, step=self.at.global_step, loss=round(mean_loss, 6),
                       lr=f"{meter.lr:.6g}", clips_per_s=round(speed, 2), time_s=round(elapsed, 3))
        if bar is not None:
            bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{meter.lr:.2e}", clips_s=f"{speed:.1f}")
        meter.window_loss = meter.window_steps = meter.window_clips = 0.0
        meter.window_start = time.perf_counter()

    def end_epoch(self, epoch: int, meter: _Meter) -> None:
        """Decode failures (distinct files) and speed over every process, validation (every ``train.eval_every``
        epochs and after the last), the 'epoch' log row, a checkpoint (every ``train.save_every`` epochs and
        after the last)."""
        o, t, done = self.cfg.optim, self.cfg.train, epoch + 1
        anonymous, clips = self.env.reduce(meter.anonymous_failures, meter.clips)
        files = _all_names(self.env, list(meter.failed_files))
        failures = len(files) + int(anonymous)
        seconds = time.perf_counter() - meter.start
        row = {"epoch": done, "loss": (meter.loss / max(1, meter.steps)), "lr": meter.lr,
               "clips_per_s": clips / max(seconds, 1e-9), "decode_failures": failures, "undecodable_files": files,
               "global_step": self.at.global_step, "seconds": seconds}
        if self.sets[1] is not None and ((t.eval_every and done % t.eval_every == 0) or done == o.epochs):
            self.last_val = self.validate(self.sets[1])
            row.update(val_top1=self.last_val["top1"], val_top5=self.last_val["top5"],
                       val_mean_class=self.last_val["mean_class_accuracy"])
        self.at.history.append(row)
        self.at.epoch, self.at.step_in_epoch = done, 0
        self.log.write(kind="epoch", epoch=done, step=self.at.global_step, loss=round(row["loss"], 6),
                       lr=f"{row['lr']:.6g}", val_top1=row.get("val_top1"), val_top5=row.get("val_top5"),
                       clips_per_s=round(row["clips_per_s"], 2), decode_failures=int(failures),
                       time_s=round(seconds, 3))
        val_text = f", val top-1 {row['val_top1']:.3f}" if "val_top1" in row else ""
        self.say(f"[zeroi2v] epoch {done}/{o.epochs}: loss {row['loss']:.4f}{val_text}, "
                 f"{row['clips_per_s']:.1f} clips/s, {describe_failures(files, failures)}")
        if done % t.save_every == 0 or done == o.epochs:
            self.checkpoint()
        for cb in self.callbacks:
            cb("epoch", dict(row))

    def checkpoint(self) -> None:
        """Write ``checkpoint.pt`` at the run's position (rank 0; every rank contributes its RNG states)."""
        rngs = rng_states(self.env.world)
        if self.env.main:
            save_checkpoint(self.ckpt_path, checkpoint_state(
                {"model": self.model, **self.opt.parts}, self.at, rngs, self.cfg, self.steps_per_epoch,
                len(self.sets[0]), skip=self.at.step_in_epoch * self.accum * self.cfg.train.batch_size))

    def validate(self, dataset: Dataset) -> dict[str, Any]:
        return evaluate(self.model, dataset, self.num_classes, self.cfg.test.batch_size, self.env.device,
                        amp=self.opt.amp, workers=self.cfg.data.workers,
                        progress=self.cfg.train.progress and self.env.main and sys.stderr.isatty())

    def finish(self, stopped: bool) -> dict[str, Any]:
        """After the last epoch: the validation results, then the full multi-view test; the run's summary
        (``decode_failures``: distinct files that failed in the run, ``undecodable_files``: which)."""
        cfg, history, (_, val_set, test_set) = self.cfg, self.at.history, self.sets
        finished = not stopped and bool(history) and history[-1]["epoch"] == cfg.optim.epochs
        class_names = cfg.model.class_names
        results: dict[str, Any] = {}
        if finished and self.last_val is not None:
            results["val"] = self.results(self.last_val, class_names, "val")
        if finished and test_set is not None:
            test = self.last_val if test_set is val_set and self.last_val is not None else self.validate(test_set)
            results["test"] = self.results(test, class_names, "test")
            self.say("[zeroi2v] test: " + "\n".join(accuracy_lines(test, _fitting(class_names, test))))
        self.log.close()
        self.model.eval()
        files = list(dict.fromkeys(f for row in history for f in row.get("undecodable_files", ())))
        anonymous = sum(row["decode_failures"] - len(row.get("undecodable_files", ())) for row in history)
        return {"model": self.model, "history": history, "global_step": self.at.global_step,
                "epochs_done": len(history) and history[-1]["epoch"], "finished": finished,
                "stopped_at_max_steps": stopped, "decode_failures": len(files) + anonymous, "undecodable_files": files,
                "checkpoint": str(self.ckpt_path), "out_dir": str(self.ckpt_path.parent), "world_size": self.env.world,
                "steps_per_epoch": self.steps_per_epoch, "accumulation": self.accum, **results}

    def results(self, results: dict[str, Any], class_names: list[str] | None, name: str) -> dict[str, Any]:
        """Save ``results`` as ``results/<name>.json`` + confusion matrix (rank 0); returns their summary."""
        names = _fitting(class_names, results)
        if self.env.main:
            save_results(results, self.ckpt_path.parent / "results", names, name=name)
        return summary(results, names)


def _fitting(class_names: list[str] | None, results: dict[str, Any]) -> list[str] | None:
    """``class_names`` when they name every class of ``results``, else None (numbered)."""
    return class_names if class_names is not None and len(class_names) == results["num_classes"] else None


def _model_and_data(cfg: Config, env: DistEnv, model: nn.Module | None, sets: tuple) -> tuple[nn.Module, tuple, int]:
    """The model (the same initial weights on every rank: seed), the data sets (from ``cfg.data`` unless
    given) and the number of outputs; then per-rank RNG streams for dropout and augmentation."""
    t = cfg.train
    seed_everything(t.seed, t.deterministic)
    if model is None:
        model = create_model(cfg.model)
    model.to(env.device)
    if sets[0] is None:
        sets = build_datasets(cfg, getattr(model, "image_size", 224))
    if sets[0] is None:
        raise ValueError("nothing to train on: pass train_set or set data.train_ann")
    num_classes = getattr(getattr(model, "cfg", None), "num_classes", None) or cfg.model.num_classes
    if len(getattr(sets[0], "classes", None) or ()) > num_classes:
        raise ValueError(f"the training data has {len(sets[0].classes)} classes but the model only "
                         f"{num_classes} outputs: set model.num_classes")
    seed_everything(t.seed + env.rank, t.deterministic)
    return model, sets, num_classes


def _loader(cfg: Config, env: DistEnv, train_set: Dataset, say: Callable[..., None]) -> tuple[ShardLoader, int, int]:
    """This rank's loader, the micro-batches per optimiser step (gradient accumulation up to
    ``train.total_batch`` clips per step) and the optimiser steps per epoch."""
    t = cfg.train
    loader = ShardLoader(train_set, t.batch_size, env.rank, env.world, t.seed, cfg.data.workers,
                         pin_memory=env.device.type == "cuda")
    if loader.batches_per_epoch == 0:
        raise ValueError(f"{len(train_set)} training clips over {env.world} process(es) do not fill one batch "
                         f"of train.batch_size={t.batch_size}")
    accum = max(1, t.total_batch // (t.batch_size * env.world))
    if accum * t.batch_size * env.world != t.total_batch:
        say(f"[zeroi2v] note: total_batch={t.total_batch} is not batch_size×world×k; using "
            f"{accum * t.batch_size * env.world} clips per step")
    return loader, accum, math.ceil(loader.batches_per_epoch / accum)


class _Meter:
    """Sums over one epoch and over the current logging window (``train.log_every`` steps); ``lr`` is the
    head's learning rate of the last step."""

    def __init__(self, lr: float):
        self.steps, self.lr, self.loss, self.clips = 0, lr, 0.0, 0.0
        self.failed_files: dict[str, None] = {}  # distinct undecodable files met this epoch, in order
        self.anonymous_failures = 0  # failures reported without a file name (see batch_failures)
        self.window_loss = self.window_steps = self.window_clips = 0.0
        self.start = self.window_start = time.perf_counter()

    def add_failures(self, files: list[str], anonymous: int) -> None:
        self.failed_files.update(dict.fromkeys(files))
        self.anonymous_failures += anonymous

    def add_step(self, loss: float) -> None:
        self.steps += 1
        self.loss += loss
        self.window_loss += loss
        self.window_steps += 1


def _all_names(env: DistEnv, names: list[str]) -> list[str]:
    """The distinct ``names`` of every process, in order (a collective when there are several)."""
    if env.world > 1:
        gathered: list[list[str] | None] = [None] * env.world
        dist.all_gather_object(gathered, names)
        names = [n for part in gathered for n in part or ()]
    return list(dict.fromkeys(names))


NO_NAMES = ("[zeroi2v] note: no class names: the training annotation gives only label numbers and model.class_names "
            "is not set, so predict, eval and the demo show 'class N'. Name the classes with "
            "data.format_args.classes (a file, one name per line, or a list) or model.class_names")


def _with_class_names(cfg: Config, model: nn.Module, train_set: Dataset, num_classes: int,
                      say: Callable[..., None]) -> Config:
    """``cfg`` (and the model's own config) with the run's class names (``class_names_for``); says once when
    there are none."""
    names = class_names_for(cfg.model.class_names, getattr(train_set, "classes", None), num_classes)
    if names is None:
        say(NO_NAMES)
    if isinstance(getattr(model, "cfg", None), ModelConfig):
        model.cfg = dataclasses.replace(model.cfg, class_names=names)
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, class_names=names))


if __name__ == "__main__":  # the command line is `zeroi2v train` (zeroi2v.cli); an old command must not pass silently
    raise SystemExit("python -m zeroi2v.train has no command line any more: run `zeroi2v train CONFIG [--set KEY=VALUE] "
                     "[--resume | --force]`, or `torchrun --nproc_per_node N -m zeroi2v train CONFIG` for several GPUs")
