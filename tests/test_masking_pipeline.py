"""PII masking where text is stored and where it leaves for a cloud backend."""
import pytest

from conversations.models import Chat, LineChannel, Message, PrivacyPolicy
from models_registry.models import BackendKind, ModelBackend, SamplingPreset
from tests.fakes import webhooks as ev
from tests.fakes.openai_compat import FakeOpenAICompat

pytestmark = pytest.mark.django_db

PII_TEXT = "請打 0912-345-678 或寄 chen.wei@example.com.tw"
MASKED = "請打 [PHONE] 或寄 [EMAIL]"


@pytest.fixture
def cloud(preset):
    with FakeOpenAICompat(models=("hosted",)) as server:
        backend = ModelBackend.objects.create(
            name="Hosted", kind=BackendKind.OPENAI_COMPATIBLE, base_url=server.url + "/v1", model="hosted",
            is_local=False,
        )
        SamplingPreset.objects.filter(pk=preset.pk).update(backend=backend)
        yield server


def test_masking_before_storing(webhook, channel, ollama_server):
    LineChannel.objects.filter(pk=channel.pk).update(mask_before_storing=True)
    webhook.post(ev.text_message_event(PII_TEXT))
    assert Message.objects.get(direction="in").text == MASKED
    assert ollama_server.last("chat").json["messages"][-1]["content"] == MASKED


def test_policy_kinds_limit_what_is_masked(webhook, channel):
    LineChannel.objects.filter(pk=channel.pk).update(mask_before_storing=True)
    PrivacyPolicy.objects.update_or_create(pk=1, defaults={"mask_email": False})
    webhook.post(ev.text_message_event(PII_TEXT))
    assert Message.objects.get(direction="in").text == "請打 [PHONE] 或寄 chen.wei@example.com.tw"


def test_cloud_backends_get_masked_text_local_ones_do_not(webhook, channel, cloud, ollama_server):
    webhook.post(ev.text_message_event(PII_TEXT))
    assert cloud.last("chat").json["messages"][-1]["content"] == MASKED
    assert Message.objects.get(direction="in").text == PII_TEXT
    preset = SamplingPreset.objects.get()
    preset.backend = ModelBackend.objects.get(name="Local Ollama")
    preset.save()  # as the console saves it
    webhook.post(ev.text_message_event(PII_TEXT))
    assert ollama_server.last("chat").json["messages"][-1]["content"] == PII_TEXT


def test_masking_before_cloud_can_be_turned_off(webhook, channel, cloud):
    LineChannel.objects.filter(pk=channel.pk).update(mask_before_cloud=False)
    webhook.post(ev.text_message_event(PII_TEXT))
    assert cloud.last("chat").json["messages"][-1]["content"] == PII_TEXT


def test_local_only_chat_is_not_sent_to_the_cloud_even_masked(webhook, channel, cloud):
    Chat.objects.create(channel=channel, source_type="user", line_id=ev.DEFAULT_USER_ID, local_only=True)
    webhook.post(ev.text_message_event(PII_TEXT))
    assert cloud.count("chat") == 0
    assert "local-only" in Message.objects.get(direction="in").error


def test_edits_are_masked_too(webhook, channel):
    LineChannel.objects.filter(pk=channel.pk).update(mask_before_storing=True)
    sent = ev.text_message_event("hello", source="group", mention_self=True)
    webhook.post(sent)
    webhook.post(ev.message_edited_event(sent["message"]["id"], "mail me: a.b@example.org", source="group"))
    assert Message.objects.get(direction="in").text == "mail me: [EMAIL]"
