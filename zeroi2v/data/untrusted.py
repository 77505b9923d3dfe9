"""Reading videos we do not trust (the demo's uploads, `predict`'s files).

- `open_untrusted`: every check before and while opening an upload, against `UPLOAD_LIMITS`, each
  refusal a one-line `RefusedInput` that names the file and says what to do. The limits bound what
  a small file can cost: frames decoded at full resolution (none: the decoder scales), the area of
  a decoded frame, the bytes of all decoded frames, and the decode work (frames the decoder runs
  through x their pixels); the demo adds a time budget.
- `MIN_FRAMES` / `too_few_frames`: the one rule on how short a clip may be.
- `sniff_container`: what a file's first bytes claim it is, before any decoder sees it.
- `clean_reason`: a decoder's error as one readable line (no C++ locations or server paths).
- `decord_log`: decord's own log lines, caught instead of printed on stderr.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator

MIN_FRAMES = 2
"""Fewest frames a video needs to be classified, by the demo and by `predict` alike: one frame is a
still image, which cannot show the motion the temporal heads model (paper Sec. 3.2)."""


def too_few_frames(num_frames: int, minimum: int = MIN_FRAMES) -> str | None:
    """Why a video of ``num_frames`` frames is refused ("has 1 frame; a clip needs ..."), or None if it is not."""
    if num_frames >= minimum:
        return None
    return (f"has {num_frames} frame{'s' if num_frames != 1 else ''}; a clip needs at least {minimum} "
            f"(a still image cannot show motion)")


UPLOAD_LIMITS = {
    "max_file_size": 50 * 1024 * 1024,  # bytes
    "max_frames": 9000,                 # frames in the video
    "max_seconds": 300.0,               # video duration
    "max_side": 4096,                   # pixels, longer side of a stored frame
    "min_frames": MIN_FRAMES,           # a still image is not a clip (the rule `predict` applies too)
    "max_clips": 5,                     # test views per request
    "max_frame_pixels": 2 ** 20,        # one frame as decoded (short side scaled to the model's input): an
                                        #   area bound, so a 2x4096 video is not scaled to 224x458752
    "max_decoded_bytes": 256 * 2 ** 20,  # all frames decoded for one request (views x frames x H x W x 3)
    "max_decode_work": 16e9,            # pixels the decoder runs through per request: frames it decodes
                                        #   (keyframe to sampled frame) x stored width x height
    "max_decode_seconds": 30.0,         # time budget of one request's decoding; past it, a readable error
    "small_work": 1e9,                  # decode work up to which a request is small: small requests run
                                        #   beside a large one, never behind it
}


class RefusedInput(ValueError):
    """An untrusted video refused, with a one-line reason that names the file and says what to do."""


def clean_reason(cause: BaseException | str, path: str | os.PathLike | None = None, limit: int = 160) -> str:
    """What a reader said, as one readable line: no C++ source location, timestamp, check expression,
    stack trace or directory (``path`` shrinks to its file name). Used by every decode error, the
    demo's messages and the CLI's."""
    text = getattr(cause, "reason", None) or str(cause).strip()  # a VideoDecodeError is clean already
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "") or type(cause).__name__
    line = re.sub(r"^\[[\d:]+\]\s*", "", line)                          # dmlc's timestamp
    line = re.sub(r"^\S+\.(?:cc|cpp|cxx|c|h):\d+:\s*", "", line)          # C++ source location
    if line.startswith("Check failed:"):                                 # CHECK(expr) << message
        message = line.rsplit(": ", 1)[-1].strip() if ": " in line[len("Check failed:"):] else ""
        line = message if message and not message.startswith("Check failed") else "the decoder rejected the stream"
    line = re.sub(r"^\[[^\]]*\]\s*", "", line)                          # decord's "[file.mp4] " prefix
    if path is not None:
        line = line.replace(str(path), Path(path).name)
    line = re.sub(r"(?:/[^\s/'\"]+)+/([^\s/'\"]+)", r"\1", line.split(" at /")[0])  # no server directories
    return line if len(line) <= limit else line[:limit - 3] + "..."


def sniff_container(path: str | os.PathLike) -> str | None:
    """The container a file's first bytes announce, or None when it is not a known video container.

    Checked before a decoder sees an untrusted file: ffmpeg would otherwise read text files as "tty"
    video and follow playlists (HLS/concat) that name other files on the server.
    """
    with open(path, "rb") as fh:
        head = fh.read(512)
    if len(head) >= 8 and head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot"):
        return "MP4/MOV"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "WebM/MKV"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "AVI"
    if head.startswith(b"OggS"):
        return "OGG"
    if head.startswith(b"FLV"):
        return "FLV"
    if head.startswith(b"\x00\x00\x01\xba") or head.startswith(b"\x00\x00\x01\xb3"):
        return "MPEG"
    if len(head) > 188 and head[0] == 0x47 and head[188] == 0x47:
        return "MPEG-TS"
    if head.startswith(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"):
        return "WMV/ASF"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    return None


_STDERR_LOCK = threading.Lock()
_DECORD_LOG = re.compile(r"^\[[\d:]+\] \S+\.cc:\d+: (.*)$")


@contextlib.contextmanager
def decord_log() -> Iterator[list[str]]:
    """Collect decord's own log lines (its C++ logger writes "ERROR opening: ..." straight to file
    descriptor 2, which ffmpeg's log level does not govern) into the yielded list instead of stderr.

    fd 2 points at a temporary file meanwhile; whatever else was written there (other threads) is
    copied back to stderr afterwards, so nothing is lost.
    """
    lines: list[str] = []
    with _STDERR_LOCK, tempfile.TemporaryFile() as tmp:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            other = []
            for line in tmp.read().decode("utf-8", "replace").splitlines():
                m = _DECORD_LOG.match(line)
                if m:
                    lines.append(m.group(1))
                else:
                    other.append(line)
            if other:
                os.write(2, ("\n".join(other) + "\n").encode())


def _human(nbytes: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if nbytes < 1024 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} GB"


def _pixels(n: float) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.1f} G pixels"
    return f"{n / 1e6:.1f} M pixels" if n >= 1e6 else f"{n:,.0f} pixels"


def open_untrusted(path: str | os.PathLike, short_side: int, num_frames: int, clips: int = 1,
                   limits: dict[str, Any] = UPLOAD_LIMITS, name: str | None = None):
    """Open an untrusted video for ``clips`` views of ``num_frames`` frames at ``short_side`` pixels,
    or raise RefusedInput (``name``: how messages call the file). Nothing is decoded at full
    resolution: the size comes from the stream, the frames from a decoder that scales (see
    `zeroi2v.data.decode.open_video`). Returns (source, decode work in pixels: frames the decoder
    runs through x stored width x height).
    """
    from zeroi2v.data.decode import VideoDecodeError, decode_size, open_video, probe_video
    from zeroi2v.data.views import make_sampler
    lim, name = limits, name or Path(path).name
    if not os.path.isfile(path):
        raise RefusedInput(f"`{name}` is no longer on the server (uploads are deleted after a while); upload it again.")
    size = os.path.getsize(path)
    if size == 0:
        raise RefusedInput(f"`{name}` is empty (0 bytes).")
    if size > lim["max_file_size"]:
        raise RefusedInput(f"`{name}` is {_human(size)}; the limit is {_human(lim['max_file_size'])}.")
    kind = sniff_container(path)
    if kind is None:
        raise RefusedInput(f"`{name}` is not a video file: it does not start like MP4/MOV, WebM/MKV, AVI, "
                           f"MPEG, OGG, FLV, WMV or GIF data.")
    try:
        h, w, _ = probe = probe_video(path, max_side=lim["max_side"])
        if max(h, w) > lim["max_side"]:
            raise RefusedInput(f"`{name}` is {w}x{h} pixels; the limit is {lim['max_side']} px a side.")
        source = open_video(path, short_side=short_side, probe=probe)
    except VideoDecodeError as e:
        raise RefusedInput(f"`{name}` looks like {kind} but cannot be read as a video "
                           f"({clean_reason(e, path)}).") from None
    n, fps = int(source.num_frames), float(source.fps or 0.0)
    if too_few_frames(n, lim["min_frames"]):
        raise RefusedInput(f"`{name}` {too_few_frames(n, lim['min_frames'])}.")
    if n > lim["max_frames"]:
        raise RefusedInput(f"`{name}` has {n:,} frames; the limit is {lim['max_frames']:,}. Trim it first.")
    if fps > 0 and n / fps > lim["max_seconds"]:
        raise RefusedInput(f"`{name}` lasts {n / fps:.0f} s; the limit is {lim['max_seconds']:.0f} s. Trim it first.")
    dh, dw = decode_size(h, w, short_side, up=True)  # what the transform resizes to, before its crop
    if dh * dw > lim["max_frame_pixels"]:
        raise RefusedInput(f"`{name}` is {w}x{h} pixels: scaled to the model's {short_side}-pixel short side a "
                           f"frame would be {dw}x{dh} = {_pixels(dh * dw)}; the limit is "
                           f"{_pixels(lim['max_frame_pixels'])}. Crop it to a less elongated shape.")
    views = f"{clips} view{'s' if clips > 1 else ''}"
    decoded = clips * num_frames * dh * dw * 3
    if decoded > lim["max_decoded_bytes"]:
        raise RefusedInput(f"`{name}`: {views} need {_human(decoded)} of decoded frames; the limit is "
                           f"{_human(lim['max_decoded_bytes'])}. Use fewer views.")
    work = source.frames_to_decode(make_sampler("uniform", num_frames, clips=clips)(n, train=False)) * h * w
    if work > lim["max_decode_work"]:
        raise RefusedInput(f"`{name}` would need {_pixels(work)} decoded for {views}; the limit is "
                           f"{_pixels(lim['max_decode_work'])}. Trim it, lower its resolution, or use fewer views.")
    return source, work
