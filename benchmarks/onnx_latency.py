#!/usr/bin/env python
"""ONNX export at zero extra cost: onnxruntime latency of the merged ZeroI2V export vs the plain ViT's export.

One process, one input, three ONNX files written by ``zeroi2v.export.export_onnx`` (the logic is
``zeroi2v.export.onnx_latency``, which notebook 08 runs too):
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


def build(args):
    """The merged model to export: a user's checkpoint, or a random-adapter model merged here."""
    from zeroi2v.export import load_for_export
    if args.checkpoint:
        return load_for_export(args.checkpoint)
    from zeroi2v.bench import build_randomized, default_offsets
    from zeroi2v.merge import merge_adapters
    offsets = default_offsets(args.backbone, args.frames)
    return merge_adapters(build_randomized(args.backbone, args.frames, offsets, "4", args.seed))


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
    from zeroi2v.export import onnx_latency
    result = onnx_latency(build(args), batch=args.batch, repeats=args.repeats, threads=args.threads)
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        from zeroi2v.files import atomic_write_text
        atomic_write_text(args.json, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
