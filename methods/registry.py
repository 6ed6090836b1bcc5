"""Registry of pruning methods: a name -> class table filled by ``@register``.

Adding a method is one new module in ``methods/`` plus one import line in
``methods/__init__.py``.
"""

from __future__ import annotations

from typing import Any

from methods.base import PruningMethod

_REGISTRY: dict[str, type[PruningMethod]] = {}


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


def available() -> list[str]:
    """Registered method names, sorted."""
    return sorted(_REGISTRY)


def get(name: str) -> type[PruningMethod]:
    """The method class registered under ``name``."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownMethodError(f"unknown method {name!r}; registered methods are: {', '.join(available())}") from None


def build(name: str, target_remaining: float, settings: dict[str, Any] | None = None) -> PruningMethod:
    """Instantiate method ``name`` for a budget with its settings."""
    return get(name)(target_remaining, settings)
