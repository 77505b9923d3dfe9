"""``zeroi2v init``: a short, commented starter config for one's own clips.

``write_starter_config(data, out)`` looks at ``data`` (a folder per class, or an mmaction list ``path label``),
counts classes and clips, finds class names (the folders, or a class file beside a list), measures a few
clip lengths to choose the frame sampler, sizes crops from the backbone's image size, and turns flips off
when class names look directional. The config inherits the paper's recipe from the packaged base
(``base: zeroi2v:configs/base/clip_vit_b16.yaml``, which a pip install has) and holds only what differs,
each value with a comment saying why.
"""
from __future__ import annotations

import json
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from zeroi2v.config import PAPER_RESIZE
from zeroi2v.data.formats import VIDEO_EXTENSIONS, read_class_names, read_folder, read_mmaction_list
from zeroi2v.data.transforms import directional_classes, mirror_pairs

BASE = "zeroi2v:configs/base/clip_vit_b16.yaml"
BASE_BACKBONE, BASE_FRAMES = "ViT-B-16", 8
LAYOUTS = ("folder", "mmaction")
CLASS_FILES = ("classes.txt", "classInd.txt", "class_names.txt", "classnames.txt", "labels.txt", "label_map.txt")
"""Class-name files looked for beside an mmaction list (one name per line, or ``index name`` lines)."""
DENSE_FROM = BASE_FRAMES * 16
"""Clips at least this long (median frames) get dense sampling: 8 frames every 16th, the paper's K400 choice;
shorter ones get uniform (TSN) sampling, which spreads the 8 frames over the whole clip (SSv2, UCF101)."""
PROBED = 8
"""Clips whose frame count is read to choose the sampler."""
INLINE_NAMES = 40
"""Up to this many class names are written into the config; more: the class file's path."""


@dataclass
class Layout:
    """What ``detect_layout`` found."""

    format: str
    train: Path
    root: Path | None
    classes: list[str]
    clips: int
    videos: list[Path]
    val: Path | None = None
    class_file: Path | None = None
    notes: list[str] = field(default_factory=list)


def detect_layout(data: str | os.PathLike, format: str | None = None) -> Layout:
    """The layout of ``data``: a folder per class (``data/<class>/*.mp4``, or ``data/train/<class>/...`` with
    ``val/`` or ``test/`` beside it) or an mmaction list (with ``val``/``test`` lists named alike beside it)."""
    path = Path(data)
    if format is not None and format not in LAYOUTS:
        raise ValueError(f"init reads the layouts {list(LAYOUTS)}, not {format!r}; for a public data set start "
                         f"from its config in configs/ (see the README)")
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such folder or list file; pass --data a folder per class or an mmaction list")
    fmt = format or ("folder" if path.is_dir() else "mmaction")
    if fmt == "folder" and not path.is_dir():
        raise ValueError(f"{path} is a file, not a folder: drop --format folder (it reads as an mmaction list)")
    return _folder_layout(path) if fmt == "folder" else _list_layout(path)


def _class_folders(path: Path) -> bool:
    return path.is_dir() and any(d.is_dir() and any(f.suffix.lower() in VIDEO_EXTENSIONS for f in d.iterdir())
                                 for d in path.iterdir())


def _folder_layout(path: Path) -> Layout:
    train, val = path, None
    if not _class_folders(path) and _class_folders(path / "train"):
        train = path / "train"
        val = next((path / s for s in ("val", "validation", "test") if _class_folders(path / s)), None)
    if not _class_folders(train):
        raise ValueError(f"{path} holds no class folders with videos ({', '.join(VIDEO_EXTENSIONS)}); init reads "
                         f"a folder per class ({path}/<class>/*.mp4) or an mmaction list (`path label` lines)")
    ann = read_folder(train)
    return Layout("folder", train, None, ann.classes, len(ann), [train / s.path for s in ann.samples], val)


def _list_layout(path: Path) -> Layout:
    try:
        ann = read_mmaction_list(path)
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a text list; init reads an mmaction list (`path label` per line) or a "
                         f"folder per class") from None
    if not ann.samples:
        raise ValueError(f"{path} lists no clips; an mmaction list has one `path label` line per clip")
    first = ann.samples[0].path
    root = next((r for r in (path.parent, Path.cwd()) if (r / first).exists()), None)
    if root is None:
        raise FileNotFoundError(f"{path}: its first clip {first!r} is found neither beside the list nor as written; "
                                f"write paths relative to the list's folder")
    layout = Layout("mmaction", path, root, ann.classes, len(ann), [root / s.path for s in ann.samples])
    layout.val = next((path.with_name(path.name.replace("train", s)) for s in ("val", "test")
                       if "train" in path.name and path.with_name(path.name.replace("train", s)).is_file()), None)
    for name in CLASS_FILES:
        file = path.parent / name
        if file.is_file():
            names = read_class_names(file)
            if len(names) >= len(ann.classes):
                layout.classes, layout.class_file = names, file
                break
            layout.notes.append(f"{file} names {len(names)} classes but the list has labels up to "
                                f"{len(ann.classes) - 1}: not used")
    return layout


def clip_lengths(videos: list[Path], n: int = PROBED) -> list[int]:
    """Frame counts of up to ``n`` clips spread over ``videos`` (unreadable ones skipped)."""
    from zeroi2v.data.decode import VideoDecodeError, open_video
    picked = videos[:: max(1, len(videos) // n)][:n]
    lengths = []
    for video in picked:
        try:
            lengths.append(int(open_video(video).num_frames))
        except (VideoDecodeError, OSError, ValueError):
            continue
    return lengths


def backbone_facts(backbone: str) -> dict[str, int]:
    """``width``, ``layers``, ``heads`` and ``image_size`` of a backbone (``zeroi2v.backbones``), no weights."""
    from zeroi2v.backbones import family_of
    family, inner = family_of(backbone)
    return family.facts(family.arch(inner))


def starter_config(data: str | os.PathLike, format: str | None = None, backbone: str = BASE_BACKBONE,
                   out_dir: str = "runs/my_clips") -> str:
    """The starter config's YAML text (comments included) for the clips at ``data``."""
    lay = detect_layout(data, format)
    size = backbone_facts(backbone)["image_size"]
    lines = [f"# Starter config written by `zeroi2v init` for {Path(data).resolve()}.",
             "# Every key is documented in zeroi2v/config.py (the docstring under each field);",
             "# `zeroi2v config show THIS_FILE` prints it fully resolved. Train: `zeroi2v train THIS_FILE`.",
             f"base: {BASE}   # the paper's recipe (CLIP ViT-B/16, STDHA, linear adapters)", "", "model:",
             *_model_lines(backbone, lay), "", "data:", *_data_lines(lay, size), "", "train:",
             *_train_lines(lay, out_dir), "", "test:",
             f"  short_side: {size}                 # test frames: short side at the crop size, then the crops"]
    return "\n".join(_aligned(line) for line in lines) + "\n"


def _aligned(line: str, column: int = 34) -> str:
    """A value's comment moved to ``column`` (the lines of the config, not the header, are written unaligned)."""
    text, sep, comment = line.partition("  # ")
    if not sep:
        return line
    if not text.strip():  # a comment continued on its own line
        return " " * column + "# " + comment.strip()
    return f"{text.rstrip():<{column - 1}} # {comment.strip()}"


def _model_lines(backbone: str, lay: Layout) -> list[str]:
    shown = ", ".join(lay.classes[:8]) + (", ..." if len(lay.classes) > 8 else "")
    lines = [f"  num_classes: {len(lay.classes)}                # {shown}"]
    if backbone != BASE_BACKBONE:
        lines.insert(0, f"  backbone: {json.dumps(backbone)}")
        lines += ["  temporal: {offsets: \"1x1,-1x1\"}   # Δt: one head reads the previous frame, one the next, "
                  "the rest spatial"]
        if "openai" not in _pretrained_tags(backbone):
            lines.append("  pretrained: null              # no OpenAI CLIP weights for this backbone: set a tag or a "
                         "weights file (random init otherwise)")
    return lines


def _pretrained_tags(backbone: str) -> list[str]:
    try:
        import open_clip
        return list(open_clip.list_pretrained_tags_by_model(backbone))
    except Exception:  # an unknown or local backbone has no tags
        return []


def _data_lines(lay: Layout, size: int) -> list[str]:
    q = json.dumps
    lines = [f"  format: {lay.format}                # detected: "
             + ("one folder per class" if lay.format == "folder" else "an mmaction list (`path label` lines)"),
             f"  train_ann: {q(str(lay.train.resolve()))}   # {lay.clips} clips, {len(lay.classes)} classes",
             f"  val_ann: {q(str(lay.val.resolve())) if lay.val else 'null'}"
             + ("" if lay.val else "   # no validation split found beside the training one: set one to validate")]
    if lay.root is not None:
        lines.append(f"  root: {q(str(lay.root.resolve()))}   # the list's paths are relative to its folder")
    if lay.class_file is not None:
        names = q(lay.classes) if len(lay.classes) <= INLINE_NAMES else q(str(lay.class_file.resolve()))
        lines.append(f"  format_args: {{classes: {names}}}   # class names from {lay.class_file.name}")
    lines += [f"  # {note}" for note in lay.notes]
    lines += _sampler_lines(clip_lengths(lay.videos))
    lines += [f"  size: {size}                      # the backbone's image size",
              f"  short_side: {round(size * PAPER_RESIZE)}                # size × 256/224, the paper's ratio"]
    lines += _flip_lines(lay.classes)
    lines.append(f"  workers: {min(8, os.cpu_count() or 1)}                   # decoding processes (this machine's cores, at most 8)")
    return lines


def _sampler_lines(lengths: list[int]) -> list[str]:
    if not lengths:
        return ["  sampler: uniform              # no clip could be read to measure lengths: uniform (TSN) covers "
                "any length"]
    median = int(statistics.median(lengths))
    if median >= DENSE_FROM:
        return [f"  sampler: dense                 # long clips (median {median} frames over {len(lengths)} read): "
                f"8 frames every 16th, as for K400", "  interval: 16"]
    return [f"  sampler: uniform               # short clips (median {median} frames over {len(lengths)} read, "
            f"< {DENSE_FROM}): one frame per 8th of the clip (TSN), as for SSv2"]


def _flip_lines(classes: list[str]) -> list[str]:
    directional = directional_classes(classes)
    if not directional:
        return ["  flip: 0.5                      # class names do not look directional: mirrored clips keep their class"]
    shown = ", ".join(directional[:6]) + (", ..." if len(directional) > 6 else "")
    pairs = mirror_pairs(classes)
    keep = (f"flip: 0.5 and flip_label_map: {json.dumps(pairs)}" if pairs
            else "flip: 0.5 and flip_label_map: [[a_class, its_mirror], ...]")
    return [f"  flip: 0.0                      # off: class names look directional ({shown}); a mirrored clip",
            f"  # may be another class. To flip anyway, set {keep}"]


def _train_lines(lay: Layout, out_dir: str) -> list[str]:
    lines = [f"  out_dir: {json.dumps(out_dir)}"]
    if lay.clips < 64:  # the recipe's 8 × 8 clips per step need at least 64 clips
        batch = min(8, lay.clips)
        lines += [f"  batch_size: {batch}", f"  total_batch: {lay.clips // batch * batch}            "
                  f"# {lay.clips} clips: fewer than the recipe's 64 per optimiser step"]
    return lines


def write_starter_config(data: str | os.PathLike, out: str | os.PathLike, format: str | None = None,
                         backbone: str = BASE_BACKBONE, force: bool = False) -> Path:
    """Write ``starter_config`` to ``out`` (atomically); an existing ``out`` is refused unless ``force``."""
    from zeroi2v.files import atomic_write_text
    out = Path(out)
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists; pick another --out or pass --force to overwrite it")
    return atomic_write_text(out, starter_config(data, format, backbone, out_dir=f"runs/{out.stem}"))
