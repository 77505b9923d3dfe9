#!/usr/bin/env python
"""Training cost: ZeroI2V against full fine-tuning at the same batch, and what cuts it (issue 14, item 2).

Each variant runs in its own process (a CPU process's peak resident set size only grows, so models
measured one after another in one process would inherit the peak of the ones before), through
``zeroi2v.bench.measure_step``: forward, backward and AdamW on random clips, the median step after a
warm-up, and the peak memory (CPU: the process's peak RSS; CUDA: ``torch.cuda.max_memory_allocated``,
plus the allocator's reserved peak). Variants (``--variants``, comma separated; default all but compile):

  full                 ViT + STDHA, no adapters, every parameter trains (the paper's full fine-tuning)
  full_bf16            the same under bf16 autocast
  zeroi2v              linear adapters (placement 4, ratio 0.25, dropout 0), frozen ViT: the plain form
  zeroi2v_fused        the same with ``model.fused_adapters`` (``zeroi2v.fused``)
  zeroi2v_ckpt         plain form with ``model.grad_checkpointing``
  zeroi2v_fused_ckpt   both
  zeroi2v_bf16         plain form under bf16 autocast (CPU autocast on CPU)
  zeroi2v_fused_bf16   fused form under bf16 autocast
  zeroi2v_compile      plain form under ``torch.compile`` (slow to compile; ask for it by name)

    python benchmarks/train_cost.py                                     # zeroi2v-tiny, 8 frames, batch 2, CPU
    python benchmarks/train_cost.py --backbone ViT-B-16 --batch 1 --steps 1 --variants full,zeroi2v,zeroi2v_fused
    python benchmarks/train_cost.py --device cuda --backbone ViT-B-16 --batch 8   # the paper's Table 10 setting

Random weights: cost does not depend on the values. On a shared machine compare the ratios to full
fine-tuning, not the seconds. Adapter dropout is 0 in every variant (the fused form needs it; the paper
uses 0 for SSv2 ViT-B).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple


class Variant(NamedTuple):
    overrides: dict
    bf16: bool = False
    compile: bool = False


VARIANTS = {
    "full": Variant({"adapter": None, "finetune": "full"}),
    "full_bf16": Variant({"adapter": None, "finetune": "full"}, bf16=True),
    "zeroi2v": Variant({}),
    "zeroi2v_fused": Variant({"fused_adapters": True}),
    "zeroi2v_ckpt": Variant({"grad_checkpointing": True}),
    "zeroi2v_fused_ckpt": Variant({"fused_adapters": True, "grad_checkpointing": True}),
    "zeroi2v_bf16": Variant({}, bf16=True),
    "zeroi2v_fused_bf16": Variant({"fused_adapters": True}, bf16=True),
    "zeroi2v_compile": Variant({}, compile=True),
}
DEFAULT = [v for v in VARIANTS if v != "zeroi2v_compile"]
MARK = "RESULT "


def run_variant(name: str, args) -> dict:
    """Build the variant's model and time it with ``measure_step`` (in this process)."""
    import torch

    from zeroi2v.bench import default_offsets, measure_step, randomize_adapters
    from zeroi2v.model import create_model
    if args.threads:
        torch.set_num_threads(args.threads)
    variant = VARIANTS[name]
    offsets = default_offsets(args.backbone, args.frames) if args.offsets == "auto" else args.offsets
    cfg = {"backbone": args.backbone, "num_classes": 400, "num_frames": args.frames, "finetune": "adapters",
           "temporal": {"kind": "stdha", "offsets": offsets},
           "adapter": {"kind": "linear", "placement": args.placement, "ratio": 0.25, "scale": 0.5, "dropout": 0.0},
           **variant.overrides}
    torch.manual_seed(args.seed)
    model = create_model(**cfg)
    if cfg["adapter"] is not None:
        randomize_adapters(model, args.seed)
    if variant.compile:
        model = torch.compile(model)
    cuda = args.device.startswith("cuda")
    # CUDA: measure_step's own autocast; CPU: measure_step leaves amp to CUDA, so autocast around it
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if variant.bf16 and not cuda else contextlib.nullcontext()
    with ctx:
        r = measure_step(model, args.batch, args.steps, device=args.device, warmup=args.warmup,
                         amp="bf16" if variant.bf16 else "none")
    r["amp"] = "bf16" if variant.bf16 else "fp32"
    if cuda:
        r["peak_reserved_mb"] = round(torch.cuda.max_memory_reserved(torch.device(args.device)) / 2**20, 1)
    return {"variant": name, "torch": torch.__version__, **r}


def measure_all(args) -> list[dict]:
    """Each variant in its own subprocess; a variant that fails gives a row with its error."""
    rows = []
    for name in args.variants:
        cmd = [sys.executable, __file__, "--worker", name, *args.forward]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
            lines = [ln for ln in p.stdout.splitlines() if ln.startswith(MARK)]
            error = None if lines else (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1]
        except subprocess.TimeoutExpired:
            lines, error = [], f"over {args.timeout} s"
        rows.append(json.loads(lines[-1][len(MARK):]) if lines else {"variant": name, "error": error})
        print(f"  {name}: " + (f"{rows[-1]['step_time_s']:.3f} s/step, peak {rows[-1]['peak_mem_mb']:.0f} MiB"
                               if lines else f"failed: {error}"), file=sys.stderr, flush=True)
    return rows


def format_table(rows: list[dict]) -> str:
    """Markdown: step time and peak memory per variant, and each as a ratio to full fine-tuning's."""
    ref = next((r for r in rows if r["variant"] == "full" and "error" not in r), None)
    ok = [r for r in rows if "error" not in r]
    head = ok[0] if ok else {}
    out = [f"Training step, {head.get('backbone', '?')}, {head.get('frames', '?')} frames, "
           f"{head.get('image_size', '?')} px, batch {head.get('batch_size', '?')}, {head.get('device', '?')}, "
           f"{head.get('threads', '?')} threads, median of {head.get('steps', '?')} step(s); "
           f"memory: {head.get('mem_kind', '?')} (includes the weights)", "",
           "| variant | trainable params | step (s) | × full FT | peak mem (MiB) | × full FT | step mem (MiB) |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['variant']} | failed: {r['error']} | | | | | |")
            continue
        rt = f"{r['step_time_s'] / ref['step_time_s']:.2f}" if ref else "–"
        rm = f"{r['peak_mem_mb'] / ref['peak_mem_mb']:.2f}" if ref else "–"
        out.append(f"| {r['variant']} | {r['trainable_params'] / 1e6:.2f} M | {r['step_time_s']:.3f} | {rt} | "
                   f"{r['peak_mem_mb']:.0f} | {rm} | {r['step_mem_mb']:.0f} |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 2)[2])
    ap.add_argument("--backbone", default="zeroi2v-tiny", help="zeroi2v-tiny (default), ViT-B-16, ViT-L-14, ...")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--batch", type=int, default=2, help="clips per step (default 2)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps after the warm-up (default 3)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--offsets", default="auto", help="Δt multiset; auto: the Table 11 K400 preset when there is one")
    ap.add_argument("--placement", default="4")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variants", default=",".join(DEFAULT), help=f"comma separated, from {list(VARIANTS)}")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per variant (default 1800)")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows to this file")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(MARK + json.dumps(run_variant(args.worker, args)), flush=True)
        return 0
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    if args.device.startswith("cuda"):
        import torch
        if not torch.cuda.is_available():
            ap.error(f"--device {args.device}: no CUDA device here; use --device cpu")
    args.forward = [a for a in (argv if argv is not None else sys.argv[1:])]
    args.forward = _without(args.forward, ("--variants", "--json", "--timeout"))
    rows = measure_all(args)
    if args.json:
        tmp = args.json.with_suffix(args.json.suffix + ".tmp")
        tmp.write_text(json.dumps(rows, indent=1))
        tmp.replace(args.json)
    print(format_table(rows))
    return 0 if all("error" not in r for r in rows) else 1


def _without(argv: list[str], options: tuple[str, ...]) -> list[str]:
    """``argv`` less the given options and their values (both ``--opt v`` and ``--opt=v``)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in options:
            skip = True
        elif not a.startswith(tuple(o + "=" for o in options)):
            out.append(a)
    return out


if __name__ == "__main__":
    sys.exit(main())
