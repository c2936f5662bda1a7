"""Taking turns at SQLite's single write lock without oversleeping, and emptying its WAL.

SQLite lets one writer in at a time; a process that finds the lock taken sleeps in
SQLite's busy handler for 1, 2, 5, 10 … 100 ms between tries, long after a ~1 ms
transaction has ended. Web processes therefore queue on a file lock first, which wakes
the next waiter the moment it is released; a worker's answering threads queue the same way.
Other databases need none of this.
"""
import fcntl
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connections, transaction

logger = logging.getLogger(__name__)

_lock_files: dict[str, int] = {}
# flock() is held by the open file, which a process's threads share: each thread (a worker's
# answering threads) also queues on a lock of the process's own. Re-entrant, so a task run
# inline inside a webhook's turn at the lock (the tests' sync mode) does not wait on itself.
_thread_locks: dict[str, threading.RLock] = {}
_setup = threading.Lock()
_depth = threading.local()


def _forget_locks_in_child() -> None:
    # A forked child shares the parent's open lock files, and flock() would then not keep the
    # two apart: it opens its own.
    global _setup
    _setup = threading.Lock()
    _lock_files.clear()
    _thread_locks.clear()
    _depth.__dict__.clear()


os.register_at_fork(after_in_child=_forget_locks_in_child)


@contextmanager
def one_writer_at_a_time(using: str = "default") -> Iterator[None]:
    connection = connections[using]
    if connection.vendor != "sqlite" or connection.is_in_memory_db():
        yield
        return
    path = f"{connection.settings_dict['NAME']}.write-lock"
    with _setup:
        descriptor = _lock_files.get(path)
        if descriptor is None:
            descriptor = _lock_files[path] = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            _thread_locks[path] = threading.RLock()
    depths = _depth.__dict__.setdefault("by_path", {})
    with _thread_locks[path]:
        depths[path] = depths.get(path, 0) + 1
        if depths[path] == 1:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        try:
            yield
        finally:
            depths[path] -= 1
            if not depths[path]:
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
