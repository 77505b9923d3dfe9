"""The demo without the page: load a merged checkpoint (or an unmerged run folder) once, check uploads,
analyse (the tests call it too).

See ``zeroi2v.demo`` for what the page shows and how it stays safe under hostile uploads.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from zeroi2v.data.untrusted import UPLOAD_LIMITS, RefusedInput, clean_reason, open_untrusted

log = logging.getLogger("zeroi2v.demo")

DEFAULT_CHECKPOINT = Path("runs/quickstart/merged")
VIDEO_SUFFIXES = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v")
TOP1 = "Top-1 prediction"
DEFAULT_LIMITS = UPLOAD_LIMITS  # the upload limits (zeroi2v.data.untrusted); keywords of DemoBackend
InputError = RefusedInput  # a problem with the user's video, worded for the page


class Busy(InputError):
    """The server cannot take this request now; the same upload may be tried again."""


def resolve_checkpoint(checkpoint_dir: str | os.PathLike | None) -> Path:
    """The checkpoint directory to serve; None -> ``runs/quickstart/merged`` when it exists."""
    if checkpoint_dir is None:
        if (DEFAULT_CHECKPOINT / "config.json").is_file():
            return DEFAULT_CHECKPOINT
        raise FileNotFoundError(
            f"no checkpoint given and {DEFAULT_CHECKPOINT}/ does not exist. Make one with `make quickstart` "
            f"(trains a small model and writes {DEFAULT_CHECKPOINT}), or merge a trained run with "
            f"`zeroi2v merge`, then pass it: `zeroi2v demo --checkpoint DIR`.")
    path = Path(checkpoint_dir)
    if not _is_run_folder(path) and not ((path / "config.json").is_file() and (path / "model.safetensors").is_file()):
        raise FileNotFoundError(f"{path} is not a merged checkpoint (needs config.json and model.safetensors) nor a "
                                f"training run folder (needs checkpoint.pt); make one with `make quickstart`, "
                                f"`zeroi2v train` or `zeroi2v merge`")
    return path


def _is_run_folder(path: Path) -> bool:
    """A training run folder (``checkpoint.pt``) and not a merged checkpoint: served unmerged, as the
    adapter kinds that cannot merge (GELU, ST-Adapter) must be."""
    from zeroi2v.run_folder import CHECKPOINT
    return (path / CHECKPOINT).is_file() and not (path / "model.safetensors").is_file()


def load_served(folder: Path):
    """(config, model) of a merged checkpoint, or ({}, the unmerged model) of a training run folder."""
    from zeroi2v.merge import load_merged, read_merged_config
    if _is_run_folder(folder):
        from zeroi2v.run_folder import load_run
        return {}, load_run(folder)
    return read_merged_config(folder), load_merged(folder)


def find_examples(checkpoint_dir: Path, config: dict[str, Any]) -> dict[str, Path]:
    """Example videos: the config's "examples" + an examples/ folder.

    Relative "examples" entries are looked up in the checkpoint directory, then in its parent (the
    quickstart writes them relative to its output folder). The folder may sit inside the checkpoint
    directory or beside it. Returns {display name: path}, only existing files with a video suffix.
    """
    found: list[Path] = []
    for item in config.get("examples") or []:
        p = Path(item["path"] if isinstance(item, dict) else item)
        if not p.is_absolute():
            p = next((base / p for base in (checkpoint_dir, checkpoint_dir.parent) if (base / p).is_file()),
                     checkpoint_dir / p)
        found.append(p)
    for folder in (checkpoint_dir / "examples", checkpoint_dir.parent / "examples"):
        if folder.is_dir():
            found += sorted(folder.iterdir())
    out: dict[str, Path] = {}
    for p in found:
        if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES:
            p = p.resolve()
            if p not in out.values():
                name = p.name if p.name not in out else f"{p.parent.name}/{p.name}"
                out[name] = p
    return out


def _fmt_int(n: Any) -> str:
    try:
        return f"{int(n):,}"
    except (TypeError, ValueError):
        return str(n)


def facts_markdown(model, config: dict[str, Any]) -> str:
    """The model card shown beside the controls."""
    f = model.extra_facts()
    extra = config.get("facts") or {}
    params = extra.get("params")
    if isinstance(params, dict):
        params = params.get("merged", next(iter(params.values()), None))
    if params is None:
        params = sum(p.numel() for p in model.parameters())
    gflops = extra.get("gflops", extra.get("GFLOPs"))
    if isinstance(gflops, dict):
        gflops = gflops.get("merged", next(iter(gflops.values()), None))
    offsets = f["offsets"]
    dt = (f"`{{{offsets[0]}}}` in every layer" if len(set(offsets)) == 1
          else "; ".join(f"layer {i}: `{{{o}}}`" for i, o in enumerate(offsets)))
    te = model.temporal_embedding.numel() if model.temporal_embedding is not None else 0
    lines = [
        "### Model",
        f"- **Backbone**: {f['backbone']} ({f['layers']} layers, {f['heads']} heads, {f['image_size']} px)",
        f"- **Frames**: {f['frames']}",
        f"- **Δt per head** (offset×heads): {dt}",
        f"- **Parameters**: {_fmt_int(params)}",
    ]
    if gflops is not None:
        lines.append(f"- **GFLOPs** (one view): {float(gflops):.3g}")
    kept = sum(p.numel() for n, p in model.named_parameters() if ".adapters." in n)
    if kept:  # an unmerged run folder
        lines.append(f"- **Unmerged run**: {f['adapters']} adapters kept at inference ({kept:,} parameters beyond "
                     f"the image model, and their FLOPs); the temporal embedding adds {te:,} numbers to the input.")
    else:
        lines.append("- **Extra cost vs the image model: 0** FLOPs and 0 block parameters (STDHA only re-indexes "
                     f"keys/values; adapters are merged into the weights); the temporal embedding adds {te:,} "
                     "numbers to the input.")
    for key, value in extra.items():
        if key not in ("params", "gflops", "GFLOPs") and isinstance(value, (str, int, float)):
            lines.append(f"- **{key}**: {value}")
    return "\n".join(lines)


class DemoBackend:
    """Everything the page does, without the page: load once, validate, analyse (tests call it too).

    Fairness: decoding runs outside the model lock, so requests decode side by side and only the
    model pass (inference + Grad-CAM) is one at a time. A request whose decode work (frames the
    decoder must run through x their pixels) exceeds ``small_work`` is *large*: one large request
    at a time, a second is refused at once ("try again"), so small clips never queue behind one.
    Every decode has a time budget (``max_decode_seconds``) that ends in a readable error.
    """

    def __init__(self, checkpoint_dir: str | os.PathLike, warmup: bool = True, cam_method: str | None = None,
                 **limits: Any):
        from zeroi2v.explain import CAM_METHODS, DEFAULT_METHOD
        # the CAM method of the maps: the one that put most of its mass on the moving object
        # (benchmarks/cam_localisation.py), unless the caller names another of CAM_METHODS
        self.cam_method = DEFAULT_METHOD if cam_method is None else str(cam_method)
        if self.cam_method not in CAM_METHODS:
            raise ValueError(f"unknown CAM method {cam_method!r}; methods: {sorted(CAM_METHODS)}")
        unknown = set(limits) - set(DEFAULT_LIMITS)
        if unknown:
            raise TypeError(f"unknown limit(s) {sorted(unknown)}; known: {sorted(DEFAULT_LIMITS)}")
        self.limits = {**DEFAULT_LIMITS, **limits}
        self.checkpoint_dir = Path(checkpoint_dir)
        self.config, self.model = load_served(self.checkpoint_dir)
        self.model.eval()
        from zeroi2v.evaluate import class_labels
        # the names the checkpoint records (load_merged applies them); 'class N' without them
        self.class_names = class_labels(self.model.cfg.class_names, self.model.head.out_features)
        if not self.model.cfg.class_names:
            log.warning("%s records no class names; classes show as 'class N'", self.checkpoint_dir)
        self.examples = find_examples(self.checkpoint_dir, self.config)
        self.facts = facts_markdown(self.model, self.config)
        self._lock = threading.Lock()  # the CAM hooks the model: one model pass at a time
        self._large = threading.Lock()  # one large decode at a time
        if warmup:  # first-call costs (lazy imports, allocator) at start-up, not in the first request
            self.warmup()

    def warmup(self) -> None:
        import torch
        from zeroi2v.data.decode import TensorSource
        from zeroi2v.explain import explain_video
        size = self.model.image_size
        frames = torch.zeros(self.model.num_frames, 3, size, size, dtype=torch.uint8)
        with self._lock:
            explain_video(self.model, TensorSource(frames), num_clips=1, method=self.cam_method)

    # ------------------------------------------------------------------ validation
    def open_checked(self, path: str | os.PathLike, clips: int = 1):
        """Open an upload for ``clips`` views, or raise InputError. Returns (source, decode work in pixels)."""
        return open_untrusted(path, self.model.image_size, self.model.num_frames, clips, self.limits,
                              name=_display_name(path))

    # ------------------------------------------------------------------ analysis
    def analyse(self, path: str | os.PathLike, target: str | int | None = None, block: int | None = None,
                clips: int = 1) -> dict[str, Any]:
        """Validate and analyse one video. Raises InputError with a readable reason for bad input."""
        from zeroi2v.data.decode import DecodeTimeout, VideoDecodeError
        from zeroi2v.data.views import model_views
        from zeroi2v.explain import explain_views
        target_idx = self._target_index(target)
        nblocks = len(self.model.blocks)
        block = nblocks - 1 if block is None else int(block)
        if not 0 <= block < nblocks:
            raise InputError(f"block must be between 0 and {nblocks - 1}, got {block}.")
        clips = int(clips or 1)
        if not 1 <= clips <= self.limits["max_clips"]:
            raise InputError(f"number of test views must be between 1 and {self.limits['max_clips']}.")
        start, name, budget = time.perf_counter(), _display_name(path), self.limits["max_decode_seconds"]
        deadline = time.monotonic() + budget
        source, work = self.open_checked(path, clips)
        large = work > self.limits["small_work"]
        if large and not self._large.acquire(blocking=False):
            raise Busy(f"`{name}` is a large video and another large video is being analysed; try again in a "
                       f"minute (large videos go one at a time so that short clips never wait behind them).")
        try:
            views, indices = model_views(self.model, source, clips=clips, deadline=deadline)
        except DecodeTimeout:
            raise InputError(f"`{name}` took more than {budget:.0f} s to decode (the limit per request). "
                             f"Trim it or lower its resolution.") from None
        except VideoDecodeError as e:
            raise InputError(f"`{name}` could not be decoded ({clean_reason(e, path)}).") from None
        finally:
            if large:
                self._large.release()
        decode = time.perf_counter() - start  # checks + open + decode + transform
        with self._lock:
            result = explain_views(self.model, views, target_class=target_idx, block=block, method=self.cam_method)
        result["timings"].update(decode=decode, total=decode + result["timings"]["total"])
        result.update(indices=indices, video={"num_frames": int(source.num_frames), "fps": float(source.fps),
                                              "path": str(source.path)})
        return result

    def _target_index(self, target: str | int | None) -> int | None:
        if target is None or target == "" or target == TOP1:
            return None
        if isinstance(target, (int, np.integer)):
            idx = int(target)
        elif target in self.class_names:
            idx = self.class_names.index(target)
        else:
            raise InputError(f"unknown class {target!r}.")
        if not 0 <= idx < len(self.class_names):
            raise InputError(f"class index {idx} out of range.")
        return idx


def _display_name(path: str | os.PathLike) -> str:
    """The file's own name, safe inside Markdown code spans (no path, no backticks)."""
    return Path(path).name.replace("`", "'")[:120]


