"""The Gradio page of the demo and its server: ``build_app`` lays it out, ``launch`` serves it."""
from __future__ import annotations

import html
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from zeroi2v.data.untrusted import clean_reason
from zeroi2v.demo.backend import (DEFAULT_LIMITS, TOP1, Busy, DemoBackend, InputError, _display_name, log,
                                  resolve_checkpoint)


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


def _forget(kept: str | None, now: str | None) -> str | None:
    """The upload the session keeps from now on; the one it kept before is deleted when replaced."""
    if kept and kept != now:
        _remove_upload(kept)
    return now


def _analyse(backend: DemoBackend, upload, example, target, block, clips, kept) -> tuple:
    """One request of the page: (status, top-5, frames, 3 CAM strips, timing, kept upload)."""
    import uuid
    empty = (None,) * 5
    path = uploaded = _upload_path(upload)
    if path is None and example:
        if example not in backend.examples:  # a name, never a path: nothing else is readable
            return (_status("error", f"unknown example {example!r}."), *empty, "", _forget(kept, None))
        path = str(backend.examples[example])
    if not path:
        return (_status("info", "Upload a video or pick an example."), *empty, "", _forget(kept, None))
    try:
        r = backend.analyse(path, target=target, block=int(block), clips=int(clips))
    except Busy as e:  # the same upload may be tried again
        return (_status("error", str(e)), *empty, "", _forget(kept, uploaded))
    except InputError as e:  # a refused upload is of no further use
        _remove_upload(uploaded)
        return (_status("error", str(e)), *empty, "", _forget(kept, None))
    except Exception as e:  # never a stack trace in the page; the server log keeps it
        log.exception("analysis failed")
        return (_status("error", f"analysis failed ({html.escape(clean_reason(e, path))})."), *empty, "",
                _forget(kept, uploaded))
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
    return (_status("ok", " ".join(msg)), top, *images, timing, _forget(kept, uploaded))


def build_app(checkpoint_dir: str | os.PathLike, keep_uploads: float = 900.0, **limits: Any):
    """The demo page for a merged checkpoint directory (or an unmerged run folder), queued (two analyses at a time: see DemoBackend).

    Uploads are deleted from Gradio's upload folder once refused, once replaced by another upload or
    example, and ``keep_uploads`` seconds after their last analysis (until then the same upload can be
    explained again for another class or block).
    """
    try:
        import gradio as gr
    except ImportError:
        raise ImportError("the demo needs Gradio: pip install \"zeroi2v[app]\" (or gradio)") from None

    backend = DemoBackend(resolve_checkpoint(checkpoint_dir), **limits)
    # delete_cache: Gradio's own sweep, every 10 min, of its files (uploads, results) older than 1 h
    with gr.Blocks(title="ZeroI2V demo", delete_cache=(600, 3600)) as demo:
        _page(gr, backend, keep_uploads)
    demo.queue(default_concurrency_limit=2, max_size=32)  # 20 users at once are not turned away
    demo.zeroi2v_backend = backend
    return demo


def _page(gr, backend: DemoBackend, keep_uploads: float) -> None:
    """The page's components and events, inside ``gr.Blocks``."""
    nblocks, example_names = len(backend.model.blocks), list(backend.examples)
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

    def run(upload, example, target, block, clips, kept):
        return _analyse(backend, upload, example, target, block, clips, kept)

    # A new upload replaces the example choice and vice versa, and explains its own top-1 again;
    # either starts an analysis. All three share one queue of two workers (see DemoBackend).
    queued = dict(concurrency_limit=2, concurrency_id="analysis")
    upload.upload(lambda: (None, TOP1), None, [example, target], queue=False, api_visibility="private").then(
        run, inputs, outputs, api_visibility="private", **queued)
    example.input(lambda: (None, TOP1), None, [upload, target], queue=False, api_visibility="private").then(
        run, inputs, outputs, api_visibility="private", **queued)
    button.click(run, inputs, outputs, api_name="analyse", **queued)


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
    p.add_argument("checkpoint", nargs="?", default=None,
                   help="merged checkpoint directory, or a training run folder (served unmerged)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    a = p.parse_args(argv)
    try:
        launch(a.checkpoint, host=a.host, port=a.port, threads=a.threads)
    except Exception as e:  # one readable line, as the zeroi2v command line gives
        if a.debug:
            raise
        sys.exit(f"error: {e}")


