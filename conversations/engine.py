"""Many answers in flight per worker process: a bounded pool of answering threads.

A django-q2 worker hands each claimed turn to a thread here and goes back to the queue, so
how many answers are generated at once is set by the backends' slots
(`models_registry.concurrency`), not by the number of processes. The pool is bounded: when
every thread is busy the task waits for one before it claims anything, so further work stays
in the queue. Durability stays in the database: a turn's claim has a lease this module's
heartbeat renews; if the process dies the leases expire and the sweeper gives the turns back.

With django-q2 in sync mode (the tests) or `LINEBOT_ENGINE_THREADS=0`, turns run inline.
"""
import logging
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from multiprocessing import util as multiprocessing_util

from django.conf import settings
from django.db import close_old_connections, connections
from django_q.conf import Conf

logger = logging.getLogger(__name__)

# A task that finds every thread busy gives up after this long and leaves its message to the
# sweeper, well inside django-q2's task timeout (which would kill the whole process).
SEAT_WAIT_SECONDS = 60.0


class Engine:
    def __init__(self, *, threads: int, renew: Callable[[list[str]], None], heartbeat_every: float) -> None:
        self.threads = threads
        self._seats = threading.BoundedSemaphore(threads)
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="answer")
        self._held: set[str] = set()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._renew = renew
        self._heartbeat_every = heartbeat_every
        self._stopping = threading.Event()
        self._heartbeat = threading.Thread(target=self._beat, name="answer-heartbeat", daemon=True)
        self._heartbeat.start()

    @contextmanager
    def seat(self, *, wait: bool = True) -> Iterator["Seat | None"]:
        """A thread reserved for one turn; None if none freed up in time (or at once, unless `wait`)."""
        if not self._seats.acquire(timeout=SEAT_WAIT_SECONDS if wait else 0):
            if wait:
                logger.warning("Every answering thread stayed busy for %.0f s; the message waits for the "
                               "sweeper.", SEAT_WAIT_SECONDS)
            yield None
            return
        seat = Seat(self)
        try:
            yield seat
        finally:
            if not seat.started:
                self._seats.release()

    def _start(self, work: Callable[[], None], claim: str) -> None:
        with self._lock:
            self._held.add(claim)
        self._pool.submit(self._run, work, claim)

    def _run(self, work: Callable[[], None], claim: str) -> None:
        close_old_connections()
        try:
            work()
        except Exception:
            logger.exception("Answering turn %s failed", claim[:8])
        finally:
            with self._lock:
                self._held.discard(claim)
                self._idle.notify_all()
            self._seats.release()
            _let_go_of_connections()

    @property
    def in_flight(self) -> int:
        with self._lock:
            return len(self._held)

    def _beat(self) -> None:
        while not self._stopping.wait(self._heartbeat_every):
            with self._lock:
                claims = list(self._held)
            if not claims:
                continue
            try:
                self._renew(claims)
            except Exception:
                # The next beat tries again; leases are several beats long.
                logger.exception("Renewing %d answering claims failed", len(claims))
            finally:
                connections.close_all()

    def drain(self, timeout: float | None = None) -> bool:
        """Waits for the turns in flight to finish (a worker stopping or recycled); True if they did."""
        with self._lock:
            finished = self._idle.wait_for(lambda: not self._held, timeout=timeout)
        self._stopping.set()
        self._pool.shutdown(wait=finished)
        return finished


def _let_go_of_connections() -> None:
    """After a turn: an idle answering thread keeps no SQLite connection (each holds its own
    page cache, megabytes per thread); opening one again costs a fraction of a millisecond.
    A PostgreSQL connection is kept (reconnecting costs milliseconds) until CONN_MAX_AGE."""
    for connection in connections.all(initialized_only=True):
        if connection.vendor == "sqlite":
            connection.close()
    close_old_connections()


class Seat:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.started = False

    def run(self, work: Callable[[], None], *, claim: str) -> None:
        self.started = True
        self._engine._start(work, claim)


_engine: Engine | None = None
_engine_pid = 0
_engine_lock = threading.Lock()


def inline() -> bool:
    return Conf.SYNC or settings.LINEBOT["ENGINE_THREADS"] < 1


@contextmanager
def seat(*, wait: bool = True) -> Iterator["Seat | InlineSeat | None"]:
    """Where the next turn runs: a pool thread of this process, or inline. Without `wait`, None
    at once when every thread is busy."""
    if inline():
        yield InlineSeat()
        return
    with _process_engine().seat(wait=wait) as reserved:
        yield reserved


class InlineSeat:
    def run(self, work: Callable[[], None], *, claim: str) -> None:
        work()


def _process_engine() -> Engine:
    global _engine, _engine_pid
    with _engine_lock:
        # Threads do not survive a fork: a process forked from one with an engine starts its own.
        if _engine is None or _engine_pid != os.getpid():
            _engine_pid = os.getpid()
            from .claims import lease_seconds, renew_claims

            _engine = Engine(threads=settings.LINEBOT["ENGINE_THREADS"],
                             renew=lambda claims: renew_claims(claims=claims),
                             heartbeat_every=lease_seconds() / 3)
            # A django-q2 worker that stops or is recycled exits through multiprocessing's
            # finalizers (not atexit): finish what is in flight first.
            multiprocessing_util.Finalize(None, _drain_at_exit, exitpriority=10)
        return _engine


def _drain_at_exit() -> None:
    if _engine is not None and not _engine.drain(timeout=settings.LINEBOT["ENGINE_DRAIN_SECONDS"]):
        logger.warning("Stopped with answers in flight; the sweeper gives them back when their leases end.")
