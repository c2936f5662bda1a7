"""Taking in webhook events: each stored once, answers queued once the transaction commits."""
import logging
from collections import Counter
from collections.abc import Callable
from contextlib import nullcontext
from functools import lru_cache
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from core.caching import TTLCache
from core.inserts import insert_row
from core.sqlite_writes import one_writer_at_a_time

from . import addressing, channel_health, commands, notices, selectors
from .line import events as line_events
from .models import (
    BOT_EVENT_TYPES, SKIP_EVENT, SKIP_RATE_LIMITED, Chat, ChatMember, Command, Direction, GroupMemory, LineChannel,
    Message, ReplyMode, SourceType, Status,
)
from .pii import mask_pii
from .queue import MEMBER_TASK, PROFILE_TASK, REPLY_TASK, enqueue_after_commit

logger = logging.getLogger(__name__)


@dataclass
class IngestResult:
    stored: int = 0
    duplicates: int = 0
    ignored: int = 0
    # Why events were ignored, logged once per webhook: a body of junk is not a log flood.
    malformed: Counter[str] = field(default_factory=Counter)
    not_acted_on: Counter[str] = field(default_factory=Counter)
    # Per chat, messages acknowledged but not stored (not addressed to the bot, or opted out).
    unstored: Counter[int] = field(default_factory=Counter)


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
    ahead = _read_ahead(channel=channel, events=events)
    with one_writer_at_a_time():
        try:
            return _ingest(channel=channel, events=events, careful=False, ahead=ahead)
        except IntegrityError:
            return _ingest(channel=channel, events=events, careful=True, ahead=ahead)


@dataclass(frozen=True)
class SenderState:
    opted_out: bool
    over_limit: str | None  # as _over_limit() says; None: not read ahead


def _read_ahead(*, channel: LineChannel, events: list) -> dict[str, SenderState]:
    """What the messages' senders' rows say, read before the write transaction: on SQLite every
    webhook waits for the one before it at the write lock, so the less it reads there the better.

    Only for a sender with one message in the webhook (with more, each counts against the limit
    of the next, so they are read in the transaction). The limit only in a 1:1 chat, where a
    message is answered; in a group most are not, and those never ask. A concurrent webhook of
    the same sender may be counted one message late by the per-user limit.
    """
    senders: Counter[str] = Counter()
    in_user_chat: set[str] = set()
    for event in events:
        if isinstance(event, dict) and event.get("type") == "message":
            try:
                sender = line_events.sender_id(event)
            except line_events.MalformedEvent:
                continue  # said so when the event is taken in
            if sender:
                senders[sender] += 1
                if event["source"].get("type") == SourceType.USER:
                    in_user_chat.add(sender)
    return {sender: SenderState(
                opted_out=commands.opted_out(channel=channel, line_user_id=sender),
                over_limit=_over_limit(channel=channel, line_user_id=sender) if sender in in_user_chat else None)
            for sender, count in senders.items() if count == 1}


def _ingest(*, channel: LineChannel, events: list, careful: bool, ahead: dict[str, SenderState]) -> IngestResult:
    result = IngestResult()
    with transaction.atomic():
        for event in events:
            try:
                outcome = _ingest_event(channel=channel, event=event, careful=careful, result=result, ahead=ahead)
            except line_events.MalformedEvent as exc:
                result.malformed[str(exc)] += 1
                outcome = "ignored"
            setattr(result, outcome, getattr(result, outcome) + 1)
        for chat_id, count in result.unstored.items():
            Chat.objects.filter(pk=chat_id).update(unstored_messages=F("unstored_messages") + count)
        # Last: every webhook of the channel updates this one row, and its lock is held until
        # the commit; taken first, it would make concurrent webhooks wait for each other's work.
        channel_health.count_webhook(channel_id=channel.pk, events=len(events))
    _log_ignored(result)
    return result


def _ingest_event(*, channel: LineChannel, event: object, careful: bool, result: IngestResult,
                  ahead: dict[str, SenderState]) -> str:
    kind = line_events.event_type(event)
    if kind == "message":
        return _on_message(channel, event, careful=careful, result=result, ahead=ahead)
    if kind == "postback":
        return _on_postback(channel, event, careful=careful, result=result)
    if kind in BOT_EVENT_TYPES:
        return _on_bot_event(channel, event, kind=kind, careful=careful)
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


def _on_message(channel: LineChannel, event: dict, *, careful: bool, result: IngestResult,
                ahead: dict[str, SenderState]) -> str:
    incoming = line_events.incoming_message(event)
    sender = ahead.get(incoming.sender_id)
    opted_out = sender.opted_out if sender else commands.opted_out(channel=channel, line_user_id=incoming.sender_id)
    if (opted_out and incoming.source_type == SourceType.USER
            and not commands.parse(channel=channel, text=incoming.text, opted_out=True)
            and not Chat.objects.filter(channel=channel, line_id=incoming.chat_id).exists()):
        # A 1:1 chat's row is keyed by the person's LINE id and fetches their name: for someone
        # who opted out (and was erased since) it is not made again until they opt back in.
        return "ignored"
    chat = _chat_for(channel, source_type=incoming.source_type, line_id=incoming.chat_id, careful=careful)
    in_group = chat.source_type != SourceType.USER
    addressed = addressing.is_addressed(chat=chat, message=incoming)
    if not addressed and incoming.message_type in line_events.MEDIA_WITH_CONTENT:
        addressed = _follows_mention(chat=chat, message=incoming)
    spans = addressing.spans(chat=chat, text=incoming.text, mentions=incoming.mentions, member_ids={})
    command = ""
    if addressed and incoming.text and not incoming.standby:
        command = commands.parse(channel=channel, text=addressing.for_model(incoming.text, spans),
                                 opted_out=opted_out)
    if (opted_out and not command) or (
            in_group and chat.group_memory == GroupMemory.ADDRESSED and not addressed):
        # Neither its text nor its sender is kept: only that a message came.
        result.unstored[chat.pk] += 1
        return "ignored"
    skip_reason = _skip_reason(channel=channel, chat=chat, message=incoming, addressed=addressed)
    if skip_reason:
        command = ""
    elif incoming.sender_id and command not in commands.UNLIMITED:
        limit = (sender.over_limit if sender and sender.over_limit is not None
                 else _over_limit(channel=channel, line_user_id=incoming.sender_id))
        if limit:
            skip_reason = RATE_LIMITED
            command = Command.LIMIT_NOTICE if limit == NOTICE else ""
    if in_group and incoming.sender_id:
        _member_for(chat, line_user_id=incoming.sender_id, careful=careful)
        members = _mentioned_members(chat, incoming.mentions)
        if members:
            spans = addressing.spans(chat=chat, text=incoming.text, mentions=incoming.mentions, member_ids=members)
    text, spans = _as_stored(channel, incoming.text, spans)
    # The limit's notice goes out like an answer; other limited messages stay silent.
    answered = not skip_reason or command == Command.LIMIT_NOTICE
    stored = _insert_message(
        chat=chat,
        direction=Direction.IN,
        line_user_id=incoming.sender_id,
        message_type=incoming.message_type,
        text=text,
        mentions=spans,
        command=command,
        media_source=incoming.media_source,
        line_message_id=incoming.message_id,
        webhook_event_id=incoming.webhook_event_id,
        reply_token=incoming.reply_token if answered else "",
        # Kept only where an answer quotes it: groups and rooms.
        quote_token=incoming.quote_token if answered and in_group else "",
        event_at=incoming.sent_at,
        status=Status.PENDING if answered else Status.SKIPPED,
        skip_reason=skip_reason,
        status_changed_at=timezone.now(),
    )
    if stored is None:
        # LINE redelivered an event we already have: it was queued the first time.
        return "duplicates"
    if answered:
        enqueue_after_commit(REPLY_TASK, stored, chat.pk)
    return "stored"


def _insert_message(**values) -> int | None:
    """The new message's id, or None if its webhookEventId is stored already (a redelivery).

    One statement compiled once (see core.inserts): the ORM's create() compiled ~35 columns
    on every event. A taken webhookEventId skips the row instead of raising, so a
    redelivery needs neither a savepoint nor the careful path.
    """
    return insert_row(Message, values=values, skip_if_taken="webhook_event_id")


def _mentioned_members(chat: Chat, mentions: tuple[line_events.Mention, ...]) -> dict[str, int]:
    """ChatMember ids of the members a message mentions (whose name the model will see)."""
    mentioned = {mention.user_id for mention in mentions if mention.user_id and not mention.is_self}
    if not mentioned:
        return {}
    return dict(ChatMember.objects.filter(chat=chat, line_user_id__in=mentioned).values_list("line_user_id", "pk"))


def _on_postback(channel: LineChannel, event: dict, *, careful: bool, result: IngestResult) -> str:
    """A tap on one of the bot's buttons: today only /forgetme's "yes" and "cancel"."""
    postback = line_events.incoming_postback(event)
    reading = commands.read_confirmation(data=postback.data, channel=channel, line_user_id=postback.sender_id)
    if reading is None:
        result.not_acted_on["postback"] += 1
        return "ignored"
    if reading == commands.Confirmation.FORGED:
        raise line_events.MalformedEvent("postback.data is not signed by this bot")
    if reading == commands.Confirmation.NOT_YOURS or postback.standby:
        # Someone else's button (groups show them to all), or another bot's turn to act:
        # nothing of it is stored.
        result.not_acted_on["postback in standby" if postback.standby else "postback for another user"] += 1
        return "ignored"
    chat = _chat_for(channel, source_type=postback.source_type, line_id=postback.chat_id, careful=careful)
    stored = _insert_message(
        chat=chat, direction=Direction.IN, line_user_id=postback.sender_id, message_type="postback",
        command=reading, webhook_event_id=postback.webhook_event_id, reply_token=postback.reply_token,
        event_at=postback.sent_at, status=Status.PENDING, status_changed_at=timezone.now(),
    )
    if stored is None:
        return "duplicates"
    enqueue_after_commit(REPLY_TASK, stored, chat.pk)
    return "stored"


RATE_LIMITED = SKIP_RATE_LIMITED
NOTICE, SILENCE = "notice", "silence"


def _over_limit(*, channel: LineChannel, line_user_id: str) -> str:
    """"" within the channel's per-user limit; else NOTICE for the first message over it in a
    period, SILENCE for the rest.

    Counted from the database, newest first along the (line_user_id, id) index, reading at
    most `limit` rows: messages answered and messages held back both count, so someone who
    keeps on sending stays limited until a quiet period has passed.
    """
    limit = channel.user_limit_messages
    if not limit:
        return ""
    since = timezone.now() - timedelta(minutes=channel.user_limit_minutes)
    # Every message asks, so the query is written out (the ORM compiled it on each call,
    # a fifth of the webhook); the database says which rows are recent, in its own format.
    params = {"user": line_user_id, "channel": channel.pk, "limited": RATE_LIMITED, "limit": limit,
              "since": connection.ops.adapt_datetimefield_value(since)}
    with connection.cursor() as cursor:
        cursor.execute(_recent_sql(connection.vendor), params)
        recent = cursor.fetchall()
    if len(recent) < limit or not recent[-1][0]:
        return ""
    noticed = any(fresh and command == Command.LIMIT_NOTICE for fresh, command in recent)
    return SILENCE if noticed else NOTICE


@lru_cache(maxsize=None)
def _recent_sql(vendor: str) -> str:
    """(sent since the period began, command) of a user's last `limit` counted messages in a
    channel, newest first, along the (line_user_id, id) index."""
    quote = connection.ops.quote_name
    message, chat = Message._meta, Chat._meta
    m = {name: "m." + quote(message.get_field(name).column)
         for name in ("id", "chat", "line_user_id", "direction", "skip_reason", "event_at", "command")}
    return (
        f"SELECT CASE WHEN {m['event_at']} >= %(since)s THEN 1 ELSE 0 END, {m['command']} "
        f"FROM {quote(message.db_table)} m INNER JOIN {quote(chat.db_table)} c "
        f"ON {m['chat']} = c.{quote(chat.pk.column)} "
        f"WHERE {m['line_user_id']} = %(user)s AND {m['direction']} = '{Direction.IN}' "
        f"AND c.{quote(chat.get_field('channel').column)} = %(channel)s "
        f"AND ({m['skip_reason']} = '' OR {m['skip_reason']} = %(limited)s) "
        f"ORDER BY {m['id']} DESC LIMIT %(limit)s"
    )


# A member's name is fetched again after this; a fetch that never finished, after the shorter.
MEMBER_REFRESH_AFTER = timedelta(days=7)
MEMBER_RETRY_AFTER = timedelta(hours=1)


def _member_for(chat: Chat, *, line_user_id: str, careful: bool) -> None:
    """Makes sure the sender of a stored group message is a ChatMember whose name is fetched
    (in the background) when new or old; at most ChatMember.MAX_PER_CHAT per chat."""
    now = timezone.now()
    known = ChatMember.objects.filter(chat=chat, line_user_id=line_user_id).values_list(
        "pk", "fetched_at", "created_at").first()
    if known is not None:
        pk, fetched_at, created_at = known
        due = fetched_at + MEMBER_REFRESH_AFTER if fetched_at else created_at + MEMBER_RETRY_AFTER
        if due < now:
            enqueue_after_commit(MEMBER_TASK, pk)
        return
    if ChatMember.objects.filter(chat=chat).count() >= ChatMember.MAX_PER_CHAT:
        return
    try:
        with _inserting(careful):
            member = ChatMember.objects.create(chat=chat, line_user_id=line_user_id)
    except IntegrityError:
        if not careful:
            raise
        return  # a concurrent webhook added them a moment ago, and queued the fetch
    enqueue_after_commit(MEMBER_TASK, member.pk)


def _on_bot_event(channel: LineChannel, event: dict, *, kind: str, careful: bool) -> str:
    """Follow, join, unfollow, leave: the chat is (again) active or not, and the event is kept
    as a row of the chat so the thread shows it; follow and join also queue the privacy notice,
    as that row's answer.

    The row has neither sender nor text: it is about the chat, not a person. Keyed on the
    webhookEventId like a message, so a redelivery stores, changes and queues nothing.
    """
    source_type, line_id = line_events.chat_key(event)
    event_id, sent_at = line_events.webhook_event_id(event), line_events.event_time(event)
    reply_token = line_events.reply_token(event)
    joining = kind in ("follow", "join")
    if joining:
        chat = _chat_for(channel, source_type=source_type, line_id=line_id, careful=careful)
    else:
        # No chat is made for a goodbye: it would be empty, and LINE gives a left chat no name.
        chat = Chat.objects.filter(channel=channel, line_id=line_id).first()
        if chat is None:
            return "ignored"
    try:
        with _inserting(careful):
            stored = Message.objects.create(
                chat=chat, direction=Direction.IN, message_type=kind, webhook_event_id=event_id, event_at=sent_at,
                status=Status.SKIPPED, skip_reason=SKIP_EVENT, status_changed_at=timezone.now(),
            )
    except IntegrityError:
        if not careful:
            raise
        return "duplicates"
    # Not from the (cached) chat's flag, which may be seconds old.
    Chat.objects.filter(pk=chat.pk).exclude(is_active=joining).update(is_active=joining)
    if joining and channel.notice_enabled and reply_token and event.get("mode") != "standby":
        notices.queue_notice(event=stored, reply_token=reply_token)
    return "stored"


def _on_unsend(channel: LineChannel, event: dict) -> str:
    """LINE asks bots to forget what a user unsent: the text goes, the row says why."""
    message_id = line_events.unsent_message_id(event)
    _, line_id = line_events.chat_key(event)
    unsent = Message.objects.filter(chat__channel=channel, chat__line_id=line_id, line_message_id=message_id)
    unsent.filter(status=Status.PENDING).update(status=Status.SKIPPED, skip_reason="unsent")
    unsent.update(text="", mentions=[], media_source={}, unsent=True, reply_token="", quote_token="")
    return "stored"


def _on_message_edited(channel: LineChannel, event: dict) -> str:
    """The new text replaces the old, unless the old was taken away: that stays so."""
    message = line_events.message(event)
    message_id, text = line_events.message_id(message), line_events.message_text(message)
    mentions = line_events.mentions(message, text=text)
    _, line_id = line_events.chat_key(event)
    chat = Chat.objects.filter(channel=channel, line_id=line_id).first()
    if chat is None:
        return "ignored"
    spans = addressing.spans(chat=chat, text=text, mentions=mentions, member_ids=_mentioned_members(chat, mentions))
    stored, spans = _as_stored(channel, text, spans)
    edited = Message.objects.filter(
        chat=chat, line_message_id=message_id, unsent=False, redacted=False, erased=False,
    ).update(text=stored, mentions=spans, edited=True)
    return "stored" if edited else "ignored"


def _as_stored(channel: LineChannel, text: str, spans: list) -> tuple[str, list]:
    """The text as the channel's policy lets it be stored: PII masked if it says so (piece by
    piece, so that the mention spans still fit)."""
    if text and channel.mask_before_storing:
        kinds = selectors.masking_kinds()
        return addressing.transformed(text, spans, lambda piece: mask_pii(piece, kinds=kinds).text)
    return text, spans


_EVENT_HANDLERS: dict[str, Callable[[LineChannel, dict], str]] = {
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


def _follows_mention(*, chat: Chat, message: line_events.IncomingMessage) -> bool:
    """Whether a photo or voice message in a group or room follows, within the mention window,
    a message of the same sender addressed to the bot ("@Bot what is this?", then the photo):
    a photo carries no mention of its own."""
    if not message.sender_id or chat.source_type == SourceType.USER or chat.reply_mode == ReplyMode.OFF:
        return False
    window = timedelta(seconds=settings.LINEBOT_MEDIA["MENTION_WINDOW_SECONDS"])
    return Message.objects.filter(
        chat=chat, direction=Direction.IN, line_user_id=message.sender_id, message_type="text", skip_reason="",
        event_at__gte=message.sent_at - window, event_at__lte=message.sent_at,
    ).exists()


def _skip_reason(*, channel: LineChannel, chat: Chat, message: line_events.IncomingMessage,
                 addressed: bool = False) -> str:
    """Why the bot stays silent on this message, or "" if it answers."""
    if message.standby:
        return "standby"
    if message.message_type in line_events.MEDIA_WITH_CONTENT:
        # A photo or voice message goes to the model: in a group, when it is addressed to the bot.
        if chat.source_type == SourceType.USER or addressed:
            return ""
        return "reply mode off" if chat.reply_mode == ReplyMode.OFF else "not mentioned"
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
