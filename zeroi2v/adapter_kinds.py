"""The adapter kinds the paper compares the linear adapter with (Tables 2 and 3): LoRA, the GELU
bottleneck adapter and ST-Adapter. Each is one ``Adapter`` subclass plus one ``ADAPTERS.register`` line
(``zeroi2v.adapters`` imports this module, so they are always registered).

Only LoRA merges (a weight delta, as the linear adapter merges as an affine map): the GELU adapter has a
non-linearity and ST-Adapter mixes the tokens of neighbouring frames, so a model with either keeps them
at inference (more parameters and FLOPs than the image model: the cost the paper's Table 3 lists) and is
served as an unmerged run folder (``zeroi2v eval --run``, ``predict --run``, ``demo --run``).
"""
from __future__ import annotations

import math
from typing import Any, ClassVar, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from zeroi2v.adapters import ADAPTERS, SLOTS, Adapter, LinearAdapter, check_bottleneck

PROJECTION_OF_SLOT = {"attn_in": "fused Q/K/V", "q_in": "Q", "k_in": "K", "v_in": "V", "attn_out": "O",
                      "mlp_in": "fc1", "mlp_out": "fc2"}
"""The projection a parallel (LoRA) adapter at each slot adds its delta to."""


@ADAPTERS.register("lora")
class LoRA(Adapter):
    """LoRA (Hu et al. 2022; paper Eq. 10): ``P(x) + s · B(A(drop(x)))`` in parallel with the projection
    ``P: in -> out`` of its slot; ``A: in -> r`` (Kaiming-uniform), ``B: r -> out`` (zero, so the model
    starts as the image model), no biases. It merges exactly as ``W' = W + s·B·A``.

    Slots name the projection (see ``zeroi2v.adapters.SLOTS``): ``q_in``/``k_in``/``v_in`` -> Q, K, V;
    ``attn_in`` -> the fused Q/K/V (one A, B of 3·d rows); ``attn_out`` -> O; ``mlp_in`` -> fc1;
    ``mlp_out`` -> fc2. Placement '6' is LoRA on all of Q, K, V, O, fc1, fc2; 'qv' the LoRA paper's choice.

    Parameters: ``r · (in + out)`` per projection, against ``2·d·k + k + d`` for a serial linear adapter of
    bottleneck ``k`` on the ``d`` channels it reads or writes. On a square ``d x d`` matrix at ``r = k``
    the two are about equal (2dr); on a non-square one they are not: fc1 (``d -> 4d``) and fc2
    (``4d -> d``) cost ``5·d·r`` each, 2.5 times the serial adapter at the same width (paper Sec. 3.3 and
    Table 3: LoRA must shrink its rank to match the linear adapter's budget).

    Spec:
        rank: ``r``; null: ``round(ratio × min(in, out))`` (the block's width in a ViT).
        ratio: rank as a fraction of ``min(in, out)`` when ``rank`` is null (as the linear adapter's width).
        alpha: LoRA's ``alpha``; given, ``s = alpha / r`` (then leave ``scale`` at 1).
        scale: ``s`` when ``alpha`` is null.
        dropout: dropout on the input of ``A`` while training.
    """

    merge = "delta"
    defaults = {"rank": None, "ratio": 0.25, "alpha": None, "scale": 1.0, "dropout": 0.0}

    def __init__(self, in_dim: int, out_dim: int, rank: int, scale: float = 1.0, dropout: float = 0.0):
        super().__init__()
        self.scale = float(scale)
        self.drop = nn.Dropout(dropout)
        self.down = nn.Linear(in_dim, rank, bias=False)  # A
        self.up = nn.Linear(rank, out_dim, bias=False)  # B
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.up.weight)

    @classmethod
    def check_spec(cls, spec: Mapping[str, Any]) -> dict:
        spec = super().check_spec(spec)
        rank, ratio, alpha = spec["rank"], spec["ratio"], spec["alpha"]
        if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
            raise ValueError(f"rank: must be a whole number >= 1 (or null to use ratio), got {rank!r}")
        if rank is None and not float(ratio) > 0:
            raise ValueError(f"ratio: must be > 0, got {ratio}")
        if alpha is not None and float(spec["scale"]) != 1.0:
            raise ValueError(f"alpha: give alpha (s = alpha / rank) or scale, not both (alpha {alpha}, "
                             f"scale {spec['scale']}); remove one")
        if not 0.0 <= float(spec["dropout"]) <= 1.0:
            raise ValueError(f"dropout: must be in [0, 1], got {spec['dropout']}")
        return spec

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], *, in_dim: int, out_dim: int, slot: str) -> "LoRA":
        rank = spec["rank"] or max(1, round(min(in_dim, out_dim) * float(spec["ratio"])))
        scale = float(spec["alpha"]) / rank if spec["alpha"] is not None else float(spec["scale"])
        return cls(in_dim, out_dim, rank, scale=scale, dropout=spec["dropout"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The delta ``s · B A x`` only: ``VideoBlock`` adds it to the projection's output."""
        return self.scale * self.up(self.down(self.drop(x)))

    @torch.no_grad()
    def as_delta(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ΔW, Δb) = (s · B · A, 0)`` in float64, so that ``forward(x) == x @ ΔW.T + Δb`` (dropout off)."""
        delta = self.scale * self.up.weight.double() @ self.down.weight.double()
        return delta, torch.zeros(delta.shape[0], dtype=torch.float64, device=delta.device)

    def extra_repr(self) -> str:
        return f"rank={self.down.out_features}, scale={self.scale:g}"


@ADAPTERS.register("gelu")
class GeluAdapter(LinearAdapter):
    """The bottleneck adapter of AIM (Yang et al. 2023) and most image PETL work:
    ``x + s · up(drop(GELU(down(x))))``; the linear adapter's spec, width and zero-initialised ``up``
    (so it starts as the identity). The GELU makes it non-linear: it cannot be merged."""

    merge = None
    not_mergeable = "the GELU between its down and up projections is not linear, so no weight matrix can absorb it"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.scale * self.up(self.drop(F.gelu(self.down(x))))

    def as_affine(self):
        raise TypeError(f"a GELU adapter is not an affine map: {self.not_mergeable}")


@ADAPTERS.register("st_adapter")
class STAdapter(Adapter):
    """ST-Adapter (Pan et al. 2022): ``x + s · up(DWConv3D(down(x)))``, the depth-wise 3-D convolution
    running over the bottleneck channels of the patch tokens laid out as (frames, grid rows, grid
    columns). The class token (and any other prefix token) has no place in that grid: it passes around
    the conv (down, then straight to up). With the default kernel (3, 1, 1) a patch reads only the same
    patch position of the frames before and after it (zero-padded at the clip ends). Like the authors'
    code, there is no activation (the conv alone makes it temporal); ``up`` starts at zero, so the model
    starts as the image model. Not mergeable: the conv mixes tokens of different frames.

    Parameters: ``2·d·k + k + d`` (down, up) ``+ k·(kt·kh·kw + 1)`` (depth-wise conv and its bias) for
    bottleneck ``k = round(ratio × d)`` on the slot's ``d`` channels.

    Spec: ``ratio``, ``scale`` and ``dropout`` as for the linear adapter (dropout before ``up``), and
    ``kernel`` [kt, kh, kw] (odd sizes; the paper's (3, 1, 1) by default).
    """

    merge = None
    not_mergeable = ("its depth-wise 3-D convolution mixes the tokens of neighbouring frames, which no "
                     "per-token weight matrix can absorb")
    defaults = {"ratio": 0.25, "scale": 1.0, "dropout": 0.0, "kernel": [3, 1, 1]}
    needs: ClassVar[tuple[str, ...]] = ("num_frames", "grid")

    def __init__(self, dim: int, num_frames: int, grid: tuple[int, int], ratio: float = 0.25, scale: float = 1.0,
                 dropout: float = 0.0, kernel: tuple[int, int, int] = (3, 1, 1)):
        super().__init__()
        hidden = max(1, round(dim * ratio))
        self.scale, self.num_frames, self.grid = float(scale), int(num_frames), (int(grid[0]), int(grid[1]))
        self.down = nn.Linear(dim, hidden)
        self.conv = nn.Conv3d(hidden, hidden, tuple(kernel), padding=tuple(k // 2 for k in kernel), groups=hidden)
        self.drop = nn.Dropout(dropout)
        self.up = nn.Linear(hidden, dim)
        nn.init.trunc_normal_(self.down.weight, std=0.02)
        for bias in (self.down.bias, self.conv.bias, self.up.bias):
            nn.init.zeros_(bias)
        nn.init.zeros_(self.up.weight)  # identity at start

    @classmethod
    def check_spec(cls, spec: Mapping[str, Any]) -> dict:
        spec = check_bottleneck(super().check_spec(spec))
        kernel = spec["kernel"]
        if not (isinstance(kernel, (list, tuple)) and len(kernel) == 3 and all(
                isinstance(k, int) and not isinstance(k, bool) and k >= 1 and k % 2 for k in kernel)):
            raise ValueError(f"kernel: must be three odd whole numbers [time, rows, columns], e.g. [3, 1, 1], "
                             f"got {kernel!r}")
        return {**spec, "kernel": list(kernel)}

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], *, in_dim: int, out_dim: int, slot: str,
                  num_frames: int, grid: tuple[int, int]) -> "STAdapter":
        dim = in_dim if SLOTS[slot].side == "before" else out_dim
        return cls(dim, num_frames, grid, ratio=spec["ratio"], scale=spec["scale"], dropout=spec["dropout"],
                   kernel=tuple(spec["kernel"]))

    def mix(self, h: torch.Tensor) -> torch.Tensor:
        """The depth-wise conv over the patch tokens of a clip: (B*T, n, k) -> (B*T, n, k); the ``n - h·w``
        prefix tokens (class token) are returned as they are."""
        bt, n, k = h.shape
        (gh, gw), t = self.grid, self.num_frames
        prefix = n - gh * gw
        if prefix < 0 or bt % t:
            raise ValueError(f"ST-Adapter expects (clips x {t} frames, prefix + {gh}x{gw} patch tokens, "
                             f"channels), got {tuple(h.shape)}: it works on ViT blocks whose tokens are the "
                             f"whole patch grid of each frame")
        patches = h[:, prefix:].reshape(bt // t, t, gh, gw, k).permute(0, 4, 1, 2, 3)
        patches = self.conv(patches).permute(0, 2, 3, 4, 1).reshape(bt, gh * gw, k)
        return torch.cat([h[:, :prefix], patches], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.scale * self.up(self.drop(self.mix(self.down(x))))

    def extra_repr(self) -> str:
        return f"scale={self.scale:g}, frames={self.num_frames}, grid={self.grid}"
