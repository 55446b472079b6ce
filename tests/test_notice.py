"""The opt-out notice: shown once per version, and by the built-in shower on a terminal only.

The run that shows a notice (the first, or the first at a higher version) sends nothing; a
first notice writes no install id. ``terminal_notice`` writes to standard error only when it
is a TTY: in a non-interactive run it writes nothing, the notice counts as not shown, and
telemetry stays off.
"""

from __future__ import annotations

import io
import json
import logging
import os
import select
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import codeweaver_telemetry
from codeweaver_telemetry import InMemorySink, TelemetryClient, get_telemetry_client
from codeweaver_telemetry.consent import (
    NOTICE,
    NOTICE_UPDATED,
    NoticeNotShown,
    terminal_notice,
)
from codeweaver_telemetry.settings import TelemetrySettings, load_settings
from codeweaver_telemetry.state import StateStore
from tests.receiver import PostHogReceiver

PREFIX = "CODEWEAVER__TELEMETRY__"
REPO_ROOT = Path(codeweaver_telemetry.__file__).resolve().parent.parent

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Opt-out policy, with the state in a directory of the test's own."""
    directory = tmp_path / "state"
    monkeypatch.setenv(PREFIX + "CONSENT_POLICY", "opt-out")
    monkeypatch.setenv(PREFIX + "STATE_DIR", str(directory))
    return directory


def _settings() -> TelemetrySettings:
    settings, error = load_settings(batch_interval_seconds=0.05)
    assert error is None, error
    return settings


def _run(
    build: Callable[..., TelemetryClient], notices: list[str], version: int
) -> tuple[TelemetryClient, list[dict[str, Any]]]:
    """One run of an app at notice ``version``: capture, flush, shut down; what was sent."""
    sink = InMemorySink()
    client = build(_settings(), sink=sink, on_notice=notices.append, notice_version=version)
    client.capture("ping")
    client.flush(2.0)
    client.shutdown(timeout=0.5)
    return client, sink.events()


# -- once per version ---------------------------------------------------------------------------


def test_the_notice_is_shown_once_per_version(
    build: Callable[..., TelemetryClient], state_dir: Path
) -> None:
    """Version 1 is shown once (that run sends nothing, writes no id); raising the version
    shows the updated notice once (that run sends nothing, the id is kept); a run at the
    same or a lower version shows nothing and sends."""
    store = StateStore(state_dir)
    notices: list[str] = []

    first, sent = _run(build, notices, 1)
    assert (first.decision.allowed, sent, notices) == (False, [], [NOTICE])
    assert store.read().install_id is None
    assert store.read().notice_version == 1

    second, sent = _run(build, notices, 1)
    assert second.decision.allowed
    assert [e["event"] for e in sent] == ["ping"]
    assert notices == [NOTICE]
    install_id = store.read().install_id
    assert install_id

    third, sent = _run(build, notices, 2)
    assert (third.decision.allowed, third.decision.source) == (False, "policy")
    assert "shown this run" in third.decision.reason
    assert sent == []
    assert notices == [NOTICE, NOTICE_UPDATED]
    assert (store.read().notice_version, store.read().install_id) == (2, install_id)

    for version in (2, 1):
        later, sent = _run(build, notices, version)
        assert later.decision.allowed
        assert [e["event"] for e in sent] == ["ping"]
        assert sent[0]["distinct_id"] == install_id
    assert notices == [NOTICE, NOTICE_UPDATED]


def test_a_first_run_at_a_higher_version_is_a_first_run(
    build: Callable[..., TelemetryClient], state_dir: Path
) -> None:
    """An app whose notice is at version 3 from the start: the plain notice, once; that run
    sends nothing and writes no id, the next is on."""
    notices: list[str] = []
    first, sent = _run(build, notices, 3)
    assert (first.decision.allowed, sent, notices) == (False, [], [NOTICE])
    assert StateStore(state_dir).read().install_id is None
    second, sent = _run(build, notices, 3)
    assert second.decision.allowed
    assert len(sent) == 1
    assert notices == [NOTICE]


def _write_old_state(state_dir: Path) -> str:
    """A state file as written before notices had versions; returns its install id."""
    install_id = str(uuid.uuid4())
    state_dir.mkdir(parents=True)
    old = {
        "version": 1,
        "consent": None,
        "consent_at": None,
        "consent_by": None,
        "notice_shown_at": "2024-05-01T10:00:00+00:00",
        "install_id": install_id,
        "hash_key": "cd" * 32,
    }
    (state_dir / "state.json").write_text(json.dumps(old), encoding="utf-8")
    return install_id


def test_an_old_state_file_counts_as_version_1(
    build: Callable[..., TelemetryClient], state_dir: Path
) -> None:
    """A state file that recorded only that the notice was shown: an app at version 1 is on
    and shows nothing; an app at version 2 shows the updated notice and sends nothing."""
    install_id = _write_old_state(state_dir)
    notices: list[str] = []
    on, sent = _run(build, notices, 1)
    assert on.decision.allowed
    assert [e["distinct_id"] for e in sent] == [install_id]
    assert notices == []

    shown, sent = _run(build, notices, 2)
    assert (shown.decision.allowed, sent, notices) == (False, [], [NOTICE_UPDATED])
    assert StateStore(state_dir).read().notice_version == 2


def test_get_telemetry_client_takes_the_notice_version(state_dir: Path) -> None:
    """``get_telemetry_client(notice_version=2)`` over a version-1 state: the notice is shown,
    and the process-wide client sends nothing in that run."""
    _write_old_state(state_dir)
    notices: list[str] = []
    client = get_telemetry_client(on_notice=notices.append, notice_version=2)
    assert notices == [NOTICE_UPDATED]
    assert not client.enabled
    assert client.capture("ping") is None
    assert not (state_dir / "events.jsonl").exists()
    assert get_telemetry_client(on_notice=notices.append, notice_version=3) is client
    assert notices == [NOTICE_UPDATED]


@pytest.mark.parametrize("version", [0, -1, True])
def test_a_bad_notice_version_is_a_configuration_error(
    build: Callable[..., TelemetryClient],
    state_dir: Path,
    caplog: pytest.LogCaptureFixture,
    version: Any,
) -> None:
    """A notice version that is not a whole number from 1: off (source ``config_error``),
    one warning naming ``notice_version``, nothing shown or written. It never raises."""
    caplog.set_level(logging.WARNING, logger="codeweaver_telemetry")
    notices: list[str] = []
    client = build(
        _settings(), sink=InMemorySink(), on_notice=notices.append, notice_version=version
    )
    assert (client.decision.allowed, client.decision.source) == (False, "config_error")
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "notice_version" in warnings[0]
    assert notices == []
    assert not (state_dir / "state.json").exists()


# -- the built-in shower: a terminal only -------------------------------------------------------


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class _BrokenTerminal(_Terminal):
    def write(self, text: str) -> int:
        raise OSError(5, "Input/output error")


class _ClosedStream(io.StringIO):
    def isatty(self) -> bool:
        raise ValueError("I/O operation on closed file")


def test_terminal_notice_writes_to_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a TTY, the notice goes to standard error, on a line of its own."""
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    terminal_notice(NOTICE)
    assert terminal.getvalue() == NOTICE + "\n"


@pytest.mark.parametrize(
    "stream",
    [io.StringIO(), _ClosedStream(), _BrokenTerminal(), None],
    ids=["not-a-tty", "closed", "write-fails", "no-stderr"],
)
def test_terminal_notice_anywhere_else_is_not_shown(
    monkeypatch: pytest.MonkeyPatch, stream: io.StringIO | None
) -> None:
    """Piped, closed, failing or absent standard error: NoticeNotShown, nothing written."""
    monkeypatch.setattr(sys, "stderr", stream)
    with pytest.raises(NoticeNotShown):
        terminal_notice(NOTICE)
    if stream is not None:
        assert stream.getvalue() == ""


def test_a_non_interactive_run_with_terminal_notice_stays_off(
    build: Callable[..., TelemetryClient],
    state_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """In-process, with standard error captured (not a TTY): nothing written, off, nothing
    sent, nothing recorded; the reason says standard error is not a terminal."""
    sink = InMemorySink()
    client = build(_settings(), sink=sink, on_notice=terminal_notice)
    client.capture("ping")
    client.flush(0.5)
    assert not client.enabled
    assert "standard error is not a terminal" in client.decision.reason
    assert sink.events() == []
    assert not (state_dir / "state.json").exists()
    assert capsys.readouterr() == ("", "")


def test_a_raised_version_in_a_non_interactive_run_stays_off(
    build: Callable[..., TelemetryClient], state_dir: Path
) -> None:
    """A user who saw version 1 and an app at version 2 in a non-interactive run: off,
    nothing sent, and version 2 is not recorded (it will be shown at a terminal)."""
    _write_old_state(state_dir)
    sink = InMemorySink()
    client = build(_settings(), sink=sink, on_notice=terminal_notice, notice_version=2)
    client.capture("ping")
    client.flush(0.5)
    assert not client.enabled
    assert sink.events() == []
    assert StateStore(state_dir).read().notice_version == 1


# -- the built-in shower in a real child process ------------------------------------------------

_APP = textwrap.dedent(
    """
    import json, sys
    from codeweaver_telemetry import InMemorySink, TelemetryClient
    from codeweaver_telemetry.consent import terminal_notice

    version, where = int(sys.argv[1]), sys.argv[2]
    sink = InMemorySink() if where == "memory" else None
    client = TelemetryClient(sink=sink, on_notice=terminal_notice, notice_version=version)
    uuid = client.capture("ping")
    distinct_id = client.distinct_id
    client.flush(3.0)
    client.shutdown(timeout=1.0)
    print(json.dumps({
        "allowed": client.decision.allowed,
        "reason": client.decision.reason,
        "captured": uuid,
        "distinct_id": distinct_id,
        "sent": len(sink.events()) if sink is not None else None,
    }))
    """
)


def _app_env(state_dir: Path, receiver: PostHogReceiver | None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    env[PREFIX + "BATCH_INTERVAL_SECONDS"] = "0.05"
    env[PREFIX + "EXIT_TIMEOUT_SECONDS"] = "1"
    if receiver is not None:
        env[PREFIX + "POSTHOG_API_KEY"] = "phc_notice_test"
        env[PREFIX + "POSTHOG_HOST"] = receiver.url
    return env


def _read_all(fd: int, deadline_s: float = 5.0) -> bytes:
    """What a child wrote to the terminal: read the master end until the slave is closed."""
    chunks: list[bytes] = []
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: every slave end is closed (Linux)
            break
        if not chunk:  # EOF (BSD, macOS)
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _run_on_terminal(version: int, where: str, env: dict[str, str]) -> tuple[dict[str, Any], str]:
    """Run the app with its standard error on a pseudo-terminal: (its report, what the
    terminal received)."""
    master, slave = os.openpty()
    try:
        child = subprocess.Popen(
            [sys.executable, "-c", _APP, str(version), where],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=slave,
        )
        os.close(slave)
        slave = -1
        output = _read_all(master, deadline_s=60.0)
        stdout, _ = child.communicate(timeout=60)
    finally:
        os.close(master)
        if slave != -1:
            os.close(slave)
    assert child.returncode == 0, output
    return json.loads(stdout.decode().strip().splitlines()[-1]), output.decode("utf-8", "replace")


def _run_piped(version: int, where: str, env: dict[str, str]) -> tuple[dict[str, Any], str]:
    """Run the app with standard error piped (a non-interactive run): (report, stderr)."""
    done = subprocess.run(
        [sys.executable, "-c", _APP, str(version), where],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def _words(text: str) -> str:
    return " ".join(text.split())  # the terminal turns "\n" into "\r\n"


@posix_only
def test_the_notice_appears_on_a_real_terminal_once_per_version(state_dir: Path) -> None:
    """With standard error on a pseudo-terminal, the notice appears there; that run sends
    nothing and writes no id. The next run at the same version writes nothing to the terminal
    and sends; at a raised version the updated notice appears and that run sends nothing."""
    env = _app_env(state_dir, None)
    report, terminal = _run_on_terminal(1, "memory", env)
    assert _words(NOTICE) in _words(terminal)
    assert (report["allowed"], report["captured"], report["sent"]) == (False, None, 0)
    assert report["distinct_id"] is None
    assert StateStore(state_dir).read().install_id is None

    report, terminal = _run_on_terminal(1, "memory", env)
    assert terminal == ""
    assert (report["allowed"], report["sent"]) == (True, 1)

    report, terminal = _run_on_terminal(2, "memory", env)
    assert _words(NOTICE_UPDATED) in _words(terminal)
    assert (report["allowed"], report["captured"], report["sent"]) == (False, None, 0)
    assert StateStore(state_dir).read().notice_version == 2


@posix_only
def test_a_piped_run_writes_nothing_and_sends_nothing(
    state_dir: Path, receiver: PostHogReceiver
) -> None:
    """With standard error piped, twice: nothing is written there, telemetry stays off,
    nothing reaches the (loopback) PostHog receiver, and no notice or id is recorded.
    Control: once a terminal has shown the notice, a piped run does send."""
    env = _app_env(state_dir, receiver)
    for _ in range(2):
        report, stderr = _run_piped(1, "posthog", env)
        assert stderr == ""
        assert (report["allowed"], report["captured"]) == (False, None)
        assert "standard error is not a terminal" in report["reason"]
    assert receiver.requests() == []
    assert not (state_dir / "state.json").exists()

    report, terminal = _run_on_terminal(1, "posthog", env)
    assert _words(NOTICE) in _words(terminal)
    assert report["allowed"] is False
    assert receiver.requests() == []

    report, stderr = _run_piped(1, "posthog", env)
    assert (report["allowed"], stderr) == (True, "")
    assert [e["distinct_id"] for e in receiver.events_named("ping")] == [report["distinct_id"]]
