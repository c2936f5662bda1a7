"""The right to erasure: dry run by default, 1:1 chats deleted, groups blanked, legal hold kept."""
import json

import pytest
from django.core.management import CommandError, call_command

from conversations import erasure
from core import audit
from conversations.erasure import ERASED_TEXT
from core.models import AuditEvent
from conversations.models import Chat, ChatMember, Message

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


def test_the_bots_answers_to_her_group_messages_go_in_the_same_batches(alice_everywhere, make_message):
    direct, group, held = alice_everywhere
    for chat in (group, held):
        for index in range(2):
            question = make_message(chat, f"alice asks {index}", user=ALICE)
            make_message(chat, f"answer to alice {index}", direction="out", reply_to=question)
    bobs = make_message(group, "bob asks", user=BOB)
    make_message(group, "answer to bob", direction="out", reply_to=bobs)
    plan = erasure.plan_erasure(line_user_id=ALICE)
    assert (plan.group_messages, plan.held_messages) == (5, 5)
    # One message per batch: an answer is found through its question's user id, which the
    # batch blanking the question removes.
    erasure.erase_user(line_user_id=ALICE, actor="shell:test", batch_size=1)
    left = dict(Message.objects.filter(chat=group).values_list("text", "erased"))
    assert left == {ERASED_TEXT: True, "bob asks": False, "answer to bob": False, "bob in group": False}
    assert Message.objects.filter(chat=group, erased=True).count() == 5
    assert Message.objects.filter(chat=held, text__startswith="answer to alice", erased=False).count() == 2
    assert erasure.plan_erasure(line_user_id=ALICE).group_messages == 0


def test_after_erasure_the_audit_trail_and_manifests_hold_only_hashes(alice_everywhere, admin_client, tmp_path):
    direct, group, held = alice_everywhere
    assert admin_client.get("/api/v1/messages/", {"user": ALICE}).status_code == 200
    call_command("export_conversations", "--since", "2000-01-01", "--until", "2100-01-01", "--user", ALICE,
                 "--chat", group.line_id, "--output", str(tmp_path / "alice-in-group.csv"), "--format", "csv")
    call_command("export_user", ALICE, "--output", str(tmp_path / "alice.jsonl"))
    call_command("erase_user", ALICE, "--yes")
    trail = json.dumps(list(AuditEvent.objects.values("target_id", "details")))
    manifests = [path.read_text(encoding="utf-8") for path in tmp_path.glob("*.manifest.json")]
    assert len(manifests) == 2
    for text in (trail, *manifests):
        assert ALICE not in text and group.line_id not in text
    # What a compliance officer matches on later: the keyed hash, as target or in the filters.
    user_hmac = audit.keyed_hash(ALICE)
    assert set(AuditEvent.objects.filter(target_id=user_hmac).values_list("action", flat=True)) == {
        "view_conversation", "export_user", "erase_user"}
    assert AuditEvent.objects.get(action="view_conversation").details["filters"] == {"user_hmac": user_hmac}
    assert AuditEvent.objects.get(action="export").details["filters"]["user_hmac"] == user_hmac


def test_her_names_in_groups_go_too_but_not_under_legal_hold(alice_everywhere):
    direct, group, held = alice_everywhere
    for chat in (group, held):
        ChatMember.objects.create(chat=chat, line_user_id=ALICE, display_name="Alice")
    ChatMember.objects.create(chat=group, line_user_id=BOB, display_name="Bob")
    assert erasure.plan_erasure(line_user_id=ALICE).chat_members == 1
    plan = erasure.erase_user(line_user_id=ALICE, actor="shell:test")
    assert set(ChatMember.objects.values_list("chat", "line_user_id")) == {(group.pk, BOB), (held.pk, ALICE)}
    assert plan.chat_members == 1
    assert AuditEvent.objects.get(action="erase_user").details["chat_members"] == 1


def test_bad_user_id_is_a_clear_error():
    with pytest.raises(CommandError, match="is not a LINE user id"):
        call_command("erase_user", "not-an-id", "--yes")
