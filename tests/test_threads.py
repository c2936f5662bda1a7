"""The conversation thread: answers under their questions, retry and redaction without leaving it."""
import re

import pytest
from django.contrib.auth.models import Permission, User

from conversations import redaction
from conversations.models import LineChannel, Message
from tests.fakes import webhooks as ev

pytestmark = pytest.mark.django_db

GROUP = "C" + "0a" * 16
ALICE, BOB = "U" + "a1" * 16, "U" + "b2" * 16


def thread_url(chat) -> str:
    return f"/admin/conversations/chat/{chat.pk}/thread/"


def exchange(page: str, message: Message) -> str:
    """The HTML of one question's entry in the thread: its bubble and its answers."""
    match = re.search(rf'<li class="exchange" id="m{message.pk}">(.*?)\n  </li>', page, re.S)
    assert match, f"message {message.pk} has no entry of its own"
    return match.group(1)


def test_each_answer_is_shown_under_its_question(admin_client, make_chat, make_message):
    chat = make_chat(GROUP)
    # In a group, Bob asks while the bot is still answering Alice: stored order is Q1 Q2 A1 A2.
    q1 = make_message(chat, "Alice asks about Saturday", user=ALICE)
    q2 = make_message(chat, "Bob asks about Sunday", user=BOB)
    make_message(chat, "answer for Alice", direction="out", reply_to=q1)
    make_message(chat, "answer for Bob", direction="out", reply_to=q2)
    page = admin_client.get(thread_url(chat)).content.decode()
    assert "answer for Alice" in exchange(page, q1) and "answer for Bob" not in exchange(page, q1)
    assert "answer for Bob" in exchange(page, q2)
    order = [page.index(text) for text in ("Alice asks", "answer for Alice", "Bob asks", "answer for Bob")]
    assert order == sorted(order)
    assert page.count('class="bubble ') == 4, "an answer is shown once, under its question only"


def test_an_answer_stays_with_its_question_across_pages(admin_client, make_chat, make_message):
    chat = make_chat(GROUP)
    question = make_message(chat, "the oldest question", user=ALICE)
    for i in range(50):
        make_message(chat, f"chatter {i}", user=BOB)
    make_message(chat, "late answer to the oldest question", direction="out", reply_to=question)
    first = admin_client.get(thread_url(chat)).content.decode()
    assert "late answer" not in first and "Older messages" in first
    older = admin_client.get(thread_url(chat), {"before": re.search(r"before=(\d+)", first).group(1)})
    assert "late answer to the oldest question" in exchange(older.content.decode(), question)


def test_retry_from_the_thread_returns_to_the_thread(webhook, admin_client, ollama_server, line_api):
    ollama_server.fail_next("chat", 500, {"error": "busy"}, count=2)
    webhook.post(ev.text_message_event("try again later"))
    failed = Message.objects.get(direction="in")
    assert failed.status == "failed"
    url = thread_url(failed.chat)
    page = admin_client.get(url).content.decode()
    assert f'name="next" value="{url}#m{failed.pk}"' in page
    with webhook.capture(execute=True):
        response = admin_client.post("/admin/conversations/message/", {
            "action": "retry_selected", "_selected_action": [failed.pk], "next": f"{url}#m{failed.pk}"})
    assert response.status_code == 302 and response.url == f"{url}#m{failed.pk}"
    failed.refresh_from_db()
    assert failed.status == "replied"


def test_retry_never_follows_a_next_off_the_site(admin_client, make_chat, make_message):
    failed = make_message(make_chat(GROUP), "q", status="failed")
    response = admin_client.post("/admin/conversations/message/", {
        "action": "retry_selected", "_selected_action": [failed.pk], "next": "https://evil.example/admin/"})
    assert response.status_code == 302 and response.url == "/admin/conversations/message/"


def test_every_message_of_the_thread_has_a_redact_button_that_comes_back(admin_client, make_chat, make_message):
    chat = make_chat(GROUP)
    question = make_message(chat, "my number is 0912-345-678", user=ALICE)
    answer = make_message(chat, "I will call 0912 345 678", direction="out", reply_to=question)
    url = thread_url(chat)
    page = admin_client.get(url).content.decode()
    for message in (question, answer):
        assert f"/admin/conversations/message/{message.pk}/redact/?next={url}%23m{message.pk}" in page
    form = admin_client.get(f"/admin/conversations/message/{question.pk}/redact/", {"next": url}).content.decode()
    assert f'name="next" value="{url}"' in form
    response = admin_client.post(f"/admin/conversations/message/{question.pk}/redact/",
                                 {"reason": "phone number", "also_answer": "on", "next": url})
    assert response.status_code == 302 and response.url == url
    after = admin_client.get(url).content.decode()
    assert "0912" not in after and after.count("/redact/") == 0


def test_a_viewer_sees_no_redact_or_retry_buttons(client, make_chat, make_message):
    viewer = User.objects.create_user("viewer", password="viewer-test-password", is_staff=True)
    viewer.user_permissions.add(*Permission.objects.filter(codename__in=["view_message", "view_chat"]))
    client.force_login(viewer)
    chat = make_chat(GROUP)
    make_message(chat, "hello", status="failed", user=ALICE)
    page = client.get(thread_url(chat)).content.decode()
    assert "hello" in page and "/redact/" not in page and "retry_selected" not in page


@pytest.mark.parametrize("question, answer, expected", [
    ("call me at 0912-345-678", "Sure, I will call 0912345678 tonight.", True),  # the same PII, written otherwise
    ("我住在台北市信義區松仁路100號", "好的，台北市信義區松仁路附近有很多餐廳。", True),  # a shared run of 6+
    ("hi", "echo: hi", False),
    ("週末天氣如何？", "明天下午會下雨。", False),
])
def test_whether_an_answer_repeats_its_question(question, answer, expected):
    assert redaction.answer_repeats(question=question, answer=answer) is expected


def test_redacting_a_question_offers_its_answer_ticked_when_it_repeats(admin_client, make_chat, make_message):
    chat = make_chat(GROUP)
    question = make_message(chat, "call me at 0912-345-678", user=ALICE)
    answer = make_message(chat, "Sure, I will call 0912345678.", direction="out", reply_to=question)
    page = admin_client.get(f"/admin/conversations/message/{question.pk}/redact/").content.decode()
    assert re.search(r'<input type="checkbox" name="also_answer"[^>]* checked', page)
    assert "Sure, I will call 0912345678." in page
    admin_client.post(f"/admin/conversations/message/{question.pk}/redact/", {"reason": "PII", "also_answer": "on"})
    answer.refresh_from_db()
    assert answer.redacted and Message.objects.get(pk=question.pk).redacted
    assert all("0912" not in m.text for m in Message.objects.all())


def test_an_answer_that_repeats_nothing_is_offered_unticked_and_kept(admin_client, make_chat, make_message):
    chat = make_chat(GROUP)
    question = make_message(chat, "週末天氣如何？", user=ALICE)
    answer = make_message(chat, "明天下午會下雨。", direction="out", reply_to=question)
    page = admin_client.get(f"/admin/conversations/message/{question.pk}/redact/").content.decode()
    checkbox = re.search(r'<input type="checkbox" name="also_answer"[^>]*>', page).group(0)
    assert "checked" not in checkbox
    admin_client.post(f"/admin/conversations/message/{question.pk}/redact/", {"reason": "asked to"})
    assert Message.objects.get(pk=question.pk).redacted and not Message.objects.get(pk=answer.pk).redacted


def test_an_answer_is_not_offered_when_there_is_none(admin_client, make_chat, make_message):
    question = make_message(make_chat(GROUP), "no answer yet", user=ALICE)
    page = admin_client.get(f"/admin/conversations/message/{question.pk}/redact/").content.decode()
    assert "also_answer" not in page


def test_answers_are_stored_masked_when_the_channel_masks_before_storing(webhook, channel, ollama_server, line_api):
    LineChannel.objects.filter(pk=channel.pk).update(mask_before_storing=True)
    ollama_server.responder = lambda messages, options: "請撥 0912-345-678 或寫信到 help@example.com"
    webhook.post(ev.text_message_event("客服電話是多少？"))
    assert Message.objects.get(direction="out").text == "請撥 [PHONE] 或寫信到 [EMAIL]"
    assert line_api.delivered_texts()[-1] == "請撥 [PHONE] 或寫信到 [EMAIL]"


def test_answers_are_stored_as_written_when_the_channel_does_not_mask(webhook, ollama_server):
    ollama_server.responder = lambda messages, options: "請撥 0912-345-678"
    webhook.post(ev.text_message_event("客服電話是多少？"))
    assert Message.objects.get(direction="out").text == "請撥 0912-345-678"


def test_a_questions_page_links_to_its_answer_and_an_answers_page_to_its_question(admin_client, make_chat,
                                                                                  make_message):
    chat = make_chat(GROUP)
    question = make_message(chat, "週六要去爬山嗎？", user=ALICE)
    answer = make_message(chat, "好啊！", direction="out", reply_to=question, latency_ms=820)
    page = admin_client.get(f"/admin/conversations/message/{question.pk}/change/").content.decode()
    assert f'href="/admin/conversations/message/{answer.pk}/change/">#{answer.pk}</a>' in page
    assert "field-latency_ms" not in page
    page = admin_client.get(f"/admin/conversations/message/{answer.pk}/change/").content.decode()
    assert "field-reply_to" in page and "820" in page and "field-answer" not in page
