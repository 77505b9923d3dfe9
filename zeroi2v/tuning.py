"""Temporal-head-only tuning, ``model.finetune: temporal_heads`` (paper Table 3, row "Only tuning temporal
head": about 95% of full fine-tuning; supplementary: "we only trained W^{Q^t}, W^{K^t}, W^{V^t} ∈ R^{d×d^t},
W^{O^t} ∈ R^{d^t×d}, where d^t is the number of channels of the temporal head").

The model itself is set up, no copy of it: in every block, the Q/K/V projection (weight and bias) and the
attention output weight train, each with a mask of the entries that belong to the temporal heads (the
heads whose Δt is not 0): the Q, K and V rows of those heads, and the output columns that read them. The
output bias is shared by all heads and stays frozen. Two things keep every other entry exactly as it was:

- a gradient hook on each masked tensor zeroes its gradient outside the mask, so the optimiser state and
  gradient clipping see only the temporal slices;
- a step hook on every torch optimiser (registered once, globally, when this module is imported; it does
  nothing for tensors without a mask) writes the masked-out entries back after each step. Decoupled weight
  decay (AdamW) shrinks every entry of a tensor that has a gradient, zero or not, so masking the gradient
  alone would let the spatial heads drift; with the hook they stay bit-identical under any optimiser.

Everything else trains as in the 'adapters' mode: the classifier, the temporal embedding, the final norm,
and the adapters when the model has some (the paper's row has none: set ``model.adapter: null``).
"""
from __future__ import annotations

import weakref
from typing import Any, Sequence

import torch
import torch.nn as nn
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

_FROZEN = "_zeroi2v_frozen"
"""Attribute of a masked parameter: a bool tensor, True where the entry must not change."""
_MASKED: "weakref.WeakValueDictionary[int, nn.Parameter]" = weakref.WeakValueDictionary()
"""The masked parameters alive, by id: optimiser steps skip the check when there are none."""
_HANDLES: "weakref.WeakKeyDictionary[nn.Module, list]" = weakref.WeakKeyDictionary()
_STASH: "weakref.WeakKeyDictionary[torch.optim.Optimizer, list]" = weakref.WeakKeyDictionary()


def check_temporal_heads(offsets: Sequence[Sequence[int]] | None, kind: str) -> None:
    """ValueError unless per-layer, per-head offsets exist and some head is temporal."""
    if offsets is None:
        raise ValueError(f"model.finetune 'temporal_heads' trains the Q/K/V/O slices of the temporal heads, but "
                         f"model.temporal.kind {kind!r} has no per-head offsets; use kind: stdha, or another "
                         f"finetune mode")
    if not any(any(o) for o in offsets):
        raise ValueError("model.finetune 'temporal_heads' needs temporal heads, but every model.temporal.offsets "
                         "Δt is 0; give some heads a Δt (e.g. offsets: 1x1,-1x1) or use another finetune mode")


def _frozen_on(p: torch.Tensor, device: torch.device) -> torch.Tensor:
    frozen = getattr(p, _FROZEN)
    if frozen.device != device:
        frozen = frozen.to(device)
        setattr(p, _FROZEN, frozen)
    return frozen


def _mask_grad(p: nn.Parameter, grad: torch.Tensor) -> torch.Tensor:
    return grad.masked_fill(_frozen_on(p, grad.device), 0)


def temporal_head_masks(model: Any) -> list[tuple[nn.Parameter, torch.Tensor]]:
    """(parameter, trainable-entry mask) for every Q/K/V and attention-output tensor of a ZeroI2V model."""
    family, masks = model.family, {}
    check_temporal_heads([blk.temporal.head_offsets for blk in model.blocks] if all(
        blk.temporal.head_offsets is not None for blk in model.blocks) else None, model.temporal_spec["kind"])

    def mark(t: torch.Tensor | None, index: tuple) -> None:
        if t is not None:
            masks.setdefault(id(t), (t, torch.zeros(t.shape, dtype=torch.bool)))[1][index] = True

    for blk in model.blocks:
        q = family.projection(blk, "q")
        head_dim = q.weight[q.rows].shape[0] // blk.num_heads
        channels = torch.tensor([h * head_dim + i for h, off in enumerate(blk.temporal.head_offsets) if off
                                 for i in range(head_dim)], dtype=torch.long)
        for name in "qkv":
            p = family.projection(blk, name)
            rows = (p.rows.start or 0) + channels
            mark(p.weight, (rows,))
            mark(p.bias, (rows,))
        mark(family.projection(blk, "attn_out").weight, (slice(None), channels))
    return list(masks.values())


def mask_temporal_heads(model: nn.Module) -> None:
    """Make only the temporal heads' slices of the attention projections trainable (see the module docstring)."""
    clear_masks(model)
    handles = _HANDLES.setdefault(model, [])
    for p, trainable in temporal_head_masks(model):
        p.requires_grad_(True)
        setattr(p, _FROZEN, ~trainable.to(p.device))
        _MASKED[id(p)] = p
        handles.append(p.register_hook(lambda g, p=p: _mask_grad(p, g)))


def clear_masks(model: nn.Module) -> None:
    """Remove every mask and gradient hook of ``mask_temporal_heads`` from ``model``."""
    for h in _HANDLES.pop(model, []):
        h.remove()
    for p in model.parameters():
        if hasattr(p, _FROZEN):
            delattr(p, _FROZEN)
            _MASKED.pop(id(p), None)


def count_trainable(model: nn.Module) -> int:
    """Trainable parameters, counting a masked tensor by its trainable entries only."""
    return sum(int((~getattr(p, _FROZEN)).sum()) if hasattr(p, _FROZEN) else p.numel()
               for p in model.parameters() if p.requires_grad)


@torch.no_grad()
def _stash(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    if not _MASKED:
        return
    saved = [(p, f, p.detach()[f]) for g in optimizer.param_groups for p in g["params"] if hasattr(p, _FROZEN)
             for f in (_frozen_on(p, p.device),)]
    if saved:
        _STASH[optimizer] = saved


@torch.no_grad()
def _restore(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    for p, frozen, values in _STASH.pop(optimizer, ()):
        p.detach()[frozen] = values


register_optimizer_step_pre_hook(_stash)
register_optimizer_step_post_hook(_restore)
