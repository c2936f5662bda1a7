"""Commands the bot answers itself (never a model): in 1:1 chats, and in groups only when
addressed; /forgetme end to end with its signed buttons; opt-out; the per-user limit."""
import json
import logging
from datetime import timedelta

import pytest
from django.core import signing
from django.utils import timezone

from conversations import answering, commands, notices, selectors
from conversations.commands import TEXTS
from conversations.erasure import ERASED_TEXT
from conversations.models import Chat, ChatMember, Command, LineChannel, Message, OptOut, ReplyMode, Status
from core.audit import keyed_hash
from core.models import AuditAction, AuditEvent
from tests.fakes import webhooks as ev

pytestmark = pytest.mark.django_db

ME = ev.DEFAULT_USER_ID
BOB = "U" + "b2" * 16
GROUP = ev.DEFAULT_GROUP_ID
EN, ZH = TEXTS["en"], TEXTS["zh-hant"]


@pytest.fixture(autouse=True)
def english_channel(channel):
    """The bot's language where a chat's messages do not say (a bare command in a new chat)."""
    LineChannel.objects.filter(pk=channel.pk).update(language="en")


def direct(text: str, user: str = ME, **options) -> dict:
    return ev.text_message_event(text, user_id=user, **options)


def in_group(text: str, user: str = ME, *, addressed: bool = True) -> dict:
    return ev.text_message_event(text, source="group", user_id=user, mention_self=addressed)


def last_text(line_api) -> str:
    return line_api.delivered_texts()[-1]


@pytest.mark.parametrize("command, expected", [
    ("/help", lambda chat: notices.help_text(chat=chat, language="en")),
    ("/privacy", lambda chat: notices.privacy_notice(chat=chat, language="en")),
    ("/HELP ", lambda chat: notices.help_text(chat=chat, language="en")),
])
def test_commands_in_a_one_to_one_chat_are_answered_by_the_bot(webhook, line_api, ollama_server, command, expected):
    webhook.post(direct(command))
    chat = Chat.objects.get()
    assert line_api.delivered_texts() == [expected(chat)]
    assert ollama_server.count("chat") == 0 and line_api.count("loading") == 0
    question, answer = Message.objects.order_by("id")
    assert (question.command, question.status, answer.status, answer.backend) == (
        command.strip().lower()[1:], Status.REPLIED, Status.REPLIED, None)


def test_a_command_is_answered_in_the_language_of_the_message(webhook, line_api, channel):
    # "@小幫手" (the bot's name in a Chinese LINE) is four UTF-16 units.
    event = ev.text_message_event("@小幫手 /help", source="group", user_id=ME,
                                  mentionees=[ev.mentionee(0, 4, user_id=ev.DEFAULT_BOT_USER_ID, is_self=True)])
    webhook.post(event)
    assert last_text(line_api) == notices.help_text(chat=Chat.objects.get(), language="zh-hant")
    webhook.post(direct("/reset", user=BOB))
    assert last_text(line_api) == EN["reset"]
    webhook.post(direct("／reset 重來", user=BOB))  # not a bare command: the model answers it
    assert last_text(line_api) == "echo: ／reset 重來"


def test_in_a_group_commands_count_only_when_addressed(webhook, line_api, ollama_server, make_chat):
    webhook.post(in_group("/help", addressed=False))
    assert line_api.delivered == [] and Message.objects.count() == 0
    webhook.post(in_group("/help"))
    assert last_text(line_api) == notices.help_text(chat=Chat.objects.get(), language="en")
    make_chat(ev.DEFAULT_ROOM_ID, source_type="room", reply_mode=ReplyMode.PREFIX, reply_prefix="/ai")
    webhook.post(ev.text_message_event("/ai /privacy", source="room", user_id=ME))
    assert last_text(line_api) == notices.privacy_notice(chat=Chat.objects.get(source_type="room"), language="en")
    assert ollama_server.count("chat") == 0


def test_a_group_in_reply_mode_off_gets_no_command_answers(webhook, line_api, make_chat):
    make_chat(GROUP, reply_mode=ReplyMode.OFF)
    webhook.post(in_group("/help"))
    assert line_api.delivered == []
    assert Message.objects.get().skip_reason == "reply mode off"


def test_a_command_turned_off_is_just_text_for_the_model(webhook, line_api, channel):
    LineChannel.objects.filter(pk=channel.pk).update(command_help=False)
    webhook.post(direct("/help"))
    assert line_api.delivered_texts() == ["echo: /help"]
    assert Message.objects.get(direction="in").command == ""


def test_reset_starts_a_fresh_context(webhook, line_api, ollama_server):
    webhook.post(direct("my name is Ann"))
    webhook.post(direct("/reset"))
    assert last_text(line_api) == EN["reset"]
    reset = Message.objects.get(command=Command.RESET)
    webhook.post(direct("what is my name?"))
    assert ollama_server.last("chat").json["messages"] == [
        {"role": "system", "content": "You are a test bot."}, {"role": "user", "content": "what is my name?"}]
    chat = Chat.objects.get()
    assert chat.context_reset_after == reset.pk and chat.context_reset_at is not None
    # A rerun of an older /reset never brings back what a newer one cut.
    Chat.objects.update(context_reset_after=reset.pk + 10)
    commands.answer(message=Message.objects.select_related("chat__channel").get(pk=reset.pk))
    assert Chat.objects.get().context_reset_after == reset.pk + 10


def test_reset_in_a_group_is_for_everyone_in_it(webhook, ollama_server):
    webhook.post(in_group("remember 42", user=BOB))
    webhook.post(in_group("/reset"))
    webhook.post(in_group("what number?", user=BOB))
    contents = [m["content"] for m in ollama_server.last("chat").json["messages"]]
    assert len(contents) == 2 and contents[1].endswith(": what number?")


def test_commands_are_answered_exactly_once(webhook, line_api):
    webhook.post(direct("/help"))
    question = Message.objects.get(direction="in")
    Message.objects.filter(pk=question.pk).update(status=Status.PENDING)
    answering.answer_message(message_id=question.pk)
    answering.answer_message(message_id=question.pk)
    assert len(line_api.delivered) == 1
    assert Message.objects.filter(direction="out").count() == 1


# --- Opting out -----------------------------------------------------------------------


def test_optout_stops_storing_and_answering_until_optin(webhook, line_api, ollama_server):
    webhook.post(direct("/optout"))
    assert last_text(line_api) == EN["optout"]
    assert list(OptOut.objects.values_list("user_hmac", flat=True)) == [keyed_hash(ME)]
    stored_before = Message.objects.count()
    webhook.post(direct("are you there? my mail is a@b.example"))
    assert Message.objects.count() == stored_before and len(line_api.delivered) == 1
    assert Chat.objects.get().unstored_messages == 1
    assert "a@b.example" not in json.dumps(list(Message.objects.values()), default=str)
    webhook.post(direct("/optin"))
    assert last_text(line_api) == EN["optin"] and not OptOut.objects.exists()
    webhook.post(direct("back again"))
    assert last_text(line_api) == "echo: back again"
    assert ollama_server.count("chat") == 1


def test_optout_in_a_group_is_for_the_sender_only(webhook, line_api):
    webhook.post(in_group("/optout"))
    webhook.post(in_group("a question", user=ME), in_group("my question", user=BOB))
    assert line_api.delivered_texts()[1:] == ["echo: User b2b2: my question"]
    assert not Message.objects.filter(text__contains="a question").exists()
    # Opt-outs hold per channel, in every chat of it: also 1:1.
    webhook.post(direct("hello"))
    assert len(line_api.delivered) == 2


def test_someone_who_opted_out_can_opt_in_even_once_the_command_is_off(webhook, line_api, channel):
    webhook.post(direct("/optout"))
    LineChannel.objects.filter(pk=channel.pk).update(command_optout=False)
    selectors.forget_cached_channels()
    webhook.post(direct("/optout"))  # turned off, and they are opted out: not even stored
    assert len(line_api.delivered) == 1
    webhook.post(direct("/optin"))
    assert last_text(line_api) == EN["optin"] and not OptOut.objects.exists()
    webhook.post(direct("/optout"))  # turned off: now text for the model
    assert last_text(line_api) == "echo: /optout"


# --- /forgetme ---------------------------------------------------------------------------


@pytest.fixture
def history(webhook, line_api, make_chat):
    """My 1:1 chat with the bot, and a group where Bob and I both asked it something."""
    webhook.post(direct("my private question"))
    # Two deliveries: the second message comes once the first is answered (together, one
    # answer would cover both).
    webhook.post(in_group("my group question"))
    webhook.post(in_group("bob's question", user=BOB))
    assert ChatMember.objects.filter(line_user_id=ME).exists()


# An erasure empties SQLite's WAL once its transaction commits, which a test wrapped in a
# transaction never reaches.
ERASES = pytest.mark.django_db(transaction=True)


def ask_to_forget(webhook, line_api, event=None) -> dict[str, str]:
    webhook.post(event or direct("/forgetme"))
    buttons = ev.quick_reply_postbacks(line_api.last().json)
    assert [button["label"] for button in buttons] == [EN["yes_label"], EN["no_label"]]
    return {"yes": buttons[0]["data"], "no": buttons[1]["data"]}


@ERASES
def test_forgetme_asks_then_erases_everything_about_the_sender(webhook, line_api, ollama_server, history):
    data = ask_to_forget(webhook, line_api)
    assert last_text(line_api) == EN["forgetme"] % {"minutes": 10}
    postback = ev.postback_event(data["yes"])
    assert webhook.post(postback).json()["stored"] == 1
    assert not Chat.objects.filter(source_type="user").exists()
    group = Chat.objects.get(source_type="group")
    left = dict(Message.objects.filter(chat=group).values_list("text", "line_user_id"))
    assert left == {ERASED_TEXT: "", "@Bot bob's question": BOB, "echo: User b2b2: bob's question": ""}
    assert list(ChatMember.objects.values_list("line_user_id", flat=True)) == [BOB]
    event = AuditEvent.objects.get(action=AuditAction.ERASE_USER)
    assert (event.actor_username, event.target_id) == (commands.SELF_SERVICE, keyed_hash(ME))
    assert event.details["chat_members"] == 1
    erased = event.details["direct_messages"] + event.details["group_messages"]
    # The confirmation answers the button's own reply token; nothing of it is stored.
    assert line_api.delivered[-1] == ("reply", postback["replyToken"], [EN["erased"] % {"count": erased}])
    assert ME not in json.dumps(list(Message.objects.values()), default=str)
    assert ollama_server.count("chat") == 3  # the three questions; no command reached the model


@ERASES
def test_forgetme_from_a_group_with_buttons_there(webhook, line_api, history):
    data = ask_to_forget(webhook, line_api, in_group("/forgetme"))
    assert line_api.last().json["messages"][-1]["quickReply"]["items"][0]["action"]["type"] == "postback"
    webhook.post(ev.postback_event(data["yes"], source="group", user_id=ME))
    assert not Message.objects.filter(line_user_id=ME).exists()
    assert AuditEvent.objects.filter(action=AuditAction.ERASE_USER).count() == 1


def test_cancel_erases_nothing(webhook, line_api, history):
    data = ask_to_forget(webhook, line_api)
    webhook.post(ev.postback_event(data["no"]))
    assert last_text(line_api) == EN["cancelled"]
    assert Message.objects.filter(line_user_id=ME, text="my private question").exists()
    assert not AuditEvent.objects.filter(action=AuditAction.ERASE_USER).exists()


def test_another_members_tap_is_refused_and_stores_nothing(webhook, line_api, history):
    data = ask_to_forget(webhook, line_api, in_group("/forgetme"))
    before = Message.objects.count()
    response = webhook.post(ev.postback_event(data["yes"], source="group", user_id=BOB))
    assert response.json() == {"stored": 0, "duplicates": 0, "ignored": 1}
    assert Message.objects.count() == before and not Message.objects.filter(line_user_id=BOB, command__gt="").exists()
    assert Message.objects.filter(line_user_id=ME, text="my private question").exists()
    assert not AuditEvent.objects.filter(action=AuditAction.ERASE_USER).exists()


def test_a_forged_button_is_ignored_as_malformed(webhook, line_api, history, channel, caplog):
    data = ask_to_forget(webhook, line_api)
    value, stamp, signature = data["yes"].rsplit(":", 2)
    forged = [
        f"{value}:{stamp}:{'A' * len(signature)}",  # a signature of our own making
        f"forgetme:yes:{channel.pk}:{'0' * 32}:{stamp}:{signature}",  # another user's tag, same signature
        signing.TimestampSigner(key="not the server key", salt="conversations.commands.forgetme").sign(value),
    ]
    before = Message.objects.count()
    with caplog.at_level(logging.WARNING):
        for data_value in forged:
            assert webhook.post(ev.postback_event(data_value)).json()["ignored"] == 1
    assert "not signed by this bot" in caplog.text
    assert Message.objects.count() == before
    assert not AuditEvent.objects.filter(action=AuditAction.ERASE_USER).exists()


def test_a_stale_button_is_refused_politely(webhook, line_api, history, channel, monkeypatch):
    eleven_minutes_ago = timezone.now().timestamp() - 11 * 60
    monkeypatch.setattr(signing.time, "time", lambda: eleven_minutes_ago)
    stale = commands.confirmation_data(channel=channel, line_user_id=ME, choice=commands.CONFIRM)
    monkeypatch.undo()
    webhook.post(ev.postback_event(stale))
    assert last_text(line_api) == EN["expired"]
    assert Message.objects.filter(line_user_id=ME, text="my private question").exists()
    assert not AuditEvent.objects.filter(action=AuditAction.ERASE_USER).exists()


def test_buttons_of_the_bot_and_other_postbacks(webhook, line_api, channel):
    # A rich menu's postback is not the bot's to act on: acknowledged, nothing stored.
    assert webhook.post(ev.postback_event("action=buy&itemid=1")).json() == {"stored": 0, "duplicates": 0,
                                                                             "ignored": 1}
    assert Message.objects.count() == 0
    # A button of a channel with another id is not for this one.
    other = commands.confirmation_data(channel=LineChannel(pk=channel.pk + 1), line_user_id=ME,
                                       choice=commands.CONFIRM)
    assert webhook.post(ev.postback_event(other)).json()["ignored"] == 1
    assert line_api.delivered == []


@ERASES
def test_under_legal_hold_the_request_is_recorded_and_shown_on_the_dashboard(webhook, line_api, history,
                                                                              admin_client):
    Chat.objects.filter(source_type="group").update(legal_hold=True)
    data = ask_to_forget(webhook, line_api)
    webhook.post(ev.postback_event(data["yes"]))
    assert Message.objects.filter(line_user_id=ME, text="@Bot my group question").exists()
    assert ChatMember.objects.filter(line_user_id=ME).exists()  # the held chat stays whole
    assert not Chat.objects.filter(source_type="user").exists()  # what is not held goes
    request = AuditEvent.objects.get(action=AuditAction.ERASURE_REQUESTED)
    assert (request.actor_username, request.target_id) == (commands.SELF_SERVICE, keyed_hash(ME))
    assert request.details["kept_under_legal_hold"] == 2
    erased = AuditEvent.objects.get(action=AuditAction.ERASE_USER).details["direct_messages"]
    assert last_text(line_api) == EN["held"] % {"count": erased, "held": 2}
    page = admin_client.get("/admin/").content.decode()
    assert "Erasure requests under legal hold" in page
    assert keyed_hash(ME)[:12] in page and ME not in page


def test_a_bare_command_in_a_new_chat_speaks_the_channels_language(webhook, line_api, channel):
    LineChannel.objects.filter(pk=channel.pk).update(language="zh-hant")
    webhook.post(direct("/reset"))
    assert last_text(line_api) == ZH["reset"]


def test_forgetme_in_chinese(webhook, line_api):
    webhook.post(direct("我想刪除資料"))
    webhook.post(direct("/forgetme"))
    buttons = ev.quick_reply_postbacks(line_api.last().json)
    assert [button["label"] for button in buttons] == [ZH["yes_label"], ZH["no_label"]]
    assert last_text(line_api) == ZH["forgetme"] % {"minutes": 10}


# --- The per-user limit ------------------------------------------------------------------


@pytest.fixture
def two_per_ten_minutes(channel):
    LineChannel.objects.filter(pk=channel.pk).update(user_limit_messages=2, user_limit_minutes=10)


def test_past_the_limit_one_notice_then_silence_until_the_period_passes(webhook, line_api, ollama_server,
                                                                        two_per_ten_minutes):
    for text in ["one", "two", "three", "four"]:
        webhook.post(direct(text))
    assert line_api.delivered_texts() == ["echo: one", "echo: two", EN["limit"] % {"minutes": 10}]
    statuses = list(Message.objects.filter(direction="in").order_by("id").values_list("text", "status", "skip_reason"))
    assert statuses == [("one", "replied", ""), ("two", "replied", ""), ("three", "skipped", "rate limited"),
                        ("four", "skipped", "rate limited")]
    assert ollama_server.count("chat") == 2
    # Someone else is not limited by it.
    webhook.post(direct("hello", user=BOB))
    assert last_text(line_api) == "echo: hello"
    # Limited messages stay out of prompts; once a quiet period has passed, answers resume.
    Message.objects.update(event_at=timezone.now() - timedelta(minutes=11))
    webhook.post(direct("five"))
    assert last_text(line_api) == "echo: five"
    assert [m["content"] for m in ollama_server.last("chat").json["messages"]] == [
        "You are a test bot.", "one", "echo: one", "two", "echo: two", "five"]


def test_the_limit_counts_each_message_of_one_webhook_against_the_next(webhook, line_api, ollama_server,
                                                                         two_per_ten_minutes):
    # One sender's state is read before the write transaction only when the webhook carries one
    # message of theirs: here three, so each is counted in the transaction, after the one before.
    webhook.post(direct("one"), direct("two"), direct("three"), direct("hello", user=BOB))
    statuses = dict(Message.objects.filter(direction="in").values_list("text", "skip_reason"))
    assert statuses == {"one": "", "two": "", "three": "rate limited", "hello": ""}
    assert ollama_server.count("chat") <= 3


def test_an_opted_out_sender_read_ahead_of_the_transaction_is_still_not_stored(webhook, line_api):
    webhook.post(direct("/optout"))
    webhook.post(direct("keep this"), direct("hello", user=BOB))
    assert not Message.objects.filter(text="keep this").exists()
    assert Message.objects.filter(text="hello").exists()


def test_privacy_commands_pass_the_limit(webhook, line_api, two_per_ten_minutes):
    for text in ["one", "two", "three"]:
        webhook.post(direct(text))
    webhook.post(direct("/optout"))
    assert last_text(line_api) == EN["optout"]


def test_no_limit_when_set_to_zero(webhook, line_api, channel):
    LineChannel.objects.filter(pk=channel.pk).update(user_limit_messages=0)
    for index in range(3):
        webhook.post(direct(f"m{index}"))
    assert len(line_api.delivered) == 3


def test_the_limit_counts_in_the_database_in_one_bounded_query(webhook, line_api, two_per_ten_minutes,
                                                               django_assert_max_num_queries):
    from conversations import ingest

    for text in ["one", "two"]:
        webhook.post(direct(text))
    channel = LineChannel.objects.get()
    with django_assert_max_num_queries(1) as captured:
        assert ingest._over_limit(channel=channel, line_user_id=ME) == ingest.NOTICE
    assert "LIMIT 2" in captured.captured_queries[0]["sql"]


def test_someone_who_opted_out_and_was_erased_gets_no_new_chat_row(webhook, line_api):
    """Their 1:1 chat's row would hold their LINE id and fetch their name again."""
    from conversations import erasure

    webhook.post(direct("/optout"))
    erasure.erase_user(line_user_id=ME, actor="shell:test")
    assert not Chat.objects.exists()
    profiles_before = line_api.count("profile")
    webhook.post(direct("hello again"))
    assert not Chat.objects.exists() and not Message.objects.exists()
    assert line_api.count("profile") == profiles_before and OptOut.objects.count() == 1
    webhook.post(direct("/optin"))  # the way back stays open
    assert last_text(line_api) == EN["optin"] and Chat.objects.count() == 1
