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
# # 02 · Linear adapters and the exact merge
#
# ZeroI2V adapts every projection of the image ViT with a **linear adapter** (paper Sec. 3.3)
# $A(x) = x + s\,W_{up}(W_{down}x + b_{down}) + s\,b_{up}$: a bottleneck *without* activation. Being
# affine, it is $A(x) = W_A x + b_A$ with $W_A = I + s\,W_{up}W_{down}$, and folds into the
# projection $P$ next to it after training (Eq. 11):
#
# * adapter before $P$: $W' = W_P W_A$, $b' = W_P b_A + b_P$
# * adapter after $P$: $W' = W_A W_P$, $b' = W_A b_P + b_A$
#
# The merged model is the plain image ViT + STDHA (no parameters) + a temporal embedding + the
# classifier: zero extra inference cost. This notebook checks each of those claims, then adds an adapter
# kind of its own. The model config names the adapters of every block:
# `adapter={"kind": "linear", "placement": "4", "ratio": 0.25, "scale": 1.0, "dropout": 0.0}`
# (`None`: no adapters).

# %%
import os

# SMALL: a tiny model and no widgets (tests, CI, 2 CPU cores). Run with ZEROI2V_NB_SMALL=1 to get it.
SMALL = os.environ.get("ZEROI2V_NB_SMALL", "0") == "1"

import matplotlib.pyplot as plt
import torch
from IPython.display import display

torch.manual_seed(0)


def show(fig):
    """Show a figure once (inline in Jupyter; a no-op picture under a headless Agg backend)."""
    display(fig)
    plt.close(fig)


print("SMALL =", SMALL, "| torch", torch.__version__, "| threads", torch.get_num_threads())

# %% [markdown]
# ## One adapter as an affine map
#
# `W_up` starts at zero, so a fresh adapter is the identity. We give it random weights (as after
# training), take `as_affine()` and check `adapter(x) == x @ W_A.T + b_A`. $W_A - I$ has rank at most
# the bottleneck width.

# %%
from zeroi2v.adapters import PLACEMENTS, SLOTS, LinearAdapter

adapter = LinearAdapter(dim=16, ratio=0.25, scale=0.5).eval()
x = torch.randn(5, 16)
with torch.no_grad():
    assert torch.equal(adapter(x), x), "a fresh adapter is the identity"
    adapter.down.weight.normal_(std=0.3)
    adapter.up.weight.normal_(std=0.3)
    adapter.up.bias.normal_(std=0.1)
    W_A, b_A = adapter.as_affine()
    err = (adapter(x).double() - (x.double() @ W_A.T + b_A)).abs().max().item()
rank = torch.linalg.matrix_rank(W_A - torch.eye(16, dtype=W_A.dtype)).item()
print(adapter)
print(f"max |adapter(x) - (W_A x + b_A)| = {err:.1e}; rank(W_A - I) = {rank} (bottleneck {adapter.down.out_features})")
assert err <= 1e-6 and rank <= adapter.down.out_features

fig, axes = plt.subplots(1, 3, figsize=(9, 3.4), constrained_layout=True, width_ratios=[1, 1, 0.12])
for ax, mat, title in zip(axes, (W_A, W_A - torch.eye(16, dtype=W_A.dtype), b_A[:, None]),
                          ("$W_A$", f"$W_A - I$ (rank {rank})", "$b_A$")):
    lim = mat.abs().max().item()
    im = ax.imshow(mat.float().numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax.set_title(title)
    ax.set_xticks([]); ax.set_yticks([])
    fig.colorbar(im, ax=ax, shrink=0.8)
show(fig)

# %% [markdown]
# ## Where adapters sit: placements 4, 6 and 3
#
# Every block has up to seven slots. `SLOTS[name]` is a `Slot(projection, side, text)`: the projection
# the adapter belongs to, and its side. A "before" adapter feeds the projection and folds into its input
# side ($W_P W_A$), an "after" adapter reads its output and folds into its output side ($W_A W_P$).
# Projections have the backbone protocol's names (`zeroi2v.backbones`); the open_clip family says which
# weights they are. Placement `4` is the paper's default, `6` splits the QKV adapter into three
# (ViT-B, 8-frame SSv2), `3` drops the one after fc2; a list of slot names places adapters anywhere.

# %%
from zeroi2v.backbones import OpenCLIP

RULE = {"before": "W_P·W_A", "after": "W_A·W_P"}
TEX = {"before": "$W_P W_A$", "after": "$W_A W_P$"}

print(f"{'slot':9} {'projection':10} {'side':6} {'rule':8} " + " ".join(f"{p:>3}" for p in PLACEMENTS) + "  where")
for slot, where in SLOTS.items():
    marks = " ".join(f"{'x' if slot in PLACEMENTS[p] else '.':>3}" for p in PLACEMENTS)
    print(f"{slot:9} {where.projection:10} {where.side:6} {RULE[where.side]:8} {marks}  {where.text}")
print("\nin open_clip:", ", ".join(f"{name} = {path}.{weight}" for name, (path, weight, _) in
                                 OpenCLIP.layout.projections.items()), "(q, k, v: its row blocks)")

fig, ax = plt.subplots(figsize=(7.5, 3.2), constrained_layout=True)
slots, names = list(SLOTS), list(PLACEMENTS)
grid = torch.tensor([[float(s in PLACEMENTS[p]) for p in names] for s in slots])
ax.imshow(grid.T.numpy(), cmap="Blues", vmin=0, vmax=1.4, aspect="auto")
for i, s in enumerate(slots):
    for j, p in enumerate(names):
        if grid[i, j]:
            ax.text(i, j, TEX[SLOTS[s].side], ha="center", va="center", fontsize=10)
ax.set_xticks(range(len(slots)), slots)
ax.set_yticks(range(len(names)), [f"placement {p} ({len(PLACEMENTS[p])}/block)" for p in names])
ax.set_title("adapter slots per placement, with the merge rule of each")
show(fig)

# %% [markdown]
# ## Train (pretend), merge, compare
#
# A model per placement with random adapter weights, temporal embedding and classifier standing in
# for trained ones (each adapter moves its input by ~25 %). `merge_adapters` returns a copy with every adapter
# folded away. The logits must agree to `1e-4` (the fold is done in float64, so the difference is
# float32 rounding), and the merged model must have exactly the parameters of the backbone +
# temporal embedding + classifier.

# %%
from zeroi2v.bench import backbone_params, count_params
from zeroi2v.merge import merge_adapters
from zeroi2v.model import create_model

if SMALL:
    CFG = dict(backbone="zeroi2v-tiny", num_classes=10, num_frames=8,
               temporal={"kind": "stdha", "offsets": "1x2,-1x2,0x4"})
else:
    CFG = dict(backbone="ViT-B-16", num_classes=400, num_frames=8,
               temporal={"kind": "stdha", "offsets": "k400_vit_b_8"})


def trained_like(model, seed=0):
    """Random adapters, temporal embedding and classifier, as after training (fresh adapters are the
    identity; a fresh classifier gives logits near 0, which would make any difference look small)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".adapters." in name or name in ("temporal_embedding", "head.weight"):
                std = 0.5 / p.shape[1] ** 0.5 if p.ndim == 2 and ".adapters." in name else 0.02
                std = 1 / p.shape[1] ** 0.5 if name == "head.weight" else std
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model.eval()


torch.manual_seed(0)
models = {p: trained_like(create_model(adapter={"kind": "linear", "placement": p, "scale": 0.5}, **CFG))
          for p in PLACEMENTS}
size = models["4"].image_size
video = torch.randn(2, 3, CFG["num_frames"], size, size)

print(f"{CFG['backbone']}, {CFG['num_frames']} frames, {size} px, batch 2")
print(f"{'placement':>9} {'adapters':>8} {'params before':>14} {'params after':>13} {'max|Δlogit|':>12} {'max|logit|':>11}")
results = {}
for p, model in models.items():
    merged = merge_adapters(model)
    with torch.no_grad():
        before, after = model(video), merged(video)
    diff = (before - after).abs().max().item()
    results[p] = (model, merged, diff)
    n_adapters = sum(len(b.adapters) for b in model.blocks)
    print(f"{p:>9} {n_adapters:8d} {count_params(model):14,d} {count_params(merged):13,d} {diff:12.2e} "
          f"{before.abs().max().item():11.3f}")
    assert diff <= 1e-4, (p, diff)
    assert torch.equal(before.argmax(1), after.argmax(1))
    assert not any(len(b.adapters) for b in merged.blocks)

# %% [markdown]
# The adapters matter (zeroing them changes the logits far more than merging does), and the merged
# parameter count is exactly backbone + temporal embedding + classifier:

# %%
model, merged, diff = results["4"]
untrained = create_model(model.cfg).eval()  # same config, fresh (identity) adapters
untrained.load_state_dict({k: v for k, v in model.state_dict().items() if ".adapters." not in k}, strict=False)
with torch.no_grad():
    adapter_effect = (untrained(video) - model(video)).abs().max().item()
print(f"max |Δlogit| from zeroing the adapters: {adapter_effect:.2e}   from merging them: {diff:.2e}")
assert adapter_effect > 100 * diff

parts = {"backbone": backbone_params(merged), "temporal embedding": merged.temporal_embedding.numel(),
         "classifier": count_params(merged.head)}
adapters = count_params(model) - count_params(merged)
for name, n in {**parts, "adapters (before merge)": adapters}.items():
    print(f"  {name:24} {n:12,d}")
print(f"  {'merged total':24} {count_params(merged):12,d}")
assert count_params(merged) == sum(parts.values())
assert backbone_params(merged) == backbone_params(model)

# %% [markdown]
# ## FLOPs and latency before and after merging
#
# `zero_cost_report` runs the plain image ViT (open_clip's own forward on every frame, same head),
# the unmerged and the merged model on one clip: parameters, GFLOPs (× 3 views) and the median of
# interleaved forward passes, as ratios to the plain ViT. Ratios, not milliseconds, are what a shared
# machine measures honestly; on a model as small as `zeroi2v-tiny` per-call overheads dominate, so
# expect noise there. `benchmarks/zero_cost.py` does the same on ViT-B/16.

# %%
from zeroi2v.bench import zero_cost_report

clip = video[:1]
report = zero_cost_report(model, merged, clip, views=3, repeats=15 if SMALL else 5)
print(f"{'':10} {'params':>12} {'GFLOPs x3':>10} {'latency ms':>11} {'/ plain':>8}")
for name in ("plain", "unmerged", "merged"):
    print(f"{name:10} {report['params'][name]:12,d} {report['gflops'][name]:10.3f} "
          f"{report['latency_ms'][name]:11.2f} {report['latency_ratio'][name]:8.3f}")
assert report["gflops"]["merged"] == report["gflops"]["plain"] < report["gflops"]["unmerged"]

fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), constrained_layout=True)
names = ["plain", "unmerged", "merged"]
colors = ["tab:gray", "tab:orange", "tab:green"]
for ax, key, title in ((axes[0], "gflops", "FLOPs"), (axes[1], "latency_ratio", "latency")):
    vals = [report[key][n] / (report[key]["plain"] if key == "gflops" else 1) for n in names]
    bars = ax.bar(names, vals, color=colors)
    ax.bar_label(bars, fmt="%.3f")
    ax.axhline(1.02, ls="--", c="k", lw=0.8, label="1.02 × plain")
    ax.set_ylabel("ratio to the plain ViT")
    ax.set_title(f"{title}, {CFG['backbone']}, {CFG['num_frames']} frames")
    ax.set_ylim(0, max(vals) * 1.3)
    ax.legend(loc="upper left", frameon=False)
show(fig)

# %% [markdown]
# ## A merged checkpoint
#
# `save_merged` writes a directory: `model.safetensors` (open_clip's visual state dict, untouched key
# names, + `temporal_embedding` + `head`) and `config.json` (the model config with `adapter: null` and
# the complete temporal spec, with the offsets of every layer, plus the open_clip backbone config).
# `load_merged` rebuilds the model from that alone: no adapter code, no name lookup, no download.

# %%
import json
import shutil
import tempfile
from pathlib import Path

from zeroi2v.merge import load_merged, save_merged

tmp = Path(tempfile.mkdtemp(prefix="zeroi2v-nb02-"))
folder = save_merged(merged, tmp / "merged", extra={"class_names": [f"class_{i}" for i in range(CFG["num_classes"])]})
for f in sorted(folder.iterdir()):
    print(f"{f.name:20} {f.stat().st_size / 1e6:8.2f} MB")

config = json.loads((folder / "config.json").read_text())
print("\nconfig.json keys:", list(config), "| format version", config["version"])
print("model:", json.dumps({k: config["model"][k] for k in ("backbone", "num_classes", "num_frames", "adapter")}))
temporal = config["model"]["temporal"]
print(f"temporal: kind {temporal['kind']!r}, boundary {temporal['boundary']!r}, "
      f"offsets of layer 0 (of {len(temporal['offsets'])}): {temporal['offsets'][0]}")
print("backbone vision_cfg:", json.dumps(config["backbone_cfg"]["vision_cfg"]))
assert config["model"]["adapter"] is None

loaded = load_merged(folder)
with torch.no_grad():
    gap_merged = (loaded(video) - merged(video)).abs().max().item()
    gap_trained = (loaded(video) - model(video)).abs().max().item()
print(f"\nloaded vs merged: {gap_merged:.1e}   loaded vs unmerged trained model: {gap_trained:.1e}")
assert gap_merged <= 1e-6 and gap_trained <= 1e-4
shutil.rmtree(tmp)


# %% [markdown]
# ## Your own adapter kind
#
# The linear adapter is one *adapter kind*: `zeroi2v.adapters.ADAPTERS` maps the config's
# `adapter: {kind, placement, ...}` to a class, and every kind declares how it merges (`merge`):
# `"affine"` (in series with its projection, folded by Eq. 11 as above), `"delta"` (in parallel with
# it, $P(x) + \Delta W x + \Delta b$, merged by adding $\Delta W, \Delta b$ to $W_P, b_P$), or `None`
# with a reason (merging such a model is refused and says why). A new kind is an `Adapter` subclass
# plus one `register` line; `merge_adapters` folds it without knowing its name.
#
# Below, a parallel low-rank adapter in the style of LoRA, $\Delta(x) = W_{up} W_{down} x + b_{up}$,
# on Q, V (LoRA's usual choice) and fc1 of a tiny model, with random weights as if trained.
# `from_spec` gets the input and output width of its slot's projection. Our names start with `my_` so
# they never clash with a later built-in.

# %%
import torch.nn as nn

from zeroi2v.adapters import ADAPTERS, Adapter

ADAPTERS.pop("my_low_rank", None)  # lets this cell run twice


@ADAPTERS.register("my_low_rank")
class MyLowRank(Adapter):
    """In parallel with its slot's projection P: ``P(x) + up(down(x))``, merged as a weight delta."""
    merge = "delta"
    defaults = {"rank": 4}  # every spec key besides kind and placement, with its default

    @classmethod
    def from_spec(cls, spec, *, in_dim, out_dim, slot):
        return cls(in_dim, out_dim, spec["rank"])

    def __init__(self, in_dim, out_dim, rank):
        super().__init__()
        self.down, self.up = nn.Linear(in_dim, rank, bias=False), nn.Linear(rank, out_dim)
        nn.init.zeros_(self.up.weight)  # starts as the image model
        nn.init.zeros_(self.up.bias)

    def forward(self, x):
        return self.up(self.down(x))

    def as_delta(self):  # (ΔW, Δb) with forward(x) == x @ ΔW.T + Δb
        return self.up.weight.double() @ self.down.weight.double(), self.up.bias.double()


mine = trained_like(create_model(backbone="zeroi2v-tiny", num_classes=10, num_frames=8, adapter={
    "kind": "my_low_rank", "placement": ["q_in", "v_in", "mlp_in"], "rank": 4}))
folded = merge_adapters(mine)
toy_clip = torch.randn(2, 3, 8, mine.image_size, mine.image_size)
with torch.no_grad():
    ours, plain = mine(toy_clip), folded(toy_clip)
gap = (ours - plain).abs().max().item()
print("resolved spec:", mine.adapter_spec)
print(f"{sum(len(b.adapters) for b in mine.blocks)} adapters ({count_params(mine) - count_params(folded):,} "
      f"parameters) merged away; max |Δlogit| merged vs unmerged {gap:.2e} (max |logit| {ours.abs().max():.2f})")
assert gap <= 1e-4 and not any(len(b.adapters) for b in folded.blocks)
