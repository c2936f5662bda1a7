"""Shared machinery for loopback fake HTTP servers.

A fake is a real ``ThreadingHTTPServer`` on 127.0.0.1 so that real client
libraries talk to it over TCP.  Subclasses declare endpoints with ``@route``;
the base class records every request and handles failure injection, delays
and the ``/__fake__/*`` control endpoints used when a fake runs as a process.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import socket
import socketserver
import sys
import threading
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

JSON_TYPE = "application/json; charset=utf-8"
CONTROL_PREFIX = "/__fake__/"
_MAX_HEADERS = 100
_MAX_LINE = 65537


class Headers(dict):
    """HTTP headers as a plain dict with lower-cased, case-insensitive keys."""

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] = ()):
        pairs = items.items() if isinstance(items, Mapping) else items
        super().__init__((key.lower(), value) for key, value in pairs)

    def __setitem__(self, key: str, value: str) -> None:
        super().__setitem__(key.lower(), value)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)


@dataclass
class RecordedRequest:
    """One request as the fake received it, plus the status it answered."""

    method: str
    path: str
    query: dict[str, str]
    headers: Headers
    body: bytes
    json: Any
    endpoint: str | None = None
    params: dict[str, str] = field(default_factory=dict)
    status: int | None = None
    received_at: float = field(default_factory=time.time)
    answered_at: float | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": dict(self.headers),
            "body": self.text,
            "json": self.json,
            "endpoint": self.endpoint,
            "params": self.params,
            "status": self.status,
            "received_at": self.received_at,
            "answered_at": self.answered_at,
            "notes": self.notes,
        }


@dataclass
class Response:
    """What a handler returns; ``body`` may be an iterable for chunked streaming."""

    status: int
    body: bytes | Iterable[bytes] = b""
    content_type: str = JSON_TYPE
    headers: dict[str, str] = field(default_factory=dict)


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(status, body, JSON_TYPE, dict(headers or {}))


def text_response(status: int, text: str, content_type: str = "text/plain; charset=utf-8") -> Response:
    return Response(status, text.encode(), content_type)


def route(method: str, pattern: str, endpoint: str) -> Callable:
    """Mark a FakeServer method as handler of ``method`` + full-match path regex.

    Named groups in ``pattern`` are passed to the handler as keyword arguments.
    """

    def mark(handler: Callable) -> Callable:
        handler.fake_route = (method.upper(), re.compile(pattern), endpoint)
        return handler

    return mark


@dataclass(frozen=True)
class _Route:
    method: str
    pattern: re.Pattern[str]
    endpoint: str
    handler_name: str


@dataclass(frozen=True)
class _Failure:
    status: int
    body: Any
    headers: dict[str, str]


class _HTTPServer(ThreadingHTTPServer):
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], fake: FakeServer):
        self.fake = fake
        self.open_connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls getfqdn(), a reverse DNS lookup that can
        # stall for seconds in a sandbox without a resolver.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up mid-request (timeouts, killed benchmarks) are
        # expected here; anything else is a bug worth a traceback.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def close_open_connections(self) -> None:
        with self.connections_lock:
            connections = list(self.open_connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    # Buffered writes put status line, headers and body into one send(); the
    # base class flushes after every request.
    wbufsize = 64 * 1024
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.open_connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.open_connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def parse_request(self) -> bool:
        """A lean replacement for the stdlib parser.

        The stdlib runs every request's headers through the email package,
        which was the largest cost per request under benchmark load.
        """
        self.command = None
        self.close_connection = True
        self.requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        words = self.requestline.split()
        if len(words) != 3 or not words[2].startswith("HTTP/1."):
            self.request_version = "HTTP/0.9" if len(words) < 3 else self.default_request_version
            self.send_error(HTTPStatus.BAD_REQUEST, f"Bad request line {self.requestline!r}")
            return False
        self.command, self.path, self.request_version = words
        headers = Headers()
        for _ in range(_MAX_HEADERS):
            line = self.rfile.readline(_MAX_LINE)
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("iso-8859-1").partition(":")
            headers[name.strip()] = value.strip()
        else:
            self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
            return False
        self.headers = headers
        connection = headers.get("connection", "").lower()
        self.close_connection = connection == "close" or (
            self.request_version == "HTTP/1.0" and connection != "keep-alive"
        )
        if headers.get("expect", "").lower() == "100-continue":
            return self.handle_expect_100()
        return True

    def _serve(self) -> None:
        url = urlsplit(self.path)
        body = self._read_body()
        request = RecordedRequest(
            method=self.command,
            path=url.path,
            query=dict(parse_qsl(url.query, keep_blank_values=True)),
            headers=self.headers,
            body=body,
            json=_parse_json(body),
        )
        response = self.server.fake.handle(request)
        try:
            self._write(response, head_only=self.command == "HEAD")
            self.wfile.flush()
        except ConnectionError:
            # The client gave up (e.g. its timeout fired during a delay).
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve

    def _read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length:
            return self.rfile.read(int(length))
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        return b""

    def _read_chunked(self) -> bytes:
        parts = []
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline()

    def _write(self, response: Response, head_only: bool) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        for name, value in response.headers.items():
            self.send_header(name, value)
        if isinstance(response.body, (bytes, bytearray)):
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            if not head_only:
                self.wfile.write(response.body)
            return
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        for chunk in response.body:
            if chunk:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: requests are recorded on the fake instead of logged."""


def _parse_json(body: bytes) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


class FakeServer:
    """Base class: a threaded loopback HTTP server that records requests.

    Subclasses define handlers with ``@route(method, regex, endpoint)``; the
    endpoint names are what ``fail_next`` and ``set_delay`` accept.
    """

    _routes: tuple[_Route, ...] = ()
    endpoints: frozenset[str] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        by_name: dict[str, _Route] = {}
        for klass in reversed(cls.__mro__):
            for name, attr in vars(klass).items():
                spec = getattr(attr, "fake_route", None)
                if spec is not None:
                    by_name[name] = _Route(*spec, handler_name=name)
        cls._routes = tuple(by_name.values())
        cls.endpoints = frozenset(r.endpoint for r in cls._routes)

    def __init__(self) -> None:
        self.control_enabled = False
        self.handler_errors: list[str] = []
        self._lock = threading.RLock()
        self._requests: list[RecordedRequest] = []
        self._stats: Counter[str] = Counter()
        self._failures: dict[str, deque[_Failure]] = {}
        self._delays: dict[str, float] = {}
        self._holds: dict[str, float] = {}
        # Endpoints that serve at most N requests at once (a model server's parallelism);
        # more wait their turn, as on the real server.
        self._capacity: dict[str, threading.BoundedSemaphore] = {}
        self._in_flight: Counter = Counter()
        self._peak: Counter = Counter()
        self._redirect: tuple[str, int] | None = None
        self._quote_authorization: int | None = None
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> FakeServer:
        if self._server is not None:
            raise RuntimeError(f"{type(self).__name__} already started")
        self._server = _HTTPServer((host, port), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.01},
            name=f"{type(self).__name__}-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        # Keep-alive handler threads block on idle sockets; closing them lets
        # the threads finish instead of leaking into the next test.
        server.close_open_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not running")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- inspection ----------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every recorded request, oldest first."""
        with self._lock:
            return list(self._requests)

    def requests_for(self, endpoint: str) -> list[RecordedRequest]:
        self._check_endpoint(endpoint)
        with self._lock:
            return [r for r in self._requests if r.endpoint == endpoint]

    def last(self, endpoint: str | None = None) -> RecordedRequest:
        matching = self.requests_for(endpoint) if endpoint else self.requests
        if not matching:
            raise AssertionError(f"no {endpoint or 'recorded'} requests; {self._summary()}")
        return matching[-1]

    def count(self, endpoint: str | None = None) -> int:
        """Requests recorded for ``endpoint`` (all requests when None)."""
        if endpoint is not None:
            self._check_endpoint(endpoint)
        with self._lock:
            return len(self._requests) if endpoint is None else self._stats[endpoint]

    def stats(self) -> dict[str, int]:
        """Requests received per endpoint name ("unmatched" for unknown paths)."""
        with self._lock:
            return dict(self._stats)

    def state(self) -> dict[str, Any]:
        """Everything a separate process would want to know; subclasses extend."""
        return {"stats": self.stats(), "handler_errors": list(self.handler_errors)}

    def reset(self) -> None:
        """Forget recorded requests, pending failures, delays and per-test state."""
        with self._lock:
            self._requests.clear()
            self._stats.clear()
            self._failures.clear()
            self._delays.clear()
            self._holds.clear()
            self._capacity.clear()
            self._peak.clear()
            self._redirect = None
            self._quote_authorization = None
            self.handler_errors.clear()
            self._reset_state()

    def wait_for(
        self,
        predicate: Callable[[Any], Any],
        timeout: float = 10.0,
        interval: float = 0.01,
        message: str = "",
    ) -> Any:
        """Poll until ``predicate(self)`` is truthy and return its value."""
        deadline = time.monotonic() + timeout
        while True:
            result = predicate(self)
            if result:
                return result
            if time.monotonic() >= deadline:
                name = getattr(predicate, "__name__", repr(predicate))
                raise AssertionError(
                    f"{type(self).__name__}: {name} still false after {timeout}s. "
                    f"{message}\n{self._summary()}"
                )
            time.sleep(interval)

    def _summary(self, last: int = 20) -> str:
        requests = self.requests
        lines = [f"{r.method} {r.path} [{r.endpoint}] -> {r.status}" for r in requests[-last:]]
        return f"{len(requests)} recorded request(s):\n  " + "\n  ".join(lines)

    # -- failure injection ---------------------------------------------------

    def fail_next(
        self,
        endpoint: str,
        status: int,
        body: dict | None = None,
        count: int = 1,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer the next ``count`` requests to ``endpoint`` with ``status``."""
        self._check_endpoint(endpoint)
        failure = _Failure(status, body if body is not None else self.error_body(status), dict(headers or {}))
        with self._lock:
            self._failures.setdefault(endpoint, deque()).extend([failure] * count)

    def set_delay(self, endpoint: str, seconds: float) -> None:
        """Sleep ``seconds`` before answering each request to ``endpoint``."""
        self._check_endpoint(endpoint)
        with self._lock:
            if seconds > 0:
                self._delays[endpoint] = seconds
            else:
                self._delays.pop(endpoint, None)

    def set_capacity(self, endpoint: str, limit: int) -> None:
        """Serve at most ``limit`` requests to ``endpoint`` at once (0: no limit)."""
        self._check_endpoint(endpoint)
        with self._lock:
            if limit > 0:
                self._capacity[endpoint] = threading.BoundedSemaphore(limit)
            else:
                self._capacity.pop(endpoint, None)

    def concurrency(self) -> dict[str, dict[str, int]]:
        """Requests being served now and the most ever served at once, per endpoint."""
        with self._lock:
            return {name: {"now": self._in_flight[name], "peak": self._peak[name]} for name in self._peak}

    def hold_response(self, endpoint: str, seconds: float) -> None:
        """Handle each request to ``endpoint`` at once (a reply is delivered, its token used),
        then sleep ``seconds`` before answering: a client that dies meanwhile never learns."""
        self._check_endpoint(endpoint)
        with self._lock:
            self._holds[endpoint] = seconds

    def redirect_to(self, url: str | None, status: int = 307) -> None:
        """Answer every request with ``status`` and ``Location: url`` + its path (None: stop)."""
        with self._lock:
            self._redirect = None if url is None else (url.rstrip("/"), status)

    def quote_authorization(self, status: int | None = 401) -> None:
        """Refuse every request with ``status``, quoting the Authorization header it
        carried in the error message, as some servers do (None: stop)."""
        with self._lock:
            self._quote_authorization = status

    def _check_endpoint(self, endpoint: str) -> None:
        # A typo in an endpoint name would otherwise make assertions vacuous.
        if endpoint not in self.endpoints:
            raise ValueError(f"unknown endpoint {endpoint!r}; {type(self).__name__} has {sorted(self.endpoints)}")

    # -- hooks for subclasses ------------------------------------------------

    def error_body(self, status: int, message: str | None = None) -> Any:
        """The error payload this API uses for ``status``."""
        return {"error": message or HTTPStatus(status).phrase}

    def before_request(self, request: RecordedRequest) -> Response | None:
        """Return a response to short-circuit the handler (e.g. auth failure)."""
        return None

    def after_request(self, request: RecordedRequest, response: Response) -> Response:
        return response

    def _reset_state(self) -> None:
        """Clear subclass state; called with the lock held."""

    # -- dispatch ------------------------------------------------------------

    def handle(self, request: RecordedRequest) -> Response:
        if self.control_enabled and request.path.startswith(CONTROL_PREFIX):
            return self._control(request)
        matched, params, allowed = self._match(request)
        request.endpoint = matched.endpoint if matched else None
        request.params = params
        with self._lock:
            self._requests.append(request)
            self._stats[request.endpoint or "unmatched"] += 1
        try:
            response = self._respond(request, matched, params, allowed)
        except Exception:
            error = traceback.format_exc()
            with self._lock:
                self.handler_errors.append(error)
            print(error, file=sys.stderr)
            response = json_response(500, self.error_body(500, "fake server handler crashed"))
        response = self.after_request(request, response)
        request.status = response.status
        request.answered_at = time.time()
        return response

    def _match(self, request: RecordedRequest) -> tuple[_Route | None, dict[str, str], list[str]]:
        method = "GET" if request.method == "HEAD" else request.method
        allowed = []
        for candidate in self._routes:
            found = candidate.pattern.fullmatch(request.path)
            if found is None:
                continue
            if candidate.method == method:
                return candidate, found.groupdict(), []
            allowed.append(candidate.method)
        return None, {}, allowed

    def _respond(
        self, request: RecordedRequest, matched: _Route | None, params: dict[str, str], allowed: list[str]
    ) -> Response:
        with self._lock:
            redirect, quoting = self._redirect, self._quote_authorization
        if redirect is not None:
            url, status = redirect
            query = f"?{urlencode(request.query)}" if request.query else ""
            return json_response(status, self.error_body(status), {"Location": f"{url}{request.path}{query}"})
        if quoting is not None:
            sent = request.headers.get("authorization", "(none)")
            return json_response(quoting, self.error_body(quoting, f"invalid key {sent}"))
        if matched is None:
            if allowed:
                return json_response(405, self.error_body(405), {"Allow": ", ".join(allowed)})
            return json_response(404, self.error_body(404))
        with self._lock:
            capacity = self._capacity.get(matched.endpoint)
        if capacity is None:
            return self._respond_now(request, matched, params)
        with capacity:
            return self._respond_now(request, matched, params)

    def _respond_now(self, request: RecordedRequest, matched: _Route, params: dict[str, str]) -> Response:
        endpoint = matched.endpoint
        with self._lock:
            delay = self._delays.get(endpoint, 0.0)
            pending = self._failures.get(endpoint)
            failure = pending.popleft() if pending else None
            self._in_flight[endpoint] += 1
            self._peak[endpoint] = max(self._peak[endpoint], self._in_flight[endpoint])
        try:
            return self._handle_matched(request, matched, params, delay, failure)
        finally:
            with self._lock:
                self._in_flight[endpoint] -= 1

    def _handle_matched(self, request: RecordedRequest, matched: _Route, params: dict[str, str], delay: float,
                        failure: "_Failure | None") -> Response:
        if delay:
            time.sleep(delay)
        if failure is not None:
            return json_response(failure.status, failure.body, failure.headers)
        early = self.before_request(request)
        if early is not None:
            return early
        response = getattr(self, matched.handler_name)(request, **params)
        with self._lock:
            hold = self._holds.get(matched.endpoint, 0.0)
        if hold:
            time.sleep(hold)
        return response

    # -- control endpoints (process mode) ------------------------------------

    def _control(self, request: RecordedRequest) -> Response:
        action = (request.method, request.path[len(CONTROL_PREFIX):])
        payload = request.json if isinstance(request.json, dict) else {}
        if action == ("GET", "requests"):
            selected = self.requests[int(request.query.get("since", 0)):]
            if "endpoint" in request.query:
                selected = [r for r in selected if r.endpoint == request.query["endpoint"]]
            return json_response(200, [r.to_dict() for r in selected])
        if action == ("GET", "stats"):
            return json_response(200, self.stats())
        if action == ("GET", "state"):
            return json_response(200, self.state())
        if action == ("GET", "concurrency"):
            return json_response(200, self.concurrency())
        if action == ("POST", "reset"):
            self.reset()
            return json_response(200, {"ok": True})
        try:
            if action == ("POST", "fail_next"):
                self.fail_next(
                    payload["endpoint"],
                    int(payload["status"]),
                    payload.get("body"),
                    int(payload.get("count", 1)),
                    payload.get("headers"),
                )
                return json_response(200, {"ok": True})
            if action == ("POST", "delay"):
                self.set_delay(payload["endpoint"], float(payload["seconds"]))
                return json_response(200, {"ok": True})
            if action == ("POST", "capacity"):
                self.set_capacity(payload["endpoint"], int(payload["limit"]))
                return json_response(200, {"ok": True})
        except (KeyError, TypeError, ValueError) as exc:
            return json_response(400, {"error": f"bad control request: {exc!r}"})
        return json_response(404, {"error": f"unknown control endpoint {request.method} {request.path}"})

    # -- process mode --------------------------------------------------------

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add fake-specific command line options."""

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> FakeServer:
        return cls()

    @classmethod
    def main(cls, argv: list[str] | None = None) -> None:
        """Serve until SIGTERM/SIGINT, announcing ``LISTENING <url>`` on stdout."""
        spec = getattr(sys.modules[cls.__module__], "__spec__", None)
        module = spec.name if spec else cls.__module__  # "__main__" under ``python -m``
        parser = argparse.ArgumentParser(prog=f"python -m {module}", description=cls.__doc__)
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=0)
        cls.add_arguments(parser)
        args = parser.parse_args(argv)
        fake = cls.from_args(args)
        fake.control_enabled = True
        stopping = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stopping.set())
        fake.start(args.host, args.port)
        print(f"LISTENING {fake.url}", flush=True)
        try:
            while not stopping.wait(0.2):
                pass
        finally:
            fake.stop()
