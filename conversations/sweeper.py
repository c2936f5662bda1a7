"""Sweeping up after lost tasks and dead workers, and the periodic jobs that do it."""
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone
from django_q.models import Schedule

from . import notices
from .models import Direction, Message, Status
from .queue import PURGE_TASK, SWEEP_TASK, enqueue_reply

logger = logging.getLogger(__name__)


@dataclass
class SweepResult:
    requeued: int
    failed: int


def sweep_stuck_messages(*, now: datetime | None = None, limit: int = 1000) -> SweepResult:
    """Queues again what a lost task or a dead worker left pending or generating."""
    now = now or timezone.now()
    stuck = Message.objects.filter(direction=Direction.IN).filter(
        Q(status=Status.PENDING, status_changed_at__lt=now - timedelta(seconds=settings.LINEBOT["PENDING_STUCK_AFTER"]))
        | Q(
            status=Status.GENERATING,
            status_changed_at__lt=now - timedelta(seconds=settings.LINEBOT["GENERATING_STUCK_AFTER"]),
        )
    )
    failed = stuck.filter(attempts__gte=settings.LINEBOT["MAX_ATTEMPTS"]).update(
        status=Status.FAILED,
        status_changed_at=now,
        error=f"Gave up after {settings.LINEBOT['MAX_ATTEMPTS']} attempts.",
    )
    ids = list(stuck.values_list("id", flat=True)[:limit])
    Message.objects.filter(id__in=ids).update(status=Status.PENDING, status_changed_at=now)
    for message_id in ids:
        enqueue_reply(message_id=message_id)
    if ids or failed:
        logger.warning("Sweeper: queued %d stuck messages again, failed %d", len(ids), failed)
    notices.expire_stale_notices(now=now)
    return SweepResult(requeued=len(ids), failed=failed)


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
