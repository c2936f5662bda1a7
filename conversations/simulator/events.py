"""Webhook events as LINE sends them today (webhook.yml's `CallbackRequest`), for the simulator.

Pure functions: ids, tokens and times are made here, nothing is stored. Every event gets a
fresh ULID `webhookEventId`, `deliveryContext`, a millisecond `timestamp` and `mode`;
message events carry a fresh reply token, message id and quote token.
"""
import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid

from ..line.text import utf16_units

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
SOURCE_ID_KEYS = {"user": "userId", "group": "groupId", "room": "roomId"}
# Canned content for the message types a LINE user can send besides text.
MESSAGE_TYPES = ("text", "sticker", "image", "video", "audio", "file", "location")


def new_ulid(timestamp_ms: int) -> str:
    """A ULID, as LINE's webhookEventId: 48 bits of time then 80 random bits, Crockford base32."""
    value = (timestamp_ms << 80) | secrets.randbits(80)
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def new_line_id(source_type: str) -> str:
    """A user (U), group (C) or room (R) id in LINE's format: a letter and 32 hex digits."""
    return {"user": "U", "group": "C", "room": "R"}[source_type] + secrets.token_hex(16)


def new_reply_token() -> str:
    return uuid.uuid4().hex


def new_message_id() -> str:
    # LINE's message ids are decimal strings of about 18 digits.
    return str(secrets.randbelow(9 * 10**17) + 10**17)


def new_quote_token() -> str:
    return secrets.token_urlsafe(64)


def now_ms() -> int:
    return int(time.time() * 1000)


def source(*, source_type: str, chat_id: str, user_id: str | None) -> dict:
    """The event's `source`; a group's or room's names the sender only in message events."""
    if source_type == "user":
        return {"type": "user", "userId": chat_id}
    result = {"type": source_type, SOURCE_ID_KEYS[source_type]: chat_id}
    if user_id:
        result["userId"] = user_id
    return result


def _event(event_type: str, *, source: dict, timestamp_ms: int, reply_token: str | None, **fields) -> dict:
    event = {"type": event_type, **fields, "webhookEventId": new_ulid(timestamp_ms),
             "deliveryContext": {"isRedelivery": False}, "timestamp": timestamp_ms, "source": source,
             "mode": "active"}
    if reply_token:
        event["replyToken"] = reply_token
    return event


def text_content(text: str, *, bot_name: str = "", bot_user_id: str = "") -> dict:
    """A text message; with `bot_name` it starts "@<bot_name> " and mentions the bot (isSelf)."""
    content = {"type": "text", "id": new_message_id(), "quoteToken": new_quote_token(), "text": text}
    if bot_name:
        handle = f"@{bot_name}"
        content["text"] = f"{handle} {text}"
        # LINE counts index and length in UTF-16 units, as its clients do.
        mentionee = {"index": 0, "length": utf16_units(handle), "type": "user", "isSelf": True}
        if bot_user_id:
            mentionee["userId"] = bot_user_id
        content["mention"] = {"mentionees": [mentionee]}
    return content


def media_content(message_type: str, *, duration_ms: int | None = None) -> dict:
    """A sticker, image, video, audio, file or location message with canned content; an audio
    message lasts `duration_ms` when given (that of the uploaded voice message)."""
    content = {"type": message_type, "id": new_message_id()}
    if message_type in ("sticker", "image", "video"):
        content["quoteToken"] = new_quote_token()
    if message_type == "sticker":
        # A free sticker from LINE's basic set ("Moon: Special Edition").
        content.update(packageId="446", stickerId="1988", stickerResourceType="STATIC", keywords=["Happy", "Hello"])
    elif message_type in ("image", "video", "audio"):
        content["contentProvider"] = {"type": "line"}
        if message_type != "image":
            content["duration"] = duration_ms or (8000 if message_type == "video" else 4000)
    elif message_type == "file":
        content.update(fileName="menu.pdf", fileSize=2048)
    elif message_type == "location":
        content.update(title="Taipei 101", address="No. 7, Section 5, Xinyi Road, Taipei", latitude=25.033964,
                       longitude=121.564468)
    else:
        raise ValueError(f"not a message type a user sends: {message_type!r}")
    return content


def message_event(*, source: dict, content: dict, timestamp_ms: int | None = None) -> dict:
    return _event("message", source=source, timestamp_ms=timestamp_ms or now_ms(), reply_token=new_reply_token(),
                  message=content)


def follow_event(*, user_id: str, timestamp_ms: int | None = None) -> dict:
    """A user adds the bot as a friend: how a 1:1 chat starts."""
    return _event("follow", source={"type": "user", "userId": user_id}, timestamp_ms=timestamp_ms or now_ms(),
                  reply_token=new_reply_token(), follow={"isUnblocked": False})


def join_event(*, source_type: str, chat_id: str, timestamp_ms: int | None = None) -> dict:
    """The bot is invited into a group or room."""
    return _event("join", source=source(source_type=source_type, chat_id=chat_id, user_id=None),
                  timestamp_ms=timestamp_ms or now_ms(), reply_token=new_reply_token())


def member_joined_event(*, source_type: str, chat_id: str, user_ids: list[str],
                        timestamp_ms: int | None = None) -> dict:
    return _event("memberJoined", source=source(source_type=source_type, chat_id=chat_id, user_id=None),
                  timestamp_ms=timestamp_ms or now_ms(), reply_token=new_reply_token(),
                  joined={"members": [{"type": "user", "userId": user_id} for user_id in user_ids]})


def member_left_event(*, source_type: str, chat_id: str, user_ids: list[str],
                      timestamp_ms: int | None = None) -> dict:
    return _event("memberLeft", source=source(source_type=source_type, chat_id=chat_id, user_id=None),
                  timestamp_ms=timestamp_ms or now_ms(), reply_token=None,
                  left={"members": [{"type": "user", "userId": user_id} for user_id in user_ids]})


def body(*, destination: str, events: list[dict]) -> bytes:
    """The request body as LINE sends it: compact UTF-8 JSON."""
    return json.dumps({"destination": destination, "events": events}, ensure_ascii=False,
                      separators=(",", ":")).encode()


def signature(*, body: bytes, channel_secret: str) -> str:
    """X-Line-Signature: base64 of HMAC-SHA256 over the body under the channel secret."""
    return base64.b64encode(hmac.new(channel_secret.encode(), body, hashlib.sha256).digest()).decode()
