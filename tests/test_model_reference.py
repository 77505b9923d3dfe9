"""Model-level reference tests: every ``VideoBlock`` of a built model against a slow, obvious reference.

The reference recomputes each block from the block's own weights (read through the backbone protocol:
``family.layout`` for the norms, layer scales and activation, ``family.projection`` for Q/K/V, the
attention out-projection, fc1 and fc2) with explicit loops over videos, frames and heads: head h of
frame t attends with its own query to the keys and values of frame t + Δt_h (paper Eq. (7)-(9));
past the clip's ends it reads its own frame ('self') or zeros ('zero'). The Δt each head must use
comes from the test's own expectation, never from the model, so a model that passes its temporal
operator negated offsets, or drops the configured boundary, disagrees with the reference. Adapters
(paper Sec. 3.3) are random, in all three placements, recomputed from their ``down``/``up`` weights.

Everything runs in float64 on the micro backbone (2 blocks, 6 heads, 17 tokens), so agreement is
to ~1e-10, and the whole file runs in seconds.
"""
from __future__ import annotations

import copy
import math

import pytest
import torch

from zeroi2v.backbones import family_of
from zeroi2v.model import ModelConfig, build_from_backbone_cfg, create_model
from zeroi2v.stdha import STDHA

BACKBONE = "zeroi2v-micro"
HEADS = 6
ATOL = 1e-9


# --- the slow reference ---------------------------------------------------------------------------

def _layer_norm(module, x):
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + module.eps) * module.weight + module.bias


def _linear(proj, x):
    """``x W^T + b`` for a ``backbones.base.Projection`` (its rows of a fused weight)."""
    weight = proj.weight[proj.rows]
    bias = proj.bias[proj.rows] if proj.bias is not None else 0.0
    return x @ weight.T + bias


def _act(module, x):
    name = type(module).__name__
    if name == "GELU":
        assert module.approximate == "none"
        return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))
    if name == "QuickGELU":
        return x * torch.sigmoid(1.702 * x)
    raise AssertionError(f"the reference knows GELU and QuickGELU, not {name}")


def _layer_scale(module, x):
    if type(module).__name__ == "Identity":
        return x
    return x * module.gamma


def _adapter(block, slot, x):
    """A linear adapter, ``x + s · (W_up (W_down x + b_down) + b_up)``; the identity where none sits."""
    if slot not in block.adapters:
        return x
    a = block.adapters[slot]
    return x + a.scale * ((x @ a.down.weight.T + a.down.bias) @ a.up.weight.T + a.up.bias)


def _attend(q, k, v):
    """One head of one frame: softmax(q k^T / sqrt(d)) v."""
    return torch.softmax(q @ k.T / math.sqrt(q.shape[-1]), dim=-1) @ v


def reference_block(block, family, x, offsets, boundary, num_frames):
    """One block on (B*T, N, C) tokens, frames frame-major within each video, with explicit loops."""
    part, lay = block.get_submodule, family.layout
    proj = {name: family.projection(block, name) for name in ("q", "k", "v", "attn_out", "fc1", "fc2")}
    h = _layer_norm(part(lay.norm1), x)
    h = _adapter(block, "attn_in", h)  # shared by Q, K and V (placements '4' and '3')
    q, k, v = (_linear(proj[p], _adapter(block, f"{p}_in", h)) for p in "qkv")  # separate: placement '6'
    bt, n, c = q.shape
    d = c // len(offsets)
    out = torch.zeros_like(q)
    for b in range(bt // num_frames):
        for t in range(num_frames):
            for head, dt in enumerate(offsets):
                cols = slice(head * d, (head + 1) * d)
                src = t + dt
                inside = 0 <= src < num_frames
                row = b * num_frames + (src if inside else t)
                kk, vv = k[row, :, cols], v[row, :, cols]
                if not inside and boundary == "zero":
                    kk, vv = torch.zeros_like(kk), torch.zeros_like(vv)
                out[b * num_frames + t, :, cols] = _attend(q[b * num_frames + t, :, cols], kk, vv)
    h = _adapter(block, "attn_out", _linear(proj["attn_out"], out))
    for path in lay.ls1:
        h = _layer_scale(part(path), h)
    x = x + h
    h = _linear(proj["fc1"], _adapter(block, "mlp_in", _layer_norm(part(lay.norm2), x)))
    for path in lay.act:
        h = _act(part(path), h)
    h = _adapter(block, "mlp_out", _linear(proj["fc2"], h))
    for path in lay.ls2:
        h = _layer_scale(part(path), h)
    return x + h


def reference_features(model, video, offsets, boundary):
    """forward_features from scratch: per frame, the tower's embedding plus temporal-embedding row t;
    then the reference blocks and the pooled token. ``offsets``: per layer, the per-head Δt."""
    family, tower = model.family, model.visual
    b, _, t, _, _ = video.shape
    frames = []
    for i in range(b):
        for j in range(t):
            tokens = family.embed(tower, video[i, :, j][None])[0]
            if model.temporal_embedding is not None:
                tokens = tokens + model.temporal_embedding[j]
            frames.append(tokens)
    x = family.pre_blocks(tower, torch.stack(frames))
    for block, per_head in zip(model.blocks, offsets):
        x = reference_block(block, family, x, per_head, boundary, t)
    return family.pool(tower, x).view(b, t, -1)


# --- building randomised models -------------------------------------------------------------------

def _randomise(model, seed):
    """Every parameter moved off its init (adapters' zero up-projections, zero biases, unit norms...)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def _model(offsets, boundary, placement, frames=4, layer_scale=False, seed=0):
    torch.manual_seed(seed)
    cfg = dict(backbone=BACKBONE, num_classes=3, num_frames=frames,
               temporal={"kind": "stdha", "offsets": offsets, "boundary": boundary},
               adapter={"kind": "linear", "placement": placement, "ratio": 0.25, "scale": 0.7, "dropout": 0.0})
    if layer_scale:  # the micro tower with open_clip's LayerScale after attention and MLP
        family, name = family_of(BACKBONE)
        arch = copy.deepcopy(family.arch(name))
        arch["vision_cfg"]["ls_init_value"] = 0.5
        model = build_from_backbone_cfg(ModelConfig.from_dict(cfg), arch)
    else:
        model = create_model(**cfg)
    return _randomise(model.double().eval(), seed)


def _block_io(model, video):
    """Each block's input and output in one forward of the model."""
    seen = []
    hooks = [blk.register_forward_hook(lambda m, args, out: seen.append((args[0], out))) for blk in model.blocks]
    try:
        with torch.no_grad():
            model.forward_features(video)
    finally:
        for hook in hooks:
            hook.remove()
    assert len(seen) == len(model.blocks)
    return seen


def _video(frames, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 3, frames, 32, 32, generator=g, dtype=torch.float64)


def _check_blocks(model, offsets, boundary, frames):
    """Every block against the reference on the block's own input, then the chain of reference blocks."""
    video = _video(frames)
    io = _block_io(model, video)
    for i, ((x, y), block) in enumerate(zip(io, model.blocks)):
        with torch.no_grad():
            ref = reference_block(block, model.family, x, offsets[i], boundary, frames)
        err = (ref - y).abs().max().item()
        assert err <= ATOL, f"block {i}: model differs from the reference by {err:.2e} (Δt={offsets[i]}, {boundary})"
    with torch.no_grad():
        ours, ref = model.forward_features(video), reference_features(model, video, offsets, boundary)
    assert (ours - ref).abs().max().item() <= ATOL


# --- (1) every VideoBlock of a built model against the reference -----------------------------------

# (config offsets, the per-head Δt every layer must use: temporal heads first, the rest spatial)
MULTISETS = [
    ("1x1,-1x1", (1, -1, 0, 0, 0, 0)),
    ("2x1,-1x2,1x1", (2, -1, -1, 1, 0, 0)),
    ("-2x1,3x1,0x4", (-2, 3, 0, 0, 0, 0)),
]


PLACED = {"4": {"attn_in", "attn_out", "mlp_in", "mlp_out"},
          "6": {"q_in", "k_in", "v_in", "attn_out", "mlp_in", "mlp_out"},
          "3": {"attn_in", "attn_out", "mlp_in"}}


@pytest.mark.parametrize("placement", ["4", "6", "3"])
@pytest.mark.parametrize("boundary", ["self", "zero"])
@pytest.mark.parametrize("spec,per_head", MULTISETS, ids=[m[0] for m in MULTISETS])
def test_every_block_matches_the_reference(spec, per_head, boundary, placement):
    model = _model(spec, boundary, placement)
    assert all(set(block.adapters) == PLACED[placement] for block in model.blocks)
    _check_blocks(model, [per_head] * len(model.blocks), boundary, frames=4)


@pytest.mark.parametrize("boundary", ["self", "zero"])
def test_per_layer_offsets_and_layer_scale_match_the_reference(boundary):
    """One multiset per layer, a 5-frame clip, and open_clip's LayerScale in the blocks."""
    model = _model(["2x1,1x1,0x4", "-1x2,-2x1"], boundary, "4", frames=5, layer_scale=True)
    assert type(model.blocks[0].get_submodule(model.family.layout.ls1[0])).__name__ == "LayerScale"
    _check_blocks(model, [(2, 1, 0, 0, 0, 0), (-1, -1, -2, 0, 0, 0)], boundary, frames=5)


@pytest.mark.parametrize("boundary", ["self", "zero"])
def test_temporal_heads_in_the_middle_match_the_reference(boundary):
    """The config puts temporal heads first (the authors' layout); a VideoBlock must honour any head
    order its operator has, so an operator with temporal heads in the middle is swapped in."""
    model = _model(None, boundary, "6")
    per_head = [(0, 0, 2, -1, 0, 0), (0, -2, 0, 0, 1, 0)]
    for block, offsets in zip(model.blocks, per_head):
        block.temporal = STDHA(offsets, 4, boundary)
    _check_blocks(model, per_head, boundary, frames=4)


# --- (2) the temporal embedding: frame t gets row t ------------------------------------------------

def test_temporal_embedding_row_t_goes_to_frame_t():
    model = _model("1x1,-1x1", "self", "4")
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():  # distinct, large rows: any other pairing of rows and frames shows
        model.temporal_embedding.copy_(torch.randn(model.temporal_embedding.shape, generator=g, dtype=torch.float64))
    video = _video(4)
    with torch.no_grad():
        ours = model.forward_features(video)
        ref = reference_features(model, video, [(1, -1, 0, 0, 0, 0)] * 2, "self")
        flipped = model.temporal_embedding.flip(0)
        model.temporal_embedding.copy_(flipped)
        wrong = model.forward_features(video)
    assert (ours - ref).abs().max().item() <= ATOL
    assert (wrong - ref).abs().max().item() > 1e-3  # the reference tells the order apart


# --- (3) the configured boundary reaches the model -------------------------------------------------

def test_boundary_changes_exactly_the_frames_whose_heads_reach_past_the_clip():
    """Same weights, 'self' vs 'zero': with Δt = (2, -1, 0...) over 4 frames, frame 1 reads frames 3 and
    0 (inside), frames 0, 2 and 3 each have a head past an end. After the first block only those frames
    differ; the model's logits differ; with all heads spatial the boundary changes nothing."""
    video = _video(4)
    outs, weights = {}, None
    for boundary in ("self", "zero"):
        model = _model("2x1,-1x1", boundary, "4")
        weights = weights or model.state_dict()
        model.load_state_dict(weights)
        first = _block_io(model, video)[0][1].view(2, 4, -1)
        with torch.no_grad():
            outs[boundary] = (first, model(video))
    diff = (outs["self"][0] - outs["zero"][0]).abs().amax(dim=(0, 2))
    assert diff[1].item() == 0.0
    assert all(diff[t].item() > 1e-3 for t in (0, 2, 3)), diff
    assert (outs["self"][1] - outs["zero"][1]).abs().max().item() > 1e-3
    spatial = [_model(None, boundary, "4") for boundary in ("self", "zero")]
    spatial[1].load_state_dict(spatial[0].state_dict())
    with torch.no_grad():
        assert torch.equal(spatial[0](video), spatial[1](video))
