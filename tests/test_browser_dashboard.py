"""The dashboard of ``codeweaver-telemetry serve`` in the system's Chromium (tests/_browser.py).

The server runs in this process on 127.0.0.1 (``start_dashboard``) over a log a real client
wrote; the page is driven as a user would: the charts and lists at desktop and phone sizes,
the consent switch (and DO_NOT_TRACK winning over it), export, delete with its confirmation,
what the page itself requests, and a page on another origin that knows the token but is
still refused.
"""

from __future__ import annotations

import http.server
import io
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from codeweaver_telemetry import TelemetryClient
from codeweaver_telemetry.cli import EXIT_OK, main
from codeweaver_telemetry.web import NEVER_COLLECTED, Dashboard, start_dashboard
from tests._browser import (
    ARTIFACTS,
    SIZES,
    Watched,
    assert_charts_drawn,
    assert_fits,
    browser_page,
    close_browser,
    require_chromium,
)
from tests.test_report import raw_payloads, run_sessions

if TYPE_CHECKING:
    from playwright.sync_api import Request

EXPORT_NAME = "codeweaver-telemetry-export.json"
TOKEN_HEADER = "x-telemetry-token"

# --- helpers and fixtures ------------------------------------------------------------------


def cli_json(*argv: str) -> dict[str, Any]:
    """A CLI command's ``--json`` document, run in this process."""
    out = io.StringIO()
    assert main([*argv, "--json"], out=out) == EXIT_OK, out.getvalue()
    return json.loads(out.getvalue())


def state_dir(home: Path) -> Path:
    return home / "telemetry"


def stored_state(home: Path) -> dict[str, Any] | None:
    """``state.json`` read with json alone (None when there is none)."""
    path = state_dir(home) / "state.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def has_key(value: Any, key: str) -> bool:
    """True when ``key`` names a member of any object nested anywhere in ``value``."""
    if isinstance(value, dict):
        return key in value or any(has_key(v, key) for v in value.values())
    if isinstance(value, list):
        return any(has_key(v, key) for v in value)
    return False


@pytest.fixture(scope="module", autouse=True)
def _one_browser() -> Iterator[None]:
    """Every test of this module shares one browser, closed when they are done."""
    yield
    close_browser()


@pytest.fixture
def browser() -> str:
    """Chromium is needed: skipped without it (failed under CODEWEAVER_REQUIRE_BROWSER=1)."""
    return require_chromium()


@pytest.fixture
def logged(clean_env: Path, make_client: Callable[..., TelemetryClient]) -> list[dict[str, Any]]:
    """A real client's sessions (searches, errors, usage) on the local log; returns the
    log's payloads read with json alone, oldest first."""
    client = make_client()
    run_sessions(client)
    assert client.flush(10)
    client.shutdown(timeout=5)
    payloads = raw_payloads(clean_env)
    assert payloads
    return payloads


@pytest.fixture
def dashboard(browser: str, logged: list[dict[str, Any]]) -> Iterator[Dashboard]:
    """The dashboard server on 127.0.0.1 (a free port), over the logged sessions."""
    served = start_dashboard()
    try:
        yield served
    finally:
        served.stop()


def open_dashboard(watched: Watched, dashboard: Dashboard) -> None:
    watched.page.goto(dashboard.url)
    watched.page.wait_for_load_state("load")


def wait_for_text_change(watched: Watched, selector: str, before: str) -> str:
    """Wait until the element's text is no longer ``before``; return the new text."""
    watched.page.wait_for_function(
        "([selector, before]) => document.querySelector(selector).textContent !== before",
        arg=[selector, before],
    )
    return watched.page.inner_text(selector)


def click_and_wait(watched: Watched, button: str, watched_selector: str) -> str:
    """Click ``button`` and wait for the text of ``watched_selector`` to change."""
    page = watched.page
    before = page.text_content(watched_selector) or ""
    page.click(button)
    return wait_for_text_change(watched, watched_selector, before)


# --- 1. the page at desktop and phone sizes ------------------------------------------------


@pytest.mark.parametrize("size", list(SIZES))
def test_the_dashboard_shows_status_lists_and_charts(size: str, dashboard: Dashboard) -> None:
    """No console error, nothing but 127.0.0.1 requested, the four charts drawn, the status
    as ``status --json`` says, both lists present, no sideways scrolling on the phone."""
    if size == "desktop":  # one size with telemetry on, the other with it off
        cli_json("enable")
    status = cli_json("status")
    assert status["enabled"] is (size == "desktop")
    with browser_page(f"dashboard-{size}", **SIZES[size]) as watched:
        open_dashboard(watched, dashboard)
        page = watched.page
        assert page.title() == "Telemetry dashboard"
        assert page.inner_text("#state") == ("ON" if status["enabled"] else "OFF")
        assert page.get_attribute("#state", "data-enabled") == str(status["enabled"]).lower()
        assert page.inner_text("#source") == status["source"]
        assert page.inner_text("#reason") == status["reason"]
        assert page.inner_text("#payload-count") == str(status["logged_payloads"])
        want_button = "Turn telemetry off" if status["enabled"] else "Turn telemetry on"
        assert page.inner_text("#consent") == want_button
        for section in ("#status", "#collected", "#never"):
            assert page.locator(section).count() == 1, section
            assert page.locator(section).is_visible(), section
        assert "What is collected" in page.inner_text("#collected")
        assert "Never collected" in page.inner_text("#collected")
        never = page.locator("#never > li").all_inner_texts()
        assert [" ".join(item.split()) for item in never] == list(NEVER_COLLECTED)
        assert page.locator("details.event-schema").count() > 0
        assert_charts_drawn(page)
        assert page.locator("details.payload").count() == status["logged_payloads"]
        assert page.is_hidden("#confirm")
        assert_fits(page, size)
        shot = watched.screenshot()
        watched.assert_clean()
        prefix = f"http://127.0.0.1:{dashboard.port}/"
        assert watched.requests == [dashboard.url]
        assert all(url.startswith(prefix) for url in watched.requests)
        assert watched.websockets == []
    assert shot == ARTIFACTS / f"dashboard-{size}.png"
    assert shot.stat().st_size > 0


# --- 2. the consent switch -----------------------------------------------------------------


def test_the_consent_switch_records_the_choice_and_do_not_track_wins(
    dashboard: Dashboard, clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli_json("enable")
    with browser_page("dashboard-consent") as watched:
        open_dashboard(watched, dashboard)
        page = watched.page
        assert page.inner_text("#state") == "ON"

        assert click_and_wait(watched, "#consent", "#state") == "OFF"
        assert (stored_state(clean_env) or {}).get("consent") == "disabled"
        assert cli_json("status")["enabled"] is False
        message = page.inner_text("#message")
        assert "telemetry off" in message, message
        assert page.inner_text("#consent") == "Turn telemetry on"
        assert page.inner_text("#install-id") == "(none)"  # forgotten, as status says
        assert cli_json("status")["install_id"] is None

        assert click_and_wait(watched, "#consent", "#state") == "ON"
        assert (stored_state(clean_env) or {}).get("consent") == "enabled"
        status = cli_json("status")
        assert status["enabled"] is True
        assert page.inner_text("#message") == "Recorded: telemetry on."
        assert page.inner_text("#source") == status["source"]

        assert click_and_wait(watched, "#consent", "#state") == "OFF"
        assert (stored_state(clean_env) or {}).get("consent") == "disabled"

        # The server reads the environment on every request: DO_NOT_TRACK now wins.
        monkeypatch.setenv("DO_NOT_TRACK", "1")
        message = click_and_wait(watched, "#consent", "#message")
        assert (stored_state(clean_env) or {}).get("consent") == "enabled"
        assert page.inner_text("#state") == "OFF"
        assert page.get_attribute("#state", "data-enabled") == "false"
        assert "telemetry stays off" in message, message
        assert "DO_NOT_TRACK" in message, message
        status = cli_json("status")
        assert status["enabled"] is False
        assert page.inner_text("#reason") == status["reason"]
        assert page.inner_text("#consent") == "Turn telemetry on"
        watched.screenshot()
        watched.assert_clean()


# --- 3. export -----------------------------------------------------------------------------


def test_export_downloads_the_state_and_the_log(
    dashboard: Dashboard, clean_env: Path, logged: list[dict[str, Any]], tmp_path: Path
) -> None:
    cli_json("enable")
    with browser_page("dashboard-export", downloads=True) as watched:
        open_dashboard(watched, dashboard)
        page = watched.page
        with page.expect_download() as waiting:
            page.click("#export")
        download = waiting.value
        assert download.suggested_filename == EXPORT_NAME
        saved = tmp_path / "saved-export.json"
        download.save_as(saved)
        page.wait_for_function(
            "document.getElementById('message').textContent.startsWith('Exported')"
        )
        watched.assert_clean()
    exported = json.loads(saved.read_text(encoding="utf-8"))
    cli = cli_json("export")
    assert exported["state"] == cli["state"]
    assert exported["events"] == cli["events"]
    assert exported["events"] == logged  # the log read with json alone, no seq/prev
    assert isinstance(exported["state"], dict)
    assert exported["state"]["consent"] == "enabled"
    assert exported["state"]["install_id"] == (stored_state(clean_env) or {})["install_id"]
    assert not has_key(exported, "hash_key")
    assert "hash_key" in (stored_state(clean_env) or {})  # it is there, just not exported


# --- 4. delete -----------------------------------------------------------------------------


def test_delete_asks_first_and_then_removes_everything(
    dashboard: Dashboard, clean_env: Path
) -> None:
    install_id = (stored_state(clean_env) or {}).get("install_id")
    assert install_id
    directory = state_dir(clean_env)
    before = sorted(p.name for p in directory.iterdir())
    with browser_page("dashboard-delete") as watched:
        open_dashboard(watched, dashboard)
        page = watched.page
        assert page.is_hidden("#confirm")
        page.click("#delete")
        page.wait_for_selector("#confirm", state="visible")
        assert page.is_visible("#confirm-delete")
        page.click("#cancel")
        page.wait_for_selector("#confirm", state="hidden")
        assert sorted(p.name for p in directory.iterdir()) == before
        assert page.inner_text("#message") == ""

        page.click("#delete")
        page.wait_for_selector("#confirm", state="visible")
        message = click_and_wait(watched, "#confirm-delete", "#message")
        assert page.is_hidden("#confirm")
        assert message.startswith("Deleted "), message
        assert install_id in message, message
        assert page.inner_text("#payload-count") == "0"
        assert page.inner_text("#install-id") == "(none)"
        after = cli_json("status")  # no state file: the policy decides again, and the page
        page.wait_for_function(  # shows that decision, not the one before the delete
            "(want) => document.getElementById('state').textContent === want",
            arg="ON" if after["enabled"] else "OFF",
        )
        assert page.inner_text("#source") == after["source"]
        assert page.locator("details.payload").count() == 0  # the deleted log is gone
        assert page.locator("#charts svg").count() == 0
        watched.screenshot()
        watched.assert_clean()
    assert not directory.exists()
    status = cli_json("status")
    assert status["install_id"] is None
    assert status["logged_payloads"] == 0


# --- 5. what the page requests -------------------------------------------------------------


def test_older_payloads_page_in_from_the_api(
    dashboard: Dashboard, logged: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page holds the newest payloads; "Show older payloads" pages in the rest from
    GET /api/payloads, each as the same expandable JSON, until the oldest is there."""
    from codeweaver_telemetry.web import _dashboard

    monkeypatch.setattr(_dashboard, "_PAGE_PAYLOADS", 5)
    assert len(logged) > 5
    with browser_page("dashboard-older") as watched:
        open_dashboard(watched, dashboard)
        page = watched.page
        assert page.locator("details.payload").count() == 5
        assert page.inner_text("#older") == f"Show older payloads ({len(logged) - 5} more)"
        page.click("#older")
        page.wait_for_function(
            "(n) => document.querySelectorAll('details.payload').length === n",
            arg=len(logged),
        )
        assert page.locator("#older").count() == 0  # nothing older is left
        assert page.locator("[data-left-out]").count() == 0
        texts = page.locator("details.payload pre").all_text_contents()
        assert [json.loads(text) for text in texts] == logged[::-1]  # newest first, all
        watched.assert_clean()


def test_the_page_asks_only_its_own_server_and_sends_the_token_in_a_header(
    dashboard: Dashboard,
) -> None:
    """After loading, switching consent, exporting and deleting: every request went to
    this server, every API call carried the token header, and only the page's own URL
    holds the token."""
    prefix = f"http://127.0.0.1:{dashboard.port}/"
    with browser_page("dashboard-requests", downloads=True) as watched:
        page = watched.page
        made: list[Request] = []

        def record(request: Request) -> None:  # (a bound builtin cannot be a handler)
            made.append(request)

        page.on("request", record)
        open_dashboard(watched, dashboard)
        click_and_wait(watched, "#consent", "#state")
        with page.expect_download():
            page.click("#export")
        page.click("#delete")
        click_and_wait(watched, "#confirm-delete", "#message")
        watched.assert_clean()
        network = list(made)  # (the download's blob: URL is not a request)
        calls = [r for r in network if r.url.startswith(prefix + "api/")]
        assert [r.url.split("?")[0] for r in calls] == [
            prefix + "api/consent",
            prefix + "api/export",
            prefix + "api/delete",
            prefix + "api/status",  # after a delete, the page shows the decision anew
        ]
        assert [r.method for r in calls] == ["POST", "GET", "POST", "GET"]
        for request in network:
            assert request.url.startswith(prefix), request.url
        for request in calls:
            headers = request.all_headers()
            assert headers.get(TOKEN_HEADER) == dashboard.token, request.url
            assert "cookie" not in headers, request.url
        with_token = [r.url for r in network if "token=" in r.url]
        assert with_token == [dashboard.url]
        assert watched.blocked == []


# --- 6. another origin ---------------------------------------------------------------------

_HOSTILE_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>another origin</title></head>
<body><p>A page on another port of 127.0.0.1 that has learned the token.</p>
<script>
  const target = "http://127.0.0.1:%(port)d/api/";
  const token = "%(token)s";
  const outcome = (promise) => promise.then(
    (r) => "answered " + r.type + " " + r.status, (e) => "failed: " + e);
  Promise.all([
    outcome(fetch(target + "consent?token=" + token, {
      method: "POST",
      headers: {"Content-Type": "application/json"},
      body: '{"enabled": false}',
    })),
    outcome(fetch(target + "export?token=" + token, {mode: "no-cors"})),
    outcome(fetch(target + "consent?token=" + token, {
      method: "POST",
      mode: "no-cors",
      headers: {"Content-Type": "text/plain"},
      body: '{"enabled": false}',
    })),
  ]).then((results) => { window.outcome = results; });
</script>
</body></html>
"""


class _Hostile(http.server.BaseHTTPRequestHandler):
    body: bytes

    def do_GET(self) -> None:
        if self.path != "/hostile":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet


@pytest.fixture
def hostile_site(dashboard: Dashboard) -> Iterator[str]:
    """A page server on another port of 127.0.0.1, serving a page that knows the token."""
    page = _HOSTILE_PAGE % {"port": dashboard.port, "token": dashboard.token}
    handler = type("Handler", (_Hostile,), {"body": page.encode()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hostile"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_a_page_on_another_origin_cannot_use_the_api(
    dashboard: Dashboard, hostile_site: str, clean_env: Path
) -> None:
    """Even with the token, a page on another origin changes nothing: the server refuses
    it (403), and the browser does not let the page read the export either."""
    cli_json("enable")
    before = stored_state(clean_env)
    assert before is not None
    assert before["consent"] == "enabled"
    with browser_page("dashboard-hostile") as watched:
        page = watched.page
        answers: list[tuple[str, str, int]] = []
        failures: list[tuple[str, str, str | None]] = []
        page.on("response", lambda r: answers.append((r.request.method, r.url, r.status)))
        page.on("requestfailed", lambda r: failures.append((r.method, r.url, r.failure)))
        page.goto(hostile_site)
        page.wait_for_function("window.outcome !== undefined")
        outcome = page.evaluate("window.outcome")
        page.wait_for_timeout(200)  # let the last events arrive
    print("hostile page outcome:", outcome)
    print("responses seen:", [(m, u.split("?")[0], s) for m, u, s in answers])
    print("requests failed:", [(m, u.split("?")[0], f) for m, u, f in failures])
    print("console errors:", *watched.console_errors, sep="\n  ")
    assert stored_state(clean_env) == before
    assert cli_json("status")["enabled"] is True
    # The JSON POST is either stopped by the browser or refused by the server; it never
    # gets an answer the page can read.
    assert not outcome[0].startswith("answered basic"), outcome
    # The no-cors answers are opaque: status 0 to the page, whatever the server said.
    assert outcome[1] == "answered opaque 0", outcome
    assert outcome[2] == "answered opaque 0", outcome
    api = f"http://127.0.0.1:{dashboard.port}/api/"
    from_server = [(m, u.split("?")[0], s) for m, u, s in answers if u.startswith(api)]
    assert from_server, (answers, failures)
    assert all(status == 403 for _, _, status in from_server), from_server
    assert ("GET", api + "export", 403) in from_server
    assert ("POST", api + "consent", 403) in from_server
    assert watched.blocked == []
