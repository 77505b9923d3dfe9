"""Training, in one function: ``train(cfg)``. Plain PyTorch, readable top to bottom.

    python -m zeroi2v.train configs/ssv2_vit_b16_8f.yaml --set train.out_dir=runs/ssv2 [--resume]
    torchrun --nproc_per_node 8 -m zeroi2v.train configs/k400_vit_b16_8f.yaml      # same code, DDP

The recipe is the paper's (see ``zeroi2v.config`` for every knob): AdamW with no weight decay on 1-D
parameters and embeddings, backbone learning rate × ``backbone_lr_mult``, linear warm-up then cosine to
0 stepped per optimiser step, gradient accumulation up to ``total_batch`` clips per step, AMP on CUDA
(bf16, or fp16 with loss scaling), label smoothing. A run folder holds ``config.yaml`` (the exact
config), ``log.csv`` (+ TensorBoard when installed), ``checkpoint.pt`` (everything needed to resume,
written atomically) and ``results/`` (validation/test metrics and confusion matrices).

Resuming (``resume=True``) restores model, optimiser, scheduler, loss scaler, every RNG and the position
inside the epoch, so a killed run continues exactly where its last checkpoint was written. A NaN or
infinite loss stops the run before the weights are touched; the last good checkpoint stays on disk.
A folder that already holds a run is never overwritten without ``force``, a resume that changes the run
is refused, and ``config.yaml`` is written only when the run starts (``zeroi2v.run_folder``).
"""
from __future__ import annotations

import csv
import dataclasses
import itertools
import math
import os
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler

from zeroi2v.config import Config, ModelConfig
from zeroi2v.evaluate import evaluate, save_results, summary
from zeroi2v.model import create_model
from zeroi2v.run_folder import (CHECKPOINT, add_run_folder_arguments, check_fresh_start, check_resume, config_changes,
                                fact_changes, start_run)

LOG_FIELDS = ("kind", "epoch", "step", "loss", "lr", "val_top1", "val_top5", "clips_per_s", "decode_failures", "time_s")
EMBEDDINGS = ("temporal_embedding", "visual.class_embedding", "visual.positional_embedding")
"""Parameters that never get weight decay although they are not 1-D."""

Callback = Callable[[str, dict], None]
"""``callback(event, info)``; events: 'step' (after every optimiser step: epoch, step, global_step, loss,
lr, group_lrs = the rate each parameter group used) and 'epoch' (after every epoch: its metrics). A
callback may raise to stop the run (tests do)."""


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the weights were not updated with it."""


# --- processes, seeds ------------------------------------------------------------------------------

@dataclass
class DistEnv:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # we created the process group, so we destroy it

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto") -> DistEnv:
    """One process per device. Under torchrun (WORLD_SIZE > 1) join the process group: NCCL on CUDA,
    gloo on CPU. ``device``: 'auto' | 'cpu' | 'cuda'."""
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("train.device='cuda' but CUDA is not available")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    owns = False
    if world > 1 and not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        owns = True
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    dev = torch.device("cuda", local_rank if world > 1 else torch.cuda.current_device()) if use_cuda else torch.device("cpu")
    return DistEnv(rank, world, local_rank, dev, owns)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def rng_state() -> dict[str, Any]:
    """All RNG states as tensors and plain types (loadable with ``torch.load(weights_only=True)``)."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": [version, list(internal), gauss],
            "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --- optimiser and schedule --------------------------------------------------------------------------

def param_groups(model: nn.Module, lr: float, weight_decay: float, backbone_lr_mult: float = 1.0) -> list[dict]:
    """AdamW groups over the trainable parameters: (backbone | head) × (decay | no decay).

    No decay: 1-D tensors (biases, LayerNorm) and the class/positional/temporal embeddings. Backbone =
    ``visual.*`` (adapters, ln_post, or everything when fully fine-tuned): lr × ``backbone_lr_mult``;
    the head and the temporal embedding keep the full lr.
    """
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        name = name.removeprefix("module.")
        decay = p.ndim > 1 and name not in EMBEDDINGS
        groups.setdefault((name.startswith("visual."), decay), []).append(p)
    out = []
    for (backbone, decay), params in sorted(groups.items()):
        out.append({"params": params, "lr": lr * (backbone_lr_mult if backbone else 1.0),
                    "weight_decay": weight_decay if decay else 0.0,
                    "name": f"{'backbone' if backbone else 'head'}_{'decay' if decay else 'no_decay'}"})
    if not out:
        raise ValueError("the model has no trainable parameters (check model.finetune)")
    return out


def lr_factor(step: int, warmup_steps: int, total_steps: int, start_factor: float) -> float:
    """Multiplier of the peak lr after ``step`` optimiser steps: linear warm-up from ``start_factor``,
    then half a cosine down to 0 at ``total_steps``."""
    if step < warmup_steps:
        return start_factor + (1.0 - start_factor) * step / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


# --- data ------------------------------------------------------------------------------------------

_ANNOTATION_ARG = {"mmaction": "list_file", "kinetics": "csv_file", "ssv2": "split_json", "ucf101": "annotation_dir",
                   "hmdb51": "split_dir", "diving48": "json_file", "folder": "root"}
"""The argument of each ``zeroi2v.data.formats`` reader that takes the split's annotation path."""


def build_datasets(cfg: Config, image_size: int, splits: Sequence[str] = ("train", "val", "test")
                   ) -> tuple[Dataset | None, Dataset | None, Dataset | None]:
    """(train, val, test) VideoDatasets from ``cfg.data`` (None where no annotation is given or the split
    is not in ``splits``; evaluation-only callers pass ``splits=("test",)`` and skip scanning the
    training videos).

    Validation during training uses 1 clip × 1 centre crop unless ``test.val_full_views``; the test set
    (``data.test_ann``, else ``data.val_ann`` again) uses ``test.clips`` × ``test.crops`` views.
    """
    from zeroi2v.data.dataset import VideoDataset
    from zeroi2v.data.formats import read_annotation
    from zeroi2v.data.sampling import DenseSampler, UniformSampler
    from zeroi2v.data.transforms import SSV2_FLIP_LABEL_MAP, TestTransform, TrainTransform

    d, t = cfg.data, cfg.test
    size = d.size or image_size
    frames = cfg.num_frames
    if d.format not in _ANNOTATION_ARG:
        raise ValueError(f"data.format must be one of {list(_ANNOTATION_ARG)}, got {d.format!r}")

    def sampler(clips: int):
        return DenseSampler(frames, d.interval, clips) if d.sampler == "dense" else UniformSampler(frames, clips)

    def annotation(path: str, subset: str, classes: list[str] | None):
        kwargs = {_ANNOTATION_ARG[d.format]: path, **d.format_args}
        if d.format in ("ucf101", "hmdb51"):
            kwargs.setdefault("subset", subset)
        if classes is not None and d.format in ("mmaction", "kinetics") and "classes" not in kwargs:
            kwargs["classes"] = classes  # validation/test labels follow the training class order
        return read_annotation(d.format, **kwargs)

    def root_of(path: str) -> str | None:
        return d.root or (path if d.format == "folder" else None)

    train_set = val_set = test_set = None
    classes = None
    common = dict(seed=cfg.train.seed, on_missing=d.on_missing, cache_decoded=d.cache_decoded)
    if d.train_ann and "train" in splits:
        ann = annotation(d.train_ann, "train", None)
        classes = ann.classes
        flip_map = SSV2_FLIP_LABEL_MAP if d.flip_label_map == "ssv2" else None
        transform = TrainTransform(size=size, short_side=d.short_side, randaugment=d.randaugment, flip=d.flip,
                                   flip_label_map=flip_map, random_erasing=d.random_erasing,
                                   mean=cfg.model.mean, std=cfg.model.std)
        train_set = VideoDataset(ann, root_of(d.train_ann), sampler=sampler(1), transform=transform, train=True, **common)

    def evaluation_set(path: str, full: bool):
        transform = TestTransform(size=size, short_side=t.short_side or size, crops=t.crops if full else 1,
                                  mean=cfg.model.mean, std=cfg.model.std)
        return VideoDataset(annotation(path, "test", classes), root_of(path), sampler=sampler(t.clips if full else 1),
                            transform=transform, train=False, **common)

    if d.val_ann and "val" in splits:
        val_set = evaluation_set(d.val_ann, t.val_full_views)
    if d.test_ann and "test" in splits:
        test_set = evaluation_set(d.test_ann, True)
    elif d.val_ann and "test" in splits:  # no test split: the final multi-view test runs on the validation split
        test_set = val_set if val_set is not None and t.val_full_views else evaluation_set(d.val_ann, True)
    return train_set, val_set, test_set


class SkipSampler(Sampler):
    """Wraps a sampler and drops its first ``skip`` indices: resuming in the middle of an epoch."""

    def __init__(self, sampler: DistributedSampler):
        self.sampler, self.skip = sampler, 0

    def __iter__(self):
        return itertools.islice(iter(self.sampler), self.skip, None)

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)


def _batch(batch: Any) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(video, label, decode failures) from a dict batch or a (video, label) pair."""
    if isinstance(batch, dict):
        fails = batch.get("decode_failures")
        return batch["video"], torch.as_tensor(batch["label"]), int(torch.as_tensor(fails).sum()) if fails is not None else 0
    return batch[0], torch.as_tensor(batch[1]), 0


def _class_names(*candidates: Any) -> list[str] | None:
    for c in candidates:
        names = c if isinstance(c, (list, tuple)) else getattr(c, "classes", None)
        if names:
            return list(names)
    return None


# --- checkpoints and logs --------------------------------------------------------------------------

def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """``torch.save`` to a temporary file, then ``os.replace``: a reader never sees half a checkpoint."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint written by ``train`` (tensors and plain types only: ``weights_only=True``)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def load_run(run: str | Path) -> nn.Module:
    """The trained model of a run folder (``config.yaml`` + ``checkpoint.pt``), in eval mode."""
    from zeroi2v.config import load_config
    run = Path(run)
    if not (run / "config.yaml").is_file() or not (run / "checkpoint.pt").is_file():
        raise FileNotFoundError(f"{run} is not a training run folder (needs config.yaml and checkpoint.pt)")
    cfg = load_config(run / "config.yaml")
    model = create_model(cfg.model, pretrained=None)
    model.load_state_dict(load_checkpoint(run / "checkpoint.pt")["model"])
    return model.eval()


class RunLog:
    """log.csv (+ TensorBoard when installed) on rank 0; a no-op elsewhere."""

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


# --- the training loop -----------------------------------------------------------------------------

def train(cfg: Config, resume: bool = False, model: nn.Module | None = None, train_set: Dataset | None = None,
          val_set: Dataset | None = None, callbacks: Sequence[Callback] | None = None,
          test_set: Dataset | None = None, force: bool = False) -> dict[str, Any]:
    """Train ``cfg``; returns a summary dict (see the end of ``_train``).

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
        return _train(cfg, env, resume, force, model, train_set, val_set, test_set, list(callbacks or []))
    finally:
        if env.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _train(cfg: Config, env: DistEnv, resume: bool, force: bool, model: nn.Module | None, train_set, val_set,
           test_set, callbacks: list[Callback]) -> dict[str, Any]:
    say = print if env.main else (lambda *a, **k: None)
    if isinstance(getattr(model, "cfg", None), ModelConfig) and model.cfg != cfg.model:
        say("[zeroi2v] note: the model passed in differs from cfg.model; config.yaml records the model's own config")
        cfg = dataclasses.replace(cfg, model=model.cfg)
    o, t = cfg.optim, cfg.train
    device, is_cuda = env.device, env.device.type == "cuda"
    out = Path(t.out_dir)
    ckpt_path = out / CHECKPOINT
    # The run folder is checked before anything is built or written (every rank reads; rank 0 writes only
    # after the DDP constructor's collectives, i.e. once every rank has passed these checks).
    ckpt = load_checkpoint(ckpt_path) if resume and ckpt_path.is_file() else None
    previous: list[str] = []
    if ckpt is None:
        previous = check_fresh_start(out, cfg, force, resume)
        if resume:
            say(f"[zeroi2v] resume: no checkpoint at {ckpt_path}, starting from scratch")
    else:
        check_resume(out, config_changes(ckpt.get("config"), cfg.to_dict()))

    # Model: the same initial weights on every rank (seed), then per-rank streams for dropout/augmentation.
    seed_everything(t.seed, t.deterministic)
    if model is None:
        model = create_model(cfg.model)
    model.to(device)
    if train_set is None:
        train_set, val_set, test_set = build_datasets(cfg, getattr(model, "image_size", 224))
    if train_set is None:
        raise ValueError("nothing to train on: pass train_set or set data.train_ann")
    num_classes = getattr(getattr(model, "cfg", None), "num_classes", None) or cfg.model.num_classes
    if len(getattr(train_set, "classes", None) or ()) > num_classes:
        raise ValueError(f"the training data has {len(train_set.classes)} classes but the model only "
                         f"{num_classes} outputs: set model.num_classes")
    seed_everything(t.seed + env.rank, t.deterministic)

    # Data: every rank reads its own shard; the order is a function of (seed, epoch) only.
    shard = DistributedSampler(train_set, num_replicas=env.world, rank=env.rank, shuffle=True, seed=t.seed, drop_last=True)
    sampler = SkipSampler(shard)
    loader_rng = torch.Generator()
    loader = DataLoader(train_set, batch_size=t.batch_size, sampler=sampler, num_workers=cfg.data.workers,
                        pin_memory=is_cuda, drop_last=True, generator=loader_rng,
                        persistent_workers=cfg.data.workers > 0)  # workers (and their decode caches) live across epochs
    micro_per_epoch = len(shard) // t.batch_size
    if micro_per_epoch == 0:
        raise ValueError(f"{len(train_set)} training clips over {env.world} process(es) do not fill one batch "
                         f"of train.batch_size={t.batch_size}")
    accum = max(1, t.total_batch // (t.batch_size * env.world))
    if accum * t.batch_size * env.world != t.total_batch:
        say(f"[zeroi2v] note: total_batch={t.total_batch} is not batch_size×world×k; using "
            f"{accum * t.batch_size * env.world} clips per step")
    steps_per_epoch = math.ceil(micro_per_epoch / accum)
    if ckpt is not None:
        check_resume(out, fact_changes(ckpt, train_clips=len(train_set), steps_per_epoch=steps_per_epoch),
                     undo=f"resume on the same training data with {ckpt['world_size']} process(es)")
    total_steps = o.epochs * steps_per_epoch
    warmup_steps = round(o.warmup_epochs * steps_per_epoch)

    optimizer = torch.optim.AdamW(param_groups(model, o.lr, o.weight_decay, o.backbone_lr_mult), lr=o.lr, betas=o.betas)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, warmup_steps, total_steps, o.warmup_start_factor))
    amp = t.amp if is_cuda else "none"  # CPU trains in fp32
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)) \
        if amp != "none" else nullcontext
    criterion = nn.CrossEntropyLoss(label_smoothing=o.label_smoothing)
    net = DDP(model, device_ids=[device.index] if is_cuda else None) if env.world > 1 else model

    start_epoch, start_step, global_step, history = 0, 0, 0, []
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        start_epoch, start_step, global_step = ckpt["epoch"], ckpt["step_in_epoch"], ckpt["global_step"]
        history = list(ckpt.get("history", []))
        if ckpt["world_size"] != env.world:
            say(f"[zeroi2v] warning: checkpoint written with {ckpt['world_size']} processes, resuming with "
                f"{env.world}: the data order of the interrupted epoch changes")
        set_rng_state(ckpt["rng"][env.rank % len(ckpt["rng"])])
        say(f"[zeroi2v] resumed {ckpt_path} at epoch {start_epoch + 1}, step {start_step}/{steps_per_epoch} "
            f"(global step {global_step})")
    if env.main:  # every check passed, data and model are built: the run starts here
        start_run(out, cfg, resumed=ckpt is not None, previous=previous)
    log = RunLog(out, env.main, keep_until=(start_epoch, global_step) if ckpt is not None else None)

    def checkpoint(epoch: int, step_in_epoch: int) -> None:
        states = [None] * env.world
        if env.world > 1:
            dist.all_gather_object(states, rng_state())
        else:
            states = [rng_state()]
        if env.main:
            save_checkpoint(ckpt_path, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": states,
                "epoch": epoch, "step_in_epoch": step_in_epoch, "global_step": global_step,
                "steps_per_epoch": steps_per_epoch, "train_clips": len(train_set), "world_size": env.world,
                "history": history,
                "sampler": {"seed": t.seed, "epoch": epoch, "skip": step_in_epoch * accum * t.batch_size},
                "config": cfg.to_dict()})

    def reduce(*values: float) -> list[float]:
        x = torch.tensor(values, dtype=torch.float64, device=device)
        if env.world > 1:
            dist.all_reduce(x)
        return x.tolist()

    def validate(dataset) -> dict[str, Any]:
        return evaluate(model, dataset, num_classes, cfg.test.batch_size, device, amp=amp,
                        workers=cfg.data.workers, progress=t.progress and env.main and sys.stderr.isatty())

    say(f"[zeroi2v] {len(train_set)} clips, {env.world} process(es) × batch {t.batch_size} × accumulation "
        f"{accum} = {accum * t.batch_size * env.world} per step; {steps_per_epoch} steps/epoch, {o.epochs} epochs; "
        f"device {device}, amp {amp}; {sum(p.numel() for p in model.parameters() if p.requires_grad):,} trainable parameters")
    class_names = _class_names(train_set, getattr(model, "cfg", None) and model.cfg.class_names, cfg.model.class_names)
    stopped, last_val, total_failures = False, None, 0
    for epoch in range(start_epoch, o.epochs):
        shard.set_epoch(epoch)
        for ds in (train_set, val_set, test_set):
            if hasattr(ds, "set_epoch"):
                ds.set_epoch(epoch)
        first = start_step if epoch == start_epoch else 0
        sampler.skip = first * accum * t.batch_size
        loader_rng.manual_seed(t.seed * 1_000_003 + epoch)
        net.train()
        batches = iter(loader)
        epoch_loss = epoch_clips = epoch_failures = window_loss = window_steps = window_clips = 0.0
        epoch_start = window_start = time.perf_counter()
        lr = o.lr * lr_factor(global_step, warmup_steps, total_steps, o.warmup_start_factor)  # head lr of the step
        bar = None
        if t.progress and env.main and sys.stderr.isatty():
            from tqdm.auto import tqdm
            bar = tqdm(total=steps_per_epoch, initial=first, desc=f"epoch {epoch + 1}/{o.epochs}", dynamic_ncols=True)
        for step in range(first, steps_per_epoch):
            n_micro = min(accum, micro_per_epoch - step * accum)
            step_loss = torch.zeros((), device=device)
            for micro in range(n_micro):
                video, label, fails = _batch(next(batches))
                epoch_failures += fails
                video, label = video.to(device, non_blocking=True), label.to(device, non_blocking=True)
                sync = micro == n_micro - 1
                with (net.no_sync() if env.world > 1 and not sync else nullcontext()):
                    with autocast():
                        logits = net(video)
                    loss = criterion(logits.float(), label)
                    scaler.scale(loss / n_micro).backward()
                step_loss += loss.detach() / n_micro
                window_clips += video.shape[0]
                epoch_clips += video.shape[0]
            # One scalar all-reduce per step: the mean loss over ranks, NaN if any rank diverged.
            if env.world > 1:
                dist.all_reduce(step_loss)
                step_loss /= env.world
            loss_value = step_loss.item()
            if not math.isfinite(loss_value):
                optimizer.zero_grad(set_to_none=True)
                where = f"epoch {epoch + 1}, step {step + 1}/{steps_per_epoch} (global step {global_step + 1})"
                kept = f"the last good checkpoint is {ckpt_path}" if ckpt_path.is_file() else "no checkpoint was written yet"
                say(f"[zeroi2v] loss is {loss_value} at {where}; stopping, weights not updated; {kept}")
                raise NonFiniteLossError(f"non-finite loss ({loss_value}) at {where}; the weights were not updated "
                                         f"and {kept}. Try a lower optim.lr or train.amp=bf16 or none in a new train.out_dir "
                                         f"(a resume keeps the run's settings), or check the data.")
            if o.clip_grad is not None:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), o.clip_grad)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            lr = o.lr * lr_factor(global_step, warmup_steps, total_steps, o.warmup_start_factor)  # head lr used
            group_lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
            scheduler.step()
            global_step += 1
            epoch_loss += loss_value
            window_loss += loss_value
            window_steps += 1
            if bar is not None:
                bar.update(1)
            if global_step % t.log_every == 0 or step == steps_per_epoch - 1:
                elapsed = time.perf_counter() - window_start
                clips = reduce(window_clips)[0]
                speed = clips / max(elapsed, 1e-9)
                log.write(kind="train", epoch=epoch + 1, step=global_step, loss=round(window_loss / window_steps, 6),
                          lr=f"{lr:.6g}", clips_per_s=round(speed, 2), time_s=round(elapsed, 3))
                if bar is not None:
                    bar.set_postfix(loss=f"{window_loss / window_steps:.4f}", lr=f"{lr:.2e}", clips_s=f"{speed:.1f}")
                window_loss = window_steps = window_clips = 0.0
                window_start = time.perf_counter()
            for cb in callbacks:
                cb("step", {"epoch": epoch, "step": step + 1, "global_step": global_step, "loss": loss_value, "lr": lr,
                            "group_lrs": group_lrs})
            if t.save_every_steps and global_step % t.save_every_steps == 0:
                checkpoint(epoch, step + 1)
            if t.max_steps is not None and global_step >= t.max_steps:
                stopped = True
                break
        if bar is not None:
            bar.close()
        if stopped:
            checkpoint(epoch, step + 1)
            say(f"[zeroi2v] stopped at train.max_steps={t.max_steps} (epoch {epoch + 1}, step {step + 1}); "
                f"resume=True continues")
            break

        # End of epoch: failures, validation, log row, checkpoint.
        done = epoch + 1
        failures, clips = reduce(epoch_failures, epoch_clips)
        total_failures += int(failures)
        seconds = time.perf_counter() - epoch_start
        row = {"epoch": done, "loss": (epoch_loss / max(1, steps_per_epoch - first)),
               "lr": lr, "clips_per_s": clips / max(seconds, 1e-9),
               "decode_failures": int(failures), "global_step": global_step, "seconds": seconds}
        if val_set is not None and ((t.eval_every and done % t.eval_every == 0) or done == o.epochs):
            last_val = validate(val_set)
            row.update(val_top1=last_val["top1"], val_top5=last_val["top5"],
                       val_mean_class=last_val["mean_class_accuracy"])
        history.append(row)
        log.write(kind="epoch", epoch=done, step=global_step, loss=round(row["loss"], 6), lr=f"{row['lr']:.6g}",
                  val_top1=row.get("val_top1"), val_top5=row.get("val_top5"), clips_per_s=round(row["clips_per_s"], 2),
                  decode_failures=int(failures), time_s=round(seconds, 3))
        val_text = f", val top-1 {row['val_top1']:.2f}%" if "val_top1" in row else ""
        say(f"[zeroi2v] epoch {done}/{o.epochs}: loss {row['loss']:.4f}{val_text}, {row['clips_per_s']:.1f} clips/s, "
            f"{int(failures)} decode failures")
        if done % t.save_every == 0 or done == o.epochs:
            checkpoint(done, 0)
        for cb in callbacks:
            cb("epoch", dict(row))

    # After the last epoch: validation results, then the full multi-view test.
    finished = not stopped and bool(history) and history[-1]["epoch"] == o.epochs
    results: dict[str, Any] = {}
    if finished and last_val is not None:
        names = class_names if _fits(class_names, last_val) else None
        if env.main:
            save_results(last_val, out / "results", names, name="val")
        results["val"] = summary(last_val, names)
    if finished and test_set is not None:
        test_results = last_val if test_set is val_set and last_val is not None else validate(test_set)
        names = class_names if _fits(class_names, test_results) else None
        if env.main:
            save_results(test_results, out / "results", names, name="test")
        results["test"] = summary(test_results, names)
        say(f"[zeroi2v] test: top-1 {test_results['top1']:.2f}%, top-{test_results['top5_k']} "
            f"{test_results['top5']:.2f}% on {test_results['num_samples']} videos")
    log.close()
    model.eval()
    return {"model": model, "history": history, "global_step": global_step, "epochs_done": len(history) and history[-1]["epoch"],
            "finished": finished, "stopped_at_max_steps": stopped, "decode_failures": total_failures,
            "checkpoint": str(ckpt_path), "out_dir": str(out), "world_size": env.world, "steps_per_epoch": steps_per_epoch,
            "accumulation": accum, **results}


def _fits(names: list[str] | None, results: dict[str, Any]) -> bool:
    return names is not None and len(names) == results["num_classes"]


# --- command line (torchrun-friendly; the `zeroi2v train` CLI calls the same function) ---------------

def main(argv: Sequence[str] | None = None) -> int:
    import argparse
    from zeroi2v.config import load_config

    parser = argparse.ArgumentParser(prog="python -m zeroi2v.train", description=__doc__.split("\n")[0])
    parser.add_argument("config", help="YAML config (see configs/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set optim.lr=1e-4 (repeatable)")
    add_run_folder_arguments(parser)
    args = parser.parse_args(argv)
    result = train(load_config(args.config, args.overrides), resume=args.resume, force=args.force)
    return 0 if result["finished"] or result["stopped_at_max_steps"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
