"""Video reading: one small interface over video files (decord) and rawframe folders.

Everything downstream asks a `VideoSource` for `num_frames`, `fps` and `get(indices)`, so the sampler
never cares where frames come from. Any failure to read a video — missing, empty, truncated, not a video
at all — surfaces as one exception type, `VideoDecodeError`, which the dataset catches to skip bad files.
`write_video` (PyAV + libx264) is here too: the synthetic set, the tests and the benchmark write real MP4s.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

try:  # decord is the fast reader; rawframes and in-memory sources work without it.
    import decord

    # ffmpeg prints a warning per corrupt file; the dataset reports decode failures itself (once per file).
    decord.logging.set_level(decord.logging.QUIET)
except ImportError:  # pragma: no cover - decord is a hard dependency in pyproject
    decord = None

DEFAULT_FRAME_TEMPLATE = "img_{:05d}.jpg"  # mmaction's rawframe naming (1-based: img_00001.jpg)


class VideoDecodeError(RuntimeError):
    """A video could not be opened or decoded. `.path` is the video, `.cause` what the reader said."""

    def __init__(self, path: str | os.PathLike, cause: BaseException | str):
        self.path = str(path)
        self.cause = cause
        reason = f"{type(cause).__name__}: {cause}" if isinstance(cause, BaseException) else str(cause)
        super().__init__(f"cannot decode video {self.path!r}: {reason.strip()}")


class VideoSource:
    """Random access to the frames of one video. Subclasses implement `_read(sorted_unique_indices)`."""

    path: str
    num_frames: int
    fps: float

    def get(self, indices: Sequence[int] | np.ndarray) -> torch.Tensor:
        """Frames at `indices` (any order, repeats allowed) as a uint8 tensor (T, C, H, W)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size == 0:
            raise IndexError(f"{self.path}: no frame indices given")
        if idx.min() < 0 or idx.max() >= self.num_frames:
            raise IndexError(f"{self.path}: frame indices must lie in [0, {self.num_frames}), "
                             f"got min {idx.min()} max {idx.max()}")
        # Decode each distinct frame once, in file order (cheaper seeks), then put them back in place.
        unique, inverse = np.unique(idx, return_inverse=True)
        frames = self._read(unique)
        if frames.shape[0] != len(unique) or frames.ndim != 4 or frames.shape[-1] != 3:
            raise VideoDecodeError(self.path, f"reader returned frames of shape {tuple(frames.shape)} "
                                              f"for {len(unique)} indices")
        return torch.from_numpy(np.ascontiguousarray(frames[inverse])).permute(0, 3, 1, 2)

    def get_all(self) -> torch.Tensor:
        """Every frame, uint8 (T, C, H, W)."""
        return self.get(np.arange(self.num_frames))

    def _read(self, indices: np.ndarray) -> np.ndarray:  # -> uint8 (len(indices), H, W, 3)
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r}, num_frames={self.num_frames}, fps={self.fps:g})"


class DecordSource(VideoSource):
    """A video file read with decord (H.264, MPEG-4, VP9, ... anything its ffmpeg reads)."""

    def __init__(self, path: str | os.PathLike, num_threads: int = 1):
        # num_threads=1: DataLoader workers are the parallelism; decoder threads would oversubscribe.
        self.path = str(path)
        if decord is None:  # pragma: no cover
            raise VideoDecodeError(path, "decord is not installed")
        if not os.path.isfile(self.path):
            raise VideoDecodeError(path, FileNotFoundError("no such file"))
        try:
            self._reader = decord.VideoReader(self.path, num_threads=num_threads)
            self.num_frames = len(self._reader)
            self.fps = float(self._reader.get_avg_fps())
        except Exception as e:  # decord raises RuntimeError or DECORDError (not a RuntimeError)
            raise VideoDecodeError(path, e) from e
        if self.num_frames <= 0:  # decord can "open" some broken files and report no frames
            raise VideoDecodeError(path, "the file has no decodable frames")

    def _read(self, indices: np.ndarray) -> np.ndarray:
        try:
            return self._reader.get_batch(indices.tolist()).asnumpy()
        except Exception as e:  # truncated files open fine and fail here
            if "DECORDArrayCopyFromTo" in str(e):  # decord bug (dmlc/decord#336) on widths like 48 or 72 px
                return _read_with_pyav(self.path, indices)
            raise VideoDecodeError(self.path, e) from e


def _read_with_pyav(path: str, indices: np.ndarray) -> np.ndarray:
    """Decode sorted unique `indices` by playing the file from the start with PyAV (slow, always works)."""
    import av

    wanted, frames = set(indices.tolist()), {}
    try:
        with av.open(path) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if i in wanted:
                    frames[i] = frame.to_ndarray(format="rgb24")
                if i >= indices[-1]:
                    break
    except Exception as e:
        raise VideoDecodeError(path, e) from e
    if len(frames) != len(wanted):
        raise VideoDecodeError(path, f"only {len(frames)} of the {len(wanted)} requested frames decode")
    return np.stack([frames[i] for i in indices.tolist()])


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

    def _read(self, indices: np.ndarray) -> np.ndarray:
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

    def _read(self, indices: np.ndarray) -> np.ndarray:
        return self.frames[torch.from_numpy(indices)].permute(0, 2, 3, 1).numpy()


def open_video(path: str | os.PathLike, frame_template: str = DEFAULT_FRAME_TEMPLATE,
               start_index: int = 1, num_frames: int | None = None) -> VideoSource:
    """Open a video file or a rawframe folder. Raises VideoDecodeError if it cannot be read.

    frame_template, start_index, num_frames: only used for folders (see FrameFolderSource).
    """
    if os.path.isdir(path):
        return FrameFolderSource(path, frame_template, start_index, num_frames)
    return DecordSource(path)


def write_video(path: str | os.PathLike, frames: np.ndarray | torch.Tensor, fps: float = 8,
                crf: int = 12, preset: str = "medium") -> None:
    """Write uint8 frames (T, H, W, 3) as an H.264 MP4 (yuv420p, so H and W must be even).

    crf: quality, 0 lossless … 51 worst (12: visually lossless). Lossy x264 is not bit-exact from run to run
    on tiny frames (32 px), even with one thread; crf=0 is, in what it decodes to (the YUV of the input),
    so reproducible data sets use it.
    """
    from fractions import Fraction

    import av

    frames = frames.numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    t, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"H.264 yuv420p needs even sizes, got {h}x{w}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        rate = Fraction(fps).limit_denominator(1001)
        stream = container.add_stream("libx264", rate=rate, options={"crf": str(crf), "preset": preset})
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.thread_count = 1
        for i, frame in enumerate(frames):
            picture = av.VideoFrame.from_ndarray(frame, format="rgb24")
            picture.pts = i  # one tick of 1/fps per frame
            container.mux(stream.encode(picture))
        container.mux(stream.encode())  # flush
