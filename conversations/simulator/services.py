"""Playing a LINE chat in the console: events built, signed and handed to the real webhook.

Everything after the webhook is the real pipeline (ingest, the queue, the worker, the
preset's backend); only the Messaging API at the end is emulated (`emulator`).
"""
import io
import json
import sys
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.handlers.wsgi import WSGIRequest
from django.db import transaction
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _

from core import audit
from core.images import ImageRejected, image_content_type
from core.models import AuditAction

from .. import chats as chat_services
from .. import commands, views
from ..line.text import MAX_TEXT_UNITS, utf16_units
from ..media.audio import AudioRejected, audio_content_type, m4a_duration_ms
from ..media.files import EXTENSIONS, delete_files
from ..models import LineChannel, SourceType
from . import events
from .emulator import forget_expired_content
from .models import NOT_ADDRESSED, OPTED_OUT, SimulatedChat, SimulatedEvent, SimulatedMember, Trouble

DEFAULT_MEMBERS = {SourceType.USER: ["You"], SourceType.GROUP: ["Alice", "Bob", "陳小明"],
                   SourceType.ROOM: ["Alice", "Bob"]}
MEMBER_NAME_MAX = SimulatedMember._meta.get_field("display_name").max_length
# What an operator may upload as a member's message, and the size limit of each (the pipeline's).
UPLOAD_LIMITS = {"image": "MAX_IMAGE_BYTES", "audio": "MAX_AUDIO_BYTES"}
CONTENT_EXTENSIONS = {**EXTENSIONS, "image/webp": ".webp", "image/gif": ".gif"}


@dataclass(frozen=True)
class Delivery:
    """How the webhook answered, as LINE's platform would have seen it."""

    status: int
    body: dict
    event_id: int | None = None  # the SimulatedEvent recorded for it


@dataclass(frozen=True)
class Upload:
    """A photo or voice message an operator sends as a member, checked (`checked_upload`)."""

    message_type: str  # "image" or "audio"
    data: bytes
    content_type: str
    duration_ms: int | None = None  # a voice message's, from its M4A header


def upload_limit(*, message_type: str) -> int:
    """The most bytes an upload of this type may have: what the worker would download of it."""
    if message_type not in UPLOAD_LIMITS:
        raise ValidationError(_("Only a photo or a voice message can be uploaded."))
    return settings.LINEBOT_MEDIA[UPLOAD_LIMITS[message_type]]


def checked_upload(*, message_type: str, data: bytes) -> Upload:
    """`data` as a member's photo or voice message, checked before anything is stored: within
    the size limit, an image Pillow decodes (JPEG, PNG, WebP, GIF), or an M4A with a duration,
    the only audio LINE sends. ValidationError, in words for the operator, otherwise."""
    limit = upload_limit(message_type=message_type)
    if len(data) > limit:
        raise ValidationError(_("The file is larger than %(limit)s.") % {"limit": filesizeformat(limit)})
    if message_type == "image":
        try:
            return Upload(message_type, data, image_content_type(data))
        except ImageRejected as exc:
            raise ValidationError(_("That is not a photo LINE would send: %(reason)s.") % {"reason": exc.reason}) from None
    try:
        content_type = audio_content_type(data)
    except AudioRejected as exc:
        raise ValidationError(_("LINE sends voice messages as M4A (AAC) files, and this is %(reason)s. Record one "
                                "on a phone, or convert the file to M4A.") % {"reason": exc.reason}) from None
    duration = m4a_duration_ms(data)
    if not duration:
        raise ValidationError(_("This M4A file says nothing of how long it plays: it is incomplete."))
    return Upload(message_type, data, content_type, duration)


def create_simulated_chat(*, channel: LineChannel, source_type: str, title: str = "",
                          member_names: list[str] | None = None, actor) -> SimulatedChat:
    """A new 1:1 chat (a user adds the bot: a follow event), group or room (the bot is
    invited: a join event), delivered through the webhook so the chat is made as LINE's would be."""
    if not channel.is_simulated:
        raise ValidationError(_("Only a simulated channel can be used in the simulator."))
    names = [name for name in (_member_name(name) for name in (member_names or [])) if name]
    names = names or list(DEFAULT_MEMBERS[source_type])
    if source_type == SourceType.USER:
        names = names[:1]
    user_ids = [events.new_line_id("user") for _ in names]
    with transaction.atomic():
        simulated = SimulatedChat.objects.create(
            channel=channel, source_type=source_type,
            title=names[0] if source_type == SourceType.USER else title.strip()[:100],
            line_id=user_ids[0] if source_type == SourceType.USER else events.new_line_id(source_type),
            created_by=_username(actor))
        SimulatedMember.objects.bulk_create(
            SimulatedMember(simulated_chat=simulated, user_id=user_id, display_name=name)
            for user_id, name in zip(user_ids, names))
        audit.record(action=AuditAction.SIMULATE, actor=actor, target_type="simulated_chat", target_id=simulated.pk,
                     details={"created": True, "type": source_type, "channel": channel.slug, "members": len(names)})
    if source_type == SourceType.USER:
        first = events.follow_event(user_id=simulated.line_id)
    else:
        first = events.join_event(source_type=source_type, chat_id=simulated.line_id)
    _send(simulated, first, actor=actor)
    return simulated


def send_message(*, simulated_chat: SimulatedChat, member: SimulatedMember, message_type: str = "text",
                 text: str = "", mention_bot: bool = False, upload: Upload | None = None, actor) -> Delivery:
    """`member` sends a message (text, or a sticker, image, …) into the chat; a photo or voice
    message with an `upload` is served to the worker as LINE serves what users send."""
    if member.simulated_chat_id != simulated_chat.pk or member.left_at is not None:
        raise ValidationError(_("That member is not in this chat."))
    if upload is not None and upload.message_type != message_type:
        raise ValidationError(_("Only a photo or a voice message can be uploaded."))
    if message_type == "text":
        text = text.strip()
        if not text:
            raise ValidationError(_("Type a message."))
        if utf16_units(text) > MAX_TEXT_UNITS:
            raise ValidationError(_("LINE takes at most %(limit)d characters in a message.") % {"limit": MAX_TEXT_UNITS})
        channel = simulated_chat.channel
        content = (events.text_content(text, bot_name=channel.name, bot_user_id=channel.bot_user_id)
                   if mention_bot and simulated_chat.source_type != SourceType.USER else events.text_content(text))
    elif message_type in events.MESSAGE_TYPES:
        content = events.media_content(message_type, duration_ms=upload.duration_ms if upload else None)
    else:
        raise ValidationError(_("LINE users cannot send messages of that type."))
    event = events.message_event(
        source=events.source(source_type=simulated_chat.source_type, chat_id=simulated_chat.line_id,
                             user_id=member.user_id),
        content=content)
    if upload is not None:
        forget_expired_content()
    return _send(simulated_chat, event, actor=actor, upload=upload)


def add_member(*, simulated_chat: SimulatedChat, name: str, actor) -> SimulatedMember:
    """Someone joins the group or room (LINE sends memberJoined)."""
    if simulated_chat.source_type == SourceType.USER:
        raise ValidationError(_("A 1:1 chat has one member."))
    name = _member_name(name)
    if not name:
        raise ValidationError(_("Give the member a name."))
    member = SimulatedMember.objects.create(simulated_chat=simulated_chat, user_id=events.new_line_id("user"),
                                            display_name=name)
    _send(simulated_chat, events.member_joined_event(source_type=simulated_chat.source_type,
                                                     chat_id=simulated_chat.line_id, user_ids=[member.user_id]),
          actor=actor)
    return member


def rename_member(*, member: SimulatedMember, name: str, actor) -> SimulatedMember:
    """A new display name (LINE sends no event for it; profiles read it from now on)."""
    name = _member_name(name)
    if not name:
        raise ValidationError(_("Give the member a name."))
    SimulatedMember.objects.filter(pk=member.pk).update(display_name=name)
    if member.simulated_chat.source_type == SourceType.USER:
        # A 1:1 chat is named after its one member, as LINE names it.
        SimulatedChat.objects.filter(pk=member.simulated_chat_id).update(title=name)
    audit.record(action=AuditAction.SIMULATE, actor=actor, target_type="simulated_chat",
                 target_id=member.simulated_chat_id, details={"member_renamed": True})
    member.display_name = name
    return member


def remove_member(*, member: SimulatedMember, actor) -> None:
    """The member leaves (LINE sends memberLeft); their messages keep their name."""
    simulated = member.simulated_chat
    if simulated.source_type == SourceType.USER:
        raise ValidationError(_("A 1:1 chat has one member."))
    if not simulated.members.filter(left_at__isnull=True).exclude(pk=member.pk).exists():
        raise ValidationError(_("Someone has to stay in the chat."))
    SimulatedMember.objects.filter(pk=member.pk).update(left_at=timezone.now())
    _send(simulated, events.member_left_event(source_type=simulated.source_type, chat_id=simulated.line_id,
                                              user_ids=[member.user_id]), actor=actor)


def set_trouble(*, simulated_chat: SimulatedChat, trouble: str, actor) -> None:
    """How the emulator answers this chat's replies and pushes from now on."""
    if trouble not in Trouble.values:
        raise ValidationError(_("Unknown kind of trouble."))
    SimulatedChat.objects.filter(pk=simulated_chat.pk).update(trouble=trouble)
    audit.record(action=AuditAction.SIMULATE, actor=actor, target_type="simulated_chat", target_id=simulated_chat.pk,
                 details={"trouble": trouble or "none"})
    simulated_chat.trouble = trouble


def delete_simulated_chat(*, simulated_chat: SimulatedChat, actor) -> None:
    """The chat and its messages go as any chat's do (audited, refused under legal hold)."""
    with transaction.atomic():
        chat = simulated_chat.chat()
        if chat is not None:
            chat_services.delete_chats(chats=[chat], actor=actor)
        audit.record(action=AuditAction.SIMULATE, actor=actor, target_type="simulated_chat",
                     target_id=simulated_chat.pk, details={"deleted": True})
        names = list(simulated_chat.events.exclude(content="").values_list("content", flat=True))
        simulated_chat.delete()
        if names:
            # Once the rows are surely gone; a file that stays is the orphan sweep's.
            transaction.on_commit(lambda: delete_files(names))


def deliver(*, channel: LineChannel, events_: list[dict]) -> Delivery:
    """Signs the events with the channel's secret and hands them to the webhook view.

    In this process, as an HttpRequest carrying exactly the bytes and headers LINE would
    POST: the view checks the signature, size and JSON as for LINE. Not a POST to the
    site's own URL, which the site may not know (proxies, HTTPS, ALLOWED_HOSTS) and which
    would hold a second web worker while this one waits.
    """
    raw = events.body(destination=channel.bot_user_id, events=events_)
    request = WSGIRequest({
        "REQUEST_METHOD": "POST", "PATH_INFO": reverse("conversations:webhook", args=[channel.slug]),
        "SCRIPT_NAME": "", "QUERY_STRING": "", "SERVER_NAME": "localhost", "SERVER_PORT": "443",
        "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1", "wsgi.url_scheme": "https",
        "wsgi.input": io.BytesIO(raw), "wsgi.errors": sys.stderr, "wsgi.version": (1, 0),
        "wsgi.multithread": True, "wsgi.multiprocess": True, "wsgi.run_once": False,
        "CONTENT_TYPE": "application/json; charset=utf-8", "CONTENT_LENGTH": str(len(raw)),
        "HTTP_USER_AGENT": "LineBotWebhook/2.0",
        "HTTP_X_LINE_SIGNATURE": events.signature(body=raw, channel_secret=channel.channel_secret),
    })
    request.from_simulator = True
    response = views.webhook(request, slug=channel.slug)
    try:
        answer = json.loads(response.content)
    except ValueError:
        answer = {}
    return Delivery(status=response.status_code, body=answer if isinstance(answer, dict) else {})


def _send(simulated: SimulatedChat, event: dict, *, actor, upload: Upload | None = None) -> Delivery:
    """Records the tokens LINE would have issued with the event (and the content it would
    serve for it), then delivers it."""
    message = event.get("message") or {}
    channel = simulated.channel
    if not channel.bot_user_id:
        channel.bot_user_id = events.new_line_id("user")
        LineChannel.objects.filter(pk=channel.pk).update(bot_user_id=channel.bot_user_id)
    mentions = (message.get("mention") or {}).get("mentionees", [])
    # Stored before the webhook runs: a worker may reply before this request ends.
    record = SimulatedEvent(
        simulated_chat=simulated, event_type=event["type"], message_type=message.get("type", ""),
        webhook_event_id=event["webhookEventId"], line_message_id=message.get("id", ""),
        sender_id=event["source"].get("userId", ""), reply_token=event.get("replyToken", ""),
        quote_token=message.get("quoteToken", ""), mentions_bot=any(m.get("isSelf") for m in mentions),
        sent_at=timezone.now(), sent_by=_username(actor))
    if upload is not None:
        record.content_type = upload.content_type
        record.content.save(f"content{CONTENT_EXTENSIONS.get(upload.content_type, '')}", ContentFile(upload.data),
                            save=False)
    try:
        record.save()
    except BaseException:
        if record.content:
            delete_files([record.content.name])
        raise
    delivery = deliver(channel=channel, events_=[event])
    unstored = ""
    if event["type"] == "message" and delivery.status == 200 and delivery.body.get("ignored"):
        # Acknowledged, not stored: its sender opted out, or group memory "addressed" and not
        # addressed to the bot (`ingest`). The page shows it was said; nothing keeps its text.
        unstored = OPTED_OUT if commands.opted_out(channel=channel, line_user_id=record.sender_id) else NOT_ADDRESSED
    forget = {"content": "", "content_type": ""} if unstored and record.content else {}
    SimulatedEvent.objects.filter(pk=record.pk).update(webhook_status=delivery.status, unstored_reason=unstored,
                                                       **forget)
    if forget:
        # No worker will fetch it, and the page says nothing on the server keeps such a message.
        delete_files([record.content.name])
    audit.record(action=AuditAction.SIMULATE, actor=actor, target_type="simulated_chat", target_id=simulated.pk,
                 details={"event": event["type"], "message_type": record.message_type,
                          "mentions_bot": record.mentions_bot, "webhook_status": delivery.status,
                          **({"uploaded_bytes": len(upload.data)} if upload else {})})
    return Delivery(status=delivery.status, body=delivery.body, event_id=record.pk)


def _member_name(name: str) -> str:
    return " ".join((name or "").split())[:MEMBER_NAME_MAX]


def _username(actor) -> str:
    return actor if isinstance(actor, str) else getattr(actor, "get_username", lambda: "")()
