"""The real thing: gunicorn and a qcluster process, signed webhooks over HTTP, replies at fake LINE."""
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from django.db import connection

from conversations.models import LineChannel, Message, Status
from models_registry.models import BackendKind, ModelBackend, SamplingPreset
from tests.conftest import ACCESS_TOKEN, CHANNEL_SECRET
from tests.fakes import webhooks as ev
from tests.fakes.line_api import FakeLineAPI
from tests.fakes.ollama import FakeOllama

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def fakes():
    with FakeLineAPI(access_token=ACCESS_TOKEN) as line_api, FakeOllama(models=("gemma3:4b",)) as ollama_server:
        yield line_api, ollama_server


@pytest.fixture
def running_bot(fakes):
    line_api, ollama_server = fakes
    backend = ModelBackend.objects.create(
        name="Ollama", kind=BackendKind.OLLAMA, base_url=ollama_server.url, model="gemma3:4b"
    )
    SamplingPreset.objects.create(name="Default", backend=backend, is_default=True)
    LineChannel.objects.create(
        name="E2E", slug="e2e", channel_secret=CHANNEL_SECRET, access_token=ACCESS_TOKEN, is_default=True
    )
    with serving(line_api) as base:
        yield base, line_api


@contextmanager
def serving(line_api: FakeLineAPI) -> Iterator[str]:
    """gunicorn and a qcluster, two workers each, on this test's database and a queue of their
    own; yields the base URL once the web server answers, and stops both with SIGTERM, as a
    deploy does (a traceback in their output is shown with the test's)."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "LINE_API_HOST": line_api.url,
        "Q_CLUSTER_QUEUE": f"e2e-{uuid.uuid4().hex[:8]}",
        "Q_WORKERS": "2",
        "Q_SYNC": "",
        "PYTHONUNBUFFERED": "1",
    }
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "linebot_site.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "2"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        ),
        subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        ),
    ]
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(base, processes)
        yield base
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                output, _ = process.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                output, _ = process.communicate()
            if b"Traceback" in output:
                print(output.decode(errors="replace"))


def wait_until_serving(base: str, processes: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "gunicorn did not start"
        assert all(p.poll() is None for p in processes), "a process exited early"
        time.sleep(0.2)


def post_signed(base: str, *events) -> httpx.Response:
    body, headers = ev.signed_request(*events, channel_secret=CHANNEL_SECRET)
    return httpx.post(f"{base}/line/webhook/", content=body, headers=headers, timeout=5)


def test_signed_webhooks_over_http_are_answered_by_the_worker(running_bot):
    base, line_api = running_bot
    direct = ev.text_message_event("你好, real server", user_id="U" + "e1" * 16)
    in_group = ev.text_message_event("and in a group", source="group", mention_self=True)
    chatter = ev.text_message_event("not for the bot", source="group")
    assert post_signed(base, direct).status_code == 200
    assert post_signed(base, in_group, chatter).status_code == 200
    redelivered = {**direct, "deliveryContext": {"isRedelivery": True}}
    assert post_signed(base, redelivered).json()["duplicates"] == 1
    assert httpx.post(f"{base}/line/webhook/", content=b"{}", headers={"X-Line-Signature": "bad"}).status_code == 403

    line_api.wait_for(lambda fake: len(fake.delivered) >= 2, timeout=60)
    time.sleep(1)  # anything extra (a duplicate) would arrive now
    group_answer, direct_answer = sorted(line_api.delivered_texts())
    assert direct_answer == "echo: 你好, real server"
    # The speaker's name comes from a task of its own, which may or may not have run first.
    assert re.fullmatch(r"echo: (User 1a1a|Member [0-9a-f]{4}): and in a group", group_answer)
    assert line_api.validation_errors == []
    statuses = dict(Message.objects.filter(direction="in").values_list("text", "status"))
    assert statuses == {
        "你好, real server": Status.REPLIED,
        "@Bot and in a group": Status.REPLIED,
    }  # the chatter is not stored: the group keeps only what is addressed to the bot


@pytest.fixture
def started():
    """The processes a single-worker test starts; what still runs at its end is killed, each
    with its process group (a cluster's workers, gunicorn's worker), whatever the outcome."""
    processes: list[subprocess.Popen] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def start_qcluster(env: dict, started: list[subprocess.Popen]) -> subprocess.Popen:
    # A process group of its own: the test kills the cluster and all its workers at once.
    cluster = subprocess.Popen([sys.executable, "manage.py", "qcluster"], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, process_group=0)
    started.append(cluster)
    return cluster


def one_worker_site(fakes, *, max_concurrency: int, **settings: str) -> dict:
    """A backend on the fake Ollama, the default preset and channel; the environment of a site
    with one task worker process (many answers in flight in it)."""
    line_api, ollama_server = fakes
    backend = ModelBackend.objects.create(name="Ollama", kind=BackendKind.OLLAMA, base_url=ollama_server.url,
                                          model="gemma3:4b", max_concurrency=max_concurrency)
    SamplingPreset.objects.create(name="Default", backend=backend, is_default=True)
    LineChannel.objects.create(name="E2E", slug="e2e", channel_secret=CHANNEL_SECRET, access_token=ACCESS_TOKEN,
                               is_default=True)
    return {**os.environ, "DATABASE_URL": database_url(), "LINE_API_HOST": line_api.url,
            "Q_CLUSTER_QUEUE": f"e2e-{uuid.uuid4().hex[:8]}", "Q_WORKERS": "1", "Q_SYNC": "",
            "PYTHONUNBUFFERED": "1", **settings}


def start_site(env: dict, started: list[subprocess.Popen]) -> tuple[str, subprocess.Popen]:
    """gunicorn and a cluster, once the web server answers: (base URL, cluster)."""
    port = free_port()
    web = subprocess.Popen([sys.executable, "-m", "gunicorn", "linebot_site.wsgi", "--bind", f"127.0.0.1:{port}"],
                           cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, process_group=0)
    started.append(web)
    cluster = start_qcluster(env, started)
    base = f"http://127.0.0.1:{port}"
    wait_until_serving(base, [web, cluster])
    return base, cluster


def test_a_worker_killed_with_many_answers_in_flight_loses_none_and_doubles_none(fakes, started):
    """Ten chats' answers in flight in one worker process when it is SIGKILLed: once a new
    cluster is up and the leases have run out, the sweeper gives them back and each chat gets
    exactly one answer."""
    line_api, ollama_server = fakes
    env = one_worker_site(fakes, max_concurrency=16, LINEBOT_CLAIM_LEASE="3")
    ollama_server.set_delay("chat", 8)  # generations that will not finish before the kill
    base, cluster = start_site(env, started)
    for number in range(10):
        event = ev.text_message_event(f"in flight {number}", user_id=f"U{number:032x}")
        assert post_signed(base, event).status_code == 200
    ollama_server.wait_for(lambda fake: fake.count("chat") >= 10, timeout=60,
                           message="ten generations in flight at once in one worker")
    os.killpg(cluster.pid, signal.SIGKILL)
    cluster.wait(timeout=10)
    assert Message.objects.filter(direction="in", status=Status.GENERATING).count() == 10

    ollama_server.set_delay("chat", 0)
    cluster = start_qcluster(env, started)
    time.sleep(3.5)  # the dead worker's leases run out
    from conversations import sweeper
    sweeper.sweep_stuck_messages()
    line_api.wait_for(lambda fake: len(fake.delivered) >= 10, timeout=60)
    time.sleep(2)  # a duplicate would arrive now
    assert sorted(line_api.delivered_texts()) == sorted(f"echo: in flight {n}" for n in range(10))
    assert set(Message.objects.filter(direction="in").values_list("status", flat=True)) == {Status.REPLIED}


def test_a_worker_stopped_gracefully_finishes_its_answers_in_flight_first(fakes, started):
    """SIGTERM, as `manage.py serve` or a deploy sends it: the cluster's workers drain their
    answering threads before they exit, so nothing is left for the sweeper."""
    line_api, ollama_server = fakes
    env = one_worker_site(fakes, max_concurrency=8)
    ollama_server.set_delay("chat", 3)
    base, cluster = start_site(env, started)
    for number in range(3):
        event = ev.text_message_event(f"drained {number}", user_id=f"U{number:032x}")
        assert post_signed(base, event).status_code == 200
    ollama_server.wait_for(lambda fake: fake.count("chat") >= 3, timeout=60)
    cluster.send_signal(signal.SIGTERM)
    assert cluster.wait(timeout=30) is not None
    assert sorted(line_api.delivered_texts()) == sorted(f"echo: drained {n}" for n in range(3))
    assert set(Message.objects.filter(direction="in").values_list("status", flat=True)) == {Status.REPLIED}
