"""Files: written so that a reader never sees half of one, read so that a bad one names itself.

Every checkpoint, config, log summary and weights file of the toolkit is written through ``atomic_write``
(a temporary file beside it, then ``os.replace``): a crash or a kill mid-write leaves the previous file
(or none), never a truncated one. Text and JSON are read through ``read_text``/``read_json``: a file in
another encoding or broken JSON is a one-line error naming the file, the line and the fix.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable


def atomic_write(path: str | os.PathLike, write: Callable[[str], object]) -> Path:
    """Call ``write(tmp_path)`` to write a temporary file beside ``path``, then move it over ``path``.

    The temporary file is removed when ``write`` fails, so a failed write leaves nothing behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(str(tmp))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """``atomic_write`` of UTF-8 text."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def read_text(path: str | os.PathLike) -> str:
    """A text file as UTF-8 (a leading byte-order mark is dropped); a file in another encoding is a
    ValueError that names it, the line and the fix, not a bare UnicodeDecodeError."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise ValueError(f"{path}, line {line}: not UTF-8 text (byte 0x{data[e.start]:02x}, as in Latin-1 or "
                         f"Windows-1252 files); save it as UTF-8, e.g. `iconv -f latin1 -t utf-8`") from None


def read_json(path: str | os.PathLike):
    """A UTF-8 JSON file's data; a broken file is a ValueError that names it and where it breaks."""
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}, line {e.lineno}, column {e.colno}: not valid JSON ({e.msg})") from None
