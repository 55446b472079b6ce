"""Process exit is never held up beyond the configured bound, whatever the host does.

Each test runs a real child interpreter that enables telemetry against the loopback
receiver, queues 1,000 events, and returns from its main code; the parent measures how long
the child takes from there to being gone.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.helpers import SLACK_S
from tests.receiver import FLAGS, PostHogReceiver, refusing_url

ROOT = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent(
    """
    import sys, time
    from codeweaver_telemetry import get_telemetry_client

    client = get_telemetry_client()
    assert client.enabled, client.decision
    client.start_session({"v": 1})
    for i in range(1000):
        client.capture("pending", {"i": i})
    client.get_feature_flag("x")
    print(f"MAIN_DONE {time.time()}", flush=True)
    """
)

# A child interpreter's start and teardown, on top of the shared timing slack: not
# telemetry work.
TEARDOWN_S = 1.0


END_SESSION_CHILD = textwrap.dedent(
    """
    import time
    from codeweaver_telemetry import get_telemetry_client

    client = get_telemetry_client()
    assert client.enabled, client.decision
    client.start_session({"v": 1})
    client.capture("work", {})
    started = time.monotonic()
    client.end_session()
    print(f"END_SESSION {time.monotonic() - started}", flush=True)
    print(f"MAIN_DONE {time.time()}", flush=True)
    """
)


def run_child(
    url: str, home: Path, exit_timeout: float, code: str = CHILD, said: list[str] | None = None
) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODEWEAVER") and k != "CI"}
    env.update(
        {
            "CODEWEAVER_HOME": str(home),
            "CODEWEAVER__TELEMETRY__ENABLED": "1",
            "CODEWEAVER__TELEMETRY__POSTHOG_API_KEY": "phc_exit_test",
            "CODEWEAVER__TELEMETRY__POSTHOG_HOST": url,
            "CODEWEAVER__TELEMETRY__EXIT_TIMEOUT_SECONDS": str(exit_timeout),
            "CODEWEAVER__TELEMETRY__REQUEST_TIMEOUT_SECONDS": "10",
            "CODEWEAVER__TELEMETRY__FLAG_TIMEOUT_SECONDS": "0.2",
            "PYTHONPATH": str(ROOT),
        }
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=home.parent,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    while line and not line.startswith("MAIN_DONE"):
        if said is not None:
            said.append(line)
        line = proc.stdout.readline()
    assert line.startswith("MAIN_DONE"), proc.communicate(timeout=30)
    main_done = float(line.split()[1])
    proc.wait(timeout=60)
    gone = time.time()
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    return gone - main_done


@pytest.mark.parametrize("fault", ["hang", "refuse", "status500", "status429", "slow"])
def test_exit_is_bounded_whatever_the_host_does(
    receiver: PostHogReceiver, tmp_path: Path, fault: str
) -> None:
    """With 1,000 events pending, the child exits within exit_timeout_seconds (+ teardown)."""
    url = receiver.url
    if fault == "hang":
        receiver.hang()
    elif fault == "status500":
        receiver.status(500)
    elif fault == "status429":
        receiver.status(429, retry_after=30)
    elif fault == "slow":
        receiver.slow(5.0)
    if fault == "refuse":
        with refusing_url() as refused:
            took = run_child(refused, tmp_path / "home", exit_timeout=0.5)
    else:
        took = run_child(url, tmp_path / "home", exit_timeout=0.5)
    assert took < 0.5 + TEARDOWN_S + SLACK_S, f"exit took {took:.2f}s with the host doing {fault!r}"


def test_end_session_never_waits_on_a_hanging_host(
    receiver: PostHogReceiver, tmp_path: Path
) -> None:
    """end_session() queues the session event and returns: on a hanging host it does not
    wait out the exit bound, and the process then exits within that one bound."""
    receiver.hang()
    said: list[str] = []
    took = run_child(receiver.url, tmp_path / "home", 2.0, END_SESSION_CHILD, said)
    end_session_s = float(said[0].split()[1])
    assert end_session_s < 0.5, f"end_session() blocked for {end_session_s:.2f}s"
    assert took < 2.0 + TEARDOWN_S + SLACK_S, f"exit took {took:.2f}s after end_session()"


def test_healthy_host_gets_everything_at_exit(receiver: PostHogReceiver, tmp_path: Path) -> None:
    """With a healthy host, the exit flush delivers every pending event and the session."""
    run_child(receiver.url, tmp_path / "home", exit_timeout=5)
    events = receiver.wait_for_events(1001, timeout=10)
    assert len([e for e in events if e["event"] == "pending"]) == 1000
    assert [e["event"] for e in events].count("codeweaver_session") == 1


def test_hanging_flags_do_not_delay_exit(receiver: PostHogReceiver, tmp_path: Path) -> None:
    """A /flags/ request that never answers does not keep the process alive."""
    receiver.hang(route=FLAGS)
    took = run_child(receiver.url, tmp_path / "home", exit_timeout=0.5)
    assert took < 0.5 + TEARDOWN_S + SLACK_S


def _child_captures(url: str) -> None:
    from codeweaver_telemetry import get_telemetry_client

    client = get_telemetry_client()
    client.capture("from_child", {"n": 1})  # no flush: the process's own exit must send it


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_multiprocessing_children_deliver_their_events(
    receiver: PostHogReceiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    """A multiprocessing child that exits without flush() still delivers its events."""
    import multiprocessing

    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {method} start method here")
    monkeypatch.setenv("CODEWEAVER__TELEMETRY__ENABLED", "1")
    monkeypatch.setenv("CODEWEAVER__TELEMETRY__POSTHOG_API_KEY", "phc_mp")
    monkeypatch.setenv("CODEWEAVER__TELEMETRY__POSTHOG_HOST", receiver.url)
    monkeypatch.setenv("CODEWEAVER__TELEMETRY__EXIT_TIMEOUT_SECONDS", "5")
    ctx = multiprocessing.get_context(method)
    procs = [ctx.Process(target=_child_captures, args=(receiver.url,)) for _ in range(3)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(30)
        assert proc.exitcode == 0
    events = receiver.wait_for_events(3, timeout=10)
    assert [e["event"] for e in events] == ["from_child"] * 3
