"""`make run` and `manage.py serve`: one Ctrl-C stops the web server and the worker, cleanly.

Each test starts the real processes on a free port with a database and keys of its own,
waits until the web server answers and the cluster runs, interrupts them as a terminal
would, and then looks for what is left: a traceback in the output, a process of the run.
"""
import fcntl
import os
import secrets
import shutil
import signal
import subprocess
import sys
import termios
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet

from tests.test_end_to_end import free_port

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.e2e


@pytest.fixture
def run_env(tmp_path):
    """Settings of the site itself, on a database of their own, marked so leftovers can be found."""
    marker = uuid.uuid4().hex
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "linebot_site.settings",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "KEYS_FILE": str(tmp_path / "no-keys-file"),
        "SECRET_KEY": secrets.token_urlsafe(50),
        "FIELD_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "AUDIT_HMAC_KEY": secrets.token_urlsafe(32),
        "Q_CLUSTER_QUEUE": f"serve-{marker[:8]}",
        "Q_WORKERS": "2",
        "Q_SYNC": "",
        "Q_LOG_LEVEL": "INFO",  # to see "Q Cluster … running"
        "WEB_WORKERS": "1",
        "PYTHONUNBUFFERED": "1",
        "LINEBOT_RUN_MARKER": marker,
    }
    subprocess.run([sys.executable, "manage.py", "migrate", "--no-input", "-v0"], cwd=ROOT, env=env, check=True)
    yield env
    for pid in processes_marked(marker):  # never leave one behind, even when the test failed
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def processes_marked(marker: str) -> list[int]:
    """Processes whose environment carries this run's marker."""
    found = []
    needle = f"LINEBOT_RUN_MARKER={marker}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:  # gone meanwhile, or not ours to read
            pass
    return found


def wait_until_serving(port: int, output, alive) -> None:
    deadline = time.monotonic() + 90
    while True:
        try:
            healthy = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            healthy = False
        if healthy and "Q Cluster" in output() and "running" in output():
            return
        assert alive(), f"exited before serving:\n{output()}"
        assert time.monotonic() < deadline, f"not serving within 90 s:\n{output()}"
        time.sleep(0.3)


def process_tree(root: int) -> dict[int, list[int]]:
    """pid -> its children, for `root` and everything under it."""
    parents = {}
    for entry in Path("/proc").iterdir():
        try:
            parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (ValueError, OSError):
            pass
    tree, todo = {}, [root]
    while todo:
        pid = todo.pop()
        tree[pid] = sorted(child for child, parent in parents.items() if parent == pid)
        todo += tree[pid]
    return tree


def assert_forked_layout(serve: int, *, web_workers: int, q_workers: int) -> None:
    """gunicorn and the cluster are forks of serve (its command line, its loaded pages), named by role."""
    tree = process_tree(serve)
    comm = {pid: Path(f"/proc/{pid}/comm").read_text().strip() for pid in tree}
    cmdline = {pid: Path(f"/proc/{pid}/cmdline").read_bytes() for pid in tree}
    assert sorted(comm[child] for child in tree[serve]) == ["gunicorn", "qcluster"], comm
    assert all(line == cmdline[serve] for line in cmdline.values()), "a child is a new interpreter, not a fork"
    web = next(child for child in tree[serve] if comm[child] == "gunicorn")
    cluster = next(child for child in tree[serve] if comm[child] == "qcluster")
    assert len(tree[web]) == web_workers
    (sentinel,) = tree[cluster]
    assert len(tree[sentinel]) == q_workers + 2  # and the monitor and the pusher
    # What serve preloaded is shared, not copied: each web worker's own memory is a small
    # part of what it maps (with its own imports it would be most of it).
    for worker in tree[web]:
        rollup = dict(line.split(":", 1) for line in Path(f"/proc/{worker}/smaps_rollup").read_text().splitlines()[1:])
        kib = {key: int(value.split()[0]) for key, value in rollup.items()}
        assert kib["Private_Clean"] + kib["Private_Dirty"] < kib["Rss"] / 3, kib


def wait_for_exit(process: subprocess.Popen, output) -> int:
    try:
        return process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running 60 s after Ctrl-C:\n{output()}")


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="POSIX process groups")
def test_sigint_to_the_group_stops_server_and_worker_cleanly(run_env, tmp_path):
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "serve", "--port", str(port)], cwd=ROOT, env=run_env,
            stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    output = lambda: log.read_text(errors="replace")  # noqa: E731
    wait_until_serving(port, output, lambda: process.poll() is None)
    assert len(processes_marked(run_env["LINEBOT_RUN_MARKER"])) >= 5  # serve, gunicorn ×2, qcluster and its own
    assert_forked_layout(process.pid, web_workers=1, q_workers=2)

    os.killpg(process.pid, signal.SIGINT)  # what a terminal does on Ctrl-C, to the whole group

    assert wait_for_exit(process, output) == 0, output()
    assert "Traceback" not in output() and "Error" not in output(), output()
    assert "Stopped." in output()
    time.sleep(0.5)
    assert processes_marked(run_env["LINEBOT_RUN_MARKER"]) == []
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)


def _controlling_terminal() -> None:
    """In the child: the pty on stdin becomes its controlling terminal (it leads a new session)."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


@pytest.mark.skipif(not shutil.which("make"), reason="make is not installed")
def test_ctrl_c_in_a_terminal_ends_make_run_with_status_0(run_env):
    port = free_port()
    controller, terminal = os.openpty()
    # The tested venv; bootstrap (install, keys, migrate) is left out: run_env did what it needs.
    command = ["make", "--no-print-directory", "-o", "bootstrap", "run", f"VENV={sys.prefix}",
               "HOST=127.0.0.1", f"PORT={port}"]
    process = subprocess.Popen(command, cwd=ROOT, env=run_env, stdin=terminal, stdout=terminal, stderr=terminal,
                               start_new_session=True, preexec_fn=_controlling_terminal)
    os.close(terminal)
    received = bytearray()

    def read() -> None:  # a full pty would block the processes writing to it
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: every process on the terminal closed it
                return
            if not chunk:
                return
            received.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    output = lambda: received.decode(errors="replace")  # noqa: E731
    try:
        wait_until_serving(port, output, lambda: process.poll() is None)

        os.write(controller, b"\x03")  # Ctrl-C, typed

        assert wait_for_exit(process, output) == 0, output()
    finally:
        reader.join(timeout=5)
        os.close(controller)
    assert "Traceback" not in output() and "make: ***" not in output(), output()
    assert "Stopped." in output()
    time.sleep(0.5)
    assert processes_marked(run_env["LINEBOT_RUN_MARKER"]) == []


STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
QUICK_EXIT = "import sys, time; time.sleep(0.5); sys.exit(3)"


@pytest.fixture
def supervisor(tmp_path):
    """Starts core.supervisor.supervise() in a process of its own, on stub children; afterwards
    nothing of it may be left."""
    marker = "stub-" + uuid.uuid4().hex

    def start(commands: dict, grace: float = 30.0) -> subprocess.Popen:
        script = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); from core.supervisor import supervise; "
                  f"sys.exit(supervise(commands={commands!r}, cwd={str(tmp_path)!r}, grace={grace}))")
        return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True, env={**os.environ, "LINEBOT_RUN_MARKER": marker})

    yield start
    time.sleep(0.3)
    left = processes_marked(marker)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert left == []


def wait_for_line(process: subprocess.Popen, text: str) -> str:
    seen = ""
    while text not in seen:
        line = process.stdout.readline().decode()
        assert line, f"ended before {text!r}: {seen}"
        seen += line
    return seen


def test_a_second_signal_stops_what_ignores_the_first(supervisor):
    process = supervisor({"one": [sys.executable, "-c", STUBBORN], "two": [sys.executable, "-c", STUBBORN]})
    wait_for_line(process, "up")
    os.killpg(process.pid, signal.SIGINT)
    wait_for_line(process, "Ctrl-C again")
    started = time.monotonic()
    os.killpg(process.pid, signal.SIGINT)
    output = process.communicate(timeout=10)[0].decode()
    assert process.returncode == 1 and "Stopping at once." in output and time.monotonic() - started < 5


def test_a_stop_that_takes_too_long_ends_in_a_kill(supervisor):
    process = supervisor({"stubborn": [sys.executable, "-c", STUBBORN]}, grace=1)
    wait_for_line(process, "up")
    os.killpg(process.pid, signal.SIGTERM)
    output = process.communicate(timeout=10)[0].decode()
    assert process.returncode == 1 and "Stopping at once." in output


def test_a_child_that_exits_stops_the_other(supervisor):
    process = supervisor({"quits": [sys.executable, "-c", QUICK_EXIT],
                          "stays": [sys.executable, "-c", "import time; time.sleep(60)"]})
    output = process.communicate(timeout=10)[0].decode()
    assert process.returncode == 1 and "quits exited with status 3; stopping the rest." in output


def test_the_web_server_layout():
    from core.management.commands.serve import gunicorn_options

    options = gunicorn_options(host="127.0.0.1", port=8000, workers=2, threads=1)
    assert options["worker_class"] == "sync" and options["workers"] == 2
    assert options["preload_app"] is True and options["max_requests"] == 0
    threaded = gunicorn_options(host="::1", port=8001, workers=1, threads=8)
    assert threaded["worker_class"] == "gthread" and threaded["threads"] == 8 and threaded["bind"] == "::1:8001"


@pytest.mark.parametrize("argument", [["--web-threads", "0"], ["--web-workers", "0"], ["--port", "70000"]])
def test_serve_refuses_a_bad_layout(argument):
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="at least 1|1-65535"):
        call_command("serve", *argument)


def test_every_module_serve_preloads_exists():
    from importlib import import_module

    from django.conf import settings

    assert "conversations.tasks" in settings.PRELOAD_MODULES
    for name in settings.PRELOAD_MODULES:
        import_module(name)


# Client libraries only the task workers use (serve imports them once for all its processes);
# any other process that loads the site, a management command or a bare gunicorn, does without.
WORKER_ONLY_MODULES = ["linebot", "ollama", "replicate", "openai", "httpx", "redis", "pydantic"]


def test_the_site_and_its_wsgi_app_load_no_worker_client_library(tmp_path):
    code = ("import json, sys; import linebot_site.wsgi; "
            f"print(json.dumps(sorted(m for m in {WORKER_ONLY_MODULES!r} if m in sys.modules)))")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "linebot_site.settings",
           "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}", "KEYS_FILE": str(tmp_path / "none"),
           "SECRET_KEY": secrets.token_urlsafe(50), "FIELD_ENCRYPTION_KEY": Fernet.generate_key().decode(),
           "AUDIT_HMAC_KEY": secrets.token_urlsafe(32), "REDIS_URL": ""}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout
