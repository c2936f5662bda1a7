"""Writes about chats that the admin and the API share."""
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from core import audit
from core.models import AuditAction
from models_registry.models import SamplingPreset
from models_registry.services import allowed_backends

from . import queue
from .models import Message, Status
from .retention import RETENTION_FIELD_ACTIONS


def local_only_problem(*, preset: SamplingPreset | None, local_only: bool) -> str:
    """Why `preset` cannot serve a local-only chat, or "" when it can."""
    if not local_only or preset is None:
        return ""
    if not allowed_backends(preset=preset, local_only=True):
        return _("This chat is local-only, so only local backends may answer it, and preset "
                 "“%(preset)s” has none (its backends run in the cloud or are disabled).") % {"preset": preset.name}
    return ""


def update_chats(*, chats, actor, **values) -> int:
    """Sets the same values (preset, reply mode, local-only, ...) on several chats, audited."""
    updated = 0
    with transaction.atomic():
        for chat in chats:
            before = audit.snapshot(chat)
            for name, value in values.items():
                setattr(chat, name, value)
            problem = local_only_problem(preset=chat.preset, local_only=chat.local_only)
            if problem:
                raise ValidationError(problem)
            audit.save_with_audit(instance=chat, actor=actor, before=before, action=AuditAction.CHAT_CHANGE,
                                  field_actions=RETENTION_FIELD_ACTIONS)
            updated += 1
    return updated


def retry_messages(*, message_ids: list[int], actor) -> int:
    """Queues failed inbound messages again from a fresh start.

    An apology already sent stays in the log, unlinked, so the new answer can take its place.
    """
    retried = []
    with transaction.atomic():
        failed = Message.objects.filter(pk__in=message_ids, direction="in", status=Status.FAILED)
        ids = list(failed.values_list("id", flat=True))
        old_answers = Message.objects.filter(reply_to_id__in=ids, direction="out")
        old_answers.filter(delivered_calls=0).delete()
        old_answers.update(reply_to=None)
        failed.update(status=Status.PENDING, attempts=0, error="", status_changed_at=timezone.now())
        for message_id in ids:
            audit.record(action=AuditAction.RETRY, actor=actor, target_type="message", target_id=message_id)
            retried.append(message_id)
        transaction.on_commit(lambda: [queue.enqueue_reply(message_id=i) for i in retried], robust=True)
    return len(retried)
