"""Temporal operators: what makes an image block see other frames at zero cost (paper Sec. 3.2).

A temporal operator lives in every ``VideoBlock`` (``zeroi2v.model``) and may act in three places:

- ``tokens(x)``: the tokens of the attention branch, (B*T, N, C), after the block's first norm and
  before any adapter or projection. The [cls]-token shift acts here (``zeroi2v.shifts``).
- ``mlp_tokens(x)``: the tokens of the MLP branch, (B*T, N, C), after the block's second norm and
  before any adapter or fc1. The [cls]-token shift acts here too ("before MHSA and MLP", Table 1a).
- ``qkv(q, k, v)``: the per-head queries, keys and values, (B*T, heads, N, head_dim), after the
  projection and before the attention. STDHA (Eq. 7-9) acts here: it re-indexes K/V in time; so
  does the temporal channel shift of every head (``zeroi2v.shifts``).

Frames are folded into the batch, frame-major within each video, so an operator reaches frame t + Δt
of the same video by re-indexing the batch axis. The block calls only the places an operator declares
(``on_tokens``, ``on_mlp_tokens``, ``on_qkv``), so an unused place costs nothing.

Operators are registered by name in ``TEMPORAL`` and configured by a spec, the model config's
``temporal: {kind: stdha, offsets: ..., boundary: ...}``. Each class checks its own spec once
(``check_spec``); the config validation and the model both call that, nothing else parses it.
A new operator is one subclass plus ``@TEMPORAL.register("name")``. Registered here: ``stdha`` (the
default), ``token_shift``, ``channel_shift`` and ``none`` (every head spatial, the image model's blocks).
"""
from __future__ import annotations

from typing import Any, ClassVar, Mapping, Sequence

import torch
import torch.nn as nn

from zeroi2v.registry import Registry, with_defaults

TEMPORAL = Registry("temporal operator")
DEFAULT_KIND = "stdha"
BOUNDARIES = ("self", "zero")
"""What an operator reads when t + Δt falls outside the clip: ``self``, frame t's own values (the authors'
code; STDHA's default), or ``zero``, zeros (the zero padding of TSM and TokShift; the shifts' default)."""


class TemporalOperator(nn.Module):
    """Base class: the identity in both places. Subclasses override what they use and say so."""

    on_tokens: ClassVar[bool] = False
    """The block calls ``tokens(x)`` on the attention branch's input."""
    on_mlp_tokens: ClassVar[bool] = False
    """The block calls ``mlp_tokens(x)`` on the MLP branch's input."""
    on_qkv: ClassVar[bool] = False
    """The block calls ``qkv(q, k, v)`` before the attention."""
    in_place_qkv: ClassVar[bool] = False
    """The operator also has ``qkv_(qkv)``, the same re-indexing done in place on the projection's packed
    output (B*T, N, 3, heads, head_dim); the block uses it when nothing reads Q/K/V before the operator."""
    defaults: ClassVar[dict[str, Any]] = {}
    """Every spec key the operator takes, with its default (the docstring of the subclass explains them)."""

    @classmethod
    def check_spec(cls, spec: Mapping[str, Any], *, num_heads: int | Sequence[int], num_layers: int, num_frames: int,
                   stages: Sequence[int] | None = None) -> dict:
        """Validate a spec (without ``kind``) against the backbone's heads/layers and the clip length.

        ``num_heads``: one head count for every layer, or one per layer (Swin's stages have 4/8/16/32 heads
        in Swin-B); ``stages``: how many layers each stage of a hierarchical backbone has (None: one stage).

        Returns the complete spec (defaults filled in, values normalised) that ``from_spec`` takes.
        Raises ValueError naming the spec key (the caller prefixes ``model.temporal.``).
        """
        return with_defaults(spec, cls.defaults, f"temporal operator {cls.registry_name!r}", also=("kind",))

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], *, layer: int, num_heads: int, num_frames: int) -> "TemporalOperator":
        """The operator of block ``layer`` from a spec that ``check_spec`` returned."""
        raise NotImplementedError

    @classmethod
    def layer_offsets(cls, resolved: Mapping[str, Any]) -> list[list[int]] | None:
        """Per layer, per head, the frame offset each head reads from, read from a spec that ``check_spec``
        returned; None when the operator has no per-head structure (the default). Temporal-head-only
        tuning (``zeroi2v.tuning``) needs it."""
        return None

    @property
    def head_offsets(self) -> tuple[int, ...] | None:
        """Per head, which frame offset its keys/values come from (0: its own frame), or None when the
        operator has no per-head structure. Explanations split heads into spatial/temporal by this."""
        return None

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def mlp_tokens(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def qkv(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        return q, k, v

    def qkv_(self, qkv: torch.Tensor) -> None:
        """In place on the packed (B*T, N, 3, heads, head_dim) Q/K/V: what ``qkv`` returns, for operators
        that declare ``in_place_qkv``."""
        raise NotImplementedError


@TEMPORAL.register("none")
class NoTemporal(TemporalOperator):
    """The identity: every head stays spatial, frames never meet before the head's mean over time (the
    image model run frame by frame; with the temporal embedding it still sees frame order). No spec keys."""

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], *, layer: int, num_heads: int, num_frames: int) -> "NoTemporal":
        return cls()


def resolve_temporal(spec: Mapping[str, Any] | None, *, num_heads: int | Sequence[int], num_layers: int,
                     num_frames: int, stages: Sequence[int] | None = None) -> dict:
    """``{kind, ...complete spec}`` for a user spec (None: STDHA with its defaults). ``num_heads`` and
    ``stages`` as in ``TemporalOperator.check_spec`` (``Backbone.temporal_shape`` gives them)."""
    spec = dict(spec or {})
    kind = spec.pop("kind", DEFAULT_KIND)
    try:
        cls = TEMPORAL.get_class(kind)
    except ValueError as e:
        raise ValueError(f"kind: {e}") from None
    return {"kind": kind, **cls.check_spec(spec, num_heads=num_heads, num_layers=num_layers, num_frames=num_frames,
                                           stages=stages)}


def build_temporal(resolved: Mapping[str, Any], *, layer: int, num_heads: int, num_frames: int) -> TemporalOperator:
    """The operator of block ``layer`` from ``resolve_temporal``'s result."""
    spec = dict(resolved)
    return TEMPORAL.get_class(spec.pop("kind")).from_spec(spec, layer=layer, num_heads=num_heads, num_frames=num_frames)


from zeroi2v import stdha as _stdha  # noqa: E402,F401  (registers 'stdha')
from zeroi2v import shifts as _shifts  # noqa: E402,F401  (registers 'token_shift', 'channel_shift')
