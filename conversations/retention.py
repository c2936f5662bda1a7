"""Retention: delete what policy no longer allows keeping, in small committed batches."""
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import Exists, Min, OuterRef
from django.utils import timezone

from core import audit
from core.batching import run_in_batches
from core.models import AuditAction
from core.sqlite_writes import checkpoint_wal

from . import selectors
from .media.files import forget_media, sweep_orphans
from .models import Chat, ChatMember, Message
from .simulator.emulator import forget_expired_content

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 2000
# A change to these settings (of a chat or of the privacy policy) is audited as a retention change.
RETENTION_FIELD_ACTIONS = {"retention_days": AuditAction.RETENTION_CHANGE, "legal_hold": AuditAction.RETENTION_CHANGE}


@dataclass
class ChatPurge:
    chat_id: int
    chat: str
    retention_days: int
    cutoff: datetime
    messages: int


@dataclass
class PurgeReport:
    dry_run: bool
    chats: list[ChatPurge] = field(default_factory=list)
    orphan_files: int = 0  # media files no message held any more, deleted by the sweep

    @property
    def messages(self) -> int:
        return sum(chat.messages for chat in self.chats)


def effective_retention_days(*, chat: Chat, default_days: int | None) -> int | None:
    """Days this chat's messages are kept; None while on legal hold or when policy keeps all."""
    if chat.legal_hold:
        return None
    return chat.retention_days if chat.retention_days is not None else default_days


def oldest_kept(*, chat: Chat) -> datetime | None:
    return Message.objects.filter(chat=chat).aggregate(oldest=Min("event_at"))["oldest"]


def purge_expired(
    *,
    now: datetime | None = None,
    dry_run: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    actor=None,
    on_batch: Callable[[int], None] | None = None,
) -> PurgeReport:
    """Deletes messages older than their chat's retention, chat by chat, batch by batch.

    Each batch is one transaction (`core.batching.run_in_batches`), so an interrupted run
    leaves whole batches deleted and the rest untouched. `on_batch(n)` is called inside each
    batch's transaction with the number it deleted.
    """
    now = now or timezone.now()
    default_days = selectors.privacy_policy().retention_days
    report = PurgeReport(dry_run=dry_run)
    chats = Chat.objects.filter(legal_hold=False).only("id", "display_name", "source_type", "line_id", "retention_days", "legal_hold")
    if default_days is None:
        chats = chats.filter(retention_days__isnull=False)
    for chat in chats.order_by("id").iterator():
        days = effective_retention_days(chat=chat, default_days=default_days)
        cutoff = now - timedelta(days=days)
        expired = Message.objects.filter(chat_id=chat.pk, event_at__lt=cutoff)
        # Oldest first, in the (chat, event_at) index's own order: no sort; what a batch
        # deletes is gone from the next one's range.
        count = expired.count() if dry_run else run_in_batches(
            rows=expired.order_by("event_at"), batch_size=batch_size, apply=delete_messages, on_batch=on_batch)
        if count:
            if not dry_run:
                forget_silent_members(chat_id=chat.pk)
            report.chats.append(ChatPurge(chat.pk, str(chat), days, cutoff, count))
            logger.info("Retention: %s %d messages of chat %s (older than %d days)",
                        "would delete" if dry_run else "deleted", count, chat.pk, days)
    audit.record(
        action=AuditAction.PURGE, actor=actor, target_type="messages",
        details={
            "dry_run": dry_run,
            "messages": report.messages,
            "chats": {str(c.chat_id): c.messages for c in report.chats},
            "default_retention_days": default_days,
        },
    )
    if not dry_run:
        # The simulator's uploads last as long as LINE would keep them.
        forget_expired_content(now=now)
        # Files whose deletion failed before, or that a killed download left behind.
        report.orphan_files = sweep_orphans()
    if report.messages and not dry_run:
        checkpoint_wal()
    return report


def forget_silent_members(*, chat_id: int) -> int:
    """Forgets the members (and their names) of whom no message is left in the chat: a name
    is kept only as long as something they said. One index lookup per member."""
    said_something = Message.objects.filter(chat_id=chat_id, line_user_id=OuterRef("line_user_id"))
    silent = ChatMember.objects.filter(chat_id=chat_id).exclude(Exists(said_something))
    return silent.delete()[0]


def delete_messages(ids: list[int]) -> None:
    """Deletes by id without Django's collector, which would load every row first.

    Answers to these messages lose their link and expire on their own; Message has no
    delete signals, so nothing else is skipped. Their media files go once this commits.
    """
    forget_media(message_ids=ids)
    Message.objects.filter(reply_to_id__in=ids).update(reply_to=None)
    Message.objects.filter(id__in=ids)._raw_delete(Message.objects.db)
