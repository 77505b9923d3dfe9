#!/usr/bin/env python
"""ONNX export at zero extra cost: onnxruntime latency of the merged ZeroI2V export vs the plain ViT's export.

One process, one input, three ONNX files written by ``zeroi2v.export.export_onnx``:
  plain    the image ViT run frame by frame (``zeroi2v.bench.PlainViT``: the backbone's own forward, no STDHA,
           no temporal embedding), same head, same weights;
  spatial  the merged model's graph with every Δt = 0 and no temporal embedding (``spatial_only``): the
           plain ViT through ZeroI2V's block code, so merged / spatial is the cost of STDHA alone;
  merged   the merged ZeroI2V (plain ViT + STDHA as Gather on K/V + temporal embedding + head).
Both run on onnxruntime's CPU provider; latency is the median of interleaved runs
(``zeroi2v.bench.measure_latency``) and the results are the ratios merged / plain and merged / spatial. Each export's max abs
logit difference against PyTorch is printed too (seeded clips of batch 1 and 3).

    python benchmarks/onnx_latency.py                              # zeroi2v-tiny, 8 frames, batch 1
    python benchmarks/onnx_latency.py --backbone ViT-B-16 --repeats 5
    python benchmarks/onnx_latency.py --checkpoint runs/quickstart/merged

Random weights are enough (cost does not depend on values); ratios are what a shared machine measures
honestly, absolute milliseconds depend on everything else running.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch


def build(args):
    """The merged model to export: a user's checkpoint, or a random-adapter model merged here."""
    from zeroi2v.export import load_for_export
    if args.checkpoint:
        return load_for_export(args.checkpoint)
    from zeroi2v.bench import default_offsets, randomize_adapters
    from zeroi2v.merge import merge_adapters
    from zeroi2v.model import create_model
    torch.manual_seed(args.seed)
    model = create_model(backbone=args.backbone, num_classes=400, num_frames=args.frames,
                         temporal={"kind": "stdha", "offsets": default_offsets(args.backbone, args.frames)},
                         adapter={"kind": "linear", "placement": "4"})
    return merge_adapters(randomize_adapters(model, args.seed))


def spatial_only(merged):
    """The merged model's own graph with STDHA's offsets all 0 and no temporal embedding: the plain ViT
    through ZeroI2V's block code, so that merged / spatial isolates the cost of STDHA's Gather."""
    import copy
    model = copy.deepcopy(merged)
    for blk in model.blocks:
        blk.temporal.offsets = (0,) * len(blk.temporal.offsets)
    model.temporal_embedding = None
    return model.eval()


def onnx_latency(merged, batch: int = 1, repeats: int = 10, threads: int | None = None) -> dict:
    """Export ``merged`` and its plain ViT to ONNX, check both against PyTorch, time both on onnxruntime."""
    from zeroi2v.bench import PlainViT, measure_latency
    from zeroi2v.export import example_clip, export_onnx, max_abs_diff, onnx_metadata
    from zeroi2v.onnx_model import OnnxClassifier
    models = {"plain": PlainViT(merged), "spatial": spatial_only(merged), "merged": merged}
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in models.items():
            export_onnx(model, Path(tmp) / f"{name}.onnx", clip=example_clip(merged),
                        metadata=onnx_metadata(merged, f"{name} (benchmark)"))
        runs = {name: OnnxClassifier(Path(tmp) / f"{name}.onnx", threads=threads) for name in models}
        diffs = {name: max_abs_diff(model, runs[name], clip_of=merged) for name, model in models.items()}
        seconds = measure_latency(runs, example_clip(merged, batch, seed=7), repeats=repeats)
    import onnxruntime
    return {"setup": {"backbone": merged.cfg.backbone, "frames": merged.num_frames, "image_size": merged.image_size,
                      "batch": batch, "repeats": repeats, "threads": threads, "onnxruntime": onnxruntime.__version__,
                      "torch": torch.__version__},
            "latency_ms": {k: round(v * 1e3, 3) for k, v in seconds.items()},
            "merged_over_plain": seconds["merged"] / seconds["plain"],
            "merged_over_spatial": seconds["merged"] / seconds["spatial"],
            "max_abs_logit_diff_vs_pytorch": diffs}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 2)[2])
    ap.add_argument("--backbone", default="zeroi2v-tiny")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--checkpoint", default=None, help="a merged checkpoint instead of a random-weight model")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: its own)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the result here")
    args = ap.parse_args(argv)
    result = onnx_latency(build(args), batch=args.batch, repeats=args.repeats, threads=args.threads)
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        from zeroi2v.files import atomic_write_text
        atomic_write_text(args.json, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
