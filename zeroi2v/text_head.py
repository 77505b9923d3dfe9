"""A classifier head that starts from the class names: CLIP's zero-shot classifier in the class-token space.

CLIP (Radford et al. 2021) scores an image against class ``c`` as ``s * <f / |f|, t_c>`` with
``f = ln_post(x_cls) @ P`` (``P`` the image projection), ``t_c`` the class's text embedding and ``s`` the
learned ``logit_scale``. In its zero-shot evaluation ``t_c`` is an ensemble over prompt templates: each
template's embedding is normalised, the embeddings are averaged and the mean is normalised again.

The video model's head reads ``x = ln_post(x_cls)`` averaged over frames (width dims, before any
projection, ZeroI2V paper §3), so the same scores are a plain linear layer:

    logits = x @ W^T,   W = s' * T @ P^T  (C x width),   bias = 0,

with ``T`` the (C, embed_dim) matrix of the ``t_c``. The head stays an ``nn.Linear``: it merges and
costs nothing extra. On one image, ``x @ W^T = (s' * |f| / s) * CLIP's logits``: the per-image norm
``1/|f|`` is dropped, and since ``s' * |f| / s > 0`` is the same for every class of that image, the
ranking of the classes is exactly CLIP's. With no training at all this is zero-shot video
classification on frame-averaged features (the ``zero_shot`` few-shot method); as the start of training
(``head_init: text``) it replaces a random head.

The scale: ``s' = s / n`` with ``n`` a data-free estimate of the typical ``|f|``
(``TextEncoder.feature_norm``: the norm of the projected LayerNorm output if its normalised part were
isotropic), so the initial logits have CLIP's calibrated magnitude (``s * cos``) rather than one that
depends on the backbone's width and projection norm: a softmax that is neither flat nor saturated for
cross-entropy fine-tuning.
"""
from __future__ import annotations

import re
from typing import Sequence

import torch
import torch.nn.functional as F

from zeroi2v.backbones import display_name, family_of
from zeroi2v.backbones.text import TextEncoder

__all__ = ["TEMPLATES", "NoTextTowerError", "TextEncoder", "class_phrase", "class_embeddings", "text_head",
           "init_head_from_text", "text_head_for"]

TEMPLATES: tuple[str, ...] = ("a photo of {}.", "a video of {}.", "a clip of {}.", "an example of {}.")
"""Prompt templates averaged per class (CLIP's zero-shot evaluation style; a small set of the kind of CLIP's
Kinetics-700 templates). Short, so they fit small context lengths; the offline text tower
(``zeroi2v.pretrain_text``) is trained with these words."""


class NoTextTowerError(ValueError):
    """The backbone's weights hold no CLIP text tower, so the head cannot start from class names."""


def class_phrase(name: str) -> str:
    """A class name as words for a prompt: ``"move_left"`` -> ``"move left"``, ``"Pick  up"`` -> ``"Pick up"``."""
    return re.sub(r"\s+", " ", name.replace("_", " ")).strip()


def class_embeddings(encoder: TextEncoder, class_names: Sequence[str],
                     templates: Sequence[str] = TEMPLATES) -> torch.Tensor:
    """(C, embed_dim): per class, the template embeddings normalised, averaged, normalised again."""
    if not class_names:
        raise ValueError("no class names to build a text head from")
    if not templates or any("{}" not in t for t in templates):
        raise ValueError(f"every prompt template needs a '{{}}' for the class name, got {list(templates)}")
    prompts = [t.format(class_phrase(c)) for c in class_names for t in templates]
    emb = encoder.encode(prompts).view(len(class_names), len(templates), -1)
    return F.normalize(F.normalize(emb, dim=-1).mean(dim=1), dim=-1)


def text_head(encoder: TextEncoder, class_names: Sequence[str],
              templates: Sequence[str] = TEMPLATES) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight (C, width) and bias (C,) of the linear head that ranks classes as CLIP does (module docstring)."""
    t = class_embeddings(encoder, class_names, templates)
    weight = (encoder.logit_scale / encoder.feature_norm) * t @ encoder.visual_proj.T
    return weight, torch.zeros(len(class_names))


def text_head_for(model_cfg, class_names: Sequence[str], templates: Sequence[str] = TEMPLATES
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """``text_head`` through the text tower of ``model_cfg``'s backbone (a ``ModelConfig``: its ``backbone``
    and ``pretrained``); NoTextTowerError when its weights hold none."""
    family, name = family_of(model_cfg.backbone)
    encoder = family.text_encoder(name, model_cfg.pretrained)
    if encoder is None:
        shown = display_name(model_cfg.backbone)
        weights = f" ({display_name(model_cfg.pretrained)})" if model_cfg.pretrained else \
            (" (random initialisation: no weights)" if not name.startswith("local-dir:") else "")
        raise NoTextTowerError(
            f"backbone '{shown}' has no text tower in its weights{weights}: use head_init 'random', or load a "
            f"full CLIP checkpoint (an open_clip tag, a .bin/.safetensors with the text weights, or a local-dir: "
            f"folder that holds them; `zeroi2v pretrain-image --text-only` adds one to the quickstart's image model)")
    return text_head(encoder, class_names, templates)


def init_head_from_text(model, class_names: Sequence[str], templates: Sequence[str] = TEMPLATES) -> None:
    """Set ``model.head`` (a ``ZeroI2V``'s) from the class names through its backbone's text tower.

    NoTextTowerError when the backbone's weights hold none; ValueError when the head's shape does not fit
    (class count, or a text tower whose projection does not match the image tower's width).
    """
    head = model.head
    if len(class_names) != head.out_features:
        raise ValueError(f"the model's head has {head.out_features} classes but {len(class_names)} class names "
                         f"were given; pass one name per class, in label order")
    weight, bias = text_head_for(model.cfg, class_names, templates)
    if weight.shape[1] != head.in_features:
        raise ValueError(f"backbone '{display_name(model.cfg.backbone)}': its image projection takes "
                         f"{weight.shape[1]} dims but the head reads {head.in_features}; the text "
                         f"tower's weights belong to another image tower")
    with torch.no_grad():
        head.weight.copy_(weight.to(head.weight))
        head.bias.copy_(bias.to(head.bias))
