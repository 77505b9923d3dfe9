"""The temporal operators of Table 1a besides STDHA (issue 13, item 1): [cls]-token shift, temporal channel
shift in every head, and none. Each is checked at the model level against a slow reference (plain loops
over clips, frames and channels) swapped into the blocks, adds no parameter, keeps shapes, and merges."""
from __future__ import annotations

import copy
import json

import pytest
import torch

from zeroi2v.config import load_config
from zeroi2v.merge import load_merged, merge_adapters, save_merged
from zeroi2v.model import create_model
from zeroi2v.shifts import shift_channels
from zeroi2v.temporal import TEMPORAL, TemporalOperator
from adapter_helpers import random_adapters

FRAMES = 4


def _shifted(x, frame, out_frame, ch, offset, frames, boundary):
    """The value channel ``ch`` of ``out_frame`` gets from ``frame + offset`` (x is one clip, frame-major)."""
    src = frame + offset
    if 0 <= src < frames:
        return x[src][..., ch]
    return torch.zeros_like(x[frame][..., ch]) if boundary == "zero" else x[frame][..., ch]


class SlowShift(TemporalOperator):
    """The obvious reference: loops over clips, frames, channel groups and channels."""

    def __init__(self, spec, frames):
        super().__init__()
        self.spec, self.frames = spec, frames
        self.on_tokens = self.on_mlp_tokens = spec["kind"] == "token_shift"
        self.on_qkv = spec["kind"] == "channel_shift"

    def _loop(self, x):  # x: (B*T, ..., C); shifts the last axis' channel groups
        out, offsets = x.clone(), self.spec["offsets"]
        width = round(x.shape[-1] * self.spec["fraction"] / len(offsets))
        for b in range(x.shape[0] // self.frames):
            clip = x[b * self.frames:(b + 1) * self.frames]
            for t in range(self.frames):
                for i, off in enumerate(offsets):
                    for ch in range(i * width, (i + 1) * width):
                        out[b * self.frames + t][..., ch] = _shifted(clip, t, t, ch, off, self.frames,
                                                                     self.spec["boundary"])
        return out

    def tokens(self, x):
        out = x.clone()
        out[:, 0] = self._loop(x[:, 0])
        return out

    mlp_tokens = tokens

    def qkv(self, q, k, v):
        return (self._loop(q) if self.spec["targets"] == "qkv" else q), self._loop(k), self._loop(v)


SPECS = [
    {"kind": "token_shift"},
    {"kind": "token_shift", "fraction": 0.5, "offsets": [2, -1, 1], "boundary": "self"},
    {"kind": "channel_shift"},
    {"kind": "channel_shift", "fraction": 0.5, "targets": "qkv", "boundary": "self"},
    {"kind": "channel_shift", "fraction": 0.75, "offsets": [-2, 1, 3], "targets": "kv"},
]


def _model(temporal, seed=0, **kw):
    torch.manual_seed(seed)
    return create_model(backbone="zeroi2v-micro", num_classes=3, num_frames=FRAMES, temporal=temporal, **kw)



@pytest.mark.parametrize("temporal", SPECS, ids=lambda s: "-".join(f"{v}" for v in s.values()))
def test_fast_operator_matches_the_slow_loop_at_the_model_level(temporal):
    model = random_adapters(_model(temporal)).eval()
    slow = copy.deepcopy(model)
    for blk in slow.blocks:
        blk.temporal = SlowShift(model.temporal_spec, FRAMES)
    video = torch.randn(2, 3, FRAMES, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        fast_out, slow_out = model.forward_features(video), slow.forward_features(video)
        plain = _model({"kind": "none"})
        plain.load_state_dict(model.state_dict())
        none_out = plain.eval().forward_features(video)
    assert fast_out.shape == slow_out.shape == (2, FRAMES, 48)
    assert (fast_out - slow_out).abs().max().item() < 1e-5
    assert (fast_out - none_out).abs().max().item() > 1e-3  # the operator really acts


@pytest.mark.parametrize("temporal", SPECS + [{"kind": "none"}], ids=lambda s: s["kind"])
def test_operators_add_no_parameter_and_keep_shapes(temporal):
    model, spatial = _model(temporal), _model({"kind": "stdha", "offsets": None})
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in spatial.parameters())
    assert model.state_dict().keys() == spatial.state_dict().keys()
    op = model.blocks[0].temporal
    assert not list(op.parameters()) and not list(op.buffers())
    x = torch.randn(2 * FRAMES, 6, 17, 8)
    assert all(y.shape == x.shape for y in op.qkv(x, x, x))
    tokens = torch.randn(2 * FRAMES, 17, 48)
    assert op.tokens(tokens).shape == op.mlp_tokens(tokens).shape == tokens.shape


def test_token_shift_moves_only_the_class_token_and_pads_with_zeros():
    """Boundary: the group that reads frame t+1 is zero in the last frame, the t-1 group in the first."""
    op = TEMPORAL["token_shift"](FRAMES, 0.5, [1, -1], "zero")
    x = torch.arange(1.0, 1 + FRAMES * 3 * 4).view(FRAMES, 3, 4)  # one clip, 3 tokens, 4 channels
    out = op.tokens(x)
    assert torch.equal(out[:, 1:], x[:, 1:]) and torch.equal(out[:, 0, 2:], x[:, 0, 2:])
    assert torch.equal(out[:-1, 0, 0], x[1:, 0, 0]) and out[-1, 0, 0] == 0
    assert torch.equal(out[1:, 0, 1], x[:-1, 0, 1]) and out[0, 0, 1] == 0
    keep = TEMPORAL["token_shift"](FRAMES, 0.5, [1, -1], "self").tokens(x)
    assert keep[-1, 0, 0] == x[-1, 0, 0] and keep[0, 0, 1] == x[0, 0, 1]


def test_channel_shift_shifts_every_head_and_leaves_q_for_kv():
    op = TEMPORAL["channel_shift"](FRAMES, 0.25, [-1, 1], "zero", "kv")
    q, k = torch.randn(2 * FRAMES, 3, 5, 8), torch.randn(2 * FRAMES, 3, 5, 8)
    q2, k2, _ = op.qkv(q, k, k)
    assert q2 is q
    assert torch.equal(k2, shift_channels(k, FRAMES, [-1, 1], 1, "zero"))
    clip = k.view(2, FRAMES, 3, 5, 8)
    out = k2.view(2, FRAMES, 3, 5, 8)
    assert torch.equal(out[:, 1:, :, :, 0], clip[:, :-1, :, :, 0]) and not out[:, 0, :, :, 0].any()
    assert torch.equal(out[:, :-1, :, :, 1], clip[:, 1:, :, :, 1]) and not out[:, -1, :, :, 1].any()
    assert torch.equal(out[..., 2:], clip[..., 2:])


def test_none_is_the_spatial_model_and_the_block_calls_no_unused_place(monkeypatch):
    none, spatial = _model({"kind": "none"}).eval(), _model({"kind": "stdha", "offsets": None}).eval()
    spatial.load_state_dict(none.state_dict())
    video = torch.randn(2, 3, FRAMES, 32, 32)
    with torch.no_grad():
        assert torch.equal(none(video), spatial(video))
    assert none.offsets == [(0,) * 6] * 2

    def boom(self, *a):
        raise AssertionError("an unused place was called")
    for name in ("tokens", "mlp_tokens"):
        monkeypatch.setattr(TEMPORAL["stdha"], name, boom)
    monkeypatch.setattr(TEMPORAL["token_shift"], "qkv", boom)
    with torch.no_grad():
        _model({"kind": "stdha"}).eval()(video)
        _model({"kind": "token_shift"}).eval()(video)


@pytest.mark.parametrize("temporal", SPECS[::2] + [SPECS[3], {"kind": "none"}], ids=lambda s: s["kind"])
def test_merge_and_the_merged_checkpoint_keep_every_operator(tmp_path, temporal):
    model = random_adapters(_model(temporal, adapter={"kind": "linear", "placement": "6"})).eval()
    merged = merge_adapters(model)
    video = torch.randn(2, 3, FRAMES, 32, 32)
    with torch.no_grad():
        before, after = model(video), merged(video)
    assert (before - after).abs().max().item() <= 1e-4
    save_merged(merged, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model"]["temporal"] == model.temporal_spec
    loaded = load_merged(tmp_path)
    assert type(loaded.blocks[0].temporal) is type(model.blocks[0].temporal)
    with torch.no_grad():
        assert (loaded(video) - before).abs().max().item() <= 1e-4


@pytest.mark.parametrize("override, key", [
    ("model.temporal.fraction=0", "model.temporal.fraction"),
    ("model.temporal.offsets=[1, 0]", "model.temporal.offsets"),
    ("model.temporal.offsets=[4]", "model.temporal.offsets"),
    ("model.temporal.boundary=wrap", "model.temporal.boundary"),
    ("model.temporal.targets=q", "model.temporal.targets"),
    ("model.temporal.heads=2", "model.temporal.heads"),
])
def test_bad_spec_keys_are_named(override, key):
    with pytest.raises(ValueError, match=f"^{key}: "):
        load_config(None, ["model.backbone=zeroi2v-micro", f"model.num_frames={FRAMES}",
                           "model.temporal.kind=channel_shift", override])


def test_a_fraction_that_moves_no_channel_is_named_at_the_first_clip():
    model = _model({"kind": "channel_shift", "fraction": 0.05}).eval()
    with pytest.raises(ValueError, match="model.temporal.fraction 0.05 moves no channel of a 8-channel"):
        model(torch.randn(1, 3, FRAMES, 32, 32))


@pytest.mark.parametrize("module", ["zeroi2v.stdha", "zeroi2v.shifts"])
def test_each_operator_module_imports_first(module):
    """The operator modules import each other; whichever a program imports first must work."""
    import subprocess
    import sys
    subprocess.run([sys.executable, "-c", f"import {module}; from zeroi2v.temporal import TEMPORAL; "
                    f"assert {{'stdha', 'token_shift', 'channel_shift', 'none'}} <= set(TEMPORAL)"], check=True)
