"""The paper's optimisation recipe: AdamW over parameter groups (no weight decay on 1-D parameters and
embeddings; the backbone at ``backbone_lr_mult`` × the learning rate), a linear warm-up, then half a cosine
to 0, stepped per optimiser step (the paper's training details, Table 12)."""
from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable

import torch
import torch.nn as nn

if TYPE_CHECKING:
    from zeroi2v.config import OptimConfig



def param_groups(model: nn.Module, lr: float, weight_decay: float, backbone_lr_mult: float = 1.0) -> list[dict]:
    """AdamW groups over the trainable parameters: (backbone | head) × (decay | no decay).

    No decay: 1-D tensors (biases, LayerNorm) and what ``model.no_weight_decay()`` names (a ``ZeroI2V``: the
    class, positional and temporal embeddings, from its backbone family). Backbone =
    ``visual.*`` (adapters, ln_post, or everything when fully fine-tuned): lr × ``backbone_lr_mult``;
    the head and the temporal embedding keep the full lr.
    """
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    inner = getattr(model, "module", model)  # DDP wraps the model
    no_decay = inner.no_weight_decay() if hasattr(inner, "no_weight_decay") else ()  # timm's convention
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        name = name.removeprefix("module.")
        decay = p.ndim > 1 and name not in no_decay
        groups.setdefault((name.startswith("visual."), decay), []).append(p)
    out = []
    for (backbone, decay), params in sorted(groups.items()):
        out.append({"params": params, "lr": lr * (backbone_lr_mult if backbone else 1.0),
                    "weight_decay": weight_decay if decay else 0.0,
                    "name": f"{'backbone' if backbone else 'head'}_{'decay' if decay else 'no_decay'}"})
    if not out:
        raise ValueError("the model has no trainable parameters (check model.finetune)")
    return out


def lr_factor(step: int, warmup_steps: int, total_steps: int, start_factor: float, end_factor: float = 0.0) -> float:
    """Multiplier of the peak lr after ``step`` optimiser steps: linear warm-up from ``start_factor``,
    then half a cosine down to ``end_factor`` (``optim.min_lr / optim.lr``) at ``total_steps``."""
    if step < warmup_steps:
        return start_factor + (1.0 - start_factor) * step / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return end_factor + (1.0 - end_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class Optimiser:
    """AdamW with its schedule, mixed precision and loss scaling: what an optimiser step needs.

    ``amp``: 'bf16' | 'fp16' autocast on CUDA (fp16 with loss scaling), 'none' in fp32 (always on CPU).
    ``schedule(steps)`` is the lr multiplier after a number of optimiser steps (``lr_factor``)."""
    optimizer: torch.optim.AdamW
    scheduler: torch.optim.lr_scheduler.LambdaLR
    schedule: Callable[[int], float]
    scaler: torch.amp.GradScaler
    amp: str
    device_type: str
    lr: float  # the peak learning rate (the head's)
    clip_grad: float | None = None

    def autocast(self) -> Any:
        """The forward pass's autocast context (a no-op in fp32)."""
        if self.amp == "none":
            return nullcontext()
        return torch.autocast(self.device_type, dtype=torch.bfloat16 if self.amp == "bf16" else torch.float16)

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def step(self, params: Iterable[nn.Parameter]) -> None:
        """Clip the gradients of ``params`` (``optim.clip_grad``), step, update the loss scale, zero the
        gradients. The scheduler steps separately (``scheduler.step()``), after the caller read the rates."""
        if self.clip_grad is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(params, self.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)

    @property
    def parts(self) -> dict[str, Any]:
        """What a checkpoint holds the state of, by key (with the model's)."""
        return {"optimizer": self.optimizer, "scheduler": self.scheduler, "scaler": self.scaler}

    def head_lr(self, steps: int) -> float:
        """The head's learning rate after ``steps`` optimiser steps."""
        return self.lr * self.schedule(steps)


def build_optimiser(model: nn.Module, o: OptimConfig, steps_per_epoch: int, device_type: str = "cpu",
                    amp: str = "none") -> Optimiser:
    """AdamW over ``param_groups`` and its scheduler for ``o.epochs`` epochs of ``steps_per_epoch`` steps;
    ``amp`` applies on CUDA only (CPU trains in fp32)."""
    total_steps, warmup_steps = o.epochs * steps_per_epoch, round(o.warmup_epochs * steps_per_epoch)
    schedule = lambda s: lr_factor(s, warmup_steps, total_steps, o.warmup_start_factor, o.min_lr / o.lr)  # noqa: E731
    optimizer = torch.optim.AdamW(param_groups(model, o.lr, o.weight_decay, o.backbone_lr_mult), lr=o.lr, betas=o.betas)
    amp = amp if device_type == "cuda" else "none"
    return Optimiser(optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule), schedule,
                     torch.amp.GradScaler(device_type, enabled=amp == "fp16"), amp, device_type, o.lr, o.clip_grad)
