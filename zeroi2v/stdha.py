"""Spatial-temporal dual-headed attention (STDHA), paper Sec. 3.2, Eq. (7)-(9).

Head i of frame t attends with its own query Q_i^t to the keys and values of frame t + Δt_i.
Heads with Δt = 0 are ordinary spatial heads. The time shift is a gather on K and V, so STDHA adds
no parameter and no FLOP to the image transformer it lives in.

Δt is written as the paper's multiset: ``"1x2,-1x2,0x8"`` (or ``"{1·2, -1·2, 0·8}"``) means two
heads look one frame ahead, two look one frame back, eight stay spatial. Temporal heads are the
first heads (contiguous channel blocks), as in the authors' code.
"""
from __future__ import annotations

import re
from typing import Any, Mapping, Sequence, Union

import torch
import torch.nn.functional as F

from zeroi2v.temporal import BOUNDARIES, TEMPORAL, TemporalOperator  # noqa: F401  (BOUNDARIES re-exported)

OffsetSpec = Union[str, Sequence[int], Sequence[Sequence[int]], None]

# Paper Table 11. SSv2 rows are transcribed from Table 11b. Our copy of the paper lost the Δt column of
# Table 11a (K400) and kept only its temporal receptive field (3/4/6 for 8/16/32 frames, both backbones);
# the K400 rows below are the multisets of Table 1c / 11b with exactly that receptive field.
PRESETS: dict[str, str] = {
    "k400_vit_b_8": "1x1,-1x1,0x10",
    "k400_vit_b_16": "1x1,-1x1,2x1,0x9",
    "k400_vit_b_32": "1x1,-1x1,2x1,-2x1,3x1,0x7",
    "k400_vit_l_8": "1x2,-1x2,0x12",
    "k400_vit_l_16": "1x2,-1x2,2x2,0x10",
    "k400_vit_l_32": "1x2,-1x2,2x1,-2x1,3x1,0x9",
    "ssv2_vit_b_8": "1x1,-1x1,0x10",
    "ssv2_vit_b_16": "1x1,-1x1,2x1,-2x1,0x8",
    "ssv2_vit_b_32": "1x1,-1x1,2x1,-2x1,3x1,0x7",
    "ssv2_vit_l_8": "1x2,-1x2,0x12",
    "ssv2_vit_l_16": "1x2,-1x2,2x2,-2x2,0x8",
    "ssv2_vit_l_32": "1x2,-1x2,2x1,-2x1,3x1,0x9",
}
PRESET_SOURCE = {name: ("Table 11a (reconstructed from its temporal RF)" if name.startswith("k400")
                        else "Table 11b") for name in PRESETS}

STAGE_PRESETS: dict[str, tuple[str, ...]] = {
    "ssv2_swin_b_32": ("1x1,0x3", "1x1,-1x1,0x6", "1x1,-1x1,2x1,-2x1,0x12", "1x2,-1x2,2x2,-2x2,0x24"),
}
"""One Δt multiset per stage of a hierarchical backbone, paper Table 11b, Swin-B (h = 4, 8, 16, 32) rows
(SSv2, 32 frames; "we simply allocate temporal heads to each stage at a ratio of 1/4", Sec. 6.1). The
paper's Swin-B halves the clip in its 3-D patch embedding (32 -> 16 frames) and chose Δt for 16 frames;
here frames fold into the batch one by one, so the same Δt act on the 32 input frames."""

_TERM = re.compile(r"^\s*([+-]?\d+)\s*(?:[x×·*]\s*(\d+))?\s*$")


def parse_offsets(spec: OffsetSpec, num_heads: int, num_frames: int | None = None) -> tuple[int, ...]:
    """Turn a Δt multiset into one offset per head, temporal heads first.

    ``spec`` is a preset name, a multiset string (``"1x2,-1x2,0x8"``), a list of per-head offsets
    (``[1, 1, -1, -1, 0, ...]``), a list of ``(offset, count)`` pairs, or None (all spatial).
    Without a ``0`` term the remaining heads are spatial; with one, the counts must add up to
    ``num_heads``. ``num_frames`` (when given) rejects offsets that reach outside every clip.
    """
    if num_heads < 1:
        raise ValueError(f"num_heads must be positive, got {num_heads}")
    terms = _terms(spec)
    temporal = [off for off, n in terms if off != 0 for _ in range(n)]
    zeros = sum(n for off, n in terms if off == 0)
    has_zero_term = any(off == 0 for off, _ in terms)
    if len(temporal) > num_heads:
        raise ValueError(f"Δt multiset {spec!r} has {len(temporal)} temporal heads but the attention "
                         f"has only {num_heads} heads")
    if has_zero_term and len(temporal) + zeros != num_heads:
        raise ValueError(f"Δt multiset {spec!r} names {len(temporal) + zeros} heads; the attention has "
                         f"{num_heads} (drop the 0 term to make the rest spatial)")
    if num_frames is not None:
        too_far = [off for off in temporal if abs(off) >= num_frames]
        if too_far:
            raise ValueError(f"Δt {too_far[0]} reaches outside a {num_frames}-frame clip "
                             f"(|Δt| must be < num_frames)")
    return tuple(temporal) + (0,) * (num_heads - len(temporal))


def _terms(spec: OffsetSpec) -> list[tuple[int, int]]:
    if spec is None:
        return []
    if isinstance(spec, str):
        text = PRESETS.get(spec, spec).strip().strip("{}")
        if not text:
            return []
        out = []
        for part in text.split(","):
            m = _TERM.match(part)
            if not m:
                raise ValueError(f"malformed Δt term {part!r} in {spec!r}; write terms like '1x2' "
                                 f"(offset x heads), e.g. '1x2,-1x2,0x8', or use a preset: "
                                 f"{', '.join(PRESETS)}")
            out.append((int(m.group(1)), int(m.group(2) or 1)))
    else:
        items = list(spec)
        if all(isinstance(i, (int,)) and not isinstance(i, bool) for i in items):
            out = [(int(i), 1) for i in items]
        elif all(isinstance(i, (tuple, list)) and len(i) == 2 for i in items):
            out = [(int(o), int(n)) for o, n in items]
        else:
            raise ValueError(f"malformed Δt spec {spec!r}: give a string like '1x2,-1x2,0x8', a list of "
                             f"per-head offsets, or a list of (offset, count) pairs")
    for off, n in out:
        if n < 1:
            raise ValueError(f"head count must be >= 1 in Δt term {off}x{n}")
    return out


def layer_heads(num_heads: int | Sequence[int], num_layers: int) -> list[int]:
    """One head count per layer: ``num_heads`` for every layer, or its per-layer list checked for length."""
    if isinstance(num_heads, int):
        return [num_heads] * num_layers
    heads = [int(h) for h in num_heads]
    if len(heads) != num_layers:
        raise ValueError(f"{len(heads)} head counts for {num_layers} layers; give one per layer")
    return heads


def format_offsets(offsets: Sequence[int]) -> str:
    """Per-head offsets back to the multiset string, in order of first appearance ('1x2,-1x2,0x8')."""
    counts: dict[int, int] = {}
    for off in offsets:
        counts[off] = counts.get(off, 0) + 1
    return ",".join(f"{off}x{n}" for off, n in counts.items())


def source_frames(offsets: Sequence[int], num_frames: int, boundary: str = "self",
                  device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Which frame each (frame t, head h) reads: ``src[t, h]`` and whether it is inside the clip."""
    if boundary not in BOUNDARIES:
        raise ValueError(f"boundary must be one of {BOUNDARIES}, got {boundary!r}")
    t = torch.arange(num_frames, device=device)[:, None]
    target = t + torch.as_tensor(offsets, device=device)[None, :]
    valid = (target >= 0) & (target < num_frames)
    return torch.where(valid, target, t.expand_as(target)), valid


def shift_heads(x: torch.Tensor, offsets: Sequence[int], num_frames: int, boundary: str = "self",
                index: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Shift per-head K or V in time: ``out[b, t, h] = x[b, t + Δt_h, h]``.

    ``x`` is (B*T, heads, tokens, head_dim) with frames folded into the batch, frame-major within
    each video. One gather for all heads and frames; no copy at all when every Δt is 0.
    ``index``: ``source_frames(...)`` computed beforehand (STDHA keeps it as buffers).
    """
    if not any(offsets):
        return x
    bt, h, n, d = x.shape
    if bt % num_frames:
        raise ValueError(f"batch of {bt} frames is not a multiple of num_frames={num_frames}")
    if h != len(offsets):
        raise ValueError(f"tensor has {h} heads but {len(offsets)} offsets were given")
    src, valid = index if index is not None else source_frames(offsets, num_frames, boundary, x.device)
    heads = torch.arange(h, device=x.device)[None, :]
    out = x.view(bt // num_frames, num_frames, h, n, d)[:, src, heads]  # (B, T, H, N, D)
    if boundary == "zero":
        out = out * valid[None, :, :, None, None].to(out.dtype)
    return out.reshape(bt, h, n, d)


def packed_rows(offsets: Sequence[int], num_frames: int, tokens: int, boundary: str = "self",
                device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Row indices of ``shift_packed_`` into one video's packed Q/K/V viewed as (T*N*3*heads, head_dim) rows:
    ``src`` and ``dst`` (K and V rows of the temporal heads that read another frame, and where they go) and
    ``zero`` (rows past the clip's ends under the 'zero' boundary; empty under 'self', which keeps them)."""
    heads = len(offsets)
    src, valid = source_frames(offsets, num_frames, boundary, device)  # (T, heads)
    t = torch.arange(num_frames, device=device)[:, None, None, None]
    n = torch.arange(tokens, device=device)[None, :, None, None]
    c = torch.arange(1, 3, device=device)[None, None, :, None]  # K and V
    h = torch.arange(heads, device=device)[None, None, None, :]

    def row(frame):
        return ((frame * tokens + n) * 3 + c) * heads + h

    moved = (src[:, None, None, :] != t).expand(num_frames, tokens, 2, heads)
    past = (~valid[:, None, None, :]).expand(num_frames, tokens, 2, heads)
    dst = row(t).expand_as(moved)
    return row(src[:, None, None, :])[moved], dst[moved], dst[past] if boundary == "zero" else dst[:0].flatten()


def shift_packed_(qkv: torch.Tensor, offsets: Sequence[int], num_frames: int, boundary: str = "self",
                  rows: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> None:
    """``shift_heads`` for K and V at once, in place on the packed projection output.

    ``qkv`` is the contiguous (B*T, N, 3, heads, head_dim) output of the Q/K/V projection, frame-major within
    each video. Frame t of a temporal head takes the K and V of frame t + Δt; frames whose t + Δt leaves the
    clip keep their own values ('self') or become zeros ('zero'). Seen as (B, T*N*3*heads, head_dim) rows,
    that is one ``index_select`` of the rows that move and one ``index_copy_`` back (``packed_rows``), for
    every temporal head at once, on CPU and GPU alike: two calls, since at batch 1 a small model's time is
    mostly calls. Q and the spatial heads are never touched, so the attention then reads plain strided
    views of ``qkv``, as the image model's does.
    """
    bt, n, three, h, d = qkv.shape
    if bt % num_frames:
        raise ValueError(f"batch of {bt} frames is not a multiple of num_frames={num_frames}")
    if not qkv.is_contiguous():
        raise ValueError("shift_packed_ works in place on the contiguous projection output")
    src, dst, zero = rows if rows is not None else packed_rows(offsets, num_frames, n, boundary, qkv.device)
    x = qkv.view(bt // num_frames, num_frames * n * three * h, d)
    x.index_copy_(1, dst, x.index_select(1, src))
    if boundary == "zero":  # (decided by the spec, not by the table's size: torch.export cannot guard on that)
        x.index_fill_(1, zero, 0)


@TEMPORAL.register("stdha")
class STDHA(TemporalOperator):
    """The temporal operator of one attention layer: shifts K and V of the temporal heads.

    Spec (``model.temporal``): ``offsets``, the Δt multiset of every layer (a string, a preset name,
    a per-head list, or a list with one such spec per layer or, on a hierarchical backbone (Swin), per stage,
    or a ``STAGE_PRESETS`` name; ``null``: all heads spatial), and
    ``boundary``, what a head reads past the clip's ends (see ``BOUNDARIES``).
    """

    on_qkv = True
    in_place_qkv = True
    defaults = {"offsets": "1x1,-1x1", "boundary": "self"}

    def __init__(self, offsets: Sequence[int], num_frames: int, boundary: str = "self"):
        super().__init__()
        if boundary not in BOUNDARIES:
            raise ValueError(f"boundary must be one of {BOUNDARIES}, got {boundary!r}")
        self.offsets = tuple(int(o) for o in offsets)
        self.num_frames = int(num_frames)
        self.boundary = boundary
        # index tables as buffers: they follow .to(device) and are never created inside a compiled graph
        src, valid = source_frames(self.offsets, self.num_frames, boundary)
        self.register_buffer("src", src, persistent=False)
        self.register_buffer("valid", valid, persistent=False)
        self._rows: dict[tuple[int, torch.device], tuple[torch.Tensor, ...]] = {}

    @classmethod
    def check_spec(cls, spec: Mapping[str, Any], *, num_heads: int | Sequence[int], num_layers: int, num_frames: int,
                   stages: Sequence[int] | None = None) -> dict:
        """Offsets become one per-head list per layer (``parse_offsets``); the result checks again unchanged.

        ``offsets`` is one spec for every layer, a list of one spec per layer, or (with ``stages``, the layers
        of each stage of a hierarchical tower such as Swin) a list of one spec per stage or a ``STAGE_PRESETS``
        name. Each layer's spec is parsed against that layer's head count (``num_heads`` per layer)."""
        spec = super().check_spec(spec, num_heads=num_heads, num_layers=num_layers, num_frames=num_frames,
                                  stages=stages)
        heads, stages = layer_heads(num_heads, num_layers), list(stages or [num_layers])
        offsets, boundary = spec["offsets"], spec["boundary"]
        if isinstance(offsets, str) and offsets in STAGE_PRESETS:
            if len(STAGE_PRESETS[offsets]) != len(stages):
                raise ValueError(f"offsets: preset {offsets!r} gives one Δt multiset to each of "
                                 f"{len(STAGE_PRESETS[offsets])} stages; this backbone has {len(stages)}")
            offsets = list(STAGE_PRESETS[offsets])
        listed = isinstance(offsets, (list, tuple)) and not all(isinstance(o, int) for o in offsets)
        where = [f"stage {s} ({heads[sum(stages[:s])]} heads): " for s, n in enumerate(stages) for _ in range(n)] \
            if len(stages) > 1 else [""] * num_layers
        if listed and len(offsets) == num_layers:
            per_layer = list(offsets)
            where = [f"layer {i} ({h} heads): " for i, h in enumerate(heads)] if len(set(heads)) > 1 else where
        elif listed and len(offsets) == len(stages):
            per_layer = [o for o, n in zip(offsets, stages) for _ in range(n)]
        elif listed and any(o is None or isinstance(o, str) for o in offsets):
            per = (f"per stage ({len(stages)}) or " if len(stages) > 1 else "") + f"per layer ({num_layers})"
            raise ValueError(f"offsets: give one Δt multiset {per}, got {len(offsets)}")
        else:
            per_layer = [offsets] * num_layers
        resolved = []
        for s, h, at in zip(per_layer, heads, where):
            try:
                resolved.append(list(parse_offsets(s, h, num_frames)))
            except (ValueError, TypeError) as e:
                raise ValueError(f"offsets: {at}{e}") from None
        if boundary not in BOUNDARIES:
            raise ValueError(f"boundary: must be one of {list(BOUNDARIES)}, got {boundary!r}")
        return {"offsets": resolved, "boundary": boundary}

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], *, layer: int, num_heads: int, num_frames: int) -> "STDHA":
        return cls(spec["offsets"][layer], num_frames, spec["boundary"])

    @classmethod
    def layer_offsets(cls, resolved: Mapping[str, Any]) -> list[list[int]]:
        return [list(o) for o in resolved["offsets"]]

    @property
    def head_offsets(self) -> tuple[int, ...]:
        return self.offsets

    @property
    def temporal_heads(self) -> list[int]:
        return [i for i, off in enumerate(self.offsets) if off != 0]

    def qkv(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        if not any(self.offsets):
            return q, k, v
        return q, *(shift_heads(x, self.offsets, self.num_frames, self.boundary, (self.src, self.valid)) for x in (k, v))

    def qkv_(self, qkv: torch.Tensor) -> None:
        """``qkv`` in place on the packed (B*T, N, 3, heads, head_dim) projection output (``shift_packed_``)."""
        if not any(self.offsets):
            return
        key = (qkv.shape[1], qkv.device)
        rows = self._rows.get(key)
        if rows is None:
            rows = self._rows[key] = self._packed_rows(*key)
        shift_packed_(qkv, self.offsets, self.num_frames, self.boundary, rows)

    @torch.compiler.disable
    def _packed_rows(self, tokens: int, device: torch.device) -> tuple[torch.Tensor, ...]:
        """Made once per token count and device, outside any compiled graph (a CUDA graph would reuse them),
        on the CPU (a boolean mask has no data on the meta device that FLOP counts run on)."""
        return tuple(t.to(device) for t in packed_rows(self.offsets, self.num_frames, tokens, self.boundary))

    forward = qkv

    def extra_repr(self) -> str:
        return f"Δt={{{format_offsets(self.offsets)}}}, num_frames={self.num_frames}, boundary={self.boundary}"


def stdha_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, offsets: Sequence[int],
                    num_frames: int, boundary: str = "self") -> torch.Tensor:
    """Eq. (7)-(8) for all heads at once; the attention itself is SDPA so fused kernels serve on GPU."""
    q, k, v = STDHA(offsets, num_frames, boundary)(q, k, v)
    return F.scaled_dot_product_attention(q, k, v)
