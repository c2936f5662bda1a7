"""The Messaging API calls the bot makes, through line-bot-sdk v3.

The SDK (about 1.3 s and ~80 MB to import) is loaded on first use, so processes that
never call LINE — the web server, management commands — never pay for it.
"""
import json
import logging
import uuid
from dataclasses import dataclass
from functools import lru_cache

import urllib3
from django.conf import settings

from ..engine import waiting

logger = logging.getLogger(__name__)

RETRY_KEY_NAMESPACE = uuid.UUID("6f1c8a4e-2b7d-4c1e-9a53-0d8e7b2f4c61")


@dataclass
class LineAPIError(Exception):
    """A Messaging API call failed. `transient` (429, 5xx, network) is worth retrying."""

    status: int | None
    message: str

    @property
    def transient(self) -> bool:
        return self.status is None or self.status == 429 or self.status >= 500

    @property
    def invalid_reply_token(self) -> bool:
        return self.status == 400 and "reply token" in self.message.lower()

    @property
    def already_accepted(self) -> bool:
        """409 to a push: LINE took this retry key before, so the texts went out."""
        return self.status == 409

    def __str__(self) -> str:
        return f"LINE API {self.status or 'unreachable'}: {self.message}"


@dataclass(frozen=True)
class QuickReplyButton:
    """A quick-reply button that sends `data` back in a postback event."""

    label: str  # LINE: at most 20 characters
    data: str  # at most 300
    display_text: str  # shown in the chat as the user's message when tapped


def retry_key(*, message_id: int, call_index: int) -> str:
    """The same outbound call always gets the same key, so LINE drops a repeat."""
    return str(uuid.uuid5(RETRY_KEY_NAMESPACE, f"{message_id}:{call_index}"))


@dataclass(frozen=True)
class BotInfo:
    user_id: str
    basic_id: str
    display_name: str


class LineClient:
    def __init__(self, access_token: str, *, host: str | None = None, transport=None,
                 timeout: float | None = None) -> None:
        """`transport` replaces the SDK's HTTP connection (the simulator's emulator); the SDK
        still builds, signs and reads every request as it would for LINE."""
        from linebot.v3 import messaging

        self.sdk = messaging
        configuration = messaging.Configuration(host=host or settings.LINE_API_HOST, access_token=access_token)
        api_client = messaging.ApiClient(configuration)
        if transport is not None:
            api_client.rest_client = transport
        self.api = messaging.MessagingApi(api_client)
        self.timeout = timeout or settings.LINE_API_TIMEOUT

    def reply(self, *, reply_token: str, texts: list[str], quote_token: str = "",
              buttons: list[QuickReplyButton] | None = None) -> None:
        """`quote_token`: the first text quotes the message it belongs to; `buttons`: quick
        replies under the last."""
        request = self.sdk.ReplyMessageRequest(reply_token=reply_token,
                                               messages=self._texts(texts, quote_token, buttons))
        self._call(self.api.reply_message, request)

    def push(self, *, to: str, texts: list[str], retry_key: str, quote_token: str = "",
             buttons: list[QuickReplyButton] | None = None) -> None:
        request = self.sdk.PushMessageRequest(to=to, messages=self._texts(texts, quote_token, buttons))
        self._call(self.api.push_message, request, x_line_retry_key=retry_key)

    def show_loading(self, *, user_id: str, seconds: int) -> None:
        seconds = max(5, min(60, 5 * -(-seconds // 5)))
        request = self.sdk.ShowLoadingAnimationRequest(chat_id=user_id, loading_seconds=seconds)
        self._call(self.api.show_loading_animation, request)

    def _texts(self, texts: list[str], quote_token: str = "",
               buttons: list[QuickReplyButton] | None = None) -> list:
        quick_reply = self.sdk.QuickReply(items=[
            self.sdk.QuickReplyItem(action=self.sdk.PostbackAction(
                label=button.label, data=button.data, display_text=button.display_text))
            for button in buttons]) if buttons else None
        # LINE shows quick-reply buttons only under the last message of a call.
        return [self.sdk.TextMessage(text=text, quote_token=quote_token if index == 0 and quote_token else None,
                                     quick_reply=quick_reply if index == len(texts) - 1 else None)
                for index, text in enumerate(texts)]

    def member_display_name(self, *, source_type: str, chat_id: str, user_id: str) -> str:
        """A group or room member's name in that chat (404: unknown, or no consent given)."""
        method = self.api.get_group_member_profile if source_type == "group" else self.api.get_room_member_profile
        return self._call(method, chat_id, user_id).display_name

    def display_name(self, *, source_type: str, line_id: str) -> str:
        if source_type == "group":
            return self._call(self.api.get_group_summary, line_id).group_name
        if source_type == "user":
            return self._call(self.api.get_profile, line_id).display_name
        return ""

    def bot_info(self) -> BotInfo:
        """The bot's account; LINE answers 401 when the access token is not valid."""
        info = self._call(self.api.get_bot_info)
        return BotInfo(user_id=info.user_id, basic_id=info.basic_id, display_name=info.display_name)

    def message_quota(self) -> int | None:
        """This month's limit of messages sent other than by reply; None: no limit."""
        quota = self._call(self.api.get_message_quota)
        return quota.value if str(getattr(quota.type, "value", quota.type)) == "limited" else None

    def messages_sent_this_month(self) -> int:
        """What counts against that limit so far, as LINE counts it (per recipient)."""
        return self._call(self.api.get_message_quota_consumption).total_usage

    def webhook_endpoint(self) -> tuple[str, bool]:
        """The webhook URL set in the LINE Developers console, and whether "Use webhook" is on."""
        endpoint = self._call(self.api.get_webhook_endpoint)
        return endpoint.endpoint, endpoint.active

    def _call(self, method, *args, **kwargs):
        try:
            with waiting():
                return method(*args, _request_timeout=self.timeout, **kwargs)
        except self.sdk.ApiException as exc:
            raise LineAPIError(status=exc.status, message=_error_message(exc)) from None
        except (OSError, urllib3.exceptions.HTTPError) as exc:
            raise LineAPIError(status=None, message=type(exc).__name__) from None


def _error_message(exc) -> str:
    try:
        return json.loads(exc.body or b"{}").get("message") or str(exc.reason)
    except (ValueError, AttributeError):
        return str(exc.reason)


@lru_cache(maxsize=32)
def line_client(access_token: str) -> LineClient:
    return LineClient(access_token)


def client_for(channel) -> LineClient:
    """The channel's Messaging API: LINE's, or for a simulated channel the in-project emulator,
    reached in this process (a worker needs no URL of this site), so nothing reaches LINE."""
    if channel.is_simulated:
        from ..simulator.transport import emulated_client

        return emulated_client(channel_id=channel.pk, access_token=channel.access_token)
    return line_client(channel.access_token)
