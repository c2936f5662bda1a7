"""The conversation on LINE, set up and read in a real browser (Debian's Chromium, headless).

An operator sets a channel's privacy notice (operator, contact, template tried with Preview),
turns /help off, sets the per-user limit and a group's memory to "addressed"; then signed
webhooks reach the live server's webhook — the bot joins, a named member asks, a bystander
chats, /help (off: text for the model), /reset, the limit, /optout — and the thread shows
what happened. Workers run in sync mode, so each webhook is answered before it returns.

Saves docs/screenshots/channel-notice.png and thread-group-names.png under `make screenshots`
(SCREENSHOTS_DIR).
"""
import json
import urllib.request

import pytest

from conversations.models import Chat, ChatMember, Command, GroupMemory, LineChannel, Message, OptOut
from core.audit import keyed_hash
from models_registry.models import BackendKind, ModelBackend, SamplingPreset
from models_registry.prompts import GROUP_LINE
from tests.conftest import ACCESS_TOKEN, CHANNEL_SECRET
from tests.fakes import webhooks as ev
from tests.fakes.line_api import FakeLineAPI
from tests.fakes.ollama import FakeOllama
from tests.test_browser import SCREENSHOTS, browser, log_in, page, submit  # noqa: F401  (fixtures)
from tests.test_browser import pytestmark  # noqa: F401  (live server database, Chromium present)

ALICE, BOB = "U" + "a1" * 16, "U" + "b2" * 16
ALICE_NAME = "Alice Chen"  # what LINE's member profile gives
OPERATOR, CONTACT = "Hiking Club Taipei", "privacy@hiking.example.tw"
TEMPLATE = "Hi, I'm the hiking club's trail assistant.\n{operator}\n{memory} {retention}\n{commands}"
SYSTEM_PROMPT = "You are the hiking club's assistant."


@pytest.fixture
def hiking(settings, django_user_model):
    """A fake Ollama and LINE, an operator, a channel and a group the bot is about to join
    (its memory still "every message")."""
    with FakeOllama(models=("gemma3:4b",)) as ollama, FakeLineAPI(access_token=ACCESS_TOKEN) as line_api:
        settings.LINE_API_HOST = line_api.url
        line_api.profiles[ALICE] = ALICE_NAME
        django_user_model.objects.create_superuser("operator", password="console-test-password")
        backend = ModelBackend.objects.create(name="Office Ollama", kind=BackendKind.OLLAMA, base_url=ollama.url,
                                              model="gemma3:4b", timeout=5)
        SamplingPreset.objects.create(name="Trail guide", backend=backend, system_prompt=SYSTEM_PROMPT,
                                      history_turns=6, is_default=True)
        channel = LineChannel.objects.create(name="Hiking club", slug="hiking", channel_secret=CHANNEL_SECRET,
                                             access_token=ACCESS_TOKEN)
        group = Chat.objects.create(channel=channel, source_type="group", line_id=ev.DEFAULT_GROUP_ID,
                                    display_name="週末登山社 Hiking club", group_memory=GroupMemory.EVERYTHING)
        yield ollama, line_api, channel, group
        assert line_api.validation_errors == [], "the bot sent LINE a request LINE would reject"


def shot_between(page, name: str, *, top: str, bottom: str) -> None:
    """A screenshot of the page from the top of `top` to the bottom of `bottom` (each widened to
    its fieldset, if it is in one)."""
    page.wait_for_load_state()
    box = page.evaluate("""([top, bottom]) => {
        const edge = (selector) => {
            const element = document.querySelector(selector);
            return (element.closest('fieldset') || element).getBoundingClientRect();
        };
        return {y: edge(top).top + window.scrollY, end: edge(bottom).bottom + window.scrollY};
    }""", [top, bottom])
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True,
                    clip={"x": 0, "y": box["y"] - 12, "width": 1280, "height": box["end"] - box["y"] + 24})


def deliver(base: str, *events: dict) -> dict:
    """Posts signed events to the live server's webhook, as LINE does (sync workers: answered
    before the response)."""
    ev.validate_webhook_payload(ev.payload(*events))
    body = ev.payload_bytes(*events)
    request = urllib.request.Request(f"{base}/line/webhook/hiking/", data=body, method="POST", headers={
        "Content-Type": "application/json", "X-Line-Signature": ev.sign(body, CHANNEL_SECRET)})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
    with opener.open(request, timeout=30) as response:
        assert response.status == 200
        return json.load(response)


def said(text: str, user: str, **options) -> dict:
    return ev.text_message_event(text, source="group", user_id=user, **options)


def system(speaker: str) -> dict:
    return {"role": "system", "content": f"{SYSTEM_PROMPT}\n\n{GROUP_LINE.format(speaker=speaker)}"}


def user(content: str) -> dict:
    return {"role": "user", "content": content}


def test_the_conversation_settings_and_a_group_thread(page, live_server, hiking):
    ollama, line_api, channel, group = hiking
    base = live_server.url
    log_in(page, base)

    # --- The channel: who runs the bot, the notice, a command off, the per-user limit ---
    page.goto(f"{base}/admin/conversations/linechannel/{channel.pk}/change/")
    page.fill("#id_operator_name", OPERATOR)
    page.fill("#id_operator_contact", CONTACT)
    page.select_option("#id_language", "en")
    page.fill("#id_notice_template", TEMPLATE)
    assert page.is_checked("#id_command_help")
    page.uncheck("#id_command_help")
    page.fill("#id_user_limit_messages", "4")
    page.fill("#id_user_limit_minutes", "30")
    # Preview renders the unsaved form in place and saves nothing.
    preview = page.locator("#notice-preview")
    assert "trail assistant" not in preview.inner_text()
    page.get_by_role("button", name="Preview").click()
    page.wait_for_function("document.querySelector('#notice-preview').innerText.includes('trail assistant')")
    [one_to_one, in_group] = preview.locator(".bubble").all_inner_texts()
    assert one_to_one.startswith("Hi, I'm the hiking club's trail assistant.")
    assert f"This bot is run by {OPERATOR}. Questions about your data: {CONTACT}." in one_to_one
    assert "I keep what you write to me" in one_to_one and "In this chat I keep" in in_group
    assert LineChannel.objects.get(pk=channel.pk).notice_template == ""
    # From "What the people in the chats are told" to the preview: every setting changed here.
    shot_between(page, "channel-notice", top="#id_operator_name", bottom="#notice-preview")
    submit(page, "input[name=_save]")
    assert "was changed successfully" in page.locator(".messagelist").inner_text()
    channel.refresh_from_db()
    assert (channel.operator_name, channel.operator_contact, channel.language) == (OPERATOR, CONTACT, "en")
    # A textarea posts its line breaks as CRLF, and they are stored (and sent) as posted.
    assert channel.notice_template.splitlines() == TEMPLATE.splitlines()
    assert (channel.command_help, channel.command_reset, channel.command_optout) == (False, True, True)
    assert (channel.user_limit_messages, channel.user_limit_minutes) == (4, 30)

    # --- The group: keep only what is addressed to the bot ---
    page.goto(f"{base}/admin/conversations/chat/{group.pk}/change/")
    assert page.input_value("#id_group_memory") == GroupMemory.EVERYTHING
    page.select_option("#id_group_memory", GroupMemory.ADDRESSED)
    submit(page, "input[name=_save]")
    group.refresh_from_db()
    assert group.group_memory == GroupMemory.ADDRESSED

    # --- LINE: the bot joins, is asked, reset, limited and opted out of ---
    join = ev.join_event()
    deliver(base, join)
    [notice] = [m["text"] for m in line_api.last("reply").json["messages"]]
    assert line_api.last("reply").json["replyToken"] == join["replyToken"]
    assert notice.splitlines()[:2] == ["Hi, I'm the hiking club's trail assistant.",
                                       f"This bot is run by {OPERATOR}. Questions about your data: {CONTACT}."]
    assert "In this chat I keep only the messages addressed to me" in notice  # the memory just set

    deliver(base, said("what's the weather on Saturday at Yangmingshan?", ALICE, mention_self=True))
    assert ollama.last("chat").json["messages"] == [
        system(ALICE_NAME), user(f"{ALICE_NAME}: what's the weather on Saturday at Yangmingshan?")]
    # Not for the bot: acknowledged, counted, not stored.
    assert deliver(base, said("lunch at noon? I'll bring the snacks", BOB)) == {"stored": 0, "duplicates": 0,
                                                                                 "ignored": 1}
    deliver(base, said("/help", ALICE, mention_self=True))  # turned off: text for the model
    assert ollama.last("chat").json["messages"][-1] == user(f"{ALICE_NAME}: /help")
    deliver(base, said("/reset", ALICE, mention_self=True))
    deliver(base, said("which trail is easiest?", ALICE, mention_self=True))
    # After the reset the model sees only what came after it.
    assert ollama.last("chat").json["messages"] == [system(ALICE_NAME), user(f"{ALICE_NAME}: which trail is easiest?")]
    deliver(base, said("and is it muddy?", ALICE, mention_self=True))  # the 5th in 30 minutes: over the limit
    deliver(base, said("/optout", ALICE, mention_self=True))  # privacy commands pass the limit
    deliver(base, said("are you still there?", ALICE, mention_self=True))  # opted out: not stored

    replies = line_api.delivered_texts()
    assert replies == [
        notice,
        f"echo: {ALICE_NAME}: what's the weather on Saturday at Yangmingshan?",
        f"echo: {ALICE_NAME}: /help",
        "Fresh start: I no longer use the earlier messages of this chat for my answers.",
        f"echo: {ALICE_NAME}: which trail is easiest?",
        "You have sent me many messages in a short time. I will answer again in about 30 minutes.",
        "Done: from now on I neither store nor answer your messages in this LINE account's chats. Send /optin to undo this.",
    ]
    # The model got three questions: never a command, a limited message, the bystander, an id or the mention.
    prompts = json.dumps([request.json for request in ollama.requests_for("chat")], ensure_ascii=False)
    assert len(ollama.requests_for("chat")) == 3
    for absent in ("@Bot", ALICE, BOB, "snacks", "muddy", "/reset", "/optout", "still there"):
        assert absent not in prompts, absent
    assert [request.path for request in line_api.requests_for("member_profile")] == [
        f"/v2/bot/group/{ev.DEFAULT_GROUP_ID}/member/{ALICE}"]
    group.refresh_from_db()
    assert group.unstored_messages == 2
    assert list(ChatMember.objects.values_list("line_user_id", "display_name")) == [(ALICE, ALICE_NAME)]
    assert list(OptOut.objects.values_list("channel", "user_hmac")) == [(channel.pk, keyed_hash(ALICE))]
    help_asked = Message.objects.get(text="@Bot /help")
    assert help_asked.command == ""
    assert not Message.objects.filter(text__contains="snacks").exists()
    assert not Message.objects.filter(text__contains="still there").exists()

    # --- The thread, as the operator reads it ---
    page.goto(f"{base}/admin/conversations/chat/{group.pk}/thread/")
    head = page.locator(".thread-head").inner_text()
    assert "group memory: only messages addressed to the bot (2 messages not stored)" in head
    html = page.content()
    assert "snacks" not in html and "still there" not in html
    assert ALICE[:11] not in html and BOB[:11] not in html  # names, never LINE ids
    sent = page.locator(".bubble.out", has=page.locator(".badge-notice"))
    assert sent.locator(".badge-notice").inner_text() == "privacy notice, sent"
    assert f"This bot is run by {OPERATOR}." in sent.locator(".bubble-text").inner_text()
    questions = page.locator(".bubble.in")
    assert questions.count() == 6
    assert set(questions.locator(".sender").all_inner_texts()) == {ALICE_NAME}
    commands = page.locator(".bubble.in .badge-command").all_inner_texts()
    assert commands == ["/reset", str(Command.LIMIT_NOTICE.label), "/optout"]
    asked_help = questions.filter(has_text="@Bot /help")
    assert asked_help.locator(".badge-command").count() == 0
    assert asked_help.locator(".status").inner_text() == "replied"
    reset = page.locator(".thread-reset")
    assert reset.count() == 1
    assert "Context reset" in reset.inner_text()
    # The mark sits right under the /reset exchange: the next entry is the question after it.
    assert page.evaluate("document.querySelector('.thread-reset').previousElementSibling.id") == \
        f"m{Message.objects.get(text='@Bot /reset').pk}"
    opted_out = questions.filter(has=page.locator(".badge-command", has_text="/optout"))
    assert "the sender opted out: their messages are no longer stored" in opted_out.inner_text()
    shot_between(page, "thread-group-names", top="#content h1", bottom="ol.thread")

    # The chat's page names who spoke and counts what was not stored.
    page.goto(f"{base}/admin/conversations/chat/{group.pk}/change/")
    assert page.locator(".field-members .readonly").inner_text() == ALICE_NAME
    assert page.locator(".field-unstored_messages .readonly").inner_text() == "2"

    # Messages are found by their sender's name, and the list names each sender.
    page.goto(f"{base}/admin/conversations/message/")
    page.fill("#searchbar", "alice")
    with page.expect_navigation():
        page.press("#searchbar", "Enter")
    senders = page.locator("#result_list td.field-sender").all_inner_texts()
    # Her messages, by name (the bot's echoes of her name match the text search too).
    assert senders.count(ALICE_NAME) == Message.objects.filter(chat=group, line_user_id=ALICE).count() > 0
    assert set(senders) <= {ALICE_NAME, "the bot"}
    assert ALICE not in page.locator("#result_list").inner_text()
