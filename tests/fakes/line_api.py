"""A fake LINE Messaging API that validates what it is sent as strictly as LINE.

Point line-bot-sdk at it with ``Configuration(host=fake.url, access_token=...)``.
Every POST body is checked three ways — LINE's documented limits, LINE's
OpenAPI description and line-bot-sdk's own request models — and rejected
bodies are answered 400 and kept in ``fake.validation_errors``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import itertools
import re
import secrets
import uuid
from typing import Any, NamedTuple

from linebot.v3.messaging import PushMessageRequest, ReplyMessageRequest, ShowLoadingAnimationRequest

from .base import CONTROL_PREFIX, FakeServer, RecordedRequest, Response, json_response, route
from .line_spec import MESSAGING_SPEC, load_validator
from .webhooks import DEFAULT_BOT_USER_ID

MAX_MESSAGES = 5
MAX_TEXT_UTF16 = 5000
# Quick replies: LINE counts these in grapheme clusters; the fake counts code points.
MAX_ACTION_LABEL = 20
MAX_POSTBACK_DISPLAY_TEXT = 300
AUTH_FAILED = "Authentication failed. Confirm that the access token in the authorization header is valid."
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_CHAT_ID = re.compile(r"[UCR][0-9a-f]{32}")
_USER_ID = re.compile(r"U[0-9a-f]{32}")
_TEXT_TYPES = ("text", "textV2")
# The message objects LINE lets quote an earlier message (those with a quoteToken property).
_QUOTING_TYPES = ("text", "textV2", "sticker")


class Delivery(NamedTuple):
    """A reply or push LINE actually delivered; compares equal to a 3-tuple."""

    endpoint: str
    target: str
    texts: list[str]


def utf16_length(text: str) -> int:
    """Length as LINE counts it: UTF-16 code units (an emoji outside the BMP is 2)."""
    return len(text.encode("utf-16-le")) // 2


def line_error(status: int, message: str, details: list[dict] | None = None, **extra: Any) -> Response:
    body: dict[str, Any] = {"message": message}
    if details is not None:
        body["details"] = details
    body.update(extra)
    return json_response(status, body)


class FakeLineAPI(FakeServer):
    """The LINE Messaging API endpoints a chatbot uses.

    Endpoints for ``fail_next``/``set_delay``: reply, push, loading, profile,
    group_summary, member_profile, bot_info, quota, quota_consumption, webhook_endpoint,
    content (the data host's, served here too: point LINE_DATA_API_HOST at the same URL).
    """

    def __init__(
        self,
        access_token: str | None = None,
        *,
        bot_user_id: str = DEFAULT_BOT_USER_ID,
        bot_name: str = "Fake Bot",
        profiles: dict[str, str | dict] | None = None,
        group_names: dict[str, str] | None = None,
        missing_ids: set[str] | None = None,
        strict_ids: bool = True,
        spec_dir: str | None = None,
    ):
        super().__init__()
        self.access_token = access_token
        self.bot_user_id = bot_user_id
        self.bot_name = bot_name
        # displayName per user id (a dict value overrides whole profile fields).
        self.profiles: dict[str, str | dict] = dict(profiles or {})
        self.group_names: dict[str, str] = dict(group_names or {})
        # User/group/room ids that answer 404 like an unknown or blocked id.
        self.missing_ids: set[str] = set(missing_ids or ())
        # Reject push targets / loading chat ids that are not real LINE ids.
        self.strict_ids = strict_ids
        # The account's monthly message quota (None: no limit), what it used, its webhook setting.
        self.quota_limit: int | None = 500
        self.quota_used = 0
        self.webhook_endpoint: str | None = "https://bot.example.com/line/webhook/"
        self.webhook_active = True
        self.validation_errors: list[dict[str, Any]] = []
        self._spec = load_validator(MESSAGING_SPEC, spec_dir)
        self._delivered: list[Delivery] = []
        self._used_reply_tokens: set[str] = set()
        self._expired_reply_tokens: set[str] = set()
        self._accepted_retry_keys: dict[str, tuple[str, list[dict]]] = {}
        self._message_ids = itertools.count(500_000_000_000_000_000)
        # What users sent, by message id, served on the data host's content endpoint.
        self._contents: dict[str, tuple[bytes, str]] = {}
        self._expired_contents: set[str] = set()

    @property
    def spec_checked(self) -> bool:
        """Whether bodies are also checked against LINE's OpenAPI description."""
        return self._spec is not None

    # -- convenience for tests ------------------------------------------------

    @property
    def delivered(self) -> list[Delivery]:
        with self._lock:
            return list(self._delivered)

    def delivered_texts(self) -> list[str]:
        return [text for delivery in self.delivered for text in delivery.texts]

    def expire_reply_token(self, token: str) -> None:
        """Make ``token`` answer "Invalid reply token" like an expired one."""
        with self._lock:
            self._expired_reply_tokens.add(token)

    def add_content(self, message_id: str, data: bytes, content_type: str) -> None:
        """Serve `data` as message `message_id`'s content (a photo, a voice message)."""
        with self._lock:
            self._contents[message_id] = (data, content_type)
            self._expired_contents.discard(message_id)

    def expire_content(self, message_id: str) -> None:
        """LINE keeps content for a limited time; after it, the endpoint answers 404."""
        with self._lock:
            self._expired_contents.add(message_id)

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {
                **super().state(),
                "delivered": [d._asdict() for d in self._delivered],
                "validation_errors": list(self.validation_errors),
                "spec_checked": self.spec_checked,
            }

    def _reset_state(self) -> None:
        self.validation_errors.clear()
        self._delivered.clear()
        self._used_reply_tokens.clear()
        self._expired_reply_tokens.clear()
        self._accepted_retry_keys.clear()
        self._contents.clear()
        self._expired_contents.clear()

    # -- hooks ---------------------------------------------------------------

    def error_body(self, status: int, message: str | None = None) -> dict:
        defaults = {
            400: "Bad Request",
            401: AUTH_FAILED,
            403: "Access to this API is not available for your account",
            404: "Not found",
            405: "Method Not Allowed",
            409: "Conflict",
            429: "The API rate limit has been exceeded. Try again later.",
            500: "Internal server error",
        }
        return {"message": message or defaults.get(status, "Error")}

    def before_request(self, request: RecordedRequest) -> Response | None:
        request.notes["request_id"] = str(uuid.uuid4())
        if self.access_token is not None and request.headers.get("authorization") != f"Bearer {self.access_token}":
            return line_error(401, AUTH_FAILED)
        return None

    def after_request(self, request: RecordedRequest, response: Response) -> Response:
        response.headers.setdefault("x-line-request-id", request.notes.get("request_id") or str(uuid.uuid4()))
        return response

    # -- messaging -------------------------------------------------------------

    @route("POST", r"/v2/bot/message/reply", "reply")
    def reply(self, request: RecordedRequest) -> Response:
        rejected = self._validate(request, "ReplyMessageRequest", ReplyMessageRequest)
        if rejected:
            return rejected
        token = request.json["replyToken"]
        with self._lock:
            if token in self._used_reply_tokens or token in self._expired_reply_tokens:
                return line_error(400, "Invalid reply token")
            self._used_reply_tokens.add(token)
            sent = self._deliver("reply", token, request.json["messages"])
        return json_response(200, {"sentMessages": sent})

    @route("POST", r"/v2/bot/message/push", "push")
    def push(self, request: RecordedRequest) -> Response:
        retry_key = request.headers.get("x-line-retry-key")
        if retry_key is not None and not _UUID.fullmatch(retry_key):
            return line_error(400, "The value for the 'X-Line-Retry-Key' header is invalid")
        rejected = self._validate(request, "PushMessageRequest", PushMessageRequest)
        if rejected:
            return rejected
        target = request.json["to"]
        if self.strict_ids and not _CHAT_ID.fullmatch(target):
            return self._reject(request, "limits", [{"message": "Invalid ID", "property": "to"}])
        with self._lock:
            if retry_key in self._accepted_retry_keys:
                original_id, sent = self._accepted_retry_keys[retry_key]
                response = line_error(409, "The retry key is already accepted", sentMessages=sent)
                response.headers["x-line-accepted-request-id"] = original_id
                return response
            sent = self._deliver("push", target, request.json["messages"])
            if retry_key is not None:
                self._accepted_retry_keys[retry_key] = (request.notes["request_id"], sent)
        return json_response(200, {"sentMessages": sent})

    @route("POST", r"/v2/bot/chat/loading/start", "loading")
    def loading(self, request: RecordedRequest) -> Response:
        rejected = self._validate(request, "ShowLoadingAnimationRequest", ShowLoadingAnimationRequest)
        if rejected:
            return rejected
        if self.strict_ids and not _USER_ID.fullmatch(request.json["chatId"]):
            # The loading animation exists only in one-on-one chats with users.
            return self._reject(request, "limits", [{"message": "Invalid user ID", "property": "chatId"}])
        return json_response(202, {})

    def _deliver(self, endpoint: str, target: str, messages: list[dict]) -> list[dict]:
        texts = [m["text"] for m in messages if m.get("type") in _TEXT_TYPES]
        self._delivered.append(Delivery(endpoint, target, texts))
        return [
            {"id": str(next(self._message_ids)), "quoteToken": secrets.token_urlsafe(48)}
            for _ in messages
        ]

    # -- validation ------------------------------------------------------------

    def _validate(self, request: RecordedRequest, schema: str, model: Any) -> Response | None:
        body = request.json
        if not isinstance(body, dict):
            details = [{"message": "The request body must be a JSON object", "property": ""}]
            return self._reject(request, "json", details)
        request.notes["spec_checked"] = self._spec is not None
        checks = (
            ("limits", lambda: _limit_errors(body)),
            ("openapi", lambda: self._spec.errors(schema, body) if self._spec else []),
            ("sdk", lambda: _sdk_errors(model, request.text)),
        )
        for layer, check in checks:
            details = check()
            if details:
                return self._reject(request, layer, details)
        return None

    def _reject(self, request: RecordedRequest, layer: str, details: list[dict]) -> Response:
        with self._lock:
            self.validation_errors.append(
                {"endpoint": request.endpoint, "layer": layer, "details": details, "body": request.json}
            )
        return line_error(400, f"The request body has {len(details)} error(s)", details)

    # -- content (LINE's data host: api-data.line.me) ----------------------------

    @route("GET", r"/v2/bot/message/(?P<message_id>[^/]+)/content", "content")
    def content(self, request: RecordedRequest, message_id: str) -> Response:
        with self._lock:
            found = None if message_id in self._expired_contents else self._contents.get(message_id)
        if found is None:
            return line_error(404, "Not found")
        data, content_type = found
        # Sent in pieces, as a large file would be: clients must stream, not wait for it whole.
        chunks = [data[start:start + 65536] for start in range(0, len(data), 65536)]
        return Response(200, chunks if len(chunks) > 1 else data, content_type)

    def _control(self, request: RecordedRequest) -> Response:
        # POST /__fake__/content {"message_ids": [...], "data": base64, "content_type": ...}: what
        # add_content does, for a fake run as a process (the benchmarks).
        if (request.method, request.path[len(CONTROL_PREFIX):]) != ("POST", "content"):
            return super()._control(request)
        payload = request.json if isinstance(request.json, dict) else {}
        try:
            data = base64.b64decode(payload["data"], validate=True)
            for message_id in payload["message_ids"]:
                self.add_content(str(message_id), data, str(payload["content_type"]))
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            return json_response(400, {"error": f"bad control request: {exc!r}"})
        return json_response(200, {"ok": True})

    # -- profiles and info -----------------------------------------------------

    @route("GET", r"/v2/bot/profile/(?P<user_id>[^/]+)", "profile")
    def profile(self, request: RecordedRequest, user_id: str) -> Response:
        if user_id in self.missing_ids:
            return line_error(404, "Not found")
        return json_response(200, self._profile(user_id, full=True))

    @route("GET", r"/v2/bot/group/(?P<group_id>[^/]+)/summary", "group_summary")
    def group_summary(self, request: RecordedRequest, group_id: str) -> Response:
        if group_id in self.missing_ids:
            return line_error(404, "Not found")
        name = self.group_names.get(group_id, f"Group {group_id[-4:]}")
        return json_response(
            200,
            {"groupId": group_id, "groupName": name, "pictureUrl": f"https://profile.line-scdn.net/{group_id}"},
        )

    @route("GET", r"/v2/bot/(?:group|room)/(?P<chat_id>[^/]+)/member/(?P<user_id>[^/]+)", "member_profile")
    def member_profile(self, request: RecordedRequest, chat_id: str, user_id: str) -> Response:
        if chat_id in self.missing_ids or user_id in self.missing_ids:
            return line_error(404, "Not found")
        return json_response(200, self._profile(user_id, full=False))

    @route("GET", r"/v2/bot/info", "bot_info")
    def bot_info(self, request: RecordedRequest) -> Response:
        return json_response(
            200,
            {
                "userId": self.bot_user_id,
                "basicId": "@" + self.bot_user_id[-8:],
                "displayName": self.bot_name,
                "pictureUrl": f"https://profile.line-scdn.net/{self.bot_user_id}",
                "chatMode": "bot",
                "markAsReadMode": "auto",
            },
        )

    @route("GET", r"/v2/bot/message/quota", "quota")
    def quota(self, request: RecordedRequest) -> Response:
        if self.quota_limit is None:
            return json_response(200, {"type": "none"})
        return json_response(200, {"type": "limited", "value": self.quota_limit})

    @route("GET", r"/v2/bot/message/quota/consumption", "quota_consumption")
    def quota_consumption(self, request: RecordedRequest) -> Response:
        return json_response(200, {"totalUsage": self.quota_used})

    @route("GET", r"/v2/bot/channel/webhook/endpoint", "webhook_endpoint")
    def get_webhook_endpoint(self, request: RecordedRequest) -> Response:
        if self.webhook_endpoint is None:
            return line_error(404, "Not found")
        return json_response(200, {"endpoint": self.webhook_endpoint, "active": self.webhook_active})

    def _profile(self, user_id: str, *, full: bool) -> dict[str, Any]:
        configured = self.profiles.get(user_id)
        profile: dict[str, Any] = {
            "displayName": f"User {user_id[-4:]}",
            "userId": user_id,
            "pictureUrl": f"https://profile.line-scdn.net/{user_id}",
        }
        if full:
            profile.update({"statusMessage": "Hello, LINE!", "language": "en"})
        if isinstance(configured, str):
            profile["displayName"] = configured
        elif isinstance(configured, dict):
            profile.update(configured)
        return profile

    # -- process mode ------------------------------------------------------------

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--access-token", default=None, help="require 'Authorization: Bearer <token>'")
        parser.add_argument("--bot-user-id", default=DEFAULT_BOT_USER_ID)
        parser.add_argument("--lenient-ids", action="store_true", help="accept any push target / chat id")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> FakeLineAPI:
        return cls(args.access_token, bot_user_id=args.bot_user_id, strict_ids=not args.lenient_ids)


def _limit_errors(body: dict) -> list[dict[str, str]]:
    """LINE's documented limits that its schema does not fully express."""
    errors = []
    messages = body.get("messages")
    if isinstance(messages, list):
        if not 1 <= len(messages) <= MAX_MESSAGES:
            errors.append({"message": f"Size must be between 1 and {MAX_MESSAGES}", "property": "messages"})
        for index, message in enumerate(messages):
            if isinstance(message, dict) and "quoteToken" in message:
                token = message["quoteToken"]
                if message.get("type") not in _QUOTING_TYPES:
                    errors.append(
                        {"message": "This message type cannot quote", "property": f"messages[{index}].quoteToken"})
                elif not isinstance(token, str) or not token:
                    errors.append({"message": "May not be empty", "property": f"messages[{index}].quoteToken"})
            text = message.get("text") if isinstance(message, dict) and message.get("type") in _TEXT_TYPES else None
            if not isinstance(text, str):
                continue
            if not text:
                errors.append({"message": "May not be empty", "property": f"messages[{index}].text"})
            elif utf16_length(text) > MAX_TEXT_UTF16:
                errors.append(
                    {"message": f"Length must be between 0 and {MAX_TEXT_UTF16}", "property": f"messages[{index}].text"}
                )
        for index, message in enumerate(messages):
            errors.extend(_quick_reply_errors(message, f"messages[{index}].quickReply"))
    seconds = body.get("loadingSeconds")
    if isinstance(seconds, int) and (seconds % 5 or not 5 <= seconds <= 60):
        errors.append({"message": "Must be a multiple of 5 between 5 and 60", "property": "loadingSeconds"})
    return errors


def _quick_reply_errors(message: Any, where: str) -> list[dict[str, str]]:
    """A quick reply's documented limits that the OpenAPI description leaves out."""
    quick_reply = message.get("quickReply") if isinstance(message, dict) else None
    items = quick_reply.get("items") if isinstance(quick_reply, dict) else None
    if not isinstance(items, list):
        return []
    errors = []
    for index, item in enumerate(items):
        action = item.get("action") if isinstance(item, dict) else None
        if not isinstance(action, dict):
            errors.append({"message": "Must be specified", "property": f"{where}.items[{index}].action"})
            continue
        label = action.get("label")
        if not isinstance(label, str) or not 1 <= len(label) <= MAX_ACTION_LABEL:
            errors.append({"message": f"Length must be between 1 and {MAX_ACTION_LABEL}",
                           "property": f"{where}.items[{index}].action.label"})
        display = action.get("displayText")
        if isinstance(display, str) and not 1 <= len(display) <= MAX_POSTBACK_DISPLAY_TEXT:
            errors.append({"message": f"Length must be between 1 and {MAX_POSTBACK_DISPLAY_TEXT}",
                           "property": f"{where}.items[{index}].action.displayText"})
    return errors


def _sdk_errors(model: Any, text: str) -> list[dict[str, str]]:
    """Errors from line-bot-sdk's own request model (pydantic v1 based)."""
    try:
        model.from_json(text)
    except Exception as exc:  # the generated from_dict raises KeyError/ValueError/TypeError too
        if hasattr(exc, "errors"):
            return [
                {"message": error["msg"], "property": ".".join(str(p) for p in error["loc"] if p != "__root__")}
                for error in exc.errors()
            ]
        return [{"message": f"{type(exc).__name__}: {exc}", "property": ""}]
    return []


if __name__ == "__main__":
    FakeLineAPI.main()
