"""The adapter kinds of the paper's Tables 2 and 3 (issue 13, item 2): LoRA and the linear adapter merge
exactly in every placement; GELU and ST-Adapter are refused by ``merge`` with the reason and still train,
evaluate, predict and serve as unmerged runs; every kind starts as the identity; parameter counts follow
the formulas of the docstrings; ST-Adapter's conv reads only the same patch of neighbouring frames."""
from __future__ import annotations

import json

import pytest
import torch

from zeroi2v.adapter_kinds import LoRA, STAdapter
from zeroi2v.adapters import PLACEMENTS, SLOTS
from zeroi2v.bench import backbone_params, count_params
from zeroi2v.cli import main
from zeroi2v.config import ModelConfig, check_model_config
from zeroi2v.merge import merge_adapters, merge_refusal
from zeroi2v.model import create_model
from adapter_helpers import random_adapters

MICRO = dict(backbone="zeroi2v-micro", num_classes=3, num_frames=4)  # width 48, fc1 48 -> 96, 4x4 patches
WIDTH, HIDDEN, FRAMES = 48, 96, 4
EVERY_PLACEMENT = [*PLACEMENTS, *([slot] for slot in SLOTS), ["q", "o", "fc2"]]



@pytest.mark.parametrize("placement", EVERY_PLACEMENT, ids=str)
@pytest.mark.parametrize("adapter", [{"kind": "linear", "scale": 0.5, "dropout": 0.1},
                                     {"kind": "lora", "rank": 3, "alpha": 6, "dropout": 0.1}], ids=lambda a: a["kind"])
def test_merged_equals_unmerged_in_every_placement(adapter, placement):
    torch.manual_seed(0)
    model = random_adapters(create_model(**MICRO, temporal={"kind": "stdha", "offsets": "1x1,-1x1"},
                                    adapter={**adapter, "placement": placement})).eval()
    assert all(a.registry_name == adapter["kind"] for a in model.blocks[0].adapters.values())
    merged = merge_adapters(model)
    video = torch.randn(2, 3, FRAMES, 32, 32)
    with torch.no_grad():
        before, after = model(video), merged(video)
    assert (before - after).abs().max().item() <= 1e-4
    assert (before - model.head.bias).abs().max().item() > 1e-3  # the adapters did something to merge
    assert count_params(merged) == backbone_params(model) + FRAMES * WIDTH + (WIDTH * 3 + 3)


@pytest.mark.parametrize("kind, reason", [("gelu", "GELU between its down and up projections is not linear"),
                                          ("st_adapter", "mixes the tokens of neighbouring frames")])
def test_merge_refuses_the_non_linear_kinds_with_the_reason(kind, reason):
    model = create_model(**MICRO, adapter={"kind": kind, "placement": "4"})
    with pytest.raises(ValueError) as e:
        merge_adapters(model)
    message = str(e.value)
    assert "\n" not in message and f"adapter kind {kind!r}" in message and reason in message
    assert "--run" in message and merge_refusal(model) == message
    assert merge_refusal(create_model(**MICRO, adapter={"kind": "lora"})) is None


@pytest.mark.parametrize("adapter", [{"kind": "linear"}, {"kind": "lora", "rank": 4}, {"kind": "gelu"},
                                     {"kind": "st_adapter"}, {"kind": "st_adapter", "kernel": [3, 3, 3]}],
                         ids=lambda a: f"{a['kind']}{a.get('kernel', '')}")
@pytest.mark.parametrize("placement", ["4", "6"])
def test_every_kind_starts_as_the_image_model(adapter, placement):
    """Zero-initialised ``up``/``B``: before training the model is the one without adapters."""
    torch.manual_seed(0)
    model = create_model(**MICRO, adapter={**adapter, "placement": placement}).eval()
    plain = create_model(**MICRO, adapter=None).eval()
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    assert not missing and unexpected and all(".adapters." in k for k in unexpected)
    video = torch.randn(2, 3, FRAMES, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(video), plain(video), atol=1e-6, rtol=0)
        random_adapters(model)
        assert (model(video) - plain(video)).abs().max() > 1e-4  # and the adapters are really in the path


def _adapter_params(model, slot):
    return sum(p.numel() for p in model.blocks[0].adapters[slot].parameters())


def test_parameter_counts_follow_the_formulas():
    d, f, k, r = WIDTH, HIDDEN, 12, 12  # ratio 0.25 of the width 48
    linear = create_model(**MICRO, adapter={"kind": "linear", "placement": "6"})
    gelu = create_model(**MICRO, adapter={"kind": "gelu", "placement": "6"})
    st = create_model(**MICRO, adapter={"kind": "st_adapter", "placement": "6", "kernel": [3, 3, 1]})
    lora = create_model(**MICRO, adapter={"kind": "lora", "placement": "6"})  # rank = 0.25 x min(in, out)
    fused = create_model(**MICRO, adapter={"kind": "lora", "placement": ["qkv"], "rank": 5})
    for slot in PLACEMENTS["6"]:
        assert _adapter_params(linear, slot) == _adapter_params(gelu, slot) == 2 * d * k + k + d
        assert _adapter_params(st, slot) == 2 * d * k + k + d + k * (3 * 3 * 1 + 1)
    lora_in_out = {"q_in": (d, d), "k_in": (d, d), "v_in": (d, d), "attn_out": (d, d), "mlp_in": (d, f),
                   "mlp_out": (f, d)}
    for slot, (n_in, n_out) in lora_in_out.items():
        assert _adapter_params(lora, slot) == r * (n_in + n_out)
    assert _adapter_params(fused, "attn_in") == 5 * (d + 3 * d)
    # the paper's point: on non-square matrices LoRA at the same width costs more than a serial adapter
    for slot in ("mlp_in", "mlp_out"):
        assert _adapter_params(lora, slot) > _adapter_params(linear, slot)
    tunable = sum(p.numel() for p in lora.parameters() if p.requires_grad)
    assert tunable == sum(p.numel() for p in create_model(**MICRO, adapter=None).parameters() if p.requires_grad) + \
        2 * sum(r * (a + b) for a, b in lora_in_out.values())


def _st_reference(adapter: STAdapter, x: torch.Tensor) -> torch.Tensor:
    """ST-Adapter by loops: each patch (frame t, position p) adds taps of the same position p in frames
    t-1, t, t+1 (zero outside the clip); prefix tokens skip the conv."""
    bt, n, _ = x.shape
    t_len, patches = adapter.num_frames, adapter.grid[0] * adapter.grid[1]
    prefix = n - patches
    down = x @ adapter.down.weight.T + adapter.down.bias
    w, b = adapter.conv.weight[:, 0, :, 0, 0], adapter.conv.bias  # (k, 3)
    mixed = down.clone()
    for clip in range(bt // t_len):
        for t in range(t_len):
            for p in range(prefix, n):
                acc = b.clone()
                for tap, dt in enumerate((-1, 0, 1)):
                    if 0 <= t + dt < t_len:
                        acc = acc + w[:, tap] * down[clip * t_len + t + dt, p]
                mixed[clip * t_len + t, p] = acc
    return x + adapter.scale * (mixed @ adapter.up.weight.T + adapter.up.bias)


def test_st_adapter_conv_mixes_the_same_patch_of_neighbouring_frames_and_never_the_class_token():
    torch.manual_seed(0)
    adapter = STAdapter(8, num_frames=5, grid=(3, 2), ratio=0.5, scale=0.7).eval()
    with torch.no_grad():
        for param in adapter.parameters():
            param.copy_(torch.randn(param.shape) * 0.5)
    x = torch.randn(2 * 5, 1 + 6, 8)
    with torch.no_grad():
        out = adapter(x)
        assert torch.allclose(out, _st_reference(adapter, x), atol=1e-5, rtol=0)
        # one patch moved: only that position of its frame and the two neighbours change, no class token
        bumped = x.clone()
        bumped[5 + 2, 1 + 4] += 1.0  # clip 1, frame 2, patch 4
        changed = (adapter(bumped) - out).abs().amax(-1) > 0
        expected = torch.zeros_like(changed)
        expected[[5 + 1, 5 + 2, 5 + 3], 1 + 4] = True
        assert torch.equal(changed, expected)
        # a class token moved: only itself changes (it passes around the conv)
        bumped = x.clone()
        bumped[3, 0] += 1.0
        changed = (adapter(bumped) - out).abs().amax(-1) > 0
        expected = torch.zeros_like(changed)
        expected[3, 0] = True
        assert torch.equal(changed, expected)


def test_st_adapter_in_a_model_and_bad_specs():
    model = create_model(**MICRO, adapter={"kind": "st_adapter", "placement": ["mlp_in"]})
    adapter = model.blocks[1].adapters["mlp_in"]
    assert adapter.num_frames == FRAMES and adapter.grid == (4, 4)
    for spec, phrase in (({"kind": "st_adapter", "kernel": [2, 1, 1]}, r"model\.adapter\.kernel: must be three odd"),
                         ({"kind": "lora", "rank": 0}, r"model\.adapter\.rank: must be a whole number >= 1"),
                         ({"kind": "lora", "alpha": 8, "scale": 2.0}, r"model\.adapter\.alpha: give alpha"),
                         ({"kind": "gelu", "rank": 4}, r"model\.adapter\.rank: not a key of adapter kind 'gelu'"),
                         ({"kind": "lora", "placement": ["q", "q_in"]}, "names a slot twice")):
        with pytest.raises(ValueError, match=phrase):
            check_model_config(ModelConfig(backbone="zeroi2v-micro", adapter=spec))
    assert LoRA.from_spec(LoRA.check_spec({"alpha": 16, "rank": 8}), in_dim=4, out_dim=4, slot="q_in").scale == 2.0


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    assert main(["make-synthetic", "--out", str(out), "--per-class", "2,1,1", "--frames", "8",
                 "--classes", "move_left,move_right,colour_change"]) == 0
    return out


@pytest.mark.parametrize("kind", ["st_adapter", "gelu"])
def test_a_non_mergeable_run_trains_evaluates_predicts_and_serves_unmerged(kind, synthetic, tmp_path, capsys):
    from zeroi2v.demo import DemoBackend, resolve_checkpoint
    cfg, run, out = tmp_path / "cfg.yaml", tmp_path / "run", tmp_path / "merged"
    cfg.write_text(f"""
model: {{backbone: zeroi2v-micro, num_classes: 3, num_frames: 4, adapter: {{kind: {kind}, placement: '4'}}}}
data: {{format: mmaction, root: {synthetic}, train_ann: {synthetic}/train.txt, test_ann: {synthetic}/test.txt,
        randaugment: null, short_side: 32, workers: 0}}
optim: {{epochs: 1, warmup_epochs: 0}}
train: {{batch_size: 2, total_batch: 2, out_dir: {run}, progress: false}}
test: {{clips: 1, crops: 1}}
""")
    assert main(["train", str(cfg)]) == 0
    capsys.readouterr()
    assert main(["merge", str(run), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"adapter kind {kind!r}" in err and "cannot be merged" in err
    assert not out.exists()  # refused before anything was written
    assert main(["eval", str(cfg), "--run", str(run)]) == 0
    assert json.loads((run / "eval" / "results.json").read_text())
    video = synthetic / "test/move_left/move_left_0000.mp4"
    capsys.readouterr()
    assert main(["predict", "--run", str(run), "--json", "--top", "2", str(video)]) == 0
    top = json.loads(capsys.readouterr().out)[str(video)]
    backend = DemoBackend(resolve_checkpoint(run), warmup=False)
    assert len(top) == 2 and {r["class"] for r in top} <= set(backend.class_names)
    assert any(len(b.adapters) for b in backend.model.blocks)  # served unmerged
    result = backend.analyse(video)
    assert abs(float(result["probs"].sum()) - 1) < 1e-5
    assert result["probs"].shape == (3,) and 0 <= result["target_class"] < 3
    assert "Unmerged run" in backend.facts and "Extra cost vs the image model: 0" not in backend.facts
