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
# # 04 · Train ZeroI2V on the synthetic set
#
# The whole recipe on data made on the spot: a small synthetic video set, an image ViT, ZeroI2V
# (STDHA + linear adapters on a frozen image model) trained next to the same model **without** STDHA
# (every $\Delta t = 0$), multi-view testing, the exact merge and a merged checkpoint. The pieces are
# the ones `zeroi2v.quickstart` uses: `VideoDataset` with `UniformSampler` and
# `TrainTransform`/`TestTransform`, a `Config` built in code, and `zeroi2v.train.train`.
#
# With `SMALL` (env `ZEROI2V_NB_SMALL=1`, what the tests run) everything shrinks to about a minute on
# two CPU cores: a few videos per class, a micro ViT, four epochs. **Accuracies at that size are
# noise**; only the code path is shown. For real numbers run `make quickstart`
# (`runs/quickstart/report.json`), or this notebook without `SMALL` (some ten minutes on two cores),
# which reuses the quickstart's image model when it finds one.

# %%
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

# SMALL: a few videos, a micro ViT, four epochs (tests, CI, 2 CPU cores). Run with ZEROI2V_NB_SMALL=1.
SMALL = os.environ.get("ZEROI2V_NB_SMALL", "0") == "1"

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import display

torch.set_num_threads(1)  # tiny matrices: one thread is faster than two fighting over shared cores
torch.manual_seed(0)
WORK = Path(tempfile.mkdtemp(prefix="zeroi2v-nb04-"))  # videos, run folders, merged checkpoint


def show(fig):
    """Show a figure once (inline in Jupyter; a no-op picture under a headless Agg backend)."""
    display(fig)
    plt.close(fig)


print("SMALL =", SMALL, "| torch", torch.__version__, "| threads", torch.get_num_threads(), "| work dir", WORK)

# %% [markdown]
# ## A small synthetic video set
#
# Six classes of the two kinds in `zeroi2v.data.synthetic`. *Order* classes (`move_left`,
# `move_right`) are each other played backwards: the same bag of frames, so frame averaging alone
# cannot separate them, but a temporal embedding can. *Relation* classes (`still`, `slow`, `fast`,
# `jitter`: an object that stays, drifts, races or jumps about) look the same frame by frame; only how
# neighbouring frames relate tells them apart, which is what STDHA's shifted heads read. The set is written as real MP4s
# with `train.txt`/`test.txt` lists, `classes.txt` and `kinds.json`.

# %%
from zeroi2v.data import make_synthetic_videos, open_video

CLASSES = ["move_left", "move_right", "still", "slow", "fast", "jitter"]
PER_CLASS = {"train": 6, "test": 2} if SMALL else {"train": 60, "test": 20}
VIDEO_FRAMES, SIZE, FRAMES = 16, 32, 8  # frames per video, pixels, frames the model reads

video_dir = WORK / "videos"
info = make_synthetic_videos(video_dir, seed=0, classes=CLASSES, videos_per_class=PER_CLASS,
                             num_frames=VIDEO_FRAMES, size=SIZE)
kinds = json.loads((video_dir / "kinds.json").read_text())
print(f"{sum(PER_CLASS.values()) * len(CLASSES)} videos in {info['seconds']} s: {PER_CLASS} per class, "
      f"{VIDEO_FRAMES} frames of {SIZE} px")
print("kinds.json:", kinds)

# one test clip per class, every other frame
test_lines = [line.rsplit(" ", 1) for line in (video_dir / "test.txt").read_text().splitlines()]
first = {int(label): path for path, label in reversed(test_lines)}
fig, axes = plt.subplots(len(CLASSES), VIDEO_FRAMES // 2, figsize=(VIDEO_FRAMES // 2 * 0.9, len(CLASSES) * 0.95),
                         squeeze=False)
for label, name in enumerate(CLASSES):
    frames = open_video(video_dir / first[label]).get_all().permute(0, 2, 3, 1)  # (T, H, W, 3) uint8
    for j, ax in enumerate(axes[label]):
        ax.imshow(frames[2 * j].numpy(), interpolation="nearest")
        ax.set_xticks([]); ax.set_yticks([])
        if label == 0:
            ax.set_title(f"t={2 * j}", fontsize=8)
    axes[label, 0].set_ylabel(f"{name}\n({kinds[name]})", rotation=0, ha="right", va="center", fontsize=8)
fig.suptitle("one test clip per class", fontsize=10)
show(fig)

# %% [markdown]
# ## An image backbone
#
# ZeroI2V starts from a pre-trained image transformer (CLIP in the paper). No CLIP weights can be
# downloaded offline, so, as the quickstart does, a small open_clip ViT pre-trained on synthetic
# *stills* (what and where: shape, colour, position, size, orientation) **stands in for CLIP**.
# When `make quickstart` has run, its image model (`runs/quickstart/image_model`) is reused;
# otherwise one is pre-trained here with `pretrain_image_model` (a few seconds with `SMALL`, and
# then barely trained). Either way it is saved in open_clip's directory layout and loaded through
# `local-dir:`, the path a downloaded CLIP takes too.

# %%
from zeroi2v.data import make_synthetic_images
from zeroi2v.pretrain import pretrain_image_model

candidates = [Path.cwd() / "runs" / "quickstart" / "image_model", Path.cwd().parent / "runs" / "quickstart" / "image_model"]
found = [d for d in candidates if (d / "open_clip_config.json").is_file()]
if found:
    image_dir = found[0].resolve()
    print(f"reusing the quickstart's image model: {image_dir}")
    if (image_dir / "pretrain.json").is_file():
        print("its validation accuracy on stills:", json.loads((image_dir / "pretrain.json").read_text())["val_accuracy"])
else:
    t0 = time.perf_counter()
    stills = make_synthetic_images(WORK / "stills", seed=0, n=1000 if SMALL else 6000, size=SIZE)
    data = np.load(stills["path"])
    summary = pretrain_image_model(data["images"], {h: data[h] for h in data["heads"]}, WORK / "image_model",
                                   backbone="zeroi2v-micro" if SMALL else "zeroi2v-tiny",
                                   epochs=2 if SMALL else 8, seed=0)
    image_dir = WORK / "image_model"
    print(f"pre-trained {summary['backbone']} on {summary['images']} stills in {time.perf_counter() - t0:.0f} s")
backbone = f"local-dir:{image_dir}"
print("backbone =", backbone)
print("open_clip vision_cfg:", json.loads((image_dir / "open_clip_config.json").read_text())["model_cfg"]["vision_cfg"])

# %% [markdown]
# ## Two runs: ZeroI2V and a no-STDHA baseline
#
# The data sets are what the quickstart builds: TSN-uniform sampling of 8 of the 16 frames (a
# random frame per segment when training, the middle one when testing), a random resized crop and a
# horizontal flip that also swaps `move_left` ↔ `move_right` (`flip_label_map`), and for testing
# two temporal clips per video (multi-view). Decoded videos are cached in memory.
#
# The config is plain dataclasses. ZeroI2V uses $\Delta t = \{1 \cdot 2, -1 \cdot 2\}$: four of the
# eight heads of every layer look one frame ahead or back (the rest stay spatial; the quickstart's
# choice for this tiny, mostly temporal task, see `QuickstartSettings.offsets`) plus linear adapters
# (placement 4), a temporal embedding and the head; the frozen image weights never change. In the
# model config: `temporal={"kind": "stdha", "offsets": "1x2,-1x2", ...}` and
# `adapter={"kind": "linear", "placement": "4", ...}`. The baseline is the same model with
# `"offsets": None` (every $\Delta t = 0$) and the same budget. `train` writes each run folder
# (`config.yaml`, `log.csv`, `checkpoint.pt`, `results/`) and tests on `test_set` after the last epoch.

# %%
from zeroi2v.config import Config, DataConfig, OptimConfig, TestConfig, TrainConfig
from zeroi2v.data import (TestTransform, TrainTransform, UniformSampler, VideoDataset, flip_label_map,
                          read_annotation)
from zeroi2v.model import ModelConfig
from zeroi2v.train import train

TEST_CLIPS = 2
EPOCHS, BATCH = (4, 8) if SMALL else (25, 24)

train_set = VideoDataset(read_annotation("mmaction", video_dir / "train.txt"), video_dir, classes=CLASSES,
                         sampler=UniformSampler(FRAMES), train=True, seed=0, cache_decoded=True,
                         transform=TrainTransform(size=SIZE, short_side=None, randaugment=None, flip=0.5,
                                                  flip_label_map=flip_label_map(CLASSES), crop_scale=(0.7, 1.0)))
test_set = VideoDataset(read_annotation("mmaction", video_dir / "test.txt"), video_dir, classes=CLASSES,
                        sampler=UniformSampler(FRAMES, num_clips=TEST_CLIPS), train=False, seed=0,
                        cache_decoded=True, transform=TestTransform(size=SIZE, short_side=SIZE, crops=1))
print(f"train: {len(train_set)} clips {tuple(train_set[0]['video'].shape)}; "
      f"test: {len(test_set)} videos x {TEST_CLIPS} views {tuple(test_set[0]['video'].shape)}")


def make_config(name, offsets):
    model = ModelConfig(backbone=backbone, num_classes=len(CLASSES), num_frames=FRAMES, class_names=CLASSES,
                        temporal={"kind": "stdha", "offsets": offsets, "boundary": "self"},
                        adapter={"kind": "linear", "placement": "4", "ratio": 0.25, "scale": 1.0, "dropout": 0.0},
                        head_dropout=0.5, finetune="adapters")
    return Config(model=model, data=DataConfig(workers=0, size=SIZE),
                  optim=OptimConfig(lr=1e-3, epochs=EPOCHS, warmup_epochs=1, label_smoothing=0.1),
                  train=TrainConfig(batch_size=BATCH, total_batch=BATCH, device="cpu", seed=0, eval_every=0,
                                    save_every=EPOCHS, log_every=1, progress=False, out_dir=str(WORK / "runs" / name)),
                  test=TestConfig(clips=TEST_CLIPS, crops=1, batch_size=8))


RUNS = {"zeroi2v": "1x2,-1x2", "no_stdha": None}
runs = {}
for name, offsets in RUNS.items():
    cfg = make_config(name, offsets)
    print(f"--- {name}: offsets={offsets!r}, {EPOCHS} epochs, batch {BATCH}")
    t0 = time.perf_counter()
    runs[name] = train(cfg, train_set=train_set, val_set=None, test_set=test_set)
    print(f"--- {name}: {time.perf_counter() - t0:.1f} s, {runs[name]['global_step']} steps, "
          f"test top-1 {runs[name]['test']['top1']:.3f}")

print("\nrun folder:", sorted(p.name for p in Path(runs["zeroi2v"]["out_dir"]).iterdir()))
print("offsets per layer, ZeroI2V:", runs["zeroi2v"]["model"].offsets[0], "| baseline:", runs["no_stdha"]["model"].offsets[0])

# %% [markdown]
# ## Training curves and test accuracy by kind
#
# Every optimiser step is a row of `log.csv` (`kind=train`; `kind=epoch` rows sum up each epoch). The
# learning rate warms up linearly for one epoch, then follows a cosine to 0. Test top-1 is split by
# kind of class from the confusion matrix (rows = true class) and `kinds.json`: STDHA's gain, when
# there is one, is on the *relation* classes.

# %%
import csv


def read_log(run):
    with open(Path(run["out_dir"]) / "log.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["kind"] == "train"]
    return ([int(r["step"]) for r in rows], [float(r["loss"]) for r in rows], [float(r["lr"]) for r in rows])


def top1_by_kind(confusion):
    """Overall and per-kind top-1 (a fraction, as everywhere in zeroi2v) from a confusion matrix, rows = true class."""
    cm = torch.as_tensor(confusion, dtype=torch.float64)
    out = {"overall": (cm.diagonal().sum() / cm.sum()).item()}
    for kind in sorted(set(kinds.values())):
        rows = [i for i, c in enumerate(CLASSES) if kinds[c] == kind]
        out[kind] = (cm[rows, rows].sum() / cm[rows].sum()).item()
    return out


COLORS = {"zeroi2v": "tab:green", "no_stdha": "tab:gray"}
by_kind = {name: top1_by_kind(run["test"]["confusion"]) for name, run in runs.items()}
fig, axes = plt.subplots(1, 3, figsize=(13, 3.4), constrained_layout=True)
for name, run in runs.items():
    steps, loss, lr = read_log(run)
    axes[0].plot(steps, loss, "o-", ms=3, label=name, color=COLORS[name])
    axes[1].plot(steps, lr, "o-", ms=3, label=name, color=COLORS[name])
axes[0].set(xlabel="optimiser step", ylabel="training loss", title="loss (label smoothing 0.1)")
axes[1].set(xlabel="optimiser step", ylabel="learning rate", title="warm-up, then cosine")
groups = list(next(iter(by_kind.values())))
width = 0.8 / len(runs)
for i, name in enumerate(runs):
    bars = axes[2].bar(np.arange(len(groups)) + i * width, [by_kind[name][g] for g in groups], width,
                       label=name, color=COLORS[name])
    axes[2].bar_label(bars, fmt="%.2f", fontsize=8)
axes[2].axhline(1 / len(CLASSES), ls="--", c="k", lw=0.8, label="chance")
axes[2].set_xticks(np.arange(len(groups)) + width * (len(runs) - 1) / 2, groups)
axes[2].set(ylabel="test top-1 (fraction)", ylim=(0, 1.1), title=f"test, {len(test_set)} videos x {TEST_CLIPS} views")
for ax in axes:
    ax.legend(frameon=False, fontsize=8)
show(fig)
for name, acc in by_kind.items():
    print(f"{name:9}", "  ".join(f"{k} {v:.3f}" for k, v in acc.items()))
if SMALL:
    print("(SMALL: a few videos and four epochs; these numbers mean nothing, see `make quickstart`)")

# %% [markdown]
# ## Multi-view testing
#
# `evaluate` runs every view of a test video (here 2 temporal clips × 1 centre crop), averages the
# views' softmax probabilities and scores the average. It takes any model mapping `(B, C, T, H, W)`
# to logits, so the merged model below is tested the same way. It returns the metrics, the
# confusion matrix and the per-video probabilities; `save_results` / `plot_confusion` write the
# JSON and the PNG that `train` left in each run's `results/`.

# %%
from zeroi2v.evaluate import evaluate

evals = {name: evaluate(run["model"], test_set, batch_size=8) for name, run in runs.items()}
for name, res in evals.items():
    print(f"{name:9} top-1 {res['top1']:.3f}  top-{res['top5_k']} {res['top5']:.3f}  "
          f"mean class {res['mean_class_accuracy']:.3f}  on {res['num_samples']} videos; probs {tuple(res['probs'].shape)}")
    assert abs(res["top1"] - runs[name]["test"]["top1"]) < 1e-4  # the same test train() ran
print("written by train():", [p.name for p in (Path(runs["zeroi2v"]["out_dir"]) / "results").iterdir()])

fig, axes = plt.subplots(1, len(evals), figsize=(5.2 * len(evals), 4.4), constrained_layout=True)
for ax, (name, res) in zip(axes, evals.items()):
    cm = res["confusion"].double()
    norm = cm / cm.sum(1, keepdim=True).clamp(min=1)
    ax.imshow(norm.numpy(), cmap="Blues", vmin=0, vmax=1)
    for i in range(len(CLASSES)):
        for j in range(len(CLASSES)):
            if cm[i, j]:
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(CLASSES)), CLASSES, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(CLASSES)), [f"{c} ({kinds[c][0]})" for c in CLASSES], fontsize=8)
    ax.set(xlabel="predicted", ylabel="true (o = order, r = relation)", title=f"{name}: top-1 {res['top1']:.3f}")
show(fig)

# %% [markdown]
# ## Merge and check
#
# `merge_adapters` folds every linear adapter into the projection next to it (paper Eq. 11) and
# returns a copy: the plain image ViT + STDHA (no parameters) + temporal embedding + head. On every
# view of every test video the merged and unmerged logits must agree to float32 rounding (the fold is
# done in float64), and so must the predictions. `save_merged` writes `model.safetensors` and
# `config.json`; `load_merged` rebuilds the model from that folder alone.

# %%
from zeroi2v.bench import backbone_params, count_params
from zeroi2v.merge import load_merged, merge_adapters, save_merged

model = runs["zeroi2v"]["model"].eval()
merged = merge_adapters(model)
max_diff, agree, disagree_margins = 0.0, 0, []
with torch.no_grad():
    for i in range(len(test_set)):
        views = test_set[i]["video"]  # (V, C, T, H, W)
        a, b = model(views), merged(views)
        max_diff = max(max_diff, (a - b).abs().max().item())
        pa, pb = a.softmax(-1).mean(0), b.softmax(-1).mean(0)
        if pa.argmax() == pb.argmax():
            agree += 1
        else:
            disagree_margins.append((pa.topk(2).values[0] - pa.topk(2).values[1]).item())
print(f"merged vs unmerged on {len(test_set)} videos x {TEST_CLIPS} views: max |Δlogit| = {max_diff:.2e}, "
      f"prediction agreement {agree}/{len(test_set)}")
assert max_diff <= 1e-3, max_diff
assert all(m <= 1e-4 for m in disagree_margins), disagree_margins  # only an exact tie could flip
merged_eval = evaluate(merged, test_set, batch_size=8)
print(f"merged test top-1 {merged_eval['top1']:.3f} (unmerged {evals['zeroi2v']['top1']:.3f})")

folder = save_merged(merged, WORK / "merged", extra={"class_names": CLASSES, "kinds": kinds,
                                                     "trained_on": "notebook 04 synthetic set"})
for f in sorted(folder.iterdir()):
    print(f"  {f.name:18} {f.stat().st_size / 1e3:9.1f} kB")
config = json.loads((folder / "config.json").read_text())
print("config.json:")
print("  format", config["format"], "v", config["version"], "| image_size", config["image_size"])
print("  model:", {k: config["model"][k] for k in ("backbone", "num_classes", "num_frames", "adapter",
                                                   "temporal_embedding")})
print("  temporal:", config["model"]["temporal"])  # the complete spec: kind, offsets of each layer, boundary
print("  vision_cfg:", config["backbone_cfg"]["vision_cfg"])
print("  class_names:", config["class_names"])
assert config["model"]["adapter"] is None
print(f"params: unmerged {count_params(model):,} -> merged {count_params(merged):,} = backbone "
      f"{backbone_params(merged):,} + temporal embedding {merged.temporal_embedding.numel():,} + head "
      f"{count_params(merged.head):,}")
assert count_params(merged) == backbone_params(merged) + merged.temporal_embedding.numel() + count_params(merged.head)

loaded = load_merged(folder)
clip = test_set[0]["video"]
with torch.no_grad():
    gap = (loaded(clip) - merged(clip)).abs().max().item()
print(f"load_merged(folder) vs merged: max |Δlogit| {gap:.1e}")
assert gap <= 1e-6

# %% [markdown]
# ## Look at test clips
#
# Pick a test clip: its frames (as the model sees them, first view) and the top-3 classes of the
# merged ZeroI2V and of the no-STDHA baseline. Headless runs (`SMALL`, nbconvert, CI) or a kernel
# without `ipywidgets` draw the first clip statically; the control is still built and driven once.

# %%
from zeroi2v.data import denormalize

MODELS = {"ZeroI2V (merged)": merged, "no STDHA": runs["no_stdha"]["model"].eval()}


@torch.no_grad()
def draw_clip(i):
    item = test_set[i]
    frames = denormalize(item["video"][0])  # first view -> (T, H, W, 3) uint8
    fig = plt.figure(figsize=(FRAMES * 1.1, 3.8), constrained_layout=True)
    top_row, bottom_row = fig.subfigures(2, 1, height_ratios=[1, 1.1])
    for t, ax in enumerate(top_row.subplots(1, FRAMES)):
        ax.imshow(frames[t].numpy(), interpolation="nearest")
        ax.set_title(f"frame {t}", fontsize=8)
        ax.set_axis_off()
    for ax, (label, m) in zip(bottom_row.subplots(1, len(MODELS)), MODELS.items()):
        probs = m(item["video"]).softmax(-1).mean(0)
        top = probs.topk(3)
        names = [CLASSES[j] for j in top.indices.tolist()]
        ax.barh(range(3)[::-1], top.values.numpy(),
                color=["tab:green" if n == CLASSES[item["label"]] else "tab:red" for n in names])
        ax.set_yticks(range(3)[::-1], names, fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_xlabel("probability (mean over views)", fontsize=8)
        ax.set_title(f"{label}: top-3 (green = true class)", fontsize=9)
    fig.suptitle(f"test clip {i}: {CLASSES[item['label']]} ({kinds[CLASSES[item['label']]]}), "
                 f"{item['video'].shape[0]} views averaged", fontsize=10)
    return fig


def clip_browser():
    import ipywidgets as W

    options = [(f"{i}: {CLASSES[s.label]}", i) for i, s in enumerate(test_set.samples)]
    pick = W.Dropdown(options=options, value=0, description="test clip")
    out = W.Output()
    state = {"draws": 0}

    def redraw(*_):
        with out:
            out.clear_output(wait=True)
            show(draw_clip(pick.value))
            state["draws"] += 1

    pick.observe(redraw, names="value")
    redraw()
    return W.VBox([pick, out]), pick, state


try:
    ui, pick_box, browser_state = clip_browser()
except ImportError:  # no ipywidgets in this kernel
    ui = None

if ui is not None and not SMALL:
    display(ui)
else:  # headless: the first clip as a static figure, and the control driven once
    show(draw_clip(0))
    if ui is not None:
        pick_box.value = len(test_set) - 1
        assert browser_state["draws"] == 2, browser_state
        print("widgets built and redrawn headless; static figure above")
    else:
        print("ipywidgets not installed; static figure above")

# %% [markdown]
# ## Your own clips: `zeroi2v init`
#
# The same steps on your own videos start from one command. `zeroi2v init` looks at a folder per class or
# an mmaction list (here, the list above with its `classes.txt`), counts classes and clips, names the
# classes, picks sampling from the clips' lengths and sizes from the backbone, and writes a short config
# that inherits the paper's recipe. Our classes move left and right, so it turns horizontal flips off and
# says which pairs a `data.flip_label_map` would need to keep them.

# %%
from zeroi2v.cli import main as zeroi2v_cli

zeroi2v_cli(["init", "--data", str(video_dir / "train.txt"), "--backbone", "zeroi2v-tiny",
             "--out", str(WORK / "mine.yaml")])
print((WORK / "mine.yaml").read_text())

# %% [markdown]
# Everything was written under `WORK` (a temporary folder). With `SMALL` it is removed; otherwise it
# stays for a look (the merged checkpoint opens in the demo: `zeroi2v demo --checkpoint <WORK>/merged`).

# %%
if SMALL:
    shutil.rmtree(WORK)
    print("removed", WORK)
else:
    print("run folders:", WORK / "runs", "| merged checkpoint:", WORK / "merged")
