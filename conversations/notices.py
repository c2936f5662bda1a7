"""The bot's own texts to the people in a chat: the privacy notice, help, the non-text answer.

Each is built when it is sent, from the live settings (the channel, the chat, its preset's
backends, the privacy policy), in the chat's language: zh-Hant or English, through Django's
translations. `/privacy` and `/help` (conversations.commands) call `privacy_notice` and
`help_text`; the notice on follow/join is sent by `send_notice`, in the worker.
"""
import copy
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone, translation
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from core.retry import retrying
from models_registry.services import allowed_backends

from . import selectors
from .line.client import LineAPIError, client_for
from .line.text import batches, split_text
from .models import NOTICE_PLACEHOLDERS, BotLanguage, Chat, Direction, LineChannel, Message, SourceType, Status
from .queue import NOTICE_TASK, enqueue_after_commit
from .retention import effective_retention_days
from .templating import fill

logger = logging.getLogger(__name__)

# message_type of the bot's own outbound texts ("text" is a model's answer or the apology).
NOTICE_TYPE = "notice"
NON_TEXT_REPLY_TYPE = "non_text_reply"
# What a 1:1 chat's non-text message may get the non-text answer for (stickers stay silent).
NON_TEXT_TYPES = frozenset({"image", "video", "audio", "file", "location"})

# Chat.group_memory's values.
MEMORY_ADDRESSED = "addressed"
MEMORY_EVERYTHING = "everything"

_HAN = re.compile(r"[\u3100-\u312f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[A-Za-z]{2,}")
LANGUAGE_SAMPLE = 5


def privacy_notice(*, chat: Chat, language: str | None = None) -> str:
    """The privacy notice for this chat: the channel's template, or the built-in one."""
    language = language or chat_language(chat=chat)
    with translation.override(language):
        return render_notice(chat=chat, template=chat.channel.notice_template)


def render_notice(*, chat: Chat, template: str) -> str:
    """`template` (empty: the built-in notice) filled in for `chat`, in the active language."""
    if not template.strip():
        template = _("Hello! I'm an AI assistant.\n{operator}\n{memory} {retention}\n{models}\n{commands}")
    # A template typed in a browser arrives with CRLF line ends; LINE shows each CR.
    return fill(template.replace("\r\n", "\n"), notice_values(chat=chat)).strip()


def notice_values(*, chat: Chat) -> dict[str, str]:
    """Each placeholder's sentence, in the active language."""
    values = {
        "operator": _operator_sentence(chat.channel),
        "retention": _retention_sentence(chat),
        "memory": _memory_sentence(chat),
        "models": _models_sentence(chat),
        "commands": _commands_sentence(chat.channel),
    }
    assert values.keys() == NOTICE_PLACEHOLDERS
    return values


def help_text(*, chat: Chat, language: str | None = None) -> str:
    """What the bot does in this chat and its commands, for /help."""
    language = language or chat_language(chat=chat)
    with translation.override(language):
        channel = chat.channel
        lines = [_how_to_ask(chat), ""]
        # Only the commands this channel answers: a switched-off one goes to the model as text.
        for enabled, line in (
            (channel.command_help, _("/help – this list")),
            (channel.command_privacy, _("/privacy – who runs this bot, what is kept and for how long")),
            (channel.command_reset, _("/reset – start afresh: earlier messages are no longer used for my answers")),
            (channel.command_optout, _("/optout – stop me keeping your messages")),
            (channel.command_optout, _("/optin – let me keep your messages again")),
            (channel.command_forgetme, _("/forgetme – erase everything this bot keeps about you")),
        ):
            if enabled:
                lines.append(line)
        return "\n".join(lines).strip()


def non_text_reply(*, chat: Chat, language: str | None = None) -> str:
    """The answer to an image, video, audio, file or location in a 1:1 chat."""
    if chat.channel.non_text_reply.strip():
        return chat.channel.non_text_reply.strip()
    with translation.override(language or chat_language(chat=chat)):
        return _("I can read only text messages. Please type your question.")


def answers_non_text(*, channel: LineChannel, source_type: str, message_type: str) -> bool:
    """Whether a non-text message gets the non-text answer: 1:1 only, never stickers."""
    return (channel.non_text_reply_enabled and source_type == SourceType.USER
            and message_type in NON_TEXT_TYPES)


def chat_language(*, chat: Chat) -> str:
    """zh-Hant if any of the chat's latest messages has Chinese in it, English if they have
    only Latin words, else the channel's language.

    Chinese wins over a few English words: chats in Taiwan mix them ("OK", "iPhone"),
    while an English speaker seldom writes a Chinese character.
    """
    if chat.pk:
        recent = list(Message.objects.filter(chat=chat, direction=Direction.IN, redacted=False, erased=False)
                      .exclude(text="").order_by("-id").values_list("text", flat=True)[:LANGUAGE_SAMPLE])
        if any(_HAN.search(text) for text in recent):
            return BotLanguage.ZH_HANT
        if any(_LATIN.search(text) for text in recent):
            return BotLanguage.EN
    return chat.channel.language or settings.LANGUAGE_CODE


# What the console's Preview button may try out before it is saved.
PREVIEW_FIELDS = ("operator_name", "operator_contact", "language", "notice_template")


@dataclass
class NoticePreview:
    language: str
    one_to_one: str = ""
    group: str = ""
    errors: list[str] = field(default_factory=list)


def preview_notices(*, channel: LineChannel, changes: Mapping[str, str] | None = None) -> NoticePreview:
    """The notice a new 1:1 chat and a new group of `channel` would get, with `changes`
    (posted, unsaved values of PREVIEW_FIELDS) tried out first; nothing is saved."""
    channel = copy.copy(channel)
    errors = []
    for name in PREVIEW_FIELDS:
        if changes is None or name not in changes:
            continue
        model_field = LineChannel._meta.get_field(name)
        try:
            setattr(channel, name, model_field.clean(changes[name], channel))
        except ValidationError as exc:
            errors += [f"{model_field.verbose_name}: {message}" for message in exc.messages]
    preview = NoticePreview(language=channel.language, errors=errors)
    if not errors:
        for attribute, source_type in (("one_to_one", SourceType.USER), ("group", SourceType.GROUP)):
            chat = Chat(channel=channel, source_type=source_type)
            setattr(preview, attribute, privacy_notice(chat=chat, language=channel.language))
    return preview


# --- The notice's sentences, in the active language -----------------------------------


def _operator_sentence(channel: LineChannel) -> str:
    name, contact = channel.operator_name.strip(), channel.operator_contact.strip()
    if not name:
        name = _("the owner of this LINE account")
    if contact:
        return _("This bot is run by %(name)s. Questions about your data: %(contact)s.") % {
            "name": name, "contact": contact}
    return _("This bot is run by %(name)s.") % {"name": name}


def _retention_sentence(chat: Chat) -> str:
    # A legal hold reads like "kept": the notice does not announce a hold.
    days = effective_retention_days(chat=chat, default_days=selectors.privacy_policy().retention_days)
    if days is None:
        return _("Messages are kept until the operator deletes them.")
    return ngettext("Messages are deleted after %(days)d day.", "Messages are deleted after %(days)d days.",
                    days) % {"days": days}


def _memory_sentence(chat: Chat) -> str:
    if chat.source_type == SourceType.USER:
        return _("I keep what you write to me and my answers, to follow the conversation.")
    if chat.group_memory == MEMORY_ADDRESSED:
        return _("In this chat I keep only the messages addressed to me, and my answers; nothing else "
                 "said here is stored.")
    return _("In this chat I keep every message, also those not addressed to me, as context for my answers.")


def _models_sentence(chat: Chat) -> str:
    preset = selectors.preset_for_chat(chat=chat)
    backends = allowed_backends(preset=preset, local_only=chat.local_only) if preset else []
    if all(backend.is_local for backend in backends):
        return _("My answers come from AI models on the operator's own servers; your messages are not sent "
                 "to any cloud service.")
    sentence = _("My answers may come from a cloud AI service outside the operator's servers.")
    if chat.channel.mask_before_cloud and selectors.masking_kinds():
        sentence += " " + _("Personal data such as e-mail addresses and phone numbers is masked before "
                            "messages are sent there.")
    if chat.channel.images_to_cloud:
        sentence += " " + _("Photos you send may go there too; a photo cannot be masked.")
    return sentence


def _commands_sentence(channel: LineChannel) -> str:
    """How to opt out or be forgotten, naming only the commands this channel answers."""
    parts = [part for enabled, part in (
        (channel.command_optout, _("Send /optout and I stop keeping your messages (/optin undoes it)")),
        (channel.command_forgetme, _("/forgetme erases everything this bot keeps about you")),
        (channel.command_privacy, _("/privacy shows this notice again")),
        (channel.command_help, _("/help lists the commands")),
    ) if enabled]
    return _("; ").join(parts) + _(".") if parts else ""


def _how_to_ask(chat: Chat) -> str:
    if chat.source_type == SourceType.USER:
        return _("Send me a question as text and I answer it.")
    mode = chat.reply_mode
    if mode == "mention":
        return _("Mention me (@) in a message to ask me something.")
    if mode == "prefix" and chat.reply_prefix.strip():
        return _("Start a message with “%(prefix)s” to ask me something.") % {"prefix": chat.reply_prefix.strip()}
    if mode == "always":
        return _("I answer every message in this chat.")
    return _("I do not answer questions in this chat at the moment.")


# --- Sending the notice (the worker) -------------------------------------------------


def queue_notice(*, event: Message, reply_token: str) -> bool:
    """Records the privacy notice a follow or join event calls for, as the answer to the
    event's stored row, and queues its sending; False when that row has its notice already.

    Called in the webhook's transaction; the text is written by the worker, at sending. The
    row's webhookEventId keeps a redelivered event from coming this far; the notice's link
    to it (one answer per message) would keep a second notice out all the same.
    """
    try:
        # Follow and join are rare: a savepoint every time costs nothing worth saving.
        with transaction.atomic():
            notice = Message.objects.create(
                chat_id=event.chat_id, direction=Direction.OUT, message_type=NOTICE_TYPE, reply_to=event,
                reply_token=reply_token, event_at=event.event_at, status=Status.PENDING,
                status_changed_at=timezone.now(),
            )
    except IntegrityError:
        return False
    enqueue_after_commit(NOTICE_TASK, notice.pk)
    return True


def send_notice(*, message_id: int) -> None:
    """Sends a queued privacy notice with its follow/join event's reply token, at most once.

    The notice is rendered now, from the live settings, and stored on its Message before
    it is sent. A stale or refused reply token leaves it `skipped`: a notice is never pushed
    to a chat that did not just ask for the bot.
    """
    claimed = Message.objects.filter(
        pk=message_id, direction=Direction.OUT, message_type=NOTICE_TYPE, status=Status.PENDING,
    ).update(status=Status.GENERATING, attempts=F("attempts") + 1, status_changed_at=timezone.now())
    if not claimed:
        return
    notice = Message.objects.select_related("chat__channel").get(pk=message_id)
    chat = notice.chat
    if not _token_fresh(notice):
        _finish(notice, Status.SKIPPED, skip_reason="reply token expired")
        return
    text = privacy_notice(chat=chat)
    Message.objects.filter(pk=notice.pk).update(text=text)
    texts = batches(split_text(text))[0]
    client = client_for(chat.channel)
    try:
        retrying(lambda: client.reply(reply_token=notice.reply_token, texts=texts),
                 delays=settings.LINEBOT["LINE_RETRY_DELAYS"],
                 transient=lambda exc: isinstance(exc, LineAPIError) and exc.transient)
    except LineAPIError as exc:
        if exc.invalid_reply_token:
            _finish(notice, Status.SKIPPED, skip_reason="reply token expired")
        else:
            _finish(notice, Status.FAILED, error=str(exc))
        logger.info("Privacy notice %s not sent to chat %s: %s", notice.pk, chat.pk, exc)
        return
    _finish(notice, Status.REPLIED, delivered_calls=1)


def expire_stale_notices(*, now) -> int:
    """Notices a lost task or a dead worker left unsent, once their reply token is past use,
    marked `skipped` (the sweeper calls this): they are never pushed instead."""
    too_old = now - timedelta(seconds=settings.LINEBOT["GENERATING_STUCK_AFTER"])
    return Message.objects.filter(
        direction=Direction.OUT, message_type=NOTICE_TYPE, status__in=[Status.PENDING, Status.GENERATING],
        event_at__lt=now - timedelta(seconds=settings.LINEBOT["REPLY_TOKEN_MAX_AGE"]),
    ).filter(Q(status=Status.PENDING) | Q(status_changed_at__lt=too_old)).update(
        status=Status.SKIPPED, skip_reason="reply token expired", status_changed_at=now)


def _token_fresh(message: Message) -> bool:
    age = (timezone.now() - message.event_at).total_seconds()
    return bool(message.reply_token) and age < settings.LINEBOT["REPLY_TOKEN_MAX_AGE"]


def _finish(message: Message, status: str, **fields) -> None:
    Message.objects.filter(pk=message.pk).update(status=status, status_changed_at=timezone.now(), **fields)
