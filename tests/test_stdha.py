import math
import random

import pytest
import torch

from zeroi2v.model import create_model
from zeroi2v.stdha import (PRESETS, STDHA, format_offsets, parse_offsets, shift_heads, shift_packed_,
                           stdha_attention)
from adapter_helpers import random_adapters


def reference_stdha(q, k, v, offsets, num_frames, boundary):
    """The slow, obvious STDHA: loops over videos, frames and heads; plain softmax attention."""
    bt, heads, n, d = q.shape
    out = torch.zeros_like(q)
    for b in range(bt // num_frames):
        for t in range(num_frames):
            for h in range(heads):
                src = t + offsets[h]
                inside = 0 <= src < num_frames
                if not inside:
                    src = t
                kk, vv = k[b * num_frames + src, h], v[b * num_frames + src, h]
                if not inside and boundary == "zero":
                    kk, vv = torch.zeros_like(kk), torch.zeros_like(vv)
                qq = q[b * num_frames + t, h]
                attn = torch.softmax(qq @ kk.T / math.sqrt(d), dim=-1)
                out[b * num_frames + t, h] = attn @ vv
    return out


@pytest.mark.parametrize("boundary", ["self", "zero"])
@pytest.mark.parametrize("with_cls", [True, False])
def test_stdha_matches_loop_reference(boundary, with_cls):
    rng = random.Random(0)
    for trial in range(6):
        heads, frames = rng.choice([(6, 4), (8, 8), (12, 8)])
        temporal = [rng.choice([1, -1, 2, -2, 3, -3]) for _ in range(rng.randint(1, heads // 2))]
        offsets = parse_offsets(temporal, heads, frames)
        tokens = 1 + 9 if with_cls else 9  # a class token (or not) and a 3x3 grid
        q, k, v = (torch.randn(2 * frames, heads, tokens, 5, dtype=torch.float64) for _ in range(3))
        ours = stdha_attention(q, k, v, offsets, frames, boundary)
        ref = reference_stdha(q, k, v, offsets, frames, boundary)
        assert torch.allclose(ours, ref, atol=1e-10), (offsets, boundary)


def test_shift_reads_the_right_frame():
    frames, heads = 4, 3
    # value = frame index, so the output says which frame each head read
    x = torch.arange(frames, dtype=torch.float32).view(frames, 1, 1, 1).expand(frames, heads, 2, 1).contiguous()
    out = shift_heads(x, (1, -1, 0), frames, "self")[:, :, 0, 0]
    assert out.tolist() == [[1, 0, 0], [2, 0, 1], [3, 1, 2], [3, 2, 3]]
    out = shift_heads(x + 1, (2, -1, 0), frames, "zero")[:, :, 0, 0]
    assert out.tolist() == [[3, 0, 1], [4, 1, 2], [0, 2, 3], [0, 3, 4]]


@pytest.mark.parametrize("boundary", ["self", "zero"])
def test_in_place_shift_equals_the_gather(boundary):
    """``STDHA.qkv_`` on the packed projection output == ``STDHA.qkv`` (the gather) on its Q/K/V views."""
    rng = random.Random(1)
    for trial in range(8):
        heads, frames = rng.choice([(6, 4), (8, 8), (12, 8)])
        offsets = [rng.choice([1, -1, 2, -2, 3, -3, 0]) for _ in range(heads)]  # runs in any order
        op = STDHA(offsets, frames, boundary)
        packed = torch.randn(2 * frames, 10, 3, heads, 5)
        q, k, v = packed.permute(2, 0, 3, 1, 4).unbind(0)
        want = op.qkv(q, k, v)
        shifted = packed.clone()
        shift_packed_(shifted, offsets, frames, boundary)
        for g, w in zip(shifted.permute(2, 0, 3, 1, 4).unbind(0), want):
            assert torch.equal(g, w), (offsets, boundary)
        op.qkv_(packed)  # the module's own call, with its buffered tables
        assert all(torch.equal(g, w) for g, w in zip(packed.permute(2, 0, 3, 1, 4).unbind(0), want))


def _stdha_model(frames=4):
    torch.manual_seed(0)
    model = create_model(backbone="zeroi2v-micro", num_classes=3, num_frames=frames,
                         temporal={"kind": "stdha", "offsets": "1x1,-1x1,2x1"})
    return random_adapters(model)


def _gather_path(model):
    """A no-op hook on every k probe: the block then reads Q/K/V before STDHA, so it takes the gather."""
    return [blk.k_probe.register_forward_hook(lambda m, i, o: None) for blk in model.blocks]


def test_model_takes_the_in_place_path_and_it_equals_the_gather_in_outputs_and_gradients(monkeypatch):
    model = _stdha_model()
    clip = torch.randn(2, 3, 4, model.image_size, model.image_size)
    calls = {"qkv": 0, "qkv_": 0}
    for name in calls:
        orig = getattr(STDHA, name)
        monkeypatch.setattr(STDHA, name, lambda self, *a, _o=orig, _n=name: (calls.__setitem__(_n, calls[_n] + 1),
                                                                              _o(self, *a))[1])

    def run():
        model.zero_grad()
        out = model(clip)
        out.square().sum().backward()
        return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    model.eval()  # no dropout; autograd still records (the backward runs through the in-place copies)
    out_fast, grads_fast = run()
    assert calls == {"qkv": 0, "qkv_": len(model.blocks)}
    hooks = _gather_path(model)
    out_gather, grads_gather = run()
    assert calls == {"qkv": len(model.blocks), "qkv_": len(model.blocks)}
    for h in hooks:
        h.remove()
    torch.testing.assert_close(out_fast, out_gather, rtol=0, atol=1e-6)
    assert grads_fast.keys() == grads_gather.keys() and any(".adapters." in n for n in grads_fast)
    for name in grads_fast:
        torch.testing.assert_close(grads_fast[name], grads_gather[name], rtol=1e-5, atol=1e-6, msg=name)


def test_all_spatial_is_identity_and_copies_nothing():
    x = torch.randn(8, 4, 3, 2)
    assert shift_heads(x, (0, 0, 0, 0), 4) is x


def test_stdha_module_has_no_parameters():
    assert sum(p.numel() for p in STDHA((1, -1, 0, 0), 8).parameters()) == 0


@pytest.mark.parametrize("spec,heads,expected", [
    ("1x2,-1x2,0x8", 12, (1, 1, -1, -1) + (0,) * 8),
    ("{1·1, -1·1, 0·10}", 12, (1, -1) + (0,) * 10),
    ("1x1,-1x1", 6, (1, -1, 0, 0, 0, 0)),
    ("0x6,2x2", 8, (2, 2) + (0,) * 6),
    ([1, -1, 0, 0], 4, (1, -1, 0, 0)),
    ([(1, 2), (0, 2)], 4, (1, 1, 0, 0)),
    (None, 3, (0, 0, 0)),
])
def test_parse_offsets(spec, heads, expected):
    assert parse_offsets(spec, heads, 8) == expected


# Table 11 as printed in the paper (SSv2: 11b) and our reading of 11a's temporal RF (K400).
TABLE_11 = {
    "ssv2_vit_b_8": {1: 1, -1: 1, 0: 10}, "ssv2_vit_b_16": {1: 1, -1: 1, 2: 1, -2: 1, 0: 8},
    "ssv2_vit_b_32": {1: 1, -1: 1, 2: 1, -2: 1, 3: 1, 0: 7},
    "ssv2_vit_l_8": {1: 2, -1: 2, 0: 12}, "ssv2_vit_l_16": {1: 2, -1: 2, 2: 2, -2: 2, 0: 8},
    "ssv2_vit_l_32": {1: 2, -1: 2, 2: 1, -2: 1, 3: 1, 0: 9},
}
TEMPORAL_RF = {"k400_vit_b_8": 3, "k400_vit_b_16": 4, "k400_vit_b_32": 6,
               "k400_vit_l_8": 3, "k400_vit_l_16": 4, "k400_vit_l_32": 6}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_table_11_presets(name):
    heads = 16 if "vit_l" in name else 12
    frames = int(name.rsplit("_", 1)[1])
    offsets = parse_offsets(name, heads, frames)
    assert len(offsets) == heads
    assert all(o != 0 for o in offsets[: sum(1 for o in offsets if o)])  # temporal heads come first
    counts = {o: offsets.count(o) for o in set(offsets)}
    if name in TABLE_11:
        assert counts == TABLE_11[name]
    else:
        assert max(offsets) - min(offsets) + 1 == TEMPORAL_RF[name]
    assert parse_offsets(format_offsets(offsets), heads, frames) == offsets


@pytest.mark.parametrize("spec,heads,frames,message", [
    ("1y2,0x10", 12, 8, "malformed"),
    ("1x2,,0x10", 12, 8, "malformed"),
    ("1x7,-1x7", 12, 8, "temporal heads"),
    ("1x2,0x4", 12, 8, "names 6 heads"),
    ("9x1", 12, 8, "outside"),
    ("1x0", 12, 8, "count"),
    ([1.5, 0], 2, 8, "malformed"),
])
def test_bad_offsets_are_clear_errors(spec, heads, frames, message):
    with pytest.raises(ValueError, match=message):
        parse_offsets(spec, heads, frames)


def test_bad_boundary():
    with pytest.raises(ValueError, match="boundary"):
        STDHA((1, 0), 4, boundary="wrap")


def test_head_counts_per_layer_and_offsets_per_stage():
    """Hierarchical backbones (Swin-B: 4/8/16/32 heads): each layer's multiset is parsed against its own
    head count; a list with one spec per stage fills that stage's layers."""
    from zeroi2v.temporal import resolve_temporal
    heads, stages = [4, 4, 8, 16, 16], [2, 1, 2]
    spec = resolve_temporal({"offsets": ["1x1", "1x1,-1x1", None]}, num_heads=heads, num_layers=5, num_frames=4,
                            stages=stages)
    assert spec["offsets"] == [[1, 0, 0, 0]] * 2 + [[1, -1] + [0] * 6] + [[0] * 16] * 2
    again = resolve_temporal(spec, num_heads=heads, num_layers=5, num_frames=4, stages=stages)
    assert again == spec  # the resolved spec checks again unchanged
    same = resolve_temporal({"offsets": "1x2,-1x1"}, num_heads=heads, num_layers=5, num_frames=4, stages=stages)
    assert [len(o) for o in same["offsets"]] == heads and all(o[:3] == [1, 1, -1] for o in same["offsets"])
    with pytest.raises(ValueError, match=r"offsets: stage 1 \(8 heads\): .*9 temporal heads"):
        resolve_temporal({"offsets": ["1x1", "1x9", None]}, num_heads=heads, num_layers=5, num_frames=4, stages=stages)
    with pytest.raises(ValueError, match=r"offsets: give one Δt multiset per layer \(12\), got 2"):
        resolve_temporal({"offsets": ["1x1", "1x1"]}, num_heads=12, num_layers=12, num_frames=4)


def test_compiled_merged_model_equals_eager():
    """torch.compile traces the in-place re-indexing (its row tables are made outside the graph) to the same
    logits as eager, and a second call (tables cached) as well."""
    from zeroi2v.merge import merge_adapters
    merged = merge_adapters(_stdha_model()).eval()
    clip = torch.randn(2, 3, 4, merged.image_size, merged.image_size)
    with torch.no_grad():
        want = merged(clip)
        compiled = torch.compile(merged)
        for _ in range(2):
            torch.testing.assert_close(compiled(clip), want, rtol=1e-5, atol=1e-5)
