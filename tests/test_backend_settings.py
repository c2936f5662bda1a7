"""Testing a backend's settings before saving them: the form's values, unsaved, against the server."""
import pytest
from django.contrib.auth.models import Permission, User

from models_registry.models import BackendKind, ModelBackend
from tests.fakes.openai_compat import FakeOpenAICompat

pytestmark = pytest.mark.django_db

ADD_URL = "/admin/models_registry/modelbackend/test-settings/"


def typed(base_url: str, **fields) -> dict:
    """The add form as an operator filled it in (and did not save)."""
    return {"name": "Typed in", "kind": "ollama", "base_url": base_url, "model": "gemma3:4b", "api_key": "",
            "timeout": "5", "is_local": "on", "enabled": "on", "_fragment": "1", **fields}


@pytest.fixture
def viewer(client):
    user = User.objects.create_user("viewer", password="viewer-test-password", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=["view_modelbackend"]))
    client.force_login(user)
    return client


def test_the_add_form_has_a_test_button_and_the_test_saves_nothing(admin_client, ollama_server):
    form = admin_client.get("/admin/models_registry/modelbackend/add/").content.decode()
    assert f'formaction="{ADD_URL}"' in form and "Test these settings" in form
    page = admin_client.post(ADD_URL, typed(ollama_server.url)).content.decode()
    assert "Connected" in page and "Reachable; model available." in page
    assert "llama3.2:3b" in page and "Q4_K_M" in page and "3B" in page, "models come with their details"
    assert "Nothing was saved." in page and ModelBackend.objects.count() == 0
    # The model list, then whether the model reads images (its capabilities).
    assert [r.path for r in ollama_server.requests] == ["/api/tags", "/api/show"]
    assert "no (its model says so)" in page


def test_a_missing_model_is_named_and_installed_ones_offered(admin_client, ollama_server):
    page = admin_client.post(ADD_URL, typed(ollama_server.url, model="qwen3:8b")).content.decode()
    assert "Not working" in page and "qwen3:8b" in page and 'data-use-model="gemma3:4b"' in page


def test_invalid_settings_are_explained_and_call_nothing(admin_client, ollama_server):
    page = admin_client.post(ADD_URL, typed("not a url", timeout="0")).content.decode()
    assert "cannot be tested yet" in page and "Enter a valid URL." in page
    assert ollama_server.requests == []


def test_a_get_calls_nothing(admin_client, backend, ollama_server):
    assert admin_client.get(ADD_URL).status_code == 405
    assert admin_client.get(f"/admin/models_registry/modelbackend/{backend.pk}/test-settings/").status_code == 405
    assert ollama_server.requests == []


def test_a_viewer_is_refused_and_sees_no_button(viewer, backend, ollama_server):
    assert viewer.post(ADD_URL, typed(ollama_server.url)).status_code == 403
    url = f"/admin/models_registry/modelbackend/{backend.pk}/test-settings/"
    assert viewer.post(url, typed(ollama_server.url)).status_code == 403
    assert "Test these settings" not in viewer.get(f"/admin/models_registry/modelbackend/{backend.pk}/change/").content.decode()
    assert ollama_server.requests == []


def test_a_blank_key_is_the_saved_one_and_no_key_is_ever_shown(admin_client):
    with FakeOpenAICompat(models=("hosted",), api_key="sk-saved-key-0123456789") as server:
        backend = ModelBackend.objects.create(name="Hosted", kind=BackendKind.OPENAI_COMPATIBLE, is_local=False,
                                              base_url=server.url + "/v1", model="hosted",
                                              api_key="sk-saved-key-0123456789")
        url = f"/admin/models_registry/modelbackend/{backend.pk}/test-settings/"
        settings = typed(server.url + "/v1", kind="openai_compatible", model="hosted")
        form = admin_client.get(f"/admin/models_registry/modelbackend/{backend.pk}/change/").content.decode()
        assert f'formaction="{url}"' in form
        page = admin_client.post(url, settings).content.decode()
        assert "Connected" in page and "the saved one (not shown)" in page
        assert server.last("models").headers["authorization"] == "Bearer sk-saved-key-0123456789"
        assert "sk-saved-key" not in page
        # A key typed in is tried instead, and not shown either, even when the server quotes it.
        server.quote_authorization(401)
        page = admin_client.post(url, {**settings, "api_key": "sk-typed-key-9876543210"}).content.decode()
        assert "Not working" in page and server.last("models").headers["authorization"] == "Bearer sk-typed-key-9876543210"
        assert "sk-typed-key" not in page and "sk-saved-key" not in page
    backend.refresh_from_db()
    assert backend.api_key == "sk-saved-key-0123456789"


def test_without_fragment_the_result_is_a_whole_page(admin_client, ollama_server):
    page = admin_client.post(ADD_URL, {**typed(ollama_server.url), "_fragment": ""}).content.decode()
    assert "<html" in page and "Connected" in page
    fragment = admin_client.post(ADD_URL, typed(ollama_server.url)).content.decode()
    assert "<html" not in fragment
