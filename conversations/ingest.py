"""Taking in webhook events: each stored once, answers queued once the transaction commits."""
import logging
from collections import Counter
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field

from django.db import IntegrityError, transaction
from django.utils import timezone

from core.caching import TTLCache
from core.sqlite_writes import one_writer_at_a_time

from . import channel_health, notices, selectors
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
    # Why events were ignored, logged once per webhook: a body of junk is not a log flood.
    malformed: Counter[str] = field(default_factory=Counter)
    not_acted_on: Counter[str] = field(default_factory=Counter)


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
                outcome = _ingest_event(channel=channel, event=event, careful=careful, result=result)
            except line_events.MalformedEvent as exc:
                result.malformed[str(exc)] += 1
                outcome = "ignored"
            setattr(result, outcome, getattr(result, outcome) + 1)
    _log_ignored(result)
    return result


def _ingest_event(*, channel: LineChannel, event: object, careful: bool, result: IngestResult) -> str:
    kind = line_events.event_type(event)
    if kind == "message":
        return _on_message(channel, event, careful=careful)
    handler = _EVENT_HANDLERS.get(kind)
    if handler is None:
        result.not_acted_on[kind] += 1
        return "ignored"
    return handler(channel, event)


def _log_ignored(result: IngestResult) -> None:
    # Reasons name a field, never a value, so there are few distinct ones; event types are
    # the sender's to choose, so only the commonest are named.
    if result.malformed:
        reasons = "; ".join(f"{reason} ({count})" for reason, count in result.malformed.most_common())
        logger.warning("Ignored %d malformed webhook events: %s", result.malformed.total(), reasons)
    if result.not_acted_on:
        kinds = ", ".join(f"{kind!r} ({count})" for kind, count in result.not_acted_on.most_common(5))
        logger.info(
            "Acknowledged %d webhook events the bot does not act on, of types %s",
            result.not_acted_on.total(), kinds,
        )


def _inserting(careful: bool):
    """A savepoint around an insert that may collide, when taking the careful path."""
    return transaction.atomic() if careful else nullcontext()


def _on_message(channel: LineChannel, event: dict, *, careful: bool) -> str:
    incoming = line_events.incoming_message(event)
    chat = _chat_for(channel, source_type=incoming.source_type, line_id=incoming.chat_id, careful=careful)
    skip_reason = _skip_reason(channel=channel, chat=chat, message=incoming)
    now = timezone.now()
    try:
        with _inserting(careful):
            stored = Message.objects.create(
                chat=chat,
                direction=Direction.IN,
                line_user_id=incoming.sender_id,
                message_type=incoming.message_type,
                text=_as_stored(channel, incoming.text),
                line_message_id=incoming.message_id,
                webhook_event_id=incoming.webhook_event_id,
                reply_token=incoming.reply_token if not skip_reason else "",
                # Kept only where an answer quotes it: groups and rooms.
                quote_token=incoming.quote_token if not skip_reason and chat.source_type != SourceType.USER else "",
                event_at=incoming.sent_at,
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
    """The chat is (again) active; the privacy notice is queued, keyed on the event."""
    source_type, line_id = line_events.chat_key(event)
    event_id, reply_token, sent_at = (line_events.webhook_event_id(event), line_events.reply_token(event),
                                      line_events.event_time(event))
    chat = _chat_for(channel, source_type=source_type, line_id=line_id)
    if not chat.is_active:
        Chat.objects.filter(pk=chat.pk).update(is_active=True)
    if channel.notice_enabled and reply_token and event.get("mode") != "standby":
        queued = notices.queue_notice(chat=chat, webhook_event_id=event_id, reply_token=reply_token, event_at=sent_at)
        return "stored" if queued else "duplicates"
    return "stored"


def _on_unfollow_or_leave(channel: LineChannel, event: dict) -> str:
    source_type, line_id = line_events.chat_key(event)
    Chat.objects.filter(channel=channel, line_id=line_id).update(is_active=False)
    return "stored"


def _on_unsend(channel: LineChannel, event: dict) -> str:
    """LINE asks bots to forget what a user unsent: the text goes, the row says why."""
    message_id = line_events.unsent_message_id(event)
    _, line_id = line_events.chat_key(event)
    unsent = Message.objects.filter(chat__channel=channel, chat__line_id=line_id, line_message_id=message_id)
    unsent.filter(status=Status.PENDING).update(status=Status.SKIPPED, skip_reason="unsent")
    unsent.update(text="", unsent=True, reply_token="", quote_token="")
    return "stored"


def _on_message_edited(channel: LineChannel, event: dict) -> str:
    """The new text replaces the old, unless the old was taken away: that stays so."""
    message = line_events.message(event)
    message_id, text = line_events.message_id(message), line_events.message_text(message)
    _, line_id = line_events.chat_key(event)
    edited = Message.objects.filter(
        chat__channel=channel, chat__line_id=line_id, line_message_id=message_id,
        unsent=False, redacted=False, erased=False,
    ).update(text=_as_stored(channel, text), edited=True)
    return "stored" if edited else "ignored"


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


def _chat_for(channel: LineChannel, *, source_type: str, line_id: str, careful: bool = True) -> Chat:
    """The chat an event came from, created on first sight.

    Known chats are remembered for a few seconds per process, sparing the webhook a query;
    a change of reply mode therefore reaches every web process within CHAT_CACHE_SECONDS.
    The careful path never trusts the cache (the chat may just have been erased).
    """
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


def _skip_reason(*, channel: LineChannel, chat: Chat, message: line_events.IncomingMessage) -> str:
    """Why the bot stays silent on this message, or "" if it answers."""
    if message.standby:
        return "standby"
    if message.message_type != "text" or not message.text:
        # An image, a file… in a 1:1 chat gets the short "I read only text" answer.
        answered = notices.answers_non_text(channel=channel, source_type=chat.source_type,
                                            message_type=message.message_type)
        return "" if answered else "not text"
    if chat.source_type == SourceType.USER:
        return ""
    if chat.reply_mode == ReplyMode.ALWAYS:
        return ""
    if chat.reply_mode == ReplyMode.MENTION:
        return "" if message.mentions_self else "not mentioned"
    if chat.reply_mode == ReplyMode.PREFIX:
        prefix = chat.reply_prefix.strip()
        return "" if prefix and message.text.lstrip().startswith(prefix) else "no keyword"
    return "reply mode off"
