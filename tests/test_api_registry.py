"""/api/v1/backends/ and /api/v1/presets/: validated like the admin, audited, keys write-only."""
import pytest

from core.models import AuditAction, AuditEvent
from models_registry.models import ModelBackend, SamplingPreset
from tests.fakes.replicate import FakeReplicate
from tests.test_api import api, api_test_settings, nobody_api, reader, reader_api, superuser  # noqa: F401 (fixtures)

pytestmark = pytest.mark.django_db

KEY = "r8_supersecretvalue"


@pytest.fixture
def cloud(db) -> ModelBackend:
    return ModelBackend.objects.create(name="Replicate", kind="replicate", base_url="https://api.replicate.com",
                                       model="google/gemma-3-4b-it", api_key=KEY, is_local=False)


def new_backend(**fields) -> dict:
    return {"name": "vLLM", "kind": "openai_compatible", "base_url": "http://127.0.0.1:8001/v1",
            "model": "qwen", **fields}


# --- Backends -------------------------------------------------------------------------


def test_list_and_get_backends_without_their_keys(api, cloud, backend):
    listed = api.get("/api/v1/backends/")
    assert listed.status_code == 200
    assert [b["name"] for b in listed.json()["results"]] == ["Local Ollama", "Replicate"]
    detail = api.get(f"/api/v1/backends/{cloud.pk}/")
    assert detail.json()["has_api_key"] is True and "api_key" not in detail.json()
    assert KEY not in listed.content.decode() + detail.content.decode()
    assert api.get(f"/api/v1/backends/{backend.pk}/").json()["has_api_key"] is False


def test_backends_show_their_limit_and_the_answers_in_flight(api, cloud, backend):
    from datetime import timedelta

    from django.utils import timezone

    from models_registry.models import GenerationSlot

    later = timezone.now() + timedelta(seconds=30)
    GenerationSlot.objects.create(backend=backend, holder="a", expires_at=later)
    GenerationSlot.objects.create(backend=backend, holder="b", expires_at=later)
    GenerationSlot.objects.create(backend=backend, holder="gone", expires_at=timezone.now() - timedelta(seconds=1))
    ModelBackend.objects.filter(pk=cloud.pk).update(max_concurrency=16)
    listed = {b["name"]: b for b in api.get("/api/v1/backends/").json()["results"]}
    assert (listed["Local Ollama"]["in_flight"], listed["Local Ollama"]["max_concurrency"],
            listed["Local Ollama"]["concurrency_limit"]) == (2, None, 4)
    assert (listed["Replicate"]["in_flight"], listed["Replicate"]["concurrency_limit"]) == (0, 16)
    changed = api.patch(f"/api/v1/backends/{backend.pk}/", {"max_concurrency": 32}, format="json")
    assert changed.status_code == 200 and changed.json()["concurrency_limit"] == 32


def test_filter_backends(api, cloud, backend):
    assert [b["name"] for b in api.get("/api/v1/backends/", {"is_local": "false"}).json()["results"]] == ["Replicate"]
    assert api.get("/api/v1/backends/", {"kind": "nonsense"}).status_code == 400


def test_create_a_backend_stores_the_key_and_audits_without_it(api, superuser):
    response = api.post("/api/v1/backends/", new_backend(api_key="sk-new-key"), format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["has_api_key"] is True and "api_key" not in body and "sk-new-key" not in response.content.decode()
    backend = ModelBackend.objects.get(pk=body["id"])
    assert backend.api_key == "sk-new-key" and backend.timeout == 60.0
    event = AuditEvent.objects.get(action=AuditAction.BACKEND_CHANGE)
    assert event.actor_username == superuser.username and event.target_id == str(backend.pk)
    assert event.details["created"] is True and event.details["changes"]["api_key"] == "(changed)"
    assert "sk-new-key" not in str(event.details)


@pytest.mark.parametrize("fields, errors", [
    ({"timeout": 0}, {"timeout": ["Ensure this value is greater than or equal to 1.0."]}),
    ({"timeout": 601}, {"timeout": ["Ensure this value is less than or equal to 600.0."]}),
    ({"base_url": "not a url"}, {"base_url": ["Enter a valid URL."]}),
    ({"kind": "gpt"}, {"kind": ['"gpt" is not a valid choice.']}),
    ({"name": ""}, {"name": ["This field may not be blank."]}),
    ({"max_concurrency": 0}, {"max_concurrency": ["Ensure this value is greater than or equal to 1."]}),
    ({"max_concurrency": 513}, {"max_concurrency": ["Ensure this value is less than or equal to 512."]}),
])
def test_invalid_backends_are_refused_field_by_field(api, fields, errors):
    response = api.post("/api/v1/backends/", new_backend(**fields), format="json")
    assert response.status_code == 400
    assert response.json() == errors
    assert not ModelBackend.objects.exists() and not AuditEvent.objects.exists()


def test_a_backend_name_is_unique(api, backend):
    response = api.post("/api/v1/backends/", new_backend(name=backend.name), format="json")
    assert response.status_code == 400 and list(response.json()) == ["name"]


def test_required_fields_are_named(api):
    response = api.post("/api/v1/backends/", {}, format="json")
    assert response.status_code == 400
    assert set(response.json()) == {"name", "base_url", "model"}


def test_updating_without_a_key_keeps_it(api, cloud):
    response = api.patch(f"/api/v1/backends/{cloud.pk}/", {"timeout": 30}, format="json")
    assert response.status_code == 200 and response.json()["timeout"] == 30
    put = api.put(f"/api/v1/backends/{cloud.pk}/", {
        "name": "Replicate", "kind": "replicate", "base_url": "https://api.replicate.com", "model": "other/model",
        "api_key": "", "is_local": False}, format="json")
    assert put.status_code == 200, put.json()
    cloud.refresh_from_db()
    # PUT leaves fields with a default alone when they are left out, as DRF does.
    assert cloud.api_key == KEY and cloud.model == "other/model" and cloud.timeout == 30.0
    changes = [e.details["changes"] for e in AuditEvent.objects.filter(action=AuditAction.BACKEND_CHANGE)]
    assert {"timeout": [60.0, 30.0]} in changes and all("api_key" not in c for c in changes)


def test_a_new_key_replaces_the_old_one(api, cloud):
    response = api.patch(f"/api/v1/backends/{cloud.pk}/", {"api_key": "r8_rotated"}, format="json")
    assert response.status_code == 200 and "r8_rotated" not in response.content.decode()
    cloud.refresh_from_db()
    assert cloud.api_key == "r8_rotated"
    assert AuditEvent.objects.get(action=AuditAction.BACKEND_CHANGE).details["changes"] == {"api_key": "(changed)"}


def test_invalid_update_is_refused(api, cloud):
    response = api.patch(f"/api/v1/backends/{cloud.pk}/", {"timeout": -1}, format="json")
    assert response.status_code == 400 and list(response.json()) == ["timeout"]
    cloud.refresh_from_db()
    assert cloud.timeout == 60.0


def test_delete_a_backend_is_audited(api, cloud):
    assert api.delete(f"/api/v1/backends/{cloud.pk}/").status_code == 204
    assert not ModelBackend.objects.filter(pk=cloud.pk).exists()
    assert AuditEvent.objects.get(action=AuditAction.BACKEND_CHANGE).details["changes"] == {"deleted": True}


def test_a_backend_in_use_cannot_be_deleted(api, preset):
    response = api.delete(f"/api/v1/backends/{preset.backend_id}/")
    assert response.status_code == 409
    assert "Default" in response.json()["detail"]
    assert ModelBackend.objects.filter(pk=preset.backend_id).exists()
    assert not AuditEvent.objects.exists()


@pytest.mark.parametrize("method", ["get", "patch", "delete"])
def test_a_missing_backend_is_404(api, method):
    assert getattr(api, method)("/api/v1/backends/999999/").status_code == 404


def test_the_test_action_runs_the_admins_connection_check(api, backend):
    response = api.post(f"/api/v1/backends/{backend.pk}/test/")
    assert response.status_code == 200
    report = response.json()
    assert report["ok"] is True and "gemma3:4b" in report["models"]
    assert isinstance(report["latency_ms"], int) and report["detail"]


def test_the_test_action_reports_an_unreachable_backend(api):
    dead = ModelBackend.objects.create(name="Dead", base_url="http://127.0.0.1:9", model="m", timeout=2)
    report = api.post(f"/api/v1/backends/{dead.pk}/test/").json()
    assert report["ok"] is False and "connect" in report["detail"].lower()


def test_the_test_action_never_echoes_the_key(api, cloud):
    with FakeReplicate(api_token=KEY) as replicate_server:
        replicate_server.quote_authorization()
        cloud.base_url = replicate_server.url
        cloud.save()
        response = api.post(f"/api/v1/backends/{cloud.pk}/test/")
    assert response.status_code == 200
    assert KEY not in response.content.decode() and "[hidden]" in response.json()["detail"]


def test_the_test_action_needs_change_permission_and_an_existing_backend(reader_api, api, backend):
    assert reader_api.post(f"/api/v1/backends/{backend.pk}/test/").status_code == 403
    assert api.post("/api/v1/backends/999999/test/").status_code == 404


# --- Presets --------------------------------------------------------------------------


def new_preset(main, **fields) -> dict:
    return {"name": "Friendly", "backend": main.pk, "system_prompt": "Be kind.", **fields}


def test_create_a_preset_with_defaults_and_audit(api, backend):
    response = api.post("/api/v1/presets/", new_preset(backend), format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["temperature"], body["top_p"], body["top_k"], body["max_new_tokens"]) == (0.7, 0.9, 40, 512)
    event = AuditEvent.objects.get(action=AuditAction.PRESET_CHANGE)
    assert event.target_id == str(body["id"]) and event.details["created"] is True


@pytest.mark.parametrize("fields, field, message", [
    ({"temperature": 2.5}, "temperature", "Ensure this value is less than or equal to 2.0."),
    ({"top_p": -0.1}, "top_p", "Ensure this value is greater than or equal to 0.0."),
    ({"top_k": 1001}, "top_k", "Ensure this value is less than or equal to 1000."),
    ({"max_new_tokens": 0}, "max_new_tokens", "Ensure this value is greater than or equal to 1."),
    ({"repetition_penalty": 3}, "repetition_penalty", "Ensure this value is less than or equal to 2.0."),
    ({"history_turns": 101}, "history_turns", "Ensure this value is less than or equal to 100."),
    ({"backend": 999999}, "backend", 'Invalid pk "999999" - object does not exist.'),
    ({"fallback_backend": 999999}, "fallback_backend", 'Invalid pk "999999" - object does not exist.'),
    ({"temperature": "hot"}, "temperature", "A valid number is required."),
])
def test_out_of_range_presets_are_refused_field_by_field(api, backend, fields, field, message):
    response = api.post("/api/v1/presets/", new_preset(backend, **fields), format="json")
    assert response.status_code == 400
    assert response.json() == {field: [message]}
    assert not SamplingPreset.objects.exists()


def test_only_one_preset_is_the_global_default(api, preset):
    response = api.post("/api/v1/presets/", new_preset(preset.backend, is_default=True), format="json")
    assert response.status_code == 400
    assert response.json() == {"is_default": ["sampling preset with this global default already exists."]}
    assert SamplingPreset.objects.filter(is_default=True).count() == 1


def test_change_a_preset(api, preset):
    response = api.patch(f"/api/v1/presets/{preset.pk}/", {"temperature": 1.2, "system_prompt": "Terse."},
                         format="json")
    assert response.status_code == 200
    preset.refresh_from_db()
    assert preset.temperature == 1.2 and preset.system_prompt == "Terse."
    changes = AuditEvent.objects.get(action=AuditAction.PRESET_CHANGE).details["changes"]
    assert changes == {"temperature": [0.3, 1.2], "system_prompt": ["You are a test bot.", "Terse."]}


def test_an_invalid_change_leaves_the_preset_alone(api, preset):
    response = api.patch(f"/api/v1/presets/{preset.pk}/", {"top_p": 5}, format="json")
    assert response.status_code == 400 and list(response.json()) == ["top_p"]
    preset.refresh_from_db()
    assert preset.top_p == 0.8 and not AuditEvent.objects.exists()


def test_delete_a_preset(api, preset, make_chat):
    chat = make_chat("Cdel", preset=preset)
    assert api.delete(f"/api/v1/presets/{preset.pk}/").status_code == 204
    chat.refresh_from_db()
    assert chat.preset is None
    assert AuditEvent.objects.get(action=AuditAction.PRESET_CHANGE).details["changes"] == {"deleted": True}


@pytest.mark.parametrize("method", ["get", "put", "patch", "delete"])
def test_a_missing_preset_is_404(api, method):
    assert getattr(api, method)("/api/v1/presets/999999/", {}, format="json").status_code == 404


def test_presets_need_permissions(nobody_api, reader_api, preset):
    assert nobody_api.get("/api/v1/presets/").status_code == 403
    assert reader_api.get(f"/api/v1/presets/{preset.pk}/").status_code == 200
    assert reader_api.delete(f"/api/v1/presets/{preset.pk}/").status_code == 403
