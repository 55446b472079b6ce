"""The web API and `codeweaver-telemetry serve`, over real HTTP on 127.0.0.1: every route
against a temporary state directory, the CLI's consent rules, the token, Host and Origin
checks, paging, export, delete, and that no request sends anything or shows a secret."""

from __future__ import annotations

import http.client
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from codeweaver_telemetry import TelemetryClient
from codeweaver_telemetry.cli import EXIT_OK, main
from codeweaver_telemetry.web import PAGE_LIMIT_MAX, TOKEN_HEADER, Dashboard, start_dashboard
from tests.receiver import PostHogReceiver

PREFIX = "CODEWEAVER__TELEMETRY__"
API_KEY = "phc_webTestKey0123456789abcdef"


def cli_json(*argv: str) -> dict[str, Any]:
    out = io.StringIO()
    assert main([*argv, "--json"], out=out) == EXIT_OK
    return json.loads(out.getvalue())


class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    port: int,
    method: str,
    path: str,
    *,
    token: str | None = None,
    host: str | None = None,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    """One request to 127.0.0.1:port with exactly these headers (Host included)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    sent = {"Host": host or f"127.0.0.1:{port}"}
    if token is not None:
        sent[TOKEN_HEADER] = token
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        sent.setdefault("Content-Type", "application/json")
        sent["Content-Length"] = str(len(data))
    sent.update(headers or {})
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for name, value in sent.items():
            conn.putheader(name, value)
        conn.endheaders(data)
        response = conn.getresponse()
        return Answer(response.status, dict(response.getheaders()), response.read())
    finally:
        conn.close()


@pytest.fixture
def dashboard(clean_env: Path) -> Iterator[Dashboard]:
    served = start_dashboard()
    yield served
    served.stop()


def api(d: Dashboard, method: str, path: str, **kwargs: Any) -> Answer:
    return call(d.port, method, "/api" + path, token=d.token, **kwargs)


def make_log(make_client: Callable[..., TelemetryClient], count: int) -> None:
    client = make_client()
    for n in range(count):
        client.capture("custom_step", {"n": n})
    assert client.flush(10)
    client.shutdown(timeout=5)


def log_payloads(home: Path) -> list[dict[str, Any]]:
    payloads = []
    for line in (home / "telemetry" / "events.jsonl").read_text(encoding="utf-8").splitlines():
        payload = json.loads(line)
        payload.pop("seq", None)
        payload.pop("prev", None)
        payloads.append(payload)
    return payloads


# -- the guard ------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/", "/api/status", "/api/export", "/api/payloads"])
def test_every_request_needs_the_token(dashboard: Dashboard, path: str) -> None:
    assert call(dashboard.port, "GET", path).status == 401
    assert call(dashboard.port, "GET", path, token="x" * 43).status == 401
    assert call(dashboard.port, "GET", f"{path}?token=wrong").status == 401
    assert call(dashboard.port, "GET", path, token=dashboard.token).status == 200
    assert call(dashboard.port, "GET", f"{path}?token={dashboard.token}").status == 200


def test_a_state_change_without_the_token_changes_nothing(dashboard: Dashboard) -> None:
    answer = call(dashboard.port, "POST", "/api/consent", body={"enabled": False})
    assert answer.status == 401
    assert answer.json()["ok"] is False
    assert not (dashboard_state_file()).exists()


def dashboard_state_file() -> Path:
    return Path(os.environ["CODEWEAVER_HOME"]) / "telemetry" / "state.json"


@pytest.mark.parametrize(
    "host",
    ["evil.example", "evil.example:80", "127.0.0.1", "127.0.0.1:1", "localhost.evil.example"],
)
def test_a_wrong_host_is_refused_even_with_the_token(dashboard: Dashboard, host: str) -> None:
    """A site that rebinds its own name to 127.0.0.1 still sends its name as Host."""
    answer = call(dashboard.port, "GET", "/api/status", token=dashboard.token, host=host)
    assert answer.status == 403
    assert "Host" in answer.json()["error"]


def test_localhost_with_the_port_is_the_same_server(dashboard: Dashboard) -> None:
    host = f"localhost:{dashboard.port}"
    assert (
        call(dashboard.port, "GET", "/api/status", token=dashboard.token, host=host).status == 200
    )


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://127.0.0.1:1"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ],
)
def test_another_origin_is_refused(dashboard: Dashboard, headers: dict[str, str]) -> None:
    for method, path, body in (
        ("GET", "/status", None),
        ("GET", "/export", None),
        ("POST", "/consent", {"enabled": False}),
        ("POST", "/delete", {"confirm": True}),
    ):
        answer = api(dashboard, method, path, body=body, headers=headers)
        assert answer.status == 403, (method, path)
    assert not dashboard_state_file().exists()


def test_the_own_origin_is_accepted(dashboard: Dashboard) -> None:
    origin = {"Origin": f"http://127.0.0.1:{dashboard.port}", "Sec-Fetch-Site": "same-origin"}
    answer = api(dashboard, "POST", "/consent", body={"enabled": False}, headers=origin)
    assert answer.status == 200
    assert answer.json()["recorded"] == "disabled"


# -- consent --------------------------------------------------------------------------------------
def test_consent_changes_the_state_file_and_status(dashboard: Dashboard) -> None:
    answer = api(dashboard, "POST", "/consent", body={"enabled": True})
    assert answer.status == 200
    doc = answer.json()
    assert (doc["command"], doc["ok"], doc["recorded"], doc["enabled"]) == (
        "enable", True, "enabled", True,
    )  # fmt: skip
    assert json.loads(dashboard_state_file().read_text())["consent"] == "enabled"
    assert cli_json("status")["enabled"] is True
    assert api(dashboard, "GET", "/status").json()["enabled"] is True

    doc = api(dashboard, "POST", "/consent", body={"enabled": False}).json()
    assert (doc["recorded"], doc["enabled"]) == ("disabled", False)
    assert json.loads(dashboard_state_file().read_text())["consent"] == "disabled"
    status = cli_json("status")
    assert status["enabled"] is False
    assert status["install_id"] is None


def test_an_off_source_still_wins_and_the_answer_says_so(
    dashboard: Dashboard, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DO_NOT_TRACK", "1")
    doc = api(dashboard, "POST", "/consent", body={"enabled": True}).json()
    assert doc["ok"] is True
    assert doc["recorded"] == "enabled"
    assert doc["enabled"] is False
    assert "DO_NOT_TRACK" in doc["source"] + doc["reason"]
    cli = cli_json("status")
    assert (cli["enabled"], cli["source"]) == (False, doc["source"])
    assert api(dashboard, "GET", "/status").json() == {**cli, "command": "status"}


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        ({"enabled": "yes"}, "application/json", 400),
        ({}, "application/json", 400),
        ([True], "application/json", 400),
        (b"enabled=true", "application/x-www-form-urlencoded", 415),
        (b'{"enabled": true}', "text/plain", 415),
        (b"{not json", "application/json", 400),
    ],
)
def test_a_bad_consent_request_changes_nothing(
    dashboard: Dashboard, body: Any, content_type: str, status: int
) -> None:
    answer = api(dashboard, "POST", "/consent", body=body, headers={"Content-Type": content_type})
    assert answer.status == status
    assert answer.json()["ok"] is False
    assert not dashboard_state_file().exists()


def test_an_oversized_or_nested_body_is_refused(dashboard: Dashboard) -> None:
    """A body past 16 KiB is 413 and a JSON nesting past the parser's depth is 400; neither
    changes anything nor breaks the server."""
    big = b'{"enabled": false, "pad": "' + b"x" * (17 * 1024) + b'"}'
    assert api(dashboard, "POST", "/consent", body=big).status == 413
    deep = b"[" * 8_000 + b"]" * 8_000  # under the size bound, past the parser's depth
    answer = api(dashboard, "POST", "/consent", body=deep)
    assert answer.status == 400
    assert answer.json()["ok"] is False
    assert not dashboard_state_file().exists()
    assert api(dashboard, "GET", "/status").status == 200


def test_the_token_stays_out_of_repr(dashboard: Dashboard) -> None:
    """An app that logs the object does not log the token."""
    assert dashboard.token not in repr(dashboard)
    assert str(dashboard.port) in repr(dashboard)


def test_sec_fetch_site_is_read_whatever_its_case(dashboard: Dashboard) -> None:
    for value in ("Cross-Site", "SAME-SITE"):
        headers = {"Sec-Fetch-Site": value}
        assert api(dashboard, "GET", "/status", headers=headers).status == 403


def test_get_does_not_change_consent(dashboard: Dashboard) -> None:
    assert api(dashboard, "GET", "/consent").status == 405
    assert api(dashboard, "GET", "/delete").status == 405


# -- reading --------------------------------------------------------------------------------------
def test_status_report_flags_and_schema_are_the_cli_documents(
    dashboard: Dashboard, clean_env: Path, make_client: Callable[..., TelemetryClient]
) -> None:
    make_log(make_client, 3)
    for route, command in (
        ("/status", ["status"]),
        ("/report", ["report"]),
        ("/report?since=2000-01-01&until=2999-01-01T00:00Z", ["report", "--since", "2000-01-01",
                                                             "--until", "2999-01-01T00:00Z"]),
        ("/flags", ["flags"]),
        ("/schema", ["schema"]),
    ):  # fmt: skip
        answer = api(dashboard, "GET", route)
        assert answer.status == 200, route
        assert answer.headers["cache-control"] == "no-store"
        assert answer.json() == cli_json(*command), route
    assert api(dashboard, "GET", "/report").json()["payloads"] == 3


def test_a_bad_report_range_is_a_bad_request(dashboard: Dashboard) -> None:
    answer = api(dashboard, "GET", "/report?since=yesterday")
    assert answer.status == 400
    assert "since" in answer.json()["error"]


def test_payloads_come_newest_first_in_pages(
    dashboard: Dashboard, clean_env: Path, make_client: Callable[..., TelemetryClient]
) -> None:
    make_log(make_client, 7)
    logged = log_payloads(clean_env)
    newest_first = list(reversed(logged))
    seen: list[dict[str, Any]] = []
    for offset in (0, 3, 6):
        page = api(dashboard, "GET", f"/payloads?offset={offset}&limit=3").json()
        assert (page["total"], page["offset"], page["limit"], page["pages"]) == (
            len(logged), offset, 3, 3,
        )  # fmt: skip
        seen += page["payloads"]
    assert seen == newest_first
    assert api(dashboard, "GET", "/payloads?offset=7").json()["payloads"] == []
    default = api(dashboard, "GET", "/payloads").json()
    assert (default["limit"], default["payloads"]) == (50, newest_first)


@pytest.mark.parametrize(
    "query", ["limit=0", f"limit={PAGE_LIMIT_MAX + 1}", "offset=-1", "limit=ten", "offset=1e3"]
)
def test_bad_paging_is_a_bad_request(dashboard: Dashboard, query: str) -> None:
    answer = api(dashboard, "GET", f"/payloads?{query}")
    assert answer.status == 400
    assert answer.json()["ok"] is False


def test_export_downloads_the_state_without_the_hash_key_and_the_log(
    dashboard: Dashboard, clean_env: Path, make_client: Callable[..., TelemetryClient]
) -> None:
    make_log(make_client, 2)
    answer = api(dashboard, "GET", "/export")
    assert answer.status == 200
    assert answer.headers["content-disposition"] == (
        'attachment; filename="codeweaver-telemetry-export.json"'
    )
    doc = answer.json()
    assert doc["events"] == log_payloads(clean_env)
    assert isinstance(doc["state"], dict)
    assert "hash_key" not in doc["state"]
    assert doc["state"]["install_id"]


def test_delete_needs_confirmation_then_removes_the_files(
    dashboard: Dashboard, clean_env: Path, make_client: Callable[..., TelemetryClient]
) -> None:
    make_log(make_client, 2)
    state_dir = clean_env / "telemetry"
    install_id = json.loads((state_dir / "state.json").read_text())["install_id"]
    for body in ({}, {"confirm": "yes"}, {"confirm": 1}):
        assert api(dashboard, "POST", "/delete", body=body).status == 400
    assert (state_dir / "events.jsonl").exists()
    doc = api(dashboard, "POST", "/delete", body={"confirm": True}).json()
    assert doc["ok"] is True
    assert doc["install_id"] == install_id
    assert str(state_dir / "events.jsonl") in doc["deleted"]
    assert not state_dir.exists()
    assert api(dashboard, "GET", "/payloads").json()["total"] == 0


def test_the_dashboard_page_is_locked_down(dashboard: Dashboard) -> None:
    answer = call(dashboard.port, "GET", f"/?token={dashboard.token}")
    assert answer.status == 200
    assert answer.headers["content-type"].startswith("text/html")
    csp = answer.headers["content-security-policy"]
    assert "default-src 'none'" in csp
    assert "script-src 'nonce-" in csp
    assert "connect-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert answer.headers["referrer-policy"] == "no-referrer"
    assert answer.headers["cache-control"] == "no-store"
    page = answer.body.decode()
    assert "Telemetry dashboard" in page
    assert "http://" not in page.replace(f"http://127.0.0.1:{dashboard.port}", "")
    assert "https://" not in page


# -- mounted in an app ----------------------------------------------------------------------------
def test_the_router_mounts_in_a_starlette_app(clean_env: Path) -> None:
    import socket
    import threading
    import time

    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route

    from codeweaver_telemetry.web import telemetry_router

    app = Starlette(
        routes=[
            Route("/", lambda request: PlainTextResponse("the app")),
            Mount("/settings/telemetry", app=telemetry_router()),
        ]
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        status = call(port, "GET", "/settings/telemetry/status")
        assert status.status == 200
        assert status.json() == {**cli_json("status"), "command": "status"}
        refused = call(
            port,
            "POST",
            "/settings/telemetry/consent",
            body={"enabled": False},
            headers={"Origin": "http://evil.example"},
        )
        assert refused.status == 403
        assert not dashboard_state_file().exists()
        same = call(
            port,
            "POST",
            "/settings/telemetry/consent",
            body={"enabled": False},
            headers={"Origin": f"http://127.0.0.1:{port}"},
        )
        assert same.status == 200
        assert dashboard_state_file().exists()
    finally:
        server.should_exit = True
        thread.join(10)


# -- nothing sent, nothing secret -----------------------------------------------------------------
_EVERY_ROUTE = textwrap.dedent(
    """
    import json, sys, urllib.request
    from codeweaver_telemetry.web import start_dashboard
    d = start_dashboard()
    bodies = []
    def go(method, path, body=None):
        request = urllib.request.Request(
            f"http://127.0.0.1:{d.port}{path}", method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"X-Telemetry-Token": d.token, "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as r:
            bodies.append(r.read().decode())
    for path in ("/", "/api/status", "/api/report", "/api/payloads", "/api/export",
                 "/api/flags", "/api/schema"):
        go("GET", path)
    go("POST", "/api/consent", {"enabled": True})
    go("GET", "/api/status")
    go("POST", "/api/consent", {"enabled": True})
    d.stop()
    print(json.dumps({"posthog": "posthog" in sys.modules, "bodies": bodies}))
    """
)


def test_no_request_sends_anything_or_shows_a_key(
    clean_env: Path,
    receiver: PostHogReceiver,
    make_client: Callable[..., TelemetryClient],
) -> None:
    """With a PostHog key and host set and telemetry on, every route (consent included)
    sends nothing, imports no posthog, and never shows the API key or the HASH key."""
    client = make_client(posthog_api_key=API_KEY, posthog_host=receiver.url)
    client.capture("custom_step", {"n": 1})
    assert client.flush(10)
    client.shutdown(timeout=5)
    hash_key = json.loads((clean_env / "telemetry" / "state.json").read_text())["hash_key"]
    assert hash_key
    before = len(receiver.requests())
    env = {
        **os.environ,
        PREFIX + "POSTHOG_API_KEY": API_KEY,
        PREFIX + "POSTHOG_HOST": receiver.url,
        PREFIX + "ENABLED": "true",
    }
    done = subprocess.run(
        [sys.executable, "-c", _EVERY_ROUTE],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["posthog"] is False
    assert len(result["bodies"]) == 10
    for body in result["bodies"]:
        assert API_KEY not in body
        assert hash_key not in body
    assert len(receiver.requests()) == before


# -- the command ----------------------------------------------------------------------------------
def test_serve_prints_its_url_serves_and_stops_on_ctrl_c(clean_env: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "codeweaver_telemetry", "serve", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = []
        while not lines or lines[-1] != "}\n":
            line = process.stdout.readline()
            assert line, process.stderr.read() if process.stderr else ""
            lines.append(line)
        doc = json.loads("".join(lines))
        assert (doc["command"], doc["ok"]) == ("serve", True)
        url, port = doc["url"], doc["port"]
        assert url.startswith(f"http://127.0.0.1:{port}/?token=")
        token = url.split("token=", 1)[1]
        assert len(token) >= 40
        assert call(port, "GET", "/").status == 401
        assert call(port, "GET", f"/?token={token}").status == 200
        assert call(port, "GET", "/api/status", token=token).json()["command"] == "status"
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=15) == EXIT_OK
        stderr = process.stderr.read() if process.stderr else ""
        assert token not in stderr  # no access log with the token in it
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_serve_without_the_web_extra_says_how_to_get_it(clean_env: Path) -> None:
    script = (
        "import sys; sys.modules['starlette'] = None; sys.modules['uvicorn'] = None\n"
        "from codeweaver_telemetry.cli import main; sys.exit(main(['serve']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1
    assert "pip install 'codeweaver-telemetry[web]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_core_library_never_imports_the_web_extra(clean_env: Path) -> None:
    script = (
        "import sys, codeweaver_telemetry\n"
        "from codeweaver_telemetry import get_telemetry_client\n"
        "from codeweaver_telemetry.cli import main\n"
        "print(sorted(m for m in ('starlette', 'uvicorn', 'codeweaver_telemetry.web')"
        " if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"
