"""Forked children send their own events, whenever they fork during the parent's start-up.

Each case runs a fresh interpreter (so the worker's imports really happen while it forks):
the parent starts telemetry against the loopback receiver, captures one event (its worker
thread starts and loads the privacy pipeline and posthog), forks after a chosen delay, and
the child captures and flushes its own events.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.receiver import PostHogReceiver

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

FORK_AT = textwrap.dedent(
    """
    import os, sys, time
    from codeweaver_telemetry import get_telemetry_client

    delay = float(sys.argv[1])
    client = get_telemetry_client()
    assert client.enabled, client.decision
    client.capture("parent", {"delay": delay})  # the worker thread starts its imports now
    time.sleep(delay)
    pid = os.fork()
    if pid == 0:
        for i in range(50):
            client.capture("child", {"delay": delay, "i": i})
        delivered = client.flush(3)
        print("CHILD", delivered, client.stats()["dropped"], flush=True)
        os._exit(0 if delivered else 3)
    _, status = os.waitpid(pid, 0)
    print("EXIT", os.waitstatus_to_exitcode(status), flush=True)
    """
)

MULTIPROCESSING = textwrap.dedent(
    """
    import multiprocessing
    from codeweaver_telemetry import get_telemetry_client

    def work(n):
        client = get_telemetry_client()
        for i in range(100):
            client.capture("mp_child", {"n": n, "i": i})

    if __name__ == "__main__":
        client = get_telemetry_client()
        client.capture("parent", {})  # start-up is under way while the children fork
        ctx = multiprocessing.get_context("fork")
        procs = [ctx.Process(target=work, args=(n,)) for n in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(30)
        print("CODES", [p.exitcode for p in procs], flush=True)
    """
)


def _env(url: str, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODEWEAVER") and k != "CI"}
    env.update(
        {
            "CODEWEAVER_HOME": str(home),
            "CODEWEAVER__TELEMETRY__ENABLED": "1",
            "CODEWEAVER__TELEMETRY__POSTHOG_API_KEY": "phc_fork",
            "CODEWEAVER__TELEMETRY__POSTHOG_HOST": url,
            "CODEWEAVER__TELEMETRY__EXIT_TIMEOUT_SECONDS": "3",
            "PYTHONPATH": str(ROOT),
            "PYTHONWARNINGS": "ignore::DeprecationWarning",  # "fork() in a threaded process"
        }
    )
    return env


def _run(code: str, args: list[str], url: str, home: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=_env(url, home),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=home.parent,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


# Fork points from "at once" to "long after start-up"; the imports take a few hundred ms.
FORK_POINTS = [0.0, 0.002, 0.005, 0.01, 0.02, 0.04, 0.07, 0.1, 0.15, 0.25]


def test_a_child_forked_at_any_point_of_start_up_sends_its_events(
    receiver: PostHogReceiver, tmp_path: Path
) -> None:
    """At every fork point, the child delivers all 50 of its events (none dropped as a
    stage error, no import error, flush() true)."""
    for index, delay in enumerate(FORK_POINTS):
        out = _run(FORK_AT, [str(delay)], receiver.url, tmp_path / f"home{index}")
        assert "CHILD True {}" in out, (delay, out)
        assert "EXIT 0" in out, (delay, out)
    children = receiver.events_named("child")
    for delay in FORK_POINTS:
        got = sorted(e["properties"]["i"] for e in children if e["properties"]["delay"] == delay)
        assert got == list(range(50)), f"fork after {delay}s: {len(got)} of 50 child events"


# The client starts before multiprocessing is loaded (the library does not import it).
MULTIPROCESSING_LOADED_LATER = MULTIPROCESSING.replace(
    "import multiprocessing\nfrom codeweaver_telemetry import get_telemetry_client\n",
    "from codeweaver_telemetry import get_telemetry_client\n",
).replace(
    '    client.capture("parent", {})  # start-up is under way while the children fork\n',
    '    client.capture("parent", {})  # start-up is under way while the children fork\n'
    "    import multiprocessing\n",
)


@pytest.mark.parametrize(
    "script", [MULTIPROCESSING, MULTIPROCESSING_LOADED_LATER], ids=["loaded", "loaded_later"]
)
def test_multiprocessing_fork_children_deliver_during_start_up(
    receiver: PostHogReceiver, tmp_path: Path, script: str
) -> None:
    """multiprocessing (fork) children started while the parent's worker is starting still
    deliver every event at their own exit, whether multiprocessing was loaded before the
    client started or after."""
    assert script.count("import multiprocessing") == 1
    for run in range(3):
        receiver.clear()
        out = _run(script, [], receiver.url, tmp_path / f"home{run}")
        assert "CODES [0, 0]" in out, out
        events = receiver.wait_for_events(201, timeout=10)
        assert len([e for e in events if e["event"] == "mp_child"]) == 200, run
