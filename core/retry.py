"""Retrying a call on transient errors, for backend and LINE calls alike."""
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def retrying(call: Callable[[], T], *, delays: list[float], transient: Callable[[Exception], bool],
             sleep: Callable[[float], None] = time.sleep) -> T:
    """Calls, and on a transient error waits each delay in turn (with `sleep`) and calls again."""
    for delay in [*delays, None]:
        try:
            return call()
        except Exception as exc:
            if delay is None or not transient(exc):
                raise
            sleep(delay)
    raise AssertionError("unreachable")
