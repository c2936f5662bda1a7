"""The right to erasure: dry run by default, 1:1 chats deleted, groups blanked, legal hold kept."""
import json

import pytest
from django.core.management import CommandError, call_command

from core import audit
from conversations.erasure import ERASED_TEXT
from core.models import AuditEvent
from conversations.models import Chat, Message

pytestmark = pytest.mark.django_db

ALICE, BOB = "U" + "a1" * 16, "U" + "b2" * 16


@pytest.fixture
def alice_everywhere(make_chat, make_message):
    direct = make_chat(ALICE, source_type="user", display_name="Alice")
    group = make_chat("C" + "0a" * 16)
    held = make_chat("C" + "0b" * 16, legal_hold=True)
    for index in range(3):
        question = make_message(direct, f"alice private {index}", user=ALICE)
        make_message(direct, f"answer {index}", direction="out", reply_to=question)
    make_message(group, "alice in group", user=ALICE)
    make_message(group, "bob in group", user=BOB)
    make_message(held, "alice under hold", user=ALICE)
    return direct, group, held


def test_dry_run_by_default_changes_nothing(alice_everywhere, capsys):
    call_command("erase_user", ALICE)
    out = capsys.readouterr().out
    assert "Would erase: 1 1:1 chat(s) with 6 messages deleted; 1 messages in groups" in out
    assert "Kept under legal hold: 1" in out and "Dry run" in out
    assert Message.objects.count() == 9
    assert not AuditEvent.objects.filter(action="erase_user").exists()


def test_yes_erases_in_small_batches(alice_everywhere, capsys, monkeypatch):
    from conversations import erasure

    monkeypatch.setattr(erasure, "BATCH_SIZE", 2)
    direct, group, held = alice_everywhere
    call_command("erase_user", ALICE, "--yes")
    assert not Chat.objects.filter(pk=direct.pk).exists()
    assert not Message.objects.filter(text__startswith="alice private").exists()
    assert not Message.objects.filter(text__startswith="answer").exists()
    erased = Message.objects.get(chat=group, erased=True)
    assert (erased.text, erased.line_user_id) == (ERASED_TEXT, "")
    assert Message.objects.get(chat=group, line_user_id=BOB).text == "bob in group"
    assert Message.objects.get(chat=held).text == "alice under hold"
    event = AuditEvent.objects.get(action="erase_user")
    assert event.target_id == audit.keyed_hash(ALICE)
    assert ALICE not in json.dumps(event.details) and event.details["direct_messages"] == 6
    assert event.actor_username.startswith("shell")
    call_command("erase_user", ALICE, "--yes")
    assert "Erased: 0 1:1 chat(s) with 0 messages deleted; 0 messages" in capsys.readouterr().out


def test_bad_user_id_is_a_clear_error():
    with pytest.raises(CommandError, match="is not a LINE user id"):
        call_command("erase_user", "not-an-id", "--yes")
