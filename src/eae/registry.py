"""A tiny name -> factory registry (the timm pattern).

Models, training methods and attacks each keep one. The registries are the single
source of truth for what exists: the CLI builds its choices from them and the
tests iterate over them, so a new entry is picked up everywhere by registering it.
"""
from __future__ import annotations

import re
from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # a flag's word: no spaces, no 'timm:'-like prefix


class Registry(Generic[T]):
    def __init__(self, kind: str, pattern: re.Pattern = NAME, spelled: str = "letters, digits, '_', '.' and '-'"):
        self.kind, self.pattern, self.spelled = kind, pattern, spelled  # spelled: the pattern in words
        self.reserved: dict[str, str] = {}  # names a spec reads otherwise (attack aliases): name -> what it is
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        from .errors import ConfigError

        # checked here, where the user's line is: a bad entry would break every later lookup and listing
        if not isinstance(name, str) or not name.strip() or name != name.strip():
            raise ConfigError(f"a {self.kind} name must be a non-empty string without surrounding spaces, "
                              f"got {name!r}", field=self.kind)
        if not self.pattern.fullmatch(name):  # a name no flag or spec could select
            raise ConfigError(f"a {self.kind} name is made of {self.spelled}, got {name!r}", field=self.kind)
        from .utils import row_key  # names that read alike are one (worst-case, worst_case: "worst case")

        spelled = {row_key(r): r for r in self.reserved}
        if name in self._entries or row_key(name) in spelled:
            what = f" ({self.reserved[spelled[row_key(name)]]})" if row_key(name) in spelled else ""
            raise ConfigError(f"{self.kind} {name!r} is already registered{what}: choose another name", field=self.kind)

        def deco(obj: T) -> T:
            if not callable(obj):
                raise ConfigError(f"{self.kind} {name!r}: register a class or a function that builds one, "
                                  f"got {obj!r}", field=self.kind)
            if name in self._entries:
                raise ConfigError(f"{self.kind} {name!r} is already registered: choose another name", field=self.kind)
            self._entries[name] = obj
            return obj

        return deco

    def __getitem__(self, name: str) -> T:  # METHODS["eae"], as for a dict
        return self.get(name)

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            from .errors import UnknownName

            raise UnknownName(f"unknown {self.kind} {name!r}; available: {', '.join(self.names())}",
                              field=self.kind) from None

    def build(self, name: str, called_as: str, *args, **kwargs):
        """``self.get(name)(*args, **kwargs)``: a registered factory is a user's code, so its
        failure is named (ModelError, with ``called_as`` saying how it was called), not a
        traceback from deep inside training; eae's own errors pass as they are."""
        from .errors import EaeError, ModelError

        factory = self.get(name)
        try:
            return factory(*args, **kwargs)
        except EaeError:
            raise
        except Exception as e:  # noqa: BLE001 - a user's factory: its failure, named
            text = str(e).strip().splitlines()
            raise ModelError(f"{self.kind} {name!r}: its factory, called {called_as}, failed: "
                             f"{type(e).__name__}{': ' + text[0] if text else ''}") from e

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
