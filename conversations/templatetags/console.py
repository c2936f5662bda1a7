"""The dashboard's figures for the admin index page, and the console's wording of stored values."""
from django import template
from django.core.cache import cache
from django.utils.translation import gettext as _

from models_registry.selectors import backend_health

from .. import labels, selectors
from ..charts import grouped_bars

register = template.Library()

CACHE_SECONDS = 15

register.filter("skip_reason_label", labels.skip_reason_label)
register.filter("message_type_label", labels.message_type_label)
register.filter("bot_event_label", labels.bot_event_label)


@register.simple_tag(takes_context=True)
def dashboard(context) -> dict | None:
    """Figures, charts and health; cached briefly so a reload storm costs one query set."""
    request = context["request"]
    if not request.user.has_perm("conversations.view_message"):
        return None
    # ?simulated=hide leaves the simulator's chats out of the counts.
    hide_simulated = request.GET.get("simulated") == "hide"
    key = "console:dashboard:real" if hide_simulated else "console:dashboard"
    stats = cache.get(key)
    if stats is None:
        stats = selectors.dashboard_stats(include_simulated=not hide_simulated)
        cache.set(key, stats, CACHE_SECONDS)
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
        "hide_simulated": hide_simulated,
        "group_memory": selectors.group_memory_counts(),
        # What a legal hold kept from a self-service erasure: for whoever may read the audit log.
        "erasure_requests": selectors.erasure_requests() if request.user.has_perm("core.view_auditevent") else None,
    }
