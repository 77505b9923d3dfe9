"""Config files: YAML that inherits (``base:``), ``--set`` overrides, and typed merging with OmegaConf.

A config file may start with ``base: other.yaml`` (a path relative to the file, or ``zeroi2v:configs/...``
for a file shipped inside the package, e.g. ``zeroi2v:configs/base/clip_vit_b16.yaml``, the paper's recipe,
which a pip install has too): it then holds only what differs from its base. Mappings merge key by key, the child winning; a mapping with a ``kind`` (a temporal
operator, an adapter) whose child names another kind is replaced whole, since its keys belong to the
kind. ``--set key.sub=value`` overrides apply last, their values read as YAML scalars (``1e-4``, ``null``,
``[9, 2]``; ``9,2`` for a list field).

The result is merged into OmegaConf's structured config of ``zeroi2v.config.Config``, which checks every
key and type; its errors are reworded to name the dotted key, what was expected and what was given.
Nothing here imports torch: reading a config is cheap, validating its components (``Config.validate``)
is not.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Sequence

import yaml

BASE_KEY = "base"
PACKAGE_PREFIX = "zeroi2v:"
"""A ``base:`` that starts with this names a file inside the installed package (``zeroi2v/configs/...``)."""
PACKAGE_DIR = Path(__file__).resolve().parent
NULLS = ("null", "none", "~", "")


def read_yaml(path: str | Path) -> Any:
    """A YAML file's data (``yaml.safe_load``: no tags, no code); a one-line error that names the file,
    the line and what is wrong when it is not UTF-8 or not valid YAML."""
    from zeroi2v.files import read_text
    text = read_text(path)
    try:
        return yaml.safe_load(text)
    except yaml.reader.ReaderError as e:  # a control character
        line = text[:e.position].count("\n") + 1
        raise ValueError(f"{path}, line {line}: character #x{e.character:04x}: {e.reason}; remove it") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else str(path)
        problem = " ".join(str(e.problem or e.context or "not valid YAML").split())
        if e.context and e.problem and e.context_mark is not None:
            problem += f" ({e.context} from line {e.context_mark.line + 1})"
        fix = ("tags (!!...) are not allowed in a config: write plain values"
               if isinstance(e, yaml.constructor.ConstructorError)
               else "fix the YAML there (`key: value`, nesting by spaces, quote values that hold ': ' or '#')")
        raise ValueError(f"{where}: {problem}; {fix}") from None


def read_chain(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file's data with its ``base:`` chain merged in (bases first)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    data = read_yaml(path) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config file holds a mapping (model:, data:, ...), got {type(data).__name__}")
    if BASE_KEY not in data:
        return data
    base = data.pop(BASE_KEY)
    if not isinstance(base, str) or not base.strip():
        raise ValueError(f"{path}: '{BASE_KEY}' must be the path of another config file (relative to this one, "
                         f"or {PACKAGE_PREFIX}configs/... for one shipped with the package)")
    base_path = _base_path(path, base)
    chain = (*_seen, path.resolve())
    if base_path in chain:
        loop = " -> ".join(str(p) for p in (*chain, base_path))
        raise ValueError(f"{path}: '{BASE_KEY}: {base}' makes a cycle ({loop}); remove one of the base: lines")
    if not base_path.is_file():
        where = ("the installed zeroi2v package; packaged bases: " + ", ".join(packaged_bases())
                 if base.startswith(PACKAGE_PREFIX) else f"{path.parent}")
        raise FileNotFoundError(f"{path}: '{BASE_KEY}: {base}' names {base_path}, which does not exist; "
                                f"fix the path (it is relative to {where})")
    return merge_data(read_chain(base_path, chain), data)


def _base_path(path: Path, base: str) -> Path:
    """The file a ``base:`` names: relative to the config's folder, or inside the installed package when it
    starts with ``zeroi2v:`` (``zeroi2v:configs/base/clip_vit_b16.yaml``, which a pip install also has)."""
    if base.startswith(PACKAGE_PREFIX):
        return (PACKAGE_DIR / base[len(PACKAGE_PREFIX):].lstrip("/")).resolve()
    return (path.parent / base).resolve()


def packaged_bases() -> list[str]:
    """The ``base:`` values of the configs shipped inside the package."""
    return sorted(f"{PACKAGE_PREFIX}{p.relative_to(PACKAGE_DIR).as_posix()}" for p in PACKAGE_DIR.glob("configs/**/*.yaml"))


def merge_data(base: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """``child`` over ``base``, mapping by mapping; a child mapping with another ``kind`` replaces its base."""
    out = dict(base)
    for key, value in child.items():
        old = out.get(key)
        if isinstance(old, dict) and isinstance(value, dict) and value.get("kind", old.get("kind")) == old.get("kind"):
            out[key] = merge_data(old, value)
        else:
            out[key] = value
    return out


def apply_overrides(data: dict[str, Any], overrides: Sequence[str], schema: type) -> dict[str, Any]:
    """``key.sub=value`` strings set into ``data`` (values read as YAML; ``a,b`` for list fields)."""
    data = dict(data)
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"override {item!r} is not of the form key.sub=value (e.g. optim.lr=1e-4)")
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = {}
            elif not isinstance(child, dict):
                raise ValueError(f"cannot set {key!r}: {part!r} holds a value, not a section")
            node[part] = child = dict(child)
            node = child
        node[parts[-1]] = _parse(text.strip(), _hint(schema, parts))
    return data


def _parse(text: str, hint: Any) -> Any:
    """A command-line value: YAML, with two conveniences the field's type makes unambiguous."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if type(None) in options and text.lower() in NULLS:
        return None
    listy = any(o in (list, tuple) or typing.get_origin(o) in (list, tuple) for o in options)
    if listy and "," in text and not text.startswith(("[", "(")):
        text = f"[{text}]"
    elif listy and text.startswith("("):
        text = f"[{text.strip('()')}]"
    try:
        return yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        return text


def _hint(schema: type, parts: Sequence[str]) -> Any:
    """The annotated type of a dotted key of a dataclass schema (None when it is not a field)."""
    tp: Any = schema
    for part in parts:
        if not (isinstance(tp, type) and dataclasses.is_dataclass(tp)):
            return None
        tp = typing.get_type_hints(tp).get(part)
    return tp


def to_structured(schema: type, data: Any, prefix: str = "", start: Any = None) -> Any:
    """``data`` merged into OmegaConf's structured ``schema`` (starting from the instance ``start``, default
    ``schema()``), as a ``schema`` instance; a ValueError that names the dotted key (after ``prefix``) for an
    unknown key or a value of the wrong type."""
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigKeyError, OmegaConfBaseException
    if not isinstance(data, dict):
        raise ValueError(f"{prefix.rstrip('.') or 'the config'} must be a mapping, got {type(data).__name__} {data!r}")
    _check_strict(schema, data, prefix)
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(start if start is not None else schema), data))
    except ConfigKeyError as e:
        key = str(e.full_key)
        parent = _hint(schema, key.split(".")[:-1])
        where = (prefix + key).rpartition(".")[0] or "the config"
        known = ", ".join(f.name for f in dataclasses.fields(parent)) if dataclasses.is_dataclass(parent) else "?"
        raise ValueError(f"unknown config key {prefix + key!r}; known keys in {where}: {known}") from None
    except OmegaConfBaseException as e:
        key = str(getattr(e, "full_key", "") or "")
        value, hint = _get(data, key), _hint(schema, key.split(".")) if key else schema
        if dataclasses.is_dataclass(hint):
            raise ValueError(f"{prefix + key} must be a mapping, got {type(value).__name__} {value!r}") from None
        raise ValueError(f"config key {(prefix + key) or 'the config'!r} expects {_type_name(hint)}, got "
                         f"{type(value).__name__} {value!r}") from None


def _check_strict(schema: type, data: dict[str, Any], prefix: str) -> None:
    """What OmegaConf would convert silently (3 or 'yes' for a bool, 5 for a string) or report without
    naming the key (a tuple of the wrong length), but a config must not."""
    hints = typing.get_type_hints(schema)
    for key, value in data.items():
        hint = hints.get(key)
        options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
        fixed = [o for o in options if typing.get_origin(o) is tuple and Ellipsis not in typing.get_args(o)]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            _check_strict(hint, value, f"{prefix}{key}.")
        elif fixed and isinstance(value, (list, tuple)) and len(value) != len(typing.get_args(fixed[0])):
            raise ValueError(f"config key {prefix + key!r} expects {len(typing.get_args(fixed[0]))} values "
                             f"({_type_name(fixed[0])}), got {len(value)}: {value!r}")
        elif value is not None and options in ((bool,), (str,), (str, type(None))) and not isinstance(value, options[0]):
            raise ValueError(f"config key {prefix + key!r} expects {options[0].__name__}, got "
                             f"{type(value).__name__} {value!r}")


def _get(data: Any, key: str) -> Any:
    for part in key.split(".") if key else ():
        data = data.get(part) if isinstance(data, dict) else None
    return data


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is None and isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")
