"""The offline few-shot suite: VidTAB's protocol end to end on 2 CPU cores, no download.

1. The quickstart's image model (a tiny open_clip ViT pre-trained on synthetic stills,
   ``zeroi2v.quickstart.ensure_image_model``) gets a text tower by locked-image tuning on captions of the
   same stills (``zeroi2v.pretrain_text``): a small CLIP, so ``zero_shot`` and ``--head-init text`` run.
2. The synthetic tasks in the VidTAB layout (``zeroi2v.fewshot.suite``): several "domains", each a
   train pool with 4- and 16-shot folds and a test list.
3. ``zeroi2v fewshot`` on them with ``zeroi2v/configs/fewshot/synthetic.yaml``: the VidTAB recipe scaled
   to the tiny model (as the quickstart scales the paper's).
Stages 1 and 2 are cached in the output folder, and finished rows are skipped: a rerun costs nothing.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

from zeroi2v.fewshot.run import RECIPE, run_fewshot
from zeroi2v.files import atomic_write_text

SUITE_RECIPE = RECIPE.with_name("synthetic.yaml")
SUITE_METHODS = ("zeroi2v", "no_stdha", "linear_probe", "zero_shot")


def ensure_clip_model(out: Path, seed: int = 0, image: dict[str, Any] | None = None,
                      log: Callable[[str], None] = print) -> Path:
    """The tiny image model with its text tower under ``out/image_model`` (each part cached by its settings);
    ``image``: ``QuickstartSettings`` overrides (``backbone``, ``images``, ``pretrain_epochs``)."""
    import numpy as np

    from zeroi2v.data.synthetic import make_synthetic_images
    from zeroi2v.pretrain_text import pretrain_text_tower
    from zeroi2v.quickstart import QuickstartSettings, ensure_image_model
    s = replace(QuickstartSettings(), **(image or {}))
    image_dir = out / "image_model"
    ensure_image_model(s, out, image_dir, seed, log)
    done = image_dir / "text_pretrain.json"
    key = {"seed": seed, "image_model": json.loads((image_dir / "pretrain.json").read_text()).get("settings")}
    if not done.is_file() or json.loads(done.read_text()).get("key") != key:
        stills = out / "stills" / "images.npz"
        if not stills.is_file() or len(np.load(stills)["images"]) != s.images:
            make_synthetic_images(out / "stills", seed=seed, n=s.images, size=s.size)
        data = np.load(stills)
        summary = pretrain_text_tower(image_dir, data["images"], {h: data[h] for h in data["heads"]}, seed=seed,
                                      log=log)
        atomic_write_text(done, json.dumps({**summary, "key": key}, indent=2))
    return image_dir


def run_suite(out: str | Path = "runs/fewshot_suite", seed: int = 0, shots: Sequence[int] = (4, 16),
              folds: Sequence[int] = (1, 2, 3), methods: Sequence[str] | None = None,
              tasks: Sequence[str] | None = None, config: str | Path | None = None, overrides: Sequence[str] = (),
              image: dict[str, Any] | None = None,
              data: dict[str, Any] | None = None, log: Callable[[str], None] = print, **run_options: Any) -> dict[str, Any]:
    """Build (or reuse) the image model and the synthetic tasks, then run the rows; see ``run_fewshot``.
    ``image``: ``QuickstartSettings`` overrides for the image model; ``data``: ``make_suite`` options
    (``pool_per_class``, ``test_per_class``); ``config``: the recipe (default ``SUITE_RECIPE``, the backbone is
    set to the suite's image model either way); ``overrides``: recipe ``--set`` overrides."""
    from zeroi2v.fewshot.suite import SUITE_TASKS, make_suite
    from zeroi2v.fewshot.tasks import find_tasks
    out = Path(out)
    image_dir = ensure_clip_model(out, seed, image, log)
    make_suite(out / "data", seed=seed, tasks=tasks, shots=tuple(shots), folds=max(folds), log=log, **(data or {}))
    found, problems = find_tasks(out / "data", list(tasks) if tasks else list(SUITE_TASKS))
    for line in problems:
        log(f"[fewshot] {line}")
    overrides = [f"model.backbone=local-dir:{image_dir}", *overrides]
    return run_fewshot(found, out, shots=shots, folds=folds, methods=methods or SUITE_METHODS,
                       config=config or SUITE_RECIPE,
                       overrides=overrides, log=log, **run_options)
