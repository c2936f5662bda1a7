"""Builders for LINE webhook request bodies, in LINE's exact camelCase format.

Every builder returns a plain dict event; wrap events with ``payload()`` /
``payload_bytes()`` and sign the bytes with ``sign()`` (or use
``signed_request()``) before POSTing them to the app's webhook view.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import secrets
import time
import uuid
from typing import Any

from .line_spec import WEBHOOK_SPEC, load_validator

DEFAULT_BOT_USER_ID = "U" + "b0" * 16
DEFAULT_USER_ID = "U" + "1a" * 16
DEFAULT_GROUP_ID = "C" + "2b" * 16
DEFAULT_ROOM_ID = "R" + "3c" * 16
BOT_MENTION = "@Bot"

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_message_ids = itertools.count(int(time.time() * 1000) * 1000)


class WebhookValidationError(AssertionError):
    """A webhook payload that LINE's ``CallbackRequest`` schema rejects."""


def sign(body: bytes, channel_secret: str) -> str:
    """The ``X-Line-Signature`` LINE sends: base64(HMAC-SHA256(secret, body))."""
    digest = hmac.new(channel_secret.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def new_webhook_event_id(timestamp_ms: int | None = None) -> str:
    """A ULID (26 Crockford base32 chars: 48-bit time + 80 random bits)."""
    stamp = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    value = (stamp << 80) | secrets.randbits(80)
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def new_reply_token() -> str:
    return uuid.uuid4().hex


def new_message_id() -> str:
    return str(next(_message_ids))


def new_quote_token() -> str:
    return secrets.token_urlsafe(48)


def mentionee(
    index: int, length: int, *, user_id: str | None = None, is_self: bool = False, all_members: bool = False
) -> dict:
    """One ``mention.mentionees`` entry; indexes refer to the final message text."""
    if all_members:
        return {"index": index, "length": length, "type": "all"}
    entry: dict[str, Any] = {"index": index, "length": length, "type": "user"}
    if user_id is not None:
        entry["userId"] = user_id
    if is_self:
        entry["isSelf"] = True
    return entry


def event_source(
    source: str = "user",
    *,
    user_id: str | None = DEFAULT_USER_ID,
    group_id: str | None = None,
    room_id: str | None = None,
) -> dict:
    """A ``source`` object; pass ``user_id=None`` to omit the user (join/leave)."""
    if source == "user":
        return {"type": "user", "userId": user_id or DEFAULT_USER_ID}
    if source == "group":
        result = {"type": "group", "groupId": group_id or DEFAULT_GROUP_ID}
    elif source == "room":
        result = {"type": "room", "roomId": room_id or DEFAULT_ROOM_ID}
    else:
        raise ValueError(f"source must be 'user', 'group' or 'room', not {source!r}")
    if user_id is not None:
        result["userId"] = user_id
    return result


def _event(
    event_type: str,
    *,
    source: str,
    user_id: str | None,
    group_id: str | None,
    room_id: str | None,
    mode: str,
    redelivery: bool,
    webhook_event_id: str | None,
    timestamp_ms: int | None,
    reply_token: str | None = None,
    with_reply_token: bool = False,
    **fields: Any,
) -> dict:
    stamp = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    event: dict[str, Any] = {"type": event_type}
    event.update(fields)
    event.update(
        {
            "webhookEventId": webhook_event_id or new_webhook_event_id(stamp),
            "deliveryContext": {"isRedelivery": redelivery},
            "timestamp": stamp,
            "source": event_source(source, user_id=user_id, group_id=group_id, room_id=room_id),
            "mode": mode,
        }
    )
    if with_reply_token:
        event["replyToken"] = reply_token or new_reply_token()
    return event


def _message_event(event_type: str, message: dict, *, mode: str, reply_token: str | None, **common: Any) -> dict:
    # LINE sends no reply token for events a bot receives in standby mode
    # (unless a test insists on one).
    return _event(
        event_type,
        message=message,
        mode=mode,
        reply_token=reply_token,
        with_reply_token=mode == "active" or reply_token is not None,
        **common,
    )


def text_message_event(
    text: str,
    *,
    source: str = "user",
    user_id: str | None = DEFAULT_USER_ID,
    group_id: str | None = None,
    room_id: str | None = None,
    mention_self: bool = False,
    mentionees: list[dict] | None = None,
    bot_user_id: str = DEFAULT_BOT_USER_ID,
    mode: str = "active",
    redelivery: bool = False,
    webhook_event_id: str | None = None,
    reply_token: str | None = None,
    message_id: str | None = None,
    quote_token: str | None = None,
    quoted_message_id: str | None = None,
    timestamp_ms: int | None = None,
) -> dict:
    """A text message event; ``mention_self`` prefixes ``@Bot `` and mentions the bot."""
    all_mentionees = []
    if mention_self:
        text = f"{BOT_MENTION} {text}"
        all_mentionees.append(mentionee(0, len(BOT_MENTION), user_id=bot_user_id, is_self=True))
    all_mentionees.extend(mentionees or [])
    message: dict[str, Any] = {
        "type": "text",
        "id": message_id or new_message_id(),
        "quoteToken": quote_token or new_quote_token(),
        "text": text,
    }
    if all_mentionees:
        message["mention"] = {"mentionees": all_mentionees}
    if quoted_message_id:
        message["quotedMessageId"] = quoted_message_id
    return _message_event(
        "message",
        message,
        source=source,
        user_id=user_id,
        group_id=group_id,
        room_id=room_id,
        mode=mode,
        redelivery=redelivery,
        webhook_event_id=webhook_event_id,
        reply_token=reply_token,
        timestamp_ms=timestamp_ms,
    )


def sticker_message_event(
    *,
    package_id: str = "446",
    sticker_id: str = "1988",
    sticker_resource_type: str = "STATIC",
    keywords: list[str] | None = None,
    text: str | None = None,
    source: str = "user",
    user_id: str | None = DEFAULT_USER_ID,
    group_id: str | None = None,
    room_id: str | None = None,
    mode: str = "active",
    redelivery: bool = False,
    webhook_event_id: str | None = None,
    reply_token: str | None = None,
    message_id: str | None = None,
    timestamp_ms: int | None = None,
) -> dict:
    """A sticker message event (the default is a common free LINE sticker)."""
    message: dict[str, Any] = {
        "type": "sticker",
        "id": message_id or new_message_id(),
        "quoteToken": new_quote_token(),
        "packageId": package_id,
        "stickerId": sticker_id,
        "stickerResourceType": sticker_resource_type,
        "keywords": keywords if keywords is not None else ["Happy", "Hello"],
    }
    if text is not None:
        message["text"] = text
    return _message_event(
        "message",
        message,
        source=source,
        user_id=user_id,
        group_id=group_id,
        room_id=room_id,
        mode=mode,
        redelivery=redelivery,
        webhook_event_id=webhook_event_id,
        reply_token=reply_token,
        timestamp_ms=timestamp_ms,
    )


def media_message_event(
    kind: str = "image",
    *,
    source: str = "user",
    user_id: str | None = DEFAULT_USER_ID,
    group_id: str | None = None,
    room_id: str | None = None,
    mode: str = "active",
    redelivery: bool = False,
    webhook_event_id: str | None = None,
    reply_token: str | None = None,
    message_id: str | None = None,
    timestamp_ms: int | None = None,
    image_set: tuple[str, int, int] | None = None,
    external_url: str | None = None,
) -> dict:
    """An image, video, audio, file or location message event, with the fields LINE sends.

    `image_set`: (id, index, total) of a photo sent with others at once; `external_url`: the
    content is on another server (`contentProvider.type = external`)."""
    message: dict[str, Any] = {"type": kind, "id": message_id or new_message_id()}
    if kind in ("image", "video", "audio"):
        message["contentProvider"] = (
            {"type": "external", "originalContentUrl": external_url, "previewImageUrl": external_url}
            if external_url else {"type": "line"})
    if image_set:
        message["imageSet"] = dict(zip(("id", "index", "total"), image_set))
    if kind in ("image", "video"):
        message["quoteToken"] = new_quote_token()
    if kind in ("video", "audio"):
        message["duration"] = 12_345
    if kind == "file":
        message.update({"fileName": "report.pdf", "fileSize": 20_480})
    if kind == "location":
        message.update({"title": "台北101", "address": "台北市信義區信義路五段7號", "latitude": 25.0339,
                        "longitude": 121.5645})
    if kind not in ("image", "video", "audio", "file", "location"):
        raise ValueError(f"kind must be image, video, audio, file or location, not {kind!r}")
    return _message_event(
        "message",
        message,
        source=source,
        user_id=user_id,
        group_id=group_id,
        room_id=room_id,
        mode=mode,
        redelivery=redelivery,
        webhook_event_id=webhook_event_id,
        reply_token=reply_token,
        timestamp_ms=timestamp_ms,
    )


def message_edited_event(
    message_id: str,
    new_text: str,
    *,
    source: str = "group",
    user_id: str | None = DEFAULT_USER_ID,
    group_id: str | None = None,
    room_id: str | None = None,
    mode: str = "active",
    redelivery: bool = False,
    webhook_event_id: str | None = None,
    reply_token: str | None = None,
    timestamp_ms: int | None = None,
) -> dict:
    """LINE's newer "messageEdited" event: the edited message, same id, new text.

    LINE sends it only for group chats, hence the default source.  It is not
    in the OpenAPI file at hand, so it is modelled on the message event (as
    line-bot-sdk's ``MessageEditedEvent`` is) and ``validate_webhook_payload``
    rejects it as an unknown event type.
    """
    message = {"type": "text", "id": message_id, "quoteToken": new_quote_token(), "text": new_text}
    return _message_event(
        "messageEdited",
        message,
        source=source,
        user_id=user_id,
        group_id=group_id,
        room_id=room_id,
        mode=mode,
        redelivery=redelivery,
        webhook_event_id=webhook_event_id,
        reply_token=reply_token,
        timestamp_ms=timestamp_ms,
    )


def follow_event(
    *,
    user_id: str = DEFAULT_USER_ID,
    is_unblocked: bool = False,
    mode: str = "active",
    redelivery: bool = False,
    webhook_event_id: str | None = None,
    reply_token: str | None = None,
    timestamp_ms: int | None = None,
) -> dict:
    """A user added the bot as a friend (or unblocked it)."""
    return _event(
        "follow",
        follow={"isUnblocked": is_unblocked},
        source="user",
        user_id=user_id,
        group_id=None,
        room_id=None,
        mode=mode,
        redelivery=redelivery,
        webhook_event_id=webhook_event_id,
        timestamp_ms=timestamp_ms,
        reply_token=reply_token,
        with_reply_token=True,
    )


def unfollow_event(
    *,
    user_id: str = DEFAULT_USER_ID,
    mode: str = "active",
    redelivery: bool = False,
    webhook_event_id: str | None = None,
    timestamp_ms: int | None = None,
) -> dict:
    """A user blocked the bot; there is no reply token."""
    return _event(
        "unfollow",
        source="user",
        user_id=user_id,
        group_id=None,
        room_id=None,
        mode=mode,
        redelivery=redelivery,
        webhook_event_id=webhook_event_id,
        timestamp_ms=timestamp_ms,
    )


def join_event(
    *,
    source: str = "group",
    group_id: str | None = None,
    room_id: str | None = None,
    mode: str = "active",
    redelivery: bool = False,
    webhook_event_id: str | None = None,
    reply_token: str | None = None,
    timestamp_ms: int | None = None,
) -> dict:
    """The bot joined a group or room (the source carries no user)."""
    return _event(
        "join",
        source=source,
        user_id=None,
        group_id=group_id,
        room_id=room_id,
        mode=mode,
        redelivery=redelivery,
        webhook_event_id=webhook_event_id,
        timestamp_ms=timestamp_ms,
        reply_token=reply_token,
        with_reply_token=True,
    )


def leave_event(
    *,
    source: str = "group",
    group_id: str | None = None,
    room_id: str | None = None,
    mode: str = "active",
    redelivery: bool = False,
    webhook_event_id: str | None = None,
    timestamp_ms: int | None = None,
) -> dict:
    """The bot was removed from a group or room; there is no reply token."""
    return _event(
        "leave",
        source=source,
        user_id=None,
        group_id=group_id,
        room_id=room_id,
        mode=mode,
        redelivery=redelivery,
        webhook_event_id=webhook_event_id,
        timestamp_ms=timestamp_ms,
    )


def unsend_event(
    message_id: str,
    *,
    source: str = "user",
    user_id: str | None = DEFAULT_USER_ID,
    group_id: str | None = None,
    room_id: str | None = None,
    mode: str = "active",
    redelivery: bool = False,
    webhook_event_id: str | None = None,
    timestamp_ms: int | None = None,
) -> dict:
    """A user unsent message ``message_id``; there is no reply token."""
    return _event(
        "unsend",
        unsend={"messageId": message_id},
        source=source,
        user_id=user_id,
        group_id=group_id,
        room_id=room_id,
        mode=mode,
        redelivery=redelivery,
        webhook_event_id=webhook_event_id,
        timestamp_ms=timestamp_ms,
    )


def postback_event(
    data: str,
    *,
    params: dict[str, str] | None = None,
    source: str = "user",
    user_id: str | None = DEFAULT_USER_ID,
    group_id: str | None = None,
    room_id: str | None = None,
    mode: str = "active",
    redelivery: bool = False,
    webhook_event_id: str | None = None,
    reply_token: str | None = None,
    timestamp_ms: int | None = None,
) -> dict:
    """A user tapped a postback action (a button, a quick reply) whose ``data`` was ``data``.

    ``params`` holds a date/time picker's choice; LINE sends a reply token (none in standby).
    """
    postback: dict[str, Any] = {"data": data}
    if params is not None:
        postback["params"] = params
    return _event(
        "postback",
        postback=postback,
        source=source,
        user_id=user_id,
        group_id=group_id,
        room_id=room_id,
        mode=mode,
        redelivery=redelivery,
        webhook_event_id=webhook_event_id,
        timestamp_ms=timestamp_ms,
        reply_token=reply_token,
        with_reply_token=mode == "active" or reply_token is not None,
    )


def quick_reply_postbacks(request_json: dict) -> list[dict]:
    """The postback actions of the quick-reply buttons in a reply or push request body."""
    return [
        item["action"]
        for message in request_json.get("messages", [])
        for item in (message.get("quickReply") or {}).get("items", [])
        if item.get("action", {}).get("type") == "postback"
    ]


def payload(*events: dict, destination: str = DEFAULT_BOT_USER_ID) -> dict:
    """The webhook request body: ``{"destination": <bot user id>, "events": [...]}``."""
    return {"destination": destination, "events": list(events)}


def payload_bytes(*events: dict, destination: str = DEFAULT_BOT_USER_ID) -> bytes:
    """The body as LINE sends it: compact UTF-8 JSON."""
    return json.dumps(payload(*events, destination=destination), ensure_ascii=False, separators=(",", ":")).encode()


def signed_request(
    *events: dict, channel_secret: str, destination: str = DEFAULT_BOT_USER_ID
) -> tuple[bytes, dict[str, str]]:
    """``(body, headers)`` ready to POST, with a valid ``X-Line-Signature``."""
    body = payload_bytes(*events, destination=destination)
    headers = {"Content-Type": "application/json; charset=utf-8", "X-Line-Signature": sign(body, channel_secret)}
    return body, headers


def validate_webhook_payload(body: dict) -> bool:
    """Check ``body`` against webhook.yml's ``CallbackRequest``.

    Returns False when the spec directory is missing (nothing was checked) and
    raises ``WebhookValidationError`` listing every problem when invalid.
    """
    validator = load_validator(WEBHOOK_SPEC)
    if validator is None:
        return False
    errors = validator.errors("CallbackRequest", body)
    if errors:
        lines = "\n".join(f"  {e['property'] or '<root>'}: {e['message']}" for e in errors)
        raise WebhookValidationError(f"webhook payload violates CallbackRequest:\n{lines}")
    return True
