"""Putting work on django-q2's queue."""
from functools import lru_cache

from django.db import transaction
from django_q.brokers import get_broker
from django_q.brokers.orm import ORM
from django_q.conf import Conf
from django_q.tasks import async_task

# Every task's dotted path, here and nowhere else.
REPLY_TASK = "conversations.tasks.answer_message"
PROFILE_TASK = "conversations.tasks.refresh_chat_profile"
MEMBER_TASK = "conversations.tasks.refresh_member_profile"
SWEEP_TASK = "conversations.tasks.sweep_stuck_messages"
PURGE_TASK = "conversations.tasks.purge_expired"
NOTICE_TASK = "conversations.tasks.send_notice"
COMPARE_TASK = "conversations.tasks.compare_presets"


@lru_cache(maxsize=1)
def broker():
    """One broker (and for Redis one connection pool) per process, not per task."""
    return get_broker()


def enqueue(func: str, *args) -> None:
    async_task(func, *args, broker=broker())


def enqueue_reply(*, message_id: int) -> None:
    enqueue(REPLY_TASK, message_id)


def enqueue_after_commit(func: str, *args) -> None:
    """Queues a task that must not run before the current transaction commits.

    With django-q2's ORM broker the queue is a table in the same database, so the task is
    written inside the transaction instead: one commit, and the message and its task are
    stored together or not at all. (Sync mode, used by the tests, runs tasks at once, so
    it waits for the commit like Redis does.)
    """
    if isinstance(broker(), ORM) and not Conf.SYNC:
        enqueue(func, *args)
    else:
        transaction.on_commit(lambda: enqueue(func, *args), robust=True)
