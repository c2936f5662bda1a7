"""Names from LINE — of chats and of the members who speak in groups — fetched in the background."""
import logging

from django.utils import timezone

from .line.client import LineAPIError, client_for
from .models import Chat, ChatMember, SourceType

logger = logging.getLogger(__name__)


def refresh_chat_profile(*, chat_id: int) -> None:
    """Fetches a group's or user's name from LINE; failing here never touches replies."""
    chat = Chat.objects.select_related("channel").filter(pk=chat_id).first()
    if chat is None or chat.source_type == SourceType.ROOM:
        return
    try:
        name = client_for(chat.channel).display_name(
            source_type=chat.source_type, line_id=chat.line_id
        )
    except LineAPIError as exc:
        logger.info("Could not fetch the name of chat %s: %s", chat_id, exc)
        return
    Chat.objects.filter(pk=chat_id).update(display_name=(name or "")[:200], profile_fetched_at=timezone.now())


def refresh_member_profile(*, member_id: int) -> None:
    """Fetches a group or room member's name in that chat.

    LINE answers 404 when the user has not consented to share their profile (or has left):
    the name stays empty, the fetch is remembered, and a pseudonym stands in. Other failures
    leave `fetched_at` empty, so the next message of theirs tries again (ingest decides when).
    """
    member = ChatMember.objects.select_related("chat__channel").filter(pk=member_id).first()
    if member is None or member.chat.source_type == SourceType.USER:
        return
    chat = member.chat
    try:
        name = client_for(chat.channel).member_display_name(
            source_type=chat.source_type, chat_id=chat.line_id, user_id=member.line_user_id)
    except LineAPIError as exc:
        if exc.status != 404:
            logger.info("Could not fetch the name of member %s of chat %s: %s", member_id, chat.pk, exc)
            return
        name = ""
    # One line: display names are shown inside prompts, "Name: text".
    name = " ".join((name or "").split())[:200]
    ChatMember.objects.filter(pk=member_id).update(display_name=name, fetched_at=timezone.now())
