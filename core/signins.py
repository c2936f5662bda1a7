"""Limits on failed sign-ins, per address and per account, for the admin and the API.

Every wrong password or token is counted against the client's address (an IPv6 address
by its /64, which one client usually holds whole), a wrong password also against the
account named (case-insensitively). Once either count reaches its limit within
SIGNIN_LIMITS["WINDOW"] seconds, sign-ins from that address or as that account are
refused for SIGNIN_LIMITS["LOCKOUT"] seconds, before any password or token is checked.
Each failure is audited (`signin_failed`), each lock once (`signin_lockout`); attempts
refused while locked are not, so one address adds at most a limit's worth of events per
window.

Counts live in the `signins` cache, every entry with an expiry: what unauthenticated
clients can make the server hold is bounded, and nothing needs cleaning up.
"""
import hashlib
import ipaddress
import math
import time

from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.core.cache import caches
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest
from django.utils.translation import gettext, ngettext
from rest_framework.authentication import TokenAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed, Throttled

from . import audit
from .models import AuditAction

CACHE_ALIAS = "signins"


def client_address(*, request: HttpRequest | None) -> str:
    """The address a sign-in came from ("" without a request): the connecting one, or
    behind TRUSTED_PROXIES proxies the one the outermost of them put in X-Forwarded-For
    (as DRF's throttles read it)."""
    if request is None:
        return ""
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR")
    if settings.TRUSTED_PROXIES > 0 and forwarded:
        # Entries left of those our proxies appended were written by the client itself.
        entries = forwarded.split(",")
        return entries[-min(settings.TRUSTED_PROXIES, len(entries))].strip()
    return request.META.get("REMOTE_ADDR", "")


def retry_after(*, address: str, username: str = "") -> int:
    """Seconds until sign-ins from `address` or as `username` are accepted again; 0 if they are now."""
    keys = [_key("lock", scope, value) for scope, value, _limit in _scopes(address=address, username=username)]
    until = max(caches[CACHE_ALIAS].get_many(keys).values(), default=0) if keys else 0
    return max(0, math.ceil(until - time.time()))


def record_failure(*, address: str, username: str, method: str) -> None:
    """Audits one failed sign-in and counts it; an address or account at its limit is locked."""
    audit.record(action=AuditAction.SIGNIN_FAILED, target_type="username" if username else "address",
                 target_id=username or address, details={"ip": address, "username": username[:150], "method": method})
    window = settings.SIGNIN_LIMITS["WINDOW"]
    for scope, value, limit in _scopes(address=address, username=username):
        failures = _count(_key("fail", scope, value), window=window)
        if failures >= limit:
            _lock(scope=scope, value=value, address=address, username=username, failures=failures)


def forget_failures(*, username: str) -> None:
    """After a good sign-in: the account's earlier failures no longer count (its address's still do)."""
    caches[CACHE_ALIAS].delete(_key("fail", "account", username.casefold()))


def _scopes(*, address: str, username: str) -> list[tuple[str, str, int]]:
    limits = settings.SIGNIN_LIMITS
    scopes = []
    if address and limits["FAILURES_PER_ADDRESS"] > 0:
        scopes.append(("address", _address_bucket(address), limits["FAILURES_PER_ADDRESS"]))
    if username and limits["FAILURES_PER_ACCOUNT"] > 0:
        scopes.append(("account", username.casefold(), limits["FAILURES_PER_ACCOUNT"]))
    return scopes


def _address_bucket(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 4:
        return str(ip)
    if ip.ipv4_mapped:
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((int(ip), 64), strict=False))


def _key(kind: str, scope: str, value: str) -> str:
    # Hashed: usernames may hold anything, and some caches refuse long or odd keys.
    return f"signin:{kind}:{scope}:{hashlib.sha256(value.encode()).hexdigest()[:40]}"


def _count(key: str, *, window: int) -> int:
    cache = caches[CACHE_ALIAS]
    cache.add(key, 0, timeout=window)  # the window starts at the first failure; incr keeps its expiry
    try:
        return cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout=window)
        return 1


def _lock(*, scope: str, value: str, address: str, username: str, failures: int) -> None:
    cache = caches[CACHE_ALIAS]
    lockout = settings.SIGNIN_LIMITS["LOCKOUT"]
    # add(): of requests racing past the limit, one sets the lock and audits it.
    if cache.add(_key("lock", scope, value), time.time() + lockout, timeout=lockout):
        cache.delete(_key("fail", scope, value))
        audit.record(action=AuditAction.SIGNIN_LOCKOUT, target_type="username" if scope == "account" else "address",
                     target_id=username if scope == "account" else value,
                     details={"scope": scope, "ip": address, "username": username[:150], "failures": failures,
                              "seconds": lockout})


class LimitedModelBackend(ModelBackend):
    """Django's ModelBackend behind the limits: a locked address or account is refused
    before its password is checked, and each wrong password is counted."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if username is None:
            username = kwargs.get(get_user_model().USERNAME_FIELD)
        if username is None or password is None:
            return None
        address = client_address(request=request)
        if retry_after(address=address, username=username):
            # Unlike returning None, this stops authenticate() trying any other backend.
            raise PermissionDenied
        user = super().authenticate(request, username=username, password=password, **kwargs)
        if user is None:
            record_failure(address=address, username=username, method="password")
        else:
            forget_failures(username=username)
        return user


class SignInForm(AdminAuthenticationForm):
    """The admin's login form, saying when sign-ins are locked rather than "wrong password"."""

    def get_invalid_login_error(self) -> ValidationError:
        wait = retry_after(address=client_address(request=self.request),
                           username=self.cleaned_data.get("username") or "")
        if not wait:
            return super().get_invalid_login_error()
        minutes = math.ceil(wait / 60)
        return ValidationError(
            ngettext("Too many failed sign-ins. Try again in %(minutes)d minute.",
                     "Too many failed sign-ins. Try again in %(minutes)d minutes.", minutes),
            code="locked", params={"minutes": minutes})


class LimitedTokenAuthentication(TokenAuthentication):
    """DRF's TokenAuthentication behind the per-address limit (a token names no account).

    DRF's throttles run only after authentication, so without this a wrong token is
    answered 401 however often it is tried.
    """

    def authenticate(self, request):
        header = get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        address = client_address(request=request)
        wait = retry_after(address=address)
        if wait:
            # Even a good token: answering it would tell a guesser which guess was right.
            raise Throttled(wait=wait, detail=gettext("Too many failed sign-ins from this address."))
        try:
            return super().authenticate(request)
        except AuthenticationFailed:
            record_failure(address=address, username="", method="token")
            raise
