"""Many answers in flight per worker process: a bounded pool of answering threads.

A django-q2 worker hands each chat to a thread here and goes back to the queue: the thread
claims the chat's turn and answers it, so the worker's one task thread only passes work on,
and how many answers are generated at once is set by the backends' slots
(`models_registry.concurrency`), not by the number of processes. The pool is bounded: when
every thread is busy the task waits for one, so further work stays in the queue. Durability
stays in the database: a turn's claim has a lease this module's heartbeat renews (`holding`);
if the process dies the leases expire, and a chat handed on but not yet claimed keeps its
messages pending: either way the sweeper gives them back.

Threads start as work needs them, but only while fewer than `RUNNING_THREADS` of them have
Python to run: one that waits on a model or on LINE (`waiting`) makes room for another.

With django-q2 in sync mode (the tests) or `LINEBOT_ENGINE_THREADS=0`, turns run inline.
"""
import ctypes
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing import util as multiprocessing_util

from django.conf import settings
from django.db import close_old_connections, connections
from django_q.conf import Conf

logger = logging.getLogger(__name__)

# A task that finds every thread busy gives up after this long and leaves its message to the
# sweeper, well inside django-q2's task timeout (which would kill the whole process).
SEAT_WAIT_SECONDS = 60.0
# A thread idle this long lets go of its SQLite connection (each holds its own page cache,
# megabytes per thread); a busy one keeps it, as opening one costs a schema parse.
IDLE_SECONDS = 2.0
# One process runs Python on one core (the GIL). With a fast model, 32 threads spent a quarter
# of the worker's CPU switching among themselves: bench/overhead.py drained 20 answers/s with
# 32 threads, 26/s with 4. A thread waiting on the network does not count.
RUNNING_THREADS = 4


class Engine:
    def __init__(self, *, threads: int, renew: Callable[[list[str]], None], heartbeat_every: float,
                 running: int = RUNNING_THREADS) -> None:
        self.threads = threads
        self.running = running
        self._seats = threading.BoundedSemaphore(threads)
        self._on_network = 0  # threads inside `waiting`
        self._work: queue.SimpleQueue = queue.SimpleQueue()
        self._workers: list[threading.Thread] = []
        self._waiting_workers = 0
        self._queued = 0  # handed over, not yet taken up by a thread
        self._held: set[str] = set()
        self._running = 0
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

    def _start(self, work: Callable[[], None], claim: str | None) -> None:
        with self._lock:
            self._running += 1
            self._queued += 1
            self._add_thread_if_needed()
        self._work.put((work, claim))

    def _add_thread_if_needed(self) -> None:
        # Called with the lock held. Up to one thread per seat, and only while fewer than
        # `running` have Python to run.
        if (self._waiting_workers < self._queued and len(self._workers) < self.threads
                and len(self._workers) - self._on_network < self.running):
            worker = threading.Thread(target=self._serve, name=f"answer-{len(self._workers)}", daemon=True)
            self._workers.append(worker)
            worker.start()

    def _serve(self) -> None:
        holds_connections = False
        while True:
            with self._lock:
                self._waiting_workers += 1
            try:
                item = self._work.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                if holds_connections:
                    _let_go_of_connections()
                    _give_memory_back()
                    holds_connections = False
                continue
            finally:
                with self._lock:
                    self._waiting_workers -= 1
            if item is None:
                _let_go_of_connections()
                return
            with self._lock:
                self._queued -= 1
            self._run(*item)
            holds_connections = True

    def _run(self, work: Callable[[], None], claim: str | None) -> None:
        close_old_connections()
        _current.engine = self
        try:
            if claim is None:
                work()
            else:
                with self.holding(claim):
                    work()
        except Exception:
            logger.exception("An answering thread's work failed")
        finally:
            _current.engine = None
            close_old_connections()
            with self._lock:
                self._running -= 1
                self._idle.notify_all()
            self._seats.release()

    @contextmanager
    def waiting(self) -> Iterator[None]:
        """Makes room for another thread while this one waits on the network."""
        with self._lock:
            self._on_network += 1
            self._add_thread_if_needed()
        try:
            yield
        finally:
            with self._lock:
                self._on_network -= 1

    @contextmanager
    def holding(self, claim: str) -> Iterator[None]:
        """Keeps the claim's lease renewed by the heartbeat while the block runs."""
        with self._lock:
            self._held.add(claim)
        try:
            yield
        finally:
            with self._lock:
                self._held.discard(claim)

    @property
    def in_flight(self) -> int:
        """Work handed to the threads and not finished yet."""
        with self._lock:
            return self._running

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
        """Waits for the work in flight to finish (a worker stopping or recycled); True if it did."""
        with self._lock:
            finished = self._idle.wait_for(lambda: not self._running, timeout=timeout)
            workers = list(self._workers)
        self._stopping.set()
        for _ in workers:
            self._work.put(None)
        if finished:
            for worker in workers:
                worker.join()
        return finished


def _let_go_of_connections() -> None:
    """An idle answering thread keeps no SQLite connection (each holds its own page cache).
    A PostgreSQL connection is kept (reconnecting costs milliseconds) until CONN_MAX_AGE."""
    for connection in connections.all(initialized_only=True):
        if connection.vendor == "sqlite":
            connection.close()
    close_old_connections()


def _give_memory_back() -> None:
    """Returns the memory freed with a closed connection's page cache to the system: glibc keeps
    it in the thread's arena otherwise, and an idle worker would stay as big as its busiest
    moment."""
    if _malloc_trim is not None:
        _malloc_trim(0)


def _find_malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc only
    except (AttributeError, OSError):
        return None


_malloc_trim = _find_malloc_trim()


class Seat:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.started = False

    def run(self, work: Callable[[], None], *, claim: str | None = None) -> None:
        """Runs `work` in the reserved thread; a `claim` already taken is kept renewed meanwhile."""
        self.started = True
        self._engine._start(work, claim)


_engine: Engine | None = None
_engine_pid = 0
_engine_lock = threading.Lock()


class _Current(threading.local):
    engine: Engine | None = None  # the engine whose thread this is
    waits = 0  # how deep in `waiting` it is


_current = _Current()


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
    def run(self, work: Callable[[], None], *, claim: str | None = None) -> None:
        work()


@contextmanager
def holding(claim: str) -> Iterator[None]:
    """In an answering thread, keeps the claim's lease renewed while the block runs (inline,
    nothing renews it: a turn run inline ends within its lease or is given back)."""
    current = _current.engine
    if current is None:
        yield
        return
    with current.holding(claim):
        yield


@contextmanager
def waiting() -> Iterator[None]:
    """Around a call that waits on the network (a model's answer, LINE): in an answering thread,
    another thread runs meanwhile."""
    current = _current.engine
    if current is None or _current.waits:
        yield  # outside the pool, or counted already
        return
    _current.waits += 1
    try:
        with current.waiting():
            yield
    finally:
        _current.waits -= 1


def sleep(seconds: float) -> None:
    """`time.sleep` as a wait (before a retry, say): another answering thread runs meanwhile."""
    with waiting():
        time.sleep(seconds)


def in_background(work: Callable[[], None]) -> bool:
    """Runs `work` (a short call to LINE, say) in an answering thread, waiting for one if all are
    busy; False if none freed up in time."""
    with seat() as reserved:
        if reserved is None:
            return False
        reserved.run(work)
    return True


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
