"""The operator console in the admin: pages, actions and permissions (the browser test walks the journey)."""
import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.utils import timezone

from core.models import AuditEvent
from conversations.models import Chat, Message
from conversations.paginators import CappedCountPaginator
from models_registry.models import BackendKind, ModelBackend, SamplingPreset
from tests.fakes import webhooks as ev

pytestmark = pytest.mark.django_db


def test_backend_test_connection_lists_models_and_picks_one(admin_client, backend, ollama_server):
    page = admin_client.get(f"/admin/models_registry/modelbackend/{backend.pk}/test/").content.decode()
    assert "Connected" not in page and ollama_server.requests == [], "a GET calls no backend"
    page = admin_client.post(f"/admin/models_registry/modelbackend/{backend.pk}/test/").content.decode()
    assert "Connected" in page and "llama3.2:3b" in page and "Use this model" in page
    admin_client.post(f"/admin/models_registry/modelbackend/{backend.pk}/test/", {"model": "llama3.2:3b"})
    backend.refresh_from_db()
    assert backend.model == "llama3.2:3b"
    assert AuditEvent.objects.get(action="backend_change").details["changes"]["model"] == ["gemma3:4b", "llama3.2:3b"]


@pytest.mark.parametrize(
    "base_url, model, expected",
    [
        ("http://127.0.0.1:9", "gemma3:4b", "connection refused"),
        (None, "qwen3:8b", "ollama pull qwen3:8b"),
    ],
)
def test_backend_test_connection_explains_failures(admin_client, backend, base_url, model, expected):
    ModelBackend.objects.filter(pk=backend.pk).update(base_url=base_url or backend.base_url, model=model)
    page = admin_client.post(f"/admin/models_registry/modelbackend/{backend.pk}/test/").content.decode()
    assert "Not working" in page and expected in page


def test_backend_list_shows_local_and_cloud_badges(admin_client, backend):
    ModelBackend.objects.create(name="Hosted", kind=BackendKind.REPLICATE, base_url="https://api.replicate.com",
                                model="google/gemma-3-4b-it", is_local=False)
    page = admin_client.get("/admin/models_registry/modelbackend/").content.decode()
    assert 'badge-local' in page and 'badge-cloud' in page


def test_backend_list_shows_the_answers_in_flight_beside_the_limit(admin_client, backend):
    from datetime import timedelta

    from django.utils import timezone

    from models_registry.models import GenerationSlot

    ModelBackend.objects.filter(pk=backend.pk).update(max_concurrency=8)
    GenerationSlot.objects.create(backend=backend, holder="x", expires_at=timezone.now() + timedelta(seconds=30))
    page = admin_client.get("/admin/models_registry/modelbackend/").content.decode()
    assert '<td class="field-answers_in_flight">1 / 8</td>' in page


def test_duplicate_preset(admin_client, preset):
    admin_client.post("/admin/models_registry/samplingpreset/",
                      {"action": "duplicate", "_selected_action": [preset.pk]})
    copy = SamplingPreset.objects.get(name="Default (copy)")
    assert (copy.temperature, copy.system_prompt, copy.is_default) == (preset.temperature, preset.system_prompt, False)


def test_playground_answers_with_latency_and_tokens(admin_client, preset, ollama_server):
    page = admin_client.post("/admin/models_registry/samplingpreset/playground/", {
        "preset": preset.pk, "conversation": "User: hi\nAssistant: hello!\nUser: 你會說中文嗎？"}).content.decode()
    assert "echo: 你會說中文嗎？" in page and " ms</dd>" in page
    sent = ollama_server.last("chat").json["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    assert Message.objects.count() == 0


def test_playground_reports_a_failing_backend(admin_client, preset, ollama_server):
    ollama_server.fail_next("chat", 404, {"error": "model not found"})
    page = admin_client.post("/admin/models_registry/samplingpreset/playground/",
                             {"preset": preset.pk, "conversation": "hi"}).content.decode()
    assert "No backend answered" in page


def test_local_only_chat_refuses_a_cloud_preset_and_says_why(admin_client, channel, preset):
    ModelBackend.objects.filter(pk=preset.backend_id).update(is_local=False)
    chat = Chat.objects.create(channel=channel, source_type="group", line_id=ev.DEFAULT_GROUP_ID, local_only=True)
    page = admin_client.post(f"/admin/conversations/chat/{chat.pk}/change/", {
        "display_name": "G", "preset": preset.pk, "reply_mode": "mention", "reply_prefix": "/ai",
        "local_only": "on", "is_active": "on"}).content.decode()
    assert "only local backends may answer it" in page
    chat.refresh_from_db()
    assert chat.preset is None


def test_bulk_assign_preset_and_reply_mode(admin_client, channel, preset):
    chats = [Chat.objects.create(channel=channel, source_type="group", line_id=f"C{i:032x}") for i in range(3)]
    ids = [c.pk for c in chats]
    admin_client.post("/admin/conversations/chat/", {"action": "assign_preset", "_selected_action": ids,
                                                     "preset": preset.pk})
    admin_client.post("/admin/conversations/chat/", {"action": "set_reply_mode", "_selected_action": ids,
                                                     "reply_mode": "always"})
    assert set(Chat.objects.values_list("preset_id", "reply_mode")) == {(preset.pk, "always")}
    assert AuditEvent.objects.filter(action="chat_change").count() == 6


def test_chat_list_shows_counts_and_last_activity(admin_client, make_chat, make_message):
    chat = make_chat("C" + "0c" * 16, display_name="Busy group")
    for i in range(3):
        make_message(chat, f"m{i}", days_ago=i)
    page = admin_client.get("/admin/conversations/chat/").content.decode()
    assert "Busy group" in page and '<td class="field-message_count">3</td>' in page


def test_failed_message_can_be_retried(webhook, admin_client, ollama_server, line_api):
    ollama_server.fail_next("chat", 500, {"error": "busy"}, count=2)
    webhook.post(ev.text_message_event("try again later"))
    failed = Message.objects.get(direction="in")
    assert failed.status == "failed"
    with webhook.capture(execute=True):
        admin_client.post("/admin/conversations/message/", {"action": "retry_selected",
                                                            "_selected_action": [failed.pk]})
    failed.refresh_from_db()
    assert failed.status == "replied"
    assert line_api.delivered_texts()[-1] == "echo: try again later"
    assert AuditEvent.objects.filter(action="retry", target_id=str(failed.pk)).exists()


def test_thread_pages_by_id_and_is_audited(admin_client, make_chat, make_message):
    chat = make_chat("C" + "0d" * 16)
    messages = [make_message(chat, f"line {i}", direction="in" if i % 2 else "out") for i in range(60)]
    first = admin_client.get(f"/admin/conversations/chat/{chat.pk}/thread/").content.decode()
    assert "line 59" in first and "line 9<" not in first and "Older messages" in first
    older = admin_client.get(f"/admin/conversations/chat/{chat.pk}/thread/?before={messages[10].pk}").content.decode()
    assert "line 9<" in older and "line 10<" not in older
    assert AuditEvent.objects.filter(action="view_conversation", target_type="chat").count() == 2


def test_message_filters_by_chat_user_dates(admin_client, make_chat, make_message):
    chat, other = make_chat("C" + "01" * 16), make_chat("C" + "02" * 16)
    make_message(chat, "recent from alice", user="U" + "a1" * 16)
    make_message(chat, "old from alice", days_ago=30, user="U" + "a1" * 16)
    make_message(other, "elsewhere", user="U" + "b2" * 16)
    today = timezone.localdate()
    page = admin_client.get("/admin/conversations/message/", {
        "chat__id__exact": chat.pk, "q": "U" + "a1" * 16,
        "event_at__gte": (today - timedelta(days=7)).isoformat(), "event_at__lt": today.isoformat(),
    }).content.decode()
    assert "recent from alice" in page and "old from alice" not in page and "elsewhere" not in page


def test_capped_paginator_never_counts_past_the_cap(make_chat, make_message, monkeypatch):
    monkeypatch.setattr(CappedCountPaginator, "CAP", 5)
    chat = make_chat("C" + "01" * 16)
    for i in range(8):
        make_message(chat, f"m{i}")
    paginator = CappedCountPaginator(Message.objects.order_by("-id"), 3)
    assert paginator.count == 6 and paginator.capped


def test_dashboard_shows_figures_and_charts(admin_client, webhook, preset):
    webhook.post(ev.text_message_event("hello"))
    page = admin_client.get("/admin/").content.decode()
    assert "Messages per day" in page and page.count('<svg class="chart"') == 2
    assert "Local Ollama" in page and "Waiting tasks" in page


def test_viewer_reads_conversations_but_cannot_change_backends(client, backend, make_chat, make_message):
    viewer = User.objects.create_user("viewer", password="viewer-test-password", is_staff=True)
    viewer.user_permissions.add(*Permission.objects.filter(codename__in=[
        "view_message", "view_chat", "view_modelbackend"]))
    client.force_login(viewer)
    chat = make_chat("C" + "01" * 16)
    make_message(chat, "visible to viewers")
    assert "visible to viewers" in client.get(f"/admin/conversations/chat/{chat.pk}/thread/").content.decode()
    assert client.post(f"/admin/models_registry/modelbackend/{backend.pk}/change/", {"name": "x"}).status_code == 403
    assert client.get("/admin/models_registry/modelbackend/add/").status_code == 403


def test_viewer_cannot_make_the_server_call_a_backend(client, backend, preset, ollama_server):
    viewer = User.objects.create_user("viewer", password="viewer-test-password", is_staff=True)
    viewer.user_permissions.add(*Permission.objects.filter(codename__in=["view_modelbackend", "view_samplingpreset"]))
    client.force_login(viewer)
    test_url = f"/admin/models_registry/modelbackend/{backend.pk}/test/"
    assert client.get(test_url).status_code == 403
    assert client.post(test_url).status_code == 403
    assert client.post(test_url, {"model": "llama3.2:3b"}).status_code == 403
    playground = "/admin/models_registry/samplingpreset/playground/"
    assert client.post(playground, {"preset": preset.pk, "conversation": "hi"}).status_code == 403
    assert ollama_server.requests == []
    assert ModelBackend.objects.get(pk=backend.pk).model == backend.model


def test_every_console_page_renders_without_debug(admin_client, settings, channel, backend, preset, make_chat):
    settings.DEBUG = False
    chat = make_chat("C" + "01" * 16)
    for url in ["/admin/", "/admin/conversations/chat/", f"/admin/conversations/chat/{chat.pk}/change/",
                f"/admin/conversations/chat/{chat.pk}/thread/", "/admin/conversations/message/",
                "/admin/conversations/linechannel/", f"/admin/conversations/linechannel/{channel.pk}/change/",
                "/admin/models_registry/modelbackend/", "/admin/models_registry/samplingpreset/playground/",
                "/admin/core/auditevent/", "/admin/conversations/privacypolicy/", "/admin/conversations/optout/",
                "/admin/django_q/schedule/", "/admin/django_q/failure/",
                *(["/admin/django_q/ormq/"] if "orm" in settings.Q_CLUSTER else [])]:
        response = admin_client.get(url, follow=True)
        assert response.status_code == 200, url


def test_dashboard_stats_count_per_local_day_and_backend_latency(make_chat, make_message, backend):
    from conversations import selectors

    chat = make_chat("C" + "0e" * 16)
    now = timezone.now()
    make_message(chat, "today in")
    make_message(chat, "today out", direction="out", backend=backend, latency_ms=100)
    make_message(chat, "today out 2", direction="out", backend=backend, latency_ms=300)
    make_message(chat, "three days ago", days_ago=3)
    make_message(chat, "too old to show", days_ago=30)
    make_message(chat, "failed", status="failed")
    stats = selectors.dashboard_stats(now=now)
    days = stats["messages_per_day"]
    assert len(days) == 14 and days[-1]["day"] == timezone.localdate(now)
    assert (days[-1]["in"], days[-1]["out"]) == (2, 2)
    assert days[-4]["in"] == 1 and sum(d["in"] + d["out"] for d in days) == 5
    assert stats["latency_by_backend"] == [{"backend": "Local Ollama", "answers": 2, "p50_ms": 100, "p95_ms": 300}]
    assert stats["failures_24h"] == 1


def test_workers_count_as_alive_only_once_the_scheduler_ran_the_sweep():
    from django_q.models import Schedule

    from conversations import selectors

    now = timezone.now()
    sweep = Schedule.objects.get(func=selectors.queue.SWEEP_TASK)
    Schedule.objects.filter(pk=sweep.pk).update(next_run=now + timedelta(seconds=30), task=None)
    assert not selectors.workers_alive(now=now), "a schedule migrate just made proves nothing"
    Schedule.objects.filter(pk=sweep.pk).update(task="a1b2c3")
    assert selectors.workers_alive(now=now)
    assert not selectors.workers_alive(now=now + timedelta(minutes=5)), "a late sweep means no scheduler"


def test_dashboard_does_not_wait_for_a_backend_that_never_answers(admin_client, backend):
    """A server that accepts connections and says nothing: the page waits the health
    check's deadline at most, not the backend's own timeout."""
    import socket
    import time

    from models_registry import selectors as registry_selectors

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        ModelBackend.objects.create(name="Silent", kind=BackendKind.OPENAI_COMPATIBLE, timeout=30,
                                    base_url=f"http://127.0.0.1:{silent.getsockname()[1]}/v1", model="m")
        started = time.monotonic()
        page = admin_client.get("/admin/").content.decode()
        elapsed = time.monotonic() - started
    finally:
        silent.close()
    assert elapsed < registry_selectors.CHECK_DEADLINE + 2, elapsed
    assert re.search(r'status-failed"[^>]*>down</span>\s*<a [^>]*>Silent</a>', page)
