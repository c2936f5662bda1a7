"""Redaction: the original leaves the database, the trail and a keyed hash stay."""
import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection

from conversations import redaction
from core import audit
from core.models import AuditEvent
from conversations.models import Message
from tests.fakes import webhooks as ev

pytestmark = pytest.mark.django_db


def raw_texts() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT text FROM conversations_message")
        return [row[0] for row in cursor.fetchall()]


def test_redaction_removes_the_original_from_the_table(make_chat, make_message, admin_user):
    message = make_message(make_chat("C" + "01" * 16), "my card is 4111 1111 1111 1111")
    assert redaction.redact_messages(message_ids=[message.pk], actor=admin_user, reason="card number") == 1
    assert all("4111" not in text for text in raw_texts())
    message.refresh_from_db()
    assert (message.text, message.redacted, message.redacted_by, message.redaction_reason) == (
        "[redacted]", True, "admin", "card number")
    # The keyed hash confirms a disputed original, and nothing else.
    assert message.original_hmac == audit.keyed_hash("my card is 4111 1111 1111 1111")
    assert message.original_hmac != audit.keyed_hash("something else")
    event = AuditEvent.objects.get(action="redact")
    assert (event.actor_username, event.target_id) == ("admin", str(message.pk))
    assert event.details["original_hmac"] == message.original_hmac
    assert redaction.redact_messages(message_ids=[message.pk], actor=admin_user, reason="again") == 0


def test_a_reason_is_required(make_chat, make_message, admin_user):
    message = make_message(make_chat("C" + "01" * 16), "text")
    with pytest.raises(ValueError, match="reason"):
        redaction.redact_messages(message_ids=[message.pk], actor=admin_user, reason=" ")


def test_admin_action_redacts_with_a_reason(admin_client, make_chat, make_message):
    chat = make_chat("C" + "01" * 16)
    first, second = make_message(chat, "one"), make_message(chat, "two")
    url = "/admin/conversations/message/"
    admin_client.post(url, {"action": "redact_selected", "_selected_action": [first.pk, second.pk], "reason": ""})
    assert Message.objects.filter(redacted=True).count() == 0
    admin_client.post(url, {"action": "redact_selected", "_selected_action": [first.pk, second.pk],
                            "reason": "user asked"})
    assert Message.objects.filter(redacted=True).count() == 2
    assert AuditEvent.objects.filter(action="redact").count() == 2


def test_per_message_redact_button_and_page(admin_client, make_chat, make_message):
    message = make_message(make_chat("C" + "01" * 16), "phone 0912-345-678")
    page = admin_client.get(f"/admin/conversations/message/{message.pk}/change/").content.decode()
    assert f"/admin/conversations/message/{message.pk}/redact/" in page
    response = admin_client.post(f"/admin/conversations/message/{message.pk}/redact/", {"reason": "phone number"})
    assert response.status_code == 302
    message.refresh_from_db()
    assert message.redacted and message.redaction_reason == "phone number"


def test_a_viewer_cannot_redact(client, make_chat, make_message):
    viewer = User.objects.create_user("viewer", password="pw-for-tests-only", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_message"))
    client.force_login(viewer)
    message = make_message(make_chat("C" + "01" * 16), "text")
    assert client.get(f"/admin/conversations/message/{message.pk}/change/").status_code == 200
    assert client.post(f"/admin/conversations/message/{message.pk}/redact/", {"reason": "x"}).status_code == 403
    assert not Message.objects.get(pk=message.pk).redacted


def test_redacted_turns_never_reach_the_model_again(webhook, ollama_server, admin_user):
    webhook.post(ev.text_message_event("my secret plan"))
    question = Message.objects.get(direction="in")
    redaction.redact_messages(message_ids=[question.pk, question.replies.get().pk], actor=admin_user, reason="PII")
    webhook.post(ev.text_message_event("next question"))
    sent = [m["content"] for m in ollama_server.last("chat").json["messages"]]
    assert sent == ["You are a test bot.", "next question"]
