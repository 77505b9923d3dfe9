"""What one few-shot result row trains and measures: a registry of methods, and ``run_row``.

Every method starts from the same recipe (``zeroi2v/configs/fewshot/vidtab.yaml``: VidTAB's ZeroI2V
settings) and changes only what defines it:

- ``zeroi2v``: the recipe as is: STDHA + dense linear adapters on the frozen backbone (paper Sec. 3);
- ``no_stdha``: the same adapters with every head spatial (Δt = 0): what STDHA adds;
- ``full_finetune``: the same video model (STDHA, temporal embedding) without adapters, every weight
  trained, the backbone at lr × 0.1 (the paper's note for CLIP);
- ``linear_probe``: a linear head on the frozen backbone's frame-averaged features (cached: seconds);
- ``zero_shot``: no training: the head made from the class names by CLIP's text tower
  (``zeroi2v.text_head``), on the same cached features; the floor every few-shot method must beat.

The trained methods run ``zeroi2v.train.train`` (its output goes to the row's ``train.log``) and validate
on the test list every ``train.eval_every`` epochs and after the last: ``top1`` is the last epoch's (the
headline), ``best_top1`` the best evaluated epoch's, selected on the test list and therefore optimistic
(the benchmark's published runs report that one); ``top1_curve`` lists (epoch, top-1) pairs.
``head_init: text`` starts any trained head from the class names instead of random weights.
"""
from __future__ import annotations

import dataclasses
import math
import time
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from zeroi2v.config import Config, config_from_data
from zeroi2v.registry import Registry
from zeroi2v.text_head import text_head_for

METHODS = Registry("few-shot method")
HEAD_INITS = ("random", "text")

PROBE_LR = 1e-3
"""Learning rate of the linear probe on cached features (AdamW, cosine, full batch): a head alone, on
fixed features, converges far faster than adapters and is then a fair floor, not an under-trained one."""
PROBE_EPOCHS = 200
"""Full-batch steps of the linear probe (each one evaluated on the test list: ``best_top1``)."""


@dataclasses.dataclass
class RowSpec:
    """Everything one row needs, as plain data (it travels to worker processes and Slurm jobs)."""
    task: str
    shots: int
    fold: int
    method: str
    head_init: str
    train_list: str
    test_list: str
    classes: list[str]
    video_root: str
    config: dict[str, Any]
    """The resolved recipe (``Config.to_dict()``), before the method's changes."""
    run_dir: str
    cache_dir: str
    keep_checkpoint: bool = False


class Method:
    """A few-shot method: ``run(spec, cfg)`` -> the row's result fields."""
    registry_name: ClassVar[str]

    def run(self, spec: RowSpec, cfg: Config) -> dict[str, Any]:
        raise NotImplementedError


def run_row(**kwargs: Any) -> dict[str, Any]:
    """One result row (``zeroi2v.rows`` calls it as ``fn(**kwargs)``): the method's result plus what every
    row records (seconds, the classes)."""
    spec = RowSpec(**kwargs)
    if spec.head_init not in HEAD_INITS:
        raise ValueError(f"head_init must be one of {HEAD_INITS}, got {spec.head_init!r}")
    start = time.perf_counter()
    cfg = config_from_data(spec.config, notice=False)
    result = METHODS.get_class(spec.method)().run(spec, cfg)
    return {**result, "classes": list(spec.classes), "head_init": spec.head_init,
            "seconds": round(time.perf_counter() - start, 2)}


# --- methods that train the video model ------------------------------------------------------------------

class TrainedMethod(Method):
    """Trains the video model of the recipe with ``model_changes`` (and ``optim_changes``)."""
    model_changes: ClassVar[dict[str, Any]] = {}
    optim_changes: ClassVar[dict[str, Any]] = {}

    def config(self, spec: RowSpec, cfg: Config) -> Config:
        """The row's run: the method's changes, the task's lists and classes, the row's folder. VidTAB's recipe
        accumulates gradients to ``train.total_batch`` clips per step, except at 4 shots (or fewer), where a
        step is one batch of ``train.batch_size`` clips."""
        model = type(cfg.model).from_dict({**cfg.model.to_dict(), **self.model_changes,
                                          "num_classes": len(spec.classes), "class_names": list(spec.classes)})
        data = dataclasses.replace(cfg.data, format="mmaction", root=spec.video_root, train_ann=spec.train_list,
                                   val_ann=spec.test_list, test_ann=None, format_args={"classes": list(spec.classes)},
                                   cache_decoded=True)
        optim = dataclasses.replace(cfg.optim, **self.optim_changes)
        total = cfg.train.batch_size if spec.shots <= 4 else cfg.train.total_batch
        train = dataclasses.replace(cfg.train, out_dir=spec.run_dir, total_batch=total, progress=False,
                                    save_every=cfg.optim.epochs)
        return dataclasses.replace(cfg, model=model, data=data, optim=optim, train=train).validate()

    def run(self, spec: RowSpec, cfg: Config) -> dict[str, Any]:
        from zeroi2v.data.build import build_datasets
        from zeroi2v.model import create_model
        from zeroi2v.train import train
        cfg = self.config(spec, cfg)
        torch.manual_seed(cfg.train.seed)
        model = create_model(cfg.model)
        if spec.head_init == "text":
            from zeroi2v.text_head import init_head_from_text
            init_head_from_text(model, spec.classes)
        train_set, val_set, _ = build_datasets(cfg, model.image_size, splits=("train", "val"))
        Path(spec.run_dir).mkdir(parents=True, exist_ok=True)
        with open(Path(spec.run_dir) / "train.log", "w", encoding="utf-8") as log, redirect_stdout(log):
            out = train(cfg, model=model, train_set=train_set, val_set=val_set, test_set=val_set, force=True)
        if not out["finished"]:
            raise RuntimeError(f"the run in {spec.run_dir} stopped before its last epoch")
        if not spec.keep_checkpoint:  # rows keep their log, config and results; a ViT-L checkpoint per row would not fit
            Path(out["checkpoint"]).unlink(missing_ok=True)
        curve = [(row["epoch"], row["val_top1"]) for row in out["history"] if "val_top1" in row]
        best_epoch, best = max(curve, key=lambda e: (e[1], e[0]))
        test = out["test"]
        return {"top1": test["top1"], "best_top1": round(best, 6), "best_epoch": best_epoch, "epochs": cfg.optim.epochs,
                "top1_curve": [[e, round(a, 6)] for e, a in curve], "confusion": test["confusion"],
                "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
                "train_clips": len(train_set), "test_clips": test["num_samples"],
                "decode_failures": out["decode_failures"]}


@METHODS.register("zeroi2v")
class ZeroI2VMethod(TrainedMethod):
    """STDHA + dense linear adapters on the frozen backbone: the recipe unchanged."""


@METHODS.register("no_stdha")
class NoSTDHAMethod(TrainedMethod):
    """The same adapters with every head spatial (Δt = 0 everywhere): what STDHA adds."""
    model_changes = {"temporal": {"kind": "stdha", "offsets": None}}


@METHODS.register("full_finetune")
class FullFinetuneMethod(TrainedMethod):
    """Every weight of the video model (STDHA kept, no adapters) trains; backbone lr × 0.1 (paper, CLIP)."""
    model_changes = {"adapter": None, "finetune": "full"}
    optim_changes = {"backbone_lr_mult": 0.1}


# --- methods on the cached frame features ----------------------------------------------------------------

class FeatureMethod(Method):
    """Reads the frozen backbone's frame-averaged features (``zeroi2v.fewshot.features``)."""

    def features(self, spec: RowSpec, cfg: Config, which: str) -> tuple[torch.Tensor, torch.Tensor]:
        from zeroi2v.fewshot.features import frame_features
        return frame_features(cfg, getattr(spec, f"{which}_list"), spec.video_root, spec.classes, spec.cache_dir,
                              device=_device(cfg))


def _device(cfg: Config) -> str:
    return "cuda" if cfg.train.device != "cpu" and torch.cuda.is_available() else "cpu"


def _scores(weight: torch.Tensor, bias: torch.Tensor, feats: torch.Tensor, labels: torch.Tensor,
            classes: list[str]) -> dict[str, Any]:
    from zeroi2v.evaluate import metrics_from_probs
    m = metrics_from_probs(F.linear(feats, weight, bias).softmax(-1), labels, len(classes))
    return {"top1": round(m["top1"], 6), "confusion": m["confusion"].tolist()}


@METHODS.register("zero_shot")
class ZeroShotMethod(FeatureMethod):
    """CLIP zero-shot on frame-averaged features: the text head, no training (needs the text tower)."""

    def run(self, spec: RowSpec, cfg: Config) -> dict[str, Any]:
        weight, bias = text_head_for(cfg.model, spec.classes)
        feats, labels = self.features(spec, cfg, "test")
        scores = _scores(weight, bias, feats, labels, spec.classes)
        return {**scores, "best_top1": scores["top1"], "best_epoch": 0, "epochs": 0, "trainable_params": 0,
                "train_clips": 0, "test_clips": len(labels)}


@METHODS.register("linear_probe")
class LinearProbeMethod(FeatureMethod):
    """A linear head on the frozen, frame-averaged features: AdamW at ``PROBE_LR``, cosine, ``PROBE_EPOCHS``
    full-batch steps, the recipe's weight decay, label smoothing and head dropout; evaluated every step."""

    def run(self, spec: RowSpec, cfg: Config) -> dict[str, Any]:
        x, y = self.features(spec, cfg, "train")
        xt, yt = self.features(spec, cfg, "test")
        torch.manual_seed(cfg.train.seed)
        head = nn.Linear(x.shape[1], len(spec.classes))
        nn.init.normal_(head.weight, std=0.01)
        nn.init.zeros_(head.bias)
        if spec.head_init == "text":
            weight, bias = text_head_for(cfg.model, spec.classes)
            head.weight.data.copy_(weight)
            head.bias.data.copy_(bias)
        drop = nn.Dropout(cfg.model.head_dropout)
        opt = torch.optim.AdamW(head.parameters(), lr=PROBE_LR, weight_decay=cfg.optim.weight_decay)
        curve = []
        for step in range(PROBE_EPOCHS):
            for group in opt.param_groups:
                group["lr"] = PROBE_LR * 0.5 * (1 + math.cos(math.pi * step / PROBE_EPOCHS))
            loss = F.cross_entropy(head(drop(x)), y, label_smoothing=cfg.optim.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                curve.append(_scores(head.weight, head.bias, xt, yt, spec.classes))
        best_epoch = max(range(len(curve)), key=lambda i: (curve[i]["top1"], i))
        return {"top1": curve[-1]["top1"], "best_top1": curve[best_epoch]["top1"], "best_epoch": best_epoch + 1,
                "epochs": PROBE_EPOCHS, "confusion": curve[-1]["confusion"],
                "trainable_params": sum(p.numel() for p in head.parameters()), "train_clips": len(y),
                "test_clips": len(yt)}
