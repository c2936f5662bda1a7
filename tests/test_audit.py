"""The audit trail: what writes it, and that nobody can change it in the admin."""
import json

import pytest
from django.contrib.auth.models import User

from core import audit
from core.models import AuditEvent
from models_registry.models import ModelBackend

pytestmark = pytest.mark.django_db


def test_opening_a_conversation_writes_an_event(admin_client, make_chat, make_message):
    chat = make_chat("C" + "01" * 16)
    message = make_message(chat, "hi")
    admin_client.get(f"/admin/conversations/chat/{chat.pk}/change/")
    admin_client.get(f"/admin/conversations/message/{message.pk}/change/")
    events = AuditEvent.objects.filter(action="view_conversation").order_by("id")
    assert [(e.target_type, e.target_id, e.actor_username) for e in events] == [
        ("chat", str(chat.pk), "admin"), ("message", str(message.pk), "admin")]


def test_logging_in_writes_an_event(client):
    User.objects.create_superuser("boss", password="a-long-test-password")
    response = client.post("/admin/login/?next=/admin/", {"username": "boss", "password": "a-long-test-password"})
    assert response.status_code == 302
    assert AuditEvent.objects.get(action="admin_login").actor_username == "boss"


def test_backend_change_is_audited_with_old_and_new_values_but_no_secret(admin_client):
    backend = ModelBackend.objects.create(name="B", kind="ollama", base_url="http://ollama.lan:11434", model="m1", api_key="k1")
    admin_client.post(f"/admin/models_registry/modelbackend/{backend.pk}/change/", {
        "name": "B", "kind": "ollama", "base_url": "http://ollama.lan:11434", "model": "m2", "api_key": "new-secret-key",
        "timeout": "60", "is_local": "on", "enabled": "on"})
    event = AuditEvent.objects.get(action="backend_change")
    assert event.details["changes"]["model"] == ["m1", "m2"]
    assert event.details["changes"]["api_key"] == "(changed)"
    assert "new-secret-key" not in str(event.details) and "k1" not in str(event.details)


def test_retention_changes_on_a_chat_are_audited_as_such(admin_client, make_chat):
    chat = make_chat("C" + "01" * 16)
    admin_client.post(f"/admin/conversations/chat/{chat.pk}/change/", {
        "display_name": "", "reply_mode": "mention", "reply_prefix": "/ai", "is_active": "on",
        "group_memory": "addressed", "retention_days": "30", "legal_hold": "on"})
    event = AuditEvent.objects.get(action="retention_change")
    assert event.details["changes"]["retention_days"] == [None, 30]
    assert event.details["changes"]["legal_hold"] == [False, True]


def test_nobody_can_edit_or_delete_the_trail_in_the_admin(admin_client):
    event = audit.record(action="export", actor="shell:root", details={"rows": 3})
    change_url = f"/admin/core/auditevent/{event.pk}/change/"
    page = admin_client.get(change_url)
    assert page.status_code == 200 and 'type="submit"' not in page.content.decode().split('id="content-main"')[1]
    admin_client.post(change_url, {"action": "purge", "details": "{}"})
    assert admin_client.post(f"/admin/core/auditevent/{event.pk}/delete/", {"post": "yes"}).status_code == 403
    assert admin_client.get("/admin/core/auditevent/add/").status_code == 403
    event.refresh_from_db()
    assert (event.action, event.details) == ("export", {"rows": 3})


def test_events_survive_deleting_the_user(make_chat):
    user = User.objects.create_user("temp", password="x-test-password")
    user_id = user.pk
    audit.record(action="view_conversation", actor=user, target_type="chat", target_id=1)
    user.delete()
    event = AuditEvent.objects.get()
    assert (event.actor_username, event.actor_id) == ("temp", user_id)


def test_chat_changes_hold_the_chats_line_id_only_as_a_keyed_hash(admin_client, make_chat):
    chat = make_chat("U" + "c3" * 16, source_type="user")
    response = admin_client.post(f"/admin/conversations/chat/{chat.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    event = AuditEvent.objects.get(action="chat_change")
    assert event.details["changes"] == {"deleted": True}
    assert chat.line_id not in json.dumps(event.details)
    assert event.details["line_id_hmac"] == audit.keyed_hash(chat.line_id)
