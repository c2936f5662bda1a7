"""Taking in webhook events: each stored once, answers queued once the transaction commits."""
import logging
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.utils import timezone

from core.caching import TTLCache
from core.sqlite_writes import one_writer_at_a_time

from . import channel_health, selectors
from .line import events as line_events
from .models import Chat, Direction, LineChannel, Message, ReplyMode, SourceType, Status
from .pii import mask_pii
from .queue import PROFILE_TASK, REPLY_TASK, enqueue_after_commit

logger = logging.getLogger(__name__)


@dataclass
class IngestResult:
    stored: int = 0
    duplicates: int = 0
    ignored: int = 0


def ingest_events(*, channel: LineChannel, events: list, destination: str = "") -> IngestResult:
    """Stores each event once (keyed on webhookEventId) and queues the answers.

    Runs in one transaction; reply tasks are queued only once it commits. The first try
    takes no savepoints (they cost round trips on every webhook); if an insert collides —
    a redelivered event, a chat created by a concurrent request — the transaction is
    rolled back whole and done again with a savepoint around each insert.
    """
    if destination and destination != channel.bot_user_id:
        LineChannel.objects.filter(pk=channel.pk).update(bot_user_id=destination)
        channel.bot_user_id = destination
    with one_writer_at_a_time():
        try:
            return _ingest(channel=channel, events=events, careful=False)
        except IntegrityError:
            return _ingest(channel=channel, events=events, careful=True)


def _ingest(*, channel: LineChannel, events: list, careful: bool) -> IngestResult:
    result = IngestResult()
    with transaction.atomic():
        channel_health.count_webhook(channel_id=channel.pk, events=len(events))
        for event in events:
            try:
                outcome = _ingest_event(channel=channel, event=event, careful=careful)
            except line_events.MalformedEvent as exc:
                logger.warning("Ignored a malformed webhook event: %s", exc)
                outcome = "ignored"
            setattr(result, outcome, getattr(result, outcome) + 1)
    return result


def _ingest_event(*, channel: LineChannel, event: dict, careful: bool) -> str:
    if not isinstance(event, dict):
        raise line_events.MalformedEvent("event is not an object")
    kind = event.get("type")
    if kind == "message":
        return _on_message(channel, event, careful=careful)
    handler = _EVENT_HANDLERS.get(kind)
    if handler is None:
        logger.info("Acknowledged a %r webhook event the bot does not act on", kind)
        return "ignored"
    return handler(channel, event)


def _inserting(careful: bool):
    """A savepoint around an insert that may collide, when taking the careful path."""
    return transaction.atomic() if careful else nullcontext()


def _on_message(channel: LineChannel, event: dict, *, careful: bool) -> str:
    message = event.get("message")
    event_id = event.get("webhookEventId")
    if not isinstance(message, dict) or not event_id:
        raise line_events.MalformedEvent("message event without message or webhookEventId")
    chat = _chat_for_event(channel, event, careful=careful)
    message_type = str(message.get("type", ""))[:16]
    text = message.get("text", "") if message_type == "text" else ""
    text = _as_stored(channel, text if isinstance(text, str) else "")
    skip_reason = _skip_reason(chat=chat, event=event, message=message)
    now = timezone.now()
    try:
        with _inserting(careful):
            stored = Message.objects.create(
                chat=chat,
                direction=Direction.IN,
                line_user_id=line_events.sender_id(event),
                message_type=message_type,
                text=text,
                line_message_id=str(message.get("id", ""))[:32],
                webhook_event_id=str(event_id)[:64],
                reply_token=str(event.get("replyToken", ""))[:64] if not skip_reason else "",
                event_at=line_events.event_time(event),
                status=Status.SKIPPED if skip_reason else Status.PENDING,
                skip_reason=skip_reason,
                status_changed_at=now,
            )
    except IntegrityError:
        if not careful:
            raise
        # LINE redelivered an event we already have: it was queued the first time.
        return "duplicates"
    if not skip_reason:
        enqueue_after_commit(REPLY_TASK, stored.pk)
    return "stored"


def _on_follow_or_join(channel: LineChannel, event: dict) -> str:
    chat = _chat_for_event(channel, event)
    if not chat.is_active:
        Chat.objects.filter(pk=chat.pk).update(is_active=True)
    return "stored"


def _on_unfollow_or_leave(channel: LineChannel, event: dict) -> str:
    source_type, line_id = line_events.chat_key(event)
    Chat.objects.filter(channel=channel, line_id=line_id).update(is_active=False)
    return "stored"


def _on_unsend(channel: LineChannel, event: dict) -> str:
    """LINE asks bots to forget what a user unsent: the text goes, the row says why."""
    message_id = (event.get("unsend") or {}).get("messageId")
    if not message_id:
        raise line_events.MalformedEvent("unsend event without messageId")
    _, line_id = line_events.chat_key(event)
    unsent = Message.objects.filter(chat__channel=channel, chat__line_id=line_id, line_message_id=str(message_id))
    unsent.filter(status=Status.PENDING).update(status=Status.SKIPPED, skip_reason="unsent")
    unsent.update(text="", unsent=True, reply_token="")
    return "stored"


def _on_message_edited(channel: LineChannel, event: dict) -> str:
    message = event.get("message") or {}
    if not message.get("id") or not isinstance(message.get("text"), str):
        raise line_events.MalformedEvent("messageEdited event without message id or text")
    _, line_id = line_events.chat_key(event)
    Message.objects.filter(
        chat__channel=channel, chat__line_id=line_id, line_message_id=str(message["id"]), unsent=False
    ).update(text=_as_stored(channel, message["text"]), edited=True)
    return "stored"


def _as_stored(channel: LineChannel, text: str) -> str:
    """The text as the channel's policy lets it be stored: PII masked if it says so."""
    if text and channel.mask_before_storing:
        return mask_pii(text, kinds=selectors.masking_kinds()).text
    return text


_EVENT_HANDLERS: dict[str, Callable[[LineChannel, dict], str]] = {
    "follow": _on_follow_or_join,
    "join": _on_follow_or_join,
    "unfollow": _on_unfollow_or_leave,
    "leave": _on_unfollow_or_leave,
    "unsend": _on_unsend,
    "messageEdited": _on_message_edited,
}


CHAT_CACHE_SECONDS = 10.0
# Keyed by chats that exist, and filled only after a webhook's signature was checked.
_chats: TTLCache[Chat] = TTLCache(seconds=CHAT_CACHE_SECONDS, max_entries=10_000)


def forget_cached_chats() -> None:
    _chats.clear()


def _chat_for_event(channel: LineChannel, event: dict, *, careful: bool = True) -> Chat:
    """The event's chat, created on first sight.

    Known chats are remembered for a few seconds per process, sparing the webhook a query;
    a change of reply mode therefore reaches every web process within CHAT_CACHE_SECONDS.
    The careful path never trusts the cache (the chat may just have been erased).
    """
    source_type, line_id = line_events.chat_key(event)
    if source_type not in SourceType.values:
        raise line_events.MalformedEvent(f"unknown source type {source_type!r}")
    key = (channel.pk, line_id)
    cached = None if careful else _chats.get(key)
    if cached is not None:
        return cached
    chat = Chat.objects.filter(channel=channel, line_id=line_id).first()
    if chat is not None:
        _chats.set(key, chat)
    if chat is None:
        try:
            with _inserting(careful):
                chat = Chat.objects.create(channel=channel, source_type=source_type, line_id=line_id)
        except IntegrityError:
            if not careful:
                raise
            # Another request created it a moment ago.
            return Chat.objects.get(channel=channel, line_id=line_id)
        enqueue_after_commit(PROFILE_TASK, chat.pk)
    return chat


def _skip_reason(*, chat: Chat, event: dict, message: dict) -> str:
    """Why the bot stays silent on this message, or "" if it answers."""
    if event.get("mode") == "standby":
        return "standby"
    if message.get("type") != "text" or not message.get("text"):
        return "not text"
    if chat.source_type == SourceType.USER:
        return ""
    if chat.reply_mode == ReplyMode.ALWAYS:
        return ""
    if chat.reply_mode == ReplyMode.MENTION:
        return "" if line_events.mentions_self(message) else "not mentioned"
    if chat.reply_mode == ReplyMode.PREFIX:
        prefix = chat.reply_prefix.strip()
        return "" if prefix and message["text"].lstrip().startswith(prefix) else "no keyword"
    return "reply mode off"
