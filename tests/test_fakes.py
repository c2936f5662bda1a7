"""Tests for the loopback fakes, driven through the real client libraries.

Independent of Django; while the app's settings are not importable, run with
``.venv/bin/pytest -p no:django -p no:cacheprovider --noconftest tests/test_fakes.py -q``.
"""

from __future__ import annotations

import json
import re
import select
import ssl
import subprocess
import sys
import time
import uuid
from http.client import HTTPConnection
from pathlib import Path

import httpx
import ollama
import pytest
import replicate
from linebot.v3 import WebhookParser
from linebot.v3.messaging import (
    ApiClient,
    ApiException,
    Configuration,
    MessagingApi,
    PushMessageRequest,
    ReplyMessageRequest,
    ShowLoadingAnimationRequest,
    TextMessage,
)
from linebot.v3.webhooks import MessageEditedEvent, MessageEvent, TextMessageContent
from replicate.exceptions import ModelError, ReplicateError

from tests.fakes import webhooks
from tests.fakes.base import FakeServer, Headers, RecordedRequest, Response, json_response, route
from tests.fakes.fixtures import (  # noqa: F401  (pytest fixtures)
    LINE_ACCESS_TOKEN,
    REPLICATE_TOKEN,
    fake_line_api,
    fake_ollama,
    fake_openai,
    fake_replicate,
)
from tests.fakes.line_api import AUTH_FAILED, FakeLineAPI, utf16_length
from tests.fakes.line_spec import spec_dir
from tests.fakes.openai_compat import FakeOpenAICompat

REPO = Path(__file__).resolve().parents[1]
USER_ID = webhooks.DEFAULT_USER_ID
GROUP_ID = webhooks.DEFAULT_GROUP_ID
needs_spec = pytest.mark.skipif(spec_dir() is None, reason="LINE OpenAPI spec directory not found")
# httpx loads the CA bundle for every new client (~50 ms); one shared context
# keeps the many short-lived clients below cheap.
SSL_CONTEXT = ssl.create_default_context()


@pytest.fixture
def http():
    with httpx.Client(verify=SSL_CONTEXT, timeout=5) as client:
        yield client


# -- base server ----------------------------------------------------------------


class EchoFake(FakeServer):
    """A minimal fake to exercise the base class."""

    @route("POST", r"/things/(?P<thing_id>\d+)", "thing")
    def thing(self, request: RecordedRequest, thing_id: str) -> Response:
        return json_response(200, {"id": int(thing_id), "got": request.json})

    @route("GET", r"/boom", "boom")
    def boom(self, request: RecordedRequest) -> Response:
        raise RuntimeError("handler bug")


@pytest.fixture
def echo_fake():
    with EchoFake() as fake:
        yield fake


def test_base_records_request_details(echo_fake, http):
    response = http.post(f"{echo_fake.url}/things/7?a=1&b=two", json={"x": 1}, headers={"X-Custom": "yes"})

    assert response.json() == {"id": 7, "got": {"x": 1}}
    recorded = echo_fake.last("thing")
    assert (recorded.method, recorded.path, recorded.query) == ("POST", "/things/7", {"a": "1", "b": "two"})
    assert recorded.headers["x-custom"] == recorded.headers["X-CUSTOM"] == "yes"
    assert "X-Custom" in recorded.headers
    assert json.loads(recorded.body) == recorded.json == {"x": 1}
    assert recorded.params == {"thing_id": "7"} and recorded.status == 200
    assert echo_fake.count("thing") == 1 and echo_fake.stats() == {"thing": 1}


def test_base_unknown_path_and_method(echo_fake, http):
    assert http.get(f"{echo_fake.url}/nowhere").status_code == 404
    wrong_method = http.get(f"{echo_fake.url}/things/1")
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
    assert echo_fake.stats() == {"unmatched": 2}


def test_base_keeps_connections_alive(echo_fake):
    connection = HTTPConnection("127.0.0.1", echo_fake.port, timeout=5)
    for index in range(3):
        connection.request("POST", f"/things/{index}", body=b"{}", headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        assert response.status == 200 and response.getheader("Content-Length") == str(len(response.read()))
        assert not response.will_close
    socket_before = connection.sock
    connection.request("POST", "/things/9", body=b"{}")
    connection.getresponse().read()
    assert connection.sock is socket_before
    connection.close()


def test_base_fail_next_and_delay(echo_fake, http):
    echo_fake.fail_next("thing", 503, {"error": "down"}, count=2, headers={"Retry-After": "1"})
    first = http.post(f"{echo_fake.url}/things/1", json={})
    assert (first.status_code, first.json(), first.headers["retry-after"]) == (503, {"error": "down"}, "1")
    assert http.post(f"{echo_fake.url}/things/1", json={}).status_code == 503
    assert http.post(f"{echo_fake.url}/things/1", json={}).status_code == 200

    echo_fake.set_delay("thing", 0.5)
    with pytest.raises(httpx.ReadTimeout):
        http.post(f"{echo_fake.url}/things/1", json={}, timeout=0.1)
    with pytest.raises(ValueError, match="unknown endpoint 'thingz'"):
        echo_fake.fail_next("thingz", 500)
    with pytest.raises(ValueError, match="unknown endpoint"):
        echo_fake.count("thingz")


def test_base_capacity_serves_at_most_n_at_once_and_hold_answers_late(echo_fake):
    from concurrent.futures import ThreadPoolExecutor

    echo_fake.set_capacity("thing", 2)
    echo_fake.set_delay("thing", 0.3)
    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(lambda _: httpx.post(f"{echo_fake.url}/things/1", json={}).status_code, range(4)))
    assert statuses == [200] * 4
    assert echo_fake.concurrency()["thing"] == {"now": 0, "peak": 2}
    assert time.monotonic() - started >= 0.6, "the other two waited their turn"
    assert all(request.answered_at >= request.received_at for request in echo_fake.requests)

    echo_fake.reset()
    echo_fake.hold_response("thing", 0.5)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{echo_fake.url}/things/1", json={}, timeout=0.1)
    assert echo_fake.count("thing") == 1, "handled before the hold: the client never learns"


def test_base_redirect_and_quoted_authorization_modes(echo_fake, http):
    echo_fake.redirect_to("http://127.0.0.1:9/", status=302)
    bounced = http.post(f"{echo_fake.url}/things/1?a=1", json={})
    assert (bounced.status_code, bounced.headers["location"]) == (302, "http://127.0.0.1:9/things/1?a=1")
    echo_fake.redirect_to(None)
    echo_fake.quote_authorization()
    refused = http.post(f"{echo_fake.url}/nowhere", json={}, headers={"Authorization": "Bearer sk-abc"})
    assert (refused.status_code, refused.json()) == (401, {"error": "invalid key Bearer sk-abc"})
    echo_fake.reset()
    assert http.post(f"{echo_fake.url}/things/1", json={}).status_code == 200


def test_base_handler_crash_is_500_and_recorded(echo_fake, http):
    response = http.get(f"{echo_fake.url}/boom")
    assert response.status_code == 500
    assert "RuntimeError: handler bug" in echo_fake.handler_errors[0]


def test_base_wait_for_and_reset(echo_fake, http):
    http.post(f"{echo_fake.url}/things/1", json={})
    assert echo_fake.wait_for(lambda fake: fake.count("thing") == 1, timeout=1)
    with pytest.raises(AssertionError, match=r"still false after 0.05s[\s\S]*POST /things/1 \[thing\] -> 200"):
        echo_fake.wait_for(lambda fake: fake.count("thing") == 2, timeout=0.05)
    echo_fake.fail_next("thing", 500)
    echo_fake.reset()
    assert echo_fake.requests == [] and echo_fake.stats() == {}
    assert http.post(f"{echo_fake.url}/things/1", json={}).status_code == 200


def test_base_stop_closes_idle_keepalive_connections():
    fake = EchoFake().start()
    url = fake.url
    with httpx.Client(verify=SSL_CONTEXT) as client:
        assert client.post(f"{url}/things/1", json={}).status_code == 200
        started = time.monotonic()
        fake.stop()
        assert time.monotonic() - started < 2
        with pytest.raises(httpx.TransportError):
            client.post(f"{url}/things/1", json={})


def test_headers_are_a_case_insensitive_dict():
    headers = Headers({"Content-Type": "text/plain"})
    assert headers["content-type"] == headers.get("CONTENT-TYPE") == "text/plain"
    assert json.loads(json.dumps(headers)) == {"content-type": "text/plain"}


# -- LINE Messaging API -------------------------------------------------------------


@pytest.fixture
def messaging_api(fake_line_api):
    with ApiClient(Configuration(host=fake_line_api.url, access_token=LINE_ACCESS_TOKEN)) as client:
        yield MessagingApi(client)


def raw_line_post(http: httpx.Client, fake: FakeLineAPI, path: str, body: dict) -> httpx.Response:
    return http.post(f"{fake.url}{path}", json=body, headers={"Authorization": f"Bearer {LINE_ACCESS_TOKEN}"})


def test_line_reply_is_delivered(fake_line_api, messaging_api):
    response = messaging_api.reply_message(
        ReplyMessageRequest(reply_token="token-1", messages=[TextMessage(text="hello"), TextMessage(text="world")])
    )

    assert [m.id.isdigit() for m in response.sent_messages] == [True, True]
    assert all(m.quote_token for m in response.sent_messages)
    assert fake_line_api.delivered == [("reply", "token-1", ["hello", "world"])]
    assert fake_line_api.delivered_texts() == ["hello", "world"]
    recorded = fake_line_api.last("reply")
    assert recorded.headers["authorization"] == f"Bearer {LINE_ACCESS_TOKEN}"
    assert recorded.json["messages"][0] == {"type": "text", "text": "hello"}
    assert recorded.notes["spec_checked"] is fake_line_api.spec_checked
    assert fake_line_api.validation_errors == []


def test_line_reply_token_is_single_use(fake_line_api, messaging_api):
    request = ReplyMessageRequest(reply_token="once", messages=[TextMessage(text="first")])
    messaging_api.reply_message(request)

    with pytest.raises(ApiException) as error:
        messaging_api.reply_message(request)

    assert error.value.status == 400
    assert json.loads(error.value.body) == {"message": "Invalid reply token"}
    assert fake_line_api.delivered_texts() == ["first"]


def test_line_expired_reply_token(fake_line_api, messaging_api):
    fake_line_api.expire_reply_token("stale")
    with pytest.raises(ApiException) as error:
        messaging_api.reply_message(ReplyMessageRequest(reply_token="stale", messages=[TextMessage(text="late")]))
    assert (error.value.status, json.loads(error.value.body)) == (400, {"message": "Invalid reply token"})
    assert fake_line_api.delivered == []


def test_line_push_retry_key_prevents_duplicates(fake_line_api, messaging_api):
    retry_key = str(uuid.uuid4())
    request = PushMessageRequest(to=USER_ID, messages=[TextMessage(text="only once")])
    first = messaging_api.push_message_with_http_info(request, x_line_retry_key=retry_key)

    with pytest.raises(ApiException) as error:
        messaging_api.push_message(request, x_line_retry_key=retry_key)

    assert error.value.status == 409
    body = json.loads(error.value.body)
    assert body["message"] == "The retry key is already accepted"
    original = first.data.sent_messages[0]
    assert body["sentMessages"] == [{"id": original.id, "quoteToken": original.quote_token}]
    assert error.value.headers["x-line-accepted-request-id"] == first.headers["x-line-request-id"]
    assert fake_line_api.delivered == [("push", USER_ID, ["only once"])]
    assert fake_line_api.last("push").headers["x-line-retry-key"] == retry_key


def test_line_push_after_injected_500_is_retried_with_same_key(fake_line_api, messaging_api):
    fake_line_api.fail_next("push", 500)
    retry_key = str(uuid.uuid4())
    request = PushMessageRequest(to=USER_ID, messages=[TextMessage(text="retry me")])
    with pytest.raises(ApiException) as error:
        messaging_api.push_message(request, x_line_retry_key=retry_key)
    assert error.value.status == 500

    messaging_api.push_message(request, x_line_retry_key=retry_key)
    assert fake_line_api.delivered_texts() == ["retry me"]


def test_line_push_rejects_bad_retry_key_and_bad_target(fake_line_api, messaging_api):
    request = PushMessageRequest(to=USER_ID, messages=[TextMessage(text="x")])
    with pytest.raises(ApiException) as error:
        messaging_api.push_message(request, x_line_retry_key="nope")
    assert error.value.status == 400 and "X-Line-Retry-Key" in json.loads(error.value.body)["message"]

    with pytest.raises(ApiException) as error:
        messaging_api.push_message(PushMessageRequest(to="U123", messages=[TextMessage(text="x")]))
    assert error.value.status == 400 and json.loads(error.value.body)["details"][0]["property"] == "to"
    assert fake_line_api.delivered == []


def test_line_loading_animation(fake_line_api, messaging_api, http):
    response = messaging_api.show_loading_animation_with_http_info(
        ShowLoadingAnimationRequest(chat_id=USER_ID, loading_seconds=20)
    )
    assert response.status_code == 202 and json.loads(response.raw_data) == {}
    assert fake_line_api.last("loading").json == {"chatId": USER_ID, "loadingSeconds": 20}

    for bad in ({"chatId": USER_ID, "loadingSeconds": 7}, {"chatId": GROUP_ID, "loadingSeconds": 5}):
        assert raw_line_post(http, fake_line_api, "/v2/bot/chat/loading/start", bad).status_code == 400
    assert len(fake_line_api.validation_errors) == 2


def test_line_rejects_wrong_access_token(fake_line_api):
    with ApiClient(Configuration(host=fake_line_api.url, access_token="wrong")) as client:
        with pytest.raises(ApiException) as error:
            MessagingApi(client).reply_message(ReplyMessageRequest(reply_token="t", messages=[TextMessage(text="x")]))
    assert error.value.status == 401
    assert json.loads(error.value.body)["message"].startswith("Authentication failed")
    assert fake_line_api.delivered == []


@needs_spec
def test_line_invalid_body_is_rejected_by_openapi_schema(fake_line_api, http):
    body = {"replyToken": "t", "messages": [{"type": "text"}]}
    response = raw_line_post(http, fake_line_api, "/v2/bot/message/reply", body)

    assert response.status_code == 400
    assert response.json() == {
        "message": "The request body has 1 error(s)",
        "details": [{"message": "'text' is a required property", "property": "messages[0]"}],
    }
    assert [e["layer"] for e in fake_line_api.validation_errors] == ["openapi"]
    assert fake_line_api.delivered == []


def test_line_without_spec_still_validates_with_sdk_models(tmp_path, http):
    with FakeLineAPI(access_token=LINE_ACCESS_TOKEN, spec_dir=str(tmp_path)) as fake:
        body = {"replyToken": "t", "messages": [{"type": "nope"}]}
        response = raw_line_post(http, fake, "/v2/bot/message/reply", body)

        assert fake.spec_checked is False
        assert response.status_code == 400
        assert fake.validation_errors[0]["layer"] == "sdk"
        assert fake.last("reply").notes["spec_checked"] is False


def test_line_rejects_six_messages(fake_line_api, http):
    body = {"replyToken": "t", "messages": [{"type": "text", "text": str(i)} for i in range(6)]}
    response = raw_line_post(http, fake_line_api, "/v2/bot/message/reply", body)

    assert response.status_code == 400
    assert response.json()["details"] == [{"message": "Size must be between 1 and 5", "property": "messages"}]
    assert fake_line_api.delivered == [] and len(fake_line_api.validation_errors) == 1


def test_line_quick_reply_postback_buttons_are_accepted(fake_line_api, messaging_api):
    from linebot.v3.messaging import PostbackAction, QuickReply, QuickReplyItem

    buttons = QuickReply(items=[QuickReplyItem(action=PostbackAction(label="Yes, erase", data="x" * 300,
                                                                     display_text="Yes"))])
    messaging_api.reply_message(ReplyMessageRequest(reply_token="qr", messages=[
        TextMessage(text="Sure?", quick_reply=buttons)]))

    assert fake_line_api.delivered_texts() == ["Sure?"]
    assert webhooks.quick_reply_postbacks(fake_line_api.last("reply").json) == [
        {"type": "postback", "label": "Yes, erase", "data": "x" * 300, "displayText": "Yes"}]
    assert fake_line_api.validation_errors == []


@pytest.mark.parametrize("action, problem", [
    ({"type": "postback", "label": "x" * 21, "data": "d"}, "action.label"),
    ({"type": "postback", "label": "ok", "data": "d" * 301}, "action.data"),
    ({"type": "postback", "label": "ok", "data": "d", "displayText": "t" * 301}, "action.displayText"),
])
def test_line_quick_reply_limits(fake_line_api, http, action, problem):
    body = {"replyToken": "t", "messages": [{"type": "text", "text": "Sure?",
                                             "quickReply": {"items": [{"type": "action", "action": action}]}}]}
    response = raw_line_post(http, fake_line_api, "/v2/bot/message/reply", body)

    assert response.status_code == 400
    assert any(detail["property"].endswith(problem) for detail in response.json()["details"])
    assert fake_line_api.delivered == []


def test_line_quote_tokens_go_on_texts_and_stickers_only_and_are_never_empty(fake_line_api, http):
    quoting = {"replyToken": "q1", "messages": [{"type": "text", "text": "re", "quoteToken": "abc-_123"}]}
    assert raw_line_post(http, fake_line_api, "/v2/bot/message/reply", quoting).status_code == 200
    empty = {"replyToken": "q2", "messages": [{"type": "text", "text": "re", "quoteToken": ""}]}
    image = {"to": "U" + "1a" * 16, "messages": [{"type": "image", "originalContentUrl": "https://x.tw/a.png",
                                                  "previewImageUrl": "https://x.tw/a.png", "quoteToken": "abc"}]}
    assert raw_line_post(http, fake_line_api, "/v2/bot/message/reply", empty).json()["details"] == [
        {"message": "May not be empty", "property": "messages[0].quoteToken"}]
    assert raw_line_post(http, fake_line_api, "/v2/bot/message/push", image).json()["details"] == [
        {"message": "This message type cannot quote", "property": "messages[0].quoteToken"}]
    assert len(fake_line_api.delivered) == 1 and len(fake_line_api.validation_errors) == 2


def test_line_text_limit_counts_utf16_units(fake_line_api, messaging_api):
    at_limit = "😀" * 2500  # 2500 code points, 5000 UTF-16 units
    over_limit = at_limit + "a"
    assert (utf16_length(at_limit), utf16_length(over_limit)) == (5000, 5001)

    messaging_api.reply_message(ReplyMessageRequest(reply_token="ok", messages=[TextMessage(text=at_limit)]))
    with pytest.raises(ApiException) as error:
        messaging_api.reply_message(ReplyMessageRequest(reply_token="too-long", messages=[TextMessage(text=over_limit)]))

    assert error.value.status == 400
    assert json.loads(error.value.body)["details"] == [
        {"message": "Length must be between 0 and 5000", "property": "messages[0].text"}
    ]
    assert fake_line_api.delivered_texts() == [at_limit]


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (429, None, {"message": "The API rate limit has been exceeded. Try again later."}),
        (500, None, {"message": "Internal server error"}),
        (400, {"message": "Invalid reply token"}, {"message": "Invalid reply token"}),
    ],
)
def test_line_injected_reply_failures(fake_line_api, messaging_api, status, body, expected):
    fake_line_api.fail_next("reply", status, body)
    request = ReplyMessageRequest(reply_token="tok", messages=[TextMessage(text="x")])
    with pytest.raises(ApiException) as error:
        messaging_api.reply_message(request)
    assert (error.value.status, json.loads(error.value.body)) == (status, expected)

    messaging_api.reply_message(request)  # the token was not consumed by the failure
    assert fake_line_api.delivered == [("reply", "tok", ["x"])]
    assert [r.status for r in fake_line_api.requests_for("reply")] == [status, 200]


def test_line_profiles_groups_and_bot_info(fake_line_api, messaging_api):
    fake_line_api.profiles[USER_ID] = "Alice"
    fake_line_api.group_names[GROUP_ID] = "Book club"
    missing = "U" + "0" * 32
    fake_line_api.missing_ids.add(missing)

    assert messaging_api.get_profile(USER_ID).display_name == "Alice"
    assert messaging_api.get_group_summary(GROUP_ID).group_name == "Book club"
    assert messaging_api.get_group_member_profile(GROUP_ID, USER_ID).display_name == "Alice"
    assert messaging_api.get_room_member_profile(webhooks.DEFAULT_ROOM_ID, USER_ID).user_id == USER_ID
    assert messaging_api.get_bot_info().user_id == fake_line_api.bot_user_id == webhooks.DEFAULT_BOT_USER_ID
    with pytest.raises(ApiException) as error:
        messaging_api.get_profile(missing)
    assert error.value.status == 404 and json.loads(error.value.body) == {"message": "Not found"}
    assert fake_line_api.stats() == {"profile": 2, "group_summary": 1, "member_profile": 2, "bot_info": 1}


@needs_spec
@pytest.mark.parametrize("path, schema, setup", [
    ("/v2/bot/info", "BotInfoResponse", {}),
    ("/v2/bot/message/quota", "MessageQuotaResponse", {"quota_limit": 200}),
    ("/v2/bot/message/quota", "MessageQuotaResponse", {"quota_limit": None}),
    ("/v2/bot/message/quota/consumption", "QuotaConsumptionResponse", {"quota_used": 17}),
    ("/v2/bot/channel/webhook/endpoint", "GetWebhookEndpointResponse", {"webhook_active": False}),
])
def test_line_account_answers_are_lines_own(fake_line_api, http, path, schema, setup):
    """The account endpoints answer as LINE's OpenAPI description says, and 401 a wrong token."""
    from tests.fakes.line_spec import MESSAGING_SPEC, load_validator

    for name, value in setup.items():
        setattr(fake_line_api, name, value)
    response = http.get(f"{fake_line_api.url}{path}", headers={"Authorization": f"Bearer {LINE_ACCESS_TOKEN}"})
    assert response.status_code == 200
    assert load_validator(MESSAGING_SPEC).errors(schema, response.json()) == []
    refused = http.get(f"{fake_line_api.url}{path}", headers={"Authorization": "Bearer wrong"})
    assert refused.status_code == 401 and refused.json() == {"message": AUTH_FAILED}


def test_line_quota_and_webhook_setting_through_the_sdk(fake_line_api, messaging_api):
    fake_line_api.quota_limit, fake_line_api.quota_used = 1000, 3
    assert (messaging_api.get_message_quota().value, messaging_api.get_message_quota_consumption().total_usage) == (
        1000, 3)
    endpoint = messaging_api.get_webhook_endpoint()
    assert (endpoint.endpoint, endpoint.active) == (fake_line_api.webhook_endpoint, True)
    fake_line_api.webhook_endpoint = None
    with pytest.raises(ApiException) as error:
        messaging_api.get_webhook_endpoint()
    assert error.value.status == 404


def test_line_reset_forgets_tokens_and_deliveries(fake_line_api, messaging_api):
    request = ReplyMessageRequest(reply_token="again", messages=[TextMessage(text="x")])
    messaging_api.reply_message(request)
    fake_line_api.reset()
    assert fake_line_api.delivered == [] and fake_line_api.requests == []
    messaging_api.reply_message(request)
    assert fake_line_api.count("reply") == 1


# -- webhooks -----------------------------------------------------------------------


ALL_EVENT_BUILDERS = {
    "text_user": lambda: webhooks.text_message_event("hi"),
    "text_group_mention": lambda: webhooks.text_message_event("hi", source="group", mention_self=True),
    "text_room_standby": lambda: webhooks.text_message_event("hi", source="room", mode="standby", redelivery=True),
    "sticker": lambda: webhooks.sticker_message_event(source="group"),
    "follow": lambda: webhooks.follow_event(is_unblocked=True),
    "unfollow": webhooks.unfollow_event,
    "join_group": webhooks.join_event,
    "join_room": lambda: webhooks.join_event(source="room"),
    "leave": webhooks.leave_event,
    "unsend": lambda: webhooks.unsend_event("123456", source="group"),
    "postback": lambda: webhooks.postback_event("action=buy&itemid=111"),
    "postback_group_datetime": lambda: webhooks.postback_event(
        "pick", params={"datetime": "2026-12-02T10:00"}, source="group"),
}


@needs_spec
@pytest.mark.parametrize("name", sorted(ALL_EVENT_BUILDERS))
def test_webhook_builders_validate_against_spec(name):
    event = ALL_EVENT_BUILDERS[name]()
    assert webhooks.validate_webhook_payload(webhooks.payload(event)) is True


def test_webhook_builders_parse_with_line_sdk_and_signature():
    secret = "channel-secret"
    events = [build() for build in ALL_EVENT_BUILDERS.values()] + [webhooks.message_edited_event("42", "fixed")]
    body, headers = webhooks.signed_request(*events, channel_secret=secret)

    parsed = WebhookParser(secret).parse(body.decode(), headers["X-Line-Signature"])

    assert [e.type for e in parsed] == [e["type"] for e in events]
    edited = parsed[-1]
    assert isinstance(edited, MessageEditedEvent) and edited.message.id == "42" and edited.message.text == "fixed"


def test_webhook_sign_matches_openssl():
    # printf '%s' "$body" | openssl dgst -sha256 -hmac s3cret -binary | base64
    body = b'{"destination":"U0","events":[]}'
    assert webhooks.sign(body, "s3cret") == "e0IrTf5Lgr8hvskhUGn1131JazX5O9O4tP96gdcSjMo="
    assert webhooks.sign(body, "other") != webhooks.sign(body, "s3cret")


def test_webhook_text_event_details():
    event = webhooks.text_message_event("what's up?", source="group", mention_self=True, timestamp_ms=1_700_000_000_000)
    message = event["message"]

    assert message["text"] == "@Bot what's up?"
    assert message["mention"]["mentionees"] == [
        {"index": 0, "length": 4, "type": "user", "userId": webhooks.DEFAULT_BOT_USER_ID, "isSelf": True}
    ]
    assert event["source"] == {"type": "group", "groupId": GROUP_ID, "userId": USER_ID}
    assert re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{26}", event["webhookEventId"])
    assert re.fullmatch(r"[0-9a-f]{32}", event["replyToken"])
    assert message["id"].isdigit() and event["timestamp"] == 1_700_000_000_000
    assert event["deliveryContext"] == {"isRedelivery": False} and event["mode"] == "active"
    assert "replyToken" not in webhooks.text_message_event("x", mode="standby")

    body = webhooks.payload_bytes(event)
    parsed = WebhookParser("s").parse(body.decode(), webhooks.sign(body, "s"))[0]
    assert isinstance(parsed, MessageEvent) and isinstance(parsed.message, TextMessageContent)
    assert parsed.message.mention.mentionees[0].is_self is True


def test_webhook_ulids_sort_by_time():
    early, late = webhooks.new_webhook_event_id(1_000), webhooks.new_webhook_event_id(2_000)
    assert early[:10] < late[:10]


@needs_spec
def test_webhook_validation_rejects_bad_payloads():
    event = webhooks.text_message_event("hi")
    del event["message"]["quoteToken"]
    with pytest.raises(webhooks.WebhookValidationError, match="quoteToken"):
        webhooks.validate_webhook_payload(webhooks.payload(event))
    with pytest.raises(webhooks.WebhookValidationError, match="destination"):
        webhooks.validate_webhook_payload(webhooks.payload(destination="bot"))
    with pytest.raises(webhooks.WebhookValidationError, match="messageEdited"):
        webhooks.validate_webhook_payload(webhooks.payload(webhooks.message_edited_event("1", "x")))


# -- Ollama ---------------------------------------------------------------------------


OLLAMA_OPTIONS = {"temperature": 0.2, "top_p": 0.9, "top_k": 40, "num_predict": 64, "repeat_penalty": 1.1}


@pytest.fixture
def ollama_client(fake_ollama):
    return ollama.Client(host=fake_ollama.url, timeout=5, verify=SSL_CONTEXT)


def test_ollama_chat_non_streaming(fake_ollama, ollama_client):
    response = ollama_client.chat(
        model="gemma3:4b", messages=[{"role": "user", "content": "how are you"}], options=OLLAMA_OPTIONS
    )

    assert response.message.role == "assistant" and response.message.content == "echo: how are you"
    assert response.done and response.done_reason == "stop"
    assert (response.prompt_eval_count, response.eval_count) == (3, 4)
    assert response.total_duration > response.eval_duration > 0
    assert fake_ollama.last_options == OLLAMA_OPTIONS
    assert fake_ollama.chat_requests[0]["stream"] is False


def test_ollama_chat_streaming(fake_ollama, ollama_client):
    fake_ollama.responder = lambda messages, options: f"{len(messages)} messages at t={options['temperature']}"
    parts = list(
        ollama_client.chat(
            model="gemma3:4b",
            messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
            options={"temperature": 0.5},
            stream=True,
        )
    )

    assert len(parts) > 2 and not any(p.done for p in parts[:-1])
    assert "".join(p.message.content for p in parts) == "2 messages at t=0.5"
    assert parts[-1].done and parts[-1].done_reason == "stop" and parts[-1].eval_count == 4
    assert fake_ollama.last("chat").status == 200


def test_ollama_think_as_ollama_takes_it(fake_ollama, ollama_client):
    fake_ollama.responder = lambda messages, options: "<think>reasoning</think>answer"
    chat = {"model": "gemma3:4b", "messages": [{"role": "user", "content": "hi"}], "stream": False}
    assert ollama_client.chat(**chat).message.content == "<think>reasoning</think>answer"  # not sent: as it comes
    assert ollama_client.chat(**chat, think=False).message.content == "<think>reasoning</think>answer"
    with pytest.raises(ollama.ResponseError, match="does not support thinking"):
        ollama_client.chat(**chat, think=True)
    fake_ollama.thinking_models = ["gemma3:4b"]
    thought = ollama_client.chat(**chat, think="high").message
    assert (thought.content, thought.thinking) == ("answer", "reasoning")
    unthought = ollama_client.chat(**chat, think=False).message
    assert (unthought.content, unthought.thinking) == ("answer", None)
    with pytest.raises(ollama.ResponseError, match="invalid think value"):
        ollama_client._request_raw("POST", "/api/chat", json={**chat, "think": "maybe"})


def test_ollama_num_predict_truncates(fake_ollama, ollama_client):
    response = ollama_client.chat(
        model="gemma3:4b", messages=[{"role": "user", "content": "a b c d e"}], options={"num_predict": 2}
    )
    assert response.done_reason == "length" and response.eval_count == 2


def test_ollama_list_show_version(fake_ollama, ollama_client, http):
    listed = ollama_client.list()
    assert [m.model for m in listed.models] == ["gemma3:4b"]
    entry = listed.models[0]
    assert re.fullmatch(r"[0-9a-f]{64}", entry.digest) and entry.size > 1e9
    assert entry.details.parameter_size == "4B" and entry.details.quantization_level == "Q4_K_M"
    shown = ollama_client.show("gemma3:4b")
    assert shown.details.family == "gemma3" and "completion" in shown.capabilities
    assert http.get(f"{fake_ollama.url}/api/version").json() == {"version": "0.9.0"}
    assert http.get(fake_ollama.url).text == "Ollama is running"


def test_ollama_unknown_model_and_bad_options(fake_ollama, ollama_client):
    with pytest.raises(ollama.ResponseError) as error:
        ollama_client.chat(model="llama9", messages=[{"role": "user", "content": "x"}])
    assert error.value.status_code == 404
    assert error.value.error == 'model "llama9" not found, try pulling it first'
    with pytest.raises(ollama.ResponseError) as error:
        ollama_client.chat(
            model="gemma3:4b", messages=[{"role": "user", "content": "x"}], options={"top_k": "many"}
        )
    assert error.value.status_code == 400 and "top_k" in error.value.error
    with pytest.raises(ollama.ResponseError) as error:
        ollama_client.show("llama9")
    assert error.value.status_code == 404


def test_ollama_injected_failure(fake_ollama, ollama_client):
    fake_ollama.fail_next("chat", 500)
    with pytest.raises(ollama.ResponseError) as error:
        ollama_client.chat(model="gemma3:4b", messages=[{"role": "user", "content": "x"}])
    assert error.value.status_code == 500
    answer = ollama_client.chat(model="gemma3:4b", messages=[{"role": "user", "content": "x"}])
    assert answer.message.content == "echo: x"


def test_ollama_slow_server_times_out(fake_ollama):
    fake_ollama.set_delay("chat", 2)
    client = ollama.Client(host=fake_ollama.url, timeout=0.5, verify=SSL_CONTEXT)
    started = time.monotonic()
    with pytest.raises(httpx.TimeoutException):
        client.chat(model="gemma3:4b", messages=[{"role": "user", "content": "x"}])
    assert time.monotonic() - started < 1.5


# -- Replicate -------------------------------------------------------------------------


MODEL = "google/gemma-3-4b-it"
REPLICATE_INPUT = {
    "prompt": "tell me a joke",
    "temperature": 0.7,
    "top_p": 0.95,
    "top_k": 50,
    "max_new_tokens": 128,
    "repetition_penalty": 1.05,
}


def replicate_client_for(url: str, token: str) -> replicate.Client:
    return replicate.Client(api_token=token, base_url=url, transport=httpx.HTTPTransport(verify=SSL_CONTEXT))


@pytest.fixture
def replicate_client(fake_replicate):
    return replicate_client_for(fake_replicate.url, REPLICATE_TOKEN)


def test_replicate_prediction_polls_to_success(fake_replicate, replicate_client):
    fake_replicate.polls_until_done = 3
    version = fake_replicate.models[MODEL]
    prediction = replicate_client.predictions.create(version=version, input=REPLICATE_INPUT)
    statuses = [prediction.status]
    while prediction.status not in ("succeeded", "failed", "canceled"):
        prediction.reload()
        statuses.append(prediction.status)

    assert statuses == ["starting", "processing", "processing", "succeeded"]
    assert "".join(prediction.output) == "echo: tell me a joke"
    assert len(prediction.output) > 1
    assert prediction.metrics["input_token_count"] == 4 and prediction.metrics["output_token_count"] == 5
    assert prediction.model == MODEL and prediction.version == version and re.fullmatch(r"[0-9a-f]{64}", version)
    assert prediction.urls["get"] == f"{fake_replicate.url}/v1/predictions/{prediction.id}"
    assert prediction.started_at and prediction.completed_at
    assert fake_replicate.inputs == [REPLICATE_INPUT]
    assert fake_replicate.last("create").headers["authorization"] == f"Bearer {REPLICATE_TOKEN}"


def test_replicate_models_and_model_form(fake_replicate, replicate_client):
    model = replicate_client.models.get(MODEL)
    assert model.latest_version.id == fake_replicate.models[MODEL]
    assert replicate_client.models.get(MODEL).versions.get(model.latest_version.id).id == model.latest_version.id

    fake_replicate.responder = lambda inputs: f"T={inputs['temperature']}"
    prediction = replicate_client.models.predictions.create(
        model=MODEL, input={"prompt": "x", "temperature": 0.1}, wait=True
    )
    assert prediction.status == "succeeded" and "".join(prediction.output) == "T=0.1"
    assert fake_replicate.last("create").headers["prefer"] == "wait"
    assert fake_replicate.last("create").path == f"/v1/models/{MODEL}/predictions"
    assert "".join(replicate_client.run(MODEL, input={"prompt": "y", "temperature": 0.2})) == "T=0.2"


def test_replicate_errors(fake_replicate, replicate_client):
    with pytest.raises(ReplicateError) as error:
        replicate_client_for(fake_replicate.url, "r8_wrong").models.get(MODEL)
    assert (error.value.status, error.value.title) == (401, "Unauthenticated")
    assert error.value.detail == "You did not pass a valid authentication token"

    with pytest.raises(ReplicateError) as error:
        replicate_client.models.predictions.create(model="nobody/nothing", input={"prompt": "x"})
    assert error.value.status == 404
    with pytest.raises(ReplicateError) as error:
        replicate_client.predictions.create(version="0" * 64, input={"prompt": "x"})
    assert error.value.status == 422 and "version" in error.value.detail
    with pytest.raises(ReplicateError) as error:
        replicate_client.predictions.create(
            version=fake_replicate.models[MODEL], input={"prompt": "x", "top_p": "high"}
        )
    assert error.value.status == 422 and "input.top_p" in error.value.detail
    assert fake_replicate.inputs == []


def test_replicate_failed_prediction(fake_replicate, replicate_client):
    fake_replicate.fail_predictions_with("CUDA out of memory")
    prediction = replicate_client.predictions.create(version=fake_replicate.models[MODEL], input={"prompt": "x"})
    prediction.reload()
    assert (prediction.status, prediction.error, prediction.output) == ("failed", "CUDA out of memory", None)
    with pytest.raises(ModelError, match="CUDA out of memory"):
        replicate_client.run(MODEL, input={"prompt": "x"})


def test_replicate_cancel_and_injected_failure(fake_replicate, replicate_client):
    prediction = replicate_client.predictions.create(version=fake_replicate.models[MODEL], input={"prompt": "x"})
    prediction.cancel()
    prediction.reload()
    assert prediction.status == "canceled" and prediction.output is None

    fake_replicate.fail_next("create", 500)
    with pytest.raises(ReplicateError) as error:
        replicate_client.predictions.create(version=fake_replicate.models[MODEL], input={"prompt": "x"})
    assert error.value.status == 500


# -- OpenAI-compatible ---------------------------------------------------------------------


def test_openai_chat_completion_records_sampling_params(fake_openai, http):
    body = {
        "model": "llama-3.1-8b",
        "messages": [{"role": "system", "content": "short"}, {"role": "user", "content": "ping pong"}],
        "temperature": 0.3,
        "top_p": 0.8,
        "max_tokens": 100,
        "top_k": 20,
        "repetition_penalty": 1.15,
    }
    response = http.post(f"{fake_openai.url}/v1/chat/completions", json=body)

    data = response.json()
    assert response.status_code == 200 and data["object"] == "chat.completion"
    assert data["choices"][0]["message"] == {"role": "assistant", "content": "echo: ping pong"}
    assert data["choices"][0]["finish_reason"] == "stop"
    assert data["usage"] == {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}
    assert fake_openai.chat_requests == [body]


def test_openai_streaming_sse(fake_openai, http):
    messages = [{"role": "user", "content": "a b c"}]
    body = {"model": "llama-3.1-8b", "messages": messages, "stream": True, "max_tokens": 3}
    with http.stream("POST", f"{fake_openai.url}/v1/chat/completions", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]

    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "echo: a b "
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_openai_auth_unknown_model_and_failures(http):
    with FakeOpenAICompat(api_key="sk-test") as fake:
        message = {"model": "llama-3.1-8b", "messages": [{"role": "user", "content": "x"}]}
        unauthorized = http.post(f"{fake.url}/v1/chat/completions", json=message)
        assert unauthorized.status_code == 401
        assert unauthorized.json()["error"]["code"] == "invalid_api_key"

        auth = {"Authorization": "Bearer sk-test"}
        models = http.get(f"{fake.url}/v1/models", headers=auth).json()
        assert [m["id"] for m in models["data"]] == ["llama-3.1-8b"]
        missing = http.post(f"{fake.url}/v1/chat/completions", json={**message, "model": "gpt-9"}, headers=auth)
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
        bad = http.post(f"{fake.url}/v1/chat/completions", json={**message, "temperature": "warm"}, headers=auth)
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "temperature"

        fake.fail_next("chat", 429)
        throttled = http.post(f"{fake.url}/v1/chat/completions", json=message, headers=auth)
        assert throttled.status_code == 429 and throttled.json()["error"]["type"] == "rate_limit_error"
        assert http.post(f"{fake.url}/v1/chat/completions", json=message, headers=auth).status_code == 200


# -- process mode ---------------------------------------------------------------------------


PROCESS_FAKES = {
    "line_api": ["--access-token", "tok"],
    "ollama": [],
    "replicate": [],
    "openai_compat": [],
}


def await_listening(process: subprocess.Popen, timeout: float = 30) -> str:
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    line = process.stdout.readline() if ready else ""
    match = re.fullmatch(r"LISTENING (http://127\.0\.0\.1:\d+)\n", line)
    if match is None:
        process.kill()
        pytest.fail(f"{process.args} did not announce itself, got {line!r}")
    return match.group(1)


@pytest.fixture(scope="module")
def fake_processes():
    """Every fake as its own process; started together because imports dominate."""
    processes = {
        name: subprocess.Popen(
            [sys.executable, "-m", f"tests.fakes.{name}", "--port", "0", *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        for name, args in PROCESS_FAKES.items()
    }
    try:
        yield {name: (process, await_listening(process)) for name, process in processes.items()}
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            process.wait(timeout=10)


def test_line_api_as_a_process(fake_processes, http):
    process, url = fake_processes["line_api"]
    auth = {"Authorization": "Bearer tok"}
    body = {"replyToken": "r1", "messages": [{"type": "text", "text": "from a process"}]}

    assert http.post(f"{url}/v2/bot/message/reply", json=body, headers=auth).status_code == 200
    recorded = http.get(f"{url}/__fake__/requests").json()
    assert [(r["endpoint"], r["json"], r["status"]) for r in recorded] == [("reply", body, 200)]
    assert http.get(f"{url}/__fake__/stats").json() == {"reply": 1}
    assert http.get(f"{url}/__fake__/state").json()["delivered"] == [
        {"endpoint": "reply", "target": "r1", "texts": ["from a process"]}
    ]

    http.post(f"{url}/__fake__/fail_next", json={"endpoint": "reply", "status": 429})
    assert http.post(f"{url}/v2/bot/message/reply", json={**body, "replyToken": "r2"}, headers=auth).status_code == 429
    assert http.post(f"{url}/__fake__/reset").status_code == 200
    assert http.get(f"{url}/__fake__/requests").json() == []

    process.terminate()
    assert process.wait(timeout=10) == 0


@pytest.mark.parametrize("name", ["ollama", "replicate", "openai_compat"])
def test_llm_fakes_as_processes(fake_processes, name, http):
    process, url = fake_processes[name]
    if name == "replicate":
        assert replicate_client_for(url, "r8_test").models.get(MODEL).name == "gemma-3-4b-it"
    else:
        assert http.get(f"{url}{'/api/tags' if name == 'ollama' else '/v1/models'}").status_code == 200
    assert sum(http.get(f"{url}/__fake__/stats").json().values()) == 1
    assert process.poll() is None


def test_control_endpoints_are_off_in_process_less_mode(fake_line_api, http):
    assert http.get(f"{fake_line_api.url}/__fake__/requests").status_code == 404
