"""The admin never shows a saved secret, to anyone, on any page; a blank entry keeps it."""
import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

from conversations import bootstrap
from conversations.models import LineChannel
from models_registry.models import ModelBackend

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(admin_client):
    return admin_client


def test_channel_change_page_does_not_show_the_secret_or_token(staff, channel):
    page = staff.get(f"/admin/conversations/linechannel/{channel.pk}/change/").content.decode()
    assert channel.channel_secret not in page and channel.access_token not in page
    assert "Saved (hidden)" in page


def test_saving_a_channel_with_blank_secrets_keeps_them(staff, channel):
    response = staff.post(
        f"/admin/conversations/linechannel/{channel.pk}/change/",
        {"name": "Renamed", "slug": channel.slug, "channel_secret": "", "access_token": "", "is_default": "on",
         "user_limit_messages": 20, "user_limit_minutes": 10},
    )
    assert response.status_code == 302
    channel.refresh_from_db()
    assert channel.name == "Renamed"
    assert channel.channel_secret == "0123456789abcdef0123456789abcdef"


def test_a_new_channel_needs_both_secrets(staff):
    response = staff.post("/admin/conversations/linechannel/add/", {"name": "New", "slug": "new"})
    assert response.status_code == 200
    assert response.content.decode().count("Required for a new channel.") == 2
    assert not LineChannel.objects.filter(slug="new").exists()


def test_backend_api_key_is_write_only(staff):
    backend = ModelBackend.objects.create(
        name="Replicate", kind="replicate", base_url="https://api.replicate.com", model="google/gemma-3-4b-it",
        api_key="r8_supersecretvalue", is_local=False,
    )
    page = staff.get(f"/admin/models_registry/modelbackend/{backend.pk}/change/").content.decode()
    assert "r8_supersecretvalue" not in page
    staff.post(
        f"/admin/models_registry/modelbackend/{backend.pk}/change/",
        {"name": "Replicate", "kind": "replicate", "base_url": "https://api.replicate.com",
         "model": "google/gemma-3-4b-it", "api_key": "r8_rotated", "timeout": "60", "enabled": "on"},
    )
    backend.refresh_from_db()
    assert backend.api_key == "r8_rotated" and backend.is_local is False


# --- No saved secret is drawn on any admin page, whoever looks ------------------------------

CHANNEL_SECRET = "chsecretQ7v1distinct"
ACCESS_TOKEN = "chtokenZ9k2distinct"
API_KEY = "r8apikeyM3x8distinct"
SECRETS = (CHANNEL_SECRET, ACCESS_TOKEN, API_KEY)


@pytest.fixture
def secret_holders(db) -> tuple[LineChannel, ModelBackend]:
    """A channel and a backend with distinctive secrets, each with a change in its history."""
    channel = LineChannel.objects.create(name="Leaky channel", slug="leaky", channel_secret="old-secret",
                                         access_token="old-token")
    backend = ModelBackend.objects.create(name="Cloud", kind="replicate", base_url="https://api.replicate.com",
                                          model="google/gemma-3-4b-it", api_key="old-key", is_local=False)
    boss = Client()
    boss.force_login(User.objects.create(username="boss", is_staff=True, is_superuser=True))
    assert boss.post(f"/admin/conversations/linechannel/{channel.pk}/change/", {
        "name": channel.name, "slug": channel.slug, "channel_secret": CHANNEL_SECRET, "access_token": ACCESS_TOKEN,
        "mask_before_cloud": "on", "user_limit_messages": 20, "user_limit_minutes": 10}).status_code == 302
    assert boss.post(f"/admin/models_registry/modelbackend/{backend.pk}/change/", {
        "name": backend.name, "kind": backend.kind, "base_url": backend.base_url, "model": backend.model,
        "api_key": API_KEY, "timeout": "60", "enabled": "on"}).status_code == 302
    channel.refresh_from_db()
    backend.refresh_from_db()
    assert (channel.channel_secret, channel.access_token, backend.api_key) == SECRETS
    return channel, backend


@pytest.fixture(params=["Viewers", "Operators", "superuser"])
def console_user(request, db, client) -> tuple[str, Client]:
    """A staff member of the bootstrap's "Viewers" or "Operators" group, or a superuser, signed in."""
    bootstrap._groups()
    if request.param == "superuser":
        user = User.objects.create(username="root", is_staff=True, is_superuser=True)
    else:
        user = User.objects.create(username=request.param.lower(), is_staff=True)
        user.groups.add(Group.objects.get(name=request.param))
    client.force_login(user)
    return request.param, client


@pytest.mark.parametrize("page", ["change", "history", "delete", "changelist"])
@pytest.mark.parametrize("url", ["/admin/conversations/linechannel/", "/admin/models_registry/modelbackend/"])
def test_no_admin_page_shows_a_saved_secret(secret_holders, console_user, url, page):
    role, client = console_user
    channel, backend = secret_holders
    obj = channel if "linechannel" in url else backend
    response = client.get(url if page == "changelist" else f"{url}{obj.pk}/{page}/")
    # A viewer may not open the delete page; every other page opens for everyone here.
    assert response.status_code == (403 if (role, page) == ("Viewers", "delete") else 200)
    content = response.content.decode()
    assert not [secret for secret in SECRETS if secret in content]


def test_a_viewer_sees_whether_secrets_are_set_but_not_what_they_are(secret_holders, client):
    channel, backend = secret_holders
    backend.api_key = ""
    backend.save()
    bootstrap._groups()
    viewer = User.objects.create(username="viewer", is_staff=True)
    viewer.groups.add(Group.objects.get(name="Viewers"))
    client.force_login(viewer)
    channel_page = client.get(f"/admin/conversations/linechannel/{channel.pk}/change/")
    backend_page = client.get(f"/admin/models_registry/modelbackend/{backend.pk}/change/")
    assert readonly_values(channel_page, "channel_secret_state", "access_token_state") == ["set", "set"]
    assert readonly_values(backend_page, "api_key_state") == ["not set"]
    for page in (channel_page, backend_page):
        fields = page.context["adminform"].readonly_fields
        assert not {"channel_secret", "access_token", "api_key"} & set(fields)


def readonly_values(response, *names: str) -> list[str]:
    """What the change page draws for these read-only fields."""
    lines = [line for fieldset in response.context["adminform"] for line in fieldset]
    fields = {field.field["name"]: field for line in lines for field in line if field.is_readonly}
    return [str(fields[name].contents()) for name in names]


def test_every_encrypted_field_is_hidden_by_its_admin():
    """A model that gains an encrypted field needs an admin that hides it too."""
    from django.contrib import admin as django_admin

    from core.admin import SecretFieldsAdminMixin
    from core.fields import EncryptedTextField

    holders = [model for model in django_admin.site._registry
               if any(isinstance(field, EncryptedTextField) for field in model._meta.fields)]
    assert set(holders) == {LineChannel, ModelBackend}
    assert all(isinstance(django_admin.site._registry[model], SecretFieldsAdminMixin) for model in holders)


def test_a_secret_listed_read_only_or_in_the_list_is_drawn_as_set_or_not_set(rf, secret_holders):
    from django.contrib import admin as django_admin

    from models_registry.admin import ModelBackendAdmin

    class CarelessAdmin(ModelBackendAdmin):
        readonly_fields = ["api_key"]
        list_display = ["name", "api_key"]

    _, backend = secret_holders
    model_admin = CarelessAdmin(ModelBackend, django_admin.site)
    request = rf.get("/")
    request.user = User.objects.get(username="boss")
    change_page = model_admin.change_view(request, str(backend.pk)).render().content.decode()
    changelist = model_admin.changelist_view(request).render().content.decode()
    assert API_KEY not in change_page and API_KEY not in changelist
    assert '<div class="readonly">set</div>' in change_page
    assert '<td class="field-api_key_state">set</td>' in changelist
