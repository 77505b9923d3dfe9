"""What one ablation row trains and measures (``zeroi2v ablate``; ``zeroi2v.rows`` calls ``run_row``).

The row's config trains with ``zeroi2v.train.train`` (``force``: its own run folder, started afresh; the
training output goes to the folder's ``train.log``), then the trained model is measured as the paper's
Table 3 columns (and Table 13's "New Params"):

- ``tunable_params``: trainable parameters (``zeroi2v.tuning.count_trainable``; a gradient-masked tensor,
  as in temporal-head-only tuning, counts only its trainable entries). Unlike the paper's column, this
  includes the classifier, the temporal embedding and ``ln_post`` where they train.
- ``new_params``: parameters of the *deployed* model beyond the plain image tower (the backbone family's
  own image model, as ``zeroi2v.bench.PlainViT`` builds it) and the linear classifier, as the paper's
  "New Params ... besides the parameters of the original ViT backbone and linear classifier". The deployed
  model is the merged one when the model merges (``zeroi2v.merge.merge_refusal`` is None): then this is
  the temporal embedding (T × width) and nothing else. A model that does not merge (GELU, ST-Adapter)
  deploys unmerged: its adapters count too, and ``mergeable`` is False with the reason in ``merge_note``.
- ``gflops``: multiply-adds (the paper's "FLOPs", ``zeroi2v.bench.count_flops``) of the deployed model per
  clip, × the test views (``test.clips × test.crops``), at the config's frames and image size;
  ``extra_gflops``: the same minus the plain image model's (the paper's "Extra GFLOPs").
- ``top1``: the run's final multi-view test (``results/test.json``).
- ``train_seconds`` and ``train_clips_per_s``: the training loop's own timing, over all epochs.
"""
from __future__ import annotations

import time
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import torch


def run_row(name: str, config: dict[str, Any], keep_checkpoint: bool = False) -> dict[str, Any]:
    """Train the row's config in its ``train.out_dir``, measure it (see the module docstring)."""
    from zeroi2v.config import config_from_data
    from zeroi2v.train import train
    cfg = config_from_data(config, notice=False).validate()
    run_dir = Path(cfg.train.out_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(run_dir / "train.log", "w", encoding="utf-8") as log, redirect_stdout(log):
        out = train(cfg, force=True)
    if not out["finished"]:
        raise RuntimeError(f"the run in {run_dir} stopped before its last epoch (see its train.log)")
    if not keep_checkpoint:  # a row keeps its log, config and results; a checkpoint per row would not fit
        Path(out["checkpoint"]).unlink(missing_ok=True)
    model = getattr(out["model"], "module", out["model"])
    history = out["history"]
    seconds = sum(r["seconds"] for r in history)
    clips = sum(r["clips_per_s"] * r["seconds"] for r in history)
    return {"top1": out["test"]["top1"], **measure(model, cfg), "epochs": cfg.optim.epochs,
            "train_clips": round(clips / max(1, len(history))), "train_seconds": round(seconds, 2),
            "train_clips_per_s": round(clips / max(seconds, 1e-9), 2), "test_clips": out["test"]["num_samples"],
            "row_seconds": round(time.perf_counter() - start, 2)}


@torch.no_grad()
def measure(model: Any, cfg: Any) -> dict[str, Any]:
    """Tunable and new inference parameters, and GFLOPs of the deployed model (module docstring)."""
    from zeroi2v.bench import PlainViT, count_flops, count_params
    from zeroi2v.merge import merge_adapters, merge_refusal
    from zeroi2v.tuning import count_trainable
    tunable = count_trainable(model)
    refusal = merge_refusal(model)
    deployed = merge_adapters(model) if refusal is None else model.eval()
    plain = PlainViT(deployed)
    param = next(deployed.parameters())
    views = cfg.test.clips * cfg.test.crops
    size = deployed.image_size
    clip = torch.zeros(1, 3, deployed.num_frames, size, size, device=param.device, dtype=param.dtype)
    flops, plain_flops = count_flops(deployed, clip), count_flops(plain.to(param.device, param.dtype), clip)
    tower, head = count_params(plain.visual), count_params(deployed.head)
    embedding = deployed.temporal_embedding.numel() if deployed.temporal_embedding is not None else 0
    return {"tunable_params": tunable, "new_params": count_params(deployed) - tower - head,
            "temporal_embedding_params": embedding, "deployed_params": count_params(deployed),
            "plain_tower_params": tower, "mergeable": refusal is None,
            "merge_note": "merged" if refusal is None else "not mergeable: " + refusal.split(". Use the run")[0],
            "gflops": flops * views / 1e9, "extra_gflops": (flops - plain_flops) * views / 1e9, "views": views}
