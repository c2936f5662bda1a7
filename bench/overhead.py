#!/usr/bin/env python
"""The reply pipeline's own overhead, with a model that answers instantly.

1. Latency: sequential messages (the next is sent once the previous reply arrived); for
   each, the time from just before the webhook is sent to the moment the fake LINE API
   received the reply (its recorded `received_at`; same machine, same clock).
2. Throughput: with qcluster stopped, N webhooks are posted (a backlog); then qcluster
   starts and the clock runs until all N replies arrived at the fake LINE API.

Baseline, in the same run: the two calls the pipeline cannot avoid, made directly from
Python with the same client libraries and kept-alive connections: the fake Ollama's
/api/chat, then a reply at the fake LINE API. What remains is the pipeline's own cost
(webhook, database, queue, worker, the loading-animation call).

Stacks (default: SQLite + ORM broker and SQLite + Redis broker; --postgres-redis adds
PostgreSQL + Redis). qcluster runs with the app's default Q_WORKERS (1, as `make run` has it) unless --workers says.

3. The realistic backlog: the same, but every answer pushed (the reply tokens went stale:
   LINEBOT_REPLY_TOKEN_MAX_AGE=0), an OpenAI-compatible backend, and the web server taking
   webhooks (group chatter it stores but does not answer) at 50 connections meanwhile.
   Backlog messages come from one user each (a chat's waiting messages get one answer).

Load generator: the lean epoll client in bench/harness.py (default) or wrk (--loadgen wrk).

Targets: p50 < 70 ms (ORM broker), < 30 ms (Redis broker); backlog drain >= 200 answers/s.
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import harness as h  # noqa: E402
from tests.fakes import webhooks as wh  # noqa: E402

P50_TARGET_MS = {"orm": 70.0, "redis": 30.0}
DRAIN_TARGET = 200.0


def baseline(calls: int, users: list[str]) -> dict:
    """Direct round trips to the two fakes: Ollama /api/chat, then a LINE reply (and, apart, the loading call)."""
    import tempfile

    import ollama
    from linebot.v3.messaging import (ApiClient, Configuration, MessagingApi, ReplyMessageRequest,
                                      ShowLoadingAnimationRequest, TextMessage)

    workdir = Path(tempfile.mkdtemp(prefix="bench-baseline-"))
    line = fake_ollama = None
    try:
        line = h.Fake("line_api", "--access-token", h.ACCESS_TOKEN, log=workdir / "line.log")
        fake_ollama = h.Fake("ollama", log=workdir / "ollama.log")
        client = ollama.Client(host=fake_ollama.url, timeout=10)
        api = MessagingApi(ApiClient(Configuration(host=line.url, access_token=h.ACCESS_TOKEN)))
        two, loading = [], []
        for i in range(calls + 20):
            text = f"baseline {i}"
            started = time.perf_counter()
            answer = client.chat(model="gemma3:4b", messages=[{"role": "user", "content": text}], stream=False)
            api.reply_message(ReplyMessageRequest(reply_token=uuid.uuid4().hex,
                                                  messages=[TextMessage(text=answer.message.content)]))
            middle = time.perf_counter()
            api.show_loading_animation(ShowLoadingAnimationRequest(chat_id=users[i % len(users)], loading_seconds=20))
            ended = time.perf_counter()
            if i >= 20:  # the first calls warm up connections and imports
                two.append((middle - started) * 1000)
                loading.append((ended - middle) * 1000)
        return {"chat+reply": two, "loading": loading}
    finally:
        for fake in (line, fake_ollama):
            if fake is not None:
                fake.close()
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)


def run_stack(name: str, args) -> dict:
    users = h.user_ids(args.users)
    out: dict = {"stack": name}
    with h.Stack(name, workers=args.workers, keep=args.keep) as stack:
        watcher = h.ReplyWatcher(stack.line)
        stack.start_qcluster()
        # Warm-up: qcluster up, every chat created (and its profile fetched), workers warm.
        # One message per user: a chat's messages that wait are answered together, and each is
        # waited for by its own text.
        warm = h.make_messages(args.users + 20, users=users + h.user_ids(20, seed="warm-extra"), tag="warm")
        for msg in warm:
            h.post_webhook(stack.port, msg)
        if not watcher.wait_for([m.reply for m in warm], timeout=120, procs=[stack.qcluster]):
            raise RuntimeError("warm-up replies did not arrive; see the qcluster log in " + str(stack.tmp))

        # 1. sequential latency
        msgs = h.make_messages(args.messages, users=users)
        e2e, acks = [], []
        for msg in msgs:
            sent_at = time.time()
            status, ack, _ = h.post_webhook(stack.port, msg)
            if status != 200:
                raise RuntimeError(f"webhook answered {status}")
            acks.append(ack * 1000)
            deadline = time.monotonic() + 30
            while msg.reply not in watcher.deliveries:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no reply to {msg.text!r} within 30 s")
                time.sleep(0.005)
                watcher.poll()
            e2e.append((watcher.deliveries[msg.reply][0][0] - sent_at) * 1000)
        out["latency_ms"] = e2e
        out["ack_ms"] = acks

        # 2. backlog drain, as in the first rounds: every answer by reply, the web server idle.
        #    One user per message: a chat's messages that wait are answered together.
        out["backlog"], out["duplicates"] = drain(stack, watcher, args, tag="plain")

        # 3. the realistic backlog: answers pushed because the reply tokens went stale, an
        #    OpenAI-compatible backend, and the web server taking webhooks meanwhile.
        model = h.Fake("openai_compat", log=stack.tmp / "model.log")
        try:
            stack.manage("shell", "-c", (
                "from models_registry.models import ModelBackend, SamplingPreset\n"
                f"b = ModelBackend.objects.create(name='vLLM', kind='openai_compatible', base_url='{model.url}/v1', "
                "model='llama-3.1-8b')\n"
                "SamplingPreset.objects.filter(is_default=True).update(backend=b)\n"))
            stack.env["LINEBOT_REPLY_TOKEN_MAX_AGE"] = "0"
            out["realistic"], out["realistic_duplicates"] = drain(stack, watcher, args, tag="late",
                                                                  web_load=True)
            out["realistic"]["pushed"] = sum(n for (endpoint, status), n in watcher.endpoint_status.items()
                                             if endpoint == "push" and status == 200)
        finally:
            model.close()
        out["db"] = stack.db_report()
        out["log_problems"] = stack.log_problems()
        out["line_calls"] = {f"{e} {s}": n for (e, s), n in watcher.endpoint_status.items()}
    return out


def drain(stack: h.Stack, watcher: h.ReplyWatcher, args, *, tag: str, web_load: bool = False) -> tuple[dict, int]:
    """Posts the backlog with qcluster stopped, starts it, and times the replies; with
    `web_load`, webhooks the bot stores but does not answer (group chatter) keep the web
    server busy meanwhile, at 50 connections."""
    stack.stop_qcluster()
    backlog = h.make_messages(args.backlog, users=h.user_ids(args.backlog, seed=f"{tag}-{uuid.uuid4().hex[:4]}"),
                              tag=tag)
    posted = h.run_load(stack.port, connections=args.post_connections, messages=backlog, tool=args.loadgen,
                        workdir=stack.tmp)
    if posted.ok != len(backlog):
        raise RuntimeError(f"backlog: only {posted.ok} of {len(backlog)} webhooks answered 200")
    watcher.poll()
    stopping, load = threading.Event(), {"requests": 0, "seconds": 0.0}
    if web_load:
        group = "C" + uuid.uuid4().hex
        chatter = [h.signed_body(wh.text_message_event(f"chatter {i}", source="group", group_id=group))
                   for i in range(500)]

        def keep_busy() -> None:
            while not stopping.is_set():
                result = h.run_load(stack.port, connections=50, messages=chatter, tool=args.loadgen,
                                    workdir=stack.tmp)
                load["requests"] += result.requests
                load["seconds"] += result.seconds

        busy = threading.Thread(target=keep_busy, daemon=True)
        busy.start()
    started = stack.start_qcluster()
    texts = [m.reply for m in backlog]
    done = watcher.wait_for(texts, timeout=args.deadline, interval=0.2, procs=[stack.qcluster])
    stopping.set()
    if web_load:
        busy.join()
    times = sorted(at for t in texts for at, _ in watcher.deliveries.get(t, [])[:1])
    result = {
        "posted": len(backlog), "post_rate": posted.rate, "delivered": len(times), "complete": done,
        "first_reply_after_s": times[0] - started if times else None,
        "span_s": times[-1] - times[0] if len(times) > 1 else None,
        "wall_s": times[-1] - started if times else None,
        "web_load_rate": load["requests"] / load["seconds"] if load["seconds"] else None,
    }
    return result, sum(1 for t in texts if len(watcher.deliveries.get(t, [])) > 1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stacks", default="sqlite-orm,sqlite-redis", help=f"comma-separated, from {sorted(h.STACKS)} (default sqlite-orm,sqlite-redis)")
    parser.add_argument("--postgres-redis", action="store_true", help="also run PostgreSQL + Redis broker")
    parser.add_argument("--messages", type=int, default=200, help="sequential messages for the latency figures (default 200)")
    parser.add_argument("--backlog", type=int, default=2000, help="webhooks posted while qcluster is stopped (default 2000)")
    parser.add_argument("--post-connections", type=int, default=50, help="connections posting the backlog (default 50)")
    parser.add_argument("--workers", type=int, default=None, help="Q_WORKERS for qcluster (default: the app's default)")
    parser.add_argument("--users", type=int, default=20, help="distinct LINE users (default 20)")
    parser.add_argument("--baseline-calls", type=int, default=200, help="direct fake round trips for the baseline (default 200)")
    parser.add_argument("--deadline", type=float, default=300, help="seconds to wait for the backlog to drain (default 300)")
    parser.add_argument("--loadgen", choices=["python", "wrk"], default="python",
                        help="python (default): lean epoll client in bench/harness.py, exact latencies; "
                             "wrk: wrk + bench/wrk_replay.lua (its latency percentiles are coordinated-omission corrected)")
    parser.add_argument("--keep", action="store_true", help="keep temporary directories (logs, SQLite files)")
    args = parser.parse_args(argv)
    h.install_signal_handlers()
    stacks = [s.strip() for s in args.stacks.split(",") if s.strip()]
    if args.postgres_redis and "postgres-redis" not in stacks:
        stacks.append("postgres-redis")

    h.print_header("reply pipeline overhead (fake model answers instantly)")
    print(f"qcluster Q_WORKERS={args.workers or 'default'}; gunicorn 2 sync workers; {args.users} users; "
          f"{args.messages} sequential messages; backlog {args.backlog}")
    base = baseline(args.baseline_calls, h.user_ids(args.users))
    results = [run_stack(name, args) for name in stacks]

    P = h.percentile
    rows = [["baseline: Ollama chat + LINE reply, direct", P(base["chat+reply"], 50), P(base["chat+reply"], 95),
             P(base["chat+reply"], 99), "-", "-"],
            ["  (for reference: LINE loading call, direct)", P(base["loading"], 50), P(base["loading"], 95),
             P(base["loading"], 99), "-", "-"]]
    for r in results:
        lat = r["latency_ms"]
        target = P50_TARGET_MS[h.STACKS[r["stack"]][1]]
        rows.append([f"{h.stack_label(r['stack'])}: webhook -> reply", P(lat, 50), P(lat, 95), P(lat, 99),
                     f"< {target:.0f}", h.verdict(P(lat, 50) < target)])
        rows.append([f"  of which webhook acknowledged", P(r["ack_ms"], 50), P(r["ack_ms"], 95), P(r["ack_ms"], 99), "-", "-"])
        rows.append([f"  pipeline overhead over baseline (p50)", P(lat, 50) - P(base["chat+reply"], 50), "-", "-", "-", "-"])
    print("\nLatency, sequential messages (ms):")
    print(h.table(["what", "p50", "p95", "p99", "target p50", "verdict"], rows))

    rows = []
    for r in results:
        for label, b, dup in (("replies, web idle", r["backlog"], r["duplicates"]),
                              ("pushes, OpenAI-compatible, web busy", r["realistic"], r["realistic_duplicates"])):
            sustained = (b["delivered"] - 1) / b["span_s"] if b["span_s"] else 0.0
            overall = b["delivered"] / b["wall_s"] if b["wall_s"] else 0.0
            b["sustained_rate"] = sustained
            rows.append([h.stack_label(r["stack"]), label, b["posted"], b["delivered"], dup, b["post_rate"],
                         b["first_reply_after_s"] or float("nan"), sustained, overall,
                         b["web_load_rate"] or "-", h.verdict(sustained >= DRAIN_TARGET and b["complete"])])
        r["sustained_rate"] = r["realistic"]["sustained_rate"]
    print(f"\nBacklog drain (qcluster started after all webhooks were stored; target >= {DRAIN_TARGET:.0f} replies/s; "
          f"load generator: {args.loadgen}):")
    print(h.table(["stack", "case", "backlog", "answered", "dup", "posted/s", "1st answer s", "answers/s first->last",
                   "answers/s incl. start", "web req/s meanwhile", "verdict"], rows))
    for r in results:
        print(f"  {r['stack']}: inbound by status {r['db']['inbound']}, outbound {r['db']['outbound']}, "
              f"attempts>1: {r['db']['attempts_gt_1']}, failed tasks: {r['db']['failed_tasks']}, "
              f"log errors: {r['log_problems']}, LINE calls: {r['line_calls']}")

    path = h.save_result("overhead", {"baseline_ms": base, "stacks": results})
    parts = []
    for r in results:
        parts.append(f"{r['stack']} p50 {P(r['latency_ms'], 50):.1f} ms / p99 {P(r['latency_ms'], 99):.1f} ms, "
                     f"drain {r['backlog']['sustained_rate']:.0f}/s, realistic drain {r['sustained_rate']:.0f}/s")
    print(f"\nSUMMARY overhead: baseline chat+reply p50 {P(base['chat+reply'], 50):.1f} ms; " + "; ".join(parts)
          + f"  [raw: {path.relative_to(h.ROOT)}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
