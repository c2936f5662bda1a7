"""Groups and rooms: who said what (names, never ids), the bot's mention left out, and group
memory — in "addressed" nothing of a message not for the bot is stored."""
import json
from datetime import timedelta

import pytest
from django.utils import timezone

from conversations.models import Chat, ChatMember, GroupMemory, LineChannel, Message, ReplyMode, Status, pseudonym
from core.audit import keyed_hash
from models_registry.prompts import GROUP_LINE
from tests.fakes import webhooks as ev

pytestmark = pytest.mark.django_db

ALICE, BOB, CAROL = "U" + "a1" * 16, "U" + "b2" * 16, "U" + "c3" * 16
GROUP = ev.DEFAULT_GROUP_ID


def system(speaker: str) -> dict:
    return {"role": "system", "content": "You are a test bot.\n\n" + GROUP_LINE.format(speaker=speaker)}


def said(text: str, user: str, **options) -> dict:
    return ev.text_message_event(text, source="group", user_id=user, **options)


def all_prompts(ollama_server) -> str:
    return json.dumps([request.json for request in ollama_server.requests_for("chat")], ensure_ascii=False)


@pytest.fixture
def named(line_api):
    line_api.profiles.update({ALICE: "Alice", BOB: "Bob"})


def test_a_group_question_names_speakers_drops_the_mention_and_sees_no_bystander(
        webhook, line_api, ollama_server, named):
    webhook.post(said("lunch at noon? my number is 0912-345-678", BOB))
    webhook.post(said("what is 2+2?", BOB, mention_self=True))
    # "@Bot and @Bob asked first, tell me a joke": Bob's mention starts after "@Bot and ".
    webhook.post(said("and @Bob asked first, tell me a joke", ALICE, mention_self=True,
                      mentionees=[ev.mentionee(9, 4, user_id=BOB)]))
    assert ollama_server.last("chat").json["messages"] == [
        system("Alice"),
        {"role": "user", "content": "Bob: what is 2+2?"},
        {"role": "assistant", "content": "echo: Bob: what is 2+2?"},
        {"role": "user", "content": "Alice: and Bob asked first, tell me a joke"},
    ]
    prompts = all_prompts(ollama_server)
    assert "lunch" not in prompts and "@Bot" not in prompts
    assert ALICE not in prompts and BOB not in prompts
    assert line_api.delivered_texts()[-1] == "echo: Alice: and Bob asked first, tell me a joke"


def test_addressed_memory_stores_only_what_is_for_the_bot(webhook, line_api, named):
    webhook.post(said("lunch at noon?", CAROL), said("@Alice are you coming", CAROL,
                                                       mentionees=[ev.mentionee(0, 6, user_id=ALICE)]))
    assert Message.objects.count() == 0
    webhook.post(said("what is 2+2?", BOB, mention_self=True))
    chat = Chat.objects.get()
    assert chat.group_memory == GroupMemory.ADDRESSED and chat.unstored_messages == 2
    question = Message.objects.get(direction="in")
    # The log keeps what Bob wrote; the spans say what the model sees differently.
    assert (question.text, question.line_user_id, question.mentions) == (
        "@Bot what is 2+2?", BOB, [[0, 4, "self", None]])
    assert list(Message.objects.values_list("direction", flat=True).order_by("id")) == ["in", "out"]
    stored = json.dumps(list(Message.objects.values()), default=str) + json.dumps(
        list(ChatMember.objects.values()), default=str)
    assert "lunch" not in stored and "coming" not in stored and CAROL not in stored
    assert list(ChatMember.objects.values_list("line_user_id", "display_name")) == [(BOB, "Bob")]
    assert line_api.count("member_profile") == 1 and line_api.last("member_profile").path.endswith(BOB)


def test_a_redelivered_bystander_message_stores_nothing_either(webhook):
    event = said("just chatting", CAROL)
    webhook.post(event)
    webhook.post({**event, "deliveryContext": {"isRedelivery": True}})
    assert Message.objects.count() == 0 and ChatMember.objects.count() == 0


def test_everything_memory_keeps_bystanders_as_named_context(webhook, ollama_server, make_chat, named):
    make_chat(GROUP, group_memory=GroupMemory.EVERYTHING)
    webhook.post(said("lunch at noon?", BOB))
    webhook.post(said("where shall we eat?", ALICE, mention_self=True))
    assert ollama_server.last("chat").json["messages"] == [
        system("Alice"),
        {"role": "user", "content": "Bob: lunch at noon?"},
        {"role": "user", "content": "Alice: where shall we eat?"},
    ]
    assert Message.objects.get(text="lunch at noon?").skip_reason == "not mentioned"
    assert Chat.objects.get().unstored_messages == 0


def test_rows_stored_before_addressed_memory_stay_but_are_not_context(webhook, ollama_server, make_chat, make_message,
                                                                       named):
    chat = make_chat(GROUP)
    old = make_message(chat, "an old bystander remark", user=BOB, status=Status.SKIPPED, skip_reason="not mentioned")
    webhook.post(said("hello", ALICE, mention_self=True))
    assert Message.objects.filter(pk=old.pk, text="an old bystander remark").exists()
    assert "bystander" not in all_prompts(ollama_server)
    Chat.objects.filter(pk=chat.pk).update(group_memory=GroupMemory.EVERYTHING)
    webhook.post(said("hello again", ALICE, mention_self=True))
    assert f"{pseudonym(BOB)}: an old bystander remark" in all_prompts(ollama_server)


def test_in_reply_mode_always_every_message_is_addressed(webhook, line_api, make_chat, named):
    make_chat(GROUP, reply_mode=ReplyMode.ALWAYS)
    webhook.post(said("anyone here?", BOB))
    assert Message.objects.filter(direction="in", line_user_id=BOB).count() == 1
    assert line_api.delivered_texts() == ["echo: Bob: anyone here?"]


def test_the_keyword_is_left_out_and_other_keywords_are_not_addressed(webhook, ollama_server, make_chat, named):
    make_chat(GROUP, reply_mode=ReplyMode.PREFIX, reply_prefix="/ai")
    webhook.post(said("/ai tell me a joke", BOB), said("no keyword here", ALICE))
    assert ollama_server.last("chat").json["messages"][-1] == {"role": "user", "content": "Bob: tell me a joke"}
    assert list(Message.objects.filter(direction="in").values_list("text", flat=True)) == ["/ai tell me a joke"]
    assert Chat.objects.get().unstored_messages == 1


def test_a_member_who_withheld_consent_is_a_stable_pseudonym_never_an_id(webhook, line_api, ollama_server):
    line_api.missing_ids.add(CAROL)  # the member profile API answers 404
    webhook.post(said("first question", CAROL, mention_self=True))
    webhook.post(said("second question", CAROL, mention_self=True))
    name = f"Member {keyed_hash('member:' + CAROL)[:4]}"
    assert pseudonym(CAROL) == name
    assert ollama_server.last("chat").json["messages"][0] == system(name)
    assert ollama_server.last("chat").json["messages"][1]["content"] == f"{name}: first question"
    assert CAROL not in all_prompts(ollama_server)
    member = ChatMember.objects.get()
    assert member.display_name == "" and member.fetched_at is not None
    # A 404 is remembered: the second message asks LINE nothing.
    assert line_api.count("member_profile") == 1


def test_until_the_name_is_fetched_the_pseudonym_stands_in(webhook, line_api, ollama_server, named):
    line_api.fail_next("member_profile", 500)
    webhook.post(said("hi", ALICE, mention_self=True))
    assert ollama_server.last("chat").json["messages"][-1]["content"] == f"{pseudonym(ALICE)}: hi"
    assert ChatMember.objects.get().fetched_at is None
    # A fetch that never finished is tried again when they next speak, an hour on.
    ChatMember.objects.update(created_at=timezone.now() - timedelta(hours=2))
    webhook.post(said("hi again", ALICE, mention_self=True))
    assert ChatMember.objects.get().display_name == "Alice"


def test_names_are_fetched_again_after_a_week(webhook, line_api, named):
    webhook.post(said("hi", ALICE, mention_self=True))
    webhook.post(said("hi", ALICE, mention_self=True))
    assert line_api.count("member_profile") == 1
    line_api.profiles[ALICE] = "Alice W."
    ChatMember.objects.update(fetched_at=timezone.now() - timedelta(days=8))
    webhook.post(said("hi", ALICE, mention_self=True))
    assert line_api.count("member_profile") == 2 and ChatMember.objects.get().display_name == "Alice W."


def test_room_members_are_fetched_from_the_room_endpoint(webhook, line_api, make_chat, named):
    make_chat(ev.DEFAULT_ROOM_ID, source_type="room")
    webhook.post(ev.text_message_event("hi", source="room", user_id=BOB, mention_self=True))
    assert line_api.last("member_profile").path == f"/v2/bot/room/{ev.DEFAULT_ROOM_ID}/member/{BOB}"
    assert line_api.delivered_texts() == ["echo: Bob: hi"]


def test_members_per_chat_are_bounded(webhook, line_api, monkeypatch, named):
    monkeypatch.setattr(ChatMember, "MAX_PER_CHAT", 1)
    webhook.post(said("one", ALICE, mention_self=True), said("two", BOB, mention_self=True))
    assert list(ChatMember.objects.values_list("line_user_id", flat=True)) == [ALICE]
    assert line_api.delivered_texts()[-1] == f"echo: {pseudonym(BOB)}: two"


def test_one_to_one_chats_have_no_members_and_no_group_line(webhook, ollama_server):
    webhook.post(ev.text_message_event("hi"))
    assert ChatMember.objects.count() == 0
    assert ollama_server.last("chat").json["messages"] == [
        {"role": "system", "content": "You are a test bot."}, {"role": "user", "content": "hi"}]


def test_mention_spans_count_utf16_units(webhook, ollama_server):
    # "😀" is two UTF-16 units: LINE puts the mention at 3, Python at 2.
    event = said("😀 @Bot hi", ALICE, mentionees=[ev.mentionee(3, 4, user_id=ev.DEFAULT_BOT_USER_ID, is_self=True)])
    webhook.post(event)
    assert Message.objects.get(direction="in").mentions == [[2, 6, "self", None]]
    assert ollama_server.last("chat").json["messages"][-1]["content"].endswith(": 😀 hi")


def test_masking_before_storing_keeps_the_spans_on_their_words(webhook, ollama_server, channel, named):
    LineChannel.objects.filter(pk=channel.pk).update(mask_before_storing=True)
    webhook.post(said("hello", BOB, mention_self=True))
    webhook.post(said("mail a.b@example.org to @Bob now", ALICE, mention_self=True,
                      mentionees=[ev.mentionee(29, 4, user_id=BOB)]))
    stored = Message.objects.filter(direction="in").order_by("id").last()
    assert stored.text == "@Bot mail [EMAIL] to @Bob now"
    bob = ChatMember.objects.get(line_user_id=BOB)
    assert stored.mentions == [[0, 4, "self", None], [21, 25, "member", bob.pk]]
    assert ollama_server.last("chat").json["messages"][-1]["content"] == "Alice: mail [EMAIL] to Bob now"


def test_an_edit_moves_the_spans_with_the_text(webhook, ollama_server, make_chat, named):
    make_chat(GROUP, reply_mode=ReplyMode.OFF)  # stored (addressed), never answered
    sent = said("typo", ALICE, mention_self=True)
    webhook.post(sent)
    edited = ev.message_edited_event(sent["message"]["id"], "fixed @Bot", source="group", user_id=ALICE)
    edited["message"]["mention"] = {"mentionees": [ev.mentionee(6, 4, user_id=ev.DEFAULT_BOT_USER_ID, is_self=True)]}
    webhook.post(edited)
    message = Message.objects.get()
    assert (message.text, message.mentions, message.edited) == ("fixed @Bot", [[6, 10, "self", None]], True)


def test_spans_that_no_longer_fit_their_text_are_skipped_not_misapplied():
    from conversations import addressing

    assert addressing.for_model("hi", [[0, 40, "self", None], [1, 0, "self", None], "junk"]) == "hi"
    assert addressing.for_model("@Bot hi @Bob", [[0, 4, "self", None], [8, 12, "member", 9]], names={9: "Bob W."}) \
        == "hi Bob W."


@pytest.mark.parametrize("take_away", ["redact", "unsend"])
def test_redaction_and_unsend_take_the_mention_spans_too(webhook, admin_user, named, take_away):
    from conversations import redaction

    sent = said("I think @Bob took it", ALICE, mention_self=True, mentionees=[ev.mentionee(13, 4, user_id=BOB)])
    webhook.post(said("hi", BOB, mention_self=True))
    webhook.post(sent)
    message = Message.objects.get(line_message_id=sent["message"]["id"])
    assert message.mentions[-1][2:] == ["member", ChatMember.objects.get(line_user_id=BOB).pk]
    if take_away == "redact":
        redaction.redact_messages(message_ids=[message.pk], actor=admin_user, reason="accusation")
    else:
        webhook.post(ev.unsend_event(sent["message"]["id"], source="group", user_id=ALICE))
    assert Message.objects.get(pk=message.pk).mentions == []
