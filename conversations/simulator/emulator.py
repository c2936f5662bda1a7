"""The Messaging API of simulated channels: accepts what LINE accepts, refuses what LINE refuses.

Requests arrive as LINE would receive them (method, path, headers, the JSON bytes the SDK
wrote; see `transport`). Bodies are checked against LINE's documented limits (5 messages a
call, 5,000 UTF-16 units a text, loading seconds) and line-bot-sdk's own request models,
which are generated from LINE's OpenAPI description. Reply tokens work once, within
REPLY_TOKEN_LIFETIME of their event; a retry key accepted once is answered 409 after.
The data host's content endpoint serves what the simulator uploaded with an event, for
CONTENT_LIFETIME (LINE, too, keeps content for a while only).
Every call is recorded (`EmulatorCall`) for the simulator page: web and workers are
different processes, so the database is where they meet.
"""
import json
import re
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from ..line.client import retry_key
from ..line.text import MAX_MESSAGES_PER_CALL, MAX_TEXT_UNITS, utf16_units
from ..media.files import delete_files
from ..models import Direction, LineChannel, Message, SourceType
from .models import EmulatorCall, SimulatedChat, SimulatedEvent, SimulatedMember, Trouble

# LINE: "The reply token must be used within one minute after receiving the webhook."
REPLY_TOKEN_LIFETIME = timedelta(minutes=1)
# LINE keeps what users send "for a certain period" only; the emulator keeps an upload this long.
CONTENT_LIFETIME = timedelta(days=1)
TEXT_TYPES = ("text", "textV2")
# Sent messages of these types get a quote token back, as LINE documents.
QUOTABLE_TYPES = ("text", "textV2", "sticker")
# How many of a chat's recent answers a push is matched against, by retry key.
ANSWERS_SEARCHED = 20
CALLS_PER_ANSWER_SEARCHED = 10

LINE_ID = re.compile(r"[UCR][0-9a-f]{32}")
USER_ID = re.compile(r"U[0-9a-f]{32}")
UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

AUTH_FAILED = "Authentication failed. Confirm that the access token in the authorization header is valid."
INVALID_REPLY_TOKEN = "Invalid reply token"
RATE_LIMITED = "The API rate limit has been exceeded. Try again later."
SERVER_ERROR = "Internal server error"
RETRY_KEY_ACCEPTED = "The retry key is already accepted"


@dataclass(frozen=True)
class EmulatedResponse:
    status: int
    body: dict
    headers: dict[str, str] = field(default_factory=dict)
    data: bytes | None = None  # a binary answer (the content endpoint's) instead of JSON

    @property
    def content(self) -> bytes:
        return self.data if self.data is not None else json.dumps(self.body, ensure_ascii=False).encode()


@dataclass
class _Call:
    """What is recorded of one call, filled in as it is handled."""

    channel: LineChannel
    method: str
    path: str
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    endpoint: str = "other"
    simulated_chat: SimulatedChat | None = None
    messages: list = field(default_factory=list)
    retry_key: str = ""
    reply_token: str = ""
    loading_seconds: int | None = None
    answer_id: int | None = None
    call_index: int | None = None

    def record(self, response: EmulatedResponse, *, sent: list | None = None) -> EmulatorCall:
        return EmulatorCall.objects.create(**self._fields(response, sent=sent))

    def _fields(self, response: EmulatedResponse, *, sent: list | None) -> dict:
        body = response.body if response.status >= 300 else {}
        return {
            "channel": self.channel, "simulated_chat": self.simulated_chat, "endpoint": self.endpoint,
            "method": self.method, "path": self.path[:200], "status": response.status,
            "error": str(body.get("message", ""))[:300], "details": body.get("details", []),
            "messages": self.messages, "sent": sent or [], "retry_key": self.retry_key,
            "reply_token": self.reply_token, "loading_seconds": self.loading_seconds,
            "answer_id": self.answer_id, "call_index": self.call_index, "request_id": self.request_id,
            "created_at": timezone.now(),
        }

    def respond(self, status: int, body: dict, *, sent: list | None = None) -> EmulatedResponse:
        response = EmulatedResponse(status, body, {"x-line-request-id": self.request_id})
        self.record(response, sent=sent)
        return response


def handle(*, channel_id: int, method: str, path: str, headers: dict[str, str], body: bytes) -> EmulatedResponse:
    """Answers one Messaging API request of a simulated channel, as LINE would."""
    channel = LineChannel.objects.filter(pk=channel_id, is_simulated=True).first()
    if channel is None:
        return EmulatedResponse(401, {"message": AUTH_FAILED})
    call = _Call(channel=channel, method=method.upper(), path=path)
    for route_method, pattern, endpoint, handler in _ROUTES:
        match = pattern.fullmatch(path)
        if match and route_method == call.method:
            call.endpoint = endpoint
            break
    else:
        return call.respond(404, {"message": "Not found"})
    headers = {name.lower(): value for name, value in headers.items()}
    if headers.get("authorization") != f"Bearer {channel.access_token}":
        return call.respond(401, {"message": AUTH_FAILED})
    if call.method == "GET":
        return handler(call, **match.groupdict())
    try:
        payload = json.loads(body or b"null")
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        return call.respond(400, _bad_request([{"message": "The request body must be a JSON object", "property": ""}]))
    return handler(call, payload=payload, headers=headers)


# --- Sending ----------------------------------------------------------------------------


def _reply(call: _Call, *, payload: dict, headers: dict) -> EmulatedResponse:
    call.messages = _shapes(payload.get("messages"))
    token = payload.get("replyToken")
    call.reply_token = token[:64] if isinstance(token, str) else ""
    event = (SimulatedEvent.objects.select_related("simulated_chat")
             .filter(simulated_chat__channel=call.channel, reply_token=call.reply_token).first()
             if call.reply_token else None)
    if event is not None:
        call.simulated_chat = event.simulated_chat
        call.answer_id, call.call_index = _answer_to(event), 0
    problems = request_problems("ReplyMessageRequest", payload)
    if problems:
        return call.respond(400, _bad_request(problems))
    trouble = _trouble(call, reply=True)
    if trouble:
        return trouble
    now = timezone.now()
    fresh = SimulatedEvent.objects.filter(pk=event.pk, reply_used_at__isnull=True,
                                          sent_at__gte=now - REPLY_TOKEN_LIFETIME) if event else None
    # One conditional UPDATE: of two calls with one token, one wins.
    if fresh is None or not fresh.update(reply_used_at=now):
        return call.respond(400, {"message": INVALID_REPLY_TOKEN})
    return _delivered(call, payload["messages"])


def _push(call: _Call, *, payload: dict, headers: dict) -> EmulatedResponse:
    call.messages = _shapes(payload.get("messages"))
    key = headers.get("x-line-retry-key")
    target = payload.get("to") if isinstance(payload.get("to"), str) else ""
    call.simulated_chat = SimulatedChat.objects.filter(channel=call.channel, line_id=target).first() if target else None
    if key is not None:
        call.retry_key = key[:64]
        if not UUID.fullmatch(key):
            return call.respond(400, {"message": "The value for the 'X-Line-Retry-Key' header is invalid"})
    if call.simulated_chat and key:
        call.answer_id, call.call_index = _answer_by_retry_key(call.simulated_chat, key)
    problems = request_problems("PushMessageRequest", payload)
    if not problems and not LINE_ID.fullmatch(target):
        problems = [{"message": "Invalid ID", "property": "to"}]
    if problems:
        return call.respond(400, _bad_request(problems))
    if call.simulated_chat is None:
        # A well-formed id of no chat this bot is in (or a user who is not its friend).
        return call.respond(400, {"message": "Failed to send messages"})
    trouble = _trouble(call, reply=False)
    if trouble:
        return trouble
    accepted = _accepted(call) if key else None
    if accepted is not None:
        return accepted
    return _delivered(call, payload["messages"])


def _accepted(call: _Call) -> EmulatedResponse | None:
    """409 with the first call's sent messages, if LINE took this retry key before."""
    earlier = EmulatorCall.objects.filter(channel=call.channel, retry_key=call.retry_key, status=200).first()
    if earlier is None:
        return None
    response = EmulatedResponse(409, {"message": RETRY_KEY_ACCEPTED, "sentMessages": earlier.sent},
                                {"x-line-request-id": call.request_id, "x-line-accepted-request-id": earlier.request_id})
    call.record(response)
    return response


def _delivered(call: _Call, messages: list[dict]) -> EmulatedResponse:
    sent = [{"id": str(secrets.randbelow(9 * 10**17) + 10**17),
             **({"quoteToken": secrets.token_urlsafe(64)} if message["type"] in QUOTABLE_TYPES else {})}
            for message in messages]
    if call.answer_id is None:
        # Not a message from the conversation log (a call made by hand, or by code that logs
        # nothing): the page can read the text from nowhere else.
        for shape, message in zip(call.messages, messages):
            if message["type"] in TEXT_TYPES:
                shape["text"] = message["text"]
    response = EmulatedResponse(200, {"sentMessages": sent}, {"x-line-request-id": call.request_id})
    try:
        with transaction.atomic():
            call.record(response, sent=sent)
    except IntegrityError:
        # A push with the same retry key was accepted a moment ago, by another worker.
        return _accepted(call)
    return response


def _trouble(call: _Call, *, reply: bool) -> EmulatedResponse | None:
    """The answer the simulated chat's "LINE trouble" setting asks for, if any."""
    chat = call.simulated_chat
    if chat is None:
        return None
    mode = SimulatedChat.objects.filter(pk=chat.pk).values_list("trouble", flat=True).first()
    once = {Trouble.RATE_LIMITED_ONCE: (429, RATE_LIMITED), Trouble.SERVER_ERROR_ONCE: (500, SERVER_ERROR)}
    if mode in once and SimulatedChat.objects.filter(pk=chat.pk, trouble=mode).update(trouble=Trouble.NONE):
        status, message = once[mode]
        return call.respond(status, {"message": message})
    if mode == Trouble.SERVER_ERROR_ALWAYS:
        return call.respond(500, {"message": SERVER_ERROR})
    if mode == Trouble.EXPIRED_REPLY_TOKEN and reply:
        return call.respond(400, {"message": INVALID_REPLY_TOKEN})
    return None


def _answer_to(event: SimulatedEvent) -> int | None:
    """The logged message a reply with this event's token delivers, if any: the answer to
    the event's message, or what the bot logged for the event itself (the privacy notice
    on follow and join: the answer to the event's row, which holds its webhookEventId; a
    notice logged before events had rows holds it itself)."""
    outbound = Message.objects.filter(direction=Direction.OUT, chat__channel_id=event.simulated_chat.channel_id,
                                      chat__line_id=event.simulated_chat.line_id)
    if event.line_message_id:
        outbound = outbound.filter(reply_to__line_message_id=event.line_message_id)
    elif event.webhook_event_id:
        outbound = outbound.filter(Q(reply_to__webhook_event_id=event.webhook_event_id)
                                   | Q(webhook_event_id=event.webhook_event_id))
    else:
        return None
    return outbound.values_list("id", flat=True).first()


def _answer_by_retry_key(chat: SimulatedChat, key: str) -> tuple[int | None, int | None]:
    """Which answer, and which of its calls, a retry key was made from (answering.retry_key)."""
    answers = (Message.objects.filter(chat__channel_id=chat.channel_id, chat__line_id=chat.line_id,
                                      direction=Direction.OUT)
               .order_by("-id").values_list("id", flat=True)[:ANSWERS_SEARCHED])
    for answer_id in answers:
        for index in range(CALLS_PER_ANSWER_SEARCHED):
            if retry_key(message_id=answer_id, call_index=index) == key:
                return answer_id, index
    return None, None


def _loading(call: _Call, *, payload: dict, headers: dict) -> EmulatedResponse:
    chat_id = payload.get("chatId") if isinstance(payload.get("chatId"), str) else ""
    call.simulated_chat = SimulatedChat.objects.filter(channel=call.channel, line_id=chat_id).first()
    seconds = payload.get("loadingSeconds")
    call.loading_seconds = seconds if type(seconds) is int and 0 <= seconds < 2**15 else None
    problems = request_problems("ShowLoadingAnimationRequest", payload)
    if not problems and not USER_ID.fullmatch(chat_id):
        # The loading animation exists only in one-on-one chats with users.
        problems = [{"message": "Invalid user ID", "property": "chatId"}]
    if problems:
        return call.respond(400, _bad_request(problems))
    return call.respond(202, {})


# --- Content (LINE's data host) ----------------------------------------------------------


def _content(call: _Call, *, message_id: str) -> EmulatedResponse:
    """What a member sent with a photo or voice message: the simulator's upload, while LINE
    would still keep it (CONTENT_LIFETIME); else LINE's 404, as for an unknown or expired id."""
    event = (SimulatedEvent.objects.select_related("simulated_chat")
             .filter(simulated_chat__channel=call.channel, line_message_id=message_id).first()
             if message_id.isdigit() else None)
    if event is not None:
        call.simulated_chat = event.simulated_chat
    if event is None or not event.content or event.sent_at < timezone.now() - CONTENT_LIFETIME:
        return call.respond(404, {"message": "Not found"})
    try:
        with event.content.open("rb") as handle:
            data = handle.read()
    except OSError:
        return call.respond(404, {"message": "Not found"})
    response = EmulatedResponse(200, {}, {"x-line-request-id": call.request_id, "Content-Type": event.content_type},
                                data=data)
    call.record(response)
    return response


def forget_expired_content(*, now: datetime | None = None) -> int:
    """Deletes the uploads older than CONTENT_LIFETIME (already answered 404), their files once
    this commits; returns how many. Run with each upload and by the daily purge."""
    rows = SimulatedEvent.objects.filter(sent_at__lt=(now or timezone.now()) - CONTENT_LIFETIME).exclude(content="")
    names = list(rows.values_list("content", flat=True))
    forgotten = rows.update(content="", content_type="")
    if names:
        transaction.on_commit(lambda: delete_files(names))
    return forgotten


# --- Reading profiles --------------------------------------------------------------------


def _profile(call: _Call, *, user_id: str) -> EmulatedResponse:
    """A friend's profile: in the simulator, the member of a simulated 1:1 chat."""
    chat = SimulatedChat.objects.filter(channel=call.channel, source_type=SourceType.USER, line_id=user_id).first()
    member = chat.members.filter(user_id=user_id).first() if chat else None
    call.simulated_chat = chat
    if member is None:
        return call.respond(404, {"message": "Not found"})
    return call.respond(200, {"displayName": member.display_name, "userId": user_id, "language": "en"})


def _group_summary(call: _Call, *, group_id: str) -> EmulatedResponse:
    chat = SimulatedChat.objects.filter(channel=call.channel, source_type=SourceType.GROUP, line_id=group_id).first()
    call.simulated_chat = chat
    if chat is None:
        return call.respond(404, {"message": "Not found"})
    return call.respond(200, {"groupId": group_id, "groupName": chat.title or "Group"})


def _member_profile(call: _Call, *, chat_id: str, user_id: str) -> EmulatedResponse:
    chat = SimulatedChat.objects.filter(channel=call.channel, line_id=chat_id).exclude(
        source_type=SourceType.USER).first()
    call.simulated_chat = chat
    member = (SimulatedMember.objects.filter(simulated_chat=chat, user_id=user_id, left_at__isnull=True).first()
              if chat else None)
    if member is None:
        return call.respond(404, {"message": "Not found"})
    return call.respond(200, {"displayName": member.display_name, "userId": user_id})


def _bot_info(call: _Call) -> EmulatedResponse:
    channel = call.channel
    return call.respond(200, {"userId": channel.bot_user_id, "basicId": f"@{channel.slug[:16]}",
                              "displayName": channel.name[:20], "chatMode": "bot", "markAsReadMode": "auto"})


_ROUTES = [
    ("POST", re.compile(r"/v2/bot/message/reply"), "reply", _reply),
    ("POST", re.compile(r"/v2/bot/message/push"), "push", _push),
    ("POST", re.compile(r"/v2/bot/chat/loading/start"), "loading", _loading),
    ("GET", re.compile(r"/v2/bot/profile/(?P<user_id>[^/]+)"), "profile", _profile),
    ("GET", re.compile(r"/v2/bot/group/(?P<group_id>[^/]+)/summary"), "group_summary", _group_summary),
    ("GET", re.compile(r"/v2/bot/(?:group|room)/(?P<chat_id>[^/]+)/member/(?P<user_id>[^/]+)"), "member_profile",
     _member_profile),
    ("GET", re.compile(r"/v2/bot/info"), "bot_info", _bot_info),
    ("GET", re.compile(r"/v2/bot/message/(?P<message_id>[^/]+)/content"), "content", _content),
]


# --- What LINE accepts ---------------------------------------------------------------------


def request_problems(model_name: str, payload: dict) -> list[dict[str, str]]:
    """LINE's `details` for what is wrong with a request body; empty when LINE takes it.

    First the documented limits the schema does not state, then line-bot-sdk's request
    model (types, required fields, message types, at most 5 messages).
    """
    return _limit_problems(payload) or _model_problems(model_name, payload)


def _limit_problems(payload: dict) -> list[dict[str, str]]:
    problems = []
    messages = payload.get("messages")
    if isinstance(messages, list):
        if not 1 <= len(messages) <= MAX_MESSAGES_PER_CALL:
            problems.append({"message": f"Size must be between 1 and {MAX_MESSAGES_PER_CALL}",
                             "property": "messages"})
        for index, message in enumerate(messages):
            text = message.get("text") if isinstance(message, dict) and message.get("type") in TEXT_TYPES else None
            if not isinstance(text, str):
                continue
            if not text:
                problems.append({"message": "May not be empty", "property": f"messages[{index}].text"})
            elif utf16_units(text) > MAX_TEXT_UNITS:
                problems.append({"message": f"Length must be between 0 and {MAX_TEXT_UNITS}",
                                 "property": f"messages[{index}].text"})
    seconds = payload.get("loadingSeconds")
    if type(seconds) is int and (seconds % 5 or not 5 <= seconds <= 60):
        problems.append({"message": "Must be a multiple of 5 between 5 and 60", "property": "loadingSeconds"})
    return problems


def _model_problems(model_name: str, payload: dict) -> list[dict[str, str]]:
    from linebot.v3.messaging import models

    try:
        getattr(models, model_name).from_dict(payload)
    except Exception as exc:  # the generated from_dict raises KeyError, ValueError, TypeError too
        if hasattr(exc, "errors"):
            return [{"message": error["msg"],
                     "property": ".".join(str(part) for part in error["loc"] if part != "__root__")}
                    for error in exc.errors()]
        # Not a pydantic error (an unknown message type, a list that is not one): name no value.
        return [{"message": f"Invalid request body ({type(exc).__name__})", "property": ""}]
    return []


def _shapes(messages: object) -> list[dict]:
    """What is kept of the messages of a call: their types, lengths and quote tokens."""
    if not isinstance(messages, list):
        return []
    shapes = []
    for message in messages[:20]:
        if not isinstance(message, dict):
            shapes.append({"type": "?"})
            continue
        kind = message.get("type") if isinstance(message.get("type"), str) else "?"
        shape = {"type": kind[:16]}
        if kind in TEXT_TYPES and isinstance(message.get("text"), str):
            shape["units"] = utf16_units(message["text"])
        if isinstance(message.get("quoteToken"), str):
            shape["quote_token"] = message["quoteToken"][:128]
        shapes.append(shape)
    return shapes


def _bad_request(details: list[dict[str, str]]) -> dict:
    return {"message": f"The request body has {len(details)} error(s)", "details": details}
