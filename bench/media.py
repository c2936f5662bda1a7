#!/usr/bin/env python
"""Photos: a burst of 500 photo messages at 50 connections, beside the same burst of texts.

0. The acknowledgement, in the same run: with no worker running, bursts of 500 texts and of 500
   photos posted in turn (3 rounds each, the order swapped every round, so both meet the same
   passing load), each kind's p50 the median of its rounds; then those messages are deleted.
1. Baseline, in the same run: 500 text messages from 500 users at 50 connections — the
   webhook's acknowledgement latency (p50/p99) and the worker's peak PSS while it answers them.
2. 500 photo messages from 500 other users at 50 connections. The fake LINE data host serves
   each one a 1600×1200 JPEG with EXIF and GPS (about 0.3 MB); the fake Ollama's gemma3:4b
   reads images. The webhook fetches nothing, so its acknowledgement must match the texts'; the
   worker fetches (streamed, size-limited), cleans, stores and sends each photo, so its memory is
   what to watch: its peak PSS during the photos against its peak during the texts.

Checked: every photo answered once by the vision model ("I see an image …"), one stored file per
photo, none with EXIF. The machine is shared with other engineers' work: latencies are noisy.

    .venv/bin/python bench/media.py                   # SQLite + ORM broker
    .venv/bin/python bench/media.py --count 100       # a shorter run
    .venv/bin/python bench/media.py --quiet-worker    # posts with the worker stopped: the webhook alone

On a 2-CPU machine the worker's photo work (decoding, re-encoding, base64 for the model) shares
the CPUs with the web processes while a burst is posted; `--quiet-worker` takes that out of the
acknowledgement figures.

Target: photo ack p50 (step 0) within 1.5 × the texts' (no fetch in the request); the worker's
peak PSS over the last four fifths of the photos within 1.1 × its peak over the first fifth (flat:
streamed downloads, bounded images — the photo pipeline costs a fixed amount, reported beside
the texts' peak); 0 lost, 0 duplicated, no stored file with EXIF.
Last line: `SUMMARY media: …`.
"""
from __future__ import annotations

import base64
import io
import json
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import harness as h  # noqa: E402
from tests.fakes import webhooks as wh  # noqa: E402
from tests.fakes.media import image_bytes  # noqa: E402

PHOTO_SIZE = (1600, 1200)


class PssSampler(threading.Thread):
    """The worker tree's PSS every half second; keeps the peak, overall and per phase (the first
    fifth of the answers, then the rest: memory that grows with the photos shows as a later peak)."""

    def __init__(self, root) -> None:
        super().__init__(daemon=True)
        self.root, self.peak, self.stopping = root, 0.0, threading.Event()
        self.phase, self.peaks = "early", {"early": 0.0, "late": 0.0}

    def run(self) -> None:
        while not self.stopping.wait(0.5):
            pss = h.pss_mib([self.root.pid])
            self.peak = max(self.peak, pss)
            self.peaks[self.phase] = max(self.peaks[self.phase], pss)


def noisy_photo() -> bytes:
    """A photo as a phone sends it: big, with EXIF and GPS, and noise so that JPEG cannot shrink it."""
    import random

    from PIL import Image

    plain = Image.open(io.BytesIO(image_bytes("JPEG", size=PHOTO_SIZE, exif=True)))
    exif = plain.getexif()
    rng = random.Random(7)
    noisy = Image.frombytes("RGB", PHOTO_SIZE, rng.randbytes(PHOTO_SIZE[0] * PHOTO_SIZE[1] * 3))
    buffer = io.BytesIO()
    Image.blend(plain.convert("RGB"), noisy, 0.25).save(buffer, "JPEG", quality=80, exif=exif.tobytes())
    return buffer.getvalue()


def set_up(stack: h.Stack, vision: h.Fake) -> None:
    stack.manage("shell", "-c", (
        "from models_registry.models import ModelBackend\n"
        f"ModelBackend.objects.filter(kind='ollama').update(base_url='{vision.url}')\n"
    ))
    stack.lift_user_limit()
    # The worker (started after this) fetches from the fake LINE's data host and stores in the run's folder.
    stack.env["LINE_DATA_API_HOST"] = stack.line.url
    stack.env["LINEBOT_MEDIA_ROOT"] = str(stack.tmp / "media")


def burst(stack: h.Stack, watcher: h.ReplyWatcher, messages: list[h.Msg], expected, *, label: str,
          deadline: float, loadgen: str, quiet_worker: bool) -> dict:
    """Posts `messages`, then waits for their answers. `quiet_worker`: the worker is stopped while
    they are posted (the webhook measured alone, not sharing the CPUs with the answering) and
    started again to answer them."""
    if quiet_worker:
        stack.stop_qcluster()
    else:
        sampler = PssSampler(stack.qcluster)
        sampler.start()
    started = time.time()
    load = h.run_load(stack.port, connections=50, messages=messages, tool=loadgen, workdir=stack.tmp)
    if quiet_worker:
        started = stack.start_qcluster()
        sampler = PssSampler(stack.qcluster)
        sampler.start()
    before = sum(len(v) for v in watcher.deliveries.values())
    wanted = len(messages)
    give_up = time.monotonic() + deadline
    while time.monotonic() < give_up:
        watcher.poll()
        answered = expected(watcher)
        if answered >= wanted:
            break
        if answered >= wanted / 5:
            sampler.phase = "late"
        time.sleep(0.5)
    sampler.stopping.set()
    answered = expected(watcher)
    seconds = (watcher.last_at or time.time()) - started
    print(f"[{label}] {wanted} posted: ack p50 {load.latency_ms.get('p50', 0):.1f} ms, p99 "
          f"{load.latency_ms.get('p99', 0):.1f} ms; {answered} answered in {seconds:.1f} s; worker peak PSS "
          f"{sampler.peak:.0f} MiB", flush=True)
    return {"posted": wanted, "non_ok": load.non_ok, "ack_ms": load.latency_ms, "answered": answered,
            "seconds": round(seconds, 1), "worker_peak_pss_mib": round(sampler.peak, 1),
            "worker_peak_pss_first_fifth_mib": round(sampler.peaks["early"], 1),
            "worker_peak_pss_rest_mib": round(sampler.peaks["late"], 1), "deliveries_before": before}


def ack_rounds(stack: h.Stack, *, rounds: int, count: int, loadgen: str) -> dict:
    """Before any worker runs: bursts of texts and of photos posted in turn, `rounds` of each
    (the order swapped every round), so that both kinds meet the same passing load of a shared
    machine; then every message and queued task is deleted again. The webhook alone: nothing is
    answered meanwhile."""
    p50s: dict[str, list[float]] = {"texts": [], "photos": []}
    p99s: dict[str, list[float]] = {"texts": [], "photos": []}
    # Unrecorded: the web workers' first requests (cold caches) would fall on whichever kind goes first.
    warm_users = h.user_ids(max(10, count // 5), seed=f"ack-warm-{uuid.uuid4().hex[:6]}")
    h.run_load(stack.port, connections=50, tool=loadgen, workdir=stack.tmp,
               messages=h.make_messages(len(warm_users), users=warm_users)
               + [h.signed_body(wh.media_message_event("image", user_id=user)) for user in warm_users])
    for index in range(rounds):
        for kind in (("texts", "photos") if index % 2 == 0 else ("photos", "texts")):
            users = h.user_ids(count, seed=f"ack-{kind}-{index}-{uuid.uuid4().hex[:6]}")
            messages = (h.make_messages(count, users=users) if kind == "texts"
                        else [h.signed_body(wh.media_message_event("image", user_id=user)) for user in users])
            load = h.run_load(stack.port, connections=50, messages=messages, tool=loadgen, workdir=stack.tmp)
            p50s[kind].append(load.latency_ms.get("p50", 0))
            p99s[kind].append(load.latency_ms.get("p99", 0))
            print(f"[ack round {index + 1}, {kind}] p50 {p50s[kind][-1]:.1f} ms, p99 {p99s[kind][-1]:.1f} ms "
                  f"({load.non_ok} not 200)", flush=True)
    stack.manage("shell", "-c", "from conversations.models import Chat\nfrom django_q.models import OrmQ\n"
                                "Chat.objects.all().delete()\nOrmQ.objects.all().delete()")
    median = {kind: sorted(values)[len(values) // 2] for kind, values in p50s.items()}
    return {"p50_ms": p50s, "p99_ms": p99s, "median_p50_ms": median,
            "ratio": round(median["photos"] / max(1e-9, median["texts"]), 2)}


def media_report(stack: h.Stack) -> dict:
    code = (
        "import json\n"
        "from PIL import Image\n"
        "from django.db.models import Count\n"
        "from conversations.models import Message\n"
        "from conversations.media.models import MessageMedia\n"
        "rows = MessageMedia.objects.all()\n"
        "with_exif = 0\n"
        "for media in rows.iterator():\n"
        "    with media.file.open('rb') as f, Image.open(f) as image:\n"
        "        with_exif += bool(image.getexif())\n"
        "photos = Message.objects.filter(direction='in', message_type='image')\n"
        "print('JSON' + json.dumps({'photos': dict(photos.values_list('status').annotate(n=Count('id')).order_by()),\n"
        "  'files': rows.count(), 'with_exif': with_exif,\n"
        "  'answers': Message.objects.filter(direction='out', reply_to__message_type='image').count()}))\n"
    )
    out = stack.manage("shell", "-c", code)
    return json.loads(next(line for line in out.splitlines() if line.startswith("JSON"))[4:])


def run(stack_name: str, args) -> dict:
    with h.Stack(stack_name, workers=None, keep=args.keep) as stack:
        vision = h.Fake("ollama", "--vision-model", "gemma3:4b", log=stack.tmp / "vision.log")
        try:
            set_up(stack, vision)
            acks = ack_rounds(stack, rounds=args.ack_rounds, count=args.count, loadgen=args.loadgen)
            watcher = h.ReplyWatcher(stack.line)
            stack.start_qcluster()
            warm = h.signed_body(wh.text_message_event("media warm-up", user_id=h.user_ids(1, seed="warm")[0]))
            h.post_webhook(stack.port, warm)
            if not watcher.wait_for([warm.reply], timeout=120, procs=[stack.qcluster]):
                raise RuntimeError("the warm-up answer did not arrive; see the logs in " + str(stack.tmp))

            run_tag = uuid.uuid4().hex[:6]
            texts = h.make_messages(args.count, users=h.user_ids(args.count, seed=f"text-{run_tag}"))
            text_result = burst(stack, watcher, texts, lambda w: w.delivered([m.reply for m in texts]),
                                label="texts", deadline=args.deadline, loadgen=args.loadgen,
                                quiet_worker=args.quiet_worker)

            photo = noisy_photo()
            events = [wh.media_message_event("image", user_id=user)
                      for user in h.user_ids(args.count, seed=f"photo-{run_tag}")]
            stack.line._call("POST", "/__fake__/content", json.dumps({
                "message_ids": [event["message"]["id"] for event in events],
                "data": base64.b64encode(photo).decode(), "content_type": "image/jpeg"}).encode())
            photos = [h.signed_body(event) for event in events]

            def photo_answers(w: h.ReplyWatcher) -> int:
                return sum(len(arrivals) for text, arrivals in w.deliveries.items() if text.startswith("I see an image"))

            photo_result = burst(stack, watcher, photos, photo_answers, label="photos", deadline=args.deadline,
                                 loadgen=args.loadgen, quiet_worker=args.quiet_worker)
            time.sleep(args.settle)
            watcher.poll()
            photo_result["answered"] = photo_answers(watcher)
            report = media_report(stack)
            lost = args.count - report["photos"].get("replied", 0)
            ack_ratio = acks["ratio"]
            pss_ratio = photo_result["worker_peak_pss_mib"] / max(1e-9, text_result["worker_peak_pss_mib"])
            # Flat: the peak over the last four fifths of the photos against the first fifth's.
            growth = photo_result["worker_peak_pss_rest_mib"] / max(1e-9, photo_result["worker_peak_pss_first_fifth_mib"])
            result = {
                "stack": stack_name, "quiet_worker": args.quiet_worker, "photo_bytes": len(photo), "ack_rounds": acks, "texts": text_result, "photos": photo_result,
                "report": report, "lost": lost, "duplicated": max(0, photo_result["answered"] - args.count),
                "ack_p50_ratio": round(ack_ratio, 2), "worker_pss_ratio": round(pss_ratio, 2),
                "worker_pss_growth": round(growth, 2),
                "problems": stack.log_problems(),
            }
            print(h.table(["", "texts (baseline)", "photos"], [
                [f"webhook ack p50, median of {args.ack_rounds} rounds, no worker (ms)",
                 f"{acks['median_p50_ms']['texts']:.1f}", f"{acks['median_p50_ms']['photos']:.1f}"],
                ["messages posted (50 connections)", args.count, args.count],
                ["webhook ack p50 (ms)", f"{text_result['ack_ms'].get('p50', 0):.1f}",
                 f"{photo_result['ack_ms'].get('p50', 0):.1f}"],
                ["webhook ack p99 (ms)", f"{text_result['ack_ms'].get('p99', 0):.1f}",
                 f"{photo_result['ack_ms'].get('p99', 0):.1f}"],
                ["answered", text_result["answered"], photo_result["answered"]],
                ["seconds to the last answer", text_result["seconds"], photo_result["seconds"]],
                ["worker peak PSS (MiB)", f"{text_result['worker_peak_pss_mib']:.0f}",
                 f"{photo_result['worker_peak_pss_mib']:.0f}"],
                ["worker peak PSS, first fifth / rest (MiB)",
                 f"{text_result['worker_peak_pss_first_fifth_mib']:.0f} / {text_result['worker_peak_pss_rest_mib']:.0f}",
                 f"{photo_result['worker_peak_pss_first_fifth_mib']:.0f} / {photo_result['worker_peak_pss_rest_mib']:.0f}"],
                ["stored files / with EXIF", "—", f"{report['files']} / {report['with_exif']}"],
            ]))
            return result
        finally:
            vision.close()


def main(argv=None) -> int:
    parser = h.one_stack_parser(__doc__)
    parser.add_argument("--count", type=int, default=500, help="messages per burst (default 500)")
    parser.add_argument("--deadline", type=float, default=600, help="seconds to wait for each burst's answers")
    h.add_burst_options(parser)
    parser.add_argument("--ack-rounds", type=int, default=3,
                        help="bursts of each kind posted in turn, with no worker, for the ack comparison (default 3)")
    parser.add_argument("--quiet-worker", action="store_true",
                        help="stop the worker while each burst is posted (the webhook alone), then answer")
    args = parser.parse_args(argv)
    if args.count < 1 or args.deadline <= 0:
        parser.error("--count and --deadline must be positive")
    stack_name, result = h.run_one_stack("media", "media: 500 photos vs 500 texts at 50 connections", run, args)
    ok = (result["ack_p50_ratio"] <= 1.5 and result["worker_pss_growth"] <= 1.1 and not result["lost"]
          and not result["duplicated"] and not result["report"]["with_exif"])
    print(f"SUMMARY media: {h.stack_label(stack_name)}: ack p50 photos/texts {result['ack_p50_ratio']}; worker "
          f"peak PSS photos/texts {result['worker_pss_ratio']} ({result['photos']['worker_peak_pss_mib']} vs "
          f"{result['texts']['worker_peak_pss_mib']} MiB), growth over the burst {result['worker_pss_growth']}; "
          f"lost {result['lost']}, duplicated "
          f"{result['duplicated']}; files with EXIF {result['report']['with_exif']}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
