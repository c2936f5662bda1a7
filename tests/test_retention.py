"""Retention: per-chat and global policy, legal hold, batched purge, dry run, interruption."""
import pytest
from django.core.management import CommandError, call_command

from conversations import retention
from core.models import AuditEvent
from conversations.models import ChatMember, Message, PrivacyPolicy

pytestmark = pytest.mark.django_db

ALICE = "U" + "a1" * 16


@pytest.fixture
def chats(make_chat, make_message):
    """Three chats with messages 1, 10, 40 and 100 days old."""
    default = make_chat("C" + "01" * 16, display_name="uses the global policy")
    short = make_chat("C" + "02" * 16, display_name="keeps 5 days", retention_days=5)
    held = make_chat("C" + "03" * 16, display_name="on legal hold", legal_hold=True, retention_days=1)
    for chat in (default, short, held):
        for age in (1, 10, 40, 100):
            make_message(chat, f"{chat.display_name} {age} days", days_ago=age, user=ALICE)
    return default, short, held


def set_global(days):
    PrivacyPolicy.objects.update_or_create(pk=1, defaults={"retention_days": days})


def remaining(chat) -> list[str]:
    return sorted(Message.objects.filter(chat=chat).values_list("text", flat=True))


def test_effective_policy(chats):
    default, short, held = chats
    assert retention.effective_retention_days(chat=default, default_days=30) == 30
    assert retention.effective_retention_days(chat=default, default_days=None) is None
    assert retention.effective_retention_days(chat=short, default_days=30) == 5
    assert retention.effective_retention_days(chat=held, default_days=30) is None


def test_purge_applies_chat_override_global_default_and_legal_hold(chats):
    default, short, held = chats
    set_global(30)
    report = retention.purge_expired(batch_size=1)
    assert remaining(default) == ["uses the global policy 1 days", "uses the global policy 10 days"]
    assert remaining(short) == ["keeps 5 days 1 days"]
    assert len(remaining(held)) == 4
    assert report.messages == 5
    event = AuditEvent.objects.get(action="purge")
    assert event.details["messages"] == 5 and event.details["dry_run"] is False


def test_without_a_global_policy_only_chat_overrides_apply(chats):
    default, short, held = chats
    set_global(None)
    retention.purge_expired()
    assert len(remaining(default)) == 4 and len(remaining(short)) == 1


def test_dry_run_deletes_nothing_and_prints_per_chat(chats, capsys):
    set_global(30)
    call_command("purge_expired", "--dry-run")
    out = capsys.readouterr().out
    assert "Would delete 2 messages of uses the global policy" in out
    assert "Would delete 3 messages of keeps 5 days" in out
    assert "on legal hold" not in out
    assert "Would delete 5 messages in 2 chats." in out
    assert Message.objects.count() == 12
    assert AuditEvent.objects.get(action="purge").details["dry_run"] is True


def test_purge_command_deletes_in_tiny_batches(chats, capsys):
    set_global(30)
    call_command("purge_expired", "--batch-size", "2")
    assert "Deleted 5 messages in 2 chats." in capsys.readouterr().out
    assert Message.objects.count() == 7


def test_bad_batch_size_is_a_clear_error(chats):
    with pytest.raises(CommandError, match="--batch-size must be at least 1"):
        call_command("purge_expired", "--batch-size", "0")


def test_an_interrupted_purge_leaves_no_half_deleted_batch(chats):
    default, short, held = chats
    set_global(30)
    batches = []

    def fail_on_second_batch(count):
        batches.append(count)
        if len(batches) == 2:
            raise RuntimeError("power cut")

    with pytest.raises(RuntimeError, match="power cut"):
        retention.purge_expired(batch_size=2, on_batch=fail_on_second_batch)
    # The first batch of two (the global chat's 40- and 100-day messages) committed; the
    # second, interrupted, rolled back whole.
    assert remaining(default) == ["uses the global policy 1 days", "uses the global policy 10 days"]
    assert len(remaining(short)) == 4
    retention.purge_expired(batch_size=2)
    assert remaining(short) == ["keeps 5 days 1 days"]


def test_answers_to_purged_messages_survive_until_they_expire(make_chat, make_message):
    chat = make_chat("U" + "0b" * 16, source_type="user", retention_days=7)
    question = make_message(chat, "old question", days_ago=8)
    answer = make_message(chat, "newer answer", days_ago=6, direction="out", reply_to=question)
    retention.purge_expired()
    answer.refresh_from_db()
    assert answer.reply_to is None and not Message.objects.filter(pk=question.pk).exists()


def test_a_members_name_goes_with_the_last_of_their_messages(make_chat, make_message):
    chat = make_chat("C" + "0c" * 16, retention_days=7)
    quiet, talking = "U" + "0d" * 16, "U" + "0e" * 16
    make_message(chat, "long ago", days_ago=30, user=quiet)
    make_message(chat, "long ago too", days_ago=30, user=talking)
    make_message(chat, "lately", days_ago=1, user=talking)
    for user in (quiet, talking):
        ChatMember.objects.create(chat=chat, line_user_id=user, display_name=user[-4:])
    retention.purge_expired(dry_run=True)
    assert ChatMember.objects.count() == 2
    retention.purge_expired()
    assert list(ChatMember.objects.values_list("line_user_id", flat=True)) == [talking]


def test_admin_shows_effective_policy_and_oldest_kept(admin_client, chats):
    set_global(30)
    page = admin_client.get("/admin/conversations/chat/").content.decode()
    assert "30 days (global)" in page and "5 days (chat)" in page and "legal hold: kept" in page
