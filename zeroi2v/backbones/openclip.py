"""Image backbones: open_clip visual towers, their configs as data, and where their weights come from.

Weights come from one of:
- nothing (random init; shape, FLOP and exactness checks),
- an open_clip pretrained tag (``pretrained="openai"``; downloads when a hub is reachable),
- a local file: an open_clip checkpoint (``.bin``/``.pth``/``.safetensors``) or an OpenAI CLIP ``.pt``
  (TorchScript archive),
- a local directory in open_clip's own layout (``open_clip_config.json`` + weights), named as
  ``backbone="local-dir:/path"``: what a Hugging Face CLIP repo looks like, and what the offline
  quickstart saves its small pre-trained image model as.
Files are read as data and never run code: safetensors; ``torch.load(weights_only=True)`` (tensors and
plain containers only); and TorchScript archives (OpenAI's CLIP ``.pt``) through ``read_torchscript_tensors``,
a restricted unpickler that takes the archive's tensors from its ``data/`` records and never runs its
``code/`` or a ``__setstate__`` (``torch.jit.load`` would). Broken files give one line naming the file.
"""
from __future__ import annotations

import collections
import copy
import json
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn as nn
from open_clip.model import _build_vision_tower  # the one builder open_clip uses for every ViT tower

from zeroi2v.backbones.base import BACKBONES, Backbone, BlockLayout
from zeroi2v.files import atomic_write, atomic_write_text

CONFIG_DIR = Path(__file__).parent.parent / "model_configs"
LOCAL_DIR = "local-dir:"
CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"

open_clip.add_model_config(CONFIG_DIR)  # our small configs become ordinary open_clip model names


def list_backbones() -> list[str]:
    ours = sorted(p.stem for p in CONFIG_DIR.glob("*.json"))
    return ours + [m for m in open_clip.list_models() if m not in ours]


def get_model_config(name: str) -> dict[str, Any]:
    """open_clip model config (embed_dim, quick_gelu, vision_cfg, ...) for a name or a local dir."""
    if name.startswith(LOCAL_DIR):
        path = Path(name[len(LOCAL_DIR):]) / CONFIG_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: a local backbone directory needs {CONFIG_FILE} "
                                    f"(open_clip's layout) beside its weights")
        return json.loads(path.read_text())["model_cfg"]
    ours = CONFIG_DIR / f"{name}.json"
    if ours.is_file():
        return json.loads(ours.read_text())
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(list_backbones()[:12])}, ... "
                         f"(or 'local-dir:/path/to/open_clip_dir')")
    return copy.deepcopy(cfg)


def build_visual(model_cfg: dict[str, Any]) -> nn.Module:
    """An open_clip VisionTransformer from config data (no text tower, random weights)."""
    vision_cfg = model_cfg["vision_cfg"]
    if "timm_model_name" in vision_cfg:
        raise NotImplementedError("timm towers are not wrapped yet; use an open_clip ViT config")
    return _build_vision_tower(model_cfg["embed_dim"], vision_cfg, quick_gelu=model_cfg.get("quick_gelu", False))


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


def _visual_part(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    visual = {k[len("visual."):]: v for k, v in sd.items() if k.startswith("visual.")}
    return visual or sd


def backbone_architecture(name: str, pretrained: str | None = None) -> dict[str, Any]:
    """The model config ``create_visual(name, pretrained)`` builds, without reading any weights: an
    open_clip tag may switch on QuickGELU (``openai``), and so does an OpenAI CLIP ``.pt`` (TorchScript):
    OpenAI's CLIP models are QuickGELU models, as open_clip's ``load_openai_model`` builds them."""
    model_cfg = get_model_config(name)
    if pretrained and not name.startswith(LOCAL_DIR):
        if Path(pretrained).is_file():
            if is_torchscript_archive(pretrained):
                model_cfg["quick_gelu"] = True
        elif tag_cfg := open_clip.get_pretrained_cfg(name, pretrained):
            model_cfg["quick_gelu"] = tag_cfg.get("quick_gelu", model_cfg.get("quick_gelu", False))
    return model_cfg


def _resolve_weights(name: str, pretrained: str | None) -> Path | None:
    if name.startswith(LOCAL_DIR):
        folder = Path(name[len(LOCAL_DIR):])
        for candidate in (WEIGHTS_FILE, "open_clip_pytorch_model.bin", "model.safetensors", "pytorch_model.bin"):
            if (folder / candidate).is_file():
                return folder / candidate
        raise FileNotFoundError(f"no weights in {folder} (looked for {WEIGHTS_FILE}, open_clip_pytorch_model.bin)")
    if not pretrained:
        return None
    if Path(pretrained).is_file():
        return Path(pretrained)
    tag_cfg = open_clip.get_pretrained_cfg(name, pretrained)
    if not tag_cfg:
        raise ValueError(f"pretrained={pretrained!r} is neither a file nor a known tag of {name}; "
                         f"tags: {open_clip.list_pretrained_tags_by_model(name)}")
    try:
        return Path(open_clip.download_pretrained(tag_cfg))
    except Exception as e:
        raise RuntimeError(
            f"could not download the '{pretrained}' weights of {name} ({type(e).__name__}); no hub is "
            f"reachable (HF_HUB_OFFLINE set or no network). Pass a local file instead: pretrained="
            f"/path/to/open_clip_pytorch_model.bin (or .safetensors, or OpenAI's ViT-B-16.pt), or an "
            f"open_clip directory as backbone='local-dir:/path'") from e


def create_visual(name: str, pretrained: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """The visual tower of backbone ``name`` with its weights, and the model config it was built from."""
    model_cfg = backbone_architecture(name, pretrained)
    weights = _resolve_weights(name, pretrained)
    visual = build_visual(model_cfg)
    if weights is not None:
        sd = _visual_part(load_state_dict_file(weights))
        missing, unexpected = visual.load_state_dict(sd, strict=False)
        if missing or unexpected:
            raise ValueError(f"{weights} does not fit {name}: missing {missing[:5]}{'...' if len(missing) > 5 else ''}"
                             f", unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
    return visual, model_cfg


def save_local_dir(visual: nn.Module, model_cfg: dict[str, Any], folder: str | Path,
                   extra_tensors: dict[str, torch.Tensor] | None = None) -> str:
    """Save a visual tower in open_clip's directory layout; returns the ``local-dir:`` name to load it."""
    from safetensors.torch import save_file
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"visual.{k}": v.detach().contiguous() for k, v in visual.state_dict().items()}
    tensors.update(extra_tensors or {})
    atomic_write(folder / WEIGHTS_FILE, lambda tmp: save_file(tensors, tmp))
    atomic_write_text(folder / CONFIG_FILE, json.dumps({"model_cfg": model_cfg}, indent=2))
    return f"{LOCAL_DIR}{folder}"


# --- the backbone protocol (zeroi2v.backbones.base) ---------------------------------------------------

@BACKBONES.register("open_clip")
class OpenCLIP(Backbone):
    """open_clip's ``VisionTransformer`` (class-token ViTs: CLIP ViT-B/16, ViT-L/14, our small configs).

    Names: an open_clip model name ('ViT-B-16'), one of ours in ``model_configs/``, or
    ``local-dir:/path`` (open_clip's directory layout), with an optional ``open_clip:`` prefix.
    """

    prefix = "open_clip:"
    layout = BlockLayout(
        norm1="ln_1", ls1=("ls_1",), norm2="ln_2", ls2=("ls_2",), act=("mlp.gelu",), heads="attn",
        projections={"qkv": ("attn", "in_proj_weight", "in_proj_bias"),
                     "attn_out": ("attn.out_proj", "weight", "bias"),
                     "fc1": ("mlp.c_fc", "weight", "bias"), "fc2": ("mlp.c_proj", "weight", "bias")})
    pool_norm = "ln_post"
    no_weight_decay = ("class_embedding", "positional_embedding")

    @classmethod
    def arch(cls, name: str) -> dict[str, Any]:
        return get_model_config(name)

    @classmethod
    def facts(cls, arch: dict[str, Any]) -> dict[str, int]:
        vision = arch["vision_cfg"]
        width = int(vision["width"])
        size = vision.get("image_size", 224)
        return {"width": width, "layers": int(vision["layers"]), "heads": width // int(vision.get("head_width", 64)),
                "image_size": int(size[0] if isinstance(size, (list, tuple)) else size)}

    @classmethod
    def create(cls, name: str, pretrained: str | None) -> tuple[nn.Module, dict[str, Any]]:
        tower, arch = create_visual(name, pretrained)
        return _checked(tower), arch

    @classmethod
    def build(cls, arch: dict[str, Any]) -> nn.Module:
        return _checked(build_visual(arch))

    @classmethod
    def blocks(cls, tower: nn.Module) -> nn.ModuleList:
        return tower.transformer.resblocks

    @classmethod
    def embed(cls, tower: nn.Module, images: torch.Tensor) -> torch.Tensor:
        x = tower.conv1(images).flatten(2).transpose(1, 2)
        x = torch.cat([tower.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1), x], dim=1)
        return x + tower.positional_embedding.to(x.dtype)

    @classmethod
    def pre_blocks(cls, tower: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return tower.ln_pre(tower.patch_dropout(x))

    @classmethod
    def pool(cls, tower: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return tower.ln_post(x[:, 0])

    @classmethod
    def image_features(cls, tower: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return tower(images)

    @classmethod
    def image_size(cls, tower: nn.Module) -> int:
        size = tower.image_size
        return size[0] if isinstance(size, (tuple, list)) else int(size)

    @classmethod
    def grid(cls, tower: nn.Module) -> tuple[int, int]:
        grid = tower.grid_size
        return (int(grid[0]), int(grid[1])) if isinstance(grid, (tuple, list)) else (int(grid), int(grid))

    @classmethod
    def width(cls, tower: nn.Module) -> int:
        return tower.class_embedding.shape[-1]


def _checked(tower: nn.Module) -> nn.Module:
    """The tower as the video model uses it: class-token pooling, no image-text projection."""
    if getattr(tower, "attn_pool", None) is not None or getattr(tower, "pool_type", "tok") != "tok":
        raise NotImplementedError("only class-token ViTs are supported (no attention or average pooling)")
    for blk in tower.transformer.resblocks:
        if getattr(blk, "ln_attn", None) is not None and not isinstance(blk.ln_attn, nn.Identity):
            raise NotImplementedError("blocks with an inner attention norm are not supported")
    tower.proj = None
    return tower
