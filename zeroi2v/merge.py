"""Structural re-parameterisation (paper Eq. 11): fold every linear adapter into its projection.

For an adapter ``(W_A, b_A)`` (see ``LinearAdapter.as_affine``) next to a projection ``(W_P, b_P)``:
    adapter *before* P:  W' = W_P · W_A,   b' = W_P · b_A + b_P
    adapter *after*  P:  W' = W_A · W_P,   b' = W_A · b_P + b_A
The merged model is the plain image ViT plus STDHA (no parameters) plus the temporal embedding and
classifier. A merged checkpoint is a directory: ``model.safetensors`` + ``config.json``.
"""
from __future__ import annotations

import copy
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from zeroi2v.model import ModelConfig, ZeroI2V, build_from_backbone_cfg

FORMAT = "zeroi2v-merged"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def _fold_before(weight: torch.Tensor, bias: torch.Tensor | None, adapter: nn.Module):
    w_a, b_a = adapter.as_affine()
    w = weight.double()
    new_w = w @ w_a
    new_b = w @ b_a + (bias.double() if bias is not None else 0)
    return new_w, new_b


def _fold_after(weight: torch.Tensor, bias: torch.Tensor | None, adapter: nn.Module):
    w_a, b_a = adapter.as_affine()
    new_w = w_a @ weight.double()
    new_b = w_a @ (bias.double() if bias is not None else torch.zeros(weight.shape[0], dtype=torch.float64)) + b_a
    return new_w, new_b


def _assign(weight: nn.Parameter, bias: nn.Parameter | None, new_w: torch.Tensor, new_b: torch.Tensor,
            rows: slice = slice(None)) -> None:
    weight.data[rows] = new_w.to(weight.dtype)
    if bias is None:
        raise ValueError("cannot fold an adapter bias into a projection without bias")
    bias.data[rows] = new_b.to(bias.dtype)


@torch.no_grad()
def merge_adapters(model: ZeroI2V) -> ZeroI2V:
    """A copy of ``model`` with every adapter folded into its neighbouring projection (eval mode)."""
    merged = copy.deepcopy(model).eval()
    for blk in merged.blocks:
        for slot, adapter in blk.adapters.items():
            if not getattr(adapter, "mergeable", False):
                raise ValueError(f"adapter {type(adapter).__name__} in slot {slot} is not linear; it cannot be merged")
            attn, mlp = blk.attn, blk.mlp
            if slot == "attn_in":
                _assign(attn.in_proj_weight, attn.in_proj_bias, *_fold_before(attn.in_proj_weight, attn.in_proj_bias, adapter))
            elif slot in ("q_in", "k_in", "v_in"):
                c = attn.embed_dim
                rows = slice(c * "qkv".index(slot[0]), c * ("qkv".index(slot[0]) + 1))
                _assign(attn.in_proj_weight, attn.in_proj_bias,
                        *_fold_before(attn.in_proj_weight[rows], attn.in_proj_bias[rows], adapter), rows)
            elif slot == "attn_out":
                p = attn.out_proj
                _assign(p.weight, p.bias, *_fold_after(p.weight, p.bias, adapter))
            elif slot == "mlp_in":
                p = mlp.c_fc
                _assign(p.weight, p.bias, *_fold_before(p.weight, p.bias, adapter))
            elif slot == "mlp_out":
                p = mlp.c_proj
                _assign(p.weight, p.bias, *_fold_after(p.weight, p.bias, adapter))
            else:
                raise ValueError(f"no merge rule for adapter slot {slot!r}")
        blk.adapters = nn.ModuleDict()
    merged.cfg = replace(model.cfg, adapter=None, finetune="linear_probe")  # frozen: nothing left to tune
    merged.set_finetune("linear_probe")
    for p in merged.parameters():
        p.requires_grad_(False)
    return merged


def save_merged(model: ZeroI2V, folder: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write a merged checkpoint directory; refuses a model that still has adapters."""
    from safetensors.torch import save_file
    if any(len(b.adapters) for b in model.blocks):
        raise ValueError("model still has adapters: call merge_adapters(model) first")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    config = {"format": FORMAT, "version": FORMAT_VERSION, "model": model.cfg.to_dict(),
              "backbone_cfg": model.backbone_cfg, "offsets_per_layer": [list(o) for o in model.offsets],
              "image_size": model.image_size, **(extra or {})}
    _atomic_write(folder / WEIGHTS, lambda tmp: save_file(tensors, tmp))
    _atomic_write(folder / CONFIG, lambda tmp: Path(tmp).write_text(json.dumps(config, indent=2)))
    return folder


def read_merged_config(folder: str | Path) -> dict[str, Any]:
    folder = Path(folder)
    path = folder / CONFIG
    if not path.is_file() or not (folder / WEIGHTS).is_file():
        raise FileNotFoundError(f"{folder} is not a merged checkpoint (needs {CONFIG} and {WEIGHTS}); "
                                f"make one with `zeroi2v merge` or `zeroi2v quickstart`")
    config = json.loads(path.read_text())
    if config.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} config (format={config.get('format')!r})")
    return config


def load_merged(folder: str | Path, device: str | torch.device = "cpu") -> ZeroI2V:
    """Load a merged checkpoint: the plain ViT + STDHA + temporal embedding + head, no adapter code."""
    from safetensors.torch import load_file
    config = read_merged_config(folder)
    cfg = ModelConfig.from_dict({**config["model"], "pretrained": None, "adapter": None})
    cfg = replace(cfg, offsets=config.get("offsets_per_layer", cfg.offsets))
    model = build_from_backbone_cfg(cfg, config["backbone_cfg"])
    state = load_file(str(Path(folder) / WEIGHTS))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{folder}/{WEIGHTS} does not match its config: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.set_finetune("linear_probe")
    return model.to(device).eval()


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(str(tmp))
    os.replace(tmp, path)
