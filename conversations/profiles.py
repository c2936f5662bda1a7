"""Chat names from LINE, fetched in the background."""
import logging

from django.utils import timezone

from .line.client import LineAPIError, client_for
from .models import Chat, SourceType

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
