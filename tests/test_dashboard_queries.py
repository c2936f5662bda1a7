"""The dashboard's queries on a large table: each read along an index, the per-day counts
and latency samples from the index alone (what keeps the cold dashboard under 300 ms on a
million messages; bench/admin_pages.py measures it, on PostgreSQL too)."""
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from conversations import selectors
from models_registry.models import ModelBackend

pytestmark = pytest.mark.django_db


def plan(sql: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN QUERY PLAN " + sql)
        return " / ".join(row[3] for row in cursor.fetchall())


@pytest.mark.skipif(connection.vendor != "sqlite",
                    reason="reads SQLite's EXPLAIN QUERY PLAN; PostgreSQL's plans are measured by bench/admin_pages.py")
def test_dashboard_reads_messages_along_indexes_and_counts_from_them_alone(make_chat, make_message):
    backend = ModelBackend.objects.create(name="Local", kind="ollama", base_url="http://127.0.0.1:9", model="m")
    chat = make_chat("C" + "0f" * 16)
    for days_ago in range(20):
        question = make_message(chat, "q", days_ago=days_ago)
        make_message(chat, "a", days_ago=days_ago, direction="out", reply_to=question, backend=backend,
                     latency_ms=100 + days_ago)
    with CaptureQueriesContext(connection) as queries:
        stats = selectors.dashboard_stats(now=timezone.now())
    assert sum(day["out"] for day in stats["messages_per_day"]) == 14 and stats["latency_by_backend"]
    plans = {query["sql"]: plan(query["sql"]) for query in queries if '"conversations_message"' in query["sql"]}
    assert all("USING" in p for p in plans.values()), plans  # no full scan of the table
    per_day = [p for sql, p in plans.items() if "COUNT(*)" in sql and '"event_at" <' in sql]
    latency = [p for sql, p in plans.items() if sql.startswith('SELECT "conversations_message"."latency_ms"')]
    assert len(per_day) == 14 and len(latency) == 1
    assert all("COVERING INDEX message_time" in p for p in per_day), per_day
    assert "COVERING INDEX message_backend_latency" in latency[0], latency
