"""Taking turns at SQLite's single write lock without oversleeping.

SQLite lets one writer in at a time; a process that finds the lock taken sleeps in
SQLite's busy handler for 1, 2, 5, 10 … 100 ms between tries, long after a ~1 ms
transaction has ended. Web processes therefore queue on a file lock first, which wakes
the next waiter the moment it is released. Other databases need none of this.
"""
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connections

_lock_files: dict[str, int] = {}


@contextmanager
def one_writer_at_a_time(using: str = "default") -> Iterator[None]:
    connection = connections[using]
    if connection.vendor != "sqlite" or connection.is_in_memory_db():
        yield
        return
    path = f"{connection.settings_dict['NAME']}.write-lock"
    descriptor = _lock_files.get(path)
    if descriptor is None:
        descriptor = _lock_files[path] = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(descriptor, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(descriptor, fcntl.LOCK_UN)
