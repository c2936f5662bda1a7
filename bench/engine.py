#!/usr/bin/env python
"""The answering engine with a slow model: answers in flight, per-chat order, a 1:1 chat's wait.

The model is the fake OpenAI-compatible server taking 2 s per answer and serving 32 at once
(more wait on the server, as on vLLM or Ollama with OLLAMA_NUM_PARALLEL=32); its backend's
`max_concurrency` is set to 32, as an operator would for such a server, and every other
setting is the project's default (workers, threads, leases).

1. 500 messages from 500 users, posted at 50 connections: replies/s from the first post to the
   last reply, against the ideal 32 / 2 s = 16/s.
2. Then a 1:1 chat sends 5 messages 100 ms apart while a group sends 50 (mentioning the bot):
   the 1:1 chat's wait for its first answer (one generation is 2 s), and every chat's order.

Checked for every chat: answers arrive in the order of the messages they answer, and the model
never had two generations of one chat at once (from the fake's request log). Lost: a message
not answered (its status is not "replied"); duplicated: a message answered twice. Peak PSS of
the web and worker processes is sampled every half second.

Baseline, in the same run: the fake model's own capacity, measured from Python with 32 threads
calling it directly (what the engine could reach at best).

    .venv/bin/python bench/engine.py                   # SQLite + ORM broker
    .venv/bin/python bench/engine.py --postgres-redis  # PostgreSQL + Redis

Target: replies/s >= 0.8 x the ideal; order kept; 0 lost, 0 duplicated.
Last line: `SUMMARY engine: … ratio R …`.
"""
from __future__ import annotations

import json
import re
import sys
import threading
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import harness as h  # noqa: E402
from tests.fakes import webhooks as wh  # noqa: E402

SECONDS_PER_ANSWER = 2.0
SERVER_PARALLEL = 32
IDEAL = SERVER_PARALLEL / SECONDS_PER_ANSWER
TAG = re.compile(r"\[(c\d+)/(\d+)\]")


def one_to_one(chat: int, index: int, user: str) -> h.Msg:
    return h.signed_body(wh.text_message_event(f"engine [c{chat}/{index}]", user_id=user))


def in_group(chat: int, index: int, group: str, user: str) -> h.Msg:
    return h.signed_body(wh.text_message_event(f"engine [c{chat}/{index}]", source="group", group_id=group,
                                               user_id=user, mention_self=True))


def set_up_model(stack: h.Stack, model: h.Fake) -> None:
    model._call("POST", "/__fake__/delay", json.dumps({"endpoint": "chat", "seconds": SECONDS_PER_ANSWER}).encode())
    model._call("POST", "/__fake__/capacity", json.dumps({"endpoint": "chat", "limit": SERVER_PARALLEL}).encode())
    stack.manage("shell", "-c", (
        "from models_registry.models import ModelBackend, SamplingPreset\n"
        f"b = ModelBackend.objects.create(name='Slow vLLM', kind='openai_compatible', base_url='{model.url}/v1', "
        f"model='llama-3.1-8b', max_concurrency={SERVER_PARALLEL}, timeout=60)\n"
        "SamplingPreset.objects.filter(is_default=True).update(backend=b, fallback_backend=None)\n"
    ))
    stack.lift_user_limit()


def model_baseline(model: h.Fake, calls: int = 96) -> float:
    """Answers/s the fake model serves to 32 direct callers: the engine's ceiling."""
    body = json.dumps({"model": "llama-3.1-8b", "messages": [{"role": "user", "content": "baseline"}]}).encode()

    def call(_):
        request = urllib.request.Request(f"{model.url}/v1/chat/completions", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()

    started = time.perf_counter()
    with ThreadPoolExecutor(SERVER_PARALLEL) as pool:
        list(pool.map(call, range(calls)))
    return calls / (time.perf_counter() - started)


class PssSampler(threading.Thread):
    """The sum of PSS of the web and worker process trees, every half second; keeps the peak."""

    def __init__(self, roots) -> None:
        super().__init__(daemon=True)
        self.roots, self.peak, self.stopping = roots, 0.0, threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(0.5):
            self.peak = max(self.peak, h.pss_mib([root.pid for root in self.roots if root is not None]))


def chat_order_report(model_requests: list[dict], deliveries: dict[str, list]) -> dict:
    """Per chat: overlapping generations at the model, and answers out of order at LINE."""
    generations: dict[str, list[tuple[float, float]]] = {}
    for request in model_requests:
        messages = (request.get("json") or {}).get("messages") or []
        last = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
        found = TAG.search(str(last))
        if found and request.get("answered_at"):
            generations.setdefault(found.group(1), []).append((request["received_at"], request["answered_at"]))
    overlapping = 0
    for spans in generations.values():
        spans.sort()
        overlapping += sum(1 for (_, end), (start, _) in zip(spans, spans[1:]) if start < end)
    answers: dict[str, list[tuple[float, int]]] = {}
    for text, arrivals in deliveries.items():
        found = TAG.search(text)
        if found:
            answers.setdefault(found.group(1), []).extend((at, int(found.group(2))) for at, _ in arrivals)
    out_of_order = sum(
        1 for arrivals in answers.values()
        for (_, before), (_, after) in zip(sorted(arrivals), sorted(arrivals)[1:]) if after <= before
    )
    return {"chats": len(answers), "overlapping_generations": overlapping, "out_of_order": out_of_order,
            "max_generations_per_chat_at_once": 1 if not overlapping else 2}


def run(stack_name: str, args) -> dict:
    with h.Stack(stack_name, workers=None, keep=args.keep) as stack:
        model = h.Fake("openai_compat", log=stack.tmp / "model.log")
        try:
            set_up_model(stack, model)
            baseline = model_baseline(model)
            print(f"[{stack_name}] the fake model alone, 32 direct callers: {baseline:.1f} answers/s "
                  f"(ideal {IDEAL:.0f}/s)", flush=True)
            watcher = h.ReplyWatcher(stack.line)
            stack.start_qcluster()
            # The clock starts once the workers are up: one answer first.
            warm = one_to_one(999_999, 0, h.user_ids(1, seed="warm")[0])
            h.post_webhook(stack.port, warm)
            if not watcher.wait_for([f"echo: {warm.text}"], timeout=120, procs=[stack.qcluster]):
                raise RuntimeError("the warm-up answer did not arrive; see the logs in " + str(stack.tmp))
            sampler = PssSampler([stack.gunicorn, stack.qcluster])
            sampler.start()

            samples: list[tuple[float, int, int]] = []
            sampling = threading.Event()
            if args.timeline and stack.db == "sqlite":
                import sqlite3

                def sample() -> None:
                    db = sqlite3.connect(f"file:{stack.tmp / 'bench.sqlite3'}?mode=ro", uri=True)
                    while not sampling.wait(0.2):
                        now = model._call("GET", "/__fake__/concurrency").get("chat", {}).get("now", 0)
                        slots = db.execute("SELECT count(*) FROM models_registry_generationslot "
                                           "WHERE expires_at > datetime('now')").fetchone()[0]
                        waiting = db.execute("SELECT count(*) FROM conversations_chat "
                                             "WHERE waiting_for_id IS NOT NULL").fetchone()[0]
                        samples.append((now, slots, waiting))

                threading.Thread(target=sample, daemon=True).start()
            users = h.user_ids(args.users, seed=uuid.uuid4().hex[:6])
            burst = [one_to_one(i, 0, user) for i, user in enumerate(users)]
            started = time.time()
            load = h.run_load(stack.port, connections=50, messages=burst, tool=args.loadgen, workdir=stack.tmp)
            print(f"[{stack_name}] {len(burst)} webhooks taken in {load.seconds:.1f} s "
                  f"(p99 {load.latency_ms.get('p99', 0):.0f} ms)", flush=True)
            complete = watcher.wait_for([f"echo: {m.text}" for m in burst], timeout=args.deadline, interval=0.5,
                                        procs=[stack.qcluster])
            ended = watcher.last_at or time.time()
            rate = len(burst) / max(1e-9, ended - started)
            # How full the model server was kept: its generations' time over the burst's span.
            busy = sum(min(r["answered_at"], ended) - max(r["received_at"], started) for r in model.requests()
                       if r.get("answered_at") and r["answered_at"] > started and r["received_at"] < ended)
            mean_at_model = busy / max(1e-9, ended - started)
            sampling.set()
            if samples:
                middle = samples
                print("mid-burst samples (at the model, slots held, chats waiting): "
                      + " ".join(f"{a}/{b}/{c}" for a, b, c in middle[::max(1, len(middle) // 15)]), flush=True)
            if args.timeline:
                requests = sorted((r["received_at"], r["answered_at"]) for r in model.requests()
                                  if r.get("answered_at") and r["received_at"] >= started)
                starts = [a for a, _ in requests]
                import bisect
                refill = sorted(starts[bisect.bisect_right(starts, done)] - done for _, done in requests
                                if bisect.bisect_right(starts, done) < len(starts) and done < ended - 2.5)
                print(f"refill after a generation ends: p50 {h.percentile(refill, 50)*1000:.0f} ms, "
                      f"p90 {h.percentile(refill, 90)*1000:.0f} ms; first start {starts[0]-started:.2f} s, "
                      f"32nd start {starts[31]-started:.2f} s", flush=True)
            print(f"[{stack_name}] {len(burst)} answers from {len(burst)} users: {rate:.1f}/s "
                  f"(ideal {IDEAL:.0f}/s, ratio {rate / IDEAL:.2f}); generations at the model at once, on "
                  f"average {mean_at_model:.1f}{'' if complete else ' INCOMPLETE'}", flush=True)

            # A busy group and a 1:1 chat at the same time.
            solo_user, group_id = h.user_ids(1, seed="solo")[0], "C" + uuid.uuid4().hex
            members = h.user_ids(10, seed="members")
            group = [in_group(args.users + 1, i, group_id, members[i % 10]) for i in range(50)]
            solo = [one_to_one(args.users + 2, i, solo_user) for i in range(5)]
            group_thread = threading.Thread(target=lambda: [
                (h.post_webhook(stack.port, message), time.sleep(0.02)) for message in group])
            group_thread.start()
            time.sleep(0.3)  # the group is busy first
            solo_started = time.time()
            for message in solo:
                h.post_webhook(stack.port, message)
                time.sleep(0.1)
            group_thread.join()
            deadline = time.monotonic() + args.deadline
            solo_wait = None
            while time.monotonic() < deadline:
                watcher.poll()
                report = stack.db_report()
                if solo_wait is None:
                    firsts = [at for text, arrivals in watcher.deliveries.items()
                              if f"[c{args.users + 2}/" in text for at, _ in arrivals]
                    solo_wait = min(firsts) - solo_started if firsts else None
                if report["inbound"].get("pending", 0) + report["inbound"].get("generating", 0) == 0:
                    break
                time.sleep(1)
            time.sleep(args.settle)
            watcher.poll()
            sampler.stopping.set()
            report = stack.db_report()
            order = chat_order_report(model.requests(), watcher.deliveries)
            total_in = sum(report["inbound"].values())
            lost = total_in - report["inbound"].get("replied", 0)
            duplicated = sum(len(arrivals) - 1 for arrivals in watcher.deliveries.values() if len(arrivals) > 1)
            peak_model = model._call("GET", "/__fake__/concurrency").get("chat", {}).get("peak", 0)
            result = {
                "stack": stack_name, "replies_per_s": round(rate, 2), "ideal": IDEAL, "ratio": round(rate / IDEAL, 3),
                "model_baseline_per_s": round(baseline, 2), "peak_at_model": peak_model,
                "mean_at_model": round(mean_at_model, 1),
                "solo_wait_s": round(solo_wait, 2) if solo_wait is not None else None,
                "group_answers": sum(1 for text in watcher.deliveries if f"[c{args.users + 1}/" in text),
                "solo_answers": sum(1 for text in watcher.deliveries if f"[c{args.users + 2}/" in text),
                "lost": lost, "duplicated": duplicated, "statuses": report, "order": order,
                "peak_pss_mib": round(sampler.peak, 1), "problems": stack.log_problems(),
            }
            print(h.table(["", "value"], [
                ["replies/s (500 users)", f"{rate:.1f}"], ["ideal (32 / 2 s)", f"{IDEAL:.1f}"],
                ["fake model alone, 32 callers", f"{baseline:.1f}"], ["ratio to ideal", f"{rate / IDEAL:.2f}"],
                ["most generations at the model at once", peak_model],
                ["generations at the model at once, on average", f"{mean_at_model:.1f}"],
                ["1:1 chat's wait for its first answer (s)", result["solo_wait_s"]],
                ["answers: group (50 msgs) / 1:1 (5 msgs)", f"{result['group_answers']} / {result['solo_answers']}"],
                ["chats with overlapping generations", order["overlapping_generations"]],
                ["answers out of order", order["out_of_order"]],
                ["lost / duplicated", f"{lost} / {duplicated}"], ["peak PSS (MiB)", f"{sampler.peak:.0f}"],
            ]))
            return result
        finally:
            model.close()


def main(argv=None) -> int:
    parser = h.one_stack_parser(__doc__)
    parser.add_argument("--users", type=int, default=500, help="1:1 chats in the first burst (default 500)")
    parser.add_argument("--deadline", type=float, default=300, help="seconds to wait for the answers (default 300)")
    h.add_burst_options(parser)
    parser.add_argument("--timeline", action="store_true", help="also print how soon a freed slot is used again")
    args = parser.parse_args(argv)
    if args.users < 1 or args.deadline <= 0:
        parser.error("--users and --deadline must be positive")
    stack_name, result = h.run_one_stack("engine", "engine: a 2 s model serving 32 at once", run, args)
    order_ok = result["order"]["overlapping_generations"] == 0 and result["order"]["out_of_order"] == 0
    print(f"SUMMARY engine: {h.stack_label(stack_name)}: {result['replies_per_s']} replies/s vs ideal "
          f"{IDEAL:.0f}/s, ratio {result['ratio']}; order {'kept' if order_ok else 'BROKEN'}; 1:1 wait "
          f"{result['solo_wait_s']} s; lost {result['lost']}, duplicated {result['duplicated']}; "
          f"peak PSS {result['peak_pss_mib']} MiB")
    return 0 if result["ratio"] >= 0.8 and order_ok and not result["lost"] and not result["duplicated"] else 1


if __name__ == "__main__":
    sys.exit(main())
