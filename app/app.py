"""Gradio demo of a merged ZeroI2V checkpoint: top-5 classes and Grad-CAM of spatial vs temporal heads.

    zeroi2v demo --checkpoint runs/quickstart/merged [--host 127.0.0.1] [--port 7860]

or ``python app/app.py [CHECKPOINT_DIR]``. The page takes an uploaded video (or one of the checkpoint's
example videos), samples the model's frames, shows the top-5 classes averaged over the chosen number
of test views, the sampled frames, and Grad-CAM strips for the spatial, temporal and all heads of
one block (``zeroi2v.explain``), the model's facts and where the time went.

Safety: binds 127.0.0.1 unless told otherwise; a small queue with two workers, one model pass at a
time, and at most one large decode, so short clips never wait behind a large upload (DemoBackend);
uploads are checked against ``zeroi2v.data.untrusted.UPLOAD_LIMITS`` (size, length, resolution,
decoded bytes, decode work) and decoded straight to the model's resolution within a time budget;
the only server files it reads are what the user uploaded and the example videos (picked by name
from a list, never by path; ``allowed_paths`` holds only them); uploads are deleted once refused or
replaced, and a while after their last analysis. Every failure shows a one-line reason in the
status box, never a stack trace.

The upload is a ``gr.File``, not a ``gr.Video``: ``gr.Video`` converts non-browser formats with a
system ffmpeg before our code runs and fails in its own way on corrupt input, while ``gr.File``
hands the uploaded bytes to our decoder untouched, so every format decord reads works and every bad
file reaches our own checks and messages.
"""
from __future__ import annotations

import html
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from zeroi2v.data.untrusted import UPLOAD_LIMITS, RefusedInput, clean_reason, open_untrusted  # noqa: E402
from zeroi2v.data.untrusted import sniff_container  # noqa: E402,F401  (re-exported: the tests import it here)

log = logging.getLogger("zeroi2v.app")

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
    """Everything the page does, without the page: load once, validate, analyse (tests call it too).

    Fairness: decoding runs outside the model lock, so requests decode side by side and only the
    model pass (inference + Grad-CAM) is one at a time. A request whose decode work (frames the
    decoder must run through x their pixels) exceeds ``small_work`` is *large*: one large request
    at a time, a second is refused at once ("try again"), so small clips never queue behind one.
    Every decode has a time budget (``max_decode_seconds``) that ends in a readable error.
    """

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
            explain_video(self.model, TensorSource(frames), num_clips=1)

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
            result = explain_views(self.model, views, target_class=target_idx, block=block)
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


def _status(kind: str, text: str) -> str:
    prefix = {"ok": "**Result:**", "error": "**Error:**", "info": ""}[kind]
    return f"{prefix} {text}".strip()


def _upload_path(upload: Any) -> str | None:
    if not upload:
        return None
    return upload if isinstance(upload, str) else getattr(upload, "name", None) or getattr(upload, "path", None)


def _remove_upload(path: str | None) -> None:
    """Delete an uploaded file (and its folder, when empty) from Gradio's upload folder; nothing outside it."""
    from gradio.utils import get_upload_folder
    if not path:
        return
    p, root = Path(path).resolve(), Path(get_upload_folder()).resolve()
    if root not in p.parents:
        return
    p.unlink(missing_ok=True)
    if p.parent != root:
        try:
            p.parent.rmdir()
        except OSError:  # not empty, or gone already
            pass


def _served(image: np.ndarray | None, tag: str):
    """A result image for the page, tagged with its request in the PNG's text.

    Gradio names a cached result image by a hash of its bytes and rewrites an existing file of that
    name in place, so identical results of concurrent requests cut off each other's downloads
    ("peer closed connection"). The tag gives each request its own bytes, hence its own file.
    """
    if image is None:
        return None
    from PIL import Image
    picture = Image.fromarray(image)
    picture.info["zeroi2v-request"] = tag
    return picture


def build_app(checkpoint_dir: str | os.PathLike, keep_uploads: float = 900.0, **limits: Any):
    """The demo page for a merged checkpoint directory, queued (two analyses at a time: see DemoBackend).

    Uploads are deleted from Gradio's upload folder once refused, once replaced by another upload or
    example, and ``keep_uploads`` seconds after their last analysis (until then the same upload can be
    explained again for another class or block).
    """
    import uuid

    import gradio as gr

    backend = DemoBackend(resolve_checkpoint(checkpoint_dir), **limits)
    model = backend.model
    nblocks = len(model.blocks)
    example_names = list(backend.examples)

    def forget(kept: str | None, now: str | None) -> str | None:
        if kept and kept != now:
            _remove_upload(kept)
        return now

    def run(upload, example, target, block, clips, kept):
        empty = (None,) * 5
        path = uploaded = _upload_path(upload)
        if path is None and example:
            if example not in backend.examples:  # a name, never a path: nothing else is readable
                return (_status("error", f"unknown example {example!r}."), *empty, "", forget(kept, None))
            path = str(backend.examples[example])
        if not path:
            return (_status("info", "Upload a video or pick an example."), *empty, "", forget(kept, None))
        try:
            r = backend.analyse(path, target=target, block=int(block), clips=int(clips))
        except Busy as e:  # the same upload may be tried again
            return (_status("error", str(e)), *empty, "", forget(kept, uploaded))
        except InputError as e:  # a refused upload is of no further use
            _remove_upload(uploaded)
            return (_status("error", str(e)), *empty, "", forget(kept, None))
        except Exception as e:  # never a stack trace in the page; the server log keeps it
            log.exception("analysis failed")
            return (_status("error", f"analysis failed ({html.escape(clean_reason(e, path))})."), *empty, "",
                    forget(kept, uploaded))
        top = {backend.class_names[i]: float(p) for i, p in enumerate(r["probs"])}
        msg = [f"`{_display_name(path)}`: explaining **{backend.class_names[r['target_class']]}** (p = {r['probability']:.2f}) "
               f"in block {r['block']}; {int(clips)} test view{'s' if int(clips) > 1 else ''}, "
               f"{r['video']['num_frames']} frames in the video."]
        msg += [f"{g.capitalize()} heads: {m}" for g, m in r["messages"].items()]
        t = r["timings"]
        timing = (f"**Time**: decode {t['decode'] * 1e3:.0f} ms · inference {t['inference'] * 1e3:.0f} ms · "
                  f"Grad-CAM {t['cam'] * 1e3:.0f} ms · total {t['total'] * 1e3:.0f} ms")
        tag = uuid.uuid4().hex
        images = [_served(r["strips"][g], tag) for g in ("frames", "spatial", "temporal", "all")]
        return (_status("ok", " ".join(msg)), top, *images, timing, forget(kept, uploaded))

    # delete_cache: Gradio's own sweep, every 10 min, of its files (uploads, results) older than 1 h
    with gr.Blocks(title="ZeroI2V demo", delete_cache=(600, 3600)) as demo:
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
        kept = gr.State(None, time_to_live=keep_uploads, delete_callback=_remove_upload)
        inputs = [upload, example, target, block, clips, kept]
        outputs = [status, top5, frames, *cams, timing, kept]
        # A new upload replaces the example choice and vice versa, and explains its own top-1 again;
        # either starts an analysis. All three share one queue of two workers (see DemoBackend).
        queued = dict(concurrency_limit=2, concurrency_id="analysis")
        upload.upload(lambda: (None, TOP1), None, [example, target], queue=False, api_visibility="private").then(
            run, inputs, outputs, api_visibility="private", **queued)
        example.input(lambda: (None, TOP1), None, [upload, target], queue=False, api_visibility="private").then(
            run, inputs, outputs, api_visibility="private", **queued)
        button.click(run, inputs, outputs, api_name="analyse", **queued)
    demo.queue(default_concurrency_limit=2, max_size=32)  # 20 users at once are not turned away
    demo.zeroi2v_backend = backend
    return demo


def launch(checkpoint_dir: str | os.PathLike | None = None, host: str = "127.0.0.1", port: int = 7860,
           threads: int | None = None, **kw: Any):
    """Build and serve the demo. Extra keywords: the limits of ``DEFAULT_LIMITS``, ``build_app``'s
    ``keep_uploads`` and ``gr.Blocks.launch``'s.

    ``threads`` sets torch's intra-op threads for this process (None: leave as is). Small models on a
    busy machine run far faster with 1 (measured 10-60x on 2 shared cores). Returns the running
    ``gr.Blocks`` (the call blocks unless ``prevent_thread_lock=True``).
    """
    if threads is not None:
        import torch
        torch.set_num_threads(int(threads))
    limits = {k: kw.pop(k) for k in list(kw) if k in DEFAULT_LIMITS or k in ("warmup", "keep_uploads")}
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
