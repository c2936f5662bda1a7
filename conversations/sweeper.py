"""Sweeping up after lost tasks and dead workers, and the periodic jobs that do it."""
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Min
from django.utils import timezone
from django_q.models import Schedule

from models_registry import concurrency

from . import claims, notices
from .models import Chat, Direction, Message, Status
from .queue import PURGE_TASK, SWEEP_TASK, enqueue_reply

logger = logging.getLogger(__name__)


@dataclass
class SweepResult:
    requeued: int
    failed: int


def sweep_stuck_messages(*, now: datetime | None = None, limit: int = 1000) -> SweepResult:
    """Gives back what dead workers held and queues again what lost tasks left pending.

    Every UPDATE repeats the condition its rows were read under, so a message a worker claims
    between the read and the write is left alone (and not claimed a second time).
    """
    now = now or timezone.now()
    failed = _give_back_lost_turns(now=now)
    stuck = Message.objects.filter(
        direction=Direction.IN, status=Status.PENDING,
        status_changed_at__lt=now - timedelta(seconds=settings.LINEBOT["PENDING_STUCK_AFTER"]),
    )
    failed += _fail_out_of_attempts(stuck, now=now)
    ids = list(stuck.values_list("id", flat=True)[:limit])
    # Stamped, so the next sweep leaves them for a while; one task per chat answers them all.
    Message.objects.filter(id__in=ids, status=Status.PENDING, status_changed_at__lt=now).update(status_changed_at=now)
    queued_chats = _queue_chats(Message.objects.filter(id__in=ids, status=Status.PENDING, status_changed_at=now))
    queued_chats += _wake_waiting_chats(now=now)
    concurrency.delete_expired_slots(now=now)
    if queued_chats or failed:
        logger.warning("Sweeper: queued %d chats with stuck messages again, failed %d", queued_chats, failed)
    notices.expire_stale_notices(now=now)
    return SweepResult(requeued=queued_chats, failed=failed)


def _give_back_lost_turns(*, now: datetime) -> int:
    """Messages a worker was answering when its claim ran out (it died): pending again, or
    failed when out of attempts. Returns how many failed."""
    grace = now - timedelta(seconds=claims.lease_seconds())
    lost = Message.objects.filter(direction=Direction.IN, status=Status.GENERATING, status_changed_at__lt=grace)
    lost_ids = list(lost.filter(claims.expired_claims(now=now)).values_list("id", flat=True)[:10_000])
    if not lost_ids:
        return 0
    # The chats' claims are read again inside each UPDATE (a subquery), with the status.
    unclaimed = Message.objects.filter(id__in=lost_ids).filter(claims.expired_claims(now=now)).values("id")
    again = Message.objects.filter(id__in=unclaimed, status=Status.GENERATING, status_changed_at__lt=grace)
    failed = _fail_out_of_attempts(again, now=now)
    again.update(status=Status.PENDING, status_changed_at=now - timedelta(
        seconds=settings.LINEBOT["PENDING_STUCK_AFTER"] + 1))
    return failed


def _fail_out_of_attempts(messages, *, now: datetime) -> int:
    return messages.filter(attempts__gte=settings.LINEBOT["MAX_ATTEMPTS"]).update(
        status=Status.FAILED,
        status_changed_at=now,
        error=f"Gave up after {settings.LINEBOT['MAX_ATTEMPTS']} attempts.",
    )


def _queue_chats(messages) -> int:
    """One task per chat, naming its oldest pending message."""
    firsts = messages.values("chat_id").annotate(first=Min("id")).values_list("first", flat=True)
    count = 0
    for message_id in firsts:
        enqueue_reply(message_id=message_id)
        count += 1
    return count


def _wake_waiting_chats(*, now: datetime) -> int:
    """Chats waiting for a backend slot whose wake-up was lost (their worker died): queued
    again while the backend has room. A chat still without room just waits on."""
    waiting = (Chat.objects.filter(waiting_for__isnull=False,
                                   waiting_since__lt=now - timedelta(seconds=claims.lease_seconds()))
               .order_by("waiting_since").values_list("id", "waiting_for_id")[:100])
    queued = 0
    for chat_id, backend_id in waiting:
        if not concurrency.has_free_slot(backend_id=backend_id, now=now):
            continue
        first = claims.first_pending_message(chat_id=chat_id)
        if first is not None:
            enqueue_reply(message_id=first, chat_id=chat_id)
            queued += 1
    return queued


def ensure_schedules() -> None:
    """The periodic jobs, created once; an operator may retime them in the admin."""
    Schedule.objects.get_or_create(
        name="Sweep stuck messages",
        defaults={
            "func": SWEEP_TASK,
            "schedule_type": Schedule.MINUTES,
            "minutes": 1,
            "repeats": -1,
        },
    )
    Schedule.objects.get_or_create(
        name="Purge expired messages",
        defaults={
            "func": PURGE_TASK,
            "schedule_type": Schedule.DAILY,
            "repeats": -1,
        },
    )
