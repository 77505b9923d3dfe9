"""Efficiency, measured: parameters, FLOPs and latency of the plain image ViT against ZeroI2V.

FLOPs follow the paper (fvcore convention: one multiply-add = one FLOP), so the totals of
``torch.utils.flop_counter`` (which counts two) are halved. Latencies are medians of interleaved
runs in one process and are reported as ratios to the plain ViT: noisy machines give honest ratios,
not honest absolute numbers.
"""
from __future__ import annotations

import contextlib
import copy
import statistics
import time
from typing import Callable

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode, register_flop_formula, sdpa_flop_count

from zeroi2v.config import Config, ModelConfig
from zeroi2v.model import ZeroI2V
from zeroi2v.tuning import count_trainable

_aten = torch.ops.aten
if hasattr(_aten, "_scaled_dot_product_flash_attention_for_cpu"):
    # torch counts the CUDA SDPA kernels but not the CPU one; same arithmetic, same formula.
    try:
        @register_flop_formula(_aten._scaled_dot_product_flash_attention_for_cpu)
        def _sdpa_cpu_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
            return sdpa_flop_count(query_shape, key_shape, value_shape)
    except RuntimeError:  # already registered (a newer torch, or a re-import)
        pass


class PlainViT(nn.Module):
    """The image model as it would run on video without ZeroI2V: the backbone family's own image forward
    on every frame, mean of pooled features, the same linear head. The reference for zero extra cost."""

    def __init__(self, model: ZeroI2V):
        super().__init__()
        self.family = model.family
        self.visual = model.family.build(model.backbone_cfg)
        plain_keys = self.visual.state_dict().keys()
        state = {k[len("visual."):]: v for k, v in model.state_dict().items() if k.startswith("visual.")}
        self.visual.load_state_dict({k: state[k] for k in plain_keys})
        self.head = copy.deepcopy(model.head)
        self.num_frames = model.num_frames
        self.eval()

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = video.shape
        feats = self.family.image_features(self.visual, video.transpose(1, 2).reshape(b * t, c, h, w)).view(b, t, -1)
        return self.head(feats.mean(dim=1))


def count_params(module: nn.Module, trainable: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)


def backbone_params(model: ZeroI2V) -> int:
    """Parameters of the image backbone alone (no adapters, temporal embedding or head)."""
    return sum(p.numel() for n, p in model.visual.named_parameters() if ".adapters." not in n)


@contextlib.contextmanager
def _visible_attention():
    """Turn off nn.MultiheadAttention's fused fast path, which hides its projections from counters."""
    enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(enabled)


@torch.no_grad()
def count_flops(model: nn.Module, video: torch.Tensor) -> int:
    """Multiply-adds of one forward pass (the paper's 'FLOPs')."""
    with _visible_attention(), FlopCounterMode(display=False) as counter:
        model(video)
    return counter.get_total_flops() // 2


@torch.no_grad()
def measure_latency(models: dict[str, Callable], video: torch.Tensor, repeats: int = 10,
                    warmup: int = 2) -> dict[str, float]:
    """Median seconds per forward of each model, runs interleaved so drift hits all alike."""
    return {name: statistics.median(ts) for name, ts in latency_samples(models, video, repeats, warmup).items()}


@torch.no_grad()
def latency_samples(models: dict[str, Callable], video: torch.Tensor, repeats: int = 10,
                    warmup: int = 2) -> dict[str, list[float]]:
    """Seconds of each timed forward of each model (``warmup`` untimed rounds first), runs interleaved."""
    sync = torch.cuda.synchronize if video.is_cuda else (lambda: None)
    for _ in range(warmup):
        for fn in models.values():
            fn(video)
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(repeats):
        for name, fn in models.items():
            sync()
            start = time.perf_counter()
            fn(video)
            sync()
            times[name].append(time.perf_counter() - start)
    return times


def zero_cost_report(model: ZeroI2V, merged: ZeroI2V, video: torch.Tensor, views: int = 1,
                     repeats: int = 10, latency: bool = True, compile: str | None = None) -> dict:
    """Params, GFLOPs (× views) and latency of plain ViT, unmerged and merged ZeroI2V on one input.
    ``compile``: a ``torch.compile`` mode to time each model through (the counts stay the eager model's)."""
    plain = PlainViT(merged).to(video.device, video.dtype)
    model, merged = model.eval(), merged.eval()
    report = {
        "params": {"plain": backbone_params(merged), "merged": count_params(merged), "unmerged": count_params(model),
                   "temporal_embedding": merged.temporal_embedding.numel() if merged.temporal_embedding is not None else 0,
                   "classifier": count_params(merged.head)},
        "gflops": {name: count_flops(m, video) * views / 1e9 for name, m in
                   (("plain", plain), ("unmerged", model), ("merged", merged))},
    }
    if latency:
        timed = {"plain": plain, "unmerged": model, "merged": merged}
        if compile:
            timed = {k: torch.compile(m, mode=compile) for k, m in timed.items()}
        lat = measure_latency(timed, video, repeats=repeats, warmup=3 if compile else 2)
        report["latency_ms"] = {k: v * 1e3 for k, v in lat.items()}
        report["latency_ratio"] = {k: v / lat["plain"] for k, v in lat.items()}
    return report


# --- The zero-cost benchmark (``zeroi2v bench`` and ``benchmarks/zero_cost.py`` both run this) ---

TOLERANCE = 1.02
"""The promise: merged latency / plain ViT latency <= 1.02."""


def add_benchmark_arguments(ap) -> None:
    """The benchmark's options, shared by the command line verb and the script."""
    from pathlib import Path
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
    ap.add_argument("--compile", nargs="?", const="default", default=None, metavar="MODE",
                    help="time every model through torch.compile, in MODE (default; reduce-overhead: CUDA graphs; "
                         "max-autotune); warm-up rounds include compiling")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="write the numbers to this file")
    ap.add_argument("--check", action="store_true", help=f"exit 1 when merged / plain > {TOLERANCE}")


def default_offsets(backbone: str, frames: int) -> str:
    """The Table 11 K400 preset for ViT-B/L at 8/16/32 frames, else one head each way."""
    from zeroi2v.backbones import family_of
    from zeroi2v.stdha import PRESETS
    family, name = family_of(backbone)
    size = {12: "b", 16: "l"}.get(family.facts(family.arch(name))["heads"])
    preset = f"k400_vit_{size}_{frames}"
    return preset if preset in PRESETS else ("1x1,-1x1" if frames > 1 else "")


def randomize_adapters(model: ZeroI2V, seed: int = 0) -> ZeroI2V:
    """Random adapters and temporal embedding standing in for trained ones (fresh adapters are the
    identity and merge trivially); cost does not depend on the values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".adapters." in name or name == "temporal_embedding":
                std = 0.5 / p.shape[1] ** 0.5 if p.ndim == 2 and ".adapters." in name else 0.02
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model.eval()


def build_randomized(backbone: str, frames: int, offsets: str, placement: str, seed: int = 0,
                     kind: str = "linear") -> ZeroI2V:
    """A 400-class ZeroI2V model with STDHA at ``offsets`` and random ``kind`` adapters (``randomize_adapters``)."""
    from zeroi2v.model import create_model
    torch.manual_seed(seed)
    return randomize_adapters(create_model(backbone=backbone, num_classes=400, num_frames=frames,
                                           temporal={"kind": "stdha", "offsets": offsets},
                                           adapter={"kind": kind, "placement": placement}), seed)


def zero_cost_benchmark(backbone: str = "ViT-B-16", frames: int = 8, batch: int = 1, views: int = 3,
                        repeats: int = 5, offsets: str = "auto", placement: str = "4", device: str = "cpu",
                        dtype: str = "auto", threads: int | None = None, seed: int = 0, compile: str | None = None) -> dict:
    """Plain ViT vs unmerged vs merged ZeroI2V on one input, in one process (see ``zero_cost_report``)."""
    import platform
    from zeroi2v.merge import merge_adapters
    from zeroi2v.stdha import format_offsets
    if threads:
        torch.set_num_threads(threads)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: no CUDA device visible to torch")
    dtype = dtype if dtype != "auto" else ("bf16" if dev.type == "cuda" else "fp32")
    offsets = default_offsets(backbone, frames) if offsets == "auto" else offsets
    started = time.perf_counter()
    model = build_randomized(backbone, frames, offsets, placement, seed)
    merged = merge_adapters(model)
    model, merged = model.to(dev), merged.to(dev)
    size = model.image_size
    video = torch.randn(batch, 3, frames, size, size, device=dev)
    # bf16 through autocast: the plain ViT that zero_cost_report builds is float32, like the models here
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()
    with torch.no_grad(), autocast:
        gap = (model(video).float() - merged(video).float()).abs().max().item()
        report = zero_cost_report(model, merged, video, views=views, repeats=repeats, compile=compile)
    ratio = report["latency_ratio"]["merged"]
    return {
        "setup": {"backbone": backbone, "frames": frames, "image_size": size, "batch": batch, "views": views,
                  "repeats": repeats, "warmup": 3 if compile else 2, "compile": compile, "placement": placement,  # offsets: the distinct multisets, in order
                  "offsets": " / ".join(dict.fromkeys(format_offsets(o) for o in model.offsets)),
                  "device": str(dev), "dtype": dtype, "threads": torch.get_num_threads() if dev.type == "cpu" else None,
                  "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None, "torch": torch.__version__,
                  "python": platform.python_version(), "cpu": platform.processor() or platform.machine()},
        **report,
        "merge_max_abs_logit_diff": gap,
        "verdict": {"merged_over_plain": ratio, "tolerance": TOLERANCE, "pass": ratio <= TOLERANCE},
        "seconds": time.perf_counter() - started,
    }


def format_zero_cost(r: dict) -> str:
    """The benchmark as a table: params, GFLOPs x views, latency and its ratio to the plain ViT."""
    s = r["setup"]
    where = f"{s['device']} ({s['gpu']})" if s["gpu"] else f"{s['device']}, {s['threads']} threads"
    lines = [f"ZeroI2V zero-cost benchmark: {s['backbone']}, {s['frames']} frames x {s['image_size']} px, batch {s['batch']}, "
             f"{s['dtype']}{', torch.compile ' + s['compile'] if s.get('compile') else ''}, {where}",
             f"Δt = {{{s['offsets']}}} {'in every layer' if ' / ' not in s['offsets'] else '(stage by stage)'}, "
             f"adapters: placement {s['placement']}; "
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
              f"verdict: merged / plain latency = {r['verdict']['merged_over_plain']:.3f} "
              f"{'<=' if r['verdict']['pass'] else '>'} {TOLERANCE}  ->  {'PASS' if r['verdict']['pass'] else 'FAIL'}"]
    return "\n".join(lines)


def run_benchmark_cli(args) -> int:
    """Run with parsed ``add_benchmark_arguments`` options: print the table, write JSON, apply --check."""
    import json
    result = zero_cost_benchmark(args.backbone, args.frames, args.batch, args.views, args.repeats, args.offsets,
                                 args.placement, args.device, args.dtype, args.threads, args.seed, args.compile)
    print(format_zero_cost(result))
    print(f"({result['seconds']:.0f} s)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    return 1 if args.check and not result["verdict"]["pass"] else 0


# --- cost of one training step (paper Table 1: training time and memory of ZeroI2V vs full fine-tuning) ---

def _rss_mb(field: str) -> float | None:
    """A memory field of /proc/self/status (VmRSS, VmHWM) in MiB; None where there is no /proc."""
    from pathlib import Path
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset this process's peak resident set size; False where /proc does not allow it."""
    from pathlib import Path
    try:  # Linux: writing 5 resets the peak resident set size (VmHWM) of this process
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _memory_baseline(device: torch.device) -> tuple[float, bool]:
    """(MiB in use before the steps, whether the peak that follows is the steps' own): CUDA's allocated
    memory after resetting its peak, or the resident set size after resetting VmHWM where /proc allows."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device) / 2**20, True
    peak_exact = _reset_peak_rss()
    return _rss_mb("VmRSS") or 0.0, peak_exact


def _memory_peak(device: torch.device, peak_exact: bool) -> tuple[float, str]:
    """(peak MiB since ``_memory_baseline``, what was measured)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    import resource  # Unix only; psutil-free
    peak = _rss_mb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return peak, "cpu_peak_rss" if peak_exact else "cpu_peak_rss_process_lifetime"


def measure_step(cfg_or_model: "Config | ModelConfig | dict | nn.Module", batch_size: int = 8, steps: int = 3,
                 finetune: str | None = None, device: str | torch.device | None = None, amp: str = "none",
                 warmup: int = 1, image_size: int | None = None) -> dict:
    """Time ``steps`` training steps (forward, backward, AdamW) on random clips and report peak memory.

    Args:
        cfg_or_model: a model, or a (model) config to build one from (random weights unless configured).
        batch_size: clips per step. steps: timed steps (after ``warmup`` untimed ones).
        finetune: set the trainable parameters first ('adapters' = ZeroI2V, 'full', 'linear_probe',
            'temporal_heads'; a masked tensor counts by its trainable entries).
            For the paper's full fine-tuning baseline build the model with ``adapter=None`` (see
            ``compare_finetuning``).
        device: default CUDA when available. amp: 'bf16' | 'fp16' autocast on CUDA, else fp32.
        image_size: input side (default: the backbone's).

    Memory: on CUDA the peak of ``torch.cuda.max_memory_allocated`` over the steps; on CPU the process's
    peak resident set size (VmHWM, reset first when /proc allows). ``step_mem_mb`` is the peak minus what
    was resident before the first step (activations, gradients, optimiser state).
    """
    import numpy as np

    from zeroi2v.config import Config
    from zeroi2v.model import create_model
    if isinstance(cfg_or_model, nn.Module):
        model = cfg_or_model
    else:
        mc = cfg_or_model.model if isinstance(cfg_or_model, Config) else cfg_or_model
        model = create_model(mc)
    if finetune is not None:
        model.set_finetune(finetune)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(device).train()
    frames = getattr(model, "num_frames", 8)
    size = image_size or getattr(model, "image_size", 224)
    num_classes = model.head.out_features if hasattr(model, "head") else 10
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    g = torch.Generator().manual_seed(0)
    video = torch.randn(batch_size, 3, frames, size, size, generator=g).to(device)
    label = torch.randint(0, num_classes, (batch_size,), generator=g).to(device)
    cuda = device.type == "cuda"
    ctx = (lambda: torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)) \
        if cuda and amp in ("bf16", "fp16") else contextlib.nullcontext
    scaler = torch.amp.GradScaler(device.type, enabled=cuda and amp == "fp16")

    def one_step() -> None:
        with ctx():
            loss = nn.functional.cross_entropy(model(video).float(), label)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    baseline, peak_exact = _memory_baseline(device)
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        one_step()
        if cuda:
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    peak, kind = _memory_peak(device, peak_exact)
    step_time = float(np.median(times)) if times else float("nan")
    mode = finetune or getattr(getattr(model, "cfg", None), "finetune", "?")
    return {
        "mode": mode, "adapters": bool(getattr(getattr(model, "cfg", None), "adapter", None)),
        "backbone": getattr(getattr(model, "cfg", None), "backbone", type(model).__name__),
        "device": str(device), "amp": amp if cuda else "none", "batch_size": batch_size, "frames": frames,
        "image_size": size, "steps": steps, "step_time_s": step_time, "clips_per_s": batch_size / step_time,
        "trainable_params": count_trainable(model), "total_params": sum(p.numel() for p in model.parameters()),
        "peak_mem_mb": round(peak, 1), "baseline_mem_mb": round(baseline, 1), "step_mem_mb": round(peak - baseline, 1),
        "mem_kind": kind, "threads": torch.get_num_threads(),
    }


def compare_finetuning(model_cfg: "ModelConfig | dict", batch_size: int = 8, steps: int = 3, **kwargs) -> dict[str, dict]:
    """``measure_step`` for ZeroI2V (the config as given: adapters, frozen backbone) and for full
    fine-tuning of the same ViT + STDHA without adapters (every parameter trains), as the paper compares."""
    from zeroi2v.config import ModelConfig
    from zeroi2v.model import create_model
    mc = model_cfg if isinstance(model_cfg, ModelConfig) else ModelConfig.from_dict(dict(model_cfg))
    out = {}
    for name, overrides in (("zeroi2v", {"finetune": "adapters"}), ("full_finetune", {"adapter": None, "finetune": "full"})):
        model = create_model(mc, **overrides)
        out[name] = measure_step(model, batch_size, steps, **kwargs)
        del model
    return out
