"""Signed but malformed webhooks: a bad event is ignored and logged, never a 500, never half
stored, and the events beside it still count."""
import copy
import json
import logging
import time

import pytest
from django.db.models import CharField

from conversations.models import Chat, ChatMember, LineChannel, Message, OptOut, ReplyMode
from tests.fakes import webhooks as ev

pytestmark = pytest.mark.django_db

PREFIX_GROUP = "C" + "9a" * 16
MENTION_GROUP = "C" + "8b" * 16
STRANGER = "U" + "7c" * 16
KEPT_ID = "100000000000000001"
SECRET = "secret words"
DELETE = object()


def _with(event: dict, path: str, value) -> dict:
    """A copy of `event` with the dotted `path` set to `value` (or removed: DELETE)."""
    changed = copy.deepcopy(event)
    *parents, last = path.split(".")
    target = changed
    for step in parents:
        target = target[int(step)] if isinstance(target, list) else target[step]
    key = int(last) if isinstance(target, list) else last
    if value is DELETE:
        del target[key]
    else:
        target[key] = value
    return changed


def _nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


def in_prefix_group(**fields) -> dict:
    return ev.text_message_event(f"/ai {SECRET}", source="group", group_id=PREFIX_GROUP, user_id=STRANGER, **fields)


def mentioning() -> dict:
    return ev.text_message_event(SECRET, source="group", group_id=MENTION_GROUP, user_id=STRANGER, mention_self=True)


def unsending() -> dict:
    return ev.unsend_event(KEPT_ID, source="group", group_id=PREFIX_GROUP, user_id=STRANGER)


def editing() -> dict:
    return ev.message_edited_event(KEPT_ID, SECRET, group_id=PREFIX_GROUP, user_id=STRANGER)


LONG = 65  # one past the id columns (64)


def one_too_long(prefix: str) -> str:
    return prefix + "f" * (LONG - 1)

BAD_EVENTS = {
    "type is an object": lambda: _with(in_prefix_group(), "type", {"message": True}),
    "type is a list": lambda: _with(in_prefix_group(), "type", ["message"]),
    "source missing": lambda: _with(in_prefix_group(), "source", DELETE),
    "source is a string": lambda: _with(in_prefix_group(), "source", "group"),
    "source type unknown": lambda: _with(in_prefix_group(), "source.type", "planet"),
    "source type is an object": lambda: _with(in_prefix_group(), "source.type", {"group": 1}),
    "source type nested deep": lambda: _with(in_prefix_group(), "source.type", _nested(400)),
    "userId too long": lambda: ev.text_message_event(SECRET, user_id=one_too_long("U")),
    "userId not a string": lambda: _with(in_prefix_group(), "source.userId", 7),
    "userId with NUL": lambda: _with(in_prefix_group(), "source.userId", STRANGER + "\x00"),
    "groupId too long": lambda: _with(in_prefix_group(), "source.groupId", one_too_long("C")),
    "groupId is an object": lambda: _with(in_prefix_group(), "source.groupId", {"id": PREFIX_GROUP}),
    "roomId too long": lambda: ev.text_message_event(SECRET, source="room", room_id=one_too_long("R")),
    "follow userId too long": lambda: ev.follow_event(user_id=one_too_long("U")),
    "leave groupId too long": lambda: ev.leave_event(group_id=one_too_long("C")),
    "timestamp missing": lambda: _with(in_prefix_group(), "timestamp", DELETE),
    "timestamp a string": lambda: _with(in_prefix_group(), "timestamp", str(int(time.time() * 1000))),
    "timestamp a boolean": lambda: _with(in_prefix_group(), "timestamp", True),
    "timestamp a float": lambda: _with(in_prefix_group(), "timestamp", time.time() * 1000),
    "timestamp zero": lambda: _with(in_prefix_group(), "timestamp", 0),
    "timestamp negative": lambda: _with(in_prefix_group(), "timestamp", -1),
    "timestamp in the year 9999": lambda: _with(in_prefix_group(), "timestamp", 253_402_300_799_000),
    "timestamp past any calendar": lambda: _with(in_prefix_group(), "timestamp", 10**30),
    "replyToken too long": lambda: in_prefix_group(reply_token="r" * LONG),
    "replyToken an object": lambda: _with(in_prefix_group(), "replyToken", {"token": "r"}),
    "webhookEventId too long": lambda: in_prefix_group(webhook_event_id="0" * LONG),
    "webhookEventId an object": lambda: _with(in_prefix_group(), "webhookEventId", {"id": "01"}),
    "webhookEventId missing": lambda: _with(in_prefix_group(), "webhookEventId", DELETE),
    "message a string": lambda: _with(in_prefix_group(), "message", SECRET),
    "message id too long": lambda: in_prefix_group(message_id=KEPT_ID * 2),
    "message id a number": lambda: _with(in_prefix_group(), "message.id", int(KEPT_ID)),
    "message id missing": lambda: _with(in_prefix_group(), "message.id", DELETE),
    "message type an object": lambda: _with(in_prefix_group(), "message.type", {"text": 1}),
    "message type too long": lambda: _with(in_prefix_group(), "message.type", "t" * 17),
    "text a list in prefix mode": lambda: _with(in_prefix_group(), "message.text", ["/ai", SECRET]),
    "text an object": lambda: _with(in_prefix_group(), "message.text", {"/ai": SECRET}),
    "text missing": lambda: _with(in_prefix_group(), "message.text", DELETE),
    "text with NUL": lambda: _with(in_prefix_group(), "message.text", f"/ai {SECRET}\x00"),
    "text with a lone surrogate": lambda: _with(in_prefix_group(), "message.text", f"/ai {SECRET} \ud800"),
    "mention a list": lambda: _with(mentioning(), "message.mention", [ev.mentionee(0, 4, is_self=True)]),
    "mentionees not a list": lambda: _with(mentioning(), "message.mention.mentionees", "all"),
    "mentionees missing": lambda: _with(mentioning(), "message.mention.mentionees", DELETE),
    "mentionee not an object": lambda: _with(mentioning(), "message.mention.mentionees", [ev.DEFAULT_BOT_USER_ID]),
    "mentionee index not an integer": lambda: _with(mentioning(), "message.mention.mentionees.0.index", "0"),
    "mentionee length missing": lambda: _with(mentioning(), "message.mention.mentionees.0.length", DELETE),
    "mentionee isSelf not a boolean": lambda: _with(mentioning(), "message.mention.mentionees.0.isSelf", "true"),
    "mentionee past the text": lambda: _with(mentioning(), "message.mention.mentionees.0.length", 400),
    "mentionee negative index": lambda: _with(mentioning(), "message.mention.mentionees.0.index", -1),
    "mentionee of no length": lambda: _with(mentioning(), "message.mention.mentionees.0.length", 0),
    "mentionee inside a character": lambda: _with(
        ev.text_message_event("😀 hi", source="group", group_id=MENTION_GROUP, user_id=STRANGER),
        "message.mention", {"mentionees": [ev.mentionee(1, 2, is_self=True)]}),
    "mentionees overlapping": lambda: _with(mentioning(), "message.mention.mentionees",
                                            [ev.mentionee(0, 4, is_self=True), ev.mentionee(2, 4)]),
    "mentionee userId too long": lambda: _with(mentioning(), "message.mention.mentionees.0.userId",
                                               one_too_long("U")),
    "mentionee userId a number": lambda: _with(mentioning(), "message.mention.mentionees.0.userId", 7),
    "too many mentionees": lambda: _with(mentioning(), "message.mention.mentionees",
                                         [ev.mentionee(0, 1)] * 101),
    "postback missing": lambda: _with(ev.postback_event("forgetme:yes"), "postback", DELETE),
    "postback data a number": lambda: _with(ev.postback_event("forgetme:yes"), "postback.data", 7),
    "postback data too long": lambda: ev.postback_event("forgetme:" + "x" * 300),
    "postback data forged": lambda: ev.postback_event("forgetme:yes:1:" + "0" * 32 + ":1abcde:" + "A" * 43),
    "postback userId too long": lambda: ev.postback_event("forgetme:yes", user_id=one_too_long("U")),
    "unsend a string": lambda: _with(unsending(), "unsend", KEPT_ID),
    "unsend messageId too long": lambda: _with(unsending(), "unsend.messageId", KEPT_ID * 2),
    "unsend messageId a number": lambda: _with(unsending(), "unsend.messageId", int(KEPT_ID)),
    "unsend messageId missing": lambda: _with(unsending(), "unsend.messageId", DELETE),
    "unsend source missing": lambda: _with(unsending(), "source", DELETE),
    "edited message a string": lambda: _with(editing(), "message", SECRET),
    "edited text a list": lambda: _with(editing(), "message.text", [SECRET]),
    "edited message id too long": lambda: _with(editing(), "message.id", KEPT_ID * 2),
    "edited message id a number": lambda: _with(editing(), "message.id", int(KEPT_ID)),
    "edited text with NUL": lambda: _with(editing(), "message.text", SECRET + "\x00"),
    "quoteToken an object": lambda: _with(mentioning(), "message.quoteToken", {"token": "q"}),
    "quoteToken a number": lambda: _with(in_prefix_group(), "message.quoteToken", 12345),
    "follow replyToken an object": lambda: _with(ev.follow_event(user_id=STRANGER), "replyToken", {"t": 1}),
    "join timestamp a string": lambda: _with(ev.join_event(group_id=PREFIX_GROUP), "timestamp", "now"),
}


def too_long_values() -> list[str]:
    """Every stored value longer than its column: PostgreSQL would have refused it."""
    found = []
    for model in (LineChannel, Chat, Message, ChatMember, OptOut):
        for field in model._meta.concrete_fields:
            if isinstance(field, CharField) and field.max_length:
                for pk, value in model.objects.values_list("pk", field.attname):
                    if value and len(value) > field.max_length:
                        found.append(f"{model.__name__}.{field.name} of #{pk}")
    return found


@pytest.fixture
def kept(channel, make_chat, make_message):
    """A prefix-mode group and a mention-mode group; the first holds one earlier message."""
    prefix_chat = make_chat(PREFIX_GROUP, reply_mode=ReplyMode.PREFIX)
    make_chat(MENTION_GROUP, reply_mode=ReplyMode.MENTION)
    return make_message(prefix_chat, "keep me", user=STRANGER, line_message_id=KEPT_ID)


def body_of(*events, destination=ev.DEFAULT_BOT_USER_ID) -> bytes:
    # ASCII escapes, so that lone surrogates can be sent at all.
    return json.dumps({"destination": destination, "events": list(events)}).encode()


@pytest.mark.parametrize("make_bad", BAD_EVENTS.values(), ids=BAD_EVENTS.keys())
def test_a_malformed_event_is_ignored_and_the_one_beside_it_stored(webhook, line_api, kept, caplog, make_bad):
    kept_before = Message.objects.values().get(pk=kept.pk)
    good = ev.text_message_event("still answered")
    with caplog.at_level(logging.INFO):
        response = webhook.post(body=body_of(make_bad(), good))
    assert response.status_code == 200
    assert response.json() == {"stored": 1, "duplicates": 0, "ignored": 1}
    assert Message.objects.values().get(pk=kept.pk) == kept_before
    inbound = Message.objects.filter(direction="in").exclude(pk=kept.pk)
    assert list(inbound.values_list("webhook_event_id", flat=True)) == [good["webhookEventId"]]
    assert set(Chat.objects.values_list("line_id", flat=True)) == {PREFIX_GROUP, MENTION_GROUP, ev.DEFAULT_USER_ID}
    assert line_api.delivered_texts() == ["echo: still answered"]
    assert too_long_values() == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("malformed" in message for message in warnings), warnings
    assert SECRET not in caplog.text


@pytest.mark.parametrize(
    "destination",
    ["U" + "0" * 64, {"id": ev.DEFAULT_BOT_USER_ID}, [ev.DEFAULT_BOT_USER_ID], 12345, "U" + "0" * 32 + "\x00"],
    ids=["too long", "an object", "a list", "a number", "with NUL"],
)
def test_a_destination_the_database_cannot_keep_is_not_stored(webhook, channel, destination):
    good = ev.text_message_event("hi")
    response = webhook.post(body=body_of(good, destination=destination))
    assert response.status_code == 200
    assert response.json()["stored"] == 1
    channel.refresh_from_db()
    assert channel.bot_user_id == ""
    assert too_long_values() == []


@pytest.mark.parametrize(
    "body",
    [
        b'{"events": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"events": [], "destination": ' + b'{"a": ' * 100_000 + b"1" + b"}" * 100_000 + b"}",
    ],
    ids=["deep list", "deep object"],
)
def test_json_nested_too_deep_is_a_clear_400(webhook, body):
    response = webhook.post(body=body)
    assert response.status_code == 400
    assert "JSON" in response.json()["error"]
    assert Message.objects.count() == 0 and Chat.objects.count() == 0


@pytest.mark.parametrize("source", ["user", "group"])
def test_fields_the_bot_never_reads_do_not_matter_however_long(webhook, line_api, source):
    """emojis are not read; a quoteToken longer than its column is left out, not refused:
    the answer only goes without its quote."""
    token = "q" * 5000
    event = _with(ev.text_message_event("quoted", source=source, mention_self=True), "message.quoteToken", token)
    event["message"]["emojis"] = "not a list"
    response = webhook.post(body=body_of(event))
    assert response.json() == {"stored": 1, "duplicates": 0, "ignored": 0}
    # The model sees no mention of the bot; in a group, the speaker's name.
    assert line_api.delivered_texts() == [{"user": "echo: quoted", "group": "echo: User 1a1a: quoted"}[source]]
    assert "quoteToken" not in line_api.last("reply").json["messages"][0]
    assert token not in json.dumps(list(Message.objects.values()), default=str)
    assert too_long_values() == []


def test_a_body_of_junk_is_two_log_lines_not_thousands(webhook, caplog):
    junk = [0] * 500 + [{"type": ["message"]}] * 500 + [{"type": f"future{i}"} for i in range(500)]
    with caplog.at_level(logging.INFO, logger="conversations"):
        response = webhook.post(body=body_of(*junk, ev.text_message_event("hi")))
    assert response.json() == {"stored": 1, "duplicates": 0, "ignored": 1500}
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "conversations.ingest"]
    assert lines == [
        ("WARNING", "Ignored 1000 malformed webhook events: event is not an object (500); "
                    "type is not a non-empty string (500)"),
        ("INFO", "Acknowledged 500 webhook events the bot does not act on, of types "
                 "'future0' (1), 'future1' (1), 'future2' (1), 'future3' (1), 'future4' (1)"),
    ]
