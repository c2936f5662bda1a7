"""Taking turns at SQLite's single write lock without oversleeping, and emptying its WAL.

SQLite lets one writer in at a time; a process that finds the lock taken sleeps in
SQLite's busy handler for 1, 2, 5, 10 … 100 ms between tries, long after a ~1 ms
transaction has ended. Web processes therefore queue on a file lock first, which wakes
the next waiter the moment it is released. Other databases need none of this.
"""
import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connections, transaction

logger = logging.getLogger(__name__)

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


def checkpoint_wal(*, using: str = "default") -> None:
    """Copies the WAL into the database file and empties it, once the current transaction
    has committed (before, the checkpoint cannot see its pages).

    For redaction, erasure and the purge: secure_delete overwrites the text in the database
    file, but the WAL still holds the pages as they were until later writes reuse it.
    """
    connection = connections[using]
    if connection.vendor != "sqlite" or connection.is_in_memory_db():
        return
    transaction.on_commit(lambda: _truncate_wal(using), using=using)


def _truncate_wal(using: str) -> None:
    with one_writer_at_a_time(using), connections[using].cursor() as cursor:
        cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        busy, _, _ = cursor.fetchone()
    if busy:
        # A reader kept its snapshot past the busy timeout; the next checkpoint finishes.
        logger.warning("The SQLite WAL could not be emptied: a reader held it past the busy timeout.")
