"""Setting up in a real browser (Debian's Chromium, headless): the dashboard's checklist from a
fresh installation to done, and a channel's connection with LINE as it comes alive.

Saves docs/screenshots/dashboard-setup.png and channel-health.png under `make screenshots`.
"""
import shutil
from datetime import timedelta

import pytest
from django.utils import timezone
from django_q.models import Schedule

from conversations import queue
from conversations.models import LineChannel
from models_registry.models import BackendKind, ModelBackend, SamplingPreset
from tests.conftest import ACCESS_TOKEN, CHANNEL_SECRET
from tests.fakes import webhooks as ev
from tests.fakes.line_api import FakeLineAPI
from tests.fakes.ollama import FakeOllama
from tests.test_browser import CHROMIUM, SCREENSHOTS, browser, log_in, playwright_api  # noqa: F401 (fixture)

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not shutil.which(CHROMIUM), reason=f"Debian's Chromium is not installed at {CHROMIUM}"),
]


@pytest.fixture
def page(browser):  # noqa: F811
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


@pytest.fixture
def fresh_install(settings, django_user_model):
    """What `make run` leaves: a local backend (here a fake Ollama), a channel from the
    environment that LINE has never called, an operator, and no worker yet."""
    with FakeOllama(models=("gemma3:4b",)) as ollama_server, FakeLineAPI(access_token=ACCESS_TOKEN) as line_api:
        settings.LINE_API_HOST = line_api.url
        settings.PUBLIC_BASE_URL = ""
        line_api.bot_name, line_api.quota_used = "週末登山社 Bot", 37
        django_user_model.objects.create_superuser("operator", password="console-test-password")
        backend = ModelBackend.objects.create(name="Local Ollama", kind=BackendKind.OLLAMA,
                                              base_url=ollama_server.url, model="gemma3:4b")
        SamplingPreset.objects.create(name="Default", backend=backend, is_default=True)
        channel = LineChannel.objects.create(name="Default channel", slug="default", channel_secret=CHANNEL_SECRET,
                                             access_token=ACCESS_TOKEN, is_default=True)
        Schedule.objects.filter(func=queue.SWEEP_TASK).update(task=None)
        yield channel, line_api


def shot_down_to(page, name: str, selector: str) -> None:
    """The page from its top down to the end of `selector`."""
    page.wait_for_load_state()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    box = page.locator(selector).first.bounding_box()
    width = page.viewport_size["width"]
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True,
                    clip={"x": 0, "y": 0, "width": width, "height": box["y"] + box["height"] + 16})


def post_webhook(client, body: bytes, secret: str = CHANNEL_SECRET) -> int:
    return client.post("/line/webhook/", data=body, content_type="application/json",
                       HTTP_X_LINE_SIGNATURE=ev.sign(body, secret)).status_code


def test_the_checklist_leads_from_a_fresh_install_to_done(page, live_server, fresh_install, settings, client):
    channel, line_api = fresh_install
    base = live_server.url
    log_in(page, base)
    checklist = page.locator(".setup-checklist")
    assert "Getting started: 1 of 5 done" in checklist.locator("h2").inner_text()
    assert checklist.locator("li.done").count() == 1 and checklist.locator('li.done[data-step="backend"]').count() == 1
    assert "plain HTTP" in checklist.inner_text() and "PUBLIC_BASE_URL" in checklist.inner_text()
    assert line_api.requests == []

    # Checking the channel with LINE shows who the bot is, with a code to scan.
    with page.expect_navigation():
        checklist.get_by_role("button", name="Check with LINE").click()
    assert "LINE accepts the access token" in page.locator(".messagelist").inner_text()
    assert "2 of 5 done" in checklist.locator("h2").inner_text()
    qr = checklist.locator("svg.qr-code")
    assert qr.is_visible() and qr.bounding_box()["width"] >= 100
    assert "週末登山社 Bot" in checklist.inner_text()
    assert "37 of 500" in page.locator(".line-quota").inner_text()
    shot_down_to(page, "dashboard-setup", ".line-quota")

    # A public HTTPS address, LINE's first event and a worker complete it.
    settings.PUBLIC_BASE_URL = "https://bot.example.com"
    assert post_webhook(client, ev.payload_bytes(ev.text_message_event("hello bot"))) == 200
    Schedule.objects.filter(func=queue.SWEEP_TASK).update(task="a1b2c3",
                                                          next_run=timezone.now() + timedelta(seconds=30))
    page.goto(f"{base}/admin/")
    assert page.locator(".setup-checklist").count() == 0
    assert page.locator(".console-dashboard").is_visible()


def test_a_channel_shows_its_connection_with_line(page, live_server, fresh_install, client):
    channel, line_api = fresh_install
    base = live_server.url
    log_in(page, base)
    page.goto(f"{base}/admin/conversations/linechannel/{channel.pk}/change/")
    health = page.locator(".channel-health")
    assert "waiting for LINE" in health.inner_text() and "Verify" in health.inner_text()
    assert "plain HTTP" in page.locator(".webhook-url").inner_text()
    assert page.locator(".help", has_text="as in /line/webhook/shop/").count() == 1

    # LINE's Verify, a webhook signed with some other secret, then two messages.
    assert post_webhook(client, ev.payload_bytes()) == 200
    page.reload()
    assert "reached by LINE's Verify" in health.inner_text()
    assert post_webhook(client, ev.payload_bytes(ev.text_message_event("forged")), secret="x" * 32) == 403
    assert post_webhook(client, ev.payload_bytes(ev.text_message_event("hi"), ev.text_message_event("there"))) == 200
    line_api.webhook_endpoint = f"{base}/line/webhook/default/"
    with page.expect_navigation():
        health.get_by_role("button", name="Check with LINE").click()
    assert "receiving events" in health.inner_text()
    assert health.locator(".events-today").inner_text() == "2"
    assert health.locator(".signatures-rejected").inner_text().startswith("1 · last")
    assert "probably not this channel's" in health.inner_text()
    assert health.locator("svg.qr-code").is_visible()
    assert "leads here" in health.locator(".line-endpoint").inner_text()
    shot_down_to(page, "channel-health", ".webhook-url")
