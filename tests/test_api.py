"""The REST API as a whole: sign-in, permissions, throttling, schema, docs, health, stats,
and the README's curl example. Fixtures here are shared with the other test_api_* files."""
import json
import os
import re
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.core.cache import cache
from django.core.management import call_command
from django.utils import timezone
from django_q.models import Schedule
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from conversations import bootstrap, health, selectors
from core.models import AuditAction, AuditEvent
from conversations.models import Chat, Message
from models_registry import selectors as registry_selectors
from models_registry.backends import ConnectionReport
from models_registry.models import ModelBackend, SamplingPreset

README = Path(__file__).resolve().parent.parent / "README.md"
API_MODELS = ("linechannel", "chat", "message", "auditevent", "modelbackend", "samplingpreset")


@pytest.fixture(autouse=True)
def api_test_settings(settings):
    """No throttling unless a test asks for it; no throttle counts or health results left over."""
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"user": None, "anon": None}}
    cache.clear()
    yield
    cache.clear()


def client_for(user: User | None) -> APIClient:
    client = APIClient()
    if user is not None:
        token, _ = Token.objects.get_or_create(user=user)
        client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def superuser(db) -> User:
    # No password: hashing one costs about half a second per test.
    return User.objects.create(username="operator", is_staff=True, is_superuser=True)


@pytest.fixture
def api(superuser) -> APIClient:
    """A superuser's token."""
    return client_for(superuser)


@pytest.fixture
def reader(db) -> User:
    """A member of a read-only group: every view_ permission, nothing else."""
    group = Group.objects.create(name="API readers")
    group.permissions.set(Permission.objects.filter(codename__in=[f"view_{model}" for model in API_MODELS]))
    user = User.objects.create(username="reader")
    user.groups.add(group)
    return user


@pytest.fixture
def reader_api(reader) -> APIClient:
    return client_for(reader)


@pytest.fixture
def nobody_api(db) -> APIClient:
    """Signed in, no permissions."""
    return client_for(User.objects.create(username="nobody"))


@pytest.fixture
def anon_api() -> APIClient:
    return APIClient()


def grant(user: User, *codenames: str) -> User:
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return User.objects.get(pk=user.pk)  # a fresh object: permissions are cached per instance


@pytest.fixture
def no_backend_calls(monkeypatch):
    """Backend checks answer at once, without the network; returns the backends asked."""
    asked = []

    def fake_check(*, backend):
        asked.append(backend)
        return ConnectionReport(ok=backend.model != "broken", latency_ms=3, detail="Reachable; model available.",
                                models=[backend.model])

    monkeypatch.setattr(registry_selectors, "check_backend", fake_check)
    return asked


@pytest.fixture
def no_workers(db, monkeypatch):
    """No qcluster: none reports its status, and the sweep schedule is long overdue
    (migrate just made it, which looks fresh)."""
    monkeypatch.setattr(selectors.Stat, "get_all", staticmethod(lambda broker=None: []))
    Schedule.objects.update(next_run=timezone.now() - timedelta(hours=1))
    # On Redis the queue outlives each test's database: start from an empty one.
    from conversations import queue
    queue.broker().purge_queue()


pytestmark = pytest.mark.django_db


# --- Authentication and authorization -----------------------------------------------


ENDPOINTS = ["/api/v1/channels/", "/api/v1/backends/", "/api/v1/presets/", "/api/v1/chats/", "/api/v1/messages/",
             "/api/v1/audit-events/", "/api/v1/stats/"]


@pytest.mark.parametrize("url", ENDPOINTS)
def test_without_credentials_every_endpoint_answers_401(anon_api, url):
    response = anon_api.get(url)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"


def test_a_wrong_token_is_refused(anon_api):
    anon_api.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    assert anon_api.get("/api/v1/backends/").status_code == 401


@pytest.mark.parametrize("url", ENDPOINTS)
def test_a_user_without_view_permission_cannot_read(nobody_api, url):
    assert nobody_api.get(url).status_code == 403


@pytest.mark.parametrize("url", ENDPOINTS)
def test_a_read_only_group_can_read_everything(reader_api, url):
    assert reader_api.get(url).status_code == 200


def test_a_read_only_group_cannot_write(reader_api, backend, preset, make_chat, make_message):
    chat = make_chat("Cgroup")
    message = make_message(chat, "hello")
    attempts = [
        reader_api.post("/api/v1/backends/", {"name": "x", "base_url": "http://localhost:1", "model": "m"}),
        reader_api.patch(f"/api/v1/backends/{backend.pk}/", {"enabled": False}),
        reader_api.delete(f"/api/v1/backends/{backend.pk}/"),
        reader_api.post(f"/api/v1/backends/{backend.pk}/test/"),
        reader_api.post("/api/v1/presets/", {"name": "x", "backend": backend.pk}),
        reader_api.patch(f"/api/v1/presets/{preset.pk}/", {"temperature": 1}),
        reader_api.patch(f"/api/v1/chats/{chat.pk}/", {"legal_hold": True}),
        reader_api.post(f"/api/v1/messages/{message.pk}/redact/", {"reason": "x"}),
        reader_api.post("/api/v1/messages/redact/", {"ids": [message.pk], "reason": "x"}, format="json"),
        reader_api.post("/api/v1/channels/", {"name": "x", "slug": "x", "channel_secret": "s", "access_token": "t"}),
    ]
    assert [response.status_code for response in attempts] == [403] * len(attempts)
    backend.refresh_from_db()
    chat.refresh_from_db()
    assert backend.enabled and not chat.legal_hold and not Message.objects.get(pk=message.pk).redacted


def test_one_permission_allows_exactly_its_write(reader, backend):
    writer = client_for(grant(reader, "change_modelbackend"))
    assert writer.patch(f"/api/v1/backends/{backend.pk}/", {"enabled": False}).status_code == 200
    assert writer.delete(f"/api/v1/backends/{backend.pk}/").status_code == 403


def test_session_sign_in_works_for_the_browsable_api(client, superuser):
    client.force_login(superuser)
    response = client.get("/api/v1/backends/", HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    assert b"Model Backend List" in response.content or b"Backend" in response.content


def test_a_token_can_be_made_with_the_management_command(superuser, capsys):
    call_command("drf_create_token", superuser.username)
    key = Token.objects.get(user=superuser).key
    assert key in capsys.readouterr().out
    assert client_for(superuser).get("/api/v1/backends/").status_code == 200


def test_tokens_are_managed_in_the_admin(client, superuser):
    from django.contrib import admin
    from rest_framework.authtoken.models import TokenProxy

    assert admin.site.is_registered(TokenProxy)
    token = Token.objects.create(user=superuser)
    client.force_login(superuser)
    response = client.post(f"/admin/authtoken/tokenproxy/{superuser.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Token.objects.filter(key=token.key).exists()
    anon = APIClient()
    anon.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert anon.get("/api/v1/backends/").status_code == 401


# --- Throttling -----------------------------------------------------------------------


def test_clients_are_rate_limited(settings, api):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"user": "3/min", "anon": None}}
    codes = [api.get("/api/v1/backends/").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    response = api.get("/api/v1/backends/")
    assert "Retry-After" in response and "throttled" in response.json()["detail"].lower()


def test_anonymous_clients_are_rate_limited_too(settings, anon_api, no_backend_calls):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"user": None, "anon": "2/min"}}
    codes = [anon_api.get("/api/v1/health").status_code for _ in range(3)]
    assert codes == [200, 200, 429]


def test_default_rates_come_from_the_environment():
    from linebot_site import settings as configured  # the module: the fixture above overrides django.conf

    rates = configured.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
    assert rates == {"user": os.environ.get("API_THROTTLE_USER", "600/min"),
                     "anon": os.environ.get("API_THROTTLE_ANON", "60/min")}


# --- Schema and documentation --------------------------------------------------------


def test_the_schema_validates_without_warnings(tmp_path):
    target = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target))
    text = target.read_text()
    assert "/api/v1/messages/{id}/redact/" in text and "/api/v1/health" in text


def test_the_schema_is_served_and_keeps_secrets_out_of_responses(anon_api):
    response = anon_api.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = response.json()
    components = schema["components"]["schemas"]
    for name in ("Backend", "Channel"):
        assert not {"api_key", "channel_secret", "access_token"} & components[name]["properties"].keys()
    assert components["BackendRequest"]["properties"]["api_key"]["writeOnly"] is True
    assert {"has_api_key"} <= components["Backend"]["properties"].keys()
    assert {"has_channel_secret", "has_access_token", "webhook_url"} <= components["Channel"]["properties"].keys()
    health_get = schema["paths"]["/api/v1/health"]["get"]
    assert {"200", "503"} <= health_get["responses"].keys() and "401" not in health_get["responses"]


def test_unknown_api_paths_answer_json_404(anon_api, api):
    assert api.get("/api/v1/nothing/").json() == {"detail": "Not found."}
    response = api.post("/api/v1/backends", {}, format="json")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found. Did you mean /api/v1/backends/ ?"}


def test_requests_django_refuses_to_parse_are_answered_in_json(api, settings):
    fields = {"ids": list(range(1, 1001)), "reason": "many"}
    response = api.post("/api/v1/messages/redact/", fields, format="multipart")
    assert response.status_code == 400
    assert response.json() == {"detail": "The request has too many fields."}
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    response = api.post("/api/v1/messages/redact/", {"ids": [1], "reason": "x" * 200}, format="json")
    assert response.status_code == 413 and response.json() == {"detail": "The request body is too large."}


def test_swagger_ui_is_served_from_local_static_files(anon_api):
    page = anon_api.get("/api/v1/docs/").content.decode()
    assert "drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in page
    assert not re.search(r"""(src|href)=["']https?://""", page), "docs must not load anything from a CDN"
    assert "https://" not in page


# --- Health ---------------------------------------------------------------------------


def test_health_needs_no_sign_in_and_reports_each_part(anon_api, backend, no_backend_calls, no_workers):
    ModelBackend.objects.create(name="Broken", base_url="http://127.0.0.1:9", model="broken")
    ModelBackend.objects.create(name="Off", base_url="http://127.0.0.1:9", model="x", enabled=False)
    registry_selectors.backend_health()  # as the console's dashboard does
    response = anon_api.get("/api/v1/health")
    assert response.status_code == 200
    body = response.json()
    assert body["database"] == {"ok": True} and body["broker"] == {"ok": True}
    assert body["backends"] == {"total": 3, "enabled": 2, "local": 3, "healthy": 1, "unhealthy": 1}
    assert body["workers"] == {"alive": 0}
    assert body["status"] == "degraded"


def test_health_never_calls_a_backend_and_names_none(anon_api, backend, no_backend_calls):
    body = anon_api.get("/api/v1/health").json()
    assert no_backend_calls == []
    assert body["backends"] == {"total": 1, "enabled": 1, "local": 1, "healthy": None, "unhealthy": None}
    assert "Local Ollama" not in json.dumps(body)


def test_health_reveals_no_urls_keys_or_errors(anon_api, no_backend_calls):
    ModelBackend.objects.create(name="Cloud", kind="openai_compatible", base_url="https://llm.internal.example/v1",
                                model="broken", api_key="sk-very-secret", is_local=False)
    registry_selectors.backend_health()
    text = anon_api.get("/api/v1/health").content.decode()
    for secret in ("llm.internal.example", "sk-very-secret", "http", "Reachable", "broken", "Cloud"):
        assert secret not in text


def test_health_is_ok_when_everything_works(anon_api, backend, no_backend_calls, monkeypatch):
    monkeypatch.setattr(selectors, "workers_alive", lambda *, now: 4)
    body = anon_api.get("/api/v1/health").json()
    assert body["status"] == "ok" and body["workers"] == {"alive": 4}


def test_health_answers_503_when_the_database_is_down(anon_api, monkeypatch, no_backend_calls):
    monkeypatch.setattr(health, "database_ok", lambda: False)
    response = anon_api.get("/api/v1/health")
    assert response.status_code == 503
    assert response.json()["status"] == "down"


def test_backends_are_checked_at_most_every_30_seconds(backend, no_backend_calls):
    for _ in range(3):
        registry_selectors.backend_health()
    assert len(no_backend_calls) == 1
    registry_selectors.forget_backend_health()
    registry_selectors.backend_health()
    assert len(no_backend_calls) == 2


def test_changing_a_backend_forgets_its_health(backend, no_backend_calls):
    registry_selectors.backend_health()
    ModelBackend.objects.filter(pk=backend.pk).get().save()
    registry_selectors.backend_health()
    assert len(no_backend_calls) == 2


def test_health_checks_give_each_backend_a_short_timeout(backend, no_backend_calls):
    ModelBackend.objects.filter(pk=backend.pk).update(timeout=600)
    registry_selectors.backend_health()
    assert no_backend_calls[0].timeout == registry_selectors.CHECK_DEADLINE
    assert ModelBackend.objects.get(pk=backend.pk).timeout == 600


def test_a_backend_that_hangs_counts_as_failed(backend, monkeypatch):
    import threading

    release = threading.Event()
    monkeypatch.setattr(registry_selectors, "CHECK_DEADLINE", 0.1)
    monkeypatch.setattr(registry_selectors, "check_backend", lambda *, backend: release.wait(5))
    try:
        [result] = registry_selectors.backend_health()
    finally:
        release.set()
    assert (result.backend.name, result.ok) == ("Local Ollama", False)


def test_health_accepts_only_get(anon_api):
    assert anon_api.post("/api/v1/health").status_code == 405


# --- Stats ----------------------------------------------------------------------------


def test_stats_gives_the_dashboard_figures(api, backend, make_chat, make_message, no_workers):
    chat = make_chat("Cstats")
    for days_ago, latency in ((0, 100), (0, 300), (1, 200)):
        question = make_message(chat, "q", days_ago=days_ago)
        make_message(chat, "a", days_ago=days_ago, direction="out", reply_to=question, backend=backend,
                     latency_ms=latency)
    make_message(chat, "failed", status="failed")
    make_message(chat, "old", days_ago=30)
    body = api.get("/api/v1/stats/").json()
    assert len(body["messages_per_day"]) == 14
    today, yesterday = body["messages_per_day"][-1], body["messages_per_day"][-2]
    assert (today["in"], today["out"]) == (3, 2) and (yesterday["in"], yesterday["out"]) == (1, 1)
    assert sum(day["in"] for day in body["messages_per_day"]) == 4
    [latency] = body["latency_by_backend"]
    assert latency["backend"] == "Local Ollama" and latency["answers"] == 3
    assert (latency["p50_ms"], latency["p95_ms"]) == (200, 300)
    assert body["failures_24h"] == 1
    assert body["queue_depth"] == 0
    assert body["workers_alive"] is False
    assert body["backends"] == {"total": 1, "enabled": 1, "local": 1, "healthy": None, "unhealthy": None}


def test_stats_show_backend_health_once_checked(api, backend, no_backend_calls):
    registry_selectors.backend_health()
    assert api.get("/api/v1/stats/").json()["backends"]["healthy"] == 1


def test_stats_need_permission_to_view_messages(reader, db):
    reader.groups.clear()
    assert client_for(reader).get("/api/v1/stats/").status_code == 403
    assert client_for(grant(reader, "view_message")).get("/api/v1/stats/").status_code == 200


# --- The README's example ------------------------------------------------------------


def readme_script() -> str:
    section = README.read_text().split("## REST API", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```sh\n(#!/bin/sh\n.*?)```", section, re.S).group(1)


def test_readme_example_requests_in_order(api, channel, make_chat, make_message):
    """The README's script, request by request, through the test client."""
    chat = make_chat("C0123456789abcdef0123456789abcdef")
    make_message(chat, "hello bot", user="U1")

    backend = api.post("/api/v1/backends/", {
        "name": "Ollama llama3.2", "kind": "ollama", "base_url": "http://localhost:11434", "model": "llama3.2:3b",
    }, format="json")
    assert backend.status_code == 201, backend.json()
    preset = api.post("/api/v1/presets/", {
        "name": "Friendly", "backend": backend.json()["id"], "system_prompt": "You are a friendly helper.",
        "temperature": 0.5,
    }, format="json")
    assert preset.status_code == 201, preset.json()
    found = api.get("/api/v1/chats/", {"line_id": "C0123456789abcdef0123456789abcdef"})
    chat_id = found.json()["results"][0]["id"]
    assigned = api.patch(f"/api/v1/chats/{chat_id}/", {"preset": preset.json()["id"]}, format="json")
    assert assigned.status_code == 200 and assigned.json()["preset"] == preset.json()["id"]
    messages = api.get("/api/v1/messages/", {"chat": chat_id})
    assert [m["text"] for m in messages.json()["results"]] == ["hello bot"]

    assert Chat.objects.get(pk=chat_id).preset.name == "Friendly"
    assert AuditEvent.objects.filter(action=AuditAction.BACKEND_CHANGE).exists()
    assert AuditEvent.objects.filter(action=AuditAction.PRESET_CHANGE).exists()
    assert AuditEvent.objects.filter(action=AuditAction.CHAT_CHANGE, target_id=str(chat_id)).exists()
    assert AuditEvent.objects.filter(action=AuditAction.VIEW_CONVERSATION, target_id=str(chat_id)).exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_readme_script_runs_with_curl_against_a_live_server(live_server, superuser, channel):
    """The README's script itself, run by sh with curl against a live server, after
    bootstrap's defaults (so its names must not clash with them)."""
    bootstrap.bootstrap(admin_username="admin", admin_password="x" * 20)
    Chat.objects.create(channel=channel, source_type="group", line_id="C0123456789abcdef0123456789abcdef")
    Message.objects.create(chat=Chat.objects.get(), direction="in", text="hello bot", event_at=timezone.now(),
                           status_changed_at=timezone.now() - timedelta(seconds=1))
    token = Token.objects.create(user=superuser)
    result = subprocess.run(
        ["sh", "-c", readme_script()], capture_output=True, text=True, timeout=60,
        env={"PATH": os.environ["PATH"], "API": f"{live_server.url}/api/v1", "TOKEN": token.key},
    )
    assert result.returncode == 0, result.stderr
    assert '"text":"hello bot"' in result.stdout
    assert SamplingPreset.objects.get(name="Friendly").chats.get().line_id == "C0123456789abcdef0123456789abcdef"
