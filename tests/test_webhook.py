"""The webhook request: signature, parsing, storage, dedupe — and what it queues."""
import json

import pytest

from conversations import redaction
from conversations.erasure import ERASED_TEXT
from conversations.models import Chat, Message, ReplyMode, Status
from tests.fakes import webhooks as ev

pytestmark = pytest.mark.django_db


def test_valid_signature_is_accepted_and_answered(webhook, line_api):
    response = webhook.post(ev.text_message_event("hello"))
    assert response.status_code == 200
    assert response.json() == {"stored": 1, "duplicates": 0, "ignored": 0}
    assert line_api.delivered_texts() == ["echo: hello"]


def test_wrong_signature_is_403_and_stores_nothing(webhook, line_api):
    response = webhook.post(ev.text_message_event("hello"), secret="not-the-channel-secret")
    assert response.status_code == 403
    assert Message.objects.count() == 0 and Chat.objects.count() == 0
    assert line_api.requests == []


def test_missing_signature_is_400_and_stores_nothing(webhook):
    response = webhook.post(ev.text_message_event("hello"), signature=False)
    assert response.status_code == 400
    assert "X-Line-Signature" in response.json()["error"]
    assert Message.objects.count() == 0


def test_signature_over_a_different_body_is_rejected(webhook):
    signed_for = ev.payload_bytes(ev.text_message_event("original"))
    tampered = ev.payload_bytes(ev.text_message_event("tampered"))
    response = webhook.post(body=tampered, signature=ev.sign(signed_for, "0123456789abcdef0123456789abcdef"))
    assert response.status_code == 403


def test_verify_request_with_no_events_is_200(webhook, line_api):
    response = webhook.post()
    assert response.status_code == 200
    assert Message.objects.count() == 0
    assert line_api.requests == []


@pytest.mark.parametrize(
    "body, message",
    [
        (b"{not json", "not valid JSON"),
        (b'{"destination": "U1"}', "no 'events' list"),
        (b'["a list"]', "no 'events' list"),
        (b'{"events": "nope"}', "no 'events' list"),
    ],
)
def test_malformed_bodies_get_a_clear_400(webhook, body, message):
    response = webhook.post(body=body)
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_oversized_body_is_413(webhook, settings):
    settings.LINE_WEBHOOK_MAX_BODY_BYTES = 100
    response = webhook.post(ev.text_message_event("x" * 200))
    assert response.status_code == 413
    assert Message.objects.count() == 0


def test_get_is_not_allowed(client, channel):
    assert client.get("/line/webhook/").status_code == 405


def test_unknown_channel_slug_is_404(webhook):
    response = webhook.post(ev.text_message_event("hi"), path="/line/webhook/nope/")
    assert response.status_code == 404


def test_channel_by_slug_uses_its_own_secret(webhook, line_api):
    response = webhook.post(ev.text_message_event("via slug"), path="/line/webhook/test/")
    assert response.status_code == 200
    assert line_api.delivered_texts() == ["echo: via slug"]


def test_unknown_and_malformed_events_are_acknowledged_not_crashing(webhook, line_api):
    known = ev.text_message_event("still answered")
    future = {"type": "somethingNew", "webhookEventId": "01FUTURE", "timestamp": 1, "mode": "active"}
    broken = {"type": "message", "webhookEventId": "01BROKEN", "timestamp": 1, "message": {"type": "text"}}
    response = webhook.post(body=json.dumps({"destination": "U1", "events": [future, broken, "junk", known]}).encode())
    assert response.status_code == 200
    assert response.json() == {"stored": 1, "duplicates": 0, "ignored": 3}
    assert line_api.delivered_texts() == ["echo: still answered"]


def test_several_events_from_different_chats_in_one_webhook(webhook, line_api):
    alice = ev.text_message_event("from alice", user_id="U" + "a1" * 16)
    bob = ev.text_message_event("from bob", user_id="U" + "b2" * 16)
    group = ev.text_message_event("in the group", source="group", mention_self=True)
    response = webhook.post(alice, bob, group)
    assert response.json()["stored"] == 3
    assert Chat.objects.count() == 3
    # In the group the model sees the speaker's name, not the bot's mention.
    assert sorted(line_api.delivered_texts()) == ["echo: User 1a1a: in the group", "echo: from alice", "echo: from bob"]
    assert {m.chat.line_id for m in Message.objects.filter(direction="out")} == {
        "U" + "a1" * 16, "U" + "b2" * 16, ev.DEFAULT_GROUP_ID,
    }


def test_redelivered_event_produces_exactly_one_reply(webhook, line_api):
    first = ev.text_message_event("once please")
    again = {**first, "deliveryContext": {"isRedelivery": True}}
    assert webhook.post(first).json()["stored"] == 1
    assert webhook.post(again).json() == {"stored": 0, "duplicates": 1, "ignored": 0}
    assert line_api.delivered_texts() == ["echo: once please"]
    assert Message.objects.filter(direction="in").count() == 1


@pytest.fixture
def remembering_group(make_chat):
    """The default group, keeping every message (group memory "everything")."""
    return make_chat(ev.DEFAULT_GROUP_ID, group_memory="everything")


def test_group_message_without_mention_is_stored_but_not_answered(webhook, line_api, remembering_group):
    webhook.post(ev.text_message_event("just chatting", source="group"))
    message = Message.objects.get()
    assert (message.status, message.skip_reason) == (Status.SKIPPED, "not mentioned")
    assert message.reply_token == ""
    assert line_api.delivered == []


def test_group_message_with_mention_is_answered_without_loading_animation(webhook, line_api):
    webhook.post(ev.text_message_event("what time is it?", source="group", mention_self=True))
    assert line_api.delivered_texts() == ["echo: User 1a1a: what time is it?"]
    assert line_api.count("loading") == 0
    assert Message.objects.get(direction="in").status == Status.REPLIED


def test_mention_of_someone_else_is_not_an_answer_cue(webhook, line_api):
    other = ev.mentionee(0, 6, user_id="U" + "cc" * 16)
    webhook.post(ev.text_message_event("@Alice lunch?", source="group", mentionees=[other]))
    assert line_api.delivered == []


@pytest.mark.parametrize(
    "mode, text, answered",
    [
        (ReplyMode.ALWAYS, "anything", True),
        (ReplyMode.OFF, "anything", False),
        (ReplyMode.PREFIX, "/ai tell me a joke", True),
        (ReplyMode.PREFIX, "tell me a joke", False),
    ],
)
def test_room_reply_modes(webhook, line_api, channel, mode, text, answered):
    Chat.objects.create(channel=channel, source_type="room", line_id=ev.DEFAULT_ROOM_ID, reply_mode=mode)
    webhook.post(ev.text_message_event(text, source="room"))
    # The keyword is left out of what the model sees; the speaker is named.
    assert (line_api.delivered_texts() == [f"echo: User 1a1a: {text.removeprefix('/ai ')}"]) is answered


def test_standby_mode_is_stored_and_skipped(webhook, line_api):
    webhook.post(ev.text_message_event("another bot is active", mode="standby"))
    assert Message.objects.get().skip_reason == "standby"
    assert line_api.delivered == [] and line_api.count("loading") == 0


def test_sticker_is_stored_and_skipped(webhook, line_api):
    webhook.post(ev.sticker_message_event())
    message = Message.objects.get()
    assert (message.message_type, message.status, message.skip_reason) == ("sticker", Status.SKIPPED, "not text")
    assert line_api.delivered == []


def test_follow_creates_the_chat_and_fetches_the_name(webhook, line_api):
    line_api.profiles[ev.DEFAULT_USER_ID] = "陳小明"
    webhook.post(ev.follow_event())
    chat = Chat.objects.get()
    assert (chat.source_type, chat.display_name, chat.is_active) == ("user", "陳小明", True)


def test_join_fetches_the_group_name_and_leave_marks_inactive(webhook, line_api):
    line_api.group_names[ev.DEFAULT_GROUP_ID] = "週末登山社"
    webhook.post(ev.join_event())
    assert Chat.objects.get().display_name == "週末登山社"
    webhook.post(ev.leave_event())
    assert Chat.objects.get().is_active is False


def test_failing_profile_lookup_never_blocks_the_reply(webhook, line_api):
    line_api.fail_next("profile", 500)
    webhook.post(ev.text_message_event("hi"))
    assert line_api.delivered_texts() == ["echo: hi"]
    assert Chat.objects.get().display_name == ""


def test_destination_is_remembered_as_the_bot_user_id(webhook, channel):
    webhook.post(ev.text_message_event("hi"))
    channel.refresh_from_db()
    assert channel.bot_user_id == ev.DEFAULT_BOT_USER_ID


def test_unsend_erases_the_text(webhook, remembering_group):
    sent = ev.text_message_event("oops, my phone number is 0912-345-678", source="group")
    webhook.post(sent)
    webhook.post(ev.unsend_event(sent["message"]["id"], source="group"))
    message = Message.objects.get()
    assert message.text == "" and message.unsent is True
    assert "0912" not in json.dumps(list(Message.objects.values()), default=str)


def test_message_edited_replaces_the_text(webhook, remembering_group):
    sent = ev.text_message_event("teh typo", source="group")
    webhook.post(sent)
    webhook.post(ev.message_edited_event(sent["message"]["id"], "the typo", source="group"))
    message = Message.objects.get()
    assert (message.text, message.edited) == ("the typo", True)


def _redact(message: Message, webhook, sent: dict, admin_user) -> None:
    redaction.redact_messages(message_ids=[message.pk], actor=admin_user, reason="card number")


def _erase(message: Message, webhook, sent: dict, admin_user) -> None:
    # erase_user also blanks the LINE message id, so an edit cannot find the row; the
    # flag alone must hold all the same.
    Message.objects.filter(pk=message.pk).update(text=ERASED_TEXT, erased=True)


def _unsend(message: Message, webhook, sent: dict, admin_user) -> None:
    webhook.post(ev.unsend_event(sent["message"]["id"], source="group"))


@pytest.mark.parametrize("take_text_away", [_redact, _erase, _unsend], ids=["redacted", "erased", "unsent"])
def test_an_edit_never_puts_text_back(webhook, admin_user, take_text_away, remembering_group):
    sent = ev.text_message_event("my card is 4111 1111 1111 1111", source="group")
    webhook.post(sent)
    take_text_away(Message.objects.get(), webhook, sent, admin_user)
    before = Message.objects.values().get()
    response = webhook.post(ev.message_edited_event(sent["message"]["id"], "card 4111 1111 1111 1112", source="group"))
    assert response.status_code == 200
    assert response.json() == {"stored": 0, "duplicates": 0, "ignored": 1}
    assert Message.objects.values().get() == before
    assert "4111" not in json.dumps(list(Message.objects.values()), default=str)


def test_a_redelivery_mixed_with_new_events_stores_the_new_ones_once(webhook, line_api):
    first = ev.text_message_event("seen before", user_id="U" + "a1" * 16)
    webhook.post(first)
    fresh = ev.text_message_event("brand new", user_id="U" + "b2" * 16)
    newcomer = ev.text_message_event("new chat too", source="group", group_id="C" + "9f" * 16, mention_self=True)
    response = webhook.post(fresh, {**first, "deliveryContext": {"isRedelivery": True}}, newcomer)
    assert response.json() == {"stored": 2, "duplicates": 1, "ignored": 0}
    assert sorted(line_api.delivered_texts()) == ["echo: User 1a1a: new chat too", "echo: brand new",
                                                  "echo: seen before"]
    assert Message.objects.filter(direction="in").count() == 3
    assert Chat.objects.count() == 3
