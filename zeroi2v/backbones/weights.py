"""Weights files read as data, for every backbone family: nothing in a file is ever run.

- safetensors;
- ``torch.load(weights_only=True)``: tensors and plain containers only (open_clip ``.bin``/``.pth``);
- TorchScript archives (OpenAI's CLIP ``.pt``) through ``read_torchscript_tensors``, a restricted
  unpickler that takes the archive's tensors from its ``data/`` records and never runs its ``code/`` or a
  ``__setstate__`` (``torch.jit.load`` would).

Broken files give one line naming the file and what is wrong with it.
"""
from __future__ import annotations

import collections
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a weights file, read as data (see the module docstring); one-line errors naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        try:
            return load_file(str(path))
        except Exception as e:
            raise ValueError(f"{path} is not a readable safetensors file ({_brief(e)}). Expected {WEIGHTS_KINDS}") from e
    if is_torchscript_archive(path):
        return read_torchscript_tensors(path)
    sd = load_torch_data(path, WEIGHTS_KINDS)
    if isinstance(sd, dict) and "state_dict" in sd:
        sd = sd["state_dict"]
    tensors = {str(k).removeprefix("module."): v for k, v in sd.items() if isinstance(v, torch.Tensor)} \
        if isinstance(sd, dict) else {}
    if not tensors:
        raise ValueError(f"{path} holds {describe_contents(sd)}, not a state dict of tensors. Expected {WEIGHTS_KINDS}")
    return tensors


# --- reading torch files as data ------------------------------------------------------------------

WEIGHTS_KINDS = ("a weights file: safetensors, an open_clip .bin/.pth state dict, or OpenAI's CLIP .pt "
                 "(TorchScript, read as data)")
"""What a weights file may be, for error messages."""
_ZIP_MAGIC = b"PK\x03\x04"


def _brief(e: BaseException) -> str:
    """An exception as one short line, never relaying torch's advice to load with ``weights_only=False``."""
    text = " ".join(str(e).split())
    first = re.split(r"(?<=[.!])\s", text, maxsplit=1)[0] if text else ""
    return f"{type(e).__name__}: {first}" if first and "weights_only" not in first else type(e).__name__


def describe_contents(obj: Any) -> str:
    """What a loaded file holds, for error messages: ``a dict with keys [...]``, ``a list``..."""
    return f"a {type(obj).__name__}" + (f" with keys {sorted(map(str, obj))[:6]}" if isinstance(obj, dict) else "")


def is_torchscript_archive(path: str | Path) -> bool:
    """A zip with ``constants.pkl``: what ``torch.jit.save`` writes (and ``torch.load`` hands to ``torch.jit.load``)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.endswith("constants.pkl") for n in zf.namelist())


def _file_problem(path: Path) -> str | None:
    """What is visibly wrong with a file that should hold ``torch.save`` data, before torch reads it."""
    size = path.stat().st_size
    if size == 0:
        return "is empty (0 bytes)"
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(_ZIP_MAGIC):
        if not zipfile.is_zipfile(path):
            return f"is truncated or damaged: a zip archive whose end is missing ({size} bytes; an interrupted copy?)"
        if is_torchscript_archive(path):
            return "is a TorchScript archive (torch.jit.save), not torch.save data"
        return None
    if head[:1] != b"\x80":  # every torch.save file is a zip or a pickle (protocol >= 2)
        try:
            text = head.decode("utf-8")
        except UnicodeDecodeError:
            return f"is not a PyTorch file (it starts with bytes {head[:8].hex(' ')})"
        return f"holds text ({text.splitlines()[0][:40]!r}...), not a PyTorch file"
    return None


def load_torch_data(path: str | Path, expected: str) -> Any:
    """``torch.load(weights_only=True)`` on CPU, with one-line errors that name the file, say what is wrong
    and what was ``expected``; torch's advice to retry with ``weights_only=False`` (which would run the
    file's code) never reaches the user."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found. Expected {expected}")
    problem = _file_problem(path)
    if problem:
        raise ValueError(f"{path} {problem}. Expected {expected}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        needs = re.search(r"GLOBAL (\S+) was not an allowed global", str(e))
        what = (f"holds pickled Python objects ({needs[1]}) that only their code could rebuild; refused, "
                f"zeroi2v never runs code from a file" if needs else
                "is not a PyTorch tensor file (a pickle that does not hold plain tensors); refused")
        raise ValueError(f"{path} {what}. Expected {expected}") from e
    except Exception as e:  # miniz / stream errors of a damaged file
        raise ValueError(f"{path} is damaged or not a PyTorch file ({_brief(e)}). Expected {expected}") from e


_STORAGE_DTYPES = {"FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
                   "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
                   "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
                   "BoolStorage": torch.bool}
_JIT_PICKLE_HELPERS = {  # torch.jit._pickle's list and type-tag markers: all return their data unchanged
    "build_intlist": lambda data: data, "build_doublelist": lambda data: data,
    "build_boollist": lambda data: data, "build_tensorlist": lambda data: data,
    "restore_type_tag": lambda value, type_str: value}


class _ScriptObject:
    """A TorchScript object (a module) read as data: BUILD puts its pickled state in ``state``; the
    archive's own ``__setstate__`` (compiled code in ``code/``) is never looked at."""
    qualname = "?"

    def __init__(self, *args: Any) -> None:
        self.state: Any = None


def _rebuild_tensor(storage: torch.Tensor, offset: int, size: Any, stride: Any, *rest: Any) -> torch.Tensor:
    """``torch._utils._rebuild_tensor_v2`` as data: a strided view of a record (bounds checked by torch)."""
    return storage.as_strided(tuple(size), tuple(stride), offset)


class _ArchiveUnpickler(pickle._Unpickler):  # the pure-Python unpickler: its opcodes can be overridden
    """Unpickles a TorchScript ``data.pkl`` allowing only tensor rebuilds, storages, OrderedDict, the
    jit list markers and TorchScript classes (as inert ``_ScriptObject``s); anything else is refused.
    BUILD only stores state on a ``_ScriptObject`` (no ``__setstate__`` of anything else runs)."""
    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file: Any, zf: zipfile.ZipFile, prefix: str):
        super().__init__(file)
        self.zf, self.prefix, self.storages = zf, prefix, {}

    def load_build(self) -> None:
        state, obj = self.stack.pop(), self.stack[-1]
        if not isinstance(obj, _ScriptObject):
            raise pickle.UnpicklingError(f"state for a {type(obj).__name__}")
        obj.state = state

    dispatch[pickle.BUILD[0]] = load_build

    def find_class(self, module: str, name: str) -> Any:
        if module == "__torch__" or module.startswith("__torch__."):
            return type(name, (_ScriptObject,), {"qualname": f"{module}.{name}"})
        allowed = {("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
                   ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
                   ("torch._utils", "_rebuild_parameter"): lambda data, *rest: data,
                   ("collections", "OrderedDict"): collections.OrderedDict}
        if (module, name) in allowed:
            return allowed[module, name]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        if module == "torch.jit._pickle" and name in _JIT_PICKLE_HELPERS:
            return _JIT_PICKLE_HELPERS[name]
        raise pickle.UnpicklingError(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> torch.Tensor:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], torch.dtype)
                and isinstance(pid[2], str) and isinstance(pid[4], int)):
            raise pickle.UnpicklingError(f"a storage reference {str(pid)[:60]}")
        _, dtype, key, _, numel = pid
        if key not in self.storages:
            nbytes = numel * torch.empty((), dtype=dtype).element_size()
            raw = self.zf.read(f"{self.prefix}data/{key}")
            if len(raw) < nbytes:
                raise ValueError(f"record data/{key} holds {len(raw)} bytes, its tensors need {nbytes}")
            self.storages[key] = torch.frombuffer(bytearray(memoryview(raw)[:nbytes]), dtype=dtype) \
                if nbytes else torch.empty(0, dtype=dtype)
        return self.storages[key]


def _named_tensors(obj: _ScriptObject, prefix: str, out: dict[str, torch.Tensor], path: Path) -> None:
    if not isinstance(obj.state, dict):
        raise ValueError(f"{path}: TorchScript object {obj.qualname} restores itself with its own code "
                         f"(__setstate__); refused, zeroi2v reads archives as data and never runs their code")
    for key, value in obj.state.items():
        if isinstance(value, torch.Tensor):
            out[prefix + key] = value
        elif isinstance(value, _ScriptObject):
            _named_tensors(value, f"{prefix}{key}.", out, path)


def read_torchscript_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """The named tensors (parameters and buffers, ``visual.conv1.weight``...) of a TorchScript archive such
    as OpenAI's CLIP ``.pt``, without running any of its code: ``data.pkl`` through ``_ArchiveUnpickler``,
    tensors from the ``data/`` records. What ``torch.jit.load(path).state_dict()`` gives, minus the risk."""
    path = Path(path)
    with zipfile.ZipFile(path) as zf:
        pkl = [n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise ValueError(f"{path} is not a TorchScript archive (no single <name>/data.pkl record)")
        prefix = pkl[0][: -len("data.pkl")]
        try:
            with zf.open(pkl[0]) as f:
                root = _ArchiveUnpickler(f, zf, prefix).load()
            if not isinstance(root, _ScriptObject):
                raise ValueError(f"its data.pkl holds {describe_contents(root)}, not a module")
            out: dict[str, torch.Tensor] = {}
            _named_tensors(root, "", out, path)
        except pickle.UnpicklingError as e:
            raise ValueError(f"{path}: the TorchScript archive asks for {e}, which weights never need; refused "
                             f"(zeroi2v reads archives as data and never runs their code)") from e
        except ValueError as e:
            raise ValueError(str(e) if str(e).startswith(str(path)) else f"{path}: damaged TorchScript archive ({e})") from e
        except Exception as e:  # missing records, out-of-bounds views, truncated pickles, deep nesting
            raise ValueError(f"{path}: damaged TorchScript archive ({_brief(e)})") from e
    return out
