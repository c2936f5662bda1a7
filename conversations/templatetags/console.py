"""The dashboard's figures for the admin index page."""
from django import template
from django.core.cache import cache
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from models_registry.selectors import backend_health

from .. import selectors
from ..charts import grouped_bars

register = template.Library()

CACHE_SECONDS = 15

# Why the bot stayed silent (Message.skip_reason, set by ingest) and LINE's message types,
# as the console shows them.
SKIP_REASONS = {
    "standby": gettext_lazy("standby mode"),
    "not text": gettext_lazy("not text"),
    "not mentioned": gettext_lazy("not mentioned"),
    "no keyword": gettext_lazy("no keyword"),
    "reply mode off": gettext_lazy("reply mode off"),
    "unsent": gettext_lazy("unsent"),
}
MESSAGE_TYPES = {
    "text": gettext_lazy("text"),
    "image": gettext_lazy("image"),
    "video": gettext_lazy("video"),
    "audio": gettext_lazy("audio"),
    "file": gettext_lazy("file"),
    "location": gettext_lazy("location"),
    "sticker": gettext_lazy("sticker"),
}


@register.filter
def skip_reason_label(reason: str) -> str:
    return SKIP_REASONS.get(reason, reason)


@register.filter
def message_type_label(message_type: str) -> str:
    return MESSAGE_TYPES.get(message_type, message_type)


@register.simple_tag(takes_context=True)
def dashboard(context) -> dict | None:
    """Figures, charts and health; cached briefly so a reload storm costs one query set."""
    request = context["request"]
    if not request.user.has_perm("conversations.view_message"):
        return None
    stats = cache.get("console:dashboard")
    if stats is None:
        stats = selectors.dashboard_stats()
        cache.set("console:dashboard", stats, CACHE_SECONDS)
    per_day = stats["messages_per_day"]
    traffic = grouped_bars([
        (day["day"].strftime("%m-%d"), [
            ("bar-in", day["in"], _("%(n)s in on %(day)s") % {"n": day["in"], "day": day["day"]}),
            ("bar-out", day["out"], _("%(n)s out on %(day)s") % {"n": day["out"], "day": day["day"]}),
        ]) for day in per_day
    ])
    latency = grouped_bars([
        (row["backend"][:14], [
            ("p50", row["p50_ms"], f"p50 {row['p50_ms']} ms"),
            ("p95", row["p95_ms"], f"p95 {row['p95_ms']} ms"),
        ]) for row in stats["latency_by_backend"]
    ])
    return {
        **stats,
        "messages_today": per_day[-1]["in"] + per_day[-1]["out"] if per_day else 0,
        "traffic_chart": traffic,
        "latency_chart": latency,
        "backends": backend_health(),
    }
