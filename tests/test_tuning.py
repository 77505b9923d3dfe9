"""Temporal-head-only tuning, ``finetune: temporal_heads`` (issue 13, item 3; paper Table 3): only the Q/K/V
rows and output columns of the heads with Δt != 0 change, bit for bit, through real training with weight
decay, and the trainable count is the slices' size."""
from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch.nn as nn
from torch.utils.data import Dataset

from zeroi2v.bench import measure_step
from zeroi2v.config import FINETUNE_MODES, ModelConfig, load_config
from zeroi2v.merge import merge_adapters
from zeroi2v.model import create_model
from zeroi2v.train import train
from zeroi2v.tuning import count_trainable

FRAMES, WIDTH, HEAD_DIM = 4, 48, 8  # zeroi2v-micro: 6 heads of 8 channels, 2 blocks
OFFSETS = ["1x1,-1x1", "2x1,1x1,-1x1"]  # per block: 2 and 3 temporal heads


class Clips(Dataset):
    def __init__(self, n, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.x, self.y = torch.randn(n, 3, FRAMES, 32, 32, generator=g), torch.randint(0, 3, (n,), generator=g)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"video": self.x[i], "label": int(self.y[i]), "index": i}


def _model(**kw):
    torch.manual_seed(0)
    spec = {"backbone": "zeroi2v-micro", "num_classes": 3, "num_frames": FRAMES, "adapter": None,
            "temporal": {"kind": "stdha", "offsets": OFFSETS}, "finetune": "temporal_heads", **kw}
    return create_model(**spec)


def _temporal_entries(name, shape, offsets):
    """The entries the paper's row trains, written out from each block's head offsets: True where trainable."""
    mask = torch.zeros(shape, dtype=torch.bool)
    layer = int(name.split("resblocks.")[1].split(".")[0])
    for h, off in enumerate(offsets[layer]):
        if off == 0:
            continue
        ch = slice(h * HEAD_DIM, (h + 1) * HEAD_DIM)
        if "in_proj" in name:
            for part in range(3):  # Q, K, V rows
                mask[part * WIDTH + ch.start:part * WIDTH + ch.stop] = True
        elif name.endswith("out_proj.weight"):
            mask[:, ch] = True
    return mask


def _check_only_temporal_slices_changed(before, after, offsets):
    changed_slices = 0
    for name, old in before.items():
        new = after[name]
        if name.startswith(("head.", "temporal_embedding", "visual.ln_post.")) or ".adapters." in name:
            continue
        if ".attn." not in name:
            assert torch.equal(old, new), f"{name} changed"
            continue
        mask = _temporal_entries(name, old.shape, offsets)
        assert torch.equal(old[~mask], new[~mask]), f"a spatial-head entry of {name} changed"
        if mask.any():
            assert (old[mask] != new[mask]).float().mean() > 0.9, f"the temporal slices of {name} did not train"
            changed_slices += 1
    assert changed_slices == 6  # in_proj weight, in_proj bias, out_proj weight of both blocks


def test_training_leaves_every_spatial_head_weight_bit_identical(tmp_path):
    """zeroi2v.train.train with AdamW weight decay (which shrinks zero-gradient entries unless guarded)."""
    cfg = load_config(None, [
        "model.backbone=zeroi2v-micro", f"model.num_frames={FRAMES}", "model.num_classes=3",
        "model.finetune=temporal_heads", "optim.weight_decay=0.5", "optim.lr=3e-3", "optim.epochs=2",
        "optim.warmup_epochs=0", "optim.clip_grad=1.0", "train.batch_size=4", "train.total_batch=4", "data.workers=0",
        "train.device=cpu", "train.progress=false", "test.batch_size=4", f"train.out_dir={tmp_path}"])
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, adapter=None,
                                                             temporal={"kind": "stdha", "offsets": OFFSETS}))
    model = _model()
    before = copy.deepcopy(model.state_dict())
    result = train(cfg, model=model, train_set=Clips(12), val_set=Clips(4, seed=1))
    assert result["steps_per_epoch"] == 3
    _check_only_temporal_slices_changed(before, result["model"].state_dict(), model.offsets)


def test_a_plain_adamw_loop_keeps_them_too_where_a_gradient_mask_alone_would_not():
    def run(model):
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.5)
        g = torch.Generator().manual_seed(3)
        for _ in range(4):
            video, label = torch.randn(2, 3, FRAMES, 32, 32, generator=g), torch.randint(0, 3, (2,), generator=g)
            nn.functional.cross_entropy(model(video), label).backward()
            opt.step()
            opt.zero_grad()
        return model.state_dict()

    model = _model(adapter={"kind": "linear", "placement": "4"})
    before = copy.deepcopy(model.state_dict())
    _check_only_temporal_slices_changed(before, run(model), model.offsets)
    # the control: the same loop with only the gradients masked lets AdamW's decay move the spatial heads
    control = _model(adapter={"kind": "linear", "placement": "4"}, finetune="adapters")
    in_proj = control.visual.transformer.resblocks[0].attn.in_proj_weight
    in_proj.requires_grad_(True)
    mask = _temporal_entries("visual.transformer.resblocks.0.attn.in_proj_weight", in_proj.shape, model.offsets)
    in_proj.register_hook(lambda g: g * mask)
    after = run(control)["visual.transformer.resblocks.0.attn.in_proj_weight"]
    old = before["visual.transformer.resblocks.0.attn.in_proj_weight"]
    assert not torch.equal(old[~mask], after[~mask])


def test_trainable_count_is_the_slices_and_bench_reports_it():
    model = _model()
    assert model.offsets == [(1, -1, 0, 0, 0, 0), (2, 1, -1, 0, 0, 0)]
    slices = sum(int(_temporal_entries(n, p.shape, model.offsets).sum()) for n, p in model.named_parameters()
                 if ".attn." in n)
    assert slices == (2 + 3) * (3 * HEAD_DIM * WIDTH + 3 * HEAD_DIM + WIDTH * HEAD_DIM)  # per temporal head
    rest = FRAMES * WIDTH + 2 * WIDTH + (3 * WIDTH + 3)  # temporal embedding, ln_post, head
    assert count_trainable(model) == slices + rest
    assert measure_step(model, batch_size=1, steps=1, warmup=0, device="cpu")["trainable_params"] == slices + rest
    model.set_finetune("adapters")  # masks and hooks go: back to the plain count
    assert count_trainable(model) == sum(p.numel() for p in model.parameters() if p.requires_grad) == rest


def test_the_mode_is_listed_and_validated():
    assert "temporal_heads" in FINETUNE_MODES and "'temporal_heads'" in ModelConfig.__doc__ + _field_doc()
    base = ["model.backbone=zeroi2v-micro", f"model.num_frames={FRAMES}", "model.finetune=temporal_heads"]
    assert load_config(None, base).model.finetune == "temporal_heads"
    for kind in ("token_shift", "channel_shift", "none"):
        with pytest.raises(ValueError, match=f"model.finetune 'temporal_heads'.*model.temporal.kind '{kind}' has "
                                             f"no per-head offsets"):
            load_config(None, [*base, f"model.temporal.kind={kind}"])
    with pytest.raises(ValueError, match="every model.temporal.offsets Δt is 0"):
        load_config(None, [*base, "model.temporal.offsets=null"])


def _field_doc():
    import inspect
    source = inspect.getsource(ModelConfig)
    return source[source.index("finetune: str"):source.index("grad_checkpointing")]


def test_a_temporal_heads_model_with_adapters_still_merges_exactly():
    model = _model(adapter={"kind": "linear", "placement": "4"})
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ".adapters." in n:
                p.normal_(0, 0.05)
    merged = merge_adapters(model.eval())
    video = torch.randn(2, 3, FRAMES, 32, 32)
    with torch.no_grad():
        assert (model(video) - merged(video)).abs().max().item() <= 1e-4
    assert count_trainable(merged) == 0
