"""The admin never shows a saved secret, and a blank entry keeps it."""
import pytest

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
        {"name": "Renamed", "slug": channel.slug, "channel_secret": "", "access_token": "", "is_default": "on"},
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
