"""Gradio demo of a merged ZeroI2V checkpoint: top-5 classes and Grad-CAM of spatial vs temporal heads.

    zeroi2v demo --checkpoint runs/quickstart/merged [--host 127.0.0.1] [--port 7860]

or ``python app/app.py [CHECKPOINT_DIR]`` from a checkout (a thin launcher of this package). The page takes an uploaded video (or one of the checkpoint's
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

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from zeroi2v.data.untrusted import sniff_container  # noqa: E402
from zeroi2v.demo.backend import (DEFAULT_CHECKPOINT, DEFAULT_LIMITS, TOP1, Busy, DemoBackend, InputError,  # noqa: E402
                                  facts_markdown, find_examples, resolve_checkpoint)
from zeroi2v.demo.page import build_app, launch, main  # noqa: E402

__all__ = ["DEFAULT_CHECKPOINT", "DEFAULT_LIMITS", "TOP1", "Busy", "DemoBackend", "InputError", "build_app",
           "facts_markdown", "find_examples", "launch", "main", "resolve_checkpoint", "sniff_container"]
