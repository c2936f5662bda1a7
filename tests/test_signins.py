"""Failed sign-ins, on the admin login and the API: limited per address and per account, and audited."""
import importlib
import os
import time
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from core.models import AuditEvent

pytestmark = pytest.mark.django_db

README = Path(__file__).resolve().parent.parent / "README.md"
LOGIN = "/admin/login/?next=/admin/"
PASSWORD = "a-long-test-password"
PER_ADDRESS, PER_ACCOUNT, WINDOW, LOCKOUT = 5, 8, 900, 60


@pytest.fixture(autouse=True)
def limits(settings):
    # A cheap hasher: these tests try dozens of passwords.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"user": None, "anon": None}}
    settings.SIGNIN_LIMITS = {"FAILURES_PER_ADDRESS": PER_ADDRESS, "FAILURES_PER_ACCOUNT": PER_ACCOUNT,
                              "WINDOW": WINDOW, "LOCKOUT": LOCKOUT}


@pytest.fixture
def boss(db) -> User:
    return User.objects.create_superuser("boss", password=PASSWORD)


@pytest.fixture
def later(monkeypatch):
    """Moves the clock (and with it the cache's expiry) forward by some seconds."""
    real = time.time
    shift = 0.0

    def move(seconds: float) -> None:
        nonlocal shift
        shift += seconds
        monkeypatch.setattr(time, "time", lambda: real() + shift)

    return move


def sign_in(client, username: str = "boss", password: str = PASSWORD, address: str = "127.0.0.1"):
    return client.post(LOGIN, {"username": username, "password": password}, REMOTE_ADDR=address)


def signed_in(client) -> bool:
    return "_auth_user_id" in client.session


# --- The admin login ------------------------------------------------------------------


def test_thirty_wrong_passwords_then_the_right_one_is_refused_until_the_lock_ends(client, boss, later):
    for number in range(30):
        sign_in(client, password=f"guess-{number}")

    refused = sign_in(client)
    assert refused.status_code == 200 and not signed_in(client)
    assert "Too many failed sign-ins" in refused.content.decode()
    assert not AuditEvent.objects.filter(action="admin_login").exists()

    later(LOCKOUT + 1)
    assert sign_in(client).status_code == 302 and signed_in(client)


def test_failed_sign_ins_are_audited_with_address_and_username_never_the_password(client, boss):
    for number in range(3):
        sign_in(client, password=f"secret-guess-{number}", address="203.0.113.7")
    sign_in(client, username="nobody-here", password="secret-guess-x", address="203.0.113.7")

    events = list(AuditEvent.objects.filter(action="signin_failed").order_by("id"))
    assert [(e.details["ip"], e.details["username"], e.target_id) for e in events] == (
        [("203.0.113.7", "boss", "boss")] * 3 + [("203.0.113.7", "nobody-here", "nobody-here")])
    assert all(e.actor_id is None for e in events)
    assert "secret-guess" not in str([(e.details, e.target_id, e.actor_username) for e in events])


def test_a_lockout_is_audited_once_and_refused_attempts_add_no_events(client, boss):
    for number in range(PER_ADDRESS + 10):
        sign_in(client, password=f"guess-{number}", address="198.51.100.9")

    assert AuditEvent.objects.filter(action="signin_failed").count() == PER_ADDRESS
    lockout = AuditEvent.objects.get(action="signin_lockout")
    assert lockout.details["scope"] == "address" and lockout.details["ip"] == "198.51.100.9"
    assert lockout.details["seconds"] == LOCKOUT


def test_an_address_lock_does_not_block_the_account_from_another_address(client, boss):
    for number in range(PER_ADDRESS):
        sign_in(client, password=f"guess-{number}", address="10.0.0.1")

    assert sign_in(client, address="10.0.0.1").status_code == 200 and not signed_in(client)
    assert sign_in(client, address="10.0.0.2").status_code == 302 and signed_in(client)


def test_the_account_limit_holds_across_addresses(client, boss):
    User.objects.create_user("other", password=PASSWORD, is_staff=True)
    for number in range(PER_ACCOUNT):  # one failure per address: no address reaches its limit
        sign_in(client, password=f"guess-{number}", address=f"10.0.1.{number}")

    assert sign_in(client, address="10.0.2.1").status_code == 200 and not signed_in(client)
    lockout = AuditEvent.objects.get(action="signin_lockout")
    assert (lockout.details["scope"], lockout.details["username"]) == ("account", "boss")
    # The address itself is not locked: another account signs in from it.
    assert sign_in(client, username="other", address="10.0.2.1").status_code == 302


def test_the_account_limit_ignores_case(client, boss):
    for number in range(PER_ACCOUNT):
        sign_in(client, username="BOSS" if number % 2 else "boss", password=f"guess-{number}",
                address=f"10.0.3.{number}")

    assert sign_in(client, address="10.0.4.1").status_code == 200 and not signed_in(client)


def test_ipv6_addresses_in_one_slash_64_share_a_limit(client, boss):
    for number in range(PER_ADDRESS):
        sign_in(client, password=f"guess-{number}", address=f"2001:db8:0:1::{number + 1}")

    assert sign_in(client, address="2001:db8:0:1::ffff").status_code == 200 and not signed_in(client)
    assert sign_in(client, address="2001:db8:0:2::1").status_code == 302


def test_a_good_sign_in_starts_the_account_count_afresh(client, boss):
    def fail(times: int) -> None:
        for number in range(times):
            sign_in(client, password=f"guess-{number}", address=f"10.0.5.{number}")

    fail(PER_ACCOUNT - 1)
    assert sign_in(client, address="10.0.6.1").status_code == 302
    client.logout()
    fail(PER_ACCOUNT - 1)
    assert sign_in(client, address="10.0.6.1").status_code == 302
    client.logout()
    fail(PER_ACCOUNT)
    assert sign_in(client, address="10.0.6.1").status_code == 200 and not signed_in(client)


def test_failures_older_than_the_window_are_forgotten(client, boss, later):
    for number in range(PER_ADDRESS - 1):
        sign_in(client, password=f"guess-{number}", address="10.0.7.1")
    later(WINDOW + 1)
    for number in range(PER_ADDRESS - 1):
        sign_in(client, password=f"guess-{number}", address="10.0.7.1")
    assert sign_in(client, address="10.0.7.1").status_code == 302
    client.logout()

    sign_in(client, password="one-too-many", address="10.0.7.1")  # the 5th within one window
    assert sign_in(client, address="10.0.7.1").status_code == 200 and not signed_in(client)


def test_a_forwarded_for_header_is_ignored_unless_a_proxy_is_trusted(client, boss):
    for number in range(PER_ADDRESS):  # each claiming another address
        client.post(LOGIN, {"username": "boss", "password": f"guess-{number}"}, REMOTE_ADDR="10.0.8.1",
                    HTTP_X_FORWARDED_FOR=f"198.51.100.{number}")

    refused = client.post(LOGIN, {"username": "boss", "password": PASSWORD}, REMOTE_ADDR="10.0.8.1",
                          HTTP_X_FORWARDED_FOR="198.51.100.200")
    assert refused.status_code == 200 and not signed_in(client)


def test_behind_a_trusted_proxy_the_address_it_forwards_counts(client, boss, settings):
    settings.TRUSTED_PROXIES = 1
    proxy = "10.0.9.1"
    for number in range(PER_ADDRESS):  # a client's own X-Forwarded-For entry comes first; the proxy's last
        client.post(LOGIN, {"username": "boss", "password": f"guess-{number}"}, REMOTE_ADDR=proxy,
                    HTTP_X_FORWARDED_FOR=f"203.0.113.{number}, 198.51.100.1")

    assert AuditEvent.objects.filter(action="signin_failed").first().details["ip"] == "198.51.100.1"
    refused = client.post(LOGIN, {"username": "boss", "password": PASSWORD}, REMOTE_ADDR=proxy,
                          HTTP_X_FORWARDED_FOR="198.51.100.1")
    assert refused.status_code == 200 and not signed_in(client)
    allowed = client.post(LOGIN, {"username": "boss", "password": PASSWORD}, REMOTE_ADDR=proxy,
                          HTTP_X_FORWARDED_FOR="198.51.100.2")
    assert allowed.status_code == 302 and signed_in(client)


# --- The API ------------------------------------------------------------------------


def token_client(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def test_bad_tokens_from_one_address_are_answered_429_with_retry_after(boss):
    good = Token.objects.create(user=boss).key
    codes = [token_client(f"wrong-{n}").get("/api/v1/backends/", REMOTE_ADDR="192.0.2.1").status_code
             for n in range(PER_ADDRESS + 3)]
    assert codes == [401] * PER_ADDRESS + [429] * 3

    locked = token_client(good).get("/api/v1/backends/", REMOTE_ADDR="192.0.2.1")
    assert locked.status_code == 429  # no token is checked while the address is locked
    assert 0 < int(locked["Retry-After"]) <= LOCKOUT
    assert token_client(good).get("/api/v1/backends/", REMOTE_ADDR="192.0.2.2").status_code == 200


def test_bad_tokens_are_audited_without_the_token(boss, later):
    for number in range(PER_ADDRESS):
        token_client(f"tok3n-guess-{number}").get("/api/v1/backends/", REMOTE_ADDR="192.0.2.3")

    failures = AuditEvent.objects.filter(action="signin_failed")
    assert failures.count() == PER_ADDRESS
    assert {(e.details["ip"], e.details["method"]) for e in failures} == {("192.0.2.3", "token")}
    lockout = AuditEvent.objects.get(action="signin_lockout")
    assert lockout.details["ip"] == "192.0.2.3"
    assert "tok3n-guess" not in str(list(AuditEvent.objects.values()))

    later(LOCKOUT + 1)
    assert token_client(Token.objects.create(user=boss).key).get(
        "/api/v1/backends/", REMOTE_ADDR="192.0.2.3").status_code == 200


def test_bad_tokens_and_wrong_passwords_count_against_the_same_address(client, boss):
    for number in range(PER_ADDRESS - 1):
        token_client(f"wrong-{number}").get("/api/v1/backends/", REMOTE_ADDR="192.0.2.4")
    sign_in(client, password="wrong", address="192.0.2.4")

    assert sign_in(client, address="192.0.2.4").status_code == 200 and not signed_in(client)


def test_the_schema_endpoint_counts_bad_tokens_too(db):
    codes = [token_client(f"wrong-{n}").get("/api/v1/schema/", REMOTE_ADDR="192.0.2.5").status_code
             for n in range(PER_ADDRESS + 1)]
    assert codes == [401] * PER_ADDRESS + [429]


# --- Settings -----------------------------------------------------------------------


def test_limits_come_from_the_environment_and_are_documented():
    from linebot_site import settings as configured  # the module: the fixture overrides django.conf

    assert configured.SIGNIN_LIMITS == {
        "FAILURES_PER_ADDRESS": int(os.environ.get("SIGNIN_FAILURES_PER_ADDRESS", "20")),
        "FAILURES_PER_ACCOUNT": int(os.environ.get("SIGNIN_FAILURES_PER_ACCOUNT", "10")),
        "WINDOW": int(os.environ.get("SIGNIN_FAILURE_WINDOW", "900")),
        "LOCKOUT": int(os.environ.get("SIGNIN_LOCKOUT", "900")),
    }
    assert configured.TRUSTED_PROXIES == int(os.environ.get("TRUSTED_PROXIES", "0"))
    assert configured.REST_FRAMEWORK["NUM_PROXIES"] == configured.TRUSTED_PROXIES  # DRF's throttles agree
    readme = README.read_text()
    for name in ("SIGNIN_FAILURES_PER_ADDRESS", "SIGNIN_FAILURES_PER_ACCOUNT", "SIGNIN_FAILURE_WINDOW",
                 "SIGNIN_LOCKOUT", "SIGNIN_CACHE_URL", "TRUSTED_PROXIES"):
        assert f"| `{name}` |" in readme


def test_counts_live_in_a_bounded_cache_or_a_shared_one(monkeypatch):
    from linebot_site import settings as configured

    local = configured.CACHES["signins"]
    assert local["BACKEND"] == "django.core.cache.backends.locmem.LocMemCache"
    assert 0 < local["OPTIONS"]["MAX_ENTRIES"] <= 100_000

    monkeypatch.setenv("SIGNIN_CACHE_URL", "redis://cache.internal:6379/1")
    try:
        shared = importlib.reload(configured).CACHES["signins"]
    finally:
        monkeypatch.delenv("SIGNIN_CACHE_URL")
        importlib.reload(configured)
    assert shared["BACKEND"] == "django.core.cache.backends.redis.RedisCache"
    assert shared["LOCATION"] == "redis://cache.internal:6379/1"
