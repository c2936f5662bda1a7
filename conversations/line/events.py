"""Reading LINE webhook events (plain dicts, camelCase, as LINE sends them).

A signed body comes from LINE, yet its events can still be anything JSON allows (a LINE
change, a test tool, a leaked secret). Every value the bot takes from an event is read
here, checked for its JSON type and for what the database can keep, and refused with
MalformedEvent otherwise — before anything of that event is written.
"""
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from ..models import Chat, LineChannel, Message

logger = logging.getLogger(__name__)

SOURCE_ID_KEYS = {"user": "userId", "group": "groupId", "room": "roomId"}

# The columns' own limits. An id longer than its column is not LINE's, and is refused
# rather than cut to fit: two ids cut alike would be one.
CHAT_ID_MAX = Chat._meta.get_field("line_id").max_length
USER_ID_MAX = Message._meta.get_field("line_user_id").max_length
MESSAGE_ID_MAX = Message._meta.get_field("line_message_id").max_length
MESSAGE_TYPE_MAX = Message._meta.get_field("message_type").max_length
EVENT_ID_MAX = Message._meta.get_field("webhook_event_id").max_length
REPLY_TOKEN_MAX = Message._meta.get_field("reply_token").max_length
# LINE's spec gives quote tokens no bound; those seen are about 100 characters.
QUOTE_TOKEN_MAX = Message._meta.get_field("quote_token").max_length
BOT_USER_ID_MAX = LineChannel._meta.get_field("bot_user_id").max_length
# LINE's event types are short words; the bound keeps a forged one out of the logs.
EVENT_TYPE_MAX = 64
# LINE caps a postback action's data at 300 characters; a mention list at far fewer than this.
POSTBACK_DATA_MAX = 300
MENTIONEES_MAX = 100

# LINE did not exist before 2011, and an event dated in the future would outlive the
# retention period; a day's leeway covers any clock skew.
EARLIEST_EVENT = datetime(2011, 1, 1, tzinfo=timezone.utc)
CLOCK_SKEW = timedelta(days=1)


class MalformedEvent(ValueError):
    """An event not shaped as LINE sends it; the reason names the field, never its value."""


@dataclass(frozen=True)
class Mention:
    """One mentionee's span of the text, in Python string indexes (LINE counts UTF-16 units)."""

    start: int
    end: int
    is_self: bool
    user_id: str  # "" for @All, or when the mentioned user has not consented


@dataclass(frozen=True)
class IncomingMessage:
    """A message event, as far as the bot keeps it; every value checked."""

    webhook_event_id: str
    source_type: str
    chat_id: str
    sender_id: str
    reply_token: str
    sent_at: datetime
    standby: bool
    message_id: str
    message_type: str
    text: str  # "" unless a text message
    mentions: tuple[Mention, ...]
    quote_token: str  # "" when LINE sends none (a message that cannot be quoted)
    # A photo or voice message: where its content is (conversations.media.pipeline fetches it).
    media_source: dict = field(default_factory=dict)

    @property
    def mentions_self(self) -> bool:
        return any(mention.is_self for mention in self.mentions)


def _object(value: object, *, name: str) -> dict:
    if not isinstance(value, dict):
        raise MalformedEvent(f"{name} is not an object")
    return value


def _string(value: object, *, name: str, max_length: int | None = None, required: bool = True) -> str:
    """`value` as a string the database can keep; "" for an optional one that is absent."""
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise MalformedEvent(f"{name} is not a non-empty string" if required else f"{name} is not a string")
    if max_length is not None and len(value) > max_length:
        raise MalformedEvent(f"{name} is longer than {max_length} characters")
    if not _storable(value):
        raise MalformedEvent(f"{name} holds a NUL or a lone surrogate")
    return value


def _storable(value: str) -> bool:
    # PostgreSQL refuses NUL in text, and no database takes a lone surrogate (not UTF-8).
    if "\x00" in value:
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _integer(value: object, *, name: str) -> int:
    # bool is an int to Python, not to JSON.
    if type(value) is not int:
        raise MalformedEvent(f"{name} is not an integer")
    return value


def event_type(event: object) -> str:
    """The event's type; checks first that the event is an object at all."""
    return _string(_object(event, name="event").get("type"), name="type", max_length=EVENT_TYPE_MAX)


def destination(payload: dict) -> str:
    """The bot's user ID the body is for, or "" when it is not one the database can keep."""
    try:
        return _string(payload.get("destination"), name="destination", max_length=BOT_USER_ID_MAX, required=False)
    except MalformedEvent as exc:
        logger.warning("Ignored a webhook's destination: %s", exc)
        return ""


def chat_key(event: dict) -> tuple[str, str]:
    """(source type, LINE id of the chat) — a group or room id, or the user id for 1:1."""
    source = _object(event.get("source"), name="source")
    source_type = source.get("type")
    id_key = SOURCE_ID_KEYS.get(source_type) if isinstance(source_type, str) else None
    if id_key is None:
        raise MalformedEvent("source.type is not user, group or room")
    return source_type, _string(source.get(id_key), name=f"source.{id_key}", max_length=CHAT_ID_MAX)


def sender_id(event: dict) -> str:
    """Who sent it; "" when LINE does not say (users of some clients, join events)."""
    source = _object(event.get("source"), name="source")
    return _string(source.get("userId"), name="source.userId", max_length=USER_ID_MAX, required=False)


def event_time(event: dict) -> datetime:
    stamp = _integer(event.get("timestamp"), name="timestamp")
    earliest = EARLIEST_EVENT.timestamp() * 1000
    latest = (datetime.now(tz=timezone.utc) + CLOCK_SKEW).timestamp() * 1000
    if not earliest <= stamp <= latest:
        raise MalformedEvent("timestamp is not a time LINE could have sent")
    return datetime.fromtimestamp(stamp / 1000, tz=timezone.utc)


def webhook_event_id(event: dict) -> str:
    return _string(event.get("webhookEventId"), name="webhookEventId", max_length=EVENT_ID_MAX)


def reply_token(event: dict) -> str:
    """The reply token; "" when there is none (standby, events that cannot be answered)."""
    return _string(event.get("replyToken"), name="replyToken", max_length=REPLY_TOKEN_MAX, required=False)


def message(event: dict) -> dict:
    return _object(event.get("message"), name="message")


def message_id(message: dict) -> str:
    return _string(message.get("id"), name="message.id", max_length=MESSAGE_ID_MAX)


def message_text(message: dict) -> str:
    """A text message's text (LINE sends no empty ones)."""
    return _string(message.get("text"), name="message.text")


def quote_token(message: dict) -> str:
    """The token that lets an answer quote this message; "" when there is none.

    One longer than any LINE sends is left out rather than refused: without it the answer
    only lacks its quote, and cutting it would make it invalid.
    """
    token = _string(message.get("quoteToken"), name="message.quoteToken", required=False)
    if len(token) > QUOTE_TOKEN_MAX:
        logger.warning("Ignored a quoteToken longer than %d characters", QUOTE_TOKEN_MAX)
        return ""
    return token


def unsent_message_id(event: dict) -> str:
    unsend = _object(event.get("unsend"), name="unsend")
    return _string(unsend.get("messageId"), name="unsend.messageId", max_length=MESSAGE_ID_MAX)


def mentions(message: dict, *, text: str) -> tuple[Mention, ...]:
    """The message's mentionees, each a span of `text`, in order and not overlapping."""
    if message.get("mention") is None:
        return ()
    mentionees = _object(message["mention"], name="message.mention").get("mentionees")
    if not isinstance(mentionees, list):
        raise MalformedEvent("message.mention.mentionees is not a list")
    if len(mentionees) > MENTIONEES_MAX:
        raise MalformedEvent(f"message.mention.mentionees has more than {MENTIONEES_MAX} entries")
    # Python index of each UTF-16 offset that starts a character (and of the end).
    offsets, unit = {}, 0
    for index, character in enumerate(text):
        offsets[unit] = index
        unit += 2 if ord(character) > 0xFFFF else 1
    offsets[unit] = len(text)
    found = []
    for entry in mentionees:
        entry = _object(entry, name="a mentionee")
        index = _integer(entry.get("index"), name="a mentionee's index")
        length = _integer(entry.get("length"), name="a mentionee's length")
        if entry.get("isSelf") is not None and not isinstance(entry["isSelf"], bool):
            raise MalformedEvent("a mentionee's isSelf is not a boolean")
        user_id = _string(entry.get("userId"), name="a mentionee's userId", max_length=USER_ID_MAX, required=False)
        start, end = offsets.get(index), offsets.get(index + length) if length > 0 else None
        if start is None or end is None:
            raise MalformedEvent("a mentionee's span is not a part of the text")
        found.append(Mention(start=start, end=end, is_self=entry.get("isSelf") is True, user_id=user_id))
    found.sort(key=lambda mention: mention.start)
    if any(later.start < earlier.end for earlier, later in zip(found, found[1:])):
        raise MalformedEvent("mentionees' spans overlap")
    return tuple(found)


# LINE's imageSet ids are short; a link longer than this is refused by the fetch anyway.
IMAGE_SET_ID_MAX = 64
IMAGE_SET_MAX = 100
EXTERNAL_URL_MAX = 2000
MEDIA_WITH_CONTENT = ("image", "audio")


def media_source(message: dict) -> dict:
    """Where a photo's or voice message's content is, as `Message.media_source` keeps it:
    an external link (`contentProvider.type = external`) and the photo's place in an imageSet."""
    if message.get("type") not in MEDIA_WITH_CONTENT:
        return {}
    source = {}
    provider = message.get("contentProvider")
    if provider is not None:
        provider = _object(provider, name="message.contentProvider")
        if provider.get("type") == "external":
            source["url"] = _string(provider.get("originalContentUrl"), name="message.contentProvider."
                                    "originalContentUrl", max_length=EXTERNAL_URL_MAX)
    if message.get("imageSet") is not None:
        image_set = _object(message["imageSet"], name="message.imageSet")
        set_id = _string(image_set.get("id"), name="message.imageSet.id", max_length=IMAGE_SET_ID_MAX)
        # Old Android clients send no index; LINE's spec bounds neither number.
        index, total = (None if image_set.get(key) is None else _integer(image_set[key], name=f"message.imageSet.{key}")
                        for key in ("index", "total"))
        if any(number is not None and not 1 <= number <= IMAGE_SET_MAX for number in (index, total)):
            raise MalformedEvent(f"message.imageSet's index or total is not between 1 and {IMAGE_SET_MAX}")
        source["set"] = [set_id, index, total]
    return source


def postback_data(event: dict) -> str:
    """What a postback action (one of the bot's buttons) sends back."""
    postback = _object(event.get("postback"), name="postback")
    return _string(postback.get("data"), name="postback.data", max_length=POSTBACK_DATA_MAX)


def incoming_message(event: dict) -> IncomingMessage:
    """Everything a message event gives the bot, read whole before any of it is stored."""
    content = message(event)
    message_type = _string(content.get("type"), name="message.type", max_length=MESSAGE_TYPE_MAX)
    source_type, chat_id = chat_key(event)
    text = message_text(content) if message_type == "text" else ""
    return IncomingMessage(
        **_envelope(event, source_type=source_type, chat_id=chat_id),
        message_id=message_id(content),
        message_type=message_type,
        text=text,
        mentions=mentions(content, text=text) if text else (),
        quote_token=quote_token(content),
        media_source=media_source(content),
    )


@dataclass(frozen=True)
class IncomingPostback:
    """A postback event (someone tapped one of the bot's buttons); every value checked."""

    webhook_event_id: str
    source_type: str
    chat_id: str
    sender_id: str
    reply_token: str
    sent_at: datetime
    standby: bool
    data: str


def incoming_postback(event: dict) -> IncomingPostback:
    source_type, chat_id = chat_key(event)
    return IncomingPostback(**_envelope(event, source_type=source_type, chat_id=chat_id),
                            data=postback_data(event))


def _envelope(event: dict, *, source_type: str, chat_id: str) -> dict:
    """What every event the bot answers carries besides its content, each value checked."""
    return {
        "webhook_event_id": webhook_event_id(event),
        "source_type": source_type,
        "chat_id": chat_id,
        "sender_id": sender_id(event),
        "reply_token": reply_token(event),
        "sent_at": event_time(event),
        "standby": event.get("mode") == "standby",
    }
