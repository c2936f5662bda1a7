"""Redaction: the text goes, who/when/why and a keyed hash of the original stay."""

from django.db import transaction
from django.utils import timezone

from core import audit
from core.models import AuditAction
from core.sqlite_writes import checkpoint_wal

from .models import Message

REDACTED_TEXT = "[redacted]"


def redact_messages(*, message_ids: list[int], actor, reason: str) -> int:
    """Replaces each message's text with a marker; returns how many were redacted now."""
    if not reason.strip():
        raise ValueError("A reason is required to redact.")
    redacted = 0
    with transaction.atomic():
        rows = (
            Message.objects.select_for_update()
            .filter(pk__in=message_ids, redacted=False)
            .only("id", "text", "chat_id")
            .order_by("id")
        )
        now = timezone.now()
        by = actor if isinstance(actor, str) else actor.get_username()
        for message in rows:
            digest = audit.keyed_hash(message.text)
            Message.objects.filter(pk=message.pk).update(
                # The mention spans go too: they would still say whom the text named.
                text=REDACTED_TEXT, mentions=[], redacted=True, redacted_at=now, redacted_by=by[:150],
                redaction_reason=reason[:500], original_hmac=digest,
            )
            audit.record(
                action=AuditAction.REDACT, actor=actor, target_type="message", target_id=message.pk,
                details={"chat_id": message.chat_id, "reason": reason, "original_hmac": digest},
            )
            redacted += 1
    if redacted:
        checkpoint_wal()
    return redacted

