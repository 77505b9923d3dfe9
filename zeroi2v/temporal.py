"""Temporal operators: what makes an image block see other frames at zero cost (paper Sec. 3.2).

A temporal operator lives in every ``VideoBlock`` (``zeroi2v.model``) and may act in two places:

- ``tokens(x)``: the tokens of the attention branch, (B*T, N, C), after the block's first norm and
  before any adapter or projection. Token shift and channel shift (TSM) act here.
- ``qkv(q, k, v)``: the per-head queries, keys and values, (B*T, heads, N, head_dim), after the
  projection and before the attention. STDHA (Eq. 7-9) acts here: it re-indexes K/V in time.

Frames are folded into the batch, frame-major within each video, so an operator reaches frame t + Δt
of the same video by re-indexing the batch axis. The block calls only the places an operator declares
(``on_tokens``, ``on_qkv``), so an unused place costs nothing.

Operators are registered by name in ``TEMPORAL`` and configured by a spec, the model config's
``temporal: {kind: stdha, offsets: ..., boundary: ...}``. Each class checks its own spec once
(``check_spec``); the config validation and the model both call that, nothing else parses it.
A new operator is one subclass plus ``@TEMPORAL.register("name")``.
"""
from __future__ import annotations

from typing import Any, ClassVar, Mapping

import torch
import torch.nn as nn

from zeroi2v.registry import Registry, with_defaults

TEMPORAL = Registry("temporal operator")
DEFAULT_KIND = "stdha"


class TemporalOperator(nn.Module):
    """Base class: the identity in both places. Subclasses override what they use and say so."""

    on_tokens: ClassVar[bool] = False
    """The block calls ``tokens(x)`` on the attention branch's input."""
    on_qkv: ClassVar[bool] = False
    """The block calls ``qkv(q, k, v)`` before the attention."""
    defaults: ClassVar[dict[str, Any]] = {}
    """Every spec key the operator takes, with its default (the docstring of the subclass explains them)."""

    @classmethod
    def check_spec(cls, spec: Mapping[str, Any], *, num_heads: int, num_layers: int, num_frames: int) -> dict:
        """Validate a spec (without ``kind``) against the backbone's heads/layers and the clip length.

        Returns the complete spec (defaults filled in, values normalised) that ``from_spec`` takes.
        Raises ValueError naming the spec key (the caller prefixes ``model.temporal.``).
        """
        return with_defaults(spec, cls.defaults, f"temporal operator {cls.registry_name!r}", also=("kind",))

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], *, layer: int, num_heads: int, num_frames: int) -> "TemporalOperator":
        """The operator of block ``layer`` from a spec that ``check_spec`` returned."""
        raise NotImplementedError

    @property
    def head_offsets(self) -> tuple[int, ...] | None:
        """Per head, which frame offset its keys/values come from (0: its own frame), or None when the
        operator has no per-head structure. Explanations split heads into spatial/temporal by this."""
        return None

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def qkv(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        return q, k, v


def resolve_temporal(spec: Mapping[str, Any] | None, *, num_heads: int, num_layers: int, num_frames: int) -> dict:
    """``{kind, ...complete spec}`` for a user spec (None: STDHA with its defaults)."""
    spec = dict(spec or {})
    kind = spec.pop("kind", DEFAULT_KIND)
    try:
        cls = TEMPORAL.get_class(kind)
    except ValueError as e:
        raise ValueError(f"kind: {e}") from None
    return {"kind": kind, **cls.check_spec(spec, num_heads=num_heads, num_layers=num_layers, num_frames=num_frames)}


def build_temporal(resolved: Mapping[str, Any], *, layer: int, num_heads: int, num_frames: int) -> TemporalOperator:
    """The operator of block ``layer`` from ``resolve_temporal``'s result."""
    spec = dict(resolved)
    return TEMPORAL.get_class(spec.pop("kind")).from_spec(spec, layer=layer, num_heads=num_heads, num_frames=num_frames)


from zeroi2v import stdha as _stdha  # noqa: E402,F401  (registers 'stdha')
