"""A small per-process cache with expiry, for values read on every request."""
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class TTLCache(Generic[V]):
    """Entries expire `seconds` after they are set; past `max_entries` the oldest go first.

    Per process and unshared, so a change made elsewhere shows here within `seconds`.
    Keys must come from what we trust (our database, a verified request), never from
    unauthenticated input: each key costs memory until it expires.
    """

    def __init__(self, *, seconds: float, max_entries: int = 1024) -> None:
        self.seconds = seconds
        self.max_entries = max_entries
        self._entries: dict[Hashable, tuple[float, V]] = {}

    def get(self, key: Hashable) -> V | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] <= time.monotonic():
            return None
        return entry[1]

    def set(self, key: Hashable, value: V) -> V:
        self._entries.pop(key, None)
        while len(self._entries) >= self.max_entries:
            self._entries.pop(next(iter(self._entries)), None)
        self._entries[key] = (time.monotonic() + self.seconds, value)
        return value

    def get_or_set(self, key: Hashable, compute: Callable[[], V]) -> V:
        value = self.get(key)
        return value if value is not None else self.set(key, compute())

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
