"""The webhook's own queueing: rows and tasks written without the ORM's per-call work, run by
django-q2's unmodified cluster code, and recovered fast when the broker refused them."""
import shutil
import socket
import subprocess
import threading
import time
from datetime import timedelta
from multiprocessing import Event, Queue, Value

import pytest
from django.conf import settings as site_settings
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.brokers.orm import ORM
from django_q.conf import Conf
from django_q.models import OrmQ
from django_q.monitor import monitor
from django_q.pusher import pusher
from django_q.signing import SignedPackage
from django_q.tasks import async_task
from django_q.worker import worker

from conversations import queue
from conversations.models import Direction, Message, Status
from core.inserts import insert_row
from tests.fakes.webhooks import DEFAULT_USER_ID, text_message_event

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def queued(monkeypatch, settings):
    """Tasks go to the broker, as in production, instead of running inline; the worker then
    answers in its own thread (the engine's pool is another matter, tested elsewhere)."""
    monkeypatch.setattr(Conf, "SYNC", False)
    settings.LINEBOT = {**settings.LINEBOT, "ENGINE_THREADS": 0}


def run_cluster_once(broker) -> None:
    """django-q2's own pusher, worker and monitor, in this process, over one dequeue."""
    tasks, results, stop = Queue(), Queue(), Event()
    stop.set()  # the pusher dequeues once, then stops
    pusher(tasks, stop, broker=broker)
    tasks.put("STOP")
    worker(tasks, results, Value("f", -1))
    results.put("STOP")
    monitor(results, broker)


def test_insert_row_writes_what_create_writes(channel, make_chat):
    chat = make_chat("Ugroup")
    values = {"chat": chat, "direction": Direction.IN, "text": "hi", "event_at": timezone.now(),
              "status": Status.PENDING, "status_changed_at": timezone.now(), "webhook_event_id": "01A"}
    by_orm = Message.objects.create(**{**values, "webhook_event_id": "01B"})
    fast = Message.objects.get(pk=insert_row(Message, values=values, skip_if_taken="webhook_event_id"))
    differing = {field.name for field in Message._meta.concrete_fields
                 if getattr(fast, field.attname) != getattr(by_orm, field.attname)}
    assert differing == {"id", "webhook_event_id", "created_at"}
    assert abs(fast.created_at - by_orm.created_at) < timedelta(seconds=5)


def test_insert_row_skips_a_taken_unique_value_and_refuses_a_field_that_is_not_unique(channel, make_chat):
    chat = make_chat("Ugroup")
    values = {"chat_id": chat.pk, "direction": Direction.IN, "event_at": timezone.now(),
              "status_changed_at": timezone.now(), "webhook_event_id": "01A"}
    assert insert_row(Message, values=values, skip_if_taken="webhook_event_id") is not None
    assert insert_row(Message, values=values, skip_if_taken="webhook_event_id") is None
    assert Message.objects.count() == 1
    with pytest.raises(ValueError, match="not unique"):
        insert_row(Message, values=values, skip_if_taken="text")
    with pytest.raises(ValueError, match="no column"):
        insert_row(Message, values={**values, "messages": []})


def test_task_package_is_what_async_task_would_queue(queued):
    class Keep:
        list_key = "kept"

        def enqueue(self, package):
            self.package = package

    kept = Keep()
    async_task(queue.REPLY_TASK, 42, broker=kept)
    theirs = SignedPackage.loads(kept.package)
    ours = SignedPackage.loads(queue.task_package(queue.REPLY_TASK, (42,)))
    assert ours.keys() == theirs.keys()
    assert {key: ours[key] for key in ours if key not in ("id", "name", "started")} == \
           {key: theirs[key] for key in theirs if key not in ("id", "name", "started")}
    assert len(ours["id"]) == 32 and len(ours["name"].split("-")) == 4
    assert abs(ours["started"] - timezone.now()) < timedelta(seconds=5)


@pytest.fixture
def orm_broker(monkeypatch):
    """django-q2's ORM broker, also where the suite runs on Redis (CI's second stack)."""
    monkeypatch.setattr(Conf, "ORM", "default")
    broker = ORM(list_key=Conf.CLUSTER_NAME)
    monkeypatch.setattr(queue, "broker", lambda: broker)
    return broker


def test_a_webhook_queued_on_the_orm_broker_is_answered_by_django_q2s_cluster(webhook, line_api, queued,
                                                                              orm_broker):
    event = text_message_event("hello there")
    assert webhook.post(event).status_code == 200
    assert webhook.post(event).json() == {"stored": 0, "duplicates": 1, "ignored": 0}
    queued_tasks = [SignedPackage.loads(row.payload) for row in OrmQ.objects.all()]
    # Written with the message, once, naming its chat too; and the new chat's profile lookup.
    message = Message.objects.get()
    assert sorted((task["func"], task["args"]) for task in queued_tasks) == [
        (queue.REPLY_TASK, (message.pk, message.chat_id)), (queue.PROFILE_TASK, (message.chat_id,))]
    run_cluster_once(queue.broker())
    run_cluster_once(queue.broker())
    assert line_api.delivered_texts() == ["echo: hello there"]
    assert Message.objects.get(webhook_event_id=event["webhookEventId"]).status == Status.REPLIED
    assert OrmQ.objects.count() == 0


def test_a_reply_task_queued_with_the_message_alone_is_answered(webhook, line_api, queued, orm_broker,
                                                               monkeypatch):
    """As a version before the chat was named queued it (still in the queue after an upgrade)."""
    monkeypatch.setattr("conversations.ingest.enqueue_after_commit", lambda func, *args: None)
    webhook.post(text_message_event("from before the upgrade"))
    queue.enqueue(queue.REPLY_TASK, Message.objects.get().pk)
    run_cluster_once(queue.broker())
    assert line_api.delivered_texts() == ["echo: from before the upgrade"]


OTHER_USER = "U" + "0123456789abcdef" * 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def refused_redis(monkeypatch, queued):
    """django-q2 on Redis at a port where nothing listens (a real refused connection); the
    returned function starts a real Redis there: the broker is back."""
    if shutil.which("redis-server") is None:
        pytest.skip("needs redis-server (apt-get install redis-server)")
    port = free_port()
    monkeypatch.setattr(Conf, "ORM", None)
    monkeypatch.setattr(Conf, "REDIS", f"redis://127.0.0.1:{port}/0")
    queue.broker.cache_clear()
    servers = []

    def start() -> None:
        servers.append(subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))

    yield start
    for server in servers:
        server.terminate()
        server.wait(timeout=10)
    # Before Conf.REDIS is the shared Redis again: a retry thread still offering held tasks
    # would push them there, and a broker it made for this port would stay cached.
    left = queue.forget_held()
    queue.broker.cache_clear()
    assert left == 0


def test_a_reply_refused_by_the_broker_is_answered_soon_after_it_returns(webhook, line_api, refused_redis, caplog,
                                                                         make_chat):
    # Known chats: no profile lookup is queued too.
    make_chat(DEFAULT_USER_ID, source_type="user")
    make_chat(OTHER_USER, source_type="user")
    event = text_message_event("are you there?")
    started = time.monotonic()
    response = webhook.post(event)
    assert response.status_code == 200 and response.json()["stored"] == 1
    assert time.monotonic() - started < 2.0  # LINE's limit: the refusal costs the webhook little
    message = Message.objects.get(webhook_event_id=event["webhookEventId"])
    assert message.status == Status.PENDING
    assert queue.held_tasks() == 1
    assert "refused a task (ConnectionError)" in caplog.text
    # Dated back past the sweeper's pending deadline: the next sweep takes it even if this
    # process dies holding the task.
    assert message.status_changed_at < timezone.now() - timedelta(seconds=site_settings.LINEBOT["PENDING_STUCK_AFTER"])

    # A second message during the outage waits behind the first, without trying the broker.
    second = text_message_event("still there?", user_id=OTHER_USER)
    assert webhook.post(second).status_code == 200
    assert queue.held_tasks() == 2
    time.sleep(queue.HOLD_RETRY_SECONDS * 2)
    assert queue.held_tasks() == 2 and line_api.delivered_texts() == []

    refused_redis()
    back = time.monotonic()
    bound = queue.HOLD_RETRY_SECONDS + 3.0  # a retry period, and Redis's own start-up
    while queue.held_tasks() and time.monotonic() - back < bound:
        time.sleep(0.05)
    assert queue.held_tasks() == 0, f"the held tasks did not reach the broker within {bound} s of its return"
    broker = get_broker()
    assert broker.queue_size() == 2
    run_cluster_once(broker)
    run_cluster_once(broker)
    assert sorted(line_api.delivered_texts()) == ["echo: are you there?", "echo: still there?"]
    assert time.monotonic() - back < bound + 5.0
    assert set(Message.objects.filter(direction=Direction.IN).values_list("status", flat=True)) == {Status.REPLIED}


def test_held_tasks_are_forgotten_with_their_retry_thread(webhook, refused_redis, make_chat):
    """What a test's clean-up relies on: nothing it held is offered to a broker afterwards."""
    make_chat(DEFAULT_USER_ID, source_type="user")
    assert webhook.post(text_message_event("anyone?")).status_code == 200
    assert queue.held_tasks() == 1
    retrying = [thread for thread in threading.enumerate() if thread.name == "enqueue-retry"]
    assert len(retrying) == 1
    assert queue.forget_held() == 1
    assert queue.held_tasks() == 0 and not retrying[0].is_alive()
