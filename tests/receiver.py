"""A PostHog-protocol HTTP receiver for tests.

``PostHogReceiver`` is a small, dependency-free HTTP server (stdlib only) bound to
``127.0.0.1`` on an ephemeral port. It speaks enough of the PostHog wire protocol
for the real ``posthog.Client`` (posthog-python 7.x) to run against it:

* capture: ``POST /batch/`` (the default v0 path; plain JSON or gzip), the
  ``capture_mode="v1"`` path ``POST /i/v1/analytics/events``, the AI lane
  ``POST /i/v0/ai/batch/`` and the older single-event paths (``/e/``,
  ``/i/v0/e/``, ``/capture/``, ``/track/``);
* remote flag evaluation: ``POST /flags/`` (any ``?v=``; also ``/decide/``);
* local-evaluation definitions: ``GET /flags/definitions`` (what posthog 7.x
  calls) and ``GET /api/feature_flag/local_evaluation/`` (older SDKs), with
  ``ETag`` / ``If-None-Match`` -> ``304`` support;
* remote config payloads: ``GET /api/projects/<id>/feature_flags/<key>/remote_config``.

Every request is recorded (method, path, query, headers, raw and decoded body,
parsed JSON, arrival time, the fault applied and the status answered) and can be
inspected with :meth:`PostHogReceiver.events`, :meth:`PostHogReceiver.flag_requests`,
:meth:`PostHogReceiver.raw_bodies` and friends. :meth:`PostHogReceiver.wait_for_events`
blocks on a condition variable rather than sleep-polling.

Failures can be injected at runtime, globally or per route/path: ``hang`` (never
answer until the receiver stops), ``status(code, retry_after=...)``, ``slow``
(answer correctly after a delay), ``malformed`` (200 with invalid JSON) and
``drop`` (close the connection without answering); ``fail_next(n, fault)`` applies a
fault to the next ``n`` matching requests only. Connection refusal is connection-level,
so it is global: :meth:`PostHogReceiver.refuse` / :meth:`PostHogReceiver.accept`
toggle it while keeping the port reserved, and :func:`refusing_url` yields the URL
of a reserved port that refuses every connection.

Example::

    with make_receiver() as receiver:
        receiver.set_flags({"new_reranker": "test", "beta": True}, payloads={"beta": {"k": 1}})
        client = posthog.Client("phc_test", host=receiver.url, sync_mode=True)
        client.capture("hello", distinct_id="u1")
        assert receiver.events_named("hello")
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.server
import json
import re
import socket
import socketserver
import threading
import time
import uuid
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, TypeAlias
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = [
    "AI_CAPTURE",
    "ALL_ROUTES",
    "CAPTURE",
    "CAPTURE_V1",
    "DEFINITIONS",
    "FLAGS",
    "REMOTE_CONFIG",
    "UNKNOWN",
    "Fault",
    "FlagSpec",
    "FlagValue",
    "FlagsShape",
    "PostHogReceiver",
    "RecordedRequest",
    "make_receiver",
    "refusing_url",
]

# ---------------------------------------------------------------------------
# Routes
# ---------------------------------------------------------------------------

#: Route names. A fault can target a route name, an exact path (starting with
#: ``/``, compared without its query and trailing slash), or every request (``"*"``).
CAPTURE = "capture"  # v0 batch and single-event capture paths
CAPTURE_V1 = "capture_v1"  # POST /i/v1/analytics/events (capture_mode="v1")
AI_CAPTURE = "ai_capture"  # POST /i/v0/ai/batch/ (Client.capture_ai)
FLAGS = "flags"  # POST /flags/ (and the older /decide/)
DEFINITIONS = "definitions"  # GET /flags/definitions, GET /api/feature_flag/local_evaluation/
REMOTE_CONFIG = "remote_config"  # GET /api/projects/<id>/feature_flags/<key>/remote_config
UNKNOWN = "unknown"
ALL_ROUTES = "*"

#: Routes whose bodies carry events; ``events()`` reads these.
EVENT_ROUTES = frozenset({CAPTURE, CAPTURE_V1, AI_CAPTURE})

_CAPTURE_PATHS = frozenset({"/batch", "/e", "/i/v0/e", "/capture", "/track"})
_REMOTE_CONFIG_RE = re.compile(r"^/api/projects/[^/]+/feature_flags/([^/]+)/remote_config$")


def _normalise_path(path: str) -> str:
    stripped = path.rstrip("/")
    return stripped or "/"


def route_for(path: str) -> str:
    """Return the route name for a request path (query string excluded)."""
    norm = _normalise_path(path)
    if norm in _CAPTURE_PATHS:
        return CAPTURE
    if norm == "/i/v1/analytics/events":
        return CAPTURE_V1
    if norm == "/i/v0/ai/batch":
        return AI_CAPTURE
    if norm in ("/flags/definitions", "/api/feature_flag/local_evaluation"):
        return DEFINITIONS
    if norm in ("/flags", "/decide"):
        return FLAGS
    if _REMOTE_CONFIG_RE.match(norm):
        return REMOTE_CONFIG
    return UNKNOWN


# ---------------------------------------------------------------------------
# Faults
# ---------------------------------------------------------------------------

FaultKind = Literal["hang", "status", "slow", "malformed", "drop"]


@dataclass(frozen=True)
class Fault:
    """A misbehaviour the receiver applies to a request instead of a normal answer.

    Build one with the class methods: ``Fault.hang()``, ``Fault.status(500)``,
    ``Fault.status(429, retry_after=1)``, ``Fault.slow(0.5)``, ``Fault.malformed()``,
    ``Fault.drop()``.
    """

    kind: FaultKind
    code: int = 200
    retry_after: float | str | None = None
    delay: float = 0.0

    @classmethod
    def hang(cls) -> Fault:
        """Read the request, then never answer until the receiver stops."""
        return cls("hang")

    @classmethod
    def status(cls, code: int, retry_after: float | str | None = None) -> Fault:
        """Answer with HTTP ``code`` (JSON ``{"detail": ...}`` body), optionally ``Retry-After``."""
        return cls("status", code=code, retry_after=retry_after)

    @classmethod
    def slow(cls, seconds: float) -> Fault:
        """Answer normally, but only after ``seconds``."""
        return cls("slow", delay=seconds)

    @classmethod
    def malformed(cls) -> Fault:
        """Answer 200 with a body that is not valid JSON."""
        return cls("malformed")

    @classmethod
    def drop(cls) -> Fault:
        """Read the request, then close the connection without any response."""
        return cls("drop")


@dataclass
class _OneShot:
    target: str
    remaining: int
    fault: Fault


# ---------------------------------------------------------------------------
# Flags
# ---------------------------------------------------------------------------

FlagValue: TypeAlias = bool | str

#: Shape of ``/flags/`` answers. ``"v4"``: records with a typed ``value`` (what a
#: current server sends for ``?v=4``) plus ``enabled``/``variant``; ``"v2"``: records
#: with ``enabled``/``variant`` only; ``"legacy"``: the old
#: ``featureFlags``/``featureFlagPayloads`` maps (read by the client only when the
#: ``flags`` map is absent).
FlagsShape = Literal["v4", "v2", "legacy"]


@dataclass(frozen=True)
class FlagSpec:
    """One configured flag: its value for everyone, and its payload (any JSON value)."""

    key: str
    value: FlagValue
    payload: Any = None
    id: int = 1
    version: int = 1

    @property
    def enabled(self) -> bool:
        return self.value is not False

    @property
    def variant(self) -> str | None:
        return self.value if isinstance(self.value, str) else None

    def encoded_payload(self) -> str | None:
        """The payload as PostHog sends it: a JSON-encoded string, or ``None``."""
        if self.payload is None or not self.enabled:
            return None
        return json.dumps(self.payload)

    def flags_record(self, shape: FlagsShape) -> dict[str, Any]:
        """This flag as a record of the ``flags`` map of a ``/flags/`` answer."""
        if self.enabled:
            reason: dict[str, Any] = {
                "code": "condition_match",
                "condition_index": 0,
                "description": "Matched condition set 1",
            }
        else:
            reason = {
                "code": "no_condition_match",
                "condition_index": None,
                "description": "No matching condition set",
            }
        record: dict[str, Any] = {
            "key": self.key,
            "enabled": self.enabled,
            "variant": self.variant,
            "reason": reason,
            "metadata": {
                "id": self.id,
                "version": self.version,
                "payload": self.encoded_payload(),
                "description": "",
            },
        }
        if shape == "v4":
            record["value"] = self.value
        return record

    def definition(self) -> dict[str, Any]:
        """A local-evaluation definition that gives every user ``value`` (100% rollout)."""
        payloads: dict[str, str] = {}
        encoded = None if self.payload is None else json.dumps(self.payload)
        multivariate: dict[str, Any] | None = None
        group: dict[str, Any] = {"properties": [], "rollout_percentage": 100, "variant": None}
        if isinstance(self.value, str):
            multivariate = {
                "variants": [{"key": self.value, "name": self.value, "rollout_percentage": 100}]
            }
            group["variant"] = self.value
            if encoded is not None:
                payloads[self.value] = encoded
        elif self.value is True and encoded is not None:
            payloads["true"] = encoded
        return {
            "id": self.id,
            "key": self.key,
            "name": self.key,
            "version": self.version,
            "active": self.enabled,
            "deleted": False,
            "ensure_experience_continuity": False,
            "filters": {
                "groups": [group],
                "multivariate": multivariate,
                "payloads": payloads,
            },
        }


# ---------------------------------------------------------------------------
# Recorded requests
# ---------------------------------------------------------------------------


@dataclass
class RecordedRequest:
    """One request as the receiver saw it, plus what it answered."""

    method: str
    path: str
    raw_query: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes  # as received on the wire
    decoded_body: bytes  # after Content-Encoding / gzip-magic decoding
    json_body: Any  # parsed JSON, or None when absent or unparseable
    route: str
    received_at: float  # time.monotonic()
    received_wall: float  # time.time()
    fault: Fault | None = None
    decode_error: str | None = None
    response_status: int | None = None  # None: no (complete) answer was sent
    response_error: str | None = None

    @property
    def target(self) -> str:
        """Path plus query string, as in the request line."""
        return f"{self.path}?{self.raw_query}" if self.raw_query else self.path

    @property
    def text(self) -> str:
        """The decoded body as text (UTF-8, undecodable bytes replaced)."""
        return self.decoded_body.decode("utf-8", errors="replace")

    @property
    def accepted(self) -> bool:
        """Whether the receiver answered 2xx (set just before the answer is written;
        cleared again if writing it fails)."""
        return self.response_status is not None and 200 <= self.response_status < 300

    @property
    def gzipped(self) -> bool:
        return self.body[:2] == b"\x1f\x8b"

    def events(self) -> list[dict[str, Any]]:
        """The events carried by this request's body (empty for non-capture bodies)."""
        if self.route not in EVENT_ROUTES:
            return []
        return _events_in(self.json_body)


def _events_in(payload: Any) -> list[dict[str, Any]]:
    if isinstance(payload, list):
        return [item for item in payload if isinstance(item, dict)]
    if isinstance(payload, dict):
        batch = payload.get("batch")
        if isinstance(batch, list):
            return [item for item in batch if isinstance(item, dict)]
        if "event" in payload:
            return [payload]
    return []


def _decode_body(raw: bytes, content_encoding: str | None) -> tuple[bytes, str | None]:
    """Undo the body's content encoding. Returns (decoded, error-or-None)."""
    encoding = (content_encoding or "").strip().lower()
    try:
        if encoding == "gzip" or (not encoding and raw[:2] == b"\x1f\x8b"):
            return gzip.decompress(raw), None
        if encoding == "deflate":
            try:
                return zlib.decompress(raw), None
            except zlib.error:
                return zlib.decompress(raw, -zlib.MAX_WBITS), None
        if encoding == "zstd":
            import zstandard  # type: ignore[import-not-found,unused-ignore]

            return bytes(zstandard.ZstdDecompressor().decompress(raw)), None
    except Exception as exc:  # keep the raw body; report why it did not decode
        return raw, f"{type(exc).__name__}: {exc}"
    if encoding in ("", "identity"):
        return raw, None
    return raw, f"unsupported Content-Encoding {encoding!r}"


# ---------------------------------------------------------------------------
# HTTP plumbing
# ---------------------------------------------------------------------------


class _Server(http.server.HTTPServer):
    """HTTPServer that serves each connection on a tracked daemon thread."""

    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], receiver: PostHogReceiver) -> None:
        self.receiver = receiver
        self._live_lock = threading.Lock()
        self._live_sockets: set[socket.socket] = set()
        self._live_threads: set[threading.Thread] = set()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn); skip it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.socket.getsockname()[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self._serve_connection,
            args=(request, client_address),
            name="posthog-receiver-conn",
            daemon=True,
        )
        with self._live_lock:
            self._live_sockets.add(request)
            self._live_threads.add(thread)
        thread.start()

    def _serve_connection(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:  # noqa: S110 - a client that went away is not a test failure
            pass
        finally:
            with self._live_lock:
                self._live_sockets.discard(request)
            self.shutdown_request(request)
            with self._live_lock:
                self._live_threads.discard(threading.current_thread())

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet: clients that time out and disconnect are expected in tests."""

    def abort_connections(self) -> list[threading.Thread]:
        """Shut down every open connection; return the threads serving them."""
        with self._live_lock:
            sockets = list(self._live_sockets)
            threads = list(self._live_threads)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        return threads


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log."""

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size_line = self.rfile.readline(65537)
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # Trailer section ends with an empty line.
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self) -> None:
        # One request per connection: keeps refuse() reliable (no pooled
        # connections survive it) and leaves no idle keep-alive threads.
        self.close_connection = True
        body = self._read_body()
        self.server.receiver._handle(self, body)

    do_GET = _dispatch
    do_POST = _dispatch
    do_PUT = _dispatch
    do_PATCH = _dispatch
    do_DELETE = _dispatch

    def respond(self, status: int, body: bytes, headers: Mapping[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if status != 304:
            self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if status != 304 and body:
            self.wfile.write(body)
        self.wfile.flush()


@contextlib.contextmanager
def refusing_url(host: str = "127.0.0.1") -> Iterator[str]:
    """Yield ``http://host:port`` for a port that refuses every connection.

    The port is bound but never listened on, so it stays reserved (no other
    process can grab it) while connecting to it fails with ``ECONNREFUSED``.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((host, 0))
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        sock.close()


# ---------------------------------------------------------------------------
# The receiver
# ---------------------------------------------------------------------------


class PostHogReceiver:
    """An in-process PostHog-protocol server for tests. See the module docstring."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        flags_shape: FlagsShape = "v4",
    ) -> None:
        self._bind_host = host
        self._bind_port = port
        self._cond = threading.Condition()  # guards recordings and configuration
        self._admin_lock = threading.Lock()  # serialises start/stop/refuse/accept
        self._closing = threading.Event()  # set by stop(): releases hang/slow handlers
        self._requests: list[RecordedRequest] = []
        self._faults: dict[str, Fault] = {}
        self._one_shots: list[_OneShot] = []
        self._flags: dict[str, FlagSpec] = {}
        self._flags_shape: FlagsShape = flags_shape
        self._errors_while_computing = False
        self._quota_limited = False
        self._explicit_definitions: dict[str, Any] | None = None
        self._server: _Server | None = None
        self._loop_thread: threading.Thread | None = None
        self._placeholder: socket.socket | None = None
        self._port = 0
        self._stopped = False

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> PostHogReceiver:
        """Bind and start serving (idempotent). Returns ``self``."""
        with self._admin_lock:
            if self._stopped:
                raise RuntimeError("a stopped PostHogReceiver cannot be restarted")
            if self._server is None:
                self._server = _Server((self._bind_host, self._bind_port), self)
                self._port = self._server.server_port
                self._start_loop()
        return self

    def _start_loop(self) -> None:
        assert self._server is not None
        self._loop_thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"posthog-receiver-{self._port}",
            daemon=True,
        )
        self._loop_thread.start()

    def _stop_loop(self) -> None:
        if self._server is not None and self._loop_thread is not None:
            self._server.shutdown()
            self._loop_thread.join()
            self._loop_thread = None

    def stop(self, timeout: float = 2.0) -> None:
        """Stop serving, release hanging requests and close every connection.

        Returns within about ``timeout`` seconds even when requests hang.
        Idempotent.
        """
        with self._admin_lock:
            if self._stopped or self._server is None:
                self._stopped = True
                return
            self._stopped = True
            self._closing.set()
            self._stop_loop()
            self._server.server_close()
            if self._placeholder is not None:
                self._placeholder.close()
                self._placeholder = None
            threads = self._server.abort_connections()
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._cond:
            self._cond.notify_all()

    def __enter__(self) -> PostHogReceiver:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def host(self) -> str:
        return self._bind_host

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("receiver not started")
        return self._port

    @property
    def url(self) -> str:
        """Base URL to pass as ``posthog.Client(host=...)``."""
        return f"http://{self._bind_host}:{self.port}"

    # -- connection refusal ---------------------------------------------------

    def refuse(self) -> None:
        """Refuse new connections (ECONNREFUSED) until :meth:`accept`.

        The listening socket is closed and the port stays reserved by a bound,
        non-listening socket. Requests already being served are unaffected.
        """
        with self._admin_lock:
            if self._server is None or self._stopped or self._placeholder is not None:
                return
            self._stop_loop()
            self._server.socket.close()
            placeholder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            placeholder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            placeholder.bind((self._bind_host, self._port))
            self._placeholder = placeholder

    def accept(self) -> None:
        """Start accepting connections again after :meth:`refuse`, on the same port."""
        with self._admin_lock:
            if self._server is None or self._stopped or self._placeholder is None:
                return
            self._placeholder.close()
            self._placeholder = None
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self._bind_host, self._port))
            sock.listen(self._server.request_queue_size)
            self._server.socket = sock
            self._start_loop()

    @property
    def refusing(self) -> bool:
        return self._placeholder is not None

    # -- faults -----------------------------------------------------------------

    def set_fault(self, fault: Fault | None, route: str = ALL_ROUTES) -> None:
        """Apply ``fault`` to every request matching ``route`` until changed.

        ``route`` is a route name (``CAPTURE``, ``FLAGS``, ...), an exact path such
        as ``"/batch/"``, or ``"*"`` for every request. ``None`` removes the fault.
        An exact path wins over a route name, which wins over ``"*"``.
        """
        key = self._target_key(route)
        with self._cond:
            if fault is None:
                self._faults.pop(key, None)
            else:
                self._faults[key] = fault

    def hang(self, route: str = ALL_ROUTES) -> None:
        """Matching requests are read and never answered (until :meth:`stop`)."""
        self.set_fault(Fault.hang(), route)

    def status(
        self, code: int, *, retry_after: float | str | None = None, route: str = ALL_ROUTES
    ) -> None:
        """Matching requests are answered with HTTP ``code`` (and ``Retry-After``)."""
        self.set_fault(Fault.status(code, retry_after), route)

    def slow(self, seconds: float, route: str = ALL_ROUTES) -> None:
        """Matching requests are answered correctly after ``seconds``."""
        self.set_fault(Fault.slow(seconds), route)

    def malformed(self, route: str = ALL_ROUTES) -> None:
        """Matching requests get a 200 whose body is not valid JSON."""
        self.set_fault(Fault.malformed(), route)

    def drop(self, route: str = ALL_ROUTES) -> None:
        """Matching requests are read, then the connection is closed unanswered."""
        self.set_fault(Fault.drop(), route)

    def fail_next(self, n: int, fault: Fault, route: str = ALL_ROUTES) -> None:
        """Apply ``fault`` to the next ``n`` matching requests only, then recover.

        One-shot faults are consumed in the order they were added and take
        precedence over persistent ones.
        """
        if n <= 0:
            return
        with self._cond:
            self._one_shots.append(_OneShot(self._target_key(route), n, fault))

    def heal(self, route: str | None = None) -> None:
        """Remove faults: all of them (``route=None``) or those set for ``route``."""
        with self._cond:
            if route is None:
                self._faults.clear()
                self._one_shots.clear()
                return
            key = self._target_key(route)
            self._faults.pop(key, None)
            self._one_shots = [shot for shot in self._one_shots if shot.target != key]

    @staticmethod
    def _target_key(route: str) -> str:
        return _normalise_path(route) if route.startswith("/") else route

    def _take_fault_locked(self, path: str, route: str) -> Fault | None:
        norm = _normalise_path(path)
        for shot in self._one_shots:
            if shot.remaining > 0 and shot.target in (norm, route, ALL_ROUTES):
                shot.remaining -= 1
                if shot.remaining == 0:
                    self._one_shots.remove(shot)
                return shot.fault
        for key in (norm, route, ALL_ROUTES):
            if key in self._faults:
                return self._faults[key]
        return None

    # -- flag configuration -----------------------------------------------------

    def set_flags(
        self,
        values: Mapping[str, FlagValue],
        payloads: Mapping[str, Any] | None = None,
        *,
        errors_while_computing: bool = False,
        quota_limited: bool = False,
    ) -> None:
        """Configure the flags served by ``/flags/`` and (derived) by the definitions endpoint.

        ``values`` maps a flag key to ``True``/``False`` or a variant string that
        every user gets. ``payloads`` maps a flag key to any JSON value; it is sent
        JSON-encoded, as PostHog does. ``quota_limited`` makes ``/flags/`` answer
        ``quotaLimited: ["feature_flags"]``.
        """
        payloads = payloads or {}
        unknown = set(payloads) - set(values)
        if unknown:
            raise ValueError(f"payloads for unconfigured flags: {sorted(unknown)}")
        specs = {
            key: FlagSpec(key=key, value=value, payload=payloads.get(key), id=index)
            for index, (key, value) in enumerate(values.items(), start=1)
        }
        with self._cond:
            self._flags = specs
            self._errors_while_computing = errors_while_computing
            self._quota_limited = quota_limited

    def set_flags_shape(self, shape: FlagsShape) -> None:
        """Choose the ``/flags/`` answer shape (see :data:`FlagsShape`)."""
        with self._cond:
            self._flags_shape = shape

    def set_definitions(
        self,
        flags: Sequence[Mapping[str, Any]] | None,
        *,
        group_type_mapping: Mapping[str, str] | None = None,
        cohorts: Mapping[str, Any] | None = None,
    ) -> None:
        """Serve these raw local-evaluation flag definitions instead of ones derived
        from :meth:`set_flags`. ``None`` goes back to the derived definitions."""
        with self._cond:
            if flags is None:
                self._explicit_definitions = None
            else:
                self._explicit_definitions = {
                    "flags": [dict(flag) for flag in flags],
                    "group_type_mapping": dict(group_type_mapping or {}),
                    "cohorts": dict(cohorts or {}),
                }

    def definitions_document(self) -> dict[str, Any]:
        """The JSON document the definitions endpoint currently serves."""
        with self._cond:
            return self._definitions_locked()

    def _definitions_locked(self) -> dict[str, Any]:
        if self._explicit_definitions is not None:
            return json.loads(json.dumps(self._explicit_definitions))  # type: ignore[no-any-return]
        return {
            "flags": [spec.definition() for spec in self._flags.values()],
            "group_type_mapping": {},
            "cohorts": {},
        }

    # -- inspection ---------------------------------------------------------------

    def requests(self, route: str | None = None) -> list[RecordedRequest]:
        """All recorded requests, oldest first; only ``route``'s when given
        (a route name or an exact path)."""
        with self._cond:
            return self._requests_locked(route)

    def _requests_locked(self, route: str | None) -> list[RecordedRequest]:
        if route is None or route == ALL_ROUTES:
            return list(self._requests)
        if route.startswith("/"):
            key = _normalise_path(route)
            return [r for r in self._requests if _normalise_path(r.path) == key]
        return [r for r in self._requests if r.route == route]

    def capture_requests(self) -> list[RecordedRequest]:
        """Requests to any capture endpoint (v0 batch, v1, AI, single-event)."""
        with self._cond:
            return [r for r in self._requests if r.route in EVENT_ROUTES]

    def flag_requests(self) -> list[RecordedRequest]:
        """Requests to ``/flags/`` (remote evaluation)."""
        return self.requests(FLAGS)

    def definition_requests(self) -> list[RecordedRequest]:
        """Requests to the local-evaluation definitions endpoint(s)."""
        return self.requests(DEFINITIONS)

    def events(self, *, include_rejected: bool = False) -> list[dict[str, Any]]:
        """Captured events, flattened across batches, in arrival order.

        By default only events from requests that got a 2xx answer (i.e. the
        client was told they were delivered); ``include_rejected=True`` adds
        events from requests answered with an error, or not answered at all.
        """
        with self._cond:
            return self._events_locked(include_rejected)

    def _events_locked(self, include_rejected: bool) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        for request in self._requests:
            if request.route in EVENT_ROUTES and (include_rejected or request.accepted):
                events.extend(request.events())
        return events

    def events_named(self, name: str, *, include_rejected: bool = False) -> list[dict[str, Any]]:
        """Captured events whose ``event`` is ``name``."""
        return [e for e in self.events(include_rejected=include_rejected) if e.get("event") == name]

    def batches(self) -> list[Any]:
        """Decoded JSON bodies of every capture request, in arrival order."""
        return [r.json_body for r in self.capture_requests()]

    def raw_bodies(self) -> list[str]:
        """Decoded text (after gunzip) of every request body, for "secret never sent" asserts."""
        with self._cond:
            return [r.text for r in self._requests]

    def transcript(self) -> str:
        """Everything the receiver was sent (request lines, headers, decoded bodies) as text."""
        with self._cond:
            parts: list[str] = []
            for r in self._requests:
                parts.append(f"{r.method} {r.target}")
                parts.extend(f"{name}: {value}" for name, value in r.headers.items())
                parts.append(r.text)
            return "\n".join(parts)

    def wait_for_events(
        self, n: int, timeout: float = 5.0, *, include_rejected: bool = False
    ) -> list[dict[str, Any]]:
        """Block until at least ``n`` events have been received; return them all.

        Raises ``TimeoutError`` (with the count seen) after ``timeout`` seconds.
        """
        with self._cond:
            done = self._cond.wait_for(
                lambda: len(self._events_locked(include_rejected)) >= n or self._stopped,
                timeout,
            )
            events = self._events_locked(include_rejected)
        if not done or len(events) < n:
            raise TimeoutError(f"expected {n} events within {timeout}s, got {len(events)}")
        return events

    def wait_for_requests(
        self, n: int, route: str | None = None, timeout: float = 5.0
    ) -> list[RecordedRequest]:
        """Block until at least ``n`` requests (to ``route``, if given) have arrived.

        A request counts as soon as its body is read, before any answer. Raises
        ``TimeoutError`` after ``timeout`` seconds.
        """
        with self._cond:
            done = self._cond.wait_for(
                lambda: len(self._requests_locked(route)) >= n or self._stopped, timeout
            )
            requests = self._requests_locked(route)
        if not done or len(requests) < n:
            raise TimeoutError(
                f"expected {n} requests to {route or 'any route'} within {timeout}s, "
                f"got {len(requests)}"
            )
        return requests

    def clear(self) -> None:
        """Forget every recorded request (configuration and faults are kept)."""
        with self._cond:
            self._requests.clear()

    # -- request handling ---------------------------------------------------------

    def _handle(self, handler: _Handler, raw: bytes) -> None:
        split = urlsplit(handler.path)
        path = unquote(split.path)
        headers = {name.lower(): value for name, value in handler.headers.items()}
        decoded, decode_error = _decode_body(raw, headers.get("content-encoding"))
        json_body: Any = None
        if decoded.strip():
            try:
                json_body = json.loads(decoded)
            except ValueError:
                json_body = None
        route = route_for(path)
        with self._cond:
            fault = self._take_fault_locked(path, route)
            record = RecordedRequest(
                method=handler.command,
                path=path,
                raw_query=split.query,
                query=parse_qs(split.query, keep_blank_values=True),
                headers=headers,
                body=raw,
                decoded_body=decoded,
                json_body=json_body,
                route=route,
                received_at=time.monotonic(),
                received_wall=time.time(),
                fault=fault,
                decode_error=decode_error,
            )
            self._requests.append(record)
            self._cond.notify_all()

        status, body, extra_headers = self._answer(record, fault)
        if status is None:
            return  # hang / drop / receiver closing: close without answering
        # Mark the answer before writing it: the client may act on the response
        # (and a test inspect this record) before this thread runs again.
        with self._cond:
            record.response_status = status
            self._cond.notify_all()
        try:
            handler.respond(status, body, extra_headers)
        except OSError as exc:
            with self._cond:
                record.response_status = None
                record.response_error = f"{type(exc).__name__}: {exc}"
                self._cond.notify_all()

    def _answer(
        self, record: RecordedRequest, fault: Fault | None
    ) -> tuple[int | None, bytes, dict[str, str]]:
        json_type = {"Content-Type": "application/json"}
        if fault is not None:
            if fault.kind == "hang":
                self._closing.wait()
                return None, b"", {}
            if fault.kind == "drop":
                return None, b"", {}
            if fault.kind == "slow" and self._closing.wait(fault.delay):
                return None, b"", {}
            if fault.kind == "malformed":
                return 200, b'{"status": 1, "flags": {not json', json_type
            if fault.kind == "status":
                headers = dict(json_type)
                if fault.retry_after is not None:
                    headers["Retry-After"] = _format_retry_after(fault.retry_after)
                detail = {"type": "server_error", "detail": f"injected HTTP {fault.code}"}
                return fault.code, _json_bytes(detail), headers
        return self._normal_answer(record)

    def _normal_answer(self, record: RecordedRequest) -> tuple[int, bytes, dict[str, str]]:
        json_type = {"Content-Type": "application/json"}
        if record.route in (CAPTURE, AI_CAPTURE):
            return 200, _json_bytes({"status": "Ok"}), json_type
        if record.route == CAPTURE_V1:
            results = {
                str(event.get("uuid")): {"result": "ok"}
                for event in record.events()
                if event.get("uuid")
            }
            return 200, _json_bytes({"results": results}), json_type
        if record.route == FLAGS:
            return 200, _json_bytes(self._flags_answer(record.json_body)), json_type
        if record.route == DEFINITIONS:
            with self._cond:
                document = self._definitions_locked()
            body = _json_bytes(document)
            etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            if record.headers.get("if-none-match") == etag:
                return 304, b"", {"ETag": etag}
            return 200, body, {**json_type, "ETag": etag}
        if record.route == REMOTE_CONFIG:
            match = _REMOTE_CONFIG_RE.match(_normalise_path(record.path))
            key = match.group(1) if match else ""
            with self._cond:
                spec = self._flags.get(key)
            if spec is None:
                return 404, _json_bytes({"detail": "Not found."}), json_type
            return 200, _json_bytes(spec.encoded_payload()), json_type
        return 404, _json_bytes({"detail": f"no such endpoint: {record.path}"}), json_type

    def _flags_answer(self, request_body: Any) -> dict[str, Any]:
        wanted: set[str] | None = None
        if isinstance(request_body, dict):
            keys = request_body.get("flag_keys_to_evaluate")
            if isinstance(keys, list) and keys:
                wanted = {str(k) for k in keys}
        with self._cond:
            specs = [s for s in self._flags.values() if wanted is None or s.key in wanted]
            shape = self._flags_shape
            errors = self._errors_while_computing
            quota_limited = self._quota_limited
        answer: dict[str, Any]
        if shape == "legacy":
            answer = {
                "featureFlags": {s.key: s.value for s in specs},
                "featureFlagPayloads": {
                    s.key: s.encoded_payload() for s in specs if s.encoded_payload() is not None
                },
                "errorsWhileComputingFlags": errors,
            }
        else:
            answer = {
                "flags": {s.key: s.flags_record(shape) for s in specs},
                "errorsWhileComputingFlags": errors,
                "requestId": str(uuid.uuid4()),
                "evaluatedAt": int(time.time() * 1000),
            }
        if quota_limited:
            answer["quotaLimited"] = ["feature_flags"]
        return answer


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value).encode("utf-8")


def _format_retry_after(value: float | str) -> str:
    if isinstance(value, str):
        return value
    return str(int(value)) if float(value).is_integer() else str(value)


def make_receiver(*, flags_shape: FlagsShape = "v4") -> PostHogReceiver:
    """Create and start a receiver on ``127.0.0.1`` (ephemeral port).

    The caller owns it: use it as a context manager or call :meth:`~PostHogReceiver.stop`.
    A pytest fixture is typically::

        @pytest.fixture
        def receiver() -> Iterator[PostHogReceiver]:
            with make_receiver() as r:
                yield r
    """
    return PostHogReceiver(flags_shape=flags_shape).start()
