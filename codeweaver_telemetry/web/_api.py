# SPDX-License-Identifier: MIT OR Apache-2.0
"""The web API: an ASGI router that answers what the CLI answers, as JSON.

Every route runs the CLI's own command in this process
(:func:`codeweaver_telemetry.cli.run_command`), so the rules are the CLI's: an off-source such
as ``DO_NOT_TRACK`` still wins over a consent change and the answer says so, ``delete``
removes the same files, ``export`` never holds the HASH key. No route starts a telemetry
client, imports ``posthog`` or makes a request: ``flags`` reads only the cache.
"""

from __future__ import annotations

import json
import math
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, Router

from codeweaver_telemetry.cli import EXIT_OK, JSON_SCHEMA_VERSION, run_command

__all__ = ["PAGE_LIMIT_MAX", "telemetry_router"]

PAGE_LIMIT_MAX = 500
"""The most payloads one ``GET /payloads`` page holds."""
_PAGE_LIMIT_DEFAULT = 50
_NO_STORE = {"Cache-Control": "no-store"}
_EXPORT_NAME = "codeweaver-telemetry-export.json"
_UNSAFE_SITES = ("cross-site", "same-site")
MAX_BODY_BYTES = 16 * 1024
"""The largest request body a ``POST`` route reads (its JSON is a few bytes): 413 above."""


class _BadRequest(Exception):
    """The request cannot be answered as asked: 400 (or ``status``) with this message."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _json(document: dict[str, Any], status: int = 200, **headers: str) -> JSONResponse:
    return JSONResponse(document, status_code=status, headers={**_NO_STORE, **headers})


def _error(command: str, message: str, status: int) -> JSONResponse:
    return _json(
        {"schema_version": JSON_SCHEMA_VERSION, "command": command, "ok": False, "error": message},
        status,
    )


async def _command(command: str, **options: Any) -> JSONResponse:
    """Run ``command`` off the event loop (it reads and writes files): 200, or 500 with the
    command's error document."""
    code, document = await run_in_threadpool(run_command, command, **options)
    return _json(document, 200 if code == EXIT_OK else 500)


def _same_origin(request: Request) -> bool:
    """False for a request a browser marks as sent by another site or origin."""
    if request.headers.get("sec-fetch-site", "same-origin").lower() in _UNSAFE_SITES:
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True
    host = request.headers.get("host", "")
    return origin in (f"http://{host}", f"https://{host}")


async def _body(request: Request, command: str) -> dict[str, Any]:
    """The JSON object of a state-changing request, after the same-origin checks.

    Raises:
        _BadRequest: another origin (403), not ``application/json`` (415), or not an object.
    """
    if not _same_origin(request):
        raise _BadRequest(f"{command}: refused a request from another origin", 403)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        # A form or a "simple" cross-site request cannot set this type without asking first.
        raise _BadRequest(f"{command}: send the body as application/json", 415)
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_BODY_BYTES:
            raise _BadRequest(f"{command}: the body is larger than {MAX_BODY_BYTES} bytes", 413)
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise _BadRequest(f"{command}: the body is not JSON") from None
    if not isinstance(body, dict):
        raise _BadRequest(f"{command}: the body must be a JSON object")
    return body


async def status(request: Request) -> Response:
    """``GET /status``: is telemetry on, which source decided and why (the ``status`` doc)."""
    return await _command("status")


async def consent(request: Request) -> Response:
    """``POST /consent`` with ``{"enabled": true|false}``: record the user's choice.

    The answer is the ``enable``/``disable`` document: ``enabled``, ``source`` and ``reason``
    are the decision afterwards, so an off-source that still wins shows there.
    """
    try:
        body = await _body(request, "consent")
    except _BadRequest as exc:
        return _error("consent", str(exc), exc.status)
    enabled = body.get("enabled")
    if not isinstance(enabled, bool):
        return _error("consent", 'consent: give {"enabled": true} or {"enabled": false}', 400)
    return await _command("enable" if enabled else "disable")


async def report(request: Request) -> Response:
    """``GET /report[?since=&until=]``: the ``report`` numbers (ISO 8601, UTC by default)."""
    from codeweaver_telemetry.report import parse_instant

    bounds: dict[str, Any] = {}
    for name in ("since", "until"):
        text = request.query_params.get(name)
        if text:
            try:
                bounds[name] = parse_instant(text)
            except (ValueError, OverflowError):
                return _error("report", f"{name}: {text!r} is not an ISO 8601 date", 400)
    return await _command("report", **bounds)


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query_params.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise _BadRequest(f"payloads: {name} must be a whole number, not {text!r}") from None
    if not low <= value <= high:
        raise _BadRequest(f"payloads: {name} must be between {low} and {high}")
    return value


def _payload_page(offset: int, limit: int) -> dict[str, Any]:
    from codeweaver_telemetry.settings import load_settings
    from codeweaver_telemetry.sinks.jsonl import read_log

    settings, _ = load_settings()
    events = list(read_log(settings.resolved_state_dir))
    events.reverse()  # newest first
    return {
        "schema_version": JSON_SCHEMA_VERSION,
        "command": "payloads",
        "ok": True,
        "total": len(events),
        "offset": offset,
        "limit": limit,
        "pages": math.ceil(len(events) / limit) if events else 0,
        "payloads": events[offset : offset + limit],
    }


async def payloads(request: Request) -> Response:
    """``GET /payloads?offset=0&limit=50``: the logged payloads, newest first, one page.

    The document has ``total``, ``offset``, ``limit``, ``pages`` and ``payloads``.
    """
    try:
        offset = _int_param(request, "offset", 0, 0, 2**31)
        limit = _int_param(request, "limit", _PAGE_LIMIT_DEFAULT, 1, PAGE_LIMIT_MAX)
    except _BadRequest as exc:
        return _error("payloads", str(exc), exc.status)
    try:
        page = await run_in_threadpool(_payload_page, offset, limit)
    except OSError as exc:
        return _error("payloads", str(exc), 500)
    return _json(page)


async def export(request: Request) -> Response:
    """``GET /export``: the ``export`` document (state without the HASH key, and the log), as
    a download named ``codeweaver-telemetry-export.json``."""
    code, document = await run_in_threadpool(run_command, "export")
    disposition = f'attachment; filename="{_EXPORT_NAME}"'
    return _json(document, 200 if code == EXIT_OK else 500, **{"Content-Disposition": disposition})


async def delete(request: Request) -> Response:
    """``POST /delete`` with ``{"confirm": true}``: remove every file telemetry keeps (the
    ``delete`` document, with the install id to quote to the vendor)."""
    try:
        body = await _body(request, "delete")
    except _BadRequest as exc:
        return _error("delete", str(exc), exc.status)
    if body.get("confirm") is not True:
        return _error("delete", 'delete: confirm with {"confirm": true}', 400)
    return await _command("delete")


async def flags(request: Request) -> Response:
    """``GET /flags``: the feature flags cached for this install (never a request)."""
    return await _command("flags")


async def schema(request: Request) -> Response:
    """``GET /schema``: every event and property the library can send, with its rule."""
    return await _command("schema")


def telemetry_router() -> Router:
    """The web API as an ASGI app, for an app to mount where it likes.

    With Starlette or FastAPI: ``app.mount("/telemetry", telemetry_router())``. Routes
    (all JSON, the CLI's ``--json`` documents, ``Cache-Control: no-store``):
    ``GET /status``, ``POST /consent``, ``GET /report``, ``GET /payloads``, ``GET /export``,
    ``POST /delete``, ``GET /flags``, ``GET /schema``.

    State-changing routes take ``application/json`` only (16 KiB at most) and refuse a
    browser request from another origin. They do not check who is asking, nor the ``Host``
    (a site whose name points at the app's address sends a matching ``Origin``): put the
    app's own authentication and a trusted-host check (Starlette's
    ``TrustedHostMiddleware``) in front, or use ``codeweaver-telemetry serve``, which adds
    a token and a fixed list of hosts.
    """
    return Router(
        routes=[
            Route("/status", status, methods=["GET"]),
            Route("/consent", consent, methods=["POST"]),
            Route("/report", report, methods=["GET"]),
            Route("/payloads", payloads, methods=["GET"]),
            Route("/export", export, methods=["GET"]),
            Route("/delete", delete, methods=["POST"]),
            Route("/flags", flags, methods=["GET"]),
            Route("/schema", schema, methods=["GET"]),
        ]
    )
