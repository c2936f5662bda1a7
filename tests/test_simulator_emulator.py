"""The Messaging API emulator takes exactly what LINE takes, and answers as LINE does.

Valid calls go through line-bot-sdk (the client the bot uses, pointed at the emulator);
requests the SDK would refuse to build are sent to `emulator.handle` as raw bytes, as any
client could send them.
"""
import json
import uuid
from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone
from linebot.v3.messaging import ReplyMessageRequest, TextMessage

from conversations.line.client import LineAPIError, client_for, retry_key
from conversations.models import LineChannel
from conversations.simulator import emulator
from conversations.simulator.models import EmulatorCall, SimulatedEvent, Trouble
from tests.simulation import SANDBOX_TOKEN, sandbox, simulation  # noqa: F401 (fixtures)

pytestmark = pytest.mark.django_db
AUTH = {"Authorization": f"Bearer {SANDBOX_TOKEN}", "Content-Type": "application/json"}


def post(channel, path, body, **headers):
    raw = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
    return emulator.handle(channel_id=channel.pk, method="POST", path=path, headers={**AUTH, **headers}, body=raw)


def texts(*values):
    return [{"type": "text", "text": value} for value in values]


@pytest.fixture
def one_to_one(simulation):
    """A 1:1 chat whose last message is "hi", answered: its reply token is used."""
    simulated = simulation.chat("user", member_names=["Mei"])
    simulation.say(simulated, "hi")
    return simulated


def fresh_token(simulated) -> str:
    """A reply token as a new message event brings, not used yet."""
    event = SimulatedEvent.objects.create(simulated_chat=simulated, event_type="message", message_type="text",
                                          webhook_event_id=uuid.uuid4().hex[:26], reply_token=uuid.uuid4().hex,
                                          sent_at=timezone.now())
    return event.reply_token


def test_a_reply_through_the_sdk_is_accepted_and_recorded_by_shape(sandbox, one_to_one):
    token = fresh_token(one_to_one)
    client = client_for(sandbox)
    response = client.api.reply_message(ReplyMessageRequest(reply_token=token, messages=[
        TextMessage(text="first"), TextMessage(text="second 😀")]))
    assert len(response.sent_messages) == 2 and all(m.quote_token for m in response.sent_messages)
    call = EmulatorCall.objects.filter(endpoint="reply").last()
    assert (call.status, call.reply_token, call.simulated_chat) == (200, token, one_to_one)
    assert [(m["type"], m["units"]) for m in call.messages] == [("text", 5), ("text", 9)]  # 😀 is two units
    assert call.sent == [{"id": m.id, "quoteToken": m.quote_token} for m in response.sent_messages]


def test_a_reply_token_works_once(sandbox, one_to_one):
    token = fresh_token(one_to_one)
    assert post(sandbox, "/v2/bot/message/reply", {"replyToken": token, "messages": texts("a")}).status == 200
    again = post(sandbox, "/v2/bot/message/reply", {"replyToken": token, "messages": texts("b")})
    assert (again.status, again.body) == (400, {"message": "Invalid reply token"})
    with pytest.raises(LineAPIError) as raised:
        client_for(sandbox).reply(reply_token=token, texts=["c"])
    assert raised.value.invalid_reply_token


def test_a_reply_token_expires_after_a_minute_and_an_unknown_one_is_refused(sandbox, one_to_one):
    token = fresh_token(one_to_one)
    SimulatedEvent.objects.filter(reply_token=token).update(sent_at=timezone.now() - timedelta(seconds=61))
    assert post(sandbox, "/v2/bot/message/reply", {"replyToken": token, "messages": texts("late")}).status == 400
    unknown = post(sandbox, "/v2/bot/message/reply", {"replyToken": uuid.uuid4().hex, "messages": texts("?")})
    assert unknown.body["message"] == "Invalid reply token"


@pytest.mark.parametrize("messages, property_", [
    (texts(*"abcdef"), "messages"),  # six messages: LINE takes five
    ([], "messages"),
    (texts("x" * 5001), "messages[0].text"),
    (texts("ok", "😀" * 2501), "messages[1].text"),  # 2,501 characters, 5,002 UTF-16 units
    (texts(""), "messages[0].text"),
])
def test_what_line_refuses_by_its_documented_limits(sandbox, one_to_one, messages, property_):
    token = fresh_token(one_to_one)
    answer = post(sandbox, "/v2/bot/message/reply", {"replyToken": token, "messages": messages})
    assert answer.status == 400 and property_ in [d["property"] for d in answer.body["details"]]
    assert answer.body["message"].startswith("The request body has")
    # The token was not spent on a refused request.
    assert post(sandbox, "/v2/bot/message/reply", {"replyToken": token, "messages": texts("fine")}).status == 200


def test_five_messages_of_5000_utf16_units_each_are_accepted(sandbox, one_to_one):
    token = fresh_token(one_to_one)
    full = ["😀" * 2500] * 4 + ["x" * 5000]
    assert post(sandbox, "/v2/bot/message/reply", {"replyToken": token, "messages": texts(*full)}).status == 200


@pytest.mark.parametrize("body", [
    {"replyToken": "t", "messages": [{"type": "text"}]},  # no text
    {"replyToken": "t", "messages": [{"type": "carousel", "text": "x"}]},  # no such message type
    {"messages": texts("no token")},
    {"replyToken": 7, "messages": texts("token is a number")},
    {"replyToken": "t", "messages": texts("x"), "notificationDisabled": "yes"},
])
def test_what_line_refuses_by_its_request_schema(sandbox, body):
    answer = post(sandbox, "/v2/bot/message/reply", body)
    assert answer.status == 400 and answer.body["details"]


def test_a_body_that_is_not_a_json_object_is_refused(sandbox):
    assert post(sandbox, "/v2/bot/message/reply", b"[1, 2]").status == 400
    assert post(sandbox, "/v2/bot/message/push", b"{not json").status == 400


def test_a_repeated_retry_key_is_answered_409_with_what_was_sent(sandbox, one_to_one):
    client = client_for(sandbox)
    key = str(uuid.uuid4())
    client.push(to=one_to_one.line_id, texts=["pushed"], retry_key=key)
    first = EmulatorCall.objects.get(endpoint="push", status=200)
    again = post(sandbox, "/v2/bot/message/push", {"to": one_to_one.line_id, "messages": texts("pushed")},
                 **{"X-Line-Retry-Key": key})
    assert again.status == 409 and again.body == {"message": "The retry key is already accepted",
                                                  "sentMessages": first.sent}
    assert again.headers["x-line-accepted-request-id"] == first.request_id
    with pytest.raises(LineAPIError) as raised:
        client.push(to=one_to_one.line_id, texts=["pushed"], retry_key=key)
    assert raised.value.already_accepted
    assert EmulatorCall.objects.filter(endpoint="push", status=200).count() == 1


def test_a_retry_key_refused_with_a_500_can_be_used_again(sandbox, one_to_one):
    one_to_one.trouble = Trouble.SERVER_ERROR_ONCE
    one_to_one.save()
    key = str(uuid.uuid4())
    body = {"to": one_to_one.line_id, "messages": texts("x")}
    assert post(sandbox, "/v2/bot/message/push", body, **{"X-Line-Retry-Key": key}).status == 500
    assert post(sandbox, "/v2/bot/message/push", body, **{"X-Line-Retry-Key": key}).status == 200


def test_the_database_takes_an_accepted_retry_key_once(sandbox):
    fields = {"channel": sandbox, "endpoint": "push", "path": "/v2/bot/message/push", "status": 200,
              "retry_key": str(uuid.uuid4()), "request_id": "r", "created_at": timezone.now()}
    EmulatorCall.objects.create(**fields)
    with pytest.raises(IntegrityError), transaction.atomic():
        EmulatorCall.objects.create(**fields)


@pytest.mark.parametrize("body, headers, message", [
    ({"to": "U" + "0" * 32, "messages": texts("x")}, {}, "Failed to send messages"),  # no such chat
    ({"to": "not-an-id", "messages": texts("x")}, {}, "The request body has 1 error(s)"),
    ({"to": None, "messages": texts("x")}, {}, "The request body has 1 error(s)"),
    ({"to": "U" + "0" * 32, "messages": texts("x")}, {"X-Line-Retry-Key": "again-please"},
     "The value for the 'X-Line-Retry-Key' header is invalid"),
])
def test_pushes_line_refuses(sandbox, body, headers, message):
    answer = post(sandbox, "/v2/bot/message/push", body, **headers)
    assert (answer.status, answer.body["message"]) == (400, message)


def test_the_access_token_is_checked(sandbox):
    answer = emulator.handle(channel_id=sandbox.pk, method="POST", path="/v2/bot/message/push",
                             headers={"Authorization": "Bearer someone-elses"}, body=b"{}")
    assert answer.status == 401
    real = LineChannel.objects.create(name="Real", slug="real", channel_secret="s", access_token="t")
    assert emulator.handle(channel_id=real.pk, method="GET", path="/v2/bot/info",
                           headers={"Authorization": "Bearer t"}, body=b"").status == 401


def test_unknown_endpoints_are_not_found(sandbox):
    answer = emulator.handle(channel_id=sandbox.pk, method="POST", path="/v2/bot/message/broadcast",
                             headers=AUTH, body=b"{}")
    assert answer.status == 404 and EmulatorCall.objects.get().endpoint == "other"


def test_the_loading_animation_only_in_one_to_one_chats_and_in_steps_of_five_seconds(sandbox, simulation):
    person = simulation.chat("user")
    group = simulation.chat("group")
    client_for(sandbox).show_loading(user_id=person.line_id, seconds=20)
    assert EmulatorCall.objects.filter(endpoint="loading").last().loading_seconds == 20
    for body in ({"chatId": person.line_id, "loadingSeconds": 7}, {"chatId": person.line_id, "loadingSeconds": 65},
                 {"chatId": group.line_id, "loadingSeconds": 5}, {"loadingSeconds": 5}):
        assert post(sandbox, "/v2/bot/chat/loading/start", body).status == 400, body


def test_profiles_come_from_the_simulated_members(sandbox, simulation):
    person = simulation.chat("user", member_names=["Mei"])
    group = simulation.chat("group", title="Book club", member_names=["Ann", "Ben"])
    client = client_for(sandbox)
    assert client.display_name(source_type="user", line_id=person.line_id) == "Mei"
    assert client.display_name(source_type="group", line_id=group.line_id) == "Book club"
    ben = group.members.get(display_name="Ben")
    assert client.api.get_group_member_profile(group.line_id, ben.user_id).display_name == "Ben"
    with pytest.raises(LineAPIError) as raised:
        client.display_name(source_type="user", line_id=ben.user_id)  # a group member, not a friend
    assert raised.value.status == 404
    with simulation.capture(execute=True):
        from conversations.simulator import services
        services.remove_member(member=ben, actor="test")
    with pytest.raises(Exception):
        client.api.get_group_member_profile(group.line_id, ben.user_id)
    assert client.api.get_bot_info().user_id == sandbox.bot_user_id


@pytest.mark.parametrize("trouble, statuses, left", [
    (Trouble.RATE_LIMITED_ONCE, [429, 200], Trouble.NONE),
    (Trouble.SERVER_ERROR_ONCE, [500, 200], Trouble.NONE),
    (Trouble.SERVER_ERROR_ALWAYS, [500, 500], Trouble.SERVER_ERROR_ALWAYS),
])
def test_line_trouble_on_pushes(sandbox, one_to_one, trouble, statuses, left):
    one_to_one.trouble = trouble
    one_to_one.save()
    body = {"to": one_to_one.line_id, "messages": texts("x")}
    assert [post(sandbox, "/v2/bot/message/push", body).status for _ in statuses] == statuses
    one_to_one.refresh_from_db()
    assert one_to_one.trouble == left


def test_expired_reply_tokens_as_trouble(sandbox, one_to_one):
    one_to_one.trouble = Trouble.EXPIRED_REPLY_TOKEN
    one_to_one.save()
    token = fresh_token(one_to_one)
    assert post(sandbox, "/v2/bot/message/reply", {"replyToken": token, "messages": texts("x")}).body == {
        "message": "Invalid reply token"}
    assert post(sandbox, "/v2/bot/message/push", {"to": one_to_one.line_id, "messages": texts("x")}).status == 200


def test_a_push_is_matched_to_its_answer_by_retry_key(sandbox, one_to_one):
    answer = one_to_one.calls.get(endpoint="reply", answer__message_type="text").answer  # not the follow's notice
    key = retry_key(message_id=answer.pk, call_index=1)
    client_for(sandbox).push(to=one_to_one.line_id, texts=["more"], retry_key=key)
    call = EmulatorCall.objects.get(endpoint="push")
    assert (call.answer_id, call.call_index) == (answer.pk, 1)
