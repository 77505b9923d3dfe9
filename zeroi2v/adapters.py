"""Adapters (paper Sec. 3.3), where they sit in a ViT block, and how each kind merges away.

A linear adapter is ``x + s · W_up(drop(W_down x))``: no activation, so at inference it is the affine
map ``W_A = I + s·W_up·W_down``, ``b_A = s·(W_up·b_down + b_up)`` and folds into the projection next
to it (see ``zeroi2v.merge``). ``W_up`` starts at zero, so every adapter starts as the identity and the
adapted model starts as the image model.

Adapter kinds are registered by name in ``ADAPTERS`` and configured by the model config's
``adapter: {kind, placement, ratio, scale, dropout}``. Each kind declares how it merges (``merge``):

- ``"affine"``: the adapter is an affine map of the tokens *in series* with a projection, given by
  ``as_affine() -> (W_A, b_A)``; it folds into the input side of the projection it feeds ("before"
  slots) or the output side of the one it reads ("after" slots).
- ``"delta"``: the adapter runs *in parallel* with its slot's projection, ``P(x) + Δ(x)``, with
  ``Δ(x) = x @ ΔW.T + Δb`` given by ``as_delta() -> (ΔW, Δb)``; merging adds ``ΔW, Δb`` to ``P``.
- ``None``: it cannot be merged; ``not_mergeable`` says why (merging such a model is an error).

A new kind is one ``Adapter`` subclass plus ``@ADAPTERS.register("name")``. The kinds the paper compares
with (LoRA, the GELU adapter, ST-Adapter; Tables 2 and 3) are in ``zeroi2v.adapter_kinds``.
"""
from __future__ import annotations

from typing import Any, ClassVar, Mapping, NamedTuple, Sequence

import torch
import torch.nn as nn

from zeroi2v.registry import Registry, with_defaults

ADAPTERS = Registry("adapter kind")
MERGE_KINDS = ("affine", "delta", None)


class Slot(NamedTuple):
    """A place for an adapter: the projection it belongs to and on which side of it (for "affine")."""
    projection: str
    """'qkv' (fused Q/K/V), 'q', 'k', 'v' (their rows), 'attn_out', 'fc1' or 'fc2' (see ``zeroi2v.backbones``)."""
    side: str
    """'before' (feeds the projection) or 'after' (reads its output)."""
    text: str


SLOTS = {
    "attn_in": Slot("qkv", "before", "before qkv projection (one adapter shared by Q, K, V)"),
    "q_in": Slot("q", "before", "before the Q projection"),
    "k_in": Slot("k", "before", "before the K projection"),
    "v_in": Slot("v", "before", "before the V projection"),
    "attn_out": Slot("attn_out", "after", "after the attention output projection"),
    "mlp_in": Slot("fc1", "before", "before fc1"),
    "mlp_out": Slot("fc2", "after", "after fc2"),
}
# Placements: the slots of a block that get an adapter.
PLACEMENTS: dict[str, tuple[str, ...]] = {
    "4": ("attn_in", "attn_out", "mlp_in", "mlp_out"),          # paper default
    "6": ("q_in", "k_in", "v_in", "attn_out", "mlp_in", "mlp_out"),  # ViT-B 8-frame SSv2
    "3": ("attn_in", "attn_out", "mlp_in"),                     # without the one after fc2
    "qv": ("q_in", "v_in"),                                     # LoRA's own choice (Hu et al. 2022)
}
PROJECTION_NAMES = {"qkv": "attn_in", "q": "q_in", "k": "k_in", "v": "v_in", "o": "attn_out",
                    "fc1": "mlp_in", "fc2": "mlp_out"}
"""A placement list may name projections instead of slots: each stands for the slot of its projection."""


def placement_slots(placement: str | int | Sequence[str]) -> tuple[str, ...]:
    """A placement name ('4', '6', '3') or an explicit list of slot names, validated."""
    if isinstance(placement, (str, int)) and str(placement) in PLACEMENTS:
        return PLACEMENTS[str(placement)]
    if isinstance(placement, (str, int)):
        raise ValueError(f"unknown adapter placement {placement!r}; use one of {list(PLACEMENTS)} "
                         f"or a list of slots from {list(SLOTS)}")
    slots = tuple(PROJECTION_NAMES.get(s, s) if isinstance(s, str) else s for s in placement)
    unknown = [s for s in slots if s not in SLOTS]
    if unknown:
        raise ValueError(f"unknown adapter slot(s) {unknown}; slots are {list(SLOTS)} (or the projections "
                         f"{list(PROJECTION_NAMES)})")
    if len(set(slots)) != len(slots):
        raise ValueError(f"placement {list(placement)} names a slot twice")
    if "attn_in" in slots and {"q_in", "k_in", "v_in"} & set(slots):
        raise ValueError("use either the shared 'attn_in' adapter or separate q_in/k_in/v_in, not both")
    return slots


class Adapter(nn.Module):
    """Base class of adapter kinds. ``defaults`` lists the spec keys the kind takes (besides ``kind``
    and ``placement``); ``from_spec`` builds one for a slot whose projection maps ``in_dim -> out_dim``."""

    merge: ClassVar[str | None] = None
    """How the kind folds away: 'affine', 'delta' or None (see the module docstring)."""
    not_mergeable: ClassVar[str] = "this adapter kind declares no merge rule"
    """Why a kind with ``merge = None`` cannot be folded (shown when merging is asked for)."""
    defaults: ClassVar[dict[str, Any]] = {}
    needs: ClassVar[tuple[str, ...]] = ()
    """Facts of the clip the kind needs at build time, passed to ``from_spec`` as keywords:
    'num_frames' (T) and 'grid' (patches per side, (h, w)). Kinds that act on each token alone need none."""

    @classmethod
    def check_spec(cls, spec: Mapping[str, Any]) -> dict:
        """The complete spec (defaults filled in); ValueError naming the key (caller adds ``model.adapter.``)."""
        return with_defaults(spec, cls.defaults, f"adapter kind {cls.registry_name!r}", also=("kind", "placement"))

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], *, in_dim: int, out_dim: int, slot: str) -> "Adapter":
        raise NotImplementedError


def check_bottleneck(spec: dict) -> dict:
    """A bottleneck adapter's ``ratio`` (> 0) and ``dropout`` (in [0, 1]); returns the spec."""
    if not float(spec["ratio"]) > 0:
        raise ValueError(f"ratio: must be > 0, got {spec['ratio']}")
    if not 0.0 <= float(spec["dropout"]) <= 1.0:
        raise ValueError(f"dropout: must be in [0, 1], got {spec['dropout']}")
    return spec


@ADAPTERS.register("linear")
class LinearAdapter(Adapter):
    """``x + scale · up(dropout(down(x)))`` with a bottleneck of ``ratio × dim`` channels.

    Args:
        dim: channels in and out.
        ratio: bottleneck width as a fraction of ``dim`` (paper: 0.25; 0.125 for few-shot VidTAB).
        scale: ``s`` (paper: 0.5 for K400/UCF101/HMDB51, 1.0 for SSv2 and VidTAB).
        dropout: dropout inside the adapter while training (paper: 0.1; 0 for SSv2 ViT-B).
    """

    merge = "affine"
    defaults = {"ratio": 0.25, "scale": 1.0, "dropout": 0.0}

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

    @classmethod
    def check_spec(cls, spec: Mapping[str, Any]) -> dict:
        return check_bottleneck(super().check_spec(spec))

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], *, in_dim: int, out_dim: int, slot: str) -> "LinearAdapter":
        dim = in_dim if SLOTS[slot].side == "before" else out_dim
        return cls(dim, ratio=spec["ratio"], scale=spec["scale"], dropout=spec["dropout"])

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


def resolve_adapter(spec: Mapping[str, Any] | None) -> dict | None:
    """``{kind, placement (slot names), ...complete spec}``, or None for no adapters."""
    if spec is None:
        return None
    spec = dict(spec)
    kind = spec.pop("kind", "linear")
    try:
        cls = ADAPTERS.get_class(kind)
    except ValueError as e:
        raise ValueError(f"kind: {e}") from None
    try:
        slots = list(placement_slots(spec.pop("placement", "4")))
    except ValueError as e:
        raise ValueError(f"placement: {e}") from None
    return {"kind": kind, "placement": slots, **cls.check_spec(spec)}


def build_adapters(resolved: Mapping[str, Any] | None, dims: Mapping[str, tuple[int, int]],
                   clip: Mapping[str, Any] | None = None) -> dict[str, Adapter]:
    """One adapter per slot of ``resolve_adapter``'s placement; ``dims``: projection -> (in, out).
    ``clip``: the facts a kind may need (``Adapter.needs``); a callable value is called only when needed."""
    if resolved is None:
        return {}
    spec = dict(resolved)
    cls, slots = ADAPTERS[spec.pop("kind")], spec.pop("placement")
    missing = [k for k in cls.needs if k not in (clip or {})]
    if missing:
        raise ValueError(f"adapter kind {cls.registry_name!r} needs {missing} of the clip to be built")
    facts = {k: clip[k]() if callable(clip[k]) else clip[k] for k in cls.needs}
    return {s: cls.from_spec(spec, in_dim=dims[SLOTS[s].projection][0], out_dim=dims[SLOTS[s].projection][1], slot=s,
                             **facts) for s in slots}


from zeroi2v import adapter_kinds  # noqa: E402,F401  (registers LoRA, GELU and ST-Adapter)
