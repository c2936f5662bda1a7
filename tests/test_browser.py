"""The operator's journey in a real browser: Debian's Chromium, headless, driven by Playwright.

Saves screenshots of the main pages (to look at; `make screenshots` refreshes the README's).
"""
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from django.core.cache import cache

from conversations.models import Chat, LineChannel, Message
from models_registry.models import SamplingPreset
from tests.conftest import ACCESS_TOKEN, CHANNEL_SECRET
from tests.fakes import webhooks as ev
from tests.fakes.line_api import FakeLineAPI
from tests.fakes.ollama import FakeOllama

CHROMIUM = "/usr/bin/chromium"
# `make screenshots` points this at docs/screenshots/ for the README.
SCREENSHOTS = Path(os.environ.get("SCREENSHOTS_DIR") or Path(tempfile.gettempdir()) / "linebot-screenshots")
# Playwright's sync API runs an event loop in this thread; the ORM calls here are still sync.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

playwright_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not shutil.which(CHROMIUM), reason=f"Debian's Chromium is not installed at {CHROMIUM} "
                       "(apt-get install chromium); .ci/run installs it"),
]


@pytest.fixture
def browser():
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-US")
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


@pytest.fixture
def bot_world(settings, django_user_model):
    """A fake Ollama and LINE, an operator account, and a group that already talked to the bot."""
    with FakeOllama(models=("gemma3:4b", "llama3.2:3b")) as ollama_server, FakeLineAPI(access_token=ACCESS_TOKEN) as line_api:
        settings.LINE_API_HOST = line_api.url
        django_user_model.objects.create_superuser("operator", password="console-test-password")
        channel = LineChannel.objects.create(name="Shop bot", slug="shop", channel_secret=CHANNEL_SECRET,
                                             access_token=ACCESS_TOKEN, is_default=True)
        group = Chat.objects.create(channel=channel, source_type="group", line_id=ev.DEFAULT_GROUP_ID,
                                    display_name="週末登山社 Hiking club")
        yield ollama_server, line_api, group


def submit(page, selector: str) -> None:
    """Clicks a submit button and waits for the page it leads to."""
    with page.expect_navigation():
        page.click(selector)
    page.wait_for_load_state()


def shot(page, name: str) -> None:
    page.wait_for_load_state()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=False)


def log_in(page, base: str) -> None:
    page.goto(f"{base}/admin/login/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", "console-test-password")
    submit(page, "input[type=submit]")
    assert page.url == f"{base}/admin/"


def test_operator_journey(page, live_server, bot_world, client):
    ollama_server, line_api, group = bot_world
    base = live_server.url
    log_in(page, base)

    # Register the local Ollama and test it.
    page.goto(f"{base}/admin/models_registry/modelbackend/add/")
    page.fill("#id_name", "Office Ollama")
    page.select_option("#id_kind", "ollama")
    page.fill("#id_base_url", ollama_server.url)
    page.fill("#id_model", "gemma3:4b")
    submit(page, "input[name=_save]")
    with page.expect_navigation():
        page.get_by_role("link", name="Test connection").first.click()
    with page.expect_navigation():  # calling a backend is a POST, for those who may change it
        page.get_by_role("button", name="Test connection").click()
    report = page.locator(".connection-report")
    assert "Connected" in report.inner_text()
    assert page.locator(".model-list").inner_text().count("llama3.2:3b") == 1
    shot(page, "backend-test")

    # A missing model is named, and can be swapped for an installed one.
    with page.expect_navigation():
        page.get_by_role("button", name="Use this model").click()
    assert "now uses llama3.2:3b" in page.locator(".messagelist").inner_text()

    # Make a preset.
    page.goto(f"{base}/admin/models_registry/samplingpreset/add/")
    page.fill("#id_name", "Friendly zh-TW")
    page.select_option("#id_backend", label="Office Ollama (Ollama: llama3.2:3b)")
    page.fill("#id_system_prompt", "請用繁體中文簡短回答。")
    page.fill("#id_temperature", "3")
    submit(page, "input[name=_save]")
    assert "Ensure this value is less than or equal to 2.0" in page.locator(".errorlist").first.inner_text()
    page.fill("#id_temperature", "0.4")
    submit(page, "input[name=_save]")
    assert SamplingPreset.objects.get(name="Friendly zh-TW").temperature == 0.4

    # Try it in the playground.
    page.goto(f"{base}/admin/models_registry/samplingpreset/playground/")
    page.select_option("#id_preset", label="Friendly zh-TW")
    page.fill("#id_conversation", "User: 你好\nAssistant: 你好！\nUser: 明天會下雨嗎？")
    submit(page, "input[type=submit]")
    result = page.locator(".playground-result")
    assert "echo: 明天會下雨嗎？" in result.inner_text()
    assert "ms" in result.inner_text()
    shot(page, "playground")

    # Assign it to the group from the chat list.
    page.goto(f"{base}/admin/conversations/chat/")
    page.select_option(f"#id_form-0-preset", label="Friendly zh-TW")
    page.select_option(f"#id_form-0-reply_mode", "always")
    submit(page, "input[name=_save]")
    group.refresh_from_db()
    assert (group.preset.name, group.reply_mode) == ("Friendly zh-TW", "always")
    shot(page, "chats")

    # A message arrives in the group and is answered.
    body, headers = ev.signed_request(ev.text_message_event("大家好，週六去爬山嗎？", source="group"),
                                      channel_secret=CHANNEL_SECRET)
    response = client.post("/line/webhook/", data=body, content_type="application/json",
                           HTTP_X_LINE_SIGNATURE=headers["X-Line-Signature"])
    assert response.status_code == 200
    line_api.wait_for(lambda fake: len(fake.delivered) == 1)
    assert Message.objects.get(direction="out").backend.name == "Office Ollama"

    # Read the conversation as a thread.
    page.goto(f"{base}/admin/conversations/chat/{group.pk}/thread/")
    bubbles = page.locator(".bubble")
    assert bubbles.count() == 2
    # The model was told who spoke, and the thread names the speaker too.
    assert "echo: User 1a1a: 大家好，週六去爬山嗎？" in page.locator(".bubble.out").inner_text()
    assert "User 1a1a" in page.locator(".bubble.in").inner_text()
    shot(page, "thread")

    # The dashboard draws its charts (its figures are cached for seconds; start fresh).
    cache.clear()
    page.goto(f"{base}/admin/")
    assert page.locator("svg.chart").count() >= 2
    assert page.locator("svg.chart rect").count() >= 1
    shot(page, "dashboard")

    # The webhook URL is shown, ready to copy.
    page.goto(f"{base}/admin/conversations/linechannel/{group.channel_id}/change/")
    assert page.input_value("#webhook-url") == f"{base}/line/webhook/shop/"
    shot(page, "channel")


def test_console_fits_a_phone_and_switches_to_traditional_chinese(browser, live_server, bot_world):
    context = browser.new_context(viewport={"width": 390, "height": 844}, locale="en-US")
    page = context.new_page()
    log_in(page, live_server.url)
    with page.expect_navigation():
        page.select_option("#language-select", "zh-hant")
    page.wait_for_load_state()
    assert page.get_attribute("html", "lang") == "zh-hant"
    assert "登出" in page.inner_text("#user-tools")  # Django's own zh-Hant: "Log out"
    assert "儀表板" in page.inner_text(".console-nav")  # ours: "Dashboard"
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 400, f"the dashboard scrolls sideways on a phone ({width}px)"
    shot(page, "dashboard-phone-zh-hant")
    context.close()
