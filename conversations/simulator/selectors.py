"""What the simulator page shows: the chat as LINE would, and what the model was sent."""
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import Q
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from models_registry.backends import SamplingParams, Turn
from models_registry.models import BackendKind, ModelBackend, SamplingPreset
from models_registry.services import allowed_backends, sampling_params

from .. import answering, labels, notices
from .. import selectors as chat_selectors
from ..line.text import MAX_MESSAGES_PER_CALL, split_text, utf16_units
from ..media.models import MediaKind, MessageMedia
from ..models import BOT_EVENT_TYPES, Chat, Direction, Message, Status
from .models import UNSTORED_REASONS, EmulatorCall, SimulatedChat, SimulatedEvent

TIMELINE_MESSAGES = 60
UNSTORED = "unstored"  # the status shown for a message the webhook did not store
SENDING_ENDPOINTS = ("reply", "push")
# The bot's own texts, sent without a model: the privacy notice and the answer to a non-text message.
OWN_TEXT_TYPES = (notices.NOTICE_TYPE, notices.NON_TEXT_REPLY_TYPE)
MEDIA_LABELS = {"sticker": gettext_lazy("Sticker"), "image": gettext_lazy("Photo"), "video": gettext_lazy("Video"),
                "audio": gettext_lazy("Voice message"), "file": gettext_lazy("File"),
                "location": gettext_lazy("Location")}


def simulated_chats() -> list[SimulatedChat]:
    return list(SimulatedChat.objects.select_related("channel").order_by("-created_at", "-id")[:100])


def timeline(*, simulated_chat: SimulatedChat, now: datetime | None = None) -> dict:
    """The chat as its members would see it in LINE, oldest first, as JSON-ready dicts.

    Members' messages come from the conversation log, and those the webhook acknowledged
    without storing them (group memory "addressed", an opted-out sender) from the simulator's
    record of the event: who sent what kind of message, not its text. The bot's as LINE received them:
    one bubble per message of each reply or push the emulator accepted, quoting where a
    quote token was used, marked with what it was (an answer, the privacy notice sent on
    follow and join, the automatic answer to a non-text message). The texts are read from
    the logged message (so redaction and retention apply here too), cut where the calls
    cut them.
    """
    now = now or timezone.now()
    chat = simulated_chat.chat()
    members = {member.user_id: member for member in simulated_chat.members.all()}
    # Members' messages: the bot's follow/join/leave rows are the log's, not something LINE shows.
    inbound = (list(Message.objects.filter(chat=chat, direction=Direction.IN).exclude(message_type__in=BOT_EVENT_TYPES)
                    .select_related("media").order_by("-id")[:TIMELINE_MESSAGES])[::-1] if chat else [])
    # The whole chat unless it is longer than the page shows: then from its first member message shown.
    since = inbound[0].event_at - timedelta(minutes=1) if len(inbound) == TIMELINE_MESSAGES else None
    # Answers to those messages, and the bot's own texts that answer no member's message (the
    # notice on follow and join: it answers the event's row, or nothing if logged before those).
    own = Q(message_type__in=OWN_TEXT_TYPES, **({"event_at__gte": since} if since else {})) & (
        Q(reply_to__isnull=True) | Q(reply_to__message_type__in=BOT_EVENT_TYPES))
    answers = {answer.pk: answer for answer in Message.objects.filter(
        Q(reply_to__in=[m.pk for m in inbound]) | own, chat=chat, direction=Direction.OUT,
    ).select_related("backend", "preset", "reply_to")} if chat else {}
    calls = list(simulated_chat.calls.filter(**({"created_at__gte": since} if since else {})).order_by("id"))
    sim_events = {e.line_message_id: e for e in SimulatedEvent.objects.filter(
        simulated_chat=simulated_chat, line_message_id__in=[m.line_message_id for m in inbound if m.line_message_id])}
    quoted = _quotable(inbound, sim_events, members)
    items: list[tuple[datetime, int, dict]] = []
    for message in inbound:
        items.append((message.event_at, 0, _user_item(message, members, sim_events.get(message.line_message_id))))
    # Messages the webhook acknowledged without storing them: the members saw them all the same.
    unstored = SimulatedEvent.objects.filter(simulated_chat=simulated_chat, event_type="message").exclude(
        unstored_reason="").filter(**({"sent_at__gte": since} if since else {})).order_by("-id")
    for event in list(unstored[:TIMELINE_MESSAGES])[::-1]:
        items.append((event.sent_at, 0, _unstored_item(event, members)))
    last_call_of: dict[int, int] = {}
    for call in calls:
        if call.endpoint in SENDING_ENDPOINTS and call.answer_id and call.status == 200:
            last_call_of[call.answer_id] = call.pk
    delivered_at = [call.created_at for call in calls if call.endpoint in SENDING_ENDPOINTS and call.status == 200]
    placed = set()
    for call in calls:
        item = _call_item(call, answers.get(call.answer_id), quoted, now=now, delivered_at=delivered_at)
        if item is not None:
            items.append((call.created_at, 1, item))
        if last_call_of.get(call.answer_id) == call.pk and call.answer_id in answers:
            items.append((call.created_at, 2, _answer_item(answers[call.answer_id], chat=chat)))
            placed.add(call.answer_id)
    for answer in answers.values():
        if answer.pk not in placed:
            # Stored, not (yet) delivered: under its question.
            items.append((answer.reply_to.event_at if answer.reply_to else answer.event_at, 3,
                          _answer_item(answer, chat=chat)))
    items.sort(key=lambda entry: (entry[0], entry[1]))
    # A member's message, or a notice the worker has yet to send.
    waiting = any(m.status in (Status.PENDING, Status.GENERATING) for m in inbound) or any(
        a.message_type == notices.NOTICE_TYPE and a.status in (Status.PENDING, Status.GENERATING)
        for a in answers.values())
    return {
        "items": [item for _, _, item in items],
        "waiting": waiting,
        "calls": [_log_entry(call) for call in calls[-30:]],
        "trouble": simulated_chat.trouble,
        "now": now.isoformat(),
    }


def _user_item(message: Message, members: dict, event: SimulatedEvent | None) -> dict:
    member = members.get(message.line_user_id)
    return {
        "kind": "user", "id": message.pk, "at": message.event_at.isoformat(),
        "speaker": member.display_name if member else message.line_user_id[-6:],
        "speaker_id": message.line_user_id, "type": message.message_type,
        "text": _shown_text(message), "mentions_bot": bool(event and event.mentions_bot),
        "status": message.status, "status_label": message.get_status_display(), "skip_reason": message.skip_reason,
        "skip_reason_label": str(labels.skip_reason_label(message.skip_reason)), "media": _media(message),
    }


def _media(message: Message) -> dict | None:
    """The photo or voice message the worker stored for a message: links to the audited staff
    media view (never a public URL), or None while there is none."""
    try:
        media = message.media
    except MessageMedia.DoesNotExist:
        return None
    if not media.file:
        return None

    def url(variant: str) -> str:
        return reverse("admin:conversations_message_media", args=[message.pk, variant])

    return {"kind": media.kind, "file": url("file"),
            "thumbnail": url("thumbnail") if media.kind == MediaKind.IMAGE else "",
            "width": media.width, "height": media.height}


def _unstored_item(event: SimulatedEvent, members: dict) -> dict:
    """A member's message the bot did not store: who sent it and its kind, never its text
    (kept nowhere; the page shows what it was sent while it stays open)."""
    member = members.get(event.sender_id)
    media = event.message_type != "text"
    return {
        "kind": "user", "id": None, "event": event.pk, "at": event.sent_at.isoformat(),
        "speaker": member.display_name if member else event.sender_id[-6:], "speaker_id": event.sender_id,
        "type": event.message_type,
        "text": f"[{MEDIA_LABELS.get(event.message_type, event.message_type)}]" if media else "",
        "mentions_bot": event.mentions_bot, "status": UNSTORED, "status_label": _("not stored"),
        "skip_reason": event.unstored_reason,
        "skip_reason_label": str(UNSTORED_REASONS.get(event.unstored_reason, event.unstored_reason)),
    }


def _shown_text(message: Message) -> str:
    if message.unsent:
        return _("(unsent)")
    if message.message_type != "text":
        label = f"[{MEDIA_LABELS.get(message.message_type, message.message_type)}]"
        # A voice message's text is its transcript.
        return f"{label} {message.text}" if message.message_type == "audio" and message.text else label
    return message.text


def _quotable(inbound: list[Message], sim_events: dict, members: dict) -> dict[str, dict]:
    """Quote tokens the bot may use, mapped to what the quote shows."""
    by_line_id = {m.line_message_id: m for m in inbound}
    quotes = {}
    for line_id, event in sim_events.items():
        message = by_line_id.get(line_id)
        if message is not None and event.quote_token:
            member = members.get(message.line_user_id)
            quotes[event.quote_token] = {"speaker": member.display_name if member else "",
                                         "text": _shown_text(message)[:120]}
    return quotes


def _call_item(call: EmulatorCall, answer: Message | None, quoted: dict, *, now: datetime,
               delivered_at: list[datetime]) -> dict | None:
    at = call.created_at.isoformat()
    if call.endpoint == "loading":
        if call.status != 202:
            return _line_error_item(call)
        until = call.created_at + timedelta(seconds=call.loading_seconds or 0)
        # LINE hides the animation when a message arrives or the seconds run out.
        active = now < until and not any(call.created_at <= moment for moment in delivered_at)
        return {"kind": "loading", "at": at, "seconds": call.loading_seconds, "active": active}
    if call.endpoint not in SENDING_ENDPOINTS:
        return None
    if call.status != 200:
        return _line_error_item(call)
    # message_type: "notice" (the privacy notice), "non_text_reply", "text" (a model's answer or the
    # apology), "" for a call no logged message accounts for.
    return {"kind": "bot", "at": at, "via": call.endpoint, "answer_id": call.answer_id,
            "message_type": answer.message_type if answer else "", "bubbles": _bubbles(call, answer, quoted)}


def _line_error_item(call: EmulatorCall) -> dict:
    return {"kind": "line_error", "at": call.created_at.isoformat(), "endpoint": call.endpoint,
            "status": call.status, "error": call.error,
            "details": [f"{d.get('property') or 'body'}: {d.get('message')}" for d in call.details][:5]}


def _bubbles(call: EmulatorCall, answer: Message | None, quoted: dict) -> list[dict]:
    texts = _texts_of(call, answer)
    bubbles = []
    for shape, text in zip(call.messages, texts):
        bubble = {"type": shape.get("type"), "text": text}
        token = shape.get("quote_token")
        if token:
            bubble["quote"] = quoted.get(token) or {"speaker": "", "text": _("a message not shown here")}
        bubbles.append(bubble)
    return bubbles


def _texts_of(call: EmulatorCall, answer: Message | None) -> list[str]:
    """The text of each message of a call: from the logged answer when the call's pieces
    match it, else what the call itself kept (only messages no answer holds)."""
    units = [shape.get("units") for shape in call.messages]
    if answer is not None and call.call_index is not None:
        pieces = split_text(answer.text) if answer.text else []
        start = call.call_index * MAX_MESSAGES_PER_CALL
        mine = pieces[start:start + len(units)]
        if [utf16_units(piece) for piece in mine] == units:
            return mine
        if answer.redacted or answer.erased:
            return [answer.text] + [""] * (len(units) - 1)
    return [shape.get("text") or _("(a message of %(n)s characters; not in the log)") % {"n": shape.get("units", "?")}
            for shape in call.messages]


def _answer_item(answer: Message, *, chat: Chat) -> dict:
    if answer.message_type in OWN_TEXT_TYPES:
        return _own_text_item(answer)
    backend = answer.backend
    return {
        "kind": "answer", "id": answer.pk, "at": answer.event_at.isoformat(), "status": answer.status,
        "status_label": answer.get_status_display(), "latency_ms": answer.latency_ms,
        "prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens,
        "backend": backend.name if backend else "", "local": backend.is_local if backend else None,
        "preset": answer.preset.name if answer.preset else "", "error": answer.error if not backend else "",
        "hint": no_model_hint(preset=answer.preset, error=answer.error, local_only=chat.local_only)
        if not backend and answer.error else "",
        "delivered_calls": answer.delivered_calls,
    }


def _own_text_item(message: Message) -> dict:
    """Under the bot's own text (no model wrote it, so no figures and no prompt): whether it was sent."""
    return {
        "kind": "own_text", "id": message.pk, "at": message.event_at.isoformat(), "type": message.message_type,
        "status": message.status, "status_label": message.get_status_display(), "skip_reason": message.skip_reason,
        "error": message.error, "delivered_calls": message.delivered_calls,
    }


def _log_entry(call: EmulatorCall) -> dict:
    return {"at": call.created_at.isoformat(), "endpoint": call.endpoint, "method": call.method,
            "status": call.status, "error": call.error, "messages": len(call.messages),
            "retry_key": bool(call.retry_key)}


def no_model_hint(*, preset: SamplingPreset | None, error: str, local_only: bool = False) -> str:
    """What to do when no backend answered, in words a newcomer can act on."""
    if preset is None:
        return _("No preset answers this chat: add one under Sampling presets and make it the default.")
    backends = allowed_backends(preset=preset, local_only=local_only)
    if not backends:
        return error
    backend = backends[0]
    if backend.kind == BackendKind.OLLAMA:
        if "has no model" in error:
            return _("Ollama at %(url)s does not have %(model)s — run `ollama pull %(model)s` there.") % {
                "url": backend.base_url, "model": backend.model}
        return _("No model reachable at %(url)s — install Ollama (https://ollama.com), start it and run "
                 "`ollama pull %(model)s`.") % {"url": backend.base_url, "model": backend.model}
    return _("No model reachable at %(url)s: %(error)s") % {"url": backend.base_url, "error": error}


@dataclass
class SentPrompt:
    """What a model was sent for one answer, rebuilt with the pipeline's own builder."""

    answer: Message
    preset: SamplingPreset | None
    backend: ModelBackend | None
    turns: list[Turn] = field(default_factory=list)
    params: SamplingParams | None = None
    masked: bool = False
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "answer": self.answer.pk, "preset": self.preset.name if self.preset else None,
            "backend": {"name": self.backend.name, "kind": self.backend.kind, "model": self.backend.model,
                        "local": self.backend.is_local} if self.backend else None,
            "turns": [{"role": turn.role, "content": turn.content} for turn in self.turns],
            "params": {"temperature": self.params.temperature, "top_p": self.params.top_p,
                       "top_k": self.params.top_k, "max_new_tokens": self.params.max_new_tokens,
                       "repetition_penalty": self.params.repetition_penalty} if self.params else None,
            "masked": self.masked, "notes": self.notes,
        }


def prompt_sent(*, answer: Message) -> SentPrompt:
    """The system prompt and turns for this answer, masked as its backend got them.

    Rebuilt, not recorded: recording would keep a second copy of the conversation that
    redaction, erasure and retention do not reach, and of real chats too. The builder and
    masking are the pipeline's (`answering.prompt_turns`, `answering.masked_for_cloud`), so
    the rebuild is what was sent unless the preset or the history changed since; it says so.
    """
    inbound = answer.reply_to
    chat = answer.chat
    preset = answer.preset or chat_selectors.preset_for_chat(chat=chat)
    result = SentPrompt(answer=answer, preset=preset, backend=answer.backend)
    if inbound is None or preset is None:
        result.notes.append(_("This answer no longer has its question, so its prompt cannot be rebuilt."))
        return result
    if result.backend is None:
        backends = allowed_backends(preset=preset, local_only=chat.local_only)
        result.backend = backends[0] if backends else None
        result.notes.append(_("No backend answered; this is what the first one was sent."))
    turns = answering.prompt_turns(message=inbound, preset=preset)
    result.turns = answering.masked_for_cloud(chat)(result.backend, turns) if result.backend else turns
    result.masked = result.turns != turns
    result.params = sampling_params(preset=preset)
    if preset.updated_at > answer.created_at:
        result.notes.append(_("The preset was changed after this answer: this is what it sends now."))
    result.notes.append(_("Rebuilt from the log with the pipeline's own builder: messages redacted, erased or "
                          "unsent since are left out, as they would be now."))
    return result
