"""Writes about chats (and the channels they belong to) that the admin and the API share."""
from collections.abc import Iterable

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from core import audit
from core.models import AuditAction
from core.sqlite_writes import checkpoint_wal
from models_registry.models import SamplingPreset
from models_registry.services import allowed_backends

from . import queue
from .models import Chat, LineChannel, Message, Status
from .retention import DEFAULT_BATCH_SIZE, RETENTION_FIELD_ACTIONS, delete_messages


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
        for message_id in retried:
            queue.enqueue_after_commit(queue.REPLY_TASK, message_id)
    return len(retried)


def legal_hold_problem(*, chats: Iterable[Chat]) -> str:
    """Why these chats cannot be deleted, or "" when they can: some are under legal hold."""
    held = [f"“{chat}”" for chat in chats if chat.legal_hold]
    if not held:
        return ""
    return ngettext("%(chats)s is under legal hold; lift the hold to delete it.",
                    "%(chats)s are under legal hold; lift the hold to delete them.", len(held)) % {
        "chats": ", ".join(held)}


def delete_chats(*, chats: Iterable[Chat], actor, batch_size: int = DEFAULT_BATCH_SIZE) -> int:
    """Deletes chats with their messages, one audit event per chat; refuses them all
    (ValidationError) if any is under legal hold."""
    chosen = chats.values("pk") if isinstance(chats, QuerySet) else [chat.pk for chat in chats]
    return _delete_chats(chats=Chat.objects.filter(pk__in=chosen), actor=actor, batch_size=batch_size)


def delete_channels(*, channels: Iterable[LineChannel], actor, batch_size: int = DEFAULT_BATCH_SIZE) -> int:
    """Deletes LINE channels with their chats (audited as `delete_chats` does) and their own
    audit event each; refuses them all while any of their chats is under legal hold."""
    ids = [channel.pk for channel in channels]
    with transaction.atomic():
        _delete_chats(chats=Chat.objects.filter(channel_id__in=ids), actor=actor, batch_size=batch_size)
        doomed = list(LineChannel.objects.filter(pk__in=ids))
        for channel in doomed:
            audit.delete_with_audit(instance=channel, actor=actor, action=AuditAction.CHANNEL_CHANGE)
    return len(doomed)


def _delete_chats(*, chats: QuerySet[Chat], actor, batch_size: int) -> int:
    # One transaction, so the hold check, the deletions and their events stand or fall
    # together; the rows stay locked so no hold can be placed halfway.
    with transaction.atomic():
        doomed = list(chats.select_for_update().order_by("pk"))
        problem = legal_hold_problem(chats=doomed)
        if problem:
            raise ValidationError(problem)
        for chat in doomed:
            messages = _delete_messages_of(chat=chat, batch_size=batch_size)
            audit.record(action=AuditAction.CHAT_CHANGE, actor=actor, target_type="chat", target_id=chat.pk,
                         details={"created": False, "changes": {"deleted": True}, "messages": messages,
                                  **chat.audit_identity()})
            chat.delete()
        if doomed:
            checkpoint_wal()
    return len(doomed)


def _delete_messages_of(*, chat: Chat, batch_size: int) -> int:
    """Deletes by id, batch by batch: Django's collector would load every message of the chat."""
    deleted = 0
    while ids := list(Message.objects.filter(chat=chat).order_by("id").values_list("id", flat=True)[:batch_size]):
        delete_messages(ids)
        deleted += len(ids)
    return deleted
