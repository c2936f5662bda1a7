"""The reply task: prompt, backend call, fallback, delivery by reply or push, idempotency."""
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from conversations import answering, sweeper
from conversations.line.client import retry_key
from conversations.models import Chat, Message, Status
from models_registry.models import BackendKind, ModelBackend, SamplingPreset
from tests.fakes import webhooks as ev
from tests.fakes.openai_compat import FakeOpenAICompat

pytestmark = pytest.mark.django_db


def inbound() -> Message:
    return Message.objects.get(direction="in")


def answer() -> Message:
    return Message.objects.get(direction="out")


def test_answer_uses_the_preset_on_ollama_with_mapped_options(webhook, line_api, ollama_server, preset):
    webhook.post(ev.text_message_event("早安"))
    request = ollama_server.last("chat").json
    assert request["model"] == "gemma3:4b"
    assert request["options"] == {
        "temperature": 0.3, "top_p": 0.8, "top_k": 20, "num_predict": 128, "repeat_penalty": 1.2,
    }
    assert request["messages"] == [
        {"role": "system", "content": "You are a test bot."},
        {"role": "user", "content": "早安"},
    ]
    out = answer()
    assert out.text == "echo: 早安"
    assert (out.preset, out.backend, out.status) == (preset, preset.backend, Status.REPLIED)
    assert out.latency_ms is not None and out.prompt_tokens and out.completion_tokens
    assert inbound().status == Status.REPLIED
    assert inbound().attempts == 1


def test_one_to_one_chat_shows_the_loading_animation_first(webhook, line_api):
    webhook.post(ev.text_message_event("hi"))
    endpoints = [r.endpoint for r in line_api.requests if r.endpoint in ("loading", "reply")]
    assert endpoints == ["loading", "reply"]
    assert line_api.last("loading").json == {"chatId": ev.DEFAULT_USER_ID, "loadingSeconds": 20}


def test_prompt_holds_the_last_turns_but_not_redacted_or_unsent_ones(webhook, ollama_server, preset):
    for text in ["one", "two", "secret", "three"]:
        webhook.post(ev.text_message_event(text))
    Message.objects.filter(text__contains="secret").update(redacted=True, text="[redacted]")
    webhook.post(ev.text_message_event("four"))
    messages = ollama_server.last("chat").json["messages"]
    # history_turns=4: the four earlier turns that may be shown, then the question.
    assert messages == [
        {"role": "system", "content": "You are a test bot."},
        {"role": "user", "content": "two"},
        {"role": "assistant", "content": "echo: two"},
        {"role": "user", "content": "three"},
        {"role": "assistant", "content": "echo: three"},
        {"role": "user", "content": "four"},
    ]


def test_stale_reply_token_goes_by_push_with_a_retry_key(webhook, line_api):
    old = int((timezone.now() - timedelta(seconds=90)).timestamp() * 1000)
    webhook.post(ev.text_message_event("slow queue", timestamp_ms=old))
    assert line_api.count("reply") == 0
    push = line_api.last("push")
    assert push.json["to"] == ev.DEFAULT_USER_ID
    assert push.headers.get("X-Line-Retry-Key") == retry_key(message_id=answer().pk, call_index=0)
    uuid.UUID(push.headers.get("X-Line-Retry-Key"))
    assert line_api.delivered_texts() == ["echo: slow queue"]


def test_reply_token_rejected_as_invalid_falls_back_to_push(webhook, line_api):
    event = ev.text_message_event("token trouble")
    line_api.expire_reply_token(event["replyToken"])
    webhook.post(event)
    assert line_api.count("push") == 1
    assert line_api.delivered_texts() == ["echo: token trouble"]
    assert inbound().status == Status.REPLIED


def test_a_12000_character_answer_is_split_into_three_texts_in_one_reply(webhook, line_api, ollama_server):
    ollama_server.responder = lambda messages, options: "長" * 12_000
    webhook.post(ev.text_message_event("write a lot"))
    assert line_api.count("reply") == 1 and line_api.count("push") == 0
    texts = line_api.last("reply").json["messages"]
    assert [len(t["text"]) for t in texts] == [5000, 5000, 2000]
    assert "".join(t["text"] for t in texts) == "長" * 12_000


def test_more_than_five_texts_continue_by_push(webhook, line_api, ollama_server):
    ollama_server.responder = lambda messages, options: "x" * 27_000
    webhook.post(ev.text_message_event("write even more"))
    assert [len(r.json["messages"]) for r in line_api.requests_for("reply")] == [5]
    pushes = line_api.requests_for("push")
    assert [len(r.json["messages"]) for r in pushes] == [1]
    assert pushes[0].headers.get("X-Line-Retry-Key") == retry_key(message_id=answer().pk, call_index=1)
    assert "".join(line_api.delivered_texts()) == "x" * 27_000
    assert answer().delivered_calls == 2


def test_task_run_twice_sends_one_reply(webhook, line_api):
    webhook.post(ev.text_message_event("just once"))
    answering.answer_message(message_id=inbound().pk)
    answering.answer_message(message_id=inbound().pk)
    assert line_api.delivered_texts() == ["echo: just once"]
    assert Message.objects.filter(direction="out").count() == 1


def test_backend_timeout_then_fallback_answers(webhook, line_api, ollama_server, preset):
    with FakeOpenAICompat(models=("llama-3.1-8b",)) as vllm:
        preset.backend.timeout = 1
        preset.backend.save()
        preset.fallback_backend = ModelBackend.objects.create(
            name="vLLM", kind=BackendKind.OPENAI_COMPATIBLE, base_url=vllm.url + "/v1", model="llama-3.1-8b"
        )
        preset.save()
        ollama_server.set_delay("chat", 3)
        webhook.post(ev.text_message_event("are you there?"))
        assert ollama_server.count("chat") == 2  # first try and one retry, both timed out
        assert vllm.count("chat") == 1
    out = answer()
    assert out.backend.name == "vLLM"
    assert line_api.delivered_texts() == ["echo: are you there?"]
    assert inbound().status == Status.REPLIED


def test_when_every_backend_fails_the_user_gets_an_apology(webhook, line_api, ollama_server, settings):
    ollama_server.fail_next("chat", 500, {"error": "out of memory"}, count=10)
    webhook.post(ev.text_message_event("hello?"))
    assert line_api.delivered_texts() == [settings.LINEBOT["APOLOGY_TEXT"]]
    message = inbound()
    assert message.status == Status.FAILED
    assert "out of memory" in message.error
    assert answer().backend is None


def test_apologies_are_not_fed_back_into_the_prompt(webhook, ollama_server):
    ollama_server.fail_next("chat", 500, {"error": "down"}, count=2)
    webhook.post(ev.text_message_event("first"))
    webhook.post(ev.text_message_event("second"))
    contents = [m["content"] for m in ollama_server.last("chat").json["messages"]]
    assert contents == ["You are a test bot.", "first", "second"]


def test_a_missing_model_is_not_retried(webhook, ollama_server, preset):
    preset.backend.model = "not-pulled:1b"
    preset.backend.save()
    webhook.post(ev.text_message_event("hi"))
    assert ollama_server.count("chat") == 1
    assert "not-pulled:1b" in inbound().error


def test_unreachable_backend_fails_with_a_clear_error(webhook, line_api, preset):
    preset.backend.base_url = "http://127.0.0.1:9"
    preset.backend.save()
    webhook.post(ev.text_message_event("hi"))
    assert "Cannot connect to Ollama at http://127.0.0.1:9" in inbound().error
    assert inbound().status == Status.FAILED


def test_local_only_chat_never_reaches_a_cloud_backend(webhook, line_api, ollama_server, preset, channel):
    with FakeOpenAICompat(models=("gpt-x",)) as cloud:
        cloud_backend = ModelBackend.objects.create(
            name="Cloud", kind=BackendKind.OPENAI_COMPATIBLE, base_url=cloud.url + "/v1", model="gpt-x",
            is_local=False,
        )
        SamplingPreset.objects.filter(pk=preset.pk).update(backend=cloud_backend, fallback_backend=preset.backend)
        Chat.objects.create(channel=channel, source_type="user", line_id=ev.DEFAULT_USER_ID, local_only=True)
        webhook.post(ev.text_message_event("private"))
        assert cloud.count("chat") == 0
    assert answer().backend == preset.backend
    assert ollama_server.count("chat") == 1


def test_local_only_chat_with_only_cloud_backends_gets_an_apology(webhook, line_api, preset, channel):
    ModelBackend.objects.filter(pk=preset.backend_id).update(is_local=False)
    Chat.objects.create(channel=channel, source_type="user", line_id=ev.DEFAULT_USER_ID, local_only=True)
    webhook.post(ev.text_message_event("private"))
    assert "local-only" in inbound().error
    assert inbound().status == Status.FAILED


def test_chat_preset_overrides_the_channel_and_global_default(webhook, ollama_server, preset, channel):
    channel_preset = SamplingPreset.objects.create(name="Channel", backend=preset.backend, temperature=1.5)
    chat_preset = SamplingPreset.objects.create(name="Chat", backend=preset.backend, temperature=0.1)
    channel.default_preset = channel_preset
    channel.save()
    webhook.post(ev.text_message_event("a", user_id="U" + "01" * 16))
    assert ollama_server.last("chat").json["options"]["temperature"] == 1.5
    Chat.objects.filter(line_id="U" + "01" * 16).update(preset=chat_preset)
    webhook.post(ev.text_message_event("b", user_id="U" + "01" * 16))
    assert ollama_server.last("chat").json["options"]["temperature"] == 0.1


def test_no_preset_at_all_gets_an_apology_and_a_clear_error(webhook, line_api, preset):
    SamplingPreset.objects.update(is_default=False)
    webhook.post(ev.text_message_event("hi"))
    assert "No sampling preset" in inbound().error
    assert len(line_api.delivered) == 1


def test_line_429_is_retried(webhook, line_api):
    line_api.fail_next("reply", 429, {"message": "Too many requests"})
    webhook.post(ev.text_message_event("busy"))
    assert line_api.count("reply") == 2
    assert line_api.delivered_texts() == ["echo: busy"]


def test_line_5xx_that_persists_leaves_the_message_for_the_sweeper(webhook, line_api):
    line_api.fail_next("reply", 500, count=3)
    webhook.post(ev.text_message_event("later"))
    message = inbound()
    assert message.status == Status.PENDING
    assert "500" in message.error
    assert line_api.delivered == []
    # The sweeper takes it up once it has waited long enough; the token is stale by then.
    later = timezone.now() + timedelta(minutes=5)
    Message.objects.filter(pk=message.pk).update(event_at=timezone.now() - timedelta(minutes=5))
    result = sweeper.sweep_stuck_messages(now=later)
    assert result.requeued == 1
    assert line_api.delivered_texts() == ["echo: later"]
    assert inbound().status == Status.REPLIED and inbound().attempts == 2


def test_line_4xx_records_the_error_and_fails(webhook, line_api):
    line_api.fail_next("reply", 400, {"message": "The request body has 1 error(s)"})
    webhook.post(ev.text_message_event("bad"))
    message = inbound()
    assert message.status == Status.FAILED
    assert "LINE API 400" in message.error
    assert answer().status == Status.FAILED
