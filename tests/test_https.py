"""HTTPS=true: redirect, HSTS and secure cookies, so `check --deploy` is clean; the webhook still answers."""
import re

import pytest

from linebot_site.settings import read_keys_file
from tests.fakes import webhooks as ev
from tests.test_keys import manage

CHECK_IDS = re.compile(r"\b[\w.]+\.[WE]\d{3}\b")
SHOW_SETTINGS = (
    "from django.conf import settings as s; print(s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS,"
    " s.SECURE_HSTS_INCLUDE_SUBDOMAINS, s.SECURE_HSTS_PRELOAD, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE,"
    " s.SECURE_PROXY_SSL_HEADER, s.SILENCED_SYSTEM_CHECKS)"
)


@pytest.fixture
def good_keys(tmp_path) -> dict[str, str]:
    """Keys as `manage.py generate_keys` makes them, passed in the environment."""
    assert manage(tmp_path, "generate_keys").returncode == 0
    return read_keys_file(tmp_path / ".env.local")


def test_deploy_check_is_clean_behind_https_with_good_keys(tmp_path, good_keys):
    result = manage(tmp_path, "check", "--deploy", "--fail-level", "WARNING", HTTPS="true", **good_keys)
    output = result.stdout + result.stderr
    assert CHECK_IDS.findall(output) == [], output
    assert result.returncode == 0 and "System check identified no issues" in output


def test_without_https_the_deploy_check_asks_for_it(tmp_path, good_keys):
    result = manage(tmp_path, "check", "--deploy", **good_keys)
    found = set(CHECK_IDS.findall(result.stdout + result.stderr))
    assert {"security.W004", "security.W008", "security.W012", "security.W016"} <= found
    assert not {i for i in found if i.startswith("linebot.")}


def test_the_https_switch_and_its_knobs(tmp_path, good_keys):
    def show(**env):
        result = manage(tmp_path, "shell", "-v", "0", "-c", SHOW_SETTINGS, **good_keys, **env)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    assert show() == "False 0 True False False False None ['security.W021']"
    assert show(HTTPS="true") == "True 31536000 True False True True None ['security.W021']"
    assert show(HTTPS="true", HSTS_SECONDS="3600", HSTS_INCLUDE_SUBDOMAINS="false", HSTS_PRELOAD="true",
                BEHIND_TLS_PROXY="true") == "True 3600 False True True True ('HTTP_X_FORWARDED_PROTO', 'https') []"


@pytest.fixture
def https_on(settings):
    """HTTPS=true as settings.py turns it into, behind a proxy that says X-Forwarded-Proto."""
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = True
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")


@pytest.mark.django_db
def test_plain_http_is_redirected_and_https_gets_hsts(client, https_on):
    response = client.get("/admin/login/")
    assert response.status_code == 301 and response["Location"] == "https://testserver/admin/login/"
    response = client.get("/admin/login/", HTTP_X_FORWARDED_PROTO="https")
    assert response.status_code == 200
    assert response["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    assert response.cookies["csrftoken"]["secure"] is True


@pytest.mark.django_db
def test_the_webhook_and_healthz_answer_whatever_the_scheme(webhook, client, https_on):
    """LINE calls HTTPS, but a proxy that does not say so must not turn its call into a redirect."""
    assert webhook.post(ev.text_message_event("hello")).status_code == 200
    assert client.get("/healthz").status_code == 200
