"""Export a merged checkpoint for deployment: ONNX (onnxruntime) and ``torch.export`` programs.

A merged ZeroI2V model is the plain image ViT plus STDHA, a parameter-free time shift of K and V
(paper Sec. 3.2, Eq. (7)-(9)), plus the temporal embedding and the classifier (Eq. (11) folded the
adapters away). Exported, STDHA is what it is: one ``Gather`` on K and V per layer, followed by the
attention's ``MatMul``/``Softmax``; no custom operator, so any ONNX runtime runs it. The batch axis is
dynamic (any number of clips); frames and image size are fixed by the checkpoint.

The ONNX file records what a runtime needs to feed it (``metadata_props``, read by
``zeroi2v.onnx_model``): class names, frames, image size, pixel mean/std and the input layout.
Files are written atomically. A ``.pt2`` written here is for our own tools: loading one
(``torch.export.load``) unpickles, so ``zeroi2v predict`` reads ONNX only.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from typing import TYPE_CHECKING

from zeroi2v.files import atomic_write

if TYPE_CHECKING:  # torch is imported where it is used: `zeroi2v --help` stays quick
    import torch
    import torch.nn as nn

OPSET = 17
"""ONNX opset of the export: 17 has ``LayerNormalization`` as one operator, and onnxruntime's CPU provider
runs it (the TorchScript-based exporter; the dynamo exporter needs the extra package onnxscript)."""
ONNX_FORMAT = "zeroi2v-onnx"
ONNX_VERSION = 1
"""1: input ``video`` float32 (batch, 3, frames, size, size), output ``logits`` (batch, classes);
metadata keys ``METADATA_KEYS``, values JSON text."""
METADATA_KEYS = ("format", "version", "class_names", "num_frames", "image_size", "mean", "std", "input_layout",
                 "source", "opset")


def load_for_export(folder: str | Path):
    """A merged checkpoint's model (``load_merged``); a training run folder is refused with the way to merge it."""
    from zeroi2v.merge import CONFIG, load_merged
    from zeroi2v.run_folder import CHECKPOINT
    folder = Path(folder)
    if (folder / CHECKPOINT).is_file() and not (folder / CONFIG).is_file():
        raise ValueError(f"{folder} is a training run folder, not a merged checkpoint: merge it first with "
                         f"`zeroi2v merge {folder} --out MERGED`, then export MERGED (adapter kinds that cannot "
                         f"merge cannot be exported at zero cost)")
    return load_merged(folder)


def example_clip(model: "nn.Module", batch: int = 2, seed: int = 0) -> "torch.Tensor":
    """A seeded normalised clip batch (batch, 3, frames, size, size) for tracing and checking."""
    import torch
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, model.num_frames, model.image_size, model.image_size, generator=g)


def onnx_metadata(model: "nn.Module", source: str = "") -> dict[str, str]:
    """The preprocessing facts and class names a runtime needs, as ONNX ``metadata_props`` (JSON values)."""
    from zeroi2v.evaluate import class_labels
    cfg = model.cfg
    n = model.head.out_features
    facts: dict[str, Any] = {
        "format": ONNX_FORMAT, "version": ONNX_VERSION,
        "class_names": class_labels(cfg.class_names, n) if cfg.class_names else [],
        "num_frames": model.num_frames, "image_size": model.image_size,
        "mean": [float(m) for m in cfg.mean], "std": [float(s) for s in cfg.std],
        "input_layout": "video: float32 (batch, 3, frames, size, size), RGB in [0, 1] then (x - mean) / std",
        "source": source, "opset": OPSET,
    }
    return {k: json.dumps(facts[k]) for k in METADATA_KEYS}


def export_onnx(model: "nn.Module", out: str | Path, source: str = "", clip: "torch.Tensor | None" = None,
                metadata: dict[str, str] | None = None) -> Path:
    """Write ``model`` (a merged ZeroI2V) as ONNX with a dynamic batch axis and ``onnx_metadata``; atomically
    (nothing half-written on failure). Another module on the same input (the plain ViT of a benchmark) needs
    ``clip`` (an example input) and ``metadata`` (e.g. its ZeroI2V's ``onnx_metadata``)."""
    import onnx
    import torch
    model = model.eval()
    clip = example_clip(model) if clip is None else clip
    metadata = onnx_metadata(model, source) if metadata is None else metadata

    def write(tmp: str) -> None:
        fastpath = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)  # nn.MultiheadAttention's fused op has no ONNX form
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # tracer notes on the shape checks: frames and size are fixed
                torch.onnx.export(model, (clip,), tmp, dynamo=False, opset_version=OPSET, input_names=["video"],
                                  output_names=["logits"], dynamic_axes={"video": {0: "batch"}, "logits": {0: "batch"}})
        finally:
            torch.backends.mha.set_fastpath_enabled(fastpath)
        graph = onnx.load(tmp)
        for key, value in metadata.items():
            entry = graph.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.checker.check_model(graph)
        onnx.save(graph, tmp)

    return atomic_write(out, write)


def export_program(model: "nn.Module") -> "torch.export.ExportedProgram":
    """``torch.export`` of ``model`` with a dynamic batch dimension (frames and size fixed)."""
    import torch
    batch = torch.export.Dim("batch", min=1, max=4096)
    return torch.export.export(model.eval(), (example_clip(model),), dynamic_shapes=({0: batch},))


def export_torch(model: "nn.Module", out: str | Path) -> tuple[Path, "torch.export.ExportedProgram"]:
    """Write ``export_program(model)`` to ``out`` (.pt2), atomically; returns the path and the program."""
    import torch
    program = export_program(model)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: torch.export.save warns on a name not ending in .pt2
            torch.export.save(program, f)

    return atomic_write(out, write), program


def max_abs_diff(model: "nn.Module", run, batches: tuple[int, ...] = (1, 3), seed: int = 1,
                 clip_of: "nn.Module | None" = None) -> float:
    """Largest |logit difference| between ``model`` and ``run`` (clip batch -> logits tensor) on seeded
    clips of each batch size in ``batches`` (more than one size proves the dynamic batch axis); the clips
    have ``clip_of``'s shape (default ``model``'s)."""
    import torch
    worst = 0.0
    with torch.no_grad():
        for i, b in enumerate(batches):
            clip = example_clip(clip_of or model, b, seed + i)
            worst = max(worst, (model(clip) - run(clip)).abs().max().item())
    return worst


def spatial_only(merged: "nn.Module") -> "nn.Module":
    """The merged model's own graph with STDHA's offsets all 0 and no temporal embedding: the plain ViT
    through ZeroI2V's block code, so that merged / spatial isolates the cost of STDHA's Gather."""
    import copy

    from zeroi2v.stdha import STDHA
    model = copy.deepcopy(merged)
    for blk in model.blocks:  # a new operator, so its index tables fit its offsets
        blk.temporal = STDHA((0,) * blk.num_heads, merged.num_frames)
    model.temporal_embedding = None
    return model.eval()


def onnx_latency(merged: "nn.Module", batch: int = 1, repeats: int = 10, threads: int | None = None) -> dict:
    """Export ``merged`` three ways (its plain ViT, ``spatial_only``, itself) to ONNX, check each against
    PyTorch (``max_abs_diff``) and time them on onnxruntime's CPU provider, interleaved, in this process
    (``zeroi2v.bench.measure_latency``): the ratios merged / plain and merged / spatial are the result
    (``benchmarks/onnx_latency.py``, notebook 08)."""
    import tempfile

    import onnxruntime
    import torch
    from zeroi2v.bench import PlainViT, measure_latency
    from zeroi2v.onnx_model import OnnxClassifier
    models = {"plain": PlainViT(merged), "spatial": spatial_only(merged), "merged": merged}
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in models.items():
            export_onnx(model, Path(tmp) / f"{name}.onnx", clip=example_clip(merged),
                        metadata=onnx_metadata(merged, f"{name} (benchmark)"))
        runs = {name: OnnxClassifier(Path(tmp) / f"{name}.onnx", threads=threads) for name in models}
        diffs = {name: max_abs_diff(model, runs[name], clip_of=merged) for name, model in models.items()}
        seconds = measure_latency(runs, example_clip(merged, batch, seed=7), repeats=repeats)
    return {"setup": {"backbone": merged.cfg.backbone, "frames": merged.num_frames, "image_size": merged.image_size,
                      "batch": batch, "repeats": repeats, "threads": threads, "onnxruntime": onnxruntime.__version__,
                      "torch": torch.__version__},
            "latency_ms": {k: round(v * 1e3, 3) for k, v in seconds.items()},
            "merged_over_plain": seconds["merged"] / seconds["plain"],
            "merged_over_spatial": seconds["merged"] / seconds["spatial"],
            "max_abs_logit_diff_vs_pytorch": diffs}


def add_cli(sub) -> None:
    """``zeroi2v export DIR --onnx OUT.onnx --torch-export OUT.pt2``."""
    p = sub.add_parser("export", help="export a merged checkpoint to ONNX and/or torch.export",
                       description="Export a merged checkpoint (`zeroi2v merge`) for deployment: ONNX (opset "
                                   f"{OPSET}, runs on onnxruntime CPU) and/or a torch.export program (.pt2), with "
                                   "a dynamic batch axis; STDHA exports as plain Gather + attention ops. Each "
                                   "export is checked against PyTorch on seeded clips of two batch sizes and the "
                                   "max abs logit difference is printed. Run the ONNX file with "
                                   "`zeroi2v predict --onnx OUT.onnx VIDEO...`.")
    p.add_argument("checkpoint", help="merged checkpoint directory (model.safetensors + config.json)")
    p.add_argument("--onnx", default=None, metavar="OUT.onnx", help="write an ONNX model here")
    p.add_argument("--torch-export", default=None, metavar="OUT.pt2", help="write a torch.export program here")
    p.add_argument("--tolerance", type=float, default=1e-4,
                   help="fail when an export differs from PyTorch by more than this (max abs logit)")
    p.set_defaults(func=cmd_export)


def cmd_export(a) -> int:
    if not a.onnx and not a.torch_export:
        raise ValueError("nothing to export: give --onnx OUT.onnx and/or --torch-export OUT.pt2")
    model = load_for_export(a.checkpoint)
    from zeroi2v.backbones import display_name
    diffs = {}
    if a.onnx:
        from zeroi2v.onnx_model import OnnxClassifier
        source = f"{Path(a.checkpoint).resolve().name} (merged checkpoint, backbone {display_name(model.cfg.backbone)})"
        path = export_onnx(model, a.onnx, source=source)
        diffs[str(path)] = max_abs_diff(model, OnnxClassifier(path))
    if a.torch_export:
        path, program = export_torch(model, a.torch_export)
        diffs[str(path)] = max_abs_diff(model, program.module())  # the program in memory: nothing is unpickled
    for path, diff in diffs.items():
        print(f"{path}: max |logit difference| vs PyTorch (batches 1 and 3): {diff:.3g}")
    worst = max(diffs.values())
    if worst > a.tolerance:
        raise RuntimeError(f"an export differs from PyTorch by {worst:.3g} (> --tolerance {a.tolerance:g})")
    return 0
