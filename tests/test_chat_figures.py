"""A chat's figures on its page and in the API: messages in and out, answered, skipped (by
why), failed, tokens; per member in a group, by the name the thread gives them."""
import re

import pytest
from django.db.models import Sum

from conversations import ingest, selectors
from conversations.models import Chat, ChatMember, Message, pseudonym
from core.models import AuditAction, AuditEvent
from tests.fakes import webhooks as ev
from tests.test_api import api, api_test_settings, superuser  # noqa: F401 (fixtures)

pytestmark = pytest.mark.django_db

ALICE, BOB = "U" + "a1" * 16, "U" + "b2" * 16
GROUP = ev.DEFAULT_GROUP_ID


def answer_tokens(user_id: str) -> tuple[int, int]:
    totals = Message.objects.filter(direction="out", reply_to__line_user_id=user_id).aggregate(
        prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens"))
    return totals["prompt"], totals["completion"]


@pytest.fixture
def group(webhook, line_api, ollama_server):
    """Alice (named) and Bob (no consent: a pseudonym) in a group that keeps every message:
    the bot joins (and sends its notice), LINE redelivers the join, Alice asks twice, chats
    once and sends a sticker; Bob asks once, once while the model is down, and chats."""
    line_api.profiles[ALICE] = "Alice Chen"
    line_api.missing_ids.add(BOB)
    join = ev.join_event()
    webhook.post(join)
    webhook.post({**join, "deliveryContext": {"isRedelivery": True}})
    Chat.objects.filter(line_id=GROUP).update(group_memory="everything")
    ingest.forget_cached_chats()
    text = ev.text_message_event
    webhook.post(text("where is the station?", source="group", user_id=ALICE, mention_self=True))
    webhook.post(text("and the museum, how far is it from there?", source="group", user_id=ALICE,
                      mention_self=True))
    webhook.post(text("thanks!", source="group", user_id=ALICE))
    webhook.post(ev.sticker_message_event(source="group", user_id=ALICE))
    webhook.post(text("is the bus faster?", source="group", user_id=BOB, mention_self=True))
    ollama_server.fail_next("chat", 500, {"error": "down"}, count=10)
    webhook.post(text("hello?", source="group", user_id=BOB, mention_self=True))
    webhook.post(text("nice", source="group", user_id=BOB))
    return Chat.objects.get(line_id=GROUP)


def test_the_figures_of_a_group_and_of_each_member(group):
    alice, bob = answer_tokens(ALICE), answer_tokens(BOB)
    assert min(alice) > 0 and min(bob) > 0
    assert selectors.chat_figures(chat=group, top_senders=50) == selectors.ChatFigures(
        messages_in=7,  # the join is not a message, nor counted skipped
        messages_out=5,  # the notice, three answers, the apology
        answered=3, skipped=3, failed=1, skipped_by_reason={"not mentioned": 2, "not text": 1},
        prompt_tokens=alice[0] + bob[0], completion_tokens=alice[1] + bob[1],
        senders=[
            selectors.SenderFigures("Alice Chen", messages=4, answered=2, skipped=2, prompt_tokens=alice[0],
                                    completion_tokens=alice[1]),
            selectors.SenderFigures(pseudonym(BOB), messages=3, answered=1, skipped=1, prompt_tokens=bob[0],
                                    completion_tokens=bob[1]),
        ],
    )


def test_the_member_table_is_capped_and_an_erased_sender_counts_for_the_chat_only(group, admin_user):
    from conversations import erasure

    figures = selectors.chat_figures(chat=group, top_senders=1)
    assert [s.name for s in figures.senders] == ["Alice Chen"] and figures.more_senders == 1
    erasure.erase_user(line_user_id=BOB, actor=admin_user)
    figures = selectors.chat_figures(chat=group, top_senders=50)
    assert figures.messages_in == 7 and [s.name for s in figures.senders] == ["Alice Chen"]
    assert figures.more_senders == 0


def test_a_one_to_one_chat_has_figures_but_no_member_table(webhook, ollama_server):
    webhook.post(ev.follow_event())
    webhook.post(ev.text_message_event("hello"))
    webhook.post(ev.unfollow_event())
    figures = selectors.chat_figures(chat=Chat.objects.get(), top_senders=50)
    assert (figures.messages_in, figures.messages_out, figures.answered, figures.skipped) == (1, 2, 1, 0)
    assert figures.senders == [] and figures.prompt_tokens > 0


def cells(row: str) -> list[str]:
    return [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<td>(.*?)</td>", row, re.S)]


def test_the_chat_page_shows_the_figures_and_each_member_by_name(admin_client, group):
    page = admin_client.get(f"/admin/conversations/chat/{group.pk}/change/").content.decode()
    block = page.split('id="chat-figures"')[1].split("</fieldset>")[0]
    alice, bob = answer_tokens(ALICE), answer_tokens(BOB)
    assert "<dt>Messages in / out</dt><dd>7 / 5</dd>" in block
    assert "<dt>Answered</dt><dd>3</dd>" in block and "<dt>Failed</dt><dd>1</dd>" in block
    assert "<dt>Skipped</dt><dd>3 (not mentioned: 2, not text: 1)</dd>" in block
    assert f"<dt>Prompt tokens</dt><dd>{alice[0] + bob[0]}</dd>" in block
    rows = re.findall(r"<tr><td>.*?</tr>", block, re.S)
    assert [cells(row) for row in rows] == [
        ["Alice Chen", "4", "2", "2", str(alice[0]), str(alice[1])],
        [pseudonym(BOB), "3", "1", "1", str(bob[0]), str(bob[1])],
    ]
    assert ALICE not in block and BOB not in block  # names, never LINE ids
    # Seeing who said how much is seeing the chat: the page's view is audited, as before.
    assert AuditEvent.objects.filter(action=AuditAction.VIEW_CONVERSATION, target_type="chat",
                                     target_id=str(group.pk)).count() == 1


def test_a_member_without_a_name_yet_gets_a_pseudonym(admin_client, group):
    ChatMember.objects.filter(line_user_id=ALICE).update(display_name="")
    page = admin_client.get(f"/admin/conversations/chat/{group.pk}/change/").content.decode()
    assert f"<tr><td>{pseudonym(ALICE)}</td>" in page and "Alice Chen" not in page


def test_the_api_gives_the_figures_on_a_chat_not_in_the_list(api, group):
    alice, bob = answer_tokens(ALICE), answer_tokens(BOB)
    detail = api.get(f"/api/v1/chats/{group.pk}/").json()
    assert detail["figures"] == {
        "messages_in": 7, "messages_out": 5, "answered": 3, "skipped": 3,
        "skipped_by_reason": {"not mentioned": 2, "not text": 1}, "failed": 1,
        "prompt_tokens": alice[0] + bob[0], "completion_tokens": alice[1] + bob[1],
    }
    assert "figures" not in api.get("/api/v1/chats/").json()["results"][0]
    patched = api.patch(f"/api/v1/chats/{group.pk}/", {"local_only": True}, format="json")
    assert patched.status_code == 200 and "figures" not in patched.json()
    schema = api.get("/api/v1/schema/", HTTP_ACCEPT="application/json").json()
    assert "figures" in schema["components"]["schemas"]["ChatDetail"]["properties"]


def test_the_figures_and_the_thread_in_traditional_chinese(admin_client, group):
    zh = {"HTTP_ACCEPT_LANGUAGE": "zh-hant"}
    page = admin_client.get(f"/admin/conversations/chat/{group.pk}/change/", **zh).content.decode()
    assert "<h2>統計</h2>" in page and "<dt>訊息 收到／送出</dt><dd>7 / 5</dd>" in page
    assert "<dt>已略過</dt><dd>3 (未標註機器人: 2, 不是文字: 1)</dd>" in page
    thread = admin_client.get(f"/admin/conversations/chat/{group.pk}/thread/", **zh).content.decode()
    assert thread.count("機器人已加入群組") == 1
