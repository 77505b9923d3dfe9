"""CLIP's text tower, read from the same weights as the image tower: what a text-initialised head needs.

A CLIP checkpoint (open_clip ``.bin``/``.safetensors``, an open_clip directory, or OpenAI's TorchScript
``.pt`` read as data by ``zeroi2v.backbones.weights``) holds, beside ``visual.*``, the text transformer at
the top level (``token_embedding.weight``, ``positional_embedding``, ``transformer.*``, ``ln_final.*``,
``text_projection``) and ``logit_scale``; open_clip's ``CustomTextCLIP`` keeps the same parts under
``text.``. ``TextEncoder.from_state_dict`` rebuilds that tower with open_clip's own builder
(``_build_text_tower``) from the model config's ``text_cfg`` and tokenises with open_clip's BPE tokenizer.
Weights with no text tower (the quickstart's image-only model, a ``visual.*``-only file) give ``None``.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from open_clip.model import _build_text_tower  # the builder open_clip's CLIP uses for its text tower
from open_clip.tokenizer import SimpleTokenizer

from zeroi2v.backbones.weights import load_state_dict_file

CLIP_INIT_LOGIT_SCALE = math.log(1 / 0.07)
"""``logit_scale`` (a log) when the weights hold none: CLIP's initial temperature (Radford et al. 2021)."""


class TextEncoder:
    """Class names -> CLIP joint-space embeddings, plus what maps them into the image tower's token space.

    ``encode(texts)`` gives L2-normalised text embeddings (N, embed_dim). ``visual_proj`` (width,
    embed_dim) is the image tower's projection of the pooled class token into the joint space,
    ``logit_scale`` CLIP's learned temperature as a multiplier (``exp`` of the stored log), and
    ``feature_norm`` a data-free estimate of the typical ``|ln_post(x_cls) @ visual_proj|`` (see
    ``feature_norm_estimate``), used to give a text-initialised head CLIP's logit magnitude.
    """

    def __init__(self, tower: nn.Module, tokenize: Callable[[list[str]], torch.Tensor], visual_proj: torch.Tensor,
                 logit_scale: float, feature_norm: float):
        self.tower, self.tokenize = tower, tokenize
        self.visual_proj = visual_proj.detach().float()
        self.logit_scale, self.feature_norm = float(logit_scale), float(feature_norm)

    @property
    def embed_dim(self) -> int:
        return self.visual_proj.shape[1]

    def encode(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        """(N, embed_dim) L2-normalised embeddings of ``texts`` (the tower runs in eval mode, no grad)."""
        was_training = self.tower.training
        self.tower.eval()
        try:
            with torch.no_grad():
                out = [self.tower(self.tokenize(texts[i:i + batch_size])).float()
                       for i in range(0, len(texts), batch_size)]
        finally:
            self.tower.train(was_training)
        return F.normalize(torch.cat(out), dim=-1) if out else torch.zeros(0, self.embed_dim)

    @classmethod
    def from_state_dict(cls, model_cfg: dict[str, Any], state_dict: dict[str, torch.Tensor],
                        source: str = "the weights") -> TextEncoder | None:
        """The text tower in ``state_dict`` (a whole CLIP's), built from ``model_cfg['text_cfg']``; None
        when the state dict holds no text tower or no image projection (``visual.proj``). ``source``
        names the weights in errors."""
        text_sd = text_part(state_dict)
        proj = state_dict.get("visual.proj")
        if not text_sd or proj is None:
            return None
        text_cfg = model_cfg.get("text_cfg")
        if not text_cfg:
            raise ValueError(f"{source} holds a text tower but the model config has no text_cfg; add open_clip's "
                             f"text_cfg (context_length, vocab_size, width, heads, layers) to the config")
        if text_cfg.get("hf_model_name"):
            raise NotImplementedError(f"{source}: Hugging Face text towers (text_cfg.hf_model_name) are not "
                                      f"supported yet; use head_init 'random'")
        tower = build_text_tower(model_cfg)
        missing, unexpected = tower.load_state_dict({k: v.float() for k, v in text_sd.items()
                                                     if k in tower.state_dict()}, strict=False)
        if missing:
            raise ValueError(f"{source}: its text tower does not fit the config's text_cfg (missing "
                             f"{missing[:5]}{'...' if len(missing) > 5 else ''}); use the config these weights were "
                             f"trained with")
        scale = state_dict.get("logit_scale")
        logit_scale = math.exp(float(scale.float().reshape(-1)[0])) if scale is not None else math.exp(CLIP_INIT_LOGIT_SCALE)
        norm = feature_norm_estimate(proj.float(), state_dict.get("visual.ln_post.weight"),
                                     state_dict.get("visual.ln_post.bias"))
        return cls(tower.eval(), tokenizer_for(model_cfg), proj, min(logit_scale, 100.0), norm)


def text_part(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The text tower's tensors under the names of open_clip's ``TextTransformer`` (empty if none):
    a CLIP's top-level text keys, or a ``CustomTextCLIP``'s ``text.*``."""
    nested = {k[len("text."):]: v for k, v in state_dict.items() if k.startswith("text.")}
    if "token_embedding.weight" in nested:
        return nested
    if "token_embedding.weight" not in state_dict:
        return {}
    return {k: v for k, v in state_dict.items() if not k.startswith("visual.") and k not in ("logit_scale", "logit_bias")}


def build_text_tower(model_cfg: dict[str, Any]) -> nn.Module:
    """open_clip's ``TextTransformer`` for a model config (random weights), output in the joint space."""
    return _build_text_tower(model_cfg["embed_dim"], model_cfg["text_cfg"], quick_gelu=model_cfg.get("quick_gelu", False))


def tokenizer_for(model_cfg: dict[str, Any]) -> SimpleTokenizer:
    """open_clip's BPE tokenizer at the config's context length (offline: the vocabulary ships with open_clip)."""
    text_cfg = model_cfg.get("text_cfg", {})
    return SimpleTokenizer(context_length=text_cfg.get("context_length", 77), **text_cfg.get("tokenizer_kwargs", {}))


def feature_norm_estimate(proj: torch.Tensor, ln_weight: torch.Tensor | None = None,
                          ln_bias: torch.Tensor | None = None) -> float:
    """Typical ``|x @ proj|`` for ``x = ln_post(class token)``, from the weights alone: a LayerNorm output
    is ``g * z + b`` with ``z`` zero-mean, unit-variance per dimension; treating ``z`` as isotropic,
    ``E|x @ proj|^2 = |diag(g) proj|_F^2 + |b @ proj|^2``. Real features are not isotropic, so this sets
    the order of magnitude, not the exact value."""
    g = ln_weight.float() if ln_weight is not None else torch.ones(proj.shape[0])
    b = ln_bias.float() if ln_bias is not None else torch.zeros(proj.shape[0])
    return float(((g[:, None] * proj).square().sum() + (b @ proj).square().sum()).sqrt().clamp_min(1e-6))


def open_clip_text_encoder(name: str, pretrained: str | None) -> TextEncoder | None:
    """``OpenCLIP.text_encoder``: the text tower in the weights ``create`` reads for (name, pretrained),
    read as data (``load_state_dict_file``: safetensors, ``weights_only`` torch files, TorchScript archives
    without running them); None with no weights (random init) or no text tower in them."""
    from zeroi2v.backbones.openclip import _resolve_weights, backbone_architecture
    weights = _resolve_weights(name, pretrained)
    if weights is None:
        return None
    return TextEncoder.from_state_dict(backbone_architecture(name, pretrained), load_state_dict_file(weights),
                                       source=str(weights))
