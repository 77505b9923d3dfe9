"""A tiny synthetic video set that separates what a temporal embedding adds from what STDHA adds.

Every clip shows one object (circle, square, triangle, cross or an asymmetric "ell", one of 8 well-separated
colours) on a random plain or gradient background with mild noise, drawn on a torus: an object leaving one
edge re-enters at the opposite edge. Each class is a small generator of per-frame object state registered
with its kind; a shared renderer turns states into frames, for videos and for the still images used to
pre-train a small image backbone on *what* and *where* (shape, colour, position, size, orientation).

Two kinds of classes, chosen for what they let a model without cross-frame attention do:

* "order" classes come in mirror pairs (moving left / right, up / down, growing / shrinking, rotating
  clockwise / counter-clockwise). One class of a pair is the other played backwards, so the *set* of frames
  has the same distribution for both and any order-less pooling of frames (averaging per-frame features)
  cannot tell them apart. But frame t alone does depend on t (a left-mover starts on the right; a rotation
  starts near angle 0 or near 180°), so per-frame features plus a temporal embedding can.

* "relation" classes come in pairs (colour changes mid-clip / stays; fast / slow; moves-then-stops /
  stops-then-moves; returns to its start / keeps going), all moving (if at all) along a random diagonal from
  a start that is uniform on the torus, with a colour uniform over the palette. Hence for every frame index
  t, the distribution of frame t alone is the *same* for both classes of a pair (position uniform, colour
  uniform, same shape/size/angle/background laws; tested). The expected value of any sum over frames of
  per-frame features, temporal embedding or not, is then identical for both classes, so a linear head on
  frame-averaged features (ZeroI2V's head without STDHA) gets no signal from it: only second-order effects
  (e.g. a slow object's positions are more concentrated than a fast one's) remain, and they are weak.
  The classes differ only in how frames relate to each other — exactly what attention to neighbouring
  frames (STDHA's shifted heads) reads. Relations that show in every pair of neighbouring frames (still /
  slow / fast / jitter: how far the object goes from one frame to the next; colour_same / colour_flicker)
  are learnt far sooner than those that show in one pair only (a single colour change, a stop). Fast and
  slow go further: with speeds S/T and 3·S/T per axis (and T not a multiple of 3) both visit the same
  lattice of positions, so even the bag of frames is identical.

Speeds are per axis in pixels per frame, in units of u = size / num_frames (2 px at 32 px, 16 frames):
keep-going / return 0.5u, slow and move/stop 1u, fast 3u; relation objects move diagonally so none of them
looks like an order-class translation (which are horizontal or vertical and do not wrap).
"""

from __future__ import annotations

import json
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from zeroi2v.data.decode import write_video

# ---------------------------------------------------------------------------------------------------------
# Appearance: palette, shapes, backgrounds, and the one renderer shared by videos and stills.

PALETTE = {  # saturated, far apart in RGB and in hue, all bright against the dark backgrounds
    "red": (230, 40, 40), "orange": (250, 140, 20), "yellow": (240, 225, 40), "green": (40, 200, 60),
    "cyan": (40, 215, 230), "blue": (50, 90, 245), "magenta": (220, 50, 220), "white": (245, 245, 245),
}
COLOUR_NAMES = list(PALETTE)
_COLOURS = np.array(list(PALETTE.values()), dtype=np.float32)

SHAPES = ("circle", "square", "triangle", "cross", "ell")
SYMMETRY_DEGREES = {"circle": 0, "square": 90, "triangle": 360, "cross": 90, "ell": 360}  # 0: any angle
ASYMMETRIC_SHAPES = ("triangle", "ell")  # a rotation of these is visible over the whole turn


def _inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Membership in the unit shape (about [-1, 1]²) in the object's own coordinates; v points down."""
    au, av = np.abs(u), np.abs(v)
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "square":
        return (au <= 0.8) & (av <= 0.8)
    if shape == "triangle":  # isosceles, apex up: mirror-symmetric only
        return (v <= 0.8) & (v >= -1.0) & (au <= 0.45 * (v + 1.0))
    if shape == "cross":
        return ((au <= 0.3) & (av <= 1.0)) | ((av <= 0.3) & (au <= 1.0))
    if shape == "ell":
        return ((u >= -0.8) & (u <= -0.2) & (av <= 0.9)) | ((au <= 0.8) & (v >= 0.3) & (v <= 0.9))
    raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")


def random_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A dark plain colour or a linear gradient between two dark colours, float (size, size, 3)."""
    low = rng.uniform(0, 90, 3)
    if rng.random() < 0.5:
        return np.broadcast_to(low, (size, size, 3)).astype(np.float32)
    high, phi = rng.uniform(0, 90, 3), rng.uniform(0, 2 * np.pi)
    c = (np.arange(size) + 0.5) / size - 0.5
    ramp = np.cos(phi) * c[None, :] + np.sin(phi) * c[:, None]
    ramp = (ramp - ramp.min()) / (np.ptp(ramp) + 1e-6)
    return (low + (high - low) * ramp[..., None]).astype(np.float32)


@dataclass
class ObjectTrack:
    """Per-frame state of the object: centre (px, taken modulo the size: torus), half-extent radius (px),
    clockwise angle (degrees), palette index; plus the shape and the class's own parameters for metadata."""

    shape: np.ndarray  # (T,) shape names; one per frame so stills of many shapes share the renderer
    x: np.ndarray
    y: np.ndarray
    radius: np.ndarray
    angle: np.ndarray
    colour: np.ndarray  # (T,) int palette indices
    params: dict = field(default_factory=dict)

    def reversed(self) -> "ObjectTrack":
        """The same track played backwards (how each order class's mirror partner is made)."""
        return ObjectTrack(*(a[::-1].copy() for a in (self.shape, self.x, self.y, self.radius, self.angle,
                                                       self.colour)), params=dict(self.params))


def render(track: ObjectTrack, background: np.ndarray, rng: np.random.Generator, noise: float = 3.0,
           supersample: int = 3, brightness: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Frames uint8 (T, S, S, 3) and tight boxes float (T, 4) = (x0, y0, x1, y1) in pixels.

    background: (S, S, 3), or (T, S, S, 3) for one per frame (stills). noise: Gaussian sigma on 0–255,
    fresh per frame. supersample: anti-aliasing factor. brightness: the scene (background and object) is
    scaled by it before the noise is added, e.g. 0.3 for a dark scene. Boxes are in unwrapped coordinates:
    an object that crosses an edge (drawn on both sides) has a box reaching past 0 or S.
    """
    size = background.shape[-2]
    t = len(track.x)
    f32 = np.float32
    fine = ((np.arange(size * supersample) + 0.5) / supersample).astype(f32)  # sub-pixel centres
    coarse = np.arange(size, dtype=f32) + 0.5
    x, y = np.asarray(track.x, f32) % size, np.asarray(track.y, f32) % size
    # torus offsets from the centre, in [-S/2, S/2)
    dx = (fine[None, None, :] - x[:, None, None] + size / 2) % size - size / 2
    dy = (fine[None, :, None] - y[:, None, None] + size / 2) % size - size / 2
    a = np.deg2rad(np.asarray(track.angle, f32))[:, None, None]
    inv_r = 1 / np.asarray(track.radius, f32)[:, None, None]
    cos, sin = np.cos(a) * inv_r, np.sin(a) * inv_r
    u = dx * cos + dy * sin
    v = dy * cos - dx * sin
    shapes = set(track.shape)
    if len(shapes) == 1:  # a video: one shape throughout
        mask = _inside(shapes.pop(), u, v).astype(f32)
    else:  # stills of several shapes
        mask = np.zeros(u.shape, dtype=f32)
        for shape in shapes:
            sel = track.shape == shape
            mask[sel] = _inside(shape, u[sel], v[sel])
    alpha = mask.reshape(t, size, supersample, size, supersample).mean(axis=(2, 4))[..., None]
    colour = _COLOURS[track.colour][:, None, None, :]
    scene = background * (1 - alpha) + colour * alpha
    if brightness != 1.0:
        scene = scene * f32(brightness)
    frames = scene + rng.normal(0, noise, (t, size, size, 3)).astype(f32)
    frames = np.clip(np.rint(frames), 0, 255).astype(np.uint8)

    # Boxes: extreme torus offsets of the covered pixel columns / rows (covered: alpha > 0.5).
    on = alpha[..., 0] > 0.5
    cdx = (coarse[None, :] - x[:, None] + size / 2) % size - size / 2  # (T, S) per-column offsets
    cdy = (coarse[None, :] - y[:, None] + size / 2) % size - size / 2
    cols, rows = on.any(axis=1), on.any(axis=2)
    lo_x, hi_x = np.where(cols, cdx, np.inf).min(1) - 0.5, np.where(cols, cdx, -np.inf).max(1) + 0.5
    lo_y, hi_y = np.where(rows, cdy, np.inf).min(1) - 0.5, np.where(rows, cdy, -np.inf).max(1) + 0.5
    boxes = np.stack([x + lo_x, y + lo_y, x + hi_x, y + hi_y], axis=1).astype(np.float32)
    empty = ~cols.any(axis=1)  # sub-pixel object: fall back to the nominal extent
    r = np.asarray(track.radius, np.float32)
    boxes[empty] = np.stack([x - r, y - r, x + r, y + r], axis=1)[empty]
    return frames, boxes


# ---------------------------------------------------------------------------------------------------------
# Classes: a registry of generators (rng, num_frames, size) -> ObjectTrack, each tagged with its kind.

@dataclass(frozen=True)
class SyntheticClass:
    name: str
    kind: str  # "order" or "relation"
    make: Callable[[np.random.Generator, int, int], ObjectTrack]


REGISTRY: dict[str, SyntheticClass] = {}


def register(name: str, kind: str):
    """Decorator adding a generator (rng, num_frames, size) -> ObjectTrack to REGISTRY under `name`.

    make_synthetic_videos(classes=[...]) picks any registered names; DEFAULT_CLASSES is the default set."""
    if kind not in ("order", "relation"):
        raise ValueError(f"kind must be 'order' or 'relation', got {kind!r}")

    def add(make):
        REGISTRY[name] = SyntheticClass(name, kind, make)
        return make
    return add


def register_reversed(name: str, of: str) -> None:
    """Register `name` as class `of` played backwards (same kind): its mirror partner."""
    partner = REGISTRY[of]
    register(name, partner.kind)(lambda rng, t, s: partner.make(rng, t, s).reversed())


def _object(rng: np.random.Generator, t: int, size: int, shapes=SHAPES, radius=(0.14, 0.22),
            xy=(0.0, 1.0)) -> ObjectTrack:
    """A still object: random shape, colour, angle, radius (fraction of size) and centre (fraction range)."""
    return ObjectTrack(
        shape=np.full(t, shapes[rng.integers(len(shapes))]),
        x=np.full(t, rng.uniform(*xy) * size), y=np.full(t, rng.uniform(*xy) * size),
        radius=np.full(t, rng.uniform(*radius) * size), angle=np.full(t, rng.uniform(0, 360)),
        colour=np.full(t, rng.integers(len(PALETTE))))


def _ramp(t: int) -> np.ndarray:
    return np.linspace(0.0, 1.0, t)


def _translate(rng, t, size, axis: str) -> ObjectTrack:
    """Start off-centre (right or bottom) and travel 35–45% of the frame towards the other side."""
    o = _object(rng, t, size, radius=(0.12, 0.18), xy=(0.25, 0.75))
    start, dist = rng.uniform(0.65, 0.75) * size, rng.uniform(0.35, 0.45) * size
    setattr(o, axis, start - dist * _ramp(t))
    o.params = {"start": float(start), "distance": float(dist)}
    return o


@register("move_left", "order")
def move_left(rng, t, size):
    return _translate(rng, t, size, "x")


@register("move_up", "order")
def move_up(rng, t, size):
    return _translate(rng, t, size, "y")


@register("shrink", "order")
def shrink(rng, t, size):
    o = _object(rng, t, size, xy=(0.3, 0.7))
    big, small = rng.uniform(0.26, 0.30) * size, rng.uniform(0.09, 0.12) * size
    o.radius = big + (small - big) * _ramp(t)
    o.params = {"from_radius": float(big), "to_radius": float(small)}
    return o


@register("rotate_cw", "order")
def rotate_cw(rng, t, size):
    """Starts near 0° and turns clockwise by 150–210°, so the first frame's angle tells cw from ccw."""
    o = _object(rng, t, size, shapes=ASYMMETRIC_SHAPES, radius=(0.18, 0.24), xy=(0.3, 0.7))
    start, sweep = rng.uniform(-15, 15), rng.uniform(150, 210)
    o.angle = start + sweep * _ramp(t)
    o.params = {"start_angle": float(start), "sweep": float(sweep)}
    return o


register_reversed("move_right", of="move_left")
register_reversed("move_down", of="move_up")
register_reversed("grow", of="shrink")
register_reversed("rotate_ccw", of="rotate_cw")


def _diagonal(rng, t, size, displacement: np.ndarray) -> ObjectTrack:
    """A still object with a uniform start on the torus, moved by `displacement` (px per axis, (T,))
    along a random diagonal: each frame's position is then uniform whatever the displacement."""
    o = _object(rng, t, size)
    direction = rng.choice([-1.0, 1.0], size=2)
    o.x, o.y = o.x + direction[0] * displacement, o.y + direction[1] * displacement
    o.params = {"direction": direction.tolist()}
    return o


@register("colour_change", "relation")
def colour_change(rng, t, size):
    """The colour switches once, between a quarter and three quarters of the clip; each frame's colour is
    still uniform over the palette (first colour uniform, second uniform over the others)."""
    o = _diagonal(rng, t, size, np.zeros(t))
    first, second = o.colour[0], (o.colour[0] + rng.integers(1, len(PALETTE))) % len(PALETTE)
    change = int(rng.integers(t // 4, 3 * t // 4 + 1))
    o.colour = np.where(np.arange(t) < change, first, second)
    o.params.update(change_frame=change)
    return o


@register("still", "relation")
def still(rng, t, size):
    """Stays put: the reference of the motion family (still, slow, fast, jitter), alike frame by frame."""
    return _diagonal(rng, t, size, np.zeros(t))


register("colour_same", "relation")(still)  # the same clips, named as colour_change's partner


@register("colour_flicker", "relation")
def colour_flicker(rng, t, size):
    """Alternates between two colours every frame: the relation shows in *every* pair of neighbouring
    frames (a dense signal for a Δt = ±1 head), yet each frame's colour is uniform over the palette."""
    o = _diagonal(rng, t, size, np.zeros(t))
    second = (o.colour[0] + rng.integers(1, len(PALETTE))) % len(PALETTE)
    o.colour = np.where(np.arange(t) % 2 == 0, o.colour[0], second)
    o.params.update(colours=[int(o.colour[0]), int(second)])
    return o


@register("jitter", "relation")
def jitter(rng, t, size):
    """Jumps to a fresh uniform position every frame (a still object stays put): frame by frame the
    position is uniform in both, only neighbouring frames tell them apart."""
    o = _diagonal(rng, t, size, np.zeros(t))
    o.x, o.y = rng.uniform(0, size, t), rng.uniform(0, size, t)
    return o


def _steady(rng, t, size, units: float) -> ObjectTrack:
    """Moves `units` u (u = size / t) per frame and axis along a random diagonal, all clip long."""
    speed = units * size / t
    o = _diagonal(rng, t, size, speed * np.arange(t))
    o.params.update(speed=speed)
    return o


@register("fast", "relation")
def fast(rng, t, size):
    return _steady(rng, t, size, 3)


@register("slow", "relation")
def slow(rng, t, size):
    return _steady(rng, t, size, 1)


@register("move_then_stop", "relation")
def move_then_stop(rng, t, size):
    """Moves at 1u until a random frame in the middle third, then stays; its reverse stops-then-moves."""
    stop = int(rng.integers(t // 3, 2 * t // 3 + 1))
    o = _diagonal(rng, t, size, size / t * np.minimum(np.arange(t), stop))
    o.params.update(switch_frame=stop, speed=size / t)
    return o


register_reversed("stop_then_move", of="move_then_stop")


@register("return", "relation")
def return_to_start(rng, t, size):
    """Goes out for half the clip and comes back along the same path: last frame = first frame."""
    steps = np.minimum(np.arange(t), t - 1 - np.arange(t))
    o = _diagonal(rng, t, size, 0.5 * size / t * steps)
    o.params.update(speed=0.5 * size / t)
    return o


@register("keep_going", "relation")
def keep_going(rng, t, size):
    return _steady(rng, t, size, 0.5)


DEFAULT_CLASSES = ("move_left", "move_right", "move_up", "move_down", "grow", "shrink", "rotate_cw",
                   "rotate_ccw", "colour_change", "colour_same", "fast", "slow", "move_then_stop",
                   "stop_then_move", "return", "keep_going")
HORIZONTAL_MIRRORS = {"move_left": "move_right", "move_right": "move_left",
                      "rotate_cw": "rotate_ccw", "rotate_ccw": "rotate_cw"}


def flip_label_map(classes: list[str]) -> dict[int, int]:
    """Labels that a horizontal flip swaps (left/right moves, cw/ccw rotation), for TrainTransform."""
    index = {name: i for i, name in enumerate(classes)}
    return {index[a]: index[b] for a, b in HORIZONTAL_MIRRORS.items() if a in index and b in index}


def make_clip(name: str, rng: np.random.Generator, num_frames: int = 16, size: int = 32,
              noise: float = 3.0, brightness: float = 1.0) -> tuple[np.ndarray, np.ndarray, ObjectTrack]:
    """One clip of class `name` in memory: (frames uint8 (T, S, S, 3), boxes (T, 4), track); noise and
    brightness as in `render`."""
    if name not in REGISTRY:
        raise ValueError(f"unknown synthetic class {name!r}; known: {', '.join(REGISTRY)}")
    track = REGISTRY[name].make(rng, num_frames, size)
    frames, boxes = render(track, random_background(rng, size), rng, noise, brightness=brightness)
    return frames, boxes, track


# ---------------------------------------------------------------------------------------------------------
# Writers.

SPLITS = ("train", "val", "test")


def video_rng(seed: int, *keys) -> np.random.Generator:
    """A generator per (seed, split, class, index): any one video is reproducible on its own, and adding a
    class or a video leaves the others unchanged."""
    return np.random.default_rng([seed, *(zlib.crc32(str(k).encode()) for k in keys)])


def make_synthetic_videos(out_dir, seed: int = 0, classes: list[str] | None = None,
                          videos_per_class: dict[str, int] | None = None, num_frames: int = 16,
                          size: int = 32, fps: float = 8, crf: int = 0, noise: float = 3.0, workers: int = 1) -> dict:
    """Write the synthetic set as H.264 MP4s under out_dir/<split>/<class>/<class>_<i>.mp4.

    Also writes <split>.txt (mmaction lists `path label`, paths relative to out_dir), classes.txt, kinds.json
    ({class: "order" | "relation"}) and <split>_meta.json (per video: class, shape, per-frame colours,
    centres, radii, angles, boxes (x0, y0, x1, y1) and the class parameters). Returns a summary dict.
    classes: names from REGISTRY (default DEFAULT_CLASSES); videos_per_class: {split: count}, default
    {"train": 80, "val": 20, "test": 30}; size must be even (H.264 4:2:0); crf: encoder quality, 0 (lossless
    H.264, still yuv420p) by default because lossy x264 output varies between runs at this size: with crf=0 the
    same seed decodes to the same frames every time. noise: pixel noise sigma (0–255). workers: processes
    that render and encode (forked where the platform can); every video has its own generator (``video_rng``),
    so the files and lists are the same for any number.
    """
    start = time.perf_counter()
    classes = list(DEFAULT_CLASSES if classes is None else classes)
    counts = {"train": 80, "val": 20, "test": 30} if videos_per_class is None else dict(videos_per_class)
    unknown = [c for c in classes if c not in REGISTRY] + [s for s in counts if s not in SPLITS]
    if unknown:
        raise ValueError(f"unknown classes or splits {unknown}; classes: {list(REGISTRY)}, splits: {SPLITS}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
    kinds = {c: REGISTRY[c].kind for c in classes}
    (out / "kinds.json").write_text(json.dumps(kinds, indent=1) + "\n")
    for split, count in counts.items():
        jobs = [(out, seed, split, label, name, kinds[name], i, num_frames, size, noise, fps, crf)
                for label, name in enumerate(classes) for i in range(count)]
        meta = _map(_write_synthetic_video, jobs, workers)
        (out / f"{split}.txt").write_text("".join(f"{m['path']} {m['label']}\n" for m in meta))
        (out / f"{split}_meta.json").write_text(json.dumps(meta))
    return {"root": str(out), "classes": classes, "kinds": kinds, "videos": counts, "num_frames": num_frames,
            "size": size, "fps": fps, "seed": seed, "seconds": round(time.perf_counter() - start, 2)}


def _write_synthetic_video(job: tuple) -> dict:
    """Render and write one video of ``make_synthetic_videos``; returns its meta entry."""
    out, seed, split, label, name, kind, i, num_frames, size, noise, fps, crf = job
    path = f"{split}/{name}/{name}_{i:04d}.mp4"
    frames, boxes, track = make_clip(name, video_rng(seed, split, name, i), num_frames, size, noise)
    write_video(out / path, frames, fps=fps, crf=crf, preset="veryfast")
    return {"path": path, "class": name, "label": label, "kind": kind, "shape": str(track.shape[0]),
            "colours": [COLOUR_NAMES[c] for c in track.colour],
            "centres": np.round(np.stack([track.x % size, track.y % size], 1), 2).tolist(),
            "radius": np.round(track.radius, 2).tolist(), "angle": np.round(track.angle, 1).tolist(),
            "boxes": np.round(boxes, 2).tolist(), "params": track.params}


def _map(fn: Callable, jobs: list, workers: int) -> list:
    """``[fn(j) for j in jobs]``, in order, over ``workers`` forked processes when more than one (and fork exists)."""
    import multiprocessing
    import os
    if workers <= 1 or len(jobs) < 2 or not hasattr(os, "fork"):
        return [fn(j) for j in jobs]
    with multiprocessing.get_context("fork").Pool(min(workers, len(jobs))) as pool:
        return pool.map(fn, jobs, chunksize=max(1, len(jobs) // (8 * workers)))


IMAGE_HEADS = {  # label name -> class names; orientation is within the shape's symmetry period
    "shape": list(SHAPES),
    "colour": COLOUR_NAMES,
    "x_bin": ["left", "centre-left", "centre-right", "right"],
    "y_bin": ["top", "centre-top", "centre-bottom", "bottom"],
    "size_bin": ["small", "medium", "large"],
    "orientation_bin": ["0-25%", "25-50%", "50-75%", "75-100%"],
}
IMAGE_RADIUS = (0.09, 0.30)  # fraction of size: covers every radius the video classes use


def make_synthetic_images(out_dir, seed: int = 0, n: int = 10000, size: int = 32, noise: float = 3.0,
                          chunk: int = 500) -> dict:
    """Write out_dir/images.npz: uint8 images (N, S, S, 3) and one int64 label array per IMAGE_HEADS entry
    (plus `<head>_names` and `heads`), for pre-training an image model on what *and where*.

    Objects are drawn like video frames (torus, same palette, shapes, backgrounds, noise) with uniform
    position, radius, angle. orientation_bin is the angle within the shape's symmetry period (a square
    rotated by 90° looks the same) in quarters; -1 for circles (no orientation: use ignore_index=-1).
    """
    rng = np.random.default_rng([seed, zlib.crc32(b"images")])
    images = np.empty((n, size, size, 3), np.uint8)
    labels = {head: np.empty(n, np.int64) for head in IMAGE_HEADS}
    for lo in range(0, n, chunk):
        m = min(chunk, n - lo)
        shape = np.array(SHAPES)[rng.integers(len(SHAPES), size=m)]
        x, y = rng.uniform(0, size, m), rng.uniform(0, size, m)
        radius_fraction = rng.uniform(*IMAGE_RADIUS, m)
        angle, colour = rng.uniform(0, 360, m), rng.integers(len(PALETTE), size=m)
        background = np.stack([random_background(rng, size) for _ in range(m)])
        track = ObjectTrack(shape, x, y, radius_fraction * size, angle, colour)
        images[lo:lo + m] = render(track, background, rng, noise)[0]
        period = np.array([SYMMETRY_DEGREES[s] or np.nan for s in shape])  # NaN: circle, no orientation
        orientation = np.nan_to_num(np.floor(angle % period / period * 4), nan=-1)
        span = IMAGE_RADIUS[1] - IMAGE_RADIUS[0]
        for head, value in {"shape": np.array([SHAPES.index(s) for s in shape]),
                            "colour": colour, "x_bin": np.floor(x / size * 4), "y_bin": np.floor(y / size * 4),
                            "size_bin": np.floor((radius_fraction - IMAGE_RADIUS[0]) / span * 3),
                            "orientation_bin": orientation}.items():
            labels[head][lo:lo + m] = np.clip(value, -1, len(IMAGE_HEADS[head]) - 1)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = {f"{head}_names": np.array(v) for head, v in IMAGE_HEADS.items()}
    np.savez_compressed(out / "images.npz", images=images, heads=np.array(list(IMAGE_HEADS)), **labels, **names)
    return {"path": str(out / "images.npz"), "n": n, "size": size, "seed": seed,
            "heads": {head: list(v) for head, v in IMAGE_HEADS.items()}}
