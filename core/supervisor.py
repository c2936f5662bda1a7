"""Runs the web server and the task worker side by side; one Ctrl-C stops both, once.

A child is a command (run in a new interpreter) or a function run in a forked copy of
this process: forked children share every page this process loaded before the fork, so
what the web server and the task cluster both import is in memory once (`manage.py serve`).

Each child gets a process group of its own, so a signal meant for the whole terminal
reaches only this supervisor, which forwards SIGTERM to each child exactly once: django-q2's
cluster re-enters its stop handler on every further signal (a second SIGINT to its group, a
`kill 0` from a shell trap), which nests until Python's recursion limit.
"""
import ctypes
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

# prctl(PR_SET_PDEATHSIG): a child left behind by a supervisor killed outright still stops.
PR_SET_PDEATHSIG = 1
# prctl(PR_SET_NAME): a forked child shows its role in ps and top, not the supervisor's command.
PR_SET_NAME = 15
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass
class Child:
    name: str
    process: "subprocess.Popen | Forked"


class Forked:
    """A function running in a forked child, with the little of Popen's interface used here."""

    def __init__(self, target: Callable[[], int | None], *, name: str, cwd: str) -> None:
        self.args = [name]
        self.returncode: int | None = None
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            os._exit(_run_forked(target, name=name, cwd=cwd))
        self.pid = pid
        try:  # also here: the parent may signal the group before the child has made it
            os.setpgid(pid, pid)
        except OSError:
            pass

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.args, timeout)
            time.sleep(0.05)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)


def _run_forked(target: Callable[[], int | None], *, name: str, cwd: str) -> int:
    try:
        os.setpgid(0, 0)
        # Inherited from the supervisor, whose handlers only record a stop request.
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        _prepare_child()
        if sys.platform.startswith("linux"):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_NAME, name.encode()[:15])
        os.chdir(cwd)
        status = target()
    except SystemExit as stop:
        status = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException:
        traceback.print_exc()
        status = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    return status or 0


def supervise(*, commands: dict[str, list[str] | Callable[[], int | None]], cwd: str, grace: float = 30.0,
              say: Callable[[str], None] = print) -> int:
    """Starts each command (argv, or a function to run forked) and waits; returns 0 when a stop
    signal ended them all cleanly.

    The first SIGINT/SIGTERM/SIGHUP sends SIGTERM to each child (gunicorn and qcluster both
    stop gracefully on it); a second one, or `grace` seconds without an end, kills what is
    left. A child that exits by itself stops the others, and the status is then 1.
    """
    requested: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: requested.append(signum)) for sig in STOP_SIGNALS}
    give_back_terminal = _take_terminal()
    children: list[Child] = []
    try:
        children = [Child(name, _start(command, name=name, cwd=cwd)) for name, command in commands.items()]
        return _wait(children, requested=requested, grace=grace, say=say)
    finally:
        for child in children:
            if child.process.poll() is None:
                _kill_group(child.process)
        give_back_terminal()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _wait(children: list[Child], *, requested: list[int], grace: float, say: Callable[[str], None]) -> int:
    stopping_since: float | None = None
    failed = killed = False
    while any(child.process.poll() is None for child in children):
        ended = [child for child in children if child.process.poll() is not None]
        if stopping_since is None and (requested or ended):
            if ended:
                failed = True
                say(f"{ended[0].name} exited with status {ended[0].process.returncode}; stopping the rest.")
            else:
                say("Stopping the web server and the task worker (Ctrl-C again stops them at once)…")
            for child in children:
                if child.process.poll() is None:
                    child.process.send_signal(signal.SIGTERM)
            stopping_since = time.monotonic()
        elif stopping_since is not None and not killed and (
                len(requested) > 1 or time.monotonic() - stopping_since > grace):
            say("Stopping at once.")
            for child in children:
                if child.process.poll() is None:
                    _kill_group(child.process)
            killed = True
        time.sleep(0.1)
    for child in children:
        _reap_group(child.process)
    if not failed and not killed:
        say("Stopped.")
    return 1 if failed or killed else 0


def _start(command: list[str] | Callable[[], int | None], *, name: str, cwd: str) -> "subprocess.Popen | Forked":
    if callable(command):
        return Forked(command, name=name, cwd=cwd)
    return subprocess.Popen(command, cwd=cwd, process_group=0, preexec_fn=_prepare_child)


def _prepare_child() -> None:
    # Outside the terminal's foreground group, a write to it would stop the child under
    # `stty tostop`; ignored, SIGTTOU lets it write.
    signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _kill_group(process: "subprocess.Popen | Forked") -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


def _reap_group(process: "subprocess.Popen | Forked") -> None:
    """Gunicorn's and django-q2's own children end with them; anything left in the group goes."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _take_terminal() -> Callable[[], None]:
    """Makes this process the terminal's foreground, so Ctrl-C reaches it and not `make`.

    `make run` would otherwise take the same SIGINT, wait for us, then kill itself with it
    and end with status 130 however cleanly everything stopped. Returns how to give the
    terminal back; does nothing without a terminal or when run in the background.
    """
    try:
        terminal = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        return lambda: None
    try:
        foreground = os.tcgetpgrp(terminal)
        if foreground != os.getpgrp():
            os.close(terminal)
            return lambda: None
        os.setpgid(0, 0)
        _set_foreground(terminal, os.getpgrp())
    except OSError:
        os.close(terminal)
        return lambda: None
    # Ctrl-Z would stop this process alone, holding the terminal, with `make` waiting on it.
    suspend = signal.signal(signal.SIGTSTP, signal.SIG_IGN)

    def give_back() -> None:
        try:
            _set_foreground(terminal, foreground)
        except OSError:
            pass
        os.close(terminal)
        signal.signal(signal.SIGTSTP, suspend)

    return give_back


def _set_foreground(terminal: int, group: int) -> None:
    # A process outside the foreground group that sets it is sent SIGTTOU, which stops it.
    previous = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        os.tcsetpgrp(terminal, group)
    finally:
        signal.signal(signal.SIGTTOU, previous)
