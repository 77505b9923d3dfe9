# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 08 · Efficiency and deployment: what "zero extra cost" costs on your machine
#
# ZeroI2V's promise is a video model that runs exactly like the image ViT it came from. STDHA moves no
# weights and adds no arithmetic (paper Sec. 3.2). The linear adapters fold into the ViT's own weights after
# training (Sec. 3.3). The paper measures the result on a V100 (Table 9; Figure 1, right). This notebook
# measures it here, side by side with the alternatives:
#
# 1. `zeroi2v bench --suite` (`zeroi2v/bench_suite.py`), through its Python API: the plain ViT, ZeroI2V merged
#    and unmerged, and the adapters that cannot merge (GELU adapter, ST-Adapter). For each it gives params, new
#    inference params, GFLOPs, latency, throughput and a training step;
# 2. its bubble plot, a latency table and the costs side by side;
# 3. a merged checkpoint exported to ONNX and run with onnxruntime, checked against PyTorch and timed
#    against the plain ViT's own export (it needs the export extra: `pip install -e ".[export]"`).
#
# Everything runs on the quickstart's tiny ViT (32 px, 8 frames). With `SMALL` (env `ZEROI2V_NB_SMALL=1`,
# what the tests run) it takes some twenty seconds: few repeats, small batches. Without it, about a minute:
# more repeats, batches up to 32, training at batch 4.
# Weights are random: cost does not depend on their values. **Absolute times are this machine's, and at
# this size fixed overheads weigh a lot.** Ratios measured in one process are what to read. The last
# section gives the commands for ViT-B/16 and for a GPU.

# %%
import argparse
import json
import os
import tempfile
from pathlib import Path

SMALL = os.environ.get("ZEROI2V_NB_SMALL", "0") == "1"

import matplotlib.pyplot as plt
import torch
from IPython.display import Image, Markdown, display

torch.set_num_threads(1)  # one thread: steadier timings on a shared machine; ratios are what counts
WORK = Path(tempfile.mkdtemp(prefix="zeroi2v-nb08-"))
BACKBONE, FRAMES = "zeroi2v-tiny", 8  # the quickstart's ViT; both sizes use it, SMALL measures less


def show(fig):
    display(fig)
    plt.close(fig)


print("SMALL =", SMALL, "| torch", torch.__version__, "| backbone", BACKBONE, FRAMES, "frames | work dir", WORK)

# %% [markdown]
# ## The suite, through its Python API
#
# The suite takes the same options as the command line. `add_benchmark_arguments` and `add_suite_arguments`
# declare them, so the notebook parses a list of flags and calls `run_suite`. That is what
# `zeroi2v bench --suite` does, minus the printing. Every model runs on the same seeded clip, in one
# process. Latency is the median of interleaved forwards after a warm-up, with min and max. Throughput is
# measured at the largest batch that fits within the cap and the time budget. Training is one step's time
# and peak memory. GFLOPs count multiply-adds over 3 views, the paper's convention.

# %%
from zeroi2v.bench import add_benchmark_arguments
from zeroi2v.bench_suite import add_suite_arguments, format_suite, plot_bubbles, run_suite

parser = argparse.ArgumentParser()
add_benchmark_arguments(parser)
add_suite_arguments(parser)
if SMALL:
    size = ["--repeats", "10", "--max-batch", "4", "--throughput-seconds", "1", "--train-batch", "1", "--train-steps", "1"]
else:
    size = ["--repeats", "20", "--max-batch", "32", "--throughput-seconds", "10", "--train-batch", "4",
            "--train-steps", "3"]
args = parser.parse_args(["--suite", "--backbone", BACKBONE, "--frames", str(FRAMES), "--views", "3",
                          "--threads", "1", "--out", str(WORK / "bench"), *size])
report = run_suite(args)
(WORK / "bench").mkdir(exist_ok=True)
(WORK / "bench" / "bench.json").write_text(json.dumps(report, indent=2))
display(Markdown(format_suite(report)))
print(f"measured in {report['seconds']:.0f} s")

# %% [markdown]
# ## The bubble plot (paper Figure 1, right)
#
# `plot_bubbles` draws the suite's figure: GFLOPs on x, bubble area ∝ parameters. Given a results file
# (`--results top1.json`: `{"zeroi2v_merged": 67.7, ...}`), y is top-1. Without one, as here, y is latency.
# The merged model sits on the plain ViT: same GFLOPs, same size. Everything that keeps its adapters sits to
# the right, and higher up.

# %%
bubble = plot_bubbles(report, WORK / "bench" / "bubble.png")
display(Image(filename=str(bubble)))

# %% [markdown]
# ## Latency: the zero-extra-cost point (paper Table 9)
#
# Merged ZeroI2V is the plain image ViT with the adapters folded into its weights and STDHA reading K/V from
# other frames, so it runs the same matrix products and its latency should match the ViT's (the target:
# merged / plain ≤ 1.02). The unmerged model, the GELU adapter and ST-Adapter pay for their adapters on every
# clip, for as long as they are deployed. The paper's Table 9 (V100, mixed precision, ViT-B/16, 8×3 views)
# has the plain ViT at 28.72 ms and ZeroI2V at 28.89 ms (ratio 1.006), both at 40.08 videos/s.

# %%
models = report["models"]
plain = models["plain"]
rows = ["| model | merges | latency ms [min, max] | latency / plain | GFLOPs / plain | clips/s (batch) |",
        "|---|---|---:|---:|---:|---:|"]
for m in models.values():
    rows.append(f"| {m['label']} | {'yes' if m['mergeable'] else 'no'} | {m['latency_ms']:.2f} "
                f"[{m['latency_min_ms']:.2f}, {m['latency_max_ms']:.2f}] | **{m['latency_ratio']:.3f}** | "
                f"{m['gflops'] / plain['gflops']:.3f} | {m['throughput_clips_per_s']:.1f} ({m['throughput_batch']}) |")
rows.append("| *paper, Table 9: ZeroI2V / ViT-B/16* | yes | 28.89 / 28.72 | 1.006 | 1.000 | 40.08 / 40.08 |")
display(Markdown("\n".join(rows)))
verdict = report["verdict"]
print(f"merged / plain = {verdict['merged_over_plain']:.3f} (target <= {verdict['tolerance']}): "
      f"{'PASS' if verdict['pass'] else 'FAIL on this run: see the note below'}")

fig, ax = plt.subplots(figsize=(7, 2.8))
names = [m["label"] for m in models.values()]
ratios = [m["latency_ratio"] for m in models.values()]
spread = [[m["latency_ratio"] * (1 - m["latency_min_ms"] / m["latency_ms"]) for m in models.values()],
          [m["latency_ratio"] * (m["latency_max_ms"] / m["latency_ms"] - 1) for m in models.values()]]
bars = ax.barh(names, ratios, xerr=spread, capsize=3,
               color=["C0" if m["mergeable"] else "C1" for m in models.values()])
ax.bar_label(bars, fmt="%.2f", label_type="center", color="w", fontsize=8)
ax.axvline(verdict["tolerance"], color="k", ls="--", lw=0.8)
ax.invert_yaxis()
ax.set_xlabel("latency / plain ViT (median; whiskers: min and max)")
ax.set_title(f"orange: cannot merge; dashed: the target {verdict['tolerance']}", fontsize=9)
fig.tight_layout()
show(fig)

# %% [markdown]
# At this size a forward takes a few milliseconds. Python and dispatch overheads then make up much of it,
# and a busy machine moves medians by tens of percent. A `FAIL` there is worth a rerun at the tiny or
# ViT-B/16 size before it is worth a bug report. The unmerged and non-mergeable rows stay slower: their
# extra FLOPs are real.
#
# ## Params, new params and GFLOPs, side by side (paper Table 3)
#
# **Params** is everything the deployed model holds. **New params** is what it holds beyond the plain image
# ViT and its classifier: for merged ZeroI2V, only the temporal embedding. **GFLOPs** are multiply-adds × 3
# views. The linear adapters cost parameters and FLOPs only until they are merged. The GELU adapter and
# ST-Adapter have a nonlinearity or a depthwise 3-D convolution in the middle, so they can never be folded
# away.

# %%
metrics = [("params", 1e6, "params (M)"), ("new_inference_params", 1e3, "new inference params (k)"),
           ("gflops", 1.0, "GFLOPs × 3 views")]
display(Markdown("\n".join(
    ["| model | params (M) | new params | GFLOPs | trainable params (training row) |", "|---|---:|---:|---:|---:|"]
    + [f"| {m['label']} | {m['params'] / 1e6:.3f} | {m['new_inference_params']:,d} | {m['gflops']:.4g} | "
       f"{m['trainable_params']:,d} ({m['train_mode']}) |" for m in models.values()])))
fig, axes = plt.subplots(1, 3, figsize=(12, 2.8), sharey=True)
for ax, (key, scale, label) in zip(axes, metrics):
    bars = ax.barh(names, [m[key] / scale for m in models.values()],
                   color=["C0" if m["mergeable"] else "C1" for m in models.values()])
    ax.bar_label(bars, fmt="%.3g", fontsize=8, padding=2)
    ax.margins(x=0.25)
    ax.set_xlabel(label)
    ax.grid(axis="x", alpha=0.3)
axes[0].invert_yaxis()
fig.tight_layout()
show(fig)

# %% [markdown]
# ## Export a merged model to ONNX and run it with onnxruntime
#
# The merged checkpoint is what you deploy. Here it is made in the notebook, as in notebook 02: a ZeroI2V
# model with random adapters standing in for trained ones (`build_randomized`), folded by `merge_adapters`,
# written by `save_merged`. `zeroi2v export DIR --onnx OUT.onnx` does the next step. Its Python side is
# `load_for_export` and `export_onnx`. STDHA exports as a plain `Gather` on K and V before the attention's
# `MatMul`/`Softmax`, with no custom operator, and the batch axis is dynamic. `OnnxClassifier` runs the file
# with onnxruntime. It takes frames, image size, pixel statistics and class names from the file's metadata,
# and uses no torch model code.

# %%
from zeroi2v.bench import build_randomized, default_offsets
from zeroi2v.export import example_clip, export_onnx, load_for_export, max_abs_diff
from zeroi2v.merge import merge_adapters, save_merged
from zeroi2v.onnx_model import OnnxClassifier

trained = build_randomized(BACKBONE, FRAMES, default_offsets(BACKBONE, FRAMES), "4", seed=0)
folder = save_merged(merge_adapters(trained), WORK / "merged")
model = load_for_export(folder)
onnx_path = export_onnx(model, WORK / "merged.onnx", source="notebook 08")
runtime = OnnxClassifier(onnx_path, threads=1)
print(f"{onnx_path.name}: {onnx_path.stat().st_size / 1e6:.2f} MB, {runtime.num_frames} frames x "
      f"{runtime.image_size} px, {runtime.num_classes} classes")

clip = example_clip(model, batch=1, seed=3)  # one normalised clip (1, 3, frames, size, size)
with torch.no_grad():
    torch_logits = model(clip)
onnx_logits = runtime(clip)
print("top-5 classes, PyTorch:    ", torch_logits.topk(5).indices[0].tolist())
print("top-5 classes, onnxruntime:", onnx_logits.topk(5).indices[0].tolist())
print(f"max |logit difference| on this clip: {(torch_logits - onnx_logits).abs().max().item():.2g}")
print(f"on seeded clips of batch 1 and 3 (the dynamic batch): {max_abs_diff(model, runtime):.2g}")

# %% [markdown]
# ### The merged export against the plain ViT's export
#
# `onnx_latency` (shared with `benchmarks/onnx_latency.py`) exports three graphs and times them on
# onnxruntime, interleaved, in one process. **plain** is the image ViT run frame by frame, through its own
# forward. **spatial** is the merged graph with every Δt = 0 and no temporal embedding: the plain ViT through
# ZeroI2V's block code. **merged** is the deployed model. merged / plain is the cost a deployer sees.
# merged / spatial isolates STDHA's `Gather`.

# %%
from zeroi2v.export import onnx_latency

onnx = onnx_latency(model, batch=1, repeats=10 if SMALL else 30, threads=1)
display(Markdown("\n".join(
    ["| export | onnxruntime latency ms | max abs logit diff vs PyTorch |", "|---|---:|---:|"]
    + [f"| {name} | {ms:.3f} | {onnx['max_abs_logit_diff_vs_pytorch'][name]:.2g} |"
       for name, ms in onnx["latency_ms"].items()])))
print(f"onnxruntime latency: merged / plain = {onnx['merged_over_plain']:.3f}, "
      f"merged / spatial = {onnx['merged_over_spatial']:.3f} (onnxruntime {onnx['setup']['onnxruntime']})")

# %% [markdown]
# The same file classifies video files with no PyTorch model involved:
# `zeroi2v predict --onnx merged.onnx clip1.mp4 clip2.mp4`.
#
# ## At ViT-B/16, and on a GPU
#
# The paper's setting is ViT-B/16 with 8 frames × 3 views. On a CPU, give the suite your cores and a
# smaller search. On a GPU, `--device cuda` runs the same models under bf16 autocast with fused attention,
# as the paper's Table 9 does with mixed precision. `--train-batch 8` is Table 10's batch.
#
# ```bash
# zeroi2v bench --suite --backbone ViT-B-16 --frames 8 --views 3 --repeats 5 --threads 2 \
#     --max-batch 8 --throughput-seconds 30 --train-batch 2 --out runs/bench_b16_cpu
# zeroi2v bench --suite --backbone ViT-B-16 --frames 8 --views 3 --device cuda --repeats 50 \
#     --max-batch 256 --train-batch 8 --train-steps 5 --out runs/bench_b16_gpu
# zeroi2v bench --suite --backbone ViT-L-14 --frames 8 --device cuda --out runs/bench_l14_gpu
# zeroi2v bench --checkpoint runs/quickstart/merged --results top1.json --out runs/bench_quickstart
# zeroi2v export runs/quickstart/merged --onnx model.onnx --torch-export model.pt2
# python benchmarks/onnx_latency.py --backbone ViT-B-16 --repeats 5
# ```
#
# Each suite run writes `bench.json`, `bench.md` and `bubble.png` to its `--out`. `--check` exits 1 when
# merged / plain exceeds 1.02, for a CI job on your own hardware.
#
# ## Training cost and compiled inference
#
# `benchmarks/train_cost.py` times a training step and its peak memory for ZeroI2V against full fine-tuning
# at the same batch, each variant in its own process: the plain adapters, `model.fused_adapters: true`
# (each linear adapter applied through its frozen projection's merged weight, with a backward that computes
# only the adapter gradients), gradient checkpointing and bf16. `zeroi2v bench --compile [MODE]` times the
# plain ViT and both ZeroI2V models through `torch.compile` (`reduce-overhead`: CUDA graphs).
#
# ```bash
# python benchmarks/train_cost.py --backbone ViT-B-16 --frames 8 --batch 1 --steps 2 \
#     --variants full,zeroi2v,zeroi2v_fused,zeroi2v_ckpt
# python benchmarks/train_cost.py --device cuda --backbone ViT-B-16 --batch 8   # paper Table 10's setting
# zeroi2v bench --backbone ViT-B-16 --device cuda --compile reduce-overhead --repeats 100
# ```
