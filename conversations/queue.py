"""Putting work on django-q2's queue, cheaply, and again once a broker that refused it is back.

`enqueue` writes the package django-q2's `async_task` would (same dict, signed and pickled
the same way, so an unmodified cluster runs it), without the per-call work the webhook
cannot afford: a fresh signer, the humanhash name's string juggling, and for the ORM
broker an ORM `create()` of the queue row.

A broker that refuses a task after the webhook's transaction committed (Redis down) must
not lose it nor fail the webhook, which LINE would then redeliver to a duplicate check.
The task is held in this process and pushed again, in order, as soon as the broker takes
it (a background thread tries every HOLD_RETRY_SECONDS); meanwhile further tasks join the
hold instead of each webhook waiting on a dead broker. A held reply is also marked in the
database (its `pending` status dated back past LINEBOT_PENDING_STUCK_AFTER) so the next
sweep queues it again if this process dies first.
"""
import logging
import os
import threading
import time
import uuid
from collections import deque
from datetime import timedelta
from functools import lru_cache

from django.conf import settings
from django.core import signing
from django.db import transaction
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.brokers.orm import ORM
from django_q.conf import Conf
from django_q.humanhash import DEFAULT_WORDLIST
from django_q.models import OrmQ
from django_q.signals import pre_enqueue
from django_q.signing import PickleSerializer
from django_q.tasks import async_task

from core.inserts import insert_row

from .models import Message, Status

logger = logging.getLogger(__name__)

# Every task's dotted path, here and nowhere else.
REPLY_TASK = "conversations.tasks.answer_message"
PROFILE_TASK = "conversations.tasks.refresh_chat_profile"
MEMBER_TASK = "conversations.tasks.refresh_member_profile"
SWEEP_TASK = "conversations.tasks.sweep_stuck_messages"
PURGE_TASK = "conversations.tasks.purge_expired"
NOTICE_TASK = "conversations.tasks.send_notice"
COMPARE_TASK = "conversations.tasks.compare_presets"

# How often a process holding refused tasks offers them to the broker again: the bound on
# how late they reach it after it is back.
HOLD_RETRY_SECONDS = 1.0
# Beyond this many held tasks the oldest are dropped (logged); held replies are still
# marked for the sweeper, so they are late, not lost.
HOLD_LIMIT = 10_000


@lru_cache(maxsize=1)
def broker():
    """One broker (and for Redis one connection pool) per process, not per task."""
    return get_broker()


def enqueue(func: str, *args) -> None:
    if Conf.SYNC:
        # Runs the task here and now (tests): django-q2's own path.
        async_task(func, *args, broker=broker())
        return
    package = task_package(func, args)
    queue = broker()
    if isinstance(queue, ORM):
        insert_row(OrmQ, values={"key": queue.list_key or Conf.CLUSTER_NAME, "payload": package,
                                 "lock": timezone.now()}, using=Conf.ORM)
    else:
        queue.enqueue(package)


def enqueue_reply(*, message_id: int, chat_id: int | None = None) -> None:
    """Queues a reply task now (from a worker or the sweeper); held if the broker refuses it.
    With `chat_id` (the message's), the task need not look it up."""
    args = (message_id,) if chat_id is None else (message_id, chat_id)
    if Conf.SYNC:
        enqueue(REPLY_TASK, *args)
    else:
        _enqueue_or_hold(REPLY_TASK, args)


def enqueue_after_commit(func: str, *args) -> None:
    """Queues a task that must not run before the current transaction commits.

    With django-q2's ORM broker the queue is a table in the same database, so the task is
    written inside the transaction instead: one commit, and the message and its task are
    stored together or not at all. (Sync mode, used by the tests, runs tasks at once, so
    it waits for the commit like Redis does.) Another broker gets it after the commit, and
    holds it if it refuses (see the module's docstring).
    """
    if isinstance(broker(), ORM) and not Conf.SYNC:
        enqueue(func, *args)
    elif Conf.SYNC:
        transaction.on_commit(lambda: enqueue(func, *args), robust=True)
    else:
        transaction.on_commit(lambda: _enqueue_or_hold(func, args), robust=True)


def task_package(func: str, args: tuple) -> str:
    """What `async_task(func, *args)` puts on the broker, as django-q2's cluster reads it."""
    task_id = uuid.uuid4()
    task = {"id": task_id.hex, "name": _human_name(task_id.bytes), "func": func, "args": args, "kwargs": {},
            "started": timezone.now()}
    if Conf.CACHED:
        task["cached"] = Conf.CACHED
    if Conf.ACK_FAILURES:
        task["ack_failure"] = Conf.ACK_FAILURES
    pre_enqueue.send(sender="django_q", task=task)
    return _signer(Conf.SECRET_KEY, Conf.PREFIX).sign_object(
        task, serializer=PickleSerializer, compress=Conf.COMPRESSED)


def _human_name(digest: bytes) -> str:
    # django-q2's humanhash of the id: each quarter of its bytes XORed into one word.
    words = []
    for start in range(0, 16, 4):
        a, b, c, d = digest[start:start + 4]
        words.append(DEFAULT_WORDLIST[a ^ b ^ c ^ d])
    return "-".join(words)


@lru_cache(maxsize=4)
def _signer(key: str, salt: str) -> signing.TimestampSigner:
    # django-q2's SignedPackage.dumps signs with this signer, made anew on every call.
    return signing.TimestampSigner(key=key, salt=salt)


# --- tasks the broker refused -----------------------------------------------------------

_held: deque[tuple[str, tuple]] = deque()
_held_lock = threading.Lock()
_retrying: list[threading.Thread] = []


def held_tasks() -> int:
    """Tasks this process holds for a broker that refused them."""
    return len(_held)


def forget_held() -> int:
    """Drops the held tasks and waits for the retry thread to end; returns how many it dropped.

    For tests: a task held past its test's end would be offered to whatever broker the next
    test has (on CI's Redis stack, the queue all tests share). The thread may be offering one
    right now: once it has ended, nothing of this test reaches a broker any more.
    """
    with _held_lock:
        dropped = len(_held)
        _held.clear()
        threads = list(_retrying)
    for thread in threads:
        # One retry pause, and an offer in flight (a refused connection fails in milliseconds).
        thread.join(timeout=HOLD_RETRY_SECONDS + 5)
    return dropped


def _enqueue_or_hold(func: str, args: tuple) -> None:
    if not _held:
        try:
            enqueue(func, *args)
            return
        except Exception as exc:  # each broker's client raises its own errors
            # The type only: a client's message may quote its URL, credentials included.
            logger.warning("The task queue refused a task (%s); holding it and offering it again every %s s",
                           type(exc).__name__, HOLD_RETRY_SECONDS)
    # While tasks are held the broker is down: later ones queue behind them, and no webhook
    # waits on it.
    with _held_lock:
        if len(_held) >= HOLD_LIMIT:
            dropped, _ = _held.popleft()
            logger.error("More than %d tasks held for the task queue; dropped the oldest (%s)", HOLD_LIMIT, dropped)
        _held.append((func, args))
        if not _retrying:
            thread = threading.Thread(target=_offer_held, name="enqueue-retry", daemon=True)
            _retrying.append(thread)
            thread.start()
    if func == REPLY_TASK:
        _mark_for_sweeper(message_id=args[0])


def _mark_for_sweeper(*, message_id: int) -> None:
    """Dates the pending message back past the sweeper's pending deadline, so the next sweep
    queues it again even if this process dies holding its task."""
    overdue = timezone.now() - timedelta(seconds=settings.LINEBOT["PENDING_STUCK_AFTER"] + 1)
    try:
        # Not under one_writer_at_a_time: this runs as the webhook's transaction commits,
        # inside its turn at the lock; SQLite's busy timeout covers the rare other writer.
        Message.objects.filter(pk=message_id, status=Status.PENDING).update(status_changed_at=overdue)
    except Exception:
        logger.exception("Could not mark message %s for the sweeper; it is retried after the usual deadline",
                         message_id)


def _offer_held() -> None:
    """The retry thread: offers the held tasks to the broker, oldest first, until it took all."""
    while True:
        time.sleep(HOLD_RETRY_SECONDS)
        while True:
            with _held_lock:
                if not _held:
                    _retrying.clear()
                    logger.warning("The task queue took the held tasks")
                    return
                oldest = _held[0]
            try:
                enqueue(oldest[0], *oldest[1])
            except Exception:
                break  # still down: wait and offer again
            with _held_lock:
                if _held and _held[0] is oldest:
                    _held.popleft()


def _forget_held_in_child() -> None:
    # A forked child did not take over its parent's thread; its copy of the held tasks is
    # its parent's to push.
    global _held_lock
    _held.clear()
    _retrying.clear()
    _held_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_held_in_child)
