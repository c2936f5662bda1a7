"""The simulator and a preset comparison in a real browser (Debian's Chromium, driven by Playwright).

A newcomer's installation: `bootstrap` made the Sandbox channel, the local backend (a fake
Ollama at OLLAMA_HOST) and the default preset. Tasks run in django-q2's sync mode (see
conftest), so each answer is ready when the send request ends; the page still polls for it.
Saves the README's screenshots `simulator`, `simulator-one-to-one`, `simulator-photo` and
`compare-presets`.
"""
import re

import pytest
from django.core.management import call_command

from conversations.models import BOT_EVENT_TYPES, Chat, Message
from conversations.simulator.models import EmulatorCall, SimulatedChat, SimulatedEvent
from core.models import AuditEvent
from models_registry.models import ModelBackend, SamplingPreset
from tests.fakes.line_api import FakeLineAPI
from tests.fakes.llm import echo_chat, last_user_text
from tests.fakes.ollama import FakeOllama
from tests.test_browser import CHROMIUM, browser, page, playwright_api, shot, submit  # noqa: F401 (fixtures)

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not __import__("shutil").which(CHROMIUM), reason=f"Debian's Chromium is not installed at {CHROMIUM}"),
]
expect = playwright_api.expect
LONG_ANSWER = "長" * 5200 + " and the end."
PASSWORD = "sandbox-test-password"


def chatty(messages, options) -> str:
    """Answers a little like a model would, so the screenshots read well."""
    text = last_user_text(messages)
    system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
    if "long" in text:
        return LONG_ANSWER
    if "weather" in text:
        if "one sentence" in system:
            return "Sunny, 24–28 °C: a good day for Elephant Mountain."
        return ("Saturday looks sunny in Taipei, 24–28 °C with a light breeze. Bring water and sunscreen; "
                "the trail up Elephant Mountain gets busy after 9 am.")
    if text == "[photo]":
        return "That is a mountain at sunset — it looks like the view from Elephant Mountain. Go around 5 pm for it."
    if "hello" in text.lower():
        return "Hello! I am the shop's assistant. Ask me about opening hours, orders or returns."
    return echo_chat(messages, options)


@pytest.fixture
def newcomer(settings, monkeypatch, tmp_path):
    """`make run` on a fresh installation, with a model at OLLAMA_HOST (gemma3 reads images, as the
    real one does); LINE is a fake that must stay silent."""
    with FakeOllama(models=("gemma3:4b",), vision_models=("gemma3:4b",), responder=chatty,
                    chunk_interval=0.01) as ollama_server, FakeLineAPI() as line_api:
        settings.LINE_API_HOST = settings.LINE_DATA_API_HOST = line_api.url
        settings.LINEBOT_MEDIA_ROOT = tmp_path / "media"
        settings.OLLAMA_HOST = ollama_server.url
        settings.OLLAMA_DEFAULT_MODEL = "gemma3:4b"
        settings.LINE_CHANNEL_SECRET = settings.LINE_CHANNEL_ACCESS_TOKEN = ""
        monkeypatch.setenv("ADMIN_PASSWORD", PASSWORD)
        call_command("bootstrap")
        yield ollama_server, line_api
        assert line_api.requests == [], "a simulated chat reached LINE"


def log_in(page, base: str) -> None:
    page.goto(f"{base}/admin/login/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", PASSWORD)
    submit(page, "input[type=submit]")


def send(page, text: str, *, mention: bool = False) -> None:
    if page.locator("#sim-mention").count():
        page.locator("#sim-mention").set_checked(mention)
    page.fill("#sim-text", text)
    page.click("#sim-send")
    expect(page.locator("#sim-text")).to_have_value("")


def set_trouble(page, label: str) -> None:
    page.select_option("#id_trouble", label=label)
    submit(page, ".sim-settings input[type=submit]")


def test_a_newcomer_talks_to_the_bot_one_to_one(page, live_server, newcomer):
    base = live_server.url
    log_in(page, base)
    with page.expect_navigation():
        page.get_by_role("link", name="Try the bot in the simulator").click()
    # No simulated chat yet: the Sandbox channel and a 1:1 chat are chosen already.
    page.fill("#id_first_message", "hello")
    submit(page, ".sim-new-form input[type=submit]")
    # Adding the bot (follow) brings the privacy notice, in the Sandbox's language, as LINE shows it.
    notice = page.locator(".sim-row.sim-notice")
    expect(notice).to_have_count(1)
    expect(notice.locator(".sim-bot-bubble")).to_contain_text("我是 AI 助理")
    expect(notice.locator(".badge-notice")).to_have_text("privacy notice, sent")
    expect(notice.locator(".sim-via")).to_have_text(re.compile("reply", re.I))
    answers = page.locator(".sim-row.sim-bot:not(.sim-notice)")
    expect(answers.first.locator(".sim-bot-bubble")).to_contain_text("I am the shop's assistant")
    expect(answers.first.locator(".sim-via")).to_have_text(re.compile("reply", re.I))
    expect(page.locator(".sim-latency")).to_have_count(1)  # under the answer; the notice had no model
    expect(page.locator(".sim-latency").first).to_contain_text(" ms")
    assert EmulatorCall.objects.filter(endpoint="loading", status=202).count() == 1  # 1:1: the loading animation

    # What the model was sent: the default system prompt and the user's turn.
    page.locator(".sim-prompt summary").first.click()
    prompt = page.locator(".sim-prompt-content").first
    expect(prompt).to_contain_text("You are a helpful assistant in a LINE chat")
    expect(prompt).to_contain_text("temperature")
    expect(prompt.locator(".sim-turn-user pre")).to_have_text("hello")

    # A long answer reaches LINE as two texts in one reply.
    send(page, "a long answer, please")
    expect(answers.nth(1).locator(".sim-bot-bubble")).to_have_count(2)
    expect(answers.nth(1).locator(".sim-bubble-text").last).to_contain_text("and the end.")
    long_call = EmulatorCall.objects.filter(endpoint="reply", status=200).last()
    assert [m["units"] for m in long_call.messages] == [5000, 213]

    # LINE answers 500 once: the worker retries and the reply goes through.
    set_trouble(page, "next call: 500 server error")
    send(page, "and now?")
    expect(page.locator(".sim-line-error")).to_contain_text("LINE answered 500 to a reply")
    expect(answers).to_have_count(3)
    expect(answers.last.locator(".sim-via")).to_have_text(re.compile("reply", re.I))

    # The reply token is refused: the answer is pushed instead.
    set_trouble(page, "reply tokens expired")
    send(page, "still there?")
    expect(page.locator(".sim-line-error").last).to_contain_text("Invalid reply token")
    expect(answers).to_have_count(4)
    expect(answers.last.locator(".sim-via")).to_have_text(re.compile("push", re.I))
    statuses = list(EmulatorCall.objects.filter(endpoint__in=["reply", "push"]).values_list("endpoint", "status"))
    assert statuses[-4:] == [("reply", 500), ("reply", 200), ("reply", 400), ("push", 200)]
    assert Message.objects.filter(direction="in", status="replied").count() == 4
    page.evaluate("window.scrollTo(0, 0)")
    shot(page, "simulator-one-to-one")


def test_a_group_rehearsal_and_a_preset_comparison(page, live_server, newcomer):
    base = live_server.url
    SamplingPreset.objects.create(name="Concise", backend=ModelBackend.objects.get(),
                                  system_prompt="Answer in one sentence.", temperature=0.2)
    log_in(page, base)
    page.goto(f"{base}/admin/conversations/simulatedchat/?new=1")
    page.select_option("#id_source_type", "group")
    page.fill("#id_title", "週末登山社 Hiking club")
    page.fill("#id_members", "Alice, Bob, 陳小明")
    submit(page, ".sim-new-form input[type=submit]")
    simulated = SimulatedChat.objects.get(source_type="group")
    expect(page.locator(".sim-phone-head strong")).to_have_text("週末登山社 Hiking club")  # LINE's group summary

    # Members come and go; one is renamed.
    page.fill("#sim-new-member", "Dora")
    submit(page, "button[value=add]")
    bob = page.locator(".sim-members li").filter(has=page.locator("input[value=Bob]"))
    bob.locator(".sim-member-name").fill("Bobby")
    submit(page, ".sim-members li:has(input[value=Bob]) button[value=rename]")
    submit(page, ".sim-members li:has(input[value='陳小明']) button[value=remove]")
    assert list(page.locator("#sim-member option").all_inner_texts()) == ["Alice", "Bobby", "Dora"]
    assert list(simulated.events.values_list("event_type", flat=True)) == ["join", "memberJoined", "memberLeft"]
    expect(page.locator(".sim-row.sim-notice .badge-notice")).to_have_text("privacy notice, sent")  # on join

    # Without a mention the bot stays silent, and (group memory "addressed") keeps nothing of the
    # message: the page shows what the members saw, its text only while the page is open.
    page.select_option("#sim-member", label="Alice")
    send(page, "Anyone up for Saturday?")
    unstored = page.locator(".sim-row.sim-user.sim-unstored").last
    expect(unstored).to_contain_text("not stored: not addressed to the bot (group memory)")
    expect(unstored.locator(".sim-user-bubble")).to_have_text("Anyone up for Saturday?")
    page.select_option("#sim-member", label="Bobby")
    send(page, "what's the weather on Saturday?", mention=True)
    expect(page.locator(".sim-bot-bubble").last).to_contain_text("Saturday looks sunny")
    expect(page.locator(".sim-mention-tag").last).to_have_text("@Sandbox")
    page.select_option("#sim-member", label="Dora")
    page.get_by_role("button", name="Sticker").click()
    expect(page.locator(".sim-row.sim-user").last).to_contain_text("[Sticker]")
    expect(page.locator(".sim-row.sim-user").last).to_contain_text("not stored")
    page.select_option("#sim-member", label="Alice")
    send(page, "hello, who are you?", mention=True)
    expect(page.locator(".sim-bot-bubble").last).to_contain_text("I am the shop's assistant")
    assert EmulatorCall.objects.filter(endpoint="loading").count() == 0  # no loading animation in groups
    page.locator(".sim-prompt summary").last.click()
    prompt = page.locator(".sim-prompt-content")
    # The history, as built: each turn with its speaker's name, the bot's mention left out;
    # Alice's first message is not in it (not stored).
    expect(prompt).to_contain_text("Bobby: what's the weather on Saturday?")
    expect(prompt).not_to_contain_text("Anyone up for Saturday")
    expect(prompt.locator(".sim-turn-user pre").last).to_have_text("Alice: hello, who are you?")
    page.locator("#sim-text").fill("Shall we meet at 8?")
    # The last question, its answer and what the model was sent, in view.
    page.locator(".sim-row.sim-user").last.evaluate("row => row.scrollIntoView({block: 'start'})")
    page.evaluate("window.scrollTo(0, 0)")
    shot(page, "simulator")
    page.reload()  # nothing on the server has the text: a new page shows that it was said, not what
    expect(page.locator(".sim-row.sim-unstored .sim-user-bubble").first).to_have_text(
        "(its text is kept nowhere: shown only on the page it was sent from)")

    # Compare presets from the conversation's thread.
    chat = Chat.objects.get(line_id=simulated.line_id)
    page.goto(f"{base}/admin/conversations/chat/{chat.pk}/thread/")
    expect(page.locator(".badge-simulated")).to_be_visible()
    with page.expect_navigation():
        page.get_by_role("link", name="Compare presets").click()
    page.get_by_label("Default").check()
    page.get_by_label("Concise").check()
    page.fill("#id_exchanges", "2")
    submit(page, ".compare-form input[type=submit]")
    expect(page.locator("#compare-state")).to_have_text("done")
    table = page.locator(".compare-table")
    expect(table.locator("thead th")).to_have_count(3)
    expect(table).to_contain_text("Sunny, 24–28 °C")  # Concise
    expect(table).to_contain_text("Saturday looks sunny in Taipei")  # Default
    expect(table.locator(".compare-latency")).to_have_count(4)
    expect(table.locator("thead .badge-local")).to_have_count(2)
    # Nothing added to the log: the join's notice, two questions and their answers.
    assert Message.objects.filter(chat=chat).exclude(message_type__in=BOT_EVENT_TYPES).count() == 5
    shot(page, "compare-presets")


def sunset_photo() -> bytes:
    """A photo a LINE user might send (drawn here: no binary fixtures), with a camera's EXIF."""
    import io

    from PIL import Image, ImageDraw

    image = Image.new("RGB", (640, 427))
    draw = ImageDraw.Draw(image)
    for y in range(427):  # an evening sky, orange to violet
        draw.line([(0, y), (640, y)], fill=(255 - y // 4, 140 - y // 5, 90 + y // 4))
    draw.ellipse((380, 170, 480, 270), fill=(255, 214, 120))
    draw.polygon([(0, 427), (0, 300), (150, 200), (300, 310), (430, 230), (640, 330), (640, 427)], fill=(40, 60, 55))
    exif = Image.Exif()
    exif[0x0110] = "FakePhone 15 Pro"
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90, exif=exif.tobytes())
    return buffer.getvalue()


def test_a_photo_uploaded_in_the_simulator_is_answered_and_shown(page, live_server, newcomer):
    ollama_server, _ = newcomer
    log_in(page, live_server.url)
    page.goto(f"{live_server.url}/admin/conversations/simulatedchat/?new=1")
    page.fill("#id_first_message", "hello")
    submit(page, ".sim-new-form input[type=submit]")
    answers = page.locator(".sim-row.sim-bot:not(.sim-notice)")
    expect(answers.first).to_contain_text("I am the shop's assistant")

    # Not a photo: the server says so, and nothing is sent or stored.
    page.set_input_files("#sim-upload-image", files=[{"name": "notes.jpg", "mimeType": "image/jpeg",
                                                       "buffer": b"not a photo at all"}])
    expect(page.locator("#sim-error")).to_contain_text("That is not a photo LINE would send")
    assert not SimulatedEvent.objects.filter(message_type="image").exists()

    page.set_input_files("#sim-upload-image", files=[{"name": "sunset.jpg", "mimeType": "image/jpeg",
                                                       "buffer": sunset_photo()}])
    expect(page.locator("#sim-error")).to_have_text("")
    # The worker fetched it from the emulator, the model saw it, and the thread shows its thumbnail
    # (through the audited staff media view) with the answer under it.
    expect(answers.last).to_contain_text("I see an image 640x427 JPEG")
    expect(answers.last).to_contain_text("Elephant Mountain")
    thumbnail = page.locator(".sim-row.sim-user .sim-thumbnail img")
    expect(thumbnail).to_have_count(1)
    expect(thumbnail).to_have_attribute("src", re.compile(r"/admin/conversations/message/\d+/media/thumbnail/$"))
    page.wait_for_function("() => document.querySelector('.sim-thumbnail img').naturalWidth > 0")
    assert EmulatorCall.objects.filter(endpoint="content", status=200).count() == 1
    assert any(message.get("images") for message in ollama_server.last("chat").json["messages"])
    assert AuditEvent.objects.filter(target_type="message_media", details__variant="thumbnail").count() == 1
    page.locator("#sim-text").fill("Is it far from Taipei 101?")
    # The photo and its answer in view, and the composer with its upload buttons under them.
    page.locator("#sim-timeline").evaluate("timeline => { timeline.scrollTop = timeline.scrollHeight; }")
    page.evaluate("window.scrollTo(0, document.querySelector('.sim-phone').getBoundingClientRect().top + scrollY - 8)")
    shot(page, "simulator-photo")
