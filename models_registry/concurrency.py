"""How many answers each backend generates at once: leased slots, counted across all workers.

A worker takes a slot before it asks a backend for an answer and gives it back after; the
lease is renewed while it works, so a worker that dies frees its slots when they expire.
"""
from collections.abc import Iterable
from datetime import datetime

from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from .models import GenerationSlot, ModelBackend


def take_slot(*, backend: ModelBackend, holder: str, until: datetime, now: datetime) -> bool:
    """Takes one of the backend's slots for `holder` if one is free; False if all are taken.

    Call it inside a transaction: the backend's row stays locked until it commits, so two
    workers cannot both take the last slot (SQLite, whose transactions take the write lock
    when they begin, needs no row lock).
    """
    locked = ModelBackend.objects.select_for_update().only("id", "kind", "max_concurrency").get(pk=backend.pk)
    live = GenerationSlot.objects.filter(backend=locked, expires_at__gt=now).count()
    if live >= locked.concurrency_limit:
        return False
    # Holders are fresh random tokens; expired slots are only skipped here (the sweeper deletes them).
    GenerationSlot.objects.create(backend=locked, holder=holder, expires_at=until)
    return True


def move_slot(*, holder: str, backend: ModelBackend) -> None:
    """The holder now generates on another backend (the preset's fallback): it is counted there.

    Not limited: the answer is already under way, and waiting now would hold the chat.
    """
    GenerationSlot.objects.filter(holder=holder).update(backend=backend)


def renew_slots(*, holders: Iterable[str], until: datetime) -> None:
    holders = list(holders)
    if holders:
        GenerationSlot.objects.filter(holder__in=holders).update(expires_at=until)


def release_slot(*, holder: str) -> bool:
    """Frees the holder's slot; False if it held none (already freed, or expired and swept)."""
    return GenerationSlot.objects.filter(holder=holder).delete()[0] > 0


def delete_expired_slots(*, now: datetime) -> int:
    return GenerationSlot.objects.filter(expires_at__lte=now).delete()[0]


def in_flight(*, now: datetime | None = None) -> dict[int, int]:
    """Answers being generated now, by backend id (the console's "in flight")."""
    now = now or timezone.now()
    rows = (GenerationSlot.objects.filter(expires_at__gt=now).values("backend_id")
            .annotate(count=Count("id")).values_list("backend_id", "count"))
    return dict(rows)


def with_in_flight(backends: QuerySet[ModelBackend]) -> QuerySet[ModelBackend]:
    """The backends, each with `in_flight`: how many answers it is generating now."""
    return backends.annotate(in_flight=Count("slots", filter=Q(slots__expires_at__gt=timezone.now())))


def has_free_slot(*, backend_id: int, now: datetime | None = None) -> bool:
    now = now or timezone.now()
    backend = ModelBackend.objects.only("kind", "max_concurrency").filter(pk=backend_id).first()
    if backend is None:
        return False
    return GenerationSlot.objects.filter(backend_id=backend_id, expires_at__gt=now).count() < backend.concurrency_limit
