"""The quickstart's stages 1 and 2: the image model pre-trained on synthetic stills and the synthetic
video set, each cached in the output folder by its settings (``zeroi2v.quickstart``; ``zeroi2v.ablate``
and ``zeroi2v.fewshot.offline`` build the same two).

Stage 1 trains on one thread for about a minute and a half; ``start_image_model`` runs it in a forked
process so stage 2 and the decoding of the videos use the other core meanwhile (the pre-training is the
same code, seed and thread count, so the same model either way).
"""
from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from zeroi2v.data.synthetic import make_synthetic_images, make_synthetic_videos

if TYPE_CHECKING:
    from zeroi2v.quickstart import QuickstartSettings


def ensure_image_model(s: QuickstartSettings, out: Path, image_dir: Path, seed: int, log: Callable[[str], None]) -> None:
    """Stage 1: the small image model, pre-trained on synthetic stills (cached by its settings)."""
    if _image_model_cached(s, image_dir, seed):
        log(f"[quickstart]   cached: {image_dir}")
        return
    from zeroi2v.pretrain import pretrain_image_model
    stills = make_synthetic_images(out / "stills", seed=seed, n=s.images, size=s.size)
    data = np.load(stills["path"])
    summary = pretrain_image_model(data["images"], {h: data[h] for h in data["heads"]}, image_dir,
                                   backbone=s.backbone, epochs=s.pretrain_epochs, seed=seed, log=log)
    summary["settings"] = _image_key(s, seed)
    (image_dir / "pretrain.json").write_text(json.dumps(summary, indent=2))


def start_image_model(s: QuickstartSettings, out: Path, image_dir: Path, seed: int, log: Callable[[str], None]):
    """Stage 1 in a forked process, one thread (the pre-training is the same as in this process); None when
    the image model is cached or the platform cannot fork (then ``finish_image_model`` trains it here)."""
    if _image_model_cached(s, image_dir, seed) or not (s.parallel and hasattr(os, "fork")):
        return None
    proc = multiprocessing.get_context("fork").Process(target=_image_model_child, args=(s, out, image_dir, seed, log),
                                                       name="pretrain-image-model")
    proc.start()
    return proc


def _image_model_child(s: QuickstartSettings, out: Path, image_dir: Path, seed: int, log: Callable[[str], None]) -> None:
    torch.set_num_threads(s.threads)
    ensure_image_model(s, out, image_dir, seed, log)


def finish_image_model(proc, s: QuickstartSettings, out: Path, image_dir: Path, seed: int,
                        log: Callable[[str], None]) -> None:
    """Wait for the forked stage 1 (or run it here: ``ensure_image_model``, cached or not)."""
    if proc is not None:
        proc.join()
        if proc.exitcode != 0:
            raise RuntimeError(f"image model pre-training failed (exit code {proc.exitcode}); its folder is {image_dir}")
    ensure_image_model(s, out, image_dir, seed, log)


def ensure_videos(s: QuickstartSettings, video_dir: Path, seed: int, log: Callable[[str], None], workers: int = 1) -> None:
    """Stage 2: the synthetic temporal video set (cached by its settings), in ``workers`` processes."""
    key = {"seed": seed, "classes": list(s.classes), "per_class": list(s.videos_per_class),
           "frames": s.video_frames, "size": s.size}
    done = video_dir / "summary.json"
    if done.is_file() and json.loads(done.read_text()).get("key") == key:
        log(f"[quickstart]   cached: {video_dir}")
        return
    summary = make_synthetic_videos(video_dir, seed=seed, classes=list(s.classes), num_frames=s.video_frames,
                                    size=s.size, videos_per_class=dict(zip(("train", "test"), s.videos_per_class)),
                                    workers=workers)
    done.write_text(json.dumps({**summary, "key": key}, indent=1))


def _image_model_cached(s: QuickstartSettings, image_dir: Path, seed: int) -> bool:
    """Whether ``image_dir`` holds the image model of these settings (its ``pretrain.json`` says so)."""
    key_file = image_dir / "pretrain.json"
    return key_file.is_file() and json.loads(key_file.read_text()).get("settings") == _image_key(s, seed)


def _image_key(s: QuickstartSettings, seed: int) -> dict:
    return {"backbone": s.backbone, "images": s.images, "epochs": s.pretrain_epochs, "size": s.size, "seed": seed}
