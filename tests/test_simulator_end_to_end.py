"""The simulator on the real thing: gunicorn and a qcluster process, an operator's session over HTTP.

The web process hands the event to the webhook and returns; the worker answers through the
emulator in its own process, and the page's JSON shows the loading animation, then the answer.
"""
import time

import httpx
import pytest
from django.contrib.auth import get_user_model

from conversations.models import LineChannel, Message
from conversations.simulator.models import EmulatorCall, SimulatedChat
from models_registry.models import BackendKind, ModelBackend, SamplingPreset
from tests.fakes.line_api import FakeLineAPI
from tests.fakes.ollama import FakeOllama
from tests.test_end_to_end import serving

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def site():
    with FakeLineAPI() as line_api, FakeOllama(models=("gemma3:4b",), chunk_interval=0.3) as ollama_server:
        backend = ModelBackend.objects.create(name="Ollama", kind=BackendKind.OLLAMA, base_url=ollama_server.url,
                                              model="gemma3:4b")
        SamplingPreset.objects.create(name="Default", backend=backend, is_default=True)
        LineChannel.objects.create(name="Sandbox", slug="sandbox", channel_secret="ab" * 16, access_token="token",
                                   bot_user_id="U" + "cd" * 16, is_simulated=True)
        get_user_model().objects.create_superuser("operator", password="e2e-operator-password")
        with serving(line_api) as base:
            yield base, line_api


def signed_in(base: str) -> httpx.Client:
    client = httpx.Client(base_url=base, timeout=10, follow_redirects=False)
    client.get("/admin/login/")
    response = client.post("/admin/login/", data={"username": "operator", "password": "e2e-operator-password",
                                                  "csrfmiddlewaretoken": client.cookies["csrftoken"]})
    assert response.status_code == 302
    return client


def test_the_worker_answers_a_simulated_chat_through_the_emulator(site):
    base, line_api = site
    client = signed_in(base)
    channel = LineChannel.objects.get()
    started = client.post("/admin/conversations/simulatedchat/new/", data={
        "channel": channel.pk, "source_type": "user", "first_message": "hello from the worker",
        "csrfmiddlewaretoken": client.cookies["csrftoken"]})
    assert started.status_code == 302
    simulated = SimulatedChat.objects.get()
    poll = f"/admin/conversations/simulatedchat/{simulated.pk}/timeline/"
    deadline = time.monotonic() + 60
    while True:
        data = client.get(poll).json()
        bots = {item["message_type"]: item for item in data["items"] if item["kind"] == "bot"}
        # The follow's privacy notice and the answer, sent by the worker as two tasks, in either order.
        if {"notice", "text"} <= bots.keys() and not data["waiting"]:
            break
        assert time.monotonic() < deadline, f"no answer: {data}"
        time.sleep(0.1)
    bot = bots["text"]
    assert bot["bubbles"][0]["text"] == "echo: hello from the worker" and bot["via"] == "reply"
    notice = Message.objects.get(direction="out", message_type="notice")
    assert bots["notice"]["bubbles"][0]["text"] == notice.text and bots["notice"]["via"] == "reply"
    # The worker started LINE's loading animation before answering. The page may not have
    # polled while it showed (the fake model answers at once): the emulator's record is asserted.
    loading = EmulatorCall.objects.filter(simulated_chat=simulated, endpoint="loading")
    assert loading.filter(status=202).count() == 1, "the loading animation shows while the model answers"
    assert Message.objects.get(direction="out", message_type="text").status == "replied"
    assert notice.status == "replied"
    assert set(EmulatorCall.objects.values_list("endpoint", flat=True)) == {"profile", "loading", "reply"}
    assert line_api.requests == []
