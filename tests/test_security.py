"""Attacks that once worked, each tried again (docs/security.md has the threat model)."""
import pytest
from django.contrib.auth.models import Permission, User

from conversations import ingest, selectors
from core.models import AuditEvent
from tests.fakes import webhooks as ev

pytestmark = pytest.mark.django_db


def test_unsigned_requests_to_made_up_webhook_urls_grow_no_cache(client, channel):
    """Finding 4: each unsigned POST to /line/webhook/<random>/ used to add a cache entry."""
    for number in range(300):
        response = client.post(f"/line/webhook/made-up-{number}/", data=b"{}", content_type="application/json",
                               HTTP_X_LINE_SIGNATURE="bm90LWEtc2lnbmF0dXJl")
        assert response.status_code == 404
    assert len(selectors._channels) <= 1
    assert set(selectors._channels.get("by_slug")) == {channel.slug, None}


def test_signed_events_remember_at_most_a_bounded_number_of_chats(webhook):
    webhook.post(ev.text_message_event("hello"))  # creates the chat
    webhook.post(ev.text_message_event("again"))  # finds it, and remembers it
    assert len(ingest._chats) == 1 and ingest._chats.max_entries == 10_000


def test_a_staff_user_refused_a_chat_page_leaves_no_viewed_event(client, make_chat):
    """Finding 18: the conversation was audited as viewed before the permission check."""
    chat = make_chat("C" + "01" * 16)
    staff = User.objects.create_user("nosy", password="nosy-test-password", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_linechannel"))
    client.force_login(staff)
    assert client.get(f"/admin/conversations/chat/{chat.pk}/change/").status_code == 403
    assert not AuditEvent.objects.filter(action="view_conversation").exists()
    staff.user_permissions.add(Permission.objects.get(codename="view_chat"))
    staff = User.objects.get(pk=staff.pk)
    client.force_login(staff)
    assert client.get(f"/admin/conversations/chat/{chat.pk}/change/").status_code == 200
    assert AuditEvent.objects.filter(action="view_conversation", target_id=str(chat.pk)).count() == 1


def test_a_backend_without_a_key_sends_none_from_the_environment():
    """The client libraries add OLLAMA_API_KEY / REPLICATE_API_TOKEN from the environment;
    settings take them out, so a keyless backend never sends the server's token anywhere."""
    import os
    import subprocess
    import sys

    script = ("import django, os; django.setup(); "
              "print(repr(os.environ.get('OLLAMA_API_KEY')), repr(os.environ.get('REPLICATE_API_TOKEN')))")
    env = {**os.environ, "OLLAMA_API_KEY": "env-ollama-key", "REPLICATE_API_TOKEN": "env-replicate-token"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60,
                            cwd=str(settings_dir()))
    assert result.stdout.strip() == "None None", result.stderr


def settings_dir():
    from pathlib import Path

    return Path(__file__).resolve().parent.parent
