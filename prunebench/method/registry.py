"""Registry of pruning methods: a name -> class table filled by ``@register``.

The core never imports the method modules: it asks this registry for a name, and the registry
imports the method package (``METHOD_PACKAGES``, by default the top-level ``methods`` package,
whose ``__init__`` imports one module per method) the first time a name is looked up. So a new
method is one module in ``methods/`` that decorates its class with ``@register("name")`` plus
one import line in ``methods/__init__.py``; nothing in ``prunebench`` changes.
"""

from __future__ import annotations

import importlib
from typing import Any

from prunebench.method.base import PruningMethod

#: Packages imported (once, on the first look-up) so that their modules register their methods.
METHOD_PACKAGES: tuple[str, ...] = ("methods",)

_REGISTRY: dict[str, type[PruningMethod]] = {}
_discovered = False


class UnknownMethodError(KeyError):
    """A method name that is not registered."""

    def __str__(self) -> str:  # KeyError quotes its message; say it plainly
        return str(self.args[0])


def register(name: str):
    """Class decorator adding a method under ``name``; a duplicate name is refused."""

    def decorate(cls: type[PruningMethod]) -> type[PruningMethod]:
        if name in _REGISTRY:
            raise ValueError(f"method name {name!r} is already registered by {_REGISTRY[name].__module__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def _discover() -> None:
    """Import the method packages once, so that every ``@register`` in them has run."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    for package in METHOD_PACKAGES:
        importlib.import_module(package)


def available() -> list[str]:
    """Registered method names, sorted."""
    _discover()
    return sorted(_REGISTRY)


def get(name: str) -> type[PruningMethod]:
    """The method class registered under ``name``."""
    _discover()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownMethodError(f"unknown method {name!r}; registered methods are: {', '.join(available())}") from None


def build(name: str, target_remaining: float, settings: dict[str, Any] | None = None) -> PruningMethod:
    """Instantiate method ``name`` for a budget with its settings."""
    return get(name)(target_remaining, settings)
