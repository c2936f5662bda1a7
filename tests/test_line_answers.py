"""What LINE receives: plain text without reasoning, quotes in groups, the non-text answer,
and the preset's thinking switch reaching Ollama — through the webhook and the fakes."""
import json
from datetime import timedelta

import pytest
from django.utils import timezone

from conversations import answering, notices, selectors
from conversations.models import LineChannel, Message, Status
from models_registry.models import SamplingPreset
from tests.fakes import webhooks as ev

pytestmark = pytest.mark.django_db

REASONING = "The user asked about 牛肉麵; I should not mention their phone number 0912-345-678."
MARKDOWN_ANSWER = (
    f"<think>\n{REASONING}\n</think>\n\n"
    "## 推薦\n\n"
    "**永康牛肉麵**是經典選擇：\n\n"
    "- 地址：[永康街](https://maps.example.tw/yk)\n"
    "- 價格：*約 300 元*\n\n"
    "```\n營業時間 11:00-21:00\n```"
)
LINE_TEXT = (
    "推薦\n\n"
    "永康牛肉麵是經典選擇：\n\n"
    "• 地址：永康街 (https://maps.example.tw/yk)\n"
    "• 價格：約 300 元\n\n"
    "營業時間 11:00-21:00"
)


def everything_stored() -> str:
    return json.dumps(list(Message.objects.values()), default=str, ensure_ascii=False)


def test_markdown_with_a_think_block_reaches_line_as_plain_text(webhook, line_api, ollama_server):
    ollama_server.responder = lambda messages, options: MARKDOWN_ANSWER
    webhook.post(ev.text_message_event("台北哪裡有好吃的牛肉麵？"))
    assert line_api.delivered_texts() == [LINE_TEXT]
    answer = Message.objects.get(direction="out")
    assert (answer.text, answer.status) == (LINE_TEXT, Status.REPLIED)
    stored = everything_stored()
    assert "think" not in stored and REASONING[:20] not in stored and "**" not in stored


def test_an_answer_that_is_only_reasoning_gets_the_apology(webhook, line_api, ollama_server, settings):
    ollama_server.responder = lambda messages, options: "<think>I ran out of tokens while thinking"
    webhook.post(ev.text_message_event("hi"))
    assert line_api.delivered_texts() == [settings.LINEBOT["APOLOGY_TEXT"]]
    inbound = Message.objects.get(direction="in")
    assert inbound.status == Status.FAILED and "empty answer" in inbound.error
    assert "ran out of tokens" not in everything_stored()


def test_the_earlier_answer_in_the_prompt_is_the_plain_one(webhook, ollama_server):
    ollama_server.responder = lambda messages, options: "<think>hmm</think>**Bold** answer"
    webhook.post(ev.text_message_event("first"))
    webhook.post(ev.text_message_event("second"))
    assert ollama_server.last("chat").json["messages"][2] == {"role": "assistant", "content": "Bold answer"}


# --- Quotes in groups -------------------------------------------------------------------


@pytest.mark.parametrize("source", ["group", "room"])
def test_a_group_answer_quotes_the_message_it_answers(webhook, line_api, source):
    event = ev.text_message_event("what time is it?", source=source, mention_self=True)
    webhook.post(event)
    [text] = line_api.last("reply").json["messages"]
    assert text["quoteToken"] == event["message"]["quoteToken"]
    assert Message.objects.get(direction="in").quote_token == event["message"]["quoteToken"]


def test_a_one_to_one_answer_quotes_nothing_and_keeps_no_token(webhook, line_api):
    webhook.post(ev.text_message_event("hello"))
    [text] = line_api.last("reply").json["messages"]
    assert "quoteToken" not in text
    assert Message.objects.get(direction="in").quote_token == ""


def test_a_message_the_bot_does_not_answer_keeps_no_quote_token(webhook, line_api, make_chat):
    make_chat(ev.DEFAULT_GROUP_ID, group_memory="everything")  # so that a message not for the bot is stored
    webhook.post(ev.text_message_event("just chatting", source="group"))
    assert Message.objects.get().quote_token == ""


def test_only_the_first_text_of_a_long_answer_quotes(webhook, line_api, ollama_server):
    ollama_server.responder = lambda messages, options: "長" * 12_000
    event = ev.text_message_event("write a lot", source="group", mention_self=True)
    webhook.post(event)
    texts = line_api.last("reply").json["messages"]
    assert [t.get("quoteToken") for t in texts] == [event["message"]["quoteToken"], None, None]


def test_a_group_answer_pushed_after_a_stale_token_still_quotes(webhook, line_api):
    old = int((timezone.now() - timedelta(seconds=90)).timestamp() * 1000)
    event = ev.text_message_event("slow", source="group", mention_self=True, timestamp_ms=old)
    webhook.post(event)
    [text] = line_api.last("push").json["messages"]
    assert text["quoteToken"] == event["message"]["quoteToken"]


# --- Non-text messages in 1:1 chats -------------------------------------------------------


# Photos and voice messages go to the model (tests/test_media_pipeline.py).
@pytest.mark.parametrize("kind", ["video", "file", "location"])
def test_a_non_text_message_in_a_one_to_one_chat_gets_one_short_answer(webhook, line_api, ollama_server, kind):
    event = ev.media_message_event(kind)
    webhook.post(event)
    assert line_api.last("reply").json["replyToken"] == event["replyToken"]
    assert line_api.delivered_texts() == ["我只能讀取文字訊息，請用文字輸入您的問題。"]
    assert ollama_server.count("chat") == 0 and line_api.count("loading") == 0
    inbound = Message.objects.get(direction="in")
    answer = Message.objects.get(direction="out")
    assert (inbound.message_type, inbound.status, inbound.skip_reason) == (kind, Status.REPLIED, "")
    assert (answer.message_type, answer.status, answer.reply_to) == (notices.NON_TEXT_REPLY_TYPE, Status.REPLIED,
                                                                     inbound)


def test_the_non_text_answer_follows_the_chat_language_and_the_operators_text(
        webhook, line_api, channel):
    webhook.post(ev.text_message_event("Hello there"))
    webhook.post(ev.media_message_event("video"))
    assert line_api.delivered_texts()[-1] == "I can read only text messages. Please type your question."
    LineChannel.objects.filter(pk=channel.pk).update(non_text_reply="Text only, please 🙏")
    selectors.forget_cached_channels()
    webhook.post(ev.media_message_event("file"))
    assert line_api.delivered_texts()[-1] == "Text only, please 🙏"


def test_the_off_switch_leaves_non_text_messages_silent(webhook, line_api, channel):
    LineChannel.objects.filter(pk=channel.pk).update(non_text_reply_enabled=False)
    selectors.forget_cached_channels()
    webhook.post(ev.media_message_event("video"))
    assert line_api.requests_for("reply") == []
    assert (Message.objects.get().status, Message.objects.get().skip_reason) == (Status.SKIPPED, "not text")


@pytest.mark.parametrize("event", [
    lambda: ev.sticker_message_event(),
    lambda: ev.media_message_event("video", source="group"),
    lambda: ev.media_message_event("location", source="room"),
], ids=["a sticker", "a video in a group", "a location in a room"])
def test_stickers_and_groups_get_no_non_text_answer(webhook, line_api, event, make_chat):
    # Groups and rooms that keep every message, so that what the bot does not answer is stored.
    make_chat(ev.DEFAULT_GROUP_ID, group_memory="everything")
    make_chat(ev.DEFAULT_ROOM_ID, source_type="room", group_memory="everything")
    webhook.post(event())
    assert line_api.requests_for("reply") == []
    assert (Message.objects.get().status, Message.objects.get().skip_reason) == (Status.SKIPPED, "not text")


def test_a_stale_token_means_no_non_text_answer_and_no_push(webhook, line_api):
    old = int((timezone.now() - timedelta(seconds=90)).timestamp() * 1000)
    webhook.post(ev.media_message_event("file", timestamp_ms=old))
    assert line_api.delivered == []
    inbound = Message.objects.get()
    assert (inbound.status, inbound.skip_reason) == (Status.SKIPPED, "reply token expired")


def test_a_rerun_after_the_token_went_stale_does_not_push_the_non_text_answer(webhook, line_api):
    line_api.fail_next("reply", 500, count=3)
    webhook.post(ev.media_message_event("video"))
    inbound = Message.objects.get(direction="in")
    assert inbound.status == Status.PENDING
    Message.objects.filter(pk=inbound.pk).update(event_at=timezone.now() - timedelta(minutes=5))
    answering.answer_message(message_id=inbound.pk)
    assert line_api.delivered == [] and line_api.count("push") == 0
    assert Message.objects.get(pk=inbound.pk).status == Status.FAILED


def test_the_non_text_answer_is_sent_once(webhook, line_api):
    event = ev.media_message_event("location")
    webhook.post(event)
    webhook.post({**event, "deliveryContext": {"isRedelivery": True}})
    answering.answer_message(message_id=Message.objects.get(direction="in").pk)
    assert len(line_api.delivered) == 1
    assert Message.objects.filter(direction="out").count() == 1


# --- The preset's thinking switch ---------------------------------------------------------


def test_think_off_reaches_ollama_as_false(webhook, ollama_server, preset):
    SamplingPreset.objects.filter(pk=preset.pk).update(think="off")
    webhook.post(ev.text_message_event("quick"))
    assert ollama_server.last("chat").json["think"] is False


def test_the_default_sends_no_think_at_all(webhook, ollama_server):
    webhook.post(ev.text_message_event("default"))
    assert "think" not in ollama_server.last("chat").json


def test_think_on_for_a_model_without_thinking_is_refused_as_ollama_does(webhook, ollama_server, preset):
    SamplingPreset.objects.filter(pk=preset.pk).update(think="on")
    webhook.post(ev.text_message_event("think hard"))
    assert ollama_server.last("chat").json["think"] is True
    assert "does not support thinking" in Message.objects.get(direction="in").error


def test_think_on_keeps_the_models_thinking_out_of_the_answer(webhook, line_api, ollama_server, preset):
    ollama_server.thinking_models = ["gemma3:4b"]
    ollama_server.responder = lambda messages, options: f"<think>{REASONING}</think>The answer."
    SamplingPreset.objects.filter(pk=preset.pk).update(think="on")
    webhook.post(ev.text_message_event("think hard"))
    assert line_api.delivered_texts() == ["The answer."]
    assert REASONING[:20] not in everything_stored()
