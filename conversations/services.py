"""Writes: taking in webhook events, answering messages, sweeping up after dead workers."""
import logging
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone
from django_q.models import Schedule

from linebot_site.retry import retrying
from linebot_site.sqlite_writes import one_writer_at_a_time
from models_registry.backends import Turn
from models_registry.models import ModelBackend, SamplingPreset
from models_registry.services import GenerationFailed, generate

from . import selectors
from .line import events as line_events
from .line.client import LineAPIError, line_client, retry_key
from .line.text import batches, split_text
from .models import Chat, Direction, LineChannel, Message, ReplyMode, SourceType, Status
from .pii import mask_pii
from .queue import PROFILE_TASK, REPLY_TASK, enqueue_after_commit, enqueue_reply

logger = logging.getLogger(__name__)


def config(name: str):
    return settings.LINEBOT[name]


# --- Taking in webhooks -----------------------------------------------------------


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
_chat_cache: dict[tuple[int, str], tuple[float, Chat]] = {}


def forget_cached_chats() -> None:
    _chat_cache.clear()


def _chat_for_event(channel: LineChannel, event: dict, *, careful: bool = True) -> Chat:
    """The event's chat, created on first sight.

    Known chats are remembered for a few seconds per process, sparing the webhook a query;
    a change of reply mode therefore reaches every web process within CHAT_CACHE_SECONDS.
    The careful path never trusts the cache (the chat may just have been erased).
    """
    source_type, line_id = line_events.chat_key(event)
    if source_type not in SourceType.values:
        raise line_events.MalformedEvent(f"unknown source type {source_type!r}")
    key, now = (channel.pk, line_id), time.monotonic()
    cached = None if careful else _chat_cache.get(key)
    if cached and cached[0] > now:
        return cached[1]
    chat = Chat.objects.filter(channel=channel, line_id=line_id).first()
    if chat is not None:
        if len(_chat_cache) > 10_000:
            _chat_cache.clear()
        _chat_cache[key] = (now + CHAT_CACHE_SECONDS, chat)
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


# --- Answering --------------------------------------------------------------------


def answer_message(*, message_id: int) -> None:
    """Generates and sends the answer to one inbound message, at most once.

    Safe to run any number of times for the same message: the claim below lets one
    run through, and an answer already generated or partly sent is reused, not redone.
    """
    message = _claim(message_id)
    if message is None:
        return
    chat = message.chat
    # Only a message taken up before can already have an answer to reuse.
    outbound = (Message.objects.filter(reply_to=message, direction=Direction.OUT).first()
                if message.attempts > 1 else None)
    if outbound is None:
        if chat.source_type == SourceType.USER:
            _show_loading(chat=chat)
        outbound = _compose_answer(message=message)
    try:
        calls = _deliver(outbound=outbound, inbound=message)
    except LineAPIError as exc:
        gave_up = message.attempts >= config("MAX_ATTEMPTS") or not exc.transient
        # A transient failure goes back to pending: the sweeper takes it up again later.
        status = Status.FAILED if gave_up else Status.PENDING
        _set_status(message, status, error=str(exc))
        Message.objects.filter(pk=outbound.pk).update(status=status, error=str(exc))
        logger.warning("Sending the answer to message %s failed (%s): %s", message.pk, status, exc)
        return
    # Both sides' final state in one statement.
    answered = Status.REPLIED if outbound.backend_id else Status.FAILED
    Message.objects.filter(pk__in=[outbound.pk, message.pk]).update(
        status=Case(When(pk=outbound.pk, then=Value(Status.REPLIED)), default=Value(answered)),
        delivered_calls=Case(When(pk=outbound.pk, then=Value(calls)), default=F("delivered_calls"),
                             output_field=Message._meta.get_field("delivered_calls")),
        status_changed_at=timezone.now(),
    )


def _claim(message_id: int) -> Message | None:
    claimed = Message.objects.filter(
        pk=message_id, direction=Direction.IN, status=Status.PENDING, attempts__lt=config("MAX_ATTEMPTS")
    ).update(status=Status.GENERATING, attempts=F("attempts") + 1, status_changed_at=timezone.now())
    if not claimed:
        return None
    return Message.objects.select_related("chat__channel").get(pk=message_id)


def _set_status(message: Message, status: str, *, error: str | None = None) -> None:
    fields = {"status": status, "status_changed_at": timezone.now()}
    if error is not None:
        fields["error"] = error
    Message.objects.filter(pk=message.pk).update(**fields)


def _show_loading(*, chat: Chat) -> None:
    try:
        line_client(chat.channel.access_token).show_loading(user_id=chat.line_id, seconds=20)
    except LineAPIError as exc:
        logger.info("Loading animation not shown in chat %s: %s", chat.pk, exc)


def _compose_answer(*, message: Message) -> Message:
    chat = message.chat
    preset = selectors.preset_for_chat(chat=chat)
    generation, error = None, ""
    try:
        if preset is None:
            raise GenerationFailed("No sampling preset: set a global default, a channel default or the chat's own.")
        generation = generate(
            preset=preset, turns=_prompt(message=message, preset=preset), local_only=chat.local_only,
            prepare=_masked_for_cloud(chat),
        )
    except GenerationFailed as exc:
        error = str(exc)
        logger.warning("No answer for message %s: %s", message.pk, error)
        Message.objects.filter(pk=message.pk).update(error=error)
    completion = generation.completion if generation else None
    try:
        # Autocommit: a task runs in no outer transaction, so no savepoint is needed.
        return Message.objects.create(
            chat=chat,
            direction=Direction.OUT,
            text=completion.text if completion else config("APOLOGY_TEXT"),
            event_at=timezone.now(),
            status=Status.PENDING,
            status_changed_at=timezone.now(),
            reply_to=message,
            preset=preset,
            backend=generation.backend if generation else None,
            latency_ms=generation.latency_ms if generation else None,
            prompt_tokens=completion.prompt_tokens if completion else None,
            completion_tokens=completion.completion_tokens if completion else None,
            error=error,
        )
    except IntegrityError:
        # A run that was presumed dead finished first; send its answer, not ours.
        return Message.objects.get(reply_to=message, direction=Direction.OUT)


def _prompt(*, message: Message, preset: SamplingPreset) -> list[Turn]:
    turns = [Turn("system", preset.system_prompt)] if preset.system_prompt.strip() else []
    for earlier in selectors.prompt_history(message=message, turns=preset.history_turns):
        turns.append(Turn("user" if earlier.direction == Direction.IN else "assistant", earlier.text))
    return turns


def _masked_for_cloud(chat: Chat) -> Callable[[ModelBackend, list[Turn]], list[Turn]]:
    """Masks PII in what goes to a backend that is not local, if the channel says so."""

    def prepare(backend: ModelBackend, turns: list[Turn]) -> list[Turn]:
        if backend.is_local or not chat.channel.mask_before_cloud:
            return turns
        kinds = selectors.masking_kinds()
        return [Turn(turn.role, mask_pii(turn.content, kinds=kinds).text) for turn in turns]

    return prepare


def _deliver(*, outbound: Message, inbound: Message) -> int:
    """Sends the answer in calls of up to five texts, resuming after the last call that went
    through; returns the number of calls. Progress is recorded after each call but the last,
    which the caller records with the final status."""
    chat = inbound.chat
    client = line_client(chat.channel.access_token)
    calls = batches(split_text(outbound.text))
    line_retry = {
        "delays": config("LINE_RETRY_DELAYS"),
        "transient": lambda exc: isinstance(exc, LineAPIError) and exc.transient,
    }
    for index in range(outbound.delivered_calls, len(calls)):
        texts = calls[index]
        sent = False
        if index == 0 and _reply_token_fresh(inbound):
            try:
                retrying(lambda: client.reply(reply_token=inbound.reply_token, texts=texts), **line_retry)
                sent = True
            except LineAPIError as exc:
                if not exc.invalid_reply_token:
                    raise
        if not sent:
            key = retry_key(message_id=outbound.pk, call_index=index)
            try:
                retrying(lambda: client.push(to=chat.line_id, texts=texts, retry_key=key), **line_retry)
            except LineAPIError as exc:
                if not exc.already_accepted:
                    raise
        outbound.delivered_calls = index + 1
        if index + 1 < len(calls):
            Message.objects.filter(pk=outbound.pk).update(delivered_calls=index + 1)
    return len(calls)


def _reply_token_fresh(message: Message) -> bool:
    if not message.reply_token:
        return False
    age = (timezone.now() - message.event_at).total_seconds()
    return age < config("REPLY_TOKEN_MAX_AGE")


# --- Chat names -------------------------------------------------------------------


def refresh_chat_profile(*, chat_id: int) -> None:
    """Fetches a group's or user's name from LINE; failing here never touches replies."""
    chat = Chat.objects.select_related("channel").filter(pk=chat_id).first()
    if chat is None or chat.source_type == SourceType.ROOM:
        return
    try:
        name = line_client(chat.channel.access_token).display_name(
            source_type=chat.source_type, line_id=chat.line_id
        )
    except LineAPIError as exc:
        logger.info("Could not fetch the name of chat %s: %s", chat_id, exc)
        return
    Chat.objects.filter(pk=chat_id).update(display_name=(name or "")[:200], profile_fetched_at=timezone.now())


# --- Sweeping ---------------------------------------------------------------------


@dataclass
class SweepResult:
    requeued: int
    failed: int


def sweep_stuck_messages(*, now: datetime | None = None, limit: int = 1000) -> SweepResult:
    """Queues again what a lost task or a dead worker left pending or generating."""
    now = now or timezone.now()
    stuck = Message.objects.filter(direction=Direction.IN).filter(
        Q(status=Status.PENDING, status_changed_at__lt=now - timedelta(seconds=config("PENDING_STUCK_AFTER")))
        | Q(
            status=Status.GENERATING,
            status_changed_at__lt=now - timedelta(seconds=config("GENERATING_STUCK_AFTER")),
        )
    )
    failed = stuck.filter(attempts__gte=config("MAX_ATTEMPTS")).update(
        status=Status.FAILED,
        status_changed_at=now,
        error=f"Gave up after {config('MAX_ATTEMPTS')} attempts.",
    )
    ids = list(stuck.values_list("id", flat=True)[:limit])
    Message.objects.filter(id__in=ids).update(status=Status.PENDING, status_changed_at=now)
    for message_id in ids:
        enqueue_reply(message_id=message_id)
    if ids or failed:
        logger.warning("Sweeper: queued %d stuck messages again, failed %d", len(ids), failed)
    return SweepResult(requeued=len(ids), failed=failed)


def ensure_schedules() -> None:
    """The periodic jobs, created once; an operator may retime them in the admin."""
    Schedule.objects.get_or_create(
        name="Sweep stuck messages",
        defaults={
            "func": selectors.SWEEPER_FUNC,
            "schedule_type": Schedule.MINUTES,
            "minutes": 1,
            "repeats": -1,
        },
    )
    Schedule.objects.get_or_create(
        name="Purge expired messages",
        defaults={
            "func": "conversations.tasks.purge_expired",
            "schedule_type": Schedule.DAILY,
            "repeats": -1,
        },
    )
