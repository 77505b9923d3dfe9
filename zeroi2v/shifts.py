"""The zero-cost temporal operators STDHA is compared with in the paper's Table 1a: [cls]-token shift and
temporal channel shift. Like STDHA (``zeroi2v.stdha``) they add no parameter and no FLOP; unlike it they
mix channels of different frames inside one token or one head, where STDHA keeps each head's keys and
values whole (the paper's "purity of key-value pair information", Sec. 3.2).

Both move groups of channels along time: group ``i`` of frame ``t`` is read from frame ``t + offsets[i]``
of the same clip; the remaining channels stay. Past a clip's ends a group reads zeros (``boundary:
zero``, the zero padding of TSM and TokShift; default) or its own frame's values (``boundary: self``,
what the ZeroI2V authors' ablation code does: it starts from a copy of the input).

- ``token_shift``: the [cls]-token shift of TokShift (Zhang et al., ACM MM 2021), as the paper ran it
  for Table 1a: "performed before MHSA and MLP". Only the class token (the first token: every backbone
  family's ``embed`` puts it first) moves; the patch tokens stay.
- ``channel_shift``: the temporal channel shift of TPS (Xiang et al., ECCV 2022) the paper compares
  with: in *every* head, a fraction of the channels of K and V (``targets: kv``) or of Q, K and V
  (``targets: qkv``) come from other frames.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from zeroi2v.temporal import BOUNDARIES, TEMPORAL, TemporalOperator

TARGETS = ("kv", "qkv")


def _shift_time(g: torch.Tensor, offset: int, boundary: str) -> torch.Tensor:
    """``out[:, t] = g[:, t + offset]`` over the clip axis 1; outside the clip zeros or ``g[:, t]``."""
    t, k = g.shape[1], abs(offset)
    if offset > 0:
        fill = torch.zeros_like(g[:, t - k:]) if boundary == "zero" else g[:, t - k:]
        return torch.cat([g[:, k:], fill], dim=1)
    fill = torch.zeros_like(g[:, :k]) if boundary == "zero" else g[:, :k]
    return torch.cat([fill, g[:, :t - k]], dim=1)


def shift_channels(x: torch.Tensor, num_frames: int, offsets: Sequence[int], width: int,
                   boundary: str = "zero") -> torch.Tensor:
    """Shift channel groups of ``x`` (B*T, ..., C), frames folded into the batch frame-major, along time:
    channels ``[i*width, (i+1)*width)`` of frame t come from frame ``t + offsets[i]``; the rest stay."""
    bt = x.shape[0]
    if bt % num_frames:
        raise ValueError(f"batch of {bt} frames is not a multiple of num_frames={num_frames}")
    v = x.view(bt // num_frames, num_frames, *x.shape[1:])
    parts = [_shift_time(v[..., i * width:(i + 1) * width], off, boundary) for i, off in enumerate(offsets)]
    parts.append(v[..., len(offsets) * width:])
    return torch.cat(parts, dim=-1).view(x.shape)


def group_width(channels: int, fraction: float, groups: int, key: str = "fraction") -> int:
    """Channels per shifted group: ``round(channels * fraction / groups)``, at least one, and no more
    than fit (``channels // groups``)."""
    width = min(round(channels * fraction / groups), channels // groups)
    if width < 1:
        raise ValueError(f"model.temporal.{key} {fraction} moves no channel of a {channels}-channel vector "
                         f"split into {groups} groups; raise it to at least {groups / channels:.3g}")
    return width


class ChannelShiftBase(TemporalOperator):
    """What both shift operators share: the spec keys ``fraction``, ``offsets`` and ``boundary``."""

    @classmethod
    def check_spec(cls, spec: Mapping[str, Any], *, num_frames: int, **shape: Any) -> dict:
        spec = super().check_spec(spec, num_frames=num_frames, **shape)
        fraction, offsets, boundary = spec["fraction"], spec["offsets"], spec["boundary"]
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
            raise ValueError(f"fraction: the share of channels that move must be in (0, 1], got {fraction!r}")
        if not isinstance(offsets, (list, tuple)) or not offsets or not all(
                isinstance(o, int) and not isinstance(o, bool) and o != 0 for o in offsets):
            raise ValueError(f"offsets: give a list of non-zero frame offsets, one per channel group "
                             f"(e.g. [1, -1]), got {offsets!r}")
        too_far = [o for o in offsets if abs(o) >= num_frames]
        if too_far:
            raise ValueError(f"offsets: Δt {too_far[0]} reaches outside a {num_frames}-frame clip "
                             f"(|Δt| must be < num_frames)")
        if boundary not in BOUNDARIES:
            raise ValueError(f"boundary: must be one of {list(BOUNDARIES)}, got {boundary!r}")
        return {**spec, "fraction": float(fraction), "offsets": [int(o) for o in offsets]}

    def __init__(self, num_frames: int, fraction: float, offsets: Sequence[int], boundary: str):
        super().__init__()
        self.num_frames, self.fraction = int(num_frames), float(fraction)
        self.shift_offsets, self.boundary = tuple(int(o) for o in offsets), boundary
        self._widths: dict[int, int] = {}

    def _shift(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[-1]
        if c not in self._widths:
            self._widths[c] = group_width(c, self.fraction, len(self.shift_offsets))
        return shift_channels(x, self.num_frames, self.shift_offsets, self._widths[c], self.boundary)

    def extra_repr(self) -> str:
        return (f"fraction={self.fraction:.4g}, offsets={list(self.shift_offsets)}, num_frames={self.num_frames}, "
                f"boundary={self.boundary}")


@TEMPORAL.register("token_shift")
class TokenShift(ChannelShiftBase):
    """[cls]-token shift (TokShift, Zhang et al. 2021; paper Table 1a), before the attention and the MLP.

    The block hands it the normalised input of each branch (after ``norm1`` / ``norm2``, before any
    adapter): the class token of frame t takes channel group i from frame ``t + offsets[i]``. TokShift's
    code shifts the block input itself, before the norm and in the residual stream; here the residual
    stream stays per frame, as every temporal operator of this package leaves it.

    Spec (``model.temporal``):
        fraction: share of the class token's channels that move, split evenly over ``offsets`` (rounded
            per group; default 0.25: 1/8 of the channels read the next frame, 1/8 the previous one, TSM's
            ``fold_div = 8`` as in the common TokShift re-implementation).
        offsets: frame offset of each channel group (default ``[1, -1]``: TokShift's order, first the
            group that reads frame t + 1, then the one that reads t - 1).
        boundary: ``zero`` (default; TokShift's zero padding) or ``self`` (see ``zeroi2v.shifts``).
    """

    on_tokens = True
    on_mlp_tokens = True
    defaults = {"fraction": 0.25, "offsets": [1, -1], "boundary": "zero"}

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], *, layer: int, num_heads: int, num_frames: int) -> "TokenShift":
        return cls(num_frames, spec["fraction"], spec["offsets"], spec["boundary"])

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B*T, N, C): the class token (token 0) shifted, the patch tokens unchanged."""
        return torch.cat([self._shift(x[:, :1]), x[:, 1:]], dim=1)

    mlp_tokens = tokens


@TEMPORAL.register("channel_shift")
class ChannelShift(ChannelShiftBase):
    """Temporal channel shift in every head (TPS, Xiang et al. 2022; paper Table 1a "Shift KV/QKV").

    Acts on the per-head Q/K/V, (B*T, heads, N, head_dim), after the projection: in every head, channel
    group i of K and V (and Q with ``targets: qkv``) comes from frame ``t + offsets[i]``.

    Spec (``model.temporal``):
        fraction: share of each head's channels that move, the paper's channel change ratio R_c, split
            evenly over ``offsets`` (rounded per group; default 1/6: Table 1a's R_c of STDHA with 2 of 12
            temporal heads, and the authors' ``shift_div = 12``: 1/12 of the channels each way).
        offsets: frame offset of each channel group (default ``[-1, 1]``, the authors' order: first the
            group that reads frame t - 1).
        targets: ``kv`` (default; the better of the two in Table 1a) or ``qkv``.
        boundary: ``zero`` (default; TSM's zero padding) or ``self`` (the authors' ablation code).
    """

    on_qkv = True
    defaults = {"fraction": 1 / 6, "offsets": [-1, 1], "targets": "kv", "boundary": "zero"}

    @classmethod
    def check_spec(cls, spec: Mapping[str, Any], *, num_frames: int, **shape: Any) -> dict:
        spec = super().check_spec(spec, num_frames=num_frames, **shape)
        if spec["targets"] not in TARGETS:
            raise ValueError(f"targets: must be one of {list(TARGETS)}, got {spec['targets']!r}")
        return spec

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], *, layer: int, num_heads: int, num_frames: int) -> "ChannelShift":
        return cls(num_frames, spec["fraction"], spec["offsets"], spec["boundary"], spec["targets"])

    def __init__(self, num_frames: int, fraction: float, offsets: Sequence[int], boundary: str, targets: str = "kv"):
        super().__init__(num_frames, fraction, offsets, boundary)
        self.targets = targets

    def qkv(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        return (self._shift(q) if self.targets == "qkv" else q), self._shift(k), self._shift(v)

    def extra_repr(self) -> str:
        return f"targets={self.targets}, " + super().extra_repr()
