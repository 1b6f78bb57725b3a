"""A tiny name -> factory registry (the timm pattern).

Models, training methods and attacks each keep one. The registries are the single
source of truth for what exists: the CLI builds its choices from them and the
tests iterate over them, so a new entry is picked up everywhere by registering it.
"""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._entries:
                raise KeyError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            from .errors import UnknownName

            raise UnknownName(f"unknown {self.kind} {name!r}; available: {', '.join(self.names())}",
                              field=self.kind) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
