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
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · What do the spatial and temporal heads look at? (Grad-CAM)
#
# ZeroI2V splits the heads of every attention layer into **spatial** heads (Δt = 0: frame *t* attends to
# itself) and **temporal** heads (Δt ≠ 0: frame *t* reads the keys and values of frame *t + Δt*), at zero
# extra cost (paper Sec. 3.2; Fig. 3 and appendix 6.3 show Grad-CAM of both groups).
#
# `zeroi2v.explain.gradcam` runs a `pytorch_grad_cam` method (by default element-wise Grad-CAM, which
# measured best at pointing at the moving object; `method=` picks another of `CAM_METHODS`) on one block's
# per-head **values before the time shift** (`block.v_probe`), keeping only one group's heads. For a temporal head the value at frame
# *t'* is what the queries of frame *t' − Δt* read, so its map shows *where in frame t' the temporal heads
# take content from*.
#
# This notebook
# 1. loads the quickstart model (`runs/quickstart/merged`) when it exists, else trains a tiny model on
#    synthetic clips for a few seconds;
# 2. draws frames + spatial / temporal / all-head maps for a few synthetic clips, with the object's box;
# 3. measures how much CAM mass falls inside the object's box, against chance (box area / frame area);
# 4. offers an explorer over class / block / frame (ipywidgets), with a static figure when headless.
#
# `ZEROI2V_NB_SMALL=1` (set by the test suite) keeps everything to about a minute on 2 CPU cores.

# %%
import os, time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Rectangle

from zeroi2v.data.synthetic import REGISTRY, make_clip
from zeroi2v.data.transforms import normalize
from zeroi2v.explain import (GROUP_TITLES, GROUPS, chance_in_boxes, gradcam, head_groups, mass_in_boxes,
                             strip, to_uint8_frames)
from zeroi2v.merge import load_merged
from zeroi2v.model import create_model

SMALL = os.environ.get("ZEROI2V_NB_SMALL", "0") == "1"
STATIC = SMALL or os.environ.get("ZEROI2V_NB_STATIC", "0") == "1"  # no widget frontend (headless run)
torch.set_num_threads(1 if SMALL else min(4, os.cpu_count() or 1))
ROOT = next(p for p in (Path.cwd(), *Path.cwd().parents) if (p / "zeroi2v").is_dir())
CHECKPOINT = ROOT / "runs" / "quickstart" / "merged"
print(f"SMALL={SMALL}  STATIC={STATIC}  checkpoint present: {CHECKPOINT.is_dir()}")


# %% [markdown]
# ## 1 · A model
#
# The quickstart's merged checkpoint when it exists and its classes are synthetic ones. Otherwise a
# `zeroi2v-micro` model (2 layers, 6 heads, Δt = {1×1, −1×1, 0×4}) trained here on in-memory synthetic
# clips: the direction an object moves (left / right / up / down), which needs the temporal heads or the
# temporal embedding. From a random init the loss sits at ln 4 for a few hundred steps, then drops
# (~20-40 s on 2 CPU cores); without `SMALL` it trains on more clips, longer.

# %%
def clip_tensor(frames):
    # uint8 (T, H, W, 3) -> normalised (C, T, H, W)
    return normalize(torch.from_numpy(frames).permute(0, 3, 1, 2)).permute(1, 0, 2, 3)


MOVES = ["move_left", "move_right", "move_up", "move_down"]


def toy_sample(rng, i, num_frames, size):
    # one (frames, boxes, label, class name) of the toy task
    frames, boxes, _ = make_clip(MOVES[i % 4], rng, num_frames=num_frames, size=size)
    return frames, boxes, i % 4, MOVES[i % 4]


def train_toy(num_clips, max_steps, stop_loss, seed=0):
    rng = np.random.default_rng(seed)
    data = [toy_sample(rng, i, 8, 32) for i in range(num_clips)]
    x = torch.stack([clip_tensor(f) for f, *_ in data])
    y = torch.tensor([label for _, _, label, _ in data])
    torch.manual_seed(seed)
    model = create_model(backbone="zeroi2v-micro", num_classes=len(MOVES), num_frames=8,
                         temporal={"kind": "stdha", "offsets": "1x1,-1x1,0x4"}, finetune="full", head_dropout=0.0,
                         class_names=MOVES)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    g = torch.Generator().manual_seed(seed)
    model.train()
    ema, start = None, time.perf_counter()
    for step in range(1, max_steps + 1):
        idx = torch.randint(0, len(x), (32,), generator=g)
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(); loss.backward(); opt.step()
        ema = loss.item() if ema is None else 0.9 * ema + 0.1 * loss.item()
        if ema < stop_loss:
            break
    print(f"trained the direction task: {step} steps, loss {ema:.3f}, {time.perf_counter() - start:.1f} s")
    return model.eval()


model, TASK = None, None
if CHECKPOINT.is_dir():
    candidate = load_merged(CHECKPOINT)
    names = list(candidate.cfg.class_names or [])
    if names and all(n in REGISTRY for n in names):
        model, TASK = candidate, "checkpoint"
        print(f"loaded {CHECKPOINT}: {len(names)} synthetic classes")
    else:
        print(f"{CHECKPOINT} does not name synthetic classes: training a toy model instead")
if model is None:
    TASK = "direction"
    model = train_toy(768, 700, 0.25) if SMALL else train_toy(2048, 3000, 0.05)

CLASSES = list(model.cfg.class_names)
T, SIZE = model.num_frames, model.image_size
print(model.extra_facts())


# %% [markdown]
# ## 2 · Spatial vs temporal heads, clip by clip
#
# Each panel: the sampled frames with the object's box (white), then the Grad-CAM of the spatial, temporal
# and all heads of one block for the clip's true class: the last block for the quickstart model (as in the
# paper's Fig. 3), the **first** block for the 2-layer toy model, whose last block already mixes the whole
# frame into every token (section 3 compares the blocks). Each map is scaled once per clip (frames
# are comparable). The number is the fraction of CAM mass inside the box; chance is the box's share of the
# frame.

# %%
def eval_clips(n, seed):
    # n synthetic clips of the model's task: (clip tensor, boxes, label, generator name)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        if TASK == "checkpoint":
            name = CLASSES[i % len(CLASSES)]
            frames, boxes, _ = make_clip(name, rng, num_frames=T, size=SIZE)
            out.append((clip_tensor(frames), boxes, CLASSES.index(name), name))
        else:
            frames, boxes, label, name = toy_sample(rng, i, T, SIZE)
            out.append((clip_tensor(frames), boxes, label, name))
    return out


def show_clip(ax_rows, clip, boxes, label, block=-1, height=72):
    r = gradcam(model, clip, target_class=label, block=block)
    frames = to_uint8_frames(clip, model.cfg.mean, model.cfg.std)
    scale, gap = height / SIZE, 2
    chance = chance_in_boxes(boxes, (SIZE, SIZE))
    rows = [("frames", strip(frames, height=height, gap=gap), "")]
    for g in GROUPS:
        if r[g] is None:
            rows.append((g, None, r["messages"][g]))
        elif not r[g].any():
            rows.append((g, strip(frames, r[g], height=height, gap=gap), "all zero: no positive evidence for this class"))
        else:
            rows.append((g, strip(frames, r[g], height=height, gap=gap),
                         f"in box {mass_in_boxes(r[g], boxes):.2f} (chance {chance:.2f})"))
    for ax, (g, img, note) in zip(ax_rows, rows):
        ax.axis("off")
        if img is None:
            ax.text(0.5, 0.5, note, ha="center", va="center", transform=ax.transAxes)
            continue
        ax.imshow(img)
        title = f"{CLASSES[label]} (p = {r['probability']:.2f})" if g == "frames" else f"{GROUP_TITLES[g]}: {note}"
        ax.set_title(title, fontsize=9, loc="left")
        for t, (x0, y0, x1, y1) in enumerate(boxes):
            ax.add_patch(Rectangle((t * (height + gap) + x0 * scale, y0 * scale), (x1 - x0) * scale,
                                   (y1 - y0) * scale, fill=False, ec="white", lw=0.8))
    return r


SHOW_BLOCK = -1 if TASK == "checkpoint" else 0
shown = eval_clips(4 if SMALL else 6, seed=123)
fig, axes = plt.subplots(4 * len(shown), 1, figsize=(11, 1.45 * 4 * len(shown)))
for k, (clip, boxes, label, name) in enumerate(shown):
    show_clip(axes[4 * k:4 * k + 4], clip, boxes, label, block=SHOW_BLOCK)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 3 · How much of each map falls on the object?
#
# Mean fraction of CAM mass inside the object's box over held-out clips, per head group and block, against
# chance. Clips where a group has no positive evidence for the class (an all-zero map) are left out of
# that group's mean.

# %%
clips = eval_clips(12 if SMALL else 64, seed=999)
blocks = list(range(len(model.blocks)))
scores = {b: {g: [] for g in GROUPS} for b in blocks}
chance = float(np.mean([chance_in_boxes(bx, (SIZE, SIZE)) for _, bx, _, _ in clips]))
start = time.perf_counter()
for clip, boxes, label, _ in clips:
    for b in blocks:
        r = gradcam(model, clip, target_class=label, block=b)
        for g in GROUPS:
            if r[g] is not None:
                scores[b][g].append(mass_in_boxes(r[g], boxes))
print(f"{len(clips)} clips x {len(blocks)} blocks in {time.perf_counter() - start:.1f} s; chance = {chance:.3f}")
fig, ax = plt.subplots(figsize=(7, 3))
width = 0.8 / len(GROUPS)
for i, g in enumerate(GROUPS):
    means = [np.nanmean(scores[b][g]) if scores[b][g] else np.nan for b in blocks]
    ax.bar(np.array(blocks) + (i - 1) * width, means, width, label=GROUP_TITLES[g])
    print(f"{GROUP_TITLES[g]:>15}: " + "  ".join(f"block {b}: {m:.3f} ({m / chance:.1f}x chance)" for b, m in zip(blocks, means)))
ax.axhline(chance, color="k", ls="--", lw=1, label="chance")
ax.set_xticks(blocks); ax.set_xlabel("block"); ax.set_ylabel("CAM mass in box")
ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
plt.show()

# %% [markdown]
# ## 4 · Explorer: class, block, frame
#
# Pick the class to explain (the true one or any other), the block and the frame. With a widget frontend
# (Jupyter) this is interactive; headless (`ZEROI2V_NB_SMALL=1` or `ZEROI2V_NB_STATIC=1`) it draws one
# static figure instead: the first clip above, every block, all frames, for its true class.

# %%
clip, boxes, label, name = shown[0]
frames = to_uint8_frames(clip, model.cfg.mean, model.cfg.std)


def explore(target, block, frame, ax_row):
    r = gradcam(model, clip, target_class=CLASSES.index(target), block=block)
    ax_row[0].imshow(frames[frame]); ax_row[0].set_title(f"frame {frame}", fontsize=9)
    offsets = head_groups(model, block)
    for ax, g in zip(ax_row[1:], GROUPS):
        if r[g] is None:
            ax.text(0.5, 0.5, "no heads\nin this group", ha="center", va="center", transform=ax.transAxes)
        else:
            ax.imshow(frames[frame]); ax.imshow(r[g][frame], cmap="jet", alpha=0.5, vmin=0, vmax=1)
        ax.set_title(f"{GROUP_TITLES[g]} {offsets[g]}", fontsize=8)
    for ax in ax_row:
        ax.axis("off")
    return r


widgets = None
if not STATIC:
    try:
        import ipywidgets as widgets
    except ImportError:
        widgets = None

if widgets is not None:
    def _show(target, block, frame):
        fig, ax_row = plt.subplots(1, 4, figsize=(10, 2.8))
        r = explore(target, block, frame, ax_row)
        fig.suptitle(f"explaining {target} (p = {r['probability']:.2f}), block {block}", fontsize=10)
        plt.show()

    widgets.interact(_show,
                     target=widgets.Dropdown(options=CLASSES, value=CLASSES[label], description="class"),
                     block=widgets.IntSlider(min=0, max=len(model.blocks) - 1, value=len(model.blocks) - 1,
                                             description="block"),
                     frame=widgets.IntSlider(min=0, max=T - 1, value=T // 2, description="frame"))
else:  # static fallback: every block of the first clip, all frames
    n = len(model.blocks)
    fig, axes = plt.subplots(4 * n, 1, figsize=(11, 1.45 * 4 * n))
    for b in range(n):
        show_clip(axes[4 * b:4 * b + 4], clip, boxes, label, block=b)
        axes[4 * b].set_title(f"block {b}: " + axes[4 * b].get_title(loc="left"), fontsize=9, loc="left")
    fig.tight_layout()
    plt.show()

# %% [markdown]
# ### Reading the maps
#
# * Spatial-head maps sit on the object in the frame itself.
# * Temporal-head maps are drawn in the frame the content is *taken from* (values before the shift): with
#   Δt = +1, frame *t'* is read by frame *t' − 1*. A temporal map on the object therefore says that the
#   neighbouring frame's queries fetch the object's content from here.
# * A block whose heads all have Δt = 0 has no temporal group: the explainer says so instead of drawing an
#   empty map.
