"""Linear adapters (paper Sec. 3.3) and where they sit in a ViT block.

A linear adapter is ``x + s · W_up(drop(W_down x))``: no activation, so at inference it is the affine
map ``W_A = I + s·W_up·W_down``, ``b_A = s·(W_up·b_down + b_up)`` and folds into the projection next
to it (see ``zeroi2v.merge``). ``W_up`` starts at zero, so every adapter starts as the identity and the
adapted model starts as the image model.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

# Placements: the slots of a block that get an adapter. "before" slots feed a projection
# (the adapter folds into its input side), "after" slots read one (folds into its output side).
SLOTS = {
    "attn_in": "before qkv projection (one adapter shared by Q, K, V)",
    "q_in": "before the Q projection", "k_in": "before the K projection", "v_in": "before the V projection",
    "attn_out": "after the attention output projection",
    "mlp_in": "before fc1 (c_fc)",
    "mlp_out": "after fc2 (c_proj)",
}
PLACEMENTS: dict[str, tuple[str, ...]] = {
    "4": ("attn_in", "attn_out", "mlp_in", "mlp_out"),          # paper default
    "6": ("q_in", "k_in", "v_in", "attn_out", "mlp_in", "mlp_out"),  # ViT-B 8-frame SSv2
    "3": ("attn_in", "attn_out", "mlp_in"),                     # without the one after fc2
}


def placement_slots(placement: str | int | Sequence[str]) -> tuple[str, ...]:
    """A placement name ('4', '6', '3') or an explicit list of slot names, validated."""
    if isinstance(placement, (str, int)) and str(placement) in PLACEMENTS:
        return PLACEMENTS[str(placement)]
    if isinstance(placement, str):
        raise ValueError(f"unknown adapter placement {placement!r}; use one of {list(PLACEMENTS)} "
                         f"or a list of slots from {list(SLOTS)}")
    slots = tuple(placement)
    unknown = [s for s in slots if s not in SLOTS]
    if unknown:
        raise ValueError(f"unknown adapter slot(s) {unknown}; slots are {list(SLOTS)}")
    if "attn_in" in slots and {"q_in", "k_in", "v_in"} & set(slots):
        raise ValueError("use either the shared 'attn_in' adapter or separate q_in/k_in/v_in, not both")
    return slots


class LinearAdapter(nn.Module):
    """``x + scale · up(dropout(down(x)))`` with a bottleneck of ``ratio × dim`` channels.

    Args:
        dim: channels in and out.
        ratio: bottleneck width as a fraction of ``dim`` (paper: 0.25; 0.125 for few-shot VidTAB).
        scale: ``s`` (paper: 0.5 for K400/UCF101/HMDB51, 1.0 for SSv2 and VidTAB).
        dropout: dropout inside the adapter while training (paper: 0.1; 0 for SSv2 ViT-B).
    """

    mergeable = True

    def __init__(self, dim: int, ratio: float = 0.25, scale: float = 1.0, dropout: float = 0.0):
        super().__init__()
        hidden = max(1, round(dim * ratio))
        self.scale = float(scale)
        self.down = nn.Linear(dim, hidden)
        self.drop = nn.Dropout(dropout)
        self.up = nn.Linear(hidden, dim)
        for layer in (self.down, self.up):
            nn.init.trunc_normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)
        nn.init.zeros_(self.up.weight)  # identity at start

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.scale * self.up(self.drop(self.down(x)))

    @torch.no_grad()
    def as_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The adapter as ``(W_A, b_A)`` with ``adapter(x) == x @ W_A.T + b_A`` (dropout off)."""
        w_up, w_down = self.up.weight.double(), self.down.weight.double()
        eye = torch.eye(w_up.shape[0], dtype=torch.float64, device=w_up.device)
        weight = eye + self.scale * w_up @ w_down
        bias = self.scale * (w_up @ self.down.bias.double() + self.up.bias.double())
        return weight, bias

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


ADAPTERS = {"linear": LinearAdapter}
"""Adapter kinds by name. Only kinds with ``mergeable = True`` fold away at inference."""


def build_adapter(kind: str, dim: int, **kwargs) -> nn.Module:
    if kind not in ADAPTERS:
        raise ValueError(f"unknown adapter kind {kind!r}; known: {list(ADAPTERS)}")
    return ADAPTERS[kind](dim, **kwargs)
