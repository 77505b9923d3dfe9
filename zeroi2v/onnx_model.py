"""Run an exported ONNX model (``zeroi2v export --onnx``) with onnxruntime: no torch model code involved.

``OnnxClassifier`` reads the file's ``metadata_props`` (``zeroi2v.export.onnx_metadata``) for what the input
pipeline needs (frames, image size, pixel mean/std, class names) and looks enough like a model to
``zeroi2v.data.views.model_views``: decoding and transforms are the package's data code, the network is
the ONNX graph. An ONNX file is data (protobuf), so reading a user's file executes nothing.
"""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from zeroi2v.export import ONNX_FORMAT, ONNX_VERSION

REEXPORT = "export it again with `zeroi2v export CHECKPOINT --onnx FILE`"


class OnnxClassifier:
    """An exported ZeroI2V model: ``clf(views)`` maps (B, 3, T, H, W) clips to logits (B, classes).

    ``num_frames``, ``image_size``, ``num_classes`` and ``cfg`` (``class_names``, ``mean``, ``std``) come
    from the file's metadata; a file that is not ONNX or lacks the metadata is a one-line ValueError."""

    def __init__(self, path: str | Path, threads: int | None = None):
        import onnxruntime as ort
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path} does not exist; {REEXPORT}")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime's InvalidProtobuf, Fail, ...: one line naming the file
            reason = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
            raise ValueError(f"{self.path} is not a readable ONNX model ({reason}); {REEXPORT}") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        facts = self._facts(meta)
        self.num_frames, self.image_size = facts["num_frames"], facts["image_size"]
        self.num_classes = int(self.session.get_outputs()[0].shape[-1])
        names = facts["class_names"] or None
        if names is not None and len(names) != self.num_classes:
            raise ValueError(f"{self.path}: metadata lists {len(names)} class names for {self.num_classes} "
                             f"outputs; {REEXPORT}")
        self.cfg = SimpleNamespace(class_names=names, mean=tuple(facts["mean"]), std=tuple(facts["std"]),
                                   num_classes=self.num_classes)
        self.input_name = self.session.get_inputs()[0].name

    def _facts(self, meta: dict[str, str]) -> dict:
        try:
            facts = {k: json.loads(meta[k]) for k in ("format", "version", "class_names", "num_frames",
                                                       "image_size", "mean", "std")}
        except (KeyError, ValueError) as e:
            raise ValueError(f"{self.path} holds no zeroi2v metadata (missing or broken {e}): it was not "
                             f"written by `zeroi2v export`; {REEXPORT}") from None
        if facts["format"] != ONNX_FORMAT:
            raise ValueError(f"{self.path}: metadata format is {facts['format']!r}, not {ONNX_FORMAT!r}; {REEXPORT}")
        if not isinstance(facts["version"], int) or facts["version"] > ONNX_VERSION:
            raise ValueError(f"{self.path}: export version {facts['version']!r} is newer than this zeroi2v reads "
                             f"({ONNX_VERSION}); upgrade zeroi2v")
        return facts

    def __call__(self, views: torch.Tensor) -> torch.Tensor:
        x = np.ascontiguousarray(views.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run(None, {self.input_name: x})[0])
