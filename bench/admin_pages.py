"""Server time of the console's busiest pages on a database of a million messages.

Renders each page in-process with Django's test client as a logged-in superuser (server
time only: no network, no browser) and prints the median and p95 of several renders,
beside a trivial admin page measured the same way in the same run.

    .venv/bin/python bench/admin_pages.py [--messages 1000000] [--database sqlite|postgres] [--runs 15]

Target: under 300 ms for the dashboard, the message list and a chat thread. The chat pages,
which count their whole chat, are measured beside them.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.seeding import open_database, seed_messages  # noqa: E402

TARGET_MS = 300


def measure(client, url: str, runs: int, *, before=None) -> tuple[float, float]:
    timings = []
    for _ in range(runs + 1):
        if before:
            before()
        started = time.perf_counter()
        response = client.get(url)
        elapsed = (time.perf_counter() - started) * 1000
        assert response.status_code == 200, (url, response.status_code)
        timings.append(elapsed)
    timings = timings[1:]  # the first render warms caches and connections
    timings.sort()
    return statistics.median(timings), timings[max(0, round(0.95 * len(timings)) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()

    # The test client's host; no test environment, whose template instrumentation would
    # slow every render.
    os.environ["ALLOWED_HOSTS"] = "testserver"
    with open_database(args.database):
        from django.contrib.auth import get_user_model
        from django.core.cache import cache
        from django.test import Client

        ids = seed_messages(total=args.messages)
        user = get_user_model().objects.create_superuser("bench", password="bench-password-123")
        client = Client()
        client.force_login(user)
        busiest = ids["busiest_chat"]
        pages = [
            ("trivial admin page (baseline)", "/admin/password_change/", None),
            ("dashboard, figures cached", "/admin/", None),
            ("dashboard, figures recomputed", "/admin/", cache.clear),
            ("message list", "/admin/conversations/message/", None),
            ("message list, filtered by chat", f"/admin/conversations/message/?chat__id__exact={busiest}", None),
            ("message list, failed in a date range",
             "/admin/conversations/message/?status__exact=failed&event_at__gte=2000-01-01", None),
            ("chat list", "/admin/conversations/chat/", None),
            ("chat thread, busiest chat", f"/admin/conversations/chat/{busiest}/thread/", None),
            # The chat page counts the whole chat (selectors.chat_figures); a group's also per member.
            ("chat page, busiest chat (1:1)", f"/admin/conversations/chat/{busiest}/change/", None),
            ("chat page, busiest group", f"/admin/conversations/chat/{ids['chats'][1]}/change/", None),
        ]
        print(f"\n{args.messages:,} messages on {args.database}; {args.runs} renders each (server time)\n")
        print(f"{'page':45} {'median ms':>10} {'p95 ms':>8}  target")
        results = {}
        for label, url, before in pages:
            median, p95 = measure(client, url, args.runs, before=before)
            results[label] = median
            target = "" if "baseline" in label else ("met" if median < TARGET_MS else "MISSED")
            print(f"{label:45} {median:10.1f} {p95:8.1f}  {target}")
        worst = max(v for k, v in results.items() if "baseline" not in k)
        print(f"\nsummary: slowest console page {worst:.0f} ms median (target < {TARGET_MS} ms); "
              f"trivial admin page {results['trivial admin page (baseline)']:.0f} ms")


if __name__ == "__main__":
    main()
