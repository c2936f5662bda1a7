"""How the console words values stored as plain strings: why the bot stayed silent, LINE's
message types, and the redaction marker (stored as "[redacted]" whatever the language)."""
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from .models import Message
from .redaction import REDACTED_TEXT

# Message.skip_reason, as ingest sets it.
SKIP_REASONS = {
    "standby": _("standby mode"),
    "not text": _("not text"),
    "not mentioned": _("not mentioned"),
    "no keyword": _("no keyword"),
    "reply mode off": _("reply mode off"),
    "unsent": _("unsent"),
    "rate limited": _("over the per-user limit"),
    "reply token expired": _("reply token expired"),
    "event": _("an event, not a message"),
}
MESSAGE_TYPES = {
    "text": pgettext_lazy("message type", "text"),
    "image": _("image"),
    "video": _("video"),
    "audio": _("audio"),
    "file": _("file"),
    "location": _("location"),
    "sticker": _("sticker"),
    "follow": _("added as a friend"),
    "unfollow": _("blocked or unfollowed"),
    "join": _("the bot joined"),
    "leave": _("the bot left"),
}
# The thread's line for each of the bot's events (models.BOT_EVENT_TYPES), by chat type.
BOT_EVENTS = {
    ("follow", "user"): _("Added as a friend"),
    ("unfollow", "user"): _("Blocked / unfollowed"),
    ("join", "group"): _("The bot joined the group"),
    ("leave", "group"): _("The bot left the group"),
    ("join", "room"): _("The bot joined the room"),
    ("leave", "room"): _("The bot left the room"),
}


def skip_reason_label(reason: str) -> str:
    return SKIP_REASONS.get(reason, reason)


def message_type_label(message_type: str) -> str:
    return MESSAGE_TYPES.get(message_type, message_type)


def bot_event_label(message_type: str, source_type: str) -> str:
    return BOT_EVENTS.get((message_type, source_type)) or message_type_label(message_type)


def shown_text(message: Message) -> str:
    """The text as the console shows it: the redaction marker in the operator's language."""
    if message.redacted and message.text == REDACTED_TEXT:
        return str(_("[redacted]"))
    return message.text
