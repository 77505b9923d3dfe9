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
# # 07 · The paper's ablations, rerun: Tables 1a and 3
#
# ZeroI2V's claims rest on two comparisons. **Table 1a**: STDHA against the other zero-cost temporal
# operators ([cls]-token shift, temporal channel shift). **Table 3**: linear adapters against LoRA, GELU
# adapters and ST-Adapter, dense against partial placement, and the tuning modes (full fine-tuning, linear
# probe, temporal heads only). In this toolkit every one of those rows is a config switch. `zeroi2v ablate`
# runs a **grid** of such switches over a base config, for several seeds, as resumable rows. It then writes a
# table in the shape of the paper's Table 3: tunable parameters, new inference parameters after merging,
# GFLOPs of the deployed model, and top-1 as mean ± std over seeds.
#
# This notebook reruns small versions of both tables on the synthetic temporal video set of the quickstart.
# It puts the paper's numbers beside ours. Those come from SSv2 with CLIP ViT-B/16, so compare **rankings**,
# not values. With `SMALL` (env `ZEROI2V_NB_SMALL=1`, what the tests run), everything shrinks to about two
# minutes: a micro model, a handful of videos, one epoch, one seed. **Accuracies at that size are noise.**
# The full size (the quickstart's tiny ViT, 3 seeds) takes about half an hour on two CPU cores.

# %%
import os
import shutil
import tempfile
from pathlib import Path

SMALL = os.environ.get("ZEROI2V_NB_SMALL", "0") == "1"

import matplotlib.pyplot as plt
import torch
from IPython.display import Image, Markdown, display

torch.set_num_threads(1)
WORK = Path(tempfile.mkdtemp(prefix="zeroi2v-nb07-"))
GRIDS = next(p / "configs" / "ablations" for p in (Path.cwd(), Path.cwd().parent) if (p / "configs" / "ablations").is_dir())
SIZE = "small" if SMALL else "default"
SEEDS = [0] if SMALL else [0, 1, 2]
WORKERS = 1 if SMALL else 2


def show(fig):
    display(fig)
    plt.close(fig)


print("SMALL =", SMALL, "| work dir", WORK, "| grids in", GRIDS)

# %% [markdown]
# ## The synthetic set and the image model
#
# `zeroi2v ablate --synthetic DIR` builds what it needs in DIR, or reuses it when it is there. The image
# model is the quickstart's: a small open_clip ViT pre-trained on synthetic stills. It is reused when
# `make quickstart` has run. The video set is a small version of the quickstart's: ten motion classes, whose
# *relation* classes (slow, fast, jitter) show only across frames. The base config every row starts from is
# `zeroi2v/configs/ablations/synthetic.yaml`: the paper's recipe, scaled to the tiny model.

# %%
from zeroi2v.ablate import SYNTHETIC_BASE, SYNTHETIC_SIZES, prepare_synthetic

quickstart = [p / "runs" / "quickstart" / "image_model" for p in (Path.cwd(), Path.cwd().parent)]
found = [d for d in quickstart if (d / "pretrain.json").is_file()]
if found and not SMALL:  # a copy: the quickstart's folder stays as it is
    shutil.copytree(found[0], WORK / "image_model")
changes = prepare_synthetic(WORK, SIZE, log=lambda *_: None)
print("size:", SIZE, SYNTHETIC_SIZES[SIZE])
print("the base config's changes:", {k: v for k, v in changes.items() if k != "data.format_args"})
print(SYNTHETIC_BASE.read_text().split("\n\n", 1)[0])

# %% [markdown]
# ## A grid file
#
# A grid is a title, the paper's numbers (optional), and rows. Each row is a named set of dotted config
# keys. A row that names another temporal operator or adapter `kind` replaces that whole spec. Here is
# Table 1a's grid:

# %%
print((GRIDS / "table1a_temporal.yaml").read_text())

# %% [markdown]
# ## Table 1a: the temporal operators
#
# Every (row, seed) is one training run. Its result is written as `rows/<row>__seed<S>.json` the moment it
# ends. Running the cell again skips the finished rows. `workers=2` trains two rows at once, one per core.

# %%
from zeroi2v.ablate import read_grid, run_ablate


def run(grid_name):
    out = WORK / grid_name
    result = run_ablate(GRIDS / f"{grid_name}.yaml", out, synthetic=WORK, synthetic_size=SIZE, seeds=SEEDS,
                        workers=WORKERS, log=lambda *_: None)
    assert not result["summary"].failed, result["summary"].failed
    display(Markdown((out / "results.md").read_text()))
    return out


out_1a = run("table1a_temporal")

# %% [markdown]
# ## Ours beside the paper's
#
# Left: our top-1 per row (mean ± std over seeds). Right: the paper's, on SSv2. The scales differ, so the
# question is whether the order is the same. The paper's Table 1a has STDHA first. The `none` row is not in
# the paper: it shows what temporal modelling adds at all.

# %%
import csv


def beside(out, grid_name):
    grid = read_grid(GRIDS / f"{grid_name}.yaml")
    table = list(csv.DictReader((out / "results.csv").open()))
    names = [r["row"] for r in table]
    ours = [100 * float(r["top1_mean"]) for r in table]
    err = [100 * float(r["top1_std"]) for r in table]
    paper = [grid.paper.get(n, float("nan")) for n in names]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.6), sharey=False)
    colours = ["C0" if r["mergeable"] == "True" else "C1" for r in table]
    a.barh(names, ours, xerr=err, color=colours, capsize=3)
    a.set_xlabel(f"ours: top-1 (%), synthetic set, {len(SEEDS)} seed(s)")
    b.barh(names, paper, color="0.6")
    b.set_xlabel("paper: top-1 (%), SSv2, ViT-B/16")
    lo = min(p for p in paper if p == p)
    b.set_xlim(lo - 5, max(p for p in paper if p == p) + 1)
    for ax in (a, b):
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"{grid.title} (orange: not mergeable)", fontsize=10)
    fig.tight_layout()
    show(fig)
    rank = lambda vals: [n for _, n in sorted(((-v, n) for v, n in zip(vals, names) if v == v))]
    print("order, ours: ", " > ".join(rank(ours)))
    print("order, paper:", " > ".join(rank(paper)))


beside(out_1a, "table1a_temporal")

# %% [markdown]
# ## Table 3: adaptation strategies
#
# The same STDHA in every row; what changes is what trains. The columns are the paper's: **tunable
# params** (what trains, classifier included here), **new inference params** (what the deployed model has
# beyond the plain image tower and the classifier: after merging, only the temporal embedding; GELU and
# ST-Adapter rows cannot merge, so their adapters stay and count), and **GFLOPs** of the deployed model.
# The linear adapter and LoRA merge: their GFLOPs equal the plain image model's. The others do not.

# %%
out_3 = run("table3_placement")
beside(out_3, "table3_placement")

# %% [markdown]
# The plot `zeroi2v ablate` writes itself (`top1.png`), with the paper's top-1 on a second axis:

# %%
display(Image(filename=str(out_3 / "top1.png")))

# %% [markdown]
# ## At paper size, on real data
#
# The same grids run over a paper config on a GPU, for instance SSv2 with CLIP ViT-B/16 and 8 frames (point
# the data paths of `configs/ssv2_vit_b16_8f.yaml` at your copy first):
#
# ```bash
# zeroi2v ablate --config configs/ssv2_vit_b16_8f.yaml --grid configs/ablations/table1a_temporal.yaml \
#     --seeds 0 1 2 --out runs/table1a --workers 8        # one GPU per worker
# zeroi2v ablate --config configs/ssv2_vit_b16_8f.yaml --grid configs/ablations/table3_placement.yaml \
#     --seeds 0 1 2 --out runs/table3 --launcher submitit --slurm slurm_partition=gpu --slurm gpus_per_node=1
# ```
#
# Your own comparison is a grid file of your own: any dotted keys of the config, any number of rows. A
# finished row is never run twice; a killed run costs at most the rows in flight.
