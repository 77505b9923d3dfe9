"""``zeroi2v bench --suite``: every cost the paper reports, for a list of models, in one process.

Models: the plain image ViT (frame by frame, the reference for "zero extra cost"), ZeroI2V merged and
unmerged, and the non-mergeable baselines of the paper's Tables 2 and 3 (GELU adapter, ST-Adapter); with
``--checkpoint DIR`` a user's merged model and its own plain ViT instead. Per model (paper Table 9 and
Table 10, Figure 1 right): parameters and the inference parameters the image model does not have, GFLOPs
as multiply-adds (× views), latency at batch ``--batch`` (median of interleaved runs after warm-up, with
min and max), throughput at the largest batch that fits (a doubling search with a cap and a time budget),
and one training step's time and peak memory (``zeroi2v.bench.measure_step``).

Training rows: the plain ViT trains fully (frame-wise image fine-tuning); the merged model's architecture
(ViT + STDHA, no adapters) trains fully, which is the paper's full fine-tuning baseline; adapter models
train their adapters (ZeroI2V). Training runs last: it changes the weights, which costs do not depend on.
Ratios to the plain ViT are measured in this process; absolute times are this machine's.
"""
from __future__ import annotations

import contextlib
import json
import math
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from zeroi2v.bench import (PlainViT, TOLERANCE, build_randomized, count_flops, count_params, default_offsets,
                           latency_samples, measure_step)
from zeroi2v.files import atomic_write, atomic_write_text, read_json

MODELS = ("plain", "zeroi2v_merged", "zeroi2v_unmerged", "gelu_adapter", "st_adapter")
"""The default suite, in table order; ``--checkpoint`` replaces it by ``plain`` and ``checkpoint``."""
LABELS = {"plain": "plain ViT", "zeroi2v_merged": "ZeroI2V merged", "zeroi2v_unmerged": "ZeroI2V unmerged",
          "gelu_adapter": "GELU adapter", "st_adapter": "ST-Adapter", "checkpoint": "checkpoint (merged)"}
FIELDS = ("label", "mergeable", "params", "new_inference_params", "gflops", "latency_ms", "latency_min_ms",
          "latency_max_ms", "latency_ratio", "throughput_clips_per_s", "throughput_batch", "throughput_stop",
          "train_mode", "train_batch", "train_step_s", "train_peak_mem_mb", "train_step_mem_mb", "trainable_params")
"""Every model's entry in the JSON has exactly these keys."""


def add_suite_arguments(ap) -> None:
    """The suite's options (added to ``zeroi2v bench`` next to ``add_benchmark_arguments``)."""
    ap.add_argument("--suite", action="store_true", help="run the suite: plain ViT, ZeroI2V merged/unmerged, "
                    "GELU adapter, ST-Adapter; throughput and training cost too (writes --out)")
    ap.add_argument("--checkpoint", type=Path, default=None,
                    help="suite on this merged checkpoint directory against its plain ViT (implies --suite)")
    ap.add_argument("--results", type=Path, default=None,
                    help="JSON file {model name: top-1} for the bubble plot's y axis (default: latency)")
    ap.add_argument("--out", type=Path, default=Path("runs/bench"),
                    help="suite output folder: bench.json, bench.md, bubble.png (default runs/bench)")
    ap.add_argument("--train-batch", type=int, default=2, help="suite: clips per training step (default 2)")
    ap.add_argument("--train-steps", type=int, default=2, help="suite: timed training steps (default 2)")
    ap.add_argument("--max-batch", type=int, default=64, help="suite: throughput search cap (default 64)")
    ap.add_argument("--throughput-seconds", type=float, default=20.0,
                    help="suite: time budget of each model's throughput search (default 20)")


def _autocast(device: torch.device, dtype: str):
    return torch.autocast(device.type, dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()


def build_suite(args) -> tuple[dict[str, nn.Module], dict[str, Any]]:
    """The models to measure, by name, and the setup they share (backbone, frames, offsets, image size)."""
    from zeroi2v.merge import load_merged, merge_adapters
    from zeroi2v.stdha import format_offsets
    if args.checkpoint is not None:
        merged = load_merged(args.checkpoint)
        models = {"plain": PlainViT(merged), "checkpoint": merged}
        backbone, frames = merged.cfg.backbone, merged.num_frames
    else:
        backbone, frames = args.backbone, args.frames
        offsets = default_offsets(backbone, frames) if args.offsets == "auto" else args.offsets
        unmerged = build_randomized(backbone, frames, offsets, args.placement, args.seed)
        merged = merge_adapters(unmerged)
        models = {"plain": PlainViT(merged), "zeroi2v_merged": merged, "zeroi2v_unmerged": unmerged}
        for name, kind in (("gelu_adapter", "gelu"), ("st_adapter", "st_adapter")):
            models[name] = build_randomized(backbone, frames, offsets, args.placement, args.seed, kind=kind)
    setup = {"backbone": backbone, "frames": frames, "image_size": merged.image_size,
             "placement": args.placement if args.checkpoint is None else "merged",
             "offsets": " / ".join(dict.fromkeys(format_offsets(o) for o in merged.offsets)),
             "checkpoint": str(args.checkpoint) if args.checkpoint is not None else None}
    return models, setup


def _too_big(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower() or \
        isinstance(e, MemoryError)


@torch.no_grad()
def find_throughput(model: nn.Module, clip: torch.Tensor, cap: int, budget_s: float, repeats: int = 2) -> dict:
    """Clips per second at the largest batch that fits: batch 1, 2, 4, ... up to ``cap``, stopping at the
    first batch that runs out of memory or whose predicted time would overrun ``budget_s``. Each batch is
    run once untimed, then ``repeats`` times; the median is kept."""
    sync = torch.cuda.synchronize if clip.is_cuda else (lambda: None)
    best, batch, stop, started = None, 1, "cap", time.perf_counter()
    while batch <= cap:
        try:
            video = clip.expand(batch, *clip.shape[1:]).contiguous()
            times = []
            for i in range(repeats + 1):
                sync()
                t0 = time.perf_counter()
                model(video)
                sync()
                if i:
                    times.append(time.perf_counter() - t0)
        except (RuntimeError, MemoryError) as e:
            if not _too_big(e):
                raise
            stop = "memory"
            if clip.is_cuda:
                torch.cuda.empty_cache()
            break
        best = (batch, batch / statistics.median(times))
        elapsed = time.perf_counter() - started
        if batch * 2 <= cap and elapsed + 2 * sum(times) * (repeats + 1) / repeats > budget_s:
            stop = "time budget"
            break
        batch *= 2
    if best is None:
        raise RuntimeError(f"throughput: {type(model).__name__} does not fit even at batch 1")
    return {"throughput_batch": best[0], "throughput_clips_per_s": best[1], "throughput_stop": stop}


def _train_cost(name: str, model: nn.Module, args, device: torch.device, amp: str, size: int) -> dict:
    """One model's training step via ``measure_step`` (mode as in the module docstring)."""
    if isinstance(model, PlainViT):  # no set_finetune: every parameter trains
        model.requires_grad_(True)
        mode, finetune = "full", None
    else:
        mode = finetune = "adapters" if any(len(b.adapters) for b in model.blocks) else "full"
    r = measure_step(model, args.train_batch, args.train_steps, finetune=finetune, device=device, amp=amp,
                     image_size=size)
    return {"train_mode": mode, "train_batch": args.train_batch, "train_step_s": r["step_time_s"],
            "train_peak_mem_mb": r["peak_mem_mb"], "train_step_mem_mb": r["step_mem_mb"],
            "trainable_params": r["trainable_params"], "_mem_kind": r["mem_kind"]}


def run_suite(args) -> dict:
    """Measure every model of ``build_suite`` on one device; returns the JSON-ready report."""
    from zeroi2v.merge import merge_refusal
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: no CUDA device visible to torch")
    dtype = args.dtype if args.dtype != "auto" else ("bf16" if device.type == "cuda" else "fp32")
    started = time.perf_counter()
    models, setup = build_suite(args)
    models = {k: m.to(device).eval() for k, m in models.items()}
    size, frames = setup["image_size"], setup["frames"]
    g = torch.Generator().manual_seed(args.seed)
    clip = torch.randn(1, 3, frames, size, size, generator=g).to(device)
    video = clip.expand(args.batch, *clip.shape[1:]).contiguous()
    plain_params = count_params(models["plain"])
    out: dict[str, dict] = {}
    with torch.no_grad(), _autocast(device, dtype):
        lat = latency_samples(models, video, repeats=args.repeats)
        for name, m in models.items():
            ms = [t * 1e3 for t in lat[name]]
            out[name] = {"label": LABELS[name], "mergeable": isinstance(m, PlainViT) or merge_refusal(m) is None,
                         "params": count_params(m), "new_inference_params": count_params(m) - plain_params,
                         "gflops": count_flops(m, clip) * args.views / 1e9, "latency_ms": statistics.median(ms),
                         "latency_min_ms": min(ms), "latency_max_ms": max(ms)}
            out[name]["latency_ratio"] = statistics.median(lat[name]) / statistics.median(lat["plain"])
            out[name].update(find_throughput(m, clip, args.max_batch, args.throughput_seconds))
    amp = "bf16" if dtype == "bf16" else "none"
    mem_kind = None
    for name, m in models.items():  # last: training changes the weights
        out[name].update(_train_cost(name, m, args, device, amp, size))
        mem_kind = out[name].pop("_mem_kind")
    setup.update({"batch": args.batch, "views": args.views, "repeats": args.repeats, "warmup": 2,
                  "device": str(device), "dtype": dtype, "threads": torch.get_num_threads(),
                  "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                  "max_batch": args.max_batch, "throughput_seconds": args.throughput_seconds,
                  "train_batch": args.train_batch, "train_steps": args.train_steps, "mem_kind": mem_kind, "torch": torch.__version__,
                  "python": platform.python_version(), "cpu": platform.processor() or platform.machine()})
    merged = out.get("zeroi2v_merged", out.get("checkpoint"))
    return {"setup": setup, "models": out, "verdict": {"merged_over_plain": merged["latency_ratio"],
            "tolerance": TOLERANCE, "pass": merged["latency_ratio"] <= TOLERANCE},
            "seconds": time.perf_counter() - started}


def read_results(path: Path, names: list[str]) -> dict[str, float]:
    """``--results``: a JSON object {model name: top-1}, names among ``names``; a bad file is one line."""
    if not path.is_file():
        raise ValueError(f"--results {path}: no such file; give a JSON file like {{\"zeroi2v_merged\": 66.0}}")
    data = read_json(path)
    if not isinstance(data, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                             and math.isfinite(v) for v in data.values()):
        raise ValueError(f"--results {path}: must be a JSON object mapping model name -> top-1 number, "
                         f'like {{"zeroi2v_merged": 66.0}}')
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ValueError(f"--results {path}: unknown model name(s) {unknown}; the suite's names are {names}")
    return {k: float(v) for k, v in data.items()}


def format_suite(r: dict) -> str:
    """The suite as a Markdown table, with its setup above it."""
    s = r["setup"]
    where = f"{s['device']} ({s['gpu']})" if s["gpu"] else f"{s['device']}, {s['threads']} threads"
    lines = [f"ZeroI2V benchmark suite: {s['backbone']}, {s['frames']} frames x {s['image_size']} px, {s['dtype']}, "
             f"{where}; Δt = {{{s['offsets']}}}, placement {s['placement']}", "",
             f"GFLOPs x {s['views']} views (multiply-adds); latency at batch {s['batch']}: median of {s['repeats']} "
             f"interleaved runs [min, max]; throughput at the largest batch <= {s['max_batch']} found within "
             f"{s['throughput_seconds']:g} s; training: median of {s['train_steps']} steps at batch {s['train_batch']}",
             "",
             "| model | merges | params (M) | new params | GFLOPs | latency ms [min, max] | / plain | clips/s (batch) "
             "| train | step s | peak MiB | step MiB |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
    for m in r["models"].values():
        lines.append(f"| {m['label']} | {'yes' if m['mergeable'] else 'no'} | {m['params'] / 1e6:.3f} | "
                     f"{m['new_inference_params']:,d} | {m['gflops']:.4g} | {m['latency_ms']:.1f} "
                     f"[{m['latency_min_ms']:.1f}, {m['latency_max_ms']:.1f}] | {m['latency_ratio']:.3f} | "
                     f"{m['throughput_clips_per_s']:.2f} ({m['throughput_batch']}, {m['throughput_stop']}) | "
                     f"{m['train_mode']} @ {m['train_batch']} | {m['train_step_s']:.3f} | {m['train_peak_mem_mb']:.0f} | "
                     f"{m['train_step_mem_mb']:.0f} |")
    v = r["verdict"]
    lines += ["", f"merged / plain latency = {v['merged_over_plain']:.3f} "
                  f"{'<=' if v['pass'] else '>'} {v['tolerance']} -> {'PASS' if v['pass'] else 'FAIL'}; "
                  f"memory: {s['mem_kind']}"]
    return "\n".join(lines)


def plot_bubbles(r: dict, path: Path, accuracy: dict[str, float] | None = None) -> Path:
    """Paper Figure 1 (right): GFLOPs on x, top-1 (or, without results, latency) on y, bubble area ∝ params."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state is touched
    rows = [(k, m) for k, m in r["models"].items() if accuracy is None or k in accuracy]
    fig = Figure(figsize=(6.0, 4.5), dpi=100)
    ax = fig.subplots()
    biggest = max(m["params"] for _, m in rows)
    for i, (k, m) in enumerate(rows):
        y = accuracy[k] if accuracy is not None else m["latency_ms"]
        ax.scatter([m["gflops"]], [y], s=2000 * m["params"] / biggest, alpha=0.45, color=f"C{i}",
                   edgecolors="k", label=f"{m['label']} ({m['params'] / 1e6:.3g} M params)")
        ax.plot([m["gflops"]], [y], "k.", markersize=3)
    s = r["setup"]
    ax.set_xlabel(f"GFLOPs x {s['views']} views")
    ax.set_ylabel("top-1 (%)" if accuracy is not None else f"latency (ms, batch {s['batch']}, {s['device']})")
    ax.set_title(f"{s['backbone']}, {s['frames']} frames: bubble area = parameters", fontsize=10)
    ax.margins(0.25)
    ax.grid(alpha=0.3)
    legend = ax.legend(fontsize=7, loc="best", markerscale=0.4)
    for handle in legend.legend_handles:
        handle.set_sizes([40])
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def run_suite_cli(args) -> int:
    """``zeroi2v bench --suite``: print the table; write OUT/bench.json, bench.md, bubble.png (and --json)."""
    for flag in ("batch", "train_batch", "train_steps", "max_batch", "repeats"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
    if args.throughput_seconds < 0:
        raise ValueError(f"--throughput-seconds must be >= 0, got {args.throughput_seconds}")
    names = list(MODELS) if args.checkpoint is None else ["plain", "checkpoint"]
    accuracy = read_results(args.results, names) if args.results is not None else None  # fail before measuring
    if accuracy is not None and not accuracy:
        raise ValueError(f"--results {args.results}: no model names in it; the suite's names are {names}")
    report = run_suite(args)
    if accuracy is not None:
        report["top1"] = accuracy
    table = format_suite(report)
    print(table)
    print(f"({report['seconds']:.0f} s)")
    text = json.dumps(report, indent=2)
    atomic_write_text(args.out / "bench.json", text)
    atomic_write_text(args.out / "bench.md", table + "\n")
    plot_bubbles(report, args.out / "bubble.png", accuracy)
    if args.json:
        atomic_write_text(args.json, text)
    print(f"wrote {args.out / 'bench.json'}, bench.md, bubble.png")
    return 1 if args.check and not report["verdict"]["pass"] else 0


def run_bench_cli(args) -> int:
    """``zeroi2v bench``: the suite with ``--suite`` or ``--checkpoint``, else the classic zero-cost table."""
    from zeroi2v.bench import run_benchmark_cli
    return run_suite_cli(args) if args.suite or args.checkpoint is not None else run_benchmark_cli(args)
