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
# # 06 · Few-shot adaptation, the VidTAB way
#
# VidTAB, the Video Task Adaptation Benchmark of VideoEval (arXiv 2407.06491), adapts a model to
# 8 tasks, from action recognition in the dark to fake-face detection, from **4, 16 or 100 clips per
# class**. Each (task, shots) has three folds: `train_4_fold1.txt`... The paper reports ZeroI2V on it
# (Table 8). `zeroi2v fewshot` runs the whole protocol as one resumable command. It writes one result row
# per (task, shots, fold, method), then aggregates them: mean ± std over folds, and the mean over tasks.
#
# This notebook runs the **offline suite**: synthetic tasks in VidTAB's layout, with the quickstart's tiny
# image model as backbone. The model has been given a text tower, so it is a small CLIP. With `SMALL`
# (env `ZEROI2V_NB_SMALL=1`, what the tests run), everything shrinks to a minute or two: a micro model,
# tiny folds, two epochs. **Accuracies at that size are noise.** The full suite is
# `zeroi2v fewshot --suite` (about ten minutes on two CPU cores). The last section shows how to point it at
# the real VidTAB with CLIP ViT-L/14 on a GPU.

# %%
import json
import os
import shutil
import tempfile
from pathlib import Path

SMALL = os.environ.get("ZEROI2V_NB_SMALL", "0") == "1"

import matplotlib.pyplot as plt
import torch
from IPython.display import Image, Markdown, display

torch.set_num_threads(1)
WORK = Path(tempfile.mkdtemp(prefix="zeroi2v-nb06-"))


def show(fig):
    display(fig)
    plt.close(fig)


print("SMALL =", SMALL, "| work dir", WORK)

# %% [markdown]
# ## A small CLIP, offline
#
# Zero-shot classification and a text-initialised head need CLIP's text tower. Offline, we build one. The
# image model is pre-trained on synthetic stills (what and where), exactly as in the quickstart. It is
# reused when `make quickstart` has run. A tiny text tower is then trained against the *frozen* image
# tower on captions of the same stills ("a large red circle at the top left"). This is locked-image
# tuning (LiT, Zhai et al. 2022). The folder ends up in open_clip's layout with both towers, like a
# downloaded CLIP.

# %%
from zeroi2v.fewshot.offline import ensure_clip_model

MICRO = dict(backbone="zeroi2v-micro", images=600, pretrain_epochs=1)
quickstart = [p / "runs" / "quickstart" / "image_model" for p in (Path.cwd(), Path.cwd().parent)]
found = [d for d in quickstart if (d / "pretrain.json").is_file()]
if found and not SMALL:  # a copy: the text tower is written into the folder, the quickstart's stays as it is
    shutil.copytree(found[0], WORK / "image_model")
image_dir = ensure_clip_model(WORK, seed=0, image=MICRO if SMALL else None, log=lambda *_: None)
text = json.loads((image_dir / "text_pretrain.json").read_text())
print("text tower trained in", round(text["seconds"]), "s; zero-shot accuracy on held-out stills:")
for group, acc in text["zero_shot"].items():
    print(f"  {group:18s} {acc['accuracy']:.2f}  (chance {acc['chance']:.2f})")

# %% [markdown]
# ## The synthetic tasks, in VidTAB's layout
#
# Each task is a folder with `label_map.txt`, `test.txt` and `train_K_foldF.txt`. The folds hold exactly K
# clips per class, drawn from `train_pool.txt` by `zeroi2v fewshot-split`, reproducibly from a seed. The
# domains imitate VidTAB's: a dim, noisy scene; long clips read as 8 sparse frames; fine motion; small
# objects; and one altered frame ("manipulated") against a real clip.

# %%
from zeroi2v.data import open_video
from zeroi2v.fewshot.suite import SUITE_TASKS, make_suite
from zeroi2v.fewshot.tasks import find_tasks

TASKS = ["Dark_Scene", "Small_Objects"] if SMALL else list(SUITE_TASKS)
SHOTS = (2, 4) if SMALL else (4, 16)
FOLDS = (1, 2) if SMALL else (1, 2, 3)
sizes = dict(pool_per_class=8, test_per_class=4) if SMALL else {}
make_suite(WORK / "data", seed=0, tasks=TASKS, shots=SHOTS, folds=max(FOLDS), log=lambda *_: None, **sizes)
tasks, problems = find_tasks(WORK / "data", TASKS)
for t in tasks:
    print(f"{t.name:14s} {SUITE_TASKS[t.name].about}")
    print(f"{'':14s} classes {t.classes}; splits {sorted(t.splits)}")

fig, axes = plt.subplots(len(tasks), 8, figsize=(8, 1.1 * len(tasks)), squeeze=False)
for row, t in zip(axes, tasks):
    path, _ = (t.video_root / t.test_list.read_text().split()[0], None)
    frames = open_video(path).get_all().permute(0, 2, 3, 1)
    step = max(1, len(frames) // 8)
    for j, ax in enumerate(row):
        ax.imshow(frames[min(j * step, len(frames) - 1)].numpy(), interpolation="nearest")
        ax.set_xticks([]); ax.set_yticks([])
    row[0].set_ylabel(t.name, rotation=0, ha="right", va="center", fontsize=8)
fig.suptitle("one test clip per task (8 frames)", fontsize=10)
show(fig)

# %% [markdown]
# ## The runs: one result row per (task, shots, fold, method)
#
# The methods come from one recipe (`zeroi2v/configs/fewshot/synthetic.yaml`). That file is VidTAB's
# ZeroI2V recipe, scaled down to the tiny model:
#
# - `zeroi2v`: STDHA and dense linear adapters on the frozen image model;
# - `no_stdha`: the same adapters, with every head spatial;
# - `linear_probe`: a head on the frozen, frame-averaged features. They are computed once and cached, so
#   this takes seconds;
# - `zero_shot`: no training at all. The head is made from the class names by the text tower: the floor.
#
# Each row is written as `rows/<row>.json` the moment its run ends. Running the cell again skips the
# finished rows. A crash therefore costs at most the row in flight.

# %%
from zeroi2v.fewshot.offline import SUITE_RECIPE
from zeroi2v.fewshot.run import run_fewshot

OUT = WORK / "fewshot"
overrides = [f"model.backbone=local-dir:{image_dir}"]
if SMALL:
    overrides += ["optim.epochs=2", "optim.warmup_epochs=1", "train.batch_size=4", "train.total_batch=4"]
result = run_fewshot(tasks, OUT, shots=SHOTS, folds=FOLDS, methods=["zeroi2v", "no_stdha", "linear_probe", "zero_shot"],
                     config=SUITE_RECIPE, overrides=overrides, workers=1 if SMALL else 2, log=lambda *_: None)
print(result["summary"])
print(json.dumps({k: v for k, v in json.loads(next((OUT / "rows").glob("*zeroi2v.json")).read_text()).items()
                  if k not in ("confusion", "classes")}, indent=1))

# %% [markdown]
# ## The table and the plot
#
# `results.md` follows the shape of the paper's Table 8: one row per method, then the mean over tasks,
# then one column per task. Every cell is the mean ± sample std over folds. The headline is the **last
# epoch's** top-1. The best epoch is a separate table, labelled for what it is: chosen on the test list,
# so optimistic. The benchmark's published runs report that one. The aggregate is called plainly "mean
# top-1 over tasks": VidTAB's README mentions a "TA-score", but its code defines none.

# %%
display(Markdown((OUT / "results.md").read_text()))
display(Image(filename=str(OUT / "accuracy_vs_shots.png")))

# %% [markdown]
# ## Per-task confusion matrices
#
# Each row keeps the confusion matrix of its test list (rows are the true class). Here is ZeroI2V at the
# largest shots, fold 1, for each task.

# %%
rows = [json.loads(p.read_text()) for p in sorted((OUT / "rows").glob("*.json"))]
picked = [r for r in rows if r["key"]["method"] == "zeroi2v" and r["key"]["shots"] == max(SHOTS)
          and r["key"]["fold"] == 1]
fig, axes = plt.subplots(1, len(picked), figsize=(3.2 * len(picked), 3.2), squeeze=False)
for ax, r in zip(axes[0], picked):
    ax.imshow(r["confusion"], cmap="Blues")
    n = len(r["classes"])
    ax.set_xticks(range(n), [c[:8] for c in r["classes"]], rotation=60, fontsize=7)
    ax.set_yticks(range(n), [c[:8] for c in r["classes"]], fontsize=7)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, r["confusion"][i][j], ha="center", va="center", fontsize=7)
    ax.set_title(f"{r['key']['task']}: top-1 {r['top1']:.2f}", fontsize=9)
fig.tight_layout()
show(fig)

# %% [markdown]
# ## A head that starts from the class names
#
# With CLIP's text tower, the classifier can start from the class names instead of random weights. The
# prompt embeddings (a few templates, averaged) are mapped through the image projection into the
# class-token space. So the head stays a plain linear layer: it merges and costs nothing extra. With no
# training, this head *is* the `zero_shot` method. `--head-init text` starts training from it, and those
# rows are named `zeroi2v+text`. Offline, the text tower knows only the words of its captions (shapes,
# colours, sizes, places), so `Small_Objects`, whose classes are shape names, is where it can help.

# %%
run_fewshot([t for t in tasks if t.name == "Small_Objects"], OUT, shots=SHOTS[:1], folds=FOLDS,
            methods=["zeroi2v", "linear_probe"], head_init="text", config=SUITE_RECIPE, overrides=overrides,
            log=lambda *_: None)
rows = [json.loads(p.read_text()) for p in sorted((OUT / "rows").glob("Small_Objects*.json"))]
for r in sorted(rows, key=lambda r: (r["key"]["shots"], r["key"]["method"], r["key"]["fold"])):
    if r["key"]["shots"] == SHOTS[0]:
        print(f"{r['key']['method']:18s} fold {r['key']['fold']}: top-1 {r['top1']:.3f}")

# %% [markdown]
# ## On the real VidTAB, with CLIP ViT-L/14 on a GPU
#
# Download VidTAB's annotations (github.com/leexinhao/VideoEval) and the videos of each task. Keep one
# folder per task, holding `label_map.txt`, the test list and `train_K_foldF.txt`. Older copies that have
# `train_4.txt` are read as fold 1. Then:
#
# ```bash
# zeroi2v fewshot --root /data/VidTAB --tasks all --shots 4 16 100 --folds 1 2 3 \
#     --methods zeroi2v linear_probe full_finetune zero_shot --out runs/vidtab --workers 4
# ```
#
# This uses the benchmark's recipe (`zeroi2v/configs/fewshot/vidtab.yaml`): CLIP ViT-L/14 `openai`,
# 8 frames at 224 px, adapters of ratio 0.125 and scale 1, AdamW at 3e-4 with the backbone at lr × 0.1,
# and 25 epochs. `--workers 4` runs four rows at once, one GPU each. `--launcher submitit` sends each row
# to Slurm instead. `--head-init text` starts the heads from the class names. `--video-root` says where
# the lists' paths point. A missing task is reported and skipped. Your own data works in the same layout,
# or as one list that `--train-list train.txt --test-list test.txt --shots 4 16` splits into folds for you.

# %%
shutil.rmtree(WORK, ignore_errors=True)
