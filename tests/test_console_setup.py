"""First run and day to day: where "/" leads, the setup checklist, checking a channel with LINE,
the webhook URL LINE can call, webhook health and the month's LINE quota on the console."""
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission, User
from django.utils import timezone
from django_q.models import Schedule

from conversations import line_check, queue
from conversations.channel_status import webhook_url_problem
from conversations.models import ChannelHealth, LineChannel
from models_registry import selectors as registry_selectors
from tests.conftest import ACCESS_TOKEN
from tests.fakes import webhooks as ev

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def fresh_backend_health():
    """Backend checks are cached per process; a backend of an earlier test (rolled back, so no
    signal said it went) must not count as answering here."""
    registry_selectors.forget_backend_health()
    yield
    registry_selectors.forget_backend_health()


def check_url(channel) -> str:
    return f"/admin/conversations/linechannel/{channel.pk}/check/"


def change_url(channel) -> str:
    return f"/admin/conversations/linechannel/{channel.pk}/change/"


def staff(client, *codenames: str) -> User:
    user = User.objects.create_user("staff", password="staff-test-password", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    client.force_login(user)
    return user


def run_workers() -> None:
    """What a running qcluster leaves behind: the minute's sweep has run and is due again."""
    Schedule.objects.filter(func=queue.SWEEP_TASK).update(task="a1b2c3",
                                                          next_run=timezone.now() + timedelta(seconds=30))


# -- where the console starts ------------------------------------------------------------------


def test_the_root_leads_to_the_console(client, admin_client):
    response = client.get("/")
    assert response.status_code == 302 and response["Location"] == "/admin/"
    assert client.get("/", follow=True).redirect_chain[-1][0].startswith("/admin/login/")
    page = admin_client.get("/admin/").content.decode()
    assert "View site" not in page  # "/" is the console itself


def test_the_navigation_links_the_api_docs_and_tokens(client, admin_client):
    page = admin_client.get("/admin/").content.decode()
    assert 'href="/api/v1/docs/"' in page and 'href="/admin/authtoken/tokenproxy/"' in page
    assert admin_client.get("/admin/authtoken/tokenproxy/").status_code == 200
    staff(client, "view_message")
    page = client.get("/admin/").content.decode()
    assert 'href="/api/v1/docs/"' in page and "tokenproxy" not in page  # not theirs to see


def test_the_slug_help_text_shows_where_it_goes_in_the_url(admin_client):
    # Once "/line/webhook/<slug>/", which the admin showed as HTML and so without "<slug>";
    # now an example. The form still escapes the help text, should it name a placeholder again.
    page = admin_client.get("/admin/conversations/linechannel/add/").content.decode()
    assert "Part of the webhook URL, as in /line/webhook/shop/." in page


# -- checking a channel with LINE ---------------------------------------------------------------


def test_check_with_line_shows_the_bot_its_qr_code_and_quota(admin_client, channel, line_api):
    line_api.quota_used = 120
    page = admin_client.get(change_url(channel)).content.decode()
    assert "Not checked with LINE yet" in page and line_api.requests == [], "a page view calls no one"

    response = admin_client.post(check_url(channel), {"next": change_url(channel)}, follow=True)
    page = response.content.decode()
    assert response.redirect_chain == [(change_url(channel), 302)]
    assert "LINE accepts the access token of Test channel" in page
    basic_id = "@" + ev.DEFAULT_BOT_USER_ID[-8:]
    assert f'<dd class="bot-name">Fake Bot</dd>' in page and f'<dd class="basic-id">{basic_id}</dd>' in page
    assert f'href="https://line.me/R/ti/p/{basic_id}"' in page
    assert '<svg' in page and 'class="qr-code"' in page  # drawn here, no image host
    assert "120 of 500 (LINE's count)" in page
    assert ACCESS_TOKEN not in page
    assert [r.headers["authorization"] for r in line_api.requests] == [f"Bearer {ACCESS_TOKEN}"] * 4
    stored = ChannelHealth.objects.get(pk=channel.pk).line_report
    assert ACCESS_TOKEN not in json.dumps(stored) and stored["ok"] is True


def test_a_token_line_refuses_is_reported_as_such(admin_client, channel, line_api):
    LineChannel.objects.filter(pk=channel.pk).update(access_token="")  # the field is encrypted: re-save
    channel.access_token = "revoked-token"
    channel.save()
    page = admin_client.post(check_url(channel), follow=True).content.decode()
    assert "LINE refused the access token of Test channel (401)" in page
    assert line_api.count("bot_info") == 1 and line_api.count("quota") == 0
    report = line_check.last_report(channel=channel, health=ChannelHealth.objects.get(pk=channel.pk))
    assert (report.ok, report.status) == (False, 401)
    assert "revoked-token" not in page


def test_checks_are_reused_briefly_and_redone_for_a_new_token(admin_client, channel, line_api):
    admin_client.post(check_url(channel))
    admin_client.post(check_url(channel))
    assert line_api.count("bot_info") == 1
    channel.access_token = "another-token"
    channel.save()
    admin_client.post(check_url(channel))
    assert line_api.count("bot_info") == 2  # and LINE refused that one
    assert not line_check.last_report(channel=channel, health=channel.health).ok
    ChannelHealth.objects.filter(pk=channel.pk).update(
        line_report={**channel.health.line_report,
                     "checked_at": (timezone.now() - timedelta(seconds=line_check.REUSE_SECONDS + 1)).isoformat()})
    admin_client.post(check_url(channel))
    assert line_api.count("bot_info") == 3


def test_only_those_who_may_change_the_channel_can_make_it_call_line(client, channel, line_api):
    assert client.post(check_url(channel)).status_code == 302  # to the login page
    staff(client, "view_linechannel", "view_message")
    assert client.post(check_url(channel)).status_code == 403
    page = client.get(change_url(channel)).content.decode()
    assert "Check with LINE" not in page
    assert "Check with LINE" not in client.get("/admin/").content.decode()
    assert line_api.requests == []


def test_a_check_is_a_post(admin_client, channel, line_api):
    assert admin_client.get(check_url(channel)).status_code == 405
    assert admin_client.post(f"/admin/conversations/linechannel/{channel.pk + 1}/check/").status_code == 404
    assert line_api.requests == []


def test_a_check_keeps_to_this_site_when_sent_elsewhere(admin_client, channel, line_api):
    response = admin_client.post(check_url(channel), {"next": "https://evil.example/"})
    assert response["Location"] == change_url(channel)


def test_unreachable_line_is_said_plainly(admin_client, channel, settings):
    settings.LINE_API_HOST = "http://127.0.0.1:9"
    page = admin_client.post(check_url(channel), follow=True).content.decode()
    assert "LINE could not be reached" in page


@pytest.mark.parametrize("endpoint, active, expected", [
    ("https://bot.example.com/line/webhook/test/", True, "leads here"),
    ("https://bot.example.com/line/webhook/", True, "leads here"),  # the default channel's short URL
    ("https://bot.example.com/line/webhook/other/", True, "not this URL"),
    ("https://elsewhere.example.com/line/webhook/test/", True, "not this URL"),
    ("https://bot.example.com/line/webhook/test/", False, "“Use webhook” is off"),
    (None, False, "none set"),
])
def test_lines_webhook_setting_is_compared_with_ours(admin_client, channel, line_api, settings, endpoint, active,
                                                      expected):
    settings.PUBLIC_BASE_URL = "https://bot.example.com"
    line_api.webhook_endpoint, line_api.webhook_active = endpoint, active
    page = admin_client.post(check_url(channel), follow=True).content.decode()
    assert expected in page


# -- the webhook URL LINE can call ------------------------------------------------------------


@pytest.mark.parametrize("url, problem", [
    ("http://127.0.0.1:8000/line/webhook/default/", "not_https"),
    ("http://bot.example.com/line/webhook/default/", "not_https"),
    ("https://localhost:8443/line/webhook/default/", "not_public"),
    ("https://192.168.1.20/line/webhook/default/", "not_public"),
    ("https://[::1]/line/webhook/default/", "not_public"),
    ("https://raspberrypi.local/line/webhook/default/", "not_public"),
    ("https://intranet/line/webhook/default/", "not_public"),
    ("https://bot.example.com/line/webhook/default/", ""),
    ("https://203.0.113.7.sslip.io/line/webhook/default/", ""),
    ("https://[2606:4700::6810:84e5]/line/webhook/default/", ""),
])
def test_which_webhook_urls_line_can_call(url, problem):
    assert webhook_url_problem(url) == problem


def test_a_plain_http_webhook_url_comes_with_a_warning(admin_client, channel):
    page = admin_client.get(change_url(channel)).content.decode()
    assert '>http://testserver/line/webhook/test/</textarea>' in page  # a box that wraps on a phone
    assert "LINE calls only public HTTPS URLs, and this one is plain HTTP" in page and "PUBLIC_BASE_URL" in page


def test_public_base_url_gives_the_webhook_url(admin_client, channel, settings):
    settings.PUBLIC_BASE_URL = "https://bot.example.com"
    page = admin_client.get(change_url(channel)).content.decode()
    assert '>https://bot.example.com/line/webhook/test/</textarea>' in page and "PUBLIC_BASE_URL" not in page
    assert admin_client.get(f"/api/v1/channels/{channel.pk}/").json()["webhook_url"] == \
        "https://bot.example.com/line/webhook/test/"


def test_public_base_url_is_served_and_trusted_for_csrf():
    env = {**os.environ, "PUBLIC_BASE_URL": "https://bot.example.com/", "DJANGO_SETTINGS_MODULE": "tests.settings"}
    code = ("import django; django.setup(); from django.conf import settings as s; "
            "print(s.PUBLIC_BASE_URL, 'bot.example.com' in s.ALLOWED_HOSTS, s.CSRF_TRUSTED_ORIGINS)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["https://bot.example.com", "True", "['https://bot.example.com']"]


# -- webhook health on the channel page ----------------------------------------------------------


def test_the_channel_page_waits_for_line_then_shows_what_arrived(admin_client, webhook, channel):
    page = admin_client.get(change_url(channel)).content.decode()
    assert "waiting for LINE" in page and "press <em>Verify</em>" in page

    webhook.post()  # the Verify button
    page = admin_client.get(change_url(channel)).content.decode()
    assert "reached by LINE's Verify" in page

    webhook.post(ev.text_message_event("hi"), ev.text_message_event("again"))
    body = ev.payload_bytes(ev.text_message_event("forged"))
    webhook.post(body=body, signature=ev.sign(body, "an old secret"))
    page = admin_client.get(change_url(channel)).content.decode()
    assert "receiving events" in page and '<dd class="events-today">2</dd>' in page
    assert '<dd class="signatures-rejected">1 · last' in page
    assert "the secret saved here is probably not this channel" in page


# -- the dashboard --------------------------------------------------------------------------------


def test_an_empty_installation_gets_the_checklist_with_next_steps(admin_client):
    page = admin_client.get("/admin/").content.decode()
    assert "Getting started: 0 of 5 done" in page
    assert 'href="/admin/conversations/linechannel/add/"' in page and "LINE_CHANNEL_SECRET" in page
    assert 'href="/admin/models_registry/modelbackend/add/"' in page
    assert "manage.py qcluster" in page


def test_the_checklist_follows_the_setup_and_goes_when_done(admin_client, webhook, channel, line_api, settings):
    page = admin_client.get("/admin/").content.decode()
    assert "Getting started: 1 of 5 done" in page  # the fake Ollama answers
    assert 'data-step="backend"' in page and "Not checked with LINE yet" in page
    assert line_api.requests == [], "the dashboard calls LINE on nobody's GET"

    admin_client.post(check_url(channel), {"next": "/admin/"})
    settings.PUBLIC_BASE_URL = "https://bot.example.com"
    page = admin_client.get("/admin/").content.decode()
    assert "Getting started: 3 of 5 done" in page and "scan the code with LINE" in page

    webhook.post(ev.text_message_event("first!"))
    run_workers()
    page = admin_client.get("/admin/").content.decode()
    assert "Getting started" not in page


def test_the_dashboard_shows_pushes_beside_lines_quota(admin_client, webhook, channel, line_api):
    old = int((timezone.now() - timedelta(seconds=90)).timestamp() * 1000)
    webhook.post(ev.text_message_event("late", timestamp_ms=old))
    page = admin_client.get("/admin/").content.decode()
    assert "LINE messages this month" in page and "not known · 1 push by this bot" in page

    line_api.quota_limit, line_api.quota_used = None, 1
    admin_client.post(check_url(channel), {"next": "/admin/"})
    page = admin_client.get("/admin/").content.decode()
    assert "1, no limit (LINE's count) · 1 push by this bot" in page


def test_the_checklist_and_health_speak_traditional_chinese(admin_client, channel, settings):
    admin_client.cookies[settings.LANGUAGE_COOKIE_NAME] = "zh-hant"
    assert "開始使用：已完成 0／5 項" in admin_client.get("/admin/").content.decode()
    page = admin_client.get(change_url(channel)).content.decode()
    assert "與 LINE 的連線" in page and "等待 LINE" in page and "最後收到事件</dt>\n        <dd>尚未" in page
    assert "Webhook URL 的一部分，例如 /line/webhook/shop/。" in page
