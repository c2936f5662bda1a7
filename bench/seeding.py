"""A throw-away database with a million messages, for the admin and compliance benchmarks.

`open_database()` points Django at a new SQLite file or PostgreSQL database, migrates it
and drops it afterwards; `seed_messages()` fills it with raw multi-row INSERTs (the ORM
would take minutes) shaped like a real installation: many chats, in and out, 90 days,
then does what autovacuum would soon do to it (`VACUUM (ANALYZE)` on PostgreSQL, `ANALYZE`
on SQLite).
"""
from __future__ import annotations

import contextlib
import os
import random
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PG_DSN = os.environ.get("BENCH_PG_DSN", "postgres://postgres@127.0.0.1:5432")


@contextlib.contextmanager
def open_database(kind: str):
    """Yields the DATABASE_URL of a fresh, migrated database of `kind` ("sqlite" or "postgres")."""
    import psycopg

    workdir = Path(tempfile.mkdtemp(prefix="linebot-bench-"))
    name = f"bench_{uuid.uuid4().hex[:10]}"
    if kind == "sqlite":
        url = f"sqlite:///{workdir / 'bench.sqlite3'}"
    else:
        with psycopg.connect(f"{PG_DSN}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = f"{PG_DSN}/{name}"
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "linebot_site.settings")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    try:
        yield url
    finally:
        from django.db import connections

        connections.close_all()
        if kind == "postgres":
            with psycopg.connect(f"{PG_DSN}/postgres", autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        for path in workdir.iterdir():
            path.unlink()
        workdir.rmdir()


WORDS = ("明天 幾點 集合 好 的 謝謝 請問 天氣 下雨 爬山 週末 晚餐 會議 報告 hello thanks see you "
         "lunch train ticket 台北 高雄 お願いします 了解 です").split()


def seed_messages(*, total: int, chats: int = 200, days: int = 90, seed: int = 7) -> dict:
    """Inserts `total` messages (half questions, half answers) over `days` days into `chats` chats.

    Returns ids: {"channel": id, "chats": [ids], "busiest_chat": id, "backends": [ids]}.
    """
    from django.db import connection, transaction
    from django.utils import timezone as dj_timezone

    from conversations.models import Chat, LineChannel, Message
    from models_registry.models import ModelBackend, SamplingPreset

    rng = random.Random(seed)
    channel = LineChannel.objects.create(name="Bench", slug="bench", channel_secret="s", access_token="t",
                                         is_default=True)
    backends = [ModelBackend.objects.create(name=name, kind="ollama", base_url="http://127.0.0.1:9", model="m")
                for name in ("Local Ollama", "vLLM box")]
    preset = SamplingPreset.objects.create(name="Default", backend=backends[0], is_default=True)
    chat_rows = [Chat(channel=channel, source_type="group" if i % 3 else "user",
                      line_id=("C" if i % 3 else "U") + f"{i:032x}", display_name=f"Chat {i}") for i in range(chats)]
    Chat.objects.bulk_create(chat_rows)
    chat_ids = list(Chat.objects.order_by("id").values_list("id", flat=True))
    # A Zipf-ish spread: a few chats hold most messages, like real groups.
    weights = [1 / (rank + 1) for rank in range(len(chat_ids))]

    fields = [f for f in Message._meta.concrete_fields if not f.primary_key]
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    now = dj_timezone.now()
    start = now - timedelta(days=days)
    span = (now - start).total_seconds()
    defaults = {f.attname: f.get_default() for f in fields}
    # Both SQLite and PostgreSQL cap the parameters of one statement (32,766 / 65,535).
    rows_per_insert = 30_000 // len(fields)
    placeholders = "(" + ", ".join(["%s"] * len(fields)) + ")"
    started = time.perf_counter()
    pairs = total // 2
    chosen = rng.choices(chat_ids, weights=weights, k=pairs)
    stamps = sorted(start + timedelta(seconds=rng.random() * span) for _ in range(pairs))
    with connection.cursor() as cursor:
        rows: list[tuple] = []
        next_id = 1
        for index in range(pairs):
            when = stamps[index]
            chat_id = chosen[index]
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 12)))
            failed = rng.random() < 0.01
            question = {**defaults, "chat_id": chat_id, "direction": "in", "line_user_id": f"U{index % 5000:032x}",
                        "text": text, "line_message_id": str(10**17 + index), "webhook_event_id": f"BENCH{index:021d}",
                        "event_at": when, "status": "failed" if failed else "replied", "status_changed_at": when,
                        "created_at": when, "attempts": 1}
            answer = {**defaults, "chat_id": chat_id, "direction": "out", "text": "echo: " + text,
                      "event_at": when + timedelta(seconds=1), "status": "replied",
                      "status_changed_at": when, "created_at": when, "reply_to_id": next_id, "preset_id": preset.pk,
                      "backend_id": backends[index % 2].pk, "latency_ms": int(rng.lognormvariate(6.5, 0.5)),
                      "prompt_tokens": 40, "completion_tokens": 20, "delivered_calls": 1}
            for row in (question, answer):
                rows.append(tuple(f.get_db_prep_save(row[f.attname], connection) for f in fields))
            next_id += 2
            if len(rows) >= rows_per_insert - 1 or index == pairs - 1:
                sql = f"INSERT INTO {Message._meta.db_table} ({columns}) VALUES " + ", ".join([placeholders] * len(rows))
                with transaction.atomic():
                    cursor.execute(sql, [value for row in rows for value in row])
                rows = []
        # What autovacuum does to a table this size soon after a load: statistics for the
        # planner and, on PostgreSQL, the visibility map without which an index-only scan
        # still reads every heap row (the cold dashboard took 460 ms without it).
        cursor.execute("VACUUM (ANALYZE)" if connection.vendor == "postgresql" else "ANALYZE")
    seconds = time.perf_counter() - started
    busiest = Message.objects.filter(chat_id=chat_ids[0]).count()
    print(f"seeded {pairs * 2:,} messages in {len(chat_ids)} chats over {days} days in {seconds:.1f} s "
          f"(busiest chat: {busiest:,})", flush=True)
    return {"channel": channel.pk, "chats": chat_ids, "busiest_chat": chat_ids[0], "backends": [b.pk for b in backends]}
