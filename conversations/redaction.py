"""Redaction: the text goes, who/when/why and a keyed hash of the original stay."""
import re
from difflib import SequenceMatcher

from django.db import transaction
from django.utils import timezone

from core import audit
from core.models import AuditAction
from core.sqlite_writes import checkpoint_wal

from .media.files import redact_media
from .models import Direction, Message
from .pii import find_pii

REDACTED_TEXT = "[redacted]"
# A run of this many characters shared by a question and its answer counts as repeated
# text: names, addresses and numbers that no PII matcher knows.
SHARED_RUN = 6
_NOT_ALPHANUMERIC = re.compile(r"[\W_]+")


def redact_messages(*, message_ids: list[int], actor, reason: str) -> int:
    """Replaces each message's text with a marker; returns how many were redacted now."""
    if not reason.strip():
        raise ValueError("A reason is required to redact.")
    redacted_ids = []
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
                text=REDACTED_TEXT, mentions=[], media_source={}, redacted=True, redacted_at=now, redacted_by=by[:150],
                redaction_reason=reason[:500], original_hmac=digest,
            )
            audit.record(
                action=AuditAction.REDACT, actor=actor, target_type="message", target_id=message.pk,
                details={"chat_id": message.chat_id, "reason": reason, "original_hmac": digest},
            )
            redacted_ids.append(message.pk)
        # The photo or voice message goes with the text; its row stays, marked redacted.
        redact_media(message_ids=redacted_ids)
    if redacted_ids:
        checkpoint_wal()
    return len(redacted_ids)



def answer_to_redact(*, message: Message) -> Message | None:
    """The bot's answer to an inbound message, unless already redacted (or there is none)."""
    if message.direction != Direction.IN:
        return None
    return Message.objects.filter(reply_to=message, direction=Direction.OUT, redacted=False).first()


def answer_repeats(*, question: str, answer: str) -> bool:
    """Whether an answer repeats text of its question: a piece of personal data of the
    question (written alike or not: 0912-345-678 and 0912345678), or SHARED_RUN characters."""
    if not question or not answer:
        return False
    flat_answer = _flat(answer)
    if any(_flat(match.value) in flat_answer for match in find_pii(question)):
        return True
    run = SequenceMatcher(None, question, answer, autojunk=False).find_longest_match(
        0, len(question), 0, len(answer))
    return run.size >= SHARED_RUN


def _flat(text: str) -> str:
    return _NOT_ALPHANUMERIC.sub("", text).casefold()
