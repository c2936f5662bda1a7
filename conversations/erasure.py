"""The right to erasure: a LINE user's 1:1 conversations go, their words in groups (and the
bot's answers to them) are blanked, and the names LINE gave for them in groups are forgotten."""
from dataclasses import dataclass

from django.db.models import Q, QuerySet

from core import audit
from core.batching import run_in_batches
from core.models import AuditAction
from core.sqlite_writes import checkpoint_wal

from .media.files import forget_media
from .models import Chat, ChatMember, Message, SourceType
from .retention import delete_messages

ERASED_TEXT = "[erased at the user's request]"
BATCH_SIZE = 1000


@dataclass
class ErasurePlan:
    user_hmac: str
    direct_chats: int
    direct_messages: int
    group_messages: int
    held_messages: int
    chat_members: int = 0  # group and room memberships (with their names) forgotten


def _direct_chats(line_user_id: str) -> QuerySet:
    return Chat.objects.filter(source_type=SourceType.USER, line_id=line_user_id)


def _group_messages(line_user_id: str) -> QuerySet:
    return Message.objects.filter(line_user_id=line_user_id, erased=False).exclude(chat__source_type=SourceType.USER)


def _group_answers(line_user_id: str) -> QuerySet:
    # Theirs too: export_user hands them over with the user's messages.
    return Message.objects.filter(reply_to__in=_group_messages(line_user_id), erased=False)


def plan_erasure(*, line_user_id: str) -> ErasurePlan:
    """What `erase_user` would do; chats on legal hold are counted apart and kept."""
    direct = _direct_chats(line_user_id)
    in_groups = (_group_messages(line_user_id), _group_answers(line_user_id))
    return ErasurePlan(
        user_hmac=audit.keyed_hash(line_user_id),
        direct_chats=direct.filter(legal_hold=False).count(),
        direct_messages=Message.objects.filter(chat__in=direct.filter(legal_hold=False)).count(),
        group_messages=sum(rows.filter(chat__legal_hold=False).count() for rows in in_groups),
        held_messages=Message.objects.filter(chat__in=direct.filter(legal_hold=True)).count()
        + sum(rows.filter(chat__legal_hold=True).count() for rows in in_groups),
        chat_members=_memberships(line_user_id).count(),
    )


def _memberships(line_user_id: str) -> QuerySet:
    # A legal hold keeps a chat as it is, names of who said what included.
    return ChatMember.objects.filter(line_user_id=line_user_id, chat__legal_hold=False)


def erase_user(*, line_user_id: str, actor, batch_size: int | None = None) -> ErasurePlan:
    """Erases one user in batches, one transaction each; chats on legal hold are left as they are."""
    batch_size = batch_size or BATCH_SIZE
    plan = plan_erasure(line_user_id=line_user_id)
    for chat_id in list(_direct_chats(line_user_id).filter(legal_hold=False).values_list("id", flat=True)):
        run_in_batches(rows=Message.objects.filter(chat_id=chat_id).order_by("id"), batch_size=batch_size,
                       apply=delete_messages)
        Chat.objects.filter(pk=chat_id).delete()
    run_in_batches(rows=_group_messages(line_user_id).filter(chat__legal_hold=False).order_by("id"),
                   batch_size=batch_size, apply=_blank)
    ChatMember.objects.filter(pk__in=list(_memberships(line_user_id).values_list("pk", flat=True))).delete()
    audit.record(
        action=AuditAction.ERASE_USER, actor=actor, target_type="line_user", target_id=plan.user_hmac,
        details={"direct_chats": plan.direct_chats, "direct_messages": plan.direct_messages,
                 "group_messages": plan.group_messages, "chat_members": plan.chat_members,
                 "kept_under_legal_hold": plan.held_messages},
    )
    checkpoint_wal()
    return plan


def _blank(ids: list[int]) -> None:
    # The answers go in the same batch: blanking a question drops the user id that leads to them.
    forget_media(message_ids=ids)
    Message.objects.filter(Q(id__in=ids) | Q(reply_to_id__in=ids)).update(
        text=ERASED_TEXT, line_user_id="", line_message_id="", reply_token="", quote_token="", erased=True,
        original_hmac="", redaction_reason="", mentions=[], media_source={},
    )
