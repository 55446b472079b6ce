"""Browser tests, in the system's Chromium with the network fenced off (tests/_browser.py).

First the harness itself: it must notice console errors and stop (and record) any request
that is not to loopback, or the report tests below could not fail. Then the HTML report of
``codeweaver-telemetry report --html FILE``, opened from disk at desktop and phone sizes.
"""

from __future__ import annotations

import http.server
import io
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from codeweaver_telemetry import TelemetryClient
from codeweaver_telemetry.cli import EXIT_OK, main
from tests._browser import (
    ARTIFACTS,
    SIZES,
    Watched,
    assert_charts_drawn,
    assert_fits,
    browser_page,
    close_browser,
    is_local_url,
    require_chromium,
)
from tests.test_report import raw_payloads, run_sessions

# --- the harness ---------------------------------------------------------------------------

_DIRTY_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>dirty</title></head>
<body>
<p>This page misbehaves on purpose.</p>
<img id="outside" src="https://example.invalid/a.png" alt="">
<script>
  console.error("harness self-test: an error");
  const img = document.getElementById("outside");
  const image = new Promise((done) => {
    if (img.complete) { done(img.naturalWidth > 0 ? "loaded" : "failed"); return; }
    img.addEventListener("load", () => done("loaded"));
    img.addEventListener("error", () => done("failed"));
  });
  const fetched = fetch("http://example.invalid/x").then(() => "loaded", () => "failed");
  const socket = new Promise((done) => {
    const ws = new WebSocket("ws://example.invalid/ws");
    ws.onopen = () => done("opened");
    ws.onclose = () => done("closed");
  });
  Promise.all([image, fetched, socket]).then((results) => { window.outcome = results; });
</script>
</body></html>
"""

_CLEAN_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>clean</title></head>
<body><h1>Nothing to see</h1><p id="ok">All quiet.</p>
<script>console.log("a log line is not an error");</script>
</body></html>
"""


class _Pages(http.server.BaseHTTPRequestHandler):
    pages = {"/dirty": _DIRTY_PAGE, "/clean": _CLEAN_PAGE}
    seen: list[str]

    def do_GET(self) -> None:
        self.seen.append(self.path)
        body = self.pages.get(self.path)
        if body is None:
            self.send_error(404)
            return
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep the test output quiet


@pytest.fixture(scope="module", autouse=True)
def _one_browser() -> Iterator[None]:
    """All tests of this module share one browser; it is closed when they are done."""
    yield
    close_browser()


@pytest.fixture
def site() -> Iterator[tuple[str, list[str]]]:
    """A page server on 127.0.0.1 (random port); yields its URL and the paths it served."""
    seen: list[str] = []
    handler = type("Handler", (_Pages,), {"seen": seen})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.mark.parametrize(
    ("url", "local"),
    [
        ("http://127.0.0.1:8000/a", True),
        ("https://localhost/", True),
        ("http://[::1]:9/x", True),
        ("ws://127.0.0.1:1234/socket", True),
        ("file:///tmp/report.html", True),
        ("data:text/plain,hi", True),
        ("blob:http://127.0.0.1/0d1f", True),
        ("about:blank", True),
        ("https://example.invalid/a.png", False),
        ("http://example.invalid/x", False),
        ("http://127.0.0.2/", False),
        ("http://localhost.example.com/", False),
        ("http://user@example.com@127.0.0.1/", True),
        ("ftp://127.0.0.1/", False),
        ("chrome://settings", False),
        ("http://[::1/", False),
    ],
)
def test_only_loopback_and_local_urls_count_as_local(url: str, local: bool) -> None:
    assert is_local_url(url) is local


def test_the_harness_catches_console_errors_and_stops_outside_requests(
    site: tuple[str, list[str]],
) -> None:
    """A page that logs an error and reaches for two outside hosts (and a WebSocket): all
    recorded, every outside attempt aborted, and assert_clean fails saying so."""
    base, seen = site
    with browser_page("harness-dirty") as watched:
        watched.page.goto(f"{base}/dirty")
        watched.page.wait_for_function("window.outcome !== undefined")
        outcome = watched.page.evaluate("window.outcome")
        assert outcome == ["failed", "failed", "closed"]  # none of them got through
        assert any("harness self-test: an error" in e for e in watched.console_errors)
        assert "https://example.invalid/a.png" in watched.blocked
        assert "http://example.invalid/x" in watched.blocked
        assert "ws://example.invalid/ws" in watched.blocked
        assert "ws://example.invalid/ws" in watched.websockets
        assert f"{base}/dirty" in watched.requests
        assert all(not is_local_url(url) for url in watched.blocked)
        with pytest.raises(AssertionError) as failed:
            watched.assert_clean()
    message = str(failed.value)
    assert "harness self-test: an error" in message
    assert "https://example.invalid/a.png" in message
    assert "http://example.invalid/x" in message
    assert seen == ["/dirty"]


def test_a_quiet_page_is_clean_and_screenshots_are_saved(site: tuple[str, list[str]]) -> None:
    base, seen = site
    with browser_page("harness-clean", viewport=(640, 480)) as watched:
        watched.page.goto(f"{base}/clean")
        assert watched.page.inner_text("#ok") == "All quiet."
        watched.assert_clean()
        assert watched.requests == [f"{base}/clean"]
        assert watched.websockets == []
        shot = watched.screenshot("-selftest")
    assert shot == ARTIFACTS / "harness-clean-selftest.png"
    assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    shot.unlink()
    assert seen == ["/clean"]


def test_a_page_error_is_a_console_error(site: tuple[str, list[str]]) -> None:
    base, _ = site
    with browser_page("harness-throw") as watched:
        watched.page.goto(f"{base}/clean")
        watched.page.evaluate("setTimeout(() => { throw new Error('thrown on purpose'); }, 0)")
        watched.page.wait_for_timeout(100)
        assert any("thrown on purpose" in e for e in watched.console_errors)
        with pytest.raises(AssertionError, match="thrown on purpose"):
            watched.assert_clean()


# --- the HTML report -----------------------------------------------------------------------


HOSTILE = """<img src=x onerror="console.error('xss')"><script>console.error('xss')</script>"""
# As long as HOSTILE, so that a report with it and one with this lay out the same elements.
HARMLESS = "harmless words " * (len(HOSTILE) // 15) + "x" * (len(HOSTILE) % 15)

# Every element's tag, and any attribute that would run script.
_ELEMENTS = """() => [...document.querySelectorAll("*")].map((el) => el.tagName.toLowerCase())"""
_HANDLERS = """() => [...document.querySelectorAll("*")].flatMap(
  (el) => [...el.attributes].filter((a) => a.name.startsWith("on")).map((a) => a.name))"""


def write_report(
    home: Path,
    make_client: Callable[..., TelemetryClient],
    html: Path,
    *,
    odd_text: str | None = None,
) -> list[dict[str, Any]]:
    """A real client's sessions on the local log (as tests/test_report.py makes them), then
    ``report --html``; returns the log's payloads read with json alone, oldest first.

    With ``odd_text``, one more session uses it as an event name, a property value and a
    usage label (all three are kept as they are, the usage label cut short)."""
    client = make_client()
    run_sessions(client)
    if odd_text is not None:
        client.start_session({"version": "1.0"})
        client.capture(odd_text, {"note": odd_text})
        client.record_usage(odd_text, 2)
        client.end_session()
    assert client.flush(10)
    client.shutdown(timeout=5)
    out = io.StringIO()
    assert main(["report", "--html", str(html)], out=out) == EXIT_OK
    assert html.is_file(), out.getvalue()
    return raw_payloads(home)


def open_report(watched: Watched, html: Path) -> None:
    watched.page.goto(html.as_uri())
    watched.page.wait_for_load_state("load")


@pytest.fixture
def browser() -> str:
    """Every test below needs Chromium: skipped without it, failed under CI's
    CODEWEAVER_REQUIRE_BROWSER=1 (browser_page checks again; this makes it explicit)."""
    return require_chromium()


@pytest.mark.usefixtures("browser")
@pytest.mark.parametrize("size", list(SIZES))
def test_the_report_shows_its_charts_and_loads_nothing(
    size: str, clean_env: Path, make_client: Callable[..., TelemetryClient], tmp_path: Path
) -> None:
    """Opened from disk on a desktop and on a phone: no console error, no request but the
    file itself, the four charts drawn with bars, no sideways scrolling on the phone."""
    html = tmp_path / "report.html"
    write_report(clean_env, make_client, html)
    with browser_page(f"report-{size}", **SIZES[size]) as watched:
        open_report(watched, html)
        page = watched.page
        assert page.locator("script").count() == 0
        csp = page.locator('meta[http-equiv="Content-Security-Policy"]').get_attribute("content")
        assert csp is not None
        assert "default-src 'none'" in csp
        assert_charts_drawn(page)
        assert_fits(page, size)
        shot = watched.screenshot()
        watched.assert_clean()
        assert watched.requests == [html.as_uri()]
        assert watched.websockets == []
    assert shot == ARTIFACTS / f"report-{size}.png"
    assert shot.stat().st_size > 0


@pytest.mark.usefixtures("browser")
def test_a_payload_opens_to_its_exact_json(
    clean_env: Path, make_client: Callable[..., TelemetryClient], tmp_path: Path
) -> None:
    """The payloads are listed newest first; clicking the first one's summary shows its
    JSON, which equals the newest line of the log (without the chain's seq/prev)."""
    html = tmp_path / "report.html"
    raw = write_report(clean_env, make_client, html)
    with browser_page("report-payload") as watched:
        open_report(watched, html)
        page = watched.page
        listed = page.locator("details.payload")
        assert listed.count() == len(raw)
        texts = page.locator("details.payload > pre").all_text_contents()
        assert [json.loads(text) for text in texts] == raw[::-1]
        first = listed.first
        pre = first.locator("pre")
        assert not pre.is_visible()
        first.locator("summary").click()
        assert first.get_attribute("open") is not None
        assert pre.is_visible()
        shown = json.loads(pre.inner_text())
        assert shown == raw[-1]
        assert pre.bounding_box() is not None
        watched.screenshot("-open")
        watched.assert_clean()


@pytest.mark.usefixtures("browser")
def test_markup_in_a_payload_stays_text(
    clean_env: Path,
    make_client: Callable[..., TelemetryClient],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An event name, a property and a usage label made of markup and script: no console
    error, no element more than a report of harmless text of the same length has, and the
    markup shown as text."""
    hostile, harmless = tmp_path / "hostile.html", tmp_path / "harmless.html"
    raw = write_report(clean_env, make_client, hostile, odd_text=HOSTILE)
    assert any(p["event"] == HOSTILE and p["properties"]["note"] == HOSTILE for p in raw)
    other_home = tmp_path / "other_home"
    monkeypatch.setenv("CODEWEAVER_HOME", str(other_home))
    assert len(write_report(other_home, make_client, harmless, odd_text=HARMLESS)) == len(raw)
    tags: dict[str, list[str]] = {}
    with browser_page("report-hostile") as watched:
        for label, html in (("harmless", harmless), ("hostile", hostile)):
            open_report(watched, html)
            page = watched.page
            tags[label] = sorted(page.evaluate(_ELEMENTS))
            assert page.evaluate(_HANDLERS) == [], label
            assert page.locator("script, img, iframe, object, embed").count() == 0, label
        body = page.inner_text("body")
        assert HOSTILE in body  # the event name in its payload's summary, shown as text
        shown = [json.loads(text) for text in page.locator("pre").all_text_contents()]
        assert shown == raw[::-1]  # the markup, as JSON strings inside the payloads' text
        assert shown[1]["event"] == shown[1]["properties"]["note"] == HOSTILE
        events = page.locator('figure[data-chart="events"] svg').text_content() or ""
        usage = page.locator('figure[data-chart="usage"] svg').text_content() or ""
        assert "<img src=x" in events
        assert "<img src=x" in usage
        watched.screenshot()
        watched.assert_clean()
        assert len(watched.requests) == 2
    assert tags["hostile"] == tags["harmless"]
