"""Answering a message: claim it, generate once, deliver to LINE in resumable calls."""
import logging
from collections.abc import Callable
from dataclasses import replace

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Case, F, Value, When
from django.utils import timezone

from core.inserts import insert_row
from core.retry import retrying
from core.sqlite_writes import one_writer_at_a_time
from models_registry.backends import Turn
from models_registry.models import ModelBackend, SamplingPreset
from models_registry.prompts import build_prompt, without_images
from models_registry.services import GenerationFailed, generate

from . import addressing, channel_health, claims, commands, engine, notices, selectors
from .line.client import LineAPIError, client_for, retry_key
from .media import pipeline
from .line.plaintext import to_line_text
from .line.text import batches, split_text
from .models import Chat, Command, Direction, Message, PushReason, SourceType, Status
from .pii import mask_pii
from .queue import enqueue_reply

logger = logging.getLogger(__name__)


def answer_message(*, message_id: int, chat_id: int | None = None) -> None:
    """The task queued for each message: answers its chat's next turn, if no one else is.

    Safe to run any number of times for the same message: a chat is answered by one worker at
    a time (`claims`), and an answer already generated or partly sent is reused, not redone.
    `chat_id` is the message's chat, when the one who queued it knew it (a query saved).
    """
    if chat_id is None:
        chat_id = (Message.objects.filter(pk=message_id, direction=Direction.IN)
                   .values_list("chat_id", flat=True).first())
    if chat_id is not None:
        answer_chat(chat_id=chat_id)


def answer_chat(*, chat_id: int, wait: bool = True) -> bool:
    """Hands the chat to one of this process's answering threads, which claims its next turn
    and answers it.

    Without `wait`, gives up at once (False) when every thread is busy.
    """
    with engine.seat(wait=wait) as seat:
        if seat is None:
            return False
        seat.run(lambda: _claim_and_take_turn(chat_id))
    return True


def _claim_and_take_turn(chat_id: int) -> None:
    outcome, turn = claims.claim_turn(chat_id=chat_id)
    if turn is not None:
        with engine.holding(turn.claim):
            _take_turn(turn)


def _take_turn(turn: claims.Turn) -> None:
    try:
        answer_turn(turn=turn)
    finally:
        if turn.ended is None:  # answer_turn ended early, or failed
            with one_writer_at_a_time():
                _end_turn(turn)
        woken, pending = turn.ended
        _answer_woken_chat(woken)
        if pending is not None:
            enqueue_reply(message_id=pending, chat_id=turn.chat_id)


def _end_turn(turn: claims.Turn) -> None:
    """Gives the slot (if still held) and the chat back, and notes what comes next: the chat
    woken for the slot, and the first of this chat's messages that came meanwhile."""
    with transaction.atomic():
        woken = claims.give_back_slot(turn=turn)
        claims.release_turn(turn=turn)
        # Queued, not answered here, so they go behind what is already in the queue: a busy
        # group cannot hold a worker, nor delay another chat by more than one answer. Not the
        # turn's own messages if they failed to send: the sweeper retries those later.
        pending = claims.first_pending_message(chat_id=turn.chat_id, after=turn.lead_id)
    turn.ended = (woken, pending)


def _free_backend_slot(turn: claims.Turn) -> None:
    """Once the answer is generated its backend slot goes (delivery does not need the model),
    and the chat that has waited longest for it is answered next."""
    if turn.backend_id is None or turn.slot_given_back:
        return
    with one_writer_at_a_time(), transaction.atomic():
        woken = claims.give_back_slot(turn=turn)
    _answer_woken_chat(woken)


def _answer_woken_chat(chat_id: int | None) -> None:
    # Here and now, in another of this process's threads: a round through the queue would
    # leave the freed slot idle meanwhile. Every thread busy: through the queue.
    if chat_id is not None and not answer_chat(chat_id=chat_id, wait=False):
        waiting = claims.first_pending_message(chat_id=chat_id)
        if waiting is not None:
            enqueue_reply(message_id=waiting, chat_id=chat_id)


def answer_turn(*, turn: claims.Turn) -> None:
    """Generates and sends the answer to one claimed turn, at most once."""
    if turn.chat is None:
        message = Message.objects.select_related("chat__channel").get(pk=turn.lead_id)
    else:
        message = Message.objects.get(pk=turn.lead_id)
        message.chat = turn.chat
    earlier = [pk for pk in turn.message_ids if pk != message.pk]
    chat = message.chat
    if message.command == Command.FORGETME_CONFIRMED:
        _erase_and_confirm(message=message)
        return
    # Only a message taken up before can already have an answer to reuse.
    outbound = (Message.objects.filter(reply_to=message, direction=Direction.OUT).first()
                if message.attempts > 1 else None)
    reused = outbound is not None
    if outbound is None and message.command:
        outbound = _store_answer(message=message, text=commands.answer(message=message))
    elif outbound is None:
        note = ""
        if message.message_type not in claims.MODEL_MESSAGE_TYPES:
            note = notices.non_text_reply(chat=chat)
        else:
            if chat.source_type == SourceType.USER:
                _show_loading(chat=chat)
            try:
                note = _media_note(turn=turn, chat=chat)
            except pipeline.MediaUnavailable as exc:
                # Like a failed send: back to pending, the sweeper takes the turn up again later.
                Message.objects.filter(pk__in=turn.message_ids).update(
                    status=Status.PENDING, error=str(exc)[:500], status_changed_at=timezone.now())
                logger.warning("The media of message %s could not be had yet: %s", message.pk, exc)
                return
        if note:
            if not _reply_token_fresh(message):
                # Pushes count against the account's quota: a late "text only, please" is not worth one.
                _set_status(message, Status.SKIPPED, skip_reason="reply token expired")
                return
            outbound = _compose_non_text_reply(message=message, text=note)
        else:
            outbound = _compose_answer(message=message, turn=turn)
    _free_backend_slot(turn)
    try:
        calls = _deliver(outbound=outbound, inbound=message, reused=reused)
    except LineAPIError as exc:
        gave_up = message.attempts >= settings.LINEBOT["MAX_ATTEMPTS"] or not exc.transient
        # A transient failure goes back to pending: the sweeper takes it up again later.
        status = Status.FAILED if gave_up else Status.PENDING
        Message.objects.filter(pk__in=turn.message_ids).update(
            status=status, error=str(exc), status_changed_at=timezone.now())
        Message.objects.filter(pk=outbound.pk).update(status=status, error=str(exc))
        logger.warning("Sending the answer to message %s failed (%s): %s", message.pk, status, exc)
        return
    # Every side's final state in one statement. An outbound text no backend wrote is the
    # apology, unless it is the bot's own: a command's answer or the non-text answer, all
    # the bot had to say. A message over the per-user limit stays "skipped", its notice sent.
    if message.command == Command.LIMIT_NOTICE:
        answered = Status.SKIPPED
    elif outbound.backend_id or message.command or outbound.message_type == notices.NON_TEXT_REPLY_TYPE:
        answered = Status.REPLIED
    else:
        answered = Status.FAILED
    with one_writer_at_a_time():
        Message.objects.filter(pk__in=[outbound.pk, *turn.message_ids]).update(
            status=Case(When(pk=outbound.pk, then=Value(Status.REPLIED)), default=Value(answered)),
            delivered_calls=Case(When(pk=outbound.pk, then=Value(calls)), default=F("delivered_calls"),
                                 output_field=Message._meta.get_field("delivered_calls")),
            status_changed_at=timezone.now(),
        )
        _end_turn(turn)  # at the same turn at SQLite's lock
    if earlier:
        logger.debug("Messages %s answered together with %s", earlier, message.pk)


def _media_note(*, turn: claims.Turn, chat: Chat) -> str:
    """The turn's photos and voice messages fetched, stored and transcribed; the short text to
    answer with instead of the model when one could not be had, or when the turn has photos and
    no backend it may use reads them."""
    if turn.media is False:
        return ""  # a turn of texts: no query for media it does not have
    with engine.waiting():  # downloads, and a speech-to-text backend
        media = pipeline.prepare_media(message_ids=turn.message_ids, chat=chat, as_stored=_as_stored)
    if media.note or not media.has_images:
        return media.note
    preset = turn.preset or selectors.preset_for_answer(chat=chat)
    if preset is not None and not pipeline.any_backend_sees_images(preset=preset, chat=chat):
        return pipeline.cannot_read_images(chat)
    return ""


def _set_status(message: Message, status: str, *, error: str | None = None, skip_reason: str = "") -> None:
    fields = {"status": status, "status_changed_at": timezone.now()}
    if error is not None:
        fields["error"] = error
    if skip_reason:
        fields["skip_reason"] = skip_reason
    Message.objects.filter(pk=message.pk).update(**fields)


def _show_loading(*, chat: Chat) -> None:
    try:
        client_for(chat.channel).show_loading(user_id=chat.line_id, seconds=20)
    except LineAPIError as exc:
        logger.info("Loading animation not shown in chat %s: %s", chat.pk, exc)


def _compose_answer(*, message: Message, turn: claims.Turn) -> Message:
    """The model's answer to the turn (`message` is its last), stored; the backend slot is
    given back at the same turn at SQLite's lock."""
    chat = message.chat
    answering, slot = len(turn.message_ids), turn.claim
    preset = turn.preset or selectors.preset_for_answer(chat=chat)
    generation, error = None, ""
    try:
        if preset is None:
            raise GenerationFailed("No sampling preset: set a global default, a channel default or the chat's own.")
        turns = prompt_turns(message=message, preset=preset, answering=answering)
        with engine.waiting():
            generation = generate(preset=preset, turns=turns, local_only=chat.local_only,
                                  prepare=masked_for_cloud(chat), slot=slot)
    except GenerationFailed as exc:
        error = str(exc)
        logger.warning("No answer for message %s: %s", message.pk, error)
        Message.objects.filter(pk=message.pk).update(error=error)
    completion = generation.completion if generation else None
    text = _as_stored(chat, _line_ready(completion.text)) if completion else settings.LINEBOT["APOLOGY_TEXT"]
    with one_writer_at_a_time():
        outbound = _store_answer(
            message=message, text=text, preset=preset,
            backend=generation.backend if generation else None,
            latency_ms=generation.latency_ms if generation else None,
            prompt_tokens=completion.prompt_tokens if completion else None,
            completion_tokens=completion.completion_tokens if completion else None,
            error=error,
        )
        with transaction.atomic():
            woken = claims.give_back_slot(turn=turn)
    _answer_woken_chat(woken)
    return outbound


def _store_answer(*, message: Message, text: str, **fields) -> Message:
    """The outbound Message answering `message`, stored once (unique per inbound message)."""
    now = timezone.now()
    values = {"chat": message.chat, "direction": Direction.OUT, "text": text, "event_at": now,
              "status": Status.PENDING, "status_changed_at": now, "reply_to": message,
              "reply_attempted": _reply_token_fresh(message), **fields}
    try:
        # Autocommit: a task runs in no outer transaction, so no savepoint is needed. One of the
        # hot path's rows: an INSERT compiled once (nothing listens to Message's signals).
        with one_writer_at_a_time():
            return Message(pk=insert_row(Message, values=values), **values)
    except IntegrityError:
        # A run that was presumed dead finished first; send its answer, not ours.
        return Message.objects.get(reply_to=message, direction=Direction.OUT)


def _line_ready(text: str) -> str:
    """The model's Markdown as the plain text LINE shows (reasoning is already gone)."""
    return to_line_text(text) or text.strip()


def _compose_non_text_reply(*, message: Message, text: str) -> Message:
    """The bot's own short answer: to a video, file or location (1:1 chats only), or to a photo or
    voice message it could not get, listen to or show a model."""
    try:
        return Message.objects.create(
            chat=message.chat, direction=Direction.OUT, message_type=notices.NON_TEXT_REPLY_TYPE,
            text=text, event_at=timezone.now(), status=Status.PENDING,
            status_changed_at=timezone.now(), reply_to=message, reply_attempted=True,
        )
    except IntegrityError:
        return Message.objects.get(reply_to=message, direction=Direction.OUT)


def _as_stored(chat: Chat, text: str) -> str:
    """The answer masked like the questions when the channel masks before storing: a model may
    repeat personal data (from its system prompt, or made up). It is sent as stored."""
    if chat.channel.mask_before_storing:
        return mask_pii(text, kinds=selectors.masking_kinds()).text
    return text


def prompt_turns(*, message: Message, preset: SamplingPreset, answering: int = 1) -> list[Turn]:
    """What the model is sent for `message` before masking (the simulator and preset
    comparisons build it with this same function). In a group or room each user turn starts
    with its speaker's name, and the system prompt says whose message to answer; the bot's
    mention and the keyword are left out, other members' mentions read as their names.
    `answering` is how many of the last messages the answer is for (a turn's messages)."""
    history = selectors.prompt_history(message=message, turns=preset.history_turns + answering - 1)
    chat = message.chat
    # Photos are read from the storage for only as many as the preset sends (its images-sent limit).
    images = pipeline.stored_images(message_ids=[earlier.pk for earlier in history if earlier.message_type == "image"],
                                    keep=preset.history_images)

    def said(earlier: Message, names: dict[int, str] | None = None) -> str:
        if earlier.message_type == "image" and not earlier.text:
            return pipeline.PHOTO_PLACEHOLDER
        return addressing.for_model(earlier.text, earlier.mentions, names=names)

    if chat.source_type == SourceType.USER:
        return build_prompt(preset=preset, conversation=[
            Turn("user", said(earlier), images.get(earlier.pk, ())) if earlier.direction == Direction.IN
            else Turn("assistant", earlier.text)
            for earlier in history], answering=answering)
    names = selectors.member_names(chat=chat, messages=history)
    conversation = []
    for earlier in history:
        if earlier.direction == Direction.OUT:
            conversation.append(Turn("assistant", earlier.text))
        else:
            text = said(earlier, names.members)
            conversation.append(Turn("user", f"{names.speaker(earlier.line_user_id)}: {text}",
                                     images.get(earlier.pk, ())))
    speakers = [names.speaker(earlier.line_user_id) for earlier in history[-answering:]
                if earlier.direction == Direction.IN]
    return build_prompt(preset=preset, conversation=conversation, speaker=names.speaker(message.line_user_id),
                        answering=answering, speakers=list(dict.fromkeys(speakers)))


def masked_for_cloud(chat: Chat) -> Callable[[ModelBackend, list[Turn]], list[Turn]]:
    """Masks PII in what goes to a backend that is not local, if the channel says so, and takes
    the images out of what goes to a backend that may not see them (`generate`'s `prepare`, for
    answers and for preset comparisons alike)."""

    def prepare(backend: ModelBackend, turns: list[Turn]) -> list[Turn]:
        if any(turn.images for turn in turns) and not pipeline.may_see_images(backend=backend, chat=chat):
            # Images cannot be masked: only backends that read them, local unless the channel says.
            turns = without_images(turns)
        if backend.is_local or not chat.channel.mask_before_cloud:
            return turns
        kinds = selectors.masking_kinds()
        # replace(), not a new Turn: a turn's images go with it.
        return [replace(turn, content=mask_pii(turn.content, kinds=kinds).text) for turn in turns]

    return prepare


def _deliver(*, outbound: Message, inbound: Message, reused: bool) -> int:
    """Sends the answer in calls of up to five texts, resuming after the last call that went
    through; returns the number of calls. Progress is recorded after each call but the last,
    which the caller records with the final status. `reused`: an earlier run stored the answer."""
    chat = inbound.chat
    client = client_for(chat.channel)
    calls = batches(split_text(outbound.text))
    buttons = commands.buttons_for(message=inbound)
    # In a group or room the answer quotes the message it answers, so it is clear whose it is.
    quote = inbound.quote_token if chat.source_type != SourceType.USER else ""
    line_retry = _line_retry()
    for index in range(outbound.delivered_calls, len(calls)):
        texts = calls[index]
        # /forgetme's buttons go under the answer's last text.
        extra = {"buttons": buttons} if buttons and index == len(calls) - 1 else {}
        sent = refused = False
        if index == 0 and _reply_token_fresh(inbound):
            # Recorded before the call (stored with the answer, or set now): if this worker dies
            # after LINE took the reply, the rerun's refused token means "already used", not
            # "send it by push".
            attempted_before = outbound.reply_attempted and reused
            if not outbound.reply_attempted:
                Message.objects.filter(pk=outbound.pk).update(reply_attempted=True)
                outbound.reply_attempted = True
            tries = []

            def reply(texts=texts, extra=extra):
                tries.append(True)
                client.reply(reply_token=inbound.reply_token, texts=texts, quote_token=quote, **extra)

            try:
                retrying(reply, **line_retry)
                sent = True
            except LineAPIError as exc:
                if not exc.invalid_reply_token:
                    raise
                # After an attempt that may have reached LINE (a worker that died, a 5xx), a
                # refused token was used by that attempt: pushing would say it twice.
                if attempted_before or len(tries) > 1:
                    logger.info("The reply to message %s was refused after an earlier attempt: taken as "
                                "delivered then.", inbound.pk)
                    sent = True
                refused = True
        if not sent and outbound.message_type == notices.NON_TEXT_REPLY_TYPE:
            # By reply or not at all: pushes count against the account's quota.
            raise LineAPIError(status=400, message="The reply token expired; the non-text answer is not pushed.")
        if not sent:
            key = retry_key(message_id=outbound.pk, call_index=index)
            try:
                retrying(lambda: client.push(to=chat.line_id, texts=texts, retry_key=key,
                                             quote_token=quote if index == 0 else "", **extra), **line_retry)
            except LineAPIError as exc:
                if not exc.already_accepted:
                    raise
            with one_writer_at_a_time(), transaction.atomic():
                channel_health.count_push(message_id=outbound.pk, channel_id=chat.channel_id,
                                          reason=_push_reason(index=index, inbound=inbound, refused=refused))
        outbound.delivered_calls = index + 1
        if index + 1 < len(calls):
            Message.objects.filter(pk=outbound.pk).update(delivered_calls=index + 1)
    return len(calls)


def _erase_and_confirm(*, message: Message) -> None:
    """A confirmed /forgetme: erase, then say so.

    The erasure takes the sender's messages with it — this one too (deleted with a 1:1
    chat, blanked in a group) — so the confirmation is sent as it is, not stored and
    delivered like an answer. A failure to send it leaves the erasure done.
    """
    text = commands.forget_sender(message=message)
    Message.objects.filter(pk=message.pk).update(status=Status.REPLIED, reply_token="",
                                                 status_changed_at=timezone.now())
    client = client_for(message.chat.channel)
    texts = batches(split_text(text))[0]
    line_retry = _line_retry()
    key = retry_key(message_id=message.pk, call_index=0)
    try:
        if _reply_token_fresh(message):
            try:
                retrying(lambda: client.reply(reply_token=message.reply_token, texts=texts), **line_retry)
                return
            except LineAPIError as exc:
                if not exc.invalid_reply_token:
                    raise
        retrying(lambda: client.push(to=message.chat.line_id, texts=texts, retry_key=key), **line_retry)
    except LineAPIError as exc:
        logger.warning("The confirmation of erasure request %s was not sent: %s", message.pk, exc)


def _line_retry() -> dict:
    """`retrying`'s arguments for a LINE call: transient failures tried again after each of the
    configured delays, slept as a wait on the network (another answering thread runs)."""
    return {"delays": settings.LINEBOT["LINE_RETRY_DELAYS"],
            "transient": lambda exc: isinstance(exc, LineAPIError) and exc.transient,
            "sleep": engine.sleep}


def _reply_token_fresh(message: Message) -> bool:
    if not message.reply_token:
        return False
    age = (timezone.now() - message.event_at).total_seconds()
    return age < settings.LINEBOT["REPLY_TOKEN_MAX_AGE"]


def _push_reason(*, index: int, inbound: Message, refused: bool) -> str:
    """Why this call went by push (each one counts against LINE's monthly quota)."""
    if index:
        return PushReason.CONTINUED
    if refused:
        return PushReason.REFUSED
    if not inbound.reply_token:
        return PushReason.NO_TOKEN
    return PushReason.RETRY if inbound.attempts > 1 else PushReason.LATE
