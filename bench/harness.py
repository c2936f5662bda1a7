"""Shared machinery for the benchmarks in bench/.

Everything a benchmark needs to stand the bot up on loopback and tear it down again:

- `Stack`: a temporary database (SQLite file or a throw-away PostgreSQL database), the
  two fakes (LINE Messaging API, Ollama), `migrate` + `bootstrap`, gunicorn with 2 sync
  workers, and a `qcluster` that can be started and stopped on demand;
- signed, unique webhook bodies (`make_messages`), a load generator (`run_load`: wrk
  with `wrk_replay.lua`, or a lean asyncio fallback when wrk is not installed);
- `ReplyWatcher`, which follows what the fake LINE API received;
- percentiles and table printing.

Every process is started in its own session (process group) and killed as a group in
`finally` blocks, on Ctrl-C and on SIGTERM, so a benchmark never leaves anything behind.
"""
from __future__ import annotations

import argparse
import atexit
import hashlib
import http.client
import json
import math
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "bench"
RESULTS_DIR = BENCH_DIR / "results"
PYTHON = sys.executable
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.fakes import webhooks as wh  # noqa: E402  (needs ROOT on sys.path)

CHANNEL_SECRET = "bench0123456789abcdef0123456789ab"
ACCESS_TOKEN = "bench-channel-access-token"
PG_DSN = os.environ.get("BENCH_PG_DSN", "postgres://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
WEBHOOK_PATH = "/line/webhook/"


# --- processes ------------------------------------------------------------------------

_live: list[subprocess.Popen] = []


def _raise_on_sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def install_signal_handlers() -> None:
    """SIGTERM/SIGHUP behave like Ctrl-C, so every `finally` runs and children die."""
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_on_sigterm)
    atexit.register(kill_all)


def spawn(argv: list[str], *, env: dict | None = None, log: Path | None = None, pipe_stdout: bool = False) -> subprocess.Popen:
    """Starts a child in its own process group (Ctrl-C reaches only us; we kill the group).

    Output goes to `log` (or nowhere); with `pipe_stdout` stdout is a pipe and only
    stderr goes to the log.
    """
    logf = open(log, "ab") if log else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=subprocess.PIPE if pipe_stdout else logf, stderr=logf,
            start_new_session=True,
        )
    finally:
        if log:
            logf.close()
    _live.append(proc)
    return proc


def stop(proc: subprocess.Popen | None, *, grace: float = 10.0) -> None:
    """SIGTERM to the child's whole process group, SIGKILL after `grace` seconds."""
    if proc is None:
        return
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        pgid = None
    if proc.poll() is None and pgid is not None:
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    if pgid is not None:
        # Whatever is left of the group (forked workers) goes too.
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    if proc in _live:
        _live.remove(proc)


def kill_all() -> None:
    for proc in list(_live):
        stop(proc, grace=3)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url_host: str, port: int, path: str, *, timeout: float = 30.0, procs=()) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = http.client.HTTPConnection(url_host, port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                conn.close()
                return
        except OSError:
            pass
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args[:4]} exited early with {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing answered on 127.0.0.1:{port}{path} within {timeout}s")
        time.sleep(0.1)


# --- fakes ----------------------------------------------------------------------------


class Fake:
    """A fake from tests/fakes/ run as a process (`python -m tests.fakes.NAME --port 0`)."""

    def __init__(self, module: str, *args: str, log: Path, env: dict | None = None) -> None:
        self.proc = spawn([PYTHON, "-m", f"tests.fakes.{module}", "--port", "0", *args], env=env, log=log, pipe_stdout=True)
        line = self.proc.stdout.readline().decode().strip()
        if not line.startswith("LISTENING "):
            stop(self.proc)
            raise RuntimeError(f"fake {module} did not start: {line!r}")
        self.url = line.split()[1]
        self.port = int(self.url.rsplit(":", 1)[1])
        self._conn: http.client.HTTPConnection | None = None

    def _call(self, method: str, path: str, body: bytes | None = None):
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            try:
                self._conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
                response = self._conn.getresponse()
                return json.loads(response.read())
            except (OSError, http.client.HTTPException):
                self._conn.close()
                self._conn = None
                if attempt == 2:
                    raise

    def requests(self, since: int = 0) -> list[dict]:
        return self._call("GET", f"/__fake__/requests?since={since}")

    def stats(self) -> dict:
        return self._call("GET", "/__fake__/stats")

    def state(self) -> dict:
        return self._call("GET", "/__fake__/state")

    def reset(self) -> None:
        self._call("POST", "/__fake__/reset", b"{}")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        stop(self.proc, grace=3)


def reply_texts(request: dict) -> list[str]:
    body = request.get("json") or {}
    return [m.get("text", "") for m in body.get("messages") or [] if isinstance(m, dict)]


class ReplyWatcher:
    """Follows the fake LINE API: which texts were delivered, when, and how.

    A delivery is a reply or push that the fake answered 200 (a 409 for a push retry
    key LINE already accepted is not a second delivery).
    """

    def __init__(self, fake: Fake) -> None:
        self.fake = fake
        self.cursor = 0
        self.deliveries: dict[str, list[tuple[float, str]]] = {}
        self.endpoint_status: Counter = Counter()
        self.first_at: float | None = None
        self.last_at: float | None = None

    def poll(self) -> int:
        """Reads what arrived since the last poll; returns the number of new deliveries.

        The fake records a request before it has answered it; one still in flight (no
        status yet) and everything after it are read again at the next poll.
        """
        new = self.fake.requests(self.cursor)
        answered = next((i for i, request in enumerate(new) if request.get("status") is None), len(new))
        new = new[:answered]
        self.cursor += len(new)
        added = 0
        for request in new:
            endpoint = request.get("endpoint") or "unmatched"
            self.endpoint_status[(endpoint, request.get("status"))] += 1
            if endpoint in ("reply", "push") and request.get("status") == 200:
                at = request["received_at"]
                for text in reply_texts(request):
                    self.deliveries.setdefault(text, []).append((at, endpoint))
                    added += 1
                self.first_at = at if self.first_at is None else min(self.first_at, at)
                self.last_at = at if self.last_at is None else max(self.last_at, at)
        return added

    def delivered(self, texts) -> int:
        return sum(1 for t in texts if t in self.deliveries)

    def wait_for(self, texts: list[str], *, timeout: float, interval: float = 0.25, progress=None,
                 stall: float = 90.0, procs=()) -> bool:
        """Polls until every text in `texts` was delivered at least once.

        Gives up at the deadline, after `stall` seconds without a new delivery, or
        when one of `procs` (e.g. qcluster) has exited; returns whether all arrived.
        """
        deadline = time.monotonic() + timeout
        wanted = set(texts)
        missing = {t for t in wanted if t not in self.deliveries}
        last_progress = time.monotonic()
        while True:
            if self.poll():
                last_progress = time.monotonic()
            missing = {t for t in missing if t not in self.deliveries}
            if progress:
                progress(len(wanted) - len(missing), len(wanted))
            if not missing:
                return True
            now = time.monotonic()
            dead = [p for p in procs if p is not None and p.poll() is not None]
            if now > deadline or now - last_progress > stall or dead:
                why = "deadline" if now > deadline else ("a process exited" if dead else f"no reply for {stall:.0f} s")
                print(f"  giving up waiting ({why}): {len(missing)} of {len(wanted)} not answered", flush=True)
                return False
            time.sleep(interval)


# --- the app stack ---------------------------------------------------------------------

STACKS = {
    # name: (database, broker)
    "sqlite-orm": ("sqlite", "orm"),
    "sqlite-redis": ("sqlite", "redis"),
    "postgres-redis": ("postgres", "redis"),
    "postgres-orm": ("postgres", "orm"),
}


def stack_label(name: str) -> str:
    db, broker = STACKS[name]
    return f"{'SQLite' if db == 'sqlite' else 'PostgreSQL'} + {'ORM broker' if broker == 'orm' else 'Redis broker'}"


class Stack:
    """The bot as deployed, on loopback, in a temporary directory.

    with Stack("sqlite-orm") as stack:   # fakes, DB, migrate, bootstrap, gunicorn
        stack.start_qcluster()
        ...
    """

    def __init__(self, name: str, *, workers: int | None = 4, web_workers: int = 2, validate_line: bool = True,
                 keep: bool = False, extra_env: dict | None = None) -> None:
        self.name = name
        self.db, self.broker = STACKS[name]
        self.q_workers = workers
        self.web_workers = web_workers
        self.validate_line = validate_line
        self.keep = keep
        self.extra_env = extra_env or {}
        self.tmp = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
        self.queue = f"bench-{uuid.uuid4().hex[:10]}"
        self.pg_name: str | None = None
        self.line: Fake | None = None
        self.ollama: Fake | None = None
        self.gunicorn: subprocess.Popen | None = None
        self.qcluster: subprocess.Popen | None = None
        self.port = 0
        self.env: dict[str, str] = {}

    # lifecycle

    def __enter__(self) -> Stack:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        fake_env = {**os.environ}
        if not self.validate_line:
            # No OpenAPI spec files there: the fake still checks LINE's limits and the SDK models.
            fake_env["LINE_OPENAPI_DIR"] = str(self.tmp / "no-spec")
        self.line = Fake("line_api", "--access-token", ACCESS_TOKEN, log=self.tmp / "line.log", env=fake_env)
        self.ollama = Fake("ollama", log=self.tmp / "ollama.log")
        if self.db == "sqlite":
            database_url = f"sqlite:///{self.tmp / 'bench.sqlite3'}"
        else:
            self.pg_name = f"bench_linebot_{uuid.uuid4().hex[:8]}"
            _pg_admin(f'CREATE DATABASE "{self.pg_name}"')
            database_url = f"{PG_DSN}/{self.pg_name}"
        self.env = {
            **{k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")},
            "DATABASE_URL": database_url,
            "LINE_API_HOST": self.line.url,
            "LINE_CHANNEL_SECRET": CHANNEL_SECRET,
            "LINE_CHANNEL_ACCESS_TOKEN": ACCESS_TOKEN,
            "OLLAMA_HOST": self.ollama.url,
            "Q_CLUSTER_QUEUE": self.queue,
            # None: the app's default, as `make run` has it.
            **({"Q_WORKERS": str(self.q_workers)} if self.q_workers else {}),
            "ADMIN_PASSWORD": "bench-admin-password",
            "PYTHONUNBUFFERED": "1",
            "DJANGO_SETTINGS_MODULE": "linebot_site.settings",
            **self.extra_env,
        }
        if self.broker == "redis":
            self.env["REDIS_URL"] = REDIS_URL
        self.manage("migrate", "--no-input", "-v", "0")
        self.manage("bootstrap")
        self.start_web()

    def manage(self, *args: str, capture: bool = False) -> str:
        result = subprocess.run(
            [PYTHON, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=300,
        )
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def start_web(self) -> None:
        self.port = free_port()
        self.gunicorn = spawn(
            # --preload: the workers share the loaded app, as under `manage.py serve`.
            [PYTHON, "-m", "gunicorn", "linebot_site.wsgi", "--workers", str(self.web_workers), "--preload",
             "--bind", f"127.0.0.1:{self.port}", "--log-level", "warning"],
            env=self.env, log=self.tmp / "gunicorn.log",
        )
        wait_http("127.0.0.1", self.port, "/healthz", procs=[self.gunicorn])

    def start_qcluster(self) -> float:
        """Starts `manage.py qcluster`; returns the wall-clock time just before the spawn."""
        started = time.time()
        self.qcluster = spawn([PYTHON, "manage.py", "qcluster"], env=self.env, log=self.tmp / "qcluster.log")
        return started

    def stop_qcluster(self) -> None:
        stop(self.qcluster, grace=15)
        self.qcluster = None

    def close(self) -> None:
        for proc in (self.qcluster, self.gunicorn):
            try:
                stop(proc)
            except Exception as exc:  # keep tearing down
                print(f"warning: stopping {proc.args[:3] if proc else proc}: {exc}", file=sys.stderr)
        self.qcluster = self.gunicorn = None
        for fake in (self.line, self.ollama):
            if fake is not None:
                fake.close()
        self.line = self.ollama = None
        if self.broker == "redis":
            _redis_cleanup(self.queue)
        if self.pg_name:
            try:
                _pg_admin(f'DROP DATABASE IF EXISTS "{self.pg_name}" WITH (FORCE)')
            except Exception as exc:
                print(f"warning: could not drop {self.pg_name}: {exc}", file=sys.stderr)
            self.pg_name = None
        if not self.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # inspection

    def lift_user_limit(self) -> None:
        """Turns the per-user message limit off: a benchmark's users send far more than 20 in 10 minutes."""
        self.manage("shell", "-c", "from conversations.models import LineChannel\n"
                                   "LineChannel.objects.update(user_limit_messages=0)")

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def log_problems(self) -> dict[str, int]:
        """Tracebacks and error lines in the server and worker logs (should all be 0)."""
        found: dict[str, int] = {}
        for name in ("gunicorn.log", "qcluster.log"):
            path = self.tmp / name
            text = path.read_text(errors="replace") if path.exists() else ""
            found[name] = text.count("Traceback") + len(re.findall(r" (ERROR|CRITICAL) ", text))
        return found

    def log_count(self, name: str, pattern: str) -> int:
        path = self.tmp / name
        return len(re.findall(pattern, path.read_text(errors="replace"))) if path.exists() else 0

    def db_report(self, text_prefix: str = "") -> dict:
        """Inbound messages by status, outbound by status, and tasks left in the ORM queue.

        With `text_prefix`, only inbound messages whose text starts with it (and their answers).
        """
        code = (
            "import json\n"
            "from django.db.models import Count\n"
            "from conversations.models import Message\n"
            "from django_q.models import OrmQ, Failure\n"
            f"p = {text_prefix!r}\n"
            "inb = Message.objects.filter(direction='in', text__startswith=p)\n"
            "out = Message.objects.filter(direction='out', reply_to__text__startswith=p)\n"
            "print('JSON' + json.dumps({\n"
            "  'inbound': dict(inb.values_list('status').annotate(n=Count('id')).order_by()),\n"
            "  'outbound': dict(out.values_list('status').annotate(n=Count('id')).order_by()),\n"
            "  'attempts_gt_1': inb.filter(attempts__gt=1).count(),\n"
            "  'ormq_left': OrmQ.objects.count(), 'failed_tasks': Failure.objects.count()}))\n"
        )
        out = self.manage("shell", "-c", code)
        line = next(line for line in out.splitlines() if line.startswith("JSON"))
        return json.loads(line[4:])


def _pg_admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(f"{PG_DSN}/postgres", autocommit=True) as conn:
        conn.execute(sql)


def _redis_cleanup(queue: str) -> None:
    try:
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"django_q:{queue}:*"))
        if keys:
            client.delete(*keys)
        client.close()
    except Exception as exc:
        print(f"warning: Redis cleanup failed: {exc}", file=sys.stderr)


# --- webhook payloads ------------------------------------------------------------------


@dataclass
class Msg:
    text: str
    body: bytes
    signature: str

    @property
    def reply(self) -> str:
        """What the fake Ollama answers, so what the user must receive."""
        return f"echo: {self.text}"


def user_ids(count: int, seed: str = "bench") -> list[str]:
    return ["U" + hashlib.md5(f"{seed}-user-{i}".encode()).hexdigest() for i in range(count)]


def make_messages(count: int, *, users: list[str], tag: str | None = None) -> list[Msg]:
    """`count` signed webhook bodies, one text message event each, spread over `users`.

    Every event has its own webhookEventId and reply token, and a text that is unique in
    the run (so a reply can be matched to its message by text).
    """
    tag = tag or uuid.uuid4().hex[:6]
    messages = []
    for i in range(count):
        text = f"bench {tag} #{i}"
        event = wh.text_message_event(text, user_id=users[i % len(users)])
        body = wh.payload_bytes(event)
        messages.append(Msg(text, body, wh.sign(body, CHANNEL_SECRET)))
    return messages


def signed_body(event: dict) -> Msg:
    """One signed webhook body carrying `event` (its text, if any, names it)."""
    body = wh.payload_bytes(event)
    text = (event.get("message") or {}).get("text", "")
    return Msg(text, body, wh.sign(body, CHANNEL_SECRET))


def post_webhook(port: int, msg: Msg) -> tuple[int, float, bytes]:
    """One POST over a fresh connection; returns (status, seconds, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json", "X-Line-Signature": msg.signature}
    started = time.perf_counter()
    conn.request("POST", WEBHOOK_PATH, body=msg.body, headers=headers)
    response = conn.getresponse()
    data = response.read()
    elapsed = time.perf_counter() - started
    conn.close()
    return response.status, elapsed, data


# --- load generation --------------------------------------------------------------------


@dataclass
class LoadResult:
    requests: int
    seconds: float
    ok: int
    non_ok: int
    errors: dict = field(default_factory=dict)
    latency_ms: dict = field(default_factory=dict)  # p50, p90, p99, max, mean
    tool: str = "python"
    cpu_s: float = 0.0  # CPU the load generator itself used

    @property
    def cpu_us_per_request(self) -> float:
        return self.cpu_s / self.requests * 1e6 if self.requests else 0.0

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def run_load(port: int, *, connections: int, messages: list[Msg] | None = None, count: int | None = None,
             path: str = WEBHOOK_PATH, method: str = "POST", tool: str = "python", workdir: Path,
             timeout_s: int = 30) -> LoadResult:
    """Sends exactly one request per message (or `count` bodiless requests) at `connections`.

    POSTs carry the pre-generated signed bodies; GET (for /healthz) sends no body.
    tool "python" (default): the lean epoll client below, exact per-request latencies.
    tool "wrk": wrk + wrk_replay.lua; throughput as exact, but wrk 4.x always applies its
    coordinated-omission correction (stats_correct) to the latency histogram, which adds
    synthetic samples for every response slower than twice the mean interval per
    connection, so its p90/p99 are not the measured ones.
    """
    if tool == "auto":
        tool = "wrk" if have_wrk() else "python"
    total = len(messages) if messages is not None else int(count or 0)
    before_self = resource.getrusage(resource.RUSAGE_SELF)
    before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    if tool == "wrk":
        result = _run_wrk(port, connections, messages, total, path, method, workdir, timeout_s)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        result.cpu_s = (after.ru_utime + after.ru_stime) - (before_children.ru_utime + before_children.ru_stime)
    else:
        result = _run_python(port, connections, messages, total, path, method)
        after = resource.getrusage(resource.RUSAGE_SELF)
        result.cpu_s = (after.ru_utime + after.ru_stime) - (before_self.ru_utime + before_self.ru_stime)
    return result


def _run_wrk(port, connections, messages, total, path, method, workdir: Path, timeout_s) -> LoadResult:
    if messages is not None:
        source = workdir / f"bodies-{uuid.uuid4().hex[:6]}.txt"
        with open(source, "wb") as f:
            for msg in messages:
                f.write(msg.signature.encode() + b" " + msg.body + b"\n")
        arg = str(source)
    else:
        arg = "-"
    argv = ["wrk", "-t1", f"-c{connections}", "-d3600s", f"--timeout={timeout_s}s",
            "-s", str(BENCH_DIR / "wrk_replay.lua"), f"http://127.0.0.1:{port}", "--", arg, str(total), path, method]
    proc = spawn(argv, pipe_stdout=True, log=workdir / "wrk.log")
    lines = []
    try:
        for raw in proc.stdout:  # wrk_replay.lua prints WRKDONE when all responses are in
            line = raw.decode(errors="replace")
            lines.append(line)
            if line.startswith("WRKDONE"):
                proc.send_signal(signal.SIGINT)  # ends wrk's -d sleep; it then prints WRKJSON
        proc.wait(timeout=60)
    finally:
        stop(proc, grace=2)
    text = "".join(lines)
    line = next((line for line in text.splitlines() if line.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result:\n{text}")
    data = json.loads(line[len("WRKJSON "):])
    return LoadResult(
        requests=data["requests"], seconds=data["duration_us"] / 1e6, ok=data["ok"], non_ok=data["non_ok"],
        errors=data["errors"], latency_ms={k: v / 1000 for k, v in data["latency_us"].items()}, tool="wrk",
    )


def _run_python(port, connections, messages, total, path, method) -> LoadResult:
    """A lean load generator: one thread, non-blocking sockets on epoll, pre-built requests.

    No HTTP library and no asyncio in the loop (a few dozen microseconds of CPU per
    request). Latency runs from connect() to the last byte of the response, per request,
    exactly (no coordinated-omission correction). gunicorn's sync workers close every
    connection, so every request uses a new connection, as wrk's would.
    """
    import selectors

    host = f"127.0.0.1:{port}".encode()
    if messages is not None:
        raws = [
            b"%s %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nX-Line-Signature: %s\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (method.encode(), path.encode(), host, m.signature.encode(), len(m.body), m.body)
            for m in messages
        ]
    else:
        raws = [b"%s %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (method.encode(), path.encode(), host)] * total
    address = ("127.0.0.1", port)
    sel = selectors.DefaultSelector()
    latencies: list[float] = []
    statuses: Counter = Counter()
    errors: Counter = Counter()
    clock = time.perf_counter
    next_index = 0
    active = 0

    def open_next() -> None:
        nonlocal next_index, active
        raw = raws[next_index]
        next_index += 1
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        started = clock()
        sock.connect_ex(address)
        # state: [request bytes still to send, received bytes, start time]
        sel.register(sock, selectors.EVENT_WRITE, [raw, bytearray(), started])
        active += 1

    def finish(sock, state, ok: bool) -> None:
        nonlocal active
        sel.unregister(sock)
        sock.close()
        active -= 1
        if ok:
            latencies.append(clock() - state[2])
            data = state[1]
            statuses[int(data[9:12])] += 1
        if next_index < len(raws):
            open_next()

    started_all = clock()
    for _ in range(min(connections, len(raws))):
        open_next()
    while active:
        for key, events in sel.select(timeout=30):
            sock, state = key.fileobj, key.data
            try:
                if events & selectors.EVENT_WRITE:
                    sent = sock.send(state[0])
                    state[0] = state[0][sent:]
                    if not state[0]:
                        sel.modify(sock, selectors.EVENT_READ, state)
                    continue
                chunk = sock.recv(65536)
            except OSError:
                errors["socket"] += 1
                finish(sock, state, False)
                continue
            data = state[1]
            data += chunk
            head_end = data.find(b"\r\n\r\n")
            if head_end < 0:
                if not chunk:
                    errors["read"] += 1
                    finish(sock, state, False)
                continue
            match = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", data[:head_end + 2])
            complete = len(data) >= head_end + 4 + int(match.group(1)) if match else not chunk
            if complete:
                finish(sock, state, True)
            elif not chunk:
                errors["read"] += 1
                finish(sock, state, False)
    seconds = clock() - started_all
    sel.close()
    ok = statuses.get(200, 0)
    return LoadResult(
        requests=len(latencies), seconds=seconds, ok=ok, non_ok=sum(statuses.values()) - ok, errors=dict(errors),
        latency_ms={
            "p50": percentile(latencies, 50) * 1000, "p90": percentile(latencies, 90) * 1000,
            "p99": percentile(latencies, 99) * 1000, "max": max(latencies, default=0) * 1000,
            "mean": (sum(latencies) / len(latencies) * 1000) if latencies else 0,
        },
        tool="python",
    )


# --- one-stack benchmarks (engine, media) ------------------------------------------------


def one_stack_parser(description: str) -> argparse.ArgumentParser:
    """The command line of a benchmark run on one stack: --postgres-redis picks it. The script
    adds its own options, and `add_burst_options` where it wants them in its --help."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres-redis", action="store_true", help="PostgreSQL + Redis instead of SQLite + ORM")
    return parser


def add_burst_options(parser: argparse.ArgumentParser) -> None:
    """How a burst is posted and waited for, and whether its logs are kept."""
    parser.add_argument("--settle", type=float, default=3, help="seconds to wait for late duplicates (default 3)")
    parser.add_argument("--loadgen", choices=["python", "wrk"], default="python")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, database)")


def run_one_stack(name: str, title: str, run, args) -> tuple[str, dict]:
    """`run(stack_name, args)` on the stack --postgres-redis picked, under `title`; whatever it
    started is killed however it ends, and its result is saved as `name`.

    Returns (stack_name, result).
    """
    install_signal_handlers()
    print_header(title)
    stack_name = "postgres-redis" if args.postgres_redis else "sqlite-orm"
    try:
        result = run(stack_name, args)
    finally:
        kill_all()
    print(f"saved {save_result(name, result)}")
    return stack_name, result


# --- numbers and output --------------------------------------------------------------------


def percentile(values, p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    data = sorted(values)
    if not data:
        return math.nan
    k = (len(data) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


def table(headers: list[str], rows: list[list]) -> str:
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.2f}"
    return str(value)


def verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def machine_info() -> dict[str, str]:
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = {}
    for module in ("django", "gunicorn", "django_q", "psycopg", "redis"):
        try:
            from importlib.metadata import version

            versions[module] = version({"django_q": "django-q2", "django": "Django"}.get(module, module))
        except Exception:
            versions[module] = "?"
    wrk = ""
    if have_wrk():
        wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split("\n")[0].split(" [")[0]
    return {"cpus": str(os.cpu_count()), "cpu": cpu, "python": platform.python_version(), **versions, "wrk": wrk}


def machine_busy(seconds: float = 2.0) -> float:
    """Share of both CPUs busy over `seconds` (before our processes start: others' load)."""
    def snap():
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        idle = values[3] + values[4]
        return sum(values), idle
    total0, idle0 = snap()
    time.sleep(seconds)
    total1, idle1 = snap()
    return 1 - (idle1 - idle0) / max(1, total1 - total0)


def wait_for_idle(max_wait: float | None = None, threshold: float = 0.10) -> float:
    """Waits (up to BENCH_IDLE_WAIT seconds, default 180) for other processes to leave the CPUs idle.

    On a shared 2-core machine someone else's test run halves every figure; returns
    the last busy share measured.
    """
    max_wait = float(os.environ.get("BENCH_IDLE_WAIT", "180")) if max_wait is None else max_wait
    deadline = time.monotonic() + max_wait
    busy = machine_busy()
    if busy > threshold and max_wait > 0:
        print(f"(waiting up to {max_wait:.0f} s for the machine to go idle: {busy:.0%} busy)", flush=True)
    while busy > threshold and time.monotonic() < deadline:
        busy = machine_busy(3.0)
    return busy


def code_fingerprint() -> str:
    """A short hash of the app code on the hot path, so a result names the code it measured."""
    digest = hashlib.sha256()
    for path in sorted([*ROOT.glob("conversations/*.py"), *ROOT.glob("conversations/line/*.py"),
                        *ROOT.glob("models_registry/**/*.py"), *ROOT.glob("linebot_site/*.py")]):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def print_header(title: str) -> None:
    info = machine_info()
    print(f"== {title} ==")
    print(
        f"machine: {info['cpus']} CPUs ({info['cpu']}); Python {info['python']}, Django {info['django']}, "
        f"gunicorn {info['gunicorn']}, django-q2 {info['django_q']}; app code {code_fingerprint()}; "
        f"{time.strftime('%Y-%m-%d %H:%M:%S')}"
    )
    busy = wait_for_idle()
    print(f"CPU busy before start (other processes): {busy:.0%} of {info['cpus']} CPUs; load average {os.getloadavg()[0]:.2f}"
          + ("  WARNING: the machine is not idle, figures will be low and noisy" if busy > 0.10 else ""))


def save_result(name: str, data: dict) -> Path:
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"machine": machine_info(), "code": code_fingerprint(), **data}, indent=2, default=str))
    return path


def pss_mib(roots: list[int]) -> float:
    """The sum of PSS (/proc/PID/smaps_rollup) of the processes `roots` and all their descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    total_kib, todo, seen = 0, list(roots), set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo.extend(children.get(pid, []))
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total_kib += int(line.split()[1])
                    break
        except OSError:
            continue
    return total_kib / 1024


def wait_until_answered(stack, watcher, prefix: str, *, deadline: float, progress) -> bool:
    """Until no message of the burst is pending or being answered and every stored answer arrived."""
    started, last_change, seen = time.monotonic(), time.monotonic(), None
    while time.monotonic() - started < deadline:
        watcher.poll()
        db = stack.db_report(text_prefix=prefix)
        open_ = db["inbound"].get("pending", 0) + db["inbound"].get("generating", 0)
        answers = sum(db["outbound"].values())
        delivered = sum(1 for text in watcher.deliveries if text.startswith(f"echo: {prefix}"))
        progress(sum(db["inbound"].values()) - open_, sum(db["inbound"].values()))
        if open_ == 0 and delivered >= answers:
            return True
        if (open_, delivered) != seen:
            seen, last_change = (open_, delivered), time.monotonic()
        elif time.monotonic() - last_change > 90:
            print(f"  giving up: no progress for 90 s ({open_} messages open)", flush=True)
            return False
        time.sleep(1.0)
    return False


def answered_report(stack, watcher, prefix: str) -> dict:
    """Of the messages whose text starts with `prefix`: how many are not `replied` or whose
    stored answer never arrived (lost), and how many answers arrived twice (duplicated).

    A chat's messages that come while it is being answered get one answer together, so a
    message is not matched to a delivery of its own text; the database says it was answered.
    """
    watcher.poll()
    db = stack.db_report(text_prefix=prefix)
    ours = {text: arrivals for text, arrivals in watcher.deliveries.items() if text.startswith(f"echo: {prefix}")}
    lost = (sum(n for status, n in db["inbound"].items() if status != "replied")
            + max(0, sum(db["outbound"].values()) - len(ours)))
    return {"lost": lost, "duplicated": sum(1 for arrivals in ours.values() if len(arrivals) > 1),
            "answers": len(ours), "db": db, "deliveries": ours}
