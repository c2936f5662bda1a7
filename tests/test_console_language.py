"""The console's wording and times: one time zone and format, translated labels, fields that apply."""
import re
from datetime import datetime, timezone as dt_timezone

import pytest
from django.conf import settings
from django.core.cache import cache
from django.utils import translation

from core import audit
from core.models import AuditAction, AuditEvent
from conversations.models import Message

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_dashboard():
    """The dashboard caches its figures for seconds: none of ours may reach another test."""
    cache.clear()
    yield
    cache.clear()

ZH = {"HTTP_ACCEPT_LANGUAGE": "zh-hant"}
# 14:41:38 UTC is 22:41:38 in Taipei.
MOMENT = datetime(2026, 12, 1, 14, 41, 38, 753000, tzinfo=dt_timezone.utc)


def test_times_are_shown_in_the_configured_zone_in_one_format(admin_client, make_chat, make_message):
    assert settings.TIME_ZONE == "Asia/Taipei"
    chat = make_chat("C" + "01" * 16)
    message = make_message(chat, "hello")
    Message.objects.filter(pk=message.pk).update(event_at=MOMENT)
    for url in (f"/admin/conversations/chat/{chat.pk}/change/", "/admin/conversations/chat/",
                f"/admin/conversations/chat/{chat.pk}/thread/", "/admin/conversations/message/"):
        for headers in ({}, ZH):
            page = admin_client.get(url, **headers).content.decode()
            assert "2026-12-01 22:41:38" in page, (url, headers)
            assert "+00:00" not in page and "14:41" not in page, (url, headers)


def test_an_audit_events_title_is_in_local_time_and_words(admin_client):
    event = audit.record(action=AuditAction.REDACT, actor="operator", target_type="message", target_id=7)
    AuditEvent.objects.filter(pk=event.pk).update(created_at=MOMENT)
    event.refresh_from_db()
    with translation.override("en"):
        assert str(event) == "2026-12-01 22:41:38 operator redacted a message"
    page = admin_client.get(f"/admin/core/auditevent/{event.pk}/change/", **ZH).content.decode()
    assert "2026-12-01 22:41:38 operator 塗銷訊息" in page


def test_the_audit_log_counts_events_and_names_target_types(admin_client):
    for target_type in ("modelbackend", "line_user", "samplingpreset"):
        audit.record(action=AuditAction.VIEW_CONVERSATION, actor="operator", target_type=target_type)
    page = admin_client.get("/admin/core/auditevent/").content.decode()
    count = AuditEvent.objects.count()  # the sign-in is audited too
    assert f"{count} events" in page and "audit log</p>" not in page.replace("\n", "")
    assert "model backend" in page and "LINE user" in page and ">modelbackend<" not in page
    page = admin_client.get("/admin/core/auditevent/", **ZH).content.decode()
    assert f"{count} 筆事件" in page and "模型後端" in page and "回覆設定" in page
    assert "modelbackend" not in page.split('id="changelist-filter"')[1].split("</nav>")[0].replace(
        "target_type=modelbackend", ""), "the filter names target types in words"


def test_1to1_chats_show_no_reply_mode_and_chats_cannot_be_added(admin_client, make_chat):
    person, group = make_chat("U" + "01" * 16, source_type="user"), make_chat("C" + "01" * 16)
    assert 'name="reply_mode"' not in admin_client.get(f"/admin/conversations/chat/{person.pk}/change/").content.decode()
    assert 'name="reply_prefix"' not in admin_client.get(f"/admin/conversations/chat/{person.pk}/change/").content.decode()
    assert 'name="reply_mode"' in admin_client.get(f"/admin/conversations/chat/{group.pk}/change/").content.decode()
    listing = admin_client.get("/admin/conversations/chat/").content.decode()
    assert "/admin/conversations/chat/add/" not in listing
    assert admin_client.get("/admin/conversations/chat/add/").status_code == 403
    assert len(re.findall(r'<select name="form-\d-reply_mode"', listing)) == 1, "only the group has a reply mode menu"
    assert len(re.findall(r'<select name="form-\d-preset"', listing)) == 2

def test_the_app_list_names_django_q2_and_api_tokens_in_chinese(admin_client):
    page = admin_client.get("/admin/", **ZH).content.decode()
    for label in ("工作佇列", "佇列中的工作" if "orm" in settings.Q_CLUSTER else "排程工作", "失敗的工作",
                  "API 存取權杖", "回覆設定"):
        assert label in page, label
    for english in ("Task queue", "Queued tasks", "Tokens", "Auth Token"):
        assert english not in page, english


def test_a_redacted_message_reads_redacted_in_the_operators_language(admin_client, make_chat, make_message):
    chat = make_chat("C" + "01" * 16)
    message = make_message(chat, "0912-345-678")
    admin_client.post(f"/admin/conversations/message/{message.pk}/redact/", {"reason": "PII"})
    page = admin_client.get("/admin/conversations/message/", **ZH).content.decode()
    assert "［已塗銷］" in page and "[redacted]" not in page
    page = admin_client.get(f"/admin/conversations/chat/{chat.pk}/thread/", **ZH).content.decode()
    assert "［已塗銷］" in page and "[redacted]" not in page


def test_why_the_bot_stayed_silent_is_worded(admin_client, make_chat, make_message):
    chat = make_chat("C" + "01" * 16)
    make_message(chat, "大家記得帶水", status="skipped", skip_reason="not mentioned")
    page = admin_client.get(f"/admin/conversations/chat/{chat.pk}/thread/", **ZH).content.decode()
    assert "未標註機器人" in page and "not mentioned" not in page
