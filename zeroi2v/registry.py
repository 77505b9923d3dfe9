"""Name -> class registries, one per kind of pluggable part (timm's layer registries, in small).

    TEMPORAL = Registry("temporal operator")      # zeroi2v.temporal
    @TEMPORAL.register("stdha")
    class STDHA(TemporalOperator): ...

    TEMPORAL.get_class("stdha")  # -> STDHA;  an unknown name is a ValueError listing the known ones

A new temporal operator, adapter kind or backbone family is one class plus one ``register`` line; the
model, the merge and the config validation look parts up here and never name them.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, TypeVar

T = TypeVar("T")


class Registry(dict):
    """A ``dict`` of name -> class that refuses duplicates and explains unknown names."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(self, name: str) -> Callable[[T], T]:
        """Class decorator: ``@REGISTRY.register("name")``. The class gets ``.registry_name``."""
        def add(cls: T) -> T:
            if name in self and self[name] is not cls:
                raise ValueError(f"{self.kind} {name!r} is already registered ({self[name].__name__})")
            self[name] = cls
            cls.registry_name = name
            return cls
        return add

    def get_class(self, name: str):
        if name not in self:
            raise ValueError(f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self))}")
        return self[name]


def with_defaults(spec: Mapping[str, Any], defaults: Mapping[str, Any], what: str,
                  also: Iterable[str] = ()) -> dict[str, Any]:
    """``spec`` over ``defaults``; a key that is not a default is a ValueError ``"key: not a key of {what}"``
    (``also``: keys handled elsewhere, listed in the message)."""
    unknown = sorted(set(spec) - set(defaults))
    if unknown:
        raise ValueError(f"{unknown[0]}: not a key of {what}; its keys are {[*also, *sorted(defaults)] or 'none'}")
    return {**defaults, **spec}
