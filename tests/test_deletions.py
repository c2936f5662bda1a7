"""Deleting in the admin: messages never; chats and everything else audited, one event per
object; nothing under legal hold."""
import json

import pytest
from django.core.exceptions import ValidationError

from conversations import chats
from conversations.models import Chat, LineChannel, Message
from core import audit
from core.models import AuditAction, AuditEvent
from models_registry.models import ModelBackend, SamplingPreset

pytestmark = pytest.mark.django_db


def bulk_delete(client, changelist: str, objs) -> object:
    """The changelist's "Delete selected" action, confirmed."""
    return client.post(changelist, {"action": "delete_selected", "_selected_action": [obj.pk for obj in objs],
                                    "post": "yes"})


def deletions(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action, details__changes={"deleted": True}).order_by("id"))


@pytest.fixture
def chat_with_messages(make_chat, make_message):
    chat = make_chat("C" + "d1" * 16, display_name="")
    question = make_message(chat, "first")
    make_message(chat, "answer", direction="out", reply_to=question)
    make_message(chat, "second")
    return chat


# --- Messages --------------------------------------------------------------------------------


def test_messages_cannot_be_deleted_in_the_admin(admin_client, chat_with_messages):
    message = chat_with_messages.messages.first()
    assert admin_client.get(f"/admin/conversations/message/{message.pk}/delete/").status_code == 403
    assert admin_client.post(f"/admin/conversations/message/{message.pk}/delete/", {"post": "yes"}).status_code == 403
    changelist = admin_client.get("/admin/conversations/message/")
    assert "delete_selected" not in dict(changelist.context["action_form"].fields["action"].choices)
    bulk_delete(admin_client, "/admin/conversations/message/", Message.objects.all())
    assert Message.objects.count() == 3


# --- Chats -----------------------------------------------------------------------------------


def test_deleting_a_chat_is_audited_with_how_many_messages_went(admin_client, chat_with_messages):
    chat = chat_with_messages
    response = admin_client.post(f"/admin/conversations/chat/{chat.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Chat.objects.exists() and not Message.objects.exists()
    [event] = deletions(AuditAction.CHAT_CHANGE)
    assert (event.target_type, event.target_id, event.actor_username) == ("chat", str(chat.pk), "admin")
    assert event.details["messages"] == 3
    assert event.details["line_id_hmac"] == audit.keyed_hash(chat.line_id)
    assert chat.line_id not in json.dumps(event.details)


def test_the_confirmation_page_counts_a_chats_messages_instead_of_listing_each(admin_client, chat_with_messages):
    page = admin_client.get(f"/admin/conversations/chat/{chat_with_messages.pk}/delete/")
    assert page.status_code == 200
    content = page.content.decode()
    assert "3 messages" in content
    assert "/admin/conversations/message/" not in content.split('id="content"')[1]


def test_a_chat_under_legal_hold_cannot_be_deleted(admin_client, chat_with_messages):
    chat = chat_with_messages
    chat.legal_hold = True
    chat.save()
    page = admin_client.get(f"/admin/conversations/chat/{chat.pk}/delete/")
    assert "under legal hold" in page.content.decode()
    response = admin_client.post(f"/admin/conversations/chat/{chat.pk}/delete/", {"post": "yes"})
    assert response.status_code == 200 and "under legal hold" in response.content.decode()
    assert Chat.objects.filter(pk=chat.pk).exists() and Message.objects.count() == 3
    assert deletions(AuditAction.CHAT_CHANGE) == []


def test_deleting_selected_chats_audits_each(admin_client, chat_with_messages, make_chat, make_message):
    other = make_chat("U" + "d2" * 16, source_type="user", display_name="Alice")
    make_message(other, "hello")
    response = bulk_delete(admin_client, "/admin/conversations/chat/", [chat_with_messages, other])
    assert response.status_code == 302
    assert not Chat.objects.exists() and not Message.objects.exists()
    events = deletions(AuditAction.CHAT_CHANGE)
    assert sorted((e.target_id, e.details["messages"], e.details["name"]) for e in events) == sorted(
        [(str(chat_with_messages.pk), 3, ""), (str(other.pk), 1, "Alice")])


def test_deleting_selected_chats_deletes_none_if_one_is_under_legal_hold(admin_client, chat_with_messages,
                                                                        make_chat):
    held = make_chat("C" + "d3" * 16, display_name="Evidence", legal_hold=True)
    bulk_delete(admin_client, "/admin/conversations/chat/", [chat_with_messages, held])
    assert Chat.objects.count() == 2 and Message.objects.count() == 3
    assert deletions(AuditAction.CHAT_CHANGE) == []


def test_delete_chats_refuses_held_chats_and_deletes_in_batches(chat_with_messages, make_chat, make_message):
    held = make_chat("C" + "d4" * 16, display_name="Evidence", legal_hold=True)
    with pytest.raises(ValidationError, match="Evidence"):
        chats.delete_chats(chats=[chat_with_messages, held], actor="shell:test")
    assert Chat.objects.count() == 2 and Message.objects.count() == 3
    # Two at a time: the answer's question goes in the first batch, the answer in the second.
    assert chats.delete_chats(chats=[chat_with_messages], actor="shell:test", batch_size=2) == 1
    assert list(Chat.objects.all()) == [held] and not Message.objects.exists()
    [event] = deletions(AuditAction.CHAT_CHANGE)
    assert (event.actor_username, event.details["messages"]) == ("shell:test", 3)


def test_deleting_a_chat_with_messages_takes_permission_to_delete_messages(client, chat_with_messages):
    from django.contrib.auth.models import Permission, User

    clerk = User.objects.create(username="clerk", is_staff=True)
    clerk.user_permissions.set(Permission.objects.filter(codename__in=["view_chat", "delete_chat"]))
    client.force_login(clerk)
    page = client.get(f"/admin/conversations/chat/{chat_with_messages.pk}/delete/")
    assert page.status_code == 200 and page.context["perms_lacking"] == {"message"}
    assert client.post(f"/admin/conversations/chat/{chat_with_messages.pk}/delete/", {"post": "yes"}).status_code == 403
    assert Chat.objects.exists() and Message.objects.count() == 3


# --- LINE channels ---------------------------------------------------------------------------


def test_deleting_a_channel_audits_it_and_each_of_its_chats(admin_client, channel, chat_with_messages):
    response = admin_client.post(f"/admin/conversations/linechannel/{channel.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not LineChannel.objects.exists() and not Chat.objects.exists() and not Message.objects.exists()
    [channel_event] = deletions(AuditAction.CHANNEL_CHANGE)
    assert (channel_event.target_id, channel_event.details["name"]) == (str(channel.pk), "Test channel")
    [chat_event] = deletions(AuditAction.CHAT_CHANGE)
    assert (chat_event.target_id, chat_event.details["messages"]) == (str(chat_with_messages.pk), 3)


@pytest.mark.parametrize("how", ["one", "selected"])
def test_a_channel_with_a_chat_under_legal_hold_cannot_be_deleted(admin_client, channel, chat_with_messages, how):
    chat_with_messages.legal_hold = True
    chat_with_messages.save()
    if how == "one":
        response = admin_client.post(f"/admin/conversations/linechannel/{channel.pk}/delete/", {"post": "yes"})
        assert "under legal hold" in response.content.decode()
    else:
        bulk_delete(admin_client, "/admin/conversations/linechannel/", [channel])
    assert LineChannel.objects.exists() and Chat.objects.exists() and Message.objects.count() == 3
    assert AuditEvent.objects.filter(details__changes={"deleted": True}).count() == 0


# --- Settings: every "delete selected" is audited object by object ---------------------------


def test_deleting_selected_presets_and_backends_audits_each(admin_client, preset):
    spare = ModelBackend.objects.create(name="Spare", kind="ollama", base_url="http://ollama.lan:11434", model="m")
    other = SamplingPreset.objects.create(name="Other", backend=spare)
    bulk_delete(admin_client, "/admin/models_registry/samplingpreset/", [preset, other])
    assert not SamplingPreset.objects.exists()
    assert sorted(e.details["name"] for e in deletions(AuditAction.PRESET_CHANGE)) == ["Default", "Other"]
    bulk_delete(admin_client, "/admin/models_registry/modelbackend/", ModelBackend.objects.all())
    assert not ModelBackend.objects.exists()
    assert len(deletions(AuditAction.BACKEND_CHANGE)) == 2
