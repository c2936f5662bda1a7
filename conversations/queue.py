"""Putting work on django-q2's queue."""
from functools import lru_cache

from django_q.brokers import get_broker
from django_q.tasks import async_task

REPLY_TASK = "conversations.tasks.answer_message"
PROFILE_TASK = "conversations.tasks.refresh_chat_profile"


@lru_cache(maxsize=1)
def broker():
    """One broker (and for Redis one connection pool) per process, not per task."""
    return get_broker()


def enqueue(func: str, *args) -> None:
    async_task(func, *args, broker=broker())


def enqueue_reply(*, message_id: int) -> None:
    enqueue(REPLY_TASK, message_id)
