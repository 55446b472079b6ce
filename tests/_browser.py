"""A small harness for driving the system's Chromium from tests, with the network fenced off.

Nothing is downloaded: Playwright only drives the Chromium already installed (Debian's
``/usr/bin/chromium``, or ``CODEWEAVER_CHROMIUM``); ``playwright install`` is never run.

Every page opened through :func:`browser_page` may talk to loopback only. Any other request is
aborted before it leaves the browser and recorded in :attr:`Watched.blocked`, so a test can
assert that a page tried nothing (:meth:`Watched.assert_clean`). As a second fence, the browser
sends whatever might slip past the request router to a proxy on a closed loopback port, and its
DNS resolver answers nothing but loopback names.

Environment (read once, at import, because the autouse ``clean_env`` fixture removes every
``CODEWEAVER*`` variable while a test runs):

``CODEWEAVER_CHROMIUM``
    the Chromium executable (default: ``chromium`` on PATH, else ``/usr/bin/chromium``).
``CODEWEAVER_REQUIRE_BROWSER=1``
    a missing browser fails the test instead of skipping it (CI sets it).
``CODEWEAVER_TEST_ARTIFACTS``
    where screenshots go (default: ``<repo>/test-artifacts``).

One browser is launched on first use and shared by every page of the test session; it is
closed at interpreter exit, or earlier by :func:`close_browser`.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import (
        Browser,
        ConsoleMessage,
        Page,
        Playwright,
        Request,
        Route,
        WebSocket,
        WebSocketRoute,
    )

REPO = Path(__file__).resolve().parents[1]

CHROMIUM: str = (
    os.environ.get("CODEWEAVER_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
)
REQUIRE_BROWSER: bool = os.environ.get("CODEWEAVER_REQUIRE_BROWSER", "") == "1"
ARTIFACTS: Path = Path(os.environ.get("CODEWEAVER_TEST_ARTIFACTS") or REPO / "test-artifacts")

INSTALL_HINT = "install it: sudo apt-get install chromium"

CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-default-apps",
    "--disable-extensions",
    "--no-default-browser-check",
    "--metrics-recording-only",
    # Any host name other than a loopback one resolves to nothing.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1, EXCLUDE [::1]",
)

# Traffic that escapes the request router goes to this proxy, a closed port on loopback;
# Chromium itself never proxies loopback addresses.
_DEAD_PROXY = "http://127.0.0.1:9"

LAUNCH_TIMEOUT_MS = 30_000
PAGE_TIMEOUT_MS = 15_000

_LOCAL_SCHEMES = frozenset({"file", "data", "blob", "about"})
_NETWORK_SCHEMES = frozenset({"http", "https", "ws", "wss"})
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def is_local_url(url: str) -> bool:
    """True for loopback http(s)/ws(s) URLs and for file:, data:, blob: and about: URLs."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return False
    scheme = parts.scheme.lower()
    if scheme in _LOCAL_SCHEMES:
        return True
    return scheme in _NETWORK_SCHEMES and host in _LOOPBACK_HOSTS


def _unavailable(why: str) -> None:
    message = f"Chromium is needed for the browser tests but {why}; {INSTALL_HINT}"
    if REQUIRE_BROWSER:
        pytest.fail(f"{message} (CODEWEAVER_REQUIRE_BROWSER=1, so this is not skipped)")
    pytest.skip(message)


def require_chromium() -> str:
    """The Chromium executable; skips the test when there is none (fails under CI's
    ``CODEWEAVER_REQUIRE_BROWSER=1``), and likewise when Playwright is not installed."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        _unavailable(f"{CHROMIUM} is not an executable file")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _unavailable("the playwright package is missing (pip install -e '.[dev]')")
    return CHROMIUM


class _Shared:
    """The session's Playwright driver and browser, started on first use."""

    playwright: Playwright | None = None
    browser: Browser | None = None


def _browser() -> Browser:
    executable = require_chromium()
    if _Shared.browser is not None and _Shared.browser.is_connected():
        return _Shared.browser
    close_browser()
    from playwright.sync_api import Error, sync_playwright

    try:
        _Shared.playwright = sync_playwright().start()
        # A plain launch runs Chromium on a fresh temporary profile that Playwright deletes
        # when the browser closes.
        _Shared.browser = _Shared.playwright.chromium.launch(
            executable_path=executable,
            headless=True,
            args=list(CHROMIUM_ARGS),
            # Naming the loopback hosts in the bypass list keeps Playwright from proxying them.
            proxy={"server": _DEAD_PROXY, "bypass": "localhost,127.0.0.1,[::1]"},
            timeout=LAUNCH_TIMEOUT_MS,
        )
    except Error as exc:
        close_browser()
        _unavailable(f"{executable} did not start ({str(exc).splitlines()[0]})")
    assert _Shared.browser is not None
    return _Shared.browser


def close_browser() -> None:
    """Close the shared browser and stop the driver (no Chromium process is left behind)."""
    browser, driver = _Shared.browser, _Shared.playwright
    _Shared.browser = _Shared.playwright = None
    if browser is not None:
        with contextlib.suppress(Exception):
            browser.close()
    if driver is not None:
        with contextlib.suppress(Exception):
            driver.stop()


atexit.register(close_browser)


class Watched:
    """A page with everything it did recorded.

    Attributes:
        page: the Playwright page.
        console_errors: console messages of type error, and uncaught exceptions ("pageerror").
        requests: every URL the page requested, in order (including aborted ones).
        blocked: the URLs that were not local and were therefore aborted.
        websockets: every WebSocket URL the page tried to open.
    """

    def __init__(self, name: str, page: Page) -> None:
        self.name = name
        self.page = page
        self.console_errors: list[str] = []
        self.requests: list[str] = []
        self.blocked: list[str] = []
        self.websockets: list[str] = []

    def _block(self, url: str) -> None:
        if url not in self.blocked:
            self.blocked.append(url)

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            location = message.location or {}
            where = location.get("url") or ""
            self.console_errors.append(f"{message.text}" + (f" (at {where})" if where else ""))

    def _on_page_error(self, error: Exception) -> None:
        self.console_errors.append(f"uncaught: {error}")

    def _on_request(self, request: Request) -> None:
        self.requests.append(request.url)
        if not is_local_url(request.url):
            self._block(request.url)  # a belt to the router's braces

    def _on_websocket(self, socket: WebSocket) -> None:
        if socket.url not in self.websockets:
            self.websockets.append(socket.url)
        if not is_local_url(socket.url):
            self._block(socket.url)

    def _route(self, route: Route) -> None:
        url = route.request.url
        if is_local_url(url):
            route.fallback()
        else:
            self._block(url)
            route.abort("blockedbyclient")

    def _route_websocket(self, socket: WebSocketRoute) -> None:
        if socket.url not in self.websockets:
            self.websockets.append(socket.url)
        if is_local_url(socket.url):
            socket.connect_to_server()
        else:
            self._block(socket.url)
            socket.close(code=1008, reason="blocked by the test harness")

    def screenshot(self, suffix: str = "") -> Path:
        """Save a full-page PNG as ``ARTIFACTS/<name><suffix>.png`` and return its path."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{self.name}{suffix}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def assert_clean(self) -> None:
        """Fail unless the page logged no console error and requested nothing non-local."""
        problems = []
        if self.console_errors:
            problems.append("console errors:\n  " + "\n  ".join(self.console_errors))
        if self.blocked:
            problems.append(
                "requests to non-loopback addresses (aborted):\n  " + "\n  ".join(self.blocked)
            )
        assert not problems, f"page {self.name!r} ({self.page.url}) is not clean:\n" + "\n".join(
            problems
        )


@contextlib.contextmanager
def browser_page(
    name: str,
    *,
    viewport: tuple[int, int] = (1280, 900),
    downloads: bool = False,
    mobile: bool = False,
) -> Iterator[Watched]:
    """A fresh context and page in the shared headless Chromium, watched and fenced.

    Args:
        name: names the screenshots (``ARTIFACTS/<name><suffix>.png``).
        viewport: (width, height) in CSS pixels.
        downloads: accept downloads in this context.
        mobile: emulate a phone (meta viewport honoured, touch events).
    """
    browser = _browser()
    width, height = viewport
    options: dict[str, Any] = {
        "viewport": {"width": width, "height": height},
        "accept_downloads": downloads,
        "service_workers": "block",
    }
    if mobile:
        options.update(is_mobile=True, has_touch=True, device_scale_factor=2)
    context = browser.new_context(**options)
    try:
        context.set_default_timeout(PAGE_TIMEOUT_MS)
        page = context.new_page()
        watched = Watched(name, page)
        context.route("**/*", watched._route)
        context.route_web_socket(re.compile(r".*"), watched._route_websocket)
        context.on("request", watched._on_request)
        page.on("console", watched._on_console)
        page.on("pageerror", watched._on_page_error)
        page.on("websocket", watched._on_websocket)
        yield watched
    finally:
        with contextlib.suppress(Exception):
            context.close()


# -- what both pages share -----------------------------------------------------------------------
SIZES: dict[str, dict[str, Any]] = {
    "desktop": {"viewport": (1280, 900)},
    "phone": {"viewport": (390, 844), "mobile": True},
}
"""The screens a page is checked on (``browser_page`` keyword arguments)."""

CHARTS = ("days", "events", "latency", "usage")
"""The ``data-chart`` names of the report's four charts."""

# One chart's facts: how many figures, the svg's box, and how many bars are drawn visibly.
_CHART_FACTS = """(name) => {
  const figures = document.querySelectorAll(`figure[data-chart="${name}"]`);
  const svg = figures.length ? figures[0].querySelector("svg") : null;
  const box = svg ? svg.getBoundingClientRect() : null;
  const bars = svg ? [...svg.querySelectorAll("rect")] : [];
  const visible = bars.filter((bar) => {
    const b = bar.getBoundingClientRect();
    const style = getComputedStyle(bar);
    return b.width > 0 && b.height > 0 && style.visibility !== "hidden"
      && style.display !== "none";
  });
  return {
    figures: figures.length,
    svg: box ? [box.width, box.height] : null,
    visible: visible.length,
  };
}"""


def assert_charts_drawn(page: Page) -> None:
    """Each of the four charts is there once, with data: an svg with a non-empty box and at
    least one bar drawn with an area; no chart says it has no data."""
    assert page.locator('figure[data-empty="true"]').count() == 0
    for name in CHARTS:
        facts = page.evaluate(_CHART_FACTS, name)
        assert facts["figures"] == 1, (name, facts)
        assert facts["svg"] is not None, (name, facts)
        assert min(facts["svg"]) > 0, (name, facts)
        assert facts["visible"] >= 1, (name, facts)


def assert_fits(page: Page, size: str) -> None:
    """On the phone the page is device-wide (390) and never scrolls sideways."""
    if size == "phone":
        width = page.evaluate("window.innerWidth")
        scroll_width = page.evaluate("document.documentElement.scrollWidth")
        assert width == 390, width
        assert scroll_width <= width, f"the page scrolls sideways: {scroll_width} > {width}"
