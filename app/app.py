"""Gradio demo of a merged ZeroI2V checkpoint: top-5 classes and Grad-CAM of spatial vs temporal heads.

    zeroi2v demo --checkpoint runs/quickstart/merged [--host 127.0.0.1] [--port 7860]

or ``python app/app.py [CHECKPOINT_DIR]``. The page takes an uploaded video (or one of the checkpoint's
example videos), samples the model's frames, shows the top-5 classes averaged over the chosen number
of test views, the sampled frames, and Grad-CAM strips for the spatial, temporal and all heads of
one block (``zeroi2v.explain``), the model's facts and where the time went.

Safety: binds 127.0.0.1 unless told otherwise; one analysis at a time (queue with a concurrency
limit, a small queue); uploads are capped in size (``max_file_size``) and videos in length (frames
and seconds) and resolution; the only server files it reads are what the user uploaded and the
example videos (picked by name from a list, never by path; ``allowed_paths`` holds only them).
Every failure shows a one-line reason in the status box, never a stack trace.

The upload is a ``gr.File``, not a ``gr.Video``: ``gr.Video`` converts non-browser formats with a
system ffmpeg before our code runs and fails in its own way on corrupt input, while ``gr.File``
hands the uploaded bytes to our decoder untouched, so every format decord reads works and every bad
file reaches our own checks and messages.
"""
from __future__ import annotations

import html
import logging
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

log = logging.getLogger("zeroi2v.app")

DEFAULT_CHECKPOINT = Path("runs/quickstart/merged")
VIDEO_SUFFIXES = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v")
TOP1 = "Top-1 prediction"
DEFAULT_LIMITS = {
    "max_file_size": 50 * 1024 * 1024,  # bytes
    "max_frames": 9000,                 # frames in the video
    "max_seconds": 300.0,               # video duration
    "max_side": 4096,                   # pixels, longer side of a frame
    "min_frames": 2,                    # a still image is not a clip
    "max_clips": 5,                     # test views per request
}


class InputError(ValueError):
    """A problem with the user's video, worded for the page."""


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
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"{path} is not a merged checkpoint (needs config.json and model.safetensors); "
                                f"make one with `make quickstart` or `zeroi2v merge`")
    return path


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


def _human(nbytes: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if nbytes < 1024 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} GB"


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
    lines.append("- **Extra cost vs the image model: 0** FLOPs and 0 block parameters (STDHA only re-indexes "
                 f"keys/values; adapters are merged into the weights); the temporal embedding adds {te:,} "
                 "numbers to the input.")
    for key, value in extra.items():
        if key not in ("params", "gflops", "GFLOPs") and isinstance(value, (str, int, float)):
            lines.append(f"- **{key}**: {value}")
    return "\n".join(lines)


class DemoBackend:
    """Everything the page does, without the page: load once, validate, analyse (tests call it too)."""

    def __init__(self, checkpoint_dir: str | os.PathLike, warmup: bool = True, **limits: Any):
        from zeroi2v.merge import load_merged, read_merged_config
        unknown = set(limits) - set(DEFAULT_LIMITS)
        if unknown:
            raise TypeError(f"unknown limit(s) {sorted(unknown)}; known: {sorted(DEFAULT_LIMITS)}")
        self.limits = {**DEFAULT_LIMITS, **limits}
        self.checkpoint_dir = Path(checkpoint_dir)
        self.config = read_merged_config(self.checkpoint_dir)
        self.model = load_merged(self.checkpoint_dir).eval()
        names = self.config.get("class_names") or self.model.cfg.class_names
        n = self.model.head.out_features
        self.class_names = [str(c) for c in names][:n] if names else [f"class {i}" for i in range(n)]
        self.class_names += [f"class {i}" for i in range(len(self.class_names), n)]
        self.examples = find_examples(self.checkpoint_dir, self.config)
        self.facts = facts_markdown(self.model, self.config)
        self._lock = threading.Lock()  # the CAM hooks the model: one analysis at a time
        if warmup:  # first-call costs (lazy imports, allocator) at start-up, not in the first request
            self.warmup()

    def warmup(self) -> None:
        import torch
        from zeroi2v.data.decode import TensorSource
        from zeroi2v.explain import explain_video
        size = self.model.image_size
        frames = torch.zeros(self.model.num_frames, 3, size, size, dtype=torch.uint8)
        with self._lock:
            explain_video(self.model, TensorSource(frames), num_clips=1)

    # ------------------------------------------------------------------ validation
    def open_checked(self, path: str | os.PathLike):
        from zeroi2v.data.decode import VideoDecodeError, open_video
        lim = self.limits
        name = _display_name(path)
        size = os.path.getsize(path)
        if size == 0:
            raise InputError(f"`{name}` is empty (0 bytes).")
        if size > lim["max_file_size"]:
            raise InputError(f"`{name}` is {_human(size)}; the limit is {_human(lim['max_file_size'])}.")
        kind = sniff_container(path)
        if kind is None:
            raise InputError(f"`{name}` is not a video file: it does not start like MP4/MOV, WebM/MKV, AVI, "
                             f"MPEG, OGG, FLV, WMV or GIF data.")
        try:
            source = open_video(path)
        except VideoDecodeError as e:
            raise InputError(f"`{name}` looks like {kind} but cannot be read as a video "
                             f"({_short_cause(e, path)}).") from None
        n, fps = int(source.num_frames), float(source.fps or 0.0)
        if n < lim["min_frames"]:
            raise InputError(f"`{name}` has {n} frame{'s' if n != 1 else ''}; a clip needs at least "
                             f"{lim['min_frames']} (a still image cannot show motion).")
        if n > lim["max_frames"]:
            raise InputError(f"`{name}` has {n:,} frames; the limit is {lim['max_frames']:,}. Trim it first.")
        if fps > 0 and n / fps > lim["max_seconds"]:
            raise InputError(f"`{name}` lasts {n / fps:.0f} s; the limit is {lim['max_seconds']:.0f} s. Trim it first.")
        try:
            h, w = _source_hw(source)
        except VideoDecodeError as e:
            raise InputError(f"`{name}` could not be decoded ({_short_cause(e, path)}).") from None
        if max(h, w) > lim["max_side"]:
            raise InputError(f"`{name}` is {w}x{h} pixels; the limit is {lim['max_side']} px a side.")
        return source

    # ------------------------------------------------------------------ analysis
    def analyse(self, path: str | os.PathLike, target: str | int | None = None, block: int | None = None,
                clips: int = 1) -> dict[str, Any]:
        """Validate and analyse one video. Raises InputError with a readable reason for bad input."""
        from zeroi2v.data.decode import VideoDecodeError
        from zeroi2v.explain import explain_video
        target_idx = self._target_index(target)
        nblocks = len(self.model.blocks)
        block = nblocks - 1 if block is None else int(block)
        if not 0 <= block < nblocks:
            raise InputError(f"block must be between 0 and {nblocks - 1}, got {block}.")
        clips = int(clips or 1)
        if not 1 <= clips <= self.limits["max_clips"]:
            raise InputError(f"number of test views must be between 1 and {self.limits['max_clips']}.")
        with self._lock:
            start = time.perf_counter()
            source = self.open_checked(path)
            opened = time.perf_counter() - start  # checks + container open + first frame: part of "decode"
            try:
                result = explain_video(self.model, source, num_clips=clips, target_class=target_idx, block=block)
            except VideoDecodeError as e:
                raise InputError(f"`{_display_name(path)}` could not be decoded ({_short_cause(e, path)}).") from None
        result["timings"]["decode"] += opened
        result["timings"]["total"] += opened
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


def _source_hw(source) -> tuple[int, int]:
    frame = source.get([0])
    return int(frame.shape[-2]), int(frame.shape[-1])


def sniff_container(path: str | os.PathLike) -> str | None:
    """The container a file's first bytes announce, or None when it is not a known video container.

    Checked before the decoder sees the file: ffmpeg (inside decord) would otherwise read text files
    as "tty" video and follow playlists (HLS/concat) that name other files on the server.
    """
    with open(path, "rb") as fh:
        head = fh.read(512)
    if len(head) >= 8 and head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot"):
        return "MP4/MOV"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "WebM/MKV"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "AVI"
    if head.startswith(b"OggS"):
        return "OGG"
    if head.startswith(b"FLV"):
        return "FLV"
    if head.startswith(b"\x00\x00\x01\xba") or head.startswith(b"\x00\x00\x01\xb3"):
        return "MPEG"
    if len(head) > 188 and head[0] == 0x47 and head[188] == 0x47:
        return "MPEG-TS"
    if head.startswith(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"):
        return "WMV/ASF"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    return None


def _short_cause(e: Exception, path: str | os.PathLike | None = None) -> str:
    cause = getattr(e, "cause", e)
    text = f"{type(cause).__name__}: {cause}" if isinstance(cause, BaseException) else str(cause)
    text = text.strip().splitlines()[0] if text.strip() else type(e).__name__
    # decord's messages carry the temp upload path and C++ frames: no server paths in the page
    if path is not None:
        text = text.replace(str(path), Path(path).name)
    text = text.split(" at /")[0]
    text = re.sub(r"(/[^\s/]+)+/([^\s/]+)", r"\2", text)
    if len(text) > 160:
        text = text[:157] + "..."
    return text


def _status(kind: str, text: str) -> str:
    prefix = {"ok": "**Result:**", "error": "**Error:**", "info": ""}[kind]
    return f"{prefix} {text}".strip()


def build_app(checkpoint_dir: str | os.PathLike, **limits: Any):
    """The demo page for a merged checkpoint directory, queued (one analysis at a time)."""
    import gradio as gr

    backend = DemoBackend(resolve_checkpoint(checkpoint_dir), **limits)
    model = backend.model
    nblocks = len(model.blocks)
    example_names = list(backend.examples)

    def run(upload, example, target, block, clips):
        empty = (None,) * 5
        path = None
        if upload:
            path = upload if isinstance(upload, str) else getattr(upload, "name", None) or getattr(upload, "path", None)
        elif example:
            if example not in backend.examples:  # a name, never a path: nothing else is readable
                return (_status("error", f"unknown example {example!r}."), *empty, "")
            path = str(backend.examples[example])
        if not path:
            return (_status("info", "Upload a video or pick an example."), *empty, "")
        try:
            r = backend.analyse(path, target=target, block=int(block), clips=int(clips))
        except InputError as e:
            return (_status("error", str(e)), *empty, "")
        except Exception as e:  # never a stack trace in the page; the server log keeps it
            log.exception("analysis failed")
            return (_status("error", f"analysis failed ({html.escape(_short_cause(e, path))})."), *empty, "")
        top = {backend.class_names[i]: float(p) for i, p in enumerate(r["probs"])}
        msg = [f"`{_display_name(path)}`: explaining **{backend.class_names[r['target_class']]}** (p = {r['probability']:.2f}) "
               f"in block {r['block']}; {int(clips)} test view{'s' if int(clips) > 1 else ''}, "
               f"{r['video']['num_frames']} frames in the video."]
        msg += [f"{g.capitalize()} heads: {m}" for g, m in r["messages"].items()]
        t = r["timings"]
        timing = (f"**Time**: decode {t['decode'] * 1e3:.0f} ms · inference {t['inference'] * 1e3:.0f} ms · "
                  f"Grad-CAM {t['cam'] * 1e3:.0f} ms · total {t['total'] * 1e3:.0f} ms")
        s = r["strips"]
        return (_status("ok", " ".join(msg)), top, s["frames"], s["spatial"], s["temporal"], s["all"], timing)

    with gr.Blocks(title="ZeroI2V demo") as demo:
        gr.Markdown("# ZeroI2V: what do the spatial and temporal heads look at?\n"
                    "An image transformer adapted to video at zero extra cost. Upload a short video; the page "
                    "shows the top-5 classes and Grad-CAM maps of the **spatial** heads (Δt = 0, each frame "
                    "attends to itself) and the **temporal** heads (Δt ≠ 0, each frame reads keys/values of "
                    "frame t + Δt; their map is drawn in the frame the content comes from).")
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                upload = gr.File(label="Upload a video (MP4, WebM, AVI, MKV, MOV)", elem_id="upload", height=120)
                example = gr.Dropdown(choices=example_names, value=None, label="… or pick an example",
                                      elem_id="example", visible=bool(example_names), allow_custom_value=False)
                target = gr.Dropdown(choices=[TOP1] + backend.class_names, value=TOP1, label="Class to explain",
                                     elem_id="target")
                block = gr.Slider(0, nblocks - 1, value=nblocks - 1, step=1, label="Block to explain (0 = first)",
                                  elem_id="block", interactive=nblocks > 1)
                clips = gr.Slider(1, backend.limits["max_clips"], value=1, step=1, label="Test views (clips)",
                                  elem_id="clips")
                button = gr.Button("Analyse", variant="primary", elem_id="analyse")
                gr.Markdown(backend.facts, elem_id="facts")
            with gr.Column(scale=2):
                status = gr.Markdown(_status("info", "Upload a video or pick an example."), elem_id="status")
                top5 = gr.Label(num_top_classes=5, label="Top-5 classes", elem_id="top5")
                frames = gr.Image(label="Sampled frames (what the model sees)", elem_id="frames",
                                  interactive=False, format="png", buttons=["download", "fullscreen"])
                cams = [gr.Image(label=label, elem_id=f"cam-{g}", interactive=False, format="png",
                                 buttons=["download", "fullscreen"])
                        for g, label in (("spatial", "Spatial heads"), ("temporal", "Temporal heads"),
                                         ("all", "All heads"))]
                timing = gr.Markdown("", elem_id="timing")
        inputs = [upload, example, target, block, clips]
        outputs = [status, top5, frames, *cams, timing]
        # A new upload replaces the example choice and vice versa, and explains its own top-1 again;
        # either starts an analysis.
        upload.upload(lambda: (None, TOP1), None, [example, target], queue=False).then(
            run, inputs, outputs, concurrency_limit=1)
        example.input(lambda: (None, TOP1), None, [upload, target], queue=False).then(
            run, inputs, outputs, concurrency_limit=1)
        button.click(run, inputs, outputs, concurrency_limit=1)
    demo.queue(default_concurrency_limit=1, max_size=16)
    demo.zeroi2v_backend = backend
    return demo


def launch(checkpoint_dir: str | os.PathLike | None = None, host: str = "127.0.0.1", port: int = 7860,
           threads: int | None = None, **kw: Any):
    """Build and serve the demo. Extra keywords: the limits of ``DEFAULT_LIMITS`` and ``gr.Blocks.launch``'s.

    ``threads`` sets torch's intra-op threads for this process (None: leave as is). Small models on a
    busy machine run far faster with 1 (measured 10-60x on 2 shared cores). Returns the running
    ``gr.Blocks`` (the call blocks unless ``prevent_thread_lock=True``).
    """
    if threads is not None:
        import torch
        torch.set_num_threads(int(threads))
    limits = {k: kw.pop(k) for k in list(kw) if k in DEFAULT_LIMITS or k == "warmup"}
    demo = build_app(checkpoint_dir, **limits)
    backend = demo.zeroi2v_backend
    kw.setdefault("max_file_size", backend.limits["max_file_size"])
    kw.setdefault("ssr_mode", False)
    kw.setdefault("show_error", False)
    demo.launch(server_name=host, server_port=int(port),
                allowed_paths=[str(p) for p in backend.examples.values()], **kw)
    return demo


def main(argv: list[str] | None = None) -> None:
    import argparse
    p = argparse.ArgumentParser(description="ZeroI2V demo (Gradio)")
    p.add_argument("checkpoint", nargs="?", default=None, help="merged checkpoint directory")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    a = p.parse_args(argv)
    try:
        launch(a.checkpoint, host=a.host, port=a.port, threads=a.threads)
    except FileNotFoundError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
