"""Shared fixtures: loopback fakes of LINE and the model servers, and a configured bot."""
import pytest
from django.core.cache import caches
from django.test import Client
from django_q.brokers import get_broker
from django_q.conf import Conf

from conversations import ingest, queue, selectors
from conversations.line.client import line_client
from conversations.models import LineChannel
from models_registry.models import BackendKind, ModelBackend, SamplingPreset
from tests.fakes.line_api import FakeLineAPI
from tests.fakes.ollama import FakeOllama
from tests.fakes.webhooks import payload, payload_bytes, sign, validate_webhook_payload

CHANNEL_SECRET = "0123456789abcdef0123456789abcdef"
ACCESS_TOKEN = "test-channel-access-token"


@pytest.fixture(autouse=True)
def sync_tasks(settings):
    """django-q2 runs tasks inline; retry pauses shrink so failure paths stay quick."""
    previous, Conf.SYNC = Conf.SYNC, True
    settings.LINEBOT = {
        **settings.LINEBOT,
        "BACKEND_RETRY_DELAYS": [0.01],
        "LINE_RETRY_DELAYS": [0.01, 0.01],
    }
    yield
    Conf.SYNC = previous


@pytest.fixture(scope="session")
def shared_queue():
    """django-q2's queue on Redis (CI's second stack), which outlives each test's database;
    None on the ORM broker, whose queue is a table of the test database."""
    return get_broker() if Conf.REDIS and not Conf.ORM else None


@pytest.fixture(autouse=True)
def nothing_left_queued(shared_queue):
    """A test that leaves tasks behind fails, and they are removed: tasks held by
    conversations.queue (its retry thread would offer them to the next test's broker), and on
    Redis tasks it added to the queue (two once turned up in the next run's dashboard figures).
    Two LLENs a test on Redis, nothing on the ORM broker."""
    before = shared_queue.queue_size() if shared_queue else 0
    yield
    held = queue.forget_held()
    added = shared_queue.queue_size() - before if shared_queue else 0
    if added > 0 and before:
        # Tasks go on the list's tail: keep the ones that were there before the test.
        shared_queue.connection.ltrim(shared_queue.list_key, 0, before - 1)
    elif added > 0:
        shared_queue.purge_queue()
    assert held == 0 and added <= 0, f"the test left {held} task(s) held in this process and {added} in the Redis queue"


@pytest.fixture(autouse=True)
def fresh_caches():
    def forget():
        ingest.forget_cached_chats()
        selectors.forget_cached_channels()
        selectors.forget_cached_policy()
        selectors.forget_cached_presets()
        line_client.cache_clear()
        caches["signins"].clear()  # failed sign-ins counted by one test must not lock out the next

    forget()
    yield
    forget()


@pytest.fixture
def line_api(settings):
    with FakeLineAPI(access_token=ACCESS_TOKEN) as fake:
        settings.LINE_API_HOST = fake.url
        settings.LINE_DATA_API_HOST = fake.url
        yield fake
        assert fake.validation_errors == [], "the bot sent LINE a request LINE would reject"


@pytest.fixture
def ollama_server():
    with FakeOllama(models=("gemma3:4b", "llama3.2:3b")) as fake:
        yield fake


@pytest.fixture
def backend(ollama_server):
    return ModelBackend.objects.create(
        name="Local Ollama", kind=BackendKind.OLLAMA, base_url=ollama_server.url, model="gemma3:4b", timeout=5
    )


@pytest.fixture
def preset(backend):
    return SamplingPreset.objects.create(
        name="Default",
        backend=backend,
        system_prompt="You are a test bot.",
        temperature=0.3,
        top_p=0.8,
        top_k=20,
        max_new_tokens=128,
        repetition_penalty=1.2,
        history_turns=4,
        is_default=True,
    )


@pytest.fixture
def channel(db):
    return LineChannel.objects.create(
        name="Test channel", slug="test", channel_secret=CHANNEL_SECRET, access_token=ACCESS_TOKEN, is_default=True
    )


class Webhook:
    """Posts signed webhooks to the app and runs what they queue."""

    def __init__(self, client: Client, capture) -> None:
        self.client = client
        self.capture = capture

    def post(self, *events, path="/line/webhook/", secret=CHANNEL_SECRET, signature=None, body=None):
        if body is None:
            if all(event["type"] != "messageEdited" for event in events):
                validate_webhook_payload(payload(*events))
            body = payload_bytes(*events)
        raw = body
        headers = {} if signature is False else {"HTTP_X_LINE_SIGNATURE": signature or sign(raw, secret)}
        with self.capture(execute=True):
            return self.client.post(path, data=raw, content_type="application/json", **headers)


@pytest.fixture
def webhook(client, django_capture_on_commit_callbacks, channel, line_api, preset):
    return Webhook(client, django_capture_on_commit_callbacks)


@pytest.fixture
def make_chat(channel):
    from conversations.models import Chat

    def make(line_id: str, source_type: str = "group", **fields) -> Chat:
        return Chat.objects.create(channel=channel, source_type=source_type, line_id=line_id, **fields)

    return make


@pytest.fixture
def make_message():
    from datetime import timedelta

    from django.utils import timezone

    from conversations.models import Message

    def make(chat, text: str, *, days_ago: float = 0, direction: str = "in", user: str = "", **fields) -> Message:
        moment = timezone.now() - timedelta(days=days_ago)
        return Message.objects.create(
            chat=chat, direction=direction, text=text, line_user_id=user, event_at=moment,
            status_changed_at=moment, status=fields.pop("status", "replied"), **fields,
        )

    return make
