"""A small name -> object registry (timm-style), used for datasets, spaces and genotypes."""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from .errors import DcanasError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects; unknown names raise a DcanasError listing the known ones."""

    def __init__(self, kind: str, error: type[DcanasError] = DcanasError) -> None:
        self.kind = kind
        self.error = error
        self._items: dict[str, T] = {}
        self._display: dict[str, str] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers an object under `name`."""

        def add(obj: T) -> T:
            self.add(name, obj)
            return obj

        return add

    def add(self, name: str, obj: T) -> None:
        """Register `obj` under `name` (names are case-insensitive)."""
        key = name.lower()
        if key in self._items:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._items[key] = obj
        self._display[key] = name

    def get(self, name: str) -> T:
        """The object registered as `name`."""
        try:
            return self._items[name.lower()]
        except KeyError:
            known = ", ".join(self.names())
            raise self.error(f"unknown {self.kind} {name!r}; choose one of: {known}") from None

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._display.values())

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
