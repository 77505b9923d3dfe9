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
# # 01 · STDHA: temporal modelling for free
#
# **Spatial-temporal dual-headed attention** (paper Sec. 3.2) turns a few heads of every image
# attention layer into *temporal heads*: head $i$ of frame $t$ keeps its own query but reads the keys
# and values of frame $t+\Delta t_i$, while the other heads stay spatial (Eq. 7–9):
#
# $$\text{S-head}_i = \mathrm{Attn}(Q_i^t, K_i^t, V_i^t),\qquad
#   \text{T-head}_i = \mathrm{Attn}(Q_i^t, K_i^{t+\Delta t_i}, V_i^{t+\Delta t_i})\ (\Delta t_i \ne 0),$$
# $$\mathrm{STDHA}(X) = \mathrm{Concat}(\text{T-head}_1,\dots,\text{T-head}_k,\text{S-head}_{k+1},\dots,\text{S-head}_h)\,W^O .$$
#
# The shift is a gather on K and V, so STDHA adds **no parameter and no FLOP**. This notebook parses
# the $\Delta t$ multisets, draws which frame every head reads, checks on a toy tensor that a temporal
# head really reads another frame, counts parameters and FLOPs, and ends with a temporal operator of
# its own.

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
# ## Δt as a multiset
#
# The paper writes the offsets of one layer as a multiset: `{1·2, -1·2, 0·8}` is two heads looking one
# frame ahead, two looking one frame back and eight spatial heads. `parse_offsets` turns that (or
# `"1x2,-1x2,0x8"`, or a preset name from Table 11) into one offset per head, temporal heads first.

# %%
from zeroi2v.stdha import (BOUNDARIES, PRESET_SOURCE, PRESETS, STDHA, format_offsets, parse_offsets,
                           source_frames, stdha_attention)

print(parse_offsets("1x2,-1x2,0x8", num_heads=12))
print(parse_offsets("{1·2, -1·2, 0·8}", num_heads=12))  # the paper's notation
print(parse_offsets("1x1,-1x1", num_heads=12))          # no 0 term: the remaining heads are spatial
print(parse_offsets("ssv2_vit_b_16", num_heads=12, num_frames=16), "<- preset ssv2_vit_b_16")
try:
    parse_offsets("1x2,-1x2,0x4", num_heads=12)
except ValueError as err:
    print("ValueError:", err)


# %% [markdown]
# The presets of Table 11 (one multiset per backbone, dataset and clip length). *Temporal RF* is the
# number of distinct frames one STDHA layer reads (Table 1c); the K400 rows of Table 11a have 3, 4
# and 6 for 8, 16 and 32 frames.

# %%
def preset_geometry(name):
    """Heads and frames a preset was written for: ViT-B has 12 heads, ViT-L 16."""
    return (16 if "_vit_l_" in name else 12), int(name.rsplit("_", 1)[1])


print(f"{'preset':16} {'Δt multiset':30} {'heads':>5} {'frames':>6} {'temporal':>8} {'RF':>3}  source")
for name, spec in PRESETS.items():
    heads, frames = preset_geometry(name)
    offsets = parse_offsets(name, heads, frames)
    rf = len(set(offsets) | {0})
    print(f"{name:16} {spec:30} {heads:5d} {frames:6d} {sum(o != 0 for o in offsets):8d} {rf:3d}  "
          f"{PRESET_SOURCE[name]}")

# %% [markdown]
# ## Which frame does each head read?
#
# `source_frames(offsets, T, boundary)` gives, for every query frame $t$ (rows) and head $h$
# (columns), the frame whose K/V the head reads. At the clip ends $t+\Delta t$ may fall outside the
# clip; the two boundary policies differ only there: `self` reads the frame's own K/V (the authors'
# code, marked `•`), `zero` reads zero K/V (grey).

# %%
import math

import matplotlib as mpl


def draw_grid(spec, num_heads=12, num_frames=8):
    """T x heads grid of the frame each head reads, one panel per boundary policy."""
    offsets = parse_offsets(spec, num_heads, num_frames)
    cmap = mpl.colormaps["viridis"].with_extremes(bad="lightgrey")
    width = max(5.0, 0.42 * num_heads + 1.5)
    height = max(2.5, 0.3 * num_frames + 1.2)
    fig, axes = plt.subplots(1, len(BOUNDARIES), figsize=(2 * width, height), constrained_layout=True)
    annotate = num_frames * num_heads <= 400
    for ax, boundary in zip(axes, BOUNDARIES):
        src, valid = source_frames(offsets, num_frames, boundary)
        img = src.float()
        if boundary == "zero":
            img = img.masked_fill(~valid, math.nan)
        im = ax.imshow(img.numpy(), cmap=cmap, vmin=0, vmax=num_frames - 1, aspect="auto")
        if annotate:
            for t in range(num_frames):
                for h in range(num_heads):
                    if valid[t, h]:
                        label = str(int(src[t, h]))
                    else:
                        label = "0" if boundary == "zero" else f"{int(src[t, h])}•"
                    ax.text(h, t, label, ha="center", va="center", fontsize=7,
                            color="black" if img[t, h] != img[t, h] or img[t, h] > num_frames / 2 else "white")
        ax.set_xticks(range(num_heads), [f"{o:+d}" if o else "0" for o in offsets], fontsize=7)
        ax.set_xlabel("head (its Δt)")
        ax.set_ylabel("query frame t")
        ax.set_title(f"boundary = '{boundary}'")
    fig.colorbar(im, ax=axes, label="frame read (K, V)", shrink=0.9)
    fig.suptitle(f"Δt = {{{format_offsets(offsets)}}}, {num_frames} frames")
    return fig


DEFAULT = "ssv2_vit_b_16"
show(draw_grid(DEFAULT, *preset_geometry(DEFAULT)))


# %% [markdown]
# ### Try other multisets
#
# With a Jupyter front end, pick a preset or type a multiset and the grid redraws. Headless runs
# (`SMALL`, nbconvert, CI) or a kernel without `ipywidgets` keep the static figure above; the
# controls are still built and driven once so the code path is exercised.

# %%
def grid_explorer():
    import ipywidgets as W

    preset = W.Dropdown(options=list(PRESETS), value=DEFAULT, description="preset")
    spec = W.Text(value=PRESETS[DEFAULT], description="Δt", continuous_update=False)
    heads = W.IntSlider(value=12, min=1, max=16, description="heads")
    frames = W.IntSlider(value=16, min=2, max=32, description="frames")
    out = W.Output()
    state = {"busy": False, "draws": 0}

    def redraw(*_):
        if state["busy"]:
            return
        with out:
            out.clear_output(wait=True)
            try:
                show(draw_grid(spec.value, heads.value, frames.value))
                state["draws"] += 1
            except ValueError as err:  # a malformed multiset: say why instead of drawing
                print(err)

    def on_preset(change):
        state["busy"] = True
        heads.value, frames.value = preset_geometry(change["new"])
        spec.value = PRESETS[change["new"]]
        state["busy"] = False
        redraw()

    preset.observe(on_preset, names="value")
    for w in (spec, heads, frames):
        w.observe(redraw, names="value")
    redraw()
    ui = W.VBox([W.HBox([preset, spec]), W.HBox([heads, frames]), out])
    return ui, preset, state


try:
    ui, preset_box, explorer_state = grid_explorer()
except ImportError:  # no ipywidgets in this kernel: the static figure above is all there is
    ui = None

if ui is not None and not SMALL:
    display(ui)
elif ui is not None:  # headless: drive the control once instead of displaying it
    preset_box.value = "k400_vit_l_32"
    assert explorer_state["draws"] == 2, explorer_state
    print("widgets built and redrawn headless; static figure above")
else:
    print("ipywidgets not installed; static figure above")

# %% [markdown]
# ## A temporal head really reads another frame
#
# A toy clip of $T=4$ frames and 4 heads, offsets $\{1, -1, 2, 0\}$. Every token of frame $t$ carries
# the value $t+1$ in V (so 0 means "zero K/V"); queries and keys are random. Attention mixes the
# values it reads, so a head's output *is* the number of the frame it read, whatever the attention
# weights are. We run STDHA (`stdha_attention`: the K/V gather, then ordinary SDPA) and compare
# with `source_frames`.

# %%
T, H, N, D = 4, 4, 5, 8
toy_offsets = parse_offsets("1x1,-1x1,2x1,0x1", num_heads=H, num_frames=T)
q, k = torch.randn(T, H, N, D), torch.randn(T, H, N, D)          # (B*T, heads, tokens, head_dim), B = 1
v = (torch.arange(T, dtype=torch.float32) + 1).view(T, 1, 1, 1).expand(T, H, N, D).contiguous()

for boundary in BOUNDARIES:
    out = stdha_attention(q, k, v, toy_offsets, T, boundary)
    read = out.mean(dim=(2, 3)) - 1                                # frame each (t, head) read; -1: zero K/V
    src, valid = source_frames(toy_offsets, T, boundary)
    expected = torch.where(valid | (boundary == "self"), src, -1).float()
    torch.testing.assert_close(read, expected, atol=1e-5, rtol=0)
    print(f"boundary={boundary!r}: frame read by each head (-1 = zero K/V)")
    print("        " + " ".join(f"Δt={o:+d}" for o in toy_offsets))
    for t in range(T):
        print(f"  t={t}: " + " ".join(f"{int(round(x)):5d}" for x in read[t].tolist()))

plain = torch.nn.functional.scaled_dot_product_attention(q, k, v).mean(dim=(2, 3)) - 1
assert torch.allclose(plain, torch.arange(T, dtype=torch.float32)[:, None].expand(T, H), atol=1e-5)
print("ordinary attention: every head reads its own frame")
assert STDHA(toy_offsets, T).temporal_heads == [0, 1, 2]

# %% [markdown]
# ## Zero extra parameters, zero extra FLOPs
#
# Three models on the same clip: the image ViT run frame by frame (`PlainViT`), the video model with
# every $\Delta t = 0$, and the video model with STDHA. The model config names the operator of every
# block and its spec, `temporal={"kind": "stdha", "offsets": ..., "boundary": "self"}` (offsets `None`:
# all heads spatial). No adapters and no temporal embedding here, so STDHA is the only difference. FLOPs are multiply-adds (the paper's convention) for 8 frames ×
# 3 views; the full-size run builds ViT-B/16 on PyTorch's `meta` device, which has shapes but no
# memory or arithmetic, so counting takes a second (paper Table 4: 422 GFLOPs). `SMALL` counts
# `zeroi2v-tiny` for real.

# %%
from zeroi2v.bench import PlainViT, count_flops, count_params
from zeroi2v.model import create_model

if SMALL:
    backbone, spec, size, device = "zeroi2v-tiny", "1x2,-1x2,0x4", 32, "cpu"
else:
    backbone, spec, size, device = "ViT-B-16", "k400_vit_b_8", 224, "meta"
FRAMES, VIEWS = 8, 3

with torch.device(device):
    kw = dict(backbone=backbone, num_classes=400, num_frames=FRAMES, adapter=None, temporal_embedding=False)
    spatial = create_model(temporal={"kind": "stdha", "offsets": None}, **kw).eval()  # Δt = 0 in every head
    stdha = create_model(temporal={"kind": "stdha", "offsets": spec}, **kw).eval()
    plain = PlainViT(spatial)
    video = torch.randn(1, 3, FRAMES, size, size)

rows = {"plain image ViT": plain, "ZeroI2V, Δt = 0": spatial, f"ZeroI2V, Δt = {{{format_offsets(stdha.offsets[0])}}}": stdha}
counts = {name: (count_params(m), count_flops(m, video) * VIEWS / 1e9) for name, m in rows.items()}
print(f"{backbone}, {FRAMES} frames x {VIEWS} views, {size} px ({device} device)")
print(f"{'model':32} {'params':>12} {'GFLOPs':>10}")
for name, (params, gflops) in counts.items():
    print(f"{name:32} {params:12,d} {gflops:10.4g}")
(p0, f0), (p1, f1), (p2, f2) = counts.values()
assert p0 == p1 == p2 and f0 == f1 == f2, counts
if backbone == "ViT-B-16":
    print("paper, Table 4: 422 GFLOPs for ViT-B/16, 8 frames x 3 views")
width = spatial.visual.class_embedding.shape[-1]
print(f"\nextra for STDHA: {p2 - p1} parameters, {f2 - f1:.0f} GFLOPs. The full ZeroI2V model adds only a "
      f"temporal embedding ({FRAMES} x {width} = {FRAMES * width:,d} parameters).")


# %% [markdown]
# ## Other temporal operators
#
# STDHA is one *temporal operator*: the part of every block that lets a frame see other frames.
# `zeroi2v.temporal.TEMPORAL` maps each `kind` of the config's `temporal:` to a class, and an operator
# acts in one or both of two places of the block: on the per-head Q, K, V (`qkv`, where STDHA
# re-indexes K and V) or on the tokens entering the attention branch (`tokens`, after the first norm).
# A new operator is a `TemporalOperator` subclass plus one `register` line; the model, the merge and
# the config checks never name it.
#
# Below, a temporal channel shift before the attention (the "Shift" rows of paper Table 1a, which
# STDHA beats at the same channel change ratio): in every token, `channels` channels come from frame
# $t-1$ and as many from frame $t+1$. Like STDHA it only moves data between frames, so it adds no
# parameter and no multiply-add. Our names start with `my_` so they never clash with a later built-in.

# %%
from zeroi2v.temporal import TEMPORAL, TemporalOperator

TEMPORAL.pop("my_token_shift", None)  # lets this cell run twice


@TEMPORAL.register("my_token_shift")
class MyTokenShift(TemporalOperator):
    """In every token, ``channels`` channels come from frame t-1 and as many from frame t+1."""
    on_tokens = True            # the block calls tokens(x)
    defaults = {"channels": 4}  # every spec key, with its default

    @classmethod
    def from_spec(cls, spec, *, layer, num_heads, num_frames):
        return cls(spec["channels"], num_frames)

    def __init__(self, channels, num_frames):
        super().__init__()
        self.c, self.t = channels, num_frames

    def tokens(self, x):  # (B*T, N, C): frames folded into the batch, frame-major within a video
        x, c = x.unflatten(0, (-1, self.t)), self.c
        back = torch.cat([x[:, :1, :, :c], x[:, :-1, :, :c]], dim=1)             # t-1 (frame 0 keeps its own)
        ahead = torch.cat([x[:, 1:, :, c:2 * c], x[:, -1:, :, c:2 * c]], dim=1)  # t+1 (the last keeps its own)
        return torch.cat([back, ahead, x[..., 2 * c:]], dim=-1).flatten(0, 1)


toy_kw = dict(backbone="zeroi2v-tiny", num_classes=10, num_frames=FRAMES, adapter=None, temporal_embedding=False)
shift = create_model(temporal={"kind": "my_token_shift", "channels": 8}, **toy_kw).eval()
still = create_model(temporal={"kind": "stdha", "offsets": None}, **toy_kw).eval()
still.load_state_dict(shift.state_dict())  # same weights: the operator is the only difference
clip = torch.randn(1, 3, FRAMES, shift.image_size, shift.image_size)
with torch.no_grad():
    changed = (shift(clip) - still(clip)).abs().max().item()
flops = {name: count_flops(m, clip) for name, m in (("shift", shift), ("still", still))}
print("resolved spec:", shift.temporal_spec)
print(f"params: token shift {count_params(shift):,}, Δt = 0 {count_params(still):,} | multiply-adds: "
      f"{flops['shift']:,} vs {flops['still']:,} | max |Δlogit| between them: {changed:.2e}")
assert count_params(shift) == count_params(still) and flops["shift"] == flops["still"] and changed > 1e-6
try:
    create_model(temporal={"kind": "my_token_shift", "chanels": 8}, **toy_kw)  # a typo: the operator says so
except ValueError as err:
    print("ValueError:", err)
