"""Commands the bot answers itself, never a model: /help, /privacy, /reset, /optout, /optin,
/forgetme (confirmed with buttons whose postback data is signed), and the per-user limit's notice.

The webhook recognises them (`parse`, `read_confirmation`) and stores them with the message
(`Message.command`); the worker answers them (`answer`, `forget_sender`) with the reply token.
"""
import re
from functools import lru_cache

from django.core import signing
from django.db import connection
from django.db.models import Q
from django.utils import timezone

from core import audit
from core.models import AuditAction

from . import addressing, erasure, notices
from .line.client import QuickReplyButton
from .models import BotLanguage, Chat, Command, Direction, LineChannel, Message, OptOut

SELF_SERVICE = "LINE user (self-service)"
CONFIRMATION_MAX_AGE = 10 * 60  # seconds a /forgetme button stays good for

_WORDS = {command.value: command for command in
          (Command.HELP, Command.PRIVACY, Command.RESET, Command.OPTOUT, Command.OPTIN, Command.FORGETME)}
# "/help", also with a full-width slash as CJK keyboards type it; nothing else in the message.
_COMMAND = re.compile(r"[/／]([A-Za-z]{1,16})")
# Commands a person needs even past the per-user limit: their privacy choices.
UNLIMITED = frozenset({Command.PRIVACY, Command.OPTOUT, Command.OPTIN, Command.FORGETME})

_CJK = re.compile(r"[\u3040-\u30ff\u3100-\u312f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]")
_LATIN = re.compile(r"[A-Za-z]{2,}")


def enabled(*, channel: LineChannel, command: str) -> bool:
    """Whether the channel lets the bot answer this command."""
    switch = {
        Command.HELP: channel.command_help,
        Command.PRIVACY: channel.command_privacy,
        Command.RESET: channel.command_reset,
        Command.OPTOUT: channel.command_optout,
        Command.OPTIN: channel.command_optout,
        Command.FORGETME: channel.command_forgetme,
    }
    return switch.get(command, True)


def parse(*, channel: LineChannel, text: str, opted_out: bool = False) -> str:
    """The command `text` is (the text as the model would see it: mention and keyword gone),
    or "" for any other text or a command the channel turned off."""
    match = _COMMAND.fullmatch(text.strip())
    command = _WORDS.get(match.group(1).lower()) if match else None
    if command is None:
        return ""
    # The way back is never closed: someone who opted out can opt in whatever the setting.
    if enabled(channel=channel, command=command) or (command == Command.OPTIN and opted_out):
        return command
    return ""


def opted_out(*, channel: LineChannel, line_user_id: str) -> bool:
    # Every message in a webhook asks: written out, the query skips the ORM's per-call
    # compilation (most of its cost).
    if not line_user_id:
        return False
    with connection.cursor() as cursor:
        cursor.execute(_opted_out_sql(connection.vendor), [channel.pk, audit.keyed_hash(line_user_id)])
        return cursor.fetchone() is not None


@lru_cache(maxsize=None)
def _opted_out_sql(vendor: str) -> str:
    quote, meta = connection.ops.quote_name, OptOut._meta
    channel, user = (quote(meta.get_field(name).column) for name in ("channel", "user_hmac"))
    return f"SELECT 1 FROM {quote(meta.db_table)} WHERE {channel} = %s AND {user} = %s"


# --- /forgetme's buttons ---------------------------------------------------------------

CONFIRM, CANCEL = "yes", "no"
_DATA_PREFIX = "forgetme:"
_signer = signing.TimestampSigner(salt="conversations.commands.forgetme")


class Confirmation:
    CONFIRMED = Command.FORGETME_CONFIRMED
    CANCELLED = Command.FORGETME_CANCELLED
    EXPIRED = Command.FORGETME_EXPIRED
    NOT_YOURS = "not yours"
    FORGED = "forged"


def confirmation_data(*, channel: LineChannel, line_user_id: str, choice: str) -> str:
    """A button's postback data: the choice, for whom and where, signed and dated."""
    return _signer.sign(f"{_DATA_PREFIX}{choice}:{channel.pk}:{_user_tag(line_user_id)}")


def _user_tag(line_user_id: str) -> str:
    # A keyed hash: LINE shows postback data to nobody, yet it need not hold the id itself.
    return audit.keyed_hash("forgetme:" + line_user_id)[:32]


def read_confirmation(*, data: str, channel: LineChannel, line_user_id: str) -> str | None:
    """What a tap on a /forgetme button means (a Confirmation), or None for postback data
    that is not the bot's (a rich menu's, say)."""
    if not data.startswith(_DATA_PREFIX):
        return None
    try:
        value = _signer.unsign(data)
    except signing.BadSignature:
        return Confirmation.FORGED
    choice, channel_id, tag = (value.removeprefix(_DATA_PREFIX).split(":") + ["", "", ""])[:3]
    if choice not in (CONFIRM, CANCEL):
        return Confirmation.FORGED
    # Buttons in a group are shown to everyone: only the one who asked may press them.
    if channel_id != str(channel.pk) or not line_user_id or tag != _user_tag(line_user_id):
        return Confirmation.NOT_YOURS
    try:
        _signer.unsign(data, max_age=CONFIRMATION_MAX_AGE)
    except signing.SignatureExpired:
        return Confirmation.EXPIRED
    return Confirmation.CONFIRMED if choice == CONFIRM else Confirmation.CANCELLED


def buttons_for(*, message: Message) -> list[QuickReplyButton]:
    """The quick-reply buttons under the bot's answer to `message` (only /forgetme has them)."""
    if message.command != Command.FORGETME or not message.line_user_id:
        return []
    texts = TEXTS[language_for(message=message)]
    channel = message.chat.channel
    return [
        QuickReplyButton(label=texts["yes_label"], display_text=texts["yes_display"], data=confirmation_data(
            channel=channel, line_user_id=message.line_user_id, choice=CONFIRM)),
        QuickReplyButton(label=texts["no_label"], display_text=texts["no_display"], data=confirmation_data(
            channel=channel, line_user_id=message.line_user_id, choice=CANCEL)),
    ]


# --- Answers (in the worker) -----------------------------------------------------------


def answer(*, message: Message) -> str:
    """Does what the command asks and says so, in the message's language.

    Safe to run twice for one message (a worker that died after it): each effect is idempotent.
    """
    chat, command = message.chat, message.command
    language = language_for(message=message)
    texts = TEXTS[language]
    if command == Command.HELP:
        return notices.help_text(chat=chat, language=language)
    if command == Command.PRIVACY:
        return notices.privacy_notice(chat=chat, language=language)
    if command == Command.RESET:
        # Only forward: a rerun of an older /reset must not bring back what a newer one cut.
        Chat.objects.filter(pk=chat.pk).filter(
            Q(context_reset_after__isnull=True) | Q(context_reset_after__lt=message.pk)
        ).update(context_reset_after=message.pk, context_reset_at=timezone.now())
        return texts["reset"]
    if command == Command.LIMIT_NOTICE:
        return texts["limit"] % {"minutes": chat.channel.user_limit_minutes}
    if command == Command.FORGETME_CANCELLED:
        return texts["cancelled"]
    if command == Command.FORGETME_EXPIRED:
        return texts["expired"]
    if not message.line_user_id:
        # LINE did not say who sent it (an old client): nothing to tie the choice to.
        return texts["who"]
    if command == Command.OPTOUT:
        OptOut.objects.get_or_create(channel=chat.channel, user_hmac=audit.keyed_hash(message.line_user_id))
        return texts["optout"]
    if command == Command.OPTIN:
        OptOut.objects.filter(channel=chat.channel, user_hmac=audit.keyed_hash(message.line_user_id)).delete()
        return texts["optin"]
    if command == Command.FORGETME:
        return texts["forgetme"] % {"minutes": CONFIRMATION_MAX_AGE // 60}
    raise ValueError(f"{command!r} is not answered by commands.answer")


def forget_sender(*, message: Message) -> str:
    """Erases what is stored about the sender of a confirmed /forgetme (`erasure.erase_user`,
    audited as self-service) and says what was done. What a legal hold keeps is recorded as
    an erasure request for the compliance officer, and the sender is told."""
    texts = TEXTS[language_for(message=message)]
    user = message.line_user_id
    if not user:
        return texts["who"]
    plan = erasure.erase_user(line_user_id=user, actor=SELF_SERVICE)
    erased = plan.direct_messages + plan.group_messages
    if not plan.held_messages:
        return texts["erased"] % {"count": erased}
    audit.record(action=AuditAction.ERASURE_REQUESTED, actor=SELF_SERVICE, target_type="line_user",
                 target_id=plan.user_hmac, details={"channel": message.chat.channel.slug, "erased": erased,
                                                    "kept_under_legal_hold": plan.held_messages})
    return texts["held"] % {"count": erased, "held": plan.held_messages}


def language_for(*, message: Message) -> str:
    """CJK in the message → zh-Hant; other words → English; neither (a bare command, a
    button) → the chat's latest messages that are not commands, judged as `notices` judges
    a chat (any Chinese wins), else the channel's language."""
    if _CJK.search(message.text):
        return BotLanguage.ZH_HANT
    words = _COMMAND.sub("", addressing.for_model(message.text, message.mentions))
    if _LATIN.search(words):
        return BotLanguage.EN
    recent = list(Message.objects.filter(chat_id=message.chat_id, direction=Direction.IN, command="", redacted=False,
                                         erased=False).exclude(text="").order_by("-id")
                  .values_list("text", flat=True)[:notices.LANGUAGE_SAMPLE])
    if any(_CJK.search(text) for text in recent):
        return BotLanguage.ZH_HANT
    if any(_LATIN.search(text) for text in recent):
        return BotLanguage.EN
    language = message.chat.channel.language
    return language if language in TEXTS else BotLanguage.EN


TEXTS: dict[str, dict[str, str]] = {
    BotLanguage.EN: {
        "reset": "Fresh start: I no longer use the earlier messages of this chat for my answers.",
        "optout": "Done: from now on I neither store nor answer your messages in this LINE account's chats. Send /optin to undo this.",
        "optin": "Welcome back: I store and answer your messages in this LINE account's chats again.",
        "forgetme": "This erases everything stored about you: your messages here and in other chats with "
                    "me, and my answers to them. It cannot be undone. Are you sure? (The buttons work for "
                    "%(minutes)d minutes.)",
        "yes_label": "Yes, erase",
        "yes_display": "Yes, erase what you keep about me",
        "no_label": "Cancel",
        "no_display": "Cancel",
        "cancelled": "Nothing was erased.",
        "expired": "That button has expired; nothing was erased. Send /forgetme again if you still want it.",
        "erased": "Done: %(count)d messages, yours and my answers to them, are erased.",
        "held": "I erased %(count)d messages, yours and my answers to them. %(held)d more are under a legal "
                "hold and cannot be erased now; your request has been recorded for the operator.",
        "who": "LINE did not tell me who sent this, so I cannot do it. Please update LINE and try again.",
        "limit": "You have sent me many messages in a short time. I will answer again in about "
                 "%(minutes)d minutes.",
    },
    BotLanguage.ZH_HANT: {
        "reset": "重新開始：之後的回答不再參考這個聊天室先前的訊息。",
        "optout": "好的：從現在起，在這個 LINE 帳號的所有聊天中，我不再保存也不再回覆你的訊息。傳送 /optin 可以恢復。",
        "optin": "歡迎回來：在這個 LINE 帳號的所有聊天中，我會再次保存並回覆你的訊息。",
        "forgetme": "這會刪除所有與你有關的資料：你在這裡和其他與我的聊天中的訊息，以及我對它們的回答。"
                    "刪除後無法復原。確定要刪除嗎？（按鈕在 %(minutes)d 分鐘內有效。）",
        "yes_label": "是，刪除",
        "yes_display": "是，刪除你保存的我的資料",
        "no_label": "取消",
        "no_display": "取消",
        "cancelled": "沒有刪除任何資料。",
        "expired": "這個按鈕已經過期，沒有刪除任何資料。如果仍要刪除，請再傳送一次 /forgetme。",
        "erased": "完成：已刪除 %(count)d 則訊息（你的訊息和我的回答）。",
        "held": "已刪除 %(count)d 則訊息（你的訊息和我的回答）。另有 %(held)d 則因法律保全而暫時無法刪除；"
                "你的請求已記錄，將由營運者處理。",
        "who": "LINE 沒有告訴我這是誰傳的，所以無法處理。請更新 LINE 後再試一次。",
        "limit": "你在短時間內傳了很多訊息。大約 %(minutes)d 分鐘後我會再回覆。",
    },
}
