"""Fused training form of a linear adapter and its frozen projection (``ModelConfig.fused_adapters``).

A linear adapter ``A(x) = x + s·(U(D x + b_D) + b_U)`` next to a frozen projection ``P(x) = W_P x + b_P``
is, while its dropout is 0, one affine map: the paper's layer merge (Sec. 3.3, Eq. 11,
``W_new = (I + W_up W_down) W_old``) done on every step instead of once after training:

- "before" slots (the adapter feeds P: attn_in -> qkv, q_in/k_in/v_in -> their rows, mlp_in -> fc1):
  ``P(A(x)) = x W_eff^T + b_eff`` with ``W_eff = W_P (I + s U D)``, ``b_eff = b_P + s W_P (U b_D + b_U)``;
- "after" slots (the adapter reads P: attn_out, mlp_out): ``A(P(x))`` with ``W_eff = (I + s U D) W_P``,
  ``b_eff = b_P + s (U (D b_P + b_D) + b_U)``.

Forward: one token-sized product with ``W_eff`` (the weight-sized products that build it cost
O(out·in·k), independent of the number of tokens) instead of three. Backward (``g = dL/dy``, ``k`` the
bottleneck): only the input gradient and the adapter's four gradients, never ``g^T x`` (the frozen
weight's gradient, the out×in×tokens product full fine-tuning pays). Only ``x`` is saved; the adapter's
hidden ``h`` is recomputed from it (tokens×in×k):

- before: ``g_a = g W_P`` (the gradient at the adapter's output), ``u = g_a U``, ``dx = g_a + s u D``,
  ``h = x D^T + b_D``, ``dU = s g_a^T h``, ``db_U = s Σ g_a``, ``dD = s u^T x``, ``db_D = s Σ u``;
- after: ``dx = g W_eff``, ``u = g U``, ``h = x (D W_P)^T + D b_P + b_D``, ``dU = s g^T h``,
  ``db_U = s Σ g``, ``dD = s (u^T x) W_P^T + s (Σ u) b_P^T``, ``db_D = s Σ u``.

Where it does not apply the block keeps the plain form (``fusable``): the option is off, the adapter is
not a ``LinearAdapter``, its dropout is active, the projection trains (full fine-tuning, the
'temporal_heads' masks), the shared attn_in adapter of a family with separate Q/K/V projections (it
feeds three products), or an "after" slot whose projection narrows (fc2: in = 4·out, so the saved input
would be 4× the plain form's saved output and the recompute 4× dearer).
"""
from __future__ import annotations

import torch

from zeroi2v.adapters import SLOTS, LinearAdapter


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, t.shape[-1])


def _like(grad: torch.Tensor, saved) -> list:
    """The saved tensors in the gradient's dtype (bf16 under autocast, as autocast runs the plain form's
    products); autograd casts each returned gradient back to its input's dtype."""
    return [t if t is None or t.dtype == grad.dtype else t.to(grad.dtype) for t in saved]


class FusedBefore(torch.autograd.Function):
    """``P(A(x))`` for an adapter feeding a frozen projection (see the module docstring); x (..., in) gives
    (tokens, out), 2-D, so that the block's views of it are made outside the Function (``fused_linear``)."""

    @staticmethod
    def forward(ctx, x, w_p, b_p, w_d, b_d, w_u, b_u, scale: float):
        with torch.autocast(x.device.type, enabled=False):       # the weights in their own precision
            wu = w_p @ w_u                                        # W_P U: out × k
            w_eff = torch.addmm(w_p, wu, w_d, alpha=scale)        # W_P (I + s U D)
            b_eff = scale * (wu @ b_d + w_p @ b_u)
            if b_p is not None:
                b_eff = b_eff + b_p
        ctx.save_for_backward(x, w_p, w_d, b_d, w_u)
        ctx.scale = scale
        return torch.addmm(b_eff, _flat(x), w_eff.t())  # 2-D: views of it are made outside the Function

    @staticmethod
    def backward(ctx, grad):
        x, w_p, w_d, b_d, w_u = _like(grad, ctx.saved_tensors)
        s, g, xf = ctx.scale, _flat(grad), _flat(x)
        g_a = g @ w_p                                             # dL/dA(x)
        u = g_a @ w_u                                             # dL/dh / s
        dx = torch.addmm(g_a, u, w_d, alpha=s).view(x.shape)
        h = torch.addmm(b_d, xf, w_d.t())                         # recomputed hidden
        return (dx, None, None, s * (u.t() @ xf), s * u.sum(0), s * (g_a.t() @ h), s * g_a.sum(0), None)


class FusedAfter(torch.autograd.Function):
    """``A(P(x))`` for an adapter reading a frozen projection (see the module docstring); (tokens, out) as above."""

    @staticmethod
    def _effective(w_p, b_p, w_d, b_d, w_u, b_u, scale):
        dw = w_d @ w_p                                            # D W_P: k × in
        db = b_d if b_p is None else torch.addmv(b_d, w_d, b_p)   # D b_P + b_D
        return torch.addmm(w_p, w_u, dw, alpha=scale), scale * (w_u @ db + b_u) + (0 if b_p is None else b_p), dw, db

    @staticmethod
    def forward(ctx, x, w_p, b_p, w_d, b_d, w_u, b_u, scale: float):
        with torch.autocast(x.device.type, enabled=False):
            w_eff, b_eff, _, _ = FusedAfter._effective(w_p, b_p, w_d, b_d, w_u, b_u, scale)
        ctx.save_for_backward(x, w_p, b_p, w_d, b_d, w_u, b_u)
        ctx.scale = scale
        return torch.addmm(b_eff, _flat(x), w_eff.t())  # 2-D: views of it are made outside the Function

    @staticmethod
    def backward(ctx, grad):
        x, w_p, b_p, w_d, b_d, w_u, b_u = _like(grad, ctx.saved_tensors)
        s, g, xf = ctx.scale, _flat(grad), _flat(x)
        w_eff, _, dw, db = FusedAfter._effective(w_p, b_p, w_d, b_d, w_u, b_u, s)
        dx = (g @ w_eff).view(x.shape)
        u = g @ w_u                                               # dL/dh / s
        h = torch.addmm(db, xf, dw.t())                           # D (W_P x + b_P) + b_D, recomputed
        u_sum = u.sum(0)
        d_down = (u.t() @ xf) @ w_p.t()
        if b_p is not None:
            d_down = d_down + torch.outer(u_sum, b_p)
        return (dx, None, None, s * d_down, s * u_sum, s * (g.t() @ h), s * g.sum(0), None)


def fusable(block, slot: str) -> LinearAdapter | None:
    """The adapter of ``slot`` when ``block`` runs it fused into its projection, else None (plain form)."""
    if not getattr(block, "fuse_adapters", False) or slot not in block.adapters:
        return None
    adapter, where = block.adapters[slot], SLOTS[slot]
    if not isinstance(adapter, LinearAdapter) or (adapter.training and adapter.drop.p > 0):
        return None
    if where.projection not in block._proj:                       # attn_in before separate Q, K, V
        return None
    module, w, b, _ = block._proj[where.projection]
    weight, bias = getattr(module, w), getattr(module, b) if b else None
    if weight.requires_grad or (bias is not None and bias.requires_grad):
        return None
    if where.side == "after" and weight.shape[1] > weight.shape[0]:
        return None
    return adapter


def fused_linear(block, slots, x: torch.Tensor, weight: torch.Tensor,
                 bias: torch.Tensor | None) -> torch.Tensor | None:
    """A projection of ``block`` (its ``weight`` and ``bias``; ``slots``: its adapter slots) with its
    fusable adapter folded in, or None when it has none."""
    for slot in slots:
        a = fusable(block, slot)
        if a is not None:
            fn = FusedBefore if SLOTS[slot].side == "before" else FusedAfter
            y = fn.apply(x, weight, bias, a.down.weight, a.down.bias, a.up.weight, a.up.bias, a.scale)
            return y.view(*x.shape[:-1], y.shape[-1])  # a view made here may be modified in place (STDHA)
    return None
