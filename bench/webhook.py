#!/usr/bin/env python
"""Webhook acknowledgement throughput and latency, beside the trivial view on the same server.

gunicorn (2 sync workers) serves the app; wrk (one thread, pre-generated bodies, see
wrk_replay.lua) fires signed webhooks, one text message event each, every one with its
own webhookEventId and reply token, at 1 and at 50 concurrent connections. In the same
run and on the same server, `GET /healthz` (a trivial Django view behind the same
middleware, no body, no database) is the baseline. No queue worker runs: this measures
verify + store + enqueue + acknowledge only.

    .venv/bin/python bench/webhook.py                    # SQLite + ORM broker
    .venv/bin/python bench/webhook.py --postgres-redis   # PostgreSQL + Redis broker
    .venv/bin/python bench/webhook.py --draining 3000    # while the workers drain a backlog

Targets: webhook events/s >= 0.5 x trivial view requests/s; p99 < 50 ms at 50 concurrent.
With `--draining N`, the queue workers (the app's default number) are answering a backlog of N
messages from N users while the webhooks are measured; the ratio is to /healthz measured just
before, workers idle. Targets then: >= 0.25 x, p99 < 150 ms.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import harness as h  # noqa: E402

RATIO_TARGET = 0.5
P99_TARGET_MS = 50.0
DRAINING_RATIO_TARGET = 0.25
DRAINING_P99_TARGET_MS = 150.0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres-redis", action="store_true", help="PostgreSQL + Redis broker instead of SQLite + ORM broker")
    parser.add_argument("--concurrency", default="1,50", help="comma-separated connection counts (default 1,50)")
    parser.add_argument("--requests", type=int, default=4000, help="webhooks (and baseline requests) per level above 1 connection (default 4000)")
    parser.add_argument("--requests-sequential", type=int, default=1000, help="the same at 1 connection (default 1000)")
    parser.add_argument("--users", type=int, default=100, help="distinct LINE users sending (default 100; each chat exists before measuring)")
    parser.add_argument("--loadgen", choices=["python", "wrk"], default="python",
                        help="python (default): lean epoll client in bench/harness.py, exact latencies; "
                             "wrk: wrk + bench/wrk_replay.lua (its latency percentiles are coordinated-omission corrected)")
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn sync workers (default 2, as deployed)")
    parser.add_argument("--draining", type=int, default=0, metavar="N",
                        help="measure the webhooks while the queue workers answer a backlog of N messages (default 0: workers stopped)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, SQLite file)")
    args = parser.parse_args(argv)
    if args.draining < 0:
        parser.error("--draining must be 0 or more")
    h.install_signal_handlers()

    name = "postgres-redis" if args.postgres_redis else "sqlite-orm"
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    h.print_header(f"webhook acknowledgement: {h.stack_label(name)}")
    if args.draining:
        print(f"gunicorn --workers {args.web_workers} (sync); queue workers (the app's default) answering a backlog "
              f"of {args.draining} messages while the webhooks are measured")
    else:
        print(f"gunicorn --workers {args.web_workers} (sync); queue workers NOT running (acknowledgement only: verify, store, enqueue, 200)")
    print("baseline: GET /healthz on the same server (same middleware, no body, no database)")
    print(f"load generator: {args.loadgen}, one request per connection (gunicorn sync workers close each one); "
          "latency = connect to last byte of the response")

    rows, results = [], {}
    ratio_target = DRAINING_RATIO_TARGET if args.draining else RATIO_TARGET
    p99_target = DRAINING_P99_TARGET_MS if args.draining else P99_TARGET_MS
    drained_during = {}
    with h.Stack(name, keep=args.keep, web_workers=args.web_workers, workers=None) as stack:
        users = h.user_ids(args.users)
        # Warm-up: both gunicorn workers import everything, every chat exists, the DB is warm.
        h.run_load(stack.port, connections=4, count=200, path="/healthz", method="GET", tool=args.loadgen, workdir=stack.tmp)
        warm = h.make_messages(max(args.users, 200), users=users, tag="warm")
        h.run_load(stack.port, connections=4, messages=warm, tool=args.loadgen, workdir=stack.tmp)
        sent = len(warm)
        for connections in levels:
            count = args.requests_sequential if connections == 1 else args.requests
            base = h.run_load(stack.port, connections=connections, count=count, path="/healthz", method="GET",
                              tool=args.loadgen, workdir=stack.tmp)
            if args.draining:
                backlog = h.make_messages(args.draining, users=h.user_ids(args.draining, seed=f"backlog-{connections}"),
                                          tag=f"backlog-{connections}")
                h.run_load(stack.port, connections=50, messages=backlog, tool=args.loadgen, workdir=stack.tmp)
                sent += len(backlog)
                stack.start_qcluster()
                watcher = h.ReplyWatcher(stack.line)
                # Measured once the workers are answering.
                while not watcher.poll():
                    time.sleep(0.05)
            window_start = time.time()
            msgs = h.make_messages(count, users=users)
            hook = h.run_load(stack.port, connections=connections, messages=msgs, tool=args.loadgen, workdir=stack.tmp)
            sent += len(msgs)
            if args.draining:
                window_end = time.time()
                watcher.poll()
                answered = sum(1 for times in watcher.deliveries.values() for at, _ in times
                               if window_start <= at <= window_end)
                drained_during[connections] = answered / (window_end - window_start)
                stack.stop_qcluster()
            results[connections] = (base, hook)
            for label, r in (("GET /healthz (baseline)", base), ("POST /line/webhook/", hook)):
                rows.append([label, connections, r.requests, r.rate, r.latency_ms["p50"], r.latency_ms["p90"],
                             r.latency_ms["p99"], r.latency_ms["max"], r.non_ok + sum(r.errors.values()),
                             r.cpu_us_per_request])
        report = stack.db_report()
        problems = stack.log_problems()

    print()
    print(h.table(["endpoint", "conns", "requests", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors", "loadgen CPU us/req"], rows))
    stored = sum(report["inbound"].values())
    print(f"\nstored inbound messages: {stored} of {sent} sent ({report['inbound']}); "
          f"tasks waiting in the ORM queue: {report['ormq_left']}; log errors: {problems}")

    top = max(levels)
    base, hook = results[top]
    ratio = hook.rate / base.rate if base.rate else 0.0
    ratio_ok = ratio >= ratio_target
    p99_ok = hook.latency_ms["p99"] < p99_target
    clean = stored == sent and all(r.non_ok == 0 for pair in results.values() for r in pair)
    if args.draining:
        print("answers/s by the workers while the webhooks were measured: "
              + ", ".join(f"{rate:.1f} at {c} conns" for c, rate in drained_during.items()))
    print(f"\ntarget webhook/trivial >= {ratio_target} at {top} conns: {ratio:.2f} -> {h.verdict(ratio_ok)}")
    print(f"target p99 < {p99_target:.0f} ms at {top} conns: {hook.latency_ms['p99']:.1f} ms -> {h.verdict(p99_ok)}")
    if not clean:
        print("WARNING: some webhooks were not answered 200 or not stored; the figures above are not valid")
    path = h.save_result(f"webhook-{name}{'-draining' if args.draining else ''}", {
        "stack": name, "draining": args.draining, "answers_per_s_during": drained_during, "levels": {c: {"baseline": vars(b), "webhook": vars(w)} for c, (b, w) in results.items()},
        "db": report, "log_problems": problems,
    })
    print(f"\nSUMMARY webhook [{h.stack_label(name)}{', workers draining' if args.draining else ''}] @{top} conns: {hook.rate:,.0f} events/s vs /healthz "
          f"{base.rate:,.0f} req/s (ratio {ratio:.2f}, {h.verdict(ratio_ok)}), p50 {hook.latency_ms['p50']:.1f} ms, "
          f"p99 {hook.latency_ms['p99']:.1f} ms ({h.verdict(p99_ok)}); @1 conn: "
          + (f"{results[1][1].rate:,.0f} events/s, p50 {results[1][1].latency_ms['p50']:.1f} ms" if 1 in results else "-")
          + f"  [raw: {path.relative_to(h.ROOT)}]")
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
