"""Extension points: a new temporal operator or adapter kind is one class plus one registry line, and it
trains and merges without touching ``zeroi2v.model`` or ``zeroi2v.merge``; old configs and old merged
checkpoints keep loading."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from zeroi2v.adapters import ADAPTERS, Adapter
from zeroi2v.config import ModelConfig, check_model_config, load_config
from zeroi2v.merge import load_merged, merge_adapters, read_merged_config, save_merged
from zeroi2v.model import create_model
from zeroi2v.temporal import TEMPORAL, TemporalOperator

FIXTURE = Path(__file__).parent / "fixtures" / "merged_v1"


class SwapFrames(TemporalOperator):
    """Toy: the listed heads swap the keys/values of frame pairs (0<->1, 2<->3, ...)."""
    on_qkv = True
    defaults = {"heads": [0]}

    @classmethod
    def from_spec(cls, spec, *, layer, num_heads, num_frames):
        return cls(spec["heads"], num_frames)

    def __init__(self, heads, num_frames):
        super().__init__()
        self.heads, self.num_frames = list(heads), num_frames

    def qkv(self, q, k, v):
        def swap(x):
            bt, h, n, d = x.shape
            x = x.view(bt // self.num_frames, self.num_frames, h, n, d).clone()
            order = torch.arange(self.num_frames).view(-1, 2).flip(1).reshape(-1)
            x[:, :, self.heads] = x[:, order][:, :, self.heads]
            return x.view(bt, h, n, d)
        return q, swap(k), swap(v)


class ShiftChannels(TemporalOperator):
    """Toy token operator: the first ``channels`` channels of every token come from the previous frame."""
    on_tokens = True
    defaults = {"channels": 4}

    @classmethod
    def from_spec(cls, spec, *, layer, num_heads, num_frames):
        return cls(spec["channels"], num_frames)

    def __init__(self, channels, num_frames):
        super().__init__()
        self.channels, self.num_frames = channels, num_frames

    def tokens(self, x):
        bt, n, c = x.shape
        x = x.view(bt // self.num_frames, self.num_frames, n, c)
        shifted = torch.cat([x[:, :1, :, :self.channels], x[:, :-1, :, :self.channels]], dim=1)
        return torch.cat([shifted, x[..., self.channels:]], dim=-1).view(bt, n, c)


class LowRankDelta(Adapter):
    """Toy parallel adapter: ``P(x) + up(down(x))``, merged as a weight delta."""
    merge = "delta"
    defaults = {"rank": 2}

    @classmethod
    def from_spec(cls, spec, *, in_dim, out_dim, slot):
        return cls(in_dim, out_dim, spec["rank"])

    def __init__(self, in_dim, out_dim, rank):
        super().__init__()
        self.down = nn.Linear(in_dim, rank, bias=False)
        self.up = nn.Linear(rank, out_dim)
        nn.init.zeros_(self.up.weight)

    def forward(self, x):
        return self.up(self.down(x))

    def as_delta(self):
        return self.up.weight.double() @ self.down.weight.double(), self.up.bias.double()


class Frozen(Adapter):
    """Toy adapter that cannot be merged."""
    not_mergeable = "it applies a GELU, which no linear map can absorb"

    @classmethod
    def from_spec(cls, spec, *, in_dim, out_dim, slot):
        return cls()

    def forward(self, x):
        return nn.functional.gelu(x)


@pytest.fixture
def toys():
    """Register the toys (one line each) for the test, then remove them again."""
    TEMPORAL.register("swap_frames")(SwapFrames)
    TEMPORAL.register("shift_channels")(ShiftChannels)
    ADAPTERS.register("low_rank_delta")(LowRankDelta)
    ADAPTERS.register("frozen_gelu")(Frozen)
    yield
    for registry, name in ((TEMPORAL, "swap_frames"), (TEMPORAL, "shift_channels"),
                           (ADAPTERS, "low_rank_delta"), (ADAPTERS, "frozen_gelu")):
        del registry[name]


def _one_step(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    video, label = torch.randn(4, 3, 4, 32, 32, generator=g), torch.randint(0, 3, (4,), generator=g)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if ".adapters." in n}
    model.train()
    nn.functional.cross_entropy(model(video), label).backward()
    opt.step()
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters() if n in before), "nothing trained"
    return video


@pytest.mark.parametrize("temporal, adapter", [
    ({"kind": "swap_frames", "heads": [0, 2]}, {"kind": "linear", "placement": "4"}),
    ({"kind": "shift_channels", "channels": 6}, {"kind": "linear", "placement": "6"}),
    ({"kind": "stdha", "offsets": "1x1,-1x1"}, {"kind": "low_rank_delta", "placement": "6", "rank": 3}),
])
def test_a_registered_toy_trains_a_step_and_merges_exactly(toys, temporal, adapter):
    model = create_model(backbone="zeroi2v-micro", num_classes=3, num_frames=4, temporal=temporal, adapter=adapter)
    video = _one_step(model)
    merged = merge_adapters(model.eval())
    with torch.no_grad():
        ours, plain = model(video), merged(video)
    assert (ours - plain).abs().max().item() < 1e-5
    assert not any(len(b.adapters) for b in merged.blocks)


def test_the_toy_operator_changes_what_the_model_computes(toys):
    """The registered operator is really called: same weights, spatial-only vs the toy, other logits."""
    torch.manual_seed(0)
    toy = create_model(backbone="zeroi2v-micro", num_classes=3, num_frames=4,
                       temporal={"kind": "swap_frames", "heads": [0, 1]}).eval()
    spatial = create_model(backbone="zeroi2v-micro", num_classes=3, num_frames=4,
                           temporal={"kind": "stdha", "offsets": None}).eval()
    spatial.load_state_dict(toy.state_dict())
    video = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        assert (toy(video) - spatial(video)).abs().max() > 1e-4


def test_specs_are_checked_by_their_component(toys):
    with pytest.raises(ValueError, match=r"model\.temporal\.head: not a key of temporal operator 'swap_frames'"):
        check_model_config(ModelConfig(backbone="zeroi2v-micro", temporal={"kind": "swap_frames", "head": [0]}))
    with pytest.raises(ValueError, match=r"model\.temporal\.kind: unknown temporal operator 'tsm'"):
        check_model_config(ModelConfig(backbone="zeroi2v-micro", temporal={"kind": "tsm"}))
    with pytest.raises(ValueError, match=r"model\.adapter\.scal: not a key of adapter kind 'linear'"):
        check_model_config(ModelConfig(backbone="zeroi2v-micro", adapter={"kind": "linear", "scal": 2}))
    with pytest.raises(ValueError, match=r"model\.adapter\.ratio: must be > 0"):
        check_model_config(ModelConfig(backbone="zeroi2v-micro", adapter={"kind": "linear", "ratio": 0}))


def test_a_kind_that_cannot_merge_says_why(toys):
    model = create_model(backbone="zeroi2v-micro", num_classes=3, num_frames=4,
                         adapter={"kind": "frozen_gelu", "placement": ["mlp_out"]})
    with pytest.raises(ValueError, match="cannot be merged: it applies a GELU"):
        merge_adapters(model)


def test_old_flat_keys_load_with_a_one_line_notice(tmp_path, capsys):
    path = tmp_path / "old.yaml"
    path.write_text("model:\n  backbone: zeroi2v-micro\n  num_frames: 4\n  offsets: 1x1,-1x1\n  boundary: zero\n"
                    "  adapter: linear\n  adapter_placement: '6'\n  adapter_scale: 0.5\n")
    new = tmp_path / "new.yaml"
    new.write_text("model:\n  backbone: zeroi2v-micro\n  num_frames: 4\n"
                   "  temporal: {kind: stdha, offsets: '1x1,-1x1', boundary: zero}\n"
                   "  adapter: {kind: linear, placement: '6', ratio: 0.25, scale: 0.5, dropout: 0.0}\n")
    import zeroi2v.model_config as model_config
    model_config._noticed.clear()
    old_cfg = load_config(path)
    notice = capsys.readouterr().err.strip().splitlines()
    assert len(notice) == 1 and "offsets" in notice[0] and "model.temporal" in notice[0]
    assert old_cfg.model == load_config(new).model
    assert capsys.readouterr().err == ""  # the new form prints nothing


def test_a_merged_checkpoint_of_format_1_loads_and_predicts_identically(tmp_path):
    """tests/fixtures/merged_v1 was written by the code before the backbone protocol (format 1)."""
    from safetensors.torch import load_file
    assert read_merged_config(FIXTURE)["version"] == 1
    expected = load_file(str(FIXTURE / "expected.safetensors"))
    model = load_merged(FIXTURE)
    assert model.offsets == [(1, -1, 0, 0, 0, 0), (2, 0, 0, 0, 0, 0)] and model.temporal_spec["boundary"] == "zero"
    with torch.no_grad():
        assert torch.equal(model(expected["clip"]), expected["logits"])
    save_merged(model, tmp_path / "v2", extra={"class_names": read_merged_config(FIXTURE)["class_names"]})
    again = load_merged(tmp_path / "v2")
    assert json.loads((tmp_path / "v2" / "config.json").read_text())["version"] == 2
    with torch.no_grad():
        assert torch.equal(again(expected["clip"]), expected["logits"])


def test_backbone_names_take_an_optional_family_prefix():
    from zeroi2v.backbones import OpenCLIP, display_name, family_of
    assert family_of("open_clip:ViT-B-16") == (OpenCLIP, "ViT-B-16") == family_of("ViT-B-16")
    assert family_of("local-dir:/srv/x/image_model") == (OpenCLIP, "local-dir:/srv/x/image_model")
    assert display_name("local-dir:/srv/x/image_model") == "image_model (local folder)"
    a = create_model(backbone="open_clip:zeroi2v-micro", num_classes=3, num_frames=4)
    assert a.family is OpenCLIP and a.image_size == 32
