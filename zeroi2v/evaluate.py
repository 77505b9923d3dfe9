"""Multi-view testing and classification metrics.

A test item holds V views of one video (V = temporal clips × spatial crops), shape (V, C, T, H, W); a
single view (C, T, H, W) is V = 1. Every view runs through the model, each view's logits become
probabilities (softmax) and the video's prediction is their mean, as in the paper. Accuracies are
fractions (0-1) everywhere: metrics, results JSON, ``log.csv``, printed lines ("top-1 0.604"). The model
only needs ``forward`` (B, C, T, H, W) -> logits, so an unmerged ZeroI2V, a merged one and any other video
classifier are evaluated the same way.

Under ``torchrun`` every process evaluates its shard and the probabilities are gathered, de-duplicated
by sample index (the sampler pads shards to equal length) and scored once.
"""
from __future__ import annotations

import json
import math
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from zeroi2v.files import atomic_write_text


def topk_accuracy(probs: torch.Tensor, labels: torch.Tensor, k: int = 1) -> float:
    """Fraction (0-1) of rows whose label is among the ``k`` highest scores (k capped at the class count)."""
    if len(labels) == 0:
        return float("nan")
    k = max(1, min(k, probs.shape[1]))
    topk = probs.topk(k, dim=1).indices
    return (topk == labels[:, None]).any(dim=1).float().mean().item()


def confusion_matrix(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(num_classes, num_classes) int64 counts; row = true class, column = predicted class."""
    idx = labels.long() * num_classes + preds.long()
    return torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes)


def per_class_accuracy(confusion: torch.Tensor) -> list[float]:
    """Recall of every class as a fraction (NaN for a class without samples)."""
    total = confusion.sum(dim=1).double()
    correct = confusion.diagonal().double()
    return [(c / t).item() if t > 0 else float("nan") for c, t in zip(correct, total)]


def metrics_from_probs(probs: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None) -> dict[str, Any]:
    """top-1, top-5, per-class and mean-class accuracy (fractions) and the confusion matrix of (N, K) probabilities."""
    num_classes = num_classes or probs.shape[1]
    probs, labels = probs.float().cpu(), labels.long().cpu()
    if probs.ndim != 2 or probs.shape[1] != num_classes or probs.shape[0] != labels.shape[0]:
        raise ValueError(f"probs must be (N, {num_classes}) for {labels.shape[0]} labels, got {tuple(probs.shape)}")
    preds = probs.argmax(dim=1)
    confusion = confusion_matrix(preds, labels, num_classes)
    per_class = per_class_accuracy(confusion)
    seen = [a for a in per_class if not math.isnan(a)]
    k5 = min(5, num_classes)
    return {
        "top1": topk_accuracy(probs, labels, 1),
        "top5": topk_accuracy(probs, labels, k5),
        "top5_k": k5,
        "mean_class_accuracy": sum(seen) / len(seen) if seen else float("nan"),
        "per_class_accuracy": per_class,
        "confusion": confusion,
        "num_samples": int(labels.numel()),
        "num_classes": num_classes,
    }


def _split_batch(batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, int]:
    """(video, label, index or None, decode failures) from a dict batch or a (video, label) pair."""
    if isinstance(batch, dict):
        failures = batch.get("decode_failures")
        failures = int(torch.as_tensor(failures).sum()) if failures is not None else 0
        return batch["video"], torch.as_tensor(batch["label"]), batch.get("index"), failures
    video, label = batch[0], batch[1]
    return video, torch.as_tensor(label), None, 0


@torch.no_grad()
def predict(model: nn.Module, loader: Iterable, device: torch.device | str = "cpu", amp: str = "none",
            max_views_per_forward: int | None = None, progress: bool = False
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """View-averaged probabilities of every item in ``loader``: (probs (N, K), labels (N,), indices (N,),
    decode failures). Items are (V, C, T, H, W) or (C, T, H, W); V views are run together (in chunks of
    ``max_views_per_forward`` clips if given)."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)
                if device.type == "cuda" and amp in ("bf16", "fp16") else nullcontext())
    all_probs, all_labels, all_index, failures, seen = [], [], [], 0, 0
    if progress:
        from tqdm.auto import tqdm
        loader = tqdm(loader, desc="eval", leave=False)
    try:
        for batch in loader:
            video, label, index, fails = _split_batch(batch)
            failures += fails
            if video.ndim == 5:
                video = video[:, None]
            if video.ndim != 6:
                raise ValueError(f"expected test items (V, C, T, H, W) or (C, T, H, W), got a batch of {tuple(video.shape)}")
            b, v = video.shape[:2]
            clips = video.reshape(b * v, *video.shape[2:]).to(device, non_blocking=True)
            chunk = max_views_per_forward or clips.shape[0]
            with autocast:
                logits = torch.cat([model(clips[i:i + chunk]) for i in range(0, clips.shape[0], chunk)])
            probs = logits.float().softmax(dim=-1).view(b, v, -1).mean(dim=1)
            all_probs.append(probs.cpu())
            all_labels.append(label.long().view(-1).cpu())
            all_index.append(torch.as_tensor(index).long().view(-1) if index is not None
                             else torch.arange(seen, seen + b))
            seen += b
    finally:
        model.train(was_training)
    if not all_probs:
        return torch.zeros(0, 0), torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), failures
    return torch.cat(all_probs), torch.cat(all_labels), torch.cat(all_index), failures


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _gather(probs: torch.Tensor, labels: torch.Tensor, index: torch.Tensor, failures: int, num_classes: int):
    """All shards' predictions on every rank, one row per sample index (padding duplicates dropped)."""
    backend_device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    world = dist.get_world_size()
    if probs.numel() == 0:
        probs = torch.zeros(0, num_classes)
    n = torch.tensor([probs.shape[0]], device=backend_device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    longest = int(max(s.item() for s in sizes))
    packed = torch.zeros(longest, num_classes + 2, dtype=torch.float64)
    packed[:probs.shape[0], :num_classes] = probs.double()
    packed[:probs.shape[0], num_classes] = labels.double()
    packed[:probs.shape[0], num_classes + 1] = index.double()
    packed = packed.to(backend_device)
    parts = [torch.zeros_like(packed) for _ in range(world)]
    dist.all_gather(parts, packed)
    rows = torch.cat([p[:int(s.item())] for p, s in zip(parts, sizes)]).cpu()
    fails = torch.tensor([failures], device=backend_device)
    dist.all_reduce(fails)
    index_all = rows[:, num_classes + 1].long()
    order = torch.argsort(index_all, stable=True)
    rows, index_all = rows[order], index_all[order]
    keep = torch.ones_like(index_all, dtype=torch.bool)
    keep[1:] = index_all[1:] != index_all[:-1]
    rows = rows[keep]
    return rows[:, :num_classes].float(), rows[:, num_classes].long(), rows[:, num_classes + 1].long(), int(fails.item())


def make_loader(dataset: Dataset, batch_size: int, workers: int = 0, distributed: bool | None = None,
                pin_memory: bool = False) -> DataLoader:
    """A deterministic test loader (no shuffling); shards the data set when running distributed."""
    distributed = _distributed() if distributed is None else distributed
    sampler = DistributedSampler(dataset, shuffle=False, drop_last=False) if distributed else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, sampler=sampler, num_workers=workers,
                      pin_memory=pin_memory, generator=torch.Generator().manual_seed(0),
                      persistent_workers=False)


def evaluate(model: nn.Module, data: Dataset | Iterable, num_classes: int | None = None, batch_size: int = 4,
             device: torch.device | str | None = None, amp: str = "none", workers: int = 0,
             max_views_per_forward: int | None = None, progress: bool = False) -> dict[str, Any]:
    """Multi-view accuracy of ``model`` on ``data`` (a Dataset or any iterable of batches).

    Args:
        model: anything mapping (B, C, T, H, W) to logits (unmerged or merged ZeroI2V).
        data: a Dataset whose items are dicts ``{"video", "label", "index"?, "decode_failures"?}`` or
            ``(video, label)`` pairs, or a ready DataLoader / iterable of such batches.
        num_classes: defaults to ``model.cfg.num_classes`` or the width of the logits.
        batch_size, workers: for the loader built around a Dataset (each item brings all its views).
        device: where the model runs (default: where its parameters are).
        amp: 'bf16' / 'fp16' autocast on CUDA, 'none' for fp32.
        max_views_per_forward: split a batch's B × V clips into forward passes of at most this many.
        progress: show a tqdm bar.

    Returns a dict: top1, top5 (top5_k = min(5, classes)), mean_class_accuracy, per_class_accuracy (fractions)
    (list, NaN for absent classes), confusion (tensor, rows = true class), num_samples, num_classes,
    decode_failures, and probs (N, K), labels (N,), indices (N,) ordered by sample index.
    Under torch.distributed with a Dataset, every rank gets the same gathered result.
    """
    if device is None:
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    distributed = _distributed() and isinstance(data, Dataset)
    loader = make_loader(data, batch_size, workers, distributed, pin_memory=torch.device(device).type == "cuda") \
        if isinstance(data, Dataset) else data
    probs, labels, index, failures = predict(model, loader, device, amp, max_views_per_forward, progress)
    if num_classes is None:
        num_classes = getattr(getattr(model, "cfg", None), "num_classes", None) or probs.shape[1]
    if probs.numel() and probs.shape[1] != num_classes:
        raise ValueError(f"model gives {probs.shape[1]} scores per clip but num_classes={num_classes}")
    if distributed:
        probs, labels, index, failures = _gather(probs, labels, index, failures, num_classes)
    else:
        order = torch.argsort(index, stable=True)
        probs, labels, index = probs[order], labels[order], index[order]
    if probs.numel() == 0:
        probs = torch.zeros(0, num_classes)
    results = metrics_from_probs(probs, labels, num_classes)
    results.update(decode_failures=failures, probs=probs, labels=labels, indices=index)
    return results


def class_labels(names: Sequence[Any] | None, num_classes: int) -> list[str]:
    """What ``predict``, ``eval`` and the demo show for each of the ``num_classes`` outputs: the recorded
    names (``model.class_names``), 'class N' past their end or when there are none."""
    shown = [str(n) for n in names or ()][:num_classes]
    return shown + [f"class {i}" for i in range(len(shown), num_classes)]


def _fraction(x: float | None) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:.3f}"


def accuracy_lines(results: dict[str, Any], class_names: Sequence[str] | None = None, max_classes: int = 30
                   ) -> list[str]:
    """Printed accuracies, labelled fractions: "top-1 0.604  top-5 0.912  mean class 0.598 on 40 videos",
    then one line per class (name and accuracy) when there are at most ``max_classes``."""
    data = summary(results, class_names)
    lines = [f"top-1 {_fraction(data['top1'])}  top-{data['top5_k']} {_fraction(data['top5'])}  mean class "
             f"{_fraction(data['mean_class_accuracy'])} on {data['num_samples']} videos (fractions)"]
    if data["num_classes"] <= max_classes:
        lines += [f"  {_fraction(a):>5}  {name}" for name, a in data["per_class_accuracy"].items()]
    return lines


def summary(results: dict[str, Any], class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """The JSON-able part of ``evaluate``'s results (fractions to 6 decimals, NaN becomes null; per-class keyed
    by name, 'class N' without names)."""
    def clean(x: float) -> float | None:
        return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 6)

    k = results["num_classes"]
    names = [str(n) for n in class_names] if class_names is not None else class_labels(None, k)
    if len(names) != k:
        raise ValueError(f"{len(names)} class names for {k} classes")
    return {
        "top1": clean(results["top1"]), "top5": clean(results["top5"]), "top5_k": results["top5_k"],
        "mean_class_accuracy": clean(results["mean_class_accuracy"]),
        "num_samples": results["num_samples"], "num_classes": k,
        "decode_failures": results.get("decode_failures", 0),
        "per_class_accuracy": {n: clean(a) for n, a in zip(names, results["per_class_accuracy"])},
        "class_names": names,
        "confusion": torch.as_tensor(results["confusion"]).tolist(),
    }


def save_results(results: dict[str, Any], folder: str | Path, class_names: Sequence[str] | None = None,
                 name: str = "results") -> dict[str, Path]:
    """Write ``{name}.json`` (metrics, per-class accuracy, confusion matrix) and ``{name}_confusion.png``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = summary(results, class_names)
    json_path = folder / f"{name}.json"
    atomic_write_text(json_path, json.dumps(data, indent=2))
    png_path = folder / f"{name}_confusion.png"
    plot_confusion(torch.as_tensor(results["confusion"]), data["class_names"], png_path,
                   title=f"top-1 {_fraction(data['top1'])}  ({data['num_samples']} videos)")
    return {"json": json_path, "png": png_path}


def plot_confusion(confusion: torch.Tensor, class_names: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Row-normalised confusion matrix as a PNG (class names on the axes when there are at most 40)."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state is touched

    cm = confusion.double()
    norm = cm / cm.sum(dim=1, keepdim=True).clamp(min=1)
    k = cm.shape[0]
    side = min(4 + 0.25 * k, 30)
    fig = Figure(figsize=(side, side * 0.9), dpi=100)
    ax = fig.subplots()
    im = ax.imshow(norm.numpy(), cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    if k <= 40:
        ax.set_xticks(range(k), labels=list(class_names), rotation=90, fontsize=8)
        ax.set_yticks(range(k), labels=list(class_names), fontsize=8)
        if k <= 15:
            for i in range(k):
                for j in range(k):
                    if cm[i, j] > 0:
                        ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=8,
                                color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)
