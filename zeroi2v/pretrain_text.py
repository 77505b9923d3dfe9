"""A text tower for the offline image model: locked-image tuning (LiT, Zhai et al. 2022) on captioned stills.

The quickstart's image model (``zeroi2v.pretrain``) has no text tower, so a text-initialised head
(``zeroi2v.text_head``) has nothing to start from offline. LiT trains a text tower contrastively against a
*frozen* image tower: here open_clip's own ``TextTransformer`` (the config's ``text_cfg``, one layer),
against the image model's joint-space embeddings (visual tower including its projection), on captions
made from each still's labels: "a photo of a large red circle at the top far left.". Each caption names a
random subset of the attributes (at least one), with or without its article, in one of the prompt
templates of ``text_head.TEMPLATES``, so single attributes ("a photo of a red object.", "a circle") and
class names made of these words work as prompts.

Several captions in a batch fit several stills ("a red object" fits every red one), so the loss is the
multi-positive contrastive loss of UniCL (Yang et al. 2022): every (caption, still) pair whose caption is
true of the still is a positive, with uniform targets over the positives, in both directions.

The tower is saved into the image model's folder with CLIP's key names (``token_embedding.weight``,
``transformer.*``, ``ln_final.*``, ``text_projection``, ``logit_scale``; the weights file rewritten
atomically), so ``local-dir:`` loads it like a real CLIP folder; ``text_pretrain.json`` holds the summary
(zero-shot accuracy of held-out stills per label group, against chance).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from zeroi2v.backbones import LOCAL_DIR, create_visual, save_local_dir
from zeroi2v.backbones.text import CLIP_INIT_LOGIT_SCALE, TextEncoder, build_text_tower, feature_norm_estimate, \
    tokenizer_for
from zeroi2v.data.synthetic import COLOUR_NAMES, SHAPES
from zeroi2v.files import atomic_write_text
from zeroi2v.pretrain import normalize_images
from zeroi2v.text_head import TEMPLATES, class_embeddings

WORDS = {
    "size_bin": ["small", "medium", "large"],
    "colour": list(COLOUR_NAMES),
    "shape": list(SHAPES),
    "y_bin": ["top", "upper", "lower", "bottom"],
    "x_bin": ["far left", "left", "right", "far right"],
}
"""Caption words per label group, in caption order; short, so a whole caption fits 16 tokens."""
SUMMARY_FILE = "text_pretrain.json"


def phrase(attrs: dict[str, int], article: bool = True) -> str:
    """Words for the named attributes: ``{"size_bin": 2, "colour": 0, "shape": 0}`` -> "a large red circle";
    no shape -> "object"; position -> "at the top far left"."""
    words = [WORDS[g][attrs[g]] for g in ("size_bin", "colour") if attrs.get(g, -1) >= 0]
    words.append(WORDS["shape"][attrs["shape"]] if attrs.get("shape", -1) >= 0 else "object")
    where = [WORDS[g][attrs[g]] for g in ("y_bin", "x_bin") if attrs.get(g, -1) >= 0]
    text = " ".join(words + (["at the", *where] if where else []))
    return ("an " if text[0] in "aeiou" else "a ") + text if article else text


def sample_captions(labels: dict[str, np.ndarray], rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    """One caption per still and what it claims: (captions, (N, groups) label or -1 where not named)."""
    groups = list(WORDS)
    n = len(labels[groups[0]])
    truth = np.stack([np.asarray(labels[g]) for g in groups], axis=1)
    named = rng.random((n, len(groups))) < 0.5
    none = ~named.any(1)
    named[none, rng.integers(len(groups), size=int(none.sum()))] = True
    claims = np.where(named & (truth >= 0), truth, -1)
    templates, articles = rng.integers(len(TEMPLATES), size=n), rng.random(n) < 0.5
    captions = [TEMPLATES[t].format(phrase(dict(zip(groups, row.tolist())), bool(a)))
                for row, t, a in zip(claims, templates, articles)]
    return captions, claims


class CachedTokenizer:
    """open_clip's tokenizer with a cache: the captions repeat across epochs."""

    def __init__(self, tokenizer):
        self.tokenizer, self.rows, self.index = tokenizer, [], {}

    def __call__(self, texts: list[str]) -> torch.Tensor:
        new = list(dict.fromkeys(t for t in texts if t not in self.index))
        if new:
            self.index.update({t: len(self.rows) + i for i, t in enumerate(new)})
            self.rows.extend(self.tokenizer(new))
        return torch.stack([self.rows[self.index[t]] for t in texts])


class CompactEmbedding(torch.nn.Module):
    """The rows of a token embedding that the captions can use, trained in place of the whole table (49k
    rows): the optimiser touches a few dozen rows instead of millions of numbers. ``write_back`` puts them
    into the full table (the rows no caption uses keep their initial values, as sparse updates would)."""

    def __init__(self, full: torch.nn.Embedding, used: torch.Tensor):
        super().__init__()
        remap = torch.full((full.num_embeddings,), -1, dtype=torch.long)
        remap[used] = torch.arange(len(used))
        self.register_buffer("remap", remap, persistent=False)
        self.used, self.weight = used, torch.nn.Parameter(full.weight.detach()[used].clone())

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(self.remap[ids], self.weight)

    def write_back(self, full: torch.nn.Embedding) -> torch.nn.Embedding:
        with torch.no_grad():
            full.weight[self.used] = self.weight
        return full


def caption_vocabulary(tokenizer) -> torch.Tensor:
    """Every token id a caption of ``sample_captions`` can hold (start, end, padding included), sorted."""
    words = [w for ws in WORDS.values() for w in ws] + ["a", "an", "object", "at the"] + \
        [t.replace("{}", "") for t in TEMPLATES]
    return torch.unique(tokenizer(words))


def _image_embeddings(visual: torch.nn.Module, images: np.ndarray, chunk: int = 500) -> torch.Tensor:
    visual.eval()
    with torch.no_grad():
        out = [visual(normalize_images(torch.from_numpy(images[i:i + chunk]))) for i in range(0, len(images), chunk)]
    return F.normalize(torch.cat(out).float(), dim=-1)


def unicl_loss(text: torch.Tensor, image: torch.Tensor, positives: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """UniCL's bidirectional contrastive loss with uniform targets over the positives (Yang et al. 2022)."""
    logits = scale * text @ image.T
    pos = positives.float()
    t2i = -(pos * logits.log_softmax(1)).sum(1) / pos.sum(1)
    i2t = -(pos.T * logits.T.log_softmax(1)).sum(1) / pos.T.sum(1)
    return (t2i.mean() + i2t.mean()) / 2


def _fits(claims: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """(B, B) bool: caption i's claims are all true of still j."""
    return ((claims[:, None] < 0) | (claims[:, None] == truth[None])).all(-1)


def pretrain_text_tower(local_dir, images: np.ndarray, labels: dict[str, np.ndarray], epochs: int = 8,
                        seed: int = 0, log=print, batch_size: int = 256, lr: float = 2e-3,
                        val_fraction: float = 0.1) -> dict:
    """Train a text tower against the frozen image model in ``local_dir`` (a folder or ``local-dir:`` name)
    on captions of (images, labels); save it into the folder; return (and write) the summary."""
    start = time.perf_counter()
    folder = Path(str(local_dir).removeprefix(LOCAL_DIR))
    name = f"{LOCAL_DIR}{folder}"
    visual, model_cfg = create_visual(name)  # the image tower with its projection, frozen from here on
    if not model_cfg.get("text_cfg"):
        raise ValueError(f"{folder}/open_clip_config.json has no text_cfg, so no text tower can be built; add "
                         f"open_clip's text_cfg (see zeroi2v/model_configs/zeroi2v-tiny.json)")
    visual.requires_grad_(False)
    torch.manual_seed(seed)
    tower, tokenize = build_text_tower(model_cfg), CachedTokenizer(tokenizer_for(model_cfg))
    full_embedding = tower.token_embedding
    tower.token_embedding = CompactEmbedding(full_embedding, caption_vocabulary(tokenize.tokenizer))
    logit_scale = torch.nn.Parameter(torch.tensor(CLIP_INIT_LOGIT_SCALE))
    image_emb = _image_embeddings(visual, images)
    truth = torch.from_numpy(np.stack([np.asarray(labels[g]) for g in WORDS], axis=1)).long()
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    n_val = max(1, int(len(images) * val_fraction))
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    opt = torch.optim.AdamW([*tower.parameters(), logit_scale], lr=lr, weight_decay=0.01)
    steps = epochs * math.ceil(len(train_idx) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    rng, gen = np.random.default_rng([seed, 7]), torch.Generator().manual_seed(seed + 1)
    train_labels = {g: np.asarray(labels[g])[train_idx.numpy()] for g in WORDS}
    tower.train()
    for epoch in range(epochs):
        captions, claims = sample_captions(train_labels, rng)
        tokens, claims = tokenize(captions), torch.from_numpy(claims).long()
        order, total = torch.randperm(len(train_idx), generator=gen), 0.0
        for i in range(0, len(order), batch_size):
            b = order[i:i + batch_size]
            idx = train_idx[b]
            loss = unicl_loss(F.normalize(tower(tokens[b]), dim=-1), image_emb[idx], _fits(claims[b], truth[idx]),
                              logit_scale.clamp(max=math.log(100)).exp())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(b)
        log(f"  text tower (LiT) epoch {epoch + 1}/{epochs}: loss {total / len(order):.3f}, "
            f"{len(tokenize.index)} distinct captions so far")
    tower.token_embedding = tower.token_embedding.write_back(full_embedding)
    train_seconds = time.perf_counter() - start
    proj, ln = visual.proj.detach(), visual.ln_post
    encoder = TextEncoder(tower.eval(), tokenize.tokenizer, proj, float(logit_scale.detach().exp().clamp(max=100)),
                          feature_norm_estimate(proj, ln.weight.detach(), ln.bias.detach()))
    accuracy = zero_shot_accuracy(encoder, image_emb[val_idx], {g: truth[val_idx, i] for i, g in enumerate(WORDS)})
    text = {k: v.detach().contiguous() for k, v in tower.state_dict().items()}
    save_local_dir(visual, model_cfg, folder, extra_tensors={**text, "logit_scale": logit_scale.detach().clone()})
    summary = {"backbone": name, "method": "LiT (locked image tower), UniCL loss", "epochs": epochs, "seed": seed,
               "stills": len(images), "held_out": n_val, "captions_seen": epochs * len(train_idx),
               "distinct_captions": len(tokenize.index), "train_seconds": round(train_seconds, 2),
               "captions_per_second": round(epochs * len(train_idx) / train_seconds, 1),
               "zero_shot": accuracy, "seconds": round(time.perf_counter() - start, 2)}
    atomic_write_text(folder / SUMMARY_FILE, json.dumps(summary, indent=2))
    log("  zero-shot on held-out stills: " + ", ".join(f"{g} {a['accuracy']:.2f} (chance {a['chance']:.2f})"
                                                         for g, a in accuracy.items()))
    return summary


def group_prompts(group: str) -> list[str]:
    """A class name per label of ``group`` as the captions say it: "circle", "red object", "object at the top"."""
    return [phrase({group: i}, article=False) for i in range(len(WORDS[group]))]


def zero_shot_accuracy(encoder: TextEncoder, image_emb: torch.Tensor, truth: dict[str, torch.Tensor]) -> dict:
    """Per label group: top-1 of ``image_emb`` (normalised joint-space embeddings) against the group's
    prompts (``group_prompts`` in ``TEMPLATES``, averaged as CLIP's zero-shot evaluation), and chance."""
    out = {}
    for group, y in truth.items():
        classes = class_embeddings(encoder, group_prompts(group))
        known = y >= 0
        pred = (image_emb @ classes.T).argmax(1)
        out[group] = {"accuracy": round(float((pred == y)[known].float().mean()), 4),
                      "chance": round(1 / len(WORDS[group]), 4)}
    return out
