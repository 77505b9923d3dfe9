"""Video reading: one small interface over video files (decord, PyAV) and rawframe folders.

Everything downstream asks a `VideoSource` for `num_frames`, `fps` and `get(indices)`, so the sampler
never cares where frames come from. Any failure to read a video — missing, empty, truncated, not a video
at all — surfaces as one exception type, `VideoDecodeError`, whose message is one clean line (no C++
source locations, no decoder check expressions), which the dataset catches to skip bad files.

Untrusted uploads (the demo, `predict`) open with ``short_side``: frames are scaled in the decoder
straight to the size the model's transform needs, never decoded whole at full resolution, and
``get(..., deadline=)`` stops between frames when a time budget runs out. ``frames_to_decode`` tells
in advance how much a read will cost (the keyframe index shows what a seek must decode).
GIFs and rotated videos read through PyAV (decord cannot index the one, nor scale the other).
`write_video` (PyAV + libx264) is here too: the synthetic set, the tests and the benchmark write real MP4s.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

try:  # decord is the fast reader; rawframes and in-memory sources work without it.
    import decord

    # ffmpeg's own warnings (av_log) per corrupt file: the dataset reports decode failures itself.
    decord.logging.set_level(decord.logging.QUIET)
except ImportError:  # pragma: no cover - decord is a hard dependency in pyproject
    decord = None

from zeroi2v.data.untrusted import MIN_FRAMES, clean_reason, decord_log, sniff_container, too_few_frames  # noqa: F401

DEFAULT_FRAME_TEMPLATE = "img_{:05d}.jpg"  # mmaction's rawframe naming (1-based: img_00001.jpg)
class VideoDecodeError(RuntimeError):
    """A video could not be opened or decoded. `.path` is the video, `.cause` what the reader said,
    `.reason` that as one clean line."""

    def __init__(self, path: str | os.PathLike, cause: BaseException | str):
        self.path = str(path)
        self.cause = cause
        self.reason = clean_reason(cause)
        super().__init__(f"cannot decode video {self.path!r}: {self.reason}")


class DecodeTimeout(VideoDecodeError):
    """Decoding ran past its deadline (a time budget per request)."""


def decode_size(height: int, width: int, short_side: int | None, up: bool = False) -> tuple[int, int]:
    """(H, W) a frame is decoded to: short side scaled down to ``short_side`` (aspect kept, the long side
    truncated as torchvision's resize does, so the transform's own resize is then a no-op); never up,
    unless ``up`` (then: the size the transform resizes to)."""
    short = min(height, width)
    if not short_side or short == short_side or (short < short_side and not up):
        return int(height), int(width)
    if height <= width:
        return int(short_side), max(1, int(short_side * width / height))
    return max(1, int(short_side * height / width)), int(short_side)


class VideoSource:
    """Random access to the frames of one video. Subclasses implement `_read(sorted_unique_indices, deadline)`."""

    path: str
    num_frames: int
    fps: float

    def get(self, indices: Sequence[int] | np.ndarray, deadline: float | None = None) -> torch.Tensor:
        """Frames at `indices` (any order, repeats allowed) as a uint8 tensor (T, C, H, W).

        deadline: a `time.monotonic()` value; past it, reading stops between frames with DecodeTimeout.
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size == 0:
            raise IndexError(f"{self.path}: no frame indices given")
        if idx.min() < 0 or idx.max() >= self.num_frames:
            raise IndexError(f"{self.path}: frame indices must lie in [0, {self.num_frames}), "
                             f"got min {idx.min()} max {idx.max()}")
        # Decode each distinct frame once, in file order (cheaper seeks), then put them back in place.
        unique, inverse = np.unique(idx, return_inverse=True)
        frames = self._read(unique, deadline)
        if frames.shape[0] != len(unique) or frames.ndim != 4 or frames.shape[-1] != 3:
            raise VideoDecodeError(self.path, f"reader returned frames of shape {tuple(frames.shape)} "
                                              f"for {len(unique)} indices")
        return torch.from_numpy(np.ascontiguousarray(frames[inverse])).permute(0, 3, 1, 2)

    def get_all(self) -> torch.Tensor:
        """Every frame, uint8 (T, C, H, W)."""
        return self.get(np.arange(self.num_frames))

    def frames_to_decode(self, indices: Sequence[int] | np.ndarray) -> int:
        """How many frames the decoder runs through to deliver `indices` (the cost of a `get`)."""
        return len(np.unique(np.asarray(indices)))

    def _read(self, indices: np.ndarray, deadline: float | None = None) -> np.ndarray:
        raise NotImplementedError  # -> uint8 (len(indices), H, W, 3)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r}, num_frames={self.num_frames}, fps={self.fps:g})"


def _check_deadline(path: str, deadline: float | None, done: int, total: int) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise DecodeTimeout(path, f"decoding ran out of time after {done} of {total} frames")


class DecordSource(VideoSource):
    """A video file read with decord (H.264, MPEG-4, VP9, ... anything its ffmpeg reads).

    ``size``: (H, W) to scale frames to inside the decoder (ffmpeg's scale filter), or None for the
    stored size. `open_video(path, short_side=...)` picks it.
    """

    def __init__(self, path: str | os.PathLike, num_threads: int = 1, size: tuple[int, int] | None = None):
        # num_threads=1: DataLoader workers are the parallelism; decoder threads would oversubscribe.
        self.path, self.size = str(path), size
        if decord is None:  # pragma: no cover
            raise VideoDecodeError(path, "decord is not installed")
        if not os.path.isfile(self.path):
            raise VideoDecodeError(path, FileNotFoundError("no such file"))
        h, w = size or (-1, -1)
        try:
            with decord_log() as said:
                self._reader = decord.VideoReader(self.path, num_threads=num_threads, width=w, height=h)
            self.num_frames = len(self._reader)
            self.fps = float(self._reader.get_avg_fps())
        except Exception as e:  # decord raises RuntimeError or DECORDError (not a RuntimeError)
            opening = [s.split(", ")[-1] for s in said if s.startswith("ERROR opening")]
            raise VideoDecodeError(path, opening[0] if opening else e) from e
        if self.num_frames <= 0:  # decord can "open" some broken files and report no frames
            raise VideoDecodeError(path, "the file has no decodable frames")
        self._fallback: PyAVSource | None = None

    def frames_to_decode(self, indices: Sequence[int] | np.ndarray) -> int:
        """decord seeks to the keyframe at or before a frame and decodes forward from there (or from
        the last frame read, when that is in the same group of pictures)."""
        keys = np.asarray(self._reader.get_key_indices() or [0], dtype=np.int64)
        total, current = 0, -1
        for i in np.unique(np.asarray(indices, dtype=np.int64)):
            key = int(keys[max(0, np.searchsorted(keys, i, side="right") - 1)])
            total += int(i - current) if key <= current else int(i - key + 1)
            current = int(i)
        return total

    def _read(self, indices: np.ndarray, deadline: float | None = None) -> np.ndarray:
        if self._fallback is not None:
            return self._fallback._read(indices, deadline)
        try:
            if deadline is None:
                return self._reader.get_batch(indices.tolist()).asnumpy()
            frames = []  # one frame per call, so a deadline can stop it between frames
            for n, i in enumerate(indices.tolist()):
                _check_deadline(self.path, deadline, n, len(indices))
                frames.append(self._reader.get_batch([i]).asnumpy()[0])
            return np.stack(frames)
        except DecodeTimeout:
            raise
        except Exception as e:  # truncated files open fine and fail here
            if "DECORDArrayCopyFromTo" in str(e):  # decord bug (dmlc/decord#336) on widths like 48 or 72 px
                self._fallback = PyAVSource(self.path, self.size, num_frames=self.num_frames)
                return self._fallback._read(indices, deadline)
            raise VideoDecodeError(self.path, e) from e


class FrameFolderSource(VideoSource):
    """A folder of numbered images (mmaction "rawframes": img_00001.jpg, img_00002.jpg, ...)."""

    def __init__(self, path: str | os.PathLike, template: str = DEFAULT_FRAME_TEMPLATE,
                 start_index: int = 1, num_frames: int | None = None, fps: float = 30.0):
        # template: a str.format pattern with one integer field; start_index: the first frame's number;
        # num_frames: trust this count (from the annotation) instead of listing the folder; fps: folders
        # carry no frame rate, so this is only a label for display.
        self.path, self.template, self.start_index, self.fps = str(path), template, start_index, fps
        if not os.path.isdir(self.path):
            raise VideoDecodeError(path, FileNotFoundError("no such frame folder"))
        if num_frames is None:
            prefix, _, rest = template.partition("{")
            suffix = rest.partition("}")[2]
            num_frames = sum(1 for n in os.listdir(self.path) if n.startswith(prefix) and n.endswith(suffix))
        self.num_frames = int(num_frames)
        if self.num_frames <= 0:
            raise VideoDecodeError(path, f"no frames named like {template!r}")

    def _read(self, indices: np.ndarray, deadline: float | None = None) -> np.ndarray:
        from PIL import Image

        frames = []
        for i in indices:
            file = os.path.join(self.path, self.template.format(int(i) + self.start_index))
            try:
                with Image.open(file) as image:
                    frames.append(np.asarray(image.convert("RGB")))
            except Exception as e:  # missing frame, unreadable image
                raise VideoDecodeError(file, e) from e
        if len({f.shape for f in frames}) != 1:
            raise VideoDecodeError(self.path, "frames differ in size")
        return np.stack(frames)


class TensorSource(VideoSource):
    """Frames already in memory (uint8 (T, C, H, W)): the decoded-clip cache, tests, notebooks."""

    def __init__(self, frames: torch.Tensor, fps: float = 30.0, path: str = "<memory>"):
        if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[1] != 3:
            raise ValueError(f"expected uint8 (T, 3, H, W), got {frames.dtype} {tuple(frames.shape)}")
        self.frames, self.fps, self.path, self.num_frames = frames, fps, path, frames.shape[0]

    def _read(self, indices: np.ndarray, deadline: float | None = None) -> np.ndarray:
        return self.frames[torch.from_numpy(indices)].permute(0, 2, 3, 1).numpy()


class PyAVSource(VideoSource):
    """A video file read with PyAV, playing it from the start: GIFs (decord cannot count their frames),
    rotated videos when scaling (decord's scaler breaks on a 90° rotation) and decord's copy bug.

    ``size``: (H, W) to scale frames to, as displayed (after rotation); None keeps the stored size.
    """

    def __init__(self, path: str | os.PathLike, size: tuple[int, int] | None = None,
                 num_frames: int | None = None):
        import av

        self.path, self.size = str(path), size
        try:
            with av.open(self.path) as container:
                stream = container.streams.video[0]
                rate = stream.average_rate or stream.guessed_rate
                self.fps = float(rate) if rate else 0.0
                if num_frames is None:  # packets, not decoded frames: cheap, and exact for GIF
                    num_frames = sum(1 for packet in container.demux(stream) if packet.size)
        except Exception as e:
            raise VideoDecodeError(path, e) from e
        self.num_frames = int(num_frames)
        if self.num_frames <= 0:
            raise VideoDecodeError(path, "the file has no decodable frames")

    def frames_to_decode(self, indices: Sequence[int] | np.ndarray) -> int:
        return int(np.max(indices)) + 1  # every frame up to the last one asked for

    def _read(self, indices: np.ndarray, deadline: float | None = None) -> np.ndarray:
        import av

        wanted, frames = set(indices.tolist()), {}
        try:
            with av.open(self.path) as container:
                for i, frame in enumerate(container.decode(video=0)):
                    _check_deadline(self.path, deadline, len(frames), len(wanted))
                    if i in wanted:
                        frames[i] = _to_rgb(frame, self.size)
                    if i >= indices[-1]:
                        break
        except VideoDecodeError:
            raise
        except Exception as e:
            raise VideoDecodeError(self.path, e) from e
        if len(frames) != len(wanted):
            raise VideoDecodeError(self.path, f"only {len(frames)} of the {len(wanted)} requested frames decode")
        return np.stack([frames[i] for i in indices.tolist()])


def _to_rgb(frame, size: tuple[int, int] | None) -> np.ndarray:
    """A PyAV frame as uint8 (H, W, 3), scaled to ``size`` (as displayed) and turned upright."""
    turns = (int(getattr(frame, "rotation", 0) or 0) // 90) % 4  # counter-clockwise quarter turns
    if size is None:
        return np.rot90(frame.to_ndarray(format="rgb24"), turns)
    h, w = size if turns % 2 == 0 else size[::-1]  # the stored frame is scaled before it is turned
    return np.rot90(frame.to_ndarray(format="rgb24", width=w, height=h, interpolation="BICUBIC"), turns)


def probe_video(path: str | os.PathLike, max_side: int | None = None) -> tuple[int, int, int]:
    """(height, width, rotation) of a video file as displayed, from its first frame (decoded, not converted).

    With ``max_side``, a stream whose stored size already exceeds it is not decoded at all: its stored
    (height, width) come back with rotation 0, for the caller to refuse.
    """
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            h, w = stream.codec_context.height, stream.codec_context.width
            if max_side is not None and max(h, w) > max_side:
                return int(h), int(w), 0
            frame = next(container.decode(stream))
    except StopIteration:
        raise VideoDecodeError(path, "the file has no decodable frames") from None
    except IndexError:
        raise VideoDecodeError(path, "the file has no video stream") from None
    except Exception as e:  # PyAV's errors end with ": 'the/path'"; its strerror is the reason alone
        raise VideoDecodeError(path, getattr(e, "strerror", None) or e) from e
    rotation = int(getattr(frame, "rotation", 0) or 0) % 360
    h, w = (frame.height, frame.width) if rotation % 180 == 0 else (frame.width, frame.height)
    return int(h), int(w), rotation


def open_video(path: str | os.PathLike, frame_template: str = DEFAULT_FRAME_TEMPLATE,
               start_index: int = 1, num_frames: int | None = None, short_side: int | None = None,
               probe: tuple[int, int, int] | None = None) -> VideoSource:
    """Open a video file or a rawframe folder. Raises VideoDecodeError if it cannot be read.

    frame_template, start_index, num_frames: only used for folders (see FrameFolderSource).
    short_side: scale video frames in the decoder so their short side is at most this (see
    `decode_size`); the source then tells ``stored_size`` (H, W as displayed) and ``decoded_size``.
    probe: `probe_video`'s answer when the caller has it already.
    """
    if os.path.isdir(path):
        return FrameFolderSource(path, frame_template, start_index, num_frames)
    if not os.path.isfile(path):
        raise VideoDecodeError(path, FileNotFoundError("no such file"))
    gif = sniff_container(path) == "GIF"
    if short_side is None:
        return PyAVSource(path) if gif else DecordSource(path)
    h, w, rotation = probe or probe_video(path)
    size = decode_size(h, w, short_side)
    scaled = size != (h, w)
    if gif or (scaled and rotation % 180):
        source = PyAVSource(path, size if scaled else None)
    else:
        source = DecordSource(path, size=size if scaled else None)
    source.stored_size, source.decoded_size = (h, w), size
    return source


def write_video(path: str | os.PathLike, frames: np.ndarray | torch.Tensor | Iterable[np.ndarray], fps: float = 8,
                crf: int = 12, preset: str = "medium", options: dict[str, str] | None = None) -> None:
    """Write uint8 frames (T, H, W, 3), or an iterable of (H, W, 3) frames, as an H.264 MP4 (yuv420p, so
    H and W must be even). An iterable is encoded as it comes: long or huge clips never sit in memory.
    The file appears whole or not at all (written beside it, then renamed).

    crf: quality, 0 lossless … 51 worst (12: visually lossless). Lossy x264 is not bit-exact from run to run
    on tiny frames (32 px), even with one thread; crf=0 is, in what it decodes to (the YUV of the input),
    so reproducible data sets use it. options: more libx264 options (e.g. {"x264-params": "keyint=600"}).
    """
    if isinstance(frames, (np.ndarray, torch.Tensor)):
        frames = frames.numpy() if isinstance(frames, torch.Tensor) else frames
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"expected uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")  # the suffix tells the muxer the format
    try:
        _encode_h264(partial, frames, fps, {"crf": str(crf), "preset": preset, **(options or {})})
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _encode_h264(path: Path, frames: Iterable[np.ndarray], fps: float, options: dict[str, str]) -> None:
    from fractions import Fraction

    import av

    with av.open(str(path), "w") as container:
        stream = None
        for i, frame in enumerate(frames):
            if stream is None:
                h, w = frame.shape[:2]
                if h % 2 or w % 2:
                    raise ValueError(f"H.264 yuv420p needs even sizes, got {h}x{w}")
                stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001), options=options)
                stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
                stream.codec_context.thread_count = 1
            if frame.shape != (stream.height, stream.width, 3) or frame.dtype != np.uint8:
                raise ValueError(f"frame {i}: expected uint8 {(stream.height, stream.width, 3)}, "
                                 f"got {frame.dtype} {frame.shape}")
            picture = av.VideoFrame.from_ndarray(frame, format="rgb24")
            picture.pts = i  # one tick of 1/fps per frame
            container.mux(stream.encode(picture))
        if stream is None:
            raise ValueError("no frames to write")
        container.mux(stream.encode())  # flush
