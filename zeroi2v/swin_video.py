"""STDHA inside Swin's window attention (paper Table 11, Swin-B rows): timm Swin towers that read clips.

Frames fold into the batch, so Swin's window partition never mixes frames: frame t of a video is batch
row ``b*T + t`` and its windows are rows ``(b*T + t)*nW + w``. Inside each window the temporal operator
sees the per-head Q/K/V of *all* windows of a frame laid side by side, (B*T, heads, nW*N, head_dim), so
STDHA's gather along the frame axis gives head h of window w in frame t the keys and values of the same
window w in frame t + Δt_h (after the same cyclic shift: the shift and its mask are per frame, identical
for all frames). The relative position bias and the shift mask are added as in timm.

``SwinVideoBlock`` adopts a timm ``SwinTransformerBlock``'s modules under their own names (so weights keep
timm's names) and reuses ``VideoBlock``'s projections and adapter slots: adapters before qkv (or Q, K, V),
after the attention output, before fc1 and after fc2, mergeable exactly as in the ViT. Limits: patch
merging (the downsampling between stages) and the patch embedding get no adapters, and operators that act
on tokens (``on_tokens``, ``on_mlp_tokens``) are refused: Swin has no class token and a token means a pixel
region here. ``ZeroI2V`` builds these blocks through ``TimmSwin.video_block`` with one Δt multiset per stage
(``STDHA.check_spec`` with the family's stages) and runs timm's stages around them (``TimmSwin.stages``).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from zeroi2v.backbones.base import Backbone
from zeroi2v.model import VideoBlock
from zeroi2v.temporal import TemporalOperator

_BLOCK_STATE = ("input_resolution", "window_size", "shift_size", "window_area", "always_partition", "dynamic_mask")


class SwinVideoBlock(VideoBlock):
    """A timm ``SwinTransformerBlock`` on (B*T, H, W, C) frames with a temporal operator inside each window."""

    def __init__(self, block: nn.Module, family: type[Backbone], temporal: TemporalOperator,
                 adapters: dict[str, nn.Module] | None = None):
        if temporal.on_tokens or temporal.on_mlp_tokens:
            raise ValueError(f"temporal operator {getattr(temporal, 'registry_name', type(temporal).__name__)!r} acts on "
                             f"tokens (a class token); Swin has none: use an operator on Q/K/V (kind: stdha, "
                             f"channel_shift or none)")
        super().__init__(block, family, temporal, adapters)
        for name in _BLOCK_STATE:
            setattr(self, name, getattr(block, name, None))
        self.register_buffer("attn_mask", block.attn_mask, persistent=False)
        self.get_attn_mask = block.get_attn_mask  # timm's shift mask, for dynamic_mask towers

    def window_attention(self, x: torch.Tensor, bt: int, mask: torch.Tensor | None) -> torch.Tensor:
        """(B*T*nW, N, C) windows -> attended windows, temporal operator on per-frame window groups."""
        bwn, n, _ = x.shape
        windows = bwn // bt
        x = self._adapt("attn_in", x)
        if self._fused and not any(s in self.adapters for s in ("q_in", "k_in", "v_in")):
            qkv = self._project("qkv", x)
        else:
            qkv = torch.cat([self._project(p, self._adapt(f"{p}_in", x)) for p in "qkv"], dim=-1)
        c = qkv.shape[-1] // 3
        h, d = self.num_heads, c // self.num_heads
        q, k, v = qkv.view(bwn, n, 3, h, d).permute(2, 0, 3, 1, 4).unbind(0)
        if self.temporal.on_qkv:  # (B*T*nW, h, N, d) -> (B*T, h, nW*N, d): all windows of a frame side by side
            side = [t.reshape(bt, windows, h, n, d).transpose(1, 2).reshape(bt, h, windows * n, d) for t in (q, k, v)]
            q, k, v = (t.reshape(bt, h, windows, n, d).transpose(1, 2).reshape(bwn, h, n, d)
                       for t in self.temporal.qkv(*side))
        bias = self.attn._get_rel_pos_bias()  # (1, h, N, N): relative position bias, as timm adds it
        if mask is not None:  # shift mask (nW, N, N), the same for every frame
            nw = mask.shape[0]
            bias = (bias.unsqueeze(1) + mask.view(1, nw, 1, n, n)).expand(bwn // nw, nw, h, n, n)
        bias = bias.expand(bwn // (bias.shape[1] if mask is not None else 1), *bias.shape[1:])
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.reshape(bwn, h, n, n).to(q.dtype))
        return self._adapt("attn_out", self._project("attn_out", out.transpose(1, 2).reshape(bwn, n, c)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from timm.models.swin_transformer import window_partition, window_reverse
        bt, hh, ww, c = x.shape
        ws, shift = self.window_size, self.shift_size
        h = self._parts["norm1"](x)
        if any(shift):
            h = torch.roll(h, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        h = F.pad(h, (0, 0, 0, (ws[1] - ww % ws[1]) % ws[1], 0, (ws[0] - hh % ws[0]) % ws[0]))
        hp, wp = h.shape[1:3]
        mask = self.get_attn_mask(h) if self.dynamic_mask else self.attn_mask
        h = self.window_attention(window_partition(h, ws).view(-1, self.window_area, c), bt, mask)
        h = window_reverse(h.view(-1, ws[0], ws[1], c), ws, hp, wp)[:, :hh, :ww, :]
        if any(shift):
            h = torch.roll(h, shifts=shift, dims=(1, 2))
        for m in self._parts["ls1"]:
            h = m(h)
        x = (x + h).reshape(bt, -1, c)
        h = self._project("fc1", self._adapt("mlp_in", self._parts["norm2"](x)))
        for m in self._parts["act"]:
            h = m(h)
        h = self._adapt("mlp_out", self._project("fc2", h))
        for m in self._parts["ls2"]:
            h = m(h)
        return (x + h).reshape(bt, hh, ww, c)
