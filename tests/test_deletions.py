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
