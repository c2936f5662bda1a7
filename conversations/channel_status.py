"""How each channel's link with LINE looks from the console: its webhook URL and whether LINE can
call it, the webhook traffic counted so far, and LINE's answers to the last check."""
import ipaddress
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.safestring import SafeString, mark_safe

from .line_check import LineReport, last_report
from .models import ChannelHealth, LineChannel

# A rejected signature this recent is worth a warning: the secret here may not be LINE's.
REJECTED_RECENTLY = timedelta(days=1)
LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".lan", ".home.arpa")


def webhook_url(*, channel: LineChannel, request: HttpRequest | None) -> str:
    """The URL to give LINE: on PUBLIC_BASE_URL when set, else on the address in the browser."""
    path = reverse("conversations:webhook", args=[channel.slug])
    if settings.PUBLIC_BASE_URL or request is None:
        return settings.PUBLIC_BASE_URL + path
    return request.build_absolute_uri(path)


def webhook_url_problem(url: str) -> str:
    """Why LINE cannot call this URL: "not_https", "not_public", or "" when it can."""
    parts = urlsplit(url)
    if parts.scheme != "https":
        return "not_https"
    host = (parts.hostname or "").lower().rstrip(".")
    try:
        return "" if ipaddress.ip_address(host).is_global else "not_public"
    except ValueError:
        pass
    if host == "localhost" or host.endswith(LOCAL_SUFFIXES) or "." not in host:
        return "not_public"
    return ""


@dataclass(frozen=True)
class ChannelStatus:
    channel: LineChannel
    webhook_url: str
    webhook_url_problem: str
    health: ChannelHealth  # unsaved and all zero while nothing was counted
    events_today: int
    pushes_this_month: int
    line: LineReport | None  # the last check with LINE, if made with the current access token
    rejected_recently: bool

    @property
    def state(self) -> str:
        """"receiving" (events came), "verified" (only LINE's Verify did) or "waiting" (nothing yet)."""
        if self.health.last_event_at:
            return "receiving"
        return "verified" if self.health.last_verify_at else "waiting"

    @property
    def line_endpoint_problem(self) -> str | None:
        """What is wrong with the webhook setting LINE has: "none" (no URL), "other" (a URL that
        does not lead here), "inactive" ("Use webhook" off), "" (nothing); None: not known."""
        if self.line is None or not self.line.ok or self.line.webhook_endpoint is None:
            return None
        if not self.line.webhook_endpoint:
            return "none"
        theirs, ours = urlsplit(self.line.webhook_endpoint), urlsplit(self.webhook_url)
        paths = {ours.path}
        if self.channel.is_default:
            paths.add(reverse("conversations:webhook"))
        # Seen from a browser on this machine the host says nothing of the public one.
        same_site = bool(self.webhook_url_problem) or (theirs.scheme, theirs.netloc) == (ours.scheme, ours.netloc)
        if theirs.path not in paths or not same_site:
            return "other"
        return "" if self.line.webhook_active else "inactive"

    @property
    def qr_svg(self) -> SafeString:
        return qr_svg(self.line.add_friend_url) if self.line and self.line.ok else SafeString("")


def channel_status(*, channel: LineChannel, request: HttpRequest | None, now: datetime | None = None
                   ) -> ChannelStatus:
    now = now or timezone.now()
    health = ChannelHealth.objects.filter(pk=channel.pk).first() or ChannelHealth(channel=channel)
    return _status(channel=channel, health=health, request=request, now=now)


def channel_statuses(*, request: HttpRequest | None, now: datetime | None = None) -> list[ChannelStatus]:
    """Every channel's status, the default one first; two queries whatever their number."""
    now = now or timezone.now()
    channels = LineChannel.objects.order_by("-is_default", "name")
    health = {row.pk: row for row in ChannelHealth.objects.filter(channel__in=channels)}
    return [_status(channel=channel, health=health.get(channel.pk) or ChannelHealth(channel=channel),
                    request=request, now=now) for channel in channels]


def _status(*, channel: LineChannel, health: ChannelHealth, request: HttpRequest | None, now: datetime
            ) -> ChannelStatus:
    url = webhook_url(channel=channel, request=request)
    today = timezone.localdate(now)
    return ChannelStatus(
        channel=channel,
        webhook_url=url,
        webhook_url_problem=webhook_url_problem(url),
        health=health,
        events_today=health.events_today if health.events_day == today else 0,
        pushes_this_month=health.pushes_this_month if health.pushes_month == today.replace(day=1) else 0,
        line=last_report(channel=channel, health=health),
        rejected_recently=bool(health.last_rejected_at and now - health.last_rejected_at < REJECTED_RECENTLY),
    )


def qr_svg(text: str) -> SafeString:
    """A QR code of `text` as inline SVG, drawn here: no image host learns who adds the bot."""
    if not text:
        return SafeString("")
    import segno  # only pages that show a QR code pay for it

    svg = segno.make(text, error="m").svg_inline(scale=4, border=2, dark="#111", light="#fff", svgclass="qr-code")
    # segno's own markup, from a URL whose shape LineReport.add_friend_url checked.
    return mark_safe(svg)
