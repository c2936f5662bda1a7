#!/usr/bin/env python
"""Memory of `make run`: the PSS of every web and worker process, idle and after a burst.

The bot is started as `make run` starts it — `manage.py serve` with its defaults (web
workers, Q_WORKERS, everything) — on a temporary database, with the fake LINE API and the
fake model (tests/fakes/). PSS (`Pss:` in /proc/PID/smaps_rollup) counts a page shared by
N processes as 1/N in each, so the sum over the process tree is what the tree costs.

1. started: the tree just after it serves `/healthz`;
2. idle: after a warm-up of a few hundred messages (every web and worker process has
   served), left alone for a few seconds;
3. loaded: after a burst of 10,000 signed webhooks at 50 connections, every one answered
   (checked at the fake LINE API, as in bench/burst.py), left alone for a few seconds;
   the peak sampled during the drain is printed too.

Baselines measured in the same run: a bare interpreter that imported Django, and a trivial
WSGI app (no Django) under gunicorn with 2 sync workers.

    .venv/bin/python bench/memory.py                    # SQLite + ORM broker
    .venv/bin/python bench/memory.py --postgres-redis   # PostgreSQL + Redis broker

Targets: idle <= 250 MiB, loaded <= 300 MiB. Last line: `SUMMARY memory: idle N MiB, loaded M MiB`.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import harness as h  # noqa: E402

IDLE_TARGET_MIB = 250.0
LOADED_TARGET_MIB = 300.0
TRIVIAL_APP = '''def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
'''


@dataclass
class Proc:
    pid: int
    role: str
    rss: float  # MiB
    pss: float
    private: float


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


def _rollup(pid: int) -> dict[str, float]:
    values = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        values[key] = int(rest.split()[0]) / 1024
    return values


def _role(pid: int, depth: int) -> str:
    """What a process of `manage.py serve` is, from its name (the supervisor names its forks) and depth."""
    comm = Path(f"/proc/{pid}/comm").read_text().strip()
    if depth == 0:
        return "serve (supervisor)"
    if comm == "gunicorn":
        return "web: gunicorn master" if depth == 1 else "web: gunicorn worker"
    if comm == "qcluster":
        return {1: "tasks: qcluster", 2: "tasks: sentinel"}.get(depth, "tasks: worker/monitor/pusher")
    return f"{comm} (depth {depth})"


def tree(root: int, *, roles: bool = True) -> list[Proc]:
    """Every process under `root` (itself included) with its RSS, PSS and private memory."""
    found, todo = [], [(root, 0)]
    while todo:
        pid, depth = todo.pop(0)
        try:
            rollup = _rollup(pid)
            role = _role(pid, depth) if roles else ("parent" if depth == 0 else "child")
        except (OSError, ValueError):  # ended meanwhile
            continue
        found.append(Proc(pid, role, rollup["Rss"], rollup["Pss"],
                          rollup.get("Private_Clean", 0) + rollup.get("Private_Dirty", 0)))
        todo += [(child, depth + 1) for child in _children(pid)]
    return found


def total(procs: list[Proc]) -> float:
    return sum(p.pss for p in procs)


def print_tree(title: str, procs: list[Proc]) -> None:
    print(f"\n{title}: {len(procs)} processes, PSS {total(procs):.1f} MiB")
    print(h.table(["pid", "process", "RSS MiB", "PSS MiB", "private MiB"],
                  [[p.pid, p.role, p.rss, p.pss, p.private] for p in procs]))


class ServeStack(h.Stack):
    """h.Stack, with the web server and the task cluster started as `make run` does: `manage.py serve`."""

    def __init__(self, name: str, **kwargs) -> None:
        super().__init__(name, workers=None, **kwargs)  # Q_WORKERS: the app's default

    def start_web(self) -> None:
        self.port = h.free_port()
        self.gunicorn = h.spawn([h.PYTHON, "manage.py", "serve", "--port", str(self.port)],
                                env=self.env, log=self.tmp / "serve.log")
        self.qcluster = self.gunicorn  # one process tree; stopping it stops both
        h.wait_http("127.0.0.1", self.port, "/healthz", procs=[self.gunicorn])

    def start_qcluster(self) -> float:
        return time.time()

    def stop_qcluster(self) -> None:
        raise NotImplementedError("manage.py serve runs the cluster with the web server")

    def close(self) -> None:
        self.qcluster = None
        super().close()


def baselines(workdir: Path) -> dict[str, float]:
    """PSS of a bare interpreter that imported Django, and of a trivial gunicorn app (2 sync workers)."""
    results = {}
    bare = h.spawn([h.PYTHON, "-c", "import django, sys; print('up', flush=True); sys.stdin.read()"],
                   pipe_stdout=True)
    try:
        bare.stdout.readline()
        results["python + import django (1 process)"] = total(tree(bare.pid, roles=False))
    finally:
        h.stop(bare, grace=2)
    (workdir / "trivial_wsgi.py").write_text(TRIVIAL_APP)
    port = h.free_port()
    server = h.spawn([h.PYTHON, "-m", "gunicorn", "--chdir", str(workdir), "trivial_wsgi", "--workers", "2",
                      "--bind", f"127.0.0.1:{port}", "--log-level", "warning"], log=workdir / "trivial.log")
    try:
        h.wait_http("127.0.0.1", port, "/", procs=[server])
        h.run_load(port, connections=4, count=200, path="/", method="GET", workdir=workdir)
        time.sleep(1)
        results["trivial WSGI app, gunicorn 2 sync workers (3 processes)"] = total(tree(server.pid, roles=False))
    finally:
        h.stop(server, grace=5)
    return results


def run_stack(name: str, args) -> dict:
    users = h.user_ids(args.users)
    with ServeStack(name, keep=args.keep) as stack:
        serve = stack.gunicorn
        time.sleep(3)  # the cluster forks its workers after the web server answers
        started = tree(serve.pid)
        print_tree("started (nothing served yet)", started)

        watcher = h.ReplyWatcher(stack.line)
        warm = h.make_messages(args.warm, users=h.user_ids(args.users, seed="warm"), tag="warm")
        h.run_load(stack.port, connections=4, count=200, path="/healthz", method="GET", workdir=stack.tmp)
        h.run_load(stack.port, connections=8, messages=warm, tool=args.loadgen, workdir=stack.tmp)
        if not watcher.wait_for([m.reply for m in warm], timeout=180, procs=[serve]):
            raise RuntimeError("warm-up replies did not arrive; see serve.log in " + str(stack.tmp))
        time.sleep(args.settle)
        idle = tree(serve.pid)
        print_tree("idle (after the warm-up)", idle)

        tag = uuid.uuid4().hex[:6]
        msgs = h.make_messages(args.messages, users=users, tag=tag)
        print(f"\n[{name}] sending {len(msgs)} webhooks at {args.concurrency} connections ...", flush=True)
        began = time.time()
        accepted = h.run_load(stack.port, connections=args.concurrency, messages=msgs, tool=args.loadgen,
                              workdir=stack.tmp)
        peak = [total(tree(serve.pid))]
        last = [0.0]

        def progress(done: int, count: int) -> None:
            if time.monotonic() - last[0] > 5:
                last[0] = time.monotonic()
                peak[0] = max(peak[0], total(tree(serve.pid)))
                print(f"[{name}]   {done}/{count} answered after {time.time() - began:.0f} s; "
                      f"PSS now {total(tree(serve.pid)):.0f} MiB", flush=True)

        complete = h.wait_until_answered(stack, watcher, f"bench {tag} #", deadline=args.deadline, progress=progress)
        time.sleep(args.settle)
        watcher.poll()
        loaded = tree(serve.pid)
        print_tree(f"loaded (after {len(msgs)} messages, all answered)" if complete else
                   "loaded (after the burst; NOT all answered)", loaded)
        answered = h.answered_report(stack, watcher, f"bench {tag} #")
        return {
            "stack": name,
            "started": [p.__dict__ for p in started], "idle": [p.__dict__ for p in idle],
            "loaded": [p.__dict__ for p in loaded],
            "started_mib": total(started), "idle_mib": total(idle), "loaded_mib": total(loaded),
            "peak_mib": max(peak[0], total(loaded)),
            "sent": len(msgs), "accepted_ok": accepted.ok, "accept_rate": accepted.rate, "complete": complete,
            "lost": answered["lost"], "duplicated": answered["duplicated"], "answers": answered["answers"],
            "log_problems": stack.log_problems(),
        }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres-redis", action="store_true", help="PostgreSQL + Redis broker instead of SQLite + ORM broker")
    parser.add_argument("--messages", type=int, default=10000, help="messages in the burst (default 10000)")
    parser.add_argument("--warm", type=int, default=200, help="warm-up messages before the idle figure (default 200)")
    parser.add_argument("--concurrency", type=int, default=50, help="concurrent connections (default 50)")
    parser.add_argument("--users", type=int, default=1000,
                        help="distinct LINE users (default 1000: 10 messages each, within the default per-user "
                             "limit of 20 in 10 minutes, past which messages are skipped, not answered)")
    parser.add_argument("--settle", type=float, default=5, help="seconds left alone before a figure (default 5)")
    parser.add_argument("--deadline", type=float, default=900, help="seconds to wait for every reply (default 900)")
    parser.add_argument("--loadgen", choices=["python", "wrk"], default="python",
                        help="python (default): lean epoll client in bench/harness.py; wrk: wrk + bench/wrk_replay.lua")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, SQLite file)")
    args = parser.parse_args(argv)
    h.install_signal_handlers()

    name = "postgres-redis" if args.postgres_redis else "sqlite-orm"
    h.print_header(f"memory of `make run` (manage.py serve, defaults): {h.stack_label(name)}")
    print("PSS = Pss of /proc/PID/smaps_rollup, summed over the serve process tree; "
          f"load generator: {args.loadgen}")
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as workdir:
        base = baselines(Path(workdir))
    result = run_stack(name, args)

    print("\nbaselines (same run):")
    print(h.table(["process tree", "PSS MiB"], [[label, mib] for label, mib in base.items()]))
    idle_ok = result["idle_mib"] <= IDLE_TARGET_MIB
    loaded_ok = result["loaded_mib"] <= LOADED_TARGET_MIB and result["complete"]
    print()
    print(h.table(
        ["stack", "processes", "started MiB", "idle MiB", "loaded MiB", "peak in drain MiB", "lost", "duplicated",
         f"idle <= {IDLE_TARGET_MIB:.0f}", f"loaded <= {LOADED_TARGET_MIB:.0f}"],
        [[h.stack_label(name), len(result["idle"]), result["started_mib"], result["idle_mib"], result["loaded_mib"],
          result["peak_mib"], result["lost"], result["duplicated"], h.verdict(idle_ok), h.verdict(loaded_ok)]]))
    print(f"  log errors: {result['log_problems']}; burst accepted {result['accepted_ok']} of {result['sent']} "
          f"at {result['accept_rate']:.0f}/s")
    path = h.save_result("memory", {"baselines": base, "result": result})
    print(f"  [raw: {path.relative_to(h.ROOT)}]")
    print(f"\nSUMMARY memory: idle {result['idle_mib']:.0f} MiB, loaded {result['loaded_mib']:.0f} MiB")
    return 0 if idle_ok and loaded_ok and result["lost"] == 0 and result["duplicated"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
