"""timm Swin with STDHA inside window attention (issue 13, item 4): with Δt = 0 and zero adapters the video
tower is timm's Swin frame by frame; a temporal head in a window reads the same window of frame t + Δt and
nothing else (a slow reference, shifted windows included); Swin-B's FLOPs match timm's published figure."""
import copy

import pytest
import torch
import torch.nn as nn

from zeroi2v.backbones.timm_common import parse_name
from zeroi2v.bench import count_flops
from zeroi2v.swin_video import SwinVideoBlock, swin_video_features, video_swin

timm = pytest.importorskip("timm")


def _tower():
    """Swin-T's widths and heads at 112 px, 2+1+1+1 blocks: stage 0 (28x28 tokens, 4x4 windows of 7x7) has a
    plain and a shifted-window block."""
    torch.manual_seed(0)
    return timm.create_model("swin_tiny_patch4_window7_224", img_size=112, depths=(2, 1, 1, 1), num_classes=0).eval()


def test_zero_adapters_and_no_shift_reproduce_timm_swin_features():
    ref = _tower()
    assert ref.layers[0].blocks[1].shift_size == (3, 3)
    video = video_swin(copy.deepcopy(ref), 3, None, {"kind": "linear", "placement": "6"}).eval()
    moving = video_swin(copy.deepcopy(ref), 3, ["1x1,-1x1", "1x1", None, None]).eval()
    clip = torch.randn(2, 3, 3, 112, 112)
    with torch.no_grad():
        theirs = ref.forward_head(ref.forward_features(clip.transpose(1, 2).reshape(6, 3, 112, 112)), pre_logits=True)
        ours, moved = swin_video_features(video, clip), swin_video_features(moving, clip)
    assert ours.shape == (2, 3, 768)
    assert (ours - theirs.view(2, 3, -1)).abs().max().item() <= 1e-5
    assert (moved - theirs.view(2, 3, -1)).abs().max().item() > 1e-3


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
    tower = _tower()
    plain = copy.deepcopy(tower.layers[0].blocks[1])
    video_swin(tower, 4, ["1x1,-2x1", None, None, None])
    blk = tower.layers[0].blocks[1]
    assert isinstance(blk, SwinVideoBlock) and any(blk.shift_size)
    x = torch.randn(8, 28, 28, 96)  # 2 clips x 4 frames
    with torch.no_grad():
        ours, slow = blk(x), _slow_block(plain, x, (1, -2, 0), 4)
    assert (ours - slow).abs().max().item() <= 1e-5
    # and the slow reference can tell: without the temporal heads it gives something else
    assert (ours - _slow_block(plain, x, (0, 0, 0), 4)).abs().max().item() > 1e-3


def test_swin_b_flops_match_timms_published_gmacs():
    """timm publishes 15.5 GMACs for swin_base_patch4_window7_224 at 224 px (model card of
    timm/swin_base_patch4_window7_224.ms_in22k_ft_in1k, 'Model Stats'); ours: torch's counter / 2, with
    STDHA in every stage (it adds no FLOP), per frame."""
    class Features(nn.Module):
        def __init__(self, tower):
            super().__init__()
            self.tower = tower

        def forward(self, clip):
            return swin_video_features(self.tower, clip)

    with torch.device("meta"):
        tower = timm.create_model("swin_base_patch4_window7_224", num_classes=0).eval()
        video_swin(tower, 2, ["1x1,-1x1", "1x1,-1x1", "1x2,-1x2", "1x4,-1x4"])
        clip = torch.empty(1, 3, 2, 224, 224)
    gmacs = count_flops(Features(tower), clip) / 2 / 1e9
    assert abs(gmacs - 15.5) / 15.5 <= 0.01, gmacs


def test_offsets_are_checked_per_stage_and_token_operators_are_refused():
    with pytest.raises(ValueError, match="stage 0 .3 heads.: .*5 temporal heads"):
        video_swin(_tower(), 4, ["1x5", None, None, None])
    with pytest.raises(ValueError, match="one Δt multiset per stage .4."):
        video_swin(_tower(), 4, ["1x1", None])
    assert parse_name("swin_tiny_patch4_window7_224?depths=(2,1,1,1)&img_size=112") == \
        ("swin_tiny_patch4_window7_224", {"depths": (2, 1, 1, 1), "img_size": 112})
