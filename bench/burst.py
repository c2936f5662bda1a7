#!/usr/bin/env python
"""A burst of messages with the workers running: is every message answered exactly once?

10,000 signed webhooks (one text message each, unique text) at 50 concurrent connections
while qcluster runs; then the run waits for the drain (generous deadline), lets a few
seconds pass for late duplicates, and matches the replies at the fake LINE API to the
messages through the database:

- lost: a message not `replied` in the end, or an answer stored but never delivered (a chat's
  messages that come while it is being answered get one answer together, so a message is not
  matched to a delivery of its own text);
- duplicated: a message answered more than once;
- the messages' final statuses in the database.

The trivial view is no baseline for this; beside the drain rate the run prints the
webhook acceptance rate (how fast the same server took the burst in).

    .venv/bin/python bench/burst.py                       # both stacks
    .venv/bin/python bench/burst.py --stack sqlite        # SQLite + ORM broker only

Target: zero lost and zero duplicated on each stack.
"""
from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import harness as h  # noqa: E402

STACK_CHOICES = {"sqlite": ["sqlite-orm"], "postgres-redis": ["postgres-redis"], "both": ["sqlite-orm", "postgres-redis"]}


def run_stack(name: str, args) -> dict:
    users = h.user_ids(args.users)
    with h.Stack(name, workers=args.workers, keep=args.keep) as stack:
        watcher = h.ReplyWatcher(stack.line)
        stack.lift_user_limit()
        stack.start_qcluster()
        warm = h.make_messages(args.users, users=users, tag="warm")
        h.run_load(stack.port, connections=4, messages=warm, tool=args.loadgen, workdir=stack.tmp)
        if not watcher.wait_for([m.reply for m in warm], timeout=120, procs=[stack.qcluster]):
            raise RuntimeError("warm-up replies did not arrive; see the qcluster log in " + str(stack.tmp))

        tag = uuid.uuid4().hex[:6]
        msgs = h.make_messages(args.messages, users=users, tag=tag)
        print(f"[{name}] sending {len(msgs)} webhooks at {args.concurrency} connections ...", flush=True)
        started = time.time()
        accepted = h.run_load(stack.port, connections=args.concurrency, messages=msgs, tool=args.loadgen,
                              workdir=stack.tmp)
        accepted_at = time.time()
        last_print = [0.0]

        def progress(done: int, total: int) -> None:
            if time.monotonic() - last_print[0] > 10:
                last_print[0] = time.monotonic()
                print(f"[{name}]   {done}/{total} answered after {time.time() - started:.0f} s", flush=True)

        # A chat's messages that come while it is being answered get one answer together: the
        # check is on the database (every message replied, every stored answer delivered once).
        prefix = f"bench {tag} #"
        complete = h.wait_until_answered(stack, watcher, prefix, deadline=args.deadline, progress=progress)
        time.sleep(args.settle)  # late duplicates would arrive now
        answered = h.answered_report(stack, watcher, prefix)
        drained_at = time.time()
        ours, db = answered["deliveries"], answered["db"]
        firsts = sorted(arrivals[0][0] for arrivals in ours.values())
        by_endpoint = {"reply": 0, "push": 0}
        for arrivals in ours.values():
            for _, endpoint in arrivals:
                by_endpoint[endpoint] += 1
        result = {
            "stack": name,
            "sent": len(msgs),
            "accepted_ok": accepted.ok,
            "accepted_non_ok": accepted.non_ok,
            "load_errors": accepted.errors,
            "accept_rate": accepted.rate,
            "accept_latency_ms": accepted.latency_ms,
            "accept_seconds": accepted_at - started,
            "complete": complete,
            "lost": answered["lost"],
            "duplicated": answered["duplicated"],
            "answers": answered["answers"],
            "deliveries": by_endpoint,
            "last_reply_after_s": (firsts[-1] - started) if firsts else None,
            "drain_rate": len(firsts) / (firsts[-1] - started) if firsts else 0.0,
            "tail_after_accept_s": (firsts[-1] - accepted_at) if firsts else None,
            "waited_s": drained_at - started,
            "db": db,
            "log_problems": stack.log_problems(),
            "sweeper_requeues": stack.log_count("qcluster.log", r"Sweeper: queued"),
            "line_calls": {f"{e} {s}": n for (e, s), n in watcher.endpoint_status.items()},
        }
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", choices=sorted(STACK_CHOICES), default="both", help="default both")
    parser.add_argument("--messages", type=int, default=10000, help="messages in the burst (default 10000)")
    parser.add_argument("--concurrency", type=int, default=50, help="concurrent connections (default 50)")
    parser.add_argument("--users", type=int, default=50, help="distinct LINE users (default 50)")
    parser.add_argument("--workers", type=int, default=None, help="Q_WORKERS for qcluster (default: the app's default)")
    parser.add_argument("--deadline", type=float, default=600, help="seconds to wait for every reply (default 600)")
    parser.add_argument("--settle", type=float, default=5, help="seconds to wait after the last reply, for duplicates (default 5)")
    parser.add_argument("--loadgen", choices=["python", "wrk"], default="python",
                        help="python (default): lean epoll client in bench/harness.py, exact latencies; "
                             "wrk: wrk + bench/wrk_replay.lua (its latency percentiles are coordinated-omission corrected)")
    parser.add_argument("--keep", action="store_true", help="keep temporary directories (logs, SQLite files)")
    args = parser.parse_args(argv)
    h.install_signal_handlers()

    h.print_header(f"burst: {args.messages} messages at {args.concurrency} concurrent, qcluster running")
    print(f"gunicorn 2 sync workers; qcluster Q_WORKERS={args.workers or 'default'}; {args.users} users; deadline {args.deadline:.0f} s")
    results = [run_stack(name, args) for name in STACK_CHOICES[args.stack]]

    rows = []
    for r in results:
        rows.append([h.stack_label(r["stack"]), r["sent"], r["accepted_ok"], r["accept_rate"],
                     r["accept_latency_ms"]["p99"], r["drain_rate"], r["last_reply_after_s"] or float("nan"),
                     r["lost"], r["duplicated"], h.verdict(r["lost"] == 0 and r["duplicated"] == 0)])
    print()
    print(h.table(["stack", "sent", "accepted 200", "accepted/s", "accept p99 ms", "replies/s (drain)",
                   "last reply s", "lost", "duplicated", "zero lost+dup"], rows))
    for r in results:
        print(f"  {r['stack']}: final status of the burst's messages {r['db']['inbound']}; answers {r['db']['outbound']}; "
              f"taken up more than once: {r['db']['attempts_gt_1']}; deliveries {r['deliveries']}; "
              f"sweeper re-queues logged: {r['sweeper_requeues']}; failed tasks: {r['db']['failed_tasks']}; "
              f"log errors: {r['log_problems']}; load errors: {r['load_errors']}; LINE calls: {r['line_calls']}")
    path = h.save_result("burst", {"results": results})
    print("\nSUMMARY burst: " + "; ".join(
        f"{r['stack']}: {r['lost']} lost, {r['duplicated']} duplicated of {r['sent']} "
        f"({h.verdict(r['lost'] == 0 and r['duplicated'] == 0)}), accepted {r['accept_rate']:.0f}/s, drained {r['drain_rate']:.0f}/s"
        for r in results) + f"  [raw: {path.relative_to(h.ROOT)}]")
    return 0 if all(r["lost"] == 0 and r["duplicated"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
