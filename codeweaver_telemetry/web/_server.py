# SPDX-License-Identifier: MIT OR Apache-2.0
"""``codeweaver-telemetry serve``: the web API and the dashboard on 127.0.0.1, behind a token.

Only this user's browser, given the printed URL, can read or change anything:

- the server listens on 127.0.0.1 only, on a free port unless one is asked for;
- every request must carry the random token (``?token=`` in the URL, or the
  ``X-Telemetry-Token`` header the page sends); a wrong or missing token is 401;
- the ``Host`` header must name 127.0.0.1 or localhost with this port (a page on another
  site that rebinds its name to 127.0.0.1 is refused: 403);
- an ``Origin`` other than this server's, or a ``Sec-Fetch-Site`` of another site, is 403.

No access log is written (the URLs carry the token).
"""

from __future__ import annotations

import hmac
import json
import secrets
import socket
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.routing import Mount, Route

from codeweaver_telemetry.web._api import telemetry_router
from codeweaver_telemetry.web._dashboard import dashboard_page

__all__ = ["TOKEN_HEADER", "Dashboard", "dashboard_app", "start_dashboard"]

TOKEN_HEADER = "X-Telemetry-Token"  # noqa: S105 (a header's name, not a secret)
"""The header that carries the token (the page sends it on every API call)."""

_Scope = MutableMapping[str, Any]
_Message = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[_Message]]
_Send = Callable[[_Message], Awaitable[None]]
_ASGI = Callable[[_Scope, _Receive, _Send], Awaitable[None]]


class _Guard:
    """ASGI middleware: the token, Host and Origin checks in front of every request."""

    def __init__(self, app: _ASGI, *, token: str, port: int) -> None:
        self.app = app
        self.token = token.encode()
        self.hosts = {f"127.0.0.1:{port}".encode(), f"localhost:{port}".encode()}
        self.origins = {b"http://" + host for host in self.hosts}

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        if scope["type"] != "http":  # no websockets are served (and lifespan is off)
            return
        headers: dict[bytes, bytes] = {}
        for name, value in scope.get("headers", ()):
            headers.setdefault(name.lower(), value)
        problem = self._problem(scope, headers)
        if problem is None:
            await self.app(scope, receive, send)
            return
        status, message = problem
        document = {"schema_version": 1, "command": "serve", "ok": False, "error": message}
        body = json.dumps(document).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _problem(self, scope: _Scope, headers: dict[bytes, bytes]) -> tuple[int, str] | None:
        if headers.get(b"host", b"").lower() not in self.hosts:
            return 403, "wrong Host: use the URL the server printed"
        origin = headers.get(b"origin")
        if origin is not None and origin.lower() not in self.origins:
            return 403, "refused a request from another origin"
        if headers.get(b"sec-fetch-site", b"same-origin").lower() in (b"cross-site", b"same-site"):
            return 403, "refused a request from another site"
        given = headers.get(TOKEN_HEADER.lower().encode())
        if given is None:
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            given = query.get("token", [""])[-1].encode()
        if not hmac.compare_digest(given, self.token):
            return 401, "missing or wrong token: use the URL the server printed"
        return None


def dashboard_app(*, token: str, port: int) -> _ASGI:
    """The dashboard page at ``/`` and the web API under ``/api``, behind the guard."""
    app = Starlette(
        routes=[
            Route("/", dashboard_page(token), methods=["GET"]),
            Mount("/api", app=telemetry_router()),
        ]
    )
    return _Guard(app, token=token, port=port)


@dataclass
class Dashboard:
    """A running dashboard server (see :func:`start_dashboard`)."""

    url: str = field(repr=False)
    """The address to open, token included (kept out of ``repr``: apps log objects)."""
    port: int
    token: str = field(repr=False)
    _server: Any = field(repr=False)
    _thread: threading.Thread = field(repr=False)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving and wait for the server thread (at most ``timeout`` seconds)."""
        self._server.should_exit = True
        self._thread.join(timeout)

    def wait(self) -> None:
        """Serve until interrupted (Ctrl-C), then stop."""
        try:
            while self._thread.is_alive():
                self._thread.join(0.5)
        finally:
            self.stop()


def start_dashboard(port: int = 0, *, token: str | None = None) -> Dashboard:
    """Serve the dashboard on 127.0.0.1 in a background thread.

    Args:
        port: the port to listen on; 0 (the default) picks a free one.
        token: the token every request must carry; by default 32 random bytes, URL-safe.

    Returns:
        The running :class:`Dashboard`, whose ``url`` holds the token.

    Raises:
        OSError: the port could not be bound.
    """
    import uvicorn

    token = token or secrets.token_urlsafe(32)
    # IPPROTO_TCP named, not 0: asyncio sets TCP_NODELAY only on sockets that say so, and
    # without it every keep-alive answer waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        sock.close()
        raise
    bound = sock.getsockname()[1]
    config = uvicorn.Config(
        dashboard_app(token=token, port=bound),
        log_level="warning",
        access_log=False,  # the URLs carry the token
        lifespan="off",
        server_header=False,
        proxy_headers=False,  # nothing is in front of it
        limit_concurrency=64,
    )
    server = uvicorn.Server(config)
    ready = threading.Event()

    def run() -> None:
        server.run(sockets=[sock])

    thread = threading.Thread(target=run, name="codeweaver-telemetry-serve", daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        ready.wait(0.01)
    if not server.started:
        sock.close()
        raise OSError(f"the dashboard server on 127.0.0.1:{bound} did not start")
    url = f"http://127.0.0.1:{bound}/?token={token}"
    return Dashboard(url=url, port=bound, token=token, _server=server, _thread=thread)
