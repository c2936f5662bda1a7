"""Follow, unfollow, join and leave as lines of the thread: stored once as rows of their chat
(no sender, no text), never in a prompt nor counted as messages, gone with the chat."""
import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from conversations import erasure, ingest, notices, retention, selectors
from conversations.models import Chat, Message, PrivacyPolicy
from tests.fakes import webhooks as ev

pytestmark = pytest.mark.django_db

GROUP = ev.DEFAULT_GROUP_ID
ALICE, BOB = ev.DEFAULT_USER_ID, "U" + "b2" * 16


def thread(client, chat: Chat) -> str:
    return client.get(f"/admin/conversations/chat/{chat.pk}/thread/").content.decode()


def events() -> list[tuple[str, str, str, str]]:
    return list(Message.objects.filter(message_type__in=("follow", "unfollow", "join", "leave")).order_by("id")
                .values_list("message_type", "line_user_id", "text", "skip_reason"))


def redelivered(event: dict) -> dict:
    return {**event, "deliveryContext": {"isRedelivery": True}}


def member_joined(*user_ids: str) -> dict:
    return ev._event("memberJoined", source="group", user_id=None, group_id=None, room_id=None, mode="active",
                     redelivery=False, webhook_event_id=None, timestamp_ms=None, with_reply_token=True,
                     joined={"members": [{"type": "user", "userId": user_id} for user_id in user_ids]})


def test_a_group_thread_shows_the_join_once_with_its_notice_and_the_leave(webhook, admin_client, line_api):
    join = ev.join_event()
    assert webhook.post(join).json() == {"stored": 1, "duplicates": 0, "ignored": 0}
    # LINE redelivers it, and sends it twice in one body: the careful path takes the duplicate.
    assert webhook.post(redelivered(join)).json() == {"stored": 0, "duplicates": 1, "ignored": 0}
    assert webhook.post(ev.text_message_event("hi all", source="group", user_id=ALICE, mention_self=True),
                        redelivered(join)).json() == {"stored": 1, "duplicates": 1, "ignored": 0}
    webhook.post(member_joined(BOB))  # about a bystander: never kept
    webhook.post(ev.leave_event())
    assert events() == [("join", "", "", "event"), ("leave", "", "", "event")]
    assert line_api.count("reply") == 2  # one notice, one answer
    chat = Chat.objects.get()
    assert chat.is_active is False
    page = thread(admin_client, chat)
    assert page.count("The bot joined the group") == 1 and page.count("The bot left the group") == 1
    assert page.count('class="thread-event"') == 2
    assert page.index("The bot joined the group") < page.index("privacy notice, sent") < page.index("hi all") \
        < page.index("The bot left the group")
    join_row, notice = Message.objects.get(message_type="join"), Message.objects.get(message_type="notice")
    assert notice.reply_to == join_row and join_row.webhook_event_id == join["webhookEventId"]
    # The join's line carries its time; the notice is shown under it, as an answer.
    entry = page.split(f'<li class="exchange event" id="m{join_row.pk}">')[1].split('<li class="exchange"')[0]
    assert timezone.localtime(join_row.event_at).strftime("%Y-%m-%d %H:%M:%S") in entry
    assert "privacy notice, sent" in entry
    assert BOB not in page


def test_a_one_to_one_thread_shows_added_blocked_and_added_again(webhook, admin_client):
    webhook.post(ev.follow_event())
    webhook.post(ev.text_message_event("hello"))
    unfollow = ev.unfollow_event()
    webhook.post(unfollow)
    webhook.post(redelivered(unfollow))
    assert Chat.objects.get().is_active is False
    webhook.post(ev.follow_event(is_unblocked=True))  # within the chat cache's seconds
    assert Chat.objects.get().is_active is True
    assert [row[0] for row in events()] == ["follow", "unfollow", "follow"]
    assert {row[1:] for row in events()} == {("", "", "event")}
    page = thread(admin_client, Chat.objects.get())
    assert page.count("Added as a friend") == 2 and page.count("Blocked / unfollowed") == 1
    assert page.index("Added as a friend") < page.index("hello") < page.index("Blocked / unfollowed")


def test_a_goodbye_from_a_chat_never_seen_stores_nothing(webhook):
    assert webhook.post(ev.leave_event(), ev.unfollow_event()).json() == {"stored": 0, "duplicates": 0,
                                                                           "ignored": 2}
    assert not Chat.objects.exists() and not Message.objects.exists()


def test_the_notice_is_queued_once_per_event_even_if_asked_twice(webhook, line_api):
    webhook.post(ev.follow_event())
    follow = Message.objects.get(message_type="follow")
    assert notices.queue_notice(event=follow, reply_token="r" * 32) is False
    assert Message.objects.filter(message_type="notice").count() == 1 and line_api.count("reply") == 1


def test_events_never_reach_the_prompt(webhook, ollama_server, channel):
    webhook.post(ev.follow_event())
    webhook.post(ev.unfollow_event())
    webhook.post(ev.follow_event(is_unblocked=True))
    webhook.post(ev.text_message_event("first question"))
    contents = [(m["role"], m["content"]) for m in ollama_server.last("chat").json["messages"]]
    assert contents == [("system", "You are a test bot."), ("user", "first question")]
    # In a group that keeps every message, too.
    webhook.post(ev.join_event())
    Chat.objects.filter(source_type="group").update(group_memory="everything")
    ingest.forget_cached_chats()
    webhook.post(ev.text_message_event("chatting", source="group", user_id=BOB))
    webhook.post(ev.text_message_event("a question", source="group", user_id=ALICE, mention_self=True))
    sent = ollama_server.last("chat").json["messages"]
    users = [m["content"] for m in sent if m["role"] == "user"]
    assert len(users) == 2 and users[0].endswith("chatting") and users[1].endswith("a question")
    assert all(m["content"].strip() for m in sent)


def test_the_dashboard_does_not_count_events_as_messages(webhook, admin_client):
    from django.core.cache import cache

    webhook.post(ev.follow_event())  # the follow and its notice
    webhook.post(ev.join_event())  # the join and its notice
    webhook.post(ev.leave_event())
    cache.clear()
    today = selectors.dashboard_stats()["messages_per_day"][-1]
    assert (today["in"], today["out"]) == (0, 2)
    page = admin_client.get("/admin/").content.decode()
    assert page.split('class="figure-big">')[1].split("<")[0] == "2"


def test_retention_erasure_and_exports_take_events_like_any_row(webhook, admin_user, tmp_path):
    webhook.post(ev.follow_event(user_id=ALICE))
    webhook.post(ev.text_message_event("hi", user_id=ALICE))
    webhook.post(ev.join_event())
    webhook.post(ev.leave_event())
    # Exports: the chat's rows, events included; a user's export, their 1:1 chat's follow too.
    output = tmp_path / "all.jsonl"
    call_command("export_conversations", "--since", "2000-01-01", "--until", "2100-01-01", "--output", str(output))
    exported = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted(row["message_type"] for row in exported if row["direction"] == "in") == [
        "follow", "join", "leave", "text"]
    user_output = tmp_path / "alice.jsonl"
    call_command("export_user", ALICE, "--output", str(user_output))
    types = [json.loads(line).get("message_type") for line in user_output.read_text().splitlines()]
    assert "follow" in types and "join" not in types
    # Retention: the group's old rows (join, its notice, leave) go like messages.
    Message.objects.filter(chat__source_type="group").update(event_at=timezone.now() - timedelta(days=40))
    PrivacyPolicy.objects.update_or_create(pk=1, defaults={"retention_days": 30})
    selectors.forget_cached_policy()
    assert retention.purge_expired().messages == 3
    assert not Message.objects.filter(chat__source_type="group").exists()
    # Erasure: a 1:1 chat goes whole, its follow with it.
    erasure.erase_user(line_user_id=ALICE, actor=admin_user)
    assert not Message.objects.exists() and not Chat.objects.filter(source_type="user").exists()
