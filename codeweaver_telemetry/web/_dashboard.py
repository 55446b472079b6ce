# SPDX-License-Identifier: MIT OR Apache-2.0
"""The dashboard page of ``codeweaver-telemetry serve``: status and why, the consent switch,
what is collected and never collected, the report's charts, the payloads, export and delete.

The page is rendered here from the same numbers as ``report --html``; its one script (with a
per-page nonce; the Content-Security-Policy allows no other) only calls the web API on the
same origin, with the token, for the consent switch, export and delete.
"""

from __future__ import annotations

import html
import secrets
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

__all__ = ["NEVER_COLLECTED", "dashboard_page"]

NEVER_COLLECTED = (
    "file paths and file names",
    "your name, user name, email address or host name",
    "IP addresses in any property (the host that receives events sees the connection's "
    "address, as any server does; the library turns PostHog's geo-IP lookup off)",
    "secrets: keys, tokens, passwords",
    "what you search for, and your code or documents",
)
"""What the page lists as never collected (the scrubber and the event rules enforce it)."""

_PAGE_PAYLOADS = 200

_SCRIPT = """
(() => {
  "use strict";
  const token = document.body.dataset.token;
  const $ = (id) => document.getElementById(id);
  const api = (path, init = {}) => fetch("api/" + path, {
    ...init,
    headers: { ...(init.headers || {}), "X-Telemetry-Token": token },
    credentials: "omit",
    cache: "no-store",
  });
  const post = (path, body) => api(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const say = (text) => { $("message").textContent = text; };
  const answer = async (response) => {
    const type = response.headers.get("Content-Type") || "";
    if (type.startsWith("application/json")) return response.json();
    return { ok: false, error: "the server answered " + response.status };
  };
  const show = (doc) => {
    $("state").textContent = doc.enabled ? "ON" : "OFF";
    $("state").dataset.enabled = String(doc.enabled);
    $("source").textContent = doc.source;
    $("reason").textContent = doc.reason;
    $("consent").dataset.enabled = String(doc.enabled);
    $("consent").textContent = doc.enabled ? "Turn telemetry off" : "Turn telemetry on";
  };
  $("consent").addEventListener("click", async () => {
    const want = $("consent").dataset.enabled !== "true";
    const doc = await answer(await post("consent", { enabled: want }));
    if (!doc.ok) { say("Could not change it: " + doc.error); return; }
    show(doc);
    if (!want) {
      $("install-id").textContent = "(none)";
      say("Recorded: telemetry off. The install id was forgotten; nothing more is sent.");
    } else if (doc.enabled) {
      say("Recorded: telemetry on.");
    } else {
      say("Recorded your choice, but telemetry stays off: " + doc.reason
        + " (" + doc.source + ").");
    }
  });
  $("export").addEventListener("click", async () => {
    const response = await api("export");
    if (!response.ok) { say("Export failed (" + response.status + ")."); return; }
    const link = document.createElement("a");
    link.href = URL.createObjectURL(await response.blob());
    link.download = "codeweaver-telemetry-export.json";
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 5000);
    say("Exported: codeweaver-telemetry-export.json.");
  });
  const older = $("older");
  if (older) older.addEventListener("click", async () => {
    const list = $("payloads");
    const shown = list.querySelectorAll("details.payload").length;
    const page = await answer(await api("payloads?limit=200&offset=" + shown));
    if (!page.ok) { say("Could not load older payloads: " + page.error); return; }
    const encoder = new TextEncoder();
    for (const payload of page.payloads) {
      const item = document.createElement("details");
      item.className = "payload";
      const head = document.createElement("summary");
      const when = document.createElement("span");
      when.className = "mono";
      when.textContent = typeof payload.timestamp === "string" ? payload.timestamp : "(no time)";
      const name = document.createElement("code");
      name.textContent = String(payload.event);
      const size = document.createElement("span");
      size.className = "muted";
      size.textContent = encoder.encode(JSON.stringify(payload)).length + " bytes";
      head.append(when, name, size);
      const body = document.createElement("pre");
      body.textContent = JSON.stringify(payload, null, 2);
      item.append(head, body);
      older.before(item);
    }
    const now = shown + page.payloads.length;
    if (now >= page.total) {
      older.remove();
      const note = list.querySelector("[data-left-out]");
      if (note) note.remove();  // "older payloads left out": not any more
    }
    else older.textContent = "Show older payloads (" + (page.total - now) + " more)";
  });
  $("delete").addEventListener("click", () => { $("confirm").hidden = false; });
  $("cancel").addEventListener("click", () => { $("confirm").hidden = true; });
  $("confirm-delete").addEventListener("click", async () => {
    $("confirm").hidden = true;
    const doc = await answer(await post("delete", { confirm: true }));
    if (!doc.ok) { say("Delete failed: " + doc.error); return; }
    const quote = doc.install_id
      ? " To have what was already sent deleted, give the vendor this install id: " + doc.install_id
      : "";
    // No state file now: the policy decides again; show that before saying it is done.
    const status = await answer(await api("status"));
    if (status.ok) show(status);
    $("payload-count").textContent = "0";
    $("install-id").textContent = "(none)";
    if (older) older.remove();
    for (const id of ["summary", "charts", "payloads"]) {
      const section = $(id);
      if (section) {
        section.replaceChildren(document.createElement("p"));
        section.firstChild.textContent = "Deleted: the local log is empty now.";
      }
    }
    say("Deleted " + doc.deleted.length + " file(s)." + quote);
  });
})();
"""


def _csp(nonce: str, *, header: bool = True) -> str:
    """The page's policy; ``frame-ancestors`` only in the header (a browser ignores it, with
    a console error, in a ``<meta>``)."""
    policy = (
        "default-src 'none'; "
        f"script-src 'nonce-{nonce}'; "
        "style-src 'unsafe-inline'; "
        "connect-src 'self'; "
        "img-src data:; "
        "base-uri 'none'; form-action 'none'"
    )
    return policy + "; frame-ancestors 'none'" if header else policy


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _collected_html() -> str:
    from codeweaver_telemetry.events.catalog import ALL_EVENTS, schema_rows

    by_event: dict[str, list[Any]] = defaultdict(list)
    for row in schema_rows():
        by_event[row.event].append(row)
    parts = ['<section id="collected"><h2>What is collected</h2>']
    parts.append(
        "<p>Only these events and properties, each through its privacy rule "
        "(<code>codeweaver-telemetry schema</code> lists the same):</p>"
    )
    for event, rows in by_event.items():
        items = "".join(
            f"<tr><td><code>{_e(r.path)}</code></td><td>{_e(r.meaning)}</td>"
            f"<td>{_e(r.rule)}</td></tr>"
            for r in rows
        )
        label = "every event" if event == ALL_EVENTS else f"<code>{_e(event)}</code>"
        parts.append(
            f'<details class="event-schema"><summary>{label} '
            f"({len(rows)} properties)</summary>"
            '<div class="scroll"><table><thead><tr><th>property</th><th>meaning</th>'
            f"<th>rule</th></tr></thead><tbody>{items}</tbody></table></div></details>"
        )
    never = "".join(f"<li>{_e(item)}</li>" for item in NEVER_COLLECTED)
    parts.append(f'<h2>Never collected</h2><ul id="never">{never}</ul></section>')
    return "".join(parts)


def _status_html(status: dict[str, Any]) -> str:
    enabled = bool(status["enabled"])
    sends_to = (
        f"PostHog at {status['posthog_host']}"
        if status["destination"] == "posthog"
        else "the local log only"
    )
    deny = ", ".join(status["deny_events"] + status["deny_properties"]) or "(none)"
    return (
        '<section id="status"><h2>Status</h2>'
        f'<p class="big">Telemetry is <strong id="state" data-enabled="{str(enabled).lower()}">'
        f"{'ON' if enabled else 'OFF'}</strong></p>"
        '<dl class="meta">'
        f'<dt>Decided by</dt><dd id="source">{_e(status["source"])}</dd>'
        f'<dt>Why</dt><dd id="reason">{_e(status["reason"])}</dd>'
        f"<dt>Policy</dt><dd>{_e(status['policy'])}</dd>"
        f"<dt>Sends to</dt><dd>{_e(sends_to)}</dd>"
        f'<dt>Install id</dt><dd id="install-id">{_e(status["install_id"] or "(none)")}</dd>'
        f'<dt>Logged payloads</dt><dd id="payload-count">{int(status["logged_payloads"])}</dd>'
        f"<dt>Denied</dt><dd>{_e(deny)}</dd>"
        "</dl>"
        f'<p><button id="consent" type="button" data-enabled="{str(enabled).lower()}">'
        f"{'Turn telemetry off' if enabled else 'Turn telemetry on'}</button></p>"
        '<p class="note">Environment settings such as DO_NOT_TRACK and CI win over this '
        "switch; the page says so when they do.</p>"
        '<p id="message" role="status" aria-live="polite"></p>'
        "</section>"
    )


_ACTIONS = (
    '<section id="actions"><h2>Your data</h2>'
    '<p><button id="export" type="button">Export as JSON</button> '
    '<button id="delete" type="button" class="danger">Delete local data…</button></p>'
    '<div id="confirm" hidden><p>Delete everything telemetry keeps on this machine (the '
    "state, the install id, the log, the spool and the flag cache)? This cannot be undone.</p>"
    '<button id="confirm-delete" type="button" class="danger">Delete</button> '
    '<button id="cancel" type="button">Cancel</button></div></section>'
)


def _with_older(section: str, total: int) -> str:
    """The payload section, with a button that pages in older payloads (from ``GET
    /api/payloads``) when the page holds only the newest."""
    if total <= _PAGE_PAYLOADS:
        return section
    more = total - _PAGE_PAYLOADS
    button = (
        f'<button id="older" type="button">Show older payloads ({more:,} more)</button>\n</section>'
    )
    head, _, tail = section.rpartition("</section>")
    return head + button + tail


def _render(token: str, nonce: str) -> str:
    from codeweaver_telemetry._html import (
        charts_html,
        page_html,
        payloads_html,
        summary_html,
    )
    from codeweaver_telemetry.cli import local_report, status_fields

    report, payloads, log_file = local_report()
    # The log is read once: its payloads give the status's count too.
    status = status_fields(logged_payloads=len(payloads))
    body = (
        f'<header><h1>Telemetry dashboard</h1><p class="note">What this tool collects and '
        f"sends, from the local log <code>{_e(log_file)}</code>. This page is served on "
        "127.0.0.1 for you only and loads nothing from the network.</p></header>"
        + _status_html(status)
        + _ACTIONS
        + _collected_html()
        + summary_html(report)
        + charts_html(report)
        + _with_older(payloads_html(payloads, max_payloads=_PAGE_PAYLOADS), len(payloads))
        + f'<script nonce="{nonce}">{_SCRIPT}</script>'
    )
    page = page_html("Telemetry dashboard", body, csp=_csp(nonce, header=False))
    # The token goes on <body> for the script; the page itself is only served with it.
    return page.replace("<body>", f'<body data-token="{_e(token)}">', 1)


def dashboard_page(token: str) -> Callable[[Request], Awaitable[Response]]:
    """The endpoint of ``GET /`` for a server whose token is ``token`` (the guard in front
    checks every request; the page hands the token to its script)."""

    async def page(request: Request) -> Response:
        return await _page(token)

    return page


async def _page(token: str) -> Response:
    nonce = secrets.token_urlsafe(16)
    page = await run_in_threadpool(_render, token, nonce)
    return HTMLResponse(
        page,
        headers={
            "Content-Security-Policy": _csp(nonce),
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
        },
    )
