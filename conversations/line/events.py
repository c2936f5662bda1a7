"""Reading LINE webhook events (plain dicts, camelCase, as LINE sends them)."""
from datetime import datetime, timezone

SOURCE_ID_KEYS = {"user": "userId", "group": "groupId", "room": "roomId"}


class MalformedEvent(ValueError):
    """An event lacks what every LINE event carries (type, source, ids)."""


def chat_key(event: dict) -> tuple[str, str]:
    """(source type, LINE id of the chat) — a group or room id, or the user id for 1:1."""
    source = event.get("source")
    if not isinstance(source, dict):
        raise MalformedEvent("event has no source")
    source_type = source.get("type")
    line_id = source.get(SOURCE_ID_KEYS.get(source_type, ""), "")
    if not line_id or not isinstance(line_id, str):
        raise MalformedEvent(f"source of type {source_type!r} has no id")
    return source_type, line_id


def sender_id(event: dict) -> str:
    return (event.get("source") or {}).get("userId", "") or ""


def event_time(event: dict) -> datetime:
    try:
        return datetime.fromtimestamp(int(event["timestamp"]) / 1000, tz=timezone.utc)
    except (KeyError, TypeError, ValueError, OverflowError, OSError):
        raise MalformedEvent("event has no valid timestamp") from None


def mentions_self(message: dict) -> bool:
    mentionees = (message.get("mention") or {}).get("mentionees") or []
    return any(isinstance(m, dict) and m.get("isSelf") is True for m in mentionees)
