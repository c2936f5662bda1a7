"""Compliance work on a million messages: export, purge, PII masking.

    .venv/bin/python bench/compliance.py [--messages 1000000] [--database sqlite|postgres|both]

- Export: `manage.py export_conversations` of every message to JSONL, in its own process,
  timed and with its peak memory (max RSS); baseline in the same run: reading the same
  rows with a plain `values_list` loop and no writing.
- Purge: 500,000 expired messages (half the table) through `manage.py purge_expired`;
  baseline: the same rows counted with one query.
- Masking: `mask_pii` over the test corpus, on one core (see also bench/pii_masking.py).

Targets: export ≥ 50,000 rows/s with peak memory under 150 MB; purge of 500,000 under
60 s on SQLite and on PostgreSQL; masking ≥ 5,000 messages/s.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.seeding import open_database, seed_messages  # noqa: E402


# Starts the command from a small process and prints its peak RSS: a child's ru_maxrss counts
# the memory of the process it was started from (Linux keeps the high-water mark across
# exec), so measured from this one, which holds the seeding, it read 122-129 MB for an export
# that `/usr/bin/time` saw peak at 105 MB.
PEAK_WRAPPER = ("import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
                "print(f'peak_kb={resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}', file=sys.stderr); "
                "sys.exit(code)")


def run_command(args: list[str]) -> tuple[float, float, str]:
    """Runs a manage.py command in a child process: (seconds, peak RSS in MB, output)."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", PEAK_WRAPPER, sys.executable, "manage.py", *args], cwd=ROOT,
                            capture_output=True, text=True, env=os.environ.copy())
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    peak_mb = int(result.stderr.rsplit("peak_kb=", 1)[1]) / 1024
    return seconds, peak_mb, result.stdout + result.stderr


def bench_database(kind: str, total: int) -> dict:
    print(f"\n== {kind}: {total:,} messages ==", flush=True)
    with open_database(kind):
        from conversations.models import Message, PrivacyPolicy

        seed_messages(total=total, days=90)
        # Export: every message, to JSONL, in its own process.
        with tempfile.TemporaryDirectory() as workdir:
            started = time.perf_counter()
            rows = sum(1 for _ in Message.objects.order_by("id").values_list(
                "id", "chat__line_id", "direction", "text", "event_at").iterator(chunk_size=5000))
            read_seconds = time.perf_counter() - started
            output = Path(workdir) / "all.jsonl"
            seconds, peak_mb, _ = run_command(["export_conversations", "--since", "2000-01-01", "--until", "2100-01-01",
                                                "--output", str(output)])
            manifest = json.loads(Path(f"{output}.manifest.json").read_text())
            assert manifest["rows"] == rows == total, (manifest["rows"], rows, total)
            export = {"rows": rows, "seconds": seconds, "rows_per_s": rows / seconds, "peak_mb": peak_mb,
                      "baseline_read_rows_per_s": rows / read_seconds, "bytes": manifest["bytes"]}
            print(f"export: {rows:,} rows in {seconds:.1f} s = {export['rows_per_s']:,.0f} rows/s, peak RSS "
                  f"{peak_mb:.0f} MB (baseline, plain read of the rows: {export['baseline_read_rows_per_s']:,.0f} rows/s)",
                  flush=True)
        # Purge: retention of 45 days expires about half of a 90-day table.
        PrivacyPolicy.objects.update_or_create(pk=1, defaults={"retention_days": 45})
        from datetime import timedelta

        from django.utils import timezone

        started = time.perf_counter()
        expired = Message.objects.filter(event_at__lt=timezone.now() - timedelta(days=45)).count()
        count_seconds = time.perf_counter() - started
        purge_started = timezone.now()
        seconds, _, out = run_command(["purge_expired"])
        left = Message.objects.count()
        purge = {"expired": expired, "seconds": seconds, "rows_per_s": expired / seconds, "left": left,
                 "baseline_count_seconds": count_seconds}
        # A few more may expire between the count and the purge (the seeded days end now).
        assert left <= total - expired, (left, total, expired)
        assert not Message.objects.filter(event_at__lt=purge_started - timedelta(days=45)).exists()
        print(f"purge: {expired:,} expired messages deleted in {seconds:.1f} s = {purge['rows_per_s']:,.0f} rows/s "
              f"(baseline, counting them: {count_seconds:.2f} s); {left:,} left", flush=True)
    return {"export": export, "purge": purge}


def bench_masking() -> dict:
    from conversations.pii import mask_pii

    corpus = [json.loads(line)["text"] for line in (ROOT / "tests/data/pii_corpus.jsonl").read_text().splitlines()]
    messages = (corpus * (20_000 // len(corpus) + 1))[:20_000]
    started = time.perf_counter()
    for text in messages:
        text.lower()
    baseline = len(messages) / (time.perf_counter() - started)
    started = time.perf_counter()
    for text in messages:
        mask_pii(text)
    rate = len(messages) / (time.perf_counter() - started)
    print(f"\nmasking: {rate:,.0f} messages/s on one core (baseline str.lower: {baseline:,.0f}/s)", flush=True)
    return {"messages_per_s": rate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--database", choices=["sqlite", "postgres", "both"], default="both")
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "linebot_site.settings")
    results = {}
    for kind in (["sqlite", "postgres"] if args.database == "both" else [args.database]):
        # Each database in its own interpreter: Django is set up once per process.
        if args.database == "both":
            subprocess.run([sys.executable, __file__, "--messages", str(args.messages), "--database", kind], check=True)
            continue
        results[kind] = bench_database(kind, args.messages)
    if args.database != "postgres":
        os.environ.setdefault("DATABASE_URL", "sqlite:///:memory:")
        import django

        django.setup()
        results["masking"] = bench_masking()
    for kind, figures in results.items():
        if kind == "masking":
            continue
        e, p = figures["export"], figures["purge"]
        print(f"summary {kind}: export {e['rows_per_s']:,.0f} rows/s (target ≥ 50,000), peak {e['peak_mb']:.0f} MB "
              f"(target < 150); purge {p['expired']:,} in {p['seconds']:.1f} s (target < 60 s)")


if __name__ == "__main__":
    main()
