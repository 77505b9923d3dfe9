"""timm Swin through the backbone protocol (issue 13, item 4): with Δt = 0 and zero adapters the video model is
timm's Swin frame by frame; a temporal head in a window reads the same window of frame t + Δt and nothing else
(a slow reference, shifted windows included); one Δt multiset per stage (Table 11b's Swin-B rows); adapters
merge exactly and patch merging gets none; Swin-B's FLOPs match timm's published figure; Grad-CAM, ST-Adapter
and token operators are refused with the reason; `zeroi2v train` and `merge` take it."""
import pytest
import torch

from zeroi2v.backbones import TimmSwin, TimmViT, family_of
from zeroi2v.backbones.timm_common import parse_name
from zeroi2v.bench import PlainViT, count_flops, count_params
from zeroi2v.config import check_model_config
from zeroi2v.merge import load_merged, merge_adapters, save_merged
from zeroi2v.model import ModelConfig, create_model
from zeroi2v.swin_video import SwinVideoBlock
from adapter_helpers import random_adapters

timm = pytest.importorskip("timm")

# Swin-T's widths and heads at 112 px, 2+1+1+1 blocks: stage 0 (28x28 tokens, 4x4 windows of 7x7) has a plain
# and a shifted-window block; heads 3/6/12/24
KW = dict(img_size=112, depths=(2, 1, 1, 1))
TINY = "timm:swin_tiny_patch4_window7_224?img_size=112&depths=(2,1,1,1)"


def _model(frames, offsets, adapter=None, seed=0, **kw):
    torch.manual_seed(seed)
    return create_model(backbone=TINY, num_classes=3, num_frames=frames, adapter=adapter,
                        temporal={"kind": "stdha", "offsets": offsets}, **kw).eval()


def _timm_reference(model):
    """timm's own Swin with the video model's backbone weights."""
    ref = timm.create_model("swin_tiny_patch4_window7_224", num_classes=0, **KW).eval()
    ref.load_state_dict({k[len("visual."):]: v for k, v in model.state_dict().items()
                         if k.startswith("visual.") and ".adapters." not in k})
    return ref



def test_names_reach_the_swin_family_and_v2_is_refused():
    assert family_of("timm:swin_base_patch4_window7_224.ms_in22k")[0] is TimmSwin
    assert family_of("timm:vit_base_patch16_224")[0] is TimmViT
    with pytest.raises(ValueError, match="model.backbone: SwinTransformerV2 is not a timm SwinTransformer .v1."):
        check_model_config(ModelConfig(backbone="timm:swinv2_tiny_window8_256", num_classes=3))
    assert parse_name("swin_tiny_patch4_window7_224?depths=(2,1,1,1)&img_size=112") == \
        ("swin_tiny_patch4_window7_224", {"depths": (2, 1, 1, 1), "img_size": 112})


@pytest.mark.parametrize("placement", ["4", "6"])
def test_zero_adapters_and_no_shift_reproduce_timm_swin_features(placement):
    model = _model(3, None, {"kind": "linear", "placement": placement})
    with torch.no_grad():  # random tower weights: make the final norm's affine non-trivial too
        model.visual.norm.weight.normal_(1.0, 0.2)
    ref = _timm_reference(model)
    assert ref.layers[0].blocks[1].shift_size == (3, 3)
    assert all(isinstance(b, SwinVideoBlock) for b in model.blocks) and len(model.blocks) == 5
    moving = _model(3, ["1x1,-1x1", "1x1", None, None], {"kind": "linear", "placement": placement})
    moving.load_state_dict(model.state_dict())
    clip = torch.randn(2, 3, 3, 112, 112)
    with torch.no_grad():
        theirs = ref.forward_head(ref.forward_features(clip.transpose(1, 2).reshape(6, 3, 112, 112)), pre_logits=True)
        ours, moved = model.forward_features(clip), moving.forward_features(clip)
    assert ours.shape == (2, 3, 768) and model.temporal_embedding.shape == (3, 96)  # on stage 0's tokens
    assert (ours - theirs.view(2, 3, -1)).abs().max().item() <= 1e-5
    assert (moved - theirs.view(2, 3, -1)).abs().max().item() > 1e-3  # the check can see a temporal head


def _slow_block(blk, x, offsets, frames):
    """One shifted-window block with STDHA, by loops over frames, windows and heads."""
    from timm.models.swin_transformer import window_partition, window_reverse
    bt, hh, ww, c = x.shape
    ws, shift, heads = blk.window_size, blk.shift_size, blk.attn.num_heads
    h = torch.roll(blk.norm1(x), shifts=(-shift[0], -shift[1]), dims=(1, 2))
    win = window_partition(h, ws).view(bt, -1, ws[0] * ws[1], c)
    nw, n, d = win.shape[1], win.shape[2], c // heads
    qkv = blk.attn.qkv(win).view(bt, nw, n, 3, heads, d)
    bias, mask = blk.attn._get_rel_pos_bias()[0], blk.attn_mask
    out = torch.zeros(bt, nw, n, heads, d)
    for f in range(bt):
        video, t = divmod(f, frames)
        for w in range(nw):
            for i, off in enumerate(offsets):
                src = video * frames + (t + off if 0 <= t + off < frames else t)
                q, k, v = qkv[f, w, :, 0, i], qkv[src, w, :, 1, i], qkv[src, w, :, 2, i]
                logits = q @ k.T * d ** -0.5 + bias[i] + (mask[w] if mask is not None else 0)
                out[f, w, :, i] = logits.softmax(-1) @ v
    h = blk.attn.proj(out.reshape(bt, nw, n, c)).view(-1, ws[0], ws[1], c)
    h = torch.roll(window_reverse(h, ws, hh, ww), shifts=shift, dims=(1, 2))
    x = x + h
    return x + blk.mlp(blk.norm2(x))


def test_a_temporal_head_reads_only_the_same_window_of_the_other_frame():
    model = _model(4, ["1x1,-2x1", None, None, None])
    plain = _timm_reference(model).layers[0].blocks[1]
    blk = model.blocks[1]
    assert isinstance(blk, SwinVideoBlock) and any(blk.shift_size) and blk.temporal.offsets == (1, -2, 0)
    x = torch.randn(8, 28, 28, 96)  # 2 clips x 4 frames
    with torch.no_grad():
        ours, slow = blk(x), _slow_block(plain, x, (1, -2, 0), 4)
    assert (ours - slow).abs().max().item() <= 1e-5
    # and the slow reference can tell: without the temporal heads it gives something else
    assert (ours - _slow_block(plain, x, (0, 0, 0), 4)).abs().max().item() > 1e-3


@pytest.mark.parametrize("adapter", [{"kind": "linear", "placement": "6"}, {"kind": "linear", "placement": "3"},
                                     {"kind": "lora", "placement": "qv"}])
def test_merged_equals_unmerged_patch_merging_gets_no_adapters_and_round_trips(adapter, tmp_path):
    model = random_adapters(_model(3, "1x1,-1x1", adapter))
    names = [n for n, _ in model.named_parameters()]
    assert any(".adapters." in n for n in names)
    assert not any(".adapters." in n for n in names if ".downsample." in n or "patch_embed" in n)
    assert not any(".adapters." in n for n, _ in model.visual.layers[1].downsample.named_modules(prefix="d"))
    merged = merge_adapters(model)
    clip = torch.randn(2, 3, 3, 112, 112)
    with torch.no_grad():
        before, after = model(clip), merged(clip)
    assert (before - after).abs().max().item() <= 1e-4
    assert (before - _model(3, "1x1,-1x1", adapter)(clip)).abs().max().item() > 1e-3  # adapters matter
    for stage in (1, 2, 3):  # patch merging untouched by the merge
        assert torch.equal(merged.visual.layers[stage].downsample.reduction.weight,
                           model.visual.layers[stage].downsample.reduction.weight)
    assert count_params(merged) == count_params(PlainViT(merged).visual) + 3 * 96 + 768 * 3 + 3
    loaded = load_merged(save_merged(merged, tmp_path / "ckpt"))
    with torch.no_grad():
        assert torch.equal(loaded(clip), after)
    assert loaded.offsets == merged.offsets and loaded.backbone_cfg["stages"] == [2, 1, 1, 1]


def test_merged_flops_equal_the_plain_timm_model():
    merged = merge_adapters(random_adapters(_model(2, "1x1,-1x1", {"kind": "linear", "placement": "4"})))
    clip = torch.randn(1, 3, 2, 112, 112)
    assert count_flops(merged, clip) == count_flops(PlainViT(merged), clip)


def test_swin_b_flops_match_timms_published_gmacs():
    """timm publishes 15.5 GMACs for swin_base_patch4_window7_224 at 224 px (model card of
    timm/swin_base_patch4_window7_224.ms_in22k_ft_in1k, 'Model Stats'); ours: torch's counter through
    create_model, per frame, with STDHA's per-stage multisets of Table 11b (they add no FLOP)."""
    with torch.device("meta"):
        model = create_model(backbone="timm:swin_base_patch4_window7_224.ms_in22k", num_classes=1000, num_frames=2,
                             temporal={"kind": "stdha", "offsets": ["1x1", "1x1,-1x1", "1x2,-1x2", "1x4,-1x4"]},
                             adapter=None).eval()
        clip = torch.empty(1, 3, 2, 224, 224)
    gmacs = count_flops(model, clip) / 2 / 1e9
    assert abs(gmacs - 15.5) / 15.5 <= 0.01, gmacs


def test_offsets_per_stage_follow_table_11b_and_are_checked_per_stage():
    facts = check_model_config(ModelConfig(backbone="timm:swin_base_patch4_window7_224", num_classes=3,
                                           num_frames=32, temporal={"kind": "stdha", "offsets": "ssv2_swin_b_32"}))
    offsets = facts["temporal"]["offsets"]
    assert [len(o) for o in offsets] == [4] * 2 + [8] * 2 + [16] * 18 + [32] * 2  # Swin-B: depths 2/2/18/2
    assert offsets[0] == [1, 0, 0, 0] and offsets[2] == [1, -1] + [0] * 6
    assert offsets[4] == [1, -1, 2, -2] + [0] * 12 and offsets[-1] == [1, 1, -1, -1, 2, 2, -2, -2] + [0] * 24
    with pytest.raises(ValueError, match=r"model.temporal.offsets: stage 0 \(3 heads\): .*5 temporal heads"):
        check_model_config(ModelConfig(backbone=TINY, temporal={"kind": "stdha", "offsets": "1x5"}))
    with pytest.raises(ValueError, match=r"one Δt multiset per stage \(4\) or per layer \(5\), got 2"):
        check_model_config(ModelConfig(backbone=TINY, temporal={"kind": "stdha", "offsets": ["1x1", None]}))
    with pytest.raises(ValueError, match="preset 'ssv2_swin_b_32' gives one Δt multiset to each of 4 stages; this "
                                         "backbone has 1"):
        check_model_config(ModelConfig(backbone="timm:vit_base_patch16_224", num_frames=32,
                                       temporal={"kind": "stdha", "offsets": "ssv2_swin_b_32"}))
    model = _model(4, ["1x1,-1x1", "1x1", None, "1x2"])  # the model resolves what the config check resolves
    assert model.temporal_spec == check_model_config(model.cfg)["temporal"]
    assert model.offsets[2] == (1, 0, 0, 0, 0, 0) and model.offsets[4][:3] == (1, 1, 0)


def test_what_swin_cannot_do_is_refused_with_the_reason():
    from zeroi2v.explain import gradcam
    model = _model(2, "1x1,-1x1")
    with pytest.raises(ValueError, match="Grad-CAM of head groups cannot run on timm:swin_tiny.*no single token grid"):
        gradcam(model, torch.randn(3, 2, 112, 112))
    with pytest.raises(ValueError, match=r"\(ST-Adapter\) cannot run on Swin; use adapter kind linear"):
        _model(2, None, {"kind": "st_adapter", "placement": "4"})
    with pytest.raises(ValueError, match="'token_shift' acts on tokens .a class token.; Swin has none"):
        create_model(backbone=TINY, num_classes=3, num_frames=2, temporal={"kind": "token_shift"})
    nwd = model.no_weight_decay()
    assert "visual.layers.0.blocks.1.attn.relative_position_bias_table" in nwd and "temporal_embedding" in nwd


class Clips(torch.utils.data.Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_zeroi2v_train_and_merge_take_a_swin_backbone(tmp_path):
    from zeroi2v.cli import main
    from zeroi2v.config import load_config
    from zeroi2v.train import train
    small = "timm:swin_tiny_patch4_window7_224?img_size=32&depths=(1,1)&num_heads=(2,4)&embed_dim=32&window_size=4"
    cfg = load_config(None, [f"model.backbone={small}", "model.num_frames=2", "model.num_classes=2",
                             "model.temporal.offsets=1x1", "train.batch_size=2", "train.total_batch=2",
                             "optim.epochs=1", "optim.warmup_epochs=0", "data.workers=0", "train.device=cpu",
                             "train.progress=false", f"train.out_dir={tmp_path / 'run'}"])
    g = torch.Generator().manual_seed(0)
    data = Clips([{"video": torch.randn(3, 2, 32, 32, generator=g), "label": i % 2, "index": i, "decode_failures": 0}
                  for i in range(4)])
    torch.manual_seed(0)
    model = create_model(cfg.model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = train(cfg, model=model, train_set=data, val_set=data)
    after = result["model"].state_dict()
    frozen = "visual.layers.1.blocks.0.attn.qkv.weight"
    assert torch.equal(before[frozen], after[frozen])
    assert not torch.equal(before["temporal_embedding"], after["temporal_embedding"])
    assert main(["merge", str(tmp_path / "run"), "--out", str(tmp_path / "merged")]) == 0
    merged = load_merged(tmp_path / "merged")
    clip = torch.randn(1, 3, 2, 32, 32)
    with torch.no_grad():
        assert (merged(clip) - result["model"].eval()(clip)).abs().max().item() <= 1e-4
