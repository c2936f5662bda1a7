"""The console in 繁體中文 and on a phone, in a real browser (Debian's Chromium, headless).

One walk over the main pages fails on any English left in what an operator sees; phone-width
pages must not scroll sideways. Screenshots go where `shot()` puts them (`make screenshots`:
docs/screenshots/).
"""
import re
from datetime import timedelta

import pytest
from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from core import audit
from core.models import AuditAction, AuditEvent
from conversations.models import Chat, Message
from models_registry.models import BackendKind, ModelBackend, SamplingPreset
from models_registry.selectors import forget_backend_health
from tests.fakes import webhooks as ev
from tests.test_browser import CHROMIUM, bot_world, browser, log_in, shot, submit  # noqa: F401  (fixtures)
from tests.test_browser import pytestmark  # noqa: F401  (live server database, Chromium present)

PHONE = {"width": 390, "height": 844}
# What may stay as it is in a zh-Hant page: names of things and of products, units and
# abbreviations that Taiwanese operators read as they are.
PROPER_NOUNS = {
    "LINE", "Ollama", "Replicate", "OpenAI", "API", "URL", "ID", "IP", "LLM", "Webhook", "ms", "vLLM", "LM",
    "Studio", "GB", "MB", "KB", "Messaging", "Developers", "pull", "qcluster", "Cron",
    "HTTP", "HTTPS", "TLS", "AI", "README", "EXIF", "GPS",  # a photo's metadata, named as in phones' settings
    "English",  # a language's own name, beside 繁體中文
    "k",  # top_k's k, as in "the k likeliest words"
}
# Data the test itself stored (names, the operator's user name), django-q2's schedule names,
# which bootstrap stores as identifiers, and words an operator must find elsewhere as they
# are: the LINE Developers console's labels and the README's headings.
DATA = ["operator", "shop", "Sweep stuck messages", "Purge expired messages", "Webhook settings", "Use webhook",
        "Verify", "Deploying behind HTTPS"]
# Pseudonyms (conversations.models.pseudonym) are names, the same in every language: prompts
# and the console show the same one.
PSEUDONYM = re.compile(r"\bMember [0-9a-f]{4}\b")
# Elements that hold data, not labels: LINE ids and model names (code), stored texts and
# server errors, an audit event's JSON details.
DATA_SELECTORS = "code, pre, script, style, .bubble-text, .bubble-error, .field-details .readonly, " \
                 ".field-error, .redact-quote"


def english_words(text: str) -> list[str]:
    """Words of Latin letters in `text` that are neither proper nouns nor data."""
    for item in DATA:
        text = re.sub(re.escape(item), " ", text, flags=re.IGNORECASE)  # CSS may upper-case it
    text = PSEUDONYM.sub(" ", text)
    text = re.sub(r"\{\w+\}", " ", text)  # placeholders, as in the privacy notice's {memory}
    text = re.sub(r"\S*/\S*|\S+\.\S+", " ", text)  # URLs, paths, file and host names
    text = re.sub(r"\S*\d\S*", " ", text)  # ids, model tags, sizes, times, versions
    text = re.sub(r"\S*_\S*", " ", text)  # identifiers such as top_p
    words = re.findall(r"[A-Za-z][A-Za-z.'’-]*[A-Za-z]|[A-Za-z]", text)
    allowed = {noun.casefold() for noun in PROPER_NOUNS}  # headers are upper-cased by CSS
    return sorted({word for word in words if word.casefold() not in allowed})


def visible_text(page) -> str:
    """What the operator reads: rendered text (open menus' options included), data left out."""
    return page.evaluate("""(selectors) => {
        document.querySelectorAll(selectors).forEach((element) => element.remove());
        return document.body.innerText;
    }""", DATA_SELECTORS)


@pytest.fixture
def console(bot_world, live_server):
    """A console with something on every page: a backend, a preset, a group thread with an
    answered, a skipped, a failed and a redacted message, a 1:1 chat, audit events."""
    ollama_server, line_api, group = bot_world
    cache.clear()  # the dashboard's figures and backend health of an earlier test
    forget_backend_health()
    ollama_server.responder = lambda messages, options: "明天午後可能會下雨，出門記得帶傘。"
    channel = group.channel
    channel.name = "商店機器人"
    channel.save()
    backend = ModelBackend.objects.create(name="辦公室主機", kind=BackendKind.OLLAMA, base_url=ollama_server.url,
                                          model="gemma3:4b", timeout=5)
    preset = SamplingPreset.objects.create(name="親切客服", backend=backend, system_prompt="請用繁體中文簡短回答。",
                                           is_default=True)
    group.display_name = "週末登山社"
    group.preset = preset
    group.save()
    person = Chat.objects.create(channel=channel, source_type="user", line_id=ev.DEFAULT_USER_ID,
                                 display_name="王小明")
    now = timezone.now()

    def message(chat, text, minutes_ago, **fields):
        moment = now - timedelta(minutes=minutes_ago)
        return Message.objects.create(chat=chat, text=text, event_at=moment, status_changed_at=moment,
                                      **{"direction": "in", "status": "replied", **fields})

    question = message(group, "@登山小幫手 週六要去爬山嗎？我的電話是 0912-345-678", 30, line_user_id="U" + "a1" * 16)
    answer = message(group, "好啊！週六早上八點在捷運站集合，電話 0912-345-678 我記下了。", 29, direction="out",
                     reply_to=question, preset=preset, backend=backend, latency_ms=820, prompt_tokens=42,
                     completion_tokens=31)
    message(group, "大家記得帶水", 20, status="skipped", skip_reason="not mentioned", line_user_id="U" + "b2" * 16)
    message(person, "可以幫我查訂單嗎？", 10, status="failed", error="辦公室主機: HTTP 500: busy")
    redacted = message(person, "[redacted]", 5, redacted=True, redacted_by="operator", redaction_reason="個資")
    audit.record(action=AuditAction.REDACT, actor="operator", target_type="message", target_id=redacted.pk,
                 details={"reason": "個資"})
    audit.record(action=AuditAction.BACKEND_CHANGE, actor="operator", target_type="modelbackend",
                 target_id=backend.pk, details={"created": True})
    return {"base": live_server.url, "channel": channel, "backend": backend, "preset": preset, "group": group,
            "person": person, "question": question, "answer": answer, "ollama": ollama_server}


def zh_hant_page(browser, base: str, viewport: dict | None = None):
    context = browser.new_context(viewport=viewport or {"width": 1280, "height": 900}, locale="zh-TW")
    context.add_cookies([{"name": "django_language", "value": "zh-hant", "url": base}])
    page = context.new_page()
    page.set_default_timeout(15_000)
    log_in(page, base)
    return context, page


def test_every_main_page_reads_in_traditional_chinese(browser, console):
    base, backend = console["base"], console["backend"]
    context, page = zh_hant_page(browser, base)
    found: dict[str, list[str]] = {}

    def check(name: str, url: str | None = None, action=None, screenshot: str = "") -> None:
        if url:
            page.goto(base + url)
        if action:
            action()
        page.wait_for_load_state()
        assert page.get_attribute("html", "lang") == "zh-hant", name
        if screenshot:  # before the data is taken out of the page
            shot(page, screenshot)
        words = english_words(visible_text(page))
        if words:
            found[name] = words

    def test_connection():
        with page.expect_navigation():
            page.click("form.test-connection button")

    def test_unsaved_settings():
        page.fill("#id_model", "qwen3:8b")
        page.click("[data-test-settings]")
        page.wait_for_selector("#settings-test-result .connection-report")
        page.locator("#settings-test-result").scroll_into_view_if_needed()

    def download():
        page.fill("#pull-model", "qwen3:8b")
        with page.expect_navigation():
            page.click(".pull-form button")
        page.wait_for_function("document.querySelector('.pull-progress progress').value == 100")

    def playground():
        page.select_option("#id_preset", label="親切客服")
        page.fill("#id_conversation", "明天會下雨嗎？")
        submit(page, "form.playground input[type=submit]")

    audit_event = AuditEvent.objects.filter(target_type="modelbackend").first()
    chat_pages = [
        ("dashboard", "/admin/"),
        ("chats", "/admin/conversations/chat/"),
        ("group chat", f"/admin/conversations/chat/{console['group'].pk}/change/"),
        ("1:1 chat", f"/admin/conversations/chat/{console['person'].pk}/change/"),
        ("group thread", f"/admin/conversations/chat/{console['group'].pk}/thread/"),
        ("1:1 thread", f"/admin/conversations/chat/{console['person'].pk}/thread/"),
        ("messages", "/admin/conversations/message/"),
        ("question", f"/admin/conversations/message/{console['question'].pk}/change/"),
        ("answer", f"/admin/conversations/message/{console['answer'].pk}/change/"),
        ("redact", f"/admin/conversations/message/{console['question'].pk}/redact/"),
        ("channels", "/admin/conversations/linechannel/"),
        ("channel", f"/admin/conversations/linechannel/{console['channel'].pk}/change/"),
        ("privacy policy", "/admin/conversations/privacypolicy/"),
        ("backends", "/admin/models_registry/modelbackend/"),
        ("new backend", "/admin/models_registry/modelbackend/add/"),
        ("presets", "/admin/models_registry/samplingpreset/"),
        ("preset", f"/admin/models_registry/samplingpreset/{console['preset'].pk}/change/"),
        ("new preset", "/admin/models_registry/samplingpreset/add/"),
        ("audit log", "/admin/core/auditevent/"),
        ("audit event", f"/admin/core/auditevent/{audit_event.pk}/change/"),
        # The queued-tasks page exists only on django-q2's ORM broker (Redis keeps its own queue).
        *([("queued tasks", "/admin/django_q/ormq/")] if "orm" in settings.Q_CLUSTER else []),
        ("failed tasks", "/admin/django_q/failure/"),
        ("schedules", "/admin/django_q/schedule/"),
    ]
    for name, url in chat_pages:
        check(name, url, screenshot="thread-zh-hant" if name == "group thread" else "")
    check("backend", f"/admin/models_registry/modelbackend/{backend.pk}/change/")
    check("backend settings tested", action=test_unsaved_settings, screenshot="backend-settings-zh-hant")
    check("test connection", f"/admin/models_registry/modelbackend/{backend.pk}/test/")
    check("test connection result", action=test_connection)
    check("model downloaded", action=download, screenshot="model-download-zh-hant")
    check("playground", "/admin/models_registry/samplingpreset/playground/")
    check("playground answer", action=playground, screenshot="playground-zh-hant")
    context.close()
    assert not found, "English left on zh-Hant pages:\n" + "\n".join(f"{k}: {v}" for k, v in found.items())


def fits(page) -> None:
    scroll, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert scroll <= inner, f"{page.url} scrolls sideways on a phone ({scroll}px > {inner}px)"


def test_lists_become_cards_on_a_phone(browser, console):
    base = console["base"]
    context, page = zh_hant_page(browser, base, PHONE)
    page.goto(f"{base}/admin/conversations/chat/")
    fits(page)
    cell = page.locator("#result_list td.field-source_type", has_text="一對一聊天").first
    assert cell.bounding_box()["height"] < 40, "「一對一聊天」 wraps one character per line"
    shot(page, "chats-phone-zh-hant")
    page.goto(f"{base}/admin/conversations/message/")
    fits(page)
    text = page.locator("#result_list td.field-short_text").first
    box = text.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], "a message's text runs off the screen"
    shot(page, "messages-phone-zh-hant")
    page.goto(f"{base}/admin/conversations/linechannel/{console['channel'].pk}/change/")
    fits(page)
    box = page.locator("#webhook-url").bounding_box()
    assert box["x"] + box["width"] <= PHONE["width"], "the webhook URL box runs off the screen"
    shot(page, "channel-phone-zh-hant")
    page.goto(f"{base}/admin/conversations/chat/{console['group'].pk}/thread/")
    fits(page)
    shot(page, "thread-phone-zh-hant")
    context.close()
