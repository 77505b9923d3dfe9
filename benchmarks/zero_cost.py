#!/usr/bin/env python
"""Zero extra inference cost, measured: plain image ViT vs ZeroI2V before and after merging.

One process, one input, three models:
  plain     the open_clip image ViT run frame by frame (``zeroi2v.bench.PlainViT``), same head;
  unmerged  ZeroI2V with its linear adapters (random weights standing in for trained ones);
  merged    the same model after ``merge_adapters`` (plain ViT + STDHA + temporal embedding + head).
Latency is the median of interleaved forward passes (``measure_latency``), reported in ms and as a
ratio to the plain ViT; params and GFLOPs (multiply-adds, × views) come from ``zero_cost_report``.
The claim under test: merged / plain ≤ 1.02.

    python benchmarks/zero_cost.py                                  # ViT-B-16, 8 frames, batch 1, fp32, CPU
    python benchmarks/zero_cost.py --device cuda                    # bf16 on a GPU
    python benchmarks/zero_cost.py --backbone ViT-L-14 --frames 16 --json runs/zero_cost.json

Random weights are enough: cost does not depend on the values. Ratios are what a shared machine
measures honestly; absolute milliseconds depend on everything else running.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
import time
from pathlib import Path

import torch

from zeroi2v.backbones import get_model_config
from zeroi2v.bench import zero_cost_report
from zeroi2v.merge import merge_adapters
from zeroi2v.model import create_model
from zeroi2v.stdha import PRESETS, format_offsets

TOLERANCE = 1.02


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 2)[2])
    ap.add_argument("--backbone", default="ViT-B-16", help="open_clip ViT name or zeroi2v-tiny/-micro (default ViT-B-16)")
    ap.add_argument("--frames", type=int, default=8, help="frames per clip (default 8)")
    ap.add_argument("--batch", type=int, default=1, help="clips per forward (default 1)")
    ap.add_argument("--views", type=int, default=3, help="views per video for GFLOPs, as in the paper (default 3)")
    ap.add_argument("--repeats", type=int, default=5,
                    help="timed forwards per model, interleaved, after 2 warm-up rounds (default 5)")
    ap.add_argument("--offsets", default="auto",
                    help="Δt multiset or preset; auto: Table 11 K400 preset for ViT-B/L at 8/16/32 frames, else 1x1,-1x1")
    ap.add_argument("--placement", default="4", help="adapter placement: 4, 6 or 3 (default 4)")
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N, or auto (cuda when present)")
    ap.add_argument("--dtype", default="auto", choices=("auto", "fp32", "bf16"),
                    help="auto: bf16 on CUDA, fp32 on CPU. bf16 runs under torch.autocast")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="write the numbers to this file")
    ap.add_argument("--check", action="store_true", help=f"exit 1 when merged / plain > {TOLERANCE}")
    return ap.parse_args(argv)


def default_offsets(backbone: str, frames: int) -> str:
    vision = get_model_config(backbone)["vision_cfg"]
    heads = vision["width"] // vision.get("head_width", 64)
    size = {12: "b", 16: "l"}.get(heads)
    preset = f"k400_vit_{size}_{frames}"
    if preset in PRESETS:
        return preset
    return "1x1,-1x1" if frames > 1 else ""


def trained_like(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random adapters and temporal embedding (fresh adapters are the identity and merge trivially)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".adapters." in name or name == "temporal_embedding":
                std = 0.5 / p.shape[1] ** 0.5 if p.ndim == 2 and ".adapters." in name else 0.02
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model.eval()


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device visible to torch")
    return device


def run(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dtype = args.dtype if args.dtype != "auto" else ("bf16" if device.type == "cuda" else "fp32")
    offsets = default_offsets(args.backbone, args.frames) if args.offsets == "auto" else args.offsets
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    model = trained_like(create_model(backbone=args.backbone, num_classes=400, num_frames=args.frames,
                                      offsets=offsets, adapter_placement=args.placement), args.seed)
    merged = merge_adapters(model)
    model, merged = model.to(device), merged.to(device)
    size = model.image_size
    video = torch.randn(args.batch, 3, args.frames, size, size, device=device)
    # bf16 through autocast: the plain ViT that zero_cost_report builds is float32, like the models here
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()
    with torch.no_grad(), autocast:
        gap = (model(video).float() - merged(video).float()).abs().max().item()
        report = zero_cost_report(model, merged, video, views=args.views, repeats=args.repeats)
    ratio = report["latency_ratio"]["merged"]
    return {
        "setup": {"backbone": args.backbone, "frames": args.frames, "image_size": size, "batch": args.batch,
                  "views": args.views, "repeats": args.repeats, "warmup": 2, "offsets": format_offsets(model.offsets[0]),
                  "placement": args.placement, "device": str(device), "dtype": dtype,
                  "threads": torch.get_num_threads() if device.type == "cpu" else None,
                  "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                  "torch": torch.__version__, "python": platform.python_version(), "cpu": platform.processor() or platform.machine()},
        **report,
        "merge_max_abs_logit_diff": gap,
        "verdict": {"merged_over_plain": ratio, "tolerance": TOLERANCE, "pass": ratio <= TOLERANCE},
        "seconds": time.perf_counter() - started,
    }


def format_table(r: dict) -> str:
    s = r["setup"]
    where = f"{s['device']} ({s['gpu']})" if s["gpu"] else f"{s['device']}, {s['threads']} threads"
    lines = [f"ZeroI2V zero-cost benchmark: {s['backbone']}, {s['frames']} frames x {s['image_size']} px, batch {s['batch']}, "
             f"{s['dtype']}, {where}",
             f"Δt = {{{s['offsets']}}} in every layer, adapters: placement {s['placement']}; "
             f"latency = median of {s['repeats']} interleaved runs",
             "",
             f"{'model':18} {'params (M)':>11} {'GFLOPs x' + str(s['views']):>11} {'latency (ms)':>13} {'/ plain':>8}"]
    labels = {"plain": "plain ViT", "unmerged": "ZeroI2V unmerged", "merged": "ZeroI2V merged"}
    for key, label in labels.items():
        lines.append(f"{label:18} {r['params'][key] / 1e6:11.3f} {r['gflops'][key]:11.4g} "
                     f"{r['latency_ms'][key]:13.1f} {r['latency_ratio'][key]:8.3f}")
    extra = r["params"]["merged"] - r["params"]["plain"]
    lines += ["",
              f"params: merged = plain backbone + temporal embedding {r['params']['temporal_embedding']:,d} "
              f"+ classifier {r['params']['classifier']:,d}"
              if extra == r["params"]["temporal_embedding"] + r["params"]["classifier"]
              else f"merged - plain params: {extra:,d} (expected temporal embedding + classifier!)",
              f"merge exactness: max |logit(unmerged) - logit(merged)| = {r['merge_max_abs_logit_diff']:.1e}",
              f"verdict: merged / plain = {r['verdict']['merged_over_plain']:.3f} "
              f"{'<=' if r['verdict']['pass'] else '>'} {TOLERANCE}  ->  {'PASS' if r['verdict']['pass'] else 'FAIL'}"]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    result = run(args)
    print(format_table(result))
    print(f"({result['seconds']:.0f} s)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    return 1 if args.check and not result["verdict"]["pass"] else 0


if __name__ == "__main__":
    sys.exit(main())
