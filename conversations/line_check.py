"""Asking LINE about a channel: does it accept the access token, which bot is it, what quota is left.

These calls carry the channel's access token, so they run only on an operator's POST (the
channel admin's "Check with LINE"), never on a page view or for anyone unauthenticated. The
answers are kept on the channel's ChannelHealth row, for every web process to show; a check
within REUSE_SECONDS of the last one, with the same token, reuses it instead of calling again.
"""
import logging
import re
from dataclasses import asdict, dataclass, fields
from datetime import datetime

from django.utils import timezone
from django.utils.dateparse import parse_datetime

from core.audit import keyed_hash

from .line.client import LineAPIError, LineClient, client_for
from .models import ChannelHealth, LineChannel

logger = logging.getLogger(__name__)

REUSE_SECONDS = 60
# Per call, and the check makes four: well inside a web worker's timeout.
CALL_TIMEOUT = 5.0
# LINE's basic IDs look like "@123abcde"; anything else gets no add-friend link.
BASIC_ID = re.compile(r"@[0-9A-Za-z._-]{1,40}")


@dataclass(frozen=True)
class LineReport:
    """LINE's answers to one check. `ok`: LINE accepted the access token."""

    ok: bool
    checked_at: datetime
    token: str  # which access token was checked (a keyed hash), so a new one is checked again
    status: int | None = None  # LINE's HTTP status when it refused; None when unreachable
    error: str = ""
    bot_name: str = ""
    basic_id: str = ""
    quota_type: str = ""  # "limited", "none" (no limit) or "" (not known)
    quota_limit: int | None = None
    quota_used: int | None = None
    webhook_endpoint: str | None = None  # "" when none is set in the LINE Developers console
    webhook_active: bool | None = None

    @property
    def add_friend_url(self) -> str:
        return f"https://line.me/R/ti/p/{self.basic_id}" if BASIC_ID.fullmatch(self.basic_id) else ""

    def as_json(self) -> dict:
        return {**asdict(self), "checked_at": self.checked_at.isoformat()}

    @classmethod
    def from_json(cls, data: dict) -> "LineReport | None":
        known = {field.name for field in fields(cls)}
        try:
            return cls(**{**{k: v for k, v in data.items() if k in known},
                          "checked_at": parse_datetime(data["checked_at"])})
        except (KeyError, TypeError, ValueError):
            return None


def token_fingerprint(access_token: str) -> str:
    return keyed_hash(f"line-access-token:{access_token}")[:16]


def last_report(*, channel: LineChannel, health: ChannelHealth | None) -> LineReport | None:
    """The last check of this channel, if it was made with the access token it has now."""
    if health is None or not health.line_report:
        return None
    report = LineReport.from_json(health.line_report)
    if report is None or report.token != token_fingerprint(channel.access_token):
        return None
    return report


def check_with_line(*, channel: LineChannel, now: datetime | None = None) -> LineReport:
    """Checks the channel's access token with LINE and reads its quota and webhook setting."""
    now = now or timezone.now()
    health = ChannelHealth.objects.filter(pk=channel.pk).first()
    previous = last_report(channel=channel, health=health)
    if previous is not None and (now - previous.checked_at).total_seconds() < REUSE_SECONDS:
        return previous
    # A simulated channel asks the in-project emulator, never LINE.
    client = client_for(channel) if channel.is_simulated else LineClient(channel.access_token, timeout=CALL_TIMEOUT)
    report = _ask_line(client=client, access_token=channel.access_token, now=now)
    if health is None:
        ChannelHealth.objects.get_or_create(channel=channel)
    # Only these two columns: the counters on the row change under us.
    ChannelHealth.objects.filter(pk=channel.pk).update(line_checked_at=now, line_report=report.as_json())
    return report


def _ask_line(*, client: LineClient, access_token: str, now: datetime) -> LineReport:
    token = token_fingerprint(access_token)
    try:
        bot = client.bot_info()
    except LineAPIError as exc:
        logger.info("LINE did not accept a channel's access token: %s", exc)
        return LineReport(ok=False, checked_at=now, token=token, status=exc.status, error=exc.message[:300])
    found: dict = {"bot_name": bot.display_name[:100], "basic_id": bot.basic_id[:50]}
    for name, read in (("quota", client.message_quota), ("used", client.messages_sent_this_month),
                       ("endpoint", client.webhook_endpoint)):
        try:
            value = read()
        except LineAPIError as exc:
            if name == "endpoint" and exc.status == 404:
                found.update(webhook_endpoint="", webhook_active=False)
                continue
            logger.info("LINE's %s for a channel is not known: %s", name, exc)
            if exc.status is None:  # unreachable: the next calls would wait as long again
                break
            continue
        if name == "quota":
            found.update(quota_type="none" if value is None else "limited", quota_limit=value)
        elif name == "used":
            found["quota_used"] = value
        else:
            found.update(webhook_endpoint=value[0][:500], webhook_active=value[1])
    return LineReport(ok=True, checked_at=now, token=token, **found)
