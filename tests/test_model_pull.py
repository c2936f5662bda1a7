"""Downloading an Ollama model from the console: a task, a progress bar, an audit trail."""
import ollama
import pytest
from django.contrib.auth.models import Permission, User

from core.models import AuditEvent
from models_registry import pulls
from models_registry.models import BackendKind, ModelBackend, ModelPull

pytestmark = pytest.mark.django_db


def pull_url(backend) -> str:
    return f"/admin/models_registry/modelbackend/{backend.pk}/pull/"


def test_the_fake_speaks_ollamas_pull_protocol(ollama_server):
    client = ollama.Client(host=ollama_server.url)
    lines = list(client.pull("qwen3:8b", stream=True))
    assert lines[0].status == "pulling manifest" and lines[-1].status == "success"
    layers = [line for line in lines if line.digest]
    assert layers[0].completed is None and layers[0].total > 4_000_000_000, "the first line of a layer has no `completed`"
    assert layers[1].completed < layers[1].total and any(line.completed == line.total for line in layers)
    assert [line.status for line in lines[-3:]] == ["verifying sha256 digest", "writing manifest", "success"]
    assert "qwen3:8b" in [entry.model for entry in client.list().models]
    ollama_server.library = {"gemma3:4b"}
    with pytest.raises(ollama.ResponseError, match="file does not exist"):
        list(client.pull("nosuch:1b", stream=True))


def test_an_operator_downloads_a_missing_model_to_the_end(admin_client, backend, ollama_server,
                                                          django_capture_on_commit_callbacks):
    backend.model = "qwen3:8b"
    backend.save()
    page = admin_client.post(f"/admin/models_registry/modelbackend/{backend.pk}/test/").content.decode()
    assert "Not working" in page and 'id="pull-model"' in page and 'value="qwen3:8b"' in page
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(pull_url(backend), {"model": "qwen3:8b"})
    assert response.status_code == 302 and response.url.endswith(f"/{backend.pk}/test/#pull")
    pull = ModelPull.objects.get()
    progress = admin_client.get(f"/admin/models_registry/modelbackend/{backend.pk}/pulls/{pull.pk}/").json()
    assert (progress["status"], progress["percent"], progress["finished"]) == ("done", 100, True)
    assert progress["completed"] == progress["total"] > 4_000_000_000 and progress["error"] == ""
    event = AuditEvent.objects.get(action="model_pull")
    assert (event.actor_username, event.target_type, event.target_id) == ("admin", "modelbackend", str(backend.pk))
    assert event.details["model"] == "qwen3:8b"
    page = admin_client.post(f"/admin/models_registry/modelbackend/{backend.pk}/test/").content.decode()
    assert "Connected" in page and "Downloaded." in page


def test_progress_is_written_as_it_comes(backend, ollama_server, admin_user, monkeypatch,
                                        django_capture_on_commit_callbacks):
    monkeypatch.setattr(pulls, "PROGRESS_EVERY", 0)
    seen = []
    record = pulls._record
    monkeypatch.setattr(pulls, "_record", lambda pull, **fields: (record(pull, **fields), seen.append(pull.percent)))
    with django_capture_on_commit_callbacks(execute=True):
        pulls.start_pull(backend=backend, model="llama3.2:3b-instruct", actor=admin_user)
    assert seen[-1] == 100 and seen == sorted(seen)
    assert len({p for p in seen if 0 < p < 100}) >= 2, f"no progress in between: {seen}"


def test_a_long_download_hands_over_to_a_new_task_and_resumes(backend, ollama_server, admin_user, monkeypatch,
                                                               django_capture_on_commit_callbacks):
    monkeypatch.setattr(pulls, "PULL_SLICE", 0)
    with django_capture_on_commit_callbacks(execute=True):
        pull = pulls.start_pull(backend=backend, model="qwen3:8b", actor=admin_user)
    pull.refresh_from_db()
    assert pull.status == "done" and pull.percent == 100
    assert ollama_server.count("pull") > 1, "each task pulled one slice, the next went on"


def test_a_model_the_library_lacks_fails_with_ollamas_reason(admin_client, backend, ollama_server,
                                                             django_capture_on_commit_callbacks):
    ollama_server.library = {"gemma3:4b"}
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(pull_url(backend), {"model": "nosuch:1b"})
    pull = ModelPull.objects.get()
    progress = admin_client.get(f"/admin/models_registry/modelbackend/{backend.pk}/pulls/{pull.pk}/").json()
    assert progress["status"] == "failed" and "file does not exist" in progress["error"]


@pytest.mark.parametrize("name", ["rm -rf /", "", "gemma3:4b; ls", "../etc/passwd"])
def test_a_name_that_is_no_model_name_is_refused_before_anything_runs(admin_client, backend, ollama_server, name):
    response = admin_client.post(pull_url(backend), {"model": name}, follow=True)
    assert "not an Ollama model name" in response.content.decode()
    assert not ModelPull.objects.exists() and ollama_server.count("pull") == 0


def test_only_ollama_backends_pull(admin_client):
    hosted = ModelBackend.objects.create(name="Hosted", kind=BackendKind.OPENAI_COMPATIBLE, is_local=False,
                                         base_url="http://127.0.0.1:9/v1", model="m")
    response = admin_client.post(pull_url(hosted), {"model": "m"}, follow=True)
    assert "Only Ollama servers" in response.content.decode() and not ModelPull.objects.exists()


def test_a_download_under_way_is_followed_not_started_twice(backend, admin_user):
    from django.utils import timezone

    running = ModelPull.objects.create(backend=backend, model="qwen3:8b", status="pulling", updated_at=timezone.now())
    assert pulls.start_pull(backend=backend, model="qwen3:8b", actor=admin_user) == running
    assert ModelPull.objects.count() == 1 and not AuditEvent.objects.filter(action="model_pull").exists()


def test_a_get_starts_nothing(admin_client, backend, ollama_server):
    assert admin_client.get(pull_url(backend), {"model": "qwen3:8b"}).status_code == 405
    assert not ModelPull.objects.exists() and ollama_server.count("pull") == 0


def test_a_viewer_can_neither_download_nor_follow(client, backend, ollama_server):
    viewer = User.objects.create_user("viewer", password="viewer-test-password", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_modelbackend"))
    client.force_login(viewer)
    assert client.post(pull_url(backend), {"model": "qwen3:8b"}).status_code == 403
    from django.utils import timezone

    pull = ModelPull.objects.create(backend=backend, model="qwen3:8b", updated_at=timezone.now())
    assert client.get(f"/admin/models_registry/modelbackend/{backend.pk}/pulls/{pull.pk}/").status_code == 403
    assert ModelPull.objects.count() == 1 and ollama_server.count("pull") == 0
    assert not AuditEvent.objects.filter(action="model_pull").exists()
