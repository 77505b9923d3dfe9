"""Video data: decoding, frame sampling, clip transforms, annotation formats, the dataset, synthetic data.

The names below load on first use (PEP 562), so ``zeroi2v.data.formats`` (plain Python) is importable
without torch: the command line reads lists and configs before it needs a tensor.
"""
from __future__ import annotations

import importlib

_WHERE = {
    "dataset": ("VideoDataset",),
    "decode": ("DecordSource", "FrameFolderSource", "TensorSource", "VideoDecodeError", "VideoSource", "open_video",
               "write_video"),
    "formats": ("FORMATS", "Annotation", "Sample", "read_annotation", "read_class_names"),
    "sampling": ("DenseSampler", "UniformSampler"),
    "synthetic": ("DEFAULT_CLASSES", "REGISTRY", "flip_label_map", "make_clip", "make_synthetic_images",
                  "make_synthetic_videos"),
    "transforms": ("CLIP_MEAN", "CLIP_STD", "SSV2_FLIP_LABEL_MAP", "TestTransform", "TrainTransform", "denormalize",
                   "normalize"),
}
_MODULE_OF = {name: module for module, names in _WHERE.items() for name in names}
__all__ = list(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'zeroi2v.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"zeroi2v.data.{_MODULE_OF[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
